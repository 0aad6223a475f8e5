//! The service-stac API (STAC objects and the asset-upload calls) and the admin API.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use md5::{Digest as _, Md5};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ApiError, FieldErrors};
use super::faults::{CallKind, FaultAction, FaultRequest, FaultSpec};
use super::request::{ApiVersion, Ctx, P};
use super::rules;
use super::state::{
    self, Asset, Collection, Item, Part, PublicObject, StacMeta, StoredObject, Upload, UploadState,
};
use super::{AssetKey, Shared, s3};

/// API request bodies are small JSON documents.
const MAX_JSON_BODY: usize = 1024 * 1024;
/// S3's minimum size of every part but the last.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The object's `Cache-Control` when the collection sets no `cache_control_header` (an admin
/// setting the emulator does not model): utils.py `get_s3_cache_control_value` with
/// `STORAGE_ASSETS_CACHE_SECONDS` (settings_prod.py, `HTTP_ASSETS_CACHE_SECONDS`, default 7200).
const DEFAULT_CACHE_CONTROL: &str = "max-age=7200, public";
/// The page size of listings when the client gives none, and the largest it may ask for.
const MAX_LIMIT: usize = 100;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = "/api/stac/{version}/collections/{collection}";
    let mut router = Router::new()
        .route(api, get(get_stac).put(put_stac).delete(delete_stac))
        .route(&format!("{api}/items"), get(list_items).post(post_items))
        .route(&format!("{api}/items/{{item}}/assets"), get(list_assets))
        .route(
            &format!("{api}/items/{{item}}"),
            get(get_stac).put(put_stac).delete(delete_stac),
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

impl Ctx {
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

    /// An asset's fields as serializers/item.py `AssetBaseSerializer` answers them (no
    /// `file:size`: the server keeps it to itself).
    fn asset_fields(
        &self,
        key: &AssetKey,
        asset: &Asset,
        version: ApiVersion,
    ) -> Map<String, Value> {
        let mut json = Map::new();
        json.insert("id".into(), key.asset.clone().into());
        json.insert("type".into(), asset.media_type.clone().into());
        for (name, value) in &asset.fields {
            match (name.as_str(), version) {
                ("roles", ApiVersion::V09) => {}
                // An asset without roles has no `roles` key in the server's answer.
                ("roles", _) if value.as_array().is_some_and(Vec::is_empty) => {}
                ("gsd", ApiVersion::V09) => {
                    json.insert("eo:gsd".into(), value.clone());
                }
                _ => {
                    json.insert(name.clone(), value.clone());
                }
            }
        }
        let href = match (&asset.external_href, &asset.object) {
            (Some(external), _) => external.clone(),
            // The server builds `href` from the asset's path whether or not a file was
            // uploaded yet (utils.py `build_asset_href`).
            (None, _) => format!("{}{}", self.origin(), key.data_path()),
        };
        json.insert("href".into(), href.into());
        if let Some(checksum) = &asset.checksum {
            json.insert(version.checksum_field().into(), checksum.clone().into());
        }
        json.insert("created".into(), timestamp(asset.created).into());
        json.insert("updated".into(), timestamp(asset.updated).into());
        json
    }

    fn asset_json(&self, key: &AssetKey, asset: &Asset, version: ApiVersion) -> Value {
        let mut json = self.asset_fields(key, asset, version);
        let links = self.relation_links(
            version,
            &key.collection,
            key.item.as_deref(),
            Some(&key.asset),
        );
        json.insert("links".into(), links.into());
        Value::Object(json)
    }

    fn upload_json(&self, upload: &Upload, version: ApiVersion) -> Value {
        let origin = self.origin();
        // Presigned URLs exist only while the upload is in progress, as on the real server.
        // serializers/upload.py drops `urls` once the upload is no longer in progress.
        let urls: Vec<Value> = if upload.status == UploadState::InProgress {
            let expires = upload.expires.timestamp();
            upload
                .url_parts
                .iter()
                .map(|(label, part, md5)| {
                    // botocore writes a boolean part number as `true` in the URL.
                    let segment = match label {
                        Value::Bool(b) => b.to_string(),
                        _ => part.to_string(),
                    };
                    json!({
                        "url": self.shared.signer.url(&origin, &upload.id, &segment, md5, expires),
                        "part": label,
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
        json.insert("md5_parts".into(), upload.md5_parts.clone());
        if upload.status == UploadState::InProgress {
            json.insert("urls".into(), urls.into());
        }
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

/// The body of a write as DRF takes it: an object ("No data provided" for `null`).
fn body_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        Value::Null => Err(ApiError::bad_request(
            json!({"non_field_errors": ["No data provided"]}),
        )),
        other => Err(ApiError::bad_request(json!({
            "non_field_errors": [format!(
                "Invalid data. Expected a dictionary, but got {}.",
                rules::py_type(&other)
            )]
        }))),
    }
}

/// Step 1 of the rules: the fields, every error at once.
fn fields(
    table: &[rules::Field],
    version: ApiVersion,
    body: &Map<String, Value>,
    partial: bool,
    context: &rules::Context<'_>,
) -> Result<Map<String, Value>, ApiError> {
    rules::check_fields(table, version, body, partial, context)
        .map_err(|e| ApiError::bad_request(Value::Object(e)))
}

/// `null`s are not stored (the server's answers leave them out).
fn without_nulls(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter().filter(|(_, v)| !v.is_null()).collect()
}

/// An item whose `expires` has passed is gone from reads (views/item.py, `is_active` filter).
fn expired(item: &Item, now: DateTime<Utc>) -> bool {
    item.meta
        .fields
        .get("properties")
        .and_then(|p| p.get("expires"))
        .and_then(Value::as_str)
        .and_then(rules::parse_datetime)
        .is_some_and(|t| t < now)
}

impl Ctx {
    fn api_base(&self, version: ApiVersion) -> String {
        format!("{}/api/stac/{}", self.origin(), version.as_str())
    }

    /// serializers/utils.py `get_relation_links` of a collection, an item or an asset.
    fn relation_links(
        &self,
        version: ApiVersion,
        collection: &str,
        item: Option<&str>,
        asset: Option<&str>,
    ) -> Vec<Value> {
        let base = self.api_base(version);
        let collection_url = format!("{base}/collections/{collection}");
        let root = json!({"rel": "root", "href": format!("{base}/")});
        match (item, asset) {
            (None, None) => {
                let mut links = vec![
                    json!({"rel": "self", "href": collection_url}),
                    root,
                    json!({"rel": "parent", "href": format!("{base}/")}),
                    json!({"rel": "items", "href": format!("{collection_url}/items")}),
                ];
                if version == ApiVersion::V1 {
                    links
                        .push(json!({"rel": "assets", "href": format!("{collection_url}/assets")}));
                }
                links
            }
            (Some(item), None) => vec![
                json!({"rel": "self", "href": format!("{collection_url}/items/{item}")}),
                root,
                json!({"rel": "parent", "href": collection_url}),
                json!({"rel": "collection", "href": collection_url}),
            ],
            (None, Some(asset)) => vec![
                json!({"rel": "self", "href": format!("{collection_url}/assets/{asset}")}),
                root,
                json!({"rel": "parent", "href": collection_url}),
                json!({"rel": "collection", "href": collection_url}),
            ],
            (Some(item), Some(asset)) => {
                let item_url = format!("{collection_url}/items/{item}");
                vec![
                    json!({"rel": "self", "href": format!("{item_url}/assets/{asset}")}),
                    root,
                    json!({"rel": "parent", "href": item_url}),
                    json!({"rel": "collection", "href": collection_url}),
                    json!({"rel": "item", "href": item_url}),
                ]
            }
        }
    }

    /// An item as serializers/item.py `ItemSerializer` answers it.
    fn item_json(&self, version: ApiVersion, collection: &str, id: &str, item: &Item) -> Value {
        let fields = &item.meta.fields;
        let geometry = fields.get("geometry").cloned().unwrap_or(Value::Null);
        let stored = fields
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut properties = Map::new();
        for field in rules::ITEM_PROPERTIES {
            let value = match field.name {
                "created" => Some(rules::isoformat(item.meta.created).into()),
                "updated" => Some(rules::isoformat(item.meta.updated).into()),
                name => stored.get(name).cloned(),
            };
            if let Some(value) = value {
                properties.insert(field.name.into(), value);
            }
        }
        let mut extensions = vec![json!(
            "https://stac-extensions.github.io/timestamps/v1.1.0/schema.json"
        )];
        if collection.starts_with("ch.meteoschweiz.ogd-forecasting-icon") {
            extensions.push(json!(
                "https://stac-extensions.github.io/forecast/v0.2.0/schema.json"
            ));
        }
        let mut links = self.relation_links(version, collection, Some(id), None);
        if let Some(Value::Array(user)) = fields.get("links") {
            links.extend(user.iter().cloned());
        }
        let assets: Map<String, Value> = item
            .assets
            .iter()
            .map(|(name, asset)| {
                let key = AssetKey::item_asset(collection, id, name);
                let mut json = self.asset_fields(&key, asset, version);
                json.remove("id");
                (name.clone(), Value::Object(json))
            })
            .collect();
        json!({
            "id": id,
            "collection": collection,
            "type": "Feature",
            "stac_version": version.stac_version(),
            "bbox": rules::bbox(&geometry),
            "geometry": geometry,
            "properties": properties,
            "stac_extensions": extensions,
            "links": links,
            "assets": assets,
        })
    }

    /// A collection as serializers/collection.py `CollectionSerializer` answers it; extent and
    /// summaries are computed at once (the server does it a little later).
    fn collection_json(&self, version: ApiVersion, id: &str, collection: &Collection) -> Value {
        let fields = &collection.meta.fields;
        let mut json = Map::new();
        json.insert("stac_version".into(), version.stac_version().into());
        json.insert("id".into(), id.into());
        for name in ["title", "description"] {
            if let Some(v) = fields.get(name) {
                json.insert(name.into(), v.clone());
            }
        }
        // Summaries of the items' assets, empty lists left out.
        let mut summaries = Map::new();
        let gsd = match version {
            ApiVersion::V1 => "gsd",
            ApiVersion::V09 => "eo:gsd",
        };
        for (name, stored) in [
            ("proj:epsg", "proj:epsg"),
            (gsd, "gsd"),
            ("geoadmin:variant", "geoadmin:variant"),
            ("geoadmin:lang", "geoadmin:lang"),
        ] {
            let mut values: Vec<Value> = Vec::new();
            for asset in collection.items.values().flat_map(|i| i.assets.values()) {
                if let Some(v) = asset.fields.get(stored)
                    && !values.contains(v)
                {
                    values.push(v.clone());
                }
            }
            if !values.is_empty() {
                summaries.insert(name.into(), values.into());
            }
        }
        json.insert("summaries".into(), summaries.into());
        json.insert("extent".into(), extent(collection));
        if let Some(Value::Array(providers)) = fields.get("providers")
            && !providers.is_empty()
        {
            json.insert("providers".into(), providers.clone().into());
        }
        if let Some(license) = fields.get("license") {
            json.insert("license".into(), license.clone());
        }
        json.insert(
            "created".into(),
            rules::isoformat(collection.meta.created).into(),
        );
        json.insert(
            "updated".into(),
            rules::isoformat(collection.meta.updated).into(),
        );
        let mut links = self.relation_links(version, id, None, None);
        if let Some(Value::Array(user)) = fields.get("links") {
            links.extend(user.iter().cloned());
        }
        json.insert("links".into(), links.into());
        json.insert(
            "crs".into(),
            json!(["http://www.opengis.net/def/crs/OGC/1.3/CRS84"]),
        );
        json.insert("itemType".into(), "Feature".into());
        let assets: Map<String, Value> = collection
            .assets
            .iter()
            .map(|(name, asset)| {
                let key = AssetKey::collection_asset(id, name);
                let mut json = self.asset_fields(&key, asset, version);
                json.remove("id");
                (name.clone(), Value::Object(json))
            })
            .collect();
        json.insert("assets".into(), assets.into());
        if version == ApiVersion::V1 {
            json.insert("type".into(), "Collection".into());
        }
        Value::Object(json)
    }
}

/// The extent of a collection's items: the union of their boxes, the earliest start and the
/// latest end (`[0, 0, 0, 0]` and nulls without items).
fn extent(collection: &Collection) -> Value {
    let mut bbox: Option<[f64; 4]> = None;
    let (mut start, mut end): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    for item in collection.items.values() {
        let fields = &item.meta.fields;
        if let Some(geometry) = fields.get("geometry") {
            let b = rules::bbox(geometry);
            let b: Vec<f64> = b
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .collect();
            if let [w, s, e, n] = b[..] {
                bbox = Some(match bbox {
                    None => [w, s, e, n],
                    Some([w0, s0, e0, n0]) => [w0.min(w), s0.min(s), e0.max(e), n0.max(n)],
                });
            }
        }
        let time = |k: &str| {
            fields
                .get("properties")
                .and_then(|p| p.get(k))
                .and_then(Value::as_str)
                .and_then(rules::parse_datetime)
        };
        let first = time("datetime").or_else(|| time("start_datetime"));
        let last = time("datetime").or_else(|| time("end_datetime"));
        start = match (start, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        end = match (end, last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    json!({
        "spatial": {"bbox": [bbox.unwrap_or([0.0; 4])]},
        "temporal": {"interval": [[start.map(rules::isoformat), end.map(rules::isoformat)]]},
    })
}

/// The conditional headers of a request against the object's current ETag (`None`: it does
/// not exist), as Django's `get_conditional_response` (behind the views' `@etag`) judges them:
/// `If-Match` first (`*` or a strong match, and never for a missing object), then
/// `If-None-Match` (`*` or a weak match fails it). A failed check is 304 for GET and HEAD,
/// otherwise 412 with an empty body.
fn precondition(ctx: &Ctx, etag: Option<&str>) -> Option<Response> {
    let quoted = etag.map(|e| format!("\"{e}\""));
    let tags = |name: header::HeaderName| -> Option<Vec<String>> {
        let values: Vec<String> = ctx
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        (!values.is_empty()).then_some(values)
    };
    let failed = || -> Response {
        if matches!(ctx.method, Method::GET | Method::HEAD) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            StatusCode::PRECONDITION_FAILED.into_response()
        }
    };
    if let Some(wanted) = tags(header::IF_MATCH) {
        let passes = match &quoted {
            None => false,
            Some(_) if wanted == ["*"] => true,
            Some(q) => wanted.iter().any(|t| t == q),
        };
        if !passes {
            return Some(StatusCode::PRECONDITION_FAILED.into_response());
        }
    }
    if let (Some(unwanted), Some(q)) = (tags(header::IF_NONE_MATCH), &quoted) {
        let hit = unwanted == ["*"]
            || unwanted
                .iter()
                .any(|t| t.trim_start_matches("W/") == q.as_str());
        if hit {
            return Some(failed());
        }
    }
    None
}

/// The current ETag of a collection, or of an item when `item` is given (expired items keep
/// theirs: the server's etag lookup does not filter them).
fn stac_etag(ctx: &Ctx, collection: &str, item: Option<&str>) -> Option<String> {
    let state = ctx.shared.lock();
    let c = state.collections.get(collection)?;
    match item {
        None => Some(c.meta.etag.clone()),
        Some(id) => c.items.get(id).map(Item::etag),
    }
}

/// The current ETag of an asset.
fn asset_etag(ctx: &Ctx, key: &AssetKey) -> Option<String> {
    ctx.shared.lock().asset(key).ok().map(|a| a.etag.clone())
}

/// A JSON answer with the object's ETag (GET).
fn tagged(etag: &str, body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

async fn get_stac(ctx: Ctx, P(path): P<StacPath>) -> Response {
    ctx.run(async {
        let version = ApiVersion::parse(&path.version)?;
        let etag = stac_etag(&ctx, &path.collection, path.item.as_deref());
        if let Some(answer) = precondition(&ctx, etag.as_deref()) {
            return Ok(answer);
        }
        let now = ctx.shared.now();
        let state = ctx.shared.lock();
        let collection = state
            .collections
            .get(&path.collection)
            .ok_or_else(|| ApiError::not_found("Not found"))?;
        let json = match &path.item {
            None => ctx.collection_json(version, &path.collection, collection),
            Some(id) => {
                let item = collection
                    .items
                    .get(id)
                    .filter(|i| !expired(i, now))
                    .ok_or_else(|| ApiError::not_found("Not found"))?;
                ctx.item_json(version, &path.collection, id, item)
            }
        };
        Ok(match etag {
            Some(etag) => tagged(&etag, json),
            None => axum::Json(json).into_response(),
        })
    })
    .await
}

/// `PUT` of a collection, or of an item when the path names one, through the rules in the
/// server's order.
async fn put_stac(ctx: Ctx, P(path): P<StacPath>, body: Body) -> Response {
    ctx.call(CallKind::PutStac, async {
        let version = ApiVersion::parse(&path.version)?;
        // Judged before the view runs, apart from its write: not atomic, as on the server.
        let etag = stac_etag(&ctx, &path.collection, path.item.as_deref());
        if let Some(answer) = precondition(&ctx, etag.as_deref()) {
            return Ok(answer);
        }
        let body = body_object(read_json(&ctx.headers, body).await?)?;
        let now = ctx.shared.now();
        let context = rules::Context {
            existing_type: None,
        };
        match &path.item {
            None => {
                let clean = fields(rules::COLLECTION, version, &body, false, &context)?;
                rules::check_payload(rules::COLLECTION, version, &body)?;
                rules::renaming(&clean, &path.collection)?;
                let mut stored = without_nulls(clean);
                stored.remove("id");
                let mut state = ctx.shared.lock();
                let created = !state.collections.contains_key(&path.collection);
                let collection = state
                    .collections
                    .entry(path.collection.clone())
                    .or_insert_with(|| Collection::new(Map::new(), now));
                collection.meta.fields = stored;
                collection.meta.touch(now);
                let json = ctx.collection_json(version, &path.collection, collection);
                Ok(json_response(created_or_ok(created), json))
            }
            Some(id) => {
                let clean = item_fields(version, &body, now)?;
                let mut state = ctx.shared.lock();
                let collection = state
                    .collections
                    .get_mut(&path.collection)
                    .ok_or_else(|| ApiError::not_found("Not found."))?;
                rules::renaming(&clean, id)?;
                if clean.contains_key("assets") {
                    return Err(rules::item_assets_assigned());
                }
                let mut stored = without_nulls(clean);
                stored.remove("id");
                let created = !collection.items.contains_key(id);
                let item = collection.items.entry(id.clone()).or_insert_with(|| Item {
                    meta: StacMeta::new(Map::new(), now),
                    assets: Default::default(),
                });
                item.meta.fields = stored;
                item.meta.touch(now);
                let json = ctx.item_json(version, &path.collection, id, item);
                Ok(json_response(created_or_ok(created), json))
            }
        }
    })
    .await
}

/// Whether a GeoJSON geometry has a position with more than two coordinates.
fn has_z(value: &Value) -> bool {
    match value {
        Value::Object(map) => ["coordinates", "geometries"]
            .iter()
            .filter_map(|k| map.get(*k))
            .any(has_z),
        Value::Array(list) if list.iter().all(Value::is_number) => list.len() > 2,
        Value::Array(list) => list.iter().any(has_z),
        _ => false,
    }
}

/// An item body through the rules of serializers/item.py `ItemSerializer`, in the server's
/// order: its fields, its datetimes and `expires`, then the keys it may not have.
fn item_fields(
    version: ApiVersion,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, ApiError> {
    // utils.py `IsoDurationField` hands the value to Django's `parse_duration`, whose regex
    // raises TypeError on anything but a string: the server's catch-all answers 500.
    if let Some(Value::Object(properties)) = body.get("properties") {
        for name in ["forecast:horizon", "forecast:duration"] {
            if let Some(v @ (Value::Number(_) | Value::Bool(_))) = properties.get(name) {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "TypeError(\"expected string or bytes-like object, got '{}'\")",
                        rules::py_type(v)
                    ),
                ));
            }
        }
    }
    let context = rules::Context {
        existing_type: None,
    };
    let clean = fields(rules::ITEM, version, body, false, &context)?;
    // The geometry column is 2-D: PostGIS refuses a third coordinate at the insert, and the
    // server's catch-all answers its DataError as 500.
    if clean.get("geometry").is_some_and(has_z) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "DataError('Geometry has Z dimension but column does not\n')",
        ));
    }
    let properties = clean
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    rules::item_datetimes(&properties)?;
    rules::item_expires(&properties, now)?;
    rules::check_payload(rules::ITEM, version, body)?;
    Ok(clean)
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// The answer of a delete (views/mixins.py `DestroyModelMixin`): 200 with the parent link.
fn deleted(what: &str, parent: String) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "code": 200,
            "description": format!("{what} successfully deleted"),
            "links": [{"rel": "parent", "href": parent}],
        }),
    )
}

/// `DELETE` of a collection or an item: refused while it has children (models with
/// `on_delete=PROTECT`).
async fn delete_stac(ctx: Ctx, P(path): P<StacPath>) -> Response {
    ctx.call(CallKind::PutStac, async {
        let version = ApiVersion::parse(&path.version)?;
        // Judged before the view runs, apart from its write: not atomic, as on the server.
        let etag = stac_etag(&ctx, &path.collection, path.item.as_deref());
        if let Some(answer) = precondition(&ctx, etag.as_deref()) {
            return Ok(answer);
        }
        let now = ctx.shared.now();
        let base = ctx.api_base(version);
        let mut state = ctx.shared.lock();
        let collection = state
            .collections
            .get_mut(&path.collection)
            .ok_or_else(|| ApiError::not_found("Not found."))?;
        match &path.item {
            Some(id) => {
                let item = collection
                    .items
                    .get(id)
                    .filter(|i| !expired(i, now))
                    .ok_or_else(|| ApiError::not_found("Not found."))?;
                if !item.assets.is_empty() {
                    return Err(rules::has_children("Item", "assets"));
                }
                collection.items.remove(id);
                Ok(deleted(
                    &format!("{}/{id}", path.collection),
                    format!("{base}/collections/{}", path.collection),
                ))
            }
            None => {
                // Collection assets protect it too, under the same message.
                if !collection.items.is_empty() || !collection.assets.is_empty() {
                    return Err(rules::has_children("Collection", "items"));
                }
                state.collections.remove(&path.collection);
                Ok(deleted(&path.collection, format!("{base}/")))
            }
        }
    })
    .await
}

async fn get_asset(ctx: Ctx, P(path): P<AssetPath>) -> Response {
    ctx.call(CallKind::GetAsset, async {
        let (version, key) = path.parse()?;
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        let reads = state.reads.entry(key.clone()).or_default();
        if reads.len() == state::READS_KEPT {
            reads.pop_front();
        }
        reads.push_back(std::time::Instant::now());
        if item_expired(&state, &key, now) {
            return Err(ApiError::not_found("Not found."));
        }
        let asset = state.asset(&key)?;
        if let Some(answer) = precondition(&ctx, Some(&asset.etag)) {
            return Ok(answer);
        }
        Ok(tagged(&asset.etag, ctx.asset_json(&key, asset, version)))
    })
    .await
}

fn item_expired(state: &state::State, key: &AssetKey, now: DateTime<Utc>) -> bool {
    key.item.as_ref().is_some_and(|item| {
        state
            .collections
            .get(&key.collection)
            .and_then(|c| c.items.get(item))
            .is_some_and(|i| expired(i, now))
    })
}

/// The field table of an asset of this path.
fn asset_table(key: &AssetKey) -> &'static [rules::Field] {
    if key.item.is_some() {
        rules::ASSET
    } else {
        rules::COLLECTION_ASSET
    }
}

/// Applies the optional fields a body names to the stored ones, under their v1 names: `null`
/// removes one, an absent one is kept. Also for PUT: the serializer leaves absent optional
/// fields out of `validated_data` and `update_or_create` only sets what it is given
/// (serializers/item.py `AssetBaseSerializer.update_or_create`).
fn merge_asset_fields(stored: &mut Map<String, Value>, clean: Map<String, Value>) {
    for (name, value) in clean {
        if ["id", "type", "href"].contains(&name.as_str()) {
            continue;
        }
        let name = if name == "eo:gsd" {
            "gsd".to_owned()
        } else {
            name
        };
        if value.is_null() {
            stored.remove(&name);
        } else {
            stored.insert(name, value);
        }
    }
}

/// The parent of an asset must exist before its body is looked at (views/item.py
/// `AssetDetail.get_serializer`); its collection's external-asset setting.
fn asset_parent(state: &state::State, key: &AssetKey) -> Result<rules::ExternalAssets, ApiError> {
    let collection = state
        .collections
        .get(&key.collection)
        .ok_or_else(|| ApiError::not_found("Not found."))?;
    if let Some(item) = &key.item
        && !collection.items.contains_key(item)
    {
        return Err(ApiError::not_found("Not found."));
    }
    Ok(collection.external.clone())
}

async fn put_asset(ctx: Ctx, P(path): P<AssetPath>, body: Body) -> Response {
    ctx.call(CallKind::PutStac, async {
        let (version, key) = path.parse()?;
        if let Some(answer) = precondition(&ctx, asset_etag(&ctx, &key).as_deref()) {
            return Ok(answer);
        }
        let body = read_json(&ctx.headers, body).await?;
        let now = ctx.shared.now();
        let (external, existing_type) = {
            let state = ctx.shared.lock();
            let external = asset_parent(&state, &key)?;
            (
                external,
                state.asset(&key).ok().map(|a| a.media_type.clone()),
            )
        };
        let body = body_object(body)?;
        let table = asset_table(&key);
        let context = rules::Context {
            existing_type: existing_type.as_deref(),
        };
        let clean = fields(table, version, &body, false, &context)?;
        let href = rules::asset_href(clean.get("href"), &external)?;
        let name = clean.get("id").and_then(Value::as_str).unwrap_or_default();
        let media_type = clean
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        rules::asset_name_fits_type(name, &media_type)?;
        rules::check_payload(table, version, &body)?;
        rules::renaming(&clean, &key.asset)?;
        let mut state = ctx.shared.lock();
        let mut stored = state
            .asset(&key)
            .map(|a| a.fields.clone())
            .unwrap_or_default();
        merge_asset_fields(&mut stored, clean);
        let created = state.put_asset(&key, media_type, stored, href, now)?;
        let json = ctx.asset_json(&key, state.asset(&key)?, version);
        Ok(json_response(created_or_ok(created), json))
    })
    .await
}

/// Updates the fields a body names (`null` removes one); the type cannot change; an asset
/// PATCHed without `href` is no longer external (views/item.py `_get_file_path`).
async fn patch_asset(ctx: Ctx, P(path): P<AssetPath>, body: Body) -> Response {
    ctx.call(CallKind::PutStac, async {
        let (version, key) = path.parse()?;
        if let Some(answer) = precondition(&ctx, asset_etag(&ctx, &key).as_deref()) {
            return Ok(answer);
        }
        let body = read_json(&ctx.headers, body).await?;
        let now = ctx.shared.now();
        let (external, existing_type) = {
            let state = ctx.shared.lock();
            let external = asset_parent(&state, &key)?;
            if item_expired(&state, &key, now) {
                return Err(ApiError::not_found("Not found."));
            }
            (external, state.asset(&key)?.media_type.clone())
        };
        let body = body_object(body)?;
        let table = asset_table(&key);
        let context = rules::Context {
            existing_type: Some(&existing_type),
        };
        let clean = fields(table, version, &body, true, &context)?;
        let href = rules::asset_href(clean.get("href"), &external)?;
        let name = clean
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(&key.asset);
        let media_type = clean
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&existing_type);
        rules::asset_name_fits_type(name, media_type)?;
        rules::check_payload(table, version, &body)?;
        rules::renaming(&clean, &key.asset)?;
        let mut state = ctx.shared.lock();
        let asset = state.asset_mut(&key)?;
        asset.external_href = href;
        for (name, value) in clean {
            if ["id", "type", "href"].contains(&name.as_str()) {
                continue;
            }
            let name = if name == "eo:gsd" {
                "gsd".to_owned()
            } else {
                name
            };
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
        let (version, key) = path.parse()?;
        if let Some(answer) = precondition(&ctx, asset_etag(&ctx, &key).as_deref()) {
            return Ok(answer);
        }
        let base = ctx.api_base(version);
        let removed = {
            let mut state = ctx.shared.lock();
            if state.asset(&key)?.in_progress().is_some() {
                return Err(rules::upload_in_progress(&key.asset, key.item.is_none()));
            }
            let removed = state.assets_mut(&key)?.remove(&key.asset);
            for upload in removed.iter().flat_map(|a| &a.uploads) {
                state.upload_index.remove(&upload.id);
            }
            removed
        };
        // Part files are deleted here, outside the lock.
        drop(removed);
        let parent = match &key.item {
            Some(item) => format!("{base}/collections/{}/items/{item}", key.collection),
            None => format!("{base}/collections/{}", key.collection),
        };
        Ok(deleted(&key.asset, parent))
    })
    .await
}

/// A validated create body.
#[derive(Debug)]
struct CreateRequest {
    number_parts: u32,
    md5_parts: Declared,
    checksum: String,
    content_encoding: Option<String>,
    update_interval: i64,
}

/// DRF `IntegerField.to_internal_value`: `int(str(data))` once a trailing `.0…` and blanks are
/// cut, so `"1"`, `" 7 "`, `1.0` and `"2.00"` are integers while `true` (`"True"`), `1.5` and
/// `1e16` (`"1e+16"`) are not. Out-of-range values saturate; the caller's range refuses them.
fn drf_int(value: &Value) -> Result<i128, &'static str> {
    const INVALID: &str = "A valid integer is required.";
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Python writes floats from 1e16 up with an exponent.
                if f.fract() == 0.0 && f.abs() < 1e16 {
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(f as i128)
                } else {
                    Err(INVALID)
                }
            }
        }
        Value::String(s) if s.chars().count() > 1000 => Err("String value too large."),
        Value::String(s) => py_int(strip_decimal(s)).ok_or(INVALID),
        _ => Err(INVALID),
    }
}

/// DRF's `re_decimal` (`\.0*\s*$`) removed: the last dot when only zeros and blanks follow it.
fn strip_decimal(s: &str) -> &str {
    match s.rfind('.') {
        Some(dot)
            if s[dot + 1..]
                .trim_start_matches('0')
                .chars()
                .all(char::is_whitespace) =>
        {
            &s[..dot]
        }
        _ => s,
    }
}

/// Python's `int(str)` in base 10 (ASCII digits): blanks around, a sign, single underscores
/// between digits.
fn py_int(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut n: i128 = 0;
    for c in digits.chars().filter(|c| *c != '_') {
        let d = c.to_digit(10)?;
        n = n.saturating_mul(10).saturating_add(i128::from(d));
    }
    Some(if negative { -n } else { n })
}

/// DRF's integer field messages.
fn int_field(
    errors: &mut FieldErrors,
    name: &str,
    value: Option<&Value>,
    range: std::ops::RangeInclusive<i64>,
) -> Option<i64> {
    let value = value.filter(|v| !v.is_null())?;
    match drf_int(value) {
        Ok(n) if n < i128::from(*range.start()) => {
            errors.add(
                name,
                format!(
                    "Ensure this value is greater than or equal to {}.",
                    range.start()
                ),
            );
            None
        }
        Ok(n) if n > i128::from(*range.end()) => {
            errors.add(
                name,
                format!(
                    "Ensure this value is less than or equal to {}.",
                    range.end()
                ),
            );
            None
        }
        Ok(n) => i64::try_from(n).ok(),
        Err(message) => {
            errors.add(name, message);
            None
        }
    }
}

fn parse_create(body: Value, version: ApiVersion) -> Result<CreateRequest, ApiError> {
    let body = expect_object(body)?;
    let mut errors = FieldErrors::default();

    let number_parts = body.get("number_parts");
    match number_parts {
        None => errors.add("number_parts", "This field is required."),
        Some(Value::Null) => errors.add("number_parts", "This field may not be null."),
        Some(_) => {}
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
    let md5_parts = check_md5_parts(md5_parts, number_parts).map_err(|message| match message {
        Some(message) => ApiError::bad_request(json!({ "non_field_errors": [message] })),
        None => ApiError::internal(),
    })?;
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

/// What a create's `md5_parts` declares: the list as sent (the server stores the JSON as it came
/// and answers it back) and, in the view's order (sorted by `part_number`, stable), one presigned
/// URL per entry: the `part_number` as sent (`true` is Python's 1), its number, its md5.
#[derive(Debug)]
struct Declared {
    raw: Value,
    urls: Vec<(Value, u32, String)>,
}

/// How a `part_number` hashes and compares in Python (validators.py dedups the entries in a dict
/// keyed by it, then sorts them): numbers and booleans are one kind, strings another.
#[derive(Debug, Clone, PartialEq)]
enum PyKey {
    Number(f64),
    Str(String),
    None,
}

/// validators.py `validate_md5_parts`, in its order: the count of distinct part numbers first
/// (so duplicates pass when the distinct ones match `number_parts`), then each entry as sent.
/// `Err(None)` is the server's 500: an unhashable or incomparable `part_number`.
fn check_md5_parts(value: &Value, number_parts: u32) -> Result<Declared, Option<String>> {
    let Value::Array(items) = value else {
        return Err(Some(format!(
            "Invalid md5_parts field: must be a list but is <class '{}'>",
            rules::py_type(value)
        )));
    };
    let mut keys: Vec<PyKey> = Vec::new();
    for item in items {
        let key = match item.as_object().and_then(|m| m.get("part_number")) {
            None => PyKey::Number(0.0),
            Some(Value::Bool(b)) => PyKey::Number(f64::from(u8::from(*b))),
            Some(Value::Number(n)) => PyKey::Number(n.as_f64().unwrap_or(f64::NAN)),
            Some(Value::String(s)) => PyKey::Str(s.clone()),
            Some(Value::Null) => PyKey::None,
            // A list or a dict cannot be a dict key: TypeError.
            Some(_) => return Err(None),
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    // sorted() of two or more keys compares them: None with anything, or a number with a
    // string, is a TypeError.
    if keys.len() > 1 {
        let numbers = keys.iter().any(|k| matches!(k, PyKey::Number(_)));
        let strings = keys.iter().any(|k| matches!(k, PyKey::Str(_)));
        if keys.contains(&PyKey::None) || (numbers && strings) {
            return Err(None);
        }
    }
    if keys.len() != number_parts as usize {
        return Err(Some(format!(
            "Missing, too many or duplicate part_number in md5_parts field list: list should \
             have {number_parts} item(s)."
        )));
    }
    let mut urls = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(Some(format!(
                "Invalid md5_parts[{i}] value: must be dict but is <class '{}'>",
                rules::py_type(item)
            )));
        };
        let Some(label) = item.get("part_number") else {
            return Err(Some(format!(
                "Invalid md5_parts[{i}] value: part_number field missing"
            )));
        };
        // isinstance(x, int): booleans are ints, floats are not.
        let number = match label {
            Value::Bool(b) => Some(u64::from(*b)),
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .filter(|n| (1..=u64::from(number_parts)).contains(n))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            Some(format!(
                "Invalid md5_parts[{i}].part_number value: part_number field must be an int \
                 between 1 and {number_parts}"
            ))
        })?;
        let Some(md5) = item.get("md5") else {
            return Err(Some(format!(
                "Invalid md5_parts[{i}] value: md5 field missing"
            )));
        };
        match md5 {
            Value::String(md5) if !md5.is_empty() && py_b64decode_ok(md5) => {
                urls.push((label.clone(), number, md5.clone()));
            }
            _ => {
                // The server's message names the entry before the bad one (`i - 1`).
                return Err(Some(format!(
                    "Invalid md5_parts[{}].md5 value: md5 field must be a non empty b64 encoded \
                     string",
                    i as i64 - 1
                )));
            }
        }
    }
    urls.sort_by_key(|(_, number, _)| *number);
    Ok(Declared {
        raw: value.clone(),
        urls,
    })
}

/// Whether Python's `base64.b64decode(s)` (not validating) takes `s`: ASCII only; characters
/// outside the alphabet are skipped; padding ends the data once a quad has two or more
/// characters; the data characters must fill whole quads. So `"!!!!"` passes (it decodes to
/// nothing).
fn py_b64decode_ok(s: &str) -> bool {
    if !s.is_ascii() {
        return false;
    }
    let mut quad = 0u8;
    let mut pads = 0u8;
    for c in s.bytes() {
        if c == b'=' {
            if quad >= 2 {
                pads += 1;
                if quad + pads >= 4 {
                    return true;
                }
            }
            continue;
        }
        if !(c.is_ascii_alphanumeric() || c == b'+' || c == b'/') {
            continue;
        }
        pads = 0;
        quad = (quad + 1) % 4;
    }
    quad == 0
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
            md5_parts: request.md5_parts.raw,
            url_parts: request.md5_parts.urls,
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

/// `?limit=` of listings (pagination.py `validate_page_size`): an integer of at least 1, 100
/// when none is given; a larger one is cut to 100, not refused.
fn parse_limit(ctx: &Ctx) -> Result<usize, ApiError> {
    let Some(limit) = ctx.query_param("limit") else {
        return Ok(MAX_LIMIT);
    };
    // Python's int() takes surrounding blanks and a sign.
    let limit: i64 = limit.trim().parse().map_err(|_| {
        ApiError::bad_request(json!(["Invalid limit query parameter: must be an integer"]))
    })?;
    if limit <= 0 {
        return Err(ApiError::bad_request(json!([format!(
            "limit query parameter too small, must be in range 1..{MAX_LIMIT}"
        )])));
    }
    Ok(usize::try_from(limit).map_or(MAX_LIMIT, |l| l.min(MAX_LIMIT)))
}

fn next_link(ctx: &Ctx, params: &[(&str, String)]) -> Value {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    json!({"rel": "next", "href": format!("{}?{query}", ctx.self_url())})
}

/// Oldest first, paginated with an opaque cursor (the id of the first upload of the page).
async fn list_uploads(ctx: Ctx, P(path): P<AssetPath>) -> Response {
    ctx.call(CallKind::ListUploads, async {
        let (version, key) = path.parse()?;
        // views/upload.py: the asset is looked up (404) before the paginator reads `limit`.
        ctx.shared.lock().asset(&key)?;
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
        // Oldest first, as the server's cursor pagination orders them.
        uploads.sort_by_key(|u| u.created);
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
        // views/upload.py `AssetUploadPartsList.list`: the upload (404), then `limit`, then
        // `offset` (pagination.py `validate_offset`), then S3.
        ctx.shared.lock().upload(&key, &id)?;
        let limit = parse_limit(&ctx)?;
        let offset = match ctx.query_param("offset") {
            None => 0,
            Some(o) => {
                let offset = py_int(&o).ok_or_else(|| {
                    ApiError::bad_request(json!([
                        "Invalid offset query parameter: must be an integer"
                    ]))
                })?;
                if offset < 0 {
                    return Err(ApiError::bad_request(json!([
                        "offset query parameter too small, must be positive"
                    ])));
                }
                u32::try_from(offset).unwrap_or(u32::MAX)
            }
        };
        let state = ctx.shared.lock();
        let upload = state.upload(&key, &id)?;
        if upload.status != UploadState::InProgress || state.lost_in_s3.contains(&id) {
            // S3 answers NoSuchUpload, which the real server does not catch.
            return Err(ApiError::no_such_upload("ListParts"));
        }
        // `offset` is S3's part-number marker.
        let mut remaining = upload.parts.range(offset.saturating_add(1)..);
        let page: Vec<(u32, &Part)> = remaining
            .by_ref()
            .take(limit)
            .map(|(n, p)| (*n, p))
            .collect();
        // pagination.py `ExtApiPagination`: the next offset is offset + limit (not the last
        // part listed), and a previous link follows whenever offset > 0.
        let mut links = Vec::new();
        if remaining.next().is_some() {
            links.push(next_link(
                &ctx,
                &[
                    ("limit", limit.to_string()),
                    ("offset", (u64::from(offset) + limit as u64).to_string()),
                ],
            ));
        }
        if offset > 0 {
            let mut params = vec![("limit", limit.to_string())];
            if offset as usize > limit {
                params.push(("offset", (offset as usize - limit).to_string()));
            }
            let mut link = next_link(&ctx, &params);
            link["rel"] = "previous".into();
            links.push(link);
        }
        let parts: Vec<Value> = page.iter().map(|(n, p)| part_json(*n, p)).collect();
        Ok(axum::Json(json!({"parts": parts, "links": links})).into_response())
    })
    .await
}

/// `{"parts": [{"etag": .., "part_number": ..}, ..]}`, validated as the real serializer does.
/// A part of a complete body: `(part_number, etag)`, either left out by the client.
type CompletePart = (Option<u32>, Option<String>);

fn parse_complete(body: Value) -> Result<Vec<CompletePart>, ApiError> {
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
        // The complete view validates with partial=True, which reaches the nested part
        // serializer too: a missing `etag` or `part_number` is skipped, not required.
        let etag = match part.get("etag") {
            None => None,
            Some(Value::Null) => {
                errors.add("etag", "This field may not be null.");
                None
            }
            // CharField: numbers become strings; blanks are trimmed.
            Some(Value::String(e)) if e.trim().is_empty() => {
                errors.add("etag", "This field may not be blank.");
                None
            }
            Some(Value::String(e)) => Some(e.trim().to_owned()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                errors.add("etag", "Not a valid string.");
                None
            }
        };
        if matches!(part.get("part_number"), Some(Value::Null)) {
            errors.add("part_number", "This field may not be null.");
        }
        let number = int_field(&mut errors, "part_number", part.get("part_number"), 1..=100)
            .and_then(|n| u32::try_from(n).ok());
        if errors.is_empty() {
            parsed.push((number, etag));
        } else {
            item_errors.insert(i.to_string(), errors.into_value());
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

fn invalid_part() -> ApiError {
    s3_refusal(
        "InvalidPart",
        "One or more of the specified parts could not be found.  The part may not have been \
         uploaded, or the specified entity tag may not have matched the part's entity tag.",
    )
}

fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
}

async fn complete(ctx: Ctx, P(path): P<UploadPath>, body: Body) -> Response {
    ctx.call(CallKind::Complete, async {
        let (version, key, id) = path.parse()?;
        // The server looks the upload up before it reads the body: an unknown one is 404,
        // whatever the body holds.
        ctx.shared.lock().upload(&key, &id)?;
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
        if state.lost_in_s3.contains(&id) {
            return Err(s3_refusal(
                "NoSuchUpload",
                "The specified upload does not exist. The upload ID may be invalid, or the upload \
                 may have been aborted or completed.",
            ));
        }
        // S3 gets the parts as validated: one without a number or an etag names no part it
        // holds (what S3 answers then is not in the server's source; InvalidPart is a guess).
        let parts: Vec<(u32, String)> = match parts
            .into_iter()
            .map(|(n, e)| n.zip(e))
            .collect::<Option<Vec<_>>>()
        {
            Some(parts) => parts,
            None => return Err(invalid_part()),
        };
        if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(s3_refusal(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. Parts must be ordered by part \
                 number.",
            ));
        }
        let mut blobs = Vec::with_capacity(parts.len());
        // S3's multipart ETag: the MD5 of the parts' binary MD5s, and their count.
        let mut etag_md5 = Md5::new();
        for (number, etag) in &parts {
            match upload.parts.get(number) {
                Some(part) if part.md5_hex == normalize_etag(etag) => {
                    blobs.push(part.blob.clone());
                    etag_md5.update(hex::decode(&part.md5_hex).unwrap_or_default());
                }
                _ => return Err(invalid_part()),
            }
        }
        let object_etag = format!("\"{}-{}\"", hex::encode(etag_md5.finalize()), parts.len());
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
        let public = PublicObject {
            blobs: blobs.clone(),
            size,
            content_type: asset.media_type.clone(),
            content_encoding: content_encoding.clone(),
            // The multihash is `1220` and the sha256 digest (checked at create).
            sha256_hex: checksum.get(4..).unwrap_or_default().to_owned(),
            etag: object_etag,
            cache_control: DEFAULT_CACHE_CONTROL.to_owned(),
        };
        // What the bucket no longer serves, dropped (its files deleted) outside the lock.
        let unpublished: Vec<PublicObject> = match ctx.public_fault.get() {
            Some(FaultAction::StalePublic) => vec![public],
            Some(FaultAction::MissingPublic) => {
                asset.public.take().into_iter().chain([public]).collect()
            }
            _ => asset.public.replace(public).into_iter().collect(),
        };
        let replaced = asset.object.replace(StoredObject {
            blobs,
            content_encoding,
        });
        asset.checksum = Some(checksum);
        asset.size = Some(size);
        asset.touch(now);
        let json = ctx.upload_json(state.upload(&key, &id)?, version);
        drop(state);
        // Old files are deleted outside the lock.
        drop((unused_parts, replaced, unpublished));
        Ok(axum::Json(json).into_response())
    })
    .await
}

async fn abort(ctx: Ctx, P(path): P<UploadPath>, body: Body) -> Response {
    ctx.call(CallKind::Abort, async {
        let (version, key, id) = path.parse()?;
        // The server looks the upload up before it reads the body (DRF: authentication and
        // permission, then the object, then the body): an unknown one is 404 whatever the
        // body holds. The body is parsed like DRF does, only to refuse garbage.
        ctx.shared.lock().upload(&key, &id)?;
        read_json(&ctx.headers, body).await?;
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        let lost = state.lost_in_s3.contains(&id);
        let upload = state.upload_mut(&key, &id)?;
        if upload.status != UploadState::InProgress || lost {
            // S3 answers NoSuchUpload, which the real server does not catch; the record is
            // left as it was.
            return Err(ApiError::no_such_upload("AbortMultipartUpload"));
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

/// The most items one `POST .../items` may create (serializers/item.py `ItemListSerializer`).
const MAX_FEATURES: usize = 100;

/// DRF's `str(serializer.errors)`, which views/item.py `ItemsList.post` answers as the
/// description: a Python repr of the error tree, each message an `ErrorDetail`.
fn py_errors(errors: &Value) -> String {
    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
    match errors {
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", quote(k), py_errors(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Array(list) => {
            let inner: Vec<String> = list.iter().map(py_errors).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::String(message) => format!("ErrorDetail(string={}, code='invalid')", quote(message)),
        other => other.to_string(),
    }
}

/// One feature of a `POST .../items` body, checked as `ItemSerializer` checks it: its id
/// (required here, as there is no path to take it from) and its stored fields, or its field
/// errors. A failure that is not a validation error (a 500) ends the whole request.
#[allow(clippy::type_complexity)]
fn feature_fields(
    version: ApiVersion,
    feature: &Value,
    now: DateTime<Utc>,
) -> Result<Result<(String, Map<String, Value>), Value>, ApiError> {
    let Value::Object(body) = feature else {
        return Ok(Err(json!({"non_field_errors": [format!(
            "Invalid data. Expected a dictionary, but got {}.",
            rules::py_type(feature)
        )]})));
    };
    let clean = match item_fields(version, body, now) {
        Ok(clean) => clean,
        Err(e) if e.status() == StatusCode::BAD_REQUEST => {
            return Ok(Err(e.description().clone()));
        }
        Err(e) => return Err(e),
    };
    let Some(id) = clean.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return Ok(Err(json!({"id": ["This field is required."]})));
    };
    let mut stored = without_nulls(clean);
    stored.remove("id");
    Ok(Ok((id, stored)))
}

/// `POST /collections/{c}/items` (views/item.py `ItemsList.post`): creates every feature of
/// `{"features": [...]}` or none. The server's atomicity comes from the database's unique key;
/// here the whole check and insert happen under the state's one lock.
async fn post_items(ctx: Ctx, P(path): P<StacPath>, body: Body) -> Response {
    ctx.call(CallKind::PutStac, async {
        let version = ApiVersion::parse(&path.version)?;
        // Checked before anything else, even before the collection.
        let has_key = ctx
            .headers
            .get("Idempotency-Key")
            .is_some_and(|v| !v.as_bytes().is_empty());
        if !has_key {
            return Err(ApiError::bad_request(
                "No header parameter 'Idempotency-Key'",
            ));
        }
        if !ctx.shared.lock().collections.contains_key(&path.collection) {
            return Err(ApiError::not_found(
                "Collection matching query does not exist.",
            ));
        }
        let body = read_json(&ctx.headers, body).await?;
        let now = ctx.shared.now();
        let features = match body.get("features") {
            None => {
                return Err(ApiError::bad_request(py_errors(
                    &json!({"features": ["This field is required."]}),
                )));
            }
            Some(Value::Array(list)) => list,
            Some(other) => {
                return Err(ApiError::bad_request(py_errors(&json!({"features": {
                    "non_field_errors": [format!(
                        "Expected a list of items but got type \"{}\".",
                        rules::py_type(other)
                    )]
                }}))));
            }
        };
        let mut checked = Vec::with_capacity(features.len());
        let mut errors = Vec::with_capacity(features.len());
        for feature in features {
            match feature_fields(version, feature, now)? {
                Ok(ok) => {
                    checked.push(ok);
                    errors.push(json!({}));
                }
                Err(e) => errors.push(e),
            }
        }
        if checked.len() < features.len() {
            return Err(ApiError::bad_request(py_errors(
                &json!({ "features": errors }),
            )));
        }
        if checked.len() > MAX_FEATURES {
            return Err(ApiError::bad_request(py_errors(&json!({
                "features": [format!("More than {MAX_FEATURES} features")]
            }))));
        }
        if checked.iter().any(|(_, f)| f.contains_key("assets")) {
            // The server stores inline assets as external assets; the emulator does not model
            // that, and stac-uploadd never sends them.
            return Err(ApiError::bad_request(
                "the emulator does not take assets inside POST .../items (the server would store them as external assets)",
            ));
        }
        let mut state = ctx.shared.lock();
        let collection = state
            .collections
            .get_mut(&path.collection)
            .ok_or_else(|| ApiError::not_found("Collection matching query does not exist."))?;
        // One INSERT of every row: a duplicate (stored, or twice in the body) fails it whole.
        let mut seen = std::collections::HashSet::new();
        for (id, _) in &checked {
            if collection.items.contains_key(id) || !seen.insert(id.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "duplicate key value violates unique constraint \"stac_api_item_collection_id_name_uniq\"\nDETAIL:  Key (collection_id, name)=(1, {id}) already exists.\n"
                )));
            }
        }
        let mut created = Vec::with_capacity(checked.len());
        for (id, stored) in checked {
            let item = Item {
                meta: StacMeta::new(stored, now),
                assets: Default::default(),
            };
            created.push(ctx.item_json(version, &path.collection, &id, &item));
            collection.items.insert(id, item);
        }
        Ok(json_response(
            StatusCode::CREATED,
            json!({ "features": created }),
        ))
    })
    .await
}

/// The position after which a page of items starts: the last id of the page before, opaque
/// to the client as DRF's cursors are.
fn item_cursor(ctx: &Ctx) -> Result<Option<String>, ApiError> {
    ctx.query_param("cursor")
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(&c)
                .ok()
                .and_then(|id| String::from_utf8(id).ok())
                .ok_or_else(|| ApiError::not_found("Invalid cursor"))
        })
        .transpose()
}

/// `GET /collections/{c}/items` (views/item.py `ItemsList.list`): a FeatureCollection of the
/// items that have not expired, by id, paged with a cursor (`links` rel `next`).
async fn list_items(ctx: Ctx, P(path): P<StacPath>) -> Response {
    ctx.run(async {
        let version = ApiVersion::parse(&path.version)?;
        let limit = parse_limit(&ctx)?;
        let after = item_cursor(&ctx)?;
        let now = ctx.shared.now();
        let state = ctx.shared.lock();
        let collection = state
            .collections
            .get(&path.collection)
            .ok_or_else(|| ApiError::not_found("Not found."))?;
        let lower = match &after {
            Some(id) => std::ops::Bound::Excluded(id.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut rest = collection
            .items
            .range((lower, std::ops::Bound::Unbounded))
            .filter(|(_, item)| !expired(item, now));
        let page: Vec<(&String, &Item)> = rest.by_ref().take(limit).collect();
        let more = rest.next().is_some();
        let features: Vec<Value> = page
            .iter()
            .map(|(id, item)| ctx.item_json(version, &path.collection, id, item))
            .collect();
        let base = ctx.api_base(version);
        let collection_url = format!("{base}/collections/{}", path.collection);
        let mut links = vec![
            json!({"rel": "self", "href": format!("{collection_url}/items")}),
            json!({"rel": "root", "href": format!("{base}/")}),
            json!({"rel": "parent", "href": collection_url}),
        ];
        if more && let Some((last, _)) = page.last() {
            let mut params = vec![("cursor", URL_SAFE_NO_PAD.encode(last.as_bytes()))];
            if ctx.query_param("limit").is_some() {
                params.push(("limit", limit.to_string()));
            }
            links.push(next_link(&ctx, &params));
        }
        Ok(axum::Json(json!({
            "type": "FeatureCollection",
            "timeStamp": timestamp(now),
            "features": features,
            "links": links,
        }))
        .into_response())
    })
    .await
}

/// `GET /collections/{c}/items/{i}/assets` (views/item.py `AssetsList`, no pagination): every
/// asset of the item by id, and the relation links.
async fn list_assets(ctx: Ctx, P(path): P<StacPath>) -> Response {
    ctx.run(async {
        let version = ApiVersion::parse(&path.version)?;
        let item_id = path
            .item
            .clone()
            .ok_or_else(|| ApiError::not_found("Not found."))?;
        let now = ctx.shared.now();
        let state = ctx.shared.lock();
        let item = state
            .collections
            .get(&path.collection)
            .and_then(|c| c.items.get(&item_id))
            .filter(|i| !expired(i, now))
            .ok_or_else(|| ApiError::not_found("Not found."))?;
        let assets: Vec<Value> = item
            .assets
            .iter()
            .map(|(name, asset)| {
                let key = AssetKey::item_asset(&path.collection, &item_id, name);
                Value::Object(ctx.asset_fields(&key, asset, version))
            })
            .collect();
        let base = ctx.api_base(version);
        let collection_url = format!("{base}/collections/{}", path.collection);
        let item_url = format!("{collection_url}/items/{item_id}");
        let links = json!([
            {"rel": "self", "href": format!("{item_url}/assets")},
            {"rel": "root", "href": format!("{base}/")},
            {"rel": "parent", "href": item_url},
            {"rel": "collection", "href": collection_url},
            {"rel": "item", "href": item_url},
        ]);
        Ok(axum::Json(json!({"assets": assets, "links": links})).into_response())
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
        let declared = check_md5_parts(&ok, 2).unwrap();
        assert_eq!(declared.raw, ok);
        let md5s: Vec<_> = declared
            .urls
            .iter()
            .map(|(_, n, m)| (*n, m.as_str()))
            .collect();
        assert_eq!(md5s, vec![(1, "AAAA"), (2, md5)]);
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
        assert_eq!(parts.unwrap(), vec![(Some(1), Some("\"ab\"".to_owned()))]);
        assert_eq!(normalize_etag(" \"AB\" "), "ab");
    }
}
