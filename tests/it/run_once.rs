//! `stac-uploadd run --once`, the real binary against the emulator on a loopback port: exit codes
//! and summary lines, retries counted on the server, a watch job's present files, `--job`, the
//! state folder's lock, crash safety across runs, SIGTERM; and the shipped systemd units checked
//! by `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::fixtures::*;
use stac_uploadd_emulator::{AssetKey, CallKind, FaultAction, UploadState};
use tokio::process::Command;

/// The asset of the schedule job "nightly".
fn nightly() -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", "big.zip")
}

/// A job file with the schedule job "nightly" (`nightly_keys` added to it) sending `file`, and
/// the watch job "incoming" on `dir/incoming` (created) taking `*.zip` files to assets named
/// after them.
fn job_file(dir: &Path, url: &str, file: &Path, nightly_keys: &str) -> PathBuf {
    let incoming = dir.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    JobFile::new(dir, url)
        .defaults("part_size = \"5MiB\"\npart_retries = 0")
        .file_job("nightly", "big.zip", file)
        .lines(nightly_keys)
        .watch("incoming", "{name}", &incoming, "*.zip")
        // The nightly job's asset: a file of that name dropped here would land on it.
        .lines("ignore = [\"big.zip\", \"*.tmp\", \".*\"]")
        .lines(ZIP_TYPE)
        .write()
}

/// Once a year: the retry cap never bites.
const YEARLY: &str = r#"schedule = "0 0 1 1 *""#;

async fn once(config: &Path, extra: &[&str]) -> Output {
    once_command(extra, config)
        .output()
        .await
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The summary line of `job` (exactly one expected).
fn line_of<'a>(text: &'a str, job: &str) -> &'a str {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{job} ")))
        .collect();
    assert_eq!(lines.len(), 1, "one line for {job} in: {text}");
    lines[0]
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[tokio::test]
async fn uploads_then_finds_the_asset_unchanged_and_exits_0_both_times() {
    let (emu, dir) = emulator_with_zip(&nightly()).await;
    let file = dir.path().join("big.zip");
    let sha = write_file(&file, 6 * MIB, 1);
    let config = job_file(dir.path(), &emu.base_url(), &file, YEARLY);

    let out = once(&config, &["--job", "nightly"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let line = line_of(&text, "nightly");
    assert!(line.starts_with("nightly uploaded "), "{line}");
    assert_eq!(field(line, "bytes"), (6 * MIB).to_string());
    assert_eq!(field(line, "attempts"), "1");
    let uploads = emu.uploads(&nightly());
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].status, UploadState::Completed);
    assert_eq!(field(line, "upload"), uploads[0].id);
    assert_eq!(
        emu.object_sha256_hex(&nightly()).as_deref(),
        Some(sha.as_str())
    );
    assert_eq!(
        emu.asset(&nightly()).unwrap().checksum,
        Some(format!("1220{sha}"))
    );

    // Every job this time: the watch job's folder is empty, which is no failure.
    let out = once(&config, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    let line = line_of(&text, "nightly");
    assert!(line.starts_with("nightly unchanged "), "{line}");
    assert_eq!(field(line, "upload"), "-");
    assert_eq!(emu.uploads(&nightly()).len(), 1, "nothing sent again");
    assert!(
        line_of(&text, "incoming").starts_with("incoming nothing_to_do "),
        "{text}"
    );

    // Both runs are in the state folder's history, as the daemon's would be.
    let status = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    let text = stdout(&status);
    assert!(
        text.contains("no daemon holds") && text.contains("uploaded") && text.contains("unchanged"),
        "{text}"
    );
}

#[tokio::test]
async fn a_fault_that_outlasts_the_retries_fails_with_every_attempt_counted() {
    let emu = basic_emulator().await;
    emu.create_asset(&nightly(), "application/zip").unwrap();
    emu.fault(CallKind::CreateUpload, FaultAction::Status(502), 100);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    write_file(&file, 1000, 2);
    let keys = format!(
        "{YEARLY}\npolicy = \"retry\"\nretries = 2\nretry_min_delay = \"100ms\"\nretry_max_delay = \"200ms\""
    );
    let config = job_file(dir.path(), &emu.base_url(), &file, &keys);

    let out = once(&config, &["--job", "nightly"]).await;
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = line_of(&text, "nightly");
    assert!(line.starts_with("nightly failed "), "{line}");
    assert!(line.contains("error=") && line.contains("502"), "{line}");
    // One create per attempt (part_retries = 0): the first run and its two retries.
    assert_eq!(field(line, "attempts"), "3");
    assert_eq!(emu.faults().injected(CallKind::CreateUpload), 3);
    assert!(err.contains("1 of 1 run(s) did not succeed"), "{err}");
    assert!(emu.in_progress_uploads().is_empty());
}

#[tokio::test]
async fn the_retry_cap_follows_the_schedule_in_the_job_file() {
    // `every = "1s"` and a first retry wait of at least 1 s: the retry would start after the
    // next run the file's schedule names, so the run is not retried.
    let emu = basic_emulator().await;
    emu.create_asset(&nightly(), "application/zip").unwrap();
    emu.fault(CallKind::CreateUpload, FaultAction::Status(502), 100);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    write_file(&file, 1000, 3);
    let keys = "every = \"1s\"\npolicy = \"retry\"\nretries = 3\nretry_min_delay = \"1s\"";
    let config = job_file(dir.path(), &emu.base_url(), &file, keys);

    let out = once(&config, &["--job", "nightly"]).await;
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = line_of(&text, "nightly");
    assert_eq!(field(line, "attempts"), "1", "{line}");
    assert_eq!(emu.faults().injected(CallKind::CreateUpload), 1);
    assert!(
        err.contains("not retrying: the next scheduled run comes first"),
        "{err}"
    );
}

#[tokio::test]
async fn a_watch_job_sends_each_matching_file_its_folder_holds_and_job_selects_it_alone() {
    let (emu, dir) = emulator_with_zip(&nightly()).await;
    let file = dir.path().join("big.zip");
    write_file(&file, 1000, 4);
    let config = job_file(dir.path(), &emu.base_url(), &file, YEARLY);
    let incoming = dir.path().join("incoming");
    let mut shas = Vec::new();
    for (i, name) in ["b.zip", "a.zip"].into_iter().enumerate() {
        let key = AssetKey::item_asset("ch.test.collection", "item-1", name);
        emu.create_asset(&key, "application/zip").unwrap();
        shas.push((
            key,
            write_file(&incoming.join(name), 2000 + i as u64, 10 + i as u64),
        ));
    }
    // Not matching the pattern, and ignored (hidden): neither is sent.
    write_file(&incoming.join("notes.txt"), 10, 20);
    write_file(&incoming.join(".c.zip"), 10, 21);

    let out = once(&config, &["--job", "incoming"]).await;
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // Sorted by path, one run each.
    for (line, name) in lines.iter().zip(["a.zip", "b.zip"]) {
        assert!(line.starts_with("incoming uploaded "), "{line}");
        assert_eq!(
            field(line, "file"),
            incoming.join(name).display().to_string()
        );
    }
    for (key, sha) in &shas {
        assert_eq!(emu.object_sha256_hex(key).as_deref(), Some(sha.as_str()));
    }
    // The job not selected did not run.
    assert!(emu.uploads(&nightly()).is_empty());
    assert!(!text.contains("nightly"), "{text}");
}

/// Runs both jobs once (the watch job on one file), one part at a time each and every part PUT
/// slowed, with `[server] max_concurrent_uploads = limit`; returns the most part PUTs the
/// emulator saw at once.
async fn most_parts_at_once(limit: usize) -> u64 {
    let emu = basic_emulator().await;
    emu.create_asset(&nightly(), "application/zip").unwrap();
    let a = AssetKey::item_asset("ch.test.collection", "item-1", "a.zip");
    emu.create_asset(&a, "application/zip").unwrap();
    // 2 MB/s per connection: each 6 MiB file takes seconds, so two uploads let loose overlap.
    emu.faults().set_bandwidth_limit(Some(2_000_000));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    let nightly_sha = write_file(&file, 6 * MIB, 40);
    let config = job_file(dir.path(), &emu.base_url(), &file, YEARLY);
    let a_sha = write_file(&dir.path().join("incoming/a.zip"), 6 * MIB, 41);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replacen(
            "[server]\n",
            &format!("[server]\nmax_concurrent_uploads = {limit}\n"),
            1,
        )
        .replacen("[defaults]\n", "[defaults]\nparallel = 1\n", 1);
    std::fs::write(&config, text).unwrap();

    let out = once(&config, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(line_of(&text, "nightly").starts_with("nightly uploaded "));
    assert!(line_of(&text, "incoming").starts_with("incoming uploaded "));
    assert_eq!(emu.object_sha256_hex(&nightly()), Some(nightly_sha));
    assert_eq!(emu.object_sha256_hex(&a), Some(a_sha));
    emu.max_concurrent_part_puts()
}

#[tokio::test]
async fn jobs_run_side_by_side_within_max_concurrent_uploads() {
    assert_eq!(most_parts_at_once(1).await, 1, "one upload at a time");
    assert_eq!(most_parts_at_once(2).await, 2, "both jobs at once");
}

#[tokio::test]
async fn unknown_jobs_and_job_without_once_are_usage_errors_and_touch_nothing() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    write_file(&file, 1000, 5);
    let config = job_file(dir.path(), &emu.base_url(), &file, YEARLY);

    let out = once(&config, &["--job", "nightly", "--job", "nope"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no job named \"nope\"") && err.contains("the file's jobs: nightly, incoming"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());

    let out = Command::new(BIN)
        .args(["run", "--job", "nightly", "--config"])
        .arg(&config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--job needs --once"),
        "{}",
        stderr(&out)
    );

    assert!(!dir.path().join("state").exists(), "no state folder made");
    for kind in CallKind::ALL {
        assert_eq!(emu.call_count(kind), 0, "no {kind} call");
    }
}

#[tokio::test]
async fn a_state_folder_held_by_another_process_is_refused_naming_its_pid() {
    let (emu, dir) = emulator_with_zip(&nightly()).await;
    let file = dir.path().join("big.zip");
    write_file(&file, 1000, 6);
    let config = job_file(dir.path(), &emu.base_url(), &file, YEARLY);
    // The daemon's own lock, taken by this test process.
    let lock = stac_uploadd::state::lock_state(&dir.path().join("state")).unwrap();

    let out = once(&config, &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "(pid {}) holds the state folder",
            std::process::id()
        )),
        "{err}"
    );
    assert!(emu.uploads(&nightly()).is_empty());
    assert_eq!(emu.call_count(CallKind::GetAsset), 0);

    drop(lock);
    let out = once(&config, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test]
async fn a_corrupt_record_of_uploads_in_flight_is_exit_3() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    write_file(&file, 1000, 7);
    let config = job_file(dir.path(), &emu.base_url(), &file, YEARLY);
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/inflight.json"), "{ not json").unwrap();

    let out = once(&config, &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(emu.call_count(CallKind::GetAsset), 0);
}

/// `run --once` started in the background, its stderr collected.
fn spawn_once(config: &Path, extra: &[&str]) -> tokio::process::Child {
    once_command(extra, config)
        .spawn()
        .expect("the binary starts")
}

fn log_text(log: &Log) -> String {
    log.lock().unwrap().join("\n")
}

async fn read_stdout(child: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut text = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut text)
        .await
        .unwrap();
    text
}

#[tokio::test]
async fn killed_mid_upload_the_next_run_resumes_it_first() {
    let emu = basic_emulator().await;
    emu.create_asset(&nightly(), "application/zip").unwrap();
    // 3 MB/s per connection: 3 parts of 5 MiB take a few seconds.
    emu.faults().set_bandwidth_limit(Some(3_000_000));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    let sha = write_file(&file, 12 * MIB, 8);
    let config = job_file(dir.path(), &emu.base_url(), &file, YEARLY);

    let mut first = spawn_once(&config, &["--job", "nightly"]);
    let _log: Log = capture_stderr(&mut first);
    wait_for(Duration::from_secs(30), "a part to arrive", || {
        emu.uploads(&nightly())
            .iter()
            .any(|u| u.status == UploadState::InProgress && u.parts_received >= 1)
    })
    .await;
    signal(&first, libc::SIGKILL);
    first.wait().await.unwrap();
    let id = emu.in_progress_uploads()[0].1.id.clone();

    emu.faults().set_bandwidth_limit(None);
    let out = once(&config, &["--job", "nightly"]).await;
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("nightly resumed "), "{text}");
    assert_eq!(field(lines[0], "upload"), id);
    assert!(lines[0].contains("left_by=an-earlier-process"), "{text}");
    // The job's own run then finds the asset holding the file.
    assert!(lines[1].starts_with("nightly unchanged "), "{text}");
    assert!(emu.in_progress_uploads().is_empty());
    assert_eq!(
        emu.object_sha256_hex(&nightly()).as_deref(),
        Some(sha.as_str())
    );
    assert_eq!(emu.uploads(&nightly()).len(), 1, "no second upload");
}

#[tokio::test]
async fn sigterm_gives_the_run_its_grace_period_then_aborts_it_and_exits_1() {
    stopped_by(libc::SIGTERM).await;
}

/// Issue 17: every command honours SIGHUP (a closed terminal) where it makes sense; for a
/// single pass it stops like SIGTERM rather than killing the process mid-upload.
#[tokio::test]
async fn sighup_stops_like_sigterm_and_aborts_the_run_cut_off() {
    stopped_by(libc::SIGHUP).await;
}

/// Two files for one job; `sig` during the first: it gets its grace period, is aborted on the
/// server, the second never starts, exit 1.
async fn stopped_by(sig: i32) {
    let emu = basic_emulator().await;
    emu.create_asset(&nightly(), "application/zip").unwrap();
    emu.faults().set_bandwidth_limit(Some(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    write_file(&file, 24 * MIB, 9);
    let config = job_file(dir.path(), &emu.base_url(), &file, YEARLY);
    let incoming = dir.path().join("incoming");
    for name in ["a.zip", "b.zip"] {
        emu.create_asset(
            &AssetKey::item_asset("ch.test.collection", "item-1", name),
            "application/zip",
        )
        .unwrap();
        write_file(&incoming.join(name), 24 * MIB, 30);
    }
    // The job's runs go one after the other: the second file waits for the first.
    let mut child = spawn_once(&config, &["--shutdown-grace", "1s", "--job", "incoming"]);
    let log: Log = capture_stderr(&mut child);
    wait_for(Duration::from_secs(30), "an upload in progress", || {
        !emu.in_progress_uploads().is_empty()
    })
    .await;
    signal(&child, sig);
    let text = read_stdout(&mut child).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within the grace period and the abort")
        .unwrap();
    assert_eq!(status.code(), Some(1), "{text}\n{}", log_text(&log));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(!lines[0].starts_with("incoming uploaded"), "{text}");
    assert!(lines[1].starts_with("incoming not_started "), "{text}");
    assert!(
        emu.in_progress_uploads().is_empty(),
        "the upload cut off was aborted"
    );
    let a = AssetKey::item_asset("ch.test.collection", "item-1", "a.zip");
    assert!(
        emu.uploads(&a)
            .iter()
            .any(|u| u.status == UploadState::Aborted)
    );
    let b = AssetKey::item_asset("ch.test.collection", "item-1", "b.zip");
    assert!(emu.uploads(&b).is_empty(), "the second file never started");
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    // A missing tool fails the test: a skip would pass without verifying anything.
    let probe = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "systemd-analyze does not run ({e}): install it with \
                 `apt-get install --no-install-recommends systemd` (.ci/run does)"
            )
        });
    assert!(
        probe.status.success(),
        "systemd-analyze --version: {probe:?}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = tempfile::tempdir().unwrap();
    // The units name the installed binary (the Debian package's path); verify checks that it
    // exists and is executable.
    let units = [
        "stac-uploadd.service",
        "stac-uploadd-once.service",
        "stac-uploadd-once.timer",
    ];
    for unit in units {
        let text = std::fs::read_to_string(root.join(unit)).unwrap();
        assert!(
            text.contains("/usr/bin/stac-uploadd") || unit.ends_with(".timer"),
            "{unit} does not run /usr/bin/stac-uploadd, where the package installs it"
        );
        std::fs::write(
            dir.path().join(unit),
            text.replace("/usr/bin/stac-uploadd", BIN),
        )
        .unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(units.map(|unit| dir.path().join(unit)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // verify reports some problems (unknown keys, bad values) without failing.
    assert!(
        !err.contains("stac-uploadd"),
        "systemd-analyze has remarks on the units: {err}"
    );
}
