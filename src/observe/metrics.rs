//! Prometheus metrics through the `metrics` facade. Call sites record through the functions
//! here, so every name, label and unit is written once; without an installed recorder (the
//! `upload` command, the demo, unit tests) each call is a cheap no-op.
//!
//! Every per-job series carries the label `job_name`, never `job`: Prometheus reserves `job` (and
//! `instance`) for the scrape target and would rename ours to `exported_job`. Every series of a
//! job exists from the job's start ([`register_job`]), for every value of its fixed labels, so
//! that `increase()` and alerts see the first event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{
    Counter, Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::{Outcome, RunRecord, Streak};
use stac_client::ErrorClass;
use stac_upload::UploadError;

/// The label naming the job on every per-job series.
pub const JOB: &str = "job_name";

/// Finished runs by job and outcome (every [`Outcome`]).
pub const RUNS: &str = "stac_uploadd_runs_total";
/// The assets of finished item runs, by job and outcome (every [`Outcome`] an asset can end
/// with): a run of three assets counts once in [`RUNS`] and three times here.
pub const ITEM_ASSETS: &str = "stac_uploadd_item_assets_total";
/// Upload sessions (attempts) by job and outcome (every [`UploadOutcome`]).
pub const UPLOADS: &str = "stac_uploadd_uploads_total";
/// Bytes of part bodies sent to part URLs, by job; a part sent again counts again.
pub const SENT_BYTES: &str = "stac_uploadd_sent_bytes_total";
/// Retries of a failed run by job and reason (the error class name).
pub const RETRIES: &str = "stac_uploadd_retries_total";
/// Parts sent again inside an upload session, by job and reason.
pub const PART_RETRIES: &str = "stac_uploadd_part_retries_total";
/// Stale in-progress uploads aborted because they blocked an asset, by job.
pub const STALE_ABORTED: &str = "stac_uploadd_stale_uploads_aborted_total";
/// Times a watch job's lost folder was watched again, by job.
pub const TRIGGER_RECOVERIES: &str = "stac_uploadd_trigger_recoveries_total";
/// SIGHUP reloads by result (`ok`, `failed`).
pub const RELOADS: &str = "stac_uploadd_config_reloads_total";
pub const CLUSTER_MEMBERS: &str = "stac_uploadd_cluster_members";
pub const CLUSTER_EXPECTED: &str = "stac_uploadd_cluster_expected_members";
pub const CLUSTER_LEASE: &str = "stac_uploadd_cluster_lease_held";
pub const CLUSTER_FENCED: &str = "stac_uploadd_cluster_fenced_total";
pub const CLUSTER_TAKEOVERS: &str = "stac_uploadd_cluster_takeovers_total";
pub const CLUSTER_CLAIMS: &str = "stac_uploadd_cluster_claims_total";
/// Runs in a row that ended `failed`, `blocked` or `unfreeable`, by job.
pub const CONSECUTIVE_FAILURES: &str = "stac_uploadd_consecutive_failures";
/// Unix time of the last uploaded, unchanged or resumed run, by job (0: none on record).
pub const LAST_SUCCESS: &str = "stac_uploadd_last_success_timestamp_seconds";
/// Unix time at which the job, as configured now, started in this process.
pub const JOB_STARTED: &str = "stac_uploadd_job_started_timestamp_seconds";
/// The time expected between runs of the job (0 for watch jobs).
pub const JOB_INTERVAL: &str = "stac_uploadd_job_interval_seconds";
/// Upload sessions of the job running now.
pub const IN_PROGRESS: &str = "stac_uploadd_uploads_in_progress";
/// Uploads of the job on record as in flight that no run of this process is sending.
pub const LEFT_IN_PROGRESS: &str = "stac_uploadd_uploads_left_in_progress";
/// Whether the job's trigger works (1) or is dead or retrying (0).
pub const TRIGGER_UP: &str = "stac_uploadd_trigger_up";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "stac_uploadd_build_info";
/// Duration of upload sessions that sent and completed (digest, create, parts, complete).
pub const UPLOAD_DURATION: &str = "stac_uploadd_upload_duration_seconds";
/// How late the job's cron or `every` fires were.
pub const LATENESS: &str = "stac_uploadd_schedule_lateness_seconds";
/// Times a task of the job (its runner or its trigger) ended unexpectedly: a panic, or a runner
/// that returned while it should run.
pub const JOB_TASK_FAILURES: &str = "stac_uploadd_job_task_failures_total";
/// Items the job's `keep` rule deleted (with their assets).
pub const RETENTION_DELETED: &str = "stac_uploadd_retention_deleted_items_total";
/// Deletions (or listings) of the job's `keep` rule that failed; the next run tries again.
pub const RETENTION_FAILURES: &str = "stac_uploadd_retention_failures_total";

/// Bundles of a bundle job that reached their timeout incomplete (`reason="timed_out"`) or were
/// dropped to stay within the collector's cap (`reason="evicted"`), by job.
pub const BUNDLES_INCOMPLETE: &str = "stac_uploadd_bundles_incomplete_total";
/// Bundles of a bundle job held now, waiting for members (or left after their timeout).
pub const BUNDLES_OPEN: &str = "stac_uploadd_bundles_open";
/// Files refused before anything was created for them, by job and reason (every
/// [`FileRefusal`]).
pub const FILES_REFUSED: &str = "stac_uploadd_files_refused_total";
/// Webhook notices and pings by target (a `[[notify]]` table's index, or `ping`) and outcome
/// (`sent`, `failed`, `dropped`).
pub const NOTIFICATIONS: &str = "stac_uploadd_notifications_total";
/// Run starts and ends the notifier missed because it fell behind (never expected).
pub const NOTIFY_LOST: &str = "stac_uploadd_notify_lost_events_total";

/// From a second (a small file on a LAN) to the two-hour default run timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];
/// The scheduler fires within milliseconds; seconds mean a starved runtime or a clock jump.
const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A recorder with this crate's histogram buckets; [`install`] makes it the global one.
pub fn recorder() -> Result<metrics_exporter_prometheus::PrometheusRecorder, BuildError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(UPLOAD_DURATION.into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(LATENESS.into()), LATENESS_BUCKETS)?
        .build_recorder())
}

/// Installs the process-wide recorder and describes every metric. The caller renders through
/// the handle and runs its upkeep (no exporter server of its own: `/metrics` is ours).
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    describe();
    handle.run_upkeep();
    Ok(handle)
}

/// HELP texts and units, and the process-wide series, which exist from the start.
pub fn describe() {
    describe_counter!(RUNS, "Finished runs, by job and outcome");
    describe_counter!(
        ITEM_ASSETS,
        "Assets of finished item runs (a run per item, several assets each), by job and outcome"
    );
    describe_counter!(UPLOADS, "Upload sessions (attempts), by job and outcome");
    describe_counter!(
        SENT_BYTES,
        Unit::Bytes,
        "Bytes of part bodies sent to part URLs; a part sent again counts again"
    );
    describe_counter!(
        RETRIES,
        "Failed runs tried again, by reason (the error class)"
    );
    describe_counter!(
        PART_RETRIES,
        "Parts sent again inside an upload, by reason (the error class)"
    );
    describe_counter!(
        STALE_ABORTED,
        "Stale in-progress uploads aborted because they blocked an asset"
    );
    describe_counter!(
        TRIGGER_RECOVERIES,
        "Times the watch job's lost folder was watched again"
    );
    describe_counter!(RELOADS, "Reloads of the job file on SIGHUP, by result");
    describe_gauge!(
        CLUSTER_MEMBERS,
        "Instances of the cluster whose lease is live, at this instance's last heartbeat"
    );
    describe_gauge!(
        CLUSTER_EXPECTED,
        "The members the cluster should have ([cluster] expected_members)"
    );
    describe_gauge!(
        CLUSTER_LEASE,
        "1 while this instance holds a live lease and may start work, else 0"
    );
    describe_counter!(
        CLUSTER_FENCED,
        "Times this instance stopped its work because its lease was not renewed in time"
    );
    describe_counter!(
        CLUSTER_TAKEOVERS,
        "Heartbeats at which this instance took over work of lapsed instances"
    );
    describe_counter!(
        CLUSTER_CLAIMS,
        "Claims of work (a fire, a file), by job and result: won (this instance runs it) or lost"
    );
    describe_counter!(
        JOB_TASK_FAILURES,
        "Times a task of the job (its runner or trigger) ended unexpectedly, a panic say"
    );
    describe_counter!(
        RETENTION_DELETED,
        "Items the job's keep rule deleted, with their assets"
    );
    describe_counter!(
        RETENTION_FAILURES,
        "Item deletions or listings of the job's keep rule that failed (tried again next run)"
    );
    describe_gauge!(
        CONSECUTIVE_FAILURES,
        "Runs in a row that ended failed, blocked or unfreeable"
    );
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "Unix time at which the job's last uploaded, unchanged or resumed run finished; 0 if none on record"
    );
    describe_gauge!(
        JOB_STARTED,
        Unit::Seconds,
        "Unix time at which the job, as configured now, started in this process"
    );
    describe_gauge!(
        JOB_INTERVAL,
        Unit::Seconds,
        "Time expected between runs: the every interval, the longest gap of a cron schedule over the next 7 days, 0 for watch jobs"
    );
    describe_gauge!(IN_PROGRESS, "Upload sessions of the job running now");
    describe_counter!(
        BUNDLES_INCOMPLETE,
        "Bundles still incomplete at their timeout, or dropped at the cap, by job and reason"
    );
    describe_gauge!(
        BUNDLES_OPEN,
        "Bundles waiting for members (or left after their timeout), by job"
    );
    describe_gauge!(
        LEFT_IN_PROGRESS,
        "Uploads of ours on record as in flight that no run of this process is sending"
    );
    describe_gauge!(
        TRIGGER_UP,
        "Whether the job's trigger works (1) or is dead or retrying (0)"
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label");
    describe_histogram!(
        UPLOAD_DURATION,
        Unit::Seconds,
        "Duration of upload sessions that sent and completed: digest, create, parts and complete"
    );
    describe_histogram!(LATENESS, Unit::Seconds, "How late the job's schedule fired");
    describe_counter!(
        FILES_REFUSED,
        "Files refused before anything was created for them, by job and reason: name_pattern (the name does not match, or its captures cannot make the ids or times), media_type (not what its media type says), metadata (from_file found nothing to derive)"
    );
    describe_counter!(
        MEDIA_TYPE_WARNINGS,
        "Files not what their media type says, published anyway (validate = \"warn\"), by job"
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for result in ["ok", "failed"] {
        counter!(RELOADS, "result" => result).increment(0);
    }
}

/// Unix time in seconds, with milliseconds.
fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Makes every series of a job exist, for every value of its fixed labels, the trigger's aside
/// (its loop or watch sets `trigger_up`). `history` is given the first time a job of this name
/// starts in the process: its runs on record (oldest first) set the failures in a row and the
/// last success. Without it (a reload) nothing is reset: the counts and those gauges go on.
/// The job's start time and expected interval (the longest gap between its fires, given by the
/// supervisor from its trigger; zero for a watch) are its configuration's, so they are set anew.
pub fn register_job(
    job: &str,
    expected_interval: Duration,
    history: Option<&[RunRecord]>,
    now: DateTime<Utc>,
) {
    let job = job.to_owned();
    for outcome in Outcome::ALL {
        counter!(RUNS, JOB => job.clone(), "outcome" => outcome.as_str()).increment(0);
    }
    for outcome in UploadOutcome::ALL {
        counter!(UPLOADS, JOB => job.clone(), "outcome" => outcome.as_str()).increment(0);
    }
    for reason in Reason::all() {
        for name in [RETRIES, PART_RETRIES] {
            counter!(name, JOB => job.clone(), "reason" => reason).increment(0);
        }
    }
    for name in [
        SENT_BYTES,
        STALE_ABORTED,
        TRIGGER_RECOVERIES,
        JOB_TASK_FAILURES,
        RETENTION_DELETED,
        RETENTION_FAILURES,
    ] {
        counter!(name, JOB => job.clone()).increment(0);
    }
    for name in [IN_PROGRESS, LEFT_IN_PROGRESS] {
        gauge!(name, JOB => job.clone()).increment(0.0);
    }
    // A histogram exists, with empty buckets, once registered.
    let _ = histogram!(UPLOAD_DURATION, JOB => job.clone());
    let _ = histogram!(LATENESS, JOB => job.clone());
    let failures = gauge!(CONSECUTIVE_FAILURES, JOB => job.clone());
    let success = gauge!(LAST_SUCCESS, JOB => job.clone());
    match history {
        Some(runs) => {
            failures.set(crate::state::trailing_failures(runs) as f64);
            success.set(crate::state::last_success(runs).map_or(0.0, unix));
        }
        None => {
            failures.increment(0.0);
            success.increment(0.0);
        }
    }
    gauge!(JOB_STARTED, JOB => job.clone()).set(unix(now));
    gauge!(JOB_INTERVAL, JOB => job).set(expected_interval.as_secs_f64());
}

/// Why a bundle was reported incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleEnd {
    /// Its `bundle_timeout` passed.
    TimedOut,
    /// Dropped to make room at the collector's cap.
    Evicted,
}

impl BundleEnd {
    /// Every value, for the series that exist from the start.
    pub const ALL: [BundleEnd; 2] = [BundleEnd::TimedOut, BundleEnd::Evicted];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            BundleEnd::TimedOut => "timed_out",
            BundleEnd::Evicted => "evicted",
        }
    }
}

/// Makes a bundle job's bundle series exist (called when its collector starts).
pub fn register_bundle_job(job: &str) {
    for end in BundleEnd::ALL {
        counter!(BUNDLES_INCOMPLETE, JOB => job.to_owned(), "reason" => end.as_str()).increment(0);
    }
    gauge!(BUNDLES_OPEN, JOB => job.to_owned()).set(0.0);
}

/// A bundle of `job` reported incomplete.
pub fn bundle_incomplete(job: &str, end: BundleEnd) {
    counter!(BUNDLES_INCOMPLETE, JOB => job.to_owned(), "reason" => end.as_str()).increment(1);
}

/// The bundles `job`'s collector holds now.
pub fn bundles_open(job: &str, n: usize) {
    gauge!(BUNDLES_OPEN, JOB => job.to_owned()).set(n as f64);
}

/// A finished run: its outcome, the failures in a row, and the time of a success.
pub fn run_finished(run: &RunRecord) {
    let job = run.job.clone();
    counter!(RUNS, JOB => job.clone(), "outcome" => run.outcome.as_str()).increment(1);
    for asset in &run.assets {
        counter!(ITEM_ASSETS, JOB => job.clone(), "outcome" => asset.outcome.as_str()).increment(1);
    }
    let failures = gauge!(CONSECUTIVE_FAILURES, JOB => job.clone());
    match run.outcome.streak() {
        Streak::Success => {
            failures.set(0.0);
            gauge!(LAST_SUCCESS, JOB => job).set(unix(run.finished));
        }
        Streak::Failure => failures.increment(1.0),
        Streak::Neutral => {}
    }
}

/// Why a file was refused before anything was created for it (the `reason` of
/// [`FILES_REFUSED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRefusal {
    /// Its name does not match the job's `name_pattern`, or a capture cannot be part of an id
    /// or read as a time.
    NamePattern,
    /// It is not what its asset's media type says (`validate = "strict"`).
    MediaType,
    /// A `from_file` value could not be read from it.
    Metadata,
}

impl FileRefusal {
    /// Every value.
    pub const ALL: [FileRefusal; 3] = [
        FileRefusal::NamePattern,
        FileRefusal::MediaType,
        FileRefusal::Metadata,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            FileRefusal::NamePattern => "name_pattern",
            FileRefusal::MediaType => "media_type",
            FileRefusal::Metadata => "metadata",
        }
    }
}

/// Makes the refusal series of a job that can refuse files for `reason` exist at zero.
pub fn register_file_refusals(job: &str, reason: FileRefusal) {
    counter!(FILES_REFUSED, JOB => job.to_owned(), "reason" => reason.as_str()).increment(0);
}

/// A file of `job` was refused for `reason`.
pub fn file_refused(job: &str, reason: FileRefusal) {
    counter!(FILES_REFUSED, JOB => job.to_owned(), "reason" => reason.as_str()).increment(1);
}

/// An item job's asset series, at zero from its start.
pub fn register_item_job(job: &str) {
    for outcome in Outcome::ALL {
        counter!(ITEM_ASSETS, JOB => job.to_owned(), "outcome" => outcome.as_str()).increment(0);
    }
}

/// A watch job's trigger is `up` (watching) or not (its folder lost, being retried); `recovered`
/// says it is up again after a loss. The watch calls this at its start (up, not recovered), which
/// makes both series exist.
pub fn trigger_state(job: &str, up: bool, recovered: bool) {
    trigger_up(job, up);
    counter!(TRIGGER_RECOVERIES, JOB => job.to_owned()).increment(u64::from(up && recovered));
}

/// A task of the job ended unexpectedly (see [`JOB_TASK_FAILURES`]).
pub fn job_task_failed(job: &str) {
    counter!(JOB_TASK_FAILURES, JOB => job.to_owned()).increment(1);
}

/// The job's `keep` rule deleted an item (see [`RETENTION_DELETED`]).
pub fn retention_deleted(job: &str) {
    counter!(RETENTION_DELETED, JOB => job.to_owned()).increment(1);
}

/// A deletion or listing of the job's `keep` rule failed (see [`RETENTION_FAILURES`]).
pub fn retention_failed(job: &str) {
    counter!(RETENTION_FAILURES, JOB => job.to_owned()).increment(1);
}

/// A job's trigger works (`up`) or cannot fire (a schedule with no further fire time).
pub fn trigger_up(job: &str, up: bool) {
    gauge!(TRIGGER_UP, JOB => job.to_owned()).set(if up { 1.0 } else { 0.0 });
}

/// How one upload session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The asset now holds the file.
    Uploaded,
    /// The asset already held the file; nothing was sent.
    Unchanged,
    /// Another upload in progress blocked the asset; nothing was created.
    Blocked,
    /// Cut off by shutdown.
    Cancelled,
    /// Failed (the run deadline included); nothing of ours is left in progress.
    Failed,
    /// Failed, and the abort failed too: the upload may still block the asset.
    AbortFailed,
}

impl UploadOutcome {
    /// Every outcome, for series that exist before the first session.
    pub const ALL: [UploadOutcome; 6] = [
        UploadOutcome::Uploaded,
        UploadOutcome::Unchanged,
        UploadOutcome::Blocked,
        UploadOutcome::Failed,
        UploadOutcome::Cancelled,
        UploadOutcome::AbortFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadOutcome::Uploaded => "uploaded",
            UploadOutcome::Unchanged => "unchanged",
            UploadOutcome::Blocked => "blocked",
            UploadOutcome::Cancelled => "cancelled",
            UploadOutcome::Failed => "failed",
            UploadOutcome::AbortFailed => "abort_failed",
        }
    }
}

/// One upload session ended; `took` is its duration when it sent the file and completed.
pub fn upload_finished(job: &str, outcome: UploadOutcome, took: Option<Duration>) {
    counter!(UPLOADS, JOB => job.to_owned(), "outcome" => outcome.as_str()).increment(1);
    if let Some(took) = took {
        histogram!(UPLOAD_DURATION, JOB => job.to_owned()).record(took.as_secs_f64());
    }
}

/// The counter of a job's bytes sent to part URLs, to add each chunk as it goes out.
pub fn sent_bytes(job: &str) -> Counter {
    counter!(SENT_BYTES, JOB => job.to_owned())
}

/// Why a run or a part was tried again: the `reason` label of the retry counters. A closed set,
/// so that every series of a job can exist at zero from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The server answered: its error class (`ErrorClass::name`).
    Class(&'static str),
    FileChanged,
    UrlsExpiring,
    Unfreeable,
    UrlsTooShort,
    MaybeInProgress,
    Cancelled,
    LocalInput,
    Other,
}

impl Reason {
    /// The reasons found on our side, not in an answer of the server.
    pub const LOCAL: [Reason; 8] = [
        Self::FileChanged,
        Self::UrlsExpiring,
        Self::Unfreeable,
        Self::UrlsTooShort,
        Self::MaybeInProgress,
        Self::Cancelled,
        Self::LocalInput,
        Self::Other,
    ];

    /// Every value the label takes.
    pub fn all() -> impl Iterator<Item = &'static str> {
        ErrorClass::NAMES
            .iter()
            .copied()
            .chain(Self::LOCAL.iter().map(|r| r.as_str()))
    }

    /// The reason of an upload error: the protocol error class when the server answered, else
    /// what went wrong locally.
    pub fn of(e: &UploadError) -> Self {
        match e {
            UploadError::AfterCreate { cause, .. } => Self::of(cause),
            UploadError::Stac(e) => Self::Class(e.class.name()),
            UploadError::InProgress { .. } => {
                Self::Class(ErrorClass::AlreadyInProgress { upload_id: None }.name())
            }
            UploadError::FileChanged { .. } => Self::FileChanged,
            UploadError::UrlsExpiring { .. } => Self::UrlsExpiring,
            UploadError::Unfreeable { .. } => Self::Unfreeable,
            UploadError::UrlsTooShort { .. } => Self::UrlsTooShort,
            UploadError::MaybeInProgress { .. } => Self::MaybeInProgress,
            UploadError::Cancelled => Self::Cancelled,
            e if e.is_local_input() => Self::LocalInput,
            _ => Self::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Class(name) => name,
            Self::FileChanged => "file_changed",
            Self::UrlsExpiring => "urls_expiring",
            Self::Unfreeable => "unfreeable",
            Self::UrlsTooShort => "urls_too_short",
            Self::MaybeInProgress => "maybe_in_progress",
            Self::Cancelled => "cancelled",
            Self::LocalInput => "local_input",
            Self::Other => "other",
        }
    }
}

/// A failed run is tried again.
pub fn run_retry(job: &str, reason: Reason) {
    counter!(RETRIES, JOB => job.to_owned(), "reason" => reason.as_str()).increment(1);
}

/// A part is sent again inside an upload.
pub fn part_retry(job: &str, reason: Reason) {
    counter!(PART_RETRIES, JOB => job.to_owned(), "reason" => reason.as_str()).increment(1);
}

/// A stale upload that blocked the job's asset was aborted.
pub fn stale_upload_aborted(job: &str) {
    counter!(STALE_ABORTED, JOB => job.to_owned()).increment(1);
}

/// Uploads of the job on record as in flight that no run of this process is sending now.
pub fn uploads_left_in_progress(job: &str, n: usize) {
    gauge!(LEFT_IN_PROGRESS, JOB => job.to_owned()).set(n as f64);
}

/// A reload of the job file on SIGHUP.
pub fn reload(ok: bool) {
    counter!(RELOADS, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// Live members of the cluster.
pub fn cluster_members(n: usize) {
    gauge!(CLUSTER_MEMBERS).set(n as f64);
}

/// The cluster's expected size, from the job file.
pub fn cluster_expected(n: u32) {
    gauge!(CLUSTER_EXPECTED).set(f64::from(n));
}

/// Whether this instance holds a live lease.
pub fn cluster_lease_held(held: bool) {
    gauge!(CLUSTER_LEASE).set(if held { 1.0 } else { 0.0 });
}

/// This instance stopped its work for a lease it could not renew.
pub fn cluster_fenced() {
    counter!(CLUSTER_FENCED).increment(1);
}

/// This instance took over work of lapsed instances.
pub fn cluster_takeover() {
    counter!(CLUSTER_TAKEOVERS).increment(1);
}

/// A claim of `job`'s work, won or lost.
pub fn cluster_claim(job: &str, won: bool) {
    counter!(CLUSTER_CLAIMS, JOB => job.to_owned(), "result" => if won { "won" } else { "lost" })
        .increment(1);
}

/// How late a job's schedule fired.
pub fn schedule_lateness(job: &str, late: Duration) {
    histogram!(LATENESS, JOB => job.to_owned()).record(late.as_secs_f64());
}

/// Counts an upload session of a job as running until dropped, whichever way it ends (a
/// cancelled future included).
#[must_use = "the upload counts as running only while this lives"]
pub struct InProgress(Gauge);

impl std::fmt::Debug for InProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProgress")
    }
}

/// An upload session of `job` starts.
pub fn upload_in_progress(job: &str) -> InProgress {
    let g = gauge!(IN_PROGRESS, JOB => job.to_owned());
    g.increment(1.0);
    InProgress(g)
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// How a notice or ping ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// The receiver answered 2xx.
    Sent,
    /// Every try failed (transport, timeout, or a status other than 2xx).
    Failed,
    /// Never tried: its queue was full, or shutdown's flush time was over.
    Dropped,
}

impl NotifyOutcome {
    const ALL: [NotifyOutcome; 3] = [
        NotifyOutcome::Sent,
        NotifyOutcome::Failed,
        NotifyOutcome::Dropped,
    ];

    fn as_str(self) -> &'static str {
        match self {
            NotifyOutcome::Sent => "sent",
            NotifyOutcome::Failed => "failed",
            NotifyOutcome::Dropped => "dropped",
        }
    }
}

/// The series of a notify target (`0`, `1`, ... or `ping`), at zero, and the lost events'.
pub fn register_notify_target(target: &str) {
    describe_counter!(
        NOTIFICATIONS,
        "Webhook notices and pings, by target (the [[notify]] index or ping) and outcome"
    );
    describe_counter!(
        NOTIFY_LOST,
        "Run starts and ends the notifier missed because it fell behind"
    );
    for outcome in NotifyOutcome::ALL {
        counter!(NOTIFICATIONS, "target" => target.to_owned(), "outcome" => outcome.as_str())
            .increment(0);
    }
    counter!(NOTIFY_LOST).increment(0);
}

/// `n` notices or pings to `target` ended with `outcome`.
pub fn notified(target: &str, outcome: NotifyOutcome, n: u64) {
    counter!(NOTIFICATIONS, "target" => target.to_owned(), "outcome" => outcome.as_str())
        .increment(n);
}

/// The notifier missed `n` run events.
pub fn notify_lost(n: u64) {
    counter!(NOTIFY_LOST).increment(n);
}

/// Checks of an uploaded asset's public `href` that found a problem, by job and reason (every
/// [`stac_client::PublicProblem`]): docs/verify.md.
pub const VERIFY_PUBLIC_FAILURES: &str = "stac_uploadd_verify_public_failures_total";

/// A job that checks its public objects (`verify_public` not `off`): its series at zero.
pub fn register_verify_public(job: &str) {
    describe_counter!(
        VERIFY_PUBLIC_FAILURES,
        "Public checks after an upload that found a problem, by job and reason"
    );
    for problem in stac_client::PublicProblem::ALL {
        counter!(VERIFY_PUBLIC_FAILURES, JOB => job.to_owned(), "reason" => problem.as_str())
            .increment(0);
    }
}

/// A public check of `job` found `problem`.
pub fn verify_public_failed(job: &str, problem: stac_client::PublicProblem) {
    counter!(VERIFY_PUBLIC_FAILURES, JOB => job.to_owned(), "reason" => problem.as_str())
        .increment(1);
}

/// Files that are not what their media type says, published under `validate = "warn"`, by job.
pub const MEDIA_TYPE_WARNINGS: &str = "stac_uploadd_media_type_warnings_total";

/// A job's refusal and media-type series, at zero from its start.
pub fn register_file_checks(job: &str) {
    for reason in FileRefusal::ALL {
        register_file_refusals(job, reason);
    }
    counter!(MEDIA_TYPE_WARNINGS, JOB => job.to_owned()).increment(0);
}

/// A file of `job` published although it is not what its media type says.
pub fn media_type_warning(job: &str) {
    counter!(MEDIA_TYPE_WARNINGS, JOB => job.to_owned()).increment(1);
}

#[cfg(test)]
mod tests {

    use chrono::TimeZone;
    use metrics_exporter_prometheus::PrometheusRecorder;

    use super::*;

    #[test]
    fn every_retry_reason_is_one_of_the_registered_values() {
        let all: Vec<&str> = Reason::all().collect();
        for class in [
            ErrorClass::Retryable,
            ErrorClass::AlreadyInProgress { upload_id: None },
            ErrorClass::NotInProgress,
            ErrorClass::RequestWrong,
            ErrorClass::ServerBroken,
            ErrorClass::Auth,
            ErrorClass::UrlRejected { expired: true },
        ] {
            assert!(
                all.contains(&class.name()),
                "{} not registered",
                class.name()
            );
        }
        for reason in Reason::LOCAL {
            assert!(all.contains(&reason.as_str()), "{reason:?} not registered");
        }
        assert_eq!(Reason::of(&UploadError::Cancelled).as_str(), "cancelled");
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "a reason listed twice: {all:?}");
    }

    fn t(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 15, 8, minute, 0).unwrap()
    }

    fn record(outcome: Outcome, minute: u32) -> RunRecord {
        RunRecord {
            instance: None,
            error_class: None,
            public: Vec::new(),
            job: "radar".into(),
            started: t(minute),
            finished: t(minute),
            outcome,
            asset: "a.zip".into(),
            item: None,
            file: None,
            bytes: 1000,
            attempts: 1,
            upload_id: None,
            error: None,
            assets: Vec::new(),
        }
    }

    /// A job running every five minutes.
    /// The test job: every five minutes.
    const JOB: &str = "radar";
    const INTERVAL: Duration = Duration::from_secs(300);

    /// Renders what `f` recorded; the recorder is `recorder`, kept for further calls.
    fn render(recorder: &PrometheusRecorder, f: impl FnOnce()) -> String {
        metrics::with_local_recorder(recorder, f);
        let handle = recorder.handle();
        handle.run_upkeep();
        handle.render()
    }

    #[track_caller]
    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "{line:?} missing in\n{text}"
            );
        }
    }

    #[test]
    fn every_series_of_a_job_exists_from_its_start_at_its_initial_value() {
        let recorder = recorder().expect("valid buckets");
        // On record: a success at 08:10, then two failures with a shutdown between them.
        let history = [
            record(Outcome::Uploaded, 10),
            record(Outcome::Failed, 15),
            record(Outcome::Cancelled, 20),
            record(Outcome::Blocked, 25),
        ];
        let text = render(&recorder, || {
            describe();
            register_job(JOB, INTERVAL, Some(&history), t(30));
        });
        let mut expected = vec![
            r#"stac_uploadd_consecutive_failures{job_name="radar"} 2"#.to_owned(),
            format!(
                r#"stac_uploadd_last_success_timestamp_seconds{{job_name="radar"}} {}"#,
                t(10).timestamp()
            ),
            format!(
                r#"stac_uploadd_job_started_timestamp_seconds{{job_name="radar"}} {}"#,
                t(30).timestamp()
            ),
            r#"stac_uploadd_job_interval_seconds{job_name="radar"} 300"#.to_owned(),
            r#"stac_uploadd_uploads_in_progress{job_name="radar"} 0"#.to_owned(),
            r#"stac_uploadd_uploads_left_in_progress{job_name="radar"} 0"#.to_owned(),
            r#"stac_uploadd_sent_bytes_total{job_name="radar"} 0"#.to_owned(),
            r#"stac_uploadd_stale_uploads_aborted_total{job_name="radar"} 0"#.to_owned(),
            r#"stac_uploadd_trigger_recoveries_total{job_name="radar"} 0"#.to_owned(),
            r#"stac_uploadd_job_task_failures_total{job_name="radar"} 0"#.to_owned(),
            r#"stac_uploadd_upload_duration_seconds_count{job_name="radar"} 0"#.to_owned(),
            r#"stac_uploadd_upload_duration_seconds_bucket{job_name="radar",le="7200"} 0"#
                .to_owned(),
            r#"stac_uploadd_schedule_lateness_seconds_count{job_name="radar"} 0"#.to_owned(),
            r#"stac_uploadd_schedule_lateness_seconds_bucket{job_name="radar",le="0.001"} 0"#
                .to_owned(),
            r#"stac_uploadd_config_reloads_total{result="ok"} 0"#.to_owned(),
            r#"stac_uploadd_config_reloads_total{result="failed"} 0"#.to_owned(),
            format!(
                r#"stac_uploadd_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            ),
            "# HELP stac_uploadd_runs_total Finished runs, by job and outcome".to_owned(),
            "# TYPE stac_uploadd_consecutive_failures gauge".to_owned(),
        ];
        for o in Outcome::ALL {
            expected.push(format!(
                r#"stac_uploadd_runs_total{{job_name="radar",outcome="{}"}} 0"#,
                o.as_str()
            ));
        }
        for o in UploadOutcome::ALL {
            expected.push(format!(
                r#"stac_uploadd_uploads_total{{job_name="radar",outcome="{}"}} 0"#,
                o.as_str()
            ));
        }
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_lines(&text, &expected);
        assert!(!text.contains("{job=") && !text.contains(",job="), "{text}");

        // Nothing on record: no failures, no success.
        let fresh = super::recorder().expect("valid buckets");
        let text = render(&fresh, || register_job(JOB, INTERVAL, Some(&[]), t(30)));
        assert_lines(
            &text,
            &[
                r#"stac_uploadd_consecutive_failures{job_name="radar"} 0"#,
                r#"stac_uploadd_last_success_timestamp_seconds{job_name="radar"} 0"#,
            ],
        );
    }

    #[test]
    fn runs_move_the_failure_streak_and_a_reload_resets_nothing() {
        let recorder = recorder().expect("valid buckets");
        let text = render(&recorder, || {
            register_job(JOB, INTERVAL, Some(&[]), t(0));
            for (o, m) in [
                (Outcome::Failed, 5),
                (Outcome::Unfreeable, 10),
                (Outcome::Cancelled, 15),
                (Outcome::AbortedAtStart, 16),
                (Outcome::Blocked, 20),
            ] {
                run_finished(&record(o, m));
            }
        });
        assert_lines(
            &text,
            &[
                r#"stac_uploadd_consecutive_failures{job_name="radar"} 3"#,
                r#"stac_uploadd_last_success_timestamp_seconds{job_name="radar"} 0"#,
                r#"stac_uploadd_runs_total{job_name="radar",outcome="cancelled"} 1"#,
                r#"stac_uploadd_sent_bytes_total{job_name="radar"} 0"#,
            ],
        );
        let text = render(&recorder, || {
            run_finished(&record(Outcome::Unchanged, 25));
            sent_bytes("radar").increment(5);
            sent_bytes("radar").increment(7);
            upload_finished(
                "radar",
                UploadOutcome::Uploaded,
                Some(Duration::from_millis(1500)),
            );
            upload_finished("radar", UploadOutcome::Unchanged, None);
            run_retry("radar", Reason::Class("retryable"));
            part_retry("radar", Reason::Class("retryable"));
            stale_upload_aborted("radar");
            schedule_lateness("radar", Duration::from_millis(3));
            reload(false);
            uploads_left_in_progress("radar", 2);
            // A reload registers the job again, as configured now: its counts stay.
            register_job(JOB, INTERVAL, None, t(40));
        });
        assert_lines(
            &text,
            &[
                r#"stac_uploadd_consecutive_failures{job_name="radar"} 0"#,
                &format!(
                    r#"stac_uploadd_last_success_timestamp_seconds{{job_name="radar"}} {}"#,
                    t(25).timestamp()
                ),
                &format!(
                    r#"stac_uploadd_job_started_timestamp_seconds{{job_name="radar"}} {}"#,
                    t(40).timestamp()
                ),
                r#"stac_uploadd_runs_total{job_name="radar",outcome="failed"} 1"#,
                r#"stac_uploadd_runs_total{job_name="radar",outcome="unchanged"} 1"#,
                r#"stac_uploadd_sent_bytes_total{job_name="radar"} 12"#,
                r#"stac_uploadd_uploads_total{job_name="radar",outcome="uploaded"} 1"#,
                r#"stac_uploadd_uploads_total{job_name="radar",outcome="unchanged"} 1"#,
                r#"stac_uploadd_upload_duration_seconds_bucket{job_name="radar",le="2.5"} 1"#,
                r#"stac_uploadd_upload_duration_seconds_bucket{job_name="radar",le="1"} 0"#,
                r#"stac_uploadd_upload_duration_seconds_count{job_name="radar"} 1"#,
                r#"stac_uploadd_retries_total{job_name="radar",reason="retryable"} 1"#,
                r#"stac_uploadd_part_retries_total{job_name="radar",reason="retryable"} 1"#,
                r#"stac_uploadd_stale_uploads_aborted_total{job_name="radar"} 1"#,
                r#"stac_uploadd_schedule_lateness_seconds_bucket{job_name="radar",le="0.005"} 1"#,
                r#"stac_uploadd_config_reloads_total{result="failed"} 1"#,
                r#"stac_uploadd_uploads_left_in_progress{job_name="radar"} 2"#,
            ],
        );
        let busy = r#"stac_uploadd_uploads_in_progress{job_name="radar"}"#;
        let session = metrics::with_local_recorder(&recorder, || upload_in_progress("radar"));
        assert_lines(&render(&recorder, || {}), &[&format!("{busy} 1")]);
        drop(session);
        assert_lines(&render(&recorder, || {}), &[&format!("{busy} 0")]);
    }

    #[test]
    fn the_trigger_state_exists_from_the_start_and_counts_recoveries() {
        let recorder = recorder().expect("valid buckets");
        let up = r#"stac_uploadd_trigger_up{job_name="in"} 1"#;
        let down = r#"stac_uploadd_trigger_up{job_name="in"} 0"#;
        let recoveries =
            |n| format!(r#"stac_uploadd_trigger_recoveries_total{{job_name="in"}} {n}"#);
        let text = render(&recorder, || trigger_state("in", true, false));
        assert_lines(&text, &[up, &recoveries(0)]);
        let text = render(&recorder, || trigger_state("in", false, false));
        assert_lines(&text, &[down, &recoveries(0)]);
        let text = render(&recorder, || trigger_state("in", true, true));
        assert_lines(&text, &[up, &recoveries(1)]);
        let text = render(&recorder, || trigger_up("in", false));
        assert_lines(&text, &[down, &recoveries(1)]);
    }
}
