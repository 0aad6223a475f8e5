//! The state folder under stress: a full disk stops a create before it is sent, corrupt caches
//! are moved aside and the daemon starts, a corrupt record of uploads in flight stops the start
//! with an exit code systemd does not restart on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::fixtures::*;
use stac_uploadd::state::{Outcome, StateStore};
use stac_uploadd::supervisor::{HttpUploader, Job, Pending, Shared, Work};
use stac_uploadd::trigger::Clock;
use stac_uploadd_emulator::{AssetKey, CallKind};
use tokio_util::sync::CancellationToken;

fn asset_key() -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", "s.zip")
}

fn job_file(dir: &Path, url: &str, file: &Path) -> PathBuf {
    JobFile::new(dir, url)
        .cron("nightly", "s.zip", file, "0 3 * * *")
        .lines("policy = \"retry\"\nretries = 1\nretry_min_delay = \"100ms\"\nretry_max_delay = \"100ms\"")
        .write()
}

/// Found by a tester: with the state folder full, the write-ahead record of a create failed, was
/// logged, and the parts were sent anyway. Now what cannot be recorded is not sent (the create,
/// or the parts of an upload then aborted), and the run's error names the state folder. The folder is a small tmpfs, filled; once it has room again, the next run
/// publishes and the store says it writes.
#[tokio::test]
async fn a_full_state_folder_sends_no_create() {
    let env = start().await;
    let (_, path, _) = env.asset_with_file("s.zip", 1000);
    let config_path = job_file(env.dir.path(), &env.emu.base_url(), &path);
    let env_var = |n: &str| (n == "TEST_STAC_PASSWORD").then(|| PASSWORD.to_owned());
    let text = std::fs::read_to_string(&config_path).unwrap();
    let mut config = stac_uploadd::config::parse(&text, &config_path, &env_var).unwrap();
    let state_dir = env.dir.path().join("state");
    let disk = SmallDisk::mount(&state_dir, 2048);
    let state = Arc::new(StateStore::open(&state_dir).await.unwrap());
    disk.fill();
    // A commit may still fit in the last page of the log the disk gave already: written (and
    // durable) until one does not.
    let mut full = false;
    for _ in 0..64 {
        if state.probe().await.is_err() {
            full = true;
            break;
        }
    }
    assert!(full, "the store kept writing on a full disk");
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
    // The marker is one frame of the log, the upload's record another: whichever found no
    // room, the request it was to protect was not sent.
    let creates = env.emu.call_count(CallKind::CreateUpload);
    if error.contains("cannot record the create") {
        assert_eq!(creates, 0, "no create sent: {error}");
    } else {
        assert!(error.contains("cannot record the upload"), "{error}");
        assert!(error.contains("the upload was aborted"), "{error}");
        assert_eq!(creates, 1, "{error}");
    }
    assert!(
        error.contains(&state_dir.display().to_string()),
        "the state folder is named: {error}"
    );
    assert_eq!(
        rec.attempts, 1,
        "a state folder that cannot be written is not retried"
    );
    assert_eq!(env.emu.call_count(CallKind::PutPart), 0, "no part sent");
    assert!(
        env.emu.in_progress_uploads().is_empty(),
        "nothing left in progress"
    );
    disk.free();
    let rec = job.run(Work::Scheduled(chrono::Utc::now())).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    assert_eq!(state.write_problem(), None);
}

/// Found by a tester: a corrupt `history.json` or digest cache made the daemon exit 1, which
/// systemd restarted every 5 s. They are caches: moved aside, the daemon starts and uploads.
#[tokio::test]
async fn corrupt_caches_are_moved_aside_and_the_daemon_starts() {
    let (emu, dir) = emulator_with_zip(&asset_key()).await;
    let file = dir.path().join("s.zip");
    write_file(&file, 1000, 3);
    let config = job_file(dir.path(), &emu.base_url(), &file);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("history.json"), b"{\"jobs\": [truncated").unwrap();
    std::fs::write(state.join("digests.json"), b"\xff\xfe not json").unwrap();

    let (mut daemon, log) = spawn_logged(&[], &config);
    wait_for(Duration::from_secs(30), "the daemon ready", || {
        log.lock().unwrap().iter().any(|l| l.contains("ready"))
    })
    .await;
    let status = terminate(&mut daemon).await;
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

    let (mut daemon, log) = spawn_logged(&[], &config);
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
        let out = tokio::process::Command::new(BIN)
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
    let out = tokio::process::Command::new(BIN)
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
    let (emu, dir) = emulator_with_zip(&asset_key()).await;
    let file = dir.path().join("s.zip");
    write_file(&file, 1000, 3);
    let config = job_file(dir.path(), &emu.base_url(), &file);
    let status = |extra: &'static [&'static str]| {
        let config = config.clone();
        async move {
            let out = tokio::process::Command::new(BIN)
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

    let (mut daemon, log) = spawn_logged(&[], &config);
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
    let state = StateStore::open(&dir.path().join("state")).await.unwrap();
    for i in 0..3 {
        state
            .record_run(stac_uploadd::state::RunRecord {
                instance: None,
                error_class: None,
                public: Vec::new(),
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
                assets: Vec::new(),
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

// ---- issue 17: lossless paths, bounded reads, the holder's pid, status without secrets ----

/// `run --once` with the test password and info logs.
async fn run_once(config: &Path, extra: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        once_command(extra, config).output(),
    )
    .await
    .expect("run --once ends at once")
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path whose file name is the bytes `name` (not UTF-8 in the tests below).
fn os_path(dir: &Path, name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    dir.join(std::ffi::OsStr::from_bytes(name))
}

/// Found by a tester: a watched file whose name is not UTF-8 panicked the state writer
/// (exit 101, the history never written again). Now, on a watch job whose asset id is the file's
/// name, such a name cannot make a server id: the run is refused before any call to the server.
/// On a job with a flat asset id the file is published (its name is no part of any id), and the
/// history keeps its path byte for byte.
#[tokio::test]
async fn a_file_name_that_is_not_utf8_is_refused_as_an_id_before_any_call_and_published_under_a_flat_one()
 {
    let emu = basic_emulator().await;
    let flat = AssetKey::item_asset("ch.test.collection", "item-1", "flat.zip");
    emu.create_asset(&flat, "application/zip").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let bad = os_path(&incoming, b"bad\xff.zip");
    let sha = write_file(&bad, 1000, 7);
    let config = dir.path().join("jobs.toml");
    std::fs::write(
        &config,
        format!(
            r#"{head}
[[job]]
name = "named"
collection = "ch.test.collection"
item = "item-2"
asset = "{{name}}"
[job.watch]
dir = "{incoming}"
pattern = "*.zip"
[job.asset_metadata]
type = "application/zip"

[[job]]
name = "flat"
collection = "ch.test.collection"
item = "item-1"
asset = "flat.zip"
[job.watch]
dir = "{incoming}"
pattern = "*.zip"
"#,
            head = job_file_head(dir.path(), &emu.base_url()),
            incoming = incoming.display()
        ),
    )
    .unwrap();

    let out = run_once(&config, &["--job", "named"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("named "))
        .unwrap_or_else(|| panic!("a summary line: {stdout}\n{stderr}"));
    assert!(line.starts_with("named failed "), "{line}");
    assert!(line.contains("would be refused by the server"), "{line}");
    assert!(line.contains("a file name that is not UTF-8"), "{line}");
    for kind in [
        CallKind::GetAsset,
        CallKind::PutStac,
        CallKind::CreateUpload,
        CallKind::PutPart,
        CallKind::ListUploads,
    ] {
        assert_eq!(
            emu.call_count(kind),
            0,
            "{kind:?}: nothing asked of the server"
        );
    }

    let out = run_once(&config, &["--job", "flat"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("flat uploaded "), "{stdout}");
    assert_eq!(emu.object_sha256_hex(&flat).as_deref(), Some(sha.as_str()));
    assert_eq!(emu.call_count(CallKind::CreateUpload), 1);

    // Both runs are in the history, with the path as it is on disk.
    let history = StateStore::open(&dir.path().join("state"))
        .await
        .unwrap()
        .history()
        .await
        .unwrap();
    for job in ["named", "flat"] {
        let runs = &history[job];
        assert_eq!(runs.len(), 1, "{job}: {runs:?}");
        assert_eq!(runs[0].file.as_deref(), Some(bad.as_path()), "{job}");
    }
}

/// A record of uploads in flight that is a link to /dev/zero, a FIFO, or larger than its limit
/// is not read (whole, or at all): the start stops at once with exit 3, naming the file and the
/// limit, and the file is left where it is.
#[tokio::test]
async fn an_inflight_record_that_is_huge_or_not_a_regular_file_stops_the_start_at_once_naming_it_and_the_limit()
 {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.zip");
    write_file(&file, 1000, 3);
    let config = job_file(dir.path(), &emu.base_url(), &file);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let inflight = state.join("inflight.json");
    let make: [(&str, &dyn Fn()); 3] = [
        ("a symbolic link", &|| {
            std::os::unix::fs::symlink("/dev/zero", &inflight).unwrap()
        }),
        ("a FIFO", &|| {
            let mode = rustix::fs::Mode::from_raw_mode(0o600);
            rustix::fs::mkfifoat(rustix::fs::CWD, &inflight, mode).unwrap();
        }),
        ("bytes", &|| {
            // Sparse: 17 MiB that take no room on disk.
            let f = std::fs::File::create(&inflight).unwrap();
            f.set_len(17 * MIB).unwrap();
        }),
    ];
    for (what, make) in make {
        make();
        let out = run_once(&config, &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
        assert!(
            stderr.contains(&inflight.display().to_string()),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(what), "{what}: {stderr}");
        assert!(stderr.contains("16MiB"), "the limit, {what}: {stderr}");
        assert!(
            stderr.contains("moving it aside loses them"),
            "{what}: {stderr}"
        );
        assert!(
            std::fs::symlink_metadata(&inflight).is_ok(),
            "{what}: left where it is"
        );
        std::fs::remove_file(&inflight).unwrap();
    }
}

/// Found by a tester: `history.json` being a directory stopped the start. The history and the
/// digest cache are caches: one that is a directory, a link to /dev/zero or over its limit is
/// moved aside like a corrupt one, and the run goes on.
#[tokio::test]
async fn a_history_or_digest_cache_that_is_not_a_regular_file_or_too_large_is_moved_aside_and_the_run_goes_on()
 {
    let (emu, dir) = emulator_with_zip(&asset_key()).await;
    let file = dir.path().join("s.zip");
    let sha = write_file(&file, 1000, 3);
    let config = job_file(dir.path(), &emu.base_url(), &file);
    let state = dir.path().join("state");
    for (history, digests) in [(true, false), (false, true)] {
        std::fs::create_dir_all(&state).unwrap();
        if history {
            std::fs::create_dir(state.join("history.json")).unwrap();
            std::fs::write(state.join("history.json/x"), b"x").unwrap();
            std::fs::File::create(state.join("digests.json"))
                .unwrap()
                .set_len(65 * MIB)
                .unwrap();
        }
        if digests {
            std::os::unix::fs::symlink("/dev/zero", state.join("digests.json")).unwrap();
        }
        let out = run_once(&config, &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("a state cache is not valid: moved aside"))
            .collect();
        if history {
            assert_eq!(warnings.len(), 2, "{stderr}");
            assert!(
                warnings.iter().any(|l| l.contains("a directory")),
                "{stderr}"
            );
            assert!(warnings.iter().any(|l| l.contains("64MiB")), "{stderr}");
        } else {
            assert_eq!(warnings.len(), 1, "{stderr}");
            assert!(warnings[0].contains("a symbolic link"), "{stderr}");
        }
        assert_eq!(
            emu.object_sha256_hex(&asset_key()).as_deref(),
            Some(sha.as_str())
        );
        let names: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let aside = |name: &str| {
            names
                .iter()
                .any(|n| n.starts_with(&format!("{name}.corrupt-")))
        };
        if history {
            assert!(aside("history.json") && aside("digests.json"), "{names:?}");
        } else {
            assert!(aside("digests.json"), "{names:?}");
        }
        // The history is written anew, in the store.
        let store = StateStore::open_read_only(&state).await.unwrap();
        assert_eq!(store.history().await.unwrap()["nightly"].len(), 1);
        store.close().await.unwrap();
        std::fs::remove_dir_all(&state).unwrap();
    }
}

/// Found by a tester: the "state folder in use" refusal did not say who holds it.
#[tokio::test]
async fn a_second_daemon_on_a_state_folder_names_the_pid_of_its_holder() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.zip");
    write_file(&file, 10, 3);
    let config = job_file(dir.path(), &emu.base_url(), &file);
    // This test process holds the folder, as a running daemon would.
    let _held = stac_uploadd::state::lock_state(&dir.path().join("state")).unwrap();
    let (mut daemon, log) = spawn_logged(&[], &config);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("refused at once")
        .unwrap();
    wait_for(Duration::from_secs(5), "the error line", || {
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("state folder"))
    })
    .await;
    let log = log.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("pid {}", std::process::id())),
        "the holder's pid: {log}"
    );
}

/// Found by a tester: `status` asked for the API password, though it only reads the state
/// folder: run from a shell without the daemon's environment, it refused.
#[tokio::test]
async fn status_needs_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.zip");
    write_file(&file, 10, 3);
    let config = job_file(dir.path(), "http://127.0.0.1:9/api/stac/v1", &file);
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["status", "--config"])
        .arg(&config)
        .env_remove("TEST_STAC_PASSWORD")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no runs recorded yet"),
        "{}",
        text(&out.stdout)
    );
}

/// A read-only state folder (a remounted disk): the store does not pretend to write. Opening it
/// is an error naming the database, which the daemon reports before it starts anything.
#[tokio::test]
async fn a_read_only_state_folder_is_an_error_naming_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = SmallDisk::mount(&state, 2048);
    let s = StateStore::open(&state).await.unwrap();
    s.add_inflight(an_upload()).await.unwrap();
    s.close().await.unwrap();
    drop(s);
    disk.read_only(true);
    let outcome = StateStore::open(&state).await;
    disk.read_only(false);
    match outcome {
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.contains(&state.join("state.db").display().to_string()),
                "{m}"
            );
            eprintln!("read-only: open refused: {m}");
        }
        Ok(s) => {
            let e = s.probe().await.unwrap_err().to_string();
            assert!(e.contains("state.db"), "{e}");
            assert_eq!(s.write_problem(), Some(e.clone()));
            eprintln!("read-only: opened, probe refused: {e}");
        }
    }
}

/// A database damaged where the digest cache lives (pages overwritten at the end of the file):
/// moved aside with a warning, and the new one keeps the uploads in flight and create markers
/// read from it; the caches start empty.
#[tokio::test]
async fn a_damaged_database_is_moved_aside_keeping_its_uploads_in_flight() {
    use stac_upload::DigestCache as _;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = StateStore::open(&state).await.unwrap();
    let up = an_upload();
    let marker = stac_uploadd::state::Creating {
        target: stac_client::AssetTarget::item_asset("c", "i", "b"),
        multihash: "1220cd".into(),
        at: chrono::Utc::now(),
    };
    s.add_inflight(up.clone()).await.unwrap();
    s.add_creating(marker.clone()).await.unwrap();
    for n in 0..5_000u64 {
        s.put(
            stac_upload::DigestKey {
                dev: 1,
                ino: n,
                size: 3,
                mtime: (n as i64, 0),
                ctime: (0, 0),
                part_size: 0,
            },
            &stac_upload::FileDigest {
                multihash: stac_client::Multihash::from_hex(&format!("1220{}", "ab".repeat(32))),
                part_md5s: Vec::new(),
                size: 3,
            },
        );
    }
    s.close().await.unwrap();
    drop(s);
    let db = state.join("state.db");
    let len = std::fs::metadata(&db).unwrap().len();
    let mut bytes = std::fs::read(&db).unwrap();
    let from = (len as usize / 2) & !1023;
    for b in &mut bytes[from..] {
        *b = 0xa5;
    }
    std::fs::write(&db, &bytes).unwrap();

    let s = StateStore::open(&state).await.unwrap();
    assert_eq!(
        s.inflight().await.unwrap(),
        vec![up],
        "the upload in flight kept"
    );
    assert_eq!(s.creating().await.unwrap(), vec![marker], "the marker kept");
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("state.db.corrupt-")),
        "moved aside: {names:?}"
    );
    assert_eq!(s.row_counts().await.unwrap().unwrap()[3], ("digests", 0));
    s.close().await.unwrap();
}

/// A file that is no database at all: its uploads in flight cannot be read, so it is left where
/// it is and the start refused, saying what moving it aside would lose (exit 3 for the daemon).
#[tokio::test]
async fn a_database_whose_uploads_cannot_be_read_stops_the_start_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("state.db"), vec![0x42; 8192]).unwrap();
    let e = StateStore::open(&state).await.unwrap_err();
    assert!(e.needs_operator(), "{e}");
    let m = e.to_string();
    assert!(m.contains("moving it aside loses them"), "{m}");
    assert!(m.contains("state.db"), "{m}");
    assert_eq!(
        std::fs::read(state.join("state.db")).unwrap(),
        vec![0x42; 8192]
    );
}

/// An upload in flight, as a store records it.
fn an_upload() -> stac_uploadd::state::InFlight {
    stac_uploadd::state::InFlight {
        upload_id: stac_client::UploadId("u1".into()),
        job: "j".into(),
        target: stac_client::AssetTarget::item_asset("c", "i", "a"),
        file: "/data/a".into(),
        size: 1,
        mtime: (1, 2),
        ino: 3,
        multihash: "1220ab".into(),
        part_size: 5 << 20,
        created: chrono::Utc::now(),
        urls_expire: None,
        pid: 1,
    }
}

/// A `state.db` of the previous release (schema 0001: no owners, no leases, digests without a
/// host): the new release migrates it at start, adopts its upload in flight and keeps its digest
/// cache and history.
#[tokio::test]
async fn a_database_of_the_previous_schema_is_migrated_and_adopted() {
    use sqlx::sqlite::SqliteConnectOptions;
    let dir = tempfile::tempdir().unwrap();
    let only_first = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/0001_state.sql"),
        only_first.path().join("0001_state.sql"),
    )
    .unwrap();
    let db = dir.path().join(stac_uploadd::state::DB_FILE);
    let pool = sqlx::SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    sqlx::migrate::Migrator::new(only_first.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let up = an_upload();
    sqlx::query(
        "INSERT INTO uploads (target, multihash, upload_id, job, at, pid, record) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(up.target.to_string())
    .bind(up.multihash.to_ascii_lowercase())
    .bind(up.upload_id.0.clone())
    .bind(up.job.clone())
    .bind(up.created.to_rfc3339())
    .bind(i64::from(up.pid))
    .bind(serde_json::to_string(&up).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO digests (seq, mtime_s, mtime_ns, ino, dev, size, ctime_s, ctime_ns, \
         part_size, multihash, md5s) VALUES (1, 10, 20, 30, 40, 50, 60, 70, 80, $1, '')",
    )
    .bind(format!("1220{}", "cd".repeat(32)))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let s = StateStore::open(dir.path()).await.unwrap();
    assert_eq!(s.inflight().await.unwrap(), vec![up.clone()], "adopted");
    assert!(s.is_ours(&up.upload_id).await.unwrap());
    let key = stac_upload::DigestKey {
        dev: 40,
        ino: 30,
        size: 50,
        mtime: (10, 20),
        ctime: (60, 70),
        part_size: 80,
    };
    let cached = stac_upload::DigestCache::get(&s, &key).await;
    assert_eq!(
        cached.map(|d| d.multihash.as_str().to_owned()),
        Some(format!("1220{}", "cd".repeat(32))),
        "the digest cache carried over"
    );
    s.remove_inflight(&up.upload_id).await.unwrap();
    assert!(s.inflight().await.unwrap().is_empty());
    s.close().await.unwrap();
}
