//! `stac-uploadd check --online`: the real binary against the emulator (and moto's Cognito). A
//! line per job, what would fail named, and nothing created on the server.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::fixtures::*;
use stac_uploadd_emulator::{AssetKey, CallKind, Emulator, EmulatorAuth, EmulatorConfig};
use tokio::process::Command;

const COLLECTION: &str = "ch.test.collection";

/// A cron job publishing `file_name` to item-1's `radar.zip`, and an every job whose item (one
/// per day) and asset the job's metadata creates.
fn jobs(dir: &Path, collection: &str, file_name: &str) -> String {
    let file = dir.join(file_name);
    std::fs::write(&file, b"data").unwrap();
    format!(
        r#"
[[job]]
name = "radar"
collection = "{collection}"
item = "item-1"
asset = "radar.zip"
file = "{file}"
schedule = "0 0 * * *"

[[job]]
name = "daily"
collection = "{collection}"
item = "day-%Y%m%d"
asset = "day.zip"
file = "{file}"
every = "1h"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
[job.asset_metadata]
type = "application/zip"
"#,
        file = file.display()
    )
}

fn write(dir: &Path, text: String) -> PathBuf {
    let path = dir.join("jobs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Out {
    /// The line of job `name`.
    fn job(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(&format!("  {name}: ")) && !l.contains(" -> "))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}\n{}", self.stdout, self.stderr))
    }
}

async fn check_online(config: &Path, password: &str) -> Out {
    let out = Command::new(BIN)
        .args(["check", "--online", "--config"])
        .arg(config)
        .env("TEST_STAC_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the binary runs");
    Out::from(out)
}

/// What the emulator holds (collections' assets, their uploads), without its call counters.
async fn held(emu: &Emulator) -> serde_json::Value {
    let mut dump: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/_emulator/state", emu.origin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let map = dump.as_object_mut().unwrap();
    map.remove("calls");
    map.remove("injected");
    dump
}

fn radar() -> AssetKey {
    AssetKey::item_asset(COLLECTION, "item-1", "radar.zip")
}

#[tokio::test]
async fn a_good_file_is_ok_job_by_job_and_creates_nothing() {
    let (emu, dir) = emulator_with_zip(&radar()).await;
    let config = write(
        dir.path(),
        job_file_head(dir.path(), &emu.base_url()) + &jobs(dir.path(), COLLECTION, "radar.zip"),
    );
    let before = held(&emu).await;

    let out = check_online(&config, PASSWORD).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let radar = out.job("radar");
    assert!(radar.starts_with("  radar: ok ("), "{radar}");
    assert!(radar.contains("credentials accepted"), "{radar}");
    assert!(
        radar.contains("asset ch.test.collection/item-1/radar.zip exists, application/zip"),
        "{radar}"
    );
    let daily = out.job("daily");
    assert!(daily.starts_with("  daily: ok ("), "{daily}");
    assert!(daily.contains("will be created"), "{daily}");

    assert_eq!(held(&emu).await, before, "the server holds what it held");
    assert_eq!(emu.call_count(CallKind::PutStac), 0);
    assert_eq!(emu.call_count(CallKind::CreateUpload), 0);
}

#[tokio::test]
async fn a_wrong_basic_password_is_named() {
    let (emu, dir) = emulator_with_zip(&radar()).await;
    let config = write(
        dir.path(),
        job_file_head(dir.path(), &emu.base_url()) + &jobs(dir.path(), COLLECTION, "radar.zip"),
    );
    let out = check_online(&config, "wrong password").await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    for job in ["radar", "daily"] {
        let line = out.job(job);
        assert!(
            line.contains("would fail: the server refused the credentials"),
            "{line}"
        );
        assert!(line.contains("HTTP 401"), "{line}");
    }
    assert!(
        out.stderr.contains("2 of 2 job(s) would fail"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_wrong_cognito_password_is_named() {
    let pool = CognitoPool::new().await;
    pool.user("publisher", COGNITO_PASSWORD).await;
    let emu = Emulator::start(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorConfig {
            auth: EmulatorAuth::Cognito {
                endpoint: pool.endpoint.clone(),
            },
            ..EmulatorConfig::default()
        },
    )
    .await
    .unwrap();
    emu.create_asset(&radar(), "application/zip").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let head = format!(
        "state_dir = \"{}\"\n[server]\nurl = \"{}\"\n[server.auth]\ntype = \"cognito\"\nusername = \"publisher\"\npassword_env = \"TEST_STAC_PASSWORD\"\nclient_id = \"{}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n",
        dir.path().join("state").display(),
        emu.base_url(),
        pool.client_id,
        pool.endpoint
    );
    let config = write(
        dir.path(),
        head + &jobs(dir.path(), COLLECTION, "radar.zip"),
    );

    let good = check_online(&config, COGNITO_PASSWORD).await;
    assert_eq!(good.code, Some(0), "{}\n{}", good.stdout, good.stderr);
    assert!(good.job("radar").contains("credentials accepted"));

    let out = check_online(&config, "Wr0ng-Horse-Battery!").await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let line = out.job("radar");
    assert!(line.contains("would fail: the login was refused"), "{line}");
    assert!(!line.contains("Wr0ng-Horse"), "no password shown: {line}");
    assert!(
        !line.contains("read collection"),
        "the login failure is said once: {line}"
    );
}

#[tokio::test]
async fn a_missing_collection_is_named() {
    let (emu, dir) = emulator_with_zip(&radar()).await;
    let config = write(
        dir.path(),
        job_file_head(dir.path(), &emu.base_url())
            + &jobs(dir.path(), "ch.missing.collection", "radar.zip"),
    );
    let out = check_online(&config, PASSWORD).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    for job in ["radar", "daily"] {
        let line = out.job(job);
        assert!(
            line.contains("would fail: collection ch.missing.collection does not exist"),
            "{line}"
        );
        assert!(
            !line.contains("credentials"),
            "the credentials were accepted: {line}"
        );
    }
}

/// The file's extension differs from the asset id's, and the existing asset's type fits the id:
/// the run uploads without trouble (the server judges the id, not the file's name), so the
/// check says ok, by the same rule (`rules::asset_fits_type`).
#[tokio::test]
async fn an_existing_asset_whose_type_fits_its_id_is_ok_whatever_the_files_extension() {
    let (emu, dir) = emulator_with_zip(&radar()).await;
    let config = write(
        dir.path(),
        job_file_head(dir.path(), &emu.base_url()) + &jobs(dir.path(), COLLECTION, "radar.h5"),
    );
    let out = check_online(&config, PASSWORD).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let line = out.job("radar");
    assert!(
        line.contains("asset ch.test.collection/item-1/radar.zip exists, application/zip"),
        "{line}"
    );
    assert!(out.job("daily").contains(": ok ("), "{}", out.stdout);

    // And the run agrees: it publishes radar.h5 to radar.zip.
    let run = Command::new(BIN)
        .args(["run", "--once", "--job", "radar", "--config"])
        .arg(&config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the binary runs");
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(emu.call_count(CallKind::Complete), 1);
}

/// A known user without the permission to write: the server answers 403 (here injected on the
/// abort the check sends).
#[tokio::test]
async fn a_user_without_the_permission_to_write_is_named() {
    let emu = basic_emulator().await;
    emu.create_asset(&radar(), "application/zip").unwrap();
    emu.fault(
        CallKind::Abort,
        stac_uploadd_emulator::FaultAction::Status(403),
        2,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        job_file_head(dir.path(), &emu.base_url()) + &jobs(dir.path(), COLLECTION, "radar.zip"),
    );
    let out = check_online(&config, PASSWORD).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let line = out.job("radar");
    assert!(
        line.contains("would fail: the server took the credentials but refuses this user the permission to write"),
        "{line}"
    );
    assert!(line.contains("HTTP 403"), "{line}");
    assert!(out.job("daily").contains("HTTP 403"), "{}", out.stdout);
    assert_eq!(
        emu.faults().injected(CallKind::Abort),
        2,
        "one probe per job"
    );
}
