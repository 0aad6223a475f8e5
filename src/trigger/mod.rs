//! What starts a run: a cron schedule or an interval (`schedule`: its fire loop and catch-up), or a
//! file that appeared (finished) in a watched folder (`watch`). The supervisor uses these; they
//! do not use the supervisor.

use std::path::PathBuf;

mod clock;
mod cron;
pub mod schedule;
pub mod watch;

pub use clock::Clock;
pub use cron::{Schedule, ScheduleError};
pub use schedule::{Fire, Trigger, fire_loop};
pub use watch::WatchSpec;

/// What starts a job's runs.
#[derive(Debug, Clone)]
pub enum TriggerSpec {
    /// Upload `file` at each fire time of `schedule`.
    Cron { file: PathBuf, schedule: Schedule },
    /// Upload `file` every `interval` (`every = "5m"`), from the daemon's start.
    Every {
        file: PathBuf,
        interval: std::time::Duration,
    },
    /// Upload each finished file that appears in a folder.
    Watch(WatchSpec),
}
