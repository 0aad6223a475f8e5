//! Watching a folder for finished files.
//!
//! Candidates come from inotify events (taken as they come: see [`events`]; all watches of the
//! process share one notify watcher, one inotify instance: see [`hub`]) or, in polling mode,
//! from a scan of the folder at each interval.
//!
//! A file *renamed (moved) into the folder* (`IN_MOVED_TO`) is finished: that is what a rename
//! into place means (rsync, `mv`, most processing chains), so it is sent at once, once a `stat`
//! shows it is a wanted regular file and records its size, mtime and inode. Any other file (one
//! created and written in place, one listed by a scan, one renamed in and then written to) is
//! sent only once it has *settled*: its size, mtime and inode stayed the same for
//! [`WatchSpec::settle`] with no write event in between; its check is timed for exactly the end
//! of that period. A writer's close (`IN_CLOSE_WRITE`) does not cut the period short: a writer
//! may open the file again. Polling sees no events, so there every file settles. A file is sent
//! once per version; if it changes again (say, while its upload runs) it settles and is sent
//! again, and the consumer coalesces. Either way the upload itself checks the file's size, mtime
//! and inode before each part and before complete, so a file that changes after all is never
//! completed.
//!
//! Polling is our own scan on a `tokio::time::interval` rather than notify's `PollWatcher`: the
//! settle rule needs the size and mtime of every candidate anyway, so a scan that lists and stats
//! the folder *is* the poll, with no second thread and no second copy of the folder's state; and
//! its timing follows tokio time like the rest of the watch.
//!
//! A folder that goes away (removed, moved away, unmounted, replaced by another one) or whose
//! watcher fails does not end the watch: the watch goes [`WatchState::Lost`], tries to watch the
//! folder again with exponential backoff (right away, then after 1 s, 2 s, ... up to 30 s), and
//! when it is back scans it as at start-up, so that the files already in it are sent once they
//! settle. Losses show in the log (one warning when lost, one info line when back), in
//! [`Watcher::state`] and, for a job, in the `stac_uploadd_trigger_up` metric and `/readyz`.
//! Besides inotify's own word (the folder's removal or rename), the folder's identity (device and
//! inode) is checked at each poll, and every [`ROOT_CHECK`] with inotify, which catches a mount or
//! unmount on it and a folder replaced between two looks.

pub mod bundle;
mod events;
mod fs;
mod hub;
pub mod limits;
mod settle;
mod status;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::instrument::WithSubscriber as _;
use tracing::{Instrument as _, debug, info, warn};

use self::events::{Batch, Events};
use self::fs::{Filter, Finding, Probe};
use self::hub::Subscription;
pub use self::hub::inotify_instances;
use self::settle::{Seen, Settler};
use self::status::Status;
pub use self::status::WatchState;
use crate::observe::health::Triggers;

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
    /// A file written in place counts as finished when its size, mtime and inode stayed the same
    /// this long (a file renamed into place, seen by inotify, is finished at once).
    pub settle: Duration,
    /// Poll the folder at this interval instead of using inotify (NFS/SMB, bind mounts).
    pub poll: Option<Duration>,
    /// `bundle_timeout` and `bundle_incomplete`: for jobs with `[[job.assets]]` only.
    pub bundle: bundle::BundleRules,
}

/// The default ignore globs: temporary names, hidden files, editor backups.
pub const DEFAULT_IGNORE: &[&str] = &["*.tmp", ".*", "*~"];

/// The shortest poll interval honoured; `tokio::time::interval` refuses zero.
const MIN_POLL: Duration = Duration::from_millis(10);

/// How often, with inotify, the watched folder is checked to be the one watched: inotify says
/// nothing when a file system is mounted on it or unmounted from it.
pub const ROOT_CHECK: Duration = Duration::from_secs(5);

/// The first wait between attempts to watch a lost folder again (the first attempt is at once);
/// each wait doubles, up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest wait between attempts to watch a lost folder again.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why a folder cannot be watched, or why a running watch lost it.
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
    /// The inotify limits of the user are reached: `fs.inotify.max_user_watches` (`ENOSPC` on a
    /// new watch), or `fs.inotify.max_user_instances` (`EMFILE` when the shared instance is
    /// made, if other programs of the user hold all of them).
    #[error(
        "cannot watch {} for changes: the user's inotify limits are reached (all watch jobs of the daemon share one of fs.inotify.max_user_instances, and each watched folder, and each sub-folder of a recursive watch, takes one of fs.inotify.max_user_watches; raise them, e.g. sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512, or give the job a poll interval)",
        path.display()
    )]
    InotifyLimit {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot watch {} for changes", path.display())]
    Unwatchable {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("the watched folder {} was removed or moved away", path.display())]
    Vanished { path: PathBuf },
    #[error("the file system watcher on {} stopped unexpectedly", path.display())]
    Stopped { path: PathBuf },
    /// A bundle member pattern that cannot match (the loader checks them; this is its word
    /// for a spec built otherwise).
    #[error("{why}")]
    BadMember { why: String },
}

impl WatchError {
    /// Whether this is a problem with the folder the job file names (missing, not a folder,
    /// not readable) that waiting does not fix: at start, a configuration error (exit 2, which
    /// systemd does not restart on), not a failure to retry. A loss on NFS (`EIO`, `ESTALE`),
    /// or the inotify limits, are not.
    pub fn is_permanent(&self) -> bool {
        match self {
            WatchError::NotAFolder { .. } | WatchError::BadMember { .. } => true,
            WatchError::Inaccessible { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    libc::ENOENT
                        | libc::EACCES
                        | libc::EPERM
                        | libc::ENOTDIR
                        | libc::ELOOP
                        | libc::ENAMETOOLONG
                )
            ),
            _ => false,
        }
    }

    /// What notify said when asked to watch `path`: an inotify limit, a folder that cannot be
    /// watched (named with its OS error: no inotify hint for a permission problem), or another
    /// failure of the watcher.
    fn unwatchable(path: &std::path::Path, source: notify::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind {
            notify::ErrorKind::MaxFilesWatch => WatchError::InotifyLimit { path, source },
            notify::ErrorKind::Io(ref e) if e.raw_os_error() == Some(libc::EMFILE) => {
                WatchError::InotifyLimit { path, source }
            }
            notify::ErrorKind::Io(e) => WatchError::Inaccessible { path, source: e },
            notify::ErrorKind::PathNotFound => WatchError::Inaccessible {
                path,
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            },
            _ => WatchError::Unwatchable { path, source },
        }
    }
}

/// A running watch; dropping it (or cancelling the token) stops it.
#[derive(Debug)]
pub struct Watcher {
    task: JoinHandle<Result<(), WatchError>>,
    stop: DropGuard,
    state: watch::Receiver<WatchState>,
}

impl Watcher {
    /// Starts watching. Every file that matches (pattern on the path relative to dir, ignore
    /// globs on the file name, recursive or not) and is finished (renamed into place, or settled)
    /// is sent on `tx` as an absolute path. Files already present when the watch starts are reported too (they may have arrived
    /// while the daemon was down), after settling; so are those present when a lost folder is
    /// back.
    ///
    /// The folder must exist now. If it goes later, or its watcher fails, the watch is
    /// [`WatchState::Lost`] and keeps trying to watch it again; it stops only when `cancel` is
    /// cancelled, when this `Watcher` is dropped, or when the receiver of `tx` is dropped; `tx`
    /// is dropped then.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(
        spec: WatchSpec,
        tx: mpsc::Sender<PathBuf>,
        cancel: CancellationToken,
    ) -> Result<Watcher, WatchError> {
        Self::launch(None, spec, tx, cancel)
    }

    /// [`Watcher::start`] for the job `job`: its logs name it, and its state shows in the
    /// `stac_uploadd_trigger_up` and `stac_uploadd_trigger_recoveries_total` metrics (which
    /// exist from now on) and in `/readyz` ([`Triggers::global`]) while the watch runs.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start_for_job(
        job: &str,
        spec: WatchSpec,
        tx: mpsc::Sender<PathBuf>,
        cancel: CancellationToken,
    ) -> Result<Watcher, WatchError> {
        Self::launch(Some(job), spec, tx, cancel)
    }

    fn launch(
        job: Option<&str>,
        spec: WatchSpec,
        tx: mpsc::Sender<PathBuf>,
        cancel: CancellationToken,
    ) -> Result<Watcher, WatchError> {
        let root = std::path::absolute(&spec.dir).map_err(|source| WatchError::Inaccessible {
            path: spec.dir.clone(),
            source,
        })?;
        let opener = Arc::new(Opener {
            root: root.clone(),
            recursive: spec.recursive,
            poll: spec.poll,
        });
        let opened = opener.open()?;

        let span = tracing::info_span!("watch", job = tracing::field::Empty, dir = %root.display());
        if let Some(job) = job {
            span.record("job", tracing::field::display(job));
        }
        let (status, state) = span.in_scope(|| Status::new(job, &Triggers::global()));
        let cancel = cancel.child_token();
        let task = Task {
            filter: Arc::new(Filter {
                root,
                pattern: spec.pattern,
                ignore: spec.ignore,
                recursive: spec.recursive,
            }),
            root_id: opened.id,
            source: Some(opener.source(opened)),
            opener,
            settle: spec.settle,
            settler: Settler::new(spec.settle),
            tx,
            status,
        };
        let task = tokio::spawn(
            task.run(cancel.clone())
                .instrument(span)
                .with_current_subscriber(),
        );
        Ok(Watcher {
            task,
            stop: cancel.drop_guard(),
            state,
        })
    }

    /// Follows the watch's state: [`WatchState::Watching`] at start, [`WatchState::Lost`] while
    /// its folder is gone.
    pub fn state(&self) -> watch::Receiver<WatchState> {
        self.state.clone()
    }

    /// Waits for the watch to end (cancelled, or nobody receives the files): a lost folder does
    /// not end it, so this is `Ok` but for a future error that cannot be retried. Dropping this
    /// future stops the watch, like dropping the `Watcher`.
    pub async fn join(self) -> Result<(), WatchError> {
        let Watcher { task, stop, .. } = self;
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

/// The files a watch of `spec` would send that are in its folder now (the pattern on the path
/// relative to the folder, the ignore globs on the name, sub-folders when recursive), as
/// absolute paths, sorted. No settle rule: for `run --once`, which sends what is there when it
/// is started. Blocks (it lists and stats the folder).
pub fn present_files(spec: &WatchSpec) -> Result<Vec<PathBuf>, WatchError> {
    let root = std::path::absolute(&spec.dir).map_err(|source| WatchError::Inaccessible {
        path: spec.dir.clone(),
        source,
    })?;
    root_id(&root)?;
    let filter = Filter {
        root: root.clone(),
        pattern: spec.pattern.clone(),
        ignore: spec.ignore.clone(),
        recursive: spec.recursive,
    };
    let mut files: Vec<PathBuf> = fs::walk(&filter, &root)
        .map_err(|source| WatchError::Inaccessible { path: root, source })?
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    files.sort();
    Ok(files)
}

/// What identifies the watched folder: one removed and made again, or a file system mounted on
/// it or unmounted from it, is another folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RootId {
    dev: u64,
    ino: u64,
}

impl RootId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    #[cfg(not(unix))]
    fn of(_: &std::fs::Metadata) -> Self {
        Self { dev: 0, ino: 0 }
    }
}

/// The folder's identity now (following a symlink to it), or why it is not a folder to watch.
fn root_id(root: &std::path::Path) -> Result<RootId, WatchError> {
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(RootId::of(&meta)),
        Ok(_) => Err(WatchError::NotAFolder {
            path: root.to_path_buf(),
        }),
        Err(source) => Err(WatchError::Inaccessible {
            path: root.to_path_buf(),
            source,
        }),
    }
}

/// How to (re)open the watched folder: at start, and each time a lost folder is tried again.
#[derive(Debug)]
struct Opener {
    root: PathBuf,
    recursive: bool,
    poll: Option<Duration>,
}

/// The folder as opened: its identity and, with inotify, its place on the shared watcher.
struct Opened {
    id: RootId,
    events: Option<(Subscription, Events)>,
}

impl Opener {
    /// Checks that the folder is there and, with inotify, watches it. Blocks (a recursive watch
    /// walks the tree).
    fn open(&self) -> Result<Opened, WatchError> {
        // The identity first: if the folder is replaced before the inotify watch is in place,
        // the next root check sees another folder and opens it again.
        let id = root_id(&self.root)?;
        let events = match self.poll {
            Some(_) => None,
            None => Some(
                hub::subscribe(&self.root, self.recursive)
                    .map_err(|source| WatchError::unwatchable(&self.root, source))?,
            ),
        };
        Ok(Opened { id, events })
    }

    /// Where candidates come from, for what `open` opened. Needs the tokio runtime (timers).
    fn source(&self, opened: Opened) -> Source {
        match (opened.events, self.poll) {
            (Some((subscription, events)), _) => {
                let mut check = tokio::time::interval_at(Instant::now() + ROOT_CHECK, ROOT_CHECK);
                check.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Source::Events {
                    events,
                    _subscription: subscription,
                    check,
                }
            }
            (None, every) => {
                let mut interval = tokio::time::interval(every.unwrap_or(MIN_POLL).max(MIN_POLL));
                // A scan slower than the interval delays the next one rather than bunching them.
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Source::Poll(interval)
            }
        }
    }
}

/// Where candidates come from.
enum Source {
    Events {
        events: Events,
        /// Held for its lifetime: dropping it ends the folder's inotify watch (unless another
        /// watch needs it).
        _subscription: Subscription,
        /// When to check that the folder is still the one watched.
        check: Interval,
    },
    Poll(Interval),
}

/// Why the watch task woke up.
enum Wake {
    Batch(Batch),
    Scan,
    CheckRoot,
    Due,
    EventsEnded,
}

impl Source {
    async fn next(&mut self) -> Wake {
        match self {
            Source::Events { events, check, .. } => tokio::select! {
                batch = events.next() => batch.map_or(Wake::EventsEnded, Wake::Batch),
                _ = check.tick() => Wake::CheckRoot,
            },
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
///
/// Its state machine: *watching* (events or polls, settling, sending) until the folder is lost
/// or its watcher fails; then *lost*: attempts to open the folder again, the first at once and
/// then with exponential backoff, until one succeeds; then *watching* again, from a scan with
/// an empty settler, as at start-up. Only a closed receiver (or the cancellation) ends it.
struct Task {
    opener: Arc<Opener>,
    filter: Arc<Filter>,
    /// The identity of the folder being watched.
    root_id: RootId,
    /// What the first watch reads; the opener makes the next ones.
    source: Option<Source>,
    settle: Duration,
    settler: Settler,
    tx: mpsc::Sender<PathBuf>,
    status: Status,
}

impl Task {
    /// Watches until cancelled or ended; every await in the watch is a point where a
    /// cancellation stops it.
    async fn run(mut self, cancel: CancellationToken) -> Result<(), WatchError> {
        let end = tokio::select! {
            biased;
            () = cancel.cancelled() => Ok(()),
            end = self.supervise() => end,
        };
        debug!("watch stopped");
        end
    }

    /// Watches, and watches again each time the folder is lost and back.
    async fn supervise(&mut self) -> Result<(), WatchError> {
        loop {
            let source = match self.source.take() {
                Some(source) => source,
                None => match self.reopen().await {
                    Some(source) => source,
                    None => return Ok(()),
                },
            };
            self.status.watching();
            match self.watch(source).await {
                Ok(()) => return Ok(()),
                Err(lost) => {
                    self.status.lost(&lost);
                    // What comes back is a folder to scan afresh, as at start-up: a file with the
                    // path and signature of one sent before may be another file (inodes are
                    // reused). One sent again is recognised as unchanged by the upload.
                    self.settler = Settler::new(self.settle);
                }
            }
        }
    }

    /// Tries to open the lost folder again until it works: `None` if nobody receives the files
    /// any more. Only state changes are logged, by [`Status`].
    async fn reopen(&mut self) -> Option<Source> {
        let mut waits = stac_client::retry::forever(RETRY_MIN, RETRY_MAX);
        loop {
            let opener = Arc::clone(&self.opener);
            match blocking(move || opener.open()).await {
                Ok(opened) => {
                    self.root_id = opened.id;
                    return Some(self.opener.source(opened));
                }
                Err(e) => {
                    self.status.lost(&e);
                }
            }
            let wait = waits.next().unwrap_or(RETRY_MAX);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.tx.closed() => {
                    debug!("nobody receives the files any more");
                    return None;
                }
            }
        }
    }

    /// Watches until the folder is lost (`Err`, why) or nobody receives the files (`Ok`).
    async fn watch(&mut self, mut source: Source) -> Result<(), WatchError> {
        // Polling scans at its first tick, right away; events need a first look at what is there.
        if matches!(source, Source::Events { .. })
            && let ControlFlow::Break(end) = self.scan().await
        {
            return end;
        }
        loop {
            // Checks are timed for the moment a file is due (a quiet period after its last
            // change, or now for one renamed into place), not on a periodic tick.
            let deadline = self.settler.next_deadline();
            let wake = match deadline {
                Some(due) if due <= Instant::now() => Wake::Due,
                _ => tokio::select! {
                    wake = source.next() => wake,
                    () = sleep_until(deadline) => Wake::Due,
                },
            };
            let step = match wake {
                Wake::Batch(batch) => self.on_batch(batch).await,
                Wake::Scan => self.scan().await,
                Wake::CheckRoot => self.check_root().await,
                Wake::Due => self.send_settled().await,
                Wake::EventsEnded => ControlFlow::Break(Err(self.stopped())),
            };
            if let ControlFlow::Break(end) = step {
                return end;
            }
        }
    }

    fn vanished(&self) -> WatchError {
        WatchError::Vanished {
            path: self.filter.root.clone(),
        }
    }

    fn stopped(&self) -> WatchError {
        WatchError::Stopped {
            path: self.filter.root.clone(),
        }
    }

    /// Whether the folder is still the one opened: a folder that is gone, is no folder, cannot
    /// be looked at, or is another one (made again, mounted over or unmounted) is lost.
    fn same_root(root: &std::path::Path, opened: RootId) -> Result<(), WatchError> {
        match root_id(root) {
            Ok(id) if id == opened => Ok(()),
            Ok(_) => Err(WatchError::Vanished {
                path: root.to_path_buf(),
            }),
            Err(WatchError::Inaccessible { source, .. }) if fs::is_gone(&source) => {
                Err(WatchError::Vanished {
                    path: root.to_path_buf(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// With inotify, from time to time: is the folder still the one watched?
    async fn check_root(&mut self) -> Step {
        let root = self.filter.root.clone();
        let opened = self.root_id;
        match blocking(move || Self::same_root(&root, opened)).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(lost) => ControlFlow::Break(Err(lost)),
        }
    }

    /// Lists the whole folder: at start, at each poll, and after lost events.
    async fn scan(&mut self) -> Step {
        let filter = Arc::clone(&self.filter);
        let opened = self.root_id;
        let listed = blocking(move || {
            Self::same_root(&filter.root, opened).map(|()| fs::walk(&filter, &filter.root))
        })
        .await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(lost) => return ControlFlow::Break(Err(lost)),
        };
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
            if self.settler.observe(&path, sig, now, Seen::Listed) {
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
        // One entry per path, sorted, each with its latest change.
        let paths = batch.paths;
        if paths.is_empty() {
            return ControlFlow::Continue(());
        }
        let filter = Arc::clone(&self.filter);
        let findings = blocking(move || fs::check(&filter, paths)).await;
        let now = Instant::now();
        for finding in findings {
            match finding {
                Finding::File(path, sig, seen) => {
                    if self.settler.observe(&path, sig, now, seen) {
                        debug!(path = %path.display(), moved_in = seen == Seen::MovedIn, "candidate");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_inotify_limits_get_the_inotify_hint_and_a_denied_folder_is_permanent() {
        let path = std::path::Path::new("/srv/in");
        let denied = WatchError::unwatchable(
            path,
            notify::Error::io(std::io::Error::from_raw_os_error(libc::EACCES)),
        );
        assert!(denied.is_permanent(), "{denied:?}");
        let text = status::chain(&denied);
        assert!(
            text.contains("/srv/in") && text.contains("Permission denied"),
            "{text}"
        );
        assert!(!text.contains("inotify"), "{text}");

        let gone = WatchError::unwatchable(path, notify::Error::path_not_found());
        assert!(gone.is_permanent(), "{gone:?}");

        for limit in [
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
            notify::Error::io(std::io::Error::from_raw_os_error(libc::EMFILE)),
        ] {
            let e = WatchError::unwatchable(path, limit);
            assert!(matches!(e, WatchError::InotifyLimit { .. }), "{e:?}");
            assert!(!e.is_permanent(), "a limit may be raised, or freed: {e:?}");
            assert!(
                e.to_string().contains("fs.inotify.max_user_watches")
                    && e.to_string().contains("fs.inotify.max_user_instances"),
                "{e}"
            );
        }
        let flaky = WatchError::Inaccessible {
            path: path.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert!(!flaky.is_permanent(), "an NFS hiccup is retried");
    }
}
