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

use crate::cluster::{Handover, Membership};
use crate::config::{self, Config};
use crate::notify::{self, Notifier, NotifySettings};
use crate::observe::{ObserveOptions, Observer, metrics};
use crate::state::StateStore;
use crate::status;
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
    let mut c = config.server.client_config();
    // In a cluster, the server's logs tell the instances apart.
    c.agent_detail = crate::cluster::this_instance().map(|i| format!("instance {i}"));
    StacClient::new(c).context("cannot start the HTTP client")
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
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let observe_opts = ObserveOptions {
        listen: observe_listen.or(config.observe.listen),
        health_timeout: config
            .observe
            .health_timeout
            .unwrap_or(ObserveOptions::default().health_timeout),
    };
    // Up before the store: while a cluster's database cannot be reached, /readyz says so (and
    // the status page that it is starting).
    let page: status::Slot = Arc::default();
    let observer = Observer::start_with_pages(&observe_opts, status::router(page.clone())).await?;
    let shutdown = CancellationToken::new();
    let opened = async {
        match &config.cluster {
            None => Ok(Some((
                Arc::new(StateStore::open(&config.state_dir).await?),
                None,
            ))),
            Some(cluster) => join_cluster(&config.state_dir, cluster)
                .await
                .map(|o| o.map(|(s, m)| (s, Some(m)))),
        }
    };
    let opened: Result<_, StartError> = tokio::select! {
        o = opened => o,
        _ = term.recv() => Ok(None),
        _ = int.recv() => Ok(None),
    };
    let Some((state, membership)) = opened? else {
        info!("stopped before the state store was open");
        observer.stop().await;
        return Ok(());
    };
    observer.watch_store(Arc::new(StoreHealth(state.clone(), membership.clone())));
    if membership.is_none()
        && let Err(e) = state.probe().await
    {
        // Not fatal: nothing is uploaded that cannot be recorded, and /readyz says why.
        error!(error = %e, "the state store cannot be written: no upload starts until it can");
    }
    let (handover_tx, mut handover_rx) = tokio::sync::mpsc::channel(16);
    let heartbeat = membership
        .clone()
        .map(|m| tokio::spawn(m.run(handover_tx, shutdown.clone())));

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
                } else if state.write_problem().is_some()
                    && let Err(e) = state.probe().await
                {
                    warn!(error = %e, "the state store still cannot be written: not ready");
                }
            }
        })
    };

    clear_temp(&state);
    let mut runtime = Runtime::new(&config);
    let client = client(&config)?;
    let notify_settings = NotifySettings::of(&config)?;
    let jobs = runtime.jobs(&config, &state, &fingerprints)?;
    let start = async {
        // What a previous run of the daemon left in flight is resumed or aborted as the first
        // run of its job, under the job's own limits, while the other jobs start at once.
        // In a cluster: this instance's own records (a restart under its name), its unfinished
        // claims of an earlier lease, and what lapsed members hold, all before the runners
        // start, so that a fire whose upload is resumed is not run again.
        let (inflight, claims) = match &membership {
            None => (reconcile::inflight(&state).await, Vec::new()),
            Some(m) => match m.reclaim().await {
                Ok(taken) => (taken.uploads, taken.claims),
                Err(e) => {
                    warn!(error = %e, "cannot read this instance's work in flight; the heartbeat takes it later");
                    (Vec::new(), Vec::new())
                }
            },
        };
        let (resumes, orphans): (Vec<_>, Vec<_>) = inflight
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
        // The board subscribes before the first run starts, so that it misses none.
        let board = start_board(&shared, &state, shutdown.clone()).await;
        let _ = page.set(Arc::new(status::StatusPage::new(
            board,
            state.clone(),
            status::PageConfig::of(&config),
        )));
        // Listening before the first run starts, so that no start or end is missed.
        let notifier = Notifier::start(&shared, notify_settings).await;
        let (supervisor, unrun) = Supervisor::start_taking(shared, jobs, resumes, claims)
            .await
            .context("cannot start a job")?;
        finish_claims(&supervisor, &state, unrun);
        if !orphans.is_empty() {
            // Of jobs no longer in the file: handled with the default settings, and cut short
            // by shutdown like the runs.
            let (client, state, cancel) = (client.clone(), state.clone(), supervisor.abort_token());
            supervisor.track(async move {
                reconcile::reconcile(&client, &state, orphans, &[], &cancel).await;
            });
        }
        anyhow::Ok((supervisor, notifier))
    };
    let (mut supervisor, notifier) = observer.ticking(start).await?;
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
            Some(h) = handover_rx.recv() => hand_over(&supervisor, h, &client, &state),
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
            _ = hup.recv() => {
                observer.reloading();
                let status = match reload(&config_path, &config, &state, &mut runtime, &mut supervisor) {
                    Ok((new, notify_settings)) => {
                        notifier.reconfigure(notify_settings).await;
                        let restart = needs_restart(&config, &new, observe_listen);
                        config = new;
                        if let Some(page) = page.get() {
                            page.set_config(status::PageConfig::of(&config));
                        }
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
    // After the runs: their last notices and pings get a short, bounded flush.
    observer.ticking(notifier.finish(notify::FLUSH)).await;
    shutdown.cancel();
    if let Some(h) = heartbeat {
        let _ = h.await;
    }
    if let Some(m) = &membership {
        m.leave().await;
    }
    let _ = flusher.await;
    state.close().await.map_err(anyhow::Error::from)?;
    observer.stop().await;
    info!("stopped");
    Ok(())
}

/// The status page's board, seeded from the store's history and fed with every run's start and
/// end until `stop`. A receiver that falls behind loses the oldest messages (logged and counted
/// on the page); nothing here makes a run wait.
async fn start_board(
    shared: &Arc<Shared<HttpUploader>>,
    state: &Arc<StateStore>,
    stop: CancellationToken,
) -> Arc<status::Board> {
    use tokio::sync::broadcast::error::RecvError;
    let mut runs = shared.runs.subscribe();
    let mut starts = shared.starts.subscribe();
    let history = state.history().await.unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the run history; the status page shows only new runs");
        Default::default()
    });
    let board = Arc::new(status::Board::seeded(
        &history,
        shared.live.clone(),
        chrono::Utc::now(),
    ));
    drop(history);
    let fed = board.clone();
    tokio::spawn(async move {
        let lagged = |what: &str, n: u64| {
            warn!(missed = n, "the status page fell behind and lost {what}");
            fed.missed(n);
        };
        loop {
            // Starts first: a run's start is sent before its end, so when both wait here the
            // start is taken first and the end finds it.
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                s = starts.recv() => match s {
                    Ok(s) => fed.run_started(&s.job, s.target, s.started),
                    Err(RecvError::Lagged(n)) => lagged("run starts", n),
                    Err(RecvError::Closed) => return,
                },
                r = runs.recv() => match r {
                    Ok(r) => fed.run_finished(r),
                    Err(RecvError::Lagged(n)) => lagged("run ends", n),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    board
}

/// What `/readyz` asks the state store (the observer does not know the store's type), and in a
/// cluster this instance's lease.
#[derive(Debug)]
struct StoreHealth(Arc<StateStore>, Option<Arc<Membership>>);

impl crate::observe::health::StoreCheck for StoreHealth {
    fn write_problem(&self) -> Option<String> {
        self.0
            .write_problem()
            .or_else(|| self.1.as_ref().and_then(|m| m.problem()))
    }
}

/// Marks finished the taken claims nobody runs again (no `catch_up`, a job no longer in the
/// file), beside the jobs.
fn finish_claims(
    supervisor: &Supervisor<HttpUploader>,
    state: &Arc<StateStore>,
    claims: Vec<(String, String)>,
) {
    if claims.is_empty() {
        return;
    }
    let state = state.clone();
    supervisor.track(async move {
        for (name, work) in claims {
            if let Err(e) = state.finish_claim(&name, &work).await {
                warn!(job = %name, error = %e, "cannot mark a taken claim finished");
            }
        }
    });
}

/// Opens the cluster's store and takes a lease, retrying with backoff while the database cannot
/// be reached (each failure logged; `/readyz` answers 503 meanwhile). `None`: never, as the
/// caller stops waiting on a signal.
async fn join_cluster(
    dir: &Path,
    cluster: &crate::config::ClusterConfig,
) -> Result<Option<(Arc<StateStore>, Arc<Membership>)>, StartError> {
    use secrecy::ExposeSecret as _;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
    let host = crate::cluster::host_name();
    let target = crate::state::PgTarget {
        url: cluster.url.expose_secret(),
        ca_file: cluster.ca_file.as_deref(),
        host: &host,
        call_limit: cluster.heartbeat.max(Duration::from_secs(1)),
    };
    let mut wait = Duration::from_millis(500);
    let state = loop {
        match StateStore::open_cluster(dir, &target).await {
            Ok(s) => break Arc::new(s),
            Err(e) => {
                error!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot open the cluster's database; not ready until it can");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    };
    let instance = crate::cluster::instance_name(cluster);
    crate::cluster::set_this_instance(&instance);
    let membership = Arc::new(Membership::new(state.clone(), cluster, instance));
    if let Some(n) = cluster.expected_members {
        metrics::cluster_expected(n);
    }
    metrics::cluster_lease_held(false);
    if !membership.join_until(&CancellationToken::new()).await {
        return Ok(None);
    }
    Ok(Some((state, membership)))
}

/// Gives what the heartbeat took to the jobs: uploads to resume (or abort) go first to their
/// job; those of jobs not in the file are handled beside them; a fire a lapsed instance claimed
/// and never finished runs again once with `catch_up` (not when its upload is being resumed),
/// a watched file's version always.
fn hand_over(
    supervisor: &Supervisor<HttpUploader>,
    handover: Handover,
    client: &StacClient,
    state: &Arc<StateStore>,
) {
    let Handover::Take(taken) = handover;
    let jobs = supervisor.jobs();
    let resumed_jobs: std::collections::HashSet<String> =
        taken.uploads.iter().map(|u| u.job.clone()).collect();
    // The fires first: a job's runner may take its resume at once, and must find its refire.
    let mut done = Vec::new();
    for (name, work) in taken.claims {
        let again = jobs
            .iter()
            .find(|j| j.spec.name == name)
            .is_some_and(|job| job.take_claim(&work, resumed_jobs.contains(&name)));
        if !again {
            done.push((name, work));
        }
    }
    finish_claims(supervisor, state, done);
    let mut orphans = Vec::new();
    for rec in taken.uploads {
        match jobs.iter().find(|j| j.spec.name == rec.job) {
            Some(job) => job.pending.resume(rec),
            None => orphans.push(rec),
        }
    }
    if !orphans.is_empty() {
        let (client, state, cancel) = (client.clone(), state.clone(), supervisor.abort_token());
        supervisor.track(async move {
            reconcile::reconcile(&client, &state, orphans, &[], &cancel).await;
        });
    }
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
) -> anyhow::Result<(Config, NotifySettings)> {
    let (new, fingerprints) = load(path)?;
    if new.state_dir != current.state_dir {
        anyhow::bail!(
            "state_dir cannot change while running ({} -> {}); restart the daemon instead",
            current.state_dir.display(),
            new.state_dir.display()
        );
    }
    let client = client(&new)?;
    let notify_settings = NotifySettings::of(&new)?;
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
    Ok((new, notify_settings))
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
