//! Publish latency of a watch job: from a file's arrival in the watched folder to the asset
//! holding it, with the real watch, supervisor and upload against the in-process emulator.
//!
//! `cargo bench --bench publish`. Files of 1 MB and 100 MB, each either renamed (moved) into the
//! folder after being written beside it, or written in place; the clock starts at the rename or
//! at the writer's last close, and stops when the emulator's asset shows the file's checksum
//! (polled every millisecond). Prints the median and p99 of each case, and how the median
//! splits into the watch's wait (until the run starts) and the run (digest, create, parts,
//! complete). Environment: BENCH_RUNS (trials per case, default 20), BENCH_SETTLE (the job's
//! `settle`, default the daemon's default of 2s), BENCH_SIZES (e.g. `1MB,100MB`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};
use stac_uploadd::state::StateStore;
use stac_uploadd::supervisor::{HttpUploader, Shared, Supervisor};
use stac_uploadd::trigger::Clock;
use stac_uploadd_emulator::{AssetKey, Emulator, EmulatorAuth, EmulatorConfig};

const PASSWORD: &str = "bench-password";
const COLLECTION: &str = "ch.bench.watch";
const ITEM: &str = "latest";
/// How long one trial may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Written beside the folder, then renamed into it.
    Renamed,
    /// Created and written in the folder, then closed.
    InPlace,
}

impl Arrival {
    fn label(self) -> &'static str {
        match self {
            Arrival::Renamed => "renamed in",
            Arrival::InPlace => "written in place",
        }
    }
}

/// One trial: from the arrival to the asset holding the file, and the part of it spent before
/// the run started.
struct Trial {
    total: Duration,
    waited: Duration,
}

fn main() {
    // `cargo test --benches` builds and runs benches with --bench absent: only prove it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("publish bench: run with `cargo bench --bench publish`");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .map(|v| v.parse().expect("BENCH_RUNS: a number"))
        .unwrap_or(20);
    let settle = std::env::var("BENCH_SETTLE").unwrap_or_else(|_| "2s".to_owned());
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1MB,100MB".to_owned())
        .split(',')
        .map(|s| parse_size(s.trim()))
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(bench(runs, &settle, &sizes));
}

fn parse_size(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().expect("BENCH_SIZES: sizes like 1MB or 100MB");
    n * match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => panic!("BENCH_SIZES: unknown unit {other:?}"),
    }
}

fn label_size(size: u64) -> String {
    if size >= 1_000_000 && size.is_multiple_of(1_000_000) {
        format!("{} MB", size / 1_000_000)
    } else {
        format!("{size} B")
    }
}

async fn bench(runs: usize, settle: &str, sizes: &[u64]) {
    let emu = Emulator::start(
        "127.0.0.1:0".parse().expect("a literal socket address"),
        EmulatorConfig {
            auth: EmulatorAuth::Basic {
                username: "bench".into(),
                password: PASSWORD.into(),
            },
            ..EmulatorConfig::default()
        },
    )
    .await
    .expect("the emulator starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (watched, beside) = (dir.path().join("incoming"), dir.path().join("staging"));
    std::fs::create_dir_all(&watched).expect("make the watched folder");
    std::fs::create_dir_all(&beside).expect("make the staging folder");
    let text = format!(
        r#"
state_dir = "{state}"

[server]
url = "{url}"

[server.auth]
type = "basic"
username = "bench"
password_env = "BENCH_PASSWORD"

[[job]]
name = "incoming"
collection = "{COLLECTION}"
item = "{ITEM}"
asset = "{{name}}"

[job.watch]
dir = "{watched}"
pattern = "*.zip"
settle = "{settle}"
[job.asset_metadata]
type = "application/zip"
"#,
        state = dir.path().join("state").display(),
        url = emu.base_url(),
        watched = watched.display(),
    );
    let config = stac_uploadd::config::parse(&text, &dir.path().join("bench.toml"), &|k| {
        (k == "BENCH_PASSWORD").then(|| PASSWORD.to_owned())
    })
    .expect("the bench's job file");

    let mut cases = Vec::new();
    for &size in sizes {
        for arrival in [Arrival::Renamed, Arrival::InPlace] {
            let name = format!(
                "{}-{}.zip",
                match arrival {
                    Arrival::Renamed => "renamed",
                    Arrival::InPlace => "inplace",
                },
                size
            );
            emu.create_asset(&asset_key(&name), "application/zip")
                .expect("create the asset");
            cases.push((size, arrival, name));
        }
    }

    let state = Arc::new(
        StateStore::open(&config.state_dir)
            .await
            .expect("the state folder"),
    );
    let client = stac_client::StacClient::new(config.server.client_config()).expect("a client");
    let shared = Arc::new(Shared::new(
        HttpUploader(client),
        state.clone(),
        Clock::System,
    ));
    let mut records = shared.runs.subscribe();
    let supervisor = Supervisor::start(shared, config.jobs.clone())
        .await
        .expect("the jobs start");

    println!(
        "settle = {settle}; {runs} trials per case; clock from the rename (or the last close) to the asset's checksum"
    );
    let mut rows = Vec::new();
    for (size, arrival, name) in &cases {
        let mut trials = Vec::with_capacity(runs);
        for seed in 0..runs as u64 {
            let trial = one(
                &emu,
                &watched,
                &beside,
                name,
                *size,
                *arrival,
                seed + 1,
                &mut records,
            )
            .await;
            trials.push(trial);
        }
        let row = Row::of(*size, *arrival, &mut trials);
        println!("{}", row.line());
        rows.push(row);
    }
    supervisor.shutdown(Duration::from_secs(30)).await;
    state.flush().await.expect("the state is written");
    emu.shutdown().await;

    println!();
    println!(
        "| file | arrival | median | p99 | min | max | median wait before the run | median run |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{}", row.markdown());
    }
}

fn asset_key(name: &str) -> AssetKey {
    AssetKey::item_asset(COLLECTION, ITEM, name)
}

/// Brings one file in and waits until its asset holds it.
#[allow(clippy::too_many_arguments)]
async fn one(
    emu: &Emulator,
    watched: &Path,
    beside: &Path,
    name: &str,
    size: u64,
    arrival: Arrival,
    seed: u64,
    records: &mut tokio::sync::broadcast::Receiver<stac_uploadd::state::RunRecord>,
) -> Trial {
    let target = watched.join(name);
    let (at, wall, sha) = match arrival {
        Arrival::Renamed => {
            let staged: PathBuf = beside.join(name);
            let sha = write_file(&staged, size, seed);
            // Renamed over the previous version, as a processing chain does.
            let at = Instant::now();
            let wall = SystemTime::now();
            std::fs::rename(&staged, &target).expect("rename into the folder");
            (at, wall, sha)
        }
        Arrival::InPlace => {
            // A new file each time (a new inode), written and closed in the folder.
            match std::fs::remove_file(&target) {
                Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot remove the previous file: {e}"),
            }
            let sha = write_file(&target, size, seed);
            (Instant::now(), SystemTime::now(), sha)
        }
    };
    let want = format!("1220{sha}");
    let key = asset_key(name);
    let deadline = at + PATIENCE;
    loop {
        if emu.asset(&key).and_then(|a| a.checksum).as_deref() == Some(want.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not published within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = at.elapsed();
    // The run that published it: its start time splits the wait from the upload.
    let started = loop {
        match tokio::time::timeout(PATIENCE, records.recv()).await {
            Ok(Ok(rec)) if rec.asset == name => break rec.started,
            Ok(Ok(_)) => continue,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("run records ended: {e}"),
            Err(_) => panic!("{name}: no run record within {PATIENCE:?}"),
        }
    };
    let waited = SystemTime::from(started)
        .duration_since(wall)
        .unwrap_or_default();
    Trial { total, waited }
}

/// Writes `size` deterministic pseudo-random bytes (incompressible) to `path` and returns their
/// sha256 in hex; the file is closed on return.
fn write_file(path: &Path, size: u64, seed: u64) -> String {
    let mut f = std::fs::File::create(path).expect("create the file");
    let mut h = Sha256::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write the file");
        h.update(&buf[..n]);
        left -= n as u64;
    }
    drop(f);
    hex::encode(h.finalize())
}

struct Row {
    size: u64,
    arrival: Arrival,
    n: usize,
    median: Duration,
    p99: Duration,
    min: Duration,
    max: Duration,
    waited: Duration,
    run: Duration,
}

impl Row {
    fn of(size: u64, arrival: Arrival, trials: &mut [Trial]) -> Row {
        let mut totals: Vec<Duration> = trials.iter().map(|t| t.total).collect();
        totals.sort();
        let mut waits: Vec<Duration> = trials.iter().map(|t| t.waited).collect();
        waits.sort();
        let mut runs: Vec<Duration> = trials
            .iter()
            .map(|t| t.total.saturating_sub(t.waited))
            .collect();
        runs.sort();
        Row {
            size,
            arrival,
            n: totals.len(),
            median: quantile(&totals, 0.5),
            p99: quantile(&totals, 0.99),
            min: totals[0],
            max: totals[totals.len() - 1],
            waited: quantile(&waits, 0.5),
            run: quantile(&runs, 0.5),
        }
    }

    fn line(&self) -> String {
        format!(
            "{:>7} {:<17} n={:<3} median {:>7.3} s  p99 {:>7.3} s  (min {:.3}, max {:.3}; median wait {:.3} s, run {:.3} s)",
            label_size(self.size),
            self.arrival.label(),
            self.n,
            self.median.as_secs_f64(),
            self.p99.as_secs_f64(),
            self.min.as_secs_f64(),
            self.max.as_secs_f64(),
            self.waited.as_secs_f64(),
            self.run.as_secs_f64(),
        )
    }

    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.3} s | {:.3} s | {:.3} s | {:.3} s | {:.3} s | {:.3} s |",
            label_size(self.size),
            self.arrival.label(),
            self.median.as_secs_f64(),
            self.p99.as_secs_f64(),
            self.min.as_secs_f64(),
            self.max.as_secs_f64(),
            self.waited.as_secs_f64(),
            self.run.as_secs_f64(),
        )
    }
}

/// The nearest-rank quantile of sorted values (p99 of 20 is the largest).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
