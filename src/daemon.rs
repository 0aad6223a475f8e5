//! `stac-uploadd run --config jobs.toml`: the daemon. Load and check the job file, take the
//! state folder, finish or abort what a previous run left in flight, start the jobs, and react to
//! signals: SIGTERM/SIGINT stop (uploads get a grace period, then are aborted), SIGHUP reloads.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::observe::{ObserveOptions, Observer, metrics};
use crate::stac::StacClient;
use crate::state::StateStore;
use crate::supervisor::{Clock, HttpUploader, Shared, Supervisor, reconcile};

/// Why the daemon did not start: a bad job file (exit 2) or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Holds the state folder for this process; released on drop (and by the kernel on a crash).
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code)] std::fs::File);

/// Takes the state folder's lock, so two daemons never share one state.
pub fn lock_state(dir: &Path) -> anyhow::Result<StateLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!(
            "another stac-uploadd is already using the state folder {}",
            dir.display()
        );
    }
    Ok(StateLock(f))
}

/// A client for the configured server.
pub fn client(config: &Config) -> anyhow::Result<StacClient> {
    StacClient::new(config.server.client_config()).context("cannot start the HTTP client")
}

/// Runs the daemon until SIGTERM or SIGINT; `observe_listen` serves `/metrics`, `/healthz` and
/// `/readyz`.
pub async fn run(
    config_path: PathBuf,
    grace: Duration,
    observe_listen: Option<SocketAddr>,
) -> Result<(), StartError> {
    let mut config = config::load(&config_path)?;
    let _lock = lock_state(&config.state_dir)?;
    let state = Arc::new(StateStore::open(&config.state_dir)?);
    let observe_opts = ObserveOptions {
        listen: observe_listen.or(config.observe.listen),
        health_timeout: config
            .observe
            .health_timeout
            .unwrap_or(ObserveOptions::default().health_timeout),
    };
    let observer = Observer::start(&observe_opts).await?;
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;

    let flusher = {
        let (state, stop) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(crate::state::HISTORY_FLUSH) => {}
                    () = stop.cancelled() => return,
                }
                if let Err(e) = state.flush().await {
                    warn!(error = %e, "cannot write the run history");
                }
            }
        })
    };

    let mut supervisor = observer.ticking(start(&config, &state, &shutdown)).await?;
    observer.ready(&running(&config));
    info!(config = %config_path.display(), jobs = config.jobs.len(), state = %config.state_dir.display(), "ready");
    // The supervisor loop: its ticks feed /healthz and the systemd watchdog, so a daemon stuck
    // here (or a runtime too starved to poll it) is reported unhealthy and restarted.
    let mut tick = observer.interval();
    loop {
        tokio::select! {
            _ = tick.tick() => observer.tick(),
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
            _ = hup.recv() => {
                observer.reloading();
                let mut status = running(&config);
                match config::load(&config_path) {
                    Err(e) => {
                        error!(error = %e, "SIGHUP: the new job file is invalid; keeping the running one");
                        metrics::reload(false);
                        status.push_str("; the last reload was refused (see the log)");
                    }
                    Ok(new) if new.state_dir != config.state_dir => {
                        error!("SIGHUP: state_dir cannot change while running; restart the daemon instead");
                        metrics::reload(false);
                        status.push_str("; the last reload was refused (see the log)");
                    }
                    Ok(new) => {
                        info!(jobs = new.jobs.len(), "SIGHUP: reloading");
                        // Running uploads finish first (no grace limit): a reload must not abort work.
                        observer.ticking(supervisor.shutdown(Duration::MAX)).await;
                        config = new;
                        supervisor = observer.ticking(start(&config, &state, &shutdown)).await?;
                        metrics::reload(true);
                        status = running(&config);
                        info!("reloaded");
                    }
                }
                observer.ready(&status);
            }
        }
    }
    observer.stopping();
    observer.ticking(supervisor.shutdown(grace)).await;
    shutdown.cancel();
    let _ = flusher.await;
    state.flush().await.map_err(anyhow::Error::from)?;
    observer.stop().await;
    info!("stopped");
    Ok(())
}

/// The status line systemd shows while the jobs run.
fn running(config: &Config) -> String {
    format!(
        "running {} job(s) from {}",
        config.jobs.len(),
        config.source.display()
    )
}

async fn start(
    config: &Config,
    state: &Arc<StateStore>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Supervisor<HttpUploader>> {
    let client = client(config)?;
    // The jobs as they will run, bandwidth limiters included: a resumed upload is held to the
    // same limits (and shares the same limiters) as the job's own runs.
    let jobs = jobs_with_runtime(config, state)?;
    let handled = reconcile::reconcile(&client, state, &jobs, shutdown).await;
    if !handled.is_empty() {
        info!(
            uploads = handled.len(),
            "finished what a previous run left in flight"
        );
    }
    let shared = Arc::new(Shared::new(
        HttpUploader(client),
        state.clone(),
        Clock::System,
    ));
    Supervisor::start(shared, jobs)
        .await
        .context("cannot start a job")
}

/// The configured jobs with what only the running daemon has: the digest cache in the state
/// folder, a folder for compressed temporary files beside it, and the bandwidth limiters (one
/// shared by all jobs, one per job).
pub fn jobs_with_runtime(
    config: &Config,
    state: &Arc<StateStore>,
) -> anyhow::Result<Vec<crate::config::JobSpec>> {
    let temp = state.dir().join("tmp");
    std::fs::create_dir_all(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    // Compressed copies left by a crash are of no use: they are made afresh for every upload.
    if let Ok(entries) = std::fs::read_dir(&temp) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let global = config
        .bandwidth_limit
        .clone()
        .map(|l| Arc::new(crate::upload::bandwidth::Bandwidth::new(l)));
    let cache: Arc<dyn crate::upload::DigestCache> = state.clone();
    Ok(config
        .jobs
        .iter()
        .cloned()
        .map(|mut job| {
            job.upload.digest_cache = Some(cache.clone());
            job.upload.temp_dir = Some(temp.clone());
            job.upload.bandwidth = global
                .iter()
                .cloned()
                .chain(
                    job.bandwidth_limit
                        .clone()
                        .map(|l| Arc::new(crate::upload::bandwidth::Bandwidth::new(l))),
                )
                .collect();
            job
        })
        .collect())
}
