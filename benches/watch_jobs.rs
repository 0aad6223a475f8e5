//! 1,000 watch jobs with inotify (no poll interval), each receiving one small file: how long the
//! jobs take to start, the daemon's memory, the inotify instances it holds (one for all jobs:
//! Linux allows 128 per user by default, `fs.inotify.max_user_instances`), and how long until
//! every file is on the server (the in-process emulator).
//!
//! `cargo bench --bench watch_jobs` (`WATCH_JOBS` to change the number). The case runs in a
//! child process of its own, so that its RSS and descriptors are its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stac_client::StacClient;
use stac_uploadd::config;
use stac_uploadd::state::StateStore;
use stac_uploadd::supervisor::{HttpUploader, Shared, Supervisor};
use stac_uploadd::trigger::Clock;
use stac_uploadd::trigger::watch::inotify_instances;
use stac_uploadd_emulator::{AssetKey, Emulator, EmulatorConfig};

fn jobs() -> usize {
    std::env::var("WATCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--case") {
        run_case(jobs());
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("watch_jobs bench: run with `cargo bench --bench watch_jobs`");
        return;
    }
    let out = std::process::Command::new(&args[0])
        .arg("--case")
        .output()
        .expect("the case runs");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
}

fn run_case(jobs: usize) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async move {
        let work = tempfile::tempdir().expect("a temp dir");
        let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
            .await
            .expect("emulator");
        let mut text = format!(
            "state_dir = \"{}\"\n[server]\nurl = \"{}\"\n",
            work.path().join("state").display(),
            emu.base_url()
        );
        for j in 0..jobs {
            let dir = work.path().join(format!("in-{j}"));
            std::fs::create_dir(&dir).unwrap();
            emu.create_asset(&key(j), "text/plain").unwrap();
            text.push_str(&format!(
                "[[job]]\nname = \"j{j}\"\ncollection = \"ch.bench\"\nitem = \"i\"\nasset = \"a{j}.txt\"\n[job.watch]\ndir = \"{}\"\npattern = \"*.dat\"\n",
                dir.display()
            ));
        }
        let path = work.path().join("jobs.toml");
        let config = config::parse(&text, &path, &|_| None).expect("the job file");
        let client = StacClient::new(config.server.client_config()).expect("client");
        let state = Arc::new(StateStore::open(&config.state_dir).await.unwrap());
        let shared = Arc::new(Shared::new(HttpUploader(client), state, Clock::System));
        shared.set_upload_limit(config.max_concurrent_uploads);
        let before = status_kib("VmRSS:");
        let started = Instant::now();
        let supervisor = Supervisor::start(shared, config.jobs.clone())
            .await
            .expect("every watch job starts");
        let start_took = started.elapsed();
        let instances = inotify_instances().expect("/proc/self/fd");
        let after_start = status_kib("VmRSS:");
        let staged = work.path().join("staged");
        std::fs::create_dir(&staged).unwrap();
        for j in 0..jobs {
            std::fs::write(staged.join(format!("{j}.dat")), format!("file {j}\n")).unwrap();
        }
        let dropped = Instant::now();
        for j in 0..jobs {
            std::fs::rename(
                staged.join(format!("{j}.dat")),
                work.path().join(format!("in-{j}/f.dat")),
            )
            .unwrap();
        }
        let deadline = dropped + Duration::from_secs(600);
        while (0..jobs).any(|j| emu.asset(&key(j)).and_then(|a| a.checksum).is_none()) {
            assert!(Instant::now() < deadline, "not all published within 10 min");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let publish_took = dropped.elapsed();
        let peak = status_kib("VmHWM:");
        supervisor.shutdown(Duration::from_secs(30)).await;
        println!("{jobs} watch jobs with inotify, one file each (the emulator in the same process)");
        println!("| jobs started in | inotify instances | RSS before / after start | all published in | peak RSS |");
        println!("| --- | --- | --- | --- | --- |");
        println!(
            "| {:.2} s | {instances} | {:.1} / {:.1} MiB | {:.1} s | {:.1} MiB |",
            start_took.as_secs_f64(),
            mib(before),
            mib(after_start),
            publish_took.as_secs_f64(),
            mib(peak)
        );
    });
}

fn key(j: usize) -> AssetKey {
    AssetKey::item_asset("ch.bench", "i", &format!("a{j}.txt"))
}
