//! One task per job: overlap guard, the recurring-upload policy, stale in-progress uploads,
//! deadlines, shutdown. Triggers only fill a job's pending slot; the job's runner does one run at
//! a time for a schedule, so fires during a run coalesce into one, and up to the job's
//! `concurrency` for a watch, never two of one asset at once.

mod from_file;
mod item_run;
mod job;
mod names;
pub(crate) mod public;
pub(crate) mod reconcile;
pub(crate) mod stale;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

pub(crate) use item_run::{is_glob, resolve_glob};
pub(crate) use job::public_answer;
pub use job::{HttpUploader, Job, Pending, RunStart, Shared, Uploader, Work, effective_policy};

use crate::config::JobSpec;
use crate::observe::metrics;
use crate::state::{InFlight, RunRecord};
use crate::trigger::TriggerSpec;
use crate::trigger::schedule::{self, Trigger};
use crate::trigger::watch::{WatchError, Watcher, bundle};

/// The running jobs, by name: started together, changed one by one by [`Supervisor::apply`].
pub struct Supervisor<U: Uploader> {
    shared: Arc<Shared<U>>,
    /// The current jobs, in configuration order.
    jobs: Vec<Running<U>>,
    /// Every task of every job, current and retiring, for shutdown.
    tasks: TaskTracker,
    /// Cancels every run at once: shutdown past its grace period.
    abort_runs: CancellationToken,
    /// The run history as it was at start, for jobs of names not started yet: a job added by a
    /// reload takes its failures in a row and last success from it.
    history: BTreeMap<String, Vec<RunRecord>>,
    /// Names of the jobs started in this process: their metrics go on across reloads.
    started: HashSet<String>,
}

/// A claim of work: (job, work), as `claims` names it.
type Claimed = (String, String);

/// What a job starts with besides its trigger: uploads a previous process (or a lapsed cluster
/// member) left in flight, and claims such a member never finished.
#[derive(Default)]
struct Handed {
    resumes: Vec<InFlight>,
    claims: Vec<(String, String)>,
}

/// One running job.
struct Running<U: Uploader> {
    job: Arc<Job<U>>,
    /// What the job was made from; equal fingerprints mean an unchanged job.
    fingerprint: Option<u64>,
    /// Stops its trigger, and its runner once the current run is over.
    stop: CancellationToken,
    /// Its runner, for a successor to wait on: two runs of one job never overlap.
    runner: TaskTracker,
}

/// What [`Supervisor::apply`] did, by job name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl<U: Uploader> Supervisor<U> {
    /// Starts every job: its trigger and its runner. Jobs that are to be compared on a reload
    /// are started with [`Supervisor::start_with`].
    pub async fn start(shared: Arc<Shared<U>>, specs: Vec<JobSpec>) -> Result<Self, WatchError> {
        Self::start_with(shared, specs.into_iter().map(|s| (s, None)).collect()).await
    }

    /// [`Supervisor::start`] with each job's fingerprint (see [`Supervisor::apply`]).
    pub async fn start_with(
        shared: Arc<Shared<U>>,
        specs: Vec<(JobSpec, Option<u64>)>,
    ) -> Result<Self, WatchError> {
        Self::start_resuming(shared, specs, Vec::new()).await
    }

    /// [`Supervisor::start_with`], handing each upload a previous process left in flight to its
    /// job as its first work ([`Job::resume`]): every job starts at once, and an interrupted
    /// upload is resumed under its job's limits like a run. Records of jobs not in `specs` are
    /// the caller's to handle ([`reconcile::reconcile`]); any given here stays on record.
    pub async fn start_resuming(
        shared: Arc<Shared<U>>,
        specs: Vec<(JobSpec, Option<u64>)>,
        inflight: Vec<InFlight>,
    ) -> Result<Self, WatchError> {
        Ok(Self::start_taking(shared, specs, inflight, Vec::new())
            .await?
            .0)
    }

    /// [`Supervisor::start_resuming`], each job also given its claims (`(job, work)`) that a
    /// lapsed cluster member, or this instance under an earlier lease, never finished
    /// ([`Job::take_claim`]), before its runner starts. Returns the claims nobody runs again,
    /// for the caller to mark finished.
    pub async fn start_taking(
        shared: Arc<Shared<U>>,
        specs: Vec<(JobSpec, Option<u64>)>,
        inflight: Vec<InFlight>,
        claims: Vec<(String, String)>,
    ) -> Result<(Self, Vec<(String, String)>), WatchError> {
        // Read once: catch-up and the metrics' failures in a row and last success start from it.
        let history = shared.state.history().await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the run history; catch_up and the metrics see no earlier runs");
            Default::default()
        });
        let mut supervisor = Self {
            shared,
            jobs: Vec::new(),
            tasks: TaskTracker::new(),
            abort_runs: CancellationToken::new(),
            history,
            started: HashSet::new(),
        };
        // One instant for all: `every` jobs share the grid's origin, and catch-up compares
        // against the same "now".
        let now = supervisor.shared.clock.now();
        let mut inflight = inflight;
        let mut claims = claims;
        let mut done = Vec::new();
        for (spec, fingerprint) in specs {
            let runs = supervisor.first_start(&spec.name);
            let (resumes, rest): (Vec<_>, Vec<_>) =
                inflight.into_iter().partition(|r| r.job == spec.name);
            inflight = rest;
            let (mine, rest): (Vec<_>, Vec<_>) =
                claims.into_iter().partition(|(job, _)| *job == spec.name);
            claims = rest;
            let handed = Handed {
                resumes,
                claims: mine,
            };
            let (running, unrun) =
                supervisor.launch(spec, fingerprint, now, runs.as_deref(), None, handed)?;
            done.extend(unrun);
            supervisor.jobs.push(running);
        }
        for rec in inflight {
            warn!(upload_id = %rec.upload_id, job = %rec.job, "an upload in flight of a job not started is left on record");
        }
        done.extend(claims);
        info!(jobs = supervisor.jobs.len(), "jobs started");
        Ok((supervisor, done))
    }

    /// Takes a new set of jobs, compared by name and fingerprint: an unchanged job runs on
    /// untouched; a changed one takes its new spec once its current run is over (at once when
    /// idle); a removed one stops after its run; a new one starts now. Nothing waits for a run
    /// here. If a new trigger cannot start (a watch folder), nothing changes: the jobs started
    /// for the new set are stopped again and the current ones go on.
    pub fn apply(&mut self, specs: Vec<(JobSpec, Option<u64>)>) -> Result<Changes, WatchError> {
        let now = self.shared.clock.now();
        // First start what is new or changed; if one cannot start, stop those again.
        let mut launched: HashMap<String, Running<U>> = HashMap::new();
        for (spec, fingerprint) in &specs {
            let current = self.jobs.iter().find(|r| r.job.spec.name == spec.name);
            if current.is_some_and(|r| fingerprint.is_some() && r.fingerprint == *fingerprint) {
                continue;
            }
            // A reload is not a restart: a run missed "while down" is not caught up.
            let mut spec = spec.clone();
            spec.catch_up = false;
            let predecessor = current.map(|r| (r.runner.clone(), r.job.pending.clone()));
            let runs = self.first_start(&spec.name);
            match self.launch(
                spec,
                *fingerprint,
                now,
                runs.as_deref(),
                predecessor,
                Handed::default(),
            ) {
                Ok((r, _)) => {
                    launched.insert(r.job.spec.name.clone(), r);
                }
                Err(e) => {
                    for r in launched.values() {
                        r.stop.cancel();
                    }
                    return Err(e);
                }
            }
        }
        // Committed: the new set in its order; what is replaced or gone stops after its run.
        let mut old: HashMap<String, Running<U>> = self
            .jobs
            .drain(..)
            .map(|r| (r.job.spec.name.clone(), r))
            .collect();
        let mut changes = Changes::default();
        for (spec, _) in &specs {
            let name = spec.name.clone();
            let running = match (launched.remove(&name), old.remove(&name)) {
                (Some(new), Some(replaced)) => {
                    replaced.stop.cancel();
                    changes.changed.push(name);
                    new
                }
                (Some(new), None) => {
                    changes.added.push(name);
                    new
                }
                (None, Some(kept)) => {
                    changes.unchanged.push(name);
                    kept
                }
                // Only a name given twice gets here, and the loader refuses those.
                (None, None) => continue,
            };
            self.jobs.push(running);
        }
        for (name, r) in old {
            r.stop.cancel();
            changes.removed.push(name);
        }
        changes.removed.sort();
        Ok(changes)
    }

    /// The runs on record for a job of this name if none has started in this process yet (its
    /// metrics start from them), `None` if one has (its metrics go on).
    fn first_start(&mut self, name: &str) -> Option<Vec<RunRecord>> {
        self.started
            .insert(name.to_owned())
            .then(|| self.history.remove(name).unwrap_or_default())
    }

    /// Starts one job's trigger and runner; its runner first waits for `predecessor` (the
    /// runner and the pending slot of the job it replaces) to finish its run, then takes what
    /// came for it meanwhile. `history` is the job's runs on record when it is the first job of
    /// its name in this process (see [`metrics::register_job`]); `resumes` are its uploads a
    /// previous process left in flight, its first work.
    fn launch(
        &self,
        spec: JobSpec,
        fingerprint: Option<u64>,
        now: chrono::DateTime<chrono::Utc>,
        history: Option<&[RunRecord]>,
        predecessor: Option<(TaskTracker, Arc<Pending>)>,
        handed: Handed,
    ) -> Result<(Running<U>, Vec<Claimed>), WatchError> {
        let Handed { resumes, claims } = handed;
        let resumed = !resumes.is_empty();
        let mut done = Vec::new();
        metrics::register_job(
            &spec.name,
            schedule::expected_interval(&spec.trigger, now),
            history,
            now,
        );
        if !spec.assets.is_empty() || spec.alias.is_some() {
            metrics::register_item_job(&spec.name);
        }
        if spec.verify_public != crate::config::VerifyPublic::Off {
            metrics::register_verify_public(&spec.name);
        }
        metrics::register_file_checks(&spec.name);
        let runs = history.unwrap_or_default();
        let stop = CancellationToken::new();
        let job = Arc::new(Job::new(
            spec,
            self.shared.clone(),
            self.abort_runs.child_token(),
        ));
        // Before any trigger can fill the slot, and before the runner starts: the claims a
        // lapsed member left (a refire must be there when the runner takes the resume), then
        // the interrupted upload, which goes first.
        for (name, work) in claims {
            if !job.take_claim(&work, resumed) {
                done.push((name, work));
            }
        }
        for rec in resumes {
            job.pending.resume(rec);
        }
        match &job.spec.trigger {
            TriggerSpec::Cron { .. } | TriggerSpec::Every { .. } => {
                match trigger_for(&job.spec, now, runs) {
                    Some(trigger) => {
                        // Up from now, not from the loop's first poll: the series exists at once.
                        metrics::trigger_up(&job.spec.name, true);
                        self.spawn_trigger(
                            &job.spec.name,
                            &stop,
                            schedule::fire_loop(
                                trigger,
                                now,
                                job.pending.clone(),
                                self.shared.clock,
                                stop.clone(),
                            )
                            .instrument(info_span!("schedule", job = %job.spec.name)),
                        );
                    }
                    None => {
                        metrics::trigger_up(&job.spec.name, false);
                        tracing::error!(job = %job.spec.name, "the interval is zero or too long: the job never runs");
                    }
                }
            }
            TriggerSpec::Watch(spec) => {
                // A bundle job's members, checked before the watch starts.
                let collector = if job.spec.assets.is_empty() {
                    None
                } else {
                    let members = bundle::members(
                        job.spec
                            .assets
                            .iter()
                            .map(|a| (a.file.as_path(), a.required)),
                    )?;
                    let root = std::path::absolute(&spec.dir).map_err(|source| {
                        WatchError::Inaccessible {
                            path: spec.dir.clone(),
                            source,
                        }
                    })?;
                    metrics::register_bundle_job(&job.spec.name);
                    Some((root, bundle::Collector::new(members, spec.bundle)))
                };
                let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
                let watcher =
                    Watcher::start_for_job(&job.spec.name, spec.clone(), tx, stop.child_token())?;
                let pending = job.pending.clone();
                let name = job.spec.name.clone();
                self.spawn_trigger(&job.spec.name, &stop, async move {
                    match collector {
                        None => {
                            while let Some(path) = rx.recv().await {
                                pending.file(path);
                            }
                        }
                        Some((root, collector)) => {
                            bundle::collect(name.clone(), root, collector, rx, |b| {
                                pending.bundle(b.stem, b.files, b.complete);
                            })
                            .await;
                        }
                    }
                    // The sender closed: the watch was stopped (a lost folder is retried inside).
                    if let Err(e) = watcher.join().await {
                        tracing::error!(job = %name, error = %e, "the folder watch ended with an error");
                    }
                });
            }
        }
        let runner = TaskTracker::new();
        let run = {
            let (job, stop) = (job.clone(), stop.clone());
            async move {
                if let Some((runner, pending)) = predecessor {
                    // The trigger already collects work; runs start when the old runner is done,
                    // with what came to the old slot during its last run.
                    tokio::select! {
                        () = runner.wait() => {}
                        () = stop.cancelled() => return,
                    }
                    job.pending.take_over(&pending);
                }
                supervise(job, stop).await;
            }
        };
        self.tasks.spawn(runner.track_future(run));
        runner.close();
        Ok((
            Running {
                job,
                fingerprint,
                stop,
                runner,
            },
            done,
        ))
    }

    /// Spawns a job's trigger task. A panic in it is logged and counted, and the job shows as
    /// not running on `/readyz` until it is stopped or replaced (a reload): a trigger cannot be
    /// restarted without its job. A trigger that returns has stopped on purpose (no further fire
    /// time, or stopped).
    fn spawn_trigger(
        &self,
        name: &str,
        stop: &CancellationToken,
        trigger: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (name, stop, board) = (name.to_owned(), stop.clone(), self.shared.job_tasks.clone());
        let task = tokio::spawn(trigger);
        self.tasks.spawn(async move {
            let Err(e) = task.await else { return };
            tracing::error!(job = %name, panic = %panic_text(e), "the job's trigger task ended unexpectedly: the job no longer fires until a reload or restart");
            metrics::job_task_failed(&name);
            let _down = board.down(&name);
            stop.cancelled().await;
        });
    }

    /// Runs `task` beside the jobs: it is waited for at shutdown, like a run.
    pub fn track(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// A token cancelled when shutdown aborts the runs (the grace period is over).
    pub fn abort_token(&self) -> CancellationToken {
        self.abort_runs.child_token()
    }

    /// Gives every run that starts from now on `uploader` (see [`Shared::set_uploader`]).
    pub fn set_uploader(&self, uploader: U) {
        self.shared.set_uploader(uploader);
    }

    /// At most `limit` upload sessions at once from now on (see [`Shared::set_upload_limit`]).
    pub fn set_upload_limit(&self, limit: usize) {
        self.shared.set_upload_limit(limit);
    }

    /// The jobs, by configuration order.
    pub fn jobs(&self) -> Vec<Arc<Job<U>>> {
        self.jobs.iter().map(|r| r.job.clone()).collect()
    }

    /// Stops the triggers, lets running uploads (of current and retiring jobs) finish for up to
    /// `grace`, then aborts what is left (each session aborts its own upload) and waits for that.
    /// In a cluster, what is left is handed over instead: stopped without an abort, left on
    /// record for the instance that takes this one's work.
    pub async fn shutdown(self, grace: Duration) {
        for r in &self.jobs {
            r.stop.cancel();
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            let fence = self.shared.state.fence();
            if fence.clustered() {
                // In a cluster the others carry them on: nothing more is sent for them here,
                // not even an abort, and they stay on record for whoever takes them over.
                warn!(
                    grace_s = grace.as_secs(),
                    "uploads still running after the grace period: handing them over to the other instances"
                );
                fence.shut();
            } else {
                warn!(
                    grace_s = grace.as_secs(),
                    "uploads still running after the grace period: aborting them"
                );
            }
            self.abort_runs.cancel();
            self.tasks.wait().await;
        }
        info!("all jobs stopped");
    }
}

impl crate::trigger::Fire for Pending {
    fn fire(&self, at: chrono::DateTime<chrono::Utc>) {
        Pending::fire(self, at);
    }
}

/// The first wait before a job's runner that ended unexpectedly is started again; doubled at each
/// failure in a row up to [`RESTART_MAX`], so a runner that panics at once does not spin.
const RESTART_MIN: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const RESTART_MAX: Duration = Duration::from_secs(300);
/// A runner that lived this long before it ended is restarted after [`RESTART_MIN`] again.
const RESTART_RESET: Duration = Duration::from_secs(600);

/// Runs the job's runner in a task of its own until `stop`. A runner that panics, or returns
/// before `stop` (it never should), is logged at error with the job's name, counted
/// (`stac_uploadd_job_task_failures_total`), shown as not running on `/readyz`, and started again
/// after a growing wait. What was pending for it stays pending.
async fn supervise<U: Uploader>(job: Arc<Job<U>>, stop: CancellationToken) {
    let name = job.spec.name.clone();
    let board = job.shared.job_tasks.clone();
    let mut wait = RESTART_MIN;
    loop {
        let started = tokio::time::Instant::now();
        let ended = tokio::spawn(job.clone().run_loop(stop.clone())).await;
        let why = match ended {
            Ok(()) if stop.is_cancelled() => return,
            Ok(()) => "it returned".to_owned(),
            Err(e) => panic_text(e),
        };
        if started.elapsed() >= RESTART_RESET {
            wait = RESTART_MIN;
        }
        metrics::job_task_failed(&name);
        if stop.is_cancelled() {
            tracing::error!(job = %name, why = %why, "the job's runner ended unexpectedly while stopping");
            return;
        }
        tracing::error!(job = %name, why = %why, restart_in_ms = wait.as_millis() as u64, "the job's runner ended unexpectedly; starting it again");
        let down = board.down(&name);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        drop(down);
        wait = (wait * 2).min(RESTART_MAX);
    }
}

/// What a task that did not end normally said: its panic message (escaped when logged), or why
/// it was cancelled.
fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("panicked: {}", text.escape_debug())
}

/// The trigger of a cron or `every` job started at `now`, whose recorded runs are `runs`;
/// `None` if it has no cadence (a watch job, a zero interval).
fn trigger_for(
    spec: &JobSpec,
    now: chrono::DateTime<chrono::Utc>,
    runs: &[RunRecord],
) -> Option<Trigger> {
    let cadence = schedule::Cadence::of(&spec.trigger, now)?;
    let catch_up = if spec.catch_up {
        schedule::missed_run(&cadence, runs, now)
    } else {
        None
    };
    Some(Trigger {
        job: spec.name.clone(),
        cadence,
        jitter: spec.jitter,
        catch_up,
    })
}
