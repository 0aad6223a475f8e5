//! Helpers shared by the integration tests: an emulator on an ephemeral loopback port, a client
//! for it, and sample files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use stac_uploadd::stac::{ApiVersion, AssetTarget, Auth, ClientConfig, StacClient};
use stac_uploadd::units::ByteSize;
use stac_uploadd::upload::{self, UploadError, UploadOptions, UploadReport};
use stac_uploadd_emulator::{AssetKey, Emulator, EmulatorAuth, EmulatorConfig, UploadState};
use tokio_util::sync::CancellationToken;

pub const USER: &str = "publisher";
pub const PASSWORD: &str = "correct horse battery staple";
pub const MIB: u64 = 1024 * 1024;

pub struct Env {
    pub emu: Emulator,
    pub client: StacClient,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Env {
    start_with(EmulatorConfig::default(), ApiVersion::V1).await
}

pub async fn start_with(mut config: EmulatorConfig, api: ApiVersion) -> Env {
    config.auth = EmulatorAuth::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts");
    let base = match api {
        ApiVersion::V1 => emu.base_url(),
        ApiVersion::V09 => emu.base_url_v09(),
    };
    let client = client_for(&base, api, basic());
    Env {
        emu,
        client,
        dir: tempfile::tempdir().unwrap(),
    }
}

pub fn basic() -> Auth {
    Auth::Basic {
        username: USER.into(),
        password: SecretString::from(PASSWORD),
    }
}

pub fn client_for(base: &str, api: ApiVersion, auth: Auth) -> StacClient {
    let mut cfg = ClientConfig::new(base.parse().unwrap());
    cfg.api_version = api;
    cfg.auth = auth;
    cfg.request_timeout = Duration::from_secs(10);
    StacClient::new(cfg).unwrap()
}

/// Options for tests: 5 MiB parts so small files still make several, short retry waits.
pub fn opts() -> UploadOptions {
    UploadOptions {
        part_size: ByteSize::mib(5),
        retry_min_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_millis(300),
        ..UploadOptions::default()
    }
}

pub fn key(t: &AssetTarget) -> AssetKey {
    AssetKey {
        collection: t.collection.clone(),
        item: t.item.clone(),
        asset: t.asset.clone(),
    }
}

impl Env {
    /// An item asset that exists on the server.
    pub fn item_asset(&self, name: &str) -> AssetTarget {
        let t = AssetTarget::item_asset("ch.test.collection", "item-1", name);
        self.emu.create_asset(&key(&t), "application/zip").unwrap();
        t
    }

    /// A file of `len` deterministic bytes; returns its path and sha256 hex.
    pub fn file(&self, name: &str, len: u64) -> (PathBuf, String) {
        let path = self.dir.path().join(name);
        let sha = write_file(&path, len, name.len() as u64);
        (path, sha)
    }

    pub async fn upload(
        &self,
        target: &AssetTarget,
        path: &Path,
    ) -> Result<UploadReport, UploadError> {
        self.upload_with(target, path, &opts()).await
    }

    pub async fn upload_with(
        &self,
        target: &AssetTarget,
        path: &Path,
        o: &UploadOptions,
    ) -> Result<UploadReport, UploadError> {
        upload::upload_file(
            &self.client,
            target,
            path,
            o,
            Arc::new(()),
            &CancellationToken::new(),
        )
        .await
    }

    /// The asset holds exactly the file: declared checksum and stored bytes.
    pub fn assert_holds(&self, target: &AssetTarget, sha_hex: &str) {
        let k = key(target);
        let asset = self.emu.asset(&k).expect("asset exists");
        assert_eq!(
            asset.checksum.as_deref(),
            Some(format!("1220{sha_hex}").as_str()),
            "declared checksum of {target}"
        );
        assert_eq!(
            self.emu.object_sha256_hex(&k).as_deref(),
            Some(sha_hex),
            "stored bytes of {target}"
        );
    }

    /// No upload is left in progress anywhere on the server.
    pub fn assert_nothing_in_progress(&self) {
        let left = self.emu.in_progress_uploads();
        assert!(left.is_empty(), "uploads left in progress: {left:?}");
    }

    pub fn count(&self, target: &AssetTarget, state: UploadState) -> usize {
        self.emu
            .uploads(&key(target))
            .iter()
            .filter(|u| u.status == state)
            .count()
    }
}

/// Writes `len` deterministic pseudo-random bytes; returns their sha256 in hex.
pub fn write_file(path: &Path, len: u64, seed: u64) -> String {
    stac_uploadd::demo::write_sample(path, len, seed).expect("the test file is written")
}

/// An emulator with the given auth, and a client with `client_auth`.
pub async fn start_with_auth(config: EmulatorConfig, client_auth: Auth) -> Env {
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts");
    let client = client_for(&emu.base_url(), ApiVersion::V1, client_auth);
    Env {
        emu,
        client,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// The [`StacError`] behind an upload failure, looking through "failed after create".
pub fn stac_error(e: &UploadError) -> Option<&stac_uploadd::stac::StacError> {
    match e {
        UploadError::Stac(s) => Some(s),
        UploadError::AfterCreate { cause, .. } => stac_error(cause),
        _ => None,
    }
}

// --- Cognito (moto) -------------------------------------------------------------------------

/// A free loopback port (free when asked; good enough for a test server started right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The moto server the Cognito tests talk to: `MOTO_ENDPOINT` (set by .ci/run), else one
/// started for this test binary on a free port, stopped when the test process exits.
pub fn moto_endpoint() -> String {
    /// The endpoint, and the watchdog shell of a moto we started (kept for the process's life).
    type Moto = (String, Option<std::sync::Mutex<std::process::Child>>);
    static MOTO: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
    MOTO.get_or_init(|| match std::env::var("MOTO_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => (e.trim().trim_end_matches('/').to_owned(), None),
        _ => {
            let (endpoint, watchdog) = start_moto();
            (endpoint, Some(std::sync::Mutex::new(watchdog)))
        }
    })
    .0
    .clone()
}

fn start_moto() -> (String, std::process::Child) {
    use std::process::{Command, Stdio};
    match Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        other => panic!(
            "the Cognito tests need moto's server (a local AWS Cognito), and `moto_server --help` \
             did not run ({other:?}): install it with pip install 'moto[server]', or point \
             MOTO_ENDPOINT at a running one"
        ),
    }
    let port = free_port();
    // A watchdog shell owns moto and stops it once this test process is gone, so that a test
    // binary never leaves a server behind (statics are not dropped at exit).
    let script = format!(
        "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!\n\
         while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done\n\
         kill $m 2>/dev/null",
        parent = std::process::id()
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("sh starts moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (endpoint, watchdog);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = watchdog.kill();
    let _ = watchdog.wait();
    panic!("moto_server did not listen on {endpoint} within 60 s");
}

/// One call of Cognito's JSON API; panics unless it succeeds.
pub async fn cognito_call(
    endpoint: &str,
    action: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(endpoint)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "X-Amz-Target",
            format!("AWSCognitoIdentityProviderService.{action}"),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{action} at {endpoint}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{action}: HTTP {status}: {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// A fresh user pool with an app client that allows password and refresh-token logins.
pub struct CognitoPool {
    pub endpoint: String,
    pub pool_id: String,
    pub client_id: String,
}

/// A password moto's default pool policy accepts.
pub const COGNITO_PASSWORD: &str = "Corr3ct-Horse-Battery!";

impl CognitoPool {
    pub async fn new() -> Self {
        let endpoint = moto_endpoint();
        let pool = cognito_call(
            &endpoint,
            "CreateUserPool",
            serde_json::json!({ "PoolName": format!("stac-{}", uuid::Uuid::new_v4().simple()) }),
        )
        .await;
        let pool_id = pool["UserPool"]["Id"].as_str().expect("pool id").to_owned();
        let client = cognito_call(
            &endpoint,
            "CreateUserPoolClient",
            serde_json::json!({
                "UserPoolId": pool_id,
                "ClientName": "stac-uploadd",
                "ExplicitAuthFlows": ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
            }),
        )
        .await;
        let client_id = client["UserPoolClient"]["ClientId"]
            .as_str()
            .expect("client id")
            .to_owned();
        CognitoPool {
            endpoint,
            pool_id,
            client_id,
        }
    }

    /// A user with a permanent password, ready to log in.
    pub async fn user(&self, name: &str, password: &str) {
        self.user_with_temporary_password(name, "Temp-Pass-1!")
            .await;
        cognito_call(
            &self.endpoint,
            "AdminSetUserPassword",
            serde_json::json!({
                "UserPoolId": self.pool_id,
                "Username": name,
                "Password": password,
                "Permanent": true,
            }),
        )
        .await;
    }

    /// A user created by an admin and never logged in: FORCE_CHANGE_PASSWORD.
    pub async fn user_with_temporary_password(&self, name: &str, temporary: &str) {
        cognito_call(
            &self.endpoint,
            "AdminCreateUser",
            serde_json::json!({
                "UserPoolId": self.pool_id,
                "Username": name,
                "TemporaryPassword": temporary,
                "MessageAction": "SUPPRESS",
            }),
        )
        .await;
    }

    /// Revokes every token of the user (access and refresh), as an admin would.
    pub async fn sign_out(&self, name: &str) {
        cognito_call(
            &self.endpoint,
            "AdminUserGlobalSignOut",
            serde_json::json!({ "UserPoolId": self.pool_id, "Username": name }),
        )
        .await;
    }

    /// Client credentials for `name` at `endpoint` (the pool's own, or a counting front).
    pub fn auth(
        &self,
        name: &str,
        password: &str,
        endpoint: &str,
    ) -> stac_uploadd::stac::CognitoAuth {
        stac_uploadd::stac::CognitoAuth::new(
            name,
            SecretString::from(password),
            &self.client_id,
            "us-east-1",
        )
        .with_endpoint(endpoint.parse().expect("endpoint URL"))
    }
}

/// A pass-through in front of Cognito that counts the calls it forwards, by `X-Amz-Target`
/// action and, for InitiateAuth, by AuthFlow: what Cognito saw, independent of the client.
pub struct CognitoFront {
    pub url: String,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl CognitoFront {
    pub async fn start(upstream: &str) -> Self {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};

        let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let http = reqwest::Client::new();
        let (upstream, recorded) = (upstream.to_owned(), Arc::clone(&seen));
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (http, upstream, recorded) =
                (http.clone(), upstream.clone(), Arc::clone(&recorded));
            async move {
                let target = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .rsplit('.')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let flow = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["AuthFlow"].as_str().map(str::to_owned));
                recorded.lock().unwrap().push(match flow {
                    Some(flow) => format!("{target}:{flow}"),
                    None => target,
                });
                let mut req = http.post(&upstream).body(body);
                for name in ["content-type", "x-amz-target"] {
                    if let Some(v) = headers.get(name) {
                        req = req.header(name, v);
                    }
                }
                let resp = req.send().await.expect("moto answers");
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                let mut out = axum::http::Response::builder().status(status);
                for name in ["content-type", "x-amzn-errortype"] {
                    if let Some(v) = resp.headers().get(name) {
                        out = out.header(name, v.as_bytes());
                    }
                }
                out.body(axum::body::Body::from(
                    resp.bytes().await.unwrap_or_default(),
                ))
                .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        CognitoFront {
            url,
            seen,
            _task: task,
        }
    }

    /// Every call forwarded so far, e.g. `InitiateAuth:USER_PASSWORD_AUTH`, `GetUser`.
    pub fn calls(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// How many calls were exactly `what`.
    pub fn count(&self, what: &str) -> usize {
        self.calls().iter().filter(|c| *c == what).count()
    }

    /// How many InitiateAuth calls of any flow.
    pub fn initiate_auths(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.starts_with("InitiateAuth"))
            .count()
    }
}

// --- TLS ------------------------------------------------------------------------------------

/// PEM files of a private CA and of a server certificate it signed for 127.0.0.1/localhost, as
/// a self-hosted server or a TLS-inspecting proxy would have.
pub struct TestPki {
    /// The CA certificate: what `ca_file` names.
    pub ca: PathBuf,
    /// The server's certificate chain (leaf, then the CA).
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

pub fn test_pki(dir: &Path) -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "stac-uploadd test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "emulator");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let pki = TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, format!("{}{}", leaf_cert.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
    pki
}

/// An emulator serving https with a certificate of a fresh test CA and Basic auth
/// (USER/PASSWORD), its PKI, and the folder holding the PKI.
pub async fn https_emulator() -> (Emulator, TestPki, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = test_pki(dir.path());
    let config = EmulatorConfig {
        auth: EmulatorAuth::Basic {
            username: USER.into(),
            password: PASSWORD.into(),
        },
        tls: Some(stac_uploadd_emulator::EmulatorTls {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        }),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("https emulator starts");
    (emu, pki, dir)
}

/// A client for `base` with every setting given, and no `NO_PROXY` from the environment (tests
/// must not depend on the machine's variables).
pub fn client_with(
    base: &str,
    auth: Auth,
    ca_file: Option<&Path>,
    proxy: Option<&str>,
) -> StacClient {
    let mut cfg = ClientConfig::new(base.parse().unwrap());
    cfg.auth = auth;
    cfg.request_timeout = Duration::from_secs(10);
    cfg.ca_file = ca_file.map(Path::to_owned);
    cfg.proxy = proxy.map(|p| p.parse().unwrap());
    cfg.no_proxy = None;
    StacClient::new(cfg).expect("client")
}

/// An emulator with Basic auth (USER/PASSWORD) on an ephemeral loopback port, for tests that
/// run the real binary against it.
pub async fn basic_emulator() -> Emulator {
    let config = EmulatorConfig {
        auth: EmulatorAuth::Basic {
            username: USER.into(),
            password: PASSWORD.into(),
        },
        ..EmulatorConfig::default()
    };
    Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts")
}

/// The head of a job file for the emulator at `url`: the state folder in `dir`, Basic auth
/// with the password from the TEST_STAC_PASSWORD variable.
pub fn job_file_head(dir: &Path, url: &str) -> String {
    format!(
        "state_dir = \"{}\"\n[server]\nurl = \"{url}\"\n[server.auth]\ntype = \"basic\"\nusername = \"{USER}\"\npassword_env = \"TEST_STAC_PASSWORD\"\n",
        dir.join("state").display()
    )
}

/// Starts the daemon binary with `args` (before `--config config`), the password of
/// [`job_file_head`] in its environment and info logs on a piped stderr; killed when dropped.
pub fn spawn_daemon(args: &[&str], config: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_stac-uploadd"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .env("RUST_LOG", "stac_uploadd=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the daemon starts")
}

/// Collects a child's stderr lines in the background (the child must have `Stdio::piped()` stderr).
pub fn capture_stderr(child: &mut tokio::process::Child) -> Arc<std::sync::Mutex<Vec<String>>> {
    use tokio::io::AsyncBufReadExt;
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reader =
        tokio::io::BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let sink = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = reader.next_line().await {
            sink.lock().unwrap().push(l);
        }
    });
    lines
}

/// Sends `sig` to a running child.
pub fn signal(child: &tokio::process::Child, sig: i32) {
    let pid = child.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Polls `cond` every 20 ms for at most `limit`.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- wire (issue 17): a server answering from a script ---------------------------------------

/// A loopback HTTP server that answers every request with what `script(method, path_and_query)`
/// returns: a whole HTTP/1.1 answer, head and body (sent with `Connection: close`). What it was
/// asked is kept in `requests`, in order.
pub struct Scripted {
    /// `http://127.0.0.1:PORT/api/stac/v1`.
    pub base: String,
    pub requests: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    _task: tokio::task::JoinHandle<()>,
}

/// A whole answer: `status` with `headers` and a body.
pub fn raw_answer(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

pub async fn scripted(script: fn(&str, &str) -> String) -> Scripted {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/stac/v1", listener.local_addr().unwrap());
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let len: u64 = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len as usize];
                if conn.read_exact(&mut body).await.is_err() {
                    return;
                }
                let mut first = text.lines().next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_owned();
                let path = first.next().unwrap_or("").to_owned();
                seen.lock().unwrap().push((method.clone(), path.clone()));
                let _ = conn.write_all(script(&method, &path).as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Scripted {
        base,
        requests,
        _task: task,
    }
}
