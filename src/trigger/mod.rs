//! What starts a run: a cron schedule, or a file that appeared (finished) in a watched folder.

pub mod cron;
pub mod watch;

pub use cron::{Schedule, ScheduleError};
pub use watch::WatchSpec;
