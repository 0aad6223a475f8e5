//! The fault soak with real daemons in a cluster: three members sharing one PostgreSQL and one
//! emulator, three cron jobs firing every 2 s (files rewritten now and then, one of them
//! multi-part) and a watch job on a folder they all see, while the emulator answers a few percent
//! of the calls with 503s, resets, lost answers and delays, and a random member is SIGKILLed and
//! restarted every few seconds. Then the faults and kills stop, the members settle, and the test
//! checks what the server and the database hold: nothing in progress, every asset the last
//! version of its file, no version published twice, no fire retaken more than once, never two
//! senders on one upload at once.
//!
//! `CLUSTER_SOAK_SECONDS` (default 40) sets how long the faults last, `CLUSTER_SOAK_SEED` the
//! seed of the plan (default fixed, printed): which member dies when, which file is rewritten.
//! The emulator draws its `Probability` faults itself, so a seed reproduces the plan, not every
//! draw.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fixtures::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use stac_uploadd_emulator::{AssetKey, CallKind, FaultAction, FaultTrigger, UploadState};

const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];
/// The cron jobs' files: name and size (the last one is sent in two parts).
const CRON_FILES: [(&str, u64); 3] = [("c0.zip", 64 * 1024), ("c1.zip", MIB), ("c2.zip", 7 * MIB)];
const DEFAULT_SEED: u64 = 20_260_520;

fn key(asset: &str) -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", asset)
}

/// Every call kind of an upload gets a few percent of faults; no delay beyond the request
/// timeout (a member killed mid-wait is what the soak is about, not timeouts).
fn inject_faults(emu: &stac_uploadd_emulator::Emulator) {
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
        faults.inject(kind, FaultAction::Status(503), p(0.02));
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
    faults.inject(Abort, FaultAction::Status(503), p(0.02));
}

fn jobs(root: &Path) -> impl FnOnce(JobFile) -> JobFile + '_ {
    move |mut j| {
        j = j.defaults(&format!("{FAST_RETRIES}\npolicy = \"retry\"\nretries = 3"));
        for (name, _) in CRON_FILES {
            let stem = name.trim_end_matches(".zip");
            j = j.cron(stem, name, &root.join(name), "*/2 * * * * *");
        }
        j.watch("drops", "{name}", &root.join("drops"), "d*.zip")
            .lines(ZIP_SETTLED)
    }
}

/// Writes `path` atomically (a rename) with fresh content; returns its sha256.
fn rewrite(path: &Path, len: u64, seed: u64) -> String {
    let tmp = path.with_extension("tmp");
    let sha = write_file(&tmp, len, seed);
    std::fs::rename(&tmp, path).unwrap();
    sha
}

#[tokio::test]
async fn members_killed_at_random_under_faults_leave_every_asset_right_and_no_fire_twice() {
    let seconds: u64 = std::env::var("CLUSTER_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("CLUSTER_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("cluster soak: CLUSTER_SOAK_SECONDS={seconds} CLUSTER_SOAK_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let pg = Postgres::start().await;
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shared");
    std::fs::create_dir_all(root.join("drops")).unwrap();
    std::fs::create_dir_all(root.join("staging")).unwrap();
    // The last version written of every file: what its asset must hold at the end.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    // Versions written per cron file: the most uploads its asset may see completed.
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (name, len)) in CRON_FILES.iter().enumerate() {
        emu.create_asset(&key(name), "application/zip").unwrap();
        expected.insert(name.to_string(), rewrite(&root.join(name), *len, i as u64));
        versions.insert(name.to_string(), 1);
    }
    let configs: Vec<PathBuf> = MEMBERS
        .iter()
        .map(|m| member_config(dir.path(), m, &emu.base_url(), jobs(&root)))
        .collect();
    // Every member process ever started (the killed ones keep their logs here).
    let mut all: Vec<Member> = Vec::new();
    // Which entry of `all` each member runs as now.
    let mut current = [0usize; 3];
    for (i, m) in MEMBERS.iter().enumerate() {
        all.push(start_member(m, &configs[i], &pg.url()).await);
        current[i] = all.len() - 1;
    }
    for &c in &current {
        joined(&all[c]).await;
    }
    inject_faults(&emu);

    let started = Instant::now();
    let mut kills = 0;
    let mut drops = 0u64;
    let mut next_kill = started + Duration::from_secs(rng.random_range(3..6));
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if rng.random_bool(0.15) {
            let (name, len) = CRON_FILES[rng.random_range(0..CRON_FILES.len())];
            let sha = rewrite(&root.join(name), len, rng.random());
            expected.insert(name.to_owned(), sha);
            *versions.get_mut(name).unwrap() += 1;
        }
        if rng.random_bool(0.3) {
            let name = format!("d{drops:03}.zip");
            drops += 1;
            let staged = root.join("staging").join(&name);
            let sha = write_file(&staged, rng.random_range(1024..2 * MIB), rng.random());
            std::fs::rename(&staged, root.join("drops").join(&name)).unwrap();
            expected.insert(name, sha);
        }
        if Instant::now() >= next_kill {
            let i = rng.random_range(0..MEMBERS.len());
            let victim = &mut all[current[i]];
            signal(&victim.child, libc::SIGKILL);
            victim.child.wait().await.unwrap();
            kills += 1;
            // Half the time it comes back as a new member (a new pod): what the dead one held
            // is then taken over by the others once its lease lapses; else it takes up its own.
            let (name, config) = if rng.random_bool(0.5) {
                let name = format!("{}-{kills}", MEMBERS[i]);
                let config = member_config(dir.path(), &name, &emu.base_url(), jobs(&root));
                (name, config)
            } else {
                (MEMBERS[i].to_owned(), victim.config.clone())
            };
            all.push(start_member(&name, &config, &pg.url()).await);
            current[i] = all.len() - 1;
            next_kill = Instant::now() + Duration::from_secs(rng.random_range(3..7));
        }
    }
    let injected: u64 = [
        CallKind::GetAsset,
        CallKind::CreateUpload,
        CallKind::ListUploads,
        CallKind::GetUpload,
        CallKind::ListParts,
        CallKind::PutPart,
        CallKind::Complete,
        CallKind::PutStac,
        CallKind::Abort,
    ]
    .into_iter()
    .map(|k| emu.faults().injected(k))
    .sum();
    emu.faults().clear();

    // Settle: every member joined, every asset its last version, nothing in progress. A fire
    // every 2 s sends a cron file's last version again; a watched file's failed run waits for a
    // takeover (its claim) at most a lease.
    for &c in &current {
        joined(&all[c]).await;
    }
    let holds_all = || {
        expected
            .iter()
            .all(|(name, sha)| emu.object_sha256_hex(&key(name)).as_deref() == Some(sha.as_str()))
    };
    let settled = {
        let end = Instant::now() + Duration::from_secs(180);
        loop {
            if holds_all() && emu.in_progress_uploads().is_empty() {
                break true;
            }
            if Instant::now() > end {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let wrong: Vec<&String> = expected
        .iter()
        .filter(|(name, sha)| emu.object_sha256_hex(&key(name)).as_deref() != Some(sha.as_str()))
        .map(|(name, _)| name)
        .collect();
    assert!(
        settled,
        "seed {seed}: not settled in 180 s; assets not at their last version: {wrong:?}; in progress: {:?}\nlogs of the members now:\n{}",
        emu.in_progress_uploads(),
        current
            .iter()
            .map(|&c| format!("--- {}\n{}", all[c].name, all[c].log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Each version published once: a cron asset completes at most one upload per version
    // written, a watched file's asset exactly one.
    for (name, sha) in &expected {
        let completed = emu
            .uploads(&key(name))
            .iter()
            .filter(|u| u.status == UploadState::Completed)
            .count();
        let most = versions.get(name).copied().unwrap_or(1);
        assert!(
            (1..=most).contains(&completed),
            "seed {seed}: {name} ({sha}) completed {completed} uploads for {most} versions"
        );
    }
    // No fire run twice: one claim row per (job, fire) by the primary key, and a claim taken
    // over from a dead member at most once.
    let retaken_twice = pg
        .query_i64("SELECT count(*) FROM claims WHERE retaken > 1")
        .await;
    assert_eq!(
        retaken_twice, 0,
        "seed {seed}: claims retaken more than once"
    );
    let fires = pg
        .query_i64("SELECT count(*) FROM claims WHERE work LIKE 'fire %'")
        .await;
    let retaken = pg
        .query_i64("SELECT coalesce(sum(retaken), 0)::bigint FROM claims")
        .await;
    let cron_runs = pg
        .query_i64("SELECT count(*) FROM runs WHERE job IN ('c0', 'c1', 'c2')")
        .await;
    assert!(
        cron_runs <= fires + retaken,
        "seed {seed}: {cron_runs} cron runs for {fires} fires claimed and {retaken} retaken"
    );
    let runs = pg.query_i64("SELECT count(*) FROM runs").await;
    assert_no_overlapping_senders(&emu.part_log());
    let takeovers = all
        .iter()
        .map(|m| {
            m.log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("took over the work of lapsed instances"))
                .count()
        })
        .sum::<usize>();
    eprintln!(
        "| seconds | kills | takeovers | fires claimed | retaken | runs | files dropped | faults injected |"
    );
    eprintln!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    eprintln!(
        "| {seconds} | {kills} | {takeovers} | {fires} | {retaken} | {runs} | {drops} | {injected} |"
    );
    for &c in &current {
        let _ = terminate(&mut all[c].child).await;
    }
}
