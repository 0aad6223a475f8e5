//! The uploads this process is sending right now, with their progress: fed by each session's
//! observer (`Sent`, `Unsent`, `Planned`), read by the status page. An upload is on the board
//! from its session's start until the session ends, whatever the outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

/// The sessions running now, by a number of their own.
#[derive(Debug, Default)]
pub struct LiveUploads {
    open: Mutex<(u64, BTreeMap<u64, Arc<LiveUpload>>)>,
}

/// One session's progress. Counters are atomics: `Sent` comes for every chunk of a part body,
/// and must not take a lock the page holds while it renders.
#[derive(Debug)]
pub struct LiveUpload {
    pub job: String,
    /// The asset it goes to, as the log names it (`collection/item/asset`).
    pub target: String,
    /// The local file, shown lossily.
    pub file: String,
    pub started: DateTime<Utc>,
    /// Bytes the file has (0 until the session knows it).
    total: AtomicU64,
    /// Bytes of parts sent so far (a part the server already held counts as sent).
    sent: AtomicU64,
}

/// What the page shows of one running upload, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveView {
    pub job: String,
    pub target: String,
    pub file: String,
    pub started: DateTime<Utc>,
    pub total: u64,
    pub sent: u64,
}

impl LiveUpload {
    /// The file's size, once known.
    pub fn planned(&self, size: u64) {
        self.total.store(size, Ordering::Relaxed);
    }

    /// Bytes of a part went out.
    pub fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A failed part attempt's bytes, to be sent again.
    pub fn unsent(&self, bytes: u64) {
        // Never below zero, even if events were to arrive out of order.
        let _ = self
            .sent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_sub(bytes))
            });
    }
}

/// Takes its upload off the board when dropped: at the session's end, also on an unwind.
#[derive(Debug)]
pub struct LiveGuard {
    board: Arc<LiveUploads>,
    id: u64,
    upload: Arc<LiveUpload>,
}

impl LiveGuard {
    /// The upload, for its observer to feed.
    pub fn upload(&self) -> &Arc<LiveUpload> {
        &self.upload
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.board.lock().1.remove(&self.id);
    }
}

impl LiveUploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Arc<LiveUpload>>)> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a session on the board until the guard is dropped.
    pub fn start(
        self: &Arc<Self>,
        job: &str,
        target: String,
        file: String,
        started: DateTime<Utc>,
    ) -> LiveGuard {
        let upload = Arc::new(LiveUpload {
            job: job.to_owned(),
            target,
            file,
            started,
            total: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        let mut open = self.lock();
        let id = open.0;
        open.0 += 1;
        open.1.insert(id, upload.clone());
        LiveGuard {
            board: self.clone(),
            id,
            upload,
        }
    }

    /// Every running session, oldest first.
    pub fn snapshot(&self) -> Vec<LiveView> {
        self.lock()
            .1
            .values()
            .map(|u| LiveView {
                job: u.job.clone(),
                target: u.target.clone(),
                file: u.file.clone(),
                started: u.started,
                total: u.total.load(Ordering::Relaxed),
                sent: u.sent.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_shows_its_bytes_until_it_ends() {
        let live = Arc::new(LiveUploads::default());
        let guard = live.start("j", "c/i/a".into(), "/f".into(), Utc::now());
        guard.upload().planned(100);
        guard.upload().sent(60);
        guard.upload().unsent(20);
        guard.upload().unsent(1000);
        guard.upload().sent(30);
        let views = live.snapshot();
        assert_eq!(views.len(), 1);
        assert_eq!((views[0].sent, views[0].total), (30, 100));
        drop(guard);
        assert!(live.snapshot().is_empty());
    }
}
