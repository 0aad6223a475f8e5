//! The embedded engine: SQLite in `state.db` in the state folder, through the SQL layer of
//! [`super::sql`].
//!
//! - WAL mode, `synchronous = NORMAL`: a commit is in the write-ahead log, in the kernel's hands,
//!   when it returns, so a process that dies at any point (SIGKILL, OOM, panic) loses nothing it
//!   committed; only a power loss or a kernel crash may lose the last commits. `synchronous = FULL`
//!   would add an fsync and a rewritten page per commit for that case (`docs/state.md` has the
//!   figures and what such a loss costs: an upload of ours is then taken for a stranger's, and
//!   aborted once its job's `stale_after` passes).
//! - 1 KiB pages: each commit writes whole pages, and the records are a few hundred bytes.
//! - One connection: SQLite has one writer anyway, and the daemon's reads are point queries.
//!
//! At start: an integrity check; a damaged file is moved aside with a warning once the records
//! that crash safety rests on (uploads in flight, create markers) are read from it, and kept in
//! place, the start refused, when they cannot be read (an operator decides, as for a damaged
//! `inflight.json` before). Then the migrations, then the import of an earlier release's JSON
//! files (once: recorded in `meta`, the files renamed `*.imported`).

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions as _, Executor as _, Row as _};
use tracing::{info, warn};

use super::files::JsonFiles;
use super::sql::{Dialect, MIGRATOR, SqlStore};
use super::{StateBackend as _, StateError};

/// The database file in the state folder.
pub const DB_FILE: &str = "state.db";

/// The JSON files of earlier releases, imported once.
const JSON_FILES: [&str; 3] = ["inflight.json", "history.json", "digests.json"];

/// Said to SQLite before the daemon closes the store: the log copied into the database and
/// emptied, so that a stopped daemon leaves one compact file.
pub(crate) const CHECKPOINT: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

/// The `meta` key that says the JSON files were imported.
const IMPORTED: &str = "json_imported";

/// SQLite's primary result codes for a damaged file (the extended codes carry them in their low
/// byte).
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_NOTADB: i64 = 26;

/// Opens the store in `dir`, creating the folder and the database if needed.
pub(crate) async fn open(dir: &Path) -> Result<SqlStore, StateError> {
    // On the blocking pool, for the reason given at `SqlStore::run`.
    let handle = tokio::runtime::Handle::current();
    let owned = dir.to_owned();
    tokio::task::spawn_blocking(move || handle.block_on(open_here(&owned)))
        .await
        .map_err(|e| StateError::Worker(format!("open the state store: {e}")))?
}

async fn open_here(dir: &Path) -> Result<SqlStore, StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(DB_FILE);
    let store = match open_checked(&path).await? {
        Checked::Sound(store) => *store,
        Checked::Damaged(problem) => salvage(&path, problem).await?,
    };
    import_json(dir, &store).await?;
    Ok(store)
}

/// Opens the store beside a daemon that may be running, to read it: nothing is written, no
/// migration runs. A folder of an earlier release (JSON files, no database yet) is read as such.
pub(crate) async fn open_read_only(dir: &Path) -> Result<Option<SqlStore>, StateError> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let handle = tokio::runtime::Handle::current();
    let owned = path.clone();
    let pool = tokio::task::spawn_blocking(move || handle.block_on(pool(&owned, Mode::ReadOnly)))
        .await
        .map_err(|e| StateError::Worker(format!("open the state store: {e}")))?
        .map_err(|e| db_error(&path, "open", e))?;
    Ok(Some(SqlStore::new(
        pool,
        path.display().to_string(),
        true,
        Dialect::Sqlite,
    )))
}

enum Checked {
    Sound(Box<SqlStore>),
    /// The file is damaged: what SQLite said.
    Damaged(String),
}

async fn open_checked(path: &Path) -> Result<Checked, StateError> {
    let pool = match pool(path, Mode::ReadWrite).await {
        Ok(pool) => pool,
        Err(e) if is_damage(&e) => return Ok(Checked::Damaged(e.to_string())),
        Err(e) => return Err(db_error(path, "open", e)),
    };
    match integrity(&pool).await {
        Ok(None) => {}
        Ok(Some(problem)) => {
            pool.close().await;
            return Ok(Checked::Damaged(problem));
        }
        Err(e) if is_damage(&e) => {
            pool.close().await;
            return Ok(Checked::Damaged(e.to_string()));
        }
        Err(e) => return Err(db_error(path, "check", e)),
    }
    MIGRATOR.run(&pool).await.map_err(|e| StateError::Db {
        store: path.display().to_string(),
        action: "bring the schema up to date",
        source: Box::new(e),
    })?;
    let store = SqlStore::new(pool, path.display().to_string(), false, Dialect::Sqlite);
    // One daemon per state folder (its lock file): it holds every record, under a lease that
    // never lapses; an earlier process's lease is replaced.
    store.join_alone().await?;
    Ok(Checked::Sound(Box::new(store)))
}

/// `None` when SQLite's quick check finds the file sound, else what it found (first lines).
async fn integrity(pool: &AnyPool) -> Result<Option<String>, sqlx::Error> {
    let rows = sqlx::query("PRAGMA quick_check(5)").fetch_all(pool).await?;
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(None)
    } else {
        Ok(Some(lines.join("; ")))
    }
}

fn is_damage(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code()
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| matches!(c & 0xff, SQLITE_CORRUPT | SQLITE_NOTADB))
}

/// A damaged database: the records crash safety rests on are read from it (without writing to
/// it), the file is moved aside, and a new one holds them. When they cannot be read, the file
/// stays where it is and the start is refused.
async fn salvage(path: &Path, problem: String) -> Result<SqlStore, StateError> {
    let (uploads, markers) = match read_crash_records(path).await {
        Ok(found) => found,
        Err(e) => {
            return Err(StateError::CorruptDatabase {
                path: path.to_owned(),
                problem: format!("{problem}; its uploads in flight cannot be read: {e}"),
            });
        }
    };
    let aside = aside_name(path);
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to).map_err(|source| StateError::Io { path: from, source })?;
        }
    }
    warn!(
        file = %path.display(),
        moved_to = %aside.display(),
        problem = %problem,
        uploads_kept = uploads.len(),
        create_markers_kept = markers.len(),
        "the state database is damaged: moved aside, a new one started with its uploads in flight and create markers; the run history and the digest cache start empty (files are digested again)"
    );
    let store = match open_checked(path).await? {
        Checked::Sound(store) => *store,
        Checked::Damaged(p) => {
            return Err(StateError::CorruptDatabase {
                path: path.to_owned(),
                problem: format!("a new database is damaged at once: {p}"),
            });
        }
    };
    for rec in uploads {
        store.add_inflight(rec).await?;
    }
    for rec in markers {
        store.add_creating(rec).await?;
    }
    Ok(store)
}

async fn read_crash_records(
    path: &Path,
) -> Result<(Vec<super::InFlight>, Vec<super::Creating>), StateError> {
    let pool = pool(path, Mode::ReadOnly)
        .await
        .map_err(|e| db_error(path, "open", e))?;
    let store = SqlStore::new(pool, path.display().to_string(), true, Dialect::Sqlite);
    let found = async {
        let uploads = store.inflight().await?;
        let markers = store.creating().await?;
        Ok::<_, StateError>((uploads, markers))
    }
    .await;
    store.close(None).await;
    found
}

fn aside_name(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut n = 0;
    loop {
        let candidate = if n == 0 {
            format!("{}.corrupt-{stamp}", path.display())
        } else {
            format!("{}.corrupt-{stamp}-{n}", path.display())
        };
        let candidate = PathBuf::from(candidate);
        if !candidate.exists() || n >= 1000 {
            return candidate;
        }
        n += 1;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadWrite,
    ReadOnly,
}

async fn pool(path: &Path, mode: Mode) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let url = url::Url::from_file_path(path).map_err(|()| {
        sqlx::Error::Configuration("the state folder's path is not absolute".into())
    })?;
    // sqlx reads the path of a sqlite: URL percent-decoded, as UTF-8.
    let query = match mode {
        Mode::ReadWrite => "mode=rwc",
        Mode::ReadOnly => "mode=ro",
    };
    let options = AnyConnectOptions::from_str(&format!("sqlite://{}?{query}", url.path()))?
        .disable_statement_logging();
    // One connection first, outside the pool: a pool retries a connection that fails (a
    // damaged file) until its timeout, where this answers at once.
    let mut first = options.connect().await?;
    settings(&mut first, mode).await?;
    sqlx::Connection::close(first).await?;
    AnyPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .test_before_acquire(false)
        .after_connect(move |conn, _| Box::pin(settings(conn, mode)))
        .connect_with(options)
        .await
}

async fn settings(conn: &mut sqlx::AnyConnection, mode: Mode) -> Result<(), sqlx::Error> {
    if mode == Mode::ReadWrite {
        // Before the first table exists; a no-op on an existing file.
        conn.execute("PRAGMA page_size = 1024").await?;
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute("PRAGMA synchronous = NORMAL").await?;
    } else {
        conn.execute("PRAGMA query_only = 1").await?;
        // A damaged file shows it here, not at the first query.
        conn.execute("PRAGMA schema_version").await?;
    }
    Ok(())
}

fn db_error(path: &Path, action: &'static str, e: sqlx::Error) -> StateError {
    StateError::Db {
        store: path.display().to_string(),
        action,
        source: Box::new(e),
    }
}

/// Imports the JSON files of an earlier release into `store`, then renames them `*.imported`.
/// Done once, unless a file changed after the import (an earlier release run again on the
/// folder, say): then it is imported again, merged (uploads by id, markers once, digests by key).
/// A damaged `inflight.json` stops the start as it did before (nothing is lost by an upgrade); a
/// damaged cache is moved aside by the JSON reader, as before.
async fn import_json(dir: &Path, store: &SqlStore) -> Result<(), StateError> {
    let present: Vec<&str> = JSON_FILES
        .into_iter()
        .filter(|n| dir.join(n).exists())
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let done = store
        .meta(IMPORTED)
        .await?
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
    let changed_since = |at: chrono::DateTime<chrono::FixedOffset>| {
        present.iter().any(|n| {
            std::fs::metadata(dir.join(n))
                .and_then(|m| m.modified())
                .is_ok_and(|m| chrono::DateTime::<chrono::Utc>::from(m) > at)
        })
    };
    if done.is_none_or(changed_since) {
        let files = JsonFiles::open(dir, false)?;
        let uploads = files.inflight().await?;
        let markers = files.creating().await?;
        let runs: Vec<_> = files.history().await?.into_values().flatten().collect();
        let digests = files.digest_entries();
        info!(
            folder = %dir.display(),
            uploads = uploads.len(),
            create_markers = markers.len(),
            runs = runs.len(),
            digests = digests.len(),
            "importing the state of an earlier release (JSON files) into {DB_FILE}"
        );
        // The records crash safety rests on first, each durable (replaced by id, markers added
        // once: a crash here imports them again harmlessly), then the runs and digests with the
        // mark of the import, in one transaction.
        for rec in uploads {
            store.add_inflight(rec).await?;
        }
        for rec in markers {
            store.add_creating(rec).await?;
        }
        store
            .write_marked(runs, digests, (IMPORTED, chrono::Utc::now().to_rfc3339()))
            .await?;
    }
    for name in present {
        let from = dir.join(name);
        let to = dir.join(format!("{name}.imported"));
        // A damaged cache was moved aside by the JSON reader already.
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|source| StateError::Io { path: from, source })?;
        }
    }
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        warn!(folder = %dir.display(), error = %e, "cannot sync the state folder");
    }
}
