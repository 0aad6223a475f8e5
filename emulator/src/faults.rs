//! Scripted failures per kind of call, and the per-connection bandwidth cap.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The kinds of request the emulator counts and can fail on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallKind {
    /// `POST A/uploads`.
    #[serde(rename = "create")]
    CreateUpload,
    /// `GET A/uploads`.
    #[serde(rename = "list")]
    ListUploads,
    /// `GET A/uploads/{id}`.
    #[serde(rename = "get")]
    GetUpload,
    /// `GET A/uploads/{id}/parts`.
    #[serde(rename = "parts")]
    ListParts,
    /// `PUT` of a presigned part URL.
    #[serde(rename = "put_part")]
    PutPart,
    /// `POST A/uploads/{id}/complete`.
    #[serde(rename = "complete")]
    Complete,
    /// `POST A/uploads/{id}/abort`.
    #[serde(rename = "abort")]
    Abort,
    /// `GET A` (the asset itself; reads of collections and items are not counted).
    #[serde(rename = "asset")]
    GetAsset,
    /// `PUT`, `PATCH` or `DELETE` of a collection, item or asset.
    #[serde(rename = "put_stac")]
    PutStac,
    /// `GET` or `HEAD` of an asset's public object (its `href`).
    #[serde(rename = "download")]
    Download,
}

impl CallKind {
    /// Every kind, in declaration order.
    pub const ALL: [CallKind; 10] = [
        CallKind::CreateUpload,
        CallKind::ListUploads,
        CallKind::GetUpload,
        CallKind::ListParts,
        CallKind::PutPart,
        CallKind::Complete,
        CallKind::Abort,
        CallKind::GetAsset,
        CallKind::PutStac,
        CallKind::Download,
    ];

    /// The name used by the admin API and `--fault`.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::CreateUpload => "create",
            CallKind::ListUploads => "list",
            CallKind::GetUpload => "get",
            CallKind::ListParts => "parts",
            CallKind::PutPart => "put_part",
            CallKind::Complete => "complete",
            CallKind::Abort => "abort",
            CallKind::GetAsset => "asset",
            CallKind::PutStac => "put_stac",
            CallKind::Download => "download",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CallKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        CallKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = CallKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown call {s:?}, expected one of: {}", names.join(", "))
            })
    }
}

/// What an injected fault does to the request it hits.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer this status without handling the request: 502/503/504 with an nginx-like HTML
    /// page (what a gateway sends), part PUTs with an S3 XML error, anything else with a JSON
    /// error body.
    Status(u16),
    /// Close the connection without an answer and without any effect; a part PUT is cut after
    /// about half of its body has been read.
    Drop,
    /// Handle the request (it takes effect) and then close the connection instead of answering:
    /// the answer is lost, as when a client times out on a request that succeeded.
    DropAfterCommit,
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Handle the request (it takes effect), then wait this long before answering: a loaded
    /// server or proxy, the window in which a client stopped mid-request has not yet heard
    /// of what its request made.
    SlowAnswer(Duration),
    /// Part PUT only: answer 403 AccessDenied "Request has expired" as if the URL had expired.
    /// On other calls it answers a plain 403.
    ExpireUrl,
    /// Answer this status like [`FaultAction::Status`], with a `Retry-After` header of this
    /// value (delta-seconds or an HTTP-date, sent as given): what a rate limiter or a service in
    /// maintenance sends with 429 and 503.
    StatusRetryAfter { status: u16, retry_after: String },
    /// Create only: handle the request (the upload is created and stays in progress), then
    /// answer it without any part URL (`"urls": []`), as a broken server or proxy might.
    NoPartUrls,
    /// Handle the request (it takes effect), then answer its success status with the body
    /// `<html>` (`text/html`) instead of JSON: a proxy's page in front of a real success.
    HtmlBody,
    /// Complete only: the upload completes and the asset declares the new checksum, but its
    /// public URL goes on serving the previous object, bytes and headers (a cache or a
    /// replication that did not follow); nothing when there was none.
    StalePublic,
    /// Complete only: the upload completes, but its public URL answers 404 `NoSuchKey`.
    MissingPublic,
}

impl FaultAction {
    /// The name of a fault without parameters, as `--fault` and the admin API spell it.
    fn name(&self) -> &'static str {
        match self {
            FaultAction::StalePublic => "stale_public",
            FaultAction::MissingPublic => "missing_public",
            FaultAction::Drop => "drop",
            FaultAction::DropAfterCommit => "drop_after_commit",
            FaultAction::ExpireUrl => "expire_url",
            FaultAction::NoPartUrls => "no_urls",
            FaultAction::HtmlBody => "html_body",
            FaultAction::Status(_) | FaultAction::StatusRetryAfter { .. } => "status",
            FaultAction::Delay(_) => "delay",
            FaultAction::SlowAnswer(_) => "slow_answer",
        }
    }

    /// The faults that act on the public object a complete publishes, not on the answer.
    pub(crate) fn is_public(&self) -> bool {
        matches!(self, FaultAction::StalePublic | FaultAction::MissingPublic)
    }
}

/// When an injected fault fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultTrigger {
    /// On each of the next N calls of that kind.
    Next(u32),
    /// On each call of that kind with this probability (0.0..=1.0), until cleared.
    Probability(f64),
}

/// One injected fault: which calls it hits, what it does, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// The kind of call it hits.
    pub call: CallKind,
    /// What it does.
    pub action: FaultAction,
    /// When it fires.
    pub trigger: FaultTrigger,
}

const SPEC_USAGE: &str = "expected CALL:ACTION[:PARAM][:retry_after=V][:next=N|:p=F], e.g. \
     put_part:503:next=2, complete:drop:p=0.1, create:delay=2s, complete:drop_after_commit, \
     create:slow_answer=2s, put_part:expire_url, create:429:retry_after=2, create:no_urls, complete:html_body, \
     complete:stale_public \
     (actions: STATUS, status=STATUS, drop, drop_after_commit, delay=DURATION, \
     slow_answer=DURATION, expire_url, \
     no_urls, html_body, stale_public, missing_public; retry_after only with a status)";

impl FaultSpec {
    fn validate(self) -> Result<Self, String> {
        if let FaultAction::Status(code) | FaultAction::StatusRetryAfter { status: code, .. } =
            self.action
            && !(200..=599).contains(&code)
        {
            return Err(format!(
                "status {code} is not an HTTP status between 200 and 599"
            ));
        }
        if self.action == FaultAction::ExpireUrl && self.call != CallKind::PutPart {
            return Err("expire_url only applies to put_part".into());
        }
        if self.action == FaultAction::NoPartUrls && self.call != CallKind::CreateUpload {
            return Err("no_urls only applies to create".into());
        }
        if self.action.is_public() && self.call != CallKind::Complete {
            return Err(format!(
                "{} only applies to complete (it acts on the object a complete publishes)",
                self.action.name()
            ));
        }
        if let FaultAction::StatusRetryAfter { retry_after, .. } = &self.action
            && axum::http::HeaderValue::from_str(retry_after).is_err()
        {
            return Err(format!("retry_after {retry_after:?} is not a header value"));
        }
        if let FaultTrigger::Probability(p) = self.trigger
            && !(0.0..=1.0).contains(&p)
        {
            return Err(format!("probability {p} is not between 0 and 1"));
        }
        Ok(self)
    }
}

/// `CALL:ACTION[:PARAM][:next=N|:p=F]`, the syntax of `--fault`. Without a trigger a fault fires
/// once (`next=1`).
impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut tokens = s.trim().split(':');
        let call: CallKind = tokens.next().unwrap_or_default().parse()?;
        let mut trigger = FaultTrigger::Next(1);
        let mut action_tokens = Vec::new();
        let mut retry_after = None;
        for token in tokens {
            if let Some(v) = token.strip_prefix("retry_after=") {
                retry_after = Some(v.to_owned());
            } else if let Some(n) = token.strip_prefix("next=") {
                let n = n
                    .parse()
                    .map_err(|_| format!("invalid count in {token:?}: {SPEC_USAGE}"))?;
                trigger = FaultTrigger::Next(n);
            } else if let Some(p) = token.strip_prefix("p=") {
                let p = p
                    .parse()
                    .map_err(|_| format!("invalid probability in {token:?}: {SPEC_USAGE}"))?;
                trigger = FaultTrigger::Probability(p);
            } else {
                action_tokens.push(token);
            }
        }
        // `delay:2s` and `delay=2s` read the same.
        let joined = action_tokens.join("=");
        let (name, param) = match joined.split_once('=') {
            Some((name, param)) => (name, Some(param)),
            None => (joined.as_str(), None),
        };
        let status = |code: &str| {
            code.parse::<u16>()
                .map(FaultAction::Status)
                .map_err(|_| format!("invalid status {code:?}: {SPEC_USAGE}"))
        };
        let action = match (name, param) {
            (code, None) if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) => {
                status(code)?
            }
            ("status", Some(code)) => status(code)?,
            ("drop", None) => FaultAction::Drop,
            ("drop_after_commit", None) => FaultAction::DropAfterCommit,
            ("expire_url", None) => FaultAction::ExpireUrl,
            ("no_urls", None) => FaultAction::NoPartUrls,
            ("html_body", None) => FaultAction::HtmlBody,
            ("stale_public", None) => FaultAction::StalePublic,
            ("missing_public", None) => FaultAction::MissingPublic,
            ("delay", Some(d)) => FaultAction::Delay(
                humantime::parse_duration(d).map_err(|e| format!("invalid delay {d:?}: {e}"))?,
            ),
            ("slow_answer", Some(d)) => FaultAction::SlowAnswer(
                humantime::parse_duration(d).map_err(|e| format!("invalid delay {d:?}: {e}"))?,
            ),
            _ => return Err(format!("invalid fault {s:?}: {SPEC_USAGE}")),
        };
        let action = match (action, retry_after) {
            (action, None) => action,
            (FaultAction::Status(status), Some(retry_after)) => FaultAction::StatusRetryAfter {
                status,
                retry_after,
            },
            _ => return Err(format!("retry_after needs a status in {s:?}: {SPEC_USAGE}")),
        };
        FaultSpec {
            call,
            action,
            trigger,
        }
        .validate()
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.call)?;
        match &self.action {
            FaultAction::Status(code) => write!(f, "{code}")?,
            FaultAction::Drop => f.write_str("drop")?,
            FaultAction::DropAfterCommit => f.write_str("drop_after_commit")?,
            FaultAction::Delay(d) => write!(f, "delay={}", humantime::format_duration(*d))?,
            FaultAction::SlowAnswer(d) => {
                write!(f, "slow_answer={}", humantime::format_duration(*d))?;
            }
            FaultAction::ExpireUrl => f.write_str("expire_url")?,
            FaultAction::StatusRetryAfter {
                status,
                retry_after,
            } => write!(f, "{status}:retry_after={retry_after}")?,
            FaultAction::NoPartUrls => f.write_str("no_urls")?,
            FaultAction::HtmlBody => f.write_str("html_body")?,
            FaultAction::StalePublic | FaultAction::MissingPublic => {
                f.write_str(self.action.name())?;
            }
        }
        match self.trigger {
            FaultTrigger::Next(n) => write!(f, ":next={n}"),
            FaultTrigger::Probability(p) => write!(f, ":p={p}"),
        }
    }
}

/// The admin API's JSON form of a fault:
/// `{"call":"put_part","action":"status","status":503,"next":2}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRequest {
    call: CallKind,
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    /// With `"action": "status"`: the `Retry-After` header sent with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
}

impl TryFrom<FaultRequest> for FaultSpec {
    type Error = String;

    fn try_from(r: FaultRequest) -> Result<Self, String> {
        let action = match (r.action.as_str(), r.status, r.delay_ms, r.retry_after) {
            ("status", Some(code), None, None) => FaultAction::Status(code),
            ("status", Some(status), None, Some(retry_after)) => FaultAction::StatusRetryAfter {
                status,
                retry_after,
            },
            ("drop", None, None, None) => FaultAction::Drop,
            ("drop_after_commit", None, None, None) => FaultAction::DropAfterCommit,
            ("delay", None, Some(ms), None) => FaultAction::Delay(Duration::from_millis(ms)),
            ("slow_answer", None, Some(ms), None) => {
                FaultAction::SlowAnswer(Duration::from_millis(ms))
            }
            ("expire_url", None, None, None) => FaultAction::ExpireUrl,
            ("no_urls", None, None, None) => FaultAction::NoPartUrls,
            ("html_body", None, None, None) => FaultAction::HtmlBody,
            ("stale_public", None, None, None) => FaultAction::StalePublic,
            ("missing_public", None, None, None) => FaultAction::MissingPublic,
            _ => {
                return Err(format!(
                    "invalid action {:?}: expected \"status\" with \"status\" (and optionally \
                     \"retry_after\"), \"delay\" or \"slow_answer\" with \"delay_ms\", \"drop\", \
                     \"drop_after_commit\", \"expire_url\", \"no_urls\", \"html_body\", \"stale_public\" or \"missing_public\"",
                    r.action
                ));
            }
        };
        let trigger = match (r.next, r.probability) {
            (Some(_), Some(_)) => return Err("give either \"next\" or \"probability\"".into()),
            (_, Some(p)) => FaultTrigger::Probability(p),
            (n, None) => FaultTrigger::Next(n.unwrap_or(1)),
        };
        FaultSpec {
            call: r.call,
            action,
            trigger,
        }
        .validate()
    }
}

impl From<&FaultSpec> for FaultRequest {
    fn from(spec: &FaultSpec) -> Self {
        let mut retry_after = None;
        let (action, status, delay_ms) = match &spec.action {
            FaultAction::Status(code) => ("status", Some(*code), None),
            FaultAction::StatusRetryAfter {
                status,
                retry_after: value,
            } => {
                retry_after = Some(value.clone());
                ("status", Some(*status), None)
            }
            FaultAction::Drop => ("drop", None, None),
            FaultAction::DropAfterCommit => ("drop_after_commit", None, None),
            FaultAction::Delay(d) => (
                "delay",
                None,
                Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
            FaultAction::SlowAnswer(d) => (
                "slow_answer",
                None,
                Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
            FaultAction::ExpireUrl => ("expire_url", None, None),
            FaultAction::NoPartUrls => ("no_urls", None, None),
            FaultAction::HtmlBody => ("html_body", None, None),
            FaultAction::StalePublic | FaultAction::MissingPublic => {
                (spec.action.name(), None, None)
            }
        };
        let (next, probability) = match spec.trigger {
            FaultTrigger::Next(n) => (Some(n), None),
            FaultTrigger::Probability(p) => (None, Some(p)),
        };
        FaultRequest {
            call: spec.call,
            action: action.into(),
            status,
            delay_ms,
            retry_after,
            next,
            probability,
        }
    }
}

/// One request as it arrived: which call, when, and the credentials it carried.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub call: CallKind,
    /// When the request's head arrived (before any injected delay or fault).
    pub at: std::time::Instant,
    /// The `Authorization` header as sent, if any.
    pub authorization: Option<String>,
}

/// One part PUT: which upload and part, who sent it, when it came and when it ended.
#[derive(Debug, Clone)]
pub struct PartRecord {
    pub upload_id: String,
    /// As the URL names it (a bad number included).
    pub part: String,
    /// The `User-Agent` header as sent, if any (a cluster's instances name themselves there).
    pub user_agent: Option<String>,
    /// When the request's head arrived.
    pub start: std::time::Instant,
    /// When the answer was given, or the request was dropped (a body cut short).
    pub end: std::time::Instant,
    /// The answer's status; `None` when the request ended without one (the connection or the
    /// body was cut).
    pub status: Option<u16>,
}

/// Every part PUT, in order of ending.
#[derive(Debug, Default)]
pub(crate) struct PartLog(Mutex<Vec<PartRecord>>);

impl PartLog {
    pub(crate) fn all(&self) -> Vec<PartRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Records a part PUT into the log when dropped: at its answer, or when the request is dropped
/// mid-body (the handler's future is dropped with it).
pub(crate) struct PartEntry {
    log: std::sync::Arc<super::Shared>,
    record: Option<PartRecord>,
}

impl PartEntry {
    pub(crate) fn start(
        shared: &std::sync::Arc<super::Shared>,
        upload_id: &str,
        part: &str,
        headers: &axum::http::HeaderMap,
    ) -> Self {
        let now = std::time::Instant::now();
        Self {
            log: shared.clone(),
            record: Some(PartRecord {
                upload_id: upload_id.to_owned(),
                part: part.to_owned(),
                user_agent: headers
                    .get(header::USER_AGENT)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                start: now,
                end: now,
                status: None,
            }),
        }
    }

    pub(crate) fn answered(&mut self, status: u16) {
        if let Some(r) = &mut self.record {
            r.status = Some(status);
        }
    }
}

impl Drop for PartEntry {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.end = std::time::Instant::now();
            self.log
                .parts
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(r);
        }
    }
}

/// Every counted request, in order of arrival.
#[derive(Debug, Default)]
pub(crate) struct RequestLog(Mutex<Vec<RequestRecord>>);

impl RequestLog {
    pub(crate) fn record(&self, call: CallKind, headers: &axum::http::HeaderMap) {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(RequestRecord {
                call,
                at: std::time::Instant::now(),
                authorization,
            });
    }

    pub(crate) fn all(&self) -> Vec<RequestRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// [`status_response`] with a `Retry-After` header.
pub(crate) fn with_retry_after(mut response: Response, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The answer of an [`FaultAction::NoPartUrls`] or [`FaultAction::HtmlBody`] fault, made from
/// the answer the handler gave: only a success is rewritten.
pub(crate) async fn rewrite(action: &FaultAction, response: Response) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut response = match action {
        FaultAction::NoPartUrls => {
            let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
                .await
                .unwrap_or_default();
            let mut json: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            if let Some(obj) = json.as_object_mut() {
                obj.insert("urls".into(), serde_json::Value::Array(Vec::new()));
            }
            let mut parts = parts;
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(json.to_string()))
        }
        _ => {
            let mut parts = parts;
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::ETAG);
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            Response::from_parts(parts, axum::body::Body::from("<html>"))
        }
    };
    mark_injected(&mut response);
    response
}

/// One counter per [`CallKind`].
#[derive(Debug, Default)]
pub(crate) struct CallCounters([AtomicU64; CallKind::ALL.len()]);

impl CallCounters {
    pub(crate) fn incr(&self, kind: CallKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, kind: CallKind) -> u64 {
        self.0[kind.index()].load(Ordering::Relaxed)
    }
}

/// A count of things in progress that remembers its peak.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    now: AtomicU64,
    max: AtomicU64,
}

impl Gauge {
    /// Counts one in; the guard counts it out when dropped.
    pub(crate) fn enter(&self) -> GaugeGuard<'_> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        GaugeGuard(self)
    }

    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

/// Held while a counted thing is in progress.
pub(crate) struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The faults waiting to fire, and the bandwidth cap. Shared by every connection.
#[derive(Debug, Default)]
pub struct Faults {
    queue: Mutex<Vec<FaultSpec>>,
    injected: CallCounters,
    /// Bytes per second each connection may read; 0 means unlimited.
    bandwidth: Arc<AtomicU64>,
}

impl Faults {
    /// Queues a fault. Several may be queued; a call fires the first one of its kind that
    /// triggers. A probability outside 0..=1 is clamped.
    pub fn inject(&self, call: CallKind, action: FaultAction, trigger: FaultTrigger) {
        self.add(FaultSpec {
            call,
            action,
            trigger,
        });
    }

    /// Queues a fault given as a [`FaultSpec`] (e.g. parsed from `--fault`).
    pub fn add(&self, mut spec: FaultSpec) {
        match &mut spec.trigger {
            FaultTrigger::Next(0) => return,
            FaultTrigger::Next(_) => {}
            // Out-of-range probabilities would make the random draw panic.
            FaultTrigger::Probability(p) if p.is_nan() => *p = 0.0,
            FaultTrigger::Probability(p) => *p = p.clamp(0.0, 1.0),
        }
        self.lock().push(spec);
    }

    /// Removes every queued fault (the bandwidth cap stays).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The faults still queued.
    pub fn pending(&self) -> Vec<FaultSpec> {
        self.lock().clone()
    }

    /// Caps the read rate of every connection, new and open ones, in bytes per second;
    /// `None` (or 0) lifts the cap.
    pub fn set_bandwidth_limit(&self, bytes_per_second: Option<u64>) {
        self.bandwidth
            .store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    /// The current cap in bytes per second.
    pub fn bandwidth_limit(&self) -> Option<u64> {
        Some(self.bandwidth.load(Ordering::Relaxed)).filter(|&b| b > 0)
    }

    /// How many faults of this kind have fired.
    pub fn injected(&self, kind: CallKind) -> u64 {
        self.injected.get(kind)
    }

    pub(crate) fn bandwidth_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bandwidth)
    }

    /// The action of the fault this call triggers, if any.
    pub(crate) fn take(&self, kind: CallKind) -> Option<FaultAction> {
        let mut queue = self.lock();
        let index = queue.iter().position(|spec| {
            spec.call == kind
                && match spec.trigger {
                    FaultTrigger::Next(_) => true,
                    FaultTrigger::Probability(p) => rand::random_bool(p),
                }
        })?;
        let action = queue[index].action.clone();
        match &mut queue[index].trigger {
            FaultTrigger::Next(n) if *n <= 1 => {
                queue.remove(index);
            }
            FaultTrigger::Next(n) => *n -= 1,
            FaultTrigger::Probability(_) => {}
        }
        drop(queue);
        self.injected.incr(kind);
        Some(action)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FaultSpec>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answer of an injected `Status` fault on an API call.
pub(crate) fn status_response(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match status.as_u16() {
        // What nginx in front of the API sends when the backend is away.
        502..=504 => {
            let title = match status.as_u16() {
                503 => "503 Service Temporarily Unavailable".to_owned(),
                504 => "504 Gateway Time-out".to_owned(),
                _ => format!(
                    "{} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
            };
            let page = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}\
                 </h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            (status, [(header::CONTENT_TYPE, "text/html")], page).into_response()
        }
        500 => super::error::ApiError::internal().into_response(),
        // What the API says when a token has expired or was revoked (with `WWW-Authenticate`).
        401 => super::error::ApiError::unauthorized("Incorrect authentication credentials.")
            .into_response(),
        _ => super::error::ApiError::new(status, status.canonical_reason().unwrap_or("Error"))
            .into_response(),
    };
    mark_injected(&mut response);
    response
}

/// Tags an answer produced by a fault, so that a human reading a capture knows it was staged.
pub(crate) fn mark_injected(response: &mut Response) {
    response
        .headers_mut()
        .insert("x-emulator-fault", HeaderValue::from_static("injected"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_specs() {
        let spec: FaultSpec = "put_part:503:next=2".parse().unwrap();
        assert_eq!(spec.call, CallKind::PutPart);
        assert_eq!(spec.action, FaultAction::Status(503));
        assert_eq!(spec.trigger, FaultTrigger::Next(2));

        let spec: FaultSpec = "complete:drop:p=0.1".parse().unwrap();
        assert_eq!(spec.action, FaultAction::Drop);
        assert_eq!(spec.trigger, FaultTrigger::Probability(0.1));

        let spec: FaultSpec = "create:delay=2s:next=1".parse().unwrap();
        assert_eq!(spec.action, FaultAction::Delay(Duration::from_secs(2)));
        let spec: FaultSpec = "get:delay:500ms".parse().unwrap();
        assert_eq!(spec.action, FaultAction::Delay(Duration::from_millis(500)));
        assert_eq!(spec.trigger, FaultTrigger::Next(1));

        let spec: FaultSpec = "abort:drop_after_commit".parse().unwrap();
        assert_eq!(spec.action, FaultAction::DropAfterCommit);
        assert_eq!(spec.to_string(), "abort:drop_after_commit:next=1");

        for bad in [
            "",
            "nope:500",
            "put_part",
            "put_part:teapot",
            "put_part:99",
            "put_part:500:p=2",
            "complete:expire_url",
            "create:delay=soon",
        ] {
            assert!(
                bad.parse::<FaultSpec>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn parses_the_retry_after_and_rewriting_faults() {
        let spec: FaultSpec = "create:429:retry_after=2".parse().unwrap();
        assert_eq!(
            spec.action,
            FaultAction::StatusRetryAfter {
                status: 429,
                retry_after: "2".into()
            }
        );
        assert_eq!(spec.to_string(), "create:429:retry_after=2:next=1");
        assert_eq!(
            spec.to_string().parse::<FaultSpec>().unwrap(),
            spec,
            "Display reads back"
        );
        let spec: FaultSpec = "create:no_urls".parse().unwrap();
        assert_eq!(spec.action, FaultAction::NoPartUrls);
        let spec: FaultSpec = "complete:html_body:next=2".parse().unwrap();
        assert_eq!(spec.action, FaultAction::HtmlBody);
        let spec: FaultSpec = "complete:stale_public:next=2".parse().unwrap();
        assert_eq!(spec.action, FaultAction::StalePublic);
        assert_eq!(spec.to_string().parse::<FaultSpec>().unwrap(), spec);
        let spec: FaultSpec = "complete:missing_public".parse().unwrap();
        assert_eq!(spec.action, FaultAction::MissingPublic);
        let back = serde_json::to_value(FaultRequest::from(&spec)).unwrap();
        assert_eq!(back["action"], "missing_public");
        for bad in [
            "complete:no_urls",
            "create:drop:retry_after=2",
            "download:stale_public",
            "create:missing_public",
        ] {
            assert!(bad.parse::<FaultSpec>().is_err(), "{bad:?}");
        }
        let r: FaultRequest = serde_json::from_str(
            r#"{"call":"put_part","action":"status","status":503,"retry_after":"Wed, 21 Oct 2015 07:28:00 GMT"}"#,
        )
        .unwrap();
        let spec = FaultSpec::try_from(r).unwrap();
        assert!(matches!(
            spec.action,
            FaultAction::StatusRetryAfter { status: 503, .. }
        ));
        let back = serde_json::to_value(FaultRequest::from(&spec)).unwrap();
        assert_eq!(back["retry_after"], "Wed, 21 Oct 2015 07:28:00 GMT");
    }

    #[test]
    fn admin_json_round_trips() {
        let r: FaultRequest = serde_json::from_str(
            r#"{"call":"get","action":"delay","delay_ms":500,"probability":0.5}"#,
        )
        .unwrap();
        let spec = FaultSpec::try_from(r).unwrap();
        assert_eq!(spec.action, FaultAction::Delay(Duration::from_millis(500)));
        assert_eq!(spec.trigger, FaultTrigger::Probability(0.5));
        let back = serde_json::to_value(FaultRequest::from(&spec)).unwrap();
        assert_eq!(back["call"], "get");

        let r: FaultRequest =
            serde_json::from_str(r#"{"call":"put_part","action":"status","next":2}"#).unwrap();
        assert!(FaultSpec::try_from(r).is_err(), "status without a code");
    }

    #[test]
    fn next_faults_fire_in_order_then_stop() {
        let faults = Faults::default();
        faults.inject(
            CallKind::Complete,
            FaultAction::Status(503),
            FaultTrigger::Next(2),
        );
        faults.inject(CallKind::Complete, FaultAction::Drop, FaultTrigger::Next(1));
        assert_eq!(faults.take(CallKind::Abort), None);
        assert_eq!(
            faults.take(CallKind::Complete),
            Some(FaultAction::Status(503))
        );
        assert_eq!(
            faults.take(CallKind::Complete),
            Some(FaultAction::Status(503))
        );
        assert_eq!(faults.take(CallKind::Complete), Some(FaultAction::Drop));
        assert_eq!(faults.take(CallKind::Complete), None);
        assert_eq!(faults.injected(CallKind::Complete), 3);

        faults.inject(
            CallKind::GetUpload,
            FaultAction::Drop,
            FaultTrigger::Probability(0.0),
        );
        assert_eq!(faults.take(CallKind::GetUpload), None);
        faults.clear();
        assert!(faults.pending().is_empty());
    }
}
