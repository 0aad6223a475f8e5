//! The state store in SQL, written once for SQLite (the embedded default, [`super::sqlite`]) and
//! PostgreSQL (a cluster): sqlx's `Any` driver runs the same statements on either, and the
//! migrations in `migrations/` are one history for both (the `_sqlx_migrations` table holds the
//! schema version). Placeholders are `$1`, `$2`...: PostgreSQL's own, and SQLite reads them by
//! number too.
//!
//! Each change writes the rows it changes, never a whole document:
//! - a create marker, an upload in flight: written when asked, durable when the call returns;
//! - a run, a digest: held in memory and written by [`SqlStore::flush`] (the daemon flushes every
//!   few seconds and at shutdown, as the JSON files were), many in one transaction. The history
//!   and the digest cache are bounded by rows deleted in that transaction (the oldest `seq`
//!   beyond the limit), never by rewriting a table.
//!
//! Reads of held-back runs and digests see them: [`SqlStore::history`] merges them in, and
//! [`SqlStore::digest`] looks at them first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use base64::Engine as _;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

use super::{
    Creating, DIGESTS_KEPT, HISTORY_PER_JOB, InFlight, RunRecord, StateBackend, StateError,
    StateFuture,
};
use stac_client::{AssetTarget, Md5, Multihash, UploadId};
use stac_upload::{DigestKey, FileDigest};

/// Runs held back before a write is forced: a daemon flushes every few seconds, this bounds a
/// caller that never does.
const PENDING_RUNS_MAX: usize = 1_000;

/// The engines, for the few expressions that differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The database's clock, in milliseconds since the epoch, as a BIGINT.
    fn now_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// A statement with `{now}` for the database's clock, in this engine's words: built once per
/// engine and kept for the life of the process (a fixed, small set).
fn sql(dialect: Dialect, template: &'static str) -> &'static str {
    static BUILT: std::sync::LazyLock<
        Mutex<std::collections::HashMap<(usize, Dialect), &'static str>>,
    > = std::sync::LazyLock::new(Default::default);
    let key = (template.as_ptr() as usize, dialect);
    let mut built = lock(&BUILT);
    built
        .entry(key)
        .or_insert_with(|| Box::leak(template.replace("{now}", dialect.now_ms()).into_boxed_str()))
}

/// Who writes: an instance, and the fencing token of its lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) instance: String,
    pub(crate) token: i64,
}

/// The instance name of the embedded store's one daemon.
pub(crate) const LOCAL: &str = "local";

/// The lease of the embedded store's one instance: it never expires (one daemon per state
/// folder, which its lock file ensures).
const FOREVER_MS: i64 = 4_000_000_000_000_000;

/// An instance holding (or having held) a lease, as the database records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub instance: String,
    pub host: String,
    pub pid: i64,
    pub token: i64,
    /// Database time, ms since the epoch.
    pub started_ms: i64,
    pub renewed_ms: i64,
    pub expires_ms: i64,
    /// Its lease is live by the database's clock now.
    pub live: bool,
    /// Uploads in flight and create markers it holds.
    pub holds: i64,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This instance runs it.
    Won,
    /// Another instance claimed it first.
    Lost { by: String },
}

/// Who holds an upload in flight (or a create marker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No record of it.
    Nobody,
    /// This instance.
    Us,
    /// Another instance whose lease is live: it may be sending it now.
    Live(String),
    /// An instance whose lease lapsed (or none): its work is to be taken over.
    Lapsed(Option<String>),
}

/// What [`SqlStore::take_over`] took from lapsed instances.
#[derive(Debug, Default)]
pub struct Taken {
    /// Their uploads in flight, now this instance's.
    pub uploads: Vec<InFlight>,
    /// Their claims never finished: (job, work), now this instance's.
    pub claims: Vec<(String, String)>,
    /// The instances they came from.
    pub from: Vec<String>,
}

/// Run numbers tried per run before a flush gives up (and keeps the run for the next).
const RUN_SEQ_TRIES: usize = 20;

/// The one migration history of both engines.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The SQL store on an open pool.
#[derive(Debug)]
pub(crate) struct SqlStore {
    pool: AnyPool,
    /// What the store is, for messages: the database file, or the server without credentials.
    name: String,
    read_only: bool,
    dialect: Dialect,
    /// Who writes: the instance and its lease's fencing token (see [`SqlStore::join`]).
    owner: std::sync::RwLock<Owner>,
    /// The digest cache's host key: empty for the embedded store (one host), the host name in a
    /// cluster, where a device and inode name a file on one host only.
    digest_host: String,
    /// The longest a call may take (a cluster's database across the network: a lost route
    /// would otherwise hold a call until TCP gives up); `None`: unbounded (a local file).
    call_limit: Option<std::time::Duration>,
    pending: Mutex<Pending>,
    /// Held by a flush, so that two flushes do not interleave their batches.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    runs: Vec<RunRecord>,
    /// Oldest first; a key put again replaces its entry.
    digests: VecDeque<(DigestKey, FileDigest)>,
}

impl SqlStore {
    pub(crate) fn new(pool: AnyPool, name: String, read_only: bool, dialect: Dialect) -> Self {
        Self {
            pool,
            name,
            read_only,
            dialect,
            owner: std::sync::RwLock::new(Owner::default()),
            digest_host: String::new(),
            call_limit: None,
            pending: Mutex::new(Pending::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn error(&self, action: &'static str, source: sqlx::Error) -> StateError {
        StateError::Db {
            store: self.name.clone(),
            action,
            source: Box::new(source),
        }
    }

    /// Runs a database call on the blocking pool, to its end. Why: sqlx answers SQLite's calls
    /// from a thread of its own, which tokio's paused clock (the tests') does not see: while a
    /// task waits on it, the clock would jump to the next timer. A blocking task holds the clock
    /// still, as the file I/O of the JSON store did. The cost is a thread hand-off per call.
    async fn run<T: Send + 'static>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    ) -> Result<T, StateError> {
        let handle = tokio::runtime::Handle::current();
        let limit = self.call_limit;
        let bounded = async move {
            match limit {
                None => call.await,
                Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                    Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} ms", limit.as_millis()),
                    )))
                }),
            }
        };
        match tokio::task::spawn_blocking(move || handle.block_on(bounded)).await {
            Ok(result) => result.map_err(|e| self.error(action, e)),
            Err(e) => Err(StateError::Worker(format!("{action}: {e}"))),
        }
    }

    /// The owner whose records reads return: this instance's; every owner's for a reader
    /// beside the daemon (`status`, `uploads`), which opens the store read-only.
    fn scope(&self) -> String {
        if self.read_only {
            String::new()
        } else {
            self.owner().instance
        }
    }

    fn refuse_write(&self) -> Result<(), StateError> {
        if self.read_only {
            return Err(StateError::Db {
                store: self.name.clone(),
                action: "write",
                source: "opened read-only".into(),
            });
        }
        Ok(())
    }

    async fn execute(&self, action: &'static str, query: Query) -> Result<u64, StateError> {
        self.refuse_write()?;
        let pool = self.pool.clone();
        self.run(action, async move {
            query.execute(&pool).await.map(|r| r.rows_affected())
        })
        .await
    }

    async fn fetch_all(
        &self,
        action: &'static str,
        query: Query,
    ) -> Result<Vec<AnyRow>, StateError> {
        let pool = self.pool.clone();
        self.run(action, async move { query.fetch_all(&pool).await })
            .await
    }

    async fn exists(&self, action: &'static str, query: Query) -> Result<bool, StateError> {
        let pool = self.pool.clone();
        self.run(action, async move {
            query.fetch_optional(&pool).await.map(|r| r.is_some())
        })
        .await
    }

    /// The records `WHERE` says, of this instance (`AND owner = $1` added), or of every
    /// instance for a reader beside the daemon (which may read a database of an earlier schema,
    /// without owners).
    async fn records<T: serde::de::DeserializeOwned>(
        &self,
        action: &'static str,
        (all, mine): (&'static str, &'static str),
    ) -> Result<Vec<T>, StateError> {
        let query = if self.read_only {
            sqlx::query(all)
        } else {
            sqlx::query(mine).bind(self.owner().instance)
        };
        let rows = self.fetch_all(action, query).await?;
        rows.iter()
            .map(|r| decode_record(r, "record").map_err(|e| self.error(action, e)))
            .collect()
    }

    /// The digest of a file: held back, or as stored. A read that fails is a miss (the file is
    /// digested again), with a warning.
    pub(crate) async fn digest(&self, key: &DigestKey) -> Option<FileDigest> {
        {
            let p = lock(&self.pending);
            if let Some((_, d)) = p.digests.iter().rev().find(|(k, _)| k == key) {
                return Some(d.clone());
            }
        }
        let query = bind_key(
            sqlx::query(
                "SELECT multihash, md5s FROM digests WHERE mtime_s = $1 AND mtime_ns = $2 \
                 AND ino = $3 AND dev = $4 AND size = $5 AND ctime_s = $6 AND ctime_ns = $7 \
                 AND part_size = $8 AND host = $9",
            ),
            key,
        )
        .bind(self.digest_host.clone());
        let pool = self.pool.clone();
        let row = self
            .run("read the digest cache", async move {
                query.fetch_optional(&pool).await
            })
            .await;
        let row = match row {
            Ok(row) => row?,
            Err(e) => {
                tracing::warn!(error = %e, "the file is digested again");
                return None;
            }
        };
        let multihash: String = row.try_get("multihash").ok()?;
        let md5s: String = row.try_get("md5s").ok()?;
        Some(FileDigest {
            multihash: Multihash::from_hex(&multihash),
            part_md5s: decode_md5s(&md5s)?,
            size: key.size,
        })
    }

    /// Holds a digest back until the next flush.
    pub(crate) fn put_digest(&self, key: DigestKey, digest: &FileDigest) {
        let mut p = lock(&self.pending);
        p.digests.retain(|(k, _)| *k != key);
        p.digests.push_back((key, digest.clone()));
        while p.digests.len() > DIGESTS_KEPT {
            p.digests.pop_front();
        }
    }

    /// Writes the held-back runs and digests in one transaction. They stay visible to reads
    /// until written, and stay held on an error.
    async fn flush_pending(&self) -> Result<(), StateError> {
        let _turn = self.flushing.lock().await;
        if self.read_only {
            return Ok(());
        }
        let (runs, digests) = {
            let p = lock(&self.pending);
            (
                p.runs.clone(),
                p.digests.iter().cloned().collect::<Vec<_>>(),
            )
        };
        if runs.is_empty() && digests.is_empty() {
            return Ok(());
        }
        self.write_batch(&runs, &digests, None).await?;
        let mut p = lock(&self.pending);
        // Only this flush removes runs, and record_run appends: the first ones are those written.
        let written = runs.len().min(p.runs.len());
        p.runs.drain(..written);
        let written: std::collections::HashMap<&DigestKey, &FileDigest> =
            digests.iter().map(|(k, d)| (k, d)).collect();
        // A digest put again meanwhile stays held.
        p.digests
            .retain(|(k, d)| written.get(k).is_none_or(|w| *w != d));
        Ok(())
    }

    /// Writes runs and digests, and `mark` into `meta`, in one transaction.
    async fn write_batch(
        &self,
        runs: &[RunRecord],
        digests: &[(DigestKey, FileDigest)],
        mark: Option<(&str, String)>,
    ) -> Result<(), StateError> {
        let runs = runs
            .iter()
            .map(|run| {
                Ok(RunRow {
                    job: run.job.clone(),
                    finished: run.finished.to_rfc3339(),
                    outcome: run.outcome.as_str(),
                    record: encode(self, "run record", run)?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        let digests: Vec<(DigestKey, String, String)> = digests
            .iter()
            .map(|(k, d)| {
                let md5s: Vec<String> = d.part_md5s.iter().map(Md5::to_base64).collect();
                (k.clone(), d.multihash.as_str().to_owned(), md5s.join(" "))
            })
            .collect();
        let mark = mark.map(|(k, v)| (k.to_owned(), v));
        let pool = self.pool.clone();
        let who = (self.owner().instance, self.digest_host.clone());
        self.run(
            "write the run history and the digest cache",
            write_rows(pool, who, runs, digests, mark),
        )
        .await
    }

    /// Writes runs and digests with `mark` in `meta`, in one transaction (an import).
    pub(crate) async fn write_marked(
        &self,
        runs: Vec<RunRecord>,
        digests: Vec<(DigestKey, FileDigest)>,
        mark: (&str, String),
    ) -> Result<(), StateError> {
        self.refuse_write()?;
        self.write_batch(&runs, &digests, Some(mark)).await
    }

    /// Writes a row to find out whether the store takes writes (see [`super::StateStore::probe`]).
    pub(crate) async fn probe(&self) -> Result<(), StateError> {
        self.refuse_write()?;
        self.write_batch(&[], &[], Some(("probe", chrono::Utc::now().to_rfc3339())))
            .await
    }

    /// A value of `meta`.
    pub(crate) async fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let rows = self
            .fetch_all(
                "read the store's facts",
                sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key.to_owned()),
            )
            .await?;
        rows.first()
            .map(|r| r.try_get("value"))
            .transpose()
            .map_err(|e| self.error("read the store's facts", e))
    }

    /// Rows per table, for `check` and the docs' examples.
    pub(crate) async fn counts(&self) -> Result<Vec<(&'static str, i64)>, StateError> {
        let mut out = Vec::new();
        for (table, sql) in [
            (
                "uploads",
                "SELECT COUNT(*) AS n FROM uploads WHERE upload_id IS NOT NULL",
            ),
            ("create_markers", "SELECT COUNT(*) AS n FROM create_markers"),
            ("runs", "SELECT COUNT(*) AS n FROM runs"),
            ("digests", "SELECT COUNT(*) AS n FROM digests"),
        ] {
            let rows = self.fetch_all("count rows", sqlx::query(sql)).await?;
            let n: i64 = rows
                .first()
                .map(|r| r.try_get("n"))
                .transpose()
                .map_err(|e| self.error("count rows", e))?
                .unwrap_or(0);
            out.push((table, n));
        }
        Ok(out)
    }

    /// Closes the pool; `last_words` (SQLite's checkpoint, engine-specific) run first.
    pub(crate) async fn close(&self, last_words: Option<&'static str>) {
        let pool = self.pool.clone();
        let (read_only, dialect) = (self.read_only, self.dialect);
        let closed = self
            .run("close", async move {
                let said = match last_words {
                    Some(sql) if !read_only && dialect == Dialect::Sqlite => {
                        sqlx::query(sql).execute(&pool).await.map(drop)
                    }
                    _ => Ok(()),
                };
                pool.close().await;
                said
            })
            .await;
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the state store");
        }
    }
}

/// A run as its row holds it.
struct RunRow {
    job: String,
    finished: String,
    outcome: &'static str,
    record: String,
}

type Query = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>;

/// Binds a digest key as `$1`...`$8`, in the order the statements name its columns.
fn bind_key(q: Query, key: &DigestKey) -> Query {
    // The columns are BIGINT: unsigned values are kept bit for bit.
    q.bind(key.mtime.0)
        .bind(key.mtime.1)
        .bind(key.ino as i64)
        .bind(key.dev as i64)
        .bind(key.size as i64)
        .bind(key.ctime.0)
        .bind(key.ctime.1)
        .bind(key.part_size as i64)
}

/// Writes runs (as run by `who.0`) and digests (of host `who.1`) with `mark` in `meta`, in one
/// transaction. Not fenced: a run that happened is history whoever writes it late, and a
/// host's digests are its own; neither overwrites another instance's rows.
async fn write_rows(
    pool: AnyPool,
    (instance, host): (String, String),
    runs: Vec<RunRow>,
    digests: Vec<(DigestKey, String, String)>,
    mark: Option<(String, String)>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for run in runs {
        // Members of a cluster add runs of one job at once: a `seq` another took first is
        // skipped (its insert waited for that one to commit) and the next one tried.
        let mut added = 0;
        for _ in 0..RUN_SEQ_TRIES {
            added = sqlx::query(
                "INSERT INTO runs (job, seq, finished, outcome, record, instance) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM runs WHERE job = $1 \
                 ON CONFLICT DO NOTHING",
            )
            .bind(run.job.clone())
            .bind(run.finished.clone())
            .bind(run.outcome)
            .bind(run.record.clone())
            .bind(instance.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if added == 1 {
                break;
            }
        }
        if added != 1 {
            return Err(sqlx::Error::Protocol(format!(
                "no free run number for job {} after {RUN_SEQ_TRIES} tries",
                run.job
            )));
        }
        sqlx::query(
            "DELETE FROM runs WHERE job = $1 \
             AND seq <= (SELECT MAX(seq) FROM runs WHERE job = $1) - $2",
        )
        .bind(run.job)
        .bind(HISTORY_PER_JOB as i64)
        .execute(&mut *tx)
        .await?;
    }
    let any_digest = !digests.is_empty();
    for (key, multihash, md5s) in digests {
        bind_key(
            sqlx::query(
                "DELETE FROM digests WHERE mtime_s = $1 AND mtime_ns = $2 AND ino = $3 \
                 AND dev = $4 AND size = $5 AND ctime_s = $6 AND ctime_ns = $7 AND part_size = $8 \
                 AND host = $9",
            ),
            &key,
        )
        .bind(host.clone())
        .execute(&mut *tx)
        .await?;
        bind_key(
            sqlx::query(
                "INSERT INTO digests (mtime_s, mtime_ns, ino, dev, size, ctime_s, ctime_ns, \
                 part_size, seq, multihash, md5s, host) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, COALESCE(MAX(seq), 0) + 1, $9, $10, $11 \
                 FROM digests WHERE host = $11",
            ),
            &key,
        )
        .bind(multihash)
        .bind(md5s)
        .bind(host.clone())
        .execute(&mut *tx)
        .await?;
    }
    if any_digest {
        sqlx::query(
            "DELETE FROM digests WHERE host = $2 \
             AND seq <= (SELECT MAX(seq) FROM digests WHERE host = $2) - $1",
        )
        .bind(DIGESTS_KEPT as i64)
        .bind(host)
        .execute(&mut *tx)
        .await?;
    }
    if let Some((key, value)) = mark {
        sqlx::query("DELETE FROM meta WHERE key = $1")
            .bind(key.clone())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// An upload's row: (upload id, job, target, multihash, created, pid, record).
type UploadRow = (String, String, String, String, String, i64, String);

/// Writes an upload's row as `owner`; `false` (nothing written) when its lease is not live.
async fn write_inflight_rows(
    pool: AnyPool,
    dialect: Dialect,
    owner: Owner,
    row: UploadRow,
    from_marker: bool,
) -> Result<bool, sqlx::Error> {
    let (upload_id, job, target, multihash, created, pid, record) = row;
    let mut tx = pool.begin().await?;
    let live = sqlx::query(sql(
        dialect,
        "SELECT 1 AS one FROM members WHERE instance = $1 AND token = $2 AND expires_ms >= {now}",
    ))
    .bind(owner.instance.clone())
    .bind(owner.token)
    .fetch_optional(&mut *tx)
    .await?;
    if live.is_none() {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("DELETE FROM uploads WHERE upload_id = $1")
        .bind(upload_id.clone())
        .execute(&mut *tx)
        .await?;
    // The marker of its create becomes the upload's row: one row rewritten in place.
    let mut turned = 0;
    if from_marker {
        turned = sqlx::query(
            "UPDATE uploads SET upload_id = $1, job = $2, at = $3, pid = $4, record = $5, \
             token = $9 WHERE upload_id IS NULL AND target = $6 AND multihash = $7 \
             AND owner = $8",
        )
        .bind(upload_id.clone())
        .bind(job.clone())
        .bind(created.clone())
        .bind(pid)
        .bind(record.clone())
        .bind(target.clone())
        .bind(multihash.clone())
        .bind(owner.instance.clone())
        .bind(owner.token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if turned == 0 {
        sqlx::query(
            "INSERT INTO uploads \
             (target, multihash, upload_id, job, at, pid, record, owner, token) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(target)
        .bind(multihash)
        .bind(upload_id)
        .bind(job)
        .bind(created)
        .bind(pid)
        .bind(record)
        .bind(owner.instance)
        .bind(owner.token)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The text the `target` columns hold.
fn target_key(t: &AssetTarget) -> String {
    t.to_string()
}

fn encode<T: serde::Serialize>(
    store: &SqlStore,
    what: &'static str,
    value: &T,
) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|source| StateError::Encode {
        what,
        path: store.name.clone().into(),
        source,
    })
}

fn decode_record<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
) -> Result<T, sqlx::Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn decode_md5s(text: &str) -> Option<Vec<Md5>> {
    text.split_ascii_whitespace()
        .map(|b| {
            let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
            Some(Md5(raw.try_into().ok()?))
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every change under these locks is a whole value swapped or pushed: poisoning is ignored.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StateBackend for SqlStore {
    fn add_creating(&self, rec: Creating) -> StateFuture<'_, ()> {
        Box::pin(async move {
            let record = encode(self, "create marker", &rec)?;
            let o = self.owner();
            // One marker says all a second would (see JsonFiles): added only if none is there.
            let n = self
                .execute(
                    "record a create",
                    sqlx::query(sql(
                        self.dialect,
                        "INSERT INTO uploads (target, multihash, at, record, owner, token) \
                         SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM members \
                         WHERE instance = $5 AND token = $6 AND expires_ms >= {now}) \
                         AND NOT EXISTS (SELECT 1 FROM uploads \
                         WHERE upload_id IS NULL AND target = $1 AND multihash = $2)",
                    ))
                    .bind(target_key(&rec.target))
                    .bind(rec.multihash.to_ascii_lowercase())
                    .bind(rec.at.to_rfc3339())
                    .bind(record)
                    .bind(o.instance)
                    .bind(o.token),
                )
                .await?;
            self.unchanged(n).await
        })
    }

    fn remove_creating(&self, target: AssetTarget, multihash: String) -> StateFuture<'_, ()> {
        Box::pin(async move {
            let o = self.owner();
            let n = self
                .execute(
                    "forget a create",
                    sqlx::query(sql(
                        self.dialect,
                        "DELETE FROM uploads WHERE upload_id IS NULL AND target = $1 \
                         AND multihash = $2 AND owner = $3 AND EXISTS (SELECT 1 FROM members \
                         WHERE instance = $3 AND token = $4 AND expires_ms >= {now})",
                    ))
                    .bind(target_key(&target))
                    .bind(multihash.to_ascii_lowercase())
                    .bind(o.instance)
                    .bind(o.token),
                )
                .await?;
            self.unchanged(n).await
        })
    }

    fn clear_creating(&self, target: AssetTarget) -> StateFuture<'_, ()> {
        Box::pin(async move {
            let o = self.owner();
            let n = self
                .execute(
                    "forget the creates of a target",
                    sqlx::query(sql(
                        self.dialect,
                        "DELETE FROM uploads WHERE upload_id IS NULL AND target = $1 \
                         AND owner = $2 AND EXISTS (SELECT 1 FROM members \
                         WHERE instance = $2 AND token = $3 AND expires_ms >= {now})",
                    ))
                    .bind(target_key(&target))
                    .bind(o.instance)
                    .bind(o.token),
                )
                .await?;
            self.unchanged(n).await
        })
    }

    fn creating(&self) -> StateFuture<'_, Vec<Creating>> {
        Box::pin(self.records(
            "read the create markers",
            (
                "SELECT record FROM uploads WHERE upload_id IS NULL ORDER BY at",
                "SELECT record FROM uploads WHERE upload_id IS NULL AND owner = $1 ORDER BY at",
            ),
        ))
    }

    fn created_unseen(&self, target: AssetTarget, multihash: String) -> StateFuture<'_, bool> {
        Box::pin(
            self.exists(
                "read the create markers",
                sqlx::query(
                    "SELECT 1 AS one FROM uploads WHERE upload_id IS NULL AND target = $1 \
                     AND multihash = $2 AND ($3 = '' OR owner = $3) LIMIT 1",
                )
                .bind(target_key(&target))
                .bind(multihash.to_ascii_lowercase())
                .bind(self.scope()),
            ),
        )
    }

    fn add_inflight(&self, rec: InFlight) -> StateFuture<'_, ()> {
        Box::pin(self.write_inflight(rec, false))
    }

    fn record_created(&self, rec: InFlight) -> StateFuture<'_, ()> {
        Box::pin(self.write_inflight(rec, true))
    }

    fn remove_inflight(&self, id: UploadId) -> StateFuture<'_, ()> {
        Box::pin(async move {
            let o = self.owner();
            let n = self
                .execute(
                    "forget an upload",
                    sqlx::query(sql(
                        self.dialect,
                        "DELETE FROM uploads WHERE upload_id = $1 AND owner = $2 \
                         AND EXISTS (SELECT 1 FROM members \
                         WHERE instance = $2 AND token = $3 AND expires_ms >= {now})",
                    ))
                    .bind(id.0)
                    .bind(o.instance)
                    .bind(o.token),
                )
                .await?;
            self.unchanged(n).await
        })
    }

    fn inflight(&self) -> StateFuture<'_, Vec<InFlight>> {
        Box::pin(self.records(
            "read the uploads in flight",
            (
                "SELECT record FROM uploads WHERE upload_id IS NOT NULL ORDER BY at",
                "SELECT record FROM uploads WHERE upload_id IS NOT NULL AND owner = $1 \
                 ORDER BY at",
            ),
        ))
    }

    fn is_ours(&self, id: UploadId) -> StateFuture<'_, bool> {
        Box::pin(
            self.exists(
                "read the uploads in flight",
                sqlx::query(
                    "SELECT 1 AS one FROM uploads WHERE upload_id = $1 \
                 AND ($2 = '' OR owner = $2) LIMIT 1",
                )
                .bind(id.0)
                .bind(self.scope()),
            ),
        )
    }

    fn record_run(&self, mut rec: RunRecord) -> StateFuture<'_, ()> {
        if self.call_limit.is_some() && rec.instance.is_none() {
            // A cluster's store: which instance ran it.
            rec.instance = Some(self.owner().instance);
        }
        let full = {
            let mut p = lock(&self.pending);
            p.runs.push(rec);
            // While writes fail (a full disk), the oldest held runs go: memory stays bounded.
            let excess = p.runs.len().saturating_sub(2 * PENDING_RUNS_MAX);
            p.runs.drain(..excess);
            p.runs.len() >= PENDING_RUNS_MAX
        };
        Box::pin(async move {
            if full {
                self.flush_pending().await?;
            }
            Ok(())
        })
    }

    fn history(&self) -> StateFuture<'_, BTreeMap<String, Vec<RunRecord>>> {
        Box::pin(async move {
            let rows = self
                .fetch_all(
                    "read the run history",
                    sqlx::query("SELECT job, record FROM runs ORDER BY job, seq"),
                )
                .await?;
            let mut out: BTreeMap<String, Vec<RunRecord>> = BTreeMap::new();
            for row in &rows {
                match decode_record::<RunRecord>(row, "record") {
                    Ok(run) => out.entry(run.job.clone()).or_default().push(run),
                    // One unreadable run (written by a newer release, say) is not the history.
                    Err(e) => tracing::warn!(error = %e, "a run record of the history is skipped"),
                }
            }
            for run in lock(&self.pending).runs.iter().cloned() {
                out.entry(run.job.clone()).or_default().push(run);
            }
            for runs in out.values_mut() {
                let excess = runs.len().saturating_sub(HISTORY_PER_JOB);
                runs.drain(..excess);
            }
            Ok(out)
        })
    }

    fn job_history(&self, job: String) -> StateFuture<'_, Vec<RunRecord>> {
        Box::pin(async move {
            let rows = self
                .fetch_all(
                    "read the run history",
                    sqlx::query("SELECT record FROM runs WHERE job = $1 ORDER BY seq")
                        .bind(job.clone()),
                )
                .await?;
            let mut runs: Vec<RunRecord> = rows
                .iter()
                .filter_map(|row| match decode_record::<RunRecord>(row, "record") {
                    Ok(run) => Some(run),
                    Err(e) => {
                        tracing::warn!(error = %e, "a run record of the history is skipped");
                        None
                    }
                })
                .collect();
            runs.extend(
                lock(&self.pending)
                    .runs
                    .iter()
                    .filter(|r| r.job == job)
                    .cloned(),
            );
            let excess = runs.len().saturating_sub(HISTORY_PER_JOB);
            runs.drain(..excess);
            Ok(runs)
        })
    }

    fn flush(&self) -> StateFuture<'_, ()> {
        Box::pin(self.flush_pending())
    }

    fn digest<'a>(&'a self, key: &'a DigestKey) -> stac_upload::DigestFuture<'a> {
        Box::pin(SqlStore::digest(self, key))
    }

    fn put_digest(&self, key: DigestKey, digest: &FileDigest) {
        SqlStore::put_digest(self, key, digest);
    }
}

impl SqlStore {
    /// Records an upload (replacing a record of the same id); with `from_marker`, the create
    /// marker it answers becomes its record, in the same transaction.
    async fn write_inflight(&self, rec: InFlight, from_marker: bool) -> Result<(), StateError> {
        self.refuse_write()?;
        let record = encode(self, "record of an upload in flight", &rec)?;
        let row = (
            rec.upload_id.0.clone(),
            rec.job.clone(),
            target_key(&rec.target),
            rec.multihash.to_ascii_lowercase(),
            rec.created.to_rfc3339(),
            i64::from(rec.pid),
            record,
        );
        let pool = self.pool.clone();
        let written = self
            .run(
                "record an upload in flight",
                write_inflight_rows(pool, self.dialect, self.owner(), row, from_marker),
            )
            .await?;
        if written { Ok(()) } else { Err(self.fenced()) }
    }
}

/// The rows of `uploads` whose holder's lease lapsed, or that no instance holds.
macro_rules! lapsed {
    () => {
        "(owner IS NULL OR owner NOT IN (SELECT instance FROM members WHERE expires_ms >= {now}))"
    };
}

/// Leases, claims and ownership: what lets instances share the store (see `docs/cluster.md`).
/// The embedded store uses them too, with one instance whose lease never lapses.
impl SqlStore {
    /// The store of a cluster: digests keyed by `host`, every call bounded by `call_limit`.
    pub(crate) fn for_cluster(mut self, host: String, call_limit: std::time::Duration) -> Self {
        self.digest_host = host;
        self.call_limit = Some(call_limit);
        self
    }

    /// Who writes now.
    pub(crate) fn owner(&self) -> Owner {
        self.owner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn fenced(&self) -> StateError {
        let o = self.owner();
        StateError::Fenced {
            store: self.name.clone(),
            instance: o.instance,
            token: o.token,
        }
    }

    /// Takes a lease for `instance`, with a new fencing token, and writes as it from now on.
    /// `lease`: `None` for one that never lapses (the embedded store). A lapsed holder of the
    /// name is replaced; a live one is not: [`StateError::InstanceInUse`].
    pub(crate) async fn join(
        &self,
        instance: &str,
        host: &str,
        pid: u32,
        lease: Option<std::time::Duration>,
    ) -> Result<i64, StateError> {
        self.refuse_write()?;
        let d = self.dialect;
        let pool = self.pool.clone();
        let (name, host) = (instance.to_owned(), host.to_owned());
        let lease_ms = lease.map_or(FOREVER_MS, |l| l.as_millis().min(FOREVER_MS as u128) as i64);
        let joined = self
            .run("take a lease", async move {
                let mut tx = pool.begin().await?;
                sqlx::query(sql(
                    d,
                    "DELETE FROM members WHERE instance = $1 AND expires_ms < {now}",
                ))
                .bind(name.clone())
                .execute(&mut *tx)
                .await?;
                let held = sqlx::query(sql(
                    d,
                    "SELECT host, pid, expires_ms - {now} AS left_ms FROM members \
                     WHERE instance = $1",
                ))
                .bind(name.clone())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = held {
                    let holder: (String, i64, i64) = (
                        row.try_get("host")?,
                        row.try_get("pid")?,
                        row.try_get("left_ms")?,
                    );
                    tx.rollback().await?;
                    return Ok(Err(holder));
                }
                let token: i64 = sqlx::query("UPDATE fence SET n = n + 1 WHERE id = 1 RETURNING n")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                sqlx::query(sql(
                    d,
                    "INSERT INTO members \
                     (instance, host, pid, token, started_ms, renewed_ms, expires_ms) \
                     VALUES ($1, $2, $3, $4, {now}, {now}, {now} + $5)",
                ))
                .bind(name)
                .bind(host)
                .bind(i64::from(pid))
                .bind(token)
                .bind(lease_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Ok(token))
            })
            .await?;
        match joined {
            Ok(token) => {
                *self
                    .owner
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Owner {
                    instance: instance.to_owned(),
                    token,
                };
                Ok(token)
            }
            Err((host, pid, left_ms)) => Err(StateError::InstanceInUse {
                instance: instance.to_owned(),
                host,
                pid,
                left_ms,
            }),
        }
    }

    /// Extends this instance's lease by `lease` from the database's now; `false` when it is no
    /// longer held (lapsed, or taken): the instance is fenced, and must join again.
    pub(crate) async fn renew(&self, lease: std::time::Duration) -> Result<bool, StateError> {
        let o = self.owner();
        let lease_ms = lease.as_millis().min(FOREVER_MS as u128) as i64;
        let n = self
            .execute(
                "renew the lease",
                sqlx::query(sql(
                    self.dialect,
                    "UPDATE members SET renewed_ms = {now}, expires_ms = {now} + $3 \
                     WHERE instance = $1 AND token = $2 AND expires_ms >= {now}",
                ))
                .bind(o.instance)
                .bind(o.token)
                .bind(lease_ms),
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives the lease up: what this instance holds is taken over by the others at once.
    pub(crate) async fn leave(&self) -> Result<(), StateError> {
        let o = self.owner();
        self.execute(
            "give the lease up",
            sqlx::query("DELETE FROM members WHERE instance = $1 AND token = $2")
                .bind(o.instance)
                .bind(o.token),
        )
        .await
        .map(drop)
    }

    /// Takes the one lease of the embedded store ([`LOCAL`]), dropping any earlier process's,
    /// and makes every record its own.
    pub(crate) async fn join_alone(&self) -> Result<(), StateError> {
        self.execute("take the lease", sqlx::query("DELETE FROM members"))
            .await?;
        self.join(LOCAL, "", std::process::id(), None).await?;
        self.adopt_all().await
    }

    /// Whether this instance's lease is live by the database's clock.
    pub(crate) async fn is_live(&self) -> Result<bool, StateError> {
        let o = self.owner();
        self.exists(
            "read the lease",
            sqlx::query(sql(
                self.dialect,
                "SELECT 1 AS one FROM members \
                 WHERE instance = $1 AND token = $2 AND expires_ms >= {now}",
            ))
            .bind(o.instance)
            .bind(o.token),
        )
        .await
    }

    /// `Ok` when a write that changed nothing did so because there was nothing to change, the
    /// fencing error when it did because this instance's lease is gone.
    async fn unchanged(&self, changed: u64) -> Result<(), StateError> {
        if changed > 0 || self.is_live().await? {
            Ok(())
        } else {
            Err(self.fenced())
        }
    }

    /// Every instance on record, live or lapsed, and what each holds.
    pub(crate) async fn members(&self) -> Result<Vec<Member>, StateError> {
        let rows = self
            .fetch_all(
                "read the members",
                sqlx::query(sql(
                    self.dialect,
                    "SELECT m.instance, m.host, m.pid, m.token, m.started_ms, m.renewed_ms, \
                     m.expires_ms, {now} AS now_ms, \
                     (SELECT COUNT(*) FROM uploads u WHERE u.owner = m.instance) AS holds \
                     FROM members m ORDER BY m.instance",
                )),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let expires_ms: i64 = r.try_get("expires_ms")?;
                let now_ms: i64 = r.try_get("now_ms")?;
                Ok(Member {
                    instance: r.try_get("instance")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    token: r.try_get("token")?,
                    started_ms: r.try_get("started_ms")?,
                    renewed_ms: r.try_get("renewed_ms")?,
                    expires_ms,
                    live: expires_ms >= now_ms,
                    holds: r.try_get("holds")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.error("read the members", e))
    }

    /// Makes every record this instance's: the embedded store, where one instance owns all
    /// (records written before ownership existed included).
    pub(crate) async fn adopt_all(&self) -> Result<(), StateError> {
        let o = self.owner();
        self.execute(
            "adopt the records",
            sqlx::query("UPDATE uploads SET owner = $1, token = $2")
                .bind(o.instance)
                .bind(o.token),
        )
        .await
        .map(drop)
    }

    /// Takes what instances whose lease lapsed (or that left) hold: their uploads in flight and
    /// create markers, and their claims never finished that were not taken once already; and
    /// this instance's own unfinished claims of an earlier lease (it lost its lease, or was
    /// restarted under its name, and joined again before another took them). A row
    /// is taken by one instance only: the update's condition is evaluated again on a row another
    /// taker changed meanwhile, and its new owner is live.
    pub(crate) async fn take_over(&self) -> Result<Taken, StateError> {
        let o = self.owner();
        let d = self.dialect;
        let pool = self.pool.clone();
        let taken = self
            .run("take over the work of lapsed instances", async move {
                let mut tx = pool.begin().await?;
                let live = sqlx::query(sql(
                    d,
                    "SELECT 1 AS one FROM members \
                     WHERE instance = $1 AND token = $2 AND expires_ms >= {now}",
                ))
                .bind(o.instance.clone())
                .bind(o.token)
                .fetch_optional(&mut *tx)
                .await?;
                if live.is_none() {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let from: Vec<Option<String>> = sqlx::query(sql(
                    d,
                    concat!("SELECT DISTINCT owner FROM uploads WHERE ", lapsed!()),
                ))
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("owner"))
                .collect::<Result<_, _>>()?;
                let uploads = sqlx::query(sql(
                    d,
                    concat!(
                        "UPDATE uploads SET owner = $1, token = $2 WHERE ",
                        lapsed!(),
                        " RETURNING upload_id, record"
                    ),
                ))
                .bind(o.instance.clone())
                .bind(o.token)
                .fetch_all(&mut *tx)
                .await?;
                let mut records = Vec::new();
                for row in &uploads {
                    let id: Option<String> = row.try_get("upload_id")?;
                    if id.is_some() {
                        records.push(decode_record::<InFlight>(row, "record")?);
                    }
                }
                let claims = sqlx::query(sql(
                    d,
                    "UPDATE claims SET instance = $1, token = $2, retaken = retaken + 1 \
                     WHERE finished_ms IS NULL AND retaken = 0 AND (instance NOT IN \
                     (SELECT instance FROM members WHERE expires_ms >= {now}) \
                     OR (instance = $1 AND token <> $2)) \
                     RETURNING job, work",
                ))
                .bind(o.instance.clone())
                .bind(o.token)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("job")?, r.try_get("work")?)))
                .collect::<Result<Vec<(String, String)>, sqlx::Error>>()?;
                // A claim taken once and left unfinished again is not run a third time.
                sqlx::query(sql(
                    d,
                    "UPDATE claims SET finished_ms = {now} \
                     WHERE finished_ms IS NULL AND retaken > 0 AND instance NOT IN \
                     (SELECT instance FROM members WHERE expires_ms >= {now})",
                ))
                .execute(&mut *tx)
                .await?;
                // Lapsed an hour ago: forgotten (their work was taken long since).
                sqlx::query(sql(
                    d,
                    "DELETE FROM members WHERE expires_ms < {now} - 3600000",
                ))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                let took_any = !uploads.is_empty() || !claims.is_empty();
                Ok(Some(Taken {
                    uploads: records,
                    claims,
                    from: if took_any {
                        from.into_iter()
                            .map(|o| o.unwrap_or_else(|| "(none)".to_owned()))
                            .collect()
                    } else {
                        Vec::new()
                    },
                }))
            })
            .await?;
        taken.ok_or_else(|| self.fenced())
    }

    /// Claims `work` of `job` for this instance: [`Claim::Won`] when this instance inserted the
    /// claim (or holds it, taken over from a lapsed instance, unfinished), [`Claim::Lost`] when
    /// another did; the fencing error when this instance's lease is gone.
    pub(crate) async fn claim(&self, job: &str, work: &str) -> Result<Claim, StateError> {
        let o = self.owner();
        let inserted = self
            .execute(
                "claim work",
                sqlx::query(sql(
                    self.dialect,
                    "INSERT INTO claims (job, work, instance, token, claimed_ms, retaken) \
                     SELECT $1, $2, $3, $4, {now}, 0 WHERE EXISTS (SELECT 1 FROM members \
                     WHERE instance = $3 AND token = $4 AND expires_ms >= {now}) \
                     ON CONFLICT DO NOTHING",
                ))
                .bind(job.to_owned())
                .bind(work.to_owned())
                .bind(o.instance.clone())
                .bind(o.token),
            )
            .await?;
        if inserted == 1 {
            return Ok(Claim::Won);
        }
        let rows = self
            .fetch_all(
                "read a claim",
                sqlx::query(
                    "SELECT instance, finished_ms FROM claims WHERE job = $1 AND work = $2",
                )
                .bind(job.to_owned())
                .bind(work.to_owned()),
            )
            .await?;
        let Some(row) = rows.first() else {
            // Not inserted and not there: the lease's condition failed.
            return Err(self.fenced());
        };
        let by: String = row
            .try_get("instance")
            .map_err(|e| self.error("read a claim", e))?;
        let finished: Option<i64> = row
            .try_get("finished_ms")
            .map_err(|e| self.error("read a claim", e))?;
        if by == o.instance && finished.is_none() {
            return if self.is_live().await? {
                Ok(Claim::Won)
            } else {
                Err(self.fenced())
            };
        }
        Ok(Claim::Lost { by })
    }

    /// Marks a claim finished: a lapsed claimer's unfinished claims are run again once by the
    /// instance that takes them over; finished ones are not.
    pub(crate) async fn finish_claim(&self, job: &str, work: &str) -> Result<(), StateError> {
        let o = self.owner();
        let n = self
            .execute(
                "finish a claim",
                sqlx::query(sql(
                    self.dialect,
                    "UPDATE claims SET finished_ms = {now} WHERE job = $1 AND work = $2 \
                     AND instance = $3 AND token = $4 AND EXISTS (SELECT 1 FROM members \
                     WHERE instance = $3 AND token = $4 AND expires_ms >= {now})",
                ))
                .bind(job.to_owned())
                .bind(work.to_owned())
                .bind(o.instance)
                .bind(o.token),
            )
            .await?;
        self.unchanged(n).await
    }

    /// Forgets claims older than `keep`.
    pub(crate) async fn prune_claims(&self, keep: std::time::Duration) -> Result<u64, StateError> {
        self.execute(
            "forget old claims",
            sqlx::query(sql(
                self.dialect,
                "DELETE FROM claims WHERE claimed_ms < {now} - $1",
            ))
            .bind(keep.as_millis().min(FOREVER_MS as u128) as i64),
        )
        .await
    }

    /// Who holds the upload `id`.
    pub(crate) async fn holder(&self, id: &UploadId) -> Result<Holder, StateError> {
        self.holder_where(
            sqlx::query(sql(
                self.dialect,
                "SELECT u.owner, m.expires_ms, {now} AS now_ms FROM uploads u \
                 LEFT JOIN members m ON m.instance = u.owner WHERE u.upload_id = $1",
            ))
            .bind(id.0.clone()),
        )
        .await
    }

    /// Who holds the create marker of `target` with `multihash`.
    pub(crate) async fn marker_holder(
        &self,
        target: &AssetTarget,
        multihash: &str,
    ) -> Result<Holder, StateError> {
        self.holder_where(
            sqlx::query(sql(
                self.dialect,
                "SELECT u.owner, m.expires_ms, {now} AS now_ms FROM uploads u \
                 LEFT JOIN members m ON m.instance = u.owner \
                 WHERE u.upload_id IS NULL AND u.target = $1 AND u.multihash = $2",
            ))
            .bind(target_key(target))
            .bind(multihash.to_ascii_lowercase()),
        )
        .await
    }

    async fn holder_where(&self, query: Query) -> Result<Holder, StateError> {
        let me = self.owner().instance;
        let rows = self.fetch_all("read who holds an upload", query).await?;
        let mut found = Holder::Nobody;
        for row in &rows {
            let read = || -> Result<Holder, sqlx::Error> {
                let owner: Option<String> = row.try_get("owner")?;
                let expires: Option<i64> = row.try_get("expires_ms")?;
                let now: i64 = row.try_get("now_ms")?;
                Ok(match owner {
                    Some(o) if o == me => Holder::Us,
                    Some(o) if expires.is_some_and(|e| e >= now) => Holder::Live(o),
                    other => Holder::Lapsed(other),
                })
            };
            let h = read().map_err(|e| self.error("read who holds an upload", e))?;
            // Ours first, then a live holder: the answer that keeps an upload safest.
            found = match (&found, &h) {
                (Holder::Us, _) => Holder::Us,
                (_, Holder::Us) => Holder::Us,
                (Holder::Live(_), _) => found,
                _ => h,
            };
        }
        Ok(found)
    }
}
