//! Sending: one bounded queue and one worker per target, so that a receiver that hangs holds
//! only its own notices (never a run, never another target), and one target's notices (a
//! job's pings) go out in the order they were made.

use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::ServerConfig;
use crate::observe::metrics::{self, NotifyOutcome};

/// Notices waiting per target; more are dropped (and counted): a receiver that far behind is
/// down, and memory stays bounded whatever the jobs do.
pub(crate) const QUEUE: usize = 64;
/// Tries of one notice: the first and two retries.
const RETRIES: usize = 2;

/// One POST to make.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) url: url::Url,
    pub(crate) body: Body,
}

/// What a POST carries.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// A webhook's notice.
    Json(serde_json::Value),
    /// A failure ping's error text.
    Text(String),
    /// A start or success ping.
    Empty,
}

/// The HTTP client for notices and pings: the server's CA file and proxy (and `NO_PROXY`), so
/// that a daemon behind a proxy reaches its webhooks as it reaches the API; no redirects (a
/// POST redirected is replayed as a GET, or somewhere else).
pub(crate) fn http_client(server: &ServerConfig) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    let cfg = server.client_config();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .user_agent(cfg.user_agent())
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &cfg.ca_file {
        builder = builder.tls_certs_merge(stac_client::load_ca_file(path)?);
    }
    if let Some(url) = &cfg.proxy {
        let proxy = reqwest::Proxy::all(url.as_str())
            .with_context(|| format!("invalid proxy {}", stac_client::redact_userinfo(url)))?
            .no_proxy(
                cfg.no_proxy
                    .as_deref()
                    .and_then(reqwest::NoProxy::from_string),
            );
        builder = builder.proxy(proxy);
    }
    builder
        .build()
        .context("cannot start the HTTP client for notifications")
}

/// A target's queue and the task that empties it.
pub(crate) struct Worker {
    /// The metric's `target` label.
    label: String,
    /// The URL as logs may show it.
    shown: String,
    tx: mpsc::Sender<Request>,
    /// Ends the sending at once: what is left is dropped and counted.
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Worker {
    /// A worker posting to `shown`'s target, each try bounded by `timeout`.
    pub(crate) fn spawn(
        label: String,
        shown: String,
        client: reqwest::Client,
        timeout: Duration,
    ) -> Self {
        metrics::register_notify_target(&label);
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let task = tokio::spawn(work(
            rx,
            client,
            timeout,
            label.clone(),
            shown.clone(),
            stop.clone(),
        ));
        Self {
            label,
            shown,
            tx,
            stop,
            task,
        }
    }

    /// Queues `request`, or drops it (counted, logged) when the queue is full: never waits.
    pub(crate) fn push(&self, request: Request) {
        if let Err(e) = self.tx.try_send(request) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "its queue is full",
                mpsc::error::TrySendError::Closed(_) => "its sender has stopped",
            };
            warn!(notify_target = %self.label, url = %self.shown, "notice dropped: {why} (the receiver is slow or down)");
            metrics::notified(&self.label, NotifyOutcome::Dropped, 1);
        }
    }

    /// Sends what is queued until `deadline`, then drops (and counts) the rest.
    pub(crate) async fn finish(self, deadline: tokio::time::Instant) {
        let Self {
            tx, stop, mut task, ..
        } = self;
        drop(tx);
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            stop.cancel();
            let _ = task.await;
        }
    }
}

async fn work(
    mut rx: mpsc::Receiver<Request>,
    client: reqwest::Client,
    timeout: Duration,
    label: String,
    shown: String,
    stop: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                metrics::notified(&label, NotifyOutcome::Dropped, 1);
                break;
            }
            outcome = deliver(&client, &request, timeout, &label, &shown) => {
                metrics::notified(&label, outcome, 1);
            }
        }
    }
    rx.close();
    let mut left = 0u64;
    while rx.try_recv().is_ok() {
        left += 1;
    }
    if left > 0 {
        warn!(notify_target = %label, url = %shown, notices = left, "notices dropped: the daemon stopped before they could be sent");
        metrics::notified(&label, NotifyOutcome::Dropped, left);
    }
}

/// Why one try failed.
#[derive(Debug)]
enum SendError {
    /// No answer: connection, TLS, timeout.
    Transport(reqwest::Error),
    /// An answer other than 2xx.
    Status(reqwest::StatusCode),
}

impl SendError {
    /// Worth another try: the receiver may be back in a moment. A 4xx other than 408 and 429
    /// says the request itself is refused (a revoked webhook): trying again changes nothing.
    fn retryable(&self) -> bool {
        match self {
            SendError::Transport(e) => !e.is_builder(),
            SendError::Status(s) => {
                s.is_server_error()
                    || *s == reqwest::StatusCode::REQUEST_TIMEOUT
                    || *s == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Transport(e) if e.is_timeout() => {
                f.write_str("no answer within the timeout")
            }
            SendError::Transport(e) => {
                // The chain of causes, without the URL reqwest puts in its message: it is secret.
                let mut source = std::error::Error::source(e);
                let mut text = if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "the request failed".to_owned()
                };
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                f.write_str(&text)
            }
            SendError::Status(s) => write!(f, "HTTP {s}"),
        }
    }
}

/// One notice, tried up to three times with a backoff.
async fn deliver(
    client: &reqwest::Client,
    request: &Request,
    timeout: Duration,
    label: &str,
    shown: &str,
) -> NotifyOutcome {
    let send = || async {
        let post = client.post(request.url.clone()).timeout(timeout);
        let post = match &request.body {
            Body::Json(v) => post.json(v),
            Body::Text(t) => post
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(t.clone()),
            Body::Empty => post,
        };
        let answer = post
            .send()
            .await
            .map_err(|e| SendError::Transport(e.without_url()))?;
        let status = answer.status();
        if status.is_success() {
            Ok::<(), SendError>(())
        } else {
            Err(SendError::Status(status))
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(RETRIES)
        .with_jitter();
    let result = send
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(SendError::retryable)
        .notify(|e, wait| {
            debug!(notify_target = %label, url = %shown, error = %e, wait_ms = wait.as_millis() as u64, "notice not delivered, trying again");
        })
        .await;
    match result {
        Ok(()) => NotifyOutcome::Sent,
        Err(e) => {
            warn!(notify_target = %label, url = %shown, error = %e, "notice not delivered: given up");
            NotifyOutcome::Failed
        }
    }
}
