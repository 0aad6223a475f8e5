//! The observation listener: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz`
//! (readiness). No exporter server of the metrics crate: one listener serves all three.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
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
/// daemon unready (see the README): restarting it would not bring a folder back.
async fn readyz(State(s): State<AppState>) -> Response {
    let phase = s.health.phase().as_str();
    let status = if s.health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = format!("{phase}\n");
    for (job, state) in s.health.triggers().states() {
        match state {
            TriggerState::Watching => body.push_str(&format!("watch {job}: watching\n")),
            TriggerState::Lost(why) => body.push_str(&format!("watch {job}: lost ({why})\n")),
        }
    }
    (status, body).into_response()
}

/// A running listener.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves `router` on it until [`Server::stop`].
    pub async fn start(addr: SocketAddr, router: Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for /metrics, /healthz, /readyz"))?;
        let addr = listener.local_addr().unwrap_or(addr);
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { until.cancelled().await });
            if let Err(e) = serve.await {
                warn!(error = %e, "the observation listener stopped");
            }
        });
        info!(%addr, "serving /metrics, /healthz and /readyz");
        Ok(Self { addr, stop, task })
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
