//! The daemon's memory across restarts: the uploads it has in flight and the creates it has sent
//! (so that a restart resumes or aborts them, and nothing of ours is ever left in progress),
//! recent run history for `stac-uploadd status`, and the digest cache.
//!
//! One interface, [`StateBackend`], for what crash safety rests on and what several daemons
//! would share: in-flight uploads, create markers, run history, the digest cache. Its methods
//! are async and fallible, so a backend may sit on a database across the network. The store is
//! SQL ([`sql`]), one text for two engines: SQLite in the state folder ([`sqlite`], the
//! default) and PostgreSQL for a cluster. The JSON files of earlier releases ([`files`]) are
//! imported once at start.
//!
//! A write the caller waits for is committed when it returns, or returns an error: the caller
//! decides (a create whose marker cannot be written is not sent). The last write's failure, if
//! any, is what [`StateStore::write_problem`] tells `/readyz`.

mod fence;
mod files;
mod lock;
mod path;
mod postgres;
mod sql;
mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use stac_client::{AssetTarget, UploadId};
use stac_upload::{DigestCache, DigestKey, FileDigest};

pub use fence::Fence;
pub use files::{DIGESTS_LIMIT, HISTORY_LIMIT, INFLIGHT_LIMIT, JsonFiles};
pub use postgres::{PgTarget, redacted as redacted_url};
pub use sql::{Claim, Holder, Member, Taken};
pub use sqlite::DB_FILE;

/// Digests kept: a file's (device, inode, size, mtime, ctime) and part size → its multihash and
/// MD5s. Bounded; the oldest entries go first.
pub const DIGESTS_KEPT: usize = 10_000;
pub use lock::{StateLock, lock_state, state_holder};

/// Runs kept per job.
pub const HISTORY_PER_JOB: usize = 20;
/// How long history changes may wait before they are written.
pub const HISTORY_FLUSH: Duration = Duration::from_secs(5);

/// A future a backend returns.
pub type StateFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StateError>> + Send + 'a>>;

/// An upload this daemon created and has not seen finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub upload_id: UploadId,
    pub job: String,
    pub target: AssetTarget,
    /// Any bytes (see [`path`]: kept exactly, never lossily).
    #[serde(with = "path")]
    pub file: PathBuf,
    /// The file as it was digested: size, mtime (s, ns), inode.
    pub size: u64,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub multihash: String,
    pub part_size: u64,
    pub created: DateTime<Utc>,
    /// The earliest expiry of its presigned URLs, if the server gave one.
    pub urls_expire: Option<DateTime<Utc>>,
    /// Process id of the daemon that created it (a live one is still sending it).
    pub pid: u32,
}

/// A create sent for `target` with `multihash`, answer not (yet) seen: if the answer is lost, an
/// in-progress upload of this target with this multihash is ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creating {
    pub target: AssetTarget,
    pub multihash: String,
    pub at: DateTime<Utc>,
}

/// How a run ended. Stored in the history by these names: a variant may be added, never
/// renamed or removed, so that older history files still load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The asset now holds the file; bytes were sent.
    Uploaded,
    /// The asset already held the file; nothing was sent.
    Unchanged,
    /// Given up on an error, whatever the policy: retries exhausted, the single try of the
    /// cancel policy, the run deadline.
    Failed,
    /// Given up because someone else's upload, possibly still running, holds the asset.
    Blocked,
    /// Stopped by shutdown: not an error. (Histories written before `blocked` and `failed`
    /// were told apart also hold runs the cancel policy gave up under this name.)
    Cancelled,
    /// An upload a previous process left in flight was finished at start-up.
    Resumed,
    /// An upload a previous process left in flight was aborted at start-up.
    AbortedAtStart,
    /// Blocked by an upload record the server cannot abort (its S3 upload is gone): only the
    /// service's operators can free the asset.
    Unfreeable,
}

/// What a run's outcome does to its job's run of failures (`stac_uploadd_consecutive_failures`
/// and `stac-uploadd status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streak {
    /// The job published its file: the failures in a row end.
    Success,
    /// One more failure in a row.
    Failure,
    /// Neither: the count stays as it is.
    Neutral,
}

impl Outcome {
    /// Every outcome, for series that exist before the first run.
    pub const ALL: [Outcome; 8] = [
        Outcome::Uploaded,
        Outcome::Unchanged,
        Outcome::Resumed,
        Outcome::AbortedAtStart,
        Outcome::Failed,
        Outcome::Blocked,
        Outcome::Unfreeable,
        Outcome::Cancelled,
    ];

    /// Stable lower-case name for logs, metrics and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Uploaded => "uploaded",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
            Outcome::Blocked => "blocked",
            Outcome::Cancelled => "cancelled",
            Outcome::Resumed => "resumed",
            Outcome::AbortedAtStart => "aborted_at_start",
            Outcome::Unfreeable => "unfreeable",
        }
    }

    /// Whether the run ended a run of failures, added to one, or neither. An upload aborted at
    /// start-up published nothing but failed nothing either; a shutdown is no failure.
    pub fn streak(self) -> Streak {
        match self {
            Outcome::Uploaded | Outcome::Unchanged | Outcome::Resumed => Streak::Success,
            Outcome::Failed | Outcome::Blocked | Outcome::Unfreeable => Streak::Failure,
            Outcome::Cancelled | Outcome::AbortedAtStart => Streak::Neutral,
        }
    }
}

/// The failures in a row at the end of a job's `runs` (oldest first): runs that are neither a
/// success nor a failure are passed over.
pub fn trailing_failures(runs: &[RunRecord]) -> usize {
    runs.iter()
        .rev()
        .map(|r| r.outcome.streak())
        .take_while(|s| *s != Streak::Success)
        .filter(|s| *s == Streak::Failure)
        .count()
}

/// When the last of `runs` that published its file finished.
pub fn last_success(runs: &[RunRecord]) -> Option<DateTime<Utc>> {
    runs.iter()
        .rev()
        .find(|r| r.outcome.streak() == Streak::Success)
        .map(|r| r.finished)
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub outcome: Outcome,
    pub asset: String,
    /// The item of the asset the run wrote (`None`: a collection asset, or a record written
    /// before this field existed), so that a templated target can be rebuilt from history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Any bytes (see [`path`]: kept exactly, never lossily).
    #[serde(default, with = "path::option")]
    pub file: Option<PathBuf>,
    pub bytes: u64,
    pub attempts: u32,
    pub upload_id: Option<UploadId>,
    pub error: Option<String>,
    /// An item run's assets, each with its own outcome (empty for a one-file run, and in
    /// records written before item runs existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<AssetRun>,
    /// The cluster instance that ran it (`None` without a cluster, and in records written
    /// before clusters existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The class of the error the run ended on (the `reason` label of the retry counters: a
    /// protocol error class such as `conflict`, or a local one such as `file_changed`); `None`
    /// for a run that did not fail, and in records written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// What the public link of each uploaded asset served after the run (`verify_public`); empty
    /// when nothing was checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public: Vec<PublicCheck>,
}

/// One check of an uploaded asset's public `href`: a `HEAD` after the upload, compared with the
/// file that was sent (docs/verify.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicCheck {
    /// The asset's id (and the item it is in, for an item run).
    pub asset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The public URL that was checked.
    pub url: String,
    /// `None`: the link serves the file. Otherwise why not, one of a closed set (the `reason`
    /// label of `stac_uploadd_verify_public_failures_total`): `missing`, `status`,
    /// `unreachable`, `size`, `sha256`, `encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// What was expected and what was found, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The object's `Cache-Control` max-age in seconds, when it has one: how long caches may go
    /// on serving a replaced file's old bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

/// One asset of an item run: where it went and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetRun {
    pub asset: String,
    /// The item it went to: the run's item, or its alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Any bytes (see [`path`]: kept exactly, never lossily).
    #[serde(default, with = "path::option")]
    pub file: Option<PathBuf>,
    pub bytes: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<UploadId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state folder {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The record of our uploads in progress cannot be read. Unlike a cache, it cannot simply be
    /// moved aside: an operator must decide (see the message).
    #[error(
        "state file {} is not valid ({problem}). It lists the uploads this daemon has in progress on the server and the creates it has sent: moving it aside loses them, and each such upload then blocks its asset until its job's stale_after passes or someone aborts it (stac-uploadd status shows recent runs). Repair it, or move it aside knowingly, then start again",
        path.display()
    )]
    CorruptInflight { path: PathBuf, problem: Unusable },
    /// A state document could not be turned into JSON (nothing was written).
    #[error("cannot write the {what} {}: {source}", path.display())]
    Encode {
        what: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the state store's worker failed: {0}")]
    Worker(String),
    /// The database refused or failed (a full disk, a read-only folder, a lost server...).
    #[error("state store {store}: cannot {action}: {source}")]
    Db {
        store: String,
        action: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This instance's lease is gone (it lapsed, or another instance took over its work): the
    /// write was refused, so that an instance back from a pause or a lost connection never
    /// overwrites its successor's records.
    #[error(
        "state store {store}: write refused: instance {instance} no longer holds its lease (token {token}); another instance may hold its work"
    )]
    Fenced {
        store: String,
        instance: String,
        token: i64,
    },
    /// Another live process holds the lease of this instance name.
    #[error(
        "instance name {instance} is held by a live lease (host {host}, pid {pid}, {left_ms} ms left): two processes must not share a name (leave `instance` unset for one unique per process)"
    )]
    InstanceInUse {
        instance: String,
        host: String,
        pid: i64,
        left_ms: i64,
    },
    /// The database is damaged and the uploads in flight it records cannot be read from it.
    #[error(
        "state database {} is damaged ({problem}). It lists the uploads this daemon has in progress on the server and the creates it has sent: moving it aside loses them, and each such upload then blocks its asset until its job's stale_after passes or someone aborts it (stac-uploadd uploads lists the server's). Repair it (sqlite3 .recover), or move it aside knowingly, then start again",
        path.display()
    )]
    CorruptDatabase { path: PathBuf, problem: String },
}

/// Why a state file that exists cannot be used as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unusable {
    /// Not JSON of the expected shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Larger than the limit it is read with: reading it would hold it all in memory.
    #[error("it is {size} bytes: expected a regular file of at most {limit}")]
    TooLarge {
        size: u64,
        limit: stac_client::units::ByteSize,
    },
    /// A directory, a FIFO, a device, a symbolic link...: state files are regular files that
    /// the daemon replaces itself. Not read at all.
    #[error("it is {what}: expected a regular file of at most {limit}")]
    NotAFile {
        what: &'static str,
        limit: stac_client::units::ByteSize,
    },
}

impl StateError {
    /// True when the daemon must not start until an operator has looked (systemd must not
    /// restart it in a loop).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            StateError::CorruptInflight { .. } | StateError::CorruptDatabase { .. }
        )
    }
}

/// What crash safety rests on, and what several daemons sharing the work would share. Every
/// write is durable when its future resolves `Ok`.
pub trait StateBackend: Send + Sync + std::fmt::Debug {
    /// Records a create about to be sent.
    fn add_creating(&self, rec: Creating) -> StateFuture<'_, ()>;
    /// Forgets the creates recorded for `target` with `multihash`.
    fn remove_creating(&self, target: AssetTarget, multihash: String) -> StateFuture<'_, ()>;
    /// Forgets every create marker of `target`.
    fn clear_creating(&self, target: AssetTarget) -> StateFuture<'_, ()>;
    /// The creates recorded as sent whose answer was not seen.
    fn creating(&self) -> StateFuture<'_, Vec<Creating>>;
    /// Whether a create of ours for `target` with this multihash was sent without its answer seen.
    fn created_unseen(&self, target: AssetTarget, multihash: String) -> StateFuture<'_, bool>;
    /// Records an upload before any part is sent.
    fn add_inflight(&self, rec: InFlight) -> StateFuture<'_, ()>;
    /// Records an upload the server made for a create, and forgets that create's marker: the
    /// same as [`StateBackend::add_inflight`] then [`StateBackend::remove_creating`], in one
    /// transaction where the backend has them.
    fn record_created(&self, rec: InFlight) -> StateFuture<'_, ()> {
        Box::pin(async move {
            let (target, multihash) = (rec.target.clone(), rec.multihash.clone());
            self.add_inflight(rec).await?;
            self.remove_creating(target, multihash).await
        })
    }
    /// Forgets an upload that is completed or aborted.
    fn remove_inflight(&self, id: UploadId) -> StateFuture<'_, ()>;
    /// The uploads recorded as in flight.
    fn inflight(&self) -> StateFuture<'_, Vec<InFlight>>;
    /// Whether this upload id is one of ours.
    fn is_ours(&self, id: UploadId) -> StateFuture<'_, bool>;
    /// Appends a finished run (it may be written later, by [`StateBackend::flush`]).
    fn record_run(&self, rec: RunRecord) -> StateFuture<'_, ()>;
    /// The recorded runs, per job, oldest first.
    fn history(&self) -> StateFuture<'_, BTreeMap<String, Vec<RunRecord>>>;
    /// The recorded runs of one job, oldest first (a cluster's store holds every member's).
    fn job_history(&self, job: String) -> StateFuture<'_, Vec<RunRecord>> {
        Box::pin(async move { Ok(self.history().await?.remove(&job).unwrap_or_default()) })
    }
    /// Writes what is held back (history, digests).
    fn flush(&self) -> StateFuture<'_, ()>;
    /// The digest cached for a file; `None` when unknown or unreadable.
    fn digest<'a>(&'a self, key: &'a DigestKey) -> stac_upload::DigestFuture<'a>;
    /// Caches a file's digest (it may be written by the next flush).
    fn put_digest(&self, key: DigestKey, digest: &FileDigest);
}

/// Whether the daemon, run as this user, can keep its state in `dir`: a folder it can create
/// files in, or one it can create. Tried for real, with a probe file that is removed at once
/// (permission bits do not tell: root passes them on /proc or a read-only mount, and fails).
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        existing = existing
            .parent()
            .ok_or_else(|| "no part of the path exists".to_owned())?;
    }
    let meta = std::fs::metadata(existing)
        .map_err(|e| format!("cannot read {}: {e}", existing.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "{} is not a directory: expected a folder for the daemon's state",
            existing.display()
        ));
    }
    let what = if existing == dir {
        "cannot create files in it"
    } else {
        "it does not exist, and cannot be created"
    };
    tempfile::Builder::new()
        .prefix(".stac-uploadd-check")
        .tempfile_in(existing)
        .map(drop)
        .map_err(|e| {
            format!(
                "{what} (tried in {}: {e}): expected a writable folder for the user running the daemon",
                existing.display()
            )
        })
}

/// The store of one daemon.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    backend: std::sync::Arc<dyn StateBackend>,
    /// The database, when the store is SQL (row counts for `check`).
    sql: Option<std::sync::Arc<sql::SqlStore>>,
    /// The last write's error, until a write succeeds.
    problem: std::sync::Mutex<Option<String>>,
    /// This instance's local view of the lease its writes are made under: always open for the
    /// embedded store (see [`Fence`]).
    fence: std::sync::Arc<Fence>,
}

impl StateStore {
    /// Opens the store in `dir` (created if needed): SQLite in [`DB_FILE`], the JSON files of an
    /// earlier release imported at the first start. A damaged database is moved aside with a
    /// warning once its uploads in flight are read from it, or the start is refused
    /// ([`StateError::needs_operator`]) when they cannot be.
    pub async fn open(dir: &Path) -> Result<Self, StateError> {
        let sql = std::sync::Arc::new(sqlite::open(dir).await?);
        Ok(Self::with(dir, sql.clone(), Some(sql)))
    }

    /// Opens the store to read it beside a daemon that may be running: nothing is written. A
    /// folder an earlier release wrote (JSON files, not imported yet) is read as it is.
    pub async fn open_read_only(dir: &Path) -> Result<Self, StateError> {
        match sqlite::open_read_only(dir).await? {
            Some(sql) => {
                let sql = std::sync::Arc::new(sql);
                Ok(Self::with(dir, sql.clone(), Some(sql)))
            }
            None => Ok(Self::with(
                dir,
                std::sync::Arc::new(JsonFiles::open(dir, true)?),
                None,
            )),
        }
    }

    /// The store of earlier releases (JSON files), for benches, import tests and the fuzzer
    /// (which writes nothing).
    #[doc(hidden)]
    pub fn open_json(dir: &Path) -> Result<Self, StateError> {
        Ok(Self::with(
            dir,
            std::sync::Arc::new(JsonFiles::open(dir, false)?),
            None,
        ))
    }

    fn with(
        dir: &Path,
        backend: std::sync::Arc<dyn StateBackend>,
        sql: Option<std::sync::Arc<sql::SqlStore>>,
    ) -> Self {
        Self {
            dir: dir.to_owned(),
            backend,
            sql,
            problem: std::sync::Mutex::new(None),
            fence: std::sync::Arc::new(Fence::open()),
        }
    }

    /// The local view of this instance's lease: whether it may start work, and send.
    pub fn fence(&self) -> std::sync::Arc<Fence> {
        self.fence.clone()
    }

    /// Opens the cluster's store in PostgreSQL (the migrations applied), with `dir` still the
    /// folder of this instance's local files. The caller takes a lease ([`StateStore::join`])
    /// before it writes.
    pub async fn open_cluster(dir: &Path, target: &PgTarget<'_>) -> Result<Self, StateError> {
        let sql = std::sync::Arc::new(postgres::open(target).await?);
        let mut store = Self::with(dir, sql.clone(), Some(sql));
        store.fence = std::sync::Arc::new(Fence::closed());
        Ok(store)
    }

    /// Opens the cluster's store to read it beside its members (`status`, `uploads`): no lease,
    /// no migration, nothing written; every member's records are read.
    pub async fn open_cluster_reader(
        dir: &Path,
        target: &PgTarget<'_>,
    ) -> Result<Self, StateError> {
        let sql = std::sync::Arc::new(postgres::open_reader(target).await?);
        Ok(Self::with(dir, sql.clone(), Some(sql)))
    }

    fn sql(&self) -> Result<&sql::SqlStore, StateError> {
        self.sql.as_deref().ok_or_else(|| StateError::Db {
            store: self.dir.display().to_string(),
            action: "share work",
            source: "the JSON files of earlier releases hold no leases".into(),
        })
    }

    /// Takes a lease for `instance` (see `docs/cluster.md`): its fencing token.
    pub async fn join(
        &self,
        instance: &str,
        host: &str,
        lease: Duration,
    ) -> Result<i64, StateError> {
        let r = self
            .sql()?
            .join(instance, host, std::process::id(), Some(lease))
            .await;
        self.noted(r)
    }

    /// Renews the lease; `false` when it is no longer this instance's.
    pub async fn renew(&self, lease: Duration) -> Result<bool, StateError> {
        let r = self.sql()?.renew(lease).await;
        self.noted(r)
    }

    /// Gives the lease up: the others take what this instance holds at once.
    pub async fn leave(&self) -> Result<(), StateError> {
        self.sql()?.leave().await
    }

    /// The instance and fencing token this store writes as.
    pub fn owner(&self) -> Option<(String, i64)> {
        self.sql.as_ref().map(|s| {
            let o = s.owner();
            (o.instance, o.token)
        })
    }

    /// Every instance on record.
    pub async fn members(&self) -> Result<Vec<Member>, StateError> {
        self.sql()?.members().await
    }

    /// Takes what lapsed instances hold.
    pub async fn take_over(&self) -> Result<Taken, StateError> {
        self.sql()?.take_over().await
    }

    /// Claims a unit of work for this instance.
    pub async fn claim(&self, job: &str, work: &str) -> Result<Claim, StateError> {
        self.sql()?.claim(job, work).await
    }

    /// Marks a claim finished.
    pub async fn finish_claim(&self, job: &str, work: &str) -> Result<(), StateError> {
        self.sql()?.finish_claim(job, work).await
    }

    /// Forgets claims older than `keep`.
    pub async fn prune_claims(&self, keep: Duration) -> Result<u64, StateError> {
        self.sql()?.prune_claims(keep).await
    }

    /// Who holds the upload `id`: [`Holder::Nobody`] for the JSON files of earlier releases when
    /// it is not recorded, [`Holder::Us`] when it is.
    pub async fn holder(&self, id: &UploadId) -> Result<Holder, StateError> {
        match &self.sql {
            Some(sql) => sql.holder(id).await,
            None => Ok(if self.backend.is_ours(id.clone()).await? {
                Holder::Us
            } else {
                Holder::Nobody
            }),
        }
    }

    /// Who holds the create marker of `target` with `multihash`.
    pub async fn marker_holder(
        &self,
        target: &AssetTarget,
        multihash: &str,
    ) -> Result<Holder, StateError> {
        match &self.sql {
            Some(sql) => sql.marker_holder(target, multihash).await,
            None => Ok(
                if self
                    .backend
                    .created_unseen(target.clone(), multihash.to_owned())
                    .await?
                {
                    Holder::Us
                } else {
                    Holder::Nobody
                },
            ),
        }
    }

    /// The folder the local files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the last write failed, while no write has succeeded since: the daemon is not ready
    /// (`/readyz`), as it cannot record the uploads it would start.
    pub fn write_problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Rows per table of the SQL store (`None` for the JSON files).
    pub async fn row_counts(&self) -> Result<Option<Vec<(&'static str, i64)>>, StateError> {
        match &self.sql {
            Some(sql) => sql.counts().await.map(Some),
            None => Ok(None),
        }
    }

    /// Finds out whether the store takes writes now, with a write of its own: at start, and
    /// while [`StateStore::write_problem`] says it did not, so that readiness comes back when the
    /// disk has room again even if no job writes meanwhile.
    pub async fn probe(&self) -> Result<(), StateError> {
        let r = match &self.sql {
            Some(sql) => sql.probe().await,
            None => check_dir(&self.dir).map_err(|problem| StateError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(problem),
            }),
        };
        self.noted(r)
    }

    /// Notes the outcome of a write for [`StateStore::write_problem`].
    fn noted<T>(&self, result: Result<T, StateError>) -> Result<T, StateError> {
        let mut p = self
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(_) => *p = None,
            Err(e) => *p = Some(e.to_string()),
        }
        result
    }

    /// See [`StateBackend::add_creating`].
    pub async fn add_creating(&self, rec: Creating) -> Result<(), StateError> {
        self.noted(self.backend.add_creating(rec).await)
    }

    /// See [`StateBackend::remove_creating`].
    pub async fn remove_creating(
        &self,
        target: &AssetTarget,
        multihash: &str,
    ) -> Result<(), StateError> {
        let r = self
            .backend
            .remove_creating(target.clone(), multihash.to_owned())
            .await;
        self.noted(r)
    }

    /// See [`StateBackend::clear_creating`].
    pub async fn clear_creating(&self, target: &AssetTarget) -> Result<(), StateError> {
        self.noted(self.backend.clear_creating(target.clone()).await)
    }

    /// See [`StateBackend::creating`].
    pub async fn creating(&self) -> Result<Vec<Creating>, StateError> {
        self.backend.creating().await
    }

    /// See [`StateBackend::created_unseen`].
    pub async fn created_unseen(
        &self,
        target: &AssetTarget,
        multihash: &str,
    ) -> Result<bool, StateError> {
        self.backend
            .created_unseen(target.clone(), multihash.to_owned())
            .await
    }

    /// See [`StateBackend::add_inflight`].
    pub async fn add_inflight(&self, rec: InFlight) -> Result<(), StateError> {
        self.noted(self.backend.add_inflight(rec).await)
    }

    /// See [`StateBackend::record_created`].
    pub async fn record_created(&self, rec: InFlight) -> Result<(), StateError> {
        self.noted(self.backend.record_created(rec).await)
    }

    /// See [`StateBackend::remove_inflight`].
    pub async fn remove_inflight(&self, id: &UploadId) -> Result<(), StateError> {
        self.noted(self.backend.remove_inflight(id.clone()).await)
    }

    /// See [`StateBackend::inflight`].
    pub async fn inflight(&self) -> Result<Vec<InFlight>, StateError> {
        self.backend.inflight().await
    }

    /// See [`StateBackend::is_ours`].
    pub async fn is_ours(&self, id: &UploadId) -> Result<bool, StateError> {
        self.backend.is_ours(id.clone()).await
    }

    /// See [`StateBackend::record_run`].
    pub async fn record_run(&self, rec: RunRecord) -> Result<(), StateError> {
        self.backend.record_run(rec).await
    }

    /// See [`StateBackend::history`].
    pub async fn history(&self) -> Result<BTreeMap<String, Vec<RunRecord>>, StateError> {
        self.backend.history().await
    }

    /// See [`StateBackend::job_history`].
    pub async fn job_history(&self, job: &str) -> Result<Vec<RunRecord>, StateError> {
        self.backend.job_history(job.to_owned()).await
    }

    /// Writes the history and the digest cache held back. A failure is a write problem; a
    /// success clears none (there may have been nothing to write): [`StateStore::probe`] does.
    pub async fn flush(&self) -> Result<(), StateError> {
        let r = self.backend.flush().await;
        if let Err(e) = &r {
            *self
                .problem
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
        }
        r
    }

    /// Writes what is held back, gives a cluster's lease up, and closes the database (the
    /// daemon's last act on it).
    pub async fn close(&self) -> Result<(), StateError> {
        let flushed = self.flush().await;
        if self.fence.clustered()
            && let Some(sql) = &self.sql
            && let Err(e) = sql.leave().await
        {
            tracing::warn!(error = %e, "cannot give the lease up: the others take this instance's work when it lapses");
        }
        if let Some(sql) = &self.sql {
            sql.close(Some(sqlite::CHECKPOINT)).await;
        }
        flushed
    }
}

impl DigestCache for StateStore {
    fn get<'a>(&'a self, key: &'a DigestKey) -> stac_upload::DigestFuture<'a> {
        self.backend.digest(key)
    }

    fn put(&self, key: DigestKey, digest: &FileDigest) {
        self.backend.put_digest(key, digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcome: Outcome, minute: u32) -> RunRecord {
        let t = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, 10, minute, 0).unwrap();
        RunRecord {
            instance: None,
            error_class: None,
            public: Vec::new(),
            job: "j".into(),
            started: t,
            finished: t,
            outcome,
            item: None,
            asset: "a.zip".into(),
            file: None,
            bytes: 0,
            attempts: 1,
            upload_id: None,
            error: None,
            assets: Vec::new(),
        }
    }

    #[test]
    fn records_written_before_blocked_existed_still_load() {
        // A history line as an earlier version wrote it.
        let old = r#"{"job":"j","started":"2026-03-02T10:00:00Z","finished":"2026-03-02T10:00:01Z","outcome":"cancelled","asset":"a.zip","file":"/d/a.zip","bytes":0,"attempts":1,"upload_id":null,"error":"HTTP 404"}"#;
        let rec: RunRecord = serde_json::from_str(old).unwrap();
        assert_eq!(rec.outcome, Outcome::Cancelled);
        for o in Outcome::ALL {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()), "stored by its name");
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
        }
    }

    #[test]
    fn trailing_failures_pass_over_shutdowns_and_stop_at_a_success() {
        use Outcome::*;
        let runs = |os: &[Outcome]| -> Vec<RunRecord> {
            os.iter()
                .enumerate()
                .map(|(i, o)| run(*o, i as u32))
                .collect()
        };
        assert_eq!(trailing_failures(&[]), 0);
        assert_eq!(trailing_failures(&runs(&[Failed, Uploaded])), 0);
        assert_eq!(
            trailing_failures(&runs(&[Failed, Unchanged, Failed, Cancelled, Blocked])),
            2
        );
        assert_eq!(
            trailing_failures(&runs(&[Unfreeable, AbortedAtStart, Failed])),
            2
        );
        assert_eq!(trailing_failures(&runs(&[Failed, Resumed])), 0);
        let h = runs(&[Uploaded, Failed, Unchanged, Cancelled, Failed]);
        assert_eq!(last_success(&h), Some(h[2].finished));
        assert_eq!(last_success(&runs(&[Failed, Cancelled])), None);
    }
}

#[cfg(test)]
mod asset_run_tests {
    use super::*;

    #[test]
    fn a_record_written_before_item_runs_reads_with_no_assets_and_one_with_them_round_trips() {
        let old = r#"{"job":"j","started":"2026-11-25T05:00:00Z","finished":"2026-11-25T05:00:01Z",
            "outcome":"uploaded","asset":"a.tif","file":"/d/a.tif","bytes":3,"attempts":1,
            "upload_id":null,"error":null}"#;
        let mut rec: RunRecord = serde_json::from_str(old).expect("an old record reads");
        assert!(rec.assets.is_empty());
        assert!(!serde_json::to_string(&rec).unwrap().contains("assets"));
        rec.assets.push(AssetRun {
            asset: "a.tif".into(),
            item: Some("i".into()),
            file: Some(PathBuf::from("/d/a.tif")),
            bytes: 3,
            outcome: Outcome::Uploaded,
            upload_id: None,
            error: None,
        });
        let text = serde_json::to_string(&rec).unwrap();
        assert_eq!(serde_json::from_str::<RunRecord>(&text).unwrap(), rec);
    }
}
