//! What the emulated server holds: collections, items, assets, their uploads and parts.
//!
//! All of it sits under one mutex in [`super::Shared`]; every function here runs inside a short
//! critical section and never waits.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AssetKey;
use super::error::ApiError;
use super::rules::{self, ExternalAssets};
use super::storage::Blob;

/// The whole server state.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) collections: BTreeMap<String, Collection>,
    /// Upload id to its asset, for the S3 part handler, which only knows the id.
    pub(crate) upload_index: HashMap<String, AssetKey>,
    /// Uploads whose S3 multipart upload is gone while the server's record stays in progress
    /// (an S3 lifecycle rule removed it): S3 answers NoSuchUpload for them.
    pub(crate) lost_in_s3: std::collections::HashSet<String>,
    /// When each asset was last read (`GET` of the asset), the most recent [`READS_KEPT`].
    pub(crate) reads: HashMap<AssetKey, std::collections::VecDeque<std::time::Instant>>,
}

/// Reads of an asset remembered, so a long-running emulator stays bounded.
pub(crate) const READS_KEPT: usize = 10_000;

/// Metadata of a collection or item: the fields the server keeps of its last PUT.
#[derive(Debug)]
pub(crate) struct StacMeta {
    pub(crate) fields: Map<String, Value>,
    pub(crate) created: DateTime<Utc>,
    pub(crate) updated: DateTime<Utc>,
    /// A fresh UUID on each change, as the server's `etag` column.
    pub(crate) etag: String,
}

impl StacMeta {
    pub(crate) fn new(fields: Map<String, Value>, now: DateTime<Utc>) -> Self {
        StacMeta {
            fields,
            created: now,
            updated: now,
            etag: new_etag(),
        }
    }

    /// Records a change of the object.
    pub(crate) fn touch(&mut self, now: DateTime<Utc>) {
        self.updated = now;
        self.etag = new_etag();
    }
}

impl Item {
    /// The item's ETag: on the server it changes with the item and with each change of its
    /// assets (database triggers); here it is derived from both, so that no asset path has to
    /// remember to touch its item.
    pub(crate) fn etag(&self) -> String {
        if self.assets.is_empty() {
            return self.meta.etag.clone();
        }
        use md5::Digest as _;
        let mut h = md5::Md5::new();
        h.update(self.meta.etag.as_bytes());
        for (name, asset) in &self.assets {
            h.update(name.as_bytes());
            h.update(asset.etag.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[derive(Debug)]
pub(crate) struct Collection {
    pub(crate) meta: StacMeta,
    pub(crate) items: BTreeMap<String, Item>,
    pub(crate) assets: BTreeMap<String, Asset>,
    /// Whether assets may point elsewhere (`href`), an admin setting of the real server.
    pub(crate) external: ExternalAssets,
}

impl Collection {
    pub(crate) fn new(fields: Map<String, Value>, now: DateTime<Utc>) -> Self {
        Collection {
            meta: StacMeta::new(fields, now),
            items: BTreeMap::new(),
            assets: BTreeMap::new(),
            external: ExternalAssets::default(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) meta: StacMeta,
    pub(crate) assets: BTreeMap<String, Asset>,
}

#[derive(Debug)]
pub(crate) struct Asset {
    pub(crate) media_type: String,
    /// Other metadata (title, roles, ...), echoed back.
    pub(crate) fields: Map<String, Value>,
    /// Set for an external asset, which cannot receive uploads.
    pub(crate) external_href: Option<String>,
    pub(crate) checksum: Option<String>,
    pub(crate) size: Option<u64>,
    pub(crate) object: Option<StoredObject>,
    /// What the bucket serves at the asset's `href`: the last complete's object, unless a
    /// `stale_public` or `missing_public` fault kept an older one or none.
    pub(crate) public: Option<PublicObject>,
    pub(crate) created: DateTime<Utc>,
    pub(crate) updated: DateTime<Utc>,
    pub(crate) etag: String,
    pub(crate) uploads: Vec<Upload>,
}

impl Asset {
    pub(crate) fn new(media_type: String, now: DateTime<Utc>) -> Self {
        Asset {
            media_type,
            fields: Map::new(),
            external_href: None,
            checksum: None,
            size: None,
            object: None,
            public: None,
            created: now,
            updated: now,
            etag: new_etag(),
            uploads: Vec::new(),
        }
    }

    pub(crate) fn in_progress(&self) -> Option<&Upload> {
        self.uploads
            .iter()
            .find(|u| u.status == UploadState::InProgress)
    }

    pub(crate) fn touch(&mut self, now: DateTime<Utc>) {
        self.updated = now;
        self.etag = new_etag();
    }
}

/// The bytes of a completed upload.
#[derive(Debug)]
pub(crate) struct StoredObject {
    pub(crate) blobs: Vec<Blob>,
    pub(crate) content_encoding: Option<String>,
}

/// The object at an asset's public URL, with the headers S3 answers for it
/// (s3_multipart_upload.py `create_multipart_upload`: `Metadata={'sha256': ...}`, `ContentType`,
/// `ContentEncoding`, `CacheControl`; the multipart `ETag` S3 makes at complete).
#[derive(Debug, Clone)]
pub(crate) struct PublicObject {
    pub(crate) blobs: Vec<Blob>,
    pub(crate) size: u64,
    pub(crate) content_type: String,
    pub(crate) content_encoding: Option<String>,
    /// Hex of the `file:checksum` digest, answered as `x-amz-meta-sha256`.
    pub(crate) sha256_hex: String,
    /// `"{md5 of the parts' md5s}-{parts}"`, quoted.
    pub(crate) etag: String,
    pub(crate) cache_control: String,
}

/// The state of an upload, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadState {
    /// Created, neither completed nor aborted.
    InProgress,
    /// Completed: its object is the asset's data.
    Completed,
    /// Aborted: its parts are gone.
    Aborted,
}

impl UploadState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UploadState::InProgress => "in-progress",
            UploadState::Completed => "completed",
            UploadState::Aborted => "aborted",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            UploadState::InProgress,
            UploadState::Completed,
            UploadState::Aborted,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) id: String,
    pub(crate) status: UploadState,
    pub(crate) number_parts: u32,
    /// The create's `md5_parts` as it was sent: the server stores and answers that JSON.
    pub(crate) md5_parts: serde_json::Value,
    /// One presigned URL per `md5_parts` entry, sorted by part: the `part_number` as sent
    /// (`true` counts as 1), the part number, the declared base64 md5. A part number may
    /// appear more than once (the server counts distinct part numbers only).
    pub(crate) url_parts: Vec<(serde_json::Value, u32, String)>,
    pub(crate) checksum: String,
    pub(crate) created: DateTime<Utc>,
    pub(crate) ended: Option<DateTime<Utc>>,
    /// When its presigned URLs expire.
    pub(crate) expires: DateTime<Utc>,
    pub(crate) content_encoding: Option<String>,
    pub(crate) update_interval: i64,
    pub(crate) parts: BTreeMap<u32, Part>,
    /// Changes with the status, like the real server's per-change UUID.
    pub(crate) etag: String,
}

impl Upload {
    pub(crate) fn finish(&mut self, status: UploadState, now: DateTime<Utc>) {
        self.status = status;
        self.ended = Some(now);
        self.etag = new_etag();
    }
}

#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) md5_hex: String,
    pub(crate) modified: DateTime<Utc>,
    pub(crate) blob: Blob,
}

pub(crate) fn new_etag() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl State {
    fn assets(&self, key: &AssetKey) -> Result<&BTreeMap<String, Asset>, ApiError> {
        let collection = self.collections.get(&key.collection).ok_or_else(|| {
            ApiError::not_found(format!("The collection {} does not exist", key.collection))
        })?;
        match &key.item {
            None => Ok(&collection.assets),
            Some(item) => collection
                .items
                .get(item)
                .map(|i| &i.assets)
                .ok_or_else(|| item_missing(key)),
        }
    }

    pub(crate) fn assets_mut(
        &mut self,
        key: &AssetKey,
    ) -> Result<&mut BTreeMap<String, Asset>, ApiError> {
        let collection = self.collections.get_mut(&key.collection).ok_or_else(|| {
            ApiError::not_found(format!("The collection {} does not exist", key.collection))
        })?;
        match &key.item {
            None => Ok(&mut collection.assets),
            Some(item) => collection
                .items
                .get_mut(item)
                .map(|i| &mut i.assets)
                .ok_or_else(|| item_missing(key)),
        }
    }

    pub(crate) fn asset(&self, key: &AssetKey) -> Result<&Asset, ApiError> {
        self.assets(key)?
            .get(&key.asset)
            .ok_or_else(|| asset_missing(key))
    }

    pub(crate) fn asset_mut(&mut self, key: &AssetKey) -> Result<&mut Asset, ApiError> {
        self.assets_mut(key)?
            .get_mut(&key.asset)
            .ok_or_else(|| asset_missing(key))
    }

    pub(crate) fn upload(&self, key: &AssetKey, id: &str) -> Result<&Upload, ApiError> {
        self.asset(key)?
            .uploads
            .iter()
            .find(|u| u.id == id)
            .ok_or_else(|| upload_missing(key))
    }

    pub(crate) fn upload_mut(&mut self, key: &AssetKey, id: &str) -> Result<&mut Upload, ApiError> {
        self.asset_mut(key)?
            .uploads
            .iter_mut()
            .find(|u| u.id == id)
            .ok_or_else(|| upload_missing(key))
    }

    /// An upload found by id alone (what a presigned URL carries).
    pub(crate) fn upload_by_id(&self, id: &str) -> Option<&Upload> {
        let key = self.upload_index.get(id)?;
        self.upload(key, id).ok()
    }

    pub(crate) fn upload_by_id_mut(&mut self, id: &str) -> Option<&mut Upload> {
        let key = self.upload_index.get(id)?.clone();
        self.upload_mut(&key, id).ok()
    }

    /// Creates the collection and item of `key` if they do not exist.
    pub(crate) fn ensure_parents(&mut self, key: &AssetKey, now: DateTime<Utc>) {
        match &key.item {
            Some(item) => self.ensure_item(&key.collection, item, now),
            None => {
                self.ensure_collection(&key.collection, now);
            }
        }
    }

    pub(crate) fn ensure_collection(&mut self, id: &str, now: DateTime<Utc>) -> &mut Collection {
        self.collections
            .entry(id.to_owned())
            .or_insert_with(|| Collection::new(default_collection(), now))
    }

    fn ensure_item(&mut self, collection: &str, id: &str, now: DateTime<Utc>) {
        self.ensure_collection(collection, now)
            .items
            .entry(id.to_owned())
            .or_insert_with(|| Item {
                meta: StacMeta::new(default_item(now), now),
                assets: BTreeMap::new(),
            });
    }

    /// Creates or replaces an asset the way `PUT A` does: the fields of the body replace the
    /// asset's, while what the body cannot carry stays: the checksum (read-only on the server,
    /// so its upsert never touches it), the data and the upload history. An item asset's size is
    /// reset (the server's item-asset upsert sets `file_size` to 0); a collection asset's is kept
    /// (its upsert leaves it). Returns whether it was created.
    pub(crate) fn put_asset(
        &mut self,
        key: &AssetKey,
        media_type: String,
        fields: Map<String, Value>,
        external_href: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<bool, ApiError> {
        let assets = self.assets_mut(key)?;
        let created = !assets.contains_key(&key.asset);
        let asset = assets
            .entry(key.asset.clone())
            .or_insert_with(|| Asset::new(media_type.clone(), now));
        asset.media_type = media_type;
        asset.fields = fields;
        asset.external_href = external_href;
        if key.item.is_some() {
            asset.size = None;
        }
        asset.touch(now);
        Ok(created)
    }

    /// Everything the admin state dump shows, without part bytes.
    pub(crate) fn dump(&self) -> Value {
        let mut assets = Vec::new();
        for (cid, collection) in &self.collections {
            let item_assets = collection.items.iter().flat_map(|(iid, item)| {
                item.assets
                    .iter()
                    .map(move |(aid, a)| (AssetKey::item_asset(cid, iid, aid), a))
            });
            let collection_assets = collection
                .assets
                .iter()
                .map(|(aid, a)| (AssetKey::collection_asset(cid, aid), a));
            for (key, asset) in collection_assets.chain(item_assets) {
                let uploads: Vec<Value> = asset
                    .uploads
                    .iter()
                    .map(|u| {
                        let parts: Vec<Value> = u
                            .parts
                            .iter()
                            .map(|(n, p)| {
                                serde_json::json!({
                                    "part_number": n, "size": p.blob.len(),
                                    "etag": format!("\"{}\"", p.md5_hex),
                                })
                            })
                            .collect();
                        serde_json::json!({
                            "upload_id": u.id, "status": u.status.as_str(),
                            "number_parts": u.number_parts, "file:checksum": u.checksum,
                            "created": u.created, "ended": u.ended,
                            "content_encoding": u.content_encoding, "parts": parts,
                        })
                    })
                    .collect();
                assets.push(serde_json::json!({
                    "collection": key.collection, "item": key.item, "asset": key.asset,
                    "type": asset.media_type, "file:checksum": asset.checksum,
                    "file:size": asset.size, "external_href": asset.external_href,
                    "uploads": uploads,
                }));
            }
        }
        serde_json::json!({ "assets": assets })
    }
}

/// What a collection made behind the API's back holds: the fields the server requires.
fn default_collection() -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("description".into(), "Made by the emulator".into());
    fields.insert("license".into(), "proprietary".into());
    fields
}

/// What an item made behind the API's back holds: the model's default geometry (the bounding
/// box of Switzerland, models/general.py `BBOX_CH`) and its creation time.
fn default_item(now: DateTime<Utc>) -> Map<String, Value> {
    let mut properties = Map::new();
    properties.insert("datetime".into(), rules::isoformat(now).into());
    let mut fields = Map::new();
    fields.insert(
        "geometry".into(),
        serde_json::json!({"type": "Polygon", "coordinates": [[
            [5.96, 45.82], [5.96, 47.81], [10.49, 47.81], [10.49, 45.82], [5.96, 45.82]
        ]]}),
    );
    fields.insert("properties".into(), properties.into());
    fields
}

fn item_missing(key: &AssetKey) -> ApiError {
    ApiError::not_found(format!(
        "The item {} does not exist in collection {}",
        key.item.as_deref().unwrap_or_default(),
        key.collection
    ))
}

fn asset_missing(key: &AssetKey) -> ApiError {
    ApiError::not_found(format!("The asset {} does not exist", key.asset))
}

fn upload_missing(key: &AssetKey) -> ApiError {
    // DRF's get_object_or_404 message, named after the model.
    let model = if key.item.is_some() {
        "AssetUpload"
    } else {
        "CollectionAssetUpload"
    };
    ApiError::not_found(format!("No {model} matches the given query."))
}

/// The media type an asset id suggests, for assets created behind the API's back.
pub(crate) fn media_type_for(asset_id: &str) -> &'static str {
    rules::media_type_for(asset_id)
}

/// The real server's id rule: lowercase letters, digits, `-`, `_` and `.`.
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    rules::check_name(id)
}

/// Checks every id of `key` and its media type; returns the media type normalised.
pub(crate) fn check_key(key: &AssetKey, media_type: &str) -> Result<String, String> {
    check_id(&key.collection)
        .and_then(|()| key.item.as_deref().map_or(Ok(()), check_id))
        .and_then(|()| rules::check_asset_name(&key.asset))
        .map_err(|e| format!("{key}: {e}"))?;
    let normalized = rules::normalize_media_type(media_type)
        .ok_or_else(|| format!("{key}: Invalid media type \"{media_type}\""))?;
    rules::check_name_fits_type(&key.asset, &normalized).map_err(|e| format!("{key}: {e}"))?;
    Ok(normalized)
}

/// The seed file: `{"collections":[{"id":..,"assets":[{"id":..,"type":..}],
/// "items":[{"id":..,"assets":[..]}]}]}`; a collection may add `"allow_external_assets": true`
/// and `"external_asset_whitelist": ["https://.."]` for API PUTs with an `href`.
#[derive(Debug, Deserialize)]
struct Seed {
    collections: Vec<SeedCollection>,
}

#[derive(Debug, Deserialize)]
struct SeedCollection {
    id: String,
    /// Lets its assets point elsewhere (`href`); implied by a seeded asset with an `href`.
    #[serde(default)]
    allow_external_assets: bool,
    /// URL prefixes an `href` must start with; a seeded asset's `href` is always accepted.
    #[serde(default)]
    external_asset_whitelist: Vec<String>,
    #[serde(default)]
    assets: Vec<SeedAsset>,
    #[serde(default)]
    items: Vec<SeedItem>,
}

#[derive(Debug, Deserialize)]
struct SeedItem {
    id: String,
    #[serde(default)]
    assets: Vec<SeedAsset>,
}

#[derive(Debug, Deserialize)]
struct SeedAsset {
    id: String,
    #[serde(rename = "type")]
    media_type: String,
    #[serde(default)]
    href: Option<String>,
}

/// The largest seed file read: a seed names collections, items and assets, a few hundred bytes
/// each; a path to /dev/zero or a FIFO by mistake must neither hang nor fill the memory.
const MAX_SEED_FILE: u64 = 16 * 1024 * 1024;

/// The bytes of the seed file: a regular file of at most [`MAX_SEED_FILE`] bytes. Its kind is
/// asked before it is opened: opening a FIFO would wait for a writer.
async fn read_seed(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    if !tokio::fs::metadata(path).await?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let file = tokio::fs::File::open(path).await?;
    let mut bytes = Vec::new();
    file.take(MAX_SEED_FILE + 1).read_to_end(&mut bytes).await?;
    if bytes.len() as u64 > MAX_SEED_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_SEED_FILE} bytes, the most a seed file may hold"
        )));
    }
    Ok(bytes)
}

/// Fills `state` from a seed file.
pub(crate) async fn load_seed(
    state: &mut State,
    path: &Path,
    now: DateTime<Utc>,
) -> std::io::Result<()> {
    let invalid = |msg: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("seed file {}: {msg}", path.display()),
        )
    };
    let text = read_seed(path)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("seed file {}: {e}", path.display())))?;
    let seed: Seed = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    for collection in seed.collections {
        check_id(&collection.id).map_err(|e| invalid(format!("{}: {e}", collection.id)))?;
        let mut assets: Vec<(AssetKey, SeedAsset)> = collection
            .assets
            .into_iter()
            .map(|a| (AssetKey::collection_asset(&collection.id, &a.id), a))
            .collect();
        for item in collection.items {
            check_id(&item.id).map_err(|e| invalid(format!("{}: {e}", item.id)))?;
            state.ensure_item(&collection.id, &item.id, now);
            assets.extend(
                item.assets
                    .into_iter()
                    .map(|a| (AssetKey::item_asset(&collection.id, &item.id, &a.id), a)),
            );
        }
        let external_hrefs: Vec<String> =
            assets.iter().filter_map(|(_, a)| a.href.clone()).collect();
        let seeded = state.ensure_collection(&collection.id, now);
        seeded.external = ExternalAssets {
            allowed: collection.allow_external_assets || !external_hrefs.is_empty(),
            whitelist: collection
                .external_asset_whitelist
                .into_iter()
                .chain(external_hrefs)
                .collect(),
        };
        for (key, asset) in assets {
            let media_type = check_key(&key, &asset.media_type).map_err(invalid)?;
            state.ensure_parents(&key, now);
            state
                .put_asset(&key, media_type, Map::new(), asset.href, now)
                .map_err(|e| invalid(format!("{key}: {e:?}")))?;
        }
    }
    Ok(())
}

/// An asset as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSnapshot {
    /// Its media type.
    pub media_type: String,
    /// `file:checksum`: the multihash (hex) of the last completed upload.
    pub checksum: Option<String>,
    /// `file:size`: the bytes of the last completed upload.
    pub size: Option<u64>,
    /// Where its data is downloaded (set by the first completed upload, or external).
    pub href: Option<String>,
    /// The `Content-Encoding` of its data.
    pub content_encoding: Option<String>,
}

/// An upload as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSnapshot {
    /// The upload id.
    pub id: String,
    /// Its status.
    pub status: UploadState,
    /// The number of parts declared at create.
    pub number_parts: u32,
    /// The multihash declared at create.
    pub checksum: String,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// When it was completed or aborted.
    pub ended: Option<DateTime<Utc>>,
    /// How many distinct parts the part URLs have received.
    pub parts_received: u32,
    /// The `content_encoding` declared at create.
    pub content_encoding: Option<String>,
}

impl From<&Upload> for UploadSnapshot {
    fn from(u: &Upload) -> Self {
        UploadSnapshot {
            id: u.id.clone(),
            status: u.status,
            number_parts: u.number_parts,
            checksum: u.checksum.clone(),
            created: u.created,
            ended: u.ended,
            parts_received: u32::try_from(u.parts.len()).unwrap_or(u32::MAX),
            content_encoding: u.content_encoding.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_server_rule() {
        assert!(check_id("ch.swisstopo.swissalti3d_2019-1").is_ok());
        for bad in ["", "Upper", "a b", "a/b", "é"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
