//! The object behind an asset's public `href`: a `HEAD` with a few bounded tries, and what it
//! serves judged against what was uploaded (docs/verify.md).

use std::fmt;
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use url::Url;

use crate::StacClient;

/// The waits between the tries of a public `HEAD` (three tries): right after a complete, a CDN
/// in front of the bucket may still answer 404 for a new object.
pub const PUBLIC_HEAD_WAITS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// What the uploaded file should look like at its public URL. A `None` is not checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicExpect {
    /// `Content-Length`: the bytes uploaded (the compressed size when compressed).
    pub size: Option<u64>,
    /// The file's SHA-256 in hex (the `file:checksum` digest), compared with
    /// `x-amz-meta-sha256` when the object has that header.
    pub sha256_hex: Option<String>,
    /// The `Content-Encoding` uploaded (`Some(None)`: none).
    pub content_encoding: Option<Option<String>>,
}

/// What a `HEAD` of a public URL found, after its tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicAnswer {
    /// An HTTP answer (the last one, when every try failed).
    Answered {
        /// Its status.
        status: u16,
        /// `Content-Length`.
        content_length: Option<u64>,
        /// `x-amz-meta-sha256`.
        sha256: Option<String>,
        /// `Content-Encoding`.
        content_encoding: Option<String>,
        /// `Cache-Control`.
        cache_control: Option<String>,
    },
    /// No answer: the connection or the TLS handshake failed, or it timed out (why).
    Unreachable(String),
}

/// Why a public URL does not serve the uploaded file: the `reason` label of
/// `stac_uploadd_verify_public_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PublicProblem {
    /// 404 or 403 (S3 answers 403 for a missing key to whom may not list the bucket).
    Missing,
    /// Another status than 200.
    Status,
    /// No answer.
    Unreachable,
    /// `Content-Length` is not the bytes uploaded.
    Size,
    /// `x-amz-meta-sha256` is not the file's SHA-256.
    Sha256,
    /// `Content-Encoding` is not the one uploaded.
    Encoding,
}

impl PublicProblem {
    /// Every problem, for metrics registered at zero.
    pub const ALL: [PublicProblem; 6] = [
        PublicProblem::Missing,
        PublicProblem::Status,
        PublicProblem::Unreachable,
        PublicProblem::Size,
        PublicProblem::Sha256,
        PublicProblem::Encoding,
    ];

    /// Its name in records, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PublicProblem::Missing => "missing",
            PublicProblem::Status => "status",
            PublicProblem::Unreachable => "unreachable",
            PublicProblem::Size => "size",
            PublicProblem::Sha256 => "sha256",
            PublicProblem::Encoding => "encoding",
        }
    }
}

impl fmt::Display for PublicProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem and what was expected and found, for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicMismatch {
    /// The problem.
    pub problem: PublicProblem,
    /// Expected and found, e.g. `Content-Length 12, expected 20`.
    pub detail: String,
}

impl PublicAnswer {
    /// The first way the answer differs from `expect`, if any; checked in the order status,
    /// size, sha256, encoding.
    pub fn judge(&self, expect: &PublicExpect) -> Option<PublicMismatch> {
        let mismatch = |problem, detail: String| Some(PublicMismatch { problem, detail });
        let (status, content_length, sha256, content_encoding) = match self {
            PublicAnswer::Unreachable(why) => {
                return mismatch(PublicProblem::Unreachable, format!("no answer: {why}"));
            }
            PublicAnswer::Answered {
                status,
                content_length,
                sha256,
                content_encoding,
                ..
            } => (*status, content_length, sha256, content_encoding),
        };
        match status {
            200 => {}
            403 | 404 => {
                return mismatch(
                    PublicProblem::Missing,
                    format!("HTTP {status}, expected 200: the object is not there"),
                );
            }
            _ => {
                return mismatch(
                    PublicProblem::Status,
                    format!("HTTP {status}, expected 200"),
                );
            }
        }
        if let Some(size) = expect.size
            && *content_length != Some(size)
        {
            let found = content_length.map_or_else(|| "none".to_owned(), |n| n.to_string());
            return mismatch(
                PublicProblem::Size,
                format!("Content-Length {found}, expected {size} (the bytes uploaded)"),
            );
        }
        if let (Some(want), Some(found)) = (&expect.sha256_hex, sha256)
            && !want.eq_ignore_ascii_case(found.trim())
        {
            return mismatch(
                PublicProblem::Sha256,
                format!("x-amz-meta-sha256 {found}, expected {want} (the file's SHA-256)"),
            );
        }
        if let Some(want) = &expect.content_encoding {
            let norm = |e: &Option<String>| {
                e.as_deref()
                    .map(|e| e.trim().to_ascii_lowercase())
                    .filter(|e| !e.is_empty() && e != "identity")
            };
            if norm(want) != norm(content_encoding) {
                let show = |e: Option<String>| e.unwrap_or_else(|| "none".to_owned());
                return mismatch(
                    PublicProblem::Encoding,
                    format!(
                        "Content-Encoding {}, expected {}",
                        show(norm(content_encoding)),
                        show(norm(want))
                    ),
                );
            }
        }
        None
    }

    /// The object's `Cache-Control` max-age in seconds (`s-maxage` is the CDN's own and wins
    /// for shared caches): how long a replaced file's old bytes may still be served.
    pub fn max_age(&self) -> Option<u64> {
        let PublicAnswer::Answered {
            cache_control: Some(cc),
            ..
        } = self
        else {
            return None;
        };
        let directive = |name: &str| {
            cc.split(',').find_map(|d| {
                let (k, v) = d.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                    .flatten()
            })
        };
        directive("s-maxage").or_else(|| directive("max-age"))
    }

    fn retryable(&self) -> bool {
        match self {
            PublicAnswer::Unreachable(_) => true,
            PublicAnswer::Answered { status, .. } => {
                matches!(status, 403 | 404 | 408 | 429 | 500..=599)
            }
        }
    }
}

fn answered(status: u16, headers: &HeaderMap) -> PublicAnswer {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    PublicAnswer::Answered {
        status,
        content_length: text(header::CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok()),
        sha256: text("x-amz-meta-sha256"),
        content_encoding: text(header::CONTENT_ENCODING.as_str()),
        cache_control: text(header::CACHE_CONTROL.as_str()),
    }
}

/// A transport failure for a person: what failed and the I/O cause, without the URL (reqwest's
/// Display repeats it) and without a proxy's password.
fn transport_text(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let detail = crate::error::source_chain(e);
    let text = if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    };
    crate::redact_passwords(&text)
}

impl StacClient {
    /// A `HEAD` of a public URL (an asset's `href`) through this client's proxy and CA
    /// settings, without the API's credentials: tried once, then again after each of `waits`
    /// while it fails in a way that may pass (no answer, 403, 404, 408, 429, 5xx).
    pub async fn head_public(&self, url: &Url, waits: &[Duration]) -> PublicAnswer {
        let mut waits = waits.iter();
        loop {
            let answer = match self
                .http()
                .head(url.clone())
                .timeout(self.request_timeout())
                .send()
                .await
            {
                Ok(r) => answered(r.status().as_u16(), r.headers()),
                Err(e) => PublicAnswer::Unreachable(transport_text(&e)),
            };
            match waits.next() {
                Some(wait) if answer.retryable() => {
                    tracing::debug!(url = %crate::redact_url(url.as_str()), answer = ?answer, "public HEAD failed; trying again");
                    tokio::time::sleep(*wait).await;
                }
                _ => return answer,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(len: u64, sha: Option<&str>, enc: Option<&str>) -> PublicAnswer {
        PublicAnswer::Answered {
            status: 200,
            content_length: Some(len),
            sha256: sha.map(str::to_owned),
            content_encoding: enc.map(str::to_owned),
            cache_control: Some("max-age=7200, public".into()),
        }
    }

    fn expect(len: u64, sha: &str, enc: Option<&str>) -> PublicExpect {
        PublicExpect {
            size: Some(len),
            sha256_hex: Some(sha.into()),
            content_encoding: Some(enc.map(str::to_owned)),
        }
    }

    fn problem(a: &PublicAnswer, e: &PublicExpect) -> Option<&'static str> {
        a.judge(e).map(|m| m.problem.as_str())
    }

    #[test]
    fn an_answer_is_judged_against_what_was_uploaded() {
        let e = expect(12, "ab", None);
        assert_eq!(problem(&ok(12, Some("AB"), None), &e), None);
        assert_eq!(
            problem(&ok(12, None, None), &e),
            None,
            "no header: not checked"
        );
        assert_eq!(problem(&ok(11, Some("ab"), None), &e), Some("size"));
        assert_eq!(problem(&ok(12, Some("cd"), None), &e), Some("sha256"));
        assert_eq!(
            problem(&ok(12, Some("ab"), Some("gzip")), &e),
            Some("encoding")
        );
        let gz = expect(12, "ab", Some("gzip"));
        assert_eq!(problem(&ok(12, Some("ab"), None), &gz), Some("encoding"));
        assert_eq!(problem(&ok(12, Some("ab"), Some("GZIP")), &gz), None);
        let status = |s| PublicAnswer::Answered {
            status: s,
            content_length: None,
            sha256: None,
            content_encoding: None,
            cache_control: None,
        };
        assert_eq!(problem(&status(404), &e), Some("missing"));
        assert_eq!(problem(&status(403), &e), Some("missing"));
        assert_eq!(problem(&status(500), &e), Some("status"));
        assert_eq!(
            problem(&PublicAnswer::Unreachable("refused".into()), &e),
            Some("unreachable")
        );
        let m = ok(11, Some("ab"), None).judge(&e).unwrap();
        assert!(
            m.detail.contains("11") && m.detail.contains("12"),
            "{}",
            m.detail
        );
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let with = |cc: &str| PublicAnswer::Answered {
            status: 200,
            content_length: None,
            sha256: None,
            content_encoding: None,
            cache_control: Some(cc.into()),
        };
        assert_eq!(with("max-age=7200, public").max_age(), Some(7200));
        assert_eq!(
            with("public, max-age=60, s-maxage=600").max_age(),
            Some(600)
        );
        assert_eq!(with("no-cache").max_age(), None);
        assert_eq!(with("max-age=soon").max_age(), None);
    }
}
