//! The state folder under stress: a full disk stops a create before it is sent, corrupt caches
//! are moved aside and the daemon starts, a corrupt record of uploads in flight stops the start
//! with an exit code systemd does not restart on.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use stac_uploadd::state::{Outcome, StateStore};
use stac_uploadd::supervisor::{Clock, HttpUploader, Job, Pending, Shared, Work};
use stac_uploadd_emulator::{AssetKey, CallKind};
use tokio_util::sync::CancellationToken;

fn asset_key() -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", "s.zip")
}

fn job_file(dir: &Path, url: &str, file: &Path) -> PathBuf {
    let path = dir.join("jobs.toml");
    std::fs::write(
        &path,
        format!(
            r#"{head}
[[job]]
name = "nightly"
collection = "ch.test.collection"
item = "item-1"
asset = "s.zip"
file = "{file}"
schedule = "0 3 * * *"
policy = "retry"
retries = 1
retry_min_delay = "100ms"
retry_max_delay = "100ms"
"#,
            head = job_file_head(dir, url),
            file = file.display()
        ),
    )
    .unwrap();
    path
}

/// Found by a tester: with the state folder full, the write-ahead record of a create failed, was
/// logged, and the parts were sent anyway. Now the create is not sent, and the run's error names
/// the state folder. (Writes into /dev/full answer ENOSPC, as on a full disk.)
#[tokio::test]
async fn a_full_state_folder_sends_no_create() {
    let env = start().await;
    let target = env.item_asset("s.zip");
    let (path, _) = env.file("s.zip", 1000);
    let config_path = job_file(env.dir.path(), &env.emu.base_url(), &path);
    let env_var = |n: &str| (n == "TEST_STAC_PASSWORD").then(|| PASSWORD.to_owned());
    let text = std::fs::read_to_string(&config_path).unwrap();
    let mut config = stac_uploadd::config::parse(&text, &config_path, &env_var).unwrap();
    let state_dir = env.dir.path().join("state");
    let state = Arc::new(StateStore::open(&state_dir).unwrap());
    std::os::unix::fs::symlink("/dev/full", state_dir.join(".inflight.json.tmp")).unwrap();
    let job = Job {
        spec: config.jobs.remove(0),
        shared: Arc::new(Shared::new(
            HttpUploader(env.client.clone()),
            state.clone(),
            Clock::System,
        )),
        pending: Arc::new(Pending::default()),
        abort_runs: CancellationToken::new(),
    };

    let rec = job.run(Work::Scheduled(chrono::Utc::now())).await;

    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    let error = rec.error.unwrap_or_default();
    assert!(error.contains("cannot record the create"), "{error}");
    assert!(
        error.contains(&state_dir.display().to_string()),
        "the state folder is named: {error}"
    );
    assert_eq!(
        rec.attempts, 1,
        "a state folder that cannot be written is not retried"
    );
    assert_eq!(
        env.emu.call_count(CallKind::CreateUpload),
        0,
        "no create sent"
    );
    assert_eq!(env.emu.call_count(CallKind::PutPart), 0);
    assert!(env.emu.uploads(&key(&target)).is_empty());
}

/// Found by a tester: a corrupt `history.json` or digest cache made the daemon exit 1, which
/// systemd restarted every 5 s. They are caches: moved aside, the daemon starts and uploads.
#[tokio::test]
async fn corrupt_caches_are_moved_aside_and_the_daemon_starts() {
    let emu = basic_emulator().await;
    emu.create_asset(&asset_key(), "application/zip").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.zip");
    write_file(&file, 1000, 3);
    let config = job_file(dir.path(), &emu.base_url(), &file);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("history.json"), b"{\"jobs\": [truncated").unwrap();
    std::fs::write(state.join("digests.json"), b"\xff\xfe not json").unwrap();

    let mut daemon = spawn_daemon(&[], &config);
    let log = capture_stderr(&mut daemon);
    wait_for(Duration::from_secs(30), "the daemon ready", || {
        log.lock().unwrap().iter().any(|l| l.contains("ready"))
    })
    .await;
    signal(&daemon, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("a state cache is not valid: moved aside"))
            .count(),
        2,
        "one warning per cache: {log:?}"
    );
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for cache in ["history.json", "digests.json"] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("{cache}.corrupt-"))),
            "{cache} kept aside: {names:?}"
        );
    }
}

/// A corrupt record of the uploads in flight cannot be moved aside without losing track of
/// uploads that block their assets: the daemon does not start, says what moving it would lose,
/// and exits 3, which the systemd unit does not restart on.
#[tokio::test]
async fn a_corrupt_inflight_record_stops_the_start_with_exit_3() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.zip");
    write_file(&file, 1000, 3);
    let config = job_file(dir.path(), &emu.base_url(), &file);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        state.join("inflight.json"),
        b"{\"uploads\": [{\"upload_id\"",
    )
    .unwrap();

    let mut daemon = spawn_daemon(&[], &config);
    let log = capture_stderr(&mut daemon);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("exits at once")
        .unwrap();
    // The reader task may lag the exit by a moment.
    wait_for(Duration::from_secs(5), "the error line", || {
        log.lock().unwrap().iter().any(|l| l.contains("error"))
    })
    .await;
    let log = log.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("inflight.json"), "{log}");
    assert!(log.contains("moving it aside loses them"), "{log}");
    assert!(state.join("inflight.json").exists(), "left where it is");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/stac-uploadd.service"),
    )
    .unwrap();
    assert!(
        unit.lines()
            .any(|l| l.starts_with("RestartPreventExitStatus=") && l.contains(" 3")),
        "the unit does not restart on 3"
    );
}

/// Found by a tester: `check` said ok for a `state_dir` that is /proc, a file, or not writable.
#[tokio::test]
async fn check_refuses_a_state_folder_the_daemon_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.zip");
    write_file(&file, 10, 1);
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, b"x").unwrap();
    let cases = [
        ("/proc/stac-uploadd".to_owned(), "cannot be created"),
        ("/proc".to_owned(), "cannot create files in it"),
        (a_file.display().to_string(), "is not a directory"),
        (
            a_file.join("below").display().to_string(),
            "is not a directory",
        ),
    ];
    let config = job_file(dir.path(), "http://127.0.0.1:9/api/stac/v1", &file);
    let text = std::fs::read_to_string(&config).unwrap();
    for (state_dir, expected) in cases {
        let replaced = text.replacen(
            &format!("state_dir = \"{}\"", dir.path().join("state").display()),
            &format!("state_dir = \"{state_dir}\""),
            1,
        );
        assert_ne!(replaced, text);
        std::fs::write(&config, &replaced).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stac-uploadd"))
            .args(["check", "--config"])
            .arg(&config)
            .env("TEST_STAC_PASSWORD", PASSWORD)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{state_dir}: {err}");
        assert!(
            err.contains(&format!("state_dir {state_dir}")) && err.contains(expected),
            "{state_dir}: expected {expected:?} in {err}"
        );
    }
    // A folder that does not exist yet but can be made is fine, and check makes nothing.
    let later = dir.path().join("later/state");
    std::fs::write(
        &config,
        text.replacen(
            &dir.path().join("state").display().to_string(),
            &later.display().to_string(),
            1,
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stac-uploadd"))
        .args(["check", "--config"])
        .arg(&config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!later.exists() && !dir.path().join("later").exists());
}

/// `status` says whether a daemon holds the state folder now, takes `--runs N`, and prints no
/// empty table.
#[tokio::test]
async fn status_names_the_daemon_holding_the_folder_and_its_runs() {
    let emu = basic_emulator().await;
    emu.create_asset(&asset_key(), "application/zip").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.zip");
    write_file(&file, 1000, 3);
    let config = job_file(dir.path(), &emu.base_url(), &file);
    let status = |extra: &'static [&'static str]| {
        let config = config.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stac-uploadd"))
                .args(["status", "--config"])
                .arg(&config)
                .args(extra)
                .env("TEST_STAC_PASSWORD", PASSWORD)
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let before = status(&[]).await;
    assert!(before.contains("no daemon holds"), "{before}");
    assert!(before.contains("no runs recorded yet"), "{before}");
    assert!(
        !before.contains("finished (UTC)"),
        "no empty table: {before}"
    );

    let mut daemon = spawn_daemon(&[], &config);
    let log = capture_stderr(&mut daemon);
    wait_for(Duration::from_secs(30), "the daemon ready", || {
        log.lock().unwrap().iter().any(|l| l.contains("ready"))
    })
    .await;
    let during = status(&[]).await;
    let pid = daemon.id().unwrap();
    assert!(
        during.contains(&format!("a daemon (pid {pid}) holds")),
        "{during}"
    );
    signal(&daemon, libc::SIGTERM);
    tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("stops")
        .unwrap();
    // Three runs recorded by hand: --runs 2 shows two.
    let state = StateStore::open(&dir.path().join("state")).unwrap();
    for i in 0..3 {
        state
            .record_run(stac_uploadd::state::RunRecord {
                job: "nightly".into(),
                started: chrono::Utc::now(),
                finished: chrono::Utc::now(),
                outcome: Outcome::Uploaded,
                asset: "s.zip".into(),
                item: None,
                file: None,
                bytes: i,
                attempts: 1,
                upload_id: None,
                error: None,
            })
            .await
            .unwrap();
    }
    state.flush().await.unwrap();
    let after = status(&["--runs", "2"]).await;
    assert!(after.contains("no daemon holds"), "{after}");
    assert_eq!(
        after.lines().filter(|l| l.starts_with("nightly")).count(),
        2,
        "{after}"
    );
}
