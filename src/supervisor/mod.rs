//! One task per job: overlap guard, the recurring-upload policy, stale in-progress uploads,
//! deadlines, shutdown. Triggers only fill a job's pending slot; the job's runner does one run at
//! a time, so two runs of a job never overlap and fires during a run coalesce into one.

pub mod clock;
pub mod job;
pub mod policy;
pub mod reconcile;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use clock::Clock;
pub use job::{HttpUploader, Job, Pending, Shared, Uploader, Work, effective_policy};
pub use policy::{PolicyKind, PolicySpec};

use crate::config::{JobSpec, TriggerSpec};
use crate::trigger::Schedule;
use crate::trigger::watch::{WatchError, Watcher};

/// The running jobs of one configuration.
pub struct Supervisor<U: Uploader> {
    jobs: Vec<Arc<Job<U>>>,
    stop: CancellationToken,
    abort_runs: CancellationToken,
    tasks: TaskTracker,
}

impl<U: Uploader> Supervisor<U> {
    /// Starts every job: its trigger and its runner.
    pub fn start(shared: Arc<Shared<U>>, specs: Vec<JobSpec>) -> Result<Self, WatchError> {
        let stop = CancellationToken::new();
        let abort_runs = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut jobs = Vec::with_capacity(specs.len());
        for spec in specs {
            crate::observe::metrics::register_job(&spec.name);
            let job = Arc::new(Job {
                spec,
                shared: shared.clone(),
                pending: Arc::new(Pending::default()),
                abort_runs: abort_runs.clone(),
            });
            match &job.spec.trigger {
                TriggerSpec::Cron { schedule, .. } => {
                    tasks.spawn(cron_loop(
                        schedule.clone(),
                        job.pending.clone(),
                        shared.clock,
                        stop.clone(),
                    ));
                }
                TriggerSpec::Every { interval, .. } => {
                    tasks.spawn(every_loop(
                        *interval,
                        job.pending.clone(),
                        shared.clock,
                        stop.clone(),
                    ));
                }
                TriggerSpec::Watch(spec) => {
                    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
                    let watcher = Watcher::start(spec.clone(), tx, stop.child_token())?;
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

/// Fires `pending` every `interval` from now until `stop`; times missed (a suspended machine)
/// are skipped, not fired in a burst.
async fn every_loop(
    interval: Duration,
    pending: Arc<Pending>,
    clock: Clock,
    stop: CancellationToken,
) {
    let Ok(step) = chrono::Duration::from_std(interval) else {
        return;
    };
    let mut next = clock.now() + step;
    loop {
        tokio::select! {
            () = clock.sleep_until(next) => {}
            () = stop.cancelled() => return,
        }
        crate::observe::record_lateness(clock.now() - next);
        pending.fire(next);
        let now = clock.now();
        while next <= now {
            next += step;
        }
    }
}

/// Fires `pending` at each time of `schedule` until `stop`.
async fn cron_loop(
    schedule: Schedule,
    pending: Arc<Pending>,
    clock: Clock,
    stop: CancellationToken,
) {
    loop {
        let Some(next) = schedule.next_after(clock.now()) else {
            warn!(%schedule, "the schedule has no further fire time");
            return;
        };
        tokio::select! {
            () = clock.sleep_until(next) => {}
            () = stop.cancelled() => return,
        }
        let late = clock.now() - next;
        tracing::trace!(late_ms = late.num_milliseconds(), "schedule fired");
        crate::observe::record_lateness(late);
        pending.fire(next);
    }
}
