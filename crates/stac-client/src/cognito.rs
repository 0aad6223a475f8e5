//! Access tokens from an AWS Cognito user pool, for `Authorization: Bearer` on the v1 API.
//!
//! One provider per client, shared by every clone of it (so by every job): the session lock is
//! held across a login, so concurrent callers that find no valid token wait for the one login in
//! flight and reuse its token instead of logging in again. A token is renewed with its refresh
//! token before it expires; a refused refresh token falls back to a password login.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::auth::CognitoAuth;
use super::body::{BodyCut, read_body, size};
use super::error::{ErrorClass, Step};
use crate::retry::{self, Classified};

/// `X-Amz-Target` of the one call we make.
const INITIATE_AUTH: &str = "AWSCognitoIdentityProviderService.InitiateAuth";
/// Cognito's documented default life of an access token, for an answer that leaves it out.
const DEFAULT_EXPIRES_IN: u64 = 3600;
/// A token this close to its expiry is not handed out even when renewal is failing.
const EXPIRY_SAFETY: Duration = Duration::from_secs(30);
/// The most that is read of a Cognito answer: 256 KiB. An `InitiateAuth` answer holds three
/// tokens of a few KiB each (the ID and access JWTs grow with the user's groups and attributes,
/// the refresh token is under 2 KiB), an error answer a type and a sentence. A longer answer is
/// not Cognito's: it is cut and fails as a bad answer, not retried.
const ANSWER_LIMIT: usize = 256 * 1024;
/// Error types Cognito answers with a 4xx status that still mean "try again later".
const TRANSIENT_TYPES: [&str; 4] = [
    "TooManyRequestsException",
    "LimitExceededException",
    "InternalErrorException",
    "ThrottlingException",
];

/// The two flows of `InitiateAuth` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Password,
    Refresh,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::Password => "USER_PASSWORD_AUTH",
            Flow::Refresh => "REFRESH_TOKEN_AUTH",
        }
    }
}

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Cognito {flow} for user {username:?} at {endpoint}: {kind}")]
pub(crate) struct CognitoError {
    flow: &'static str,
    username: String,
    endpoint: String,
    kind: CognitoErrorKind,
}

#[derive(Debug, Clone, thiserror::Error)]
enum CognitoErrorKind {
    /// The login needs an answer to a challenge (new password, MFA) that a daemon cannot give.
    #[error(
        "Cognito answered with the challenge {0}, which stac-uploadd cannot answer: resolve it for this user (e.g. set a permanent password, or turn MFA off for this machine user), then try again"
    )]
    Challenge(String),
    /// Cognito refused: wrong password, unknown user or client, a flow the app client forbids.
    #[error("refused (HTTP {status}): {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// Cognito could not be reached, or answered with a transient failure.
    #[error("{0}")]
    Unavailable(String),
    /// Cognito's TLS certificate was refused: no retry helps until the trusted roots change.
    #[error("{0}; if a proxy inspects TLS, add its CA with [server] ca_file")]
    Untrusted(String),
    /// A success status with a body that is not a Cognito answer.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
}

impl CognitoError {
    /// How the API call that needed the token should treat this failure.
    pub(crate) fn class(&self) -> ErrorClass {
        match self.kind {
            CognitoErrorKind::Unavailable(_) => ErrorClass::Retryable,
            CognitoErrorKind::Challenge(_) | CognitoErrorKind::Refused { .. } => ErrorClass::Auth,
            CognitoErrorKind::BadAnswer(_) => ErrorClass::ServerBroken,
            CognitoErrorKind::Untrusted(_) => ErrorClass::RequestWrong,
        }
    }
}

/// A login's failure: what to do about it is the table's word for its class.
impl Classified for CognitoError {
    fn action(&self) -> retry::Action {
        retry::action(&self.class(), Step::Login)
    }
}

/// A token handed to one request, with the generation that names it in [`CognitoProvider::invalidate`].
pub(crate) struct Bearer {
    pub(crate) token: SecretString,
    pub(crate) generation: u64,
}

struct AccessToken {
    token: SecretString,
    generation: u64,
    renew_at: Instant,
    expires_at: Instant,
}

impl AccessToken {
    fn bearer(&self) -> Bearer {
        Bearer {
            token: self.token.clone(),
            generation: self.generation,
        }
    }
}

#[derive(Default)]
struct Session {
    access: Option<AccessToken>,
    refresh: Option<SecretString>,
    generation: u64,
    /// The failure of the last attempt, handed to callers that waited for it.
    last_error: Option<CognitoError>,
}

/// Logs in to Cognito and keeps one access token fresh for all clones of a client.
pub(crate) struct CognitoProvider {
    http: reqwest::Client,
    auth: CognitoAuth,
    timeout: Duration,
    session: Mutex<Session>,
    /// Attempts to get a token from Cognito that have ended (read before taking the lock).
    completed: AtomicU64,
}

impl CognitoProvider {
    pub(crate) fn new(http: reqwest::Client, auth: CognitoAuth, timeout: Duration) -> Self {
        CognitoProvider {
            http,
            auth,
            timeout,
            session: Mutex::new(Session::default()),
            completed: AtomicU64::new(0),
        }
    }

    /// A valid access token: the current one, or a renewed one when it is due.
    pub(crate) async fn token(&self) -> Result<Bearer, CognitoError> {
        let completed_before = self.completed.load(Ordering::SeqCst);
        let mut session = self.session.lock().await;
        if let Some(access) = &session.access
            && Instant::now() < access.renew_at
        {
            return Ok(access.bearer());
        }
        // An attempt ended while we waited for the lock, and failed: share its outcome rather
        // than sending the same refused password once per waiting request.
        if self.completed.load(Ordering::SeqCst) != completed_before
            && let Some(e) = session.last_error.clone()
        {
            return still_valid(&session, e);
        }
        let result = self.renew(&mut session).await;
        self.completed.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(bearer) => {
                session.last_error = None;
                Ok(bearer)
            }
            Err(e) => {
                session.last_error = Some(e.clone());
                let outcome = still_valid(&session, e);
                if let (Ok(_), Some(e)) = (&outcome, &session.last_error) {
                    warn!(error = %e, "cognito: renewal failed; using the current token until it expires");
                }
                outcome
            }
        }
    }

    /// Forgets the token of `generation` after the API refused it; the next call renews. A
    /// token renewed meanwhile by another request is kept.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut session = self.session.lock().await;
        if session
            .access
            .as_ref()
            .is_some_and(|a| a.generation == generation)
        {
            debug!("cognito: the API refused the access token; it will be renewed");
            session.access = None;
        }
    }

    /// Renews with the refresh token if there is one, else (or if it is refused) logs in.
    async fn renew(&self, session: &mut Session) -> Result<Bearer, CognitoError> {
        if let Some(refresh) = session.refresh.clone() {
            match self.initiate(Flow::Refresh, &refresh).await {
                Ok(result) => return Ok(self.store(session, result, Flow::Refresh)),
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    // Revoked or expired refresh token (sign-out, password change, 30 days).
                    info!(error = %e, "cognito: refresh token refused; logging in again");
                    session.refresh = None;
                }
            }
        }
        let result = self.initiate(Flow::Password, &self.auth.password).await?;
        Ok(self.store(session, result, Flow::Password))
    }

    fn store(&self, session: &mut Session, result: AuthResult, flow: Flow) -> Bearer {
        session.generation += 1;
        let life = Duration::from_secs(result.expires_in);
        let delay = renewal_delay(life, self.auth.renew_margin);
        let access = AccessToken {
            token: result.access_token,
            generation: session.generation,
            renew_at: result.requested_at + delay,
            expires_at: result.requested_at + life,
        };
        // REFRESH_TOKEN_AUTH answers usually carry no new refresh token: keep the old one.
        if let Some(refresh) = result.refresh_token {
            session.refresh = Some(refresh);
        }
        match flow {
            Flow::Password => info!(
                user = %self.auth.username,
                expires_in_s = result.expires_in,
                renew_in_s = delay.as_secs(),
                "cognito: logged in"
            ),
            Flow::Refresh => debug!(
                expires_in_s = result.expires_in,
                renew_in_s = delay.as_secs(),
                "cognito: access token renewed"
            ),
        }
        let bearer = access.bearer();
        session.access = Some(access);
        bearer
    }

    async fn initiate(
        &self,
        flow: Flow,
        secret: &SecretString,
    ) -> Result<AuthResult, CognitoError> {
        let params = match flow {
            Flow::Password => json!({
                "USERNAME": self.auth.username,
                "PASSWORD": secret.expose_secret(),
            }),
            Flow::Refresh => json!({ "REFRESH_TOKEN": secret.expose_secret() }),
        };
        let body = json!({
            "AuthFlow": flow.name(),
            "ClientId": self.auth.client_id,
            "AuthParameters": params,
        });
        let err = |kind| CognitoError {
            flow: flow.name(),
            username: self.auth.username.clone(),
            endpoint: super::redact_url(self.auth.endpoint.as_str()),
            kind,
        };
        let requested_at = Instant::now();
        let mut resp = self
            .http
            .post(self.auth.endpoint.clone())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/x-amz-json-1.1")
            .header("X-Amz-Target", INITIATE_AUTH)
            .body(serde_json::to_vec(&body).expect("a JSON value serializes"))
            .send()
            .await
            .map_err(|e| err(unreachable(&e)))?;
        let status = resp.status();
        let header_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let read = read_body(
            &mut resp,
            ANSWER_LIMIT,
            requested_at + self.timeout,
            self.timeout,
        )
        .await;
        debug!(
            flow = flow.name(),
            status = status.as_u16(),
            elapsed_ms = requested_at.elapsed().as_millis() as u64,
            "cognito request"
        );
        let bytes = match read {
            Ok(b) if b.complete || !status.is_success() => b.bytes,
            Ok(_) => {
                return Err(err(CognitoErrorKind::BadAnswer(format!(
                    "the answer exceeds {}: cut after {}",
                    size(ANSWER_LIMIT),
                    size(ANSWER_LIMIT)
                ))));
            }
            Err(BodyCut::Deadline { within, partial }) => {
                return Err(err(CognitoErrorKind::Unavailable(format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    BodyCut::deadline_text(within, partial.len())
                ))));
            }
            Err(BodyCut::Transport(e)) => return Err(err(unreachable(&e))),
        };
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            return Err(err(failure(status, header_type, parsed.as_ref())));
        }
        let Some(v) = parsed else {
            return Err(err(CognitoErrorKind::BadAnswer("not JSON".into())));
        };
        match v.get("AuthenticationResult") {
            Some(r) => {
                let access_token = r
                    .get("AccessToken")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| err(CognitoErrorKind::BadAnswer("no AccessToken".into())))?;
                Ok(AuthResult {
                    access_token: SecretString::from(access_token),
                    expires_in: r
                        .get("ExpiresIn")
                        .and_then(Value::as_u64)
                        .unwrap_or(DEFAULT_EXPIRES_IN),
                    refresh_token: r
                        .get("RefreshToken")
                        .and_then(Value::as_str)
                        .map(SecretString::from),
                    requested_at,
                })
            }
            None => match v.get("ChallengeName").and_then(Value::as_str) {
                Some(challenge) => Err(err(CognitoErrorKind::Challenge(challenge.to_owned()))),
                None => Err(err(CognitoErrorKind::BadAnswer(
                    "neither AuthenticationResult nor ChallengeName".into(),
                ))),
            },
        }
    }
}

/// A renewal failed with `e`: a transient failure must not stop uploads while the token in hand
/// is still good, so that token is handed out until shortly before it expires.
fn still_valid(session: &Session, e: CognitoError) -> Result<Bearer, CognitoError> {
    match &session.access {
        Some(access) if e.is_retryable() && Instant::now() + EXPIRY_SAFETY < access.expires_at => {
            Ok(access.bearer())
        }
        _ => Err(e),
    }
}

/// What a successful `InitiateAuth` gave.
struct AuthResult {
    access_token: SecretString,
    expires_in: u64,
    refresh_token: Option<SecretString>,
    /// When the request was sent: the token's life is counted from there, to be safe.
    requested_at: Instant,
}

/// How long after issue a token of this life is renewed: at 80% of its life, or `margin` before
/// it expires, whichever comes first.
pub(crate) fn renewal_delay(life: Duration, margin: Duration) -> Duration {
    life.mul_f64(0.8).min(life.saturating_sub(margin))
}

/// Reads Cognito's error answer: `{"__type": "...#NotAuthorizedException", "message": "..."}`
/// (or the type in `X-Amzn-ErrorType`).
fn failure(
    status: StatusCode,
    header_type: Option<String>,
    body: Option<&Value>,
) -> CognitoErrorKind {
    let body_type = body
        .and_then(|v| v.get("__type"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let code = body_type
        .or(header_type)
        .map(|t| {
            // "com.amazonaws...#NotAuthorizedException" and "NotAuthorizedException:http://..."
            let t = t.rsplit('#').next().unwrap_or(&t);
            t.split(':').next().unwrap_or(t).to_owned()
        })
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let message = body
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if status.is_server_error() || TRANSIENT_TYPES.contains(&code.as_str()) {
        CognitoErrorKind::Unavailable(format!("HTTP {}: {code}: {message}", status.as_u16()))
    } else {
        CognitoErrorKind::Refused {
            status: status.as_u16(),
            code,
            message,
        }
    }
}

/// A transport failure: a refused certificate, or something that may pass if tried again.
fn unreachable(err: &reqwest::Error) -> CognitoErrorKind {
    if super::tls::is_certificate_refusal(err) {
        CognitoErrorKind::Untrusted(transport(err))
    } else {
        CognitoErrorKind::Unavailable(transport(err))
    }
}

/// A transport failure, described by its cause chain (reqwest's own text repeats the URL).
fn transport(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    match super::error::source_chain(err) {
        detail if detail.is_empty() => kind.to_owned(),
        detail => format!("{kind}: {}", super::redact_passwords(&detail)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::*;
    use crate::DEFAULT_RENEW_MARGIN;

    #[test]
    fn renewal_comes_at_80_percent_or_the_margin_whichever_is_sooner() {
        let m5 = Duration::from_secs(300);
        // One hour: 5 min before expiry (55 min) is later than 80% (48 min).
        assert_eq!(
            renewal_delay(Duration::from_secs(3600), m5),
            Duration::from_secs(2880)
        );
        // Two hours: 80% is 96 min, the margin says 115 min: 96 min.
        assert_eq!(
            renewal_delay(Duration::from_secs(7200), m5),
            Duration::from_secs(5760)
        );
        // Five minutes of life: renew at once.
        assert_eq!(renewal_delay(Duration::from_secs(300), m5), Duration::ZERO);
        // A margin as long as the life: renew before every use.
        assert_eq!(
            renewal_delay(Duration::from_secs(60), Duration::from_secs(3600)),
            Duration::ZERO
        );
    }

    #[test]
    fn cognito_error_types_are_classified() {
        let refused = failure(
            StatusCode::BAD_REQUEST,
            None,
            Some(
                &json!({"__type": "NotAuthorizedException", "message": "Incorrect username or password."}),
            ),
        );
        assert!(
            matches!(&refused, CognitoErrorKind::Refused { code, .. } if code == "NotAuthorizedException")
        );
        let throttled = failure(
            StatusCode::BAD_REQUEST,
            Some("TooManyRequestsException:http://internal".into()),
            None,
        );
        assert!(
            matches!(throttled, CognitoErrorKind::Unavailable(_)),
            "{throttled}"
        );
        let prefixed = failure(
            StatusCode::BAD_REQUEST,
            None,
            Some(&json!({"__type": "com.amazonaws.cognito#UserNotFoundException"})),
        );
        assert!(
            prefixed.to_string().contains(": UserNotFoundException:"),
            "{prefixed}"
        );
        let down = failure(StatusCode::BAD_GATEWAY, None, None);
        assert!(matches!(down, CognitoErrorKind::Unavailable(_)));
    }

    /// A stand-in Cognito that answers from a script and remembers what it was asked.
    struct Stub {
        url: url::Url,
        calls: Arc<std::sync::Mutex<Vec<Value>>>,
        _task: tokio::task::JoinHandle<()>,
    }

    async fn stub(answer: fn(&Value, usize) -> (StatusCode, Value)) -> Stub {
        let calls: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let n = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::clone(&calls);
        let app = Router::new().route(
            "/",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let recorded = Arc::clone(&recorded);
                let n = Arc::clone(&n);
                async move {
                    assert_eq!(headers["x-amz-target"], INITIATE_AUTH);
                    assert_eq!(headers["content-type"], "application/x-amz-json-1.1");
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    recorded.lock().unwrap().push(v.clone());
                    // A little time in flight, so that concurrent callers really overlap.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let (status, answer) = answer(&v, n.fetch_add(1, Ordering::SeqCst));
                    (status, axum::Json(answer))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Stub {
            url,
            calls,
            _task: task,
        }
    }

    fn provider(url: &url::Url, margin: Duration) -> CognitoProvider {
        let auth = CognitoAuth::new(
            "machine-user",
            SecretString::from("s3cret-Passw0rd"),
            "client-1",
            "eu-central-1",
        )
        .with_endpoint(url.clone())
        .with_renew_margin(margin);
        CognitoProvider::new(reqwest::Client::new(), auth, Duration::from_secs(5))
    }

    fn ok(token: &str, refresh: Option<&str>) -> (StatusCode, Value) {
        let mut r = json!({"AccessToken": token, "ExpiresIn": 3600, "TokenType": "Bearer"});
        if let Some(refresh) = refresh {
            r["RefreshToken"] = json!(refresh);
        }
        (StatusCode::OK, json!({ "AuthenticationResult": r }))
    }

    fn flows(stub: &Stub) -> Vec<String> {
        stub.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c["AuthFlow"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_login() {
        let s = stub(|_, n| ok(&format!("access-{n}"), Some("refresh"))).await;
        let p = Arc::new(provider(&s.url, DEFAULT_RENEW_MARGIN));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let p = Arc::clone(&p);
                tokio::spawn(
                    async move { p.token().await.map(|b| b.token.expose_secret().to_owned()) },
                )
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "access-0");
        }
        assert_eq!(flows(&s), ["USER_PASSWORD_AUTH"]);
        let body = &s.calls.lock().unwrap()[0];
        assert_eq!(body["ClientId"], "client-1");
        assert_eq!(body["AuthParameters"]["USERNAME"], "machine-user");
    }

    #[tokio::test]
    async fn a_due_token_is_refreshed_and_a_refused_refresh_falls_back_to_the_password() {
        // Script: login, refresh ok, refresh refused, login again.
        let s = stub(|v, n| match (v["AuthFlow"].as_str().unwrap(), n) {
            ("USER_PASSWORD_AUTH", _) => ok(&format!("access-{n}"), Some("refresh-1")),
            ("REFRESH_TOKEN_AUTH", 1) => {
                assert_eq!(v["AuthParameters"]["REFRESH_TOKEN"], "refresh-1");
                ok("access-1", None)
            }
            _ => (
                StatusCode::BAD_REQUEST,
                json!({"__type": "NotAuthorizedException", "message": "Refresh Token has been revoked"}),
            ),
        })
        .await;
        // A margin longer than the life: every call renews.
        let p = provider(&s.url, Duration::from_secs(7200));
        let t = |b: Bearer| b.token.expose_secret().to_owned();
        assert_eq!(t(p.token().await.unwrap()), "access-0");
        assert_eq!(t(p.token().await.unwrap()), "access-1");
        assert_eq!(t(p.token().await.unwrap()), "access-3");
        assert_eq!(
            flows(&s),
            [
                "USER_PASSWORD_AUTH",
                "REFRESH_TOKEN_AUTH",
                "REFRESH_TOKEN_AUTH",
                "USER_PASSWORD_AUTH"
            ]
        );
    }

    #[tokio::test]
    async fn invalidate_forgets_only_the_refused_token() {
        let s = stub(|_, n| ok(&format!("access-{n}"), None)).await;
        let p = provider(&s.url, DEFAULT_RENEW_MARGIN);
        let first = p.token().await.unwrap();
        p.invalidate(first.generation).await;
        let second = p.token().await.unwrap();
        assert_eq!(second.token.expose_secret(), "access-1");
        // A late 401 for the old token must not throw the new one away.
        p.invalidate(first.generation).await;
        assert_eq!(p.token().await.unwrap().generation, second.generation);
        assert_eq!(flows(&s).len(), 2);
    }

    #[tokio::test]
    async fn challenges_refusals_and_outages_are_told_apart() {
        let s = stub(|_, _| {
            (
                StatusCode::OK,
                json!({"ChallengeName": "SOFTWARE_TOKEN_MFA", "Session": "sess-secret"}),
            )
        })
        .await;
        let e = provider(&s.url, DEFAULT_RENEW_MARGIN)
            .token()
            .await
            .err()
            .unwrap();
        assert_eq!(e.class(), ErrorClass::Auth);
        let text = e.to_string();
        assert!(
            text.contains("SOFTWARE_TOKEN_MFA") && text.contains("Cognito"),
            "{text}"
        );
        assert!(
            !text.contains("sess-secret") && !text.contains("s3cret"),
            "{text}"
        );

        let s = stub(|_, _| (StatusCode::SERVICE_UNAVAILABLE, json!({}))).await;
        let e = provider(&s.url, DEFAULT_RENEW_MARGIN)
            .token()
            .await
            .err()
            .unwrap();
        assert_eq!(e.class(), ErrorClass::Retryable, "{e}");

        // Nothing listens on this port any more.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", l.local_addr().unwrap())
                .parse()
                .unwrap()
        };
        let e = provider(&closed, DEFAULT_RENEW_MARGIN)
            .token()
            .await
            .err()
            .unwrap();
        assert_eq!(e.class(), ErrorClass::Retryable, "{e}");
        assert!(e.to_string().contains("could not connect"), "{e}");
    }

    #[tokio::test]
    async fn waiters_share_a_failed_login_instead_of_repeating_it() {
        let s = stub(|_, _| {
            (
                StatusCode::BAD_REQUEST,
                json!({"__type": "NotAuthorizedException", "message": "Incorrect username or password."}),
            )
        })
        .await;
        let p = Arc::new(provider(&s.url, DEFAULT_RENEW_MARGIN));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&p);
                tokio::spawn(async move { p.token().await.err().map(|e| e.class()) })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(ErrorClass::Auth));
        }
        assert_eq!(flows(&s).len(), 1);
        // A later, separate attempt does try again (the operator may have fixed the user).
        assert!(p.token().await.is_err());
        assert_eq!(flows(&s).len(), 2);
    }
}
