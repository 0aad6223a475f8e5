//! Watching a folder for finished files.
//!
//! Candidates come from inotify events (notify's recommended watcher behind
//! notify-debouncer-full) or, in polling mode, from a scan of the folder at each interval. Neither
//! says when a writer is done, so a candidate is sent only once it has *settled*: its size, mtime
//! and inode stayed the same for [`WatchSpec::settle`] with no write event in between. A file is
//! sent once per settled version; if it changes again (say, while its upload runs) it settles and
//! is sent again, and the consumer coalesces.
//!
//! Polling is our own scan on a `tokio::time::interval` rather than notify's `PollWatcher`: the
//! settle rule needs the size and mtime of every candidate anyway, so a scan that lists and stats
//! the folder *is* the poll, with no second thread and no second copy of the folder's state; and
//! its timing follows tokio time like the rest of the watch.

mod events;
mod fs;
mod settle;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument as _, debug, info, warn};

use self::events::{Batch, EventWatcher};
use self::fs::{Filter, Finding, Probe};
use self::settle::Settler;

/// What to watch, validated by the config loader.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The folder (exists and is a directory; checked at load).
    pub dir: PathBuf,
    /// Glob on the path relative to `dir`, e.g. `*.h5` or `**/*.tif`.
    pub pattern: globset::GlobMatcher,
    /// Descend into sub-folders.
    pub recursive: bool,
    /// Names never sent (matched against the file name): temporary and hidden files.
    pub ignore: globset::GlobSet,
    /// A file counts as finished when its size and mtime stayed the same this long.
    pub settle: Duration,
    /// Poll the folder at this interval instead of using inotify (NFS/SMB, bind mounts).
    pub poll: Option<Duration>,
}

/// The default ignore globs: temporary names, hidden files, editor backups.
pub const DEFAULT_IGNORE: &[&str] = &["*.tmp", ".*", "*~"];

/// The shortest poll interval honoured; `tokio::time::interval` refuses zero.
const MIN_POLL: Duration = Duration::from_millis(10);

/// Why a folder cannot be watched, or stopped being watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    #[error("cannot access the watched folder {}", path.display())]
    Inaccessible {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error(
        "cannot watch {} for changes (if inotify watches ran out, raise fs.inotify.max_user_watches or set a poll interval)",
        path.display()
    )]
    Unwatchable {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("the watched folder {} was removed or moved away", path.display())]
    Vanished { path: PathBuf },
    #[error("the file system watcher on {} stopped unexpectedly", path.display())]
    Stopped { path: PathBuf },
}

/// A running watch; dropping it (or cancelling the token) stops it.
#[derive(Debug)]
pub struct Watcher {
    task: JoinHandle<Result<(), WatchError>>,
    stop: DropGuard,
}

impl Watcher {
    /// Starts watching. Every file that matches (pattern on the path relative to dir, ignore
    /// globs on the file name, recursive or not) and has settled is sent on `tx` as an absolute
    /// path. Files already present when the watch starts are reported too (they may have arrived
    /// while the daemon was down), after settling.
    ///
    /// The watch stops when `cancel` is cancelled, when this `Watcher` is dropped, when the
    /// receiver of `tx` is dropped, or when the folder vanishes; `tx` is dropped then.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(
        spec: WatchSpec,
        tx: mpsc::Sender<PathBuf>,
        cancel: CancellationToken,
    ) -> Result<Watcher, WatchError> {
        let root = std::path::absolute(&spec.dir).map_err(|source| WatchError::Inaccessible {
            path: spec.dir.clone(),
            source,
        })?;
        match std::fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(WatchError::NotAFolder { path: root }),
            Err(source) => return Err(WatchError::Inaccessible { path: root, source }),
        }

        let source = match spec.poll {
            Some(every) => {
                let mut interval = tokio::time::interval(every.max(MIN_POLL));
                // A scan slower than the interval delays the next one rather than bunching them.
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Source::Poll(interval)
            }
            None => {
                let (batches_tx, batches) = mpsc::unbounded_channel();
                let debounce = events::debounce_for(spec.settle);
                let watcher = events::watch(&root, spec.recursive, debounce, batches_tx).map_err(
                    |source| WatchError::Unwatchable {
                        path: root.clone(),
                        source,
                    },
                )?;
                Source::Events {
                    batches,
                    _watcher: watcher,
                }
            }
        };

        let span = tracing::info_span!("watch", dir = %root.display());
        let cancel = cancel.child_token();
        let task = Task {
            filter: Arc::new(Filter {
                root,
                pattern: spec.pattern,
                ignore: spec.ignore,
                recursive: spec.recursive,
            }),
            settler: Settler::new(spec.settle),
            tx,
        };
        let task = tokio::spawn(task.run(source, cancel.clone()).instrument(span));
        Ok(Watcher {
            task,
            stop: cancel.drop_guard(),
        })
    }

    /// Waits for the watch to end: `Ok` once stopped, an error if the folder vanished or the
    /// watcher died. Dropping this future stops the watch, like dropping the `Watcher`.
    pub async fn join(self) -> Result<(), WatchError> {
        let Watcher { task, stop } = self;
        let end = match task.await {
            Ok(end) => end,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Ok(()),
        };
        drop(stop);
        end
    }
}

/// Where candidates come from.
enum Source {
    Events {
        batches: mpsc::UnboundedReceiver<Batch>,
        /// Held for its lifetime: dropping it stops the inotify and debouncer threads.
        _watcher: EventWatcher,
    },
    Poll(Interval),
}

/// Why the watch task woke up.
enum Wake {
    Batch(Batch),
    Scan,
    Due,
    EventsEnded,
}

impl Source {
    async fn next(&mut self) -> Wake {
        match self {
            Source::Events { batches, .. } => {
                batches.recv().await.map_or(Wake::EventsEnded, Wake::Batch)
            }
            Source::Poll(interval) => {
                interval.tick().await;
                Wake::Scan
            }
        }
    }
}

/// Whether the watch goes on, or how it ended.
type Step = ControlFlow<Result<(), WatchError>>;

/// The watch task: owns the settle state and does all file system work on the blocking pool.
struct Task {
    filter: Arc<Filter>,
    settler: Settler,
    tx: mpsc::Sender<PathBuf>,
}

impl Task {
    /// Watches until cancelled or ended; every await in the watch is a point where a
    /// cancellation stops it.
    async fn run(mut self, source: Source, cancel: CancellationToken) -> Result<(), WatchError> {
        let end = tokio::select! {
            biased;
            () = cancel.cancelled() => Ok(()),
            end = self.watch(source) => end,
        };
        debug!("watch stopped");
        end
    }

    async fn watch(&mut self, mut source: Source) -> Result<(), WatchError> {
        // Polling scans at its first tick, right away; events need a first look at what is there.
        if matches!(source, Source::Events { .. })
            && let ControlFlow::Break(end) = self.scan().await
        {
            return end;
        }
        loop {
            let deadline = self.settler.next_deadline();
            let wake = tokio::select! {
                wake = source.next() => wake,
                () = sleep_until(deadline) => Wake::Due,
            };
            let step = match wake {
                Wake::Batch(batch) => self.on_batch(batch).await,
                Wake::Scan => self.scan().await,
                Wake::Due => self.send_settled().await,
                Wake::EventsEnded => ControlFlow::Break(Err(self.stopped())),
            };
            if let ControlFlow::Break(end) = step {
                return end;
            }
        }
    }

    fn vanished(&self) -> WatchError {
        warn!("the watched folder was removed or moved away");
        WatchError::Vanished {
            path: self.filter.root.clone(),
        }
    }

    fn stopped(&self) -> WatchError {
        warn!("the file system watcher stopped");
        WatchError::Stopped {
            path: self.filter.root.clone(),
        }
    }

    /// Lists the whole folder: at start, at each poll, and after lost events.
    async fn scan(&mut self) -> Step {
        let filter = Arc::clone(&self.filter);
        let listed = blocking(move || fs::walk(&filter, &filter.root)).await;
        let files = match listed {
            Ok(files) => files,
            Err(e) if fs::is_gone(&e) => return ControlFlow::Break(Err(self.vanished())),
            Err(e) => {
                // NFS and SMB have bad moments; the next poll or event tries again.
                warn!(error = %e, "cannot list the watched folder");
                return ControlFlow::Continue(());
            }
        };
        let now = Instant::now();
        let mut present = HashSet::with_capacity(files.len());
        for (path, sig) in files {
            if self.settler.observe(&path, sig, now, false) {
                debug!(path = %path.display(), "candidate");
            }
            present.insert(path);
        }
        // A tracked file the listing missed is forgotten only once a stat says it is gone: a
        // sub-folder that could not be listed this time must not make its files look new later.
        let missing: Vec<PathBuf> = self.settler.missing_from(&present).cloned().collect();
        if !missing.is_empty() {
            for (path, probe) in blocking(move || probe_all(missing)).await {
                match probe {
                    Probe::Gone => self.settler.forget(&path),
                    Probe::NotAFile { .. } => self.settler.forget_exact(&path),
                    Probe::File(_) | Probe::Failed(_) => {}
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Takes in what inotify reported.
    async fn on_batch(&mut self, batch: Batch) -> Step {
        for error in &batch.errors {
            warn!(error = %error, "file watcher error");
        }
        if batch.root_gone {
            return ControlFlow::Break(Err(self.vanished()));
        }
        if batch.rescan {
            warn!("file events were lost; scanning the folder again");
            self.scan().await?;
        }
        let mut paths = batch.paths;
        if paths.is_empty() {
            return ControlFlow::Continue(());
        }
        paths.sort_unstable();
        paths.dedup();
        let filter = Arc::clone(&self.filter);
        let findings = blocking(move || fs::check(&filter, paths)).await;
        let now = Instant::now();
        for finding in findings {
            match finding {
                Finding::File(path, sig) => {
                    if self.settler.observe(&path, sig, now, true) {
                        debug!(path = %path.display(), "candidate");
                    }
                }
                Finding::Gone(path) => self.settler.forget(&path),
                Finding::NotAFile(path) => self.settler.forget_exact(&path),
                Finding::Failed(path, e) => {
                    warn!(path = %path.display(), error = %e, "cannot stat")
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Checks the files whose quiet period is over and sends those that did not change.
    async fn send_settled(&mut self) -> Step {
        let due = self.settler.due(Instant::now());
        if due.is_empty() {
            return ControlFlow::Continue(());
        }
        let probes = blocking(move || probe_all(due)).await;
        let now = Instant::now();
        let mut ready = Vec::new();
        for (path, probe) in probes {
            match probe {
                Probe::File(sig) => {
                    if self.settler.confirm(&path, sig, now) {
                        ready.push(path);
                    } else {
                        debug!(path = %path.display(), "still changing");
                    }
                }
                Probe::Gone => {
                    debug!(path = %path.display(), "gone before it settled");
                    self.settler.forget(&path);
                }
                Probe::NotAFile { .. } => self.settler.forget_exact(&path),
                Probe::Failed(e) => {
                    warn!(path = %path.display(), error = %e, "cannot stat; trying again later");
                    self.settler.postpone(&path, now);
                }
            }
        }
        for path in ready {
            info!(path = %path.display(), "file ready");
            // Waits while the consumer is busy: backpressure, and events queue meanwhile.
            if self.tx.send(path).await.is_err() {
                debug!("nobody receives the files any more");
                return ControlFlow::Break(Ok(()));
            }
        }
        ControlFlow::Continue(())
    }
}

fn probe_all(paths: Vec<PathBuf>) -> Vec<(PathBuf, Probe)> {
    paths
        .into_iter()
        .map(|path| {
            let probe = fs::probe(&path);
            (path, probe)
        })
        .collect()
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs file system work on the blocking pool: a `stat` on NFS can hang for seconds.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down and drops this task at its next await.
        Err(_) => std::future::pending().await,
    }
}
