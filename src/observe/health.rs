//! What `/healthz` and `/readyz` answer: the daemon's phase, when its main loop last ticked, and
//! the state of each watch job's trigger.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Loading the job file and starting the jobs.
    Starting = 0,
    /// Running the jobs.
    Ready = 1,
    /// Reloading the job file on SIGHUP (the running jobs finish their runs first).
    Reloading = 2,
    /// Stopping: no new runs, running uploads get their grace period.
    Stopping = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Reloading,
            _ => Phase::Stopping,
        }
    }

    /// Lower-case name for answers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Reloading => "reloading",
            Phase::Stopping => "stopping",
        }
    }
}

/// Shared between the daemon's loop (which ticks it and moves the phase) and the HTTP handlers.
/// Times are tokio's, so tests can pause them.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    last_tick_ms: AtomicU64,
    phase: AtomicU8,
    /// `/healthz` fails when the last tick is older than this.
    timeout: Duration,
    /// The watch jobs' triggers, shown by `/readyz`.
    triggers: Arc<Triggers>,
    /// Jobs whose task ended unexpectedly and is not running now: not ready while there is one.
    job_tasks: Arc<JobTasks>,
    /// Why the state store cannot be written, if it cannot: not ready meanwhile.
    store: OnceLock<Arc<dyn StoreCheck>>,
}

/// Answers why the state store's last write failed, `None` while it writes.
pub trait StoreCheck: Send + Sync + std::fmt::Debug {
    /// Why the store cannot be written, if it cannot.
    fn write_problem(&self) -> Option<String>;
}

impl Health {
    /// A daemon that is starting and has just ticked; it shows the process-wide triggers
    /// ([`Triggers::global`]), where the watch jobs report.
    pub fn new(timeout: Duration) -> Self {
        Self::with_triggers(timeout, Triggers::global())
    }

    /// Like [`Health::new`], showing the triggers of `triggers`.
    pub fn with_triggers(timeout: Duration, triggers: Arc<Triggers>) -> Self {
        Self {
            epoch: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Starting as u8),
            timeout,
            triggers,
            job_tasks: JobTasks::global(),
            store: OnceLock::new(),
        }
    }

    /// Judges readiness also by the state store: a daemon that cannot record the uploads it
    /// would start (a full disk, a read-only folder) starts none, and is not ready.
    pub fn watch_store(&self, check: Arc<dyn StoreCheck>) {
        let _ = self.store.set(check);
    }

    /// Why the state store cannot be written, if it cannot.
    pub fn store_problem(&self) -> Option<String> {
        self.store.get().and_then(|c| c.write_problem())
    }

    /// Like [`Health::new`], judging readiness by the jobs of `job_tasks`.
    pub fn with_job_tasks(mut self, job_tasks: Arc<JobTasks>) -> Self {
        self.job_tasks = job_tasks;
        self
    }

    /// The watch jobs' triggers.
    pub fn triggers(&self) -> &Triggers {
        &self.triggers
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The main loop is alive.
    pub fn tick(&self) {
        self.last_tick_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Time since the last tick.
    pub fn since_tick(&self) -> Duration {
        let last = self.last_tick_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// Alive: the loop ticked within the timeout. `Err` carries the age of the last tick.
    pub fn live(&self) -> Result<(), Duration> {
        let age = self.since_tick();
        if age > self.timeout { Err(age) } else { Ok(()) }
    }

    /// Ready: the job file is loaded, the jobs are started, none of their tasks is down after
    /// ending unexpectedly ([`JobTasks`]), the state store writes ([`Health::watch_store`]),
    /// and we are not stopping. A reload keeps the daemon ready: the old jobs run until the new
    /// ones take over.
    pub fn ready(&self) -> bool {
        matches!(self.phase(), Phase::Ready | Phase::Reloading)
            && self.job_tasks.down_jobs().is_empty()
            && self.store_problem().is_none()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The liveness timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The state of a watch job's trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerState {
    /// The folder is watched.
    Watching,
    /// The folder is gone (or its watcher failed), for the reason given; the watch is trying to
    /// watch it again.
    Lost(String),
}

/// The watch jobs' triggers by job name: what `/readyz` lists. Each watch registers its job while
/// it runs ([`Triggers::register`]) and is removed when it stops.
#[derive(Debug, Default)]
pub struct Triggers {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<String, (u64, TriggerState)>>,
}

impl Triggers {
    /// The process-wide board (one daemon per process, like the metrics recorder).
    pub fn global() -> Arc<Triggers> {
        static GLOBAL: OnceLock<Arc<Triggers>> = OnceLock::new();
        GLOBAL.get_or_init(Arc::default).clone()
    }

    /// Shows `job` in `state` until the returned slot is dropped. A job registered again (a
    /// reload starts its new watch before the old one stops) is shown by its latest slot.
    pub fn register(self: &Arc<Self>, job: &str, state: TriggerState) -> TriggerSlot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(job.to_owned(), (id, state));
        TriggerSlot {
            board: Arc::clone(self),
            job: job.to_owned(),
            id,
        }
    }

    /// Every registered job with its trigger state, by name.
    pub fn states(&self) -> Vec<(String, TriggerState)> {
        self.lock()
            .iter()
            .map(|(job, (_, state))| (job.clone(), state.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u64, TriggerState)>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The jobs whose task ended unexpectedly (a panic) and is not running now, with how many of
/// their slots are down: the supervisor marks a job down while it waits to restart its runner,
/// or until a reload replaces a job whose trigger died.
#[derive(Debug, Default)]
pub struct JobTasks {
    down: Mutex<BTreeMap<String, usize>>,
}

impl JobTasks {
    /// The process-wide board (one daemon per process, like the metrics recorder).
    pub fn global() -> Arc<JobTasks> {
        static GLOBAL: OnceLock<Arc<JobTasks>> = OnceLock::new();
        GLOBAL.get_or_init(Arc::default).clone()
    }

    /// Shows `job` down until the returned guard is dropped.
    pub fn down(self: &Arc<Self>, job: &str) -> JobDown {
        *self.lock().entry(job.to_owned()).or_default() += 1;
        JobDown {
            board: Arc::clone(self),
            job: job.to_owned(),
        }
    }

    /// The jobs down now, by name.
    pub fn down_jobs(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A job shown down on [`JobTasks`]; dropping it shows it running again.
#[derive(Debug)]
pub struct JobDown {
    board: Arc<JobTasks>,
    job: String,
}

impl Drop for JobDown {
    fn drop(&mut self) {
        let mut down = self.board.lock();
        if let Some(n) = down.get_mut(&self.job) {
            *n -= 1;
            if *n == 0 {
                down.remove(&self.job);
            }
        }
    }
}

/// One job's place in [`Triggers`]; dropping it removes the job.
#[derive(Debug)]
pub struct TriggerSlot {
    board: Arc<Triggers>,
    job: String,
    id: u64,
}

impl TriggerSlot {
    /// Shows the job in `state`.
    pub fn set(&self, state: TriggerState) {
        if let Some((id, shown)) = self.board.lock().get_mut(&self.job)
            && *id == self.id
        {
            *shown = state;
        }
    }
}

impl Drop for TriggerSlot {
    fn drop(&mut self) {
        let mut jobs = self.board.lock();
        if jobs.get(&self.job).is_some_and(|(id, _)| *id == self.id) {
            jobs.remove(&self.job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_show_the_latest_registration_of_a_job_until_it_is_dropped() {
        let board = Arc::new(Triggers::default());
        let old = board.register("in", TriggerState::Watching);
        let other = board.register("b", TriggerState::Watching);
        old.set(TriggerState::Lost("gone".into()));
        assert_eq!(
            board.states(),
            [
                ("b".to_owned(), TriggerState::Watching),
                ("in".to_owned(), TriggerState::Lost("gone".into()))
            ]
        );
        // A reload: the new watch of "in" registers before the old one stops.
        let new = board.register("in", TriggerState::Watching);
        old.set(TriggerState::Lost("stale".into()));
        drop(old);
        assert_eq!(board.states()[1], ("in".to_owned(), TriggerState::Watching));
        drop(new);
        drop(other);
        assert!(board.states().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_fails_once_the_loop_stops_ticking() {
        let h = Health::new(Duration::from_secs(30));
        assert_eq!(h.live(), Ok(()));
        tokio::time::advance(Duration::from_secs(20)).await;
        h.tick();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(h.live(), Ok(()), "exactly at the timeout is still alive");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(h.live(), Err(Duration::from_secs(31)));
        h.tick();
        assert_eq!(h.live(), Ok(()));
    }

    #[test]
    fn ready_only_between_start_and_stop() {
        let h = Health::new(Duration::from_secs(30));
        assert!(!h.ready());
        h.set_phase(Phase::Ready);
        assert!(h.ready());
        h.set_phase(Phase::Reloading);
        assert!(h.ready());
        h.set_phase(Phase::Stopping);
        assert!(!h.ready());
        assert_eq!(h.phase().as_str(), "stopping");
    }
}
