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

/// Runs the daemon until a part of its upload has arrived, then SIGKILLs it.
async fn kill_mid_upload(emu: &stac_uploadd_emulator::Emulator, config: &Path) {
    let mut daemon = spawn_daemon(&[], config);
    wait_for(Duration::from_secs(30), "a part to arrive", || {
        emu.uploads(&key())
            .iter()
            .any(|u| u.status == UploadState::InProgress && u.parts_received >= 1)
    })
    .await;
    signal(&daemon, libc::SIGKILL);
    daemon.wait().await.unwrap();
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

    kill_mid_upload(&emu, &config).await;
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

/// An upgrade: the state folder as the previous release left it after a kill (JSON files: the
/// upload in flight, a create marker, history, digests), opened by this release. The upload is
/// resumed as before, everything is imported into the database, and the files are kept aside.
#[tokio::test]
async fn a_state_folder_of_the_previous_release_is_imported_and_its_upload_resumed() {
    use stac_upload::DigestCache as _;
    use stac_uploadd::state::{Creating, StateStore};
    let emu = emulator().await;
    emu.create_asset(&key(), "application/zip").unwrap();
    emu.faults().set_bandwidth_limit(Some(3_000_000));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    let sha = write_file(&file, 24 * MIB, 9);
    let config = job_file(dir.path(), &emu.base_url(), "* * * * * *", &file, "");
    let state = dir.path().join("state");

    // A run of this release killed mid-upload gives a real upload in flight and its record...
    kill_mid_upload(&emu, &config).await;
    let store = StateStore::open(&state).await.unwrap();
    let uploads = store.inflight().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let id = uploads[0].upload_id.clone();
    // ...which the previous release would have kept as JSON files, and no database.
    for f in std::fs::read_dir(&state).unwrap() {
        let f = f.unwrap().path();
        if f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("state.db")
        {
            std::fs::remove_file(f).unwrap();
        }
    }
    let old = StateStore::open_json(&state).unwrap();
    old.add_inflight(uploads[0].clone()).await.unwrap();
    let marker = Creating {
        target: stac_client::AssetTarget::item_asset("ch.test.collection", "item-1", "other.zip"),
        multihash: format!("1220{}", "cd".repeat(32)),
        at: chrono::Utc::now(),
    };
    old.add_creating(marker.clone()).await.unwrap();
    let now = chrono::Utc::now();
    old.record_run(stac_uploadd::state::RunRecord {
        instance: None,
        error_class: None,
        public: Vec::new(),
        job: "nightly".into(),
        started: now,
        finished: now,
        outcome: stac_uploadd::state::Outcome::Failed,
        asset: "big.zip".into(),
        item: Some("item-1".into()),
        file: Some(file.clone()),
        bytes: 0,
        attempts: 1,
        upload_id: None,
        error: Some("an imported run".into()),
        assets: Vec::new(),
    })
    .await
    .unwrap();
    let digest_key = stac_upload::DigestKey {
        dev: 1,
        ino: 2,
        size: 3,
        mtime: (4, 5),
        ctime: (6, 7),
        part_size: 8,
    };
    let digest = stac_upload::FileDigest {
        multihash: stac_client::Multihash::from_hex(&format!("1220{}", "ef".repeat(32))),
        part_md5s: Vec::new(),
        size: 3,
    };
    old.put(digest_key.clone(), &digest);
    old.flush().await.unwrap();
    drop(old);
    for name in ["inflight.json", "history.json", "digests.json"] {
        assert!(state.join(name).exists(), "{name}");
    }

    emu.faults().set_bandwidth_limit(None);
    let (mut daemon, log) = spawn_logged(&[], &config);
    wait_for(
        Duration::from_secs(30),
        "the upload resumed and complete",
        || {
            emu.uploads(&key())
                .iter()
                .any(|u| u.id == id.0 && u.status == UploadState::Completed)
        },
    )
    .await;
    let status = terminate(&mut daemon).await;
    let log = log.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("importing the state of an earlier release"),
        "{log}"
    );
    assert!(
        log.contains("resuming an upload interrupted by a restart"),
        "{log}"
    );
    assert_eq!(emu.object_sha256_hex(&key()).as_deref(), Some(sha.as_str()));
    assert!(emu.in_progress_uploads().is_empty());
    for name in ["inflight.json", "history.json", "digests.json"] {
        assert!(!state.join(name).exists(), "{name} moved");
        assert!(
            state.join(format!("{name}.imported")).exists(),
            "{name} kept aside"
        );
    }
    let store = StateStore::open(&state).await.unwrap();
    assert!(
        store.inflight().await.unwrap().is_empty(),
        "finished: forgotten"
    );
    assert_eq!(
        store.creating().await.unwrap(),
        vec![marker],
        "the marker imported"
    );
    assert!(
        store
            .history()
            .await
            .unwrap()
            .values()
            .flatten()
            .any(|r| r.error.as_deref() == Some("an imported run")),
        "the history imported"
    );
    assert_eq!(
        store.get(&digest_key).await,
        Some(digest),
        "the digest imported"
    );
    store.close().await.unwrap();
}
