//! The service-stac API (STAC objects and the asset-upload calls) and the admin API.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::error::{ApiError, FieldErrors};
use super::faults::{self, CallKind, FaultAction, FaultRequest, FaultSpec};
use super::server::ConnHandle;
use super::state::{
    self, Asset, Collection, Item, Part, StacMeta, StoredObject, Upload, UploadState,
};
use super::{AssetKey, EmulatorAuth, Shared, s3};

/// API request bodies are small JSON documents.
const MAX_JSON_BODY: usize = 1024 * 1024;
/// S3's minimum size of every part but the last.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The page size of listings when the client gives none, and the largest it may ask for.
const MAX_LIMIT: usize = 100;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = "/api/stac/{version}/collections/{collection}";
    let mut router = Router::new().route(api, get(get_stac).put(put_stac)).route(
        &format!("{api}/items/{{item}}"),
        get(get_stac).put(put_stac),
    );
    // One set of handlers for item and collection assets: the path decides which.
    for asset in [
        format!("{api}/items/{{item}}/assets/{{asset}}"),
        format!("{api}/assets/{{asset}}"),
    ] {
        router = router
            .route(
                &asset,
                get(get_asset)
                    .put(put_asset)
                    .patch(patch_asset)
                    .delete(delete_asset),
            )
            .route(
                &format!("{asset}/uploads"),
                get(list_uploads).post(create_upload),
            )
            .route(&format!("{asset}/uploads/{{upload_id}}"), get(get_upload))
            .route(
                &format!("{asset}/uploads/{{upload_id}}/parts"),
                get(list_parts),
            )
            .route(
                &format!("{asset}/uploads/{{upload_id}}/complete"),
                post(complete),
            )
            .route(&format!("{asset}/uploads/{{upload_id}}/abort"), post(abort));
    }
    router
        .route("/_s3/{upload_id}/{part}", put(s3::put_part))
        .route("/_data/{collection}/{asset}", get(s3::download))
        .route("/_data/{collection}/{item}/{asset}", get(s3::download))
        .route("/_emulator/faults", post(add_fault).delete(clear_faults))
        .route("/_emulator/bandwidth", put(set_bandwidth))
        .route("/_emulator/state", get(dump_state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

/// The two API versions; they differ in the name of the checksum field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiVersion {
    V1,
    V09,
}

impl ApiVersion {
    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "v1" => Ok(ApiVersion::V1),
            "v0.9" => Ok(ApiVersion::V09),
            _ => Err(ApiError::not_found("Not found")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V09 => "v0.9",
        }
    }

    fn checksum_field(self) -> &'static str {
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

#[derive(Debug, Deserialize)]
struct StacPath {
    version: String,
    collection: String,
    item: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AssetPath {
    version: String,
    collection: String,
    item: Option<String>,
    asset: String,
}

impl AssetPath {
    fn parse(self) -> Result<(ApiVersion, AssetKey), ApiError> {
        let version = ApiVersion::parse(&self.version)?;
        let key = AssetKey {
            collection: self.collection,
            item: self.item,
            asset: self.asset,
        };
        Ok((version, key))
    }
}

#[derive(Debug, Deserialize)]
struct UploadPath {
    version: String,
    collection: String,
    item: Option<String>,
    asset: String,
    upload_id: String,
}

impl UploadPath {
    fn parse(self) -> Result<(ApiVersion, AssetKey, String), ApiError> {
        let (version, key) = AssetPath {
            version: self.version,
            collection: self.collection,
            item: self.item,
            asset: self.asset,
        }
        .parse()?;
        Ok((version, key, self.upload_id))
    }
}

/// What every handler needs from the request besides its path and body.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: ConnHandle,
    method: Method,
    uri: Uri,
    pub(crate) headers: HeaderMap,
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
        // The path only: a query may carry a secret.
        tracing::debug!(method = %self.method, path = self.uri.path(), call = %kind, "request");
        let mut drop_after_commit = false;
        match self.shared.faults.take(kind) {
            None => {}
            Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(FaultAction::Status(code)) => return faults::status_response(code),
            Some(FaultAction::Drop) => return self.conn.kill().await,
            Some(FaultAction::DropAfterCommit) => drop_after_commit = true,
            Some(FaultAction::ExpireUrl) => return faults::status_response(403),
        }
        let response = self.run(handler).await;
        if drop_after_commit {
            return self.conn.kill().await;
        }
        response
    }

    /// Runs a handler of an uncounted call.
    async fn run<F>(&self, handler: F) -> Response
    where
        F: Future<Output = Result<Response, ApiError>>,
    {
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

    /// `http://HOST` (or `https://`) as the client addressed us, so that the URLs we hand out
    /// work from where it stands (a container, another host).
    fn origin(&self) -> String {
        let host = self
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.parse::<Authority>().is_ok());
        let scheme = self.shared.scheme;
        match host {
            Some(host) => format!("{scheme}://{host}"),
            None => format!("{scheme}://{}", self.shared.addr),
        }
    }

    pub(crate) fn raw_query(&self) -> Option<&str> {
        self.uri.query()
    }

    fn query(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.raw_query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }

    fn query_param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    fn self_url(&self) -> String {
        format!("{}{}", self.origin(), self.uri.path())
    }

    /// A JSON answer with an ETag, or 304 when the client already has it.
    fn with_etag(&self, etag: &str, body: Value) -> Response {
        let quoted = format!("\"{etag}\"");
        let matches = self
            .headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == quoted);
        let etag_header = HeaderValue::from_str(&quoted).ok();
        let mut response = if matches {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            axum::Json(body).into_response()
        };
        if let Some(value) = etag_header {
            response.headers_mut().insert(header::ETAG, value);
        }
        response
    }

    fn asset_json(&self, key: &AssetKey, asset: &Asset, version: ApiVersion) -> Value {
        let mut json = asset.fields.clone();
        json.insert("id".into(), key.asset.clone().into());
        json.insert("type".into(), asset.media_type.clone().into());
        let href = match (&asset.external_href, &asset.object) {
            (Some(external), _) => Some(external.clone()),
            (None, Some(_)) => Some(format!("{}{}", self.origin(), key.data_path())),
            (None, None) => None,
        };
        if let Some(href) = href {
            json.insert("href".into(), href.into());
        }
        if let Some(checksum) = &asset.checksum {
            json.insert(version.checksum_field().into(), checksum.clone().into());
        }
        if let Some(size) = asset.size {
            json.insert("file:size".into(), size.into());
        }
        json.insert("created".into(), timestamp(asset.created).into());
        json.insert("updated".into(), timestamp(asset.updated).into());
        let base = format!("{}/api/stac/{}", self.origin(), version.as_str());
        let parent = match &key.item {
            Some(item) => format!("{base}/collections/{}/items/{item}", key.collection),
            None => format!("{base}/collections/{}", key.collection),
        };
        json.insert(
            "links".into(),
            json!([
                {"rel": "self", "href": format!("{base}/{}", key.api_path())},
                {"rel": "parent", "href": parent},
            ]),
        );
        Value::Object(json)
    }

    fn upload_json(&self, upload: &Upload, version: ApiVersion) -> Value {
        let origin = self.origin();
        let md5_parts: Vec<Value> = upload
            .md5_parts
            .iter()
            .zip(1u32..)
            .map(|(md5, part)| json!({"part_number": part, "md5": md5}))
            .collect();
        // Presigned URLs exist only while the upload is in progress, as on the real server.
        let urls: Vec<Value> = if upload.status == UploadState::InProgress {
            let expires = upload.expires.timestamp();
            upload
                .md5_parts
                .iter()
                .zip(1u32..)
                .map(|(md5, part)| {
                    json!({
                        "url": self.shared.signer.url(&origin, &upload.id, part, md5, expires),
                        "part": part,
                        "expires": timestamp(upload.expires),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut json = Map::new();
        json.insert("upload_id".into(), upload.id.clone().into());
        json.insert("status".into(), upload.status.as_str().into());
        json.insert("created".into(), timestamp(upload.created).into());
        json.insert(
            version.checksum_field().into(),
            upload.checksum.clone().into(),
        );
        json.insert("number_parts".into(), upload.number_parts.into());
        json.insert("md5_parts".into(), md5_parts.into());
        json.insert("urls".into(), urls.into());
        json.insert("update_interval".into(), upload.update_interval.into());
        // The real serializer defaults the field to "" rather than leaving it out.
        json.insert(
            "content_encoding".into(),
            upload.content_encoding.clone().unwrap_or_default().into(),
        );
        if let Some(ended) = upload.ended {
            match upload.status {
                UploadState::Completed => json.insert("completed".into(), timestamp(ended).into()),
                UploadState::Aborted => json.insert("aborted".into(), timestamp(ended).into()),
                UploadState::InProgress => None,
            };
        }
        Value::Object(json)
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

/// RFC 3339 with at most microseconds, like the real server's Python `isoformat`.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.trunc_subsecs(6)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The request's JSON body; an empty body reads as `{}` as it does for DRF.
async fn read_json(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("Cannot read the request body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported media type \"{content_type}\" in request."),
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("JSON parse error - {e}")))
}

fn expect_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::bad_request(json!({
            "non_field_errors": [format!(
                "Invalid data. Expected a dictionary, but got {}.",
                json_type(&other)
            )]
        }))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The body of a PUT: an object whose `id` is the id in the path. The fields the server
/// computes are dropped.
fn stac_body(body: Value, path_id: &str) -> Result<Map<String, Value>, ApiError> {
    let mut fields = expect_object(body)?;
    match fields.get("id") {
        None | Some(Value::Null) => return Err(ApiError::field("id", "This field is required.")),
        Some(Value::String(id)) if id == path_id => {}
        Some(other) => {
            return Err(ApiError::field(
                "id",
                format!(
                    "The id in the body ({other}) does not match the id in the path ({path_id})"
                ),
            ));
        }
    }
    state::check_id(path_id).map_err(|e| ApiError::field("id", e))?;
    for computed in ["created", "updated", "links"] {
        fields.remove(computed);
    }
    Ok(fields)
}

fn stac_json(ctx: &Ctx, meta: &StacMeta) -> Value {
    let mut json = meta.fields.clone();
    json.insert("created".into(), timestamp(meta.created).into());
    json.insert("updated".into(), timestamp(meta.updated).into());
    json.insert(
        "links".into(),
        json!([{"rel": "self", "href": ctx.self_url()}]),
    );
    Value::Object(json)
}

async fn get_stac(ctx: Ctx, P(path): P<StacPath>) -> Response {
    ctx.run(async {
        ApiVersion::parse(&path.version)?;
        let state = ctx.shared.lock();
        let collection = state
            .collections
            .get(&path.collection)
            .ok_or_else(|| ApiError::not_found("Not found"))?;
        let meta = match &path.item {
            None => &collection.meta,
            Some(item) => {
                &collection
                    .items
                    .get(item)
                    .ok_or_else(|| ApiError::not_found("Not found"))?
                    .meta
            }
        };
        Ok(axum::Json(stac_json(&ctx, meta)).into_response())
    })
    .await
}

/// `PUT` of a collection, or of an item when the path names one.
async fn put_stac(ctx: Ctx, P(path): P<StacPath>, body: Body) -> Response {
    ctx.call(CallKind::PutStac, async {
        ApiVersion::parse(&path.version)?;
        let body = read_json(&ctx.headers, body).await?;
        let fields = stac_body(body, path.item.as_deref().unwrap_or(&path.collection))?;
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        let (created, meta) = match &path.item {
            None => {
                let created = !state.collections.contains_key(&path.collection);
                let collection = state
                    .collections
                    .entry(path.collection.clone())
                    .or_insert_with(|| Collection {
                        meta: StacMeta::new(Map::new(), now),
                        items: Default::default(),
                        assets: Default::default(),
                    });
                (created, &mut collection.meta)
            }
            Some(item) => {
                let collection = state.collections.get_mut(&path.collection).ok_or_else(|| {
                    ApiError::not_found(format!(
                        "The collection {} does not exist",
                        path.collection
                    ))
                })?;
                let created = !collection.items.contains_key(item);
                let item = collection
                    .items
                    .entry(item.clone())
                    .or_insert_with(|| Item {
                        meta: StacMeta::new(Map::new(), now),
                        assets: Default::default(),
                    });
                (created, &mut item.meta)
            }
        };
        meta.fields = fields;
        meta.updated = now;
        let json = stac_json(&ctx, meta);
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json_response(status, json))
    })
    .await
}

async fn get_asset(ctx: Ctx, P(path): P<AssetPath>) -> Response {
    ctx.call(CallKind::GetAsset, async {
        let (version, key) = path.parse()?;
        let state = ctx.shared.lock();
        let asset = state.asset(&key)?;
        Ok(ctx.with_etag(&asset.etag, ctx.asset_json(&key, asset, version)))
    })
    .await
}

/// An `href` in an asset body: a URL elsewhere makes the asset external; our own data URL
/// (a GET answer sent back) changes nothing.
fn external_href(key: &AssetKey, href: Value) -> Result<Option<String>, ApiError> {
    match href {
        Value::Null => Ok(None),
        Value::String(h) if url::Url::parse(&h).is_ok_and(|u| u.path() == key.data_path()) => {
            Ok(None)
        }
        Value::String(h) if url::Url::parse(&h).is_ok() => Ok(Some(h)),
        _ => Err(ApiError::field("href", "Invalid URL provided")),
    }
}

/// Fields the server computes from uploads; a client cannot set them.
fn drop_upload_fields(fields: &mut Map<String, Value>) {
    for computed in ["file:checksum", "checksum:multihash", "file:size"] {
        fields.remove(computed);
    }
}

async fn put_asset(ctx: Ctx, P(path): P<AssetPath>, body: Body) -> Response {
    ctx.call(CallKind::PutStac, async {
        let (version, key) = path.parse()?;
        let body = read_json(&ctx.headers, body).await?;
        let mut fields = stac_body(body, &key.asset)?;
        fields.remove("id");
        let media_type = match fields.remove("type") {
            Some(Value::String(t)) if !t.trim().is_empty() => t,
            _ => return Err(ApiError::field("type", "This field is required.")),
        };
        state::check_media_type(&key.asset, &media_type)
            .map_err(|(field, message)| ApiError::field(field, message))?;
        let external = match fields.remove("href") {
            Some(href) => external_href(&key, href)?,
            None => None,
        };
        drop_upload_fields(&mut fields);
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        let created = state.put_asset(&key, media_type, fields, external, now)?;
        let json = ctx.asset_json(&key, state.asset(&key)?, version);
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json_response(status, json))
    })
    .await
}

/// Merges metadata into an existing asset; `null` removes a field.
async fn patch_asset(ctx: Ctx, P(path): P<AssetPath>, body: Body) -> Response {
    ctx.call(CallKind::PutStac, async {
        let (version, key) = path.parse()?;
        let mut fields = expect_object(read_json(&ctx.headers, body).await?)?;
        match fields.remove("id") {
            None => {}
            Some(Value::String(id)) if id == key.asset => {}
            Some(_) => {
                return Err(ApiError::field(
                    "id",
                    "Renaming an asset is not supported by the emulator",
                ));
            }
        }
        let media_type = match fields.remove("type") {
            None => None,
            Some(Value::String(t)) => {
                state::check_media_type(&key.asset, &t)
                    .map_err(|(field, message)| ApiError::field(field, message))?;
                Some(t)
            }
            Some(_) => return Err(ApiError::field("type", "Not a valid string.")),
        };
        let href = fields
            .remove("href")
            .map(|h| external_href(&key, h))
            .transpose()?;
        drop_upload_fields(&mut fields);
        for computed in ["created", "updated", "links"] {
            fields.remove(computed);
        }
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        let asset = state.asset_mut(&key)?;
        if let Some(t) = media_type {
            asset.media_type = t;
        }
        if let Some(href) = href {
            asset.external_href = href;
        }
        for (name, value) in fields {
            if value.is_null() {
                asset.fields.remove(&name);
            } else {
                asset.fields.insert(name, value);
            }
        }
        asset.touch(now);
        Ok(axum::Json(ctx.asset_json(&key, asset, version)).into_response())
    })
    .await
}

async fn delete_asset(ctx: Ctx, P(path): P<AssetPath>) -> Response {
    ctx.call(CallKind::PutStac, async {
        let (_, key) = path.parse()?;
        let removed = {
            let mut state = ctx.shared.lock();
            if state.asset(&key)?.in_progress().is_some() {
                return Err(ApiError::bad_request(format!(
                    "Asset {} has still an upload in progress",
                    key.asset
                )));
            }
            let removed = state.assets_mut(&key)?.remove(&key.asset);
            for upload in removed.iter().flat_map(|a| &a.uploads) {
                state.upload_index.remove(&upload.id);
            }
            removed
        };
        // Part files are deleted here, outside the lock.
        drop(removed);
        Ok(json_response(
            StatusCode::OK,
            json!({"code": 200, "description": "Resource successfully deleted"}),
        ))
    })
    .await
}

/// A validated create body.
#[derive(Debug)]
struct CreateRequest {
    number_parts: u32,
    md5_parts: Vec<String>,
    checksum: String,
    content_encoding: Option<String>,
    update_interval: i64,
}

/// DRF's integer field messages.
fn int_field(
    errors: &mut FieldErrors,
    name: &str,
    value: Option<&Value>,
    range: std::ops::RangeInclusive<i64>,
) -> Option<i64> {
    match value {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n < *range.start() => {
                errors.add(
                    name,
                    format!(
                        "Ensure this value is greater than or equal to {}.",
                        range.start()
                    ),
                );
                None
            }
            Some(n) if n > *range.end() => {
                errors.add(
                    name,
                    format!(
                        "Ensure this value is less than or equal to {}.",
                        range.end()
                    ),
                );
                None
            }
            Some(n) => Some(n),
            None => {
                errors.add(name, "A valid integer is required.");
                None
            }
        },
    }
}

fn parse_create(body: Value, version: ApiVersion) -> Result<CreateRequest, ApiError> {
    let body = expect_object(body)?;
    let mut errors = FieldErrors::default();

    let number_parts = body.get("number_parts");
    if matches!(number_parts, None | Some(Value::Null)) {
        errors.add("number_parts", "This field is required.");
    }
    let number_parts = int_field(&mut errors, "number_parts", number_parts, 1..=100);

    let field = version.checksum_field();
    let checksum = match body.get(field) {
        None | Some(Value::Null) => {
            errors.add(field, "This field is required.");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.add(field, "This field may not be blank.");
            None
        }
        Some(Value::String(s)) => match check_multihash(s) {
            Ok(()) => Some(s.clone()),
            Err(e) => {
                errors.add(field, e);
                None
            }
        },
        Some(_) => {
            errors.add(field, "Not a valid string.");
            None
        }
    };

    let content_encoding = match body.get("content_encoding") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => {
            errors.add("content_encoding", "This field may not be blank.");
            None
        }
        Some(Value::String(s)) if s == "gzip" || s == "br" => Some(s.clone()),
        Some(Value::String(s)) => {
            errors.add(
                "content_encoding",
                format!("Invalid encoding \"{s}\": must be one of \"br, gzip\""),
            );
            None
        }
        Some(_) => {
            errors.add("content_encoding", "Not a valid string.");
            None
        }
    };

    if matches!(body.get("update_interval"), Some(Value::Null)) {
        errors.add("update_interval", "This field may not be null.");
    }
    let update_interval = int_field(
        &mut errors,
        "update_interval",
        body.get("update_interval"),
        -1..=3600,
    )
    .unwrap_or(-1);

    let md5_parts = body.get("md5_parts").filter(|v| !v.is_null());
    if md5_parts.is_none() {
        errors.add("md5_parts", "This field is required.");
    }
    errors.into_result()?;

    let (Some(number_parts), Some(checksum), Some(md5_parts)) = (number_parts, checksum, md5_parts)
    else {
        return Err(ApiError::internal());
    };
    let number_parts = u32::try_from(number_parts).map_err(|_| ApiError::internal())?;
    let md5_parts = check_md5_parts(md5_parts, number_parts)
        .map_err(|message| ApiError::bad_request(json!({ "non_field_errors": [message] })))?;
    Ok(CreateRequest {
        number_parts,
        md5_parts,
        checksum,
        content_encoding,
        update_interval,
    })
}

/// A multihash must be sha2-256: `1220` + 64 hex digits.
fn check_multihash(value: &str) -> Result<(), String> {
    let bytes = hex::decode(value).map_err(|e| format!("Invalid multihash value; {e}"))?;
    let [code, len, digest @ ..] = bytes.as_slice() else {
        return Err("Invalid multihash value; multihash is too short".into());
    };
    if *code != 0x12 {
        return Err(format!(
            "Invalid multihash value: must be sha2-256 but is 0x{code:02x}"
        ));
    }
    if usize::from(*len) != digest.len() {
        return Err(format!(
            "Invalid multihash value; Inconsistent multihash length {} != {len}",
            digest.len()
        ));
    }
    if digest.len() != 32 {
        return Err("Invalid multihash value: a sha2-256 digest has 32 bytes".into());
    }
    Ok(())
}

/// Exactly one base64 md5 per part number 1..=number_parts; returns them by part number.
fn check_md5_parts(value: &Value, number_parts: u32) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "Invalid md5_parts field: must be a list but is {}",
            json_type(value)
        ));
    };
    let wrong_count = || {
        format!(
            "Missing, too many or duplicate part_number in md5_parts field list: list should have \
             {number_parts} item(s)."
        )
    };
    if items.len() != number_parts as usize {
        return Err(wrong_count());
    }
    let mut md5s: Vec<Option<String>> = vec![None; number_parts as usize];
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(format!(
                "Invalid md5_parts[{i}] value: must be dict but is {}",
                json_type(item)
            ));
        };
        let Some(part) = item.get("part_number") else {
            return Err(format!(
                "Invalid md5_parts[{i}] value: part_number field missing"
            ));
        };
        let slot = part
            .as_u64()
            .filter(|n| (1..=u64::from(number_parts)).contains(n))
            .and_then(|n| md5s.get_mut(usize::try_from(n - 1).ok()?))
            .ok_or_else(|| {
                format!(
                    "Invalid md5_parts[{i}].part_number value: part_number field must be an int \
                     between 1 and {number_parts}"
                )
            })?;
        let Some(md5) = item.get("md5") else {
            return Err(format!("Invalid md5_parts[{i}] value: md5 field missing"));
        };
        match md5 {
            Value::String(md5) if !md5.is_empty() && STANDARD.decode(md5).is_ok() => {
                if slot.replace(md5.clone()).is_some() {
                    return Err(wrong_count());
                }
            }
            _ => {
                return Err(format!(
                    "Invalid md5_parts[{i}].md5 value: md5 field must be a non empty b64 encoded \
                     string"
                ));
            }
        }
    }
    md5s.into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(wrong_count)
}

async fn create_upload(ctx: Ctx, P(path): P<AssetPath>, body: Body) -> Response {
    ctx.call(CallKind::CreateUpload, async {
        let (version, key) = path.parse()?;
        let request = parse_create(read_json(&ctx.headers, body).await?, version)?;
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        let asset = state.asset_mut(&key)?;
        if asset.external_href.is_some() {
            return Err(ApiError::bad_request(
                "Not allowed to create multipart uploads on external assets",
            ));
        }
        // Checked and inserted under one lock: of concurrent creates exactly one wins.
        if let Some(blocking) = asset.in_progress() {
            return Err(if ctx.shared.legacy_in_progress_400 {
                ApiError::bad_request("Upload already in progress")
            } else {
                ApiError::new(StatusCode::CONFLICT, "Upload already in progress")
                    .with_upload_id(&blocking.id)
            });
        }
        let id = super::new_upload_id();
        // Whole seconds, so that the URL's expiry and the JSON's agree.
        let expires = ctx.shared.expiry(now).timestamp();
        let upload = Upload {
            id: id.clone(),
            status: UploadState::InProgress,
            number_parts: request.number_parts,
            md5_parts: request.md5_parts,
            checksum: request.checksum,
            created: now,
            ended: None,
            expires: DateTime::from_timestamp(expires, 0).unwrap_or(DateTime::<Utc>::MAX_UTC),
            content_encoding: request.content_encoding,
            update_interval: request.update_interval,
            parts: Default::default(),
            etag: state::new_etag(),
        };
        let json = ctx.upload_json(&upload, version);
        asset.uploads.push(upload);
        state.upload_index.insert(id.clone(), key);
        drop(state);
        let mut response = json_response(StatusCode::CREATED, json);
        if let Ok(location) = HeaderValue::from_str(&format!("{}/{id}", ctx.self_url())) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    })
    .await
}

/// `?limit=` of listings: 1..=100, 100 by default.
fn parse_limit(ctx: &Ctx) -> Result<usize, ApiError> {
    match ctx.query_param("limit") {
        None => Ok(MAX_LIMIT),
        Some(limit) => limit
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid limit query parameter: must be an integer between 1 and {MAX_LIMIT}"
                ))
            }),
    }
}

fn next_link(ctx: &Ctx, params: &[(&str, String)]) -> Value {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    json!({"rel": "next", "href": format!("{}?{query}", ctx.self_url())})
}

/// Newest first, paginated with an opaque cursor (the id of the first upload of the page).
async fn list_uploads(ctx: Ctx, P(path): P<AssetPath>) -> Response {
    ctx.call(CallKind::ListUploads, async {
        let (version, key) = path.parse()?;
        let limit = parse_limit(&ctx)?;
        let status = ctx.query_param("status");
        let cursor = ctx
            .query_param("cursor")
            .map(|c| {
                URL_SAFE_NO_PAD
                    .decode(&c)
                    .ok()
                    .and_then(|id| String::from_utf8(id).ok())
                    .ok_or_else(|| ApiError::not_found("Invalid cursor"))
            })
            .transpose()?;
        let state = ctx.shared.lock();
        let asset = state.asset(&key)?;
        let mut uploads: Vec<&Upload> = asset
            .uploads
            .iter()
            .filter(|u| match &status {
                Some(s) if !s.is_empty() => UploadState::parse(s) == Some(u.status),
                _ => true,
            })
            .collect();
        uploads.sort_by_key(|u| std::cmp::Reverse(u.created));
        let start = match &cursor {
            None => 0,
            Some(id) => uploads
                .iter()
                .position(|u| &u.id == id)
                .ok_or_else(|| ApiError::not_found("Invalid cursor"))?,
        };
        let page: Vec<Value> = uploads
            .iter()
            .skip(start)
            .take(limit)
            .map(|u| ctx.upload_json(u, version))
            .collect();
        let mut links = Vec::new();
        if let Some(next) = uploads.get(start + limit) {
            let mut params = vec![("cursor", URL_SAFE_NO_PAD.encode(&next.id))];
            params.push(("limit", limit.to_string()));
            if let Some(status) = &status {
                params.push(("status", status.clone()));
            }
            links.push(next_link(&ctx, &params));
        }
        Ok(axum::Json(json!({"uploads": page, "links": links})).into_response())
    })
    .await
}

async fn get_upload(ctx: Ctx, P(path): P<UploadPath>) -> Response {
    ctx.call(CallKind::GetUpload, async {
        let (version, key, id) = path.parse()?;
        let state = ctx.shared.lock();
        let upload = state.upload(&key, &id)?;
        Ok(ctx.with_etag(&upload.etag, ctx.upload_json(upload, version)))
    })
    .await
}

fn part_json(number: u32, part: &Part) -> Value {
    json!({
        "etag": format!("\"{}\"", part.md5_hex),
        "part_number": number,
        "modified": timestamp(part.modified),
        "size": part.blob.len(),
    })
}

/// The parts S3 holds; `offset` is S3's part-number marker.
async fn list_parts(ctx: Ctx, P(path): P<UploadPath>) -> Response {
    ctx.call(CallKind::ListParts, async {
        let (_, key, id) = path.parse()?;
        let limit = parse_limit(&ctx)?;
        let offset = match ctx.query_param("offset") {
            None => 0,
            Some(o) => o.parse::<u32>().map_err(|_| {
                ApiError::bad_request("Invalid offset query parameter: must be a positive integer")
            })?,
        };
        let state = ctx.shared.lock();
        let upload = state.upload(&key, &id)?;
        if upload.status != UploadState::InProgress {
            // S3 answers NoSuchUpload, which the real server does not catch.
            return Err(ApiError::internal());
        }
        let mut remaining = upload.parts.range(offset.saturating_add(1)..);
        let page: Vec<(u32, &Part)> = remaining
            .by_ref()
            .take(limit)
            .map(|(n, p)| (*n, p))
            .collect();
        let mut links = Vec::new();
        if let (Some(_), Some((last, _))) = (remaining.next(), page.last()) {
            links.push(next_link(
                &ctx,
                &[("limit", limit.to_string()), ("offset", last.to_string())],
            ));
        }
        let parts: Vec<Value> = page.iter().map(|(n, p)| part_json(*n, p)).collect();
        Ok(axum::Json(json!({"parts": parts, "links": links})).into_response())
    })
    .await
}

/// `{"parts": [{"etag": .., "part_number": ..}, ..]}`, validated as the real serializer does.
fn parse_complete(body: Value) -> Result<Vec<(u32, String)>, ApiError> {
    let body = expect_object(body)?;
    let parts = match body.get("parts") {
        None => {
            return Err(ApiError::bad_request(
                json!({"parts": "Missing required field"}),
            ));
        }
        Some(Value::Null) => return Err(ApiError::field("parts", "This field may not be null.")),
        Some(Value::Array(parts)) => parts,
        Some(other) => {
            return Err(ApiError::field(
                "parts",
                format!(
                    "Expected a list of items but got type \"{}\".",
                    json_type(other)
                ),
            ));
        }
    };
    if parts.is_empty() {
        return Err(ApiError::field("parts", "This list may not be empty."));
    }
    let mut item_errors = Map::new();
    let mut parsed = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let mut errors = FieldErrors::default();
        let Value::Object(part) = part else {
            errors.add(
                "non_field_errors",
                format!(
                    "Invalid data. Expected a dictionary, but got {}.",
                    json_type(part)
                ),
            );
            item_errors.insert(i.to_string(), errors.into_value());
            continue;
        };
        let etag = match part.get("etag") {
            None | Some(Value::Null) => {
                errors.add("etag", "This field is required.");
                None
            }
            Some(Value::String(e)) if e.trim().is_empty() => {
                errors.add("etag", "This field may not be blank.");
                None
            }
            Some(Value::String(e)) => Some(e.clone()),
            Some(_) => {
                errors.add("etag", "Not a valid string.");
                None
            }
        };
        if matches!(part.get("part_number"), None | Some(Value::Null)) {
            errors.add("part_number", "This field is required.");
        }
        let number = int_field(&mut errors, "part_number", part.get("part_number"), 1..=100);
        match (etag, number.and_then(|n| u32::try_from(n).ok())) {
            (Some(etag), Some(number)) if errors.is_empty() => parsed.push((number, etag)),
            _ => {
                item_errors.insert(i.to_string(), errors.into_value());
            }
        }
    }
    if !item_errors.is_empty() {
        return Err(ApiError::bad_request(json!({"parts": item_errors})));
    }
    Ok(parsed)
}

/// How botocore words an S3 refusal of CompleteMultipartUpload; the server passes it on.
fn s3_refusal(code: &str, message: &str) -> ApiError {
    ApiError::bad_request(json!([format!(
        "An error occurred ({code}) when calling the CompleteMultipartUpload operation: {message}"
    )]))
}

fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
}

async fn complete(ctx: Ctx, P(path): P<UploadPath>, body: Body) -> Response {
    ctx.call(CallKind::Complete, async {
        let (version, key, id) = path.parse()?;
        let parts = parse_complete(read_json(&ctx.headers, body).await?)?;
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        let upload = state.upload(&key, &id)?;
        // In the real server's order: the count, then the status, then what S3 says.
        if parts.len() > upload.number_parts as usize {
            return Err(ApiError::bad_request(json!({"parts": ["Too many parts"]})));
        }
        if parts.len() < upload.number_parts as usize {
            return Err(ApiError::bad_request(json!({"parts": ["Too few parts"]})));
        }
        if upload.status != UploadState::InProgress {
            return Err(ApiError::new(StatusCode::CONFLICT, "No upload in progress"));
        }
        if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(s3_refusal(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. Parts must be ordered by part \
                 number.",
            ));
        }
        let mut blobs = Vec::with_capacity(parts.len());
        for (number, etag) in &parts {
            match upload.parts.get(number) {
                Some(part) if part.md5_hex == normalize_etag(etag) => blobs.push(part.blob.clone()),
                _ => {
                    return Err(s3_refusal(
                        "InvalidPart",
                        "One or more of the specified parts could not be found.  The part may \
                         not have been uploaded, or the specified entity tag may not have \
                         matched the part's entity tag.",
                    ));
                }
            }
        }
        if blobs
            .split_last()
            .is_some_and(|(_, init)| init.iter().any(|b| b.len() < MIN_PART_SIZE))
        {
            return Err(s3_refusal(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
            ));
        }
        let size = blobs.iter().map(|b| b.len()).sum();

        let upload = state.upload_mut(&key, &id)?;
        upload.finish(UploadState::Completed, now);
        // The object holds its own references to the blobs it uses.
        let unused_parts = std::mem::take(&mut upload.parts);
        let checksum = upload.checksum.clone();
        let content_encoding = upload.content_encoding.clone();
        let asset = state.asset_mut(&key)?;
        let replaced = asset.object.replace(StoredObject {
            blobs,
            size,
            content_encoding,
        });
        asset.checksum = Some(checksum);
        asset.size = Some(size);
        asset.touch(now);
        let json = ctx.upload_json(state.upload(&key, &id)?, version);
        drop(state);
        // Old files are deleted outside the lock.
        drop((unused_parts, replaced));
        Ok(axum::Json(json).into_response())
    })
    .await
}

async fn abort(ctx: Ctx, P(path): P<UploadPath>, body: Body) -> Response {
    ctx.call(CallKind::Abort, async {
        let (version, key, id) = path.parse()?;
        // Parsed like DRF does, only to refuse garbage.
        read_json(&ctx.headers, body).await?;
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        let upload = state.upload_mut(&key, &id)?;
        if upload.status != UploadState::InProgress {
            // S3 answers NoSuchUpload, which the real server does not catch.
            return Err(ApiError::internal());
        }
        upload.finish(UploadState::Aborted, now);
        let parts = std::mem::take(&mut upload.parts);
        let json = ctx.upload_json(upload, version);
        drop(state);
        drop(parts);
        Ok(axum::Json(json).into_response())
    })
    .await
}

async fn not_found() -> ApiError {
    ApiError::not_found("Not found")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method \"{method}\" not allowed."),
    )
}

async fn add_fault(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    let result = async {
        let body = axum::body::to_bytes(body, MAX_JSON_BODY)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let request: FaultRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid fault: {e}")))?;
        let spec = FaultSpec::try_from(request).map_err(ApiError::bad_request)?;
        tracing::info!(fault = %spec, "fault injected");
        let json = serde_json::to_value(FaultRequest::from(&spec)).unwrap_or_default();
        shared.faults.add(spec);
        Ok::<_, ApiError>(json_response(StatusCode::CREATED, json))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.faults.clear();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BandwidthRequest {
    bytes_per_second: Option<u64>,
}

async fn set_bandwidth(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    let result = async {
        let body = axum::body::to_bytes(body, MAX_JSON_BODY)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let request: BandwidthRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "invalid body, expected {{\"bytes_per_second\": N or null}}: {e}"
            ))
        })?;
        shared.faults.set_bandwidth_limit(request.bytes_per_second);
        Ok::<_, ApiError>(
            axum::Json(json!({"bytes_per_second": shared.faults.bandwidth_limit()}))
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn dump_state(State(shared): State<Arc<Shared>>) -> Response {
    let mut dump = shared.lock().dump();
    let faults: Vec<FaultRequest> = shared.faults.pending().iter().map(Into::into).collect();
    let calls: Map<String, Value> = CallKind::ALL
        .iter()
        .map(|k| (k.name().to_owned(), shared.calls.get(*k).into()))
        .collect();
    let injected: Map<String, Value> = CallKind::ALL
        .iter()
        .map(|k| (k.name().to_owned(), shared.faults.injected(*k).into()))
        .collect();
    if let Value::Object(map) = &mut dump {
        map.insert("faults".into(), json!(faults));
        map.insert("calls".into(), calls.into());
        map.insert("injected".into(), injected.into());
        map.insert(
            "bytes_per_second".into(),
            json!(shared.faults.bandwidth_limit()),
        );
    }
    axum::Json(dump).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multihash_must_be_sha256() {
        let ok = format!("1220{}", "ab".repeat(32));
        assert!(check_multihash(&ok).is_ok());
        assert!(check_multihash(&format!("1320{}", "ab".repeat(32))).is_err());
        assert!(check_multihash(&format!("1220{}", "ab".repeat(31))).is_err());
        assert!(check_multihash("12").is_err());
        assert!(check_multihash("zz").is_err());
    }

    #[test]
    fn md5_parts_need_one_entry_per_part() {
        let md5 = "1B2M2Y8AsgTpgAmY2PhCfg==";
        let ok = json!([{"part_number": 2, "md5": md5}, {"part_number": 1, "md5": "AAAA"}]);
        assert_eq!(check_md5_parts(&ok, 2).unwrap(), vec!["AAAA", md5]);
        for bad in [
            json!([{"part_number": 1, "md5": md5}]),
            json!([{"part_number": 1, "md5": md5}, {"part_number": 1, "md5": md5}]),
            json!([{"part_number": 1, "md5": md5}, {"part_number": 3, "md5": md5}]),
            json!([{"part_number": 1, "md5": md5}, {"part_number": 2, "md5": "not b64!"}]),
            json!([{"part_number": 1, "md5": md5}, {"part_number": 2}]),
            json!({"part_number": 1}),
        ] {
            assert!(check_md5_parts(&bad, 2).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_body_errors_are_reported_per_field() {
        let err = parse_create(
            json!({"number_parts": 101, "content_encoding": "zstd", "update_interval": 9999}),
            ApiVersion::V1,
        )
        .unwrap_err();
        let body = format!("{err:?}");
        for field in [
            "number_parts",
            "file:checksum",
            "content_encoding",
            "update_interval",
            "md5_parts",
        ] {
            assert!(body.contains(field), "{field} missing from {body}");
        }
    }

    #[test]
    fn complete_body_validation() {
        assert!(parse_complete(json!({})).is_err());
        assert!(parse_complete(json!({"parts": []})).is_err());
        assert!(parse_complete(json!({"parts": [{"etag": "x", "part_number": 0}]})).is_err());
        let parts = parse_complete(json!({"parts": [{"etag": "\"ab\"", "part_number": 1}]}));
        assert_eq!(parts.unwrap(), vec![(1, "\"ab\"".to_owned())]);
        assert_eq!(normalize_etag(" \"AB\" "), "ab");
    }
}
