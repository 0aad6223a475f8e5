//! Whether the watch is watching its folder or has lost it, and who hears of a change: the log
//! (one line per change, never per retry), the [`Watcher`](super::Watcher)'s state channel, and,
//! for a job, its `stac_uploadd_trigger_*` metrics and its line in `/readyz`.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::WatchError;
use crate::observe::health::{TriggerSlot, TriggerState, Triggers};
use crate::observe::metrics;

/// What a watch is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchState {
    /// The folder is watched: files that settle in it are sent.
    Watching,
    /// The folder is gone (removed, moved away, unmounted, replaced) or its watcher failed; the
    /// watch tries to watch it again, with backoff, and scans it when it is back.
    Lost,
}

/// The watch's state and its observers.
#[derive(Debug)]
pub(super) struct Status {
    state: WatchState,
    /// When the folder was lost, while it is.
    lost_at: Option<Instant>,
    tx: watch::Sender<WatchState>,
    job: Option<Job>,
}

#[derive(Debug)]
struct Job {
    name: String,
    slot: TriggerSlot,
}

impl Status {
    /// A watch that is watching; a `job` shows on `board` and in the metrics, its series made
    /// to exist at their start values (up, no recoveries).
    pub(super) fn new(
        job: Option<&str>,
        board: &Arc<Triggers>,
    ) -> (Self, watch::Receiver<WatchState>) {
        let (tx, rx) = watch::channel(WatchState::Watching);
        let job = job.map(|name| {
            metrics::trigger_state(name, true, false);
            Job {
                name: name.to_owned(),
                slot: board.register(name, TriggerState::Watching),
            }
        });
        let status = Self {
            state: WatchState::Watching,
            lost_at: None,
            tx,
            job,
        };
        (status, rx)
    }

    /// The folder is lost, or still lost after an attempt to watch it again failed with `why`.
    /// Logs (a warning) only when this is news; the reason shown in `/readyz` is the latest.
    /// Returns whether the state changed.
    pub(super) fn lost(&mut self, why: &WatchError) -> bool {
        let reason = chain(why);
        if let Some(job) = &self.job {
            job.slot.set(TriggerState::Lost(reason.clone()));
        }
        if self.state == WatchState::Lost {
            tracing::debug!(error = %reason, "the watched folder is still lost");
            return false;
        }
        warn!(error = %reason, "lost the watched folder; watching for it to come back");
        self.state = WatchState::Lost;
        self.lost_at = Some(Instant::now());
        if let Some(job) = &self.job {
            metrics::trigger_state(&job.name, false, false);
        }
        self.tx.send_replace(WatchState::Lost);
        true
    }

    /// The folder is watched again. Logs (at info) only when it had been lost. Returns whether
    /// the state changed.
    pub(super) fn watching(&mut self) -> bool {
        if self.state == WatchState::Watching {
            return false;
        }
        let lost_s = self.lost_at.take().map(|at| at.elapsed().as_secs_f64());
        info!(
            lost_s,
            "the watched folder is back; scanning it and watching it again"
        );
        self.state = WatchState::Watching;
        if let Some(job) = &self.job {
            job.slot.set(TriggerState::Watching);
            metrics::trigger_state(&job.name, true, true);
        }
        self.tx.send_replace(WatchState::Watching);
        true
    }
}

/// An error with its sources, `: `-separated.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;

    /// Log lines written by the code under test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn gone() -> WatchError {
        WatchError::Vanished {
            path: PathBuf::from("/in"),
        }
    }

    fn inaccessible() -> WatchError {
        WatchError::Inaccessible {
            path: PathBuf::from("/in"),
            source: io::Error::from(io::ErrorKind::NotFound),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_log_line_per_state_change_not_per_retry() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .without_time()
            .finish();
        let _log = tracing::subscriber::set_default(subscriber);
        let board = Arc::new(Triggers::default());
        let (mut status, mut state) = Status::new(Some("in"), &board);
        assert_eq!(*state.borrow_and_update(), WatchState::Watching);
        assert!(!status.watching(), "already watching");
        assert!(captured.lines().is_empty(), "{:?}", captured.lines());

        assert!(status.lost(&gone()));
        assert!(state.has_changed().unwrap());
        assert_eq!(*state.borrow_and_update(), WatchState::Lost);
        // The retries, at growing intervals.
        for wait in [1, 2, 4, 8, 16, 30, 30] {
            tokio::time::advance(std::time::Duration::from_secs(wait)).await;
            assert!(!status.lost(&inaccessible()));
        }
        assert!(!state.has_changed().unwrap(), "retries are no change");
        assert_eq!(
            board.states(),
            [(
                "in".to_owned(),
                TriggerState::Lost(
                    "cannot access the watched folder /in: entity not found".to_owned()
                )
            )],
            "the latest reason shows"
        );
        assert!(status.watching());
        assert!(!status.watching());
        assert_eq!(*state.borrow_and_update(), WatchState::Watching);
        assert_eq!(board.states(), [("in".to_owned(), TriggerState::Watching)]);

        let lines = captured.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("WARN") && lines[0].contains("lost the watched folder"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("INFO")
                && lines[1].contains("the watched folder is back")
                && lines[1].contains("lost_s=91"),
            "{lines:?}"
        );

        drop(status);
        assert!(
            board.states().is_empty(),
            "a stopped watch is no longer shown"
        );
    }
}
