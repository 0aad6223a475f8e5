//! The status page in a real browser: headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs) loads it from a daemon running against the emulator with a job in each state
//! (`status_page::scene`), and the test reads the DOM Chromium rendered. Every request Chromium
//! makes goes through a recording proxy of the test's (even those to loopback), which forwards
//! only to the daemon: the page must need nothing else.
//!
//! Chromium also calls home on its own whatever the flags (its component updater and account
//! service: `update.googleapis.com`, `accounts.google.com`), page or not. The test first records
//! what it does on a blank page, and allows those hosts and nothing else besides the daemon; the
//! page's DOM has no absolute reference at all.
//!
//! `STAC_UPLOADD_UPDATE_SCREENSHOT=1` also copies the screenshot it takes to
//! docs/status-page.png (shown in the README).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::status_page::{HOSTILE, scene, wait_settled};

/// The browser's executable: fails the test, saying how to get it, when there is none.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .expect(
            "chromium is not installed: the browser test needs Debian's `chromium` \
             (apt-get install -y --no-install-recommends chromium; .ci/run does it)",
        )
}

/// The host a request line of the proxy's is for (`CONNECT host:443`, `GET http://host:port/`).
fn host_of(line: &str) -> String {
    let target = line.split(' ').nth(1).unwrap_or_default();
    let target = target.strip_prefix("http://").unwrap_or(target);
    let authority = target.split('/').next().unwrap_or_default();
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_owned()
}

/// The request lines the proxy saw (`GET http://host:port/path HTTP/1.1`, `CONNECT ...`).
type Seen = Arc<Mutex<Vec<String>>>;

/// A forward proxy on loopback that records every request and forwards only those for
/// `daemon`; anything else gets a 403 (and stays recorded, for the test to fail on).
async fn recording_proxy(daemon: SocketAddr) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                // The request head, bounded.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                log.lock().unwrap().push(line.clone());
                let ours = line.starts_with("GET ")
                    && line
                        .split(' ')
                        .nth(1)
                        .is_some_and(|u| u.starts_with(&format!("http://{daemon}/")));
                if !ours {
                    let _ = client
                        .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(daemon).await else {
                    return;
                };
                if upstream.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (addr, seen)
}

/// Runs headless Chromium on `url` through the proxy with `args`; its stdout (bounded in time).
async fn browse(proxy: SocketAddr, profile: &Path, url: &str, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--proxy-server=http://{proxy}"))
        // Chromium never sends loopback through a proxy unless told to: this takes the rule away.
        .arg("--proxy-bypass-list=<-loopback>")
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("chromium ends within 90 s")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each job row's class (its state) and content, by job name.
fn rows(dom: &str) -> Vec<(String, String, String)> {
    let re =
        regex::Regex::new(r#"(?s)<tr class="([a-z_]+)" data-job="([^"]*)">(.*?)</tr>"#).unwrap();
    re.captures_iter(dom)
        .map(|c| (c[2].to_owned(), c[1].to_owned(), c[3].to_owned()))
        .collect()
}

fn row<'a>(rows: &'a [(String, String, String)], job: &str) -> &'a (String, String, String) {
    rows.iter()
        .find(|r| r.0 == job)
        .unwrap_or_else(|| panic!("no row for {job} in {rows:#?}"))
}

/// The slow job's bytes sent, as its row's progress says.
fn sent(rows: &[(String, String, String)]) -> u64 {
    let re = regex::Regex::new(r#"data-sent="(\d+)""#).unwrap();
    re.captures(&row(rows, "slow").2)
        .and_then(|c| c[1].parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn chromium_renders_each_job_progress_moving_the_hostile_name_as_text_and_nothing_from_outside()
 {
    let browser = chromium();
    let mut scene = scene().await;
    wait_settled(&scene).await;
    let (proxy, seen) = recording_proxy(scene.addr).await;
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", scene.addr);

    // What Chromium fetches by itself, on a page that needs nothing.
    let (blank_proxy, blank_seen) = recording_proxy(scene.addr).await;
    let blank_profile = tempfile::tempdir().unwrap();
    browse(
        blank_proxy,
        blank_profile.path(),
        "data:text/html,<p>blank</p>",
        &["--dump-dom"],
    )
    .await;
    let own: std::collections::BTreeSet<String> = blank_seen
        .lock()
        .unwrap()
        .iter()
        .map(|l| host_of(l))
        .collect();
    assert!(
        !own.contains("127.0.0.1"),
        "a blank page reached loopback: {own:?}"
    );

    let first = browse(proxy, profile.path(), &url, &["--dump-dom"]).await;
    let first_rows = rows(&first);
    assert_eq!(row(&first_rows, "published").1, "ok", "{first}");
    assert!(row(&first_rows, "published").2.contains("outcome good"));
    assert_eq!(row(&first_rows, "failing").1, "failing", "{first}");
    assert!(row(&first_rows, "failing").2.contains("outcome bad"));
    assert!(row(&first_rows, "slow").2.contains("uploading"), "{first}");
    assert!(row(&first_rows, "slow").2.contains("<progress"), "{first}");
    assert_eq!(row(&first_rows, "hostile").1, "ok", "{first}");

    // The hostile name is text: escaped in the serialized DOM, and no element came of it.
    let escaped = HOSTILE.replace('<', "&lt;").replace('>', "&gt;");
    assert!(row(&first_rows, "hostile").2.contains(&escaped), "{first}");
    assert!(
        !first.contains("<img"),
        "an element was made of the name: {first}"
    );
    assert!(!first.contains("<script"), "{first}");

    // Nothing outside: no absolute link or source but the daemon's own.
    let re = regex::Regex::new(r#"(?i)\b(?:src|href|action)="([^"]*)""#).unwrap();
    for c in re.captures_iter(&first) {
        let v = &c[1];
        assert!(
            !v.contains("//") || v.starts_with(&url),
            "an outside reference: {v}"
        );
    }

    // Progress moves between two loads.
    let before = sent(&first_rows);
    assert!(before > 0, "{first}");
    let mut after = before;
    for _ in 0..5 {
        let again = browse(proxy, profile.path(), &url, &["--dump-dom"]).await;
        after = sent(&rows(&again));
        if after > before {
            break;
        }
    }
    assert!(
        after > before,
        "progress did not move: {before} then {after}"
    );

    // The screenshot, for the README.
    let shots = tempfile::tempdir().unwrap();
    let shot = shots.path().join("status-page.png");
    browse(
        proxy,
        profile.path(),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1000",
            "--hide-scrollbars",
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if std::env::var_os("STAC_UPLOADD_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::write(&docs, &png).expect("docs/status-page.png is written");
    }

    // Every request Chromium made went to the daemon's page (or its icon, which a browser asks
    // for), but for what it does on a blank page too.
    let seen = seen.lock().unwrap().clone();
    let pages = seen
        .iter()
        .filter(|l| l.starts_with(&format!("GET {url} ")))
        .count();
    assert!(
        pages >= 3,
        "the page did not come through the proxy: {seen:#?}"
    );
    for line in &seen {
        let ours = [format!("GET {url} "), format!("GET {url}favicon.ico ")]
            .iter()
            .any(|p| line.starts_with(p));
        assert!(
            ours || own.contains(&host_of(line)),
            "a request to elsewhere: {line} (all: {seen:#?}; Chromium's own: {own:?})"
        );
    }
    drop(browser);
    assert!(
        crate::fixtures::terminate(&mut scene.daemon)
            .await
            .success()
    );
}
