//! What starts a run: a cron schedule or an interval (`schedule`: its fire loop and catch-up), or a
//! file that appeared (finished) in a watched folder (`watch`). The supervisor uses these; they
//! do not use the supervisor.

pub mod clock;
pub mod cron;
pub mod schedule;
pub mod watch;

pub use clock::Clock;
pub use cron::{Schedule, ScheduleError};
pub use schedule::{Fire, Trigger, fire_loop};
pub use watch::WatchSpec;
