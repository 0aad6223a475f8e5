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

/// The one migration history of both engines.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The SQL store on an open pool.
#[derive(Debug)]
pub(crate) struct SqlStore {
    pool: AnyPool,
    /// What the store is, for messages: the database file, or the server without credentials.
    name: String,
    read_only: bool,
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
    pub(crate) fn new(pool: AnyPool, name: String, read_only: bool) -> Self {
        Self {
            pool,
            name,
            read_only,
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
        match tokio::task::spawn_blocking(move || handle.block_on(call)).await {
            Ok(result) => result.map_err(|e| self.error(action, e)),
            Err(e) => Err(StateError::Worker(format!("{action}: {e}"))),
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

    async fn records<T: serde::de::DeserializeOwned>(
        &self,
        action: &'static str,
        sql: &'static str,
    ) -> Result<Vec<T>, StateError> {
        let rows = self.fetch_all(action, sqlx::query(sql)).await?;
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
                 AND part_size = $8",
            ),
            key,
        );
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
        self.run(
            "write the run history and the digest cache",
            write_rows(pool, runs, digests, mark),
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
        let read_only = self.read_only;
        let closed = self
            .run("close", async move {
                let said = match last_words {
                    Some(sql) if !read_only => sqlx::query(sql).execute(&pool).await.map(drop),
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

async fn write_rows(
    pool: AnyPool,
    runs: Vec<RunRow>,
    digests: Vec<(DigestKey, String, String)>,
    mark: Option<(String, String)>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for run in runs {
        sqlx::query(
            "INSERT INTO runs (job, seq, finished, outcome, record) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM runs WHERE job = $1",
        )
        .bind(run.job.clone())
        .bind(run.finished)
        .bind(run.outcome)
        .bind(run.record)
        .execute(&mut *tx)
        .await?;
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
                 AND dev = $4 AND size = $5 AND ctime_s = $6 AND ctime_ns = $7 AND part_size = $8",
            ),
            &key,
        )
        .execute(&mut *tx)
        .await?;
        bind_key(
            sqlx::query(
                "INSERT INTO digests (mtime_s, mtime_ns, ino, dev, size, ctime_s, ctime_ns, \
                 part_size, seq, multihash, md5s) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, COALESCE(MAX(seq), 0) + 1, $9, $10 \
                 FROM digests",
            ),
            &key,
        )
        .bind(multihash)
        .bind(md5s)
        .execute(&mut *tx)
        .await?;
    }
    if any_digest {
        sqlx::query("DELETE FROM digests WHERE seq <= (SELECT MAX(seq) FROM digests) - $1")
            .bind(DIGESTS_KEPT as i64)
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

async fn write_inflight_rows(
    pool: AnyPool,
    row: UploadRow,
    from_marker: bool,
) -> Result<(), sqlx::Error> {
    let (upload_id, job, target, multihash, created, pid, record) = row;
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM uploads WHERE upload_id = $1")
        .bind(upload_id.clone())
        .execute(&mut *tx)
        .await?;
    // The marker of its create becomes the upload's row: one row rewritten in place.
    let mut turned = 0;
    if from_marker {
        turned = sqlx::query(
            "UPDATE uploads SET upload_id = $1, job = $2, at = $3, pid = $4, record = $5 \
             WHERE upload_id IS NULL AND target = $6 AND multihash = $7",
        )
        .bind(upload_id.clone())
        .bind(job.clone())
        .bind(created.clone())
        .bind(pid)
        .bind(record.clone())
        .bind(target.clone())
        .bind(multihash.clone())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if turned == 0 {
        sqlx::query(
            "INSERT INTO uploads (target, multihash, upload_id, job, at, pid, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(target)
        .bind(multihash)
        .bind(upload_id)
        .bind(job)
        .bind(created)
        .bind(pid)
        .bind(record)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
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
            // One marker says all a second would (see JsonFiles): added only if none is there.
            self.execute(
                "record a create",
                sqlx::query(
                    "INSERT INTO uploads (target, multihash, at, record) \
                     SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM uploads \
                     WHERE upload_id IS NULL AND target = $1 AND multihash = $2)",
                )
                .bind(target_key(&rec.target))
                .bind(rec.multihash.to_ascii_lowercase())
                .bind(rec.at.to_rfc3339())
                .bind(record),
            )
            .await
            .map(drop)
        })
    }

    fn remove_creating(&self, target: AssetTarget, multihash: String) -> StateFuture<'_, ()> {
        Box::pin(async move {
            self.execute(
                "forget a create",
                sqlx::query(
                    "DELETE FROM uploads \
                     WHERE upload_id IS NULL AND target = $1 AND multihash = $2",
                )
                .bind(target_key(&target))
                .bind(multihash.to_ascii_lowercase()),
            )
            .await
            .map(drop)
        })
    }

    fn clear_creating(&self, target: AssetTarget) -> StateFuture<'_, ()> {
        Box::pin(async move {
            self.execute(
                "forget the creates of a target",
                sqlx::query("DELETE FROM uploads WHERE upload_id IS NULL AND target = $1")
                    .bind(target_key(&target)),
            )
            .await
            .map(drop)
        })
    }

    fn creating(&self) -> StateFuture<'_, Vec<Creating>> {
        Box::pin(self.records(
            "read the create markers",
            "SELECT record FROM uploads WHERE upload_id IS NULL ORDER BY at",
        ))
    }

    fn created_unseen(&self, target: AssetTarget, multihash: String) -> StateFuture<'_, bool> {
        Box::pin(
            self.exists(
                "read the create markers",
                sqlx::query(
                    "SELECT 1 AS one FROM uploads \
                 WHERE upload_id IS NULL AND target = $1 AND multihash = $2 LIMIT 1",
                )
                .bind(target_key(&target))
                .bind(multihash.to_ascii_lowercase()),
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
            self.execute(
                "forget an upload",
                sqlx::query("DELETE FROM uploads WHERE upload_id = $1").bind(id.0),
            )
            .await
            .map(drop)
        })
    }

    fn inflight(&self) -> StateFuture<'_, Vec<InFlight>> {
        Box::pin(self.records(
            "read the uploads in flight",
            "SELECT record FROM uploads WHERE upload_id IS NOT NULL ORDER BY at",
        ))
    }

    fn is_ours(&self, id: UploadId) -> StateFuture<'_, bool> {
        Box::pin(self.exists(
            "read the uploads in flight",
            sqlx::query("SELECT 1 AS one FROM uploads WHERE upload_id = $1 LIMIT 1").bind(id.0),
        ))
    }

    fn record_run(&self, rec: RunRecord) -> StateFuture<'_, ()> {
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
        self.run(
            "record an upload in flight",
            write_inflight_rows(pool, row, from_marker),
        )
        .await
    }
}
