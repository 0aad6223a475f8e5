//! What every handler of the API and of the S3 part URLs takes from the request: the API version
//! of its path, its path parameters (as JSON errors), and the context of the call (the shared
//! state, the connection, the credentials). `api` and `s3` both use it; neither uses the other's
//! handlers, so there is no cycle between them.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::faults::{self, CallKind, FaultAction};
use super::server::ConnHandle;
use super::{EmulatorAuth, Shared};

/// The two API versions; they differ in the name of the checksum field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiVersion {
    V1,
    V09,
}

impl ApiVersion {
    pub(crate) fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "v1" => Ok(ApiVersion::V1),
            "v0.9" => Ok(ApiVersion::V09),
            _ => Err(ApiError::not_found("Not found")),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V09 => "v0.9",
        }
    }

    /// serializers utils.py `get_stac_version`.
    pub(crate) fn stac_version(self) -> &'static str {
        match self {
            ApiVersion::V1 => "1.0.0",
            ApiVersion::V09 => "0.9.0",
        }
    }

    pub(crate) fn checksum_field(self) -> &'static str {
        match self {
            ApiVersion::V1 => "file:checksum",
            ApiVersion::V09 => "checksum:multihash",
        }
    }
}

/// Path parameters as JSON errors instead of axum's plain-text rejections.
pub(crate) struct P<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(P(value)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// What every handler needs from the request besides its path and body.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: ConnHandle,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    /// A `stale_public` or `missing_public` fault this request triggered: the handler (a
    /// complete) publishes its object accordingly.
    pub(crate) public_fault: std::sync::OnceLock<FaultAction>,
}

impl FromRequestParts<Arc<Shared>> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Shared>) -> Result<Self, ApiError> {
        // Always there on connections of our accept loop.
        let conn = parts
            .extensions
            .get::<ConnHandle>()
            .cloned()
            .ok_or_else(ApiError::internal)?;
        Ok(Ctx {
            shared: Arc::clone(state),
            conn,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            public_fault: std::sync::OnceLock::new(),
        })
    }
}

impl Ctx {
    /// Runs a handler of a counted call: counts it, applies the fault it triggers, checks the
    /// credentials, and turns errors into answers.
    pub(crate) async fn call<F>(&self, kind: CallKind, handler: F) -> Response
    where
        F: Future<Output = Result<Response, ApiError>>,
    {
        self.shared.calls.incr(kind);
        self.shared.requests.record(kind, &self.headers);
        // The path only: a query may carry a secret.
        tracing::debug!(method = %self.method, path = self.uri.path(), call = %kind, "request");
        let mut drop_after_commit = false;
        let mut slow_answer = None;
        let mut rewrite = None;
        match self.shared.faults.take(kind) {
            None => {}
            Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(FaultAction::Status(code)) => return faults::status_response(code),
            Some(FaultAction::StatusRetryAfter {
                status,
                retry_after,
            }) => return faults::with_retry_after(faults::status_response(status), &retry_after),
            Some(FaultAction::Drop) => return self.conn.kill().await,
            Some(FaultAction::DropAfterCommit) => drop_after_commit = true,
            Some(FaultAction::SlowAnswer(delay)) => slow_answer = Some(delay),
            Some(FaultAction::ExpireUrl) => return faults::status_response(403),
            Some(action @ (FaultAction::NoPartUrls | FaultAction::HtmlBody)) => {
                rewrite = Some(action);
            }
            Some(action @ (FaultAction::StalePublic | FaultAction::MissingPublic)) => {
                let _ = self.public_fault.set(action);
            }
        }
        let response = self.run(handler).await;
        if drop_after_commit {
            return self.conn.kill().await;
        }
        if let Some(delay) = slow_answer {
            tokio::time::sleep(delay).await;
        }
        match rewrite {
            Some(action) => faults::rewrite(&action, response).await,
            None => response,
        }
    }

    /// Runs a handler of an uncounted call.
    pub(crate) async fn run<F>(&self, handler: F) -> Response
    where
        F: Future<Output = Result<Response, ApiError>>,
    {
        if !self.shared.latency.is_zero() {
            tokio::time::sleep(self.shared.latency).await;
        }
        if let Err(e) = self.authorize().await {
            return e.into_response();
        }
        handler.await.unwrap_or_else(IntoResponse::into_response)
    }

    /// Writes of the API need the configured credentials; reads and presigned URLs do not.
    async fn authorize(&self) -> Result<(), ApiError> {
        if matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
            || !self.uri.path().starts_with("/api/")
        {
            return Ok(());
        }
        let given = self
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let accepted = match (&self.shared.auth, given) {
            (EmulatorAuth::None, _) => true,
            (_, None) => {
                return Err(ApiError::unauthorized(
                    "Authentication credentials were not provided.",
                ));
            }
            (EmulatorAuth::Basic { username, password }, Some(given)) => {
                credentials(given, "Basic")
                    .and_then(|b64| STANDARD.decode(b64).ok())
                    .is_some_and(|pair| {
                        constant_time_eq(&pair, format!("{username}:{password}").as_bytes())
                    })
            }
            (EmulatorAuth::Token(token), Some(given)) => credentials(given, "Token")
                .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes())),
            (EmulatorAuth::Bearer(token), Some(given)) => credentials(given, "Bearer")
                .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes())),
            (EmulatorAuth::Cognito { .. }, Some(given)) => {
                match (credentials(given, "Bearer"), &self.shared.cognito) {
                    (Some(token), Some(checker)) if !token.is_empty() => {
                        checker.check(token).await?
                    }
                    _ => false,
                }
            }
        };
        if accepted {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "Invalid username/password or token.",
            ))
        }
    }

    pub(crate) fn raw_query(&self) -> Option<&str> {
        self.uri.query()
    }
}

/// The credentials of an `Authorization` header of this scheme (case-insensitive).
fn credentials<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.trim().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
