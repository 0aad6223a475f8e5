//! `stac-uploadd run --config jobs.toml`: the daemon. Load and check the job file, take the
//! state folder, finish or abort what a previous run left in flight, start the jobs, and react to
//! signals: SIGTERM/SIGINT stop (uploads get a grace period, then are aborted), SIGHUP reloads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::observe::{ObserveOptions, Observer, metrics};
use crate::state::StateStore;
use crate::supervisor::{HttpUploader, Shared, Supervisor, reconcile};
use crate::trigger::Clock;
use stac_client::StacClient;
use stac_upload::bandwidth::Bandwidth;

/// Why the daemon did not start: a bad job file (exit 2) or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A client for the configured server.
pub(crate) fn client(config: &Config) -> anyhow::Result<StacClient> {
    StacClient::new(config.server.client_config()).context("cannot start the HTTP client")
}

/// Runs the daemon until SIGTERM or SIGINT; `observe_listen` serves `/metrics`, `/healthz` and
/// `/readyz`.
pub(crate) async fn run(
    config_path: PathBuf,
    grace: Duration,
    observe_listen: Option<SocketAddr>,
) -> Result<(), StartError> {
    let (mut config, fingerprints) = load(&config_path)?;
    let _lock = crate::state::lock_state(&config.state_dir)?;
    let state = Arc::new(StateStore::open(&config.state_dir).await?);
    let observe_opts = ObserveOptions {
        listen: observe_listen.or(config.observe.listen),
        health_timeout: config
            .observe
            .health_timeout
            .unwrap_or(ObserveOptions::default().health_timeout),
    };
    let observer = Observer::start(&observe_opts).await?;
    observer.watch_store(state.clone());
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

    clear_temp(&state);
    let mut runtime = Runtime::new(&config);
    let client = client(&config)?;
    let jobs = runtime.jobs(&config, &state, &fingerprints)?;
    let start = async {
        // What a previous run of the daemon left in flight is resumed or aborted as the first
        // run of its job, under the job's own limits, while the other jobs start at once.
        let (resumes, orphans): (Vec<_>, Vec<_>) = reconcile::inflight(&state)
            .await
            .into_iter()
            .partition(|r| jobs.iter().any(|(j, _)| j.name == r.job));
        if !resumes.is_empty() || !orphans.is_empty() {
            info!(
                uploads = resumes.len() + orphans.len(),
                "resuming or aborting what a previous run left in flight, beside the jobs"
            );
        }
        let shared = Arc::new(Shared::new(
            HttpUploader(client.clone()),
            state.clone(),
            Clock::System,
        ));
        shared.set_upload_limit(config.max_concurrent_uploads);
        let supervisor = Supervisor::start_resuming(shared, jobs, resumes)
            .await
            .context("cannot start a job")?;
        if !orphans.is_empty() {
            // Of jobs no longer in the file: handled with the default settings, and cut short
            // by shutdown like the runs.
            let (client, state, cancel) = (client.clone(), state.clone(), supervisor.abort_token());
            supervisor.track(async move {
                reconcile::reconcile(&client, &state, orphans, &[], &cancel).await;
            });
        }
        anyhow::Ok(supervisor)
    };
    let mut supervisor = observer.ticking(start).await?;
    observer.ready(&running(&config));
    info!(config = %config_path.display(), jobs = config.jobs.len(), state = %config.state_dir.display(), "ready");
    // The supervisor loop: its ticks feed /healthz and the systemd watchdog, so a daemon stuck
    // here (or a runtime too starved to poll it) is reported unhealthy and restarted. Nothing in
    // it waits for a run: a reload only starts and stops jobs, so signals are served at every
    // moment.
    let mut tick = observer.interval();
    loop {
        tokio::select! {
            _ = tick.tick() => observer.tick(),
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
            _ = hup.recv() => {
                observer.reloading();
                let status = match reload(&config_path, &config, &state, &mut runtime, &mut supervisor) {
                    Ok(new) => {
                        let restart = needs_restart(&config, &new, observe_listen);
                        config = new;
                        metrics::reload(true);
                        match restart {
                            Some(what) => format!("{}; {what}", running(&config)),
                            None => running(&config),
                        }
                    }
                    Err(e) => {
                        error!(error = %format!("{e:#}"), "SIGHUP: reload refused; the running jobs go on unchanged");
                        metrics::reload(false);
                        format!("{}; the last reload was refused (see the log)", running(&config))
                    }
                };
                observer.ready(&status);
            }
        }
    }
    observer.stopping();
    observer.ticking(supervisor.shutdown(grace)).await;
    shutdown.cancel();
    let _ = flusher.await;
    state.close().await.map_err(anyhow::Error::from)?;
    observer.stop().await;
    info!("stopped");
    Ok(())
}

/// Reads and checks the job file, with each job's fingerprint for reloads.
fn load(path: &Path) -> Result<(Config, HashMap<String, u64>), config::ConfigError> {
    let text = config::read_job_file(path)?;
    let config = config::parse(&text, path, &|name| std::env::var(name).ok())?;
    Ok((config, config::job_fingerprints(&text)))
}

/// SIGHUP: the new job file is loaded and checked first; then its jobs are applied (see
/// [`Supervisor::apply`]) and every later run uses a client made from it. Any failure leaves
/// the running jobs as they are.
fn reload(
    path: &Path,
    current: &Config,
    state: &Arc<StateStore>,
    runtime: &mut Runtime,
    supervisor: &mut Supervisor<HttpUploader>,
) -> anyhow::Result<Config> {
    let (new, fingerprints) = load(path)?;
    if new.state_dir != current.state_dir {
        anyhow::bail!(
            "state_dir cannot change while running ({} -> {}); restart the daemon instead",
            current.state_dir.display(),
            new.state_dir.display()
        );
    }
    let client = client(&new)?;
    let mut next = Runtime::new(&new);
    next.keep_global(runtime);
    let jobs = next.jobs(&new, state, &fingerprints)?;
    let changes = supervisor.apply(jobs).context("cannot start a job")?;
    supervisor.set_uploader(HttpUploader(client));
    supervisor.set_upload_limit(new.max_concurrent_uploads);
    *runtime = next;
    info!(
        added = ?changes.added,
        changed = ?changes.changed,
        removed = ?changes.removed,
        unchanged = changes.unchanged.len(),
        "reloaded"
    );
    Ok(new)
}

/// What a reload from `old` to `new` changed that only a restart applies, warned about and
/// returned for the status line; `flag` is `--observe-listen`, which wins over the file.
fn needs_restart(old: &Config, new: &Config, flag: Option<SocketAddr>) -> Option<String> {
    let shown = |a: Option<SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
    let mut changed = Vec::new();
    if flag.is_none() && old.observe.listen != new.observe.listen {
        changed.push(format!(
            "[observe] listen {} -> {}",
            shown(old.observe.listen),
            shown(new.observe.listen)
        ));
    }
    if old.observe.health_timeout != new.observe.health_timeout {
        changed.push("[observe] health_timeout".to_owned());
    }
    if changed.is_empty() {
        return None;
    }
    let what = changed.join(", ");
    warn!(
        changed = %what,
        "SIGHUP: this change takes effect at the next restart only; the listener serves as before"
    );
    Some(format!("a restart is needed to apply {what}"))
}

/// The status line systemd shows while the jobs run.
fn running(config: &Config) -> String {
    format!(
        "running {} job(s) from {}",
        config.jobs.len(),
        config.source.display()
    )
}

/// Compressed copies left by a crash are of no use: they are made afresh for every upload.
/// Cleared at start-up only (of the daemon, or of `run --once`); a reload must not pull a
/// temporary file from under a running upload.
pub(crate) fn clear_temp(state: &StateStore) {
    if let Ok(entries) = std::fs::read_dir(state.dir().join("tmp")) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// What only the running daemon adds to the configured jobs: the bandwidth limiter all jobs
/// share (kept across a reload while its limit is the same, so that old and new runs share it).
pub(crate) struct Runtime {
    global: Option<(stac_upload::bandwidth::BandwidthLimit, Arc<Bandwidth>)>,
}

impl Runtime {
    /// The runtime pieces for `config`.
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            global: config
                .bandwidth_limit
                .clone()
                .map(|l| (l.clone(), Arc::new(Bandwidth::new(l)))),
        }
    }

    /// Keeps `old`'s shared limiter when its limit did not change.
    fn keep_global(&mut self, old: &Runtime) {
        if let (Some((limit, _)), Some((old_limit, old_bucket))) = (&self.global, &old.global)
            && limit == old_limit
        {
            self.global = Some((old_limit.clone(), old_bucket.clone()));
        }
    }

    /// The configured jobs with the digest cache in the state folder, a folder for compressed
    /// temporary files beside it, and the bandwidth limiters (the shared one, one per job), each
    /// with its fingerprint.
    pub(crate) fn jobs(
        &self,
        config: &Config,
        state: &Arc<StateStore>,
        fingerprints: &HashMap<String, u64>,
    ) -> anyhow::Result<Vec<(crate::config::JobSpec, Option<u64>)>> {
        let temp = state.dir().join("tmp");
        std::fs::create_dir_all(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        let cache: Arc<dyn stac_upload::DigestCache> = state.clone();
        Ok(config
            .jobs
            .iter()
            .cloned()
            .map(|mut job| {
                job.upload.digest_cache = Some(cache.clone());
                job.upload.temp_dir = Some(temp.clone());
                job.upload.bandwidth = self
                    .global
                    .iter()
                    .map(|(_, b)| b.clone())
                    .chain(
                        job.bandwidth_limit
                            .clone()
                            .map(|l| Arc::new(Bandwidth::new(l))),
                    )
                    .collect();
                let fingerprint = fingerprints.get(&job.name).copied();
                (job, fingerprint)
            })
            .collect())
    }
}
