//! The observation listener: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz`
//! (readiness). No exporter server of the metrics crate: one listener serves all three, with a
//! bound on its connections and on how long one may sit idle ([`Limits`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::health::{Health, TriggerState};

/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
}

/// The routes, over `health` and, when metrics are recorded, their handle.
pub fn router(health: Arc<Health>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, metrics })
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    match &s.metrics {
        Some(handle) => {
            // Folds recent histogram samples in and publishes new descriptions first.
            handle.run_upkeep();
            ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], handle.render()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are not recorded\n").into_response(),
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.health.live() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(age) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the main loop last ticked {:.1} s ago (limit {} s)\n",
                age.as_secs_f64(),
                s.health.timeout().as_secs()
            ),
        )
            .into_response(),
    }
}

/// The phase on the first line, then one line per watch job with its trigger's state:
/// `watch <job>: watching` or `watch <job>: lost (<why>)`. A lost trigger does not make the
/// daemon unready (docs/observability.md, `/readyz`): restarting it would not bring a folder back.
async fn readyz(State(s): State<AppState>) -> Response {
    let phase = s.health.phase().as_str();
    let status = if s.health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = format!("{phase}\n");
    if let Some(why) = s.health.store_problem() {
        body.push_str(&format!("state store: cannot write ({why})\n"));
    }
    for (job, state) in s.health.triggers().states() {
        match state {
            TriggerState::Watching => body.push_str(&format!("watch {job}: watching\n")),
            TriggerState::Lost(why) => body.push_str(&format!("watch {job}: lost ({why})\n")),
        }
    }
    (status, body).into_response()
}

/// How many connections the listener holds open at once, and how long one may sit idle.
///
/// Each open connection is a file descriptor, which the daemon's uploads, watches and state
/// files need as well: a few hundred idle connections must not make `/healthz` unreachable
/// nor history writes fail (`EMFILE`). At the cap, the oldest connection is closed to make room
/// for the next (one with a request in flight gets [`Limits::idle`] to finish its answer), so a
/// probe is always served. A connection that sends no complete request head for
/// [`Limits::idle`] (a new one, or a kept-alive one between requests) is closed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            // Scrapers and probes send their request at once; 10 s is patience for a slow
            // network, not for a client that keeps a socket without asking anything.
            idle: Duration::from_secs(10),
        }
    }
}

/// A running listener.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    #[cfg(test)]
    conns: Arc<Conns>,
}

impl Server {
    /// Binds `addr` and serves `router` on it until [`Server::stop`].
    pub async fn start(addr: SocketAddr, router: Router) -> anyhow::Result<Self> {
        Self::start_with(addr, router, Limits::default()).await
    }

    /// [`Server::start`] with other limits (tests).
    pub(crate) async fn start_with(
        addr: SocketAddr,
        router: Router,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for /metrics, /healthz, /readyz"))?;
        let addr = listener.local_addr().unwrap_or(addr);
        let stop = CancellationToken::new();
        let conns = Arc::new(Conns::default());
        let task = tokio::spawn(serve(
            listener,
            router,
            limits,
            Arc::clone(&conns),
            stop.clone(),
        ));
        info!(%addr, "serving /metrics, /healthz and /readyz");
        Ok(Self {
            addr,
            stop,
            task,
            #[cfg(test)]
            conns,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the requests being answered.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The open connections, oldest first, each with what closes it.
#[derive(Debug, Default)]
struct Conns {
    open: Mutex<(u64, VecDeque<(u64, CancellationToken)>)>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<(u64, CancellationToken)>)> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection: its id, and the token that asks it to close.
    fn add(&self) -> (u64, CancellationToken) {
        let mut open = self.lock();
        let id = open.0;
        open.0 += 1;
        let close = CancellationToken::new();
        open.1.push_back((id, close.clone()));
        (id, close)
    }

    fn remove(&self, id: u64) {
        self.lock().1.retain(|(i, _)| *i != id);
    }

    /// Asks the oldest connection to close.
    fn evict_oldest(&self) {
        if let Some((_, close)) = self.lock().1.pop_front() {
            close.cancel();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().1.len()
    }
}

/// Accepts and serves connections within `limits` until `stop`; then waits for the open ones
/// to finish their requests (each closes when idle, or at most [`Limits::idle`] later).
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    conns: Arc<Conns>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tasks = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle)
        .keep_alive(true);
    loop {
        // A slot before accepting: past the cap, a new client waits in the listen backlog
        // (using no descriptor of ours) while the oldest connection makes room.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                conns.evict_oldest();
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = stop.cancelled() => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before it was taken:
                    // what frees a descriptor takes a moment; a loop on the error would spin.
                    warn!(error = %e, "the observation listener cannot accept a connection");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            },
            () = stop.cancelled() => break,
        };
        let (id, close) = conns.add();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let (conns, stop, idle) = (Arc::clone(&conns), stop.clone(), limits.idle);
        tasks.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = close.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(idle, conn).await;
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(idle, conn).await;
                }
            }
            conns.remove(id);
        });
    }
    tasks.close();
    tasks.wait().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::observe::health::Phase;

    async fn get(url: String) -> (u16, String) {
        let r = reqwest::get(url).await.expect("an answer");
        (r.status().as_u16(), r.text().await.expect("a body"))
    }

    #[tokio::test]
    async fn answers_health_readiness_and_metrics() {
        let health = Arc::new(Health::new(Duration::from_secs(30)));
        let recorder = crate::observe::metrics::recorder().expect("valid");
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            crate::observe::metrics::run_retry(
                "j",
                crate::observe::metrics::Reason::Class("retryable"),
            );
            crate::observe::metrics::run_retry(
                "j",
                crate::observe::metrics::Reason::Class("retryable"),
            );
        });
        let server = Server::start(
            "127.0.0.1:0".parse().unwrap(),
            router(health.clone(), Some(handle)),
        )
        .await
        .expect("binds");
        let base = format!("http://{}", server.addr());

        assert_eq!(get(format!("{base}/healthz")).await, (200, "ok\n".into()));
        assert_eq!(
            get(format!("{base}/readyz")).await,
            (503, "starting\n".into())
        );
        health.set_phase(Phase::Ready);
        assert_eq!(get(format!("{base}/readyz")).await, (200, "ready\n".into()));
        health.set_phase(Phase::Stopping);
        assert_eq!(get(format!("{base}/readyz")).await.0, 503);

        let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROMETHEUS_TEXT);
        let text = r.text().await.unwrap();
        assert!(
            text.contains(r#"stac_uploadd_retries_total{job_name="j",reason="retryable"} 2"#),
            "{text}"
        );
        assert_eq!(get(format!("{base}/nothing")).await.0, 404);
        server.stop().await;
    }

    #[tokio::test]
    async fn readyz_lists_the_watch_triggers_and_stays_ready_while_one_is_lost() {
        let triggers = Arc::new(crate::observe::health::Triggers::default());
        let health = Arc::new(Health::with_triggers(
            Duration::from_secs(30),
            triggers.clone(),
        ));
        health.set_phase(Phase::Ready);
        let state = AppState {
            health,
            metrics: None,
        };
        let body = |r: Response| async {
            let status = r.status().as_u16();
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        };
        let inbox = triggers.register("inbox", TriggerState::Watching);
        let _radar = triggers.register("radar", TriggerState::Watching);
        inbox.set(TriggerState::Lost("the folder went".into()));
        assert_eq!(
            body(readyz(State(state.clone())).await).await,
            (
                200,
                "ready\nwatch inbox: lost (the folder went)\nwatch radar: watching\n".into()
            )
        );
        drop(inbox);
        assert_eq!(
            body(readyz(State(state)).await).await,
            (200, "ready\nwatch radar: watching\n".into())
        );
    }

    /// Whether the server closed `stream` (a read sees the end, or a reset).
    async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn idle_connections_past_the_cap_are_closed_and_healthz_still_answers() {
        let health = Arc::new(Health::new(Duration::from_secs(30)));
        let cap = 8;
        let limits = Limits {
            max_connections: cap,
            // Long: the connections must be closed by the cap, not as idle.
            idle: Duration::from_secs(300),
        };
        let server =
            Server::start_with("127.0.0.1:0".parse().unwrap(), router(health, None), limits)
                .await
                .expect("binds");
        let mut idle = Vec::new();
        for _ in 0..cap + 50 {
            idle.push(
                tokio::net::TcpStream::connect(server.addr())
                    .await
                    .expect("connects"),
            );
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let r = client
            .get(format!("http://{}/healthz", server.addr()))
            .send()
            .await
            .expect("/healthz answers past the cap");
        assert_eq!(r.status(), 200);
        assert!(server.conns.len() <= cap, "{} open", server.conns.len());
        // The oldest idle ones made room: at least all but the cap of them are closed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut closed = 0;
            for stream in &mut idle {
                if closed_by_server(stream).await {
                    closed += 1;
                }
            }
            if closed >= idle.len() - cap {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {closed} of {} idle connections closed",
                idle.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let health = Arc::new(Health::new(Duration::from_secs(30)));
        let limits = Limits {
            max_connections: 16,
            idle: Duration::from_millis(200),
        };
        let server =
            Server::start_with("127.0.0.1:0".parse().unwrap(), router(health, None), limits)
                .await
                .expect("binds");
        let mut silent = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connects");
        // A kept-alive connection after its request is idle too.
        let mut kept = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connects");
        {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = kept.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        }
        for (what, stream) in [("silent", &mut silent), ("kept alive", &mut kept)] {
            let closed = tokio::time::timeout(Duration::from_secs(20), async {
                use tokio::io::AsyncReadExt as _;
                let mut buf = [0u8; 256];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        // A 408 before the close is fine.
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "the {what} connection is still open");
        }
        server.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn healthz_fails_when_the_loop_stops_ticking() {
        let health = Arc::new(Health::new(Duration::from_secs(30)));
        let state = AppState {
            health: health.clone(),
            metrics: None,
        };
        assert_eq!(healthz(State(state.clone())).await.status(), 200);
        tokio::time::advance(Duration::from_secs(31)).await;
        let r = healthz(State(state.clone())).await;
        assert_eq!(r.status(), 503);
        health.tick();
        assert_eq!(healthz(State(state)).await.status(), 200);
    }
}
