//! The session's public types: its options, the events and records it reports, what it returns,
//! and the snapshot of the file it sends. `session` and `transfer` both use them; neither imports
//! the other's.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::digest::{DigestOptions, FileDigest};
use super::error::UploadError;
use super::plan::DEFAULT_PART_SIZE;
use stac_client::units::ByteSize;
use stac_client::{ContentEncoding, Multihash, PartNumber, Upload, UploadId};
/// How one upload is carried out.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Target part size; grown automatically when the file needs more than 100 parts.
    pub part_size: ByteSize,
    /// Parts sent at once.
    pub parallel: usize,
    /// Further attempts at a part (and at create/complete/abort) after a transient failure.
    pub part_retries: u32,
    /// The first wait before a retry (not below `stac_client::retry::MIN_DELAY`); later waits
    /// grow exponentially, with jitter.
    pub retry_min_delay: Duration,
    /// Longest wait between two retries.
    pub retry_max_delay: Duration,
    /// Part deadline = this + part length / the part's rate: `min_part_rate`, or the
    /// bandwidth limit's share per part (the limit / `parallel`) when that is slower.
    pub part_base_timeout: Duration,
    /// Slowest rate, in bytes per second, a part may go before its deadline passes (lowered to a
    /// bandwidth limit's share per part when that is slower).
    pub min_part_rate: ByteSize,
    /// A part whose body makes no progress for this long is cut off and retried.
    pub stall_timeout: Duration,
    /// Read size when streaming parts from disk.
    pub send_buffer: usize,
    /// How files are hashed: read sizes, the memory window, the MD5 backend and workers.
    pub digest: DigestOptions,
    /// Compress before sending (`content_encoding`); `Auto` compresses files over 10 MB whose
    /// media type is not already compressed.
    pub compress: CompressMode,
    /// Read the asset first and skip the upload when its checksum is already the file's.
    pub skip_unchanged: bool,
    /// Limiters every part's bytes pass through (the daemon's and the job's).
    pub bandwidth: Vec<Arc<super::bandwidth::Bandwidth>>,
    /// Where compressed temporary files go (default: the system's temporary folder).
    pub temp_dir: Option<PathBuf>,
    /// Digests of files seen before, so an unchanged file is not read again.
    pub digest_cache: Option<Arc<dyn DigestCache>>,
    /// The run's deadline, if it has one: no retry waits past it, and a server's `Retry-After`
    /// that would is refused at once instead of being cut by the deadline.
    pub deadline: Option<tokio::time::Instant>,
}

/// What identifies a file's content without reading it: device, inode, size, mtime and ctime;
/// plus the part size the MD5s were cut at (0 for a multihash alone).
///
/// mtime alone can be set back by any writer (`cp -p`, `touch -r`, `rsync -t`), so a same-size
/// rewrite would look unchanged; ctime cannot be set by a user, and every write moves it. A
/// rename, chmod or new hard link moves it too: that costs a digest, never a wrong answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DigestKey {
    /// Device the file lives on (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
    /// Size, in bytes.
    pub size: u64,
    /// Modification time: seconds and nanoseconds since the Unix epoch.
    pub mtime: (i64, i64),
    /// Seconds and nanoseconds. A key written before it was part of the key has none, and is
    /// never read back (the state store drops it).
    pub ctime: (i64, i64),
    /// Part size, in bytes, the part MD5s were cut at; 0 when only the multihash is kept.
    pub part_size: u64,
}

impl DigestKey {
    /// The key of a file as stat'ed, for parts of `part_size`.
    pub fn new(s: &FileSnapshot, part_size: u64) -> Self {
        Self {
            dev: s.dev,
            ino: s.ino,
            size: s.len,
            mtime: s.mtime,
            ctime: s.ctime,
            part_size,
        }
    }
}

/// The future of [`DigestCache::get`].
pub type DigestFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<FileDigest>> + Send + 'a>>;

/// Remembers digests between runs (the daemon keeps them in its state store).
pub trait DigestCache: Send + Sync + std::fmt::Debug {
    /// The digest recorded for this key, if any. Async: the cache may live in a database, not in
    /// memory. A cache that cannot be read answers `None` (the file is digested again).
    fn get<'a>(&'a self, key: &'a DigestKey) -> DigestFuture<'a>;
    /// Records a digest. Never waits: a cache may hold it back and write it later.
    fn put(&self, key: DigestKey, digest: &FileDigest);
}

/// Whether and how a file is compressed before upload: `compress` in the job file and
/// `--compress` of `stac-uploadd upload`, by the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum CompressMode {
    #[default]
    /// Sent as it is (the default).
    None,
    /// gzip (`Content-Encoding: gzip`).
    Gzip,
    /// Brotli (`Content-Encoding: br`).
    Br,
    /// gzip for files over 10 MB whose media type is not already compressed (as the API's
    /// documentation recommends), nothing otherwise.
    Auto,
}

impl UploadOptions {
    /// The backoff of one call of the session (create, a part, complete, abort, reads):
    /// `part_retries` retries between `retry_min_delay` and `retry_max_delay`.
    pub(crate) fn call_backoff(&self) -> stac_client::retry::Backoff {
        stac_client::retry::backoff(
            self.retry_min_delay,
            self.retry_max_delay,
            self.part_retries,
        )
        .until(self.deadline)
    }
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: DEFAULT_PART_SIZE,
            parallel: 4,
            part_retries: 3,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(20),
            part_base_timeout: Duration::from_secs(30),
            min_part_rate: ByteSize(128 * 1024),
            stall_timeout: Duration::from_secs(60),
            send_buffer: 256 * 1024,
            digest: DigestOptions::default(),
            compress: CompressMode::None,
            skip_unchanged: true,
            bandwidth: Vec::new(),
            temp_dir: None,
            digest_cache: None,
            deadline: None,
        }
    }
}

/// What a session reports as it goes: for progress bars, logs, metrics and the state store.
#[derive(Debug)]
#[non_exhaustive]
pub enum UploadEvent<'a> {
    /// Hashing (or compressing) is about to start; not sent when the digest cache already knows the
    /// file.
    Planned {
        /// The file's size, in bytes.
        size: u64,
        /// Parts it will be sent in; 0 when it is compressed first (not known yet).
        parts: usize,
        /// Bytes per part, the last excepted; 0 when it is compressed first.
        part_size: u64,
    },
    /// Bytes were read while hashing or compressing the file.
    Hashed {
        /// Bytes read since the previous `Hashed`.
        bytes: u64,
    },
    /// The multihash is known (computed or taken from the digest cache); not sent when the file is
    /// found unchanged.
    Digested {
        /// The multihash the asset will declare (of the uncompressed file).
        multihash: &'a Multihash,
        /// Time spent getting it, compressing included.
        elapsed: Duration,
    },
    /// A create is about to be sent for this multihash (after [`UploadObserver::record`] made
    /// it durable as [`Durable::Creating`]): for progress and logs.
    Creating {
        /// The multihash the create declares.
        multihash: &'a Multihash,
    },
    /// The server holds the upload (made now, or adopted from a lost create of ours) and it is
    /// recorded; parts follow.
    Created {
        /// The upload as the server described it.
        upload: &'a Upload,
        /// The multihash it was created with.
        multihash: &'a Multihash,
        /// Bytes per part, the last excepted.
        part_size: u64,
        /// The file as it was when digested.
        file: &'a FileSnapshot,
    },
    /// Bytes of a part went out (when resuming, a part the server already holds counts as sent).
    Sent {
        /// Bytes counted as sent by this event.
        bytes: u64,
    },
    /// An attempt at a part failed after sending this many bytes; they will be sent again.
    Unsent {
        /// Bytes the failed attempt had sent.
        bytes: u64,
    },
    /// A part failed transiently and is sent again.
    PartRetry {
        /// The part that failed.
        part: PartNumber,
        /// Why it failed.
        error: &'a UploadError,
    },
    /// The asset already holds this file: nothing is sent.
    Unchanged {
        /// The multihash the asset already declares.
        multihash: &'a Multihash,
    },
    /// The server completed the upload: the asset now holds the file.
    Completed {
        /// The upload completed.
        upload_id: &'a UploadId,
    },
    /// The upload was aborted after a failure (by us, or found aborted already).
    Aborted {
        /// The upload aborted.
        upload_id: &'a UploadId,
    },
}

/// What a session has made durable before it goes on (see [`UploadObserver::record`]).
///
/// Exhaustive on purpose: a store that met a new kind of record through a `_` arm would drop
/// it, and a record dropped is an upload nobody can find again.
#[derive(Debug)]
pub enum Durable<'a> {
    /// A create is about to be sent for this multihash: if its answer is lost, this is how the
    /// upload it started is known to be ours.
    Creating {
        /// The multihash the create declares.
        multihash: &'a Multihash,
    },
    /// The server holds this upload of ours in progress from now on; no part is sent before it
    /// is recorded.
    Created {
        /// The upload the server made (or the lost one of ours that was adopted).
        upload: &'a Upload,
        /// The multihash it was created with.
        multihash: &'a Multihash,
        /// Bytes per part, the last excepted.
        part_size: u64,
        /// The file as it was when digested: parts are sent only while it is still this one.
        file: &'a FileSnapshot,
    },
}

/// Why a record could not be made durable (the state store's error).
pub type RecordError = Box<dyn std::error::Error + Send + Sync>;

/// The future of [`UploadObserver::record`].
pub type RecordFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RecordError>> + Send + 'a>>;

/// Receives session events. `on_event` is called from the session's tasks and from the digest
/// threads, so it must be cheap and must not block; `record` is awaited, and may take its time.
pub trait UploadObserver: Send + Sync {
    /// Called for each event, from any thread; see the trait's doc.
    fn on_event(&self, event: &UploadEvent<'_>);

    /// Makes `what` durable before the session goes on: the session waits for it, and an error
    /// stops it (a create is not sent, an upload is aborted before its parts). The default keeps
    /// nothing, for one-shot uploads.
    fn record<'a>(&'a self, what: Durable<'a>) -> RecordFuture<'a> {
        let _ = what;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Whether the session may still send anything for its upload: a part (asked before each
    /// part and each chunk of its body), the complete, an abort. `false` stops the session with
    /// [`crate::UploadError::Fenced`], its upload left as it is. The default always may; a
    /// daemon in a cluster says no once its lease may have been taken over, so that an instance
    /// back from a pause never writes over its successor.
    fn may_send(&self) -> bool {
        true
    }
}

/// An observer that ignores everything.
impl UploadObserver for () {
    fn on_event(&self, _: &UploadEvent<'_>) {}
}

/// What a successful session did.
#[derive(Debug, Clone)]
pub struct UploadReport {
    /// The upload made; `None` when the asset already held the file (`unchanged`).
    pub upload_id: Option<UploadId>,
    /// Skipped: the asset's checksum was already the file's.
    pub unchanged: bool,
    /// The multihash the asset declares now.
    pub multihash: Multihash,
    /// Bytes uploaded (the compressed size when compressed); the file's size when unchanged.
    pub bytes: u64,
    /// Parts sent in; 0 when unchanged.
    pub parts: usize,
    /// Bytes per part, the last excepted; 0 when unchanged.
    pub part_size: u64,
    /// Part attempts that failed and were sent again.
    pub part_retries: u32,
    /// The upload was one our own lost create had started, found and carried on.
    pub adopted: bool,
    /// Time spent reading the file: hashing, and compressing when it is compressed.
    pub digest_time: Duration,
    /// Time from the created upload to its completion; zero when unchanged.
    pub send_time: Duration,
    /// Time the whole session took.
    pub total_time: Duration,
    /// The asset's public URL (`href`) as the session's read of the asset before the upload
    /// showed it; `None` when it did not read it (or the asset did not exist yet).
    pub href: Option<String>,
    /// That read showed the asset holding another file: this upload replaced it.
    pub replaced: bool,
    /// The `Content-Encoding` the upload declared; `None` when uncompressed (or unchanged).
    pub content_encoding: Option<ContentEncoding>,
}

/// Size, mtime, ctime, inode and device of the file when it was digested: what was hashed is
/// what is sent. ctime (seconds, nanoseconds) is what a rewrite with its mtime set back cannot
/// hide (see [`DigestKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSnapshot {
    /// Size, in bytes.
    pub len: u64,
    /// Modification time: seconds and nanoseconds since the Unix epoch.
    pub mtime: (i64, i64),
    /// Inode change time: seconds and nanoseconds since the Unix epoch.
    pub ctime: (i64, i64),
    /// Inode number (`st_ino`).
    pub ino: u64,
    /// Device the file lives on (`st_dev`).
    pub dev: u64,
}

impl FileSnapshot {
    /// The snapshot of a file's metadata.
    pub fn of(m: &std::fs::Metadata) -> Self {
        Self {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    /// Fails if the file at `path` is no longer the one that was digested.
    pub(crate) async fn check(&self, path: &Path, when: &str) -> Result<(), UploadError> {
        let now = Self::of(&stat_file(path).await?);
        if now == *self {
            return Ok(());
        }
        let what = if now.len != self.len {
            format!("size {} -> {} bytes", self.len, now.len)
        } else if now.ino != self.ino || now.dev != self.dev {
            "(it was replaced)".to_owned()
        } else if now.mtime != self.mtime {
            "(its modification time moved)".to_owned()
        } else {
            // ctime: written to with its mtime set back, or its status changed (chmod, rename).
            "(its inode change time moved: written to, or its status changed)".to_owned()
        };
        Err(UploadError::FileChanged {
            path: path.to_owned(),
            what: format!("{when}: {what}"),
        })
    }
}

/// The metadata of the regular file at `path`.
pub(crate) async fn stat_file(path: &Path) -> Result<std::fs::Metadata, UploadError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|source| UploadError::File {
            path: path.to_owned(),
            action: "cannot read",
            source,
        })?;
    if !meta.is_file() {
        return Err(UploadError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(meta)
}
