//! Catch-up across restarts: each "daemon" is a supervisor over a state store opened afresh from
//! the same folder, so the decision rests on the history as written to disk and read back. No
//! HTTP: an uploader that only counts its calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use stac_client::{AssetTarget, UploadId};
use stac_upload::{
    AbortOutcome, NewObjects, UploadError, UploadObserver, UploadOptions, UploadReport,
};
use stac_uploadd::config::{IdTemplate, JobSpec};
use stac_uploadd::config::{PolicyKind, PolicySpec};
use stac_uploadd::state::StateStore;
use stac_uploadd::supervisor::{Shared, Supervisor, Uploader};
use stac_uploadd::trigger::Clock;
use stac_uploadd::trigger::Schedule;
use stac_uploadd::trigger::TriggerSpec;
use tokio_util::sync::CancellationToken;

/// Counts calls and gives each run up at once: a run given up is still a run the schedule made.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl Uploader for Counting {
    async fn upload(
        &self,
        _: &AssetTarget,
        _: &Path,
        _: &NewObjects,
        _: &UploadOptions,
        _: Arc<dyn UploadObserver>,
        _: &CancellationToken,
    ) -> Result<UploadReport, UploadError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(UploadError::Cancelled)
    }

    async fn abort(&self, _: &AssetTarget, _: &UploadId, _: &UploadOptions) -> AbortOutcome {
        AbortOutcome::Aborted
    }
}

/// Every day at 02:30 Zurich time, caught up after downtime.
fn daily_0230() -> JobSpec {
    JobSpec {
        name: "nightly".into(),
        collection: "c".into(),
        item: Some(IdTemplate::parse("i").unwrap()),
        asset: IdTemplate::parse("a.zip").unwrap(),
        trigger: TriggerSpec::Cron {
            file: PathBuf::from("/data/a.zip"),
            schedule: Schedule::parse("30 2 * * *", "Europe/Zurich").unwrap(),
        },
        policy: PolicySpec {
            kind: PolicyKind::Cancel,
            ..PolicySpec::default()
        },
        upload: UploadOptions::default(),
        jitter: None,
        catch_up: true,
        bandwidth_limit: None,
        timezone: chrono_tz::Europe::Zurich,
        item_metadata: None,
        asset_metadata: None,
        alias: None,
        keep: None,
        assets: Vec::new(),
        concurrency: 1,
        ping_url: None,
        verify_public: stac_uploadd::config::VerifyPublic::Warn,
        name_pattern: None,

        validate: Default::default(),
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Runs a daemon from wall time `wall` for `up`, stops it as the daemon does (history flushed),
/// and returns how many runs it made.
async fn daemon(state_dir: &Path, wall: &str, up: Duration) -> usize {
    let state = Arc::new(StateStore::open(state_dir).await.unwrap());
    let uploader = Counting::default();
    let shared = Arc::new(Shared::new(
        uploader.clone(),
        state.clone(),
        Clock::anchored(utc(wall)),
    ));
    let sup = Supervisor::start(shared, vec![daily_0230()]).await.unwrap();
    tokio::time::sleep(up).await;
    sup.shutdown(Duration::from_secs(5)).await;
    state.flush().await.unwrap();
    uploader.0.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn a_missed_run_is_caught_up_once_however_often_the_daemon_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let hour = Duration::from_secs(3600);
    // Sunday 1 March, 02:00 CET: never ran, so one catch-up, then the 02:30 run.
    assert_eq!(daemon(dir.path(), "2026-03-01T01:00:00Z", hour).await, 2);
    // Down until Tuesday 11:00 CET: Monday's and Tuesday's 02:30 were missed, caught up once.
    assert_eq!(daemon(dir.path(), "2026-03-03T10:00:00Z", hour).await, 1);
    // Restarted within the hour: the catch-up run counts, nothing is missed.
    assert_eq!(daemon(dir.path(), "2026-03-03T11:10:00Z", hour).await, 0);
    // Down over Wednesday's 02:30, back at 03:00 CET.
    assert_eq!(daemon(dir.path(), "2026-03-04T02:00:00Z", hour).await, 1);
    let history = StateStore::open(dir.path())
        .await
        .unwrap()
        .history()
        .await
        .unwrap();
    assert_eq!(history["nightly"].len(), 4, "each run recorded once");
}
