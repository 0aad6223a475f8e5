//! The real daemon binary with `--observe-listen`: /readyz, /healthz, and /metrics parsed as
//! Prometheus text after runs that met a gateway error (retried), a stale upload blocking the
//! asset (aborted) and a server error (given up). The emulator runs in the test on a loopback
//! port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fixtures::{
    FAST_RETRIES, JobFile, Log, MIB, ZIP_SETTLED, emulator_with_zip, get, job_file_head, scrape,
    spawn_observed, value, wait_for, write_file,
};
use prometheus_parse::{Sample, Value};
use stac_uploadd_emulator::AssetKey;
use tokio::process::Child;

const JOB: &str = "stations";
/// The label naming the job on every per-job series.
const JOB_NAME: &str = "job_name";

use crate::fixtures::basic_emulator as emulator;

fn key(name: &str) -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", name)
}

/// A watch job: each `*.zip` dropped into `incoming` goes to the asset of its name. Watch jobs
/// retry failed runs without a next fire time to respect, which keeps the test's timing exact.
fn job_file(dir: &Path, url: &str, incoming: &Path) -> PathBuf {
    JobFile::new(dir, url)
        .defaults(FAST_RETRIES)
        .watch(JOB, "{name}", incoming, "*.zip")
        .lines(ZIP_SETTLED)
        .write()
}

/// Starts the daemon with the listener on a port of the kernel's choosing; returns it, its
/// stderr lines and the address it reports.
async fn spawn(config: &Path) -> (Child, Log, SocketAddr) {
    spawn_observed(config, &[]).await
}

/// Drops `name` into the watched folder at once (written aside, then renamed).
fn drop_file(incoming: &Path, name: &str, seed: u64) -> String {
    let tmp = incoming.join(format!(".{name}.part"));
    let sha = write_file(&tmp, MIB, seed);
    std::fs::rename(&tmp, incoming.join(name)).unwrap();
    sha
}

#[tokio::test]
async fn metrics_health_and_readiness_of_a_running_daemon() {
    let emu = emulator().await;
    for name in ["a.zip", "b.zip", "c.zip"] {
        emu.create_asset(&key(name), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let config = job_file(dir.path(), &emu.base_url(), &incoming);
    let started = chrono::Utc::now().timestamp() as f64;

    let (mut daemon, log, addr) = spawn(&config).await;
    let mut ready = false;
    for _ in 0..1500 {
        if get(addr, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "/readyz never became 200: {:?}", log.lock().unwrap());
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    let at_start = scrape(addr).await;
    assert_eq!(
        value(
            &at_start,
            "stac_uploadd_runs_total",
            &[(JOB_NAME, JOB), ("outcome", "failed")]
        ),
        Some(0.0),
        "series exist from the start"
    );

    // 1. Gateway errors on every create the session tries (1 + 3 retries): the run fails
    //    transiently and the job's policy runs it again.
    emu.faults().add("create:503:next=4".parse().unwrap());
    let sha = drop_file(&incoming, "a.zip", 1);
    wait_for(Duration::from_secs(30), "a.zip to be uploaded", || {
        emu.asset(&key("a.zip")).and_then(|a| a.checksum) == Some(format!("1220{sha}"))
    })
    .await;

    // 2. A 3-hour-old upload blocks the asset: aborted as stale, then the file is sent.
    let stale = emu.plant_upload(
        &key("b.zip"),
        chrono::Utc::now() - chrono::Duration::hours(3),
    );
    let sha = drop_file(&incoming, "b.zip", 2);
    wait_for(Duration::from_secs(30), "b.zip to be uploaded", || {
        emu.asset(&key("b.zip")).and_then(|a| a.checksum) == Some(format!("1220{sha}"))
    })
    .await;
    assert!(emu.in_progress_uploads().is_empty(), "{stale} was aborted");

    // 3. A 500 is not retried: the run is given up.
    emu.faults().add("create:500:next=1".parse().unwrap());
    drop_file(&incoming, "c.zip", 3);
    let mut samples = Vec::new();
    for _ in 0..300 {
        samples = scrape(addr).await;
        let failed = [(JOB_NAME, JOB), ("outcome", "failed")];
        if value(&samples, "stac_uploadd_runs_total", &failed) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let m = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
    };
    let job = (JOB_NAME, JOB);
    assert_eq!(
        m("stac_uploadd_runs_total", &[job, ("outcome", "failed")]),
        1.0
    );
    let uploaded = m("stac_uploadd_runs_total", &[job, ("outcome", "uploaded")]);
    assert_eq!(uploaded, 2.0);
    assert_eq!(
        m("stac_uploadd_sent_bytes_total", &[job]),
        uploaded * MIB as f64,
        "the part bodies sent: no part was sent twice"
    );
    assert!(
        m(
            "stac_uploadd_retries_total",
            &[job, ("reason", "retryable")]
        ) >= 1.0
    );
    assert_eq!(m("stac_uploadd_stale_uploads_aborted_total", &[job]), 1.0);
    assert_eq!(
        m("stac_uploadd_uploads_total", &[job, ("outcome", "blocked")]),
        1.0
    );
    assert_eq!(
        m(
            "stac_uploadd_uploads_total",
            &[job, ("outcome", "uploaded")]
        ),
        2.0
    );
    assert!(m("stac_uploadd_uploads_total", &[job, ("outcome", "failed")]) >= 2.0);
    let last = m("stac_uploadd_last_success_timestamp_seconds", &[job]);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        started - 1.0 <= last && last <= now + 1.0,
        "last success {last} not within the test ({started}..{now})"
    );
    assert_eq!(
        m("stac_uploadd_uploads_in_progress", &[job]),
        0.0,
        "at rest"
    );
    let durations = samples
        .iter()
        .find(|s| {
            s.metric == "stac_uploadd_upload_duration_seconds"
                && s.labels.get(JOB_NAME) == Some(JOB)
        })
        .expect("the duration histogram");
    let Value::Histogram(buckets) = &durations.value else {
        panic!("not a histogram: {durations:?}");
    };
    let total = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("+Inf bucket")
        .count;
    assert_eq!(total, 2.0, "one observation per completed upload");
    assert_eq!(
        m(
            "stac_uploadd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    assert_eq!(get(addr, "/healthz").await.0, 200);
    crate::fixtures::signal(&daemon, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{:?}", log.lock().unwrap());
    assert!(emu.in_progress_uploads().is_empty());
}

/// An S3 lifecycle rule removed the multipart upload behind an in-progress record: abort
/// answers 500 NoSuchUpload and create 409, for ever. The run says so, with the upload id and
/// who can clear it, is counted as a run `unfreeable`, and is not retried in a loop: one create, one
/// abort, one run.
#[tokio::test]
async fn an_asset_the_server_cannot_free_is_named_counted_and_not_retried() {
    let emu = emulator().await;
    emu.create_asset(&key("d.zip"), "application/zip").unwrap();
    let stuck = emu.plant_upload(
        &key("d.zip"),
        chrono::Utc::now() - chrono::Duration::hours(3),
    );
    emu.lose_in_s3(&stuck);
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let config = job_file(dir.path(), &emu.base_url(), &incoming);
    let (mut daemon, log, addr) = spawn(&config).await;
    // The listener serves before the jobs start: their series exist once the daemon is ready.
    wait_ready(addr, &log).await;
    let at_start = scrape(addr).await;
    drop_file(&incoming, "d.zip", 4);

    let unfreeable = [(JOB_NAME, JOB), ("outcome", "unfreeable")];
    assert_eq!(
        value(&at_start, "stac_uploadd_runs_total", &unfreeable),
        Some(0.0),
        "the series exists from the start"
    );
    let mut samples = at_start;
    for _ in 0..300 {
        if value(&samples, "stac_uploadd_runs_total", &unfreeable) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples = scrape(addr).await;
    }
    assert_eq!(
        value(&samples, "stac_uploadd_runs_total", &unfreeable),
        Some(1.0),
        "{:?}",
        log.lock().unwrap()
    );
    use stac_uploadd_emulator::CallKind;
    assert_eq!(emu.call_count(CallKind::Abort), 1, "one abort: no loop");
    assert_eq!(emu.call_count(CallKind::CreateUpload), 1, "one create");
    let line = log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("run given up"))
        .cloned()
        .expect("the run's error line");
    assert!(line.contains(&stuck), "the upload id: {line}");
    assert!(
        line.contains("only the service's operators can clear that upload record"),
        "{line}"
    );
    assert_eq!(
        emu.in_progress_uploads().len(),
        1,
        "the record is still there"
    );
    signal_term(&mut daemon).await;
}

async fn signal_term(daemon: &mut Child) {
    crate::fixtures::signal(daemon, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

// The metrics' contract (issue 12): exact values after uploaded, unchanged, failed and cancelled
// runs, scraped over HTTP from the running daemon.

/// Every value of `outcome` of the two outcome counters.
const RUN_OUTCOMES: [&str; 8] = [
    "uploaded",
    "unchanged",
    "resumed",
    "aborted_at_start",
    "failed",
    "blocked",
    "unfreeable",
    "cancelled",
];
const UPLOAD_OUTCOMES: [&str; 6] = [
    "uploaded",
    "unchanged",
    "blocked",
    "failed",
    "cancelled",
    "abort_failed",
];

/// The observations of the histogram `name` of `job`.
fn observations(samples: &[Sample], name: &str, job: &str) -> Option<f64> {
    let s = samples
        .iter()
        .find(|s| s.metric == name && s.labels.get(JOB_NAME) == Some(job))?;
    let Value::Histogram(buckets) = &s.value else {
        panic!("{name} is not a histogram: {s:?}");
    };
    buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .map(|b| b.count)
}

/// The sum of the counter `name` of `job` over its other labels.
fn total(samples: &[Sample], name: &str, job: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get(JOB_NAME) == Some(job))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

/// Scrapes until `done` holds for a scrape (bounded: 60 s); returns that scrape.
async fn scrape_until(
    addr: SocketAddr,
    log: &Log,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    for _ in 0..600 {
        let samples = scrape(addr).await;
        if done(&samples) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}; log: {:#?}", log.lock().unwrap());
}

/// The count of runs of `job` that ended `outcome`, as scraped.
fn runs(samples: &[Sample], job: &str, outcome: &str) -> Option<f64> {
    value(
        samples,
        "stac_uploadd_runs_total",
        &[(JOB_NAME, job), ("outcome", outcome)],
    )
}

async fn wait_ready(addr: SocketAddr, log: &Log) {
    for _ in 0..1500 {
        if get(addr, "/readyz").await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("/readyz never became 200: {:?}", log.lock().unwrap());
}

/// Writes `len` bytes into `incoming/name` at once (written aside, then renamed).
fn drop_sized(incoming: &Path, name: &str, len: u64, seed: u64) -> String {
    let tmp = incoming.join(format!(".{name}.part"));
    let sha = write_file(&tmp, len, seed);
    std::fs::rename(&tmp, incoming.join(name)).unwrap();
    sha
}

/// The JSON log lines whose message is `message`.
fn logged<'a>(lines: &'a [String], message: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["message"].as_str() == Some(message))
        })
        .collect()
}

/// The level of a JSON log line.
fn level(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["level"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// (f) Right after start, before any run, every series of the job exists at its initial value,
/// and no series carries the label `job`. (a) Two uploads count their bytes (the part bodies),
/// sessions and durations. (b) The same files again are two unchanged runs: no bytes, no
/// duration, one info line each.
#[tokio::test]
async fn uploaded_and_unchanged_runs_count_what_was_sent_from_series_that_exist_at_start() {
    let emu = emulator().await;
    for name in ["a.zip", "b.zip"] {
        emu.create_asset(&key(name), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let config = job_file(dir.path(), &emu.base_url(), &incoming);
    let before = chrono::Utc::now().timestamp() as f64;
    let (mut daemon, log, addr) = spawn(&config).await;
    wait_ready(addr, &log).await;
    let after = chrono::Utc::now().timestamp() as f64;

    let at_start = scrape(addr).await;
    let job = (JOB_NAME, JOB);
    let at = |name: &str, labels: &[(&str, &str)]| {
        value(&at_start, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} at start"))
    };
    for outcome in RUN_OUTCOMES {
        assert_eq!(runs(&at_start, JOB, outcome), Some(0.0), "runs {outcome}");
    }
    for outcome in UPLOAD_OUTCOMES {
        let labels = [job, ("outcome", outcome)];
        assert_eq!(at("stac_uploadd_uploads_total", &labels), 0.0, "{outcome}");
    }
    for name in [
        "stac_uploadd_sent_bytes_total",
        "stac_uploadd_stale_uploads_aborted_total",
        "stac_uploadd_trigger_recoveries_total",
        "stac_uploadd_job_task_failures_total",
        "stac_uploadd_retention_deleted_items_total",
        "stac_uploadd_retention_failures_total",
        "stac_uploadd_consecutive_failures",
        "stac_uploadd_last_success_timestamp_seconds",
        "stac_uploadd_job_interval_seconds",
        "stac_uploadd_uploads_in_progress",
        "stac_uploadd_uploads_left_in_progress",
    ] {
        assert_eq!(at(name, &[job]), 0.0, "{name} at start");
    }
    assert_eq!(at("stac_uploadd_trigger_up", &[job]), 1.0, "watching");
    let started = at("stac_uploadd_job_started_timestamp_seconds", &[job]);
    assert!(
        before - 1.0 <= started && started <= after + 1.0,
        "job started at {started}, not within {before}..{after}"
    );
    for name in [
        "stac_uploadd_upload_duration_seconds",
        "stac_uploadd_schedule_lateness_seconds",
    ] {
        assert_eq!(observations(&at_start, name, JOB), Some(0.0), "{name}");
    }
    for result in ["ok", "failed"] {
        let labels = [("result", result)];
        assert_eq!(at("stac_uploadd_config_reloads_total", &labels), 0.0);
    }
    let reserved: Vec<_> = at_start
        .iter()
        .filter(|s| s.labels.contains_key("job"))
        .collect();
    assert!(reserved.is_empty(), "labelled `job`: {reserved:?}");

    // (a) Two files of different sizes, each one part.
    let sizes = [MIB, 3 * MIB];
    for (i, (name, len)) in ["a.zip", "b.zip"].into_iter().zip(sizes).enumerate() {
        drop_sized(&incoming, name, len, i as u64);
        let n = i as f64 + 1.0;
        scrape_until(addr, &log, &format!("{n} uploaded"), |s| {
            runs(s, JOB, "uploaded") == Some(n)
        })
        .await;
    }
    let uploaded = scrape(addr).await;
    let m = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| {
        value(samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
    };
    let sent = (sizes[0] + sizes[1]) as f64;
    assert_eq!(m(&uploaded, "stac_uploadd_sent_bytes_total", &[job]), sent);
    let sessions = |s: &[Sample], outcome| {
        m(
            s,
            "stac_uploadd_uploads_total",
            &[job, ("outcome", outcome)],
        )
    };
    assert_eq!(sessions(&uploaded, "uploaded"), 2.0);
    assert_eq!(sessions(&uploaded, "unchanged"), 0.0);
    let durations = "stac_uploadd_upload_duration_seconds";
    assert_eq!(observations(&uploaded, durations, JOB), Some(2.0));
    assert_eq!(
        m(&uploaded, "stac_uploadd_consecutive_failures", &[job]),
        0.0
    );
    let first_success = m(
        &uploaded,
        "stac_uploadd_last_success_timestamp_seconds",
        &[job],
    );
    assert!(first_success >= before, "{first_success}");

    // (b) The same bytes again under the same names: the assets already hold them.
    for (i, (name, len)) in ["a.zip", "b.zip"].into_iter().zip(sizes).enumerate() {
        drop_sized(&incoming, name, len, i as u64);
        let n = i as f64 + 1.0;
        scrape_until(addr, &log, &format!("{n} unchanged"), |s| {
            runs(s, JOB, "unchanged") == Some(n)
        })
        .await;
    }
    let unchanged = scrape(addr).await;
    assert_eq!(
        m(&unchanged, "stac_uploadd_sent_bytes_total", &[job]),
        sent,
        "unchanged runs send nothing"
    );
    assert_eq!(runs(&unchanged, JOB, "uploaded"), Some(2.0));
    assert_eq!(sessions(&unchanged, "uploaded"), 2.0);
    assert_eq!(sessions(&unchanged, "unchanged"), 2.0);
    assert_eq!(
        observations(&unchanged, durations, JOB),
        Some(2.0),
        "an unchanged session is not an upload's duration"
    );
    let last_success = m(
        &unchanged,
        "stac_uploadd_last_success_timestamp_seconds",
        &[job],
    );
    assert!(
        last_success > first_success,
        "{last_success} <= {first_success}"
    );
    assert_eq!(
        m(&unchanged, "stac_uploadd_uploads_in_progress", &[job]),
        0.0
    );
    assert_eq!(
        m(&unchanged, "stac_uploadd_uploads_left_in_progress", &[job]),
        0.0
    );

    let lines = log.lock().unwrap().clone();
    let mentions: Vec<_> = lines.iter().filter(|l| l.contains("unchanged")).collect();
    assert_eq!(
        mentions.len(),
        2,
        "one line per unchanged run: {mentions:#?}"
    );
    assert!(mentions.iter().all(|l| level(l) == "INFO"), "{mentions:#?}");
    signal_term(&mut daemon).await;
}

/// (c) A job failing every run under the retry policy: its retries counted, each run `failed`,
/// the failures in a row counted and ended by a success. (d) A frequent `every` job (`auto` is
/// the cancel policy for it) whose asset answers 404 every time: `failed`, not `cancelled`.
/// After a restart both gauges start from the run history.
#[tokio::test]
async fn failing_runs_are_failed_whatever_the_policy_and_counted_in_a_row() {
    let emu = emulator().await;
    for name in ["r1.zip", "r2.zip", "r3.zip"] {
        emu.create_asset(&key(name), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let missing = dir.path().join("missing.zip");
    write_file(&missing, MIB, 9);
    let config = dir.path().join("jobs.toml");
    std::fs::write(
        &config,
        format!(
            r#"{head}[defaults]
part_size = "5MiB"
part_retries = 0
retry_min_delay = "100ms"
retry_max_delay = "200ms"
[[job]]
name = "retrying"
collection = "ch.test.collection"
item = "item-1"
asset = "{{name}}"
policy = "retry"
retries = 2
[job.watch]
dir = "{incoming}"
pattern = "*.zip"
ignore = ["not-there.zip", "*.tmp", ".*"]
settle = "200ms"
[job.asset_metadata]
type = "application/zip"
[[job]]
name = "frequent"
collection = "ch.test.collection"
item = "item-1"
asset = "not-there.zip"
file = "{missing}"
every = "1h"
auto_threshold = "2h"
catch_up = true
"#,
            head = job_file_head(dir.path(), &emu.base_url()),
            incoming = incoming.display(),
            missing = missing.display(),
        ),
    )
    .unwrap();
    emu.faults().add("create:503:p=1".parse().unwrap());
    let (mut daemon, log, addr) = spawn(&config).await;

    // (d) Its catch-up run at start, the only one in the next hour.
    let frequent = scrape_until(addr, &log, "the frequent job's run", |s| {
        runs(s, "frequent", "failed") == Some(1.0)
    })
    .await;
    let m = |samples: &[Sample], name: &str, job: &str| {
        value(samples, name, &[(JOB_NAME, job)]).unwrap_or_else(|| panic!("no {name} of {job}"))
    };
    assert_eq!(runs(&frequent, "frequent", "cancelled"), Some(0.0));
    assert_eq!(
        m(&frequent, "stac_uploadd_consecutive_failures", "frequent"),
        1.0
    );
    assert_eq!(
        total(&frequent, "stac_uploadd_retries_total", "frequent"),
        0.0
    );
    assert_eq!(
        m(&frequent, "stac_uploadd_job_interval_seconds", "frequent"),
        3600.0
    );
    let given_up = logged(&log.lock().unwrap(), "run given up")
        .into_iter()
        .map(|l| level(l))
        .collect::<Vec<_>>();
    assert_eq!(given_up, ["ERROR"]);

    // (c) Two files, each run three attempts (one and two retries), every create answered 503.
    for (i, name) in ["r1.zip", "r2.zip"].into_iter().enumerate() {
        drop_sized(&incoming, name, MIB, i as u64);
        let n = i as f64 + 1.0;
        scrape_until(addr, &log, &format!("{n} failed runs"), |s| {
            runs(s, "retrying", "failed") == Some(n)
        })
        .await;
    }
    let failing = scrape(addr).await;
    assert_eq!(
        m(&failing, "stac_uploadd_consecutive_failures", "retrying"),
        2.0
    );
    assert_eq!(
        total(&failing, "stac_uploadd_retries_total", "retrying"),
        4.0
    );
    let sessions = |s: &[Sample], outcome| {
        value(
            s,
            "stac_uploadd_uploads_total",
            &[(JOB_NAME, "retrying"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        sessions(&failing, "failed"),
        Some(6.0),
        "three attempts a run"
    );
    assert_eq!(runs(&failing, "retrying", "cancelled"), Some(0.0));
    assert_eq!(
        m(&failing, "stac_uploadd_sent_bytes_total", "retrying"),
        0.0
    );
    assert_eq!(
        m(
            &failing,
            "stac_uploadd_last_success_timestamp_seconds",
            "retrying"
        ),
        0.0
    );

    // A success ends the failures in a row.
    emu.faults().clear();
    drop_sized(&incoming, "r3.zip", MIB, 3);
    let healed = scrape_until(addr, &log, "r3 uploaded", |s| {
        runs(s, "retrying", "uploaded") == Some(1.0)
    })
    .await;
    assert_eq!(
        m(&healed, "stac_uploadd_consecutive_failures", "retrying"),
        0.0
    );
    assert_eq!(
        m(&healed, "stac_uploadd_consecutive_failures", "frequent"),
        1.0
    );
    let success = m(
        &healed,
        "stac_uploadd_last_success_timestamp_seconds",
        "retrying",
    );
    assert!(success > 0.0);
    assert!(logged(&log.lock().unwrap(), "run cancelled by shutdown").is_empty());
    signal_term(&mut daemon).await;

    // A new process: the gauges start from the run history (no run is due: no catch-up, and
    // the watched folder is empty).
    for name in ["r1.zip", "r2.zip", "r3.zip"] {
        std::fs::remove_file(incoming.join(name)).unwrap();
    }
    let (mut daemon, log, addr) = spawn(&config).await;
    wait_ready(addr, &log).await;
    let restarted = scrape(addr).await;
    assert_eq!(
        m(&restarted, "stac_uploadd_consecutive_failures", "frequent"),
        1.0
    );
    assert_eq!(
        m(
            &restarted,
            "stac_uploadd_last_success_timestamp_seconds",
            "frequent"
        ),
        0.0,
        "none on record"
    );
    assert_eq!(
        m(&restarted, "stac_uploadd_consecutive_failures", "retrying"),
        0.0
    );
    assert_eq!(
        m(
            &restarted,
            "stac_uploadd_last_success_timestamp_seconds",
            "retrying"
        ),
        success,
        "the same run's finish, from the history"
    );
    assert_eq!(
        runs(&restarted, "frequent", "failed"),
        Some(0.0),
        "a new process"
    );
    signal_term(&mut daemon).await;
}

/// (e) SIGTERM with a short grace period while a part is held slow: the run is recorded
/// `cancelled`, logged as a warning with no error line, its upload aborted, and the failures in
/// a row it found are left as they were.
#[tokio::test]
async fn a_run_cut_by_shutdown_is_cancelled_not_failed() {
    let emu = emulator().await;
    for name in ["x.zip", "slow.zip"] {
        emu.create_asset(&key(name), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let config = job_file(dir.path(), &emu.base_url(), &incoming);
    let (mut daemon, log, addr) = spawn_observed(&config, &["--shutdown-grace", "1s"]).await;
    wait_ready(addr, &log).await;

    // A 500 is not retried: one failure.
    emu.faults().add("create:500:next=1".parse().unwrap());
    drop_sized(&incoming, "x.zip", MIB, 1);
    scrape_until(addr, &log, "x.zip failed", |s| {
        runs(s, JOB, "failed") == Some(1.0)
    })
    .await;

    // The part is held for two minutes; shutdown comes while it is.
    emu.faults()
        .add("put_part:delay=120s:next=1".parse().unwrap());
    drop_sized(&incoming, "slow.zip", MIB, 2);
    let busy = [(JOB_NAME, JOB)];
    scrape_until(addr, &log, "the upload under way", |s| {
        value(s, "stac_uploadd_uploads_in_progress", &busy) == Some(1.0)
            && emu.call_count(stac_uploadd_emulator::CallKind::PutPart) >= 1
    })
    .await;
    signal_term(&mut daemon).await;

    let lines = log.lock().unwrap().clone();
    let stopping = lines
        .iter()
        .position(|l| l.contains("SIGTERM: stopping"))
        .expect("the stop is logged");
    let errors: Vec<_> = lines[stopping..]
        .iter()
        .filter(|l| level(l) == "ERROR")
        .collect();
    assert!(errors.is_empty(), "error lines on shutdown: {errors:#?}");
    let cancelled = logged(&lines, "run cancelled by shutdown");
    assert_eq!(cancelled.len(), 1, "{lines:#?}");
    assert_eq!(level(cancelled[0]), "WARN");
    assert_eq!(logged(&lines, "run given up").len(), 1, "x.zip's only");
    assert!(
        emu.in_progress_uploads().is_empty(),
        "the upload was aborted"
    );

    let state = stac_uploadd::state::StateStore::open_read_only(&dir.path().join("state"))
        .await
        .unwrap();
    let outcomes: Vec<_> = state.history().await.unwrap()[JOB]
        .iter()
        .map(|r| r.outcome)
        .collect();
    use stac_uploadd::state::Outcome;
    assert_eq!(outcomes, [Outcome::Failed, Outcome::Cancelled]);

    for name in ["x.zip", "slow.zip"] {
        std::fs::remove_file(incoming.join(name)).unwrap();
    }
    let (mut daemon, log, addr) = spawn(&config).await;
    wait_ready(addr, &log).await;
    let restarted = scrape(addr).await;
    assert_eq!(
        value(&restarted, "stac_uploadd_consecutive_failures", &busy),
        Some(1.0),
        "a shutdown is no failure, and no success: {:?}",
        log.lock().unwrap()
    );
    signal_term(&mut daemon).await;
}

/// An upload whose abort failed stays on record: counted `abort_failed` and left in progress
/// until the job's next run meets it as its own stale blocker and aborts it.
#[tokio::test]
async fn an_upload_whose_abort_failed_is_left_in_progress_until_a_run_aborts_it() {
    let (emu, dir) = emulator_with_zip(&key("e.zip")).await;
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let config = job_file(dir.path(), &emu.base_url(), &incoming);
    let (mut daemon, log, addr) = spawn(&config).await;
    wait_ready(addr, &log).await;
    let job = [(JOB_NAME, JOB)];
    let sessions = |s: &[Sample], outcome| {
        value(
            s,
            "stac_uploadd_uploads_total",
            &[(JOB_NAME, JOB), ("outcome", outcome)],
        )
    };

    // A 500 on the part is not retried; every abort of it fails too.
    emu.faults().add("put_part:500:next=1".parse().unwrap());
    emu.faults().add("abort:500:next=100".parse().unwrap());
    drop_sized(&incoming, "e.zip", MIB, 5);
    let left = scrape_until(addr, &log, "the failed run", |s| {
        runs(s, JOB, "failed") == Some(1.0)
    })
    .await;
    assert_eq!(sessions(&left, "abort_failed"), Some(1.0));
    assert_eq!(sessions(&left, "failed"), Some(0.0));
    assert_eq!(
        value(&left, "stac_uploadd_uploads_left_in_progress", &job),
        Some(1.0)
    );
    assert_eq!(
        value(&left, "stac_uploadd_uploads_in_progress", &job),
        Some(0.0)
    );
    assert_eq!(emu.in_progress_uploads().len(), 1, "it is still there");

    // The next run, of a newer file (the same bytes would carry the upload on): blocked by it,
    // aborts it as ours, sends the file.
    emu.faults().clear();
    let sha = drop_sized(&incoming, "e.zip", MIB, 6);
    let done = scrape_until(addr, &log, "the upload after the abort", |s| {
        runs(s, JOB, "uploaded") == Some(1.0)
    })
    .await;
    assert_eq!(
        value(&done, "stac_uploadd_uploads_left_in_progress", &job),
        Some(0.0)
    );
    assert_eq!(
        value(&done, "stac_uploadd_stale_uploads_aborted_total", &job),
        Some(1.0)
    );
    assert_eq!(sessions(&done, "blocked"), Some(1.0));
    assert_eq!(sessions(&done, "uploaded"), Some(1.0));
    assert_eq!(
        value(&done, "stac_uploadd_consecutive_failures", &job),
        Some(0.0)
    );
    assert!(emu.in_progress_uploads().is_empty());
    assert_eq!(
        emu.asset(&key("e.zip")).and_then(|a| a.checksum),
        Some(format!("1220{sha}"))
    );
    signal_term(&mut daemon).await;
}
