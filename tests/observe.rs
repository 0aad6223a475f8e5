//! The real daemon binary with `--observe-listen`: /readyz, /healthz, and /metrics parsed as
//! Prometheus text after runs that met a gateway error (retried), a stale upload blocking the
//! asset (aborted) and a server error (given up). The emulator runs in the test on a loopback
//! port.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{MIB, capture_stderr, job_file_head, spawn_daemon, wait_for, write_file};
use prometheus_parse::{Sample, Scrape, Value};
use stac_uploadd_emulator::AssetKey;
use tokio::process::Child;

const JOB: &str = "stations";
/// The label naming the job on every per-job series.
const JOB_NAME: &str = "job_name";

use common::basic_emulator as emulator;

fn key(name: &str) -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", name)
}

/// A watch job: each `*.zip` dropped into `incoming` goes to the asset of its name. Watch jobs
/// retry failed runs without a next fire time to respect, which keeps the test's timing exact.
fn job_file(dir: &Path, url: &str, incoming: &Path) -> PathBuf {
    let path = dir.join("jobs.toml");
    std::fs::write(
        &path,
        format!(
            r#"{head}[defaults]
part_size = "5MiB"
retry_min_delay = "100ms"
retry_max_delay = "200ms"
[[job]]
name = "{JOB}"
collection = "ch.test.collection"
item = "item-1"
asset = "{{name}}"
[job.watch]
dir = "{incoming}"
pattern = "*.zip"
settle = "200ms"
"#,
            head = job_file_head(dir, url),
            incoming = incoming.display(),
        ),
    )
    .unwrap();
    path
}

/// Starts the daemon with the listener on a port of the kernel's choosing; returns it, its
/// stderr lines and the address it reports.
async fn spawn(config: &Path) -> (Child, Arc<Mutex<Vec<String>>>, SocketAddr) {
    let mut child = spawn_daemon(
        &[
            "--log-format",
            "json",
            "run",
            "--observe-listen",
            "127.0.0.1:0",
        ],
        config,
    );
    let lines = capture_stderr(&mut child);
    let mut addr = None;
    wait_for(Duration::from_secs(30), "the listener address", || {
        addr = lines.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            if v["message"] != "serving /metrics, /healthz and /readyz" {
                return None;
            }
            v["addr"].as_str()?.parse().ok()
        });
        addr.is_some()
    })
    .await;
    (child, lines, addr.expect("found"))
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("the listener answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text")
        .samples
}

/// The value of the counter or gauge `name` whose labels include `labels`, if present.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a single value: {other:?}"),
        })
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
    let pid = daemon.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
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
    let pid = daemon.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
