//! `stac-uploadd demo`: the daemon at work against an in-process emulator, with nothing to set
//! up. It runs the cron job, the watch job and the item job (three files as the assets of one
//! item, then of its alias) of `config/demo.toml` for a few cycles through
//! injected faults (a stale upload blocking the asset, failing parts, a lost complete answer, a
//! create that keeps failing until the policy retries the run), prints every run, and checks what
//! the server holds afterwards.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use sha2::{Digest as _, Sha256};

use crate::sample::{write_sample, write_sample_cog, write_sample_json};
use crate::state::{Outcome, RunRecord, StateStore};
use crate::supervisor::{HttpUploader, Shared, Supervisor};
use crate::trigger::Clock;
use stac_client::units::ByteSize;
use stac_uploadd_emulator::{
    AssetKey, CallKind, Emulator, EmulatorAuth, EmulatorConfig, FaultAction, FaultTrigger,
};

const DEMO_TOML: &str = include_str!("../config/demo.toml");
const PASSWORD: &str = "demo-password";
/// Runs of the scheduled job to watch before stopping.
const CRON_RUNS: usize = 3;
/// The item job's files, in the order of its assets: file name, asset id, size.
const S2_FILES: [(&str, &str, u64); 3] = [
    ("s2_20261125.tif", "mosaic.tif", 3 << 20),
    ("thumbnail.png", "thumbnail.png", 40 << 10),
    ("metadata.json", "metadata.json", 2 << 10),
];
/// Files dropped into the watched folder.
const STATION_FILES: [&str; 3] = [
    "station-bern.csv",
    "station-zurich.csv",
    "station-geneva.csv",
];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the scheduled job's file (sent in 5 MiB parts).
    #[arg(long, default_value = "12MiB")]
    pub size: ByteSize,
}

/// Runs the demo and fails if anything the server holds afterwards is not what was sent.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // A signal stops the jobs (their uploads aborted after a short grace) and removes the demo's
    // temporary folder, rather than leaving both behind.
    let stop = crate::exit::stop_signals()?;
    tokio::pin!(stop);
    let emu = Emulator::start(
        "127.0.0.1:0".parse().expect("a literal socket address"),
        EmulatorConfig {
            auth: EmulatorAuth::Basic {
                username: "demo".into(),
                password: PASSWORD.into(),
            },
            ..EmulatorConfig::default()
        },
    )
    .await
    .context("cannot start the emulator")?;
    let dir = tempfile::tempdir()?;
    let (data, incoming) = (dir.path().join("data"), dir.path().join("incoming"));
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&incoming)?;
    let s2_dir = data.join("s2");
    std::fs::create_dir_all(&s2_dir)?;
    let text = DEMO_TOML
        .replace("@URL@", &emu.base_url())
        .replace("@STATE@", &dir.path().join("state").display().to_string())
        .replace("@DATA@", &data.display().to_string())
        .replace("@INCOMING@", &incoming.display().to_string());
    let config_path = dir.path().join("demo.toml");
    let config = crate::config::parse(&text, &config_path, &|k| {
        (k == "STAC_UPLOADD_DEMO_PASSWORD").then(|| PASSWORD.to_owned())
    })
    .context("the embedded demo job file")?;

    let radar = AssetKey::item_asset("ch.demo.radar", "latest", "composite.zip");
    emu.create_asset(&radar, "application/zip")
        .map_err(anyhow::Error::msg)?;
    for name in STATION_FILES {
        emu.create_asset(
            &AssetKey::item_asset("ch.demo.stations", "latest", name),
            "text/csv",
        )
        .map_err(anyhow::Error::msg)?;
    }
    // The item job's collection; its items are created by the job.
    let resp = reqwest::Client::new()
        .put(format!("{}/collections/ch.demo.s2", emu.base_url()))
        .basic_auth("demo", Some(PASSWORD))
        .json(&serde_json::json!({
            "id": "ch.demo.s2", "description": "Demo mosaics", "license": "proprietary"
        }))
        .send()
        .await
        .context("cannot create the demo's collection")?;
    if !resp.status().is_success() {
        bail!(
            "the emulator refused the demo's collection: {}",
            resp.status()
        );
    }
    let mut s2_sha = Vec::new();
    for (i, (name, _, size)) in S2_FILES.iter().enumerate() {
        // What each file's media type says: the job checks them before it creates anything.
        let path = s2_dir.join(name);
        let seed = 100 + i as u64;
        s2_sha.push(match Path::new(name).extension().and_then(|e| e.to_str()) {
            Some("tif") => write_sample_cog(&path, *size, seed)?,
            Some("json") => write_sample_json(&path, *size, seed)?,
            _ => write_sample(&path, *size, seed)?,
        });
    }
    let radar_file = data.join("composite.zip");
    let mut radar_sha = write_sample(&radar_file, args.size.get(), 1)?;

    // The faults the runs meet, in order.
    let blocker = emu.plant_upload(&radar, chrono::Utc::now() - chrono::Duration::hours(3));
    let faults = emu.faults();
    faults.inject(
        CallKind::PutPart,
        FaultAction::Status(503),
        FaultTrigger::Next(1),
    );
    faults.inject(CallKind::PutPart, FaultAction::Drop, FaultTrigger::Next(1));
    faults.inject(
        CallKind::Complete,
        FaultAction::DropAfterCommit,
        FaultTrigger::Next(1),
    );

    println!("emulator: {}", emu.base_url());
    println!(
        "jobs: radar-composite (cron \"*/3 * * * * *\", {}), station-files (watch {}) and s2-mosaic (3 assets into one item a day, then the alias \"current\")",
        ByteSize(args.size.get()),
        incoming.display()
    );
    println!(
        "planted: a 3-hour-old upload {} blocking composite.zip; faults: part 503, part reset, lost complete answer",
        &blocker[..8]
    );
    println!();
    println!(
        "{:<9} {:<16} {:<20} {:<9} {:>8} {:>9}  note",
        "time", "job", "asset", "outcome", "attempts", "size"
    );

    let state = Arc::new(StateStore::open(&config.state_dir).await?);
    let client = crate::daemon::client(&config)?;
    let shared = Arc::new(Shared::new(
        HttpUploader(client),
        state.clone(),
        Clock::System,
    ));
    let mut runs = shared.runs.subscribe();
    let supervisor = Supervisor::start(shared, config.jobs.clone()).await?;

    let mut seen: Vec<RunRecord> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut dropped = false;
    let mut create_fault = false;
    let mut s2_shown = false;
    let mut s2_item: Option<String> = None;
    loop {
        let rec = tokio::select! {
            r = runs.recv() => match r { Ok(r) => r, Err(_) => break },
            () = tokio::time::sleep_until(deadline) => break,
            signal = &mut stop => {
                println!("{}: stopping the jobs", signal.name());
                supervisor.shutdown(Duration::from_secs(2)).await;
                state.flush().await?;
                emu.shutdown().await;
                return Err(crate::exit::Stopped(signal).into());
            }
        };
        let note = match (rec.job.as_str(), rec.outcome, rec.attempts) {
            ("radar-composite", Outcome::Uploaded, n) if n > 1 => {
                "create kept failing (503): the policy retried the run"
            }
            ("radar-composite", Outcome::Uploaded, _) if seen.is_empty() => {
                "stale blocker aborted; a part 503 and a reset resent; lost complete answer recognised"
            }
            ("station-files", Outcome::Uploaded, _) if rec.asset == STATION_FILES[0] => {
                "written slowly in 4 chunks: sent once, complete"
            }
            ("s2-mosaic", Outcome::Uploaded, _) => {
                "one run: the item created once, its 3 assets in parallel, then the alias"
            }
            ("s2-mosaic", Outcome::Unchanged, _) => "every asset already holds its file",
            _ => "",
        };
        println!(
            "{:<9} {:<16} {:<20} {:<9} {:>8} {:>9}  {note}",
            rec.finished.format("%H:%M:%S"),
            rec.job,
            // An item run stands for its item; its assets follow on their own lines.
            if rec.assets.is_empty() {
                rec.asset.clone()
            } else {
                format!("item {}", rec.item.as_deref().unwrap_or(""))
            },
            rec.outcome.as_str(),
            rec.attempts,
            ByteSize(rec.bytes).to_string()
        );
        // An item run: its assets under it, the dated item's then the alias's.
        if rec.job == "s2-mosaic" && !s2_shown {
            for a in &rec.assets {
                println!(
                    "{:<9} {:<16} {:<20} {:<9} {:>8} {:>9}  into {}",
                    "",
                    "",
                    a.asset,
                    a.outcome.as_str(),
                    "",
                    ByteSize(a.bytes).to_string(),
                    a.item.as_deref().unwrap_or("")
                );
            }
            s2_shown = rec.outcome == Outcome::Uploaded;
        }
        if rec.job == "s2-mosaic" && rec.outcome == Outcome::Uploaded {
            s2_item = rec.item.clone();
        }
        seen.push(rec.clone());
        let radar_ok = seen
            .iter()
            .filter(|r| r.job == "radar-composite" && r.outcome == Outcome::Uploaded)
            .count();
        let retried = seen
            .iter()
            .any(|r| r.job == "radar-composite" && r.attempts > 1);
        if rec.job == "radar-composite"
            && rec.outcome == Outcome::Uploaded
            && (radar_ok < CRON_RUNS || !retried)
        {
            // The processing chain writes a new composite; the next run sends it.
            radar_sha = write_sample(&radar_file, args.size.get(), seen.len() as u64 + 1)?;
            if !dropped {
                drop_station_files(&incoming).await?;
                dropped = true;
            }
        }
        let stations = seen
            .iter()
            .filter(|r| r.job == "station-files" && r.outcome == Outcome::Uploaded)
            .count();
        if stations >= STATION_FILES.len() && !create_fault {
            // Every create attempt of the next radar run fails (the first try and the engine's 3
            // retries): the session gives up, and the job's retry policy runs it again.
            emu.faults().inject(
                CallKind::CreateUpload,
                FaultAction::Status(503),
                FaultTrigger::Next(4),
            );
            create_fault = true;
        }
        let policy_retried = seen.iter().any(|r| {
            r.job == "radar-composite" && r.outcome == Outcome::Uploaded && r.attempts > 1
        });
        if radar_ok >= CRON_RUNS
            && stations >= STATION_FILES.len()
            && policy_retried
            && s2_item.is_some()
        {
            break;
        }
    }
    supervisor.shutdown(Duration::from_secs(30)).await;
    state.close().await?;

    // Whatever ran last, the server must hold the file as it is now.
    println!();
    let mut problems = Vec::new();
    let mut check = |key: &AssetKey, sha: &str| {
        let holds = emu.object_sha256_hex(key).as_deref() == Some(sha)
            && emu.asset(key).and_then(|a| a.checksum).as_deref()
                == Some(format!("1220{sha}").as_str());
        println!(
            "{:<56} {}",
            key.api_path(),
            if holds {
                "holds the file (bytes and checksum verified)"
            } else {
                "DOES NOT hold the file"
            }
        );
        if !holds {
            problems.push(key.asset.clone());
        }
    };
    check(&radar, &radar_sha);
    for name in STATION_FILES {
        let sha = hex::encode(Sha256::digest(std::fs::read(incoming.join(name))?));
        check(
            &AssetKey::item_asset("ch.demo.stations", "latest", name),
            &sha,
        );
    }
    // The day's item and its alias hold the same three files.
    for item in s2_item.iter().map(String::as_str).chain(["current"]) {
        for ((_, id, _), sha) in S2_FILES.iter().zip(&s2_sha) {
            check(&AssetKey::item_asset("ch.demo.s2", item, id), sha);
        }
    }
    let left = emu.in_progress_uploads();
    println!("uploads left in progress on the server: {}", left.len());
    let by_job = seen
        .iter()
        .fold(BTreeMap::<&str, usize>::new(), |mut m, r| {
            *m.entry(r.job.as_str()).or_default() += 1;
            m
        });
    emu.shutdown().await;
    let radar_runs = seen
        .iter()
        .filter(|r| r.job == "radar-composite" && r.outcome == Outcome::Uploaded)
        .count();
    if radar_runs < CRON_RUNS
        || by_job.get("station-files").copied().unwrap_or(0) < STATION_FILES.len()
        || s2_item.is_none()
    {
        bail!("the demo did not see all its runs within a minute: {by_job:?}");
    }
    if !problems.is_empty() || !left.is_empty() {
        bail!(
            "the server does not hold what was sent: {problems:?}, {} upload(s) in progress",
            left.len()
        );
    }
    println!(
        "demo passed: {} runs, every asset verified, nothing left in progress.",
        seen.len()
    );
    Ok(())
}

/// Writes station files the way instruments do: one slowly, in chunks; the others at once.
async fn drop_station_files(incoming: &Path) -> anyhow::Result<()> {
    for (i, name) in STATION_FILES.iter().enumerate() {
        let path = incoming.join(name);
        let mut f = std::fs::File::create(&path)?;
        let rows = 2_000 + i * 500;
        let chunks = if i == 0 { 4 } else { 1 };
        for c in 0..chunks {
            for r in (c * rows / chunks)..((c + 1) * rows / chunks) {
                writeln!(
                    f,
                    "2026-11-25T10:{:02}:00Z,{name},{:.1}",
                    r % 60,
                    5.0 + (r % 97) as f64 / 10.0
                )?;
            }
            f.flush()?;
            if chunks > 1 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    }
    Ok(())
}
