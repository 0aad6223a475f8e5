//! Hostile answers: bodies that never end, that are far too long, that trickle forever. Each call
//! is cut at the size limit or the request deadline, quickly, with an error naming which, and
//! the process's memory stays bounded. Also: URL passwords never printed, no colour codes on a
//! pipe.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::fixtures::*;
use secrecy::SecretString;
use stac_client::retry::Classified;
use stac_client::{
    ApiVersion, AssetTarget, Auth, CognitoAuth, ErrorClass, PartNumber, PresignedUrl, StacClient,
    StacError, UploadId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Growth of the resident set a bounded read may cause (the limits are 4 MiB; the rest is
/// allocator and runtime slack).
const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// How long a cut answer may take: far above the second or two it takes on a loaded machine, yet
/// well under the 60 s request deadline that an uncut read would run into (the trickle's 2 s
/// deadline is checked from below, which load cannot break).
const FAR_BELOW_THE_DEADLINE: Duration = Duration::from_secs(30);

/// What the hostile server answers to every request.
#[derive(Clone, Copy)]
enum Hostile {
    /// `status`, then `{"a":"` and `x` forever (no length, connection close).
    Endless {
        status: u16,
        content_type: &'static str,
    },
    /// A 200 JSON body of `len` bytes, with its `Content-Length`.
    Long { len: u64 },
    /// A 200 JSON body of one byte every `every`, forever.
    Trickle { every: Duration },
}

struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn hostile(mode: Hostile) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/stac/v1", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                // Errors end the connection: the client hung up, which is the point.
                let _ = answer(conn, mode, &counted).await;
            });
        }
    });
    Server {
        base,
        requests,
        _task: task,
    }
}

/// Reads one request (head, and a body of its `Content-Length`) and answers per `mode`. The
/// body is written from one 64 KiB buffer over and over: the test holds none of it.
async fn answer(mut conn: TcpStream, mode: Hostile, counted: &AtomicUsize) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    counted.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    tokio::io::copy(&mut (&mut conn).take(len), &mut tokio::io::sink()).await?;
    let filler = vec![b'x'; 64 * 1024];
    match mode {
        Hostile::Endless {
            status,
            content_type,
        } => {
            conn.write_all(
                format!(
                    "HTTP/1.1 {status} Hostile\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
            let start: &[u8] = if content_type.contains("html") {
                b"<html><head><title>Endless</title></head><body>"
            } else if content_type.contains("xml") {
                b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>"
            } else {
                b"{\"a\":\""
            };
            conn.write_all(start).await?;
            loop {
                conn.write_all(&filler).await?;
            }
        }
        Hostile::Long { len } => {
            conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{\"a\":\""
                )
                .as_bytes(),
            )
            .await?;
            let mut left = len - 8;
            while left > 0 {
                let n = left.min(filler.len() as u64) as usize;
                conn.write_all(&filler[..n]).await?;
                left -= n as u64;
            }
            conn.write_all(b"\"}").await
        }
        Hostile::Trickle { every } => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"a\":\"",
            )
            .await?;
            loop {
                tokio::time::sleep(every).await;
                conn.write_all(b"x").await?;
                conn.flush().await?;
            }
        }
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Measures the peak of the resident set while it lives: the kernel's high-water mark, reset at
/// the start (`clear_refs` 5), or where that cannot be reset, `VmRSS` sampled every
/// millisecond. (`VmRSS` after the call alone would miss a large body already freed.)
struct Peak {
    hwm_reset: bool,
    sampled: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    fn start() -> Self {
        let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let sampled = Arc::new(std::sync::atomic::AtomicU64::new(status_kib("VmRSS")));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = (!hwm_reset).then(|| {
            let (sampled, stop) = (sampled.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    sampled.fetch_max(status_kib("VmRSS"), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        });
        Peak {
            hwm_reset,
            sampled,
            stop,
            sampler,
        }
    }

    /// The peak resident set since `start`, in KiB.
    fn end(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.sampler.take() {
            t.join().unwrap();
        }
        let now = status_kib("VmRSS");
        if self.hwm_reset {
            status_kib("VmHWM").max(now)
        } else {
            self.sampled.load(Ordering::SeqCst).max(now)
        }
    }
}

/// Runs `call`, and checks that it failed within `within` and that the resident set never grew
/// by [`MAX_GROWTH_KIB`] or more meanwhile; returns the error and prints the figures.
async fn bounded<T: std::fmt::Debug, E: std::fmt::Display>(
    what: &str,
    within: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> E {
    let before = status_kib("VmRSS");
    let peak = Peak::start();
    let started = Instant::now();
    let result = call.await;
    let took = started.elapsed();
    let peak = peak.end();
    let e = result.expect_err("a hostile answer is an error");
    let growth = peak.saturating_sub(before);
    println!(
        "{what}: failed after {took:?}, VmRSS {before} kB, peak {peak} kB (+{growth} kB): {e}"
    );
    assert!(took < within, "{what}: took {took:?}: {e}");
    assert!(
        growth < MAX_GROWTH_KIB,
        "{what}: the resident set grew by {growth} kB ({before} -> peak {peak}): {e}"
    );
    e
}

fn client(base: &str, timeout: Duration) -> StacClient {
    let mut cfg = stac_client::ClientConfig::new(base.parse().unwrap());
    cfg.request_timeout = timeout;
    cfg.no_proxy = None;
    StacClient::new(cfg).unwrap()
}

fn target() -> AssetTarget {
    AssetTarget::item_asset("ch.test.collection", "item-1", "a.zip")
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_limit() {
    // The resident set is the process's: the other tests of the binary would move it.
    if !alone_in_process("bounds::an_endless_answer_is_cut_at_the_limit") {
        return;
    }
    let s = hostile(Hostile::Endless {
        status: 200,
        content_type: "application/json",
    })
    .await;
    // The deadline is far: the limit must stop the read, not the clock.
    let c = client(&s.base, Duration::from_secs(60));
    let e: StacError = bounded(
        "endless 200",
        FAR_BELOW_THE_DEADLINE,
        c.read_asset(&target()),
    )
    .await;
    let text = e.to_string();
    assert!(
        text.contains("exceeds 4 MiB: cut after 4 MiB") && text.contains("GET http://"),
        "{text}"
    );
    assert_eq!(e.class, ErrorClass::ServerBroken, "not transient: {text}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn a_100_mb_answer_is_cut_at_the_limit() {
    // The resident set is the process's: the other tests of the binary would move it.
    if !alone_in_process("bounds::a_100_mb_answer_is_cut_at_the_limit") {
        return;
    }
    let s = hostile(Hostile::Long { len: 100_000_000 }).await;
    let c = client(&s.base, Duration::from_secs(60));
    let e = bounded(
        "100 MB 200",
        FAR_BELOW_THE_DEADLINE,
        c.get_upload(&target(), &UploadId("u-1".into())),
    )
    .await;
    let text = e.to_string();
    assert!(
        text.contains("get upload failed") && text.contains("exceeds 4 MiB"),
        "{text}"
    );
    assert_eq!(e.class, ErrorClass::ServerBroken, "{text}");
}

#[tokio::test]
async fn a_trickling_answer_is_cut_at_the_deadline() {
    // The resident set is the process's: the other tests of the binary would move it.
    if !alone_in_process("bounds::a_trickling_answer_is_cut_at_the_deadline") {
        return;
    }
    let s = hostile(Hostile::Trickle {
        every: Duration::from_millis(100),
    })
    .await;
    let c = client(&s.base, Duration::from_secs(2));
    let started = Instant::now();
    let e = bounded("trickle", FAR_BELOW_THE_DEADLINE, c.read_asset(&target())).await;
    assert!(started.elapsed() >= Duration::from_millis(1900));
    let text = e.to_string();
    assert!(
        text.contains("answer not complete within 2 s"),
        "names the deadline: {text}"
    );
    // A deadline is a timeout like any other: worth another attempt.
    assert!(e.is_retryable(), "{text}");
}

#[tokio::test]
async fn endless_error_pages_are_read_only_for_their_start() {
    // The resident set is the process's: the other tests of the binary would move it.
    if !alone_in_process("bounds::endless_error_pages_are_read_only_for_their_start") {
        return;
    }
    let s = hostile(Hostile::Endless {
        status: 502,
        content_type: "text/html",
    })
    .await;
    let c = client(&s.base, Duration::from_secs(60));
    let e = bounded(
        "endless 502 page",
        FAR_BELOW_THE_DEADLINE,
        c.read_asset(&target()),
    )
    .await;
    assert_eq!(e.status.map(|s| s.as_u16()), Some(502));
    // The page never closes its title: the description is its text, cut short.
    assert!(e.description.starts_with("gateway page: "), "{e}");
    assert!(e.description.len() < 1000, "{e}");
    assert!(e.is_retryable(), "a 502 stays a 502: {e}");

    // An S3 error on a part URL that never ends.
    let s = hostile(Hostile::Endless {
        status: 403,
        content_type: "application/xml",
    })
    .await;
    let c = client(&s.base, Duration::from_secs(60));
    let url = PresignedUrl {
        part: PartNumber(1),
        url: format!("{}/part?X-Amz-Signature=secret", s.base),
        expires: None,
    };
    let md5 = stac_client::Md5([0; 16]);
    let e = bounded(
        "endless 403 XML",
        FAR_BELOW_THE_DEADLINE,
        c.put_part(
            &url,
            &md5,
            4,
            reqwest::Body::from("part"),
            Duration::from_secs(60),
        ),
    )
    .await;
    assert_eq!(e.status.map(|s| s.as_u16()), Some(403), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
}

#[tokio::test]
async fn an_endless_cognito_answer_is_cut() {
    // The resident set is the process's: the other tests of the binary would move it.
    if !alone_in_process("bounds::an_endless_cognito_answer_is_cut") {
        return;
    }
    let s = hostile(Hostile::Endless {
        status: 200,
        content_type: "application/x-amz-json-1.1",
    })
    .await;
    let auth = CognitoAuth::new(
        "machine-user",
        SecretString::from("pw"),
        "client-1",
        "eu-central-1",
    )
    .with_endpoint(
        format!("{}/", s.base.trim_end_matches("/api/stac/v1"))
            .parse()
            .unwrap(),
    );
    let mut cfg = stac_client::ClientConfig::new("http://127.0.0.1:9/api/stac/v1".parse().unwrap());
    cfg.auth = Auth::Cognito(auth);
    cfg.request_timeout = Duration::from_secs(60);
    cfg.no_proxy = None;
    let c = StacClient::new(cfg).unwrap();
    let e = bounded(
        "endless Cognito",
        FAR_BELOW_THE_DEADLINE,
        c.read_asset(&target()),
    )
    .await;
    let text = e.to_string();
    assert!(text.contains("exceeds 256 KiB"), "{text}");
    assert!(!e.is_retryable(), "{text}");
}

#[tokio::test]
async fn an_upload_against_an_endless_server_is_cut_and_not_retried() {
    // The resident set is the process's: the other tests of the binary would move it.
    if !alone_in_process("bounds::an_upload_against_an_endless_server_is_cut_and_not_retried") {
        return;
    }
    let s = hostile(Hostile::Endless {
        status: 200,
        content_type: "application/json",
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.zip");
    write_file(&file, 6 * MIB, 1);
    let c = client_for(&s.base, ApiVersion::V1, basic());
    let e = bounded(
        "upload_file",
        FAR_BELOW_THE_DEADLINE,
        stac_upload::upload_file(
            &c,
            &target(),
            &file,
            &opts(),
            Arc::new(()),
            &CancellationToken::new(),
        ),
    )
    .await;
    let stac = stac_error(&e).unwrap_or_else(|| panic!("a STAC error: {e}"));
    assert!(stac.to_string().contains("exceeds 4 MiB"), "{e}");
    assert_eq!(stac.class, ErrorClass::ServerBroken, "{e}");
    let n = s.requests.load(Ordering::SeqCst);
    assert!(n <= 2, "an oversized answer is not retried: {n} requests");
}

// --- URL passwords --------------------------------------------------------------------------

fn job_file(dir: &Path, url: &str) -> std::path::PathBuf {
    let file = dir.join("a.zip");
    write_file(&file, 1024, 1);
    JobFile::new(dir, url)
        .cron("nightly", "a.zip", &file, "30 2 * * *")
        .write()
}

async fn check(config: &Path) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_refuses_a_password_in_the_server_url_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_file(dir.path(), "https://user:pw-in-url@127.0.0.1:9/api/stac/v1");
    let (code, stdout, stderr) = check(&config).await;
    // Credentials in a URL escape the inline-secret rule: refused, at the url (issue 17).
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        !stdout.contains("pw-in-url") && !stderr.contains("pw-in-url"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("jobs.toml:3:7: url https://user:***@127.0.0.1:9/api/stac/v1 carries"),
        "{stderr}"
    );

    // A file check refuses: the error line does not show it either.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("30 2 * * *", "61 2 * * *")).unwrap();
    let (code, stdout, stderr) = check(&config).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        !stdout.contains("pw-in-url") && !stderr.contains("pw-in-url"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}

#[tokio::test]
async fn an_upload_with_passwords_in_urls_does_not_print_them() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.zip");
    write_file(&file, 1024, 1);
    let out = tokio::process::Command::new(BIN)
        .args(["-vv", "upload", "--retries", "0"])
        .arg("--url")
        .arg(format!(
            "http://user:pw-in-url@127.0.0.1:{port}/api/stac/v1"
        ))
        .arg("--proxy")
        .arg(format!("http://proxyuser:pw-in-proxy@127.0.0.1:{port}"))
        .args(["--collection", "ch.test.collection", "--item", "item-1"])
        .args(["--asset", "a.zip"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("pw-in-url") && !stderr.contains("pw-in-proxy"),
        "{stderr}"
    );
    assert!(stderr.contains("error:"), "{stderr}");
    // Refused before anything is sent, with the flags' way to give a password (issue 17).
    assert!(
        stderr.contains("credentials in a URL are refused")
            && stderr.contains("STAC_UPLOADD_SECRET"),
        "{stderr}"
    );
}

// --- Colour codes ---------------------------------------------------------------------------

/// `stac-uploadd upload` with `extra` flags against a server whose answers never end, stderr
/// piped.
async fn upload_to_endless_server(extra: &[&str]) -> Output {
    let s = hostile(Hostile::Endless {
        status: 200,
        content_type: "application/json",
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.zip");
    write_file(&file, 1024, 1);
    tokio::process::Command::new(BIN)
        .args(extra)
        .args(["upload", "--retries", "0", "--url", &s.base])
        .args(["--collection", "ch.test.collection", "--item", "item-1"])
        .args(["--asset", "a.zip"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn logs_on_a_pipe_have_no_colour_codes() {
    for extra in [&["-vv"][..], &["-vv", "--log-format", "json"][..]] {
        let out = upload_to_endless_server(extra).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains("exceeds 4 MiB"), "{extra:?}: {stderr}");
        // Log lines were written (the request, at debug level), and none has an escape sequence.
        assert!(stderr.contains("DEBUG"), "{extra:?}: {stderr}");
        assert!(!stderr.contains('\x1b'), "{extra:?}: {stderr:?}");
    }
}

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("an RssAnon line")
}

/// What a digest does to glibc's allocator: 1 MiB chunks freed beside small blocks that outlive
/// them. With the daemon's fixed mmap threshold (`stac_uploadd::memory`) they leave the resident
/// set; with glibc's own rule, after the first one they stay in its arenas (65 MiB measured).
/// In a process of its own: the resident set is the process's.
#[test]
fn large_buffers_freed_between_live_small_ones_leave_the_resident_set() {
    if !alone_in_process(
        "bounds::large_buffers_freed_between_live_small_ones_leave_the_resident_set",
    ) {
        return;
    }
    assert!(
        stac_uploadd::memory::return_large_buffers()
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some(),
        "mallopt refused the threshold"
    );
    // A 1 MiB chunk freed (left alone, glibc would raise its threshold to 1 MiB here)...
    drop(std::hint::black_box(vec![1u8; 1 << 20]));
    let before = rss_anon_kib();
    // ...then 64 more, each beside a small block that outlives it (a run's bookkeeping).
    let mut small = Vec::new();
    let mut large = Vec::new();
    for i in 0..64u8 {
        large.push(std::hint::black_box(vec![i | 1; 1 << 20]));
        small.push(std::hint::black_box(vec![i; 4096]));
    }
    drop(large);
    let after = rss_anon_kib();
    drop(small);
    assert!(
        after < before + 16 * 1024,
        "RssAnon {before} KiB before, {after} KiB after 64 MiB were freed"
    );
}
