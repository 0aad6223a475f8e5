//! Every answer the API or S3 can give that is not success, as one typed error with a
//! classification the upload engine and the supervisor act on.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use super::types::{PartNumber, UploadId};

/// Which call of the protocol failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `POST A/uploads`: starting a multipart upload.
    CreateUpload,
    /// `GET A/uploads`: looking for an upload in progress.
    ListUploads,
    /// `GET A/uploads/{id}`: reading one upload.
    GetUpload,
    /// `GET A/uploads/{id}/parts`: the parts the server holds.
    ListParts,
    /// `PUT` of one part to its presigned URL.
    PutPart(PartNumber),
    /// `POST A/uploads/{id}/complete`.
    Complete,
    /// `POST A/uploads/{id}/abort`.
    Abort,
    /// `GET A`: reading the asset (its checksum, size and media type).
    ReadAsset,
    /// `GET` of an item, to learn whether it exists.
    ReadItem,
    /// `GET` of a collection, to learn whether it exists (`check --online`).
    ReadCollection,
    /// `PUT` of a missing item.
    CreateItem,
    /// `DELETE` of an item (one the run created and could not fill, or an old one).
    DeleteItem,
    /// `GET collections/{c}/items`: the items of a collection.
    ListItems,
    /// `GET collections/{c}/items/{i}/assets`: the assets of an item.
    ListAssets,
    /// `DELETE` of an asset.
    DeleteAsset,
    /// `PUT` of a missing asset.
    CreateAsset,
    /// A Cognito login or token renewal (its errors are reported against the API call that
    /// needed the token).
    Login,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateUpload => f.write_str("create upload"),
            Step::ListUploads => f.write_str("list uploads"),
            Step::GetUpload => f.write_str("get upload"),
            Step::ListParts => f.write_str("list parts"),
            Step::PutPart(n) => write!(f, "upload part {n}"),
            Step::Complete => f.write_str("complete upload"),
            Step::Abort => f.write_str("abort upload"),
            Step::ReadAsset => f.write_str("read asset"),
            Step::ReadItem => f.write_str("read item"),
            Step::ReadCollection => f.write_str("read collection"),
            Step::CreateItem => f.write_str("create item"),
            Step::DeleteItem => f.write_str("delete item"),
            Step::ListItems => f.write_str("list items"),
            Step::ListAssets => f.write_str("list assets"),
            Step::DeleteAsset => f.write_str("delete asset"),
            Step::CreateAsset => f.write_str("create asset"),
            Step::Login => f.write_str("log in"),
        }
    }
}

/// What a caller can do about an error (docs/protocol.md, "Errors").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// 502/503/504, 408, 429, timeouts, resets, incomplete bodies: try again after a wait.
    Retryable,
    /// Another upload is in progress on this asset (409 with its id, or the legacy 400 without).
    AlreadyInProgress {
        /// The blocking upload's id, when the answer names it.
        upload_id: Option<UploadId>,
    },
    /// Complete or abort of an upload that is no longer in progress (409), or S3's NoSuchUpload.
    NotInProgress,
    /// Any other 4xx: the request is wrong; retrying the same request will not help.
    RequestWrong,
    /// 500 (and other non-gateway 5xx): report it; a retry usually does not help.
    ServerBroken,
    /// 401/403 from the API: credentials wrong or expired.
    Auth,
    /// 403 on a presigned part URL: expired, or the signature does not match.
    UrlRejected {
        /// S3 said the URL has expired (`AccessDenied`, "Request has expired").
        expired: bool,
    },
}

/// What a class means for the caller is decided in one place, `crate::retry`.
impl ErrorClass {
    /// Every [`ErrorClass::name`], for metrics that show each class from the start.
    pub const NAMES: &'static [&'static str] = &[
        "retryable",
        "already_in_progress",
        "not_in_progress",
        "request_wrong",
        "server_broken",
        "auth",
        "url_rejected",
    ];

    /// A short stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::AlreadyInProgress { .. } => "already_in_progress",
            ErrorClass::NotInProgress => "not_in_progress",
            ErrorClass::RequestWrong => "request_wrong",
            ErrorClass::ServerBroken => "server_broken",
            ErrorClass::Auth => "auth",
            ErrorClass::UrlRejected { .. } => "url_rejected",
        }
    }
}

/// A failed call: which step, which request, what the server said, and what it means.
#[derive(Debug, thiserror::Error)]
pub struct StacError {
    /// Which call failed.
    pub step: Step,
    /// The HTTP method, for the message.
    pub method: &'static str,
    /// The request URL without its query string (presigned URLs carry secrets there).
    pub url: String,
    /// The HTTP status of the answer; `None` when no answer came (a transport failure, our own
    /// deadline) or a Cognito login failed.
    pub status: Option<StatusCode>,
    /// The server's own words: JSON `description`, S3 `Code: Message`, a gateway page's title,
    /// or the transport failure.
    pub description: String,
    /// What the caller can do about it.
    pub class: ErrorClass,
    /// How long the server asked to wait before the next try (`Retry-After` of a 429 or 503),
    /// in whole seconds (HTTP's resolution; a date is rounded up) from when its answer came.
    /// Seconds in a `u32` (136 years) keep the error small: it travels in every `Result`.
    pub retry_after: Option<u32>,
    #[source]
    /// The transport error, when the failure was one.
    pub source: Option<reqwest::Error>,
}

impl fmt::Display for StacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed ({} {}): ", self.step, self.method, self.url)?;
        match self.status {
            Some(s) => write!(f, "HTTP {}: {}", s.as_u16(), self.description)?,
            None => f.write_str(&self.description)?,
        }
        if let Some(s) = self.retry_after {
            write!(
                f,
                " (Retry-After: {})",
                humantime::format_duration(Duration::from_secs(u64::from(s)))
            )?;
        }
        Ok(())
    }
}

/// [`parse_retry_after`] in whole seconds, rounded up so that no wait comes out shorter than
/// asked, for [`StacError::retry_after`].
pub(crate) fn retry_after_secs(value: &str, now: SystemTime) -> Option<u32> {
    let d = parse_retry_after(value, now)?;
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Some(u32::try_from(secs).unwrap_or(u32::MAX))
}

/// The wait a `Retry-After` header asks for (RFC 9110, 10.2.3): delta-seconds, or an HTTP-date
/// taken against `now` (a date already past asks for no wait). Anything else is ignored: a
/// header we cannot read must not stop the retry the status calls for.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds asks for longer than anyone waits.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl StacError {
    /// S3 has no multipart upload of that id (the server passes S3's NoSuchUpload through as a
    /// 500, or it comes from S3 itself on a part URL).
    pub fn is_no_such_upload(&self) -> bool {
        self.description.contains("NoSuchUpload")
    }

    /// A success status whose body could not be understood (not JSON, not the object
    /// expected): the call may well have taken effect.
    pub fn is_unreadable_success(&self) -> bool {
        self.class == ErrorClass::ServerBroken && self.status.is_some_and(|s| s.is_success())
    }

    /// Classifies an HTTP answer that was not a success.
    pub fn from_answer(
        step: Step,
        method: &'static str,
        url: &str,
        status: StatusCode,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Self {
        let parsed = parse_body(content_type, body);
        // A blank description (`{"description": ""}`, `<Code></Code>`) says nothing: the
        // status's reason does (found by fuzzing).
        let description = parsed
            .description
            .clone()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("no description")
                    .to_owned()
            });
        let class = classify(step, status, &parsed);
        StacError {
            step,
            method,
            url: super::redact_url(url),
            status: Some(status),
            description,
            class,
            retry_after: None,
            source: None,
        }
    }

    /// Classifies a transport failure (no HTTP answer, or a body that broke off).
    pub fn from_transport(
        step: Step,
        method: &'static str,
        url: &str,
        err: reqwest::Error,
    ) -> Self {
        if err.is_redirect() {
            // Every try follows the same redirects around again: not worth a retry.
            return StacError {
                step,
                method,
                url: super::redact_url(url),
                status: None,
                description: "redirect loop: the server kept redirecting (more than 10 redirects)"
                    .to_owned(),
                class: ErrorClass::RequestWrong,
                retry_after: None,
                source: Some(err.without_url()),
            };
        }
        let class = if err.is_builder() || super::tls::is_certificate_refusal(&err) {
            // A refused server certificate: sending again cannot help until the trusted roots
            // change.
            ErrorClass::RequestWrong
        } else if err.is_decode() {
            ErrorClass::ServerBroken
        } else {
            // Timeouts, refused or reset connections, bodies cut short: all transient.
            ErrorClass::Retryable
        };
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else if err.is_body() || err.is_request() {
            "connection failed while sending"
        } else {
            "request failed"
        };
        // reqwest's Display repeats the full URL, query included: describe by the source chain
        // instead, which names the underlying I/O failure.
        let detail = source_chain(&err);
        StacError {
            step,
            method,
            url: super::redact_url(url),
            status: None,
            description: if detail.is_empty() {
                kind.to_owned()
            } else {
                format!("{kind}: {detail}")
            },
            class,
            retry_after: None,
            source: Some(err.without_url()),
        }
    }

    /// A request that was not sent because it is wrong as given (a body of the wrong shape):
    /// sending it again cannot help.
    pub fn request_refused(step: Step, method: &'static str, url: &str, what: String) -> Self {
        StacError {
            step,
            method,
            url: super::redact_url(url),
            status: None,
            description: what,
            class: ErrorClass::RequestWrong,
            retry_after: None,
            source: None,
        }
    }

    /// An answer with a success status whose body could not be understood.
    pub fn bad_answer(
        step: Step,
        method: &'static str,
        url: &str,
        status: StatusCode,
        what: String,
    ) -> Self {
        StacError {
            step,
            method,
            url: super::redact_url(url),
            status: Some(status),
            description: format!("unexpected answer: {what}"),
            class: ErrorClass::ServerBroken,
            retry_after: None,
            source: None,
        }
    }

    /// A call answered with a redirect it does not follow (a write: `POST`, `PUT`, `DELETE`).
    /// Sending it again goes to the same place: the URL is to be fixed.
    pub fn redirected(
        step: Step,
        method: &'static str,
        url: &str,
        status: StatusCode,
        location: Option<&str>,
    ) -> Self {
        let to = location.map_or_else(
            || "without a Location".to_owned(),
            |l| format!("to {}", without_query(l)),
        );
        StacError {
            step,
            method,
            url: super::redact_url(url),
            status: Some(status),
            description: format!(
                "redirected {to}: a {method} is not sent on to another address; is [server] url the API's own address (scheme, host and path)?"
            ),
            class: ErrorClass::RequestWrong,
            retry_after: None,
            source: None,
        }
    }

    /// A request cut off by our own deadline or stall watchdog.
    pub fn deadline(step: Step, method: &'static str, url: &str, what: String) -> Self {
        StacError {
            step,
            method,
            url: super::redact_url(url),
            status: None,
            description: what,
            class: ErrorClass::Retryable,
            retry_after: None,
            source: None,
        }
    }
}

/// A URL as shown, without its query (a presigned URL's signature is there) and password.
fn without_query(url: &str) -> String {
    let shown = super::redact_passwords(url);
    match shown.split_once('?') {
        Some((base, _)) => base.to_owned(),
        None => shown,
    }
}

/// The causes of a transport error, each once: reqwest's own text repeats the URL, query included.
pub(crate) fn source_chain(err: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.contains(&s) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// What could be read from an error body.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ParsedBody {
    /// Human-readable text.
    pub description: Option<String>,
    /// S3 error code (`BadDigest`, `AccessDenied`, ...), when the body was S3 XML.
    pub s3_code: Option<String>,
    /// `upload_id` of a JSON body (the blocking upload on 409).
    pub upload_id: Option<String>,
}

const MAX_DESCRIPTION: usize = 300;

fn truncate(mut s: String) -> String {
    if s.len() > MAX_DESCRIPTION {
        let mut cut = MAX_DESCRIPTION;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Reads an error body: API JSON, S3 XML, an HTML gateway page, or plain text.
pub(crate) fn parse_body(content_type: Option<&str>, body: &[u8]) -> ParsedBody {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return ParsedBody::default();
    }
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if (trimmed.starts_with('{') || ct.contains("json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed)
    {
        let description = match v.get("description") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) if !other.is_null() => Some(other.to_string()),
            // DRF validation errors come as {"field": ["message"]} without a wrapper.
            _ => Some(v.to_string()),
        };
        let upload_id = v
            .get("upload_id")
            .and_then(|u| u.as_str())
            .map(str::to_owned);
        return ParsedBody {
            description: description.map(truncate),
            s3_code: None,
            upload_id,
        };
    }
    if trimmed.starts_with("<?xml") || trimmed.starts_with("<Error") {
        #[derive(serde::Deserialize)]
        struct S3Error {
            #[serde(rename = "Code")]
            code: Option<String>,
            #[serde(rename = "Message")]
            message: Option<String>,
        }
        if let Ok(mut e) = quick_xml::de::from_str::<S3Error>(trimmed) {
            e.code = e.code.filter(|c| !c.trim().is_empty());
            e.message = e.message.filter(|m| !m.trim().is_empty());
            let description = match (&e.code, &e.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => "S3 error without code".to_owned(),
            };
            return ParsedBody {
                description: Some(truncate(description)),
                s3_code: e.code,
                upload_id: None,
            };
        }
    }
    if ct.contains("html") || trimmed.starts_with('<') {
        return ParsedBody {
            description: Some(truncate(html_summary(trimmed))),
            ..ParsedBody::default()
        };
    }
    ParsedBody {
        description: Some(truncate(trimmed.lines().next().unwrap_or("").to_owned())),
        ..ParsedBody::default()
    }
}

/// The `<title>` of an HTML page, or its text without tags, whitespace collapsed.
fn html_summary(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    if let (Some(a), Some(b)) = (lower.find("<title>"), lower.find("</title>"))
        && b > a + 7
    {
        let t = html[a + 7..b].trim();
        if !t.is_empty() {
            return format!("gateway page: {t}");
        }
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("gateway page: {text}")
}

fn classify(step: Step, status: StatusCode, body: &ParsedBody) -> ErrorClass {
    let code = status.as_u16();
    let in_progress_text = body
        .description
        .as_deref()
        .is_some_and(|d| d.contains("Upload already in progress"));
    match (step, code) {
        (_, 502..=504) | (_, 408) | (_, 429) => ErrorClass::Retryable,
        (Step::PutPart(_), 403) => ErrorClass::UrlRejected {
            expired: body.s3_code.as_deref() == Some("AccessDenied")
                && body
                    .description
                    .as_deref()
                    .is_some_and(|d| d.contains("expired")),
        },
        (Step::PutPart(_), 404) if body.s3_code.as_deref() == Some("NoSuchUpload") => {
            ErrorClass::NotInProgress
        }
        (Step::CreateUpload, 409) | (Step::CreateUpload, 400)
            if in_progress_text || body.upload_id.is_some() =>
        {
            ErrorClass::AlreadyInProgress {
                upload_id: body.upload_id.clone().map(UploadId),
            }
        }
        (Step::Complete | Step::Abort, 409) => ErrorClass::NotInProgress,
        (_, 401) | (_, 403) => ErrorClass::Auth,
        (_, 400..=499) => ErrorClass::RequestWrong,
        _ => ErrorClass::ServerBroken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(step: Step, status: u16, ct: &str, body: &str) -> StacError {
        StacError::from_answer(
            step,
            "POST",
            "http://h/x?X-Amz-Signature=secret",
            StatusCode::from_u16(status).unwrap(),
            Some(ct),
            body.as_bytes(),
        )
    }

    #[test]
    fn in_progress_409_carries_the_blocking_id() {
        let e = err(
            Step::CreateUpload,
            409,
            "application/json",
            r#"{"code":409,"description":"Upload already in progress","upload_id":"abc"}"#,
        );
        assert_eq!(
            e.class,
            ErrorClass::AlreadyInProgress {
                upload_id: Some(UploadId("abc".into()))
            }
        );
    }

    #[test]
    fn legacy_400_in_progress_has_no_id() {
        let e = err(
            Step::CreateUpload,
            400,
            "application/json",
            r#"{"code":400,"description":"Upload already in progress"}"#,
        );
        assert_eq!(e.class, ErrorClass::AlreadyInProgress { upload_id: None });
    }

    /// Found by the `answers` fuzz target: a blank description made an error that ended in
    /// "HTTP 400: " and said nothing.
    #[test]
    fn a_blank_description_gives_the_status_reason() {
        let json = err(
            Step::Complete,
            400,
            "application/json",
            r#"{"code":400,"description":"  "}"#,
        );
        assert_eq!(json.description, "Bad Request");
        let xml = err(
            Step::PutPart(PartNumber(2)),
            403,
            "",
            "<Error><Code></Code></Error>",
        );
        assert_eq!(xml.description, "S3 error without code");
        let xml = err(
            Step::PutPart(PartNumber(2)),
            403,
            "",
            "<Error><Code> </Code><Message>m</Message></Error>",
        );
        assert_eq!(xml.description, "m");
    }

    #[test]
    fn other_create_400_is_request_wrong() {
        let e = err(
            Step::CreateUpload,
            400,
            "application/json",
            r#"{"code":400,"description":{"md5_parts":["Missing part 2"]}}"#,
        );
        assert_eq!(e.class, ErrorClass::RequestWrong);
        assert!(
            e.description.contains("Missing part 2"),
            "{}",
            e.description
        );
    }

    #[test]
    fn gateway_html_is_retryable_with_title() {
        let e = err(
            Step::Complete,
            502,
            "text/html",
            "<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>",
        );
        assert_eq!(e.class, ErrorClass::Retryable);
        assert_eq!(e.description, "gateway page: 502 Bad Gateway");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn s3_xml_codes() {
        let expired = err(
            Step::PutPart(PartNumber(1)),
            403,
            "application/xml",
            "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        );
        assert_eq!(expired.class, ErrorClass::UrlRejected { expired: true });
        let digest = err(
            Step::PutPart(PartNumber(2)),
            400,
            "application/xml",
            "<Error><Code>BadDigest</Code><Message>The Content-MD5 you specified did not match</Message></Error>",
        );
        assert_eq!(digest.class, ErrorClass::RequestWrong);
        assert!(digest.description.starts_with("BadDigest: "));
    }

    #[test]
    fn complete_409_and_500() {
        let e = err(
            Step::Complete,
            409,
            "application/json",
            r#"{"code":409,"description":"No upload in progress"}"#,
        );
        assert_eq!(e.class, ErrorClass::NotInProgress);
        let e = err(
            Step::Abort,
            500,
            "application/json",
            r#"{"code":500,"description":"NoSuchUpload"}"#,
        );
        assert_eq!(e.class, ErrorClass::ServerBroken);
        let e = err(
            Step::ReadAsset,
            401,
            "application/json",
            r#"{"code":401,"description":"nope"}"#,
        );
        assert_eq!(e.class, ErrorClass::Auth);
        let e = err(Step::ReadAsset, 503, "", "");
        assert_eq!(e.description, "Service Unavailable");
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_reads_an_http_date_against_now() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:42 GMT", now),
            Some(Duration::from_secs(5)),
            "a date in the future: the time until it"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
            Some(Duration::ZERO),
            "a date already past: no wait"
        );
        // The obsolete forms RFC 9110 still asks recipients to accept.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:38 GMT", now),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn retry_after_in_seconds_never_rounds_a_wait_down() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let earlier = now - Duration::from_millis(400);
        assert_eq!(
            retry_after_secs("Sun, 06 Nov 1994 08:49:39 GMT", earlier),
            Some(3),
            "2.4 s is 3 s"
        );
        assert_eq!(retry_after_secs("7", now), Some(7));
        assert_eq!(retry_after_secs("99999999999", now), Some(u32::MAX));
        assert_eq!(retry_after_secs("soon", now), None);
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        let now = SystemTime::now();
        for bad in [
            "",
            " ",
            "-1",
            "1.5",
            "soon",
            "2s",
            "Sun, 06 Nov 1994",
            "0x10",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn an_error_shows_the_wait_the_server_asked_for() {
        let mut e = err(Step::CreateUpload, 429, "application/json", "{}");
        e.retry_after = Some(2);
        assert!(e.to_string().ends_with("(Retry-After: 2s)"), "{e}");
    }
}
