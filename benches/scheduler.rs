//! Scheduler scale: 1,000 cron jobs (each once a minute, staggered over the seconds) under the
//! real supervisor for a minute, with an uploader that does nothing, so the figures are the
//! daemon's own: RSS, CPU share of one core, and how late schedules fire (p50, p99, max).
//!
//! `cargo bench --bench scheduler` (BENCH_JOBS, BENCH_SECONDS to change the defaults).
//!
//! The lateness comes from the daemon's own metric (`stac_uploadd_schedule_lateness_seconds`):
//! the bench installs a metrics recorder that keeps each value of that histogram, so the
//! scheduler's hot path carries nothing for the bench.

#[path = "support/rusage.rs"]
mod rusage;
use rusage::cpu_seconds;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};

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

struct Noop;

impl Uploader for Noop {
    async fn upload(
        &self,
        _: &AssetTarget,
        _: &Path,
        _: &NewObjects,
        _: &UploadOptions,
        _: Arc<dyn UploadObserver>,
        _: &CancellationToken,
    ) -> Result<UploadReport, UploadError> {
        Err(UploadError::Cancelled)
    }
    async fn abort(&self, _: &AssetTarget, _: &UploadId, _: &UploadOptions) -> AbortOutcome {
        AbortOutcome::Aborted
    }
}

/// Each lateness the schedules record, in seconds; every other metric is dropped.
#[derive(Default)]
struct Lateness(Mutex<Vec<f64>>);

impl HistogramFn for Lateness {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }
}

struct LatenessRecorder(Arc<Lateness>);

impl metrics::Recorder for LatenessRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == stac_uploadd::observe::metrics::LATENESS {
            Histogram::from_arc(self.0.clone())
        } else {
            Histogram::noop()
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scheduler bench: run with `cargo bench --bench scheduler`");
        return;
    }
    let lateness = Arc::new(Lateness::default());
    metrics::set_global_recorder(LatenessRecorder(lateness.clone()))
        .expect("no other metrics recorder");
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let specs: Vec<JobSpec> = (0..jobs)
        .map(|i| JobSpec {
            name: format!("job-{i}"),
            collection: "c".into(),
            item: Some(IdTemplate::parse(&format!("item-{i}")).expect("a valid id")),
            asset: IdTemplate::parse("a.zip").expect("a valid id"),
            trigger: TriggerSpec::Cron {
                file: dir.path().join(format!("f{i}.zip")),
                schedule: Schedule::parse(&format!("{} * * * * *", i % 60), "Europe/Zurich")
                    .expect("valid"),
            },
            policy: PolicySpec {
                kind: PolicyKind::Cancel,
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
            verify_public: stac_uploadd::config::VerifyPublic::Warn,
            name_pattern: None,

            validate: Default::default(),
        })
        .collect();
    let rss_before = status_kib("VmRSS");
    let (cpu_before, wall) = (cpu_seconds(libc::RUSAGE_SELF), Instant::now());
    rt.block_on(async {
        let state = Arc::new(StateStore::open(dir.path()).await.expect("state"));
        let shared = Arc::new(Shared::new(Noop, state.clone(), Clock::System));
        let sup = Supervisor::start(shared, specs).await.expect("start");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        sup.shutdown(Duration::from_secs(5)).await;
        state.flush().await.expect("flush");
    });
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu_before;
    let elapsed = wall.elapsed().as_secs_f64();
    let mut late = std::mem::take(&mut *lateness.0.lock().unwrap_or_else(PoisonError::into_inner));
    late.sort_unstable_by(f64::total_cmp);
    // Milliseconds.
    let pct = |p: f64| {
        late.get(((late.len() as f64 * p) as usize).min(late.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
            * 1000.0
    };
    println!(
        "{jobs} cron jobs for {elapsed:.0} s ({} fires):",
        late.len()
    );
    println!(
        "  RSS: {:.1} MiB (peak {:.1} MiB, {:.1} MiB before the jobs started)",
        status_kib("VmRSS") as f64 / 1024.0,
        status_kib("VmHWM") as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    println!(
        "  CPU: {:.2}% of one core ({cpu:.2} s user+sys)",
        cpu / elapsed * 100.0
    );
    println!(
        "  fire lateness: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.99),
        late.last().copied().unwrap_or(0.0) * 1000.0
    );
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
