//! Credentials never reach a log line, an error message or a panic message, and presigned URLs
//! are logged without their query string: the real binary at trace level, every crate included.

use crate::fixtures::*;
use base64::Engine as _;
use stac_uploadd_emulator::{CallKind, Emulator, EmulatorAuth, EmulatorConfig, FaultAction};

const TOKEN: &str = "tok-3f9a7c1e5b2d4680aaaa";

/// Everything a run printed, stdout and stderr.
async fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "trace").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("the binary runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn assert_clean(output: &str, secrets: &[&str]) {
    assert!(
        output.len() > 1000,
        "trace logging produced output to check: {output}"
    );
    for s in secrets {
        assert!(!output.contains(s), "secret {s:?} leaked in:\n{output}");
    }
    assert!(
        !output.contains("X-Amz-Signature"),
        "a presigned URL query leaked in:\n{output}"
    );
    assert!(
        !output.contains("X-Amz-Expires"),
        "a presigned URL query leaked in:\n{output}"
    );
}

#[tokio::test]
async fn basic_auth_uploads_at_trace_level_leak_nothing() {
    let env = start().await;
    env.item_asset("secret.zip");
    // Faults put part URLs and request URLs into error messages and retry logs.
    let f = env.emu.faults();
    f.fault(CallKind::PutPart, FaultAction::Status(503), 1);
    f.fault(CallKind::PutPart, FaultAction::Drop, 1);
    f.fault(CallKind::PutPart, FaultAction::ExpireUrl, 1);
    let (path, _) = env.file("secret.zip", 7 * MIB);
    let base = env.emu.base_url();
    let args = [
        "upload",
        "--url",
        &base,
        "--auth",
        "basic",
        "--user",
        USER,
        "--collection",
        "ch.test.collection",
        "--item",
        "item-1",
    ];
    let basic_header =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    // First upload fails on the expired URL (a 403 with S3's XML and the URL in the message)...
    let mut all_args = args.to_vec();
    all_args.extend([
        "--asset",
        "secret.zip",
        "--part-size",
        "5MiB",
        // Every run sends: the point is what each request and error prints.
        "--force",
        path.to_str().unwrap(),
    ]);
    let (_, out1) = run(&all_args, &[("STAC_UPLOADD_SECRET", PASSWORD)]).await;
    // ...the second succeeds; a third with a wrong password fails with 401.
    let (ok, out2) = run(&all_args, &[("STAC_UPLOADD_SECRET", PASSWORD)]).await;
    assert!(ok, "{out2}");
    let (ok, out3) = run(&all_args, &[("STAC_UPLOADD_SECRET", "wrong-password-123")]).await;
    assert!(!ok);
    for out in [&out1, &out2, &out3] {
        assert_clean(out, &[PASSWORD, &basic_header, "wrong-password-123"]);
    }
    // The checks above mean something only if the places a leak would show are in the output.
    assert!(
        out1.contains("/_s3/") && out1.contains("?<redacted>"),
        "part URLs are logged, redacted: {out1}"
    );
    assert!(
        out2.contains("request") && out2.contains("status=200"),
        "requests are traced: {out2}"
    );
}

#[tokio::test]
async fn token_auth_daemon_at_trace_level_leaks_nothing() {
    let config = EmulatorConfig {
        auth: EmulatorAuth::Token(TOKEN.into()),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let key = stac_uploadd_emulator::AssetKey::item_asset("c", "i", "a.zip");
    emu.create_asset(&key, "application/zip").unwrap();
    emu.fault(CallKind::CreateUpload, FaultAction::Status(502), 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.zip");
    let sha = write_file(&file, 6 * MIB, 3);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(
        &jobs,
        format!(
            "state_dir = \"{}\"\n[server]\nurl = \"{}\"\n[server.auth]\ntype = \"token\"\ntoken_file = \"{}\"\n[defaults]\npart_size = \"5MiB\"\n[[job]]\nname = \"j\"\ncollection = \"c\"\nitem = \"i\"\nasset = \"a.zip\"\nfile = \"{}\"\nschedule = \"* * * * * *\"\n",
            dir.path().join("state").display(),
            emu.base_url(),
            token_file.display(),
            file.display()
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&jobs)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while emu.asset(&key).and_then(|a| a.checksum) != Some(format!("1220{sha}")) {
        assert!(tokio::time::Instant::now() < end, "no upload within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    signal(&child, libc::SIGTERM);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&text, &[TOKEN]);
}

// --- issue 17 (wire): credentials in URLs -----------------------------------------------------

/// Loads `text` from a 0644 `jobs.toml`; the displayed error when it is refused.
fn refusal_0644(text: &str) -> (std::path::PathBuf, String, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = |name: &str| (name == "PW").then(|| PASSWORD.to_owned());
    let err = match stac_uploadd::config::parse(text, &path, &env) {
        Ok(_) => panic!("expected {text} to be refused"),
        Err(e) => e.to_string(),
    };
    (path, err, dir)
}

const JOB: &str = "[[job]]\nname = \"j\"\ncollection = \"c\"\nitem = \"i\"\nasset = \"a.zip\"\nfile = \"/tmp/a.zip\"\nschedule = \"0 * * * *\"\n";

#[test]
fn a_password_in_the_server_url_is_refused_at_its_position_like_an_inline_password() {
    let text = format!(
        "[server]\nurl = \"https://publisher:pw-in-url-42@data.example/api/stac/v1\"\n[server.auth]\ntype = \"none\"\n{JOB}"
    );
    let (path, err, _dir) = refusal_0644(&text);
    assert!(
        err.contains(&format!("{}:2:7: ", path.display())),
        "at the url's line and column: {err}"
    );
    assert!(err.contains("password_env or password_file"), "{err}");
    assert!(!err.contains("pw-in-url-42"), "{err}");
}

#[test]
fn a_user_in_a_cognito_endpoint_is_refused_at_its_position() {
    let text = format!(
        "[server]\nurl = \"https://data.example/api/stac/v1\"\n[server.auth]\ntype = \"cognito\"\nusername = \"u\"\npassword_env = \"PW\"\nclient_id = \"cid\"\nregion = \"eu-central-1\"\nendpoint = \"https://u:pw-endpoint-7@cognito.example/\"\n{JOB}"
    );
    let (path, err, _dir) = refusal_0644(&text);
    assert!(err.contains(&format!("{}:9:12: ", path.display())), "{err}");
    assert!(!err.contains("pw-endpoint-7"), "{err}");
}

#[test]
fn a_v09_url_with_api_version_v1_is_refused_at_the_url() {
    let text = format!(
        "[server]\nurl = \"https://data.example/api/stac/v0.9/\"\n[server.auth]\ntype = \"none\"\n{JOB}"
    );
    let (path, err, _dir) = refusal_0644(&text);
    assert!(err.contains(&format!("{}:2:7: ", path.display())), "{err}");
    assert!(
        err.contains("is the v0.9 API but api_version is \"v1\" (the default)"),
        "{err}"
    );
    let text = format!(
        "[server]\nurl = \"https://data.example/api/stac/v1\"\napi_version = \"v0.9\"\n[server.auth]\ntype = \"none\"\n{JOB}"
    );
    let (_, err, _dir) = refusal_0644(&text);
    assert!(
        err.contains("is the v1 API but api_version is \"v0.9\": set api_version = \"v1\""),
        "{err}"
    );
}

#[tokio::test]
async fn no_basic_auth_is_sent_for_auth_none_even_with_userinfo_in_the_url() {
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    let key = stac_uploadd_emulator::AssetKey::item_asset("c", "i", "a.zip");
    emu.create_asset(&key, "application/zip").unwrap();
    // A URL given elsewhere than a job file (a flag, a library caller) may still carry it.
    let base = emu
        .base_url()
        .replace("http://", "http://publisher:pw-in-url@");
    let client = client_for(&base, stac_client::ApiVersion::V1, stac_client::Auth::None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.zip");
    write_file(&file, 1000, 5);
    stac_upload::upload_file(
        &client,
        &stac_client::AssetTarget::item_asset("c", "i", "a.zip"),
        &file,
        &opts(),
        std::sync::Arc::new(()),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let requests = emu.requests();
    assert!(
        requests.iter().any(|r| r.call == CallKind::CreateUpload),
        "{requests:?}"
    );
    for r in &requests {
        assert_eq!(r.authorization, None, "{:?} carried credentials", r.call);
    }
}
