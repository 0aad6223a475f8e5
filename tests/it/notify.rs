//! `[[notify]]` webhooks and per-job pings, against a receiver on a loopback port in the test:
//! one failure notice for a run of failures, a reminder only after `repeat`, one recovery;
//! pings in order; a receiver that never answers holds up no run; secrets never inline.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fixtures::*;
use stac_uploadd_emulator::AssetKey;

/// What a receiver does with a request once it has recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    /// Accepts and reads the request, and never answers.
    Hang,
    ServerError,
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    body: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A webhook receiver on 127.0.0.1 recording every request it is sent.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start(answer: Answer) -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let sink = got.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(Got {
                    path: uri.path().to_owned(),
                    body,
                });
                match answer {
                    Answer::Ok => axum::http::StatusCode::OK,
                    Answer::Hang => std::future::pending().await,
                    Answer::ServerError => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The `event` of each notice so far.
    fn events(&self) -> Vec<String> {
        self.got()
            .iter()
            .map(|g| g.json()["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

fn key() -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", "radar.zip")
}

/// Lines of `log` containing `text`.
fn count(log: &Log, text: &str) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

#[tokio::test]
async fn a_failing_job_sends_one_failure_a_reminder_after_repeat_and_one_recovery() {
    let (emu, dir) = emulator_with_zip(&key()).await;
    let hook = Receiver::start(Answer::Ok).await;
    let file = dir.path().join("radar.zip");
    // Every second, one try per run; the file is missing at first: each run fails.
    let config = JobFile::new(dir.path(), &emu.base_url())
        .defaults("policy = \"cancel\"")
        .cron("radar", "radar.zip", &file, "* * * * * *")
        .lines("[[notify]]\nurl_env = \"TEST_HOOK\"\nrepeat = \"4s\"")
        .write();
    let mut daemon = daemon_command(&[], &config)
        .env("TEST_HOOK", hook.url("/hook/T000/secret-token"))
        .spawn()
        .unwrap();
    let log = capture_stderr(&mut daemon);
    wait_for(Duration::from_secs(60), "a failure and a reminder", || {
        hook.got().len() >= 2
    })
    .await;
    // More failed runs than notices: the failures in between said nothing.
    wait_for(Duration::from_secs(60), "more failed runs", || {
        count(&log, "run given up") >= hook.got().len() + 2
    })
    .await;
    write_file(&file, 1000, 1);
    wait_for(Duration::from_secs(60), "the recovery", || {
        hook.events().last().is_some_and(|e| e == "recovery")
    })
    .await;
    assert_eq!(terminate(&mut daemon).await.code(), Some(0));

    let notices: Vec<serde_json::Value> = hook.got().iter().map(Got::json).collect();
    let events = hook.events();
    let failed_runs = count(&log, "run given up");
    assert_eq!(events[0], "failure", "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("recovery"));
    let reminders = &events[1..events.len() - 1];
    assert!(
        !reminders.is_empty() && reminders.iter().all(|e| e == "reminder"),
        "{events:?}"
    );
    assert!(
        failed_runs > events.len() - 1,
        "{failed_runs} failed runs, notices {events:?}"
    );
    for g in hook.got() {
        assert_eq!(g.path, "/hook/T000/secret-token");
    }
    // Each reminder at least `repeat` after the notice before it, on a later failure.
    let finished = |n: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(n["finished"].as_str().unwrap()).unwrap()
    };
    for pair in notices[..notices.len() - 1].windows(2) {
        assert!(
            finished(&pair[1]) - finished(&pair[0]) >= chrono::Duration::seconds(4),
            "{pair:?}"
        );
        assert!(pair[1]["failures_in_a_row"].as_u64() > pair[0]["failures_in_a_row"].as_u64());
    }
    let first = &notices[0];
    assert_eq!(first["job"], "radar");
    assert_eq!(first["failures_in_a_row"], 1);
    assert_eq!(first["outcome"], "failed");
    assert_eq!(first["assets"][0]["asset"], "radar.zip");
    assert_eq!(first["item"], "item-1");
    assert!(
        first["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{first}"
    );
    assert!(first["error_class"].is_string(), "{first}");
    let text = first["text"].as_str().unwrap();
    assert!(
        text.starts_with("stac-uploadd on ") && text.contains(": job radar failed ("),
        "{text}"
    );
    let recovery = notices.last().unwrap();
    assert_eq!(recovery["outcome"], "uploaded");
    assert_eq!(recovery["failures_in_a_row"], 0);
    // The URL's secret path is never logged.
    assert_eq!(count(&log, "secret-token"), 0);
}

#[tokio::test]
async fn run_once_pings_start_then_success_then_start_then_fail_in_order() {
    let (emu, dir) = emulator_with_zip(&key()).await;
    let monitor = Receiver::start(Answer::Ok).await;
    let file = dir.path().join("radar.zip");
    write_file(&file, 1000, 2);
    let config = JobFile::new(dir.path(), &emu.base_url())
        .defaults("policy = \"cancel\"")
        .cron("radar", "radar.zip", &file, "0 3 * * *")
        .lines("ping_url_env = \"TEST_PING\"\n[[notify]]\nurl_env = \"TEST_HOOK\"\non = [\"success\", \"failure\"]")
        .write();
    let once = || {
        let mut c = once_command(&[], &config);
        c.env("TEST_PING", monitor.url("/ping/abc-123"))
            .env("TEST_HOOK", monitor.url("/hook"));
        c
    };
    let out = Out::from(once().output().await.unwrap());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    std::fs::remove_file(&file).unwrap();
    let out = Out::from(once().output().await.unwrap());
    assert_eq!(out.code, Some(1), "{}", out.stderr);

    // `run --once` waited for them: all are there when it has exited.
    let got = monitor.got();
    let pings: Vec<&str> = got
        .iter()
        .filter(|g| g.path.starts_with("/ping/"))
        .map(|g| g.path.as_str())
        .collect();
    assert_eq!(
        pings,
        [
            "/ping/abc-123/start",
            "/ping/abc-123",
            "/ping/abc-123/start",
            "/ping/abc-123/fail"
        ]
    );
    let fail = got.iter().find(|g| g.path.ends_with("/fail")).unwrap();
    assert!(fail.body.contains("radar.zip"), "{}", fail.body);
    let events: Vec<String> = got
        .iter()
        .filter(|g| g.path == "/hook")
        .map(|g| g.json()["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, ["success", "failure"]);
}

#[tokio::test]
async fn a_receiver_that_never_answers_or_fails_holds_up_no_run() {
    let (emu, dir) = emulator_with_zip(&key()).await;
    let hanging = Receiver::start(Answer::Hang).await;
    let failing = Receiver::start(Answer::ServerError).await;
    let fine = Receiver::start(Answer::Ok).await;
    let file = dir.path().join("radar.zip");
    write_file(&file, 1000, 3);
    let target = |var: &str| {
        format!("[[notify]]\nurl_env = \"{var}\"\non = [\"success\"]\ntimeout = \"5m\"")
    };
    let config = JobFile::new(dir.path(), &emu.base_url())
        .cron("radar", "radar.zip", &file, "* * * * * *")
        .lines(&format!(
            "{}\n{}\n{}",
            target("TEST_HANG"),
            target("TEST_FAIL"),
            target("TEST_FINE")
        ))
        .write();
    let mut daemon = daemon_command(
        &[
            "--log-format",
            "json",
            "run",
            "--observe-listen",
            "127.0.0.1:0",
        ],
        &config,
    )
    .env("TEST_HANG", hanging.url("/hang"))
    .env("TEST_FAIL", failing.url("/fail"))
    .env("TEST_FINE", fine.url("/fine"))
    .spawn()
    .unwrap();
    let log = capture_stderr(&mut daemon);
    let addr = listener_address(&log).await;
    wait_for(
        Duration::from_secs(30),
        "the hanging receiver to hold a notice",
        || !hanging.got().is_empty(),
    )
    .await;
    // The runs go on, one a second, each told to the other targets, while the first notice to
    // the hanging receiver is still unanswered.
    let runs = || count(&log, "unchanged: the asset already holds the file");
    let before = runs();
    wait_for(
        Duration::from_secs(60),
        "more runs and their notices",
        || runs() >= before + 3 && fine.got().len() >= 4,
    )
    .await;
    assert_eq!(
        hanging.got().len(),
        1,
        "its worker waits on the first notice"
    );
    // A 500 is tried three times, then given up, logged and counted.
    wait_for(Duration::from_secs(60), "a notice given up", || {
        count(&log, "notice not delivered: given up") >= 1
    })
    .await;
    let samples = scrape(addr).await;
    let notices = |target: &str, outcome: &str| {
        value(
            &samples,
            "stac_uploadd_notifications_total",
            &[("target", target), ("outcome", outcome)],
        )
    };
    assert!(
        notices("1", "failed").is_some_and(|n| n >= 1.0),
        "{samples:?}"
    );
    assert!(notices("2", "sent").is_some_and(|n| n >= 4.0));
    assert_eq!(notices("0", "sent"), Some(0.0));
    assert_eq!(notices("0", "failed"), Some(0.0));
    let tries_per_notice = failing.got().len() as f64 / notices("1", "failed").unwrap();
    assert!(tries_per_notice >= 3.0, "{tries_per_notice}");
    // Shutdown gives the queued notices a short flush, then drops (and counts) the rest.
    assert_eq!(terminate(&mut daemon).await.code(), Some(0));
    assert!(count(&log, "notices dropped") >= 1);
    assert_eq!(hanging.got().len(), 1);
}

/// `check` on `text` written to `dir/jobs.toml` with `mode`: its exit code and output.
async fn check(dir: &Path, text: &str, mode: u32, envs: &[(&str, &str)]) -> Out {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("jobs.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command.arg("check").arg("--config").arg(&path);
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().await.unwrap().into()
}

const HEAD: &str = "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[[job]]\nname = \"radar\"\ncollection = \"c\"\nitem = \"i\"\nasset = \"a.zip\"\nfile = \"/tmp/a.zip\"\nschedule = \"0 * * * *\"\n";

#[tokio::test]
async fn check_refuses_a_webhook_url_inline_or_in_a_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let state = format!("state_dir = \"{}\"\n", dir.path().join("state").display());
    let secret = "https://hooks.example/services/T000/B000/inline-secret-42";

    let out = check(
        dir.path(),
        &format!("{state}{HEAD}[[notify]]\nurl = \"{secret}\"\n"),
        0o644,
        &[],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("jobs.toml:12:7: url refused: a webhook URL is a secret"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("url_env"), "{}", out.stderr);
    assert!(!out.stderr.contains("inline-secret-42"), "{}", out.stderr);

    let hook = dir.path().join("hook");
    std::fs::write(&hook, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "{state}{HEAD}ping_url_env = \"PING\"\n[[notify]]\nurl_file = \"{}\"\njobs = [\"radar\", \"radra\"]\n",
        hook.display()
    );
    let out = check(
        dir.path(),
        &text,
        0o600,
        &[("PING", "https://hc.example/ping/p-secret")],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(
        out.stderr.contains("jobs.toml:13:12: url_file refused:")
            && out
                .stderr
                .contains("is open to group or others (mode 0644)")
            && out.stderr.contains("chmod 600"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("jobs.toml:14:18: no job named \"radra\""),
        "{}",
        out.stderr
    );

    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = text.replace(", \"radra\"", "");
    let out = check(
        dir.path(),
        &text,
        0o600,
        &[("PING", "https://hc.example/ping/p-secret")],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("  notify 0: POST to https://hooks.example on failure, recovery, jobs: radar, reminder every 1h, timeout 10s"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("    notifications: notify 0 (failure, recovery); pings: https://hc.example (/start, success, /fail)"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("secret"), "{}", out.stdout);
}
