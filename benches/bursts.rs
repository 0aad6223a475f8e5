//! A burst: 1,000 small files renamed into a watched folder at once, published by one watch job
//! against the in-process emulator with 20 ms added to every API call, at `concurrency = 1` and
//! at the default, side by side: files per second, the ratio, and each case's peak RSS.
//!
//! `cargo bench --bench bursts` (`BURSTS_FILES`, `BURSTS_LATENCY_MS` to change the burst). Each
//! case runs in a child process of its own, so that its RSS is its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stac_client::StacClient;
use stac_uploadd::config::{self, DEFAULT_CONCURRENCY};
use stac_uploadd::state::StateStore;
use stac_uploadd::supervisor::{HttpUploader, Shared, Supervisor};
use stac_uploadd::trigger::Clock;
use stac_uploadd_emulator::{AssetKey, Emulator, EmulatorConfig};

#[path = "support/proc.rs"]
mod proc;

use proc::{env_or, status_kib};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let concurrency = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(1);
        run_case(concurrency);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("bursts bench: run with `cargo bench --bench bursts`");
        return;
    }
    let files = env_or("BURSTS_FILES", 1000u64);
    let latency = env_or("BURSTS_LATENCY_MS", 20u64);
    println!(
        "{files} files of 1 KiB renamed into a watched folder at once; the emulator (in process) adds {latency} ms to every API call; [server] max_concurrent_uploads at its default ({})",
        config::default_max_concurrent_uploads()
    );
    println!("| concurrency | published in | files/s | peak RSS |");
    println!("| --- | --- | --- | --- |");
    let mut rates = Vec::new();
    for concurrency in [1, DEFAULT_CONCURRENCY] {
        let out = std::process::Command::new(&args[0])
            .args(["--case", &concurrency.to_string()])
            .output()
            .expect("the case runs");
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        // The child prints: seconds files_per_second peak_rss_kib.
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [secs, rate, peak] = v[..] else {
            eprintln!("unexpected case output: {text}");
            std::process::exit(1);
        };
        println!(
            "| {concurrency}{} | {secs:.2} s | {rate:.1} | {:.1} MiB |",
            if concurrency == DEFAULT_CONCURRENCY {
                " (default)"
            } else {
                ""
            },
            peak / 1024.0
        );
        rates.push(rate);
    }
    println!(
        "ratio (default / 1): {:.2}x (target: at least 6x)",
        rates[1] / rates[0]
    );
}

/// The emulator answering every API call and part PUT `latency` later.
async fn slow_emulator(latency: Duration) -> Emulator {
    let config = EmulatorConfig {
        latency,
        ..EmulatorConfig::default()
    };
    Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator")
}

fn run_case(concurrency: usize) {
    let files = env_or("BURSTS_FILES", 1000u64) as usize;
    let latency = Duration::from_millis(env_or("BURSTS_LATENCY_MS", 20u64));
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async move {
        let work = tempfile::tempdir().expect("a temp dir");
        let emu = slow_emulator(latency).await;
        // The item exists; each file's asset is created by its run, as a burst of new files is.
        emu.create_asset(&AssetKey::item_asset("ch.bench", "i", "seed.txt"), "text/plain")
            .unwrap();
        let watched = work.path().join("in");
        std::fs::create_dir(&watched).unwrap();
        let text = format!(
            "state_dir = \"{}\"\n[server]\nurl = \"{}\"\n[[job]]\nname = \"burst\"\ncollection = \"ch.bench\"\nitem = \"i\"\nasset = \"{{name}}\"\nconcurrency = {concurrency}\n[job.asset_metadata]\ntype = \"text/plain\"\n[job.watch]\ndir = \"{}\"\npattern = \"*.txt\"\n",
            work.path().join("state").display(),
            emu.base_url(),
            watched.display()
        );
        let path = work.path().join("jobs.toml");
        let config = config::parse(&text, &path, &|_| None).expect("the job file");
        let client = StacClient::new(config.server.client_config()).expect("client");
        let state = Arc::new(StateStore::open(&config.state_dir).await.unwrap());
        let shared = Arc::new(Shared::new(HttpUploader(client), state, Clock::System));
        shared.set_upload_limit(config.max_concurrent_uploads);
        let supervisor = Supervisor::start(shared, config.jobs.clone())
            .await
            .expect("the watch job starts");
        let staged = work.path().join("staged");
        std::fs::create_dir(&staged).unwrap();
        for f in 0..files {
            std::fs::write(staged.join(format!("f{f:04}.txt")), vec![b'x'; 1024]).unwrap();
        }
        let dropped = Instant::now();
        for f in 0..files {
            let name = format!("f{f:04}.txt");
            std::fs::rename(staged.join(&name), watched.join(&name)).unwrap();
        }
        let deadline = dropped + Duration::from_secs(1800);
        let mut left: Vec<usize> = (0..files).collect();
        while !left.is_empty() {
            assert!(Instant::now() < deadline, "not all published within 30 min");
            tokio::time::sleep(Duration::from_millis(20)).await;
            left.retain(|f| emu.asset(&key(*f)).and_then(|a| a.checksum).is_none());
        }
        let took = dropped.elapsed();
        let peak = status_kib("VmHWM:");
        supervisor.shutdown(Duration::from_secs(30)).await;
        println!(
            "{} {} {peak}",
            took.as_secs_f64(),
            files as f64 / took.as_secs_f64()
        );
    });
}

fn key(f: usize) -> AssetKey {
    AssetKey::item_asset("ch.bench", "i", &format!("f{f:04}.txt"))
}
