//! `keep`: how much of a job's own items retention leaves on the server.

use std::fmt;
use std::time::Duration;

/// A job's retention rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Items whose time is at most this far in the past (`keep = "30d"`).
    Age(Duration),
    /// The newest this many items (`keep = 30`).
    Count(u32),
}

/// The most items `keep = N` may name: a bound that catches a typo before it keeps everything.
pub(super) const MAX_KEEP_COUNT: i64 = 1_000_000;

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Age(d) => write!(f, "keep {}", humantime::format_duration(*d)),
            Keep::Count(1) => f.write_str("keep the newest item"),
            Keep::Count(n) => write!(f, "keep the newest {n} items"),
        }
    }
}
