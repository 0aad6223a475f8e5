//! `stac-uploadd run --once [--job NAME]...`: every job of the job file (or the named ones) run
//! once, now, with its whole policy, for a scheduler outside the daemon: a Kubernetes CronJob, a
//! systemd timer, a CI schedule.
//!
//! Nothing here decides how a run goes. Each run is the supervisor's [`Job::run`] (attempts,
//! retries, the stale-upload rule, deadlines, the state records), with the daemon's runtime
//! pieces ([`daemon::Runtime::jobs`]: digest cache, temporary folder, bandwidth limiters) and its
//! start-up duties: the state folder's lock, and what a previous process left in flight resumed
//! or aborted as the first run of its job ([`Job::resume`]; [`reconcile::reconcile`] for the
//! jobs not selected, beside the runs). This module only lists the work (a schedule job's
//! file; the files a watch job's folder holds now), runs the jobs side by side under
//! `max_concurrent_uploads` and each job's runs one after the other, stops on SIGTERM/SIGINT/SIGHUP as
//! the daemon does, and sums up.
//!
//! The retry cap "never past the next scheduled run" keeps following the job's schedule in the
//! file, as it does in the daemon: the file's schedule is the one the external scheduler is to
//! fire on, and a run retried past it would still hold the state folder when the next one
//! starts (docs/deployment.md, "Scheduling from outside").

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{self, ConfigError, JobSpec};
use crate::daemon;
use crate::notify::{self, Notifier, NotifySettings};
use crate::state::{RunRecord, StateError, StateStore, Streak};
use crate::supervisor::{HttpUploader, Job, Shared, Work, reconcile};
use crate::trigger::Clock;
use crate::trigger::TriggerSpec;

/// What `run --once` runs.
#[derive(Debug, Clone)]
pub(crate) struct OnceArgs {
    /// The job file.
    pub config: PathBuf,
    /// The jobs to run, by name; empty: every job of the file.
    pub jobs: Vec<String>,
    /// After SIGTERM/SIGINT/SIGHUP, how long running uploads may go on before they are aborted.
    pub grace: Duration,
}

/// Why `run --once` ran nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OnceError {
    /// The job file is bad (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--job` names no job of the file (exit 2).
    #[error(transparent)]
    UnknownJob(#[from] config::UnknownJob),
    /// Another process holds the state folder (exit 1): running beside it would race it.
    #[error(
        "another stac-uploadd ({holder}) holds the state folder {}: a run now would race it; stop it first, or give this job file a state_dir of its own",
        dir.display()
    )]
    Held { dir: PathBuf, holder: String },
    /// The state folder cannot be opened (exit 3 if it needs an operator, else 1).
    #[error(transparent)]
    State(#[from] StateError),
    /// Anything else (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// One line of the summary.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// An upload a previous process left in flight, resumed or aborted before the runs.
    Reconciled(RunRecord),
    /// A run of a job.
    Ran(RunRecord),
    /// A run not started: a stopping signal came first.
    NotStarted { job: String, file: PathBuf },
    /// A watch job whose folder holds no file to send.
    NothingToDo { job: String, dir: PathBuf },
    /// A watch job whose folder could not be listed.
    CannotList { job: String, error: String },
}

impl Entry {
    /// Whether this line lets the command succeed. What reconciliation aborted is no failure of
    /// this command: the job's own run follows, and its line tells.
    pub(crate) fn is_ok(&self) -> bool {
        match self {
            Entry::Reconciled(_) | Entry::NothingToDo { .. } => true,
            // The runs that count as a success everywhere else (failures in a row, last success).
            Entry::Ran(r) => r.outcome.streak() == Streak::Success,
            Entry::NotStarted { .. } | Entry::CannotList { .. } => false,
        }
    }
}

/// One line per entry: `JOB OUTCOME key=value...`, the error (free text) last.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Reconciled(r) | Entry::Ran(r) => {
                write!(
                    f,
                    "{} {} bytes={} attempts={} upload={}",
                    r.job,
                    r.outcome.as_str(),
                    r.bytes,
                    r.attempts,
                    r.upload_id.as_ref().map_or("-", |u| u.0.as_str()),
                )?;
                if let Some(file) = &r.file {
                    write!(f, " file={}", file.display())?;
                }
                if !r.assets.is_empty() {
                    write!(
                        f,
                        " item={} assets={}",
                        r.item.as_deref().unwrap_or("-"),
                        r.assets.len()
                    )?;
                }
                if matches!(self, Entry::Reconciled(_)) {
                    f.write_str(" left_by=an-earlier-process")?;
                }
                match &r.error {
                    Some(e) => write!(f, " error={e}"),
                    None => Ok(()),
                }
            }
            Entry::NotStarted { job, file } => write!(
                f,
                "{job} not_started bytes=0 attempts=0 upload=- file={} error=stopped by a signal before this run started",
                file.display()
            ),
            Entry::NothingToDo { job, dir } => {
                write!(f, "{job} nothing_to_do dir={}", dir.display())
            }
            Entry::CannotList { job, error } => {
                write!(f, "{job} failed bytes=0 attempts=0 upload=- error={error}")
            }
        }
    }
}

/// What `run --once` did, in the order it prints it: what reconciliation handled, then each
/// job's runs in the job file's order.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub entries: Vec<Entry>,
    /// The run history and the digest cache could not be written at the end.
    pub flush_error: Option<StateError>,
}

impl Summary {
    /// The lines that make the command fail.
    pub(crate) fn failures(&self) -> usize {
        self.entries.iter().filter(|e| !e.is_ok()).count()
    }

    /// The runs of jobs (not what reconciliation handled).
    pub(crate) fn runs(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !matches!(e, Entry::Reconciled(_) | Entry::NothingToDo { .. }))
            .count()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            // File names and server messages are untrusted: one entry is one line.
            writeln!(f, "{}", crate::observe::escape_controls(&e.to_string()))?;
            // An item run: then one indented line per asset, in the same form.
            if let Entry::Ran(r) = e {
                for a in &r.assets {
                    let mut line = format!(
                        "  {} asset {} item={} asset={} bytes={} upload={}",
                        r.job,
                        a.outcome.as_str(),
                        a.item.as_deref().unwrap_or("-"),
                        a.asset,
                        a.bytes,
                        a.upload_id.as_ref().map_or("-", |u| u.0.as_str()),
                    );
                    if let Some(file) = &a.file {
                        line.push_str(&format!(" file={}", file.display()));
                    }
                    if let Some(error) = &a.error {
                        line.push_str(&format!(" error={error}"));
                    }
                    writeln!(f, "{}", crate::observe::escape_controls(&line))?;
                }
            }
        }
        Ok(())
    }
}

/// The state folder's lock, or who holds it.
fn lock(dir: &std::path::Path) -> Result<crate::state::StateLock, OnceError> {
    crate::state::lock_state(dir).map_err(|e| match crate::state::state_holder(dir) {
        Some(0) => OnceError::Held {
            dir: dir.to_owned(),
            holder: "its pid unknown".into(),
        },
        Some(pid) => OnceError::Held {
            dir: dir.to_owned(),
            holder: format!("pid {pid}"),
        },
        None => OnceError::Other(e),
    })
}

/// The work of one job for this run: its file, with ids rendered for `now`, or the files its
/// watched folder holds now, sorted.
async fn work_of(spec: &JobSpec, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Work>, String> {
    match &spec.trigger {
        TriggerSpec::Cron { .. } | TriggerSpec::Every { .. } => Ok(vec![Work::Scheduled(now)]),
        TriggerSpec::Watch(w) => {
            let w = w.clone();
            let files =
                tokio::task::spawn_blocking(move || crate::trigger::watch::present_files(&w))
                    .await
                    .map_err(|e| format!("listing the folder failed: {e}"))?
                    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
            Ok(files.into_iter().map(Work::File).collect())
        }
    }
}

/// Runs the jobs once; see the module's documentation.
pub(crate) async fn run(args: OnceArgs) -> Result<Summary, OnceError> {
    let config = config::load(&args.config)?;
    let selected: Vec<String> = config
        .select_jobs(&args.jobs)?
        .into_iter()
        .map(|j| j.name.clone())
        .collect();
    // Listening before anything long starts: a signal during reconciliation counts too. SIGHUP
    // (a closed terminal) stops like SIGTERM: there is nothing to reload in a single pass.
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let _lock = lock(&config.state_dir)?;
    let state = Arc::new(StateStore::open(&config.state_dir).await?);
    daemon::clear_temp(&state);
    let client = daemon::client(&config)?;
    let notify_settings = NotifySettings::of(&config)?;
    let jobs = daemon::Runtime::new(&config).jobs(&config, &state, &HashMap::new())?;
    let specs: Vec<JobSpec> = jobs.into_iter().map(|(spec, _)| spec).collect();

    // `stopping`: no run starts any more; `abort`: the runs going on are aborted (each session
    // aborts its own upload), once the grace period is over.
    let stopping = CancellationToken::new();
    let abort = CancellationToken::new();
    let signals = {
        let (stopping, abort, grace) = (stopping.clone(), abort.clone(), args.grace);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = int.recv() => info!("SIGINT: stopping"),
                _ = hup.recv() => info!("SIGHUP: stopping"),
            }
            stopping.cancel();
            tokio::time::sleep(grace).await;
            warn!(
                grace_s = grace.as_secs(),
                "uploads still running after the grace period: aborting them"
            );
            abort.cancel();
            // The streams stay ours: a second signal does nothing more, as in the daemon.
            std::future::pending::<()>().await;
        })
    };

    let mut summary = Summary::default();
    // What a previous process left in flight, for every job: it is ours (we hold the lock) and
    // nobody else will finish it. A selected job resumes its own first; the rest is handled
    // beside the runs.
    let (mut resumes, others): (Vec<_>, Vec<_>) = reconcile::inflight(&state)
        .await
        .into_iter()
        .partition(|r| selected.contains(&r.job));
    let reconciled = {
        let (client, state, specs, abort) =
            (client.clone(), state.clone(), specs.clone(), abort.clone());
        tokio::spawn(
            async move { reconcile::reconcile(&client, &state, others, &specs, &abort).await },
        )
    };

    let shared = Arc::new(Shared::new(
        HttpUploader(client),
        state.clone(),
        Clock::System,
    ));
    shared.set_upload_limit(config.max_concurrent_uploads);
    let notifier = Notifier::start(&shared, notify_settings).await;
    // One instant for every job's ids, as one fire of the external scheduler.
    let now = shared.clock.now();
    let mut tasks = Vec::new();
    for spec in specs.into_iter().filter(|s| selected.contains(&s.name)) {
        let job = Arc::new(Job::new(spec, shared.clone(), abort.child_token()));
        let stopping = stopping.clone();
        let own: Vec<_>;
        (own, resumes) = resumes.into_iter().partition(|r| r.job == job.spec.name);
        tasks.push(tokio::spawn(async move {
            let name = job.spec.name.clone();
            let mut entries = Vec::new();
            for rec in own {
                entries.extend(job.resume(rec).await.map(Entry::Reconciled));
            }
            let work = match work_of(&job.spec, now).await {
                Ok(work) => work,
                Err(error) => {
                    tracing::error!(job = %name, error = %error, "cannot list the watched folder");
                    entries.push(Entry::CannotList { job: name, error });
                    return entries;
                }
            };
            if work.is_empty() {
                let dir = match &job.spec.trigger {
                    TriggerSpec::Watch(w) => w.dir.clone(),
                    _ => PathBuf::new(),
                };
                info!(job = %name, dir = %dir.display(), "no file to send in the watched folder");
                entries.push(Entry::NothingToDo { job: name, dir });
                return entries;
            }
            for w in work {
                if stopping.is_cancelled() {
                    entries.push(Entry::NotStarted {
                        job: name.clone(),
                        file: job.prepare(&w).1,
                    });
                    continue;
                }
                entries.push(Entry::Ran(job.run(w).await));
            }
            entries
        }));
    }
    let mut ran = Vec::new();
    for task in tasks {
        match task.await {
            Ok(entries) => ran.extend(entries),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(anyhow::anyhow!("a job's task was cancelled: {e}").into()),
        }
    }
    match reconciled.await {
        Ok(handled) => summary
            .entries
            .extend(handled.into_iter().map(Entry::Reconciled)),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(anyhow::anyhow!("reconciliation was cancelled: {e}").into()),
    }
    // What reconciliation handled first, then each job's runs in the job file's order.
    let (first, rest): (Vec<_>, Vec<_>) = ran
        .into_iter()
        .partition(|e| matches!(e, Entry::Reconciled(_)));
    summary.entries.extend(first);
    summary.entries.extend(rest);
    signals.abort();
    // The runs' notices and pings go out before the process ends (bounded: a receiver that
    // hangs costs at most this long).
    notifier.finish(notify::FLUSH).await;
    // Writes what is held back and closes the database (its log checkpointed).
    if let Err(e) = state.close().await {
        tracing::error!(error = %e, "cannot write the run history");
        summary.flush_error = Some(e);
    }
    info!(
        runs = summary.runs(),
        failed = summary.failures(),
        "run --once finished"
    );
    Ok(summary)
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    #[test]
    fn a_file_name_with_a_newline_or_an_esc_stays_on_its_summary_line() {
        let summary = Summary {
            entries: vec![
                Entry::NothingToDo {
                    job: "in".into(),
                    dir: PathBuf::from("/in\nforged ran bytes=1 \u{1b}[31m"),
                },
                Entry::NotStarted {
                    job: "other".into(),
                    file: PathBuf::from("/x"),
                },
            ],
            flush_error: None,
        };
        let text = summary.to_string();
        assert_eq!(
            text,
            "in nothing_to_do dir=/in\\nforged ran bytes=1 \\u{1b}[31m\nother not_started bytes=0 attempts=0 upload=- file=/x error=stopped by a signal before this run started\n"
        );
    }
}
