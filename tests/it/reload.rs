//! SIGHUP on the real daemon binary: a reload stops nothing. Unchanged jobs run on untouched
//! (a 1-second cron job keeps firing, a slow upload completes as it was), changed jobs take their
//! new spec, removed jobs stop, new jobs start, and SIGTERM is served at every moment.
//!
//! Runs are observed on the emulator: every run of a job reads its asset first (skip-unchanged),
//! so the emulator's record of an asset's reads holds the times its job ran.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fixtures::*;
use stac_uploadd_emulator::{AssetKey, Emulator, UploadState};

fn key(asset: &str) -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", asset)
}

/// A job uploading `file` to `asset` every second, with `extra` lines.
fn job(name: &str, asset: &str, file: &Path, extra: &str) -> String {
    format!(
        r#"
[[job]]
name = "{name}"
collection = "ch.test.collection"
item = "item-1"
asset = "{asset}"
file = "{file}"
schedule = "* * * * * *"
policy = "cancel"
{extra}
"#,
        file = file.display()
    )
}

fn write_jobs(dir: &Path, url: &str, jobs: &[String]) -> PathBuf {
    let path = dir.join("jobs.toml");
    std::fs::write(
        &path,
        format!(
            "{}[defaults]\npart_size = \"5MiB\"\nparallel = 1\n{}",
            job_file_head(dir, url),
            jobs.concat()
        ),
    )
    .unwrap();
    path
}

/// A log line without terminal colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn holds(emu: &Emulator, asset: &str, sha: &str) -> bool {
    emu.asset(&key(asset)).and_then(|a| a.checksum) == Some(format!("1220{sha}"))
}

/// Found by a tester: SIGHUP during one job's slow upload stopped every other job until that
/// upload ended (a 5-second cron job fired 0 times in 24 s).
#[tokio::test]
async fn a_reload_during_a_slow_upload_stops_no_job() {
    let emu = basic_emulator().await;
    for a in ["big.zip", "tick.zip", "added.zip"] {
        emu.create_asset(&key(a), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (big, tick, added) = (
        dir.path().join("big.zip"),
        dir.path().join("tick.zip"),
        dir.path().join("added.zip"),
    );
    // 24 MiB at 2 MB/s: about 12 s of sending, in 5 parts; a reload that waited for it would
    // stop every job for the 10 s or so left after the first part.
    let big_sha = write_file(&big, 24 * MIB, 1);
    write_file(&tick, 100, 2);
    let added_sha = write_file(&added, 100, 3);
    let slow = job("slow", "big.zip", &big, "bandwidth_limit = \"2MB/s\"");
    let ticking = job("tick", "tick.zip", &tick, "");
    let config = write_jobs(
        dir.path(),
        &emu.base_url(),
        &[slow.clone(), ticking.clone()],
    );

    let (mut daemon, log) = spawn_logged(&[], &config);
    wait_for(Duration::from_secs(30), "the slow upload under way", || {
        emu.uploads(&key("big.zip"))
            .iter()
            .any(|u| u.status == UploadState::InProgress && u.parts_received >= 1)
    })
    .await;
    let slow_upload = emu.uploads(&key("big.zip"))[0].id.clone();

    write_jobs(
        dir.path(),
        &emu.base_url(),
        &[slow, ticking, job("added", "added.zip", &added, "")],
    );
    let reloaded_at = Instant::now();
    signal(&daemon, libc::SIGHUP);
    wait_for(Duration::from_secs(30), "the added job's upload", || {
        holds(&emu, "added.zip", &added_sha)
    })
    .await;
    assert_eq!(
        emu.uploads(&key("big.zip"))[0].status,
        UploadState::InProgress,
        "the new job ran while the slow upload was still going: {:?}",
        log.lock().unwrap()
    );
    wait_for(
        Duration::from_secs(60),
        "the slow upload to complete",
        || holds(&emu, "big.zip", &big_sha),
    )
    .await;
    let completed_at = Instant::now();
    let tick_runs = emu.asset_reads(&key("tick.zip"));
    let status = terminate(&mut daemon).await;
    let log: Vec<String> = log.lock().unwrap().iter().map(|l| plain(l)).collect();
    assert_eq!(status.code(), Some(0), "{log:?}");

    // The slow upload went on untouched: one upload, the one under way at the reload.
    let uploads = emu.uploads(&key("big.zip"));
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].id, slow_upload);
    assert_eq!(uploads[0].status, UploadState::Completed);
    // The 1-second job fired throughout: around the reload and until the slow upload was done.
    let during: Vec<_> = tick_runs
        .iter()
        .filter(|t| **t >= reloaded_at && **t <= completed_at)
        .collect();
    assert!(
        during.len() >= 2,
        "the tick job ran {} times between the reload and the end of the slow upload ({:?})",
        during.len(),
        completed_at - reloaded_at
    );
    let longest = tick_runs
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    // Generous for a loaded machine, far below what a frozen reload leaves.
    assert!(
        longest < Duration::from_secs(5),
        "a gap of {longest:?} between two runs of a 1-second job"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("reloaded") && l.contains("added") && l.contains("unchanged=2")),
        "{log:?}"
    );
    assert!(emu.in_progress_uploads().is_empty());
}

/// A reload that adds, changes and removes jobs: the new job runs, the changed one takes its
/// new spec (another asset), the removed one stops, the unchanged one goes on.
#[tokio::test]
async fn a_reload_adds_changes_and_removes_jobs() {
    let emu = basic_emulator().await;
    for a in ["tick.zip", "gone.zip", "c1.zip", "c2.zip", "new.zip"] {
        emu.create_asset(&key(a), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str, seed| {
        let p = dir.path().join(n);
        (write_file(&p, 100, seed), p)
    };
    let (_, tick) = file("tick.zip", 1);
    let (_, gone) = file("gone.zip", 2);
    let (c_sha, c) = file("c.zip", 3);
    let (new_sha, new) = file("new.zip", 4);
    let ticking = job("tick", "tick.zip", &tick, "");
    let config = write_jobs(
        dir.path(),
        &emu.base_url(),
        &[
            ticking.clone(),
            job("gone", "gone.zip", &gone, ""),
            job("changed", "c1.zip", &c, ""),
        ],
    );
    let runs = |a: &str| emu.asset_reads(&key(a)).len();
    let (mut daemon, log) = spawn_logged(&[], &config);
    wait_for(Duration::from_secs(30), "every job to run", || {
        ["tick.zip", "gone.zip", "c1.zip"]
            .iter()
            .all(|a| runs(a) >= 1)
    })
    .await;

    write_jobs(
        dir.path(),
        &emu.base_url(),
        &[
            ticking,
            job("changed", "c2.zip", &c, ""),
            job("added", "new.zip", &new, ""),
        ],
    );
    signal(&daemon, libc::SIGHUP);
    wait_for(Duration::from_secs(30), "the reload", || {
        log.lock().unwrap().iter().any(|l| l.contains("reloaded"))
    })
    .await;
    wait_for(
        Duration::from_secs(30),
        "the changed and added jobs",
        || holds(&emu, "c2.zip", &c_sha) && holds(&emu, "new.zip", &new_sha),
    )
    .await;
    // A run under way at the reload may still finish; after it, the old jobs never run again.
    // Three more runs of the 1-second job are the clock.
    let (gone_after, c1_after) = (runs("gone.zip"), runs("c1.zip"));
    let ticks = runs("tick.zip");
    wait_for(
        Duration::from_secs(30),
        "three more runs of the tick job",
        || runs("tick.zip") >= ticks + 3,
    )
    .await;
    assert_eq!(runs("gone.zip"), gone_after, "the removed job still runs");
    assert_eq!(
        runs("c1.zip"),
        c1_after,
        "the changed job still runs its old spec"
    );
    let status = terminate(&mut daemon).await;
    let log: Vec<String> = log.lock().unwrap().iter().map(|l| plain(l)).collect();
    assert_eq!(status.code(), Some(0), "{log:?}");
    let line = log
        .iter()
        .find(|l| l.contains("reloaded"))
        .expect("the reload line");
    assert!(
        line.contains(r#"added=["added"]"#)
            && line.contains(r#"changed=["changed"]"#)
            && line.contains(r#"removed=["gone"]"#)
            && line.contains("unchanged=1"),
        "{line}"
    );
}

/// Found by a tester: SIGTERM sent during a reload waited for the slow upload (23 s with a 3 s
/// grace). Now the reload holds nothing up: the daemon stops within its grace period plus the
/// abort of what is left.
#[tokio::test]
async fn sigterm_right_after_a_sighup_stops_within_the_grace_period() {
    let emu = basic_emulator().await;
    emu.create_asset(&key("big.zip"), "application/zip")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.zip");
    // 30 MiB at 1 MB/s: half a minute of sending, far beyond the grace period.
    write_file(&big, 30 * MIB, 5);
    let slow = job("slow", "big.zip", &big, "bandwidth_limit = \"1MB/s\"");
    let config = write_jobs(dir.path(), &emu.base_url(), std::slice::from_ref(&slow));
    let (mut daemon, log) = spawn_logged(&["run", "--shutdown-grace", "1s"], &config);
    wait_for(Duration::from_secs(30), "the slow upload under way", || {
        emu.uploads(&key("big.zip"))
            .iter()
            .any(|u| u.status == UploadState::InProgress)
    })
    .await;
    let tick = dir.path().join("tick.zip");
    write_file(&tick, 10, 6);
    emu.create_asset(&key("tick.zip"), "application/zip")
        .unwrap();
    write_jobs(
        dir.path(),
        &emu.base_url(),
        &[slow, job("tick", "tick.zip", &tick, "")],
    );
    signal(&daemon, libc::SIGHUP);
    signal(&daemon, libc::SIGTERM);
    // Far below the half minute the upload needs: the grace, the abort, the exit.
    let status = tokio::time::timeout(Duration::from_secs(20), daemon.wait())
        .await
        .unwrap_or_else(|_| panic!("still running: {:?}", log.lock().unwrap()))
        .unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{log:?}");
    assert!(
        emu.in_progress_uploads().is_empty(),
        "the slow upload was aborted: {log:?}"
    );
    assert_eq!(emu.uploads(&key("big.zip"))[0].status, UploadState::Aborted);
}

/// Issue 17: a changed `[observe] listen` was ignored on reload without a word. The listener
/// cannot move under a running daemon; the reload says so, naming the old and the new address.
#[tokio::test]
async fn a_reload_that_moves_the_observe_listener_warns_that_a_restart_is_needed() {
    let emu = basic_emulator().await;
    emu.create_asset(&key("tick.zip"), "application/zip")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tick = dir.path().join("tick.zip");
    write_file(&tick, 100, 2);
    let (old, new) = (free_port(), free_port());
    let path = dir.path().join("jobs.toml");
    let write = |port: u16| {
        std::fs::write(
            &path,
            format!(
                "{}[observe]\nlisten = \"127.0.0.1:{port}\"\n{}",
                job_file_head(dir.path(), &emu.base_url()),
                job("tick", "tick.zip", &tick, "")
            ),
        )
        .unwrap();
    };
    write(old);
    let (mut daemon, log) = spawn_logged(&[], &path);
    wait_for(Duration::from_secs(30), "the first run", || {
        !emu.asset_reads(&key("tick.zip")).is_empty()
    })
    .await;
    write(new);
    signal(&daemon, libc::SIGHUP);
    let (old_addr, new_addr) = (format!("127.0.0.1:{old}"), format!("127.0.0.1:{new}"));
    wait_for(
        Duration::from_secs(30),
        "a warning naming the old and the new listener",
        || {
            log.lock().unwrap().iter().any(|l| {
                let l = plain(l);
                l.contains("WARN")
                    && l.contains("restart")
                    && l.contains(&format!("{old_addr} -> {new_addr}"))
            })
        },
    )
    .await;
    let status = terminate(&mut daemon).await;
    assert_eq!(status.code(), Some(0), "{:?}", log.lock().unwrap());
}
