//! The store of earlier releases, kept to import it (and to measure against it): JSON files in
//! the state folder, each replaced by write-to-temp + fsync
//! + rename + fsync of the folder, so a crash leaves the old or the new version, never a torn one.
//!
//! - `inflight.json` (uploads in flight, create markers) is written on every change, and the
//!   change counts only once it is on disk: it is small, and it is what crash safety rests on;
//! - `history.json` (the last runs of each job) and `digests.json` (the digest cache) are written
//!   at most every few seconds and at shutdown: losing a few seconds of them in a crash is
//!   harmless, and rewriting them on every run would not scale to a thousand jobs. They are
//!   caches: a corrupt one is moved aside and the daemon starts without it.
//!
//! No file I/O happens on the async runtime's threads or under a lock that async code takes:
//! each document lives in memory behind a short lock, and writes go to the blocking pool, one at
//! a time and in order (an async mutex), with the new document adopted in memory only once it
//! is durable.
//!
//! Why files and not an embedded database (redb, SQLite): two small documents with one writer,
//! that an operator can read (and repair) with a text editor in an incident; a database would add
//! a format to migrate and a tool to read it. The shared backend for several daemons is a
//! database (PostgreSQL), behind the same [`StateBackend`] interface.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    Creating, DIGESTS_KEPT, HISTORY_PER_JOB, InFlight, RunRecord, StateBackend, StateError,
    StateFuture, Unusable,
};
use stac_client::units::ByteSize;
use stac_client::{AssetTarget, Md5, Multihash, UploadId};
use stac_upload::{DigestKey, FileDigest};

/// The largest `inflight.json` read. It holds one record (about 600 bytes) per upload in
/// progress, at most `max_concurrent_uploads` of them, and a create marker (about 250 bytes) per
/// create whose answer was not seen, one per target and file: a few kilobytes in real use, and
/// 16 MiB would hold some 25,000 records.
pub const INFLIGHT_LIMIT: ByteSize = ByteSize::mib(16);
/// The largest `history.json` read. It keeps [`HISTORY_PER_JOB`] runs per job, about 0.5 KiB a
/// run (more with a long error): some 10 KiB per job, so 64 MiB holds the history of thousands
/// of jobs. One larger than this is moved aside at start like a corrupt one (only the history
/// is lost), and a flush that writes one says so.
pub const HISTORY_LIMIT: ByteSize = ByteSize::mib(64);
/// The largest `digests.json` read: [`DIGESTS_KEPT`] entries of at most 100 part MD5s
/// (`MAX_PARTS`) each, about 4 KiB per entry as written: under 40 MiB when full (a test
/// checks it).
pub const DIGESTS_LIMIT: ByteSize = ByteSize::mib(64);

/// One of the store's files: its name, what it holds (for messages) and the limit it is read
/// with.
#[derive(Debug, Clone, Copy)]
struct Doc {
    name: &'static str,
    what: &'static str,
    limit: ByteSize,
}

const INFLIGHT: Doc = Doc {
    name: "inflight.json",
    what: "record of uploads in flight",
    limit: INFLIGHT_LIMIT,
};
const HISTORY: Doc = Doc {
    name: "history.json",
    what: "run history",
    limit: HISTORY_LIMIT,
};
const DIGESTS: Doc = Doc {
    name: "digests.json",
    what: "digest cache",
    limit: DIGESTS_LIMIT,
};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct InFlightFile {
    uploads: Vec<InFlight>,
    /// Creates sent whose upload id is not known yet.
    #[serde(default)]
    creating: Vec<Creating>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HistoryFile {
    jobs: BTreeMap<String, VecDeque<RunRecord>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DigestFile {
    #[serde(deserialize_with = "current_entries")]
    entries: Vec<DigestEntry>,
}

/// The entries of the current form; others (keys written before ctime was part of them) are
/// dropped: each is a miss, so its file is digested again, never trusted on less than the key
/// says.
fn current_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DigestEntry>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Current(DigestEntry),
        Other(serde::de::IgnoredAny),
    }
    let all = Vec::<Entry>::deserialize(d)?;
    let total = all.len();
    let current: Vec<DigestEntry> = all
        .into_iter()
        .filter_map(|e| match e {
            Entry::Current(e) => Some(e),
            Entry::Other(_) => None,
        })
        .collect();
    if current.len() < total {
        info!(
            dropped = total - current.len(),
            "digest cache entries of an older form dropped: their files are digested again"
        );
    }
    Ok(current)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DigestEntry {
    key: DigestKey,
    multihash: String,
    /// Base64 MD5 of each part; empty for a multihash alone (compressed uploads).
    md5s: Vec<String>,
}

/// A document held back from disk: its value and whether it changed since it was written.
#[derive(Debug, Default)]
struct Dirty<T> {
    value: T,
    changed: bool,
}

/// The JSON-files store.
#[derive(Debug)]
pub struct JsonFiles {
    dir: PathBuf,
    inflight: Mutex<InFlightFile>,
    history: Mutex<Dirty<HistoryFile>>,
    digests: Mutex<Dirty<VecDeque<DigestEntry>>>,
    /// Held while a document is written: writes reach the disk one at a time and in order.
    writing: tokio::sync::Mutex<()>,
}

impl JsonFiles {
    /// Opens (creating the folder if needed) and loads the files. With `read_only` (for
    /// `status`, beside a running daemon) nothing is created or moved: a corrupt cache is only
    /// skipped.
    pub fn open(dir: &Path, read_only: bool) -> Result<Self, StateError> {
        if !read_only {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let path = dir.join(INFLIGHT.name);
        let inflight: InFlightFile = match read_json(&path, INFLIGHT.limit) {
            Ok(v) => v.unwrap_or_default(),
            Err(ReadError::Unusable(problem)) => {
                return Err(StateError::CorruptInflight { path, problem });
            }
            Err(ReadError::Io(source)) => return Err(StateError::Io { path, source }),
        };
        let history: HistoryFile = read_cache(dir, HISTORY, read_only)?;
        let digests: DigestFile = read_cache(dir, DIGESTS, read_only)?;
        Ok(Self {
            dir: dir.to_owned(),
            inflight: Mutex::new(inflight),
            history: Mutex::new(Dirty {
                value: history,
                changed: false,
            }),
            digests: Mutex::new(Dirty {
                value: digests.entries.into(),
                changed: false,
            }),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Applies `change` to a copy of the in-flight document; if it changed anything, writes the
    /// copy and adopts it once it is durable. On a write error memory keeps the old document.
    async fn change_inflight(
        &self,
        change: impl FnOnce(&mut InFlightFile) -> bool,
    ) -> Result<(), StateError> {
        let _turn = self.writing.lock().await;
        let mut next = lock(&self.inflight).clone();
        if !change(&mut next) {
            return Ok(());
        }
        let bytes = encode(&self.dir, INFLIGHT, &next)?;
        write_blocking(&self.dir, INFLIGHT, bytes).await?;
        *lock(&self.inflight) = next;
        Ok(())
    }

    /// Every cached digest, oldest first (to import them).
    pub(crate) fn digest_entries(&self) -> Vec<(DigestKey, FileDigest)> {
        let keys: Vec<DigestKey> = lock(&self.digests)
            .value
            .iter()
            .map(|e| e.key.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.cached_digest(&k).map(|d| (k, d)))
            .collect()
    }

    /// The digest of a file as cached.
    pub fn cached_digest(&self, key: &DigestKey) -> Option<FileDigest> {
        let g = lock(&self.digests);
        let e = g.value.iter().rev().find(|e| &e.key == key)?;
        let md5s = e
            .md5s
            .iter()
            .map(|b| {
                let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
                Some(Md5(raw.try_into().ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(FileDigest {
            multihash: Multihash::from_hex(&e.multihash),
            part_md5s: md5s,
            size: key.size,
        })
    }

    /// Caches a file's digest (written by the next flush).
    pub fn put_digest(&self, key: DigestKey, digest: &FileDigest) {
        let mut g = lock(&self.digests);
        g.value.retain(|e| e.key != key);
        g.value.push_back(DigestEntry {
            key,
            multihash: digest.multihash.as_str().to_owned(),
            md5s: digest.part_md5s.iter().map(Md5::to_base64).collect(),
        });
        while g.value.len() > DIGESTS_KEPT {
            g.value.pop_front();
        }
        g.changed = true;
    }

    /// Writes the digest cache if it changed.
    pub async fn flush_digests(&self) -> Result<(), StateError> {
        let _turn = self.writing.lock().await;
        let bytes = {
            let mut g = lock(&self.digests);
            if !g.changed {
                return Ok(());
            }
            g.changed = false;
            let file = DigestFile {
                entries: g.value.iter().cloned().collect(),
            };
            encode(&self.dir, DIGESTS, &file)
        };
        let result = match bytes {
            Ok(bytes) => write_blocking(&self.dir, DIGESTS, bytes).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            lock(&self.digests).changed = true;
        }
        result
    }
}

impl StateBackend for JsonFiles {
    fn add_creating(&self, rec: Creating) -> StateFuture<'_, ()> {
        Box::pin(self.change_inflight(move |f| {
            // One marker says all a second would: an upload of these bytes to this target is
            // ours. Runs that fail before the answer (an unusable one, say) would otherwise add
            // one each, for ever.
            if f.creating
                .iter()
                .any(|c| c.target == rec.target && c.multihash.eq_ignore_ascii_case(&rec.multihash))
            {
                return false;
            }
            f.creating.push(rec);
            true
        }))
    }

    fn remove_creating(&self, target: AssetTarget, multihash: String) -> StateFuture<'_, ()> {
        Box::pin(self.change_inflight(move |f| {
            let before = f.creating.len();
            f.creating
                .retain(|c| !(c.target == target && c.multihash.eq_ignore_ascii_case(&multihash)));
            f.creating.len() != before
        }))
    }

    fn clear_creating(&self, target: AssetTarget) -> StateFuture<'_, ()> {
        Box::pin(self.change_inflight(move |f| {
            let before = f.creating.len();
            f.creating.retain(|c| c.target != target);
            f.creating.len() != before
        }))
    }

    fn creating(&self) -> StateFuture<'_, Vec<Creating>> {
        let creating = lock(&self.inflight).creating.clone();
        Box::pin(std::future::ready(Ok(creating)))
    }

    fn created_unseen(&self, target: AssetTarget, multihash: String) -> StateFuture<'_, bool> {
        let found = lock(&self.inflight)
            .creating
            .iter()
            .any(|c| c.target == target && c.multihash.eq_ignore_ascii_case(&multihash));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn add_inflight(&self, rec: InFlight) -> StateFuture<'_, ()> {
        Box::pin(self.change_inflight(move |f| {
            f.uploads.retain(|u| u.upload_id != rec.upload_id);
            f.uploads.push(rec);
            true
        }))
    }

    fn remove_inflight(&self, id: UploadId) -> StateFuture<'_, ()> {
        Box::pin(self.change_inflight(move |f| {
            let before = f.uploads.len();
            f.uploads.retain(|u| u.upload_id != id);
            f.uploads.len() != before
        }))
    }

    fn inflight(&self) -> StateFuture<'_, Vec<InFlight>> {
        let uploads = lock(&self.inflight).uploads.clone();
        Box::pin(std::future::ready(Ok(uploads)))
    }

    fn is_ours(&self, id: UploadId) -> StateFuture<'_, bool> {
        let ours = lock(&self.inflight)
            .uploads
            .iter()
            .any(|u| u.upload_id == id);
        Box::pin(std::future::ready(Ok(ours)))
    }

    fn record_run(&self, rec: RunRecord) -> StateFuture<'_, ()> {
        let mut g = lock(&self.history);
        let runs = g.value.jobs.entry(rec.job.clone()).or_default();
        runs.push_back(rec);
        while runs.len() > HISTORY_PER_JOB {
            runs.pop_front();
        }
        g.changed = true;
        Box::pin(std::future::ready(Ok(())))
    }

    fn history(&self) -> StateFuture<'_, BTreeMap<String, Vec<RunRecord>>> {
        let h = lock(&self.history)
            .value
            .jobs
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect();
        Box::pin(std::future::ready(Ok(h)))
    }

    fn digest<'a>(&'a self, key: &'a DigestKey) -> stac_upload::DigestFuture<'a> {
        Box::pin(std::future::ready(self.cached_digest(key)))
    }

    fn put_digest(&self, key: DigestKey, digest: &FileDigest) {
        JsonFiles::put_digest(self, key, digest);
    }

    /// The history's error is returned; a digest cache that cannot be written is a warning
    /// naming its file (it is a cache: the files it would spare are digested again).
    fn flush(&self) -> StateFuture<'_, ()> {
        Box::pin(async move {
            let history = self.flush_history().await;
            if let Err(e) = self.flush_digests().await {
                warn!(error = %e, "cannot write the digest cache: the files it would spare are digested again on their next run");
            }
            history
        })
    }
}

impl JsonFiles {
    async fn flush_history(&self) -> Result<(), StateError> {
        {
            let _turn = self.writing.lock().await;
            let bytes = {
                let mut g = lock(&self.history);
                if !g.changed {
                    return Ok(());
                }
                g.changed = false;
                encode(&self.dir, HISTORY, &g.value)
            };
            let result = match bytes {
                Ok(bytes) => write_blocking(&self.dir, HISTORY, bytes).await,
                Err(e) => Err(e),
            };
            if result.is_err() {
                lock(&self.history).changed = true;
            }
            result
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No I/O happens under these locks and every change is a whole value swapped in, so a
    // panic while one is held cannot leave a document half-updated: poisoning is ignored.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a state file could not be read.
#[derive(Debug)]
enum ReadError {
    /// The file system refused (permissions, I/O error): not the file's fault.
    Io(std::io::Error),
    /// The file is there but cannot be used as it is.
    Unusable(Unusable),
}

/// Reads the regular file at `path`, at most `limit` bytes: `None` when it does not exist.
/// A symbolic link, a FIFO, a device or a folder is refused without being read (or, for a FIFO,
/// waited on): the daemon writes its state files itself, as regular files.
fn read_bounded(path: &Path, limit: ByteSize) -> Result<Option<Vec<u8>>, ReadError> {
    use stac_client::localfile::{self, Links};
    match localfile::read_bounded(path, limit, Links::Refuse) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(localfile::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(localfile::ReadError::Io(e)) => Err(ReadError::Io(e)),
        Err(localfile::ReadError::NotAFile { what }) => {
            Err(ReadError::Unusable(Unusable::NotAFile { what, limit }))
        }
        Err(localfile::ReadError::TooLarge { size, .. }) => {
            Err(ReadError::Unusable(Unusable::TooLarge { size, limit }))
        }
    }
}

/// Reads a JSON state file with [`read_bounded`]: `None` when it does not exist.
fn read_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    limit: ByteSize,
) -> Result<Option<T>, ReadError> {
    match read_bounded(path, limit)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ReadError::Unusable(Unusable::Json(e))),
        None => Ok(None),
    }
}

/// Reads a cache; one that cannot be used (it does not parse, is over its limit, or is not a
/// regular file) is renamed `NAME.corrupt-<UTC time>` (kept for a post-mortem) with a warning,
/// and the daemon starts without it.
fn read_cache<T: Default + for<'de> Deserialize<'de>>(
    dir: &Path,
    doc: Doc,
    read_only: bool,
) -> Result<T, StateError> {
    let path = dir.join(doc.name);
    let e = match read_json(&path, doc.limit) {
        Ok(v) => return Ok(v.unwrap_or_default()),
        Err(ReadError::Io(source)) => return Err(StateError::Io { path, source }),
        Err(ReadError::Unusable(e)) => e,
    };
    if read_only {
        warn!(file = %path.display(), error = %e, "a state cache is not valid: skipped");
        return Ok(T::default());
    }
    let aside = dir.join(format!(
        "{}.corrupt-{}",
        doc.name,
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::rename(&path, &aside).map_err(|source| StateError::Io {
        path: path.clone(),
        source,
    })?;
    warn!(file = %path.display(), moved_to = %aside.display(), error = %e, "a state cache is not valid: moved aside, starting without it");
    Ok(T::default())
}

/// `value` as the JSON written to `doc`. A document over the limit it is read with is still
/// written (it holds what the daemon knows now), with a warning: the next start moves it aside.
fn encode<T: Serialize>(dir: &Path, doc: Doc, value: &T) -> Result<Vec<u8>, StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Encode {
        what: doc.what,
        path: dir.join(doc.name),
        source,
    })?;
    if bytes.len() as u64 > doc.limit.get() {
        warn!(
            file = %dir.join(doc.name).display(),
            bytes = bytes.len(),
            limit = %doc.limit,
            "a state file is larger than it may be read back: the next start will not use it"
        );
    }
    Ok(bytes)
}

/// Writes `bytes` as `dir/name` on the blocking pool.
async fn write_blocking(dir: &Path, doc: Doc, bytes: Vec<u8>) -> Result<(), StateError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || write_file(&dir, doc.name, &bytes))
        .await
        .map_err(|e| StateError::Worker(e.to_string()))?
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: dir.join(name),
        source,
    };
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).map_err(io)?;
    // The rename is durable only once the folder's entry is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Outcome, StateStore};
    use super::*;
    use chrono::Utc;

    fn rec(id: &str) -> InFlight {
        InFlight {
            upload_id: UploadId(id.into()),
            job: "j".into(),
            target: AssetTarget::item_asset("c", "i", "a.zip"),
            file: "/data/a.zip".into(),
            size: 10,
            mtime: (1, 2),
            ino: 3,
            multihash: "1220ab".into(),
            part_size: 5 << 20,
            created: Utc::now(),
            urls_expire: None,
            pid: 1,
        }
    }

    fn run(bytes: u64) -> RunRecord {
        RunRecord {
            instance: None,
            error_class: None,
            public: Vec::new(),
            job: "j".into(),
            started: Utc::now(),
            finished: Utc::now(),
            outcome: Outcome::Uploaded,
            asset: "a".into(),
            item: None,
            file: None,
            bytes,
            attempts: 1,
            upload_id: None,
            error: None,
            assets: Vec::new(),
        }
    }

    #[tokio::test]
    async fn inflight_survives_a_reopen_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open_json(dir.path()).unwrap();
        let (u1, u2) = (rec("u1"), rec("u2"));
        s.add_inflight(u1).await.unwrap();
        s.add_inflight(u2.clone()).await.unwrap();
        s.remove_inflight(&UploadId("u1".into())).await.unwrap();
        let again = StateStore::open_json(dir.path()).unwrap();
        assert_eq!(again.inflight().await.unwrap(), vec![u2]);
        assert!(again.is_ours(&UploadId("u2".into())).await.unwrap());
        assert!(!dir.path().join(".inflight.json.tmp").exists());
    }

    #[tokio::test]
    async fn history_is_bounded_and_flushed_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open_json(dir.path()).unwrap();
        for i in 0..(HISTORY_PER_JOB + 5) {
            s.record_run(run(i as u64)).await.unwrap();
        }
        assert!(
            StateStore::open_json(dir.path())
                .unwrap()
                .history()
                .await
                .unwrap()
                .is_empty(),
            "not written before a flush"
        );
        s.flush().await.unwrap();
        let h = StateStore::open_json(dir.path())
            .unwrap()
            .history()
            .await
            .unwrap();
        assert_eq!(h["j"].len(), HISTORY_PER_JOB);
        assert_eq!(h["j"][0].bytes, 5, "the oldest runs were dropped");
    }

    /// History written before runs recorded their item still loads (the item reads as unknown),
    /// and a record with an item keeps it across a write and a read.
    #[tokio::test]
    async fn history_without_the_item_field_loads_and_the_item_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(HISTORY.name),
            br#"{"jobs": {"j": [{"job": "j", "started": "2026-01-01T00:00:00Z",
                "finished": "2026-01-01T00:00:05Z", "outcome": "uploaded", "asset": "a.zip",
                "file": "/data/a.zip", "bytes": 10, "attempts": 1, "upload_id": "u1",
                "error": null}]}}"#,
        )
        .unwrap();
        let s = StateStore::open_json(dir.path()).unwrap();
        let h = s.history().await.unwrap();
        assert_eq!(h["j"].len(), 1, "the old record is kept, not moved aside");
        assert_eq!(h["j"][0].asset, "a.zip");
        assert_eq!(h["j"][0].item, None);
        s.record_run(RunRecord {
            instance: None,
            error_class: None,
            public: Vec::new(),
            item: Some("item-7".into()),
            ..run(3)
        })
        .await
        .unwrap();
        s.flush().await.unwrap();
        let again = StateStore::open_json(dir.path())
            .unwrap()
            .history()
            .await
            .unwrap();
        assert_eq!(again["j"][1].item.as_deref(), Some("item-7"));
    }

    #[test]
    fn a_corrupt_inflight_record_stops_the_start_and_says_what_moving_it_loses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INFLIGHT.name), b"{not json").unwrap();
        let e = StateStore::open_json(dir.path()).unwrap_err();
        assert!(e.needs_operator(), "{e}");
        let m = e.to_string();
        assert!(m.contains("inflight.json"), "{m}");
        assert!(m.contains("moving it aside loses them"), "{m}");
        assert!(
            dir.path().join(INFLIGHT.name).exists(),
            "the record is left where it is"
        );
    }

    #[tokio::test]
    async fn corrupt_caches_are_moved_aside_and_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        for name in [HISTORY.name, DIGESTS.name] {
            std::fs::write(dir.path().join(name), b"\x00garbage").unwrap();
        }
        let s = StateStore::open_json(dir.path()).unwrap();
        assert!(s.history().await.unwrap().is_empty());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for name in [HISTORY.name, DIGESTS.name] {
            assert!(
                names
                    .iter()
                    .any(|n| n.starts_with(&format!("{name}.corrupt-"))),
                "{name} kept aside: {names:?}"
            );
            assert!(!names.iter().any(|n| n == name), "{name}: {names:?}");
        }
        // And the store works: history written anew.
        s.record_run(run(1)).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(
            StateStore::open_json(dir.path())
                .unwrap()
                .history()
                .await
                .unwrap()["j"]
                .len(),
            1
        );
    }

    /// A full disk (writes into /dev/full answer ENOSPC): the record fails, memory keeps what is
    /// on disk, and the error names the state folder.
    #[tokio::test]
    async fn a_failed_write_is_an_error_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open_json(dir.path()).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(".inflight.json.tmp")).unwrap();
        let e = s.add_inflight(rec("u1")).await.unwrap_err();
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
        assert!(!s.is_ours(&UploadId("u1".into())).await.unwrap());
        assert!(s.inflight().await.unwrap().is_empty());
    }

    fn os_path(bytes: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt as _;
        PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
    }

    /// Found by a tester: a path that is not UTF-8 panicked the writer ("state types always
    /// serialize"). Every record keeps such a path exactly, across a write and a reload.
    #[tokio::test]
    async fn paths_that_are_not_utf8_survive_a_write_and_a_reload_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open_json(dir.path()).unwrap();
        let resume = os_path(b"/data/r\xe9sum\xe9.txt");
        let bad = os_path(b"/data/bad\xff.txt");
        let up = InFlight {
            file: resume.clone(),
            ..rec("u1")
        };
        s.add_inflight(up.clone()).await.unwrap();
        let ran = RunRecord {
            instance: None,
            error_class: None,
            public: Vec::new(),
            file: Some(bad.clone()),
            ..run(1)
        };
        s.record_run(ran.clone()).await.unwrap();
        s.flush().await.unwrap();

        let again = StateStore::open_json(dir.path()).unwrap();
        assert_eq!(again.inflight().await.unwrap(), vec![up]);
        assert_eq!(again.history().await.unwrap()["j"], vec![ran]);
        let text = std::fs::read_to_string(dir.path().join(INFLIGHT.name)).unwrap();
        assert!(
            text.contains(r#""bytes": "/data/r%E9sum%E9.txt""#),
            "{text}"
        );
    }

    /// Records written before paths could be anything else hold plain strings: they load.
    #[test]
    fn an_inflight_record_of_the_old_form_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(INFLIGHT.name),
            br#"{"uploads": [{"upload_id": "u1", "job": "j", "target": {"collection": "c",
                "item": "i", "asset": "a.zip"}, "file": "/data/a.zip", "size": 10,
                "mtime": [1, 2], "ino": 3, "multihash": "1220ab", "part_size": 5242880,
                "created": "2026-01-01T00:00:00Z", "urls_expire": null, "pid": 1}],
                "creating": []}"#,
        )
        .unwrap();
        let files = JsonFiles::open(dir.path(), true).unwrap();
        let u = &lock(&files.inflight).uploads;
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].file, Path::new("/data/a.zip"));
    }

    /// Found by a tester: each run whose create answer was unusable added another marker
    /// (21 after 21 s). One marker per target and file.
    #[tokio::test]
    async fn a_create_marker_equal_to_one_recorded_is_not_added_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open_json(dir.path()).unwrap();
        let target = AssetTarget::item_asset("c", "i", "a.zip");
        let marker = |multihash: &str, secs| Creating {
            target: target.clone(),
            multihash: multihash.into(),
            at: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
        };
        for i in 0..21 {
            s.add_creating(marker("1220ab", 1_000 + i)).await.unwrap();
        }
        s.add_creating(marker("1220AB", 2_000)).await.unwrap();
        assert_eq!(
            s.creating().await.unwrap(),
            vec![marker("1220ab", 1_000)],
            "the first marker stays, alone"
        );
        // Another file, or another target, is another marker.
        s.add_creating(marker("1220cd", 3_000)).await.unwrap();
        s.add_creating(Creating {
            target: AssetTarget::item_asset("c", "i", "b.zip"),
            ..marker("1220ab", 3_000)
        })
        .await
        .unwrap();
        let again = StateStore::open_json(dir.path()).unwrap();
        assert_eq!(again.creating().await.unwrap().len(), 3);
    }

    fn key(ctime: (i64, i64)) -> DigestKey {
        DigestKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (4, 5),
            ctime,
            part_size: 0,
        }
    }

    fn digest_of(hex: &str) -> FileDigest {
        FileDigest {
            multihash: Multihash::from_hex(hex),
            part_md5s: Vec::new(),
            size: 3,
        }
    }

    /// A cache entry written before ctime was part of the key is a miss, never a hit, and the
    /// cache holding it is not taken for corrupt.
    #[test]
    fn a_digest_cache_entry_without_ctime_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DIGESTS.name),
            br#"{"entries": [{"key": {"dev": 1, "ino": 2, "size": 3, "mtime": [4, 5],
                "part_size": 0}, "multihash": "1220ab", "md5s": []}]}"#,
        )
        .unwrap();
        let files = JsonFiles::open(dir.path(), false).unwrap();
        assert!(files.cached_digest(&key((4, 5))).is_none());
        assert!(files.cached_digest(&key((0, 0))).is_none());
        assert!(dir.path().join(DIGESTS.name).exists(), "not moved aside");
        // And a key with ctime is one: a hit for the same ctime only.
        files.put_digest(key((6, 7)), &digest_of("1220cd"));
        assert_eq!(
            files.cached_digest(&key((6, 7))).map(|d| d.multihash),
            Some(Multihash::from_hex("1220cd"))
        );
        assert!(files.cached_digest(&key((6, 8))).is_none());
    }

    fn unusable(path: &Path, limit: u64) -> Unusable {
        match read_bounded(path, ByteSize(limit)) {
            Err(ReadError::Unusable(u)) => u,
            other => panic!("{}: {other:?}", path.display()),
        }
    }

    /// Every state file is read bounded, and only when it is a regular file: a link (to
    /// /dev/zero, say), a FIFO (no writer: it would block), a folder or a file over the limit is
    /// refused at once, naming the limit; a file of the limit exactly is read.
    #[test]
    fn reads_are_bounded_and_only_of_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::os::unix::fs::symlink("/dev/zero", p("zero")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            p("fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        std::fs::create_dir(p("dir")).unwrap();
        std::fs::write(p("ten"), [b'x'; 10]).unwrap();
        std::os::unix::fs::symlink(p("ten"), p("link-to-ten")).unwrap();

        for (name, what) in [
            ("zero", "a symbolic link"),
            ("link-to-ten", "a symbolic link"),
            ("fifo", "a FIFO"),
            ("dir", "a directory"),
        ] {
            let e = unusable(&p(name), 1024);
            assert!(matches!(e, Unusable::NotAFile { .. }), "{name}: {e}");
            let m = e.to_string();
            assert!(m.contains(what) && m.contains("1.0KiB"), "{name}: {m}");
        }
        let e = unusable(&p("ten"), 9);
        assert!(matches!(e, Unusable::TooLarge { size: 10, .. }), "{e}");
        assert!(e.to_string().contains("10 bytes"), "{e}");
        assert_eq!(
            read_bounded(&p("ten"), ByteSize(10))
                .unwrap()
                .unwrap()
                .len(),
            10
        );
        assert!(read_bounded(&p("missing"), ByteSize(10)).unwrap().is_none());
    }

    /// The limits hold the largest documents the daemon writes in real use: a full digest cache
    /// of files of the most parts, and the history of a thousand jobs with long errors.
    #[test]
    fn the_limits_hold_full_documents() {
        let md5s: Vec<String> = (0..stac_upload::MAX_PARTS)
            .map(|_| Md5([0xab; 16]).to_base64())
            .collect();
        let entry = DigestEntry {
            key: DigestKey {
                dev: u64::MAX,
                ino: u64::MAX,
                size: u64::MAX,
                mtime: (i64::MIN, 999_999_999),
                ctime: (i64::MIN, 999_999_999),
                part_size: u64::MAX,
            },
            multihash: format!("1220{}", "ab".repeat(32)),
            md5s,
        };
        let one = serde_json::to_vec_pretty(&DigestFile {
            entries: vec![entry],
        })
        .unwrap()
        .len() as u64;
        assert!(
            one * DIGESTS_KEPT as u64 <= DIGESTS_LIMIT.get(),
            "{DIGESTS_KEPT} entries of {one} bytes over {DIGESTS_LIMIT}"
        );
        let runs: VecDeque<RunRecord> = (0..HISTORY_PER_JOB)
            .map(|_| RunRecord {
                instance: None,
                error_class: None,
                public: Vec::new(),
                file: Some(os_path(&[b'f'; 200])),
                upload_id: Some(UploadId("0".repeat(36))),
                error: Some("e".repeat(1000)),
                ..run(u64::MAX)
            })
            .collect();
        let job = serde_json::to_vec_pretty(&runs).unwrap().len() as u64;
        assert!(
            job * 1_000 <= HISTORY_LIMIT.get(),
            "1000 jobs of {job} bytes over {HISTORY_LIMIT}"
        );
        let upload = serde_json::to_vec_pretty(&rec(&"0".repeat(36)))
            .unwrap()
            .len() as u64;
        assert!(upload * 10_000 <= INFLIGHT_LIMIT.get(), "{upload}");
    }
}
