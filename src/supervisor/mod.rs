//! One task per job: overlap guard, the recurring-upload policy, stale in-progress uploads,
//! deadlines, shutdown. Triggers only fill a job's pending slot; the job's runner does one run at
//! a time, so two runs of a job never overlap and fires during a run coalesce into one.

pub mod clock;
pub mod job;
pub mod policy;
pub mod reconcile;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

pub use clock::Clock;
pub use job::{HttpUploader, Job, Pending, Shared, Uploader, Work, effective_policy};
pub use policy::{PolicyKind, PolicySpec};

use crate::config::{JobSpec, TriggerSpec};
use crate::trigger::watch::{WatchError, Watcher};
use schedule::Trigger;

/// The running jobs of one configuration.
pub struct Supervisor<U: Uploader> {
    jobs: Vec<Arc<Job<U>>>,
    stop: CancellationToken,
    abort_runs: CancellationToken,
    tasks: TaskTracker,
}

impl<U: Uploader> Supervisor<U> {
    /// Starts every job: its trigger and its runner.
    pub async fn start(shared: Arc<Shared<U>>, specs: Vec<JobSpec>) -> Result<Self, WatchError> {
        let stop = CancellationToken::new();
        let abort_runs = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut jobs = Vec::with_capacity(specs.len());
        // One instant for all: `every` jobs share the grid's origin, and catch-up compares
        // against the same "now".
        let now = shared.clock.now();
        // Read once, and only if needed: a copy per job would grow with the square of the jobs.
        let history = if specs.iter().any(|s| s.catch_up) {
            shared.state.history().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the run history; catch_up sees no earlier runs");
                Default::default()
            })
        } else {
            Default::default()
        };
        for spec in specs {
            crate::observe::metrics::register_job(&spec.name);
            let job = Arc::new(Job {
                spec,
                shared: shared.clone(),
                pending: Arc::new(Pending::default()),
                abort_runs: abort_runs.clone(),
            });
            match &job.spec.trigger {
                TriggerSpec::Cron { .. } | TriggerSpec::Every { .. } => {
                    let runs = history.get(&job.spec.name).map_or(&[][..], Vec::as_slice);
                    match Trigger::for_job(&job.spec, now, runs) {
                        Some(trigger) => {
                            tasks.spawn(
                                schedule::fire_loop(
                                    trigger,
                                    now,
                                    job.pending.clone(),
                                    shared.clock,
                                    stop.clone(),
                                )
                                .instrument(info_span!("schedule", job = %job.spec.name)),
                            );
                        }
                        None => {
                            tracing::error!(job = %job.spec.name, "the interval is zero or too long: the job never runs");
                        }
                    }
                }
                TriggerSpec::Watch(spec) => {
                    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
                    let watcher = Watcher::start_for_job(
                        &job.spec.name,
                        spec.clone(),
                        tx,
                        stop.child_token(),
                    )?;
                    let pending = job.pending.clone();
                    let name = job.spec.name.clone();
                    tasks.spawn(async move {
                        while let Some(path) = rx.recv().await {
                            pending.file(path);
                        }
                        // The sender closed: the watch ended, on purpose or because its folder went.
                        if let Err(e) = watcher.join().await {
                            tracing::error!(job = %name, error = %e, "the folder watch stopped; restart or reload the daemon once the folder is back");
                        }
                    });
                }
            }
            tasks.spawn(job.clone().run_loop(stop.clone()));
            jobs.push(job);
        }
        info!(jobs = jobs.len(), "jobs started");
        Ok(Self {
            jobs,
            stop,
            abort_runs,
            tasks,
        })
    }

    /// The jobs, by configuration order.
    pub fn jobs(&self) -> &[Arc<Job<U>>] {
        &self.jobs
    }

    /// Stops the triggers, lets running uploads finish for up to `grace`, then aborts what is
    /// left (each session aborts its own upload) and waits for that.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                grace_s = grace.as_secs(),
                "uploads still running after the grace period: aborting them"
            );
            self.abort_runs.cancel();
            self.tasks.wait().await;
        }
        info!("all jobs stopped");
    }
}
