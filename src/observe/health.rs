//! What `/healthz` and `/readyz` answer: the daemon's phase, and when its main loop last ticked.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Loading the job file and finishing what a previous run left in flight.
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
}

impl Health {
    /// A daemon that is starting and has just ticked.
    pub fn new(timeout: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Starting as u8),
            timeout,
        }
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

    /// Ready: the job file is loaded and reconciliation is done, and we are not stopping. A
    /// reload keeps the daemon ready: the old jobs run until the new ones take over.
    pub fn ready(&self) -> bool {
        matches!(self.phase(), Phase::Ready | Phase::Reloading)
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

#[cfg(test)]
mod tests {
    use super::*;

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
