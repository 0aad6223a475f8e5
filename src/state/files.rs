//! The embedded backend: JSON files in the state folder, each replaced by write-to-temp + fsync
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
use tracing::warn;

use super::{
    Creating, HISTORY_PER_JOB, InFlight, RunRecord, StateBackend, StateError, StateFuture,
};
use crate::stac::{AssetTarget, Md5, Multihash, UploadId};
use crate::upload::{DigestKey, FileDigest};

/// Digests kept: a file's (device, inode, size, mtime) and part size → its multihash and MD5s.
/// Bounded; the oldest entries go first.
pub const DIGESTS_KEPT: usize = 10_000;

const INFLIGHT: &str = "inflight.json";
const HISTORY: &str = "history.json";
const DIGESTS: &str = "digests.json";

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
    entries: Vec<DigestEntry>,
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
        let inflight: InFlightFile = match read_json(&dir.join(INFLIGHT))? {
            Ok(v) => v,
            Err(source) => {
                return Err(StateError::CorruptInflight {
                    path: dir.join(INFLIGHT),
                    source,
                });
            }
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
        let bytes = serde_json::to_vec_pretty(&next).expect("state types always serialize");
        write_blocking(&self.dir, INFLIGHT, bytes).await?;
        *lock(&self.inflight) = next;
        Ok(())
    }

    /// The digest of a file as cached.
    pub fn digest(&self, key: &DigestKey) -> Option<FileDigest> {
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
            serde_json::to_vec_pretty(&file).expect("state types always serialize")
        };
        let result = write_blocking(&self.dir, DIGESTS, bytes).await;
        if result.is_err() {
            lock(&self.digests).changed = true;
        }
        result
    }
}

impl StateBackend for JsonFiles {
    fn add_creating(&self, rec: Creating) -> StateFuture<'_, ()> {
        Box::pin(self.change_inflight(move |f| {
            if f.creating.contains(&rec) {
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

    fn flush(&self) -> StateFuture<'_, ()> {
        Box::pin(async move {
            let _turn = self.writing.lock().await;
            let bytes = {
                let mut g = lock(&self.history);
                if !g.changed {
                    return Ok(());
                }
                g.changed = false;
                serde_json::to_vec_pretty(&g.value).expect("state types always serialize")
            };
            let result = write_blocking(&self.dir, HISTORY, bytes).await;
            if result.is_err() {
                lock(&self.history).changed = true;
            }
            result
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No I/O happens under these locks and every change is a whole value swapped in, so a
    // panic while one is held cannot leave a document half-updated: poisoning is ignored.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads a JSON file: `Ok(Err)` when it exists but does not parse; a missing file is the default.
fn read_json<T: Default + for<'de> Deserialize<'de>>(
    path: &Path,
) -> Result<Result<T, serde_json::Error>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ok(T::default())),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a cache; one that does not parse is renamed `NAME.corrupt-<UTC time>` (kept for a
/// post-mortem) with a warning, and the daemon starts without it.
fn read_cache<T: Default + for<'de> Deserialize<'de>>(
    dir: &Path,
    name: &str,
    read_only: bool,
) -> Result<T, StateError> {
    let path = dir.join(name);
    match read_json(&path)? {
        Ok(v) => Ok(v),
        Err(e) if read_only => {
            warn!(file = %path.display(), error = %e, "a state cache is not valid: skipped");
            Ok(T::default())
        }
        Err(e) => {
            let aside = dir.join(format!(
                "{name}.corrupt-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ));
            std::fs::rename(&path, &aside).map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
            warn!(file = %path.display(), moved_to = %aside.display(), error = %e, "a state cache is not valid: moved aside, starting without it");
            Ok(T::default())
        }
    }
}

/// Writes `bytes` as `dir/name` on the blocking pool.
async fn write_blocking(dir: &Path, name: &'static str, bytes: Vec<u8>) -> Result<(), StateError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || write_file(&dir, name, &bytes))
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
        }
    }

    #[tokio::test]
    async fn inflight_survives_a_reopen_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let (u1, u2) = (rec("u1"), rec("u2"));
        s.add_inflight(u1).await.unwrap();
        s.add_inflight(u2.clone()).await.unwrap();
        s.remove_inflight(&UploadId("u1".into())).await.unwrap();
        let again = StateStore::open(dir.path()).unwrap();
        assert_eq!(again.inflight().await.unwrap(), vec![u2]);
        assert!(again.is_ours(&UploadId("u2".into())).await.unwrap());
        assert!(!dir.path().join(".inflight.json.tmp").exists());
    }

    #[tokio::test]
    async fn history_is_bounded_and_flushed_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        for i in 0..(HISTORY_PER_JOB + 5) {
            s.record_run(run(i as u64)).await.unwrap();
        }
        assert!(
            StateStore::open(dir.path())
                .unwrap()
                .history()
                .await
                .unwrap()
                .is_empty(),
            "not written before a flush"
        );
        s.flush().await.unwrap();
        let h = StateStore::open(dir.path())
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
            dir.path().join(HISTORY),
            br#"{"jobs": {"j": [{"job": "j", "started": "2026-01-01T00:00:00Z",
                "finished": "2026-01-01T00:00:05Z", "outcome": "uploaded", "asset": "a.zip",
                "file": "/data/a.zip", "bytes": 10, "attempts": 1, "upload_id": "u1",
                "error": null}]}}"#,
        )
        .unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let h = s.history().await.unwrap();
        assert_eq!(h["j"].len(), 1, "the old record is kept, not moved aside");
        assert_eq!(h["j"][0].asset, "a.zip");
        assert_eq!(h["j"][0].item, None);
        s.record_run(RunRecord {
            item: Some("item-7".into()),
            ..run(3)
        })
        .await
        .unwrap();
        s.flush().await.unwrap();
        let again = StateStore::open(dir.path())
            .unwrap()
            .history()
            .await
            .unwrap();
        assert_eq!(again["j"][1].item.as_deref(), Some("item-7"));
    }

    #[test]
    fn a_corrupt_inflight_record_stops_the_start_and_says_what_moving_it_loses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INFLIGHT), b"{not json").unwrap();
        let e = StateStore::open(dir.path()).unwrap_err();
        assert!(e.needs_operator(), "{e}");
        let m = e.to_string();
        assert!(m.contains("inflight.json"), "{m}");
        assert!(m.contains("moving it aside loses them"), "{m}");
        assert!(
            dir.path().join(INFLIGHT).exists(),
            "the record is left where it is"
        );
    }

    #[tokio::test]
    async fn corrupt_caches_are_moved_aside_and_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        for name in [HISTORY, DIGESTS] {
            std::fs::write(dir.path().join(name), b"\x00garbage").unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        assert!(s.history().await.unwrap().is_empty());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for name in [HISTORY, DIGESTS] {
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
            StateStore::open(dir.path())
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
        let s = StateStore::open(dir.path()).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(".inflight.json.tmp")).unwrap();
        let e = s.add_inflight(rec("u1")).await.unwrap_err();
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
        assert!(!s.is_ours(&UploadId("u1".into())).await.unwrap());
        assert!(s.inflight().await.unwrap().is_empty());
    }
}
