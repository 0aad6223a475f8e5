//! `stac-uploadd uploads`: the real binary against the emulator. What is listed (whose, what the
//! daemon would do) and what `--abort` does to the server and to the state folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::fixtures::*;
use chrono::Utc;
use stac_client::{AssetTarget, CreateUpload, Md5, Md5Part, Multihash, PartNumber};
use stac_uploadd::state::{InFlight, Outcome, RunRecord, StateStore};
use stac_uploadd_emulator::{AssetKey, CallKind, FaultAction, UploadState};
use tokio::process::Command;

const COLLECTION: &str = "ch.test.collection";

fn target() -> AssetTarget {
    AssetTarget::item_asset(COLLECTION, "item-1", "radar.zip")
}

/// A job file with one cron job publishing `radar.zip` to item-1, and one watch job whose item
/// and asset come from file names.
fn job_file(dir: &Path, url: &str) -> PathBuf {
    job_file_on(dir, url, "0 0 * * *")
}

fn job_file_on(dir: &Path, url: &str, schedule: &str) -> PathBuf {
    let incoming = dir.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    JobFile::new(dir, url)
        .defaults("stale_after = \"1h\"\npart_size = \"5MiB\"\nparallel = 2\npolicy = \"cancel\"")
        .cron("radar", "radar.zip", &dir.join("radar.zip"), schedule)
        .lines(&format!(
            "[[job]]\nname = \"stations\"\ncollection = \"{COLLECTION}\"\nitem = \"station-{{stem}}\"\nasset = \"{{stem}}.zip\"\n[job.watch]\ndir = \"{}\"\npattern = \"*.zip\"\n{ZIP_TYPE}",
            incoming.display()
        ))
        .write()
}

/// Runs `stac-uploadd uploads --config F ARGS` with stdin not a terminal.
async fn uploads(config: &Path, args: &[&str]) -> Out {
    let out = Command::new(BIN)
        .arg("uploads")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the binary runs");
    Out::from(out)
}

/// The line of the listing that names `id`.
fn line_of<'a>(out: &'a Out, id: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("no line for {id}:\n{}\n{}", out.stdout, out.stderr))
}

/// An upload created on `t` with the client, as another publisher would leave it.
async fn someone_elses_upload(emu: &stac_uploadd_emulator::Emulator, t: &AssetTarget) -> String {
    let client = client_for(&emu.base_url(), stac_client::ApiVersion::V1, basic());
    let md5 = Md5([7; 16]);
    let upload = client
        .create_upload(
            t,
            &CreateUpload {
                md5_parts: vec![Md5Part {
                    part_number: PartNumber(1),
                    md5: md5.to_base64(),
                }],
                checksum: Multihash::from_sha256(&[9; 32]),
                content_encoding: None,
            },
        )
        .await
        .expect("the emulator takes the create");
    upload.upload_id.0
}

fn key_of(t: &AssetTarget) -> AssetKey {
    key(t)
}

#[tokio::test]
async fn someone_elses_recent_upload_is_listed_and_left() {
    let emu = basic_emulator().await;
    emu.create_asset(&key_of(&target()), "application/zip")
        .unwrap();
    let id = someone_elses_upload(&emu, &target()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = uploads(&job_file(dir.path(), &emu.base_url()), &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("no daemon holds"), "{}", out.stdout);
    let line = line_of(&out, &id);
    assert!(line.contains("someone else's"), "{line}");
    assert!(line.contains(&target().to_string()), "{line}");
    assert!(line.contains("job radar"), "{line}");
    assert!(
        line.contains("would leave it: someone else's, may still be running; stale from"),
        "{line}"
    );
    assert!(line.contains("URLs expire"), "{line}");
    assert_eq!(emu.in_progress_uploads().len(), 1, "listing aborts nothing");
}

#[tokio::test]
async fn an_old_upload_is_listed_as_one_the_daemon_would_abort() {
    let emu = basic_emulator().await;
    let id = emu.plant_upload(&key_of(&target()), Utc::now() - chrono::Duration::hours(3));
    let dir = tempfile::tempdir().unwrap();
    let out = uploads(&job_file(dir.path(), &emu.base_url()), &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = line_of(&out, &id);
    assert!(line.contains("someone else's"), "{line}");
    assert!(line.contains("(3h "), "its age: {line}");
    assert!(line.contains("would abort as stale: "), "{line}");
}

/// An in-flight record as a daemon killed mid-upload leaves it (its pid long gone).
async fn plant_record(state_dir: &Path, id: &str, t: &AssetTarget) {
    let state = StateStore::open(state_dir).await.unwrap();
    state
        .add_inflight(InFlight {
            upload_id: stac_client::UploadId(id.into()),
            job: "radar".into(),
            target: t.clone(),
            file: state_dir.join("radar.zip"),
            size: 1,
            mtime: (0, 0),
            ino: 0,
            multihash: Multihash::from_sha256(&[9; 32]).as_str().to_owned(),
            part_size: 5 * MIB,
            created: Utc::now(),
            urls_expire: None,
            pid: u32::MAX,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn ours_is_listed_as_ours_and_aborted_with_yes() {
    let emu = basic_emulator().await;
    emu.create_asset(&key_of(&target()), "application/zip")
        .unwrap();
    let id = someone_elses_upload(&emu, &target()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = job_file(dir.path(), &emu.base_url());
    let state_dir = dir.path().join("state");
    plant_record(&state_dir, &id, &target()).await;

    let out = uploads(&config, &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = line_of(&out, &id);
    assert!(line.contains("  ours  "), "{line}");
    assert!(
        line.contains("would abort as stale: it is ours, from a run that is over"),
        "{line}"
    );

    let out = uploads(&config, &["--abort", &id, "--yes"]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("aborted upload {id} on {}", target())),
        "{}",
        out.stdout
    );
    let held = emu.uploads(&key_of(&target()));
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].status,
        UploadState::Aborted,
        "the server holds it aborted"
    );
    assert!(emu.in_progress_uploads().is_empty());
    assert!(
        StateStore::open_read_only(&state_dir)
            .await
            .unwrap()
            .inflight()
            .await
            .unwrap()
            .is_empty(),
        "its record is forgotten"
    );

    let out = uploads(&config, &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("nothing in progress on the "),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn abort_without_yes_off_a_terminal_is_refused_and_aborts_nothing() {
    let emu = basic_emulator().await;
    let id = emu.plant_upload(&key_of(&target()), Utc::now());
    let dir = tempfile::tempdir().unwrap();
    let out = uploads(&job_file(dir.path(), &emu.base_url()), &["--abort", &id]).await;
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("not a terminal"), "{}", out.stderr);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(emu.call_count(CallKind::Abort), 0);
    assert_eq!(emu.in_progress_uploads().len(), 1);
}

#[tokio::test]
async fn an_id_not_listed_is_refused_by_name() {
    let emu = basic_emulator().await;
    emu.plant_upload(&key_of(&target()), Utc::now());
    let dir = tempfile::tempdir().unwrap();
    let out = uploads(
        &job_file(dir.path(), &emu.base_url()),
        &["--abort", "no-such-upload", "--yes"],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("upload no-such-upload is not one of the 1 upload(s) in progress"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.call_count(CallKind::Abort), 0);
    assert_eq!(emu.in_progress_uploads().len(), 1);
}

/// The watch job's ids come from file names: its targets are those of its runs on record (the
/// item id from the record's new field) and of the files in its folder now.
#[tokio::test]
async fn a_templated_jobs_targets_come_from_its_runs_on_record_and_its_folder() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = job_file(dir.path(), &emu.base_url());
    let recorded = AssetTarget::item_asset(COLLECTION, "station-bern", "bern.zip");
    let present = AssetTarget::item_asset(COLLECTION, "station-sion", "sion.zip");
    let state = StateStore::open(&dir.path().join("state")).await.unwrap();
    state
        .record_run(RunRecord {
            instance: None,
            error_class: None,
            public: Vec::new(),
            job: "stations".into(),
            started: Utc::now(),
            finished: Utc::now(),
            outcome: Outcome::Failed,
            asset: recorded.asset.clone(),
            item: recorded.item.clone(),
            file: None,
            bytes: 0,
            attempts: 1,
            upload_id: None,
            error: Some("blocked".into()),
            assets: Vec::new(),
        })
        .await
        .unwrap();
    state.flush().await.unwrap();
    drop(state);
    std::fs::write(dir.path().join("incoming/sion.zip"), b"zip").unwrap();
    let old = emu.plant_upload(&key_of(&recorded), Utc::now());
    let new = emu.plant_upload(&key_of(&present), Utc::now());

    let out = uploads(&config, &["--job", "stations"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(line_of(&out, &old).contains(&recorded.to_string()));
    assert!(line_of(&out, &new).contains(&present.to_string()));
    assert!(
        out.stdout.contains("2 upload(s) in progress"),
        "{}",
        out.stdout
    );

    let out = uploads(&config, &["--job", "nope"]).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("radar, stations"), "{}", out.stderr);
}

#[tokio::test]
async fn a_server_failure_names_the_request_and_its_status() {
    let emu = basic_emulator().await;
    emu.create_asset(&key_of(&target()), "application/zip")
        .unwrap();
    emu.fault(CallKind::ListUploads, FaultAction::Status(500), 1);
    let dir = tempfile::tempdir().unwrap();
    let out = uploads(&job_file(dir.path(), &emu.base_url()), &["--job", "radar"]).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("list uploads failed"), "{}", out.stderr);
    assert!(out.stderr.contains("HTTP 500"), "{}", out.stderr);
}

/// A daemon sending the upload: listed as being sent by it, the state folder left alone. Killed,
/// its in-flight record makes the upload ours from a run that is over, and `--abort` frees it.
#[tokio::test]
async fn the_daemons_upload_is_listed_as_being_sent_then_as_stale_once_it_is_killed() {
    let emu = basic_emulator().await;
    emu.create_asset(&key_of(&target()), "application/zip")
        .unwrap();
    // 3 MB/s per connection: 5 parts of 5 MiB, 2 at a time, take several seconds.
    emu.faults().set_bandwidth_limit(Some(3_000_000));
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("radar.zip"), 24 * MIB, 7);
    let config = job_file_on(dir.path(), &emu.base_url(), "* * * * * *");
    let mut daemon = spawn_daemon(&[], &config);
    wait_for(
        std::time::Duration::from_secs(30),
        "a part to arrive",
        || {
            emu.uploads(&key_of(&target()))
                .iter()
                .any(|u| u.status == UploadState::InProgress && u.parts_received >= 1)
        },
    )
    .await;
    let id = emu.in_progress_uploads()[0].1.id.clone();
    let pid = daemon.id().unwrap();

    let out = uploads(&config, &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("a daemon (pid {pid}) holds")),
        "{}",
        out.stdout
    );
    let line = line_of(&out, &id);
    assert!(line.contains("  ours  "), "{line}");
    assert!(
        line.contains(&format!("being sent by the daemon (pid {pid})")),
        "{line}"
    );

    signal(&daemon, libc::SIGKILL);
    daemon.wait().await.unwrap();
    // The database and its log, as the kill left them (the -shm index is shared memory).
    let stored =
        || ["state/state.db", "state/state.db-wal"].map(|f| std::fs::read(dir.path().join(f)).ok());
    let before = stored();
    assert!(before[0].is_some(), "the store exists");
    let out = uploads(&config, &[]).await;
    assert!(out.stdout.contains("no daemon holds"), "{}", out.stdout);
    assert!(
        line_of(&out, &id).contains("would abort as stale: it is ours, from a run that is over"),
        "{}",
        out.stdout
    );
    assert!(
        stored() == before,
        "listing writes nothing in the state folder"
    );
    emu.faults().set_bandwidth_limit(None);
    let out = uploads(&config, &["--abort", &id, "--yes"]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(emu.in_progress_uploads().is_empty());
    assert!(
        !inflight_ids(&dir.path().join("state")).await.contains(&id),
        "forgotten once aborted"
    );
}

// --- issue 17 (wire): an upload no client can free ---------------------------------------------

#[tokio::test]
async fn an_upload_runs_found_unfreeable_is_predicted_so_and_its_abort_explained() {
    let emu = basic_emulator().await;
    let id = emu.plant_upload(&key_of(&target()), Utc::now() - chrono::Duration::hours(3));
    emu.lose_in_s3(&id);
    let dir = tempfile::tempdir().unwrap();
    let config = job_file(dir.path(), &emu.base_url());
    let state = StateStore::open(&dir.path().join("state")).await.unwrap();
    for _ in 0..4 {
        state
            .record_run(RunRecord {
                instance: None,
                error_class: None,
                public: Vec::new(),
                job: "radar".into(),
                started: Utc::now(),
                finished: Utc::now(),
                outcome: Outcome::Unfreeable,
                asset: target().asset.clone(),
                item: target().item.clone(),
                file: None,
                bytes: 0,
                attempts: 1,
                upload_id: None,
                error: Some(format!(
                    "asset {} is blocked for good by upload {id}: the server holds it as in progress but its S3 multipart upload is gone",
                    target()
                )),
                assets: Vec::new(),
            })
            .await
            .unwrap();
    }
    state.flush().await.unwrap();
    drop(state);
    let expected = format!(
        "cannot be freed by a client: only the service's operators can clear it (upload id {id})"
    );

    let out = uploads(&config, &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = line_of(&out, &id);
    assert!(!line.contains("would abort as stale"), "{line}");
    assert!(line.contains(&expected), "{line}");

    let out = uploads(&config, &["--abort", &id, "--yes"]).await;
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert!(out.stderr.contains("NoSuchUpload"), "{}", out.stderr);
}
