//! Policy tests under paused tokio time, against a scripted uploader: no real waiting, exact
//! spacing.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{IdTemplate, JobSpec, PolicyKind, PolicySpec};
use crate::state::{InFlight, Outcome, RunRecord, StateStore};
use crate::trigger::TriggerSpec;
use crate::trigger::{Clock, Schedule, WatchSpec};
use stac_client::{
    AssetTarget, ErrorClass, PartNumber, PresignedUrl, StacError, Step, Upload, UploadId,
    UploadStatus,
};
use stac_upload::{
    AbortOutcome, NewObjects, UploadError, UploadObserver, UploadOptions, UploadReport,
};

/// What the scripted uploader does on its next call.
#[derive(Debug, Clone)]
enum Act {
    Ok,
    Gateway,
    Broken,
    /// Blocked by an upload created this long before "now", optionally with URLs expiring at
    /// `created + url_life`.
    Blocked {
        id: &'static str,
        age: chrono::Duration,
        url_life: Option<chrono::Duration>,
    },
    /// Blocked by a one-minute-old upload with this checksum (URLs valid for an hour).
    BlockedWithChecksum {
        id: &'static str,
        checksum: &'static str,
    },
    /// Take this long, then succeed.
    Slow(Duration),
    /// Hang until cancelled, then report the upload aborted.
    Hang,
    /// Panic: a bug in the run.
    Panic,
    /// A 429 whose `Retry-After` asks for this many seconds.
    Throttled(u32),
    /// Create this upload (recorded through the observer), then panic.
    PanicAfterCreate(&'static str),
}

struct Script {
    acts: Mutex<VecDeque<Act>>,
    calls: Mutex<Vec<Instant>>,
    /// When each resume was called.
    resumed: Mutex<Vec<Instant>>,
    aborted: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    clock: Clock,
}

impl Script {
    fn new(clock: Clock, acts: impl IntoIterator<Item = Act>) -> Self {
        Self {
            acts: Mutex::new(acts.into_iter().collect()),
            calls: Mutex::new(Vec::new()),
            resumed: Mutex::new(Vec::new()),
            aborted: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            clock,
        }
    }
}

fn stac_error(status: u16, class: ErrorClass) -> UploadError {
    UploadError::Stac(StacError {
        step: Step::CreateUpload,
        method: "POST",
        url: "http://127.0.0.1/uploads".into(),
        status: Some(reqwest::StatusCode::from_u16(status).unwrap()),
        description: "scripted".into(),
        class,
        retry_after: None,
        source: None,
    })
}

fn report() -> UploadReport {
    UploadReport {
        upload_id: Some(UploadId("new".into())),
        unchanged: false,
        multihash: stac_client::Multihash::from_sha256(&[0; 32]),
        bytes: 1,
        parts: 1,
        part_size: 1,
        part_retries: 0,
        adopted: false,
        digest_time: Duration::ZERO,
        send_time: Duration::ZERO,
        total_time: Duration::ZERO,
        href: None,
        replaced: false,
        content_encoding: None,
    }
}

impl Uploader for Arc<Script> {
    async fn upload(
        &self,
        target: &AssetTarget,
        _path: &Path,
        _objects: &NewObjects,
        _opts: &UploadOptions,
        observer: Arc<dyn UploadObserver>,
        cancel: &CancellationToken,
    ) -> Result<UploadReport, UploadError> {
        self.calls.lock().unwrap().push(Instant::now());
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let act = self.acts.lock().unwrap().pop_front().unwrap_or(Act::Ok);
        let result = match act {
            Act::Ok => Ok(report()),
            Act::Gateway => Err(stac_error(503, ErrorClass::Retryable)),
            Act::Throttled(secs) => {
                let mut e = stac_error(429, ErrorClass::Retryable);
                if let UploadError::Stac(s) = &mut e {
                    s.retry_after = Some(secs);
                }
                Err(e)
            }
            Act::Broken => Err(stac_error(500, ErrorClass::ServerBroken)),
            Act::Blocked { id, age, url_life } => {
                let created = self.clock.now() - age;
                Err(UploadError::InProgress {
                    target: target.clone(),
                    upload: Box::new(Upload {
                        upload_id: UploadId(id.into()),
                        status: UploadStatus::InProgress,
                        number_parts: Some(1),
                        created: Some(created),
                        completed: None,
                        aborted: None,
                        urls: url_life
                            .map(|l| {
                                vec![PresignedUrl {
                                    url: "http://x/".into(),
                                    part: PartNumber(1),
                                    expires: Some(created + l),
                                }]
                            })
                            .unwrap_or_default(),
                        md5_parts: Vec::new(),
                        content_encoding: None,
                        checksum: None,
                    }),
                })
            }
            Act::BlockedWithChecksum { id, checksum } => {
                let created = self.clock.now() - chrono::Duration::minutes(1);
                Err(UploadError::InProgress {
                    target: target.clone(),
                    upload: Box::new(Upload {
                        upload_id: UploadId(id.into()),
                        status: UploadStatus::InProgress,
                        number_parts: Some(1),
                        created: Some(created),
                        completed: None,
                        aborted: None,
                        urls: vec![PresignedUrl {
                            url: "http://x/".into(),
                            part: PartNumber(1),
                            expires: Some(created + chrono::Duration::hours(1)),
                        }],
                        md5_parts: Vec::new(),
                        content_encoding: None,
                        checksum: Some(checksum.into()),
                    }),
                })
            }
            Act::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(report())
            }
            Act::Panic => panic!("scripted panic in a run"),
            Act::PanicAfterCreate(id) => {
                let upload = Upload {
                    upload_id: UploadId(id.into()),
                    status: UploadStatus::InProgress,
                    number_parts: Some(1),
                    created: Some(self.clock.now()),
                    completed: None,
                    aborted: None,
                    urls: Vec::new(),
                    md5_parts: Vec::new(),
                    content_encoding: None,
                    checksum: None,
                };
                let file = stac_upload::FileSnapshot::of(&std::fs::metadata(".").unwrap());
                observer
                    .record(stac_upload::Durable::Created {
                        upload: &upload,
                        multihash: &stac_client::Multihash::from_sha256(&[0; 32]),
                        part_size: 1,
                        file: &file,
                    })
                    .await
                    .unwrap();
                panic!("scripted panic after the create");
            }
            Act::Hang => {
                cancel.cancelled().await;
                Err(UploadError::AfterCreate {
                    target: target.clone(),
                    upload_id: UploadId("hung".into()),
                    cause: Box::new(UploadError::Cancelled),
                    abort: AbortOutcome::Aborted,
                })
            }
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn abort(
        &self,
        _target: &AssetTarget,
        id: &UploadId,
        _opts: &UploadOptions,
    ) -> AbortOutcome {
        self.aborted.lock().unwrap().push(id.0.clone());
        AbortOutcome::Aborted
    }

    /// Takes the next act's time (`Slow`, `Hang`) and reports the upload resumed.
    async fn resume(
        &self,
        _state: &StateStore,
        rec: &InFlight,
        _opts: &UploadOptions,
        cancel: &CancellationToken,
    ) -> Option<RunRecord> {
        self.resumed.lock().unwrap().push(Instant::now());
        let started = self.clock.now();
        let act = self.acts.lock().unwrap().pop_front();
        let outcome = match act {
            Some(Act::Slow(d)) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => Outcome::Resumed,
                    () = cancel.cancelled() => Outcome::AbortedAtStart,
                }
            }
            Some(Act::Hang) => {
                cancel.cancelled().await;
                Outcome::AbortedAtStart
            }
            _ => Outcome::Resumed,
        };
        Some(RunRecord {
            instance: None,
            error_class: None,
            public: Vec::new(),
            job: rec.job.clone(),
            started,
            finished: self.clock.now(),
            outcome,
            asset: rec.target.asset.clone(),
            item: rec.target.item.clone(),
            file: Some(rec.file.clone()),
            bytes: rec.size,
            attempts: 1,
            upload_id: Some(rec.upload_id.clone()),
            error: None,
            assets: Vec::new(),
        })
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

fn cron_job(schedule: &str, kind: PolicyKind) -> JobSpec {
    JobSpec {
        name: "job".into(),
        collection: "c".into(),
        item: Some(IdTemplate::parse("i").unwrap()),
        asset: IdTemplate::parse("a.zip").unwrap(),
        trigger: TriggerSpec::Cron {
            file: PathBuf::from("/data/a.zip"),
            schedule: Schedule::parse(schedule, "Europe/Zurich").unwrap(),
        },
        policy: PolicySpec {
            kind,
            ..PolicySpec::default()
        },
        upload: UploadOptions::default(),
        jitter: None,
        catch_up: false,
        bandwidth_limit: None,
        timezone: chrono_tz::Europe::Zurich,
        item_metadata: None,
        asset_metadata: None,
        alias: None,
        keep: None,
        assets: Vec::new(),
        concurrency: 1,
        ping_url: None,
        verify_public: crate::config::VerifyPublic::Warn,
        name_pattern: None,

        validate: Default::default(),
    }
}

struct Fixture {
    job: Job<Arc<Script>>,
    script: Arc<Script>,
    _dir: tempfile::TempDir,
}

async fn fixture(spec: JobSpec, acts: impl IntoIterator<Item = Act>) -> Fixture {
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(clock, acts));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let shared = Arc::new(Shared::new(script.clone(), state, clock));
    let job = Job {
        spec,
        shared,
        pending: Arc::new(Pending::default()),
        abort_runs: CancellationToken::new(),
    };
    Fixture {
        job,
        script,
        _dir: dir,
    }
}

fn gaps(calls: &[Instant]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn retry_policy_retries_three_times_with_growing_jittered_waits() {
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Retry),
        [Act::Gateway, Act::Gateway, Act::Gateway, Act::Gateway],
    )
    .await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!(rec.outcome, Outcome::Failed);
    assert_eq!(rec.attempts, 4, "one attempt and three retries");
    let g = gaps(&f.script.calls.lock().unwrap());
    assert_eq!(g.len(), 3);
    // Exponential from 1 s, doubling, jitter adds up to one more delay: [1,2), [2,4), [4,8).
    for (i, gap) in g.iter().enumerate() {
        let base = Duration::from_secs(1 << i);
        assert!(*gap >= base && *gap < base * 2, "wait {i} was {gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_retried_after_a_429_waits_what_retry_after_asked_and_gives_up_past_the_cap() {
    // Waits from 1 s: the server's 30 s is longer, and is what the retry waits.
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Retry),
        [Act::Throttled(30), Act::Ok],
    )
    .await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!((rec.outcome, rec.attempts), (Outcome::Uploaded, 2));
    let g = gaps(&f.script.calls.lock().unwrap());
    assert!(g[0] >= Duration::from_secs(30), "waited {:?}", g[0]);

    // Past retry_max_delay (10 min by default) the run is not retried, and says why.
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Retry),
        [Act::Throttled(3_600), Act::Ok],
    )
    .await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!((rec.outcome, rec.attempts), (Outcome::Failed, 1));
    let error = rec.error.unwrap();
    assert!(
        error.contains("asked to retry after 1h") && error.contains("retry_max_delay"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_ends_at_the_first_success() {
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Retry),
        [Act::Gateway, Act::Ok],
    )
    .await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!((rec.outcome, rec.attempts), (Outcome::Uploaded, 2));
    assert_eq!(
        f.job.shared.state.history().await.unwrap()["job"].len(),
        1,
        "one run, one record"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_policy_gives_a_failed_run_up() {
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Cancel),
        [Act::Gateway, Act::Ok],
    )
    .await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!(
        (rec.outcome, rec.attempts),
        (Outcome::Failed, 1),
        "given up on an error: a failure, whatever the policy"
    );
    assert_eq!(f.script.calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_errors_and_bad_requests_are_not_retried() {
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Retry),
        [Act::Broken, Act::Ok],
    )
    .await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!((rec.outcome, rec.attempts), (Outcome::Failed, 1));
    assert!(rec.error.unwrap().contains("HTTP 500"));
}

#[tokio::test(start_paused = true)]
async fn retries_stop_before_the_next_scheduled_run() {
    // Every 10 minutes, waits from 4 minutes: the second retry would run into the next run.
    let mut spec = cron_job("*/10 * * * *", PolicyKind::Retry);
    spec.policy.retry_min_delay = Duration::from_secs(240);
    let f = fixture(spec, vec![Act::Gateway; 4]).await;
    let start = Instant::now();
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!(rec.outcome, Outcome::Failed);
    assert!(rec.attempts < 4, "attempts {}", rec.attempts);
    assert!(
        start.elapsed() < Duration::from_secs(600),
        "retries ran into the next run: {:?}",
        start.elapsed()
    );
}

#[test]
fn auto_policy_follows_the_schedule() {
    let now = t0();
    assert_eq!(
        effective_policy(&cron_job("*/5 * * * *", PolicyKind::Auto), now),
        PolicyKind::Cancel
    );
    assert_eq!(
        effective_policy(&cron_job("0 * * * *", PolicyKind::Auto), now),
        PolicyKind::Retry,
        "hourly = threshold"
    );
    assert_eq!(
        effective_policy(&cron_job("30 2 * * *", PolicyKind::Auto), now),
        PolicyKind::Retry
    );
    assert_eq!(
        effective_policy(&cron_job("*/5 * * * *", PolicyKind::Retry), now),
        PolicyKind::Retry,
        "explicit wins"
    );
    let mut watch = cron_job("0 3 * * *", PolicyKind::Auto);
    watch.trigger = TriggerSpec::Watch(WatchSpec {
        dir: "/tmp".into(),
        pattern: globset::Glob::new("*").unwrap().compile_matcher(),
        recursive: false,
        ignore: globset::GlobSet::empty(),
        settle: Duration::from_secs(1),
        poll: None,
        bundle: Default::default(),
    });
    assert_eq!(effective_policy(&watch, now), PolicyKind::Retry);
}

#[tokio::test(start_paused = true)]
async fn a_stale_foreign_upload_is_aborted_and_the_run_goes_on() {
    let blocked = Act::Blocked {
        id: "old",
        age: chrono::Duration::hours(2),
        url_life: None,
    };
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Cancel),
        [blocked, Act::Ok],
    )
    .await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!(rec.outcome, Outcome::Uploaded);
    assert_eq!(*f.script.aborted.lock().unwrap(), ["old"]);
}

#[tokio::test(start_paused = true)]
async fn a_recent_foreign_upload_is_left_alone() {
    let blocked = || Act::Blocked {
        id: "busy",
        age: chrono::Duration::minutes(10),
        url_life: Some(chrono::Duration::hours(3)),
    };
    // Retry policy: backs off while someone else is busy, never aborts their upload.
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Retry),
        [blocked(), blocked(), blocked(), blocked()],
    )
    .await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!((rec.outcome, rec.attempts), (Outcome::Blocked, 4));
    assert!(f.script.aborted.lock().unwrap().is_empty());
    // Cancel policy: gives this run up at once.
    let f = fixture(cron_job("*/5 * * * *", PolicyKind::Auto), [blocked()]).await;
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!((rec.outcome, rec.attempts), (Outcome::Blocked, 1));
    assert!(f.script.aborted.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn staleness_is_capped_by_the_url_lifetime_and_knows_our_own_uploads() {
    // 40 minutes old is not stale by age (1 h), but its URLs lived 30 minutes: nobody can finish it.
    let expired = Act::Blocked {
        id: "dead",
        age: chrono::Duration::minutes(40),
        url_life: Some(chrono::Duration::minutes(30)),
    };
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Cancel),
        [expired, Act::Ok],
    )
    .await;
    assert_eq!(
        f.job.run(Work::Scheduled(t0())).await.outcome,
        Outcome::Uploaded
    );
    assert_eq!(*f.script.aborted.lock().unwrap(), ["dead"]);

    // One minute old, but ours and not running: left over by a crashed run of this daemon.
    let ours = Act::Blocked {
        id: "mine",
        age: chrono::Duration::minutes(1),
        url_life: Some(chrono::Duration::hours(1)),
    };
    let f = fixture(cron_job("0 3 * * *", PolicyKind::Cancel), [ours, Act::Ok]).await;
    f.job
        .shared
        .state
        .add_inflight(inflight("mine"))
        .await
        .unwrap();
    assert_eq!(
        f.job.run(Work::Scheduled(t0())).await.outcome,
        Outcome::Uploaded
    );
    assert_eq!(*f.script.aborted.lock().unwrap(), ["mine"]);
    assert!(
        f.job.shared.state.inflight().await.unwrap().is_empty(),
        "the aborted upload is forgotten"
    );

    // Ours and still running (another attempt of this process): not stale.
    let running = Act::Blocked {
        id: "live",
        age: chrono::Duration::minutes(1),
        url_life: Some(chrono::Duration::hours(1)),
    };
    let f = fixture(cron_job("0 3 * * *", PolicyKind::Cancel), [running]).await;
    f.job
        .shared
        .state
        .add_inflight(inflight("live"))
        .await
        .unwrap();
    f.job
        .shared
        .running
        .lock()
        .unwrap()
        .insert(UploadId("live".into()));
    assert_eq!(
        f.job.run(Work::Scheduled(t0())).await.outcome,
        Outcome::Blocked
    );
    assert!(f.script.aborted.lock().unwrap().is_empty());
}

fn inflight(id: &str) -> InFlight {
    InFlight {
        upload_id: UploadId(id.into()),
        job: "job".into(),
        target: AssetTarget::item_asset("c", "i", "a.zip"),
        file: "/data/a.zip".into(),
        size: 1,
        mtime: (0, 0),
        ino: 0,
        multihash: String::new(),
        part_size: 1,
        created: t0(),
        urls_expire: None,
        pid: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_deadline_is_aborted() {
    let mut spec = cron_job("0 3 * * *", PolicyKind::Cancel);
    spec.policy.run_timeout = Duration::from_secs(300);
    let f = fixture(spec, [Act::Hang]).await;
    let start = Instant::now();
    let rec = f.job.run(Work::Scheduled(t0())).await;
    assert_eq!(start.elapsed(), Duration::from_secs(300));
    assert_eq!(rec.outcome, Outcome::Failed, "the deadline is no shutdown");
    let error = rec.error.unwrap();
    assert!(
        error.starts_with("the run deadline of 5m was reached: ")
            && error.contains("cancelled; the upload was aborted"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_wait_cut_by_shutdown_is_a_cancelled_run() {
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Retry),
        [Act::Gateway, Act::Ok],
    )
    .await;
    let abort = f.job.abort_runs.clone();
    let run = f.job.run(Work::Scheduled(t0()));
    tokio::pin!(run);
    // The first attempt fails at once; the job waits at least a second before the next.
    tokio::select! {
        _ = &mut run => panic!("the run did not wait to retry"),
        () = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
    abort.cancel();
    let rec = run.await;
    assert_eq!((rec.outcome, rec.attempts), (Outcome::Cancelled, 1));
    assert_eq!(f.script.calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn overlapping_fires_coalesce_into_one_follow_up_run() {
    // Fires every second; each run takes 10 s. Over 35 s: never two runs at once, and the fires
    // during a run make one follow-up run, not a queue of thirty.
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(
        clock,
        std::iter::repeat_n(Act::Slow(Duration::from_secs(10)), 100),
    ));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let shared = Arc::new(Shared::new(script.clone(), state, clock));
    let mut spec = cron_job("* * * * * *", PolicyKind::Cancel);
    spec.policy.run_timeout = Duration::from_secs(3600);
    let sup = Supervisor::start(shared, vec![spec]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(35_500)).await;
    let runs = script.calls.lock().unwrap().len();
    let coalesced = sup.jobs()[0].pending.coalesced();
    sup.shutdown(Duration::from_secs(60)).await;
    assert_eq!(
        script.max_in_flight.load(Ordering::SeqCst),
        1,
        "two runs of one job overlapped"
    );
    assert_eq!(runs, 4, "runs start at 1, 11, 21, 31 s");
    assert!(
        coalesced >= 25,
        "fires during runs were coalesced: {coalesced}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_grace_period_then_aborts() {
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(clock, [Act::Hang]));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let shared = Arc::new(Shared::new(script.clone(), state.clone(), clock));
    let sup = Supervisor::start(shared, vec![cron_job("* * * * * *", PolicyKind::Cancel)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(script.calls.lock().unwrap().len(), 1);
    let start = Instant::now();
    sup.shutdown(Duration::from_secs(30)).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(30),
        "waited the grace period, then aborted"
    );
    assert_eq!(
        state.history().await.unwrap()["job"][0].outcome,
        Outcome::Cancelled
    );
}

// Schedules: `every`, jitter, catch-up. Fire times are read off when the scripted uploader is
// called: under paused time a run starts at the very instant its fire is taken.

fn every_job(interval: Duration) -> JobSpec {
    let mut spec = cron_job("0 3 * * *", PolicyKind::Cancel);
    spec.trigger = TriggerSpec::Every {
        file: PathBuf::from("/data/a.zip"),
        interval,
    };
    spec
}

/// A supervisor of one job, started at wall time `wall` over a state store holding `history`.
struct Started {
    sup: Supervisor<Arc<Script>>,
    script: Arc<Script>,
    at: Instant,
    _dir: tempfile::TempDir,
}

async fn start_at(
    wall: DateTime<Utc>,
    spec: JobSpec,
    history: &[RunRecord],
    acts: impl IntoIterator<Item = Act>,
) -> Started {
    let clock = Clock::anchored(wall);
    let script = Arc::new(Script::new(clock, acts));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    for r in history {
        state.record_run(r.clone()).await.unwrap();
    }
    let shared = Arc::new(Shared::new(script.clone(), state, clock));
    Started {
        sup: Supervisor::start(shared, vec![spec]).await.unwrap(),
        script,
        at: Instant::now(),
        _dir: dir,
    }
}

impl Started {
    /// When each run started, from the supervisor's start.
    fn offsets(&self) -> Vec<Duration> {
        self.script
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| *c - self.at)
            .collect()
    }

    /// Runs for `d`, then stops; the runs' start offsets.
    async fn offsets_after(self, d: Duration) -> Vec<Duration> {
        tokio::time::sleep(d).await;
        let offsets = self.offsets();
        self.sup.shutdown(Duration::from_secs(5)).await;
        offsets
    }
}

fn ran(started: DateTime<Utc>, outcome: Outcome) -> RunRecord {
    RunRecord {
        instance: None,
        error_class: None,
        public: Vec::new(),
        job: "job".into(),
        started,
        finished: started,
        outcome,
        asset: "a.zip".into(),
        item: None,
        file: None,
        bytes: 0,
        attempts: 1,
        upload_id: None,
        error: None,
        assets: Vec::new(),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn an_every_job_fires_one_interval_after_start_then_on_the_grid() {
    // Runs of 7 s: a loop that counted the interval from the end of a run would drift by 7 s a run.
    let s = start_at(
        t0(),
        every_job(secs(300)),
        &[],
        vec![Act::Slow(secs(7)); 20],
    )
    .await;
    let offsets = s.offsets_after(secs(10 * 300 + 1)).await;
    let grid: Vec<_> = (1..=10).map(|i| secs(300 * i)).collect();
    assert_eq!(offsets, grid);
}

#[tokio::test(start_paused = true)]
async fn an_every_job_skips_the_times_a_stall_swallowed_instead_of_bursting() {
    let s = start_at(t0(), every_job(secs(300)), &[], []).await;
    tokio::time::sleep(secs(301)).await;
    // The runtime stalls (a suspended machine): 600, 900 and 1200 s pass unserved.
    tokio::time::advance(secs(1000)).await;
    let offsets = s.offsets_after(secs(300)).await;
    assert_eq!(
        offsets,
        [secs(300), secs(1301), secs(1500)],
        "one late fire for the stall, then back on the grid"
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_each_fire_within_its_window_and_spreads_them() {
    let mut spec = every_job(secs(60));
    spec.jitter = Some(secs(30));
    let s = start_at(t0(), spec, &[], []).await;
    let script = s.script.clone();
    let offsets = s.offsets_after(secs(1_000 * 60 + 30)).await;
    assert_eq!(offsets.len(), 1_000, "one run per fire");
    let mut buckets = [0u32; 10];
    for (i, at) in offsets.iter().enumerate() {
        let nominal = secs(60 * (i as u64 + 1));
        let delay = at.checked_sub(nominal).expect("a fire came early");
        assert!(delay < secs(30), "fire {i} delayed {delay:?}");
        buckets[(delay.as_secs() / 3) as usize] += 1;
    }
    let covered = buckets.iter().filter(|&&n| n > 0).count();
    assert!(covered >= 8, "delays bunched up: {buckets:?}");
    // Uniform: about 100 a bucket; 40 is six standard deviations off.
    assert!(buckets.iter().all(|&n| n >= 40), "uneven: {buckets:?}");
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn jitter_never_lets_two_runs_of_a_job_overlap() {
    // Runs of 50 s every 60 s with up to 30 s of jitter: fires often come while a run is going.
    let mut spec = every_job(secs(60));
    spec.jitter = Some(secs(30));
    spec.policy.run_timeout = secs(3600);
    let s = start_at(t0(), spec, &[], vec![Act::Slow(secs(50)); 1_000]).await;
    let script = s.script.clone();
    let offsets = s.offsets_after(secs(300 * 60)).await;
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 1);
    assert!(offsets.len() >= 250, "runs: {}", offsets.len());
    for w in offsets.windows(2) {
        assert!(
            w[1] - w[0] >= secs(50),
            "a run started during another: {w:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_fire_keeps_its_nominal_time_whatever_its_jitter_and_a_catch_up_the_missed_one() {
    // The catch-up run stands for the latest run missed, and carries its time.
    let missed = t0() - chrono::Duration::seconds(45);
    let clock = Clock::anchored(t0());
    let pending = Arc::new(Pending::default());
    let stop = CancellationToken::new();
    let trigger = schedule::Trigger {
        job: "job".into(),
        cadence: schedule::Cadence::Every {
            origin: t0(),
            step: chrono::Duration::seconds(60),
        },
        jitter: Some(secs(30)),
        catch_up: Some(schedule::Missed {
            last_run: None,
            at: missed,
        }),
    };
    let start = Instant::now();
    let task = tokio::spawn(schedule::fire_loop(
        trigger,
        t0(),
        pending.clone(),
        clock,
        stop.clone(),
    ));
    tokio::time::sleep_until(start + secs(30)).await;
    assert_eq!(pending.take(), Some(Work::Scheduled(missed)));
    for i in 1..=20 {
        tokio::time::sleep_until(start + secs(60 * i + 30)).await;
        let nominal = t0() + chrono::Duration::seconds(60 * i as i64);
        assert_eq!(pending.take(), Some(Work::Scheduled(nominal)));
    }
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_cuts_a_jitter_delay_short() {
    let mut spec = every_job(secs(7200));
    spec.jitter = Some(secs(3600));
    let s = start_at(t0(), spec, &[], []).await;
    // Just past the first fire time: (almost surely) in its jitter delay.
    tokio::time::sleep(secs(7200) + Duration::from_millis(1)).await;
    let script = s.script.clone();
    let stopping = Instant::now();
    s.sup.shutdown(secs(30)).await;
    assert_eq!(
        stopping.elapsed(),
        Duration::ZERO,
        "shutdown waited for the jitter"
    );
    tokio::time::sleep(secs(3 * 3600)).await;
    assert!(
        script.calls.lock().unwrap().is_empty(),
        "a run started after shutdown"
    );
}

/// A daily 02:30 Europe/Zurich job: t0 is 11:00 CET, today's 02:30 was 01:30 UTC, the next is
/// tomorrow 01:30 UTC, 15 h 30 after t0.
fn daily(catch_up: bool) -> JobSpec {
    let mut spec = cron_job("30 2 * * *", PolicyKind::Cancel);
    spec.catch_up = catch_up;
    spec
}

const NEXT_0230: Duration = Duration::from_secs(15 * 3600 + 1800);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn daily_runs(catch_up: bool, history: &[RunRecord]) -> Vec<Duration> {
    start_at(t0(), daily(catch_up), history, [])
        .await
        .offsets_after(secs(16 * 3600))
        .await
}

#[tokio::test(start_paused = true)]
async fn a_job_that_missed_two_days_catches_up_once_then_keeps_its_schedule() {
    let two_days_ago = [ran(utc("2026-02-28T01:30:00Z"), Outcome::Uploaded)];
    assert_eq!(
        daily_runs(true, &two_days_ago).await,
        [Duration::ZERO, NEXT_0230]
    );
    assert_eq!(
        daily_runs(false, &two_days_ago).await,
        [NEXT_0230],
        "catch_up = false"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_that_ran_since_its_last_fire_time_does_not_catch_up() {
    let history = [
        ran(utc("2026-02-28T01:30:00Z"), Outcome::Uploaded),
        ran(utc("2026-03-02T01:30:04Z"), Outcome::Uploaded),
    ];
    assert_eq!(daily_runs(true, &history).await, [NEXT_0230]);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_never_ran_catches_up_once() {
    assert_eq!(daily_runs(true, &[]).await, [Duration::ZERO, NEXT_0230]);
}

#[tokio::test(start_paused = true)]
async fn an_upload_aborted_at_start_up_is_not_a_run_that_was_caught_up() {
    let history = [
        ran(utc("2026-02-28T01:30:00Z"), Outcome::Uploaded),
        ran(t0(), Outcome::AbortedAtStart),
    ];
    assert_eq!(
        daily_runs(true, &history).await,
        [Duration::ZERO, NEXT_0230]
    );
}

#[tokio::test(start_paused = true)]
async fn a_catch_up_is_jittered_like_any_fire() {
    let mut spec = daily(true);
    spec.jitter = Some(secs(30));
    let offsets = start_at(t0(), spec, &[], [])
        .await
        .offsets_after(secs(16 * 3600))
        .await;
    assert_eq!(offsets.len(), 2, "{offsets:?}");
    assert!(offsets[0] < secs(30), "{offsets:?}");
    assert!(offsets[1] >= NEXT_0230 && offsets[1] < NEXT_0230 + secs(30));
}

#[tokio::test(start_paused = true)]
async fn an_every_job_catches_up_when_an_interval_passed_since_its_last_run() {
    let five_min = secs(300);
    let ago = |s: i64| [ran(t0() - chrono::Duration::seconds(s), Outcome::Uploaded)];
    let runs = |history: [RunRecord; 1]| async move {
        let mut spec = every_job(five_min);
        spec.catch_up = true;
        start_at(t0(), spec, &history, [])
            .await
            .offsets_after(secs(601))
            .await
    };
    assert_eq!(
        runs(ago(600)).await,
        [Duration::ZERO, secs(300), secs(600)],
        "the grid starts at the catch-up"
    );
    assert_eq!(runs(ago(120)).await, [secs(300), secs(600)]);
}

#[tokio::test(start_paused = true)]
async fn an_upload_from_our_create_whose_answer_was_lost_is_ours_to_abort() {
    // Found by the fault soak: the create took effect, its answer was lost, and the id never
    // reached the store. The multihash did, before the create was sent.
    let checksum = "1220aaaa";
    let blocked = Act::BlockedWithChecksum {
        id: "lost",
        checksum,
    };
    let f = fixture(
        cron_job("0 3 * * *", PolicyKind::Cancel),
        [blocked, Act::Ok],
    )
    .await;
    let target = AssetTarget::item_asset("c", "i", "a.zip");
    f.job
        .shared
        .state
        .add_creating(crate::state::Creating {
            target: target.clone(),
            multihash: checksum.into(),
            at: t0(),
        })
        .await
        .unwrap();
    assert_eq!(
        f.job.run(Work::Scheduled(t0())).await.outcome,
        Outcome::Uploaded
    );
    assert_eq!(*f.script.aborted.lock().unwrap(), ["lost"]);
    assert!(
        !f.job
            .shared
            .state
            .created_unseen(&target, checksum)
            .await
            .unwrap(),
        "the marker is gone with the upload"
    );

    // Without the marker, the same one-minute-old upload is someone else's: left alone.
    let blocked = Act::BlockedWithChecksum {
        id: "theirs",
        checksum,
    };
    let f = fixture(cron_job("0 3 * * *", PolicyKind::Cancel), [blocked]).await;
    assert_eq!(
        f.job.run(Work::Scheduled(t0())).await.outcome,
        Outcome::Blocked
    );
    assert!(f.script.aborted.lock().unwrap().is_empty());
}

/// Twelve jobs fire at the same second, each run taking 10 s: no more than the limit of upload
/// sessions run at once, and every job gets its run.
#[tokio::test(start_paused = true)]
async fn the_upload_limit_holds_over_every_job() {
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(
        clock,
        std::iter::repeat_n(Act::Slow(Duration::from_secs(10)), 12),
    ));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let shared = Arc::new(Shared::new(script.clone(), state, clock));
    shared.set_upload_limit(3);
    let specs = (0..12)
        .map(|i| {
            let mut spec = cron_job("0 * * * * *", PolicyKind::Cancel);
            spec.name = format!("job-{i}");
            spec.policy.run_timeout = Duration::from_secs(3600);
            spec
        })
        .collect();
    let sup = Supervisor::start(shared, specs).await.unwrap();
    // The first minute mark, then 4 rounds of 3 runs of 10 s: 40 s.
    tokio::time::sleep(Duration::from_secs(60 + 45)).await;
    let runs = script.calls.lock().unwrap().len();
    sup.shutdown(Duration::from_secs(60)).await;
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 3);
    assert_eq!(runs, 12, "every job ran once");
}

/// Issue 17: a job's runner that panicked vanished without a word, and the job never ran again
/// while `/healthz` and `/readyz` said all was well. The supervisor notices: the job shows down
/// while it waits to restart the runner, then runs again; later fires are served.
#[tokio::test(start_paused = true)]
async fn a_runner_that_panics_is_noticed_shown_down_and_restarted() {
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(clock, [Act::Panic]));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    // A board of its own: the process-wide one is what other tests' health checks read.
    let board = Arc::new(crate::observe::health::JobTasks::default());
    let shared = Arc::new(Shared::new(script.clone(), state, clock).with_job_tasks(board.clone()));
    let health =
        crate::observe::health::Health::new(Duration::from_secs(30)).with_job_tasks(board.clone());
    health.set_phase(crate::observe::health::Phase::Ready);
    let sup = Supervisor::start(shared, vec![cron_job("* * * * * *", PolicyKind::Cancel)])
        .await
        .unwrap();
    // The first fire (1 s) panics in the run; the runner is started again a second later.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(script.calls.lock().unwrap().len(), 1);
    assert_eq!(board.down_jobs(), ["job"], "shown down while it waits");
    assert!(!health.ready(), "/readyz fails while a job is not running");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(board.down_jobs().is_empty(), "running again");
    assert!(health.ready());
    let runs = script.calls.lock().unwrap().len();
    assert!(
        runs >= 3,
        "the job runs again after its restart: {runs} runs"
    );
    sup.shutdown(Duration::from_secs(5)).await;
}

/// Issue 17: a reload that changed a job dropped the fire that came during its run. The old
/// runner stopped after its run with the fire still in its slot, and the new runner never saw it.
#[tokio::test(start_paused = true)]
async fn a_fire_during_the_run_of_a_changed_job_runs_after_that_run() {
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(clock, [Act::Slow(Duration::from_secs(90))]));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let shared = Arc::new(Shared::new(script.clone(), state, clock));
    let spec = cron_job("0 * * * * *", PolicyKind::Cancel);
    let at = Instant::now();
    let mut sup = Supervisor::start_with(shared, vec![(spec.clone(), Some(1))])
        .await
        .unwrap();
    // The run starts at 60 s and takes 90 s; the fire of 120 s comes during it. At 130 s the
    // job changes; its old run ends at 150 s.
    tokio::time::sleep(Duration::from_secs(130)).await;
    let changes = sup.apply(vec![(spec, Some(2))]).unwrap();
    assert_eq!(changes.changed, ["job"]);
    tokio::time::sleep(Duration::from_secs(40)).await;
    let offsets: Vec<_> = script
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| *c - at)
        .collect();
    sup.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        offsets,
        [secs(60), secs(150)],
        "the fire of 120 s runs when the old run ends, not at the next fire (180 s)"
    );
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 1);
}

/// Issue 17: after a crash no job ran until the interrupted upload had been resumed. It is now
/// its job's first work: the other jobs run at once, and the resuming job's own fires wait for
/// it (two runs of a job never overlap).
#[tokio::test(start_paused = true)]
async fn an_interrupted_upload_resumes_as_its_jobs_first_run_while_the_others_run() {
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(clock, [Act::Slow(Duration::from_secs(30))]));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let shared = Arc::new(Shared::new(script.clone(), state.clone(), clock));
    let mut slow = cron_job("0 * * * * *", PolicyKind::Cancel);
    slow.name = "big".into();
    let mut tick = cron_job("* * * * * *", PolicyKind::Cancel);
    tick.name = "tick".into();
    let mut rec = inflight("interrupted");
    rec.job = "big".into();
    let at = Instant::now();
    let sup = Supervisor::start_resuming(shared, vec![(slow, None), (tick, None)], vec![rec])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(script.resumed.lock().unwrap().len(), 1);
    assert_eq!(script.resumed.lock().unwrap()[0] - at, Duration::ZERO);
    let ticks = script.calls.lock().unwrap().len();
    assert_eq!(
        ticks, 10,
        "the other job fired every second during the resume"
    );
    // The resume ends at 30 s.
    tokio::time::sleep(Duration::from_secs(21)).await;
    let history = state.history().await.unwrap();
    assert_eq!(history["big"][0].outcome, Outcome::Resumed);
    sup.shutdown(Duration::from_secs(5)).await;
}

/// SIGTERM during a start-up resume is served like at any time: the grace period, then the
/// resume is cut short (and its upload aborted by the session).
#[tokio::test(start_paused = true)]
async fn shutdown_during_a_resume_takes_the_grace_period_then_cuts_it() {
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(clock, [Act::Hang]));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let shared = Arc::new(Shared::new(script.clone(), state.clone(), clock));
    let mut rec = inflight("interrupted");
    rec.job = "job".into();
    let sup = Supervisor::start_resuming(
        shared,
        vec![(cron_job("0 3 * * *", PolicyKind::Cancel), None)],
        vec![rec],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(script.resumed.lock().unwrap().len(), 1);
    let start = Instant::now();
    sup.shutdown(Duration::from_secs(3)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(
        state.history().await.unwrap()["job"][0].outcome,
        Outcome::AbortedAtStart
    );
}

/// A run that panics after its upload was created (the state writer's panic of issue 17) must not
/// leave the upload marked as being sent: the restarted runner's next run meets it as ours and
/// not running, and aborts it, instead of finding the asset blocked until a restart.
#[tokio::test(start_paused = true)]
async fn an_upload_left_by_a_run_that_panicked_is_ours_to_abort_after_the_restart() {
    let clock = Clock::anchored(t0());
    let blocked = Act::Blocked {
        id: "left",
        age: chrono::Duration::minutes(1),
        url_life: Some(chrono::Duration::hours(1)),
    };
    let script = Arc::new(Script::new(
        clock,
        [Act::PanicAfterCreate("left"), blocked, Act::Ok],
    ));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let board = Arc::new(crate::observe::health::JobTasks::default());
    let shared = Arc::new(Shared::new(script.clone(), state.clone(), clock).with_job_tasks(board));
    let sup = Supervisor::start(shared, vec![cron_job("* * * * * *", PolicyKind::Cancel)])
        .await
        .unwrap();
    // Panics at 1 s; the runner is back at 2 s and takes the fire that waited.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    sup.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*script.aborted.lock().unwrap(), ["left"]);
    assert_eq!(
        state.history().await.unwrap()["job"][0].outcome,
        Outcome::Uploaded
    );
}

/// A watch job's runner with `concurrency` runs at once, fed `files` at once, each run taking
/// 10 s; returns the most runs that were in flight together, once all have finished.
async fn most_runs_at_once(concurrency: usize, asset: &str, files: &[&str]) -> usize {
    let clock = Clock::anchored(t0());
    let script = Arc::new(Script::new(
        clock,
        vec![Act::Slow(Duration::from_secs(10)); files.len()],
    ));
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(dir.path()).await.unwrap());
    let shared = Arc::new(Shared::new(script.clone(), state, clock));
    shared.set_upload_limit(64);
    let mut spec = cron_job("0 3 * * *", PolicyKind::Cancel);
    spec.asset = IdTemplate::parse(asset).unwrap();
    spec.concurrency = concurrency;
    spec.trigger = TriggerSpec::Watch(WatchSpec {
        dir: "/tmp".into(),
        pattern: globset::Glob::new("*").unwrap().compile_matcher(),
        recursive: false,
        ignore: globset::GlobSet::empty(),
        settle: Duration::from_secs(1),
        poll: None,
        bundle: Default::default(),
    });
    let mut runs = shared.runs.subscribe();
    let job = Arc::new(Job::new(spec, shared, CancellationToken::new()));
    for f in files {
        job.pending.file(PathBuf::from(f));
    }
    let stop = CancellationToken::new();
    let runner = tokio::spawn(job.clone().run_loop(stop.clone()));
    let mut finished = Vec::new();
    for _ in files {
        let rec = runs.recv().await.unwrap();
        assert_eq!(rec.outcome, Outcome::Uploaded);
        finished.push(rec.finished);
    }
    // Each run is recorded with its own end, in the order they ended.
    assert!(finished.windows(2).all(|w| w[0] <= w[1]), "{finished:?}");
    stop.cancel();
    runner.await.unwrap();
    script.max_in_flight.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn a_watch_job_runs_different_assets_at_once_up_to_its_concurrency() {
    let files = [
        "/in/1.zip",
        "/in/2.zip",
        "/in/3.zip",
        "/in/4.zip",
        "/in/5.zip",
        "/in/6.zip",
    ];
    assert_eq!(most_runs_at_once(4, "{name}", &files).await, 4);
    assert_eq!(most_runs_at_once(1, "{name}", &files).await, 1);
}

#[tokio::test(start_paused = true)]
async fn files_for_one_asset_never_run_at_once() {
    // Three files, one asset: one at a time, whatever the concurrency; the other asset's file
    // runs beside them.
    let files = ["/in/a/x.zip", "/in/b/x.zip", "/in/c/x.zip", "/in/y.zip"];
    assert_eq!(most_runs_at_once(8, "{name}", &files).await, 2);
}
