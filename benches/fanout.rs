//! 200 watch jobs, each receiving a file at the same moment: the daemon's peak memory with the
//! upload limit (`[server] max_concurrent_uploads`, default twice the cores) and without it
//! (a limit of 200), against the in-process emulator storing parts on disk so that its memory
//! does not count.
//!
//! `cargo bench --bench fanout` (`FANOUT_JOBS`, `FANOUT_MIB` to change the shape). Each case runs
//! in a child process of its own, so that each peak RSS (VmHWM) is its own. The folders are
//! polled, as when this bench was written (each inotify watch job took an inotify instance
//! then; all share one now: see `benches/watch_jobs.rs` for 1,000 jobs with inotify), so that
//! the figures stay comparable.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stac_client::StacClient;
use stac_uploadd::config;
use stac_uploadd::state::StateStore;
use stac_uploadd::supervisor::{HttpUploader, Shared, Supervisor};
use stac_uploadd::trigger::Clock;
use stac_uploadd_emulator::{AssetKey, Emulator, EmulatorConfig, Storage};

#[path = "support/proc.rs"]
mod proc;

use proc::{env_or, status_kib};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let limit: usize = args[i + 1].parse().expect("a limit");
        run_case(limit);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("fanout bench: run with `cargo bench --bench fanout`");
        return;
    }
    let jobs = env_or("FANOUT_JOBS", 200);
    let mib = env_or("FANOUT_MIB", 8);
    let default = config::default_max_concurrent_uploads();
    println!(
        "{jobs} watch jobs, one {mib} MiB file each dropped at once; peak RSS of the daemon's process"
    );
    println!("| max_concurrent_uploads | all stored after | peak RSS |");
    println!("| --- | --- | --- |");
    for limit in [default, jobs] {
        let out = std::process::Command::new(&args[0])
            .args(["--case", &limit.to_string()])
            .output()
            .expect("the case runs");
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let which = if limit == default {
            format!("{limit} (the default here)")
        } else {
            format!("{limit} (one per job)")
        };
        println!("| {which} | {}", text.trim());
    }
}

fn run_case(limit: usize) {
    let jobs = env_or("FANOUT_JOBS", 200);
    let mib = env_or("FANOUT_MIB", 8);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async move {
        let work = tempfile::tempdir().expect("a temp dir");
        let emu = Emulator::start(
            "127.0.0.1:0".parse().unwrap(),
            EmulatorConfig {
                storage: Storage::Dir(work.path().to_owned()),
                ..EmulatorConfig::default()
            },
        )
        .await
        .expect("emulator");
        let mut text = format!(
            "state_dir = \"{}\"\n[server]\nurl = \"{}\"\nmax_concurrent_uploads = {limit}\n",
            work.path().join("state").display(),
            emu.base_url()
        );
        for j in 0..jobs {
            let dir = work.path().join(format!("in-{j}"));
            std::fs::create_dir(&dir).unwrap();
            emu.create_asset(&key(j), "application/zip").unwrap();
            text.push_str(&format!(
                "[[job]]\nname = \"j{j}\"\ncollection = \"ch.bench\"\nitem = \"i\"\nasset = \"a{j}.zip\"\n[job.watch]\ndir = \"{}\"\npattern = \"*.zip\"\nsettle = \"500ms\"\npoll = \"250ms\"\n",
                dir.display()
            ));
        }
        let path = work.path().join("jobs.toml");
        let config = config::parse(&text, &path, &|_| None).expect("the job file");
        let client = StacClient::new(config.server.client_config()).expect("client");
        let state = Arc::new(StateStore::open(&config.state_dir).await.unwrap());
        let shared = Arc::new(Shared::new(HttpUploader(client), state, Clock::System));
        shared.set_upload_limit(config.max_concurrent_uploads);
        let supervisor = Supervisor::start(shared, config.jobs.clone()).await.unwrap();
        // Written aside, then renamed in, all at once.
        let staged = work.path().join("staged");
        std::fs::create_dir(&staged).unwrap();
        for j in 0..jobs {
            write(&staged.join(format!("{j}.zip")), mib << 20, j as u64);
        }
        let started = Instant::now();
        for j in 0..jobs {
            std::fs::rename(
                staged.join(format!("{j}.zip")),
                work.path().join(format!("in-{j}/f.zip")),
            )
            .unwrap();
        }
        let deadline = started + Duration::from_secs(600);
        while (0..jobs).any(|j| emu.asset(&key(j)).and_then(|a| a.checksum).is_none()) {
            assert!(Instant::now() < deadline, "not all stored within 10 min");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = started.elapsed();
        supervisor.shutdown(Duration::from_secs(30)).await;
        println!(
            "{:.1} s | {:.1} MiB |",
            took.as_secs_f64(),
            status_kib("VmHWM:") as f64 / 1024.0
        );
    });
}

fn key(j: usize) -> AssetKey {
    AssetKey::item_asset("ch.bench", "i", &format!("a{j}.zip"))
}

/// A file of `len` bytes that no two jobs share.
fn write(path: &Path, len: usize, seed: u64) {
    let mut data = vec![0u8; len];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (b, v) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *b = v;
        }
    }
    std::fs::write(path, data).unwrap();
}
