//! What the daemon tells the outside world about its life: systemd (READY, RELOADING, STOPPING,
//! WATCHDOG), `/healthz` and `/readyz`, and the metrics listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};
use tracing::info;

use super::health::{Health, Phase};
use super::http::{Server, router};
use super::systemd::Notifier;

/// How often the main loop ticks when no watchdog asks for more.
const TICK: Duration = Duration::from_secs(1);
/// What each tick asks systemd for while starting or reloading: long start-ups (resuming a big
/// upload left by a crash) and reloads (running uploads finish first) are fine while we tick.
const EXTEND: Duration = Duration::from_secs(10);
/// Histogram samples are folded in at least this often, scraped or not.
const UPKEEP: Duration = Duration::from_secs(5);

/// Settings of the observation side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveOptions {
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; none without it.
    pub listen: Option<SocketAddr>,
    /// `/healthz` fails when the main loop has not ticked for this long.
    pub health_timeout: Duration,
}

impl Default for ObserveOptions {
    fn default() -> Self {
        Self {
            listen: None,
            health_timeout: Duration::from_secs(30),
        }
    }
}

/// The daemon's observable state, with the listener serving it.
#[derive(Debug)]
pub struct Observer {
    health: Arc<Health>,
    systemd: Notifier,
    tick_every: Duration,
    server: Option<Server>,
    upkeep: Option<JoinHandle<()>>,
}

/// One recorder per process, even if a daemon is started twice in it (tests).
static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = METRICS.get() {
        return Ok(h.clone());
    }
    let h = super::metrics::install()?;
    Ok(METRICS.get_or_init(|| h).clone())
}

impl Observer {
    /// Reads the systemd environment and, if `opts.listen` is set, installs the metrics
    /// recorder and binds the listener. The daemon starts in [`Phase::Starting`].
    pub async fn start(opts: &ObserveOptions) -> anyhow::Result<Self> {
        Self::start_with_pages(opts, axum::Router::new()).await
    }

    /// [`Observer::start`], the listener also serving `pages` (the status page's routes).
    pub async fn start_with_pages(
        opts: &ObserveOptions,
        pages: axum::Router,
    ) -> anyhow::Result<Self> {
        let systemd = Notifier::from_env();
        // systemd asks for a ping at least every WATCHDOG_USEC; sd_watchdog_enabled(3)
        // recommends half of it.
        let tick_every = systemd
            .watchdog()
            .map_or(TICK, |w| (w / 2).clamp(Duration::from_millis(10), TICK));
        let health = Arc::new(Health::new(opts.health_timeout));
        let (server, upkeep) = match opts.listen {
            None => (None, None),
            Some(addr) => {
                let handle = metrics_handle()?;
                let server = Server::start(
                    addr,
                    router(health.clone(), Some(handle.clone())).merge(pages),
                )
                .await?;
                let upkeep = tokio::spawn(async move {
                    let mut every = tokio::time::interval(UPKEEP);
                    loop {
                        every.tick().await;
                        handle.run_upkeep();
                    }
                });
                (Some(server), Some(upkeep))
            }
        };
        if systemd.enabled() {
            info!(
                watchdog_ms = systemd.watchdog().map(|w| w.as_millis() as u64),
                "notifying systemd"
            );
        }
        let observer = Self {
            health,
            systemd,
            tick_every,
            server,
            upkeep,
        };
        observer
            .systemd
            .status("starting: finishing uploads left in flight");
        Ok(observer)
    }

    /// The listener's address, if one was configured.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(Server::addr)
    }

    /// A fresh interval at the tick period.
    pub fn interval(&self) -> Interval {
        let mut every = tokio::time::interval(self.tick_every);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        every
    }

    /// Makes `/readyz` answer for the state store too (see [`Health::watch_store`]).
    pub fn watch_store(&self, check: Arc<dyn super::health::StoreCheck>) {
        self.health.watch_store(check);
    }

    /// The main loop is alive: feeds `/healthz` and the systemd watchdog.
    pub fn tick(&self) {
        self.health.tick();
        self.systemd.watchdog_ping();
        if matches!(self.health.phase(), Phase::Starting | Phase::Reloading) {
            self.systemd.extend_timeout(EXTEND);
        }
    }

    /// Awaits `fut`, ticking meanwhile: for the long steps of the main loop (start-up
    /// reconciliation, a reload waiting for running uploads, the shutdown grace period).
    pub async fn ticking<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut every = self.interval();
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = every.tick() => self.tick(),
            }
        }
    }

    /// The job file is loaded and reconciliation is done: `READY=1`, `/readyz` 200.
    pub fn ready(&self, status: &str) {
        self.health.tick();
        self.health.set_phase(Phase::Ready);
        self.systemd.ready(status);
    }

    /// A SIGHUP reload starts: `RELOADING=1`. [`Observer::ready`] ends it, whatever its result.
    pub fn reloading(&self) {
        self.health.set_phase(Phase::Reloading);
        self.systemd.reloading();
    }

    /// Shutdown starts: `STOPPING=1`, `/readyz` 503.
    pub fn stopping(&self) {
        self.health.set_phase(Phase::Stopping);
        self.systemd
            .stopping("stopping: running uploads get their grace period");
    }

    /// Stops the listener (the last thing the daemon does).
    pub async fn stop(self) {
        if let Some(upkeep) = self.upkeep {
            upkeep.abort();
        }
        if let Some(server) = self.server {
            server.stop().await;
        }
    }
}
