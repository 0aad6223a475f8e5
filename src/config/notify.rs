//! `[[notify]]` webhooks and per-job pings, as the loader leaves them (docs/notifications.md).

use std::fmt;
use std::time::Duration;

/// A URL that is a secret (a webhook's token is in its path): shown only as scheme and host.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(url::Url);

impl SecretUrl {
    /// An http(s) URL with a host; anything else is refused by the loader before this is made.
    pub(crate) fn new(url: url::Url) -> Self {
        Self(url)
    }

    /// The whole URL, for the request only: never for a log line.
    pub fn expose(&self) -> &url::Url {
        &self.0
    }

    /// `scheme://host[:port]`: what logs and `check` may show.
    pub fn redacted(&self) -> String {
        let host = self.0.host_str().unwrap_or("?");
        match self.0.port() {
            Some(port) => format!("{}://{host}:{port}", self.0.scheme()),
            None => format!("{}://{host}", self.0.scheme()),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/(secret)", self.redacted())
    }
}

/// Which events of a job a `[[notify]]` target is told about (`on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyOn {
    /// The first failure after a success, and reminders while the job keeps failing.
    pub failure: bool,
    /// The first success after failures.
    pub recovery: bool,
    /// Every success.
    pub success: bool,
}

impl Default for NotifyOn {
    /// `["failure", "recovery"]`.
    fn default() -> Self {
        Self {
            failure: true,
            recovery: true,
            success: false,
        }
    }
}

impl fmt::Display for NotifyOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.failure, "failure"),
            (self.recovery, "recovery"),
            (self.success, "success"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&names.join(", "))
    }
}

/// One `[[notify]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// Where the POST goes, from `url_env` or `url_file`.
    pub url: SecretUrl,
    pub on: NotifyOn,
    /// The jobs it is about, by name; `None`: every job of the file.
    pub jobs: Option<Vec<String>>,
    /// At most one reminder per this while a job keeps failing.
    pub repeat: Duration,
    /// The bound of one POST attempt.
    pub timeout: Duration,
}

impl NotifyTarget {
    /// Whether this target is about `job`.
    pub fn covers(&self, job: &str) -> bool {
        self.jobs
            .as_ref()
            .is_none_or(|jobs| jobs.iter().any(|j| j == job))
    }
}

/// `repeat` when a `[[notify]]` table does not set it.
pub const DEFAULT_REPEAT: Duration = Duration::from_secs(3600);
/// `timeout` when a `[[notify]]` table does not set it.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout`: a receiver slower than this is down for our purposes.
pub const MAX_NOTIFY_TIMEOUT: Duration = Duration::from_secs(300);
