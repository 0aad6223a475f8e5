//! The recurring-upload policy of docs/protocol.md: low-frequency jobs retry with exponential backoff,
//! high-frequency jobs give a failed run up and wait for the next.

use std::time::Duration;

/// Which policy a job follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
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

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            kind: PolicyKind::Auto,
            auto_threshold: Duration::from_secs(3600),
            retries: 3,
            retry_min_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(600),
            stale_after: Duration::from_secs(3600),
            run_timeout: Duration::from_secs(7200),
        }
    }
}
