//! HTTP calls of the upload protocol. Item and collection assets share every code path: the
//! target only decides the asset path.

use std::fmt;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tracing::{debug, warn};
use url::Url;

use super::answer;
use super::auth::{self, Auth};
use super::body::{Body, BodyCut, read_body, size};
use super::cognito::{Bearer, CognitoError, CognitoProvider};
use super::error::{StacError, Step};
use super::tls::{self, CaFileError};
use super::types::*;
use super::{redact_userinfo, without_userinfo};

/// Redirects a GET follows before it is given up as a redirect loop (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// Upper bound on pages followed through `next` links, so a server that links in a circle
/// cannot keep a run busy forever.
const MAX_PAGES: usize = 1_000;

/// The page size asked for in listings of items: the server's largest (larger is cut to it).
const LIST_PAGE: usize = 100;

/// Whether an error is the database's refusal of a second row with the same key, which
/// `POST .../items` answers as a 400 with the PostgreSQL message as its description.
fn is_duplicate_key(e: &StacError) -> bool {
    e.description
        .contains("duplicate key value violates unique constraint")
}

/// The most that is read of a success answer of the API: 4 MiB. The largest answers the
/// protocol has are a create answer (at most 100 presigned URLs of about 1 KiB each, since
/// `number_parts` is at most 100), a listing page (the server pages 100 entries at a time) and an
/// item or asset object (a few KiB): all well under 200 KiB. 4 MiB leaves a 20-fold margin for
/// large items while keeping what a few concurrent jobs may hold small. A longer answer is not
/// an answer of this protocol: it is cut, and the call fails without a retry.
pub const JSON_ANSWER_LIMIT: usize = 4 * 1024 * 1024;

/// What is read of an answer that is not a success (API JSON error, S3 XML error, a gateway's
/// HTML page) and of the (empty) success answer to a part upload: 64 KiB. The description is
/// taken from the body's start (an error's `description`, S3's `Code` and `Message`, a page's
/// `<title>`, all in the first few hundred bytes) and cut to 300 characters anyway; the rest of
/// a longer body is left unread.
pub const ERROR_BODY_PREFIX: usize = 64 * 1024;

/// The asset an upload writes: an item asset, or a collection asset when `item` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AssetTarget {
    /// The collection's id.
    pub collection: String,
    /// The item's id; `None` for a collection asset.
    pub item: Option<String>,
    /// The asset's id.
    pub asset: String,
}

impl AssetTarget {
    /// An asset of an item.
    pub fn item_asset(
        collection: impl Into<String>,
        item: impl Into<String>,
        asset: impl Into<String>,
    ) -> Self {
        Self {
            collection: collection.into(),
            item: Some(item.into()),
            asset: asset.into(),
        }
    }

    /// An asset of a collection.
    pub fn collection_asset(collection: impl Into<String>, asset: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            item: None,
            asset: asset.into(),
        }
    }

    fn segments(&self) -> Vec<&str> {
        let mut s = vec!["collections", self.collection.as_str()];
        if let Some(item) = &self.item {
            s.extend(["items", item.as_str()]);
        }
        s.extend(["assets", self.asset.as_str()]);
        s
    }
}

impl fmt::Display for AssetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.item {
            Some(item) => write!(f, "{}/{}/{}", self.collection, item, self.asset),
            None => write!(f, "{}/{}", self.collection, self.asset),
        }
    }
}

/// How to reach the API. The same HTTP client (roots, proxy) serves the API, the presigned
/// part URLs and Cognito.
#[derive(Clone)]
pub struct ClientConfig {
    /// e.g. `https://data.geo.admin.ch/api/stac/v1`
    pub base_url: Url,
    /// Which generation of the API the server speaks (the checksum's field name).
    pub api_version: ApiVersion,
    /// The credentials sent with each API call (never with the presigned part URLs).
    pub auth: Auth,
    /// Bound on establishing a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Bound on one API call (not part uploads, whose deadline depends on their length).
    pub request_timeout: Duration,
    /// PEM certificates trusted on top of the system's roots (self-hosted servers, TLS
    /// inspection proxies).
    pub ca_file: Option<PathBuf>,
    /// A proxy for every request. `None`: the `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` variables
    /// apply (with `NO_PROXY`), as reqwest reads them.
    pub proxy: Option<Url>,
    /// Hosts that bypass `proxy`, in `NO_PROXY` syntax. `new` reads `NO_PROXY`/`no_proxy`.
    pub no_proxy: Option<String>,
    /// Said after `stac-uploadd/VERSION` in the `User-Agent`, e.g. which instance of a cluster
    /// sends (the server's and the storage's logs then tell instances apart).
    pub agent_detail: Option<String>,
}

impl ClientConfig {
    /// Defaults for a base URL: v1, no auth, 10 s to connect, 60 s per API call, system roots,
    /// proxies from the environment.
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            api_version: ApiVersion::V1,
            auth: Auth::None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            ca_file: None,
            proxy: None,
            no_proxy: std::env::var("NO_PROXY")
                .or_else(|_| std::env::var("no_proxy"))
                .ok()
                .filter(|v| !v.trim().is_empty()),
            agent_detail: None,
        }
    }

    /// The `User-Agent` sent.
    pub fn user_agent(&self) -> String {
        let base = concat!("stac-uploadd/", env!("CARGO_PKG_VERSION"));
        match &self.agent_detail {
            // Header values are visible ASCII: anything else is left out.
            Some(d) => format!(
                "{base} ({})",
                d.chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .collect::<String>()
            ),
            None => base.to_owned(),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &redact_userinfo(&self.base_url))
            .field("api_version", &self.api_version)
            .field("auth", &self.auth)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("ca_file", &self.ca_file)
            .field("proxy", &self.proxy.as_ref().map(redact_userinfo))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The error of a success answer whose body went past `limit`: not a transient failure, as
/// the server would send the same again.
fn too_large(
    step: Step,
    method: &'static str,
    url: &str,
    status: StatusCode,
    limit: usize,
) -> StacError {
    StacError::bad_answer(
        step,
        method,
        url,
        status,
        format!(
            "the answer exceeds {}: cut after {}",
            size(limit),
            size(limit)
        ),
    )
}

/// The error of a success answer whose body did not come whole: a deadline is a timeout like
/// any other (retryable), a broken connection a transport failure.
fn body_cut(
    step: Step,
    method: &'static str,
    url: &str,
    status: StatusCode,
    cut: BodyCut,
) -> StacError {
    match cut {
        BodyCut::Deadline { within, partial } => StacError::deadline(
            step,
            method,
            url,
            format!(
                "HTTP {}: {}",
                status.as_u16(),
                BodyCut::deadline_text(within, partial.len())
            ),
        ),
        BodyCut::Transport(e) => transport_error(step, method, url, e),
    }
}

/// The error of an answer that is not a success, from the start of its body; a body that did
/// not come whole is said so after the server's words.
fn failed_answer(
    step: Step,
    method: &'static str,
    url: &str,
    status: StatusCode,
    headers: &header::HeaderMap,
    body: Result<Body, BodyCut>,
) -> StacError {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (bytes, note) = match body {
        Ok(b) => (b.bytes, None),
        Err(BodyCut::Deadline { within, partial }) => {
            let note = BodyCut::deadline_text(within, partial.len());
            (partial, Some(note))
        }
        Err(BodyCut::Transport(e)) => (
            Bytes::new(),
            Some(format!(
                "the body broke off: {}",
                super::error::source_chain(&e)
            )),
        ),
    };
    if status.is_redirection() {
        let location = headers
            .get(header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return StacError::redirected(step, method, url, status, location.as_deref());
    }
    let mut e = StacError::from_answer(step, method, url, status, ct, &bytes);
    if let Some(note) = note {
        e.description = format!("{} ({note})", e.description);
    }
    // Only these two statuses ask for a wait (RFC 9110); elsewhere the header is not ours to
    // honour.
    if matches!(status.as_u16(), 429 | 503) {
        e.retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| super::error::retry_after_secs(v, std::time::SystemTime::now()));
    }
    e
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientBuildError {
    /// The CA file could not be used.
    #[error(transparent)]
    CaFile(#[from] CaFileError),
    /// The proxy URL was refused.
    #[error("invalid proxy {url}: {source}")]
    Proxy {
        /// The proxy URL, its credentials redacted.
        url: String,
        #[source]
        /// Why it was refused.
        source: reqwest::Error,
    },
    /// The TLS backend or the system's roots could not be set up.
    #[error(transparent)]
    Http(reqwest::Error),
}

/// A client of one STAC API. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct StacClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The client of API calls other than GET: it follows no redirect.
    writes: reqwest::Client,
    base: Url,
    api: ApiVersion,
    auth: Auth,
    /// Set for `Auth::Cognito`: the one token source shared by every clone of this client.
    cognito: Option<CognitoProvider>,
    request_timeout: Duration,
    /// Set once the server answered `POST .../items` with 404 or 405: it has no bulk create,
    /// and items are created with `PUT` + `If-None-Match: *` from then on.
    no_items_post: AtomicBool,
}

impl fmt::Debug for StacClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StacClient")
            .field("base", &redact_userinfo(&self.inner.base))
            .field("api", &self.inner.api)
            .field("auth", &self.inner.auth)
            .finish()
    }
}

/// An answer with a success status.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl StacClient {
    /// Builds a client: reads the CA file and sets up the proxy; fails if either is unusable
    /// or the TLS backend cannot start.
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientBuildError> {
        let roots = match &cfg.ca_file {
            Some(path) => Some(tls::load_ca_file(path)?),
            None => None,
        };
        let build = |redirects: reqwest::redirect::Policy| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(cfg.connect_timeout)
                .user_agent(cfg.user_agent())
                // Keep pooled connections short-lived: S3 endpoints close idle ones after ~20 s.
                .pool_idle_timeout(Duration::from_secs(15))
                .redirect(redirects);
            if let Some(roots) = &roots {
                builder = builder.tls_certs_merge(roots.clone());
            }
            // Without an explicit proxy the builder keeps reqwest's environment proxies:
            // nothing here may call `no_proxy()`.
            if let Some(url) = &cfg.proxy {
                let proxy = reqwest::Proxy::all(url.as_str())
                    .map_err(|source| ClientBuildError::Proxy {
                        url: redact_userinfo(url),
                        source,
                    })?
                    .no_proxy(
                        cfg.no_proxy
                            .as_deref()
                            .and_then(reqwest::NoProxy::from_string),
                    );
                builder = builder.proxy(proxy);
            }
            builder.build().map_err(ClientBuildError::Http)
        };
        let http = build(reqwest::redirect::Policy::limited(MAX_REDIRECTS))?;
        // A write that is redirected would be replayed as a GET (301, 302, 303) or sent
        // somewhere else: it is reported as redirected instead (docs/protocol.md).
        let writes = build(reqwest::redirect::Policy::none())?;
        let mut base = without_userinfo(cfg.base_url);
        if let Ok(mut segs) = base.path_segments_mut() {
            segs.pop_if_empty();
        }
        let cognito = match &cfg.auth {
            Auth::Cognito(c) => Some(CognitoProvider::new(
                http.clone(),
                c.clone(),
                cfg.request_timeout,
            )),
            _ => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                writes,
                base,
                api: cfg.api_version,
                auth: cfg.auth,
                cognito,
                request_timeout: cfg.request_timeout,
                no_items_post: AtomicBool::new(false),
            }),
        })
    }

    /// The client of GETs (and public HEADs): the proxy and CA settings, redirects followed.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The bound on one call.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The API generation this client speaks.
    pub fn api_version(&self) -> ApiVersion {
        self.inner.api
    }

    /// The base URL, e.g. `http://127.0.0.1:8080/api/stac/v1`.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    fn url(&self, target: &AssetTarget, tail: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(target.segments()).extend(tail);
        }
        url
    }

    /// Sends one API request and returns the answer if its status is a success. Every API call
    /// goes through here: with Cognito, a 401 renews the token and replays the request once.
    async fn send(
        &self,
        step: Step,
        method: Method,
        url: Url,
        body: Option<&Value>,
        fresh: bool,
    ) -> Result<Answer, StacError> {
        self.send_with(step, method, url, body, fresh, &[]).await
    }

    /// [`Self::send`] with extra request headers (preconditions, an idempotency key).
    async fn send_with(
        &self,
        step: Step,
        method: Method,
        url: Url,
        body: Option<&Value>,
        fresh: bool,
        extra: &[(&'static str, &str)],
    ) -> Result<Answer, StacError> {
        let method_name = method_name(&method);
        let mut replayed = false;
        let (status, headers, body, success) = loop {
            let bearer = self.cognito_token(step, method_name, &url).await?;
            let http = if method == Method::GET {
                &self.inner.http
            } else {
                &self.inner.writes
            };
            let mut req = http
                .request(method.clone(), url.clone())
                .timeout(self.inner.request_timeout);
            // Reads need no credentials; sending them anyway is harmless and keeps private
            // deployments that protect reads working.
            req = match &bearer {
                Some(b) => auth::bearer(req, &b.token),
                None => self.inner.auth.apply(req),
            };
            if fresh {
                // Answers may come through a CDN; a skip or resume decision needs the live value.
                req = req.header(header::CACHE_CONTROL, "no-cache");
            }
            for (name, value) in extra {
                req = req.header(*name, *value);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let started = Instant::now();
            let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
            let mut resp = req
                .send()
                .await
                .map_err(|e| transport_error(step, method_name, url.as_str(), e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let success = status.is_success() || status == StatusCode::NOT_MODIFIED;
            let limit = if success {
                JSON_ANSWER_LIMIT
            } else {
                ERROR_BODY_PREFIX
            };
            let body = read_body(&mut resp, limit, deadline, self.inner.request_timeout).await;
            debug!(
                step = %step,
                method = method_name,
                url = %super::redact_url(url.as_str()),
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "request"
            );
            match (&bearer, &self.inner.cognito) {
                (Some(b), Some(provider)) if status == StatusCode::UNAUTHORIZED && !replayed => {
                    // Expired early, revoked, or the clock is off: one fresh token, one replay.
                    warn!(step = %step, "the API refused the Cognito token; renewing it and sending again");
                    provider.invalidate(b.generation).await;
                    replayed = true;
                }
                _ => break (status, headers, body, success),
            }
        };
        let u = url.as_str();
        match body {
            _ if !success => Err(failed_answer(step, method_name, u, status, &headers, body)),
            Ok(Body {
                bytes,
                complete: true,
            }) => Ok(Answer {
                status,
                body: bytes,
            }),
            Ok(_) => Err(too_large(step, method_name, u, status, JSON_ANSWER_LIMIT)),
            Err(cut) => Err(body_cut(step, method_name, u, status, cut)),
        }
    }

    /// The Cognito token for a request, when the client logs in with Cognito.
    async fn cognito_token(
        &self,
        step: Step,
        method: &'static str,
        url: &Url,
    ) -> Result<Option<Bearer>, StacError> {
        let Some(provider) = &self.inner.cognito else {
            return Ok(None);
        };
        provider
            .token()
            .await
            .map(Some)
            .map_err(|e| cognito_error(step, method, url.as_str(), e))
    }

    fn json(&self, step: Step, method: &Method, url: &Url, a: &Answer) -> Result<Value, StacError> {
        answer::json(&a.body).map_err(|what| {
            StacError::bad_answer(step, method_name(method), url.as_str(), a.status, what)
        })
    }

    fn parse_upload(
        &self,
        step: Step,
        method: &Method,
        url: &Url,
        a: &Answer,
    ) -> Result<Upload, StacError> {
        let v = self.json(step, method, url, a)?;
        answer::upload(v, self.inner.api).map_err(|what| {
            StacError::bad_answer(step, method_name(method), url.as_str(), a.status, what)
        })
    }

    /// `POST A/uploads`: starts a multipart upload and returns it with its presigned URLs.
    pub async fn create_upload(
        &self,
        target: &AssetTarget,
        req: &CreateUpload,
    ) -> Result<Upload, StacError> {
        let url = self.url(target, &["uploads"]);
        let mut body = json!({
            "number_parts": req.md5_parts.len(),
            "md5_parts": req.md5_parts,
        });
        body[self.inner.api.checksum_field()] = json!(req.checksum.as_str());
        if let Some(enc) = req.content_encoding {
            body["content_encoding"] = json!(enc);
        }
        let step = Step::CreateUpload;
        let a = self
            .send(step, Method::POST, url.clone(), Some(&body), false)
            .await?;
        // Its part URLs are judged by the session: the upload exists now, and only the session
        // can abort it when they are unusable.
        self.parse_upload(step, &Method::POST, &url, &a)
    }

    /// The URL of a call on `target`'s asset (`tail` under it: `["uploads"]`, ...), for
    /// errors that name the request.
    pub fn asset_call_url(&self, target: &AssetTarget, tail: &[&str]) -> Url {
        self.url(target, tail)
    }

    /// `GET A/uploads[?status=]`, following `next` links.
    pub async fn list_uploads(
        &self,
        target: &AssetTarget,
        status: Option<UploadStatus>,
    ) -> Result<Vec<Upload>, StacError> {
        let mut url = self.url(target, &["uploads"]);
        if let Some(s) = &status {
            url.query_pairs_mut().append_pair("status", s.as_query());
        }
        let mut out = Vec::new();
        self.paginate(Step::ListUploads, url, "uploads", |v| {
            out.push(answer::upload(v, self.inner.api)?);
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(out)
    }

    /// `GET A/uploads/{id}`, fresh (not from a cache).
    pub async fn get_upload(
        &self,
        target: &AssetTarget,
        id: &UploadId,
    ) -> Result<Upload, StacError> {
        let url = self.url(target, &["uploads", &id.0]);
        let a = self
            .send(Step::GetUpload, Method::GET, url.clone(), None, true)
            .await?;
        self.parse_upload(Step::GetUpload, &Method::GET, &url, &a)
    }

    /// `GET A/uploads/{id}/parts`, following `next` links.
    pub async fn list_parts(
        &self,
        target: &AssetTarget,
        id: &UploadId,
    ) -> Result<Vec<UploadedPart>, StacError> {
        let url = self.url(target, &["uploads", &id.0, "parts"]);
        let mut out = Vec::new();
        self.paginate(Step::ListParts, url, "parts", |v| {
            out.push(answer::part(v)?);
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(out)
    }

    async fn paginate(
        &self,
        step: Step,
        first: Url,
        key: &str,
        mut each: impl FnMut(Value) -> Result<ControlFlow<()>, String>,
    ) -> Result<(), StacError> {
        let mut next = Some(first);
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            if seen.len() >= MAX_PAGES || !seen.insert(url.to_string()) {
                break;
            }
            let a = self
                .send(step, Method::GET, url.clone(), None, true)
                .await?;
            let v = self.json(step, &Method::GET, &url, &a)?;
            let bad =
                |what: String| StacError::bad_answer(step, "GET", url.as_str(), a.status, what);
            let page = answer::page(v, key).map_err(bad)?;
            for item in page.items {
                if each(item).map_err(bad)?.is_break() {
                    return Ok(());
                }
            }
            next = page.next.and_then(|href| url.join(&href).ok());
        }
        Ok(())
    }

    /// `POST A/uploads/{id}/complete` with the parts' ETags in order.
    pub async fn complete(
        &self,
        target: &AssetTarget,
        id: &UploadId,
        parts: &[CompletedPart],
    ) -> Result<Upload, StacError> {
        let url = self.url(target, &["uploads", &id.0, "complete"]);
        let body = json!({ "parts": parts });
        let a = self
            .send(
                Step::Complete,
                Method::POST,
                url.clone(),
                Some(&body),
                false,
            )
            .await?;
        self.parse_upload(Step::Complete, &Method::POST, &url, &a)
    }

    /// `POST A/uploads/{id}/abort`.
    pub async fn abort(&self, target: &AssetTarget, id: &UploadId) -> Result<Upload, StacError> {
        let url = self.url(target, &["uploads", &id.0, "abort"]);
        let a = self
            .send(Step::Abort, Method::POST, url.clone(), None, false)
            .await?;
        self.parse_upload(Step::Abort, &Method::POST, &url, &a)
    }

    /// `GET A`, fresh: what the last completed upload declared.
    pub async fn read_asset(&self, target: &AssetTarget) -> Result<AssetInfo, StacError> {
        let url = self.url(target, &[]);
        let a = self
            .send(Step::ReadAsset, Method::GET, url.clone(), None, true)
            .await?;
        let v = self.json(Step::ReadAsset, &Method::GET, &url, &a)?;
        answer::checked_asset(&v, self.inner.api).map_err(|what| {
            StacError::bad_answer(Step::ReadAsset, "GET", url.as_str(), a.status, what)
        })
    }

    /// The URL of `segments` under the base, each segment escaped.
    fn path_url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(segments);
        }
        url
    }

    /// A fresh `GET` of a STAC object: its JSON, or `None` when the server answers 404.
    async fn read_object(&self, step: Step, url: Url) -> Result<Option<Value>, StacError> {
        match self.send(step, Method::GET, url.clone(), None, true).await {
            Ok(a) => self.json(step, &Method::GET, &url, &a).map(Some),
            Err(e) if e.status == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A `PUT` of a STAC object; returns the object as the server stored it.
    async fn put_object(&self, step: Step, url: Url, body: &Value) -> Result<Value, StacError> {
        let a = self
            .send(step, Method::PUT, url.clone(), Some(body), false)
            .await?;
        self.json(step, &Method::PUT, &url, &a)
    }

    /// `GET collections/{c}`, fresh: the collection, or `None` if it does not exist.
    pub async fn get_collection(&self, collection: &str) -> Result<Option<Value>, StacError> {
        let url = self.path_url(&["collections", collection]);
        self.read_object(Step::ReadCollection, url).await
    }

    /// `GET collections/{c}/items/{i}`, fresh: the item, or `None` if it does not exist.
    pub async fn get_item(&self, collection: &str, item: &str) -> Result<Option<Value>, StacError> {
        let url = self.path_url(&["collections", collection, "items", item]);
        self.read_object(Step::ReadItem, url).await
    }

    /// `PUT collections/{c}/items/{i}` with a STAC Item body. A PUT replaces an item that
    /// exists: call it only for one that [`StacClient::get_item`] found missing.
    pub async fn put_item(
        &self,
        collection: &str,
        item: &str,
        body: &Value,
    ) -> Result<Value, StacError> {
        let url = self.path_url(&["collections", collection, "items", item]);
        self.put_object(Step::CreateItem, url, body).await
    }

    /// `DELETE collections/{c}/items/{i}`: the server refuses it (400) while the item has
    /// assets.
    pub async fn delete_item(&self, collection: &str, item: &str) -> Result<(), StacError> {
        let url = self.path_url(&["collections", collection, "items", item]);
        self.send(Step::DeleteItem, Method::DELETE, url, None, false)
            .await
            .map(|_| ())
    }

    /// Creates item `item` in `collection` unless it exists, atomically on the server: two
    /// creators at once get one `Created` and one `AlreadyExists`, and an existing item is never
    /// replaced. `body` is the item as for [`StacClient::put_item`] (`geometry`, `properties`,
    /// `links`; its `id` is set to `item`; never `assets`).
    ///
    /// Sends `POST collections/{c}/items` with `{"features": [body]}` and the `Idempotency-Key`
    /// `key`; the server answers an existing id with 400 "duplicate key value violates unique
    /// constraint", which a read of the item confirms. A server without that call (404 or 405)
    /// gets `PUT` with `If-None-Match: *` instead (412: it exists), from then on.
    ///
    /// One [`IdempotencyKey`] per logical create, the same on each retry of it (retry with
    /// [`crate::retry::call`] and [`Step::CreateItem`]). The server does not use the key yet: a
    /// retry after a lost `201` answers `AlreadyExists`, so `AlreadyExists` does not prove that
    /// another creator made the item.
    pub async fn create_item(
        &self,
        collection: &str,
        item: &str,
        body: &Value,
        key: &IdempotencyKey,
    ) -> Result<ItemCreate, StacError> {
        let step = Step::CreateItem;
        let mut feature = body.clone();
        let Some(fields) = feature.as_object_mut() else {
            let url = self.path_url(&["collections", collection, "items"]);
            return Err(StacError::request_refused(
                step,
                "POST",
                url.as_str(),
                "the item body is not a JSON object".to_owned(),
            ));
        };
        fields.insert("id".to_owned(), json!(item));
        if !self.inner.no_items_post.load(Ordering::Relaxed) {
            let url = self.path_url(&["collections", collection, "items"]);
            let answer = self
                .send_with(
                    step,
                    Method::POST,
                    url.clone(),
                    Some(&json!({ "features": [feature] })),
                    false,
                    &[("Idempotency-Key", key.as_str())],
                )
                .await;
            match answer {
                Ok(_) => return Ok(ItemCreate::Created),
                Err(e) if e.status == Some(StatusCode::BAD_REQUEST) && is_duplicate_key(&e) => {
                    // The same words come for a duplicate link of the item: only an item that
                    // reads back makes it a duplicate id.
                    return match self.get_item(collection, item).await? {
                        Some(_) => Ok(ItemCreate::AlreadyExists),
                        None => Err(e),
                    };
                }
                Err(e)
                    if matches!(
                        e.status,
                        Some(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
                    ) =>
                {
                    debug!(url = %super::redact_url(url.as_str()), status = ?e.status, "no POST of items on this server: creating items with PUT + If-None-Match");
                    self.inner.no_items_post.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let url = self.path_url(&["collections", collection, "items", item]);
        let answer = self
            .send_with(
                step,
                Method::PUT,
                url.clone(),
                Some(&feature),
                false,
                &[("If-None-Match", "*")],
            )
            .await;
        match answer {
            Ok(a) if a.status == StatusCode::CREATED => Ok(ItemCreate::Created),
            Ok(a) => {
                // A server that ignores the precondition replaced the item: it existed.
                warn!(url = %super::redact_url(url.as_str()), status = a.status.as_u16(), "the server ignored If-None-Match: * and replaced an existing item");
                Ok(ItemCreate::AlreadyExists)
            }
            Err(e) if e.status == Some(StatusCode::PRECONDITION_FAILED) => {
                Ok(ItemCreate::AlreadyExists)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET collections/{c}/items`, following the server's pages (`limit=100`, `next` links):
    /// at most `max` items (the first by id), each as the server sent it. Items whose
    /// `expires` has passed are not listed.
    pub async fn list_items(&self, collection: &str, max: usize) -> Result<Vec<Value>, StacError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let mut url = self.path_url(&["collections", collection, "items"]);
        url.query_pairs_mut()
            .append_pair("limit", &LIST_PAGE.min(max).to_string());
        self.paginate(Step::ListItems, url, "features", |v| {
            out.push(v);
            Ok(if out.len() >= max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .await?;
        Ok(out)
    }

    /// `GET collections/{c}/items/{i}/assets`: every asset of the item (the server does not
    /// page this list), each as the server sent it, with its `id`.
    pub async fn list_assets(&self, collection: &str, item: &str) -> Result<Vec<Value>, StacError> {
        let url = self.path_url(&["collections", collection, "items", item, "assets"]);
        let mut out = Vec::new();
        self.paginate(Step::ListAssets, url, "assets", |v| {
            out.push(v);
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(out)
    }

    /// `DELETE A`: the server refuses it (400) while an upload of the asset is in progress.
    pub async fn delete_asset(&self, target: &AssetTarget) -> Result<(), StacError> {
        self.send(
            Step::DeleteAsset,
            Method::DELETE,
            self.url(target, &[]),
            None,
            false,
        )
        .await
        .map(|_| ())
    }

    /// `GET A`, fresh: the asset's JSON as the server holds it, or `None` if it does not exist.
    pub async fn get_asset(&self, target: &AssetTarget) -> Result<Option<Value>, StacError> {
        self.read_object(Step::ReadAsset, self.url(target, &[]))
            .await
    }

    /// `PUT A` with the asset's metadata. A PUT replaces an asset that exists and resets its
    /// file (docs/protocol.md): call it only for one that [`StacClient::get_asset`] found missing.
    pub async fn put_asset(&self, target: &AssetTarget, body: &Value) -> Result<Value, StacError> {
        self.put_object(Step::CreateAsset, self.url(target, &[]), body)
            .await
    }

    /// `PUT` one part's bytes to its presigned URL, with the `Content-MD5` given at create and
    /// an explicit `Content-Length` (S3 refuses chunked bodies). Returns the ETag S3 answered.
    pub async fn put_part(
        &self,
        url: &PresignedUrl,
        md5: &Md5,
        len: u64,
        body: reqwest::Body,
        timeout: Duration,
    ) -> Result<String, StacError> {
        let step = Step::PutPart(url.part);
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let target = Url::parse(&url.url).map(without_userinfo).map_err(|e| {
            StacError::bad_answer(
                step,
                "PUT",
                &url.url,
                StatusCode::CREATED,
                format!("the part URL does not parse: {e}"),
            )
        })?;
        let mut resp = self
            .inner
            .http
            .put(target)
            .timeout(timeout)
            .header(header::CONTENT_LENGTH, len)
            .header("Content-MD5", md5.to_base64())
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(step, "PUT", &url.url, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // S3 answers a stored part with an empty body: only its start is read, whatever comes.
        let body = read_body(&mut resp, ERROR_BODY_PREFIX, deadline, timeout).await;
        debug!(
            step = %step,
            url = %super::redact_url(&url.url),
            status = status.as_u16(),
            bytes = len,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        if !status.is_success() {
            return Err(failed_answer(step, "PUT", &url.url, status, &headers, body));
        }
        if let Err(cut) = body {
            return Err(body_cut(step, "PUT", &url.url, status, cut));
        }
        headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                StacError::bad_answer(step, "PUT", &url.url, status, "no ETag header".to_owned())
            })
    }
}

/// A transport failure as a [`StacError`]; a refused server certificate is not retryable, as
/// sending again cannot help until the trusted roots change.
fn transport_error(step: Step, method: &'static str, url: &str, err: reqwest::Error) -> StacError {
    let refused = tls::is_certificate_refusal(&err);
    let mut e = StacError::from_transport(step, method, url, err);
    // A cause may quote a proxy's URL, password included.
    e.description = super::redact_passwords(&e.description);
    if refused {
        // `from_transport` classed it: not retryable.
        e.description = format!(
            "the server's TLS certificate is not trusted ({}); if the server or a proxy uses a private CA, add it with [server] ca_file",
            e.description
        );
    }
    e
}

/// A failed Cognito login, reported against the API call that needed the token.
fn cognito_error(step: Step, method: &'static str, url: &str, err: CognitoError) -> StacError {
    StacError {
        step,
        method,
        url: super::redact_url(url),
        status: None,
        class: err.class(),
        description: super::redact_passwords(&err.to_string()),
        retry_after: None,
        source: None,
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "REQUEST",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_about_a_url_with_a_password_do_not_show_it() {
        let url = "https://user:pw-in-url@host/api/stac/v1/collections/c?X-Amz-Signature=sig";
        let errors = [
            StacError::bad_answer(Step::ReadAsset, "GET", url, StatusCode::OK, "x".to_owned()),
            StacError::deadline(Step::ReadAsset, "GET", url, "slow".to_owned()),
            StacError::from_answer(
                Step::ReadAsset,
                "GET",
                url,
                StatusCode::BAD_GATEWAY,
                None,
                b"",
            ),
            too_large(Step::GetUpload, "GET", url, StatusCode::OK, 10),
        ];
        for e in errors {
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains("pw-in-url") && !shown.contains("sig"),
                "{shown}"
            );
            assert!(shown.contains("https://user:***@host/api"), "{shown}");
        }
    }

    #[test]
    fn configs_and_clients_do_not_show_url_passwords() {
        let mut cfg = ClientConfig::new("https://api:pw-base@host/api/stac/v1".parse().unwrap());
        cfg.proxy = Some("http://proxyuser:pw-proxy@proxy:3128".parse().unwrap());
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("pw-base") && !shown.contains("pw-proxy"),
            "{shown}"
        );
        assert!(shown.contains("http://proxyuser:***@proxy:3128"), "{shown}");
        let client = StacClient::new(cfg).unwrap();
        let shown = format!("{client:?} {}", redact_userinfo(client.base_url()));
        assert!(!shown.contains("pw-base"), "{shown}");
        // The client drops the userinfo: it is never sent (reqwest would send it as Basic).
        assert!(shown.contains("https://host/api/stac/v1"), "{shown}");
        assert_eq!(client.base_url().username(), "");

        // A proxy reqwest refuses: the error names it without its password.
        let mut cfg = ClientConfig::new("https://host/".parse().unwrap());
        cfg.proxy = Some("bogus://u:pw-bad-proxy@proxy".parse().unwrap());
        if let Err(e) = StacClient::new(cfg) {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("pw-bad-proxy"), "{shown}");
        }
    }

    #[tokio::test]
    async fn a_failed_connection_through_a_proxy_does_not_show_its_password() {
        // Nothing listens on this port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = ClientConfig::new("http://example.invalid/api/stac/v1".parse().unwrap());
        cfg.proxy = Some(
            format!("http://proxyuser:pw-proxy@127.0.0.1:{port}")
                .parse()
                .unwrap(),
        );
        cfg.no_proxy = None;
        let client = StacClient::new(cfg).unwrap();
        let e = client
            .read_asset(&AssetTarget::collection_asset("c", "a"))
            .await
            .unwrap_err();
        let shown = format!("{e} {e:?} {}", crate::redact_passwords(&format!("{e:?}")));
        assert!(!format!("{e}").contains("pw-proxy"), "{shown}");
        assert!(crate::retry::Classified::is_retryable(&e), "{shown}");
    }
}
