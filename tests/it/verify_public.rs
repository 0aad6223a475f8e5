//! Published means downloadable: after an upload, a `HEAD` of the asset's public `href`
//! (`verify_public`), against the emulator's `stale_public` and `missing_public` faults; and
//! `stac-uploadd verify`. The real binary against the emulator on a loopback port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fixtures::{
    BIN, Log, MIB, Out, PASSWORD, basic_emulator, job_file_head, once_command, scrape,
    spawn_observed, terminate, value, write_file,
};
use prometheus_parse::Sample;
use stac_uploadd_emulator::{AssetKey, CallKind};

const FAILURES: &str = "stac_uploadd_verify_public_failures_total";

fn key(name: &str) -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", name)
}

/// A watch job `name` taking each `*.zip` of `dir` to the asset `{name}.zip`.
fn watch_job(name: &str, dir: &Path, verify: &str) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\ncollection = \"ch.test.collection\"\nitem = \"item-1\"\nasset = \"{name}.zip\"\nverify_public = \"{verify}\"\nretries = 0\n[job.watch]\ndir = \"{}\"\npattern = \"*.zip\"\nsettle = \"200ms\"\n",
        dir.display()
    )
}

/// A schedule job `name` (once a year: only `run --once` runs it) sending `file` to `{name}.zip`.
fn yearly_job(name: &str, file: &Path, verify: &str) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\ncollection = \"ch.test.collection\"\nitem = \"item-1\"\nasset = \"{name}.zip\"\nverify_public = \"{verify}\"\nretries = 0\nfile = \"{}\"\nschedule = \"0 0 1 1 *\"\n",
        file.display()
    )
}

/// Drops `name` into `dir` at once (written aside, then renamed).
fn drop_file(dir: &Path, name: &str, seed: u64) {
    let tmp = dir.join(format!(".{name}.part"));
    write_file(&tmp, MIB, seed);
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn runs(samples: &[Sample], job: &str, outcome: &str) -> f64 {
    value(
        samples,
        "stac_uploadd_runs_total",
        &[("job_name", job), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

fn failures(samples: &[Sample], job: &str, reason: &str) -> Option<f64> {
    value(samples, FAILURES, &[("job_name", job), ("reason", reason)])
}

async fn scrape_until(
    addr: std::net::SocketAddr,
    log: &Log,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    for _ in 0..600 {
        let samples = scrape(addr).await;
        if done(&samples) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {what}; log:\n{}",
        log.lock().unwrap().join("\n")
    );
}

/// The JSON log lines with this message.
fn logged(log: &Log, message: &str) -> Vec<serde_json::Value> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

async fn command(args: &[&str], config: &Path) -> Out {
    tokio::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .env_remove("STAC_UPLOADD_OBSERVE_LISTEN")
        .output()
        .await
        .expect("the binary runs")
        .into()
}

#[tokio::test]
async fn a_stale_public_object_is_logged_counted_recorded_and_fails_the_run_only_under_fail() {
    let emu = basic_emulator().await;
    for name in ["warned.zip", "strict.zip"] {
        emu.create_asset(&key(name), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (warned, strict) = (dir.path().join("warned"), dir.path().join("strict"));
    std::fs::create_dir(&warned).unwrap();
    std::fs::create_dir(&strict).unwrap();
    let config = dir.path().join("jobs.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}{}",
            job_file_head(dir.path(), &emu.base_url()),
            watch_job("warned", &warned, "warn"),
            watch_job("strict", &strict, "fail")
        ),
    )
    .unwrap();
    let (mut daemon, log, addr) = spawn_observed(&config, &[]).await;

    // First versions: published, checked, nothing to count (every reason exists at zero).
    drop_file(&warned, "v1.zip", 1);
    drop_file(&strict, "v1.zip", 2);
    let first = scrape_until(addr, &log, "the first uploads", |s| {
        runs(s, "warned", "uploaded") == 1.0 && runs(s, "strict", "uploaded") == 1.0
    })
    .await;
    for job in ["warned", "strict"] {
        for reason in [
            "missing",
            "status",
            "unreachable",
            "size",
            "sha256",
            "encoding",
        ] {
            assert_eq!(failures(&first, job, reason), Some(0.0), "{job} {reason}");
        }
    }
    assert_eq!(emu.call_count(CallKind::Download), 2, "one HEAD per upload");

    // Second versions, the same size: the bucket goes on serving the first ones.
    emu.faults()
        .add("complete:stale_public:next=2".parse().unwrap());
    drop_file(&warned, "v2.zip", 3);
    drop_file(&strict, "v2.zip", 4);
    let after = scrape_until(addr, &log, "the second runs", |s| {
        runs(s, "warned", "uploaded") == 2.0 && runs(s, "strict", "failed") == 1.0
    })
    .await;
    assert_eq!(failures(&after, "warned", "sha256"), Some(1.0));
    assert_eq!(failures(&after, "strict", "sha256"), Some(1.0));
    assert_eq!(failures(&after, "warned", "size"), Some(0.0));
    // The API holds the new file all the same.
    assert_eq!(
        emu.object_sha256_hex(&key("strict.zip")),
        Some(
            emu.asset(&key("strict.zip"))
                .unwrap()
                .checksum
                .unwrap()
                .trim_start_matches("1220")
                .to_owned()
        )
    );

    let problems = logged(&log, "the public link does not serve the uploaded file");
    assert_eq!(problems.len(), 2, "{problems:?}");
    for p in &problems {
        assert_eq!(p["level"], "WARN", "{p}");
        assert_eq!(p["reason"], "sha256", "{p}");
        assert!(p["url"].as_str().unwrap().contains("/_data/"), "{p}");
        assert!(p["detail"].as_str().unwrap().contains("expected"), "{p}");
    }
    let given_up = logged(&log, "run given up");
    assert_eq!(given_up.len(), 1, "{given_up:?}");
    let error = given_up[0]["error"].as_str().unwrap();
    assert!(
        error.contains("strict.zip") && error.contains("sha256"),
        "{error}"
    );
    // Each second run replaced the first file: the log says how long caches may hold it.
    let caches = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.contains("caches may serve the old bytes") && l.contains("\"max_age_s\":7200")
        })
        .count();
    assert_eq!(caches, 2);
    // Shown on the status page and in its document: each job's last run found the link stale.
    let doc = crate::status_page::status_json(addr).await;
    for name in ["warned", "strict"] {
        let problems = &crate::status_page::job(&doc, name)["public_problems"];
        assert_eq!(problems[0]["problem"], "sha256", "{name}: {problems:#}");
        assert!(
            problems[0]["url"].as_str().unwrap().contains("/_data/"),
            "{problems:#}"
        );
    }
    let page = reqwest::get(format!("http://{addr}/"))
        .await
        .expect("the page answers")
        .text()
        .await
        .expect("a body");
    assert_eq!(
        page.matches("public link: sha256").count(),
        2,
        "each job's stale link on the page"
    );
    terminate(&mut daemon).await;

    // Recorded: `status` shows the outcomes and the public link's problem.
    let status = command(&["status"], &config).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let public_lines: Vec<&str> = status
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("public link"))
        .collect();
    assert_eq!(public_lines.len(), 2, "{}", status.stdout);
    assert!(public_lines.iter().all(|l| l.contains("sha256")));
    let strict_last = status
        .stdout
        .lines()
        .find(|l| l.starts_with("strict "))
        .unwrap();
    assert!(strict_last.contains("failed"), "{}", status.stdout);
    let warned_last = status
        .stdout
        .lines()
        .find(|l| l.starts_with("warned "))
        .unwrap();
    assert!(warned_last.contains("uploaded"), "{}", status.stdout);
    emu.shutdown().await;
}

/// `run --once` of `job`.
async fn once(config: &Path, job: &str) -> Out {
    once_command(&["--job", job], config)
        .output()
        .await
        .expect("the binary runs")
        .into()
}

fn yearly_config(dir: &Path, url: &str, jobs: &[(&str, &Path, &str)]) -> PathBuf {
    let mut text = job_file_head(dir, url);
    for (name, file, verify) in jobs {
        text.push_str(&yearly_job(name, file, verify));
    }
    let config = dir.join("jobs.toml");
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test]
async fn a_missing_public_object_is_recorded_as_missing_after_its_retries() {
    let emu = basic_emulator().await;
    emu.create_asset(&key("nightly.zip"), "application/zip")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nightly.zip");
    write_file(&file, 1000, 1);
    let config = yearly_config(dir.path(), &emu.base_url(), &[("nightly", &file, "fail")]);
    let out = once(&config, "nightly").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    write_file(&file, 1000, 2);
    emu.faults().add("complete:missing_public".parse().unwrap());
    let heads = emu.call_count(CallKind::Download);
    let out = once(&config, "nightly").await;
    assert_eq!(out.code, Some(1), "fails under \"fail\": {}", out.stderr);
    // Three tries: a 404 right after complete may be a CDN catching up.
    assert_eq!(emu.call_count(CallKind::Download) - heads, 3);
    let status = command(&["status"], &config).await;
    let line = status
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("public link"))
        .unwrap_or_else(|| panic!("{}", status.stdout));
    assert!(
        line.contains("missing") && line.contains("nightly.zip"),
        "{line}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn verify_exits_0_when_all_is_published_and_1_naming_the_asset_otherwise() {
    let emu = basic_emulator().await;
    for name in ["a.zip", "b.zip"] {
        emu.create_asset(&key(name), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
    write_file(&a, 2000, 1);
    write_file(&b, 3000, 2);
    let config = yearly_config(
        dir.path(),
        &emu.base_url(),
        &[("a", &a, "warn"), ("b", &b, "off")],
    );
    for job in ["a", "b"] {
        let out = once(&config, job).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }

    let out = command(&["verify"], &config).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines.iter().all(|l| l.contains(" ok ")), "{}", out.stdout);

    // A local file changed after its upload.
    write_file(&b, 3000, 3);
    let out = command(&["verify"], &config).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let bad: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("MISMATCH"))
        .collect();
    assert_eq!(bad.len(), 1, "{}", out.stdout);
    assert!(
        bad[0].contains("MISMATCH checksum") && bad[0].contains("b.zip"),
        "{}",
        bad[0]
    );
    let only_a = command(&["verify", "--job", "a"], &config).await;
    assert_eq!(only_a.code, Some(0), "{}", only_a.stdout);

    // Published again, but the bucket serves the old object.
    emu.faults().add("complete:stale_public".parse().unwrap());
    let out = once(&config, "b").await;
    assert_eq!(out.code, Some(0), "verify_public = \"off\": {}", out.stderr);
    let out = command(&["verify", "--job", "b"], &config).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("MISMATCH sha256")
            && out
                .stdout
                .contains("/_data/ch.test.collection/item-1/b.zip"),
        "{}",
        out.stdout
    );

    // A missing file is a line, not a crash.
    std::fs::remove_file(&a).unwrap();
    let out = command(&["verify", "--job", "a"], &config).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("MISMATCH local"), "{}", out.stdout);

    let out = command(&["verify", "--job", "nope"], &config).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);

    let check = command(&["check"], &config).await;
    assert!(
        check.stdout.contains("verify_public: warn"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("verify_public: off"),
        "{}",
        check.stdout
    );
    emu.shutdown().await;
}
