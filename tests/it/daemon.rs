//! The real daemon binary: killed mid-upload and restarted, stopped with SIGTERM, reloaded with
//! SIGHUP; `check` and `status`. The emulator runs in the test on a loopback port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::fixtures::*;
use stac_uploadd_emulator::{AssetKey, UploadState};
use tokio::process::Command;

use crate::fixtures::basic_emulator as emulator;

fn job_file(dir: &Path, url: &str, schedule: &str, file: &Path, extra_defaults: &str) -> PathBuf {
    JobFile::new(dir, url)
        .defaults(&format!(
            "part_size = \"5MiB\"\nparallel = 2\npolicy = \"cancel\"\n{extra_defaults}"
        ))
        .cron("nightly", "big.zip", file, schedule)
        .write()
}

fn key() -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", "big.zip")
}

#[tokio::test]
async fn killed_mid_upload_and_restarted_the_upload_is_resumed() {
    let emu = emulator().await;
    emu.create_asset(&key(), "application/zip").unwrap();
    // 3 MB/s per connection: 5 parts of 5 MiB, 2 at a time, take several seconds.
    emu.faults().set_bandwidth_limit(Some(3_000_000));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    let sha = write_file(&file, 24 * MIB, 7);
    let config = job_file(dir.path(), &emu.base_url(), "* * * * * *", &file, "");

    let mut daemon = spawn_daemon(&[], &config);
    wait_for(Duration::from_secs(30), "a part to arrive", || {
        emu.uploads(&key())
            .iter()
            .any(|u| u.status == UploadState::InProgress && u.parts_received >= 1)
    })
    .await;
    signal(&daemon, libc::SIGKILL);
    daemon.wait().await.unwrap();
    let interrupted = emu.in_progress_uploads();
    assert_eq!(interrupted.len(), 1, "the kill left our upload in progress");
    let id = interrupted[0].1.id.clone();
    assert!(
        inflight_ids(&dir.path().join("state")).await.contains(&id),
        "recorded before its parts were sent"
    );

    emu.faults().set_bandwidth_limit(None);
    let (mut daemon, log) = spawn_logged(&[], &config);
    wait_for(
        Duration::from_secs(30),
        "the interrupted upload to complete",
        || {
            emu.uploads(&key())
                .iter()
                .any(|u| u.id == id && u.status == UploadState::Completed)
        },
    )
    .await;
    let status = terminate(&mut daemon).await;
    assert_eq!(status.code(), Some(0), "{:?}", log.lock().unwrap());
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("resuming an upload interrupted by a restart"))
    );
    assert!(
        emu.in_progress_uploads().is_empty(),
        "nothing left in progress"
    );
    assert_eq!(emu.object_sha256_hex(&key()).as_deref(), Some(sha.as_str()));
    assert_eq!(
        emu.asset(&key()).unwrap().checksum,
        Some(format!("1220{sha}"))
    );
    assert!(!inflight_ids(&dir.path().join("state")).await.contains(&id));

    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("resumed"), "{text}");
}

#[tokio::test]
async fn sigterm_gives_running_uploads_a_grace_period_then_aborts_them() {
    let emu = emulator().await;
    emu.create_asset(&key(), "application/zip").unwrap();
    emu.faults().set_bandwidth_limit(Some(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    write_file(&file, 24 * MIB, 8);
    let config = job_file(dir.path(), &emu.base_url(), "* * * * * *", &file, "");
    let mut daemon = Command::new(BIN)
        .args(["run", "--shutdown-grace", "1s", "--config"])
        .arg(&config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "an upload in progress", || {
        !emu.in_progress_uploads().is_empty()
    })
    .await;
    let status = terminate(&mut daemon).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        emu.in_progress_uploads().is_empty(),
        "the upload cut off by shutdown was aborted"
    );
    assert!(
        emu.uploads(&key())
            .iter()
            .any(|u| u.status == UploadState::Aborted)
    );
}

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_the_running_config() {
    let (emu, dir) = emulator_with_zip(&key()).await;
    let file = dir.path().join("big.zip");
    let sha = write_file(&file, 1000, 9);
    let config = job_file(dir.path(), &emu.base_url(), "* * * * * *", &file, "");
    let (mut daemon, log) = spawn_logged(&[], &config);
    wait_for(Duration::from_secs(30), "the first upload", || {
        emu.asset(&key()).and_then(|a| a.checksum).is_some()
    })
    .await;
    std::fs::write(&config, "[server]\nurl = 5\n").unwrap();
    signal(&daemon, libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload to be refused", || {
        log.lock().unwrap().iter().any(|l| {
            l.contains("reload refused; the running jobs go on unchanged")
                && l.contains("jobs.toml:2:7")
        })
    })
    .await;
    // Each run reads the asset first (the file is unchanged, so nothing more is sent).
    let reads = || emu.call_count(stac_uploadd_emulator::CallKind::GetAsset);
    let before = reads();
    wait_for(
        Duration::from_secs(10),
        "the old config to keep running",
        || reads() > before + 1,
    )
    .await;
    signal(&daemon, libc::SIGTERM);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), daemon.wait())
            .await
            .unwrap()
            .unwrap()
            .code(),
        Some(0)
    );
    assert_eq!(
        emu.asset(&key()).unwrap().checksum,
        Some(format!("1220{sha}"))
    );
    assert!(emu.in_progress_uploads().is_empty());
}

#[tokio::test]
async fn check_explains_a_good_file_and_locates_errors_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    let config = job_file(
        dir.path(),
        "http://127.0.0.1:9/api/stac/v1",
        "30 2 * * *",
        &file,
        "timezone = \"Europe/Zurich\"",
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("nightly") && text.contains("02:30:00 CE") && text.contains("policy Cancel"),
        "{text}"
    );

    let bad = job_file(
        dir.path(),
        "http://127.0.0.1:9/api/stac/v1",
        "61 2 * * *",
        &file,
        "",
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&bad)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("jobs.toml:19:12") && err.contains("invalid cron expression"),
        "{err}"
    );
    // The daemon refuses to start on the same file, with the same message.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jobs.toml:19:12"));
}
