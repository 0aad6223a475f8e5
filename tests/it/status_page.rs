//! The status page and `/status.json` of the real daemon against the emulator, with a job in
//! each state: one that published its file, one that fails (its asset does not exist), one
//! sending a large file slowly (its own bandwidth limit) and a watch job whose file has a
//! hostile name. Also `status --json`, built by the same code from the store.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use stac_uploadd_emulator::{AssetKey, Emulator};
use tokio::process::Child;

use crate::fixtures::{
    BIN, FAST_RETRIES, JobFile, Log, MIB, PASSWORD, ZIP_SETTLED, basic_emulator, spawn_observed,
    terminate, write_file,
};

/// A file name that is markup if a page forgets to escape it.
pub const HOSTILE: &str = "<img src=x onerror=alert(1)>.zip";
/// The jobs of the scene, one per state.
pub const JOBS: [&str; 4] = ["published", "failing", "slow", "hostile"];

/// A daemon with a job in each state, against an emulator on loopback.
pub struct Scene {
    /// The server, and the folder of the files and the state: kept while the daemon runs.
    pub _emu: Emulator,
    pub _dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
    pub daemon: Child,
    pub log: Log,
    pub addr: SocketAddr,
}

fn key(asset: &str) -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", asset)
}

/// Starts the scene; its jobs start firing within seconds.
pub async fn scene() -> Scene {
    let emu = basic_emulator().await;
    for asset in ["published.zip", "slow.zip", "hostile.zip"] {
        emu.create_asset(&key(asset), "application/zip")
            .expect("the asset is created");
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let small = dir.path().join("small.zip");
    write_file(&small, 64 * 1024, 1);
    // 24 MiB at 200 kB/s: minutes, far longer than the test looks at it.
    let big = dir.path().join("big.zip");
    write_file(&big, 24 * MIB, 2);
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).expect("the watched folder");
    write_file(&incoming.join(HOSTILE), 1024, 3);
    let config = JobFile::new(dir.path(), &emu.base_url())
        .defaults(FAST_RETRIES)
        .file_job("published", "published.zip", &small)
        .lines("every = \"2s\"")
        .file_job("failing", "nobody-made-this.zip", &small)
        .lines("every = \"2s\"\nretries = 0")
        .file_job("slow", "slow.zip", &big)
        .lines("every = \"2s\"\nbandwidth_limit = \"200kB/s\"")
        .watch("hostile", "hostile.zip", &incoming, "*.zip")
        .lines(ZIP_SETTLED)
        .write();
    let (daemon, log, addr) = spawn_observed(&config, &["--shutdown-grace", "1s"]).await;
    Scene {
        _emu: emu,
        _dir: dir,
        config,
        daemon,
        log,
        addr,
    }
}

/// `/status.json` now; `None` while the daemon is starting (503).
pub async fn try_status_json(addr: SocketAddr) -> Option<Value> {
    let r = reqwest::get(format!("http://{addr}/status.json"))
        .await
        .expect("the listener answers");
    if r.status() == 503 {
        return None;
    }
    assert_eq!(r.status(), 200);
    Some(r.json().await.expect("JSON"))
}

/// `/status.json` of a daemon that has started.
pub async fn status_json(addr: SocketAddr) -> Value {
    try_status_json(addr).await.expect("the daemon has started")
}

/// The job `name` of a document.
pub fn job<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {doc:#}"))
}

/// Bytes the slow job has sent so far (0 when it sends nothing now).
pub fn slow_sent(doc: &Value) -> u64 {
    job(doc, "slow")["uploads"]
        .as_array()
        .and_then(|u| u.first())
        .and_then(|u| u["bytes_sent"].as_u64())
        .unwrap_or(0)
}

/// Whether every job of the scene shows its state: published, failing with a class, sending,
/// and the hostile file's run on record.
pub fn settled(doc: &Value) -> bool {
    let published = job(doc, "published");
    let failing = job(doc, "failing");
    let hostile = job(doc, "hostile");
    published["state"] == "ok"
        && failing["state"] == "failing"
        && failing["last_failure"]["error_class"].is_string()
        && slow_sent(doc) > 0
        && hostile["last_run"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with(HOSTILE))
}

/// Polls `/status.json` until the scene has settled (bounded); returns that document.
pub async fn wait_settled(scene: &Scene) -> Value {
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let doc = try_status_json(scene.addr).await.unwrap_or_default();
        if !doc.is_null() && settled(&doc) {
            return doc;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the jobs did not reach their states: {doc:#}\nlog:\n{}",
            scene.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every key of every object in `v`, with its path, for the check against docs/status.md.
fn keys(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, path, out)),
        _ => {}
    }
}

/// The document against docs/status.md: every field it has is documented, and the fields the
/// schema says are always there have their types.
fn assert_schema(doc: &Value) {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status.md"))
            .expect("docs/status.md");
    let mut found = Vec::new();
    keys(doc, "", &mut found);
    for k in &found {
        assert!(
            spec.contains(&format!("`{k}`")),
            "field {k} is not documented in docs/status.md"
        );
    }
    assert_eq!(doc["schema_version"], 1);
    for k in ["generated", "instance", "server", "source"] {
        assert!(doc[k].is_string(), "{k}: {doc:#}");
    }
    assert!(doc["missed_events"].is_u64());
    assert!(doc["recent_runs"].is_array());
    for j in doc["jobs"].as_array().unwrap() {
        for k in ["name", "collection", "next_fire_text", "state"] {
            assert!(j[k].is_string(), "{k} of {j:#}");
        }
        assert!(j["trigger"]["kind"].is_string() && j["trigger"]["text"].is_string());
        assert!(j["failures_in_a_row"].is_u64());
        for k in ["public_problems", "running", "uploads", "inflight"] {
            assert!(j[k].is_array(), "{k} of {j:#}");
        }
        for r in [&j["last_run"], &j["last_failure"]] {
            if !r.is_null() {
                assert_run(r);
            }
        }
    }
    for r in doc["recent_runs"].as_array().unwrap() {
        assert_run(r);
    }
}

fn assert_run(r: &Value) {
    for k in ["job", "started", "finished", "outcome", "asset"] {
        assert!(r[k].is_string(), "{k} of {r:#}");
    }
    for k in ["bytes", "attempts"] {
        assert!(r[k].is_u64(), "{k} of {r:#}");
    }
    assert!(r["duration_seconds"].is_number() && r["assets"].is_array());
}

#[tokio::test]
async fn the_page_and_its_json_show_each_job_escaped_and_without_secrets() {
    let mut scene = scene().await;
    let doc = wait_settled(&scene).await;
    assert_schema(&doc);
    assert_eq!(doc["source"], "daemon");
    assert!(
        doc["server"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let published = job(&doc, "published");
    assert_eq!(published["trigger"]["kind"], "every");
    assert!(published["next_fire"].is_string(), "{published:#}");
    // A fixed item has nothing to prune: no retention rule to show.
    assert!(published["retention"].is_null());
    assert!(
        ["uploaded", "unchanged"].contains(&published["last_run"]["outcome"].as_str().unwrap())
    );
    assert_eq!(job(&doc, "hostile")["next_fire_text"], "on new files");
    let failing = job(&doc, "failing");
    assert!(failing["failures_in_a_row"].as_u64().unwrap() >= 1);
    assert!(failing["last_failure"]["error"].is_string(), "{failing:#}");
    let slow = &job(&doc, "slow")["uploads"][0];
    assert_eq!(slow["bytes_total"], 24 * MIB);
    assert!(slow["target"].as_str().unwrap().ends_with("/slow.zip"));
    // On record as in flight on the server (read from the store, cached for a moment).
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = status_json(scene.addr).await;
        let inflight = &job(&now, "slow")["inflight"];
        if inflight.as_array().is_some_and(|a| a.len() == 1) {
            assert!(inflight[0]["upload_id"].is_string(), "{inflight:#}");
            break;
        }
        assert!(tokio::time::Instant::now() < end, "not on record: {now:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Progress moves between two reads.
    let first = slow_sent(&doc);
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = slow_sent(&status_json(scene.addr).await);
        if now > first {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no progress past {first} bytes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The page: hardened headers, each job's row, the hostile name as text, no secret.
    let r = reqwest::get(format!("http://{}/", scene.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    let body = r.text().await.unwrap();
    assert!(body.contains(r#"<meta http-equiv="refresh""#), "{body}");
    for name in JOBS {
        assert!(
            body.contains(&format!(r#"data-job="{name}""#)),
            "{name}: {body}"
        );
    }
    assert!(
        body.contains("&lt;img src=x onerror=alert(1)&gt;.zip"),
        "the hostile name escaped: {body}"
    );
    assert!(!body.contains("<img"), "{body}");
    assert!(!body.to_lowercase().contains("<script"), "{body}");
    let json = status_json(scene.addr).await.to_string();
    for text in [&body, &json] {
        assert!(!text.contains(PASSWORD), "the password is shown");
        assert!(!text.contains("TEST_STAC_PASSWORD"));
    }

    // Read-only: GET and HEAD only.
    let client = reqwest::Client::new();
    let url = format!("http://{}/", scene.addr);
    assert_eq!(client.head(&url).send().await.unwrap().status(), 200);
    assert_eq!(client.post(&url).send().await.unwrap().status(), 405);
    assert_eq!(
        client
            .delete(format!("{url}status.json"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );

    // `status --json`: the same document from the store, beside the running daemon. The daemon
    // writes its history in batches (every few seconds): read until the failures are there.
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    let (out, stored) = loop {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(BIN)
                .args(["status", "--json", "--config"])
                .arg(&scene.config)
                .env_remove("TEST_STAC_PASSWORD")
                .output(),
        )
        .await
        .expect("status --json ends")
        .expect("status runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stored: Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
        if job(&stored, "failing")["state"] == "failing" {
            break (out, stored);
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the store never showed the failing job: {stored:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_schema(&stored);
    assert_eq!(stored["source"], "store");
    assert_eq!(stored["jobs"].as_array().unwrap().len(), JOBS.len());
    assert_eq!(job(&stored, "failing")["state"], "failing");
    assert!(
        job(&stored, "slow")["uploads"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(PASSWORD),
        "status --json shows the password"
    );

    assert!(terminate(&mut scene.daemon).await.success());
}
