//! https: the emulator serving TLS with a certificate from a private CA (as a self-hosted server
//! or a TLS-inspecting proxy has), trusted through `ca_file`, and refused without it.

use std::time::Duration;

use crate::fixtures::*;
use stac_client::retry::Classified;
use stac_client::{ErrorClass, StacClient};
use stac_uploadd_emulator::{CallKind, Emulator};

struct Setup {
    emu: Emulator,
    pki: TestPki,
    dir: tempfile::TempDir,
}

async fn https_setup() -> Setup {
    let (emu, pki, dir) = https_emulator().await;
    Setup { emu, pki, dir }
}

impl Setup {
    fn env(self, client: StacClient) -> Env {
        Env {
            emu: self.emu,
            client,
            dir: self.dir,
        }
    }
}

#[tokio::test]
async fn upload_over_https_trusting_the_ca_file() {
    let s = https_setup().await;
    assert!(
        s.emu.base_url().starts_with("https://"),
        "{}",
        s.emu.base_url()
    );
    let client = client_with(&s.emu.base_url(), basic(), Some(&s.pki.ca), None);
    let env = s.env(client);
    let (target, path, sha) = env.asset_with_file("secure.zip", 11 * MIB);
    let report = env.upload(&target, &path).await.expect("upload over https");
    assert_eq!(report.parts, 3);
    env.assert_holds(&target, &sha);
    env.assert_nothing_in_progress();
    // The server only speaks TLS, so the parts went to https presigned URLs.
    assert_eq!(env.emu.call_count(CallKind::PutPart), 3);
    let info = env.client.read_asset(&target).await.unwrap();
    assert!(
        info.href
            .as_deref()
            .is_some_and(|h| h.starts_with("https://")),
        "{info:?}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_not_retried() {
    let s = https_setup().await;
    let client = client_with(&s.emu.base_url(), basic(), None, None);
    let env = s.env(client);
    let (target, path, _) = env.asset_with_file("untrusted.zip", 1000);
    let started = std::time::Instant::now();
    let err = env.upload(&target, &path).await.unwrap_err();
    let e = stac_error(&err).expect("an API error");
    assert!(e.description.contains("certificate"), "{e}");
    assert!(e.description.contains("ca_file"), "the hint: {e}");
    assert_eq!(e.class, ErrorClass::RequestWrong, "{e}");
    assert!(!e.is_retryable());
    // Not retried with backoff: the class says so above; the bound only catches a retry loop
    // (far above the moment it takes, however loaded the machine).
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(env.emu.call_count(CallKind::CreateUpload), 0);
}

#[tokio::test]
async fn ca_file_in_the_job_file_is_resolved_next_to_it_and_used() {
    let s = https_setup().await;
    let job_dir = s.dir.path().join("etc");
    std::fs::create_dir_all(job_dir.join("export")).unwrap();
    std::fs::copy(&s.pki.ca, job_dir.join("corporate-ca.pem")).unwrap();
    let job_file = job_dir.join("jobs.toml");
    let text = format!(
        r#"[server]
url = "{}"
ca_file = "corporate-ca.pem"

[[job]]
name = "j"
collection = "c"
asset = "a.zip"
file = "export/a.zip"
schedule = "0 3 * * *"
"#,
        s.emu.base_url()
    );
    let config = stac_uploadd::config::parse(&text, &job_file, &|_| None).expect("valid");
    assert_eq!(
        config.server.ca_file.as_deref(),
        Some(job_dir.join("corporate-ca.pem").as_path())
    );
    let mut cfg = config.server.client_config();
    cfg.auth = basic();
    cfg.no_proxy = None;
    let env = s.env(StacClient::new(cfg).expect("client"));
    let (target, path, sha) = env.asset_with_file("configured.zip", 1000);
    env.upload(&target, &path).await.expect("upload");
    env.assert_holds(&target, &sha);

    // A file that is no certificate is refused where it is named.
    std::fs::write(job_dir.join("corporate-ca.pem"), "hello\n").unwrap();
    let err = stac_uploadd::config::parse(&text, &job_file, &|_| None).unwrap_err();
    let located = &err.errors()[0];
    assert_eq!((located.line, located.col), (3, 11), "{err}");
    assert!(located.message.contains("no PEM certificate"), "{err}");

    // Nor is a CA file read without bound: a device, a FIFO, a file past the limit are refused
    // at once where they are named (before, /dev/zero was read until memory ran out).
    let fifo = job_dir.join("ca.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let huge = job_dir.join("huge.pem");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    for (ca, said) in [
        ("/dev/zero", "a device, not a regular file"),
        ("ca.fifo", "a FIFO, not a regular file"),
        ("huge.pem", "larger than 4MiB"),
    ] {
        let text = text.replace("corporate-ca.pem", ca);
        let err = stac_uploadd::config::parse(&text, &job_file, &|_| None).unwrap_err();
        let located = &err.errors()[0];
        assert_eq!((located.line, located.col), (3, 11), "{err}");
        assert!(located.message.contains(said), "{ca}: {err}");
    }
}

#[tokio::test]
async fn the_emulator_command_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = test_pki(dir.path());
    let port = free_port();
    let mut child = tokio::process::Command::new(BIN)
        .args(["emulator", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let http = reqwest::Client::builder()
        .tls_certs_only(stac_client::load_ca_file(&pki.ca).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/api/stac/v1/collections/nope");
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(r) = http.get(&url).send().await {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = answer.expect("the emulator answers over https");
    assert_eq!(answer.status(), 404);
    let _ = child.kill().await;

    // One of the two flags alone is a usage error.
    let out = tokio::process::Command::new(BIN)
        .args(["emulator", "--tls-cert"])
        .arg(&pki.cert)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
