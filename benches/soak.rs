//! A long soak of the real daemon binary with faults: three jobs (a watch job fed one small file a
//! second, an `every = "10s"` job re-uploading a changing file, a schedule each minute with a
//! multipart file) against the emulator running in this process, which answers a few percent of
//! the calls an upload makes with 503s, resets, lost answers, delays and timeouts. Each sample
//! reads the daemon's own figures from /proc (RSS, anonymous memory, threads, open files, bytes
//! written, CPU), the state folder's size and the uploads the emulator completed, one markdown
//! row each; the summary compares the figures after five minutes with those at the end.
//!
//! `cargo bench --bench soak`. Settings (environment):
//! - `SOAK_MINUTES` (default 3; fractions allowed), `SOAK_SAMPLE_SECS` (default 60; a sample is
//!   always taken at 5 minutes too), `SOAK_SEED` (default fixed, printed);
//! - `SOAK_DIGESTS_FULL` (default 1): the digest cache filled to `DIGESTS_KEPT` before start;
//! - `SOAK_WRAP` (e.g. `heaptrack -o /tmp/soak`): a command the daemon runs under; the figures
//!   are still the daemon's own (found among the wrapper's descendants);
//! - `SOAK_KEEP_SECS` (default 0: never): the feeder removes each watched file that many seconds
//!   after it dropped it, as a publisher's clean-up would (the watch keeps one entry per file
//!   present in its folder, so a folder that only grows makes the daemon grow with it);
//! - `SOAK_DAEMON_ENV` (e.g. `MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=131072`): variables set
//!   for the daemon alone.
//!
//! It exits non-zero when the daemon died, did not stop cleanly on SIGTERM (exit status 0), or
//! left an upload in progress; the memory figures are reported, never judged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use stac_client::{Md5, Multihash};
use stac_upload::{DigestCache, DigestKey, FileDigest};
use stac_uploadd::state::{DIGESTS_KEPT, StateStore};
use stac_uploadd_emulator::{
    AssetKey, CallKind, Emulator, EmulatorConfig, FaultAction, FaultTrigger, UploadState,
};
use tokio::io::AsyncBufReadExt;

#[path = "support/proc.rs"]
mod proc;

use proc::{env_or, status_kib};

const BIN: &str = env!("CARGO_BIN_EXE_stac-uploadd");
const COLLECTION: &str = "ch.soak";
/// The item of the watch job's assets (one per file), and the item of the two file jobs.
const DROPS_ITEM: &str = "drops";
const FILES_ITEM: &str = "files";
const EVERY_ASSET: &str = "every.zip";
const SCHEDULE_ASSET: &str = "minutely.zip";
/// The seed when `SOAK_SEED` is unset: fixed, so that two runs feed the same files.
const DEFAULT_SEED: u64 = 20_261_207;
/// `/proc/PID/stat` counts CPU time in USER_HZ, 100 on every Linux the daemon ships for.
const USER_HZ: f64 = 100.0;
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak bench: run with `cargo bench --bench soak` (SOAK_MINUTES, default 3)");
        return ExitCode::SUCCESS;
    }
    let settings = Settings::from_env();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(soak(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the environment asks for.
struct Settings {
    duration: Duration,
    sample_every: Duration,
    seed: u64,
    digests_full: bool,
    /// Seconds after which the feeder removes a watched file it dropped; `None`: never.
    keep_secs: Option<u64>,
    wrap: Vec<String>,
    daemon_env: Vec<(String, String)>,
}

impl Settings {
    fn from_env() -> Self {
        let minutes: f64 = env_or("SOAK_MINUTES", 3.0);
        let sample_secs: u64 = env_or("SOAK_SAMPLE_SECS", 60);
        let split = |name: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        Self {
            duration: Duration::from_secs_f64(minutes.clamp(0.1, 24.0 * 60.0) * 60.0),
            sample_every: Duration::from_secs(sample_secs.max(5)),
            seed: env_or("SOAK_SEED", DEFAULT_SEED),
            digests_full: env_or("SOAK_DIGESTS_FULL", 1u8) != 0,
            keep_secs: Some(env_or("SOAK_KEEP_SECS", 0u64)).filter(|&k| k > 0),
            wrap: split("SOAK_WRAP"),
            daemon_env: split("SOAK_DAEMON_ENV")
                .into_iter()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect(),
        }
    }
}

/// The faults drawn on every call of these kinds for the whole soak: about 5 % of calls each.
/// Timeouts: a 7 s delay against the job file's 5 s `request_timeout`.
fn inject_faults(emu: &Emulator) {
    use CallKind::*;
    let p = FaultTrigger::Probability;
    let faults = emu.faults();
    for kind in [
        GetAsset,
        CreateUpload,
        ListUploads,
        GetUpload,
        ListParts,
        PutPart,
        Complete,
        PutStac,
    ] {
        faults.inject(kind, FaultAction::Status(503), p(0.015));
        faults.inject(kind, FaultAction::Drop, p(0.01));
        faults.inject(
            kind,
            FaultAction::Delay(Duration::from_millis(300)),
            p(0.02),
        );
    }
    for kind in [CreateUpload, PutPart, Complete] {
        faults.inject(kind, FaultAction::DropAfterCommit, p(0.01));
    }
    for kind in [GetAsset, CreateUpload, Complete] {
        faults.inject(kind, FaultAction::Delay(Duration::from_secs(7)), p(0.003));
    }
    faults.inject(Abort, FaultAction::Status(503), p(0.02));
}

/// The job file: the three jobs, retry policies as fits each, 5 s request timeout.
fn job_file(work: &Path, url: &str) -> String {
    let dir = |d: &str| work.join(d).display().to_string();
    format!(
        r#"state_dir = "{state}"
[server]
url = "{url}"
request_timeout = "5s"

[defaults]
part_size = "5MiB"
part_retries = 3
retry_min_delay = "200ms"
retry_max_delay = "5s"

# A file a second, each its own asset: a failed run is not tried again by a later trigger.
[[job]]
name = "drops"
collection = "{COLLECTION}"
item = "{DROPS_ITEM}"
asset = "{{name}}"
policy = "retry"
retries = 5
[job.watch]
dir = "{watched}"
pattern = "*.zip"
settle = "300ms"
[job.asset_metadata]
type = "application/zip"

# Ten seconds apart: the next run sends the file again, retries would only overlap it.
[[job]]
name = "every"
collection = "{COLLECTION}"
item = "{FILES_ITEM}"
asset = "{EVERY_ASSET}"
file = "{every}"
every = "10s"
policy = "cancel"

[[job]]
name = "minutely"
collection = "{COLLECTION}"
item = "{FILES_ITEM}"
asset = "{SCHEDULE_ASSET}"
file = "{minutely}"
schedule = "0 * * * * *"
policy = "retry"
retries = 3
"#,
        state = dir("state"),
        watched = dir("in"),
        every = dir("every.zip"),
        minutely = dir("minutely.zip"),
    )
}

/// The one place that opens the state store before the daemon starts (issue 24 makes
/// `StateStore::open` async): the digest cache filled to its cap with entries of the size a
/// busy daemon leaves (one part MD5 each), none of which the soak's files will hit.
async fn prefill_digests(state_dir: &Path) -> anyhow::Result<()> {
    let store = StateStore::open(state_dir)
        .await
        .with_context(|| format!("opening the state in {}", state_dir.display()))?;
    for i in 0..DIGESTS_KEPT as u64 {
        let seed = i.to_le_bytes();
        let key = DigestKey {
            dev: 2049,
            ino: 7_000_000 + i,
            size: 1024 + i % 3072,
            mtime: (1_765_000_000 + i as i64, (i * 7919 % 1_000_000_000) as i64),
            ctime: (1_765_000_000 + i as i64, (i * 7919 % 1_000_000_000) as i64),
            part_size: 5 * 1024 * 1024,
        };
        let sha: [u8; 32] = Sha256::digest(seed).into();
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&sha[16..]);
        let digest = FileDigest {
            multihash: Multihash::from_sha256(&sha),
            part_md5s: vec![Md5(md5)],
            size: key.size,
        };
        store.put(key, &digest);
    }
    store
        .close()
        .await
        .context("writing the prefilled digest cache")
}

/// Bytes that are new for every (seed, n): a splitmix64 stream (a bench's filler, no need for
/// a generator crate's guarantees).
fn filler(seed: u64, n: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `bytes` beside `dest` (in `staged`, the same file system) and renames it into place:
/// the daemon never sees a file half written.
fn place(staged: &Path, dest: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = dest.file_name().context("a file name")?;
    let tmp = staged.join(name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
}

/// A size in `lo..hi` drawn from `(seed, n)`.
fn size_in(seed: u64, n: u64, lo: usize, hi: usize) -> usize {
    let r = u64::from_le_bytes(filler(seed ^ 0x5151, n, 8).try_into().unwrap_or([0; 8]));
    lo + (r % (hi - lo) as u64) as usize
}

/// The files the feeder wrote: the watch job's, by asset key.
#[derive(Default)]
struct Fed {
    drops: Vec<AssetKey>,
    error: Option<String>,
}

/// Writes a small file into the watched folder each second, the `every` file each ten seconds
/// and the minutely file each minute (30 s off the schedule), until stopped.
struct Feeder {
    stop: Arc<AtomicBool>,
    fed: Arc<Mutex<Fed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    fn start(work: &Path, seed: u64, keep_secs: Option<u64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let fed = Arc::new(Mutex::new(Fed::default()));
        let (s, f, work) = (stop.clone(), fed.clone(), work.to_owned());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            for n in 1u64.. {
                let due = started + Duration::from_secs(n);
                // Sleeps of at most 200 ms, so that a stop is seen soon.
                while Instant::now() < due {
                    if s.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep((due - Instant::now()).min(Duration::from_millis(200)));
                }
                if let Err(e) = feed_once(&work, seed, n, keep_secs, &f) {
                    lock(&f).error = Some(format!("{e:#}"));
                    return;
                }
            }
        });
        Self {
            stop,
            fed,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn feed_once(
    work: &Path,
    seed: u64,
    n: u64,
    keep_secs: Option<u64>,
    fed: &Mutex<Fed>,
) -> anyhow::Result<()> {
    let staged = work.join("staged");
    if let Some(old) = keep_secs.and_then(|k| n.checked_sub(k)).filter(|&o| o > 0) {
        let gone = work.join("in").join(format!("f{old:06}.zip"));
        match std::fs::remove_file(&gone) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", gone.display()));
            }
            _ => {}
        }
    }
    let name = format!("f{n:06}.zip");
    let mut bytes = format!("soak {seed} {n}\n").into_bytes();
    bytes.extend(filler(seed, n, size_in(seed, n, 1024, 4096)));
    place(&staged, &work.join("in").join(&name), &bytes)?;
    lock(fed)
        .drops
        .push(AssetKey::item_asset(COLLECTION, DROPS_ITEM, &name));
    if n % 10 == 5 {
        write_every(work, seed, n)?;
    }
    if n % 60 == 30 {
        write_minutely(work, seed, n)?;
    }
    Ok(())
}

fn write_every(work: &Path, seed: u64, n: u64) -> anyhow::Result<()> {
    let len = size_in(seed ^ 1, n, 200 * 1024, 500 * 1024);
    place(
        &work.join("staged"),
        &work.join("every.zip"),
        &filler(seed ^ 1, n, len),
    )
}

fn write_minutely(work: &Path, seed: u64, n: u64) -> anyhow::Result<()> {
    let len = size_in(seed ^ 2, n, 5 << 20, 20 << 20);
    place(
        &work.join("staged"),
        &work.join("minutely.zip"),
        &filler(seed ^ 2, n, len),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGKILLs the daemon unless disarmed: a panicking or failing bench leaves no daemon behind
/// (the wrapper's `kill_on_drop` alone would orphan a daemon run under `SOAK_WRAP`).
struct KillGuard(Option<u32>);

impl KillGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = send(pid, rustix::process::Signal::KILL);
        }
    }
}

fn send(pid: u32, sig: rustix::process::Signal) -> anyhow::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32).context("a positive pid")?;
    rustix::process::kill_process(pid, sig).context("signalling the daemon")
}

/// The daemon's last lines of log, one per line.
fn last_lines(log: &Mutex<LogTally>) -> String {
    lock(log)
        .tail
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The daemon's stderr (JSON lines): the listener address, warning and error counts, the last
/// lines for a failure's message.
#[derive(Default)]
struct LogTally {
    addr: Option<SocketAddr>,
    warnings: u64,
    errors: u64,
    tail: VecDeque<String>,
}

fn read_log(stderr: tokio::process::ChildStderr) -> Arc<Mutex<LogTally>> {
    let tally = Arc::new(Mutex::new(LogTally::default()));
    let sink = tally.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut t = lock(&sink);
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                match v["level"].as_str() {
                    Some("WARN") => t.warnings += 1,
                    Some("ERROR") => t.errors += 1,
                    _ => {}
                }
                if v["message"] == "serving /metrics, /healthz and /readyz" {
                    t.addr = v["addr"].as_str().and_then(|a| a.parse().ok());
                }
            }
            t.tail.push_back(line);
            if t.tail.len() > 40 {
                t.tail.pop_front();
            }
        }
    });
    tally
}

/// Polls `cond` every 100 ms until it holds or `limit` passes.
async fn wait_until<T>(limit: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The process running the daemon binary: `root` itself, or one of its descendants (a wrapper).
fn daemon_pid(root: u32) -> Option<u32> {
    let bin = std::fs::canonicalize(BIN).ok()?;
    let is_daemon =
        |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok() == Some(bin.clone());
    if is_daemon(root) {
        return Some(root);
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if is_daemon(c) {
                return Some(c);
            }
            todo.push(c);
        }
    }
    None
}

/// The fields of `/proc/PID/stat` after the command name: [0] is the state (field 3).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// One reading of the daemon and of the server.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    anon_kib: u64,
    threads: u64,
    fds: u64,
    /// glibc arenas besides the main heap: anonymous rw mappings aligned on 64 MiB (the
    /// arenas' HEAP_MAX_SIZE), a count, not a proof.
    arenas: u64,
    write_bytes: u64,
    cpu_s: f64,
    state_bytes: u64,
    uploads: u64,
}

fn status_field(text: &str, field: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn arenas(pid: u32) -> u64 {
    const HEAP_MAX: u64 = 64 << 20;
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let start = f
                .first()
                .and_then(|r| u64::from_str_radix(r.split('-').next()?, 16).ok());
            f.len() == 5 && f[1] == "rw-p" && start.is_some_and(|s| s % HEAP_MAX == 0)
        })
        .count() as u64
}

fn sample(pid: u32, at: Duration, state_dir: &Path, uploads: u64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let cpu = stat_fields(pid)
        .map(|f| {
            // utime and stime are fields 14 and 15; [0] is field 3.
            let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (tick(11) + tick(12)) / USER_HZ
        })
        .unwrap_or(0.0);
    Sample {
        at,
        rss_kib: status_field(&status, "VmRSS:"),
        anon_kib: status_field(&status, "RssAnon:"),
        threads: status_field(&status, "Threads:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        arenas: arenas(pid),
        write_bytes: status_field(&io, "write_bytes:"),
        cpu_s: cpu,
        state_bytes: dir_bytes(state_dir),
        uploads,
    }
}

fn print_header() {
    println!(
        "| min | VmRSS | RssAnon | threads | fds | arenas | written | CPU | state folder | uploads |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
}

fn print_row(s: &Sample) {
    println!(
        "| {:.1} | {:.1} MiB | {:.1} MiB | {} | {} | {} | {:.1} MiB | {:.1} s | {:.0} KiB | {} |",
        s.at.as_secs_f64() / 60.0,
        s.rss_kib as f64 / 1024.0,
        s.anon_kib as f64 / 1024.0,
        s.threads,
        s.fds,
        s.arenas,
        s.write_bytes as f64 / MIB,
        s.cpu_s,
        s.state_bytes as f64 / 1024.0,
        s.uploads
    );
}

/// Completed uploads the emulator holds, per job.
fn completed(emu: &Emulator, drops: &[AssetKey]) -> BTreeMap<&'static str, u64> {
    let count = |key: &AssetKey| {
        emu.uploads(key)
            .iter()
            .filter(|u| u.status == UploadState::Completed)
            .count() as u64
    };
    let files = |asset: &str| count(&AssetKey::item_asset(COLLECTION, FILES_ITEM, asset));
    BTreeMap::from([
        ("drops", drops.iter().map(count).sum()),
        ("every", files(EVERY_ASSET)),
        ("minutely", files(SCHEDULE_ASSET)),
    ])
}

/// The daemon's runs by job and outcome, from its /metrics.
async fn runs(addr: SocketAddr) -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .context("the daemon's /metrics is not Prometheus text")?;
    Ok(scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == "stac_uploadd_runs_total")
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            Some((
                (
                    s.labels.get("job_name")?.to_owned(),
                    s.labels.get("outcome")?.to_owned(),
                ),
                v,
            ))
        })
        .collect())
}

/// When to sample: every `every`, at 5 minutes, and at the end.
fn sample_times(total: Duration, every: Duration) -> Vec<Duration> {
    let mut at: Vec<Duration> = (1..)
        .map(|k| every * k)
        .take_while(|t| *t < total)
        .collect();
    let five = Duration::from_secs(300);
    if five < total && !at.contains(&five) {
        at.push(five);
    }
    at.sort();
    at.push(total);
    at
}

fn pct(from: f64, to: f64) -> String {
    if from == 0.0 {
        "-".into()
    } else {
        format!("{:+.1} %", (to - from) / from * 100.0)
    }
}

async fn soak(s: Settings) -> anyhow::Result<bool> {
    let work = tempfile::tempdir().context("a temp dir")?;
    let w = work.path();
    for d in ["in", "staged", "state"] {
        std::fs::create_dir(w.join(d)).with_context(|| format!("creating {d}"))?;
    }
    let state_dir = w.join("state");
    if s.digests_full {
        prefill_digests(&state_dir).await?;
    }
    let digests_at_start = dir_bytes(&state_dir);
    write_every(w, s.seed, 0)?;
    write_minutely(w, s.seed, 0)?;

    let emu = Emulator::start("127.0.0.1:0".parse()?, EmulatorConfig::default())
        .await
        .context("starting the emulator")?;
    emu.create_asset(
        &AssetKey::item_asset(COLLECTION, DROPS_ITEM, "seed.zip"),
        "application/zip",
    )
    .map_err(anyhow::Error::msg)?;
    for asset in [EVERY_ASSET, SCHEDULE_ASSET] {
        emu.create_asset(
            &AssetKey::item_asset(COLLECTION, FILES_ITEM, asset),
            "application/zip",
        )
        .map_err(anyhow::Error::msg)?;
    }
    let config = w.join("jobs.toml");
    std::fs::write(&config, job_file(w, &emu.base_url())).context("writing the job file")?;

    println!(
        "soak: {:.1} min, SOAK_SEED={}, digest cache {} at start ({} KiB of state), watched files {}, daemon {}{}{}",
        s.duration.as_secs_f64() / 60.0,
        s.seed,
        if s.digests_full { "full" } else { "empty" },
        digests_at_start / 1024,
        match s.keep_secs {
            Some(k) => format!("removed {k} s after they are dropped"),
            None => "kept (the folder grows by one a second)".to_owned(),
        },
        BIN,
        if s.wrap.is_empty() {
            String::new()
        } else {
            format!(" under `{}`", s.wrap.join(" "))
        },
        s.daemon_env
            .iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect::<String>(),
    );

    let daemon_args = [
        "--log-format",
        "json",
        "run",
        "--observe-listen",
        "127.0.0.1:0",
        "--config",
    ];
    let mut command = match s.wrap.split_first() {
        None => tokio::process::Command::new(BIN),
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(BIN);
            c
        }
    };
    command
        .args(daemon_args)
        .arg(&config)
        .envs(s.daemon_env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "stac_uploadd=info")
        .env_remove("STAC_UPLOADD_OBSERVE_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("starting the daemon")?;
    let root = child.id().context("the daemon's pid")?;
    let mut guard = KillGuard(Some(root));
    let log = read_log(child.stderr.take().context("stderr is piped")?);
    let pid = wait_until(Duration::from_secs(60), || daemon_pid(root))
        .await
        .context("no process runs the daemon binary (60 s after start)")?;
    guard.0 = Some(pid);
    let addr = wait_until(Duration::from_secs(60), || lock(&log).addr).await;
    let Some(addr) = addr else {
        bail!(
            "the daemon did not report its /metrics address within 60 s; its last lines:\n{}",
            last_lines(&log)
        );
    };
    let started = Instant::now();
    inject_faults(&emu);
    let mut feeder = Feeder::start(w, s.seed, s.keep_secs);

    println!();
    print_header();
    let mut samples = vec![sample(pid, Duration::ZERO, &state_dir, 0)];
    print_row(&samples[0]);
    let mut died = None;
    for at in sample_times(s.duration, s.sample_every) {
        tokio::select! {
            _ = tokio::time::sleep_until((started + at).into()) => {}
            status = child.wait() => {
                died = Some(status);
                break;
            }
        }
        if let Some(e) = lock(&feeder.fed).error.clone() {
            bail!("feeding the daemon failed: {e}");
        }
        let drops = lock(&feeder.fed).drops.clone();
        let uploads = completed(&emu, &drops).values().sum();
        let row = sample(pid, at, &state_dir, uploads);
        print_row(&row);
        samples.push(row);
    }
    feeder.stop();
    if let Some(status) = died {
        bail!(
            "the daemon died after {:.1} min ({status:?}); its last lines:\n{}",
            started.elapsed().as_secs_f64() / 60.0,
            last_lines(&log)
        );
    }

    // The last files dropped were still settling: give them a bounded while.
    let drops = lock(&feeder.fed).drops.clone();
    let published = |emu: &Emulator| {
        drops
            .iter()
            .filter(|k| emu.asset(k).and_then(|a| a.checksum).is_some())
            .count()
    };
    let _ = wait_until(Duration::from_secs(60), || {
        (published(&emu) == drops.len()).then_some(())
    })
    .await;
    let runs = runs(addr).await.context("reading the daemon's /metrics")?;
    let done = completed(&emu, &drops);

    send(pid, rustix::process::Signal::TERM)?;
    // A daemon under a wrapper (heaptrack) is slower to stop, and the wrapper writes its output.
    let limit = Duration::from_secs(if s.wrap.is_empty() { 120 } else { 600 });
    let stopped = tokio::time::timeout(limit, child.wait()).await;
    let exit = match stopped {
        Ok(Ok(status)) => {
            guard.disarm();
            Some(status)
        }
        Ok(Err(e)) => bail!("waiting for the daemon: {e}"),
        Err(_) => None,
    };
    let left: Vec<String> = emu
        .in_progress_uploads()
        .into_iter()
        .map(|(k, u)| format!("{} on {k}", u.id))
        .collect();
    let published = published(&emu);
    let faults: u64 = CallKind::ALL
        .iter()
        .map(|k| emu.faults().injected(*k))
        .sum();
    let calls: u64 = CallKind::ALL.iter().map(|k| emu.call_count(*k)).sum();
    let _ = tokio::time::timeout(Duration::from_secs(30), emu.shutdown()).await;

    // Summary.
    // The baseline: after 5 minutes (the start's transients over), or in a shorter soak the
    // first sample after the start.
    let five = samples
        .iter()
        .find(|x| x.at == Duration::from_secs(300))
        .or_else(|| samples.iter().find(|x| x.at > Duration::ZERO))
        .cloned()
        .unwrap_or_default();
    let end = samples.last().cloned().unwrap_or_default();
    let tally = lock(&log);
    let outcomes = |job: &str| {
        runs.iter()
            .filter(|((j, _), v)| j == job && **v > 0.0)
            .map(|((_, o), v)| format!("{o} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let failed: f64 = runs
        .iter()
        .filter(|((_, o), _)| matches!(o.as_str(), "failed" | "blocked" | "unfreeable"))
        .map(|(_, v)| v)
        .sum();
    println!();
    println!("| soak summary | |");
    println!("| --- | --- |");
    println!(
        "| wall time | {:.1} min |",
        started.elapsed().as_secs_f64() / 60.0
    );
    println!(
        "| uploads completed (emulator) | {} (drops {}, every {}, minutely {}) |",
        done.values().sum::<u64>(),
        done["drops"],
        done["every"],
        done["minutely"]
    );
    println!(
        "| watch files published | {} of {} |",
        published,
        drops.len()
    );
    for job in ["drops", "every", "minutely"] {
        println!("| runs of {job} | {} |", outcomes(job));
    }
    println!("| failed runs (failed, blocked, unfreeable) | {failed} |");
    println!("| faults injected | {faults} of {calls} calls |");
    println!(
        "| this process (emulator, feeder): peak RSS | {:.1} MiB |",
        status_kib("VmHWM:") as f64 / 1024.0
    );
    println!(
        "| daemon log | {} warnings, {} errors |",
        tally.warnings, tally.errors
    );
    let stat = |name: &str, f: fn(&Sample) -> f64, unit: &str| {
        println!(
            "| {name}: at {:.1} min, at the end | {:.1}{unit}, {:.1}{unit} ({}) |",
            five.at.as_secs_f64() / 60.0,
            f(&five),
            f(&end),
            pct(f(&five), f(&end))
        );
    };
    stat("VmRSS", |x| x.rss_kib as f64 / 1024.0, " MiB");
    stat("RssAnon", |x| x.anon_kib as f64 / 1024.0, " MiB");
    stat("open fds", |x| x.fds as f64, "");
    stat("threads", |x| x.threads as f64, "");
    stat("state folder", |x| x.state_bytes as f64 / 1024.0, " KiB");
    let minutes = (end.at.as_secs_f64() - five.at.as_secs_f64()) / 60.0;
    if minutes > 0.0 {
        println!(
            "| from {:.1} min to the end: written, CPU per minute | {:.2} MiB, {:.2} s |",
            five.at.as_secs_f64() / 60.0,
            (end.write_bytes - five.write_bytes.min(end.write_bytes)) as f64 / MIB / minutes,
            (end.cpu_s - five.cpu_s) / minutes
        );
    }
    println!(
        "| stop on SIGTERM | {} |",
        match exit {
            Some(st) => format!("{st}"),
            None => format!("did not exit within {limit:?}: killed"),
        }
    );
    println!(
        "| uploads left in progress | {} |",
        if left.is_empty() {
            "none".to_owned()
        } else {
            left.join(", ")
        }
    );
    let clean = exit.is_some_and(|st| st.success()) && left.is_empty();
    if !clean {
        eprintln!(
            "the daemon did not stop cleanly or left uploads in progress; its last lines:\n{}",
            tally.tail.iter().cloned().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(clean)
}
