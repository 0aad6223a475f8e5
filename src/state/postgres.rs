//! The cluster's engine: PostgreSQL, through the SQL layer of [`super::sql`], shared by every
//! instance of a cluster (`docs/cluster.md`).
//!
//! - The migrations run at every start, under sqlx's advisory lock on PostgreSQL: instances
//!   that start together apply them once, the others wait for it.
//! - A small pool (calls are point queries and short transactions); every call bounded, so a
//!   lost route to the database fails a call within the bound instead of holding it until TCP
//!   gives up; connections are tested before use and live at most 30 minutes.
//! - TLS when the URL asks for it (`sslmode=`), or with `ca_file`: `verify-full` against that CA.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::StateError;
use super::sql::{Dialect, MIGRATOR, SqlStore};

/// Connections per instance: the heartbeat, a takeover and the runs' writes at once.
const POOL_SIZE: u32 = 6;

/// How to reach the database.
pub struct PgTarget<'a> {
    pub url: &'a str,
    pub ca_file: Option<&'a std::path::Path>,
    /// The host this instance runs on (the digest cache's key).
    pub host: &'a str,
    /// The longest any call may take.
    pub call_limit: Duration,
}

/// Opens the pool and brings the schema up to date. Nothing is retried here: the caller retries
/// with backoff, and says why meanwhile.
pub(crate) async fn open(target: &PgTarget<'_>) -> Result<SqlStore, StateError> {
    open_as(target, false).await
}

/// Opens the pool to read the cluster's store beside its members (`status`, `uploads`): no
/// migration runs, nothing is written, every member's records are read.
pub(crate) async fn open_reader(target: &PgTarget<'_>) -> Result<SqlStore, StateError> {
    open_as(target, true).await
}

async fn open_as(target: &PgTarget<'_>, reader: bool) -> Result<SqlStore, StateError> {
    sqlx::any::install_default_drivers();
    let name = redacted(target.url);
    let error = |action: &'static str, e: sqlx::Error| StateError::Db {
        store: name.clone(),
        action,
        source: Box::new(e),
    };
    let mut url = url::Url::parse(target.url).map_err(|e| StateError::Db {
        store: name.clone(),
        action: "read the URL",
        source: Box::new(e),
    })?;
    if let Some(ca) = target.ca_file {
        url.query_pairs_mut()
            .append_pair("sslmode", "verify-full")
            .append_pair("sslrootcert", &ca.display().to_string());
    }
    let options = AnyConnectOptions::from_str(url.as_str())
        .map_err(|e| error("read the URL", e))?
        .disable_statement_logging();
    let limit = target.call_limit;
    let handle = tokio::runtime::Handle::current();
    // On the blocking pool, as every call of the store (see `SqlStore::run`).
    let pool = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let connect = AnyPoolOptions::new()
                .max_connections(POOL_SIZE)
                .min_connections(1)
                .acquire_timeout(limit)
                .max_lifetime(Duration::from_secs(1800))
                .test_before_acquire(true)
                .connect_with(options);
            let pool = tokio::time::timeout(limit * 2, connect)
                .await
                .map_err(|_| {
                    sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no connection within the call limit",
                    ))
                })??;
            if reader {
                return Ok((pool, Ok(())));
            }
            let migrated = tokio::time::timeout(Duration::from_secs(120), MIGRATOR.run(&pool))
                .await
                .map_err(|_| {
                    sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the migrations took more than 120 s",
                    )))
                })
                .and_then(|r| r);
            Ok::<_, sqlx::Error>((pool, migrated))
        })
    })
    .await
    .map_err(|e| StateError::Worker(format!("open the database: {e}")))?
    .map_err(|e| error("connect", e))?;
    let (pool, migrated) = pool;
    migrated.map_err(|e| StateError::Db {
        store: name.clone(),
        action: "bring the schema up to date",
        source: Box::new(e),
    })?;
    Ok(SqlStore::new(pool, name, false, Dialect::Postgres)
        .for_cluster(target.host.to_owned(), target.call_limit))
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(the database URL)".to_owned(),
    }
}
