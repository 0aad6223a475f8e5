//! Proxies: a small forward proxy on 127.0.0.1 (absolute-URI forwarding for http, CONNECT
//! tunnels for https) that records what it carried. reqwest 0.13 does not exempt loopback from
//! proxies (only what `NO_PROXY` lists is exempt), so a loopback proxy sees real traffic; each
//! test asserts what the proxy carried, so none can pass by going around it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::fixtures::*;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use stac_client::Auth;
use stac_uploadd_emulator::{CallKind, EmulatorAuth, EmulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the proxy carried.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Carried {
    /// A plain-http request forwarded: method, path, and `X-Amz-Target` if any.
    Request {
        method: String,
        path: String,
        amz_target: Option<String>,
    },
    /// A CONNECT tunnel to this authority.
    Tunnel(String),
}

struct TestProxy {
    url: String,
    carried: Arc<Mutex<Vec<Carried>>>,
    /// Bytes sent by clients through tunnels (request bodies included).
    tunnel_bytes_up: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

impl TestProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let carried: Arc<Mutex<Vec<Carried>>> = Arc::default();
        let up: Arc<AtomicU64> = Arc::default();
        // The proxy's own client must not use a proxy.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let (log, bytes) = (Arc::clone(&carried), Arc::clone(&up));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (log, bytes, http) = (Arc::clone(&log), Arc::clone(&bytes), http.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, http.clone(), Arc::clone(&log), Arc::clone(&bytes))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestProxy {
            url,
            carried,
            tunnel_bytes_up: up,
            _task: task,
        }
    }

    fn carried(&self) -> Vec<Carried> {
        self.carried.lock().unwrap().clone()
    }

    /// Forwarded plain-http requests whose path starts with `prefix`.
    fn requests(&self, prefix: &str) -> usize {
        self.carried()
            .iter()
            .filter(|c| matches!(c, Carried::Request { path, .. } if path.starts_with(prefix)))
            .count()
    }

    fn tunnels(&self) -> usize {
        self.carried()
            .iter()
            .filter(|c| matches!(c, Carried::Tunnel(_)))
            .count()
    }
}

async fn handle(
    req: Request<Incoming>,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<Carried>>>,
    up: Arc<AtomicU64>,
) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::CONNECT {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        log.lock().unwrap().push(Carried::Tunnel(authority.clone()));
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let Ok(server) = tokio::net::TcpStream::connect(&authority).await else {
                return;
            };
            let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(upgraded));
            let (mut server_read, mut server_write) = server.into_split();
            // Client to server counted as it goes: pooled tunnels stay open after the test.
            let upstream = async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    up.fetch_add(n as u64, Ordering::SeqCst);
                }
                let _ = server_write.shutdown().await;
            };
            let downstream = async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                let _ = client_write.shutdown().await;
            };
            tokio::join!(upstream, downstream);
        });
        return Ok(Response::new(Body::empty()));
    }
    // A plain-http request in absolute form: forward it.
    let uri = req.uri().clone();
    log.lock().unwrap().push(Carried::Request {
        method: req.method().to_string(),
        path: uri.path().to_owned(),
        amz_target: req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let mut forward = http.request(
        reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap(),
        uri.to_string(),
    );
    for (name, value) in req.headers() {
        let hop_by_hop = matches!(
            name.as_str(),
            "host" | "connection" | "proxy-connection" | "keep-alive" | "proxy-authorization"
        );
        if !hop_by_hop {
            forward = forward.header(name.as_str(), value.as_bytes());
        }
    }
    let body = Body::new(req.into_body()).into_data_stream();
    let answer = match forward.body(reqwest::Body::wrap_stream(body)).send().await {
        Ok(a) => a,
        Err(_) => {
            let mut r = Response::new(Body::from("proxy: upstream failed"));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return Ok(r);
        }
    };
    let mut out = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "keep-alive"
        ) {
            out = out.header(name.as_str(), value.as_bytes());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    Ok(out.body(Body::from(bytes)).unwrap())
}

#[tokio::test]
async fn api_calls_and_part_puts_go_through_the_configured_proxy() {
    let proxy = TestProxy::start().await;
    let emu_env = start().await;
    let client = client_with(&emu_env.emu.base_url(), basic(), None, Some(&proxy.url));
    let env = Env { client, ..emu_env };
    let (target, path, sha) = env.asset_with_file("proxied.zip", 11 * MIB);
    env.upload(&target, &path)
        .await
        .expect("upload through the proxy");
    env.assert_holds(&target, &sha);
    // Every part PUT the server received came through the proxy, and so did create and complete.
    assert_eq!(env.emu.call_count(CallKind::PutPart), 3);
    assert_eq!(proxy.requests("/_s3/"), 3, "{:?}", proxy.carried());
    assert_eq!(
        proxy.requests("/api/stac/v1/"),
        (env.emu.call_count(CallKind::GetAsset)
            + env.emu.call_count(CallKind::CreateUpload)
            + env.emu.call_count(CallKind::Complete)) as usize
    );
    assert_eq!(proxy.tunnels(), 0, "plain http is forwarded, not tunnelled");
}

#[tokio::test]
async fn https_goes_through_connect_tunnels() {
    let proxy = TestProxy::start().await;
    let (emu, pki, dir) = https_emulator().await;
    let client = client_with(&emu.base_url(), basic(), Some(&pki.ca), Some(&proxy.url));
    let env = Env { emu, client, dir };
    let target = env.item_asset("tunnelled.zip");
    let len = 6 * MIB;
    let (path, sha) = env.file("tunnelled.zip", len);
    env.upload(&target, &path)
        .await
        .expect("upload through tunnels");
    env.assert_holds(&target, &sha);
    assert!(proxy.tunnels() >= 1, "{:?}", proxy.carried());
    assert_eq!(
        proxy.requests("/"),
        0,
        "https is never forwarded in the clear"
    );
    // The part bodies went through the tunnels: at least the file's bytes were carried up.
    let up = proxy.tunnel_bytes_up.load(Ordering::SeqCst);
    assert!(up >= len, "only {up} bytes went through the tunnels");
}

#[tokio::test]
async fn no_proxy_hosts_go_direct() {
    let proxy = TestProxy::start().await;
    let emu_env = start().await;
    let mut cfg = stac_client::ClientConfig::new(emu_env.emu.base_url().parse().unwrap());
    cfg.auth = basic();
    cfg.proxy = Some(proxy.url.parse().unwrap());
    cfg.no_proxy = Some("localhost, 127.0.0.1".into());
    let client = stac_client::StacClient::new(cfg).unwrap();
    let env = Env { client, ..emu_env };
    let (target, path, sha) = env.asset_with_file("direct.zip", 1000);
    env.upload(&target, &path).await.expect("upload");
    env.assert_holds(&target, &sha);
    assert!(proxy.carried().is_empty(), "{:?}", proxy.carried());
}

#[tokio::test]
async fn the_proxy_key_of_the_job_file_is_used() {
    let proxy = TestProxy::start().await;
    let env = start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("export")).unwrap();
    let text = format!(
        "[server]\nurl = \"{}\"\nproxy = \"{}\"\n\n[[job]]\nname = \"j\"\ncollection = \"c\"\n\
         asset = \"a.zip\"\nfile = \"export/a.zip\"\nschedule = \"0 3 * * *\"\n",
        env.emu.base_url(),
        proxy.url
    );
    let config =
        stac_uploadd::config::parse(&text, &dir.path().join("jobs.toml"), &|_| None).unwrap();
    let mut cfg = config.server.client_config();
    cfg.no_proxy = None;
    let client = stac_client::StacClient::new(cfg).unwrap();
    let target = env.item_asset("read.zip");
    client
        .read_asset(&target)
        .await
        .expect("read through the proxy");
    assert_eq!(proxy.requests("/api/stac/v1/"), 1, "{:?}", proxy.carried());
}

#[tokio::test]
async fn the_cognito_login_goes_through_the_proxy_too() {
    let proxy = TestProxy::start().await;
    let pool = CognitoPool::new().await;
    pool.user("proxied-user", COGNITO_PASSWORD).await;
    let config = EmulatorConfig {
        auth: EmulatorAuth::Cognito {
            endpoint: pool.endpoint.clone(),
        },
        ..EmulatorConfig::default()
    };
    let emu_env = start_with_auth(config, Auth::None).await;
    let auth = Auth::Cognito(pool.auth("proxied-user", COGNITO_PASSWORD, &pool.endpoint));
    let client = client_with(&emu_env.emu.base_url(), auth, None, Some(&proxy.url));
    let env = Env { client, ..emu_env };
    let (target, path, sha) = env.asset_with_file("cognito-proxied.zip", 1000);
    env.upload(&target, &path).await.expect("upload");
    env.assert_holds(&target, &sha);
    let logins: Vec<_> = proxy
        .carried()
        .into_iter()
        .filter(|c| {
            matches!(c, Carried::Request { amz_target: Some(t), .. }
                if t == "AWSCognitoIdentityProviderService.InitiateAuth")
        })
        .collect();
    assert_eq!(logins.len(), 1, "{:?}", proxy.carried());
    assert!(proxy.requests("/api/stac/v1/") >= 2);
}

#[tokio::test]
async fn environment_proxies_apply_when_none_is_configured() {
    let proxy = TestProxy::start().await;
    let env = start().await;
    let (target, path, sha) = env.asset_with_file("env-proxied.zip", 6 * MIB);
    // The real binary in a child process, so that this test process's environment is untouched.
    let out = tokio::process::Command::new(BIN)
        .args(["upload", "--url", &env.emu.base_url()])
        .args(["--auth", "basic", "--user", USER])
        .args(["--collection", "ch.test.collection", "--item", "item-1"])
        .args(["--asset", "env-proxied.zip", "--part-size", "5MiB"])
        .arg(&path)
        .env("STAC_UPLOADD_SECRET", PASSWORD)
        .env("HTTP_PROXY", &proxy.url)
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_holds(&target, &sha);
    assert_eq!(proxy.requests("/_s3/"), 2, "{:?}", proxy.carried());
    assert!(proxy.requests("/api/stac/v1/") >= 2);
}
