//! One job: its trigger feeds a pending slot, its runner takes work from the slot and applies the
//! policy: one run at a time for a schedule, up to the job's `concurrency` for a watch (never two
//! of one asset at once).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::from_file::{Inspections, Refusal, Wanted, wants_anything};
use crate::config::PolicyKind;
use crate::config::{
    Captures, ItemGeometry, ItemMetadata, JobSpec, Names, SidecarError, item_body_with_sidecar,
};
use crate::observe::health::JobTasks;
use crate::observe::metrics::{self, UploadOutcome};
use crate::state::{InFlight, Outcome, PublicCheck, RunRecord, StateStore};
use crate::trigger::Clock;
use crate::trigger::TriggerSpec;
use stac_client::retry;
use stac_client::{AssetTarget, PublicAnswer, StacClient, Upload, UploadId};
use stac_upload::{
    self, AbortOutcome, Durable, NewObjects, RecordFuture, UploadError, UploadEvent,
    UploadObserver, UploadOptions, UploadReport,
};

/// The upload calls a job makes; HTTP in production, scripted in policy tests.
pub trait Uploader: Send + Sync + 'static {
    /// Uploads a file (see [`stac_upload::upload_file`]).
    fn upload(
        &self,
        target: &AssetTarget,
        path: &Path,
        objects: &NewObjects,
        opts: &UploadOptions,
        observer: Arc<dyn UploadObserver>,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<UploadReport, UploadError>> + Send;

    /// Aborts an upload (see [`stac_upload::abort_upload`]).
    fn abort(
        &self,
        target: &AssetTarget,
        id: &UploadId,
        opts: &UploadOptions,
    ) -> impl Future<Output = AbortOutcome> + Send;

    /// Resumes or aborts an upload a previous process left in flight (see
    /// [`super::reconcile::resume_or_abort`]); `None` when there was nothing to do, which is all
    /// an uploader that never leaves one (a test's) has to say.
    fn resume(
        &self,
        state: &StateStore,
        rec: &InFlight,
        opts: &UploadOptions,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Option<RunRecord>> + Send {
        let _ = (state, rec, opts, cancel);
        async { None }
    }

    /// Applies the job's `keep` rule at `now` after a successful run that published `item` (see
    /// [`crate::retention::after_run`]); nothing for an uploader that stores no items (a test's).
    fn prune(
        &self,
        spec: &JobSpec,
        item: Option<&str>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (spec, item, now);
        async {}
    }

    /// Creates an item when it is missing (see [`stac_upload::create_item_if_missing`]);
    /// `true` when this call created it. An uploader whose items always exist says `false`.
    fn create_item(
        &self,
        collection: &str,
        item: &str,
        body: &serde_json::Value,
    ) -> impl Future<Output = Result<bool, UploadError>> + Send {
        let _ = (collection, item, body);
        async { Ok(false) }
    }

    /// What an uploaded asset's public URL answers to a `HEAD` (its `href` as the upload read
    /// it, else read now), with that URL; `None` for an uploader without public URLs (a
    /// test's), which nothing is checked for.
    fn public_answer(
        &self,
        target: &AssetTarget,
        href: Option<&str>,
    ) -> impl Future<Output = Option<(String, PublicAnswer)>> + Send {
        let _ = (target, href);
        async { None }
    }

    /// Deletes an item a run created and could not fill, if it holds no asset (see
    /// [`stac_upload::remove_empty_item`]).
    fn remove_empty_item(
        &self,
        collection: &str,
        item: &str,
        own_assets: &[String],
    ) -> impl Future<Output = ()> + Send {
        let _ = (collection, item, own_assets);
        async {}
    }
}

/// The real thing: a STAC client.
#[derive(Debug, Clone)]
pub struct HttpUploader(pub StacClient);

impl Uploader for HttpUploader {
    async fn upload(
        &self,
        target: &AssetTarget,
        path: &Path,
        objects: &NewObjects,
        opts: &UploadOptions,
        observer: Arc<dyn UploadObserver>,
        cancel: &CancellationToken,
    ) -> Result<UploadReport, UploadError> {
        stac_upload::publish_file(&self.0, target, path, objects, opts, observer, cancel).await
    }

    async fn abort(
        &self,
        target: &AssetTarget,
        id: &UploadId,
        opts: &UploadOptions,
    ) -> AbortOutcome {
        stac_upload::abort_upload(&self.0, target, id, opts).await
    }

    async fn resume(
        &self,
        state: &StateStore,
        rec: &InFlight,
        opts: &UploadOptions,
        cancel: &CancellationToken,
    ) -> Option<RunRecord> {
        super::reconcile::resume_or_abort(&self.0, state, rec, opts, cancel).await
    }

    async fn prune(&self, spec: &JobSpec, item: Option<&str>, now: DateTime<Utc>) {
        crate::retention::after_run(&self.0, spec, item, now).await;
    }

    async fn create_item(
        &self,
        collection: &str,
        item: &str,
        body: &serde_json::Value,
    ) -> Result<bool, UploadError> {
        stac_upload::create_item_if_missing(&self.0, collection, item, body).await
    }

    async fn remove_empty_item(&self, collection: &str, item: &str, own_assets: &[String]) {
        stac_upload::remove_empty_item(&self.0, collection, item, own_assets).await;
    }

    async fn public_answer(
        &self,
        target: &AssetTarget,
        href: Option<&str>,
    ) -> Option<(String, PublicAnswer)> {
        Some(public_answer(&self.0, target, href).await)
    }
}

/// A `HEAD` of the asset's public URL: `href` when the caller has it, else the asset's as one
/// `GET` shows it now; with the URL (the API's asset URL when no `href` could be had).
pub(crate) async fn public_answer(
    client: &StacClient,
    target: &AssetTarget,
    href: Option<&str>,
) -> (String, PublicAnswer) {
    let href = match href {
        Some(h) => h.to_owned(),
        None => match client.read_asset(target).await {
            Ok(stac_client::AssetInfo { href: Some(h), .. }) => h,
            Ok(_) => {
                let url = client.asset_call_url(target, &[]).to_string();
                return (
                    url,
                    PublicAnswer::Unreachable("the asset has no href".to_owned()),
                );
            }
            Err(e) => {
                let url = client.asset_call_url(target, &[]).to_string();
                return (
                    url,
                    PublicAnswer::Unreachable(format!("cannot read the asset's href: {e}")),
                );
            }
        },
    };
    match url::Url::parse(&href) {
        Ok(url) => {
            let answer = client
                .head_public(&url, &stac_client::PUBLIC_HEAD_WAITS)
                .await;
            (stac_client::redact_url(url.as_str()), answer)
        }
        Err(e) => (
            crate::observe::escape_controls(&href).into_owned(),
            PublicAnswer::Unreachable(format!("the href is not a URL: {e}")),
        ),
    }
}

/// What the job tasks of one daemon share.
pub struct Shared<U> {
    /// Replaced on a reload; a run keeps the one it started with.
    uploader: std::sync::RwLock<Arc<U>>,
    pub state: Arc<StateStore>,
    pub clock: Clock,
    /// Uploads this process is sending right now: ours, and not stale.
    pub running: Mutex<HashSet<UploadId>>,
    /// Every finished run, for the demo, tests, metrics, the status page and notifications.
    pub runs: tokio::sync::broadcast::Sender<RunRecord>,
    /// Every run as it starts (before its first attempt), for the status page and pings. A
    /// receiver that lags loses the oldest; nothing here waits for one.
    pub starts: tokio::sync::broadcast::Sender<RunStart>,
    /// Permits for upload sessions: at most this many run at once over every job, so memory
    /// (each session holds a digest window and its parts' buffers) is bounded whatever fires.
    /// The semaphore holds [`SHARES`] shares per session: a small file takes one (see
    /// [`session_shares`]).
    sessions: std::sync::RwLock<(usize, Arc<tokio::sync::Semaphore>)>,
    /// The upload sessions running now with their progress, for the status page.
    pub live: Arc<crate::status::LiveUploads>,
    /// Where a job whose task ended unexpectedly shows until it runs again (`/readyz`).
    pub job_tasks: Arc<JobTasks>,
    /// One creator per item in this process: two jobs (or two runs) filling one new item
    /// take turns to create it, so only one of them creates it and says so.
    item_locks: ItemLocks,
}

/// A run starting: sent on [`Shared::starts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    pub job: String,
    pub started: chrono::DateTime<chrono::Utc>,
    /// The item (if any) and asset, or file, the run is for, as the log names them.
    pub target: String,
}

/// The lock of each (collection, item) being created, see [`Shared::item_lock`].
type ItemLocks = Mutex<HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>;

/// Sessions at once when nobody sets a limit ([`Shared::set_upload_limit`]).
const DEFAULT_SESSIONS: usize = 4;

/// Shares of one session permit. A session for a small file takes one share: its memory (the
/// file's bytes in a buffer or two) is a fraction of a large file's digest window (32 MiB) and
/// part buffers, and its time goes to the API's round trips, so a burst of small files may run
/// this many times `max_concurrent_uploads` sessions at once with no more memory than that many
/// large ones (docs/performance.md, "Bursts").
const SHARES: u32 = 8;

/// The largest file whose session takes one share.
const SMALL_FILE: u64 = 1024 * 1024;

/// Shares a session for a file of `len` bytes takes; `None` (not known yet, e.g. unreadable)
/// and compressed files count as large: an encoder's window is megabytes whatever the file.
fn session_shares(len: Option<u64>, compress: stac_upload::CompressMode) -> u32 {
    match len {
        Some(len) if len <= SMALL_FILE && compress == stac_upload::CompressMode::None => 1,
        _ => SHARES,
    }
}

impl<U> Shared<U> {
    /// Shared state for jobs using `uploader`.
    pub fn new(uploader: U, state: Arc<StateStore>, clock: Clock) -> Self {
        Self {
            uploader: std::sync::RwLock::new(Arc::new(uploader)),
            state,
            clock,
            running: Mutex::new(HashSet::new()),
            runs: tokio::sync::broadcast::channel(1024).0,
            starts: tokio::sync::broadcast::channel(1024).0,
            sessions: std::sync::RwLock::new((
                DEFAULT_SESSIONS,
                Arc::new(tokio::sync::Semaphore::new(
                    DEFAULT_SESSIONS * SHARES as usize,
                )),
            )),
            live: Arc::default(),
            job_tasks: JobTasks::global(),
            item_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The lock held while an item is looked up and created. Locks of items nobody holds are
    /// dropped as others are taken, so the map stays as small as the items in flight.
    pub(super) fn item_lock(&self, collection: &str, item: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut g = self
            .item_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.retain(|_, l| Arc::strong_count(l) > 1);
        g.entry((collection.to_owned(), item.to_owned()))
            .or_default()
            .clone()
    }

    /// Shows the jobs whose task ended unexpectedly on `board` rather than the process-wide one.
    pub fn with_job_tasks(mut self, board: Arc<JobTasks>) -> Self {
        self.job_tasks = board;
        self
    }

    /// At most `limit` upload sessions at once from now on. A changed limit takes a fresh set of
    /// permits: sessions under way keep theirs, so for a moment both sets may be in use.
    pub fn set_upload_limit(&self, limit: usize) {
        let limit = limit.max(1);
        let mut g = self
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0 != limit {
            *g = (
                limit,
                Arc::new(tokio::sync::Semaphore::new(limit * SHARES as usize)),
            );
        }
    }

    /// Waits for `shares` of a session permit ([`SHARES`] for a whole one).
    pub(super) async fn session_permit(&self, shares: u32) -> tokio::sync::OwnedSemaphorePermit {
        let sessions = self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone();
        sessions
            .acquire_many_owned(shares)
            .await
            .expect("the semaphore is never closed")
    }

    /// The uploader new runs use.
    pub fn uploader(&self) -> Arc<U> {
        self.uploader
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Gives runs that start from now on `uploader` (a client for a reloaded job file).
    pub fn set_uploader(&self, uploader: U) {
        *self
            .uploader
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(uploader);
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<UploadId>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Work waiting for a job's runner. Triggers that fire while a run is going are coalesced here:
/// any number of schedule fires become one follow-up run, a file reported twice is sent once, a
/// bundle completed again before it ran is run once with its newest files.
#[derive(Debug, Default)]
pub struct Pending {
    inner: Mutex<PendingInner>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct PendingInner {
    fire: Option<DateTime<Utc>>,
    coalesced: u64,
    files: BTreeSet<PathBuf>,
    /// Bundles by stem: their files and whether complete.
    bundles: BTreeMap<String, (Vec<Option<PathBuf>>, bool)>,
    /// Uploads a previous process left in flight, resumed before any other work of the job: a
    /// run of the job would otherwise meet its own interrupted upload as a stale blocker.
    resumes: VecDeque<InFlight>,
    /// A fire a lapsed cluster member claimed and never finished, taken with its upload: run
    /// once the resumes are over, unless one of them finished it (see [`Pending::refire`]).
    refire: Option<DateTime<Utc>>,
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// A schedule fired at this time.
    Scheduled(DateTime<Utc>),
    /// A watched file is ready.
    File(PathBuf),
    /// Files of one bundle (a watch job with [[job.assets]]): for each of the job's assets, by
    /// index, its file if present; `complete` when every required member is there.
    Bundle {
        stem: String,
        files: Vec<Option<PathBuf>>,
        complete: bool,
    },
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A schedule fired.
    pub fn fire(&self, at: DateTime<Utc>) {
        let mut g = self.lock();
        if g.fire.is_some() {
            g.coalesced += 1;
            debug!(at = %at, "run still pending: fire coalesced");
        } else {
            g.fire = Some(at);
        }
        drop(g);
        self.notify.notify_one();
    }

    /// A file is ready.
    pub fn file(&self, path: PathBuf) {
        self.lock().files.insert(path);
        self.notify.notify_one();
    }

    /// A bundle is ready (complete, or published incomplete at its timeout).
    pub fn bundle(&self, stem: String, files: Vec<Option<PathBuf>>, complete: bool) {
        self.lock().bundles.insert(stem, (files, complete));
        self.notify.notify_one();
    }

    /// The next unit of work, if any.
    pub fn take(&self) -> Option<Work> {
        self.take_ready(|_| Some(())).map(|(work, ())| work)
    }

    /// The first unit of work `ready` accepts (a fire, then files and bundles in name order),
    /// with what `ready` said of it; the others stay pending in their order.
    pub fn take_ready<K>(&self, mut ready: impl FnMut(&Work) -> Option<K>) -> Option<(Work, K)> {
        let mut g = self.lock();
        if let Some(at) = g.fire {
            let work = Work::Scheduled(at);
            if let Some(k) = ready(&work) {
                g.fire = None;
                return Some((work, k));
            }
        }
        let found = g
            .files
            .iter()
            .find_map(|p| ready(&Work::File(p.clone())).map(|k| (p.clone(), k)));
        if let Some((path, k)) = found {
            g.files.remove(&path);
            return Some((Work::File(path), k));
        }
        let found = g.bundles.iter().find_map(|(stem, (files, complete))| {
            let work = Work::Bundle {
                stem: stem.clone(),
                files: files.clone(),
                complete: *complete,
            };
            ready(&work).map(|k| (work, k))
        });
        if let Some((work, _)) = &found
            && let Work::Bundle { stem, .. } = work
        {
            g.bundles.remove(stem);
        }
        found
    }

    /// Whether uploads of a previous process wait to be resumed.
    fn has_resumes(&self) -> bool {
        !self.lock().resumes.is_empty()
    }

    /// Fires that were merged into an already pending run.
    pub fn coalesced(&self) -> u64 {
        self.lock().coalesced
    }

    /// An upload a previous process left in flight, to be resumed or aborted first.
    pub fn resume(&self, rec: InFlight) {
        self.lock().resumes.push_back(rec);
        self.notify.notify_one();
    }

    /// Fires `at` once the uploads to resume are handled, unless the first of them is resumed
    /// to its end: the fire of a lapsed cluster member whose upload this instance took.
    pub fn refire(&self, at: DateTime<Utc>) {
        self.lock().refire = Some(at);
        self.notify.notify_one();
    }

    fn take_refire(&self) -> Option<DateTime<Utc>> {
        self.lock().refire.take()
    }

    /// The next upload to resume, if any.
    pub fn take_resume(&self) -> Option<InFlight> {
        self.lock().resumes.pop_front()
    }

    /// Takes what `old` still holds (the slot of the job this one replaces): a fire or a file
    /// that came during the old runner's last run is run by this one.
    pub fn take_over(&self, old: &Pending) {
        let taken = std::mem::take(&mut *old.lock());
        let mut g = self.lock();
        g.resumes.extend(taken.resumes);
        g.files.extend(taken.files);
        // Ours are newer than the old slot's: they stay.
        for (stem, bundle) in taken.bundles {
            g.bundles.entry(stem).or_insert(bundle);
        }
        match (g.fire, taken.fire) {
            (Some(_), Some(_)) => g.coalesced += 1,
            (None, Some(at)) => g.fire = Some(at),
            _ => {}
        }
        let any = g.fire.is_some()
            || !g.files.is_empty()
            || !g.bundles.is_empty()
            || !g.resumes.is_empty();
        drop(g);
        if any {
            self.notify.notify_one();
        }
    }
}

/// What a run needs to read its `item_json` sidecar (read once per run, before anything is sent:
/// a sidecar that cannot be used fails the run with nothing created).
struct Sidecar {
    meta: ItemMetadata,
    id: String,
    name: String,
    captures: Option<Captures>,
    time: DateTime<chrono_tz::Tz>,
    path: PathBuf,
}

impl Sidecar {
    fn of(
        spec: &JobSpec,
        item: Option<&str>,
        names: Names<'_>,
        time: &DateTime<chrono_tz::Tz>,
    ) -> Option<Self> {
        let meta = spec.item_metadata.as_ref()?;
        let path = meta.item_json.as_ref()?.path(names, time);
        Some(Sidecar {
            meta: meta.clone(),
            id: item?.to_owned(),
            name: names.file_name().to_owned(),
            captures: names.captures().cloned(),
            time: *time,
            path,
        })
    }

    /// `objects` with the item's body merged from the sidecar.
    async fn merged(self, mut objects: NewObjects) -> Result<NewObjects, SidecarError> {
        let path = self.path.clone();
        let body = tokio::task::spawn_blocking(move || {
            item_body_with_sidecar(
                &self.meta,
                &self.id,
                Names::new(&self.name, self.captures.as_ref()),
                &self.time,
                Some(&self.path),
            )
        })
        .await
        .map_err(|e| SidecarError::Read {
            path,
            source: std::io::Error::other(format!("the read was cut short: {e}")),
        })??;
        objects.item = Some(body);
        Ok(objects)
    }
}

/// Why a one-file run's bodies cannot be built: it fails before anything is created.
#[derive(Debug)]
enum NotPrepared {
    Sidecar(SidecarError),
    File(Refusal),
}

impl NotPrepared {
    fn upload_error(&self) -> UploadError {
        match self {
            NotPrepared::Sidecar(e) => e.upload_error(),
            NotPrepared::File(r) => r.upload_error(),
        }
    }
}

/// A job and what it needs to run.
pub struct Job<U> {
    pub spec: JobSpec,
    pub shared: Arc<Shared<U>>,
    pub pending: Arc<Pending>,
    /// Cancelled to abort the runs in progress (end of the shutdown grace period).
    pub abort_runs: CancellationToken,
}

/// Whether a job retries failed runs: `auto` resolved against its trigger.
pub fn effective_policy(spec: &JobSpec, now: DateTime<Utc>) -> PolicyKind {
    match (spec.policy.kind, &spec.trigger) {
        (PolicyKind::Auto, TriggerSpec::Cron { schedule, .. }) => {
            let threshold = chrono::Duration::from_std(spec.policy.auto_threshold)
                .unwrap_or(chrono::Duration::MAX);
            match schedule.min_interval(now, 24) {
                Some(gap) if gap < threshold => PolicyKind::Cancel,
                _ => PolicyKind::Retry,
            }
        }
        (PolicyKind::Auto, TriggerSpec::Every { interval, .. }) => {
            if *interval < spec.policy.auto_threshold {
                PolicyKind::Cancel
            } else {
                PolicyKind::Retry
            }
        }
        (PolicyKind::Auto, TriggerSpec::Watch(_)) => PolicyKind::Retry,
        (kind, _) => kind,
    }
}

/// What a run does after a failed attempt.
pub(super) enum NextAttempt {
    /// Try again (the wait is over).
    Retry,
    /// Give up: the policy, the error or the time left says so.
    GiveUp,
    /// Shutdown ended the run.
    Stopped,
}

/// Whether an upload was cut short through its cancellation token: by shutdown or by the run
/// deadline (the caller tells which).
pub(super) fn cut_short(e: &UploadError) -> bool {
    match e {
        UploadError::Cancelled | UploadError::Fenced => true,
        UploadError::AfterCreate { cause, .. } => {
            matches!(**cause, UploadError::Cancelled | UploadError::Fenced)
        }
        _ => false,
    }
}

/// How an upload session ended, for the metrics; `shutdown` says whether shutdown is aborting
/// the runs (a session cut short otherwise met the run deadline: a failure).
pub(super) fn upload_outcome(
    result: &Result<UploadReport, UploadError>,
    shutdown: bool,
) -> UploadOutcome {
    match result {
        Ok(r) if r.unchanged => UploadOutcome::Unchanged,
        Ok(_) => UploadOutcome::Uploaded,
        Err(UploadError::InProgress { .. }) => UploadOutcome::Blocked,
        Err(e) if e.left_in_progress().is_some() => UploadOutcome::AbortFailed,
        Err(e) if shutdown && cut_short(e) => UploadOutcome::Cancelled,
        Err(_) => UploadOutcome::Failed,
    }
}

/// How a run ended; `stopped` says its end came from shutdown (a session cut short, or a retry
/// given up or cut short because the runs are being aborted). The policy does not matter: a run
/// given up on an error is a failure whether it was tried once or retried.
pub(super) fn run_outcome(result: &Result<UploadReport, UploadError>, stopped: bool) -> Outcome {
    match result {
        Ok(r) if r.unchanged => Outcome::Unchanged,
        Ok(_) => Outcome::Uploaded,
        Err(e) => error_outcome(e, stopped),
    }
}

/// How a run (or an asset of an item run) given up on `e` ended.
pub(super) fn error_outcome(e: &UploadError, stopped: bool) -> Outcome {
    match e {
        _ if stopped => Outcome::Cancelled,
        UploadError::Unfreeable { .. } => Outcome::Unfreeable,
        UploadError::InProgress { .. } => Outcome::Blocked,
        _ => Outcome::Failed,
    }
}

impl<U: Uploader> Job<U> {
    /// A job with nothing pending yet; `abort_runs` aborts its runs in progress.
    pub fn new(spec: JobSpec, shared: Arc<Shared<U>>, abort_runs: CancellationToken) -> Self {
        Self {
            spec,
            shared,
            pending: Arc::new(Pending::default()),
            abort_runs,
        }
    }

    /// Runs at once: a watch job's `concurrency`; a schedule's runs go one at a time (a fire
    /// during a run coalesces into one follow-up run).
    fn concurrency(&self) -> usize {
        match self.spec.trigger {
            TriggerSpec::Watch(_) => self.spec.concurrency.max(1),
            TriggerSpec::Cron { .. } | TriggerSpec::Every { .. } => 1,
        }
    }

    /// What two runs at once must not share: the asset a file renders to (collection, item,
    /// asset), and for a bundle its item. Rendered when the work is taken; the run renders its
    /// ids again, from the same file and a moment later.
    fn busy_key(&self, work: &Work) -> String {
        match work {
            // One fire is pending at a time, and schedules run one at a time anyway.
            Work::Scheduled(_) => String::new(),
            Work::File(_) => {
                let (t, _, _) = self.prepare(work);
                format!(
                    "{}/{}/{}",
                    t.collection,
                    t.item.as_deref().unwrap_or(""),
                    t.asset
                )
            }
            // The item the run renders (from its first present file, with its captures).
            Work::Bundle { .. } => {
                let (item, _, _, _) = self.item_of(work);
                format!("{}/{item}", self.spec.collection)
            }
        }
    }

    /// Runs work from the pending slot, up to [`Job::concurrency`] runs at once and never two of
    /// one asset (a second file for a busy asset waits in the slot), until `stop` is cancelled;
    /// the runs in progress are finished (or aborted through `abort_runs`) first. Each run logs
    /// and records itself as it finishes, so completions are reported in their real order.
    /// Uploads to resume go before anything else, one at a time, with no run beside them.
    pub async fn run_loop(self: Arc<Self>, stop: CancellationToken) {
        // What a previous process (or this job's predecessor) left on record.
        self.count_left_in_progress().await;
        let limit = self.concurrency();
        let mut runs = tokio::task::JoinSet::new();
        let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
        // A run that panicked: the others finish, then the runner ends with its panic, as one
        // that ran it inline would (the supervisor restarts it).
        let mut panicked = None;
        loop {
            while !stop.is_cancelled() && panicked.is_none() {
                if self.pending.has_resumes() {
                    if !runs.is_empty() {
                        break;
                    }
                    if let Some(rec) = self.pending.take_resume() {
                        let resumed = self.resume(rec).await;
                        if let Some(at) = self.pending.take_refire() {
                            self.refire_unless_resumed(at, resumed.as_ref()).await;
                        }
                    }
                    continue;
                }
                if runs.len() >= limit {
                    break;
                }
                let held: HashSet<&str> = busy.values().map(String::as_str).collect();
                let Some((work, key)) = self.pending.take_ready(|w| {
                    let key = self.busy_key(w);
                    (!held.contains(key.as_str())).then_some(key)
                }) else {
                    break;
                };
                let job = self.clone();
                let handle = runs.spawn(async move {
                    job.run_claimed(work).await;
                });
                busy.insert(handle.id(), key);
            }
            if stop.is_cancelled() || panicked.is_some() {
                while let Some(done) = runs.join_next_with_id().await {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        panicked.get_or_insert(e.into_panic());
                    }
                }
                if let Some(p) = panicked {
                    std::panic::resume_unwind(p);
                }
                return;
            }
            tokio::select! {
                Some(done) = runs.join_next_with_id(), if !runs.is_empty() => match done {
                    Ok((id, ())) => {
                        busy.remove(&id);
                    }
                    Err(e) => {
                        busy.remove(&e.id());
                        if e.is_panic() {
                            panicked = Some(e.into_panic());
                        }
                    }
                },
                () = self.pending.notify.notified() => {}
                () = stop.cancelled() => {}
            }
        }
    }

    /// Resumes (or aborts) an upload a previous process left in flight, as a run of this job:
    /// under a session permit, the job's bandwidth limits and its run deadline; shutdown cuts it
    /// short like any run. `None` when there was nothing to do, or shutdown came before it
    /// started (it stays on record for the next start).
    pub async fn resume(&self, rec: InFlight) -> Option<RunRecord> {
        let span = info_span!("resume", job = %self.spec.name, collection = %rec.target.collection, item = rec.target.item.as_deref().unwrap_or(""), asset = %rec.target.asset, upload_id = %rec.upload_id);
        async {
            let _permit = tokio::select! {
                p = self.shared.session_permit(SHARES) => p,
                () = self.abort_runs.cancelled() => return None,
            };
            let cancel = self.shared.state.fence().run_token(&self.abort_runs);
            let _ended = cancel.clone().drop_guard();
            let (deadline, options) = self.run_deadline(&cancel, "aborting the resumed upload");
            // Ours and being sent: no other run may judge it stale meanwhile.
            self.shared.running().insert(rec.upload_id.clone());
            let record = self
                .shared
                .uploader()
                .resume(&self.shared.state, &rec, &options, &cancel)
                .await;
            deadline.abort();
            self.shared.running().remove(&rec.upload_id);
            if let Some(r) = &record {
                if let Err(e) = self.shared.state.record_run(r.clone()).await {
                    error!(error = %e, "cannot record the run in the state store");
                }
                metrics::run_finished(r);
                let _ = self.shared.runs.send(r.clone());
            }
            self.count_left_in_progress().await;
            record
        }
        .instrument(span)
        .await
    }

    /// Takes a claim of this job that a lapsed member (or this instance under an earlier lease)
    /// never finished; `resumed`: an upload of this job is being handed over too. A fire runs
    /// again with `catch_up` (after the resume, and only if it does not finish the upload); a
    /// watched file's version is published. `false` when nothing is run again: the caller
    /// marks the claim finished.
    pub fn take_claim(&self, work: &str, resumed: bool) -> bool {
        if let Some(at) = crate::cluster::fire_of(work) {
            if !self.spec.catch_up {
                return false;
            }
            if resumed {
                self.pending.refire(at);
            } else {
                info!(job = %self.spec.name, fire = %at, "running once more a fire a lapsed instance claimed and never finished");
                self.pending.fire(at);
            }
            return true;
        }
        match work
            .strip_prefix("file ")
            .and_then(|w| w.splitn(3, ' ').nth(2))
        {
            Some(path) => {
                info!(job = %self.spec.name, file = %path, "publishing a file a lapsed instance claimed and never finished");
                self.pending.file(PathBuf::from(path));
                true
            }
            None => false,
        }
    }

    /// A taken fire: run again when its upload was not resumed to its end (it was aborted,
    /// gone, or failed), else its claim is finished by the resume.
    async fn refire_unless_resumed(&self, at: DateTime<Utc>, resumed: Option<&RunRecord>) {
        if resumed.is_some_and(|r| r.outcome == Outcome::Resumed) {
            let work = crate::cluster::fire_work(at);
            if let Err(e) = self.shared.state.finish_claim(&self.spec.name, &work).await {
                warn!(job = %self.spec.name, error = %e, "cannot mark a taken claim finished");
            }
        } else {
            info!(job = %self.spec.name, fire = %at, "running once more a fire a lapsed instance claimed: its upload was not resumed to its end");
            self.pending.fire(at);
        }
    }

    /// Whether runs are being stopped: shutdown, or (in a cluster) a lease not renewed in time.
    /// A run cut short then is cancelled, not failed.
    pub(super) fn stopping(&self) -> bool {
        self.abort_runs.is_cancelled() || !self.shared.state.fence().may_start()
    }

    /// Runs `work` if this instance may: always without a cluster; in a cluster, only while it
    /// holds its lease and once its claim of the work is in (another instance runs it
    /// otherwise), the claim marked finished after the run.
    async fn run_claimed(&self, work: Work) {
        let fence = self.shared.state.fence();
        if !fence.clustered() {
            self.run(work).await;
            return;
        }
        if !fence.may_start() {
            warn!(job = %self.spec.name, "this instance holds no lease now: the work is left to the others");
            return;
        }
        let key = self.claim_key(&work).await;
        match self.shared.state.claim(&self.spec.name, &key).await {
            Ok(crate::state::Claim::Won) => {
                metrics::cluster_claim(&self.spec.name, true);
                debug!(job = %self.spec.name, work = %key, "claimed");
                let record = self.run(work).await;
                if record.outcome == Outcome::Cancelled && !fence.may_start() {
                    // Stopped by the fence, its upload handed over: the claim stays open for
                    // whoever takes this instance's work (or for this one, back under its name).
                    return;
                }
                if let Err(e) = self.shared.state.finish_claim(&self.spec.name, &key).await {
                    warn!(job = %self.spec.name, error = %e, "cannot mark the claim finished: if this instance's lease lapses now, another runs the work again");
                }
            }
            Ok(crate::state::Claim::Lost { by }) => {
                metrics::cluster_claim(&self.spec.name, false);
                debug!(job = %self.spec.name, work = %key, by = %by, "claimed by another instance");
            }
            Err(e) => {
                warn!(job = %self.spec.name, work = %key, error = %e, "cannot claim the work: left to the others");
            }
        }
    }

    /// What a claim of `work` names: a fire by its nominal time; a file, or each member of a
    /// bundle, by path, size and modification time, so that a new version is new work.
    async fn claim_key(&self, work: &Work) -> String {
        async fn version(path: &Path) -> String {
            match tokio::fs::metadata(path).await {
                Ok(m) => {
                    let s = stac_upload::FileSnapshot::of(&m);
                    format!(
                        "{} {}.{:09} {}",
                        s.len,
                        s.mtime.0,
                        s.mtime.1,
                        path.display()
                    )
                }
                Err(_) => format!("- - {}", path.display()),
            }
        }
        match work {
            Work::Scheduled(at) => crate::cluster::fire_work(*at),
            Work::File(path) => format!("file {}", version(path).await),
            Work::Bundle { stem, files, .. } => {
                let mut key = format!("bundle {stem}");
                for f in files.iter().flatten() {
                    key.push_str(" | ");
                    key.push_str(&version(f).await);
                }
                key
            }
        }
    }

    /// The next scheduled fire after `t`, for capping retries.
    fn next_fire_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.spec.trigger {
            TriggerSpec::Cron { schedule, .. } => schedule.next_after(t),
            TriggerSpec::Every { interval, .. } => {
                chrono::Duration::from_std(*interval).ok().map(|i| t + i)
            }
            TriggerSpec::Watch(_) => None,
        }
    }

    /// One run: attempts under the policy, and one record of the outcome.
    pub async fn run(&self, work: Work) -> RunRecord {
        let record = if self.is_item_job() || matches!(work, Work::Bundle { .. }) {
            self.run_item(work).await
        } else {
            let (target, path, objects, sidecar) = self.prepare_run(&work);
            let span = info_span!("run", job = %self.spec.name, collection = %target.collection, item = target.item.as_deref().unwrap_or(""), asset = %target.asset);
            let name = path.file_name().map(|n| n.to_string_lossy());
            let refused = name.and_then(|n| {
                let _in_run = span.enter();
                self.refuse_name(&path, &n)
            });
            // The name, then the file's media type and what is read from it, then the sidecar:
            // each refuses the run before anything is created.
            let objects = match refused {
                Some(why) => Err(why.upload_error(&path)),
                None => self
                    .file_objects(&target, &path, objects, sidecar)
                    .instrument(span.clone())
                    .await
                    .map_err(|e| e.upload_error()),
            };
            self.run_target(target, path, objects)
                .instrument(span)
                .await
        };
        // Retention only after a success: a failing job never thins out what it cannot replace.
        if self.spec.keep.is_some()
            && matches!(record.outcome, Outcome::Uploaded | Outcome::Unchanged)
        {
            let uploader = self.shared.uploader();
            let span = info_span!("prune", job = %self.spec.name);
            uploader
                .prune(&self.spec, record.item.as_deref(), self.shared.clock.now())
                .instrument(span)
                .await;
        }
        record
    }

    /// What a unit of work writes: its target, ids rendered for the run time in the job's zone
    /// (a schedule's fire time, or when a watched file was picked up), its file, and the item
    /// and asset to create if they are missing.
    pub fn prepare(&self, work: &Work) -> (AssetTarget, PathBuf, NewObjects) {
        let (target, path, objects, _) = self.prepare_run(work);
        (target, path, objects)
    }

    /// [`Job::prepare`], and the run's `item_json` sidecar when the job has one.
    fn prepare_run(&self, work: &Work) -> (AssetTarget, PathBuf, NewObjects, Option<Sidecar>) {
        let (path, at) = match work {
            Work::Scheduled(at) => match &self.spec.trigger {
                TriggerSpec::Cron { file, .. } | TriggerSpec::Every { file, .. } => {
                    (file.clone(), *at)
                }
                TriggerSpec::Watch(_) => unreachable!("watch jobs are never scheduled"),
            },
            Work::File(p) => (p.clone(), self.shared.clock.now()),
            // A bundle's first file stands for it here (an item job runs it with each file).
            Work::Bundle { files, .. } => (
                files.iter().flatten().next().cloned().unwrap_or_default(),
                self.shared.clock.now(),
            ),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let time = at.with_timezone(&self.spec.timezone);
        let captures = super::names::captures(&self.spec, &name);
        let names = Names::new(&name, captures.as_ref());
        let target = AssetTarget {
            collection: self.spec.collection.clone(),
            item: self.spec.item.as_ref().map(|i| i.render(names, &time)),
            asset: self.spec.asset.render(names, &time),
        };
        let objects = NewObjects {
            item: self
                .spec
                .item_metadata
                .as_ref()
                .zip(target.item.as_deref())
                .map(|(m, id)| m.item_body(id, names, &time)),
            asset: self
                .spec
                .asset_metadata
                .as_ref()
                .map(|m| m.asset_body(&target.asset, names, &time)),
        };
        let sidecar = Sidecar::of(&self.spec, target.item.as_deref(), names, &time);
        (target, path, objects, sidecar)
    }

    /// The bodies of a one-file run, before anything is created: the file checked against its
    /// media type and the values written `"from_file"` read from it
    /// ([`from_file`](super::from_file)), then the `item_json` sidecar merged (its own geometry
    /// wins over the file's footprint).
    async fn file_objects(
        &self,
        target: &AssetTarget,
        path: &Path,
        mut objects: NewObjects,
        mut sidecar: Option<Sidecar>,
    ) -> Result<NewObjects, NotPrepared> {
        let asset_meta = self.spec.asset_metadata.as_ref();
        let wanted = Wanted {
            asset: target.asset.clone(),
            path: path.to_owned(),
            media_type: asset_meta.map(|m| m.media_type.clone()),
            fields: asset_meta.map(|m| m.from_file).unwrap_or_default(),
            geometry: target.item.is_some()
                && self
                    .spec
                    .item_metadata
                    .as_ref()
                    .is_some_and(|m| matches!(m.geometry, ItemGeometry::FromFile(_))),
        };
        if wants_anything(&wanted, self.spec.validate) {
            let derived = self
                .read_files(std::slice::from_ref(&wanted), &mut Inspections::new())
                .await
                .map_err(NotPrepared::File)?;
            if let Some(body) = &mut objects.asset {
                derived.fill_asset(0, body);
            }
            if let Some((geometry, bbox)) = derived.geometry {
                if let Some(item) = &mut objects.item {
                    item["geometry"] = geometry.clone();
                }
                if let Some(s) = &mut sidecar {
                    s.meta = s.meta.with_geometry(geometry, bbox);
                }
            }
        }
        match sidecar {
            Some(s) => s.merged(objects).await.map_err(NotPrepared::Sidecar),
            None => Ok(objects),
        }
    }

    async fn run_target(
        &self,
        target: AssetTarget,
        path: PathBuf,
        objects: Result<NewObjects, UploadError>,
    ) -> RunRecord {
        let clock = self.shared.clock;
        let started = clock.now();
        let _ = self.shared.starts.send(RunStart {
            job: self.spec.name.clone(),
            started,
            target: target.to_string(),
        });
        let policy = effective_policy(&self.spec, started);
        let p = &self.spec.policy;
        let mut waits = retry::waits(p.retry_min_delay, p.retry_max_delay, p.retries);
        let mut attempts = 0u32;
        // Whether the run's end came from shutdown rather than from its own outcome.
        let mut stopped = false;
        // A run refused before anything is created (its name, its sidecar) is tried once: the
        // file does not change by trying again.
        let result = match objects {
            Err(e) => {
                attempts = 1;
                Err(e)
            }
            Ok(objects) => loop {
                attempts += 1;
                let mut result = self.attempt(&target, &path, &objects, attempts).await;
                let Err(e) = &mut result else { break result };
                match self
                    .next_attempt(e, policy, &mut waits, started, attempts)
                    .await
                {
                    NextAttempt::Retry => {}
                    NextAttempt::GiveUp => break result,
                    NextAttempt::Stopped => {
                        stopped = true;
                        break result;
                    }
                }
            },
        };
        // A session cut short while the runs are being aborted was cut by shutdown; otherwise
        // by the run deadline.
        stopped |= result
            .as_ref()
            .is_err_and(|e| cut_short(e) && self.stopping());
        // Once, after the attempts: a retry would find the asset unchanged and check nothing.
        let public: Vec<PublicCheck> = match &result {
            Ok(r) => self.verify_upload(&target, r).await.into_iter().collect(),
            Err(_) => Vec::new(),
        };
        let refusal = self.public_refusal(&public);
        let finished = clock.now();
        let outcome = match refusal {
            Some(_) => Outcome::Failed,
            None => run_outcome(&result, stopped),
        };
        let duration_ms = (finished - started).num_milliseconds();
        let record = match &result {
            Ok(r) => {
                let id = r.upload_id.as_ref().map(|u| u.0.as_str()).unwrap_or("-");
                if r.unchanged {
                    info!(
                        bytes = r.bytes,
                        attempts, duration_ms, "unchanged: the asset already holds the file"
                    );
                } else {
                    info!(
                        upload_id = id,
                        bytes = r.bytes,
                        parts = r.parts,
                        attempts,
                        duration_ms,
                        "uploaded"
                    );
                }
                if let Some(error) = &refusal {
                    error!(
                        attempts,
                        outcome = outcome.as_str(),
                        duration_ms,
                        error,
                        "run given up"
                    );
                }
                RunRecord {
                    instance: None,
                    error_class: refusal
                        .as_ref()
                        .map(|_| super::public::ERROR_CLASS.to_owned()),
                    public,
                    job: self.spec.name.clone(),
                    started,
                    finished,
                    outcome,
                    asset: target.asset.clone(),
                    item: target.item.clone(),
                    file: Some(path),
                    bytes: r.bytes,
                    attempts,
                    upload_id: r.upload_id.clone(),
                    error: refusal,
                    assets: Vec::new(),
                }
            }
            Err(e) => {
                let error = if cut_short(e) && !stopped {
                    format!(
                        "the run deadline of {} was reached: {e}",
                        humantime::format_duration(self.spec.policy.run_timeout)
                    )
                } else {
                    e.to_string()
                };
                if outcome == Outcome::Cancelled {
                    // Not an error: the daemon was told to stop and the grace period is over.
                    warn!(attempts, duration_ms, error, "run cancelled by shutdown");
                } else {
                    error!(attempts, policy = ?policy, outcome = outcome.as_str(), duration_ms, error, "run given up");
                }
                RunRecord {
                    instance: None,
                    error_class: Some(error_class(e, stopped).to_owned()),
                    public: Vec::new(),
                    job: self.spec.name.clone(),
                    started,
                    finished,
                    outcome,
                    asset: target.asset.clone(),
                    item: target.item.clone(),
                    file: Some(path),
                    bytes: 0,
                    attempts,
                    upload_id: match e {
                        UploadError::AfterCreate { upload_id, .. } => Some(upload_id.clone()),
                        _ => None,
                    },
                    error: Some(error),
                    assets: Vec::new(),
                }
            }
        };
        if let Err(e) = self.shared.state.record_run(record.clone()).await {
            error!(error = %e, "cannot record the run in the state store");
        }
        metrics::run_finished(&record);
        self.count_left_in_progress().await;
        let _ = self.shared.runs.send(record.clone());
        record
    }

    /// Sets the job's `uploads_left_in_progress`: its uploads on record as in flight that no run
    /// of this process is sending (an abort that failed, a crash). They may block the asset until
    /// a run or a restart aborts them.
    pub(super) async fn count_left_in_progress(&self) {
        match self.shared.state.inflight().await {
            Ok(all) => {
                let running = self.shared.running();
                let left = all
                    .iter()
                    .filter(|r| r.job == self.spec.name && !running.contains(&r.upload_id))
                    .count();
                drop(running);
                metrics::uploads_left_in_progress(&self.spec.name, left);
            }
            Err(e) => warn!(error = %e, "cannot read the uploads in flight"),
        }
    }

    /// One attempt: the upload with a deadline (creating the item and asset if missing, once
    /// the file is known good), and the stale-upload rule when the asset is blocked.
    pub(super) async fn attempt(
        &self,
        target: &AssetTarget,
        path: &Path,
        objects: &NewObjects,
        attempt: u32,
    ) -> Result<UploadReport, UploadError> {
        self.attempt_opts(target, path, objects, attempt, &self.spec.upload)
            .await
    }

    /// [`Self::attempt`] with these upload options (an item run's, its digests in front).
    pub(super) async fn attempt_opts(
        &self,
        target: &AssetTarget,
        path: &Path,
        objects: &NewObjects,
        attempt: u32,
        base: &UploadOptions,
    ) -> Result<UploadReport, UploadError> {
        let result = self.upload_once(target, path, objects, attempt, base).await;
        let Err(UploadError::InProgress { upload, .. }) = &result else {
            return result;
        };
        match self.staleness(target, upload).await {
            Some(why) => {
                warn!(blocking = %upload.upload_id, why, "aborting a stale upload that blocks the asset");
                match self
                    .shared
                    .uploader()
                    .abort(target, &upload.upload_id, &self.spec.upload)
                    .await
                {
                    AbortOutcome::Failed(e) if e.is_no_such_upload() => {
                        // The record is in progress but S3 has no such upload: nothing a client
                        // sends can free the asset (docs/protocol.md, "The asset no one can free").
                        error!(blocking = %upload.upload_id, error = %e, "the server holds an upload record whose S3 upload is gone");
                        return Err(UploadError::Unfreeable {
                            target: target.clone(),
                            upload_id: upload.upload_id.clone(),
                            cause: Box::new(e),
                        });
                    }
                    AbortOutcome::Failed(e) => {
                        warn!(blocking = %upload.upload_id, error = %e, "could not abort the stale upload");
                        return result;
                    }
                    _ => {
                        metrics::stale_upload_aborted(&self.spec.name);
                        // The upload is gone: its records only mislead now, and a failure to drop
                        // them costs nothing but a later lookup.
                        if let Err(e) = self.shared.state.remove_inflight(&upload.upload_id).await {
                            warn!(error = %e, "cannot update the state store");
                        }
                        if let Some(c) = &upload.checksum
                            && let Err(e) = self.shared.state.remove_creating(target, c).await
                        {
                            warn!(error = %e, "cannot update the state store");
                        }
                    }
                }
                self.upload_once(target, path, objects, attempt, base).await
            }
            None => {
                warn!(
                    blocking = %upload.upload_id,
                    since = %upload.created.map(|c| c.to_rfc3339()).unwrap_or_else(|| "unknown".into()),
                    "the asset is blocked by someone else's upload that may still be running"
                );
                result
            }
        }
    }

    /// Why a blocking upload may be aborted, or `None` if someone may still be sending it. A
    /// state store that cannot be read makes no upload ours: only age and expiry count then.
    pub async fn staleness(&self, target: &AssetTarget, blocking: &Upload) -> Option<&'static str> {
        let id = &blocking.upload_id;
        let running = self.shared.running().contains(id);
        // The store is asked only about uploads this process is not sending. One held by
        // another instance whose lease is live counts as being sent: it is never aborted here.
        use crate::state::Holder;
        let holder = |r: Result<Holder, crate::state::StateError>| {
            r.unwrap_or_else(|e| {
                warn!(error = %e, "cannot read the state store; the blocking upload is judged by its age");
                Holder::Nobody
            })
        };
        let mut running = running;
        let mut recorded = false;
        if !running {
            match holder(self.shared.state.holder(id).await) {
                Holder::Live(_) => running = true,
                Holder::Us | Holder::Lapsed(_) => recorded = true,
                Holder::Nobody => {}
            }
        }
        let unseen_create = match blocking.checksum.as_deref() {
            Some(c) if !running && !recorded => {
                match holder(self.shared.state.marker_holder(target, c).await) {
                    Holder::Live(_) => {
                        running = true;
                        false
                    }
                    Holder::Us | Holder::Lapsed(_) => true,
                    Holder::Nobody => false,
                }
            }
            _ => false,
        };
        let ours = super::stale::Ownership {
            running,
            recorded,
            unseen_create,
        };
        super::stale::staleness(
            blocking,
            ours,
            self.spec.policy.stale_after,
            self.shared.clock.now(),
        )
        .reason()
    }

    /// After a failed attempt, whether the run gets another under the job's policy: the wait
    /// (the server's `Retry-After` when it asks for longer, within `retry_max_delay`) is taken
    /// here, unless the next scheduled run comes first or shutdown cuts it short.
    pub(super) async fn next_attempt(
        &self,
        e: &mut UploadError,
        policy: PolicyKind,
        waits: &mut impl Iterator<Item = std::time::Duration>,
        started: DateTime<Utc>,
        attempts: u32,
    ) -> NextAttempt {
        let p = &self.spec.policy;
        if policy != PolicyKind::Retry || !e.run_action().is_retry() {
            return NextAttempt::GiveUp;
        }
        let Some(wait) = waits.next() else {
            return NextAttempt::GiveUp;
        };
        let asked = retry::Classified::retry_after(&*e);
        let wait = match retry::retry_wait(wait, asked, p.retry_max_delay, None) {
            Ok(wait) => wait,
            Err(why) => {
                retry::Classified::wait_refused(e, why);
                info!(%why, "not retrying the run");
                return NextAttempt::GiveUp;
            }
        };
        let now = self.shared.clock.now();
        if let Some(next) = self.next_fire_after(started)
            && now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX) >= next
        {
            info!(next_run = %next, "not retrying: the next scheduled run comes first");
            return NextAttempt::GiveUp;
        }
        if self.abort_runs.is_cancelled() {
            // It would be tried again, but the daemon is stopping.
            return NextAttempt::Stopped;
        }
        warn!(attempt = attempts, wait_ms = wait.as_millis() as u64, error = %e, "run failed, retrying");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.abort_runs.cancelled() => return NextAttempt::Stopped,
        }
        metrics::run_retry(&self.spec.name, metrics::Reason::of(e));
        NextAttempt::Retry
    }

    /// The run deadline, from now: a task that cancels `cancel` when `run_timeout` has passed
    /// (abort it when the session ends), and the job's upload options carrying the same instant,
    /// so no retry wait (a server's `Retry-After` included) is planned past it.
    fn run_deadline(
        &self,
        cancel: &CancellationToken,
        what: &'static str,
    ) -> (tokio::task::JoinHandle<()>, UploadOptions) {
        self.run_deadline_with(cancel, what, &self.spec.upload)
    }

    /// [`Self::run_deadline`] over `base` options rather than the job's.
    fn run_deadline_with(
        &self,
        cancel: &CancellationToken,
        what: &'static str,
        base: &UploadOptions,
    ) -> (tokio::task::JoinHandle<()>, UploadOptions) {
        let timeout = self.spec.policy.run_timeout;
        let at = tokio::time::Instant::now() + timeout;
        let task = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                warn!(
                    timeout_s = timeout.as_secs(),
                    "run deadline reached, {what}"
                );
                cancel.cancel();
            })
        };
        let options = UploadOptions {
            deadline: Some(at),
            ..base.clone()
        };
        (task, options)
    }

    async fn upload_once(
        &self,
        target: &AssetTarget,
        path: &Path,
        objects: &NewObjects,
        attempt: u32,
        base: &UploadOptions,
    ) -> Result<UploadReport, UploadError> {
        // The run deadline counts from here: waiting for a permit is not the server's time.
        let len = tokio::fs::metadata(path).await.ok().map(|m| m.len());
        let shares = session_shares(len, self.spec.upload.compress);
        let _permit = tokio::select! {
            p = self.shared.session_permit(shares) => p,
            () = self.abort_runs.cancelled() => return Err(UploadError::Cancelled),
        };
        let cancel = self.shared.state.fence().run_token(&self.abort_runs);
        let _ended = cancel.clone().drop_guard();
        let (deadline, options) = self.run_deadline_with(&cancel, "aborting the upload", base);
        let live = self.shared.live.start(
            &self.spec.name,
            target.to_string(),
            path.to_string_lossy().into_owned(),
            self.shared.clock.now(),
        );
        let observer = Arc::new(Recorder {
            progress: live.upload().clone(),
            shared: self.shared.clone() as Arc<dyn RecorderShared>,
            job: self.spec.name.clone(),
            sent: metrics::sent_bytes(&self.spec.name),
            target: target.clone(),
            path: path.to_owned(),
            created: Mutex::new(None),
        });
        let _unmark = Unmark {
            running: &self.shared.running,
            created: &observer.created,
        };
        let span = info_span!("attempt", attempt);
        let busy = metrics::upload_in_progress(&self.spec.name);
        let result = self
            .shared
            .uploader()
            .upload(target, path, objects, &options, observer.clone(), &cancel)
            .instrument(span)
            .await;
        drop(busy);
        drop(live);
        deadline.abort();
        metrics::upload_finished(
            &self.spec.name,
            upload_outcome(&result, self.stopping()),
            // Only sessions that sent the file: an unchanged one took a digest, not an upload.
            result
                .as_ref()
                .ok()
                .filter(|r| !r.unchanged)
                .map(|r| r.total_time),
        );
        let created = observer
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(id) = created {
            self.shared.running().remove(&id);
            let finished = match &result {
                Ok(_) => true,
                Err(e) => e.left_in_progress().is_none(),
            };
            // An upload whose abort failed stays recorded: the next run or a restart aborts it.
            if finished && let Err(e) = self.shared.state.remove_inflight(&id).await {
                error!(error = %e, "cannot update the state store");
            }
        }
        // A completed upload proves nothing of ours blocks the asset: old create markers can go.
        if result.as_ref().is_ok_and(|r| !r.unchanged)
            && let Err(e) = self.shared.state.clear_creating(target).await
        {
            error!(error = %e, "cannot update the state store");
        }
        result
    }
}

/// Unmarks a session's upload as being sent by this process when dropped, also when the run
/// unwinds (a panic): an upload left marked would never be judged stale, and would block its
/// asset until a restart. After a normal end the session's `created` is already taken.
struct Unmark<'a> {
    running: &'a Mutex<HashSet<UploadId>>,
    created: &'a Mutex<Option<UploadId>>,
}

impl Drop for Unmark<'_> {
    fn drop(&mut self) {
        let created = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = created.as_ref() {
            self.running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(id);
        }
    }
}

/// The part of [`Shared`] the observer needs, without its type parameter.
trait RecorderShared: Send + Sync {
    fn state(&self) -> &StateStore;
    fn mark_running(&self, id: UploadId);
    fn now(&self) -> DateTime<Utc>;
}

impl<U: Send + Sync> RecorderShared for Shared<U> {
    fn state(&self) -> &StateStore {
        &self.state
    }
    fn mark_running(&self, id: UploadId) {
        self.running().insert(id);
    }
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// Writes an upload to the state store the moment it is created, before any part is sent.
struct Recorder {
    shared: Arc<dyn RecorderShared>,
    job: String,
    /// The job's `sent_bytes_total`: every chunk of a part body as it goes out.
    sent: ::metrics::Counter,
    /// The session's line on the status page.
    progress: Arc<crate::status::LiveUpload>,
    target: AssetTarget,
    path: PathBuf,
    created: Mutex<Option<UploadId>>,
}

impl UploadObserver for Recorder {
    fn may_send(&self) -> bool {
        self.shared.state().fence().may_send()
    }

    fn on_event(&self, event: &UploadEvent<'_>) {
        match event {
            UploadEvent::Planned { size, .. } => self.progress.planned(*size),
            UploadEvent::Created { file, .. } => self.progress.planned(file.len),
            UploadEvent::Sent { bytes } => {
                self.sent.increment(*bytes);
                self.progress.sent(*bytes);
            }
            UploadEvent::Unsent { bytes } => self.progress.unsent(*bytes),
            UploadEvent::PartRetry { error, .. } => {
                metrics::part_retry(&self.job, metrics::Reason::of(error));
            }
            _ => {}
        }
    }

    fn record<'a>(&'a self, what: Durable<'a>) -> RecordFuture<'a> {
        Box::pin(async move {
            match what {
                Durable::Creating { multihash } => {
                    let rec = crate::state::Creating {
                        target: self.target.clone(),
                        multihash: multihash.as_str().to_owned(),
                        at: self.shared.now(),
                    };
                    self.shared.state().add_creating(rec).await?;
                }
                Durable::Created {
                    upload,
                    multihash,
                    part_size,
                    file,
                } => {
                    self.shared.mark_running(upload.upload_id.clone());
                    *self
                        .created
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(upload.upload_id.clone());
                    let rec = InFlight {
                        upload_id: upload.upload_id.clone(),
                        job: self.job.clone(),
                        target: self.target.clone(),
                        file: self.path.clone(),
                        size: file.len,
                        mtime: file.mtime,
                        ino: file.ino,
                        multihash: multihash.as_str().to_owned(),
                        part_size,
                        created: upload.created.unwrap_or_else(|| self.shared.now()),
                        urls_expire: upload.urls.iter().filter_map(|u| u.expires).min(),
                        pid: std::process::id(),
                    };
                    // Its id is known now: the create marker has done its job, and goes in the
                    // same transaction.
                    self.shared.state().record_created(rec).await?;
                }
            }
            Ok(())
        })
    }
}

impl<U> std::fmt::Debug for Job<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.spec.name)
            .finish()
    }
}

/// The class a run's final error is shown and notified with: `deadline` when the run deadline
/// cut it short, else the reason the retry counters use ([`metrics::Reason`]).
pub(super) fn error_class(e: &UploadError, stopped: bool) -> &'static str {
    if cut_short(e) && !stopped {
        "deadline"
    } else {
        metrics::Reason::of(e).as_str()
    }
}
