//! Upload benchmark: first the digest pass on its own (sha256 alone on one core over the same
//! file, the digest pass with SIMD MD5 lanes and with scalar MD5, their ratios, CPU time and
//! peak RSS, warm and cold), then a large file to the emulator (run as its own process),
//! printing wall time, digest and send throughput, a raw single-PUT baseline, the effect of
//! parallel parts under a per-connection bandwidth limit, and peak RSS.
//!
//! `cargo bench --bench upload`. Digest section: BENCH_DIGEST_SIZES (warm, default
//! "100MiB,1GiB,10GiB"; empty skips), BENCH_DIGEST_COLD (sizes, default 1GiB, run after dropping
//! the page cache, which needs root; empty skips), BENCH_DIGEST_RUNS (best of, default 5 up to 1 GiB, 2 above),
//! BENCH_DIGEST_ONLY=1 (skip the upload section), BENCH_LANE_CHUNK (bytes per lane read). Upload section (1 GiB): BENCH_SIZE (e.g. 256MiB), BENCH_LIMITED_SIZE
//! (file for the bandwidth-limited runs, default 512MiB; the same file when equal), BENCH_RATE
//! (default 50MB/s). The raw-PUT baseline sends at most the first 5 GiB (one part's limit).
//! Each measured upload runs in a child process of this binary, so its peak RSS is the upload's
//! alone, not the file generator's or the emulator's.

#[path = "support/rusage.rs"]
mod rusage;
use rusage::{cpu_seconds, rusage};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::Md5 as Md5Hasher;
use sha2::{Digest as _, Sha256};
use stac_client::units::ByteSize;
use stac_client::{
    AssetTarget, ClientConfig, CreateUpload, Md5, Md5Part, Multihash, PartNumber, StacClient,
};
use stac_upload::UploadOptions;
use stac_upload::bandwidth::{Bandwidth, BandwidthLimit};
use tokio_util::sync::CancellationToken;

const MB: f64 = 1_000_000.0;

fn main() {
    if std::env::var_os("BENCH_DIGEST_CHILD").is_some() {
        digest_child();
        return;
    }
    if std::env::var_os("BENCH_CHILD").is_some() {
        child();
        return;
    }
    // `cargo test --benches` builds and runs benches with --bench absent: only prove it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("upload bench: run with `cargo bench --bench upload`");
        return;
    }
    digest_bench();
    if std::env::var_os("BENCH_DIGEST_ONLY").is_some() {
        return;
    }
    let size = env_size("BENCH_SIZE", ByteSize::GIB);
    let limited_size = env_size("BENCH_LIMITED_SIZE", 512 * ByteSize::MIB);
    let rate = env_size("BENCH_RATE", 50_000_000);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bench.zip");
    print!("writing a {} test file... ", ByteSize(size));
    std::io::stdout().flush().ok();
    write_file(&file, size);
    println!("done");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Single-core hash speeds, on a cache-resident buffer: the inputs of the bound.
    let sha_rate = hash_rate(|b| {
        let mut h = Sha256::new();
        h.update(b);
        h.finalize()[0]
    });
    let md5_rate = hash_rate(|b| {
        let mut h = Md5Hasher::new();
        h.update(b);
        h.finalize()[0]
    });
    let gib = size as f64;
    // With MD5 in SIMD lanes, sha256 on one core is the bound (the digest section measures it
    // over the file itself).
    let bound = gib / sha_rate;

    let port = free_port();
    let mut emu = start_emulator(port);
    let base = format!("http://127.0.0.1:{port}/api/stac/v1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(wait_ready(&base));
    // Each asset is deleted after its run, so the in-memory emulator holds one copy of the
    // file at a time (seven copies of a 10 GiB file would not fit).
    let raw = rt.block_on(raw_put(&base, &file, size));
    let engine = measured(&rt, &base, &file, "engine.zip", 4, None);
    let engine1 = measured(&rt, &base, &file, "engine-1.zip", 1, None);
    let engine8 = measured(&rt, &base, &file, "engine-8.zip", 8, None);
    rt.block_on(create_asset(&base, "python.zip"));
    let python = run_python(&base, &file, "python.zip");
    rt.block_on(delete_asset(&base, "python.zip"));

    // Parallel parts against a per-connection limit (a WAN where each TCP stream is capped).
    let small = if limited_size == size {
        file.clone()
    } else {
        let small = dir.path().join("limited.zip");
        write_file(&small, limited_size);
        small
    };
    rt.block_on(set_bandwidth(port, Some(rate)));
    let one = measured(&rt, &base, &small, "limited-1.zip", 1, None);
    let four = measured(&rt, &base, &small, "limited-4.zip", 4, None);
    let eight = measured(&rt, &base, &small, "limited-8.zip", 8, None);
    rt.block_on(set_bandwidth(port, None));
    // Our own limit (bandwidth_limit), shared by 4 parts, on an unthrottled emulator.
    let own_limit = env_size("BENCH_OWN_LIMIT", 40_000_000);
    let limited_run = measured(&rt, &base, &small, "own-limit.zip", 4, Some(own_limit));
    let _ = emu.kill();
    let _ = emu.wait();

    println!();
    println!(
        "machine: {cores} cores; sha256 {:.0} MB/s, md5 {:.0} MB/s (one core each)",
        sha_rate / MB,
        md5_rate / MB
    );
    println!(
        "file: {} ({} parts of {})",
        ByteSize(size),
        engine.parts,
        ByteSize(engine.part_size)
    );
    println!(
        "wall time (digest + create + send + complete): {:.2} s",
        engine.total_s
    );
    println!(
        "digest pass: {:.2} s = {:.0} MB/s; bound sha256 on one core (in memory) = {:.2} s -> {:.0}% of the bound's speed",
        engine.digest_s,
        gib / engine.digest_s / MB,
        bound,
        bound / engine.digest_s * 100.0
    );
    println!(
        "send pass: {:.2} s = {:.0} MB/s; raw single PUT of {}{}: {:.2} s = {:.0} MB/s -> {:.0}% of raw",
        engine.send_s,
        gib / engine.send_s / MB,
        ByteSize(raw.bytes),
        if raw.bytes == size {
            " (the same bytes)"
        } else {
            " (the file's first bytes: one part is at most 5 GiB)"
        },
        raw.secs,
        raw.rate() / MB,
        gib / engine.send_s / raw.rate() * 100.0
    );
    println!(
        "peak RSS of the upload process: {:.1} MiB",
        engine.rss_kib as f64 / 1024.0
    );
    match python {
        Some((total, rss_kib, cpu)) => {
            println!(
                "straightforward Python client (hashlib, requests, parts of 100 MiB or more in sequence): {total:.2} s, peak RSS {:.0} MiB -> stac-uploadd is {:.1}x faster",
                rss_kib as f64 / 1024.0,
                total / engine.total_s
            );
            println!(
                "whole-process CPU (user+sys, start-up included; the emulator's not counted): stac-uploadd {:.2} s, Python client {cpu:.2} s -> {:.0}% of the Python client's",
                engine.cpu_s,
                engine.cpu_s / cpu * 100.0
            );
        }
        None => println!("Python client: not run (python3 with requests not available)"),
    }
    println!(
        "with {:.0} MB/s per connection, {}: 1 part at a time {:.2} s, 4 in parallel {:.2} s -> {:.2}x (peak RSS {:.1} MiB)",
        rate as f64 / MB,
        ByteSize(limited_size),
        one.send_s,
        four.send_s,
        one.send_s / four.send_s,
        four.rss_kib as f64 / 1024.0
    );
    println!(
        "send pass by parallel parts, no limit: 1 -> {:.0} MB/s, 4 -> {:.0} MB/s, 8 -> {:.0} MB/s; with the limit: 8 parts {:.2} s ({:.2}x of 1 part)",
        gib / engine1.send_s / MB,
        gib / engine.send_s / MB,
        gib / engine8.send_s / MB,
        eight.send_s,
        one.send_s / eight.send_s
    );
    let achieved = limited_size as f64 / limited_run.send_s;
    println!(
        "our bandwidth_limit {:.0} MB/s shared by 4 parts, {}: send pass {:.2} s = {:.1} MB/s ({:+.1}% of the limit)",
        own_limit as f64 / MB,
        ByteSize(limited_size),
        limited_run.send_s,
        achieved / MB,
        (achieved / own_limit as f64 - 1.0) * 100.0
    );
}

/// One digest measurement, in a child process: `mode` is `sha256` (one thread reading the file
/// and hashing it: the bound) or an MD5 backend for the whole digest pass.
#[derive(Clone, Copy)]
struct DigestRun {
    secs: f64,
    cpu_s: f64,
    rss_kib: u64,
}

fn digest_bench() {
    let sizes: Vec<u64> = std::env::var("BENCH_DIGEST_SIZES")
        .unwrap_or_else(|_| "100MiB,1GiB,10GiB".to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<ByteSize>()
                .expect("BENCH_DIGEST_SIZES: sizes")
                .get()
        })
        .collect();
    let cold: Vec<u64> = std::env::var("BENCH_DIGEST_COLD")
        .unwrap_or_else(|_| "1GiB".to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<ByteSize>()
                .expect("BENCH_DIGEST_COLD: sizes")
                .get()
        })
        .collect();
    // Best of: a 100 MiB pass takes a tenth of a second, where a scheduler hiccup weighs; ten
    // GiB passes are long enough to average it out.
    let runs_given: Option<usize> = std::env::var("BENCH_DIGEST_RUNS")
        .ok()
        .and_then(|v| v.parse().ok());
    let runs_for = |size: u64| {
        runs_given
            .unwrap_or(if size <= ByteSize::GIB { 5 } else { 2 })
            .max(1)
    };
    if sizes.is_empty() && cold.is_empty() {
        return;
    }
    let simd = stac_upload::Md5Backend::Auto
        .resolve()
        .expect("auto resolves to something");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "digest pass: {cores} cores, MD5 backend {simd:?} (available: {:?}); each figure the best of {} runs (the three modes taking turns)",
        stac_upload::Md5Backend::available(),
        match runs_given {
            Some(n) => n.to_string(),
            None => "5 (2 above 1 GiB)".to_owned(),
        }
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut jobs: Vec<(u64, bool)> = sizes.iter().map(|&s| (s, false)).collect();
    jobs.extend(cold.iter().map(|&s| (s, true)));
    for (size, cold) in jobs {
        let file = dir.path().join(format!("digest-{size}.zip"));
        if !file.exists() {
            // Only one file at a time on disk (10 GiB ones add up).
            for e in std::fs::read_dir(dir.path()).expect("temp dir").flatten() {
                let _ = std::fs::remove_file(e.path());
            }
            write_file(&file, size);
        }
        let plan = stac_upload::PartPlan::new(size, stac_upload::DEFAULT_PART_SIZE).expect("plan");
        if cold && !drop_caches() {
            println!(
                "  {} cold: not run (dropping the page cache needs root)",
                ByteSize(size)
            );
            continue;
        }
        // Warm: one untimed read first so every mode sees the file cached.
        if !cold {
            digest_run(&file, "sha256", false);
        }
        // The modes take turns, so a slow moment of the machine does not fall on one of them.
        let modes = [
            "sha256".to_owned(),
            format!("{simd:?}"),
            "Scalar".to_owned(),
        ];
        let mut best: [Option<DigestRun>; 3] = [None; 3];
        for _ in 0..runs_for(size) {
            for (mode, best) in modes.iter().zip(best.iter_mut()) {
                let run = digest_run(&file, mode, cold);
                if best.is_none_or(|b| run.secs < b.secs) {
                    *best = Some(run);
                }
            }
        }
        let [Some(sha), Some(lanes), Some(scalar)] = best else {
            unreachable!("at least one run of each mode")
        };
        let mb = size as f64 / MB;
        println!(
            "  {} {} ({} parts of {}): sha256 alone {:.2} s ({:.0} MB/s); digest pass {:.2} s ({:.0} MB/s) = {:.2}x sha256; scalar MD5 {:.2} s = {:.2}x",
            ByteSize(size),
            if cold { "cold" } else { "warm" },
            plan.count(),
            ByteSize(plan.part_size()),
            sha.secs,
            mb / sha.secs,
            lanes.secs,
            mb / lanes.secs,
            lanes.secs / sha.secs,
            scalar.secs,
            scalar.secs / sha.secs,
        );
        println!(
            "    CPU user+sys: sha256 alone {:.2} s, digest pass {:.2} s, scalar {:.2} s; peak RSS: digest pass {:.1} MiB, scalar {:.1} MiB",
            sha.cpu_s,
            lanes.cpu_s,
            scalar.cpu_s,
            lanes.rss_kib as f64 / 1024.0,
            scalar.rss_kib as f64 / 1024.0,
        );
    }
    println!();
}

/// Drops the page cache (root only); false when it cannot.
fn drop_caches() -> bool {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn digest_run(file: &Path, mode: &str, cold: bool) -> DigestRun {
    if cold {
        assert!(drop_caches(), "dropping the page cache");
    }
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env("BENCH_DIGEST_CHILD", mode)
        .env("BENCH_FILE", file)
        .stderr(Stdio::inherit())
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "digest child failed: {text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("child prints JSON");
    DigestRun {
        secs: v["secs"].as_f64().unwrap_or(f64::NAN),
        cpu_s: v["cpu_s"].as_f64().unwrap_or(f64::NAN),
        rss_kib: v["rss_kib"].as_u64().unwrap_or(0),
    }
}

/// The measured digest, in its own process: wall time, the process's CPU time, peak RSS.
fn digest_child() {
    use std::io::Read as _;
    use std::sync::atomic::AtomicBool;
    let mode = std::env::var("BENCH_DIGEST_CHILD").expect("set by the parent");
    let path = std::env::var("BENCH_FILE").expect("set by the parent");
    let cpu = || cpu_seconds(libc::RUSAGE_SELF);
    let file = std::fs::File::open(&path).expect("open");
    let size = file.metadata().expect("metadata").len();
    let (cpu0, started) = (cpu(), Instant::now());
    if mode == "sha256" {
        let mut f = file;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        std::hint::black_box(h.finalize());
    } else {
        let backend = stac_upload::Md5Backend::parse(&mode).expect("a backend name");
        let plan = stac_upload::PartPlan::new(size, stac_upload::DEFAULT_PART_SIZE).expect("plan");
        let defaults = stac_upload::DigestOptions::default();
        let opts = stac_upload::DigestOptions {
            md5_backend: backend,
            lane_chunk: env_size("BENCH_LANE_CHUNK", defaults.lane_chunk as u64) as usize,
            ..defaults
        };
        let d = stac_upload::digest_file(file, &plan, opts, &AtomicBool::new(false), &|_| {})
            .expect("digest");
        std::hint::black_box(d);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_s = cpu() - cpu0;
    println!(
        "{}",
        serde_json::json!({ "secs": secs, "cpu_s": cpu_s, "rss_kib": peak_rss_kib() })
    );
}

struct ChildResult {
    total_s: f64,
    digest_s: f64,
    send_s: f64,
    rss_kib: u64,
    /// The upload process's user+sys CPU, start-up included.
    cpu_s: f64,
    parts: u64,
    part_size: u64,
}

/// One measured upload to a fresh asset, deleted afterwards.
fn measured(
    rt: &tokio::runtime::Runtime,
    base: &str,
    file: &Path,
    asset: &str,
    parallel: usize,
    limit: Option<u64>,
) -> ChildResult {
    rt.block_on(create_asset(base, asset));
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env(
            "BENCH_LIMIT",
            limit.map(|l| l.to_string()).unwrap_or_default(),
        )
        .env("BENCH_CHILD", "1")
        .env("BENCH_URL", base)
        .env("BENCH_FILE", file)
        .env("BENCH_ASSET", asset)
        .env("BENCH_PARALLEL", parallel.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench child failed: {text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("child prints JSON");
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    rt.block_on(delete_asset(base, asset));
    ChildResult {
        total_s: f("total_s"),
        digest_s: f("digest_s"),
        send_s: f("send_s"),
        rss_kib: v["rss_kib"].as_u64().unwrap_or(0),
        cpu_s: f("cpu_s"),
        parts: v["parts"].as_u64().unwrap_or(0),
        part_size: v["part_size"].as_u64().unwrap_or(0),
    }
}

/// The Python client on the same file and emulator: its wall time, peak RSS and user+sys CPU.
fn run_python(base: &str, file: &Path, asset: &str) -> Option<(f64, u64, f64)> {
    // Every child before this one has been waited for: the difference is the Python client's.
    let cpu0 = cpu_seconds(libc::RUSAGE_CHILDREN);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python_client.py");
    let child = Command::new("python3")
        .args([script, base, "bench", "item", asset])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let out = child.wait_with_output().ok()?;
    let u = rusage(libc::RUSAGE_CHILDREN);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    // RUSAGE_CHILDREN's maxrss is the largest of all waited-for children: the Python client's
    // 100 MiB parts make it the largest by far.
    let cpu = cpu_seconds(libc::RUSAGE_CHILDREN) - cpu0;
    Some((v["total_s"].as_f64()?, u.ru_maxrss as u64, cpu))
}

/// The measured upload, in its own process.
fn child() {
    let var = |k: &str| std::env::var(k).expect("set by the parent");
    let client =
        StacClient::new(ClientConfig::new(var("BENCH_URL").parse().expect("url"))).expect("client");
    let target = AssetTarget::item_asset("bench", "item", var("BENCH_ASSET"));
    let bandwidth = std::env::var("BENCH_LIMIT")
        .ok()
        .and_then(|l| l.parse::<u64>().ok())
        .map(|l| Arc::new(Bandwidth::new(BandwidthLimit::constant(ByteSize(l)))))
        .into_iter()
        .collect();
    let opts = UploadOptions {
        parallel: var("BENCH_PARALLEL").parse().expect("number"),
        // Every run sends: a benchmark of skipping would measure nothing.
        skip_unchanged: false,
        bandwidth,
        ..UploadOptions::default()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let report = rt
        .block_on(stac_upload::upload_file(
            &client,
            &target,
            Path::new(&var("BENCH_FILE")),
            &opts,
            Arc::new(()),
            &CancellationToken::new(),
        ))
        .expect("upload succeeds");
    println!(
        "{}",
        serde_json::json!({
            "total_s": report.total_time.as_secs_f64(),
            "digest_s": report.digest_time.as_secs_f64(),
            "send_s": report.send_time.as_secs_f64(),
            "rss_kib": peak_rss_kib(),
            "cpu_s": cpu_seconds(libc::RUSAGE_SELF),
            "parts": report.parts,
            "part_size": report.part_size,
        })
    );
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A raw PUT: its length and time.
struct Raw {
    bytes: u64,
    secs: f64,
}

impl Raw {
    fn rate(&self) -> f64 {
        self.bytes as f64 / self.secs
    }
}

/// One PUT of the file (at most its first 5 GiB, S3's largest part) to a presigned URL of a
/// one-part upload, then aborted: the transport's ceiling.
async fn raw_put(base: &str, file: &Path, size: u64) -> Raw {
    use std::io::Read as _;
    use tokio::io::AsyncReadExt as _;
    create_asset(base, "raw.zip").await;
    let client = StacClient::new(ClientConfig::new(base.parse().expect("url"))).expect("client");
    let target = AssetTarget::item_asset("bench", "item", "raw.zip");
    let len = size.min(5 * ByteSize::GIB);
    let mut f = std::fs::File::open(file).expect("open").take(len);
    let (mut sha, mut md5) = (Sha256::new(), Md5Hasher::new());
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    let md5 = Md5(md5.finalize().into());
    let req = CreateUpload {
        md5_parts: vec![Md5Part {
            part_number: PartNumber(1),
            md5: md5.to_base64(),
        }],
        checksum: Multihash::from_sha256(&sha.finalize().into()),
        content_encoding: None,
    };
    let up = client.create_upload(&target, &req).await.expect("create");
    let body = tokio::fs::File::open(file).await.expect("open").take(len);
    let started = Instant::now();
    client
        .put_part(
            &up.urls[0],
            &md5,
            len,
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                body,
                256 * 1024,
            )),
            Duration::from_secs(3600),
        )
        .await
        .expect("raw PUT");
    let secs = started.elapsed().as_secs_f64();
    client.abort(&target, &up.upload_id).await.expect("abort");
    delete_asset(base, "raw.zip").await;
    Raw { bytes: len, secs }
}

fn hash_rate(f: impl Fn(&[u8]) -> u8) -> f64 {
    let buf: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let rounds = 128;
    let mut sink = 0u8;
    let started = Instant::now();
    for _ in 0..rounds {
        sink ^= f(&buf);
    }
    std::hint::black_box(sink);
    (buf.len() * rounds) as f64 / started.elapsed().as_secs_f64()
}

fn env_size(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse::<ByteSize>().ok())
        .map_or(default, |b| b.get())
}

fn write_file(path: &Path, size: u64) {
    stac_uploadd::write_sample(path, size, 0x2545_F491_4F6C_DD1D).expect("test file written");
    // Measure a file at rest: writeback of fresh dirty pages would compete for the CPU.
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .expect("fsync");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_emulator(port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stac-uploadd"))
        .args(["emulator", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("emulator starts")
}

async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/collections")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the emulator did not start");
}

async fn create_asset(base: &str, asset: &str) {
    let http = reqwest::Client::new();
    let put = |url: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let r = http.put(url).json(&body).send().await.expect("PUT");
            let status = r.status();
            assert!(
                status.is_success(),
                "PUT failed: {status}: {}",
                r.text().await.unwrap_or_default()
            );
        }
    };
    put(format!("{base}/collections/bench"), serde_json::json!({"id": "bench", "description": "bench", "license": "proprietary", "links": []})).await;
    put(format!("{base}/collections/bench/items/item"), serde_json::json!({"id": "item", "geometry": {"type": "Polygon", "coordinates": [[[7.0, 46.0], [8.0, 46.0], [8.0, 47.0], [7.0, 47.0], [7.0, 46.0]]]}, "properties": {"datetime": "2026-01-01T00:00:00Z"}, "links": []})).await;
    put(
        format!("{base}/collections/bench/items/item/assets/{asset}"),
        serde_json::json!({"id": asset, "type": "application/zip"}),
    )
    .await;
}

async fn delete_asset(base: &str, asset: &str) {
    let r = reqwest::Client::new()
        .delete(format!(
            "{base}/collections/bench/items/item/assets/{asset}"
        ))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "DELETE failed: {}", r.status());
}

async fn set_bandwidth(port: u16, rate: Option<u64>) {
    let r = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{port}/_emulator/bandwidth"))
        .json(&serde_json::json!({ "bytes_per_second": rate }))
        .send()
        .await
        .expect("admin call");
    assert!(
        r.status().is_success(),
        "setting the bandwidth failed: {}",
        r.status()
    );
}
