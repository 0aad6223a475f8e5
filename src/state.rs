//! The daemon's memory across restarts: the uploads it has in flight (so that a restart resumes
//! or aborts them, and nothing of ours is ever left in progress), and recent run history for
//! `stac-uploadd status`.
//!
//! Two JSON files in the state folder, each replaced by write-to-temp + fsync + rename + fsync
//! of the folder, so a crash leaves the old or the new version, never a torn one:
//! - `inflight.json` is written on every change, before the first part of an upload is sent:
//!   it is small (one entry per running upload) and it is what crash safety rests on;
//! - `history.json` (the last runs of each job) is written at most every few seconds and at
//!   shutdown: losing a few seconds of history in a crash is harmless, and rewriting it on every
//!   run would not scale to a thousand jobs.
//!
//! A database (redb, SQLite) would add a dependency and a format to migrate for what are two
//! small documents with one writer; plain JSON is also what an operator can read in an incident.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use base64::Engine as _;

use crate::stac::{AssetTarget, Md5, Multihash, UploadId};
use crate::upload::{DigestCache, DigestKey, FileDigest};

/// Runs kept per job.
pub const HISTORY_PER_JOB: usize = 20;
/// How long history changes may wait before they are written.
pub const HISTORY_FLUSH: Duration = Duration::from_secs(5);

/// An upload this daemon created and has not seen finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub upload_id: UploadId,
    pub job: String,
    pub target: AssetTarget,
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

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Uploaded,
    Unchanged,
    Failed,
    Cancelled,
    Resumed,
    AbortedAtStart,
}

impl Outcome {
    /// Stable lower-case name for logs, metrics and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Uploaded => "uploaded",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Resumed => "resumed",
            Outcome::AbortedAtStart => "aborted_at_start",
        }
    }
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub outcome: Outcome,
    pub asset: String,
    pub file: Option<PathBuf>,
    pub bytes: u64,
    pub attempts: u32,
    pub upload_id: Option<UploadId>,
    pub error: Option<String>,
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state folder {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {} is not valid ({source}); move it aside to start afresh", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct InFlightFile {
    uploads: Vec<InFlight>,
    /// Creates sent whose upload id is not known yet: if the answer is lost, an in-progress
    /// upload of this target with this multihash is ours.
    #[serde(default)]
    creating: Vec<Creating>,
}

/// A create sent for `target` with `multihash`, answer not (yet) seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creating {
    pub target: AssetTarget,
    pub multihash: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HistoryFile {
    jobs: BTreeMap<String, VecDeque<RunRecord>>,
}

/// Digests kept: a file's (device, inode, size, mtime) and part size → its multihash and MD5s.
/// Bounded; the oldest entries go first.
pub const DIGESTS_KEPT: usize = 10_000;

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

/// The store. One per daemon; shared by the job tasks.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    inflight: Mutex<InFlightFile>,
    history: Mutex<(HistoryFile, bool)>,
    digests: Mutex<(VecDeque<DigestEntry>, bool)>,
}

impl StateStore {
    /// Opens (creating the folder if needed) and loads both files.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let inflight: InFlightFile = read_json(&dir.join("inflight.json"))?;
        let history: HistoryFile = read_json(&dir.join("history.json"))?;
        let digests: DigestFile = read_json(&dir.join("digests.json"))?;
        Ok(Self {
            dir: dir.to_owned(),
            inflight: Mutex::new(inflight),
            history: Mutex::new((history, false)),
            digests: Mutex::new((digests.entries.into(), false)),
        })
    }

    /// The folder the files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records an upload before any part is sent; durable when this returns.
    pub fn add_inflight(&self, rec: InFlight) -> Result<(), StateError> {
        let mut g = lock(&self.inflight);
        g.uploads.retain(|u| u.upload_id != rec.upload_id);
        g.uploads.push(rec);
        write_json(&self.dir, "inflight.json", &*g)
    }

    /// Forgets an upload that is completed or aborted; durable when this returns.
    pub fn remove_inflight(&self, id: &UploadId) -> Result<(), StateError> {
        let mut g = lock(&self.inflight);
        let before = g.uploads.len();
        g.uploads.retain(|u| &u.upload_id != id);
        if g.uploads.len() == before {
            return Ok(());
        }
        write_json(&self.dir, "inflight.json", &*g)
    }

    /// Records a create about to be sent; durable when this returns.
    pub fn add_creating(&self, rec: Creating) -> Result<(), StateError> {
        let mut g = lock(&self.inflight);
        if g.creating.contains(&rec) {
            return Ok(());
        }
        g.creating.push(rec);
        write_json(&self.dir, "inflight.json", &*g)
    }

    /// Forgets the creates recorded for `target` with `multihash` (its upload is known now, or
    /// was found and aborted).
    pub fn remove_creating(&self, target: &AssetTarget, multihash: &str) -> Result<(), StateError> {
        let mut g = lock(&self.inflight);
        let before = g.creating.len();
        g.creating
            .retain(|c| !(&c.target == target && c.multihash.eq_ignore_ascii_case(multihash)));
        if g.creating.len() == before {
            return Ok(());
        }
        write_json(&self.dir, "inflight.json", &*g)
    }

    /// Forgets every create marker of `target`.
    pub fn clear_creating(&self, target: &AssetTarget) -> Result<(), StateError> {
        let mut g = lock(&self.inflight);
        let before = g.creating.len();
        g.creating.retain(|c| &c.target != target);
        if g.creating.len() == before {
            return Ok(());
        }
        write_json(&self.dir, "inflight.json", &*g)
    }

    /// Whether a create of ours for `target` with this multihash was sent without its answer seen.
    pub fn created_unseen(&self, target: &AssetTarget, multihash: &str) -> bool {
        lock(&self.inflight)
            .creating
            .iter()
            .any(|c| &c.target == target && c.multihash.eq_ignore_ascii_case(multihash))
    }

    /// The uploads recorded as in flight.
    pub fn inflight(&self) -> Vec<InFlight> {
        lock(&self.inflight).uploads.clone()
    }

    /// Whether this upload id is one of ours.
    pub fn is_ours(&self, id: &UploadId) -> bool {
        lock(&self.inflight)
            .uploads
            .iter()
            .any(|u| &u.upload_id == id)
    }

    /// Appends a finished run; written by the next [`flush_history`](Self::flush_history).
    pub fn record_run(&self, rec: RunRecord) {
        let mut g = lock(&self.history);
        let runs = g.0.jobs.entry(rec.job.clone()).or_default();
        runs.push_back(rec);
        while runs.len() > HISTORY_PER_JOB {
            runs.pop_front();
        }
        g.1 = true;
    }

    /// Writes the history and the digest cache if they changed.
    pub fn flush_history(&self) -> Result<(), StateError> {
        {
            let mut g = lock(&self.history);
            if g.1 {
                write_json(&self.dir, "history.json", &g.0)?;
                g.1 = false;
            }
        }
        let mut d = lock(&self.digests);
        if d.1 {
            let file = DigestFile {
                entries: d.0.iter().cloned().collect(),
            };
            write_json(&self.dir, "digests.json", &file)?;
            d.1 = false;
        }
        Ok(())
    }

    /// The recorded runs, per job, oldest first.
    pub fn history(&self) -> BTreeMap<String, Vec<RunRecord>> {
        lock(&self.history)
            .0
            .jobs
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect()
    }
}

impl DigestCache for StateStore {
    fn get(&self, key: &DigestKey) -> Option<FileDigest> {
        let g = lock(&self.digests);
        let e = g.0.iter().rev().find(|e| &e.key == key)?;
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

    fn put(&self, key: DigestKey, digest: &FileDigest) {
        let mut g = lock(&self.digests);
        g.0.retain(|e| e.key != key);
        g.0.push_back(DigestEntry {
            key,
            multihash: digest.multihash.as_str().to_owned(),
            md5s: digest.part_md5s.iter().map(Md5::to_base64).collect(),
        });
        while g.0.len() > DIGESTS_KEPT {
            g.0.pop_front();
        }
        g.1 = true;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these plain documents half-updated in a way
    // worse than losing the process, so poisoning is ignored.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_json<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: dir.join(name),
        source,
    };
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(value).expect("state types always serialize");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
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
    use super::*;

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

    #[test]
    fn inflight_survives_a_reopen_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        s.add_inflight(rec("u1")).unwrap();
        s.add_inflight(rec("u2")).unwrap();
        s.remove_inflight(&UploadId("u1".into())).unwrap();
        let again = StateStore::open(dir.path()).unwrap();
        assert_eq!(again.inflight(), vec![rec_with_created("u2", &s)]);
        assert!(again.is_ours(&UploadId("u2".into())));
        assert!(!dir.path().join(".inflight.json.tmp").exists());
    }

    fn rec_with_created(id: &str, s: &StateStore) -> InFlight {
        s.inflight()
            .into_iter()
            .find(|u| u.upload_id.0 == id)
            .unwrap()
    }

    #[test]
    fn history_is_bounded_and_flushed_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        for i in 0..(HISTORY_PER_JOB + 5) {
            s.record_run(RunRecord {
                job: "j".into(),
                started: Utc::now(),
                finished: Utc::now(),
                outcome: Outcome::Uploaded,
                asset: "a".into(),
                file: None,
                bytes: i as u64,
                attempts: 1,
                upload_id: None,
                error: None,
            });
        }
        assert!(
            StateStore::open(dir.path()).unwrap().history().is_empty(),
            "not written before a flush"
        );
        s.flush_history().unwrap();
        let h = StateStore::open(dir.path()).unwrap().history();
        assert_eq!(h["j"].len(), HISTORY_PER_JOB);
        assert_eq!(h["j"][0].bytes, 5, "the oldest runs were dropped");
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inflight.json"), b"{not json").unwrap();
        let e = StateStore::open(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("inflight.json") && e.to_string().contains("move it aside"),
            "{e}"
        );
    }
}
