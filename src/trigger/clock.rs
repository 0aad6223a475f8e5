//! Wall-clock time that tests can pause: schedules are computed in wall time, waits go through
//! tokio time.

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock (production).
    System,
    /// A wall time anchored to tokio's clock: under `start_paused` tests, time moves only when
    /// the test (or tokio's auto-advance) moves it.
    Tokio {
        wall: DateTime<Utc>,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `wall` now and advances with tokio time.
    pub fn anchored(wall: DateTime<Utc>) -> Self {
        Clock::Tokio {
            wall,
            at: tokio::time::Instant::now(),
        }
    }

    /// The current wall time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { wall, at } => {
                *wall + chrono::Duration::from_std(at.elapsed()).unwrap_or(chrono::Duration::MAX)
            }
        }
    }

    /// Sleeps until the wall time `t` (re-checking, since the system clock may be adjusted while
    /// we sleep on the monotonic one).
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        // Bounded: each round sleeps the whole remaining time, so more than a few rounds happen
        // only while the system clock keeps being set back.
        for _ in 0..1_000 {
            let left = t - self.now();
            match left.to_std() {
                Ok(d) if !d.is_zero() => tokio::time::sleep(d).await,
                _ => return,
            }
        }
    }
}
