//! A job's policy settings (`policy`, `retries`, ... in the job file): what the supervisor
//! follows when a run fails. Here rather than in `supervisor`, so that `config` does not import
//! `supervisor`; the supervisor imports them from here.

use std::time::Duration;

/// Which policy a job follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Retry a failed run (up to `retries` times, exponential backoff with jitter).
    Retry,
    /// No retry: cancel the attempt and rely on the next scheduled run.
    Cancel,
    /// `retry` when the schedule's runs are at least `auto_threshold` apart, else `cancel`;
    /// watch jobs retry.
    #[default]
    Auto,
}

/// A job's policy settings, with defaults already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    pub auto_threshold: Duration,
    /// Retries of a failed run under the retry policy.
    pub retries: u32,
    /// First wait (at least 100 ms); doubles each retry, with jitter.
    pub retry_min_delay: Duration,
    /// Cap of one wait.
    pub retry_max_delay: Duration,
    /// Someone else's in-progress upload older than this is aborted.
    pub stale_after: Duration,
    /// A run is aborted past this.
    pub run_timeout: Duration,
}

/// The defaults of `config/settings.rs`.
impl Default for PolicySpec {
    fn default() -> Self {
        super::load::Settings::defaults().policy
    }
}
