//! A local service-stac: the asset-upload API of data.geo.admin.ch and the S3 part URLs it hands
//! out, served over real HTTP.
//!
//! It follows the protocol contract (`docs/protocol.md`) down to the real server's quirks: 409 with
//! `upload_id` (or the legacy 400) for a blocking upload, 500 on a second abort, S3 XML errors on
//! part PUTs, uploads left in progress after a refused complete. Faults (status codes, with a
//! `Retry-After` if asked, resets, lost answers, delays, expired URLs, a create answered without
//! part URLs, a success answered with an HTML body, a bandwidth cap) are injected per kind of call
//! from Rust, from the admin API under `/_emulator/`, or with `--fault` on the command line. Every
//! counted request is recorded with its time and `Authorization` header
//! ([`Emulator::requests`]).
//!
//! Item, asset and collection bodies are checked as the real server's serializers check them,
//! one table of rules in `rules.rs`; what it keeps of them is what a GET answers.
//!
//! `latency` (`--latency 20ms`) answers every call of the API and of the part URLs that much
//! later, as a distant server would: for benches.
//!
//! Writes need the configured credentials: Basic, `Token`, a static `Bearer`, or an access
//! token of a Cognito user pool (checked with Cognito's `GetUser`, as production accepts them).
//! With a certificate and key it serves https, and hands out https part URLs.
//!
//! | path | what |
//! | --- | --- |
//! | `/api/stac/{v1,v0.9}/collections/...` | the STAC API (collections, items, assets, uploads; `POST .../items`, the items and assets lists; `ETag` and `If-Match`/`If-None-Match`) |
//! | `/_s3/{upload_id}/{part}?X-Amz-Expires=..&X-Amz-Signature=..` | presigned part URLs |
//! | `/_data/{collection}[/{item}]/{asset}` | an asset's public object (its `href`; GET and HEAD, with the bucket's `Content-Length`, `Content-Type`, `Content-Encoding`, `x-amz-meta-sha256`, `Cache-Control` and multipart `ETag`) |
//! | `/_emulator/{faults,bandwidth,state}` | the admin API (no auth) |

mod api;
mod cli;
mod cognito;
mod error;
mod faults;
mod geometry;
mod request;
mod rules;
mod s3;
mod server;
mod state;
mod storage;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_items;
#[cfg(test)]
mod tests_rules;
mod units;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cli::{EmulatorArgs, run};
pub use faults::{
    CallKind, FaultAction, FaultSpec, FaultTrigger, Faults, PartRecord, RequestRecord,
};
pub use geometry::validate_geometry;
pub use state::{AssetSnapshot, UploadSnapshot, UploadState};

/// The media types the emulator accepts for asset data (the server's `MEDIA_TYPES`, normalised),
/// each with the extensions an asset id of that type may end in: what the client's copy of the
/// table is checked against.
pub fn media_types() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    rules::MEDIA_TYPES.iter().copied()
}

use faults::CallCounters;

/// The base64 md5 of nothing.
const EMPTY_MD5: &str = "1B2M2Y8AsgTpgAmY2PhCfg==";
use s3::Signer;
use state::{State, Upload};
use storage::Store;

/// How an emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The credentials every POST/PUT/PATCH/DELETE of the API needs.
    pub auth: EmulatorAuth,
    /// Answer a blocked create with the documented 400 (no `upload_id`) instead of the 409 the
    /// server code sends.
    pub legacy_in_progress_400: bool,
    /// How long presigned part URLs stay valid.
    pub url_ttl: Duration,
    /// Where part bodies are kept.
    pub storage: Storage,
    /// A JSON file of collections, items and assets to start with.
    pub seed: Option<PathBuf>,
    /// Serve https with this certificate and key instead of plain http.
    pub tls: Option<EmulatorTls>,
    /// Added before every answer of the API and of the part URLs (not the admin API): the round
    /// trip of a distant server, for benches (`--latency 20ms`).
    pub latency: Duration,
}

/// The PEM files of an https emulator: its certificate (chain) and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorTls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            auth: EmulatorAuth::None,
            legacy_in_progress_400: false,
            url_ttl: Duration::from_secs(3600),
            storage: Storage::Memory,
            seed: None,
            tls: None,
            latency: Duration::ZERO,
        }
    }
}

/// The credentials the emulator demands on writes.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum EmulatorAuth {
    /// Everything is allowed.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Token <token>`.
    Token(String),
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Bearer <access token>` issued by the Cognito user pool at `endpoint`
    /// (e.g. `https://cognito-idp.eu-central-1.amazonaws.com/`, or moto), checked with its
    /// `GetUser` call; accepted tokens are remembered for 30 s.
    Cognito {
        /// The Cognito API endpoint.
        endpoint: String,
    },
}

/// Never shows the secrets.
impl fmt::Debug for EmulatorAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmulatorAuth::None => f.write_str("None"),
            EmulatorAuth::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            EmulatorAuth::Token(_) => f.write_str("Token(<redacted>)"),
            EmulatorAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            EmulatorAuth::Cognito { endpoint } => {
                write!(f, "Cognito {{ endpoint: {endpoint:?} }}")
            }
        }
    }
}

/// `none`, `basic:USER:PASS`, `token:TOKEN`, `bearer:TOKEN` or `cognito:ENDPOINT`.
impl FromStr for EmulatorAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected none, basic:USER:PASS, token:TOKEN, bearer:TOKEN or cognito:ENDPOINT";
        let (scheme, rest) = s.split_once(':').unwrap_or((s, ""));
        let auth = match scheme {
            "none" if rest.is_empty() => EmulatorAuth::None,
            "basic" => match rest.split_once(':') {
                Some((user, pass)) if !user.is_empty() => EmulatorAuth::Basic {
                    username: user.to_owned(),
                    password: pass.to_owned(),
                },
                _ => return Err(format!("invalid basic credentials: {usage}")),
            },
            "token" if !rest.is_empty() => EmulatorAuth::Token(rest.to_owned()),
            "bearer" if !rest.is_empty() => EmulatorAuth::Bearer(rest.to_owned()),
            "cognito" => match url::Url::parse(rest) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => EmulatorAuth::Cognito {
                    endpoint: rest.to_owned(),
                },
                _ => {
                    return Err(format!(
                        "invalid Cognito endpoint {rest:?}: expected e.g. cognito:https://cognito-idp.eu-central-1.amazonaws.com/"
                    ));
                }
            },
            // The input may hold a secret: do not echo it.
            _ => return Err(format!("invalid --auth value: {usage}")),
        };
        Ok(auth)
    }
}

/// Where part bodies are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Storage {
    /// In memory.
    #[default]
    Memory,
    /// In files under a fresh subdirectory of this directory, removed when the emulator stops.
    Dir(PathBuf),
}

/// An asset of an item (`item: Some`) or of a collection (`item: None`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetKey {
    /// The collection id.
    pub collection: String,
    /// The item id, or `None` for a collection asset.
    pub item: Option<String>,
    /// The asset id.
    pub asset: String,
}

impl AssetKey {
    /// An item asset.
    pub fn item_asset(collection: &str, item: &str, asset: &str) -> Self {
        AssetKey {
            collection: collection.to_owned(),
            item: Some(item.to_owned()),
            asset: asset.to_owned(),
        }
    }

    /// A collection asset.
    pub fn collection_asset(collection: &str, asset: &str) -> Self {
        AssetKey {
            collection: collection.to_owned(),
            item: None,
            asset: asset.to_owned(),
        }
    }

    /// The asset's path under the API base, e.g. `collections/c/items/i/assets/a.zip`.
    pub fn api_path(&self) -> String {
        match &self.item {
            Some(item) => format!(
                "collections/{}/items/{item}/assets/{}",
                self.collection, self.asset
            ),
            None => format!("collections/{}/assets/{}", self.collection, self.asset),
        }
    }

    /// The path of the asset's data on this server.
    pub(crate) fn data_path(&self) -> String {
        match &self.item {
            Some(item) => format!("/_data/{}/{item}/{}", self.collection, self.asset),
            None => format!("/_data/{}/{}", self.collection, self.asset),
        }
    }
}

impl fmt::Display for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.api_path())
    }
}

/// The server's clock: wall time at start plus tokio's monotonic time since, so that tests
/// running on paused tokio time see URLs expire when they advance it.
#[derive(Debug)]
pub(crate) struct Clock {
    wall: DateTime<Utc>,
    mono: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            wall: Utc::now(),
            mono: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.mono.elapsed()).unwrap_or(TimeDelta::MAX);
        self.wall
            .checked_add_signed(elapsed)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Everything the request handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The address clients reach this server at (loopback when bound to 0.0.0.0).
    pub(crate) addr: SocketAddr,
    /// `http`, or `https` when serving TLS.
    pub(crate) scheme: &'static str,
    pub(crate) auth: EmulatorAuth,
    /// Set with `EmulatorAuth::Cognito`.
    pub(crate) cognito: Option<cognito::TokenChecker>,
    pub(crate) legacy_in_progress_400: bool,
    pub(crate) url_ttl: TimeDelta,
    /// Added before every answer of the API and of the part URLs.
    pub(crate) latency: Duration,
    state: Mutex<State>,
    pub(crate) store: Store,
    pub(crate) faults: Faults,
    pub(crate) calls: CallCounters,
    /// Every counted request, with its time and credentials.
    pub(crate) requests: faults::RequestLog,
    pub(crate) parts: faults::PartLog,
    /// Part PUTs being received now, and the most ever at once (proof of parallel clients).
    pub(crate) parts_in_flight: faults::Gauge,
    pub(crate) signer: Signer,
    pub(crate) clock: Clock,
}

impl Shared {
    /// The state. A handler that panicked cannot have left it half-changed in a way that
    /// matters more than stopping the whole server would, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// When part URLs handed out at `from` expire.
    pub(crate) fn expiry(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        from.checked_add_signed(self.url_ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// A running emulator. Dropping it stops the server; [`Emulator::shutdown`] also waits for it.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Emulator {
    /// Binds `listen` (port 0 for an ephemeral port) and serves until shut down.
    pub async fn start(listen: SocketAddr, config: EmulatorConfig) -> std::io::Result<Emulator> {
        let tls = config.tls.as_ref().map(server::acceptor).transpose()?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = connectable(listener.local_addr()?);
        let clock = Clock::new();
        let mut state = State::default();
        if let Some(seed) = &config.seed {
            state::load_seed(&mut state, seed, clock.now()).await?;
        }
        let cognito = match &config.auth {
            EmulatorAuth::Cognito { endpoint } => {
                Some(cognito::TokenChecker::new(endpoint.clone()))
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            addr,
            scheme: if tls.is_some() { "https" } else { "http" },
            auth: config.auth,
            cognito,
            legacy_in_progress_400: config.legacy_in_progress_400,
            url_ttl: TimeDelta::from_std(config.url_ttl).unwrap_or(TimeDelta::MAX),
            latency: config.latency,
            state: Mutex::new(state),
            store: Store::new(&config.storage).await?,
            faults: Faults::default(),
            calls: CallCounters::default(),
            requests: faults::RequestLog::default(),
            parts: faults::PartLog::default(),
            parts_in_flight: faults::Gauge::default(),
            signer: Signer::new(),
            clock,
        });
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(server::accept_loop(
            listener,
            api::router(Arc::clone(&shared)),
            shared.faults.bandwidth_handle(),
            tls,
            shutdown.clone(),
            tasks.clone(),
        ));
        Ok(Emulator {
            shared,
            shutdown,
            tasks,
        })
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` when serving TLS).
    pub fn origin(&self) -> String {
        format!("{}://{}", self.shared.scheme, self.shared.addr)
    }

    /// `http://127.0.0.1:PORT/api/stac/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/api/stac/v1", self.origin())
    }

    /// `http://127.0.0.1:PORT/api/stac/v0.9`.
    pub fn base_url_v09(&self) -> String {
        format!("{}/api/stac/v0.9", self.origin())
    }

    /// The asset's URL under the v1 API.
    pub fn asset_url(&self, key: &AssetKey) -> String {
        format!("{}/{}", self.base_url(), key.api_path())
    }

    /// The fault injector.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// How many requests of this kind arrived (including those a fault answered).
    pub fn call_count(&self, kind: CallKind) -> u64 {
        self.shared.calls.get(kind)
    }

    /// Every counted request so far, in order of arrival: which call, when it arrived, and its
    /// `Authorization` header.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.all()
    }

    /// Every part PUT so far, in order of ending: upload, part, `User-Agent`, start and end,
    /// status (`None`: cut before an answer).
    pub fn part_log(&self) -> Vec<PartRecord> {
        self.shared.parts.all()
    }

    /// The most part PUTs this server was receiving at the same time.
    pub fn max_concurrent_part_puts(&self) -> u64 {
        self.shared.parts_in_flight.max()
    }

    /// Creates an empty collection `id` unless it exists.
    pub fn create_collection(&self, id: &str) {
        let now = self.shared.now();
        self.shared
            .lock()
            .collections
            .entry(id.to_owned())
            .or_insert_with(|| state::Collection::new(serde_json::Map::new(), now));
    }

    /// Creates (or replaces, like `PUT`) an asset, and its collection and item if needed.
    pub fn create_asset(&self, key: &AssetKey, media_type: &str) -> Result<(), String> {
        let media_type = state::check_key(key, media_type)?;
        let now = self.shared.now();
        let mut state = self.shared.lock();
        state.ensure_parents(key, now);
        state
            .put_asset(key, media_type, Default::default(), None, now)
            .map(|_| ())
            .map_err(|e| format!("{key}: {e:?}"))
    }

    /// Lets the assets of `collection` point elsewhere (an `href` in their body) when the URL
    /// starts with one of `whitelist`: the real server's admin settings `allow_external_assets`
    /// and `external_asset_whitelist`. Creates the collection if needed.
    pub fn allow_external_assets(
        &self,
        collection: &str,
        whitelist: &[&str],
    ) -> Result<(), String> {
        state::check_id(collection)?;
        let now = self.shared.now();
        let mut state = self.shared.lock();
        state.ensure_collection(collection, now).external = rules::ExternalAssets {
            allowed: true,
            whitelist: whitelist.iter().map(|w| (*w).to_owned()).collect(),
        };
        Ok(())
    }

    /// The asset, if it exists.
    pub fn asset(&self, key: &AssetKey) -> Option<AssetSnapshot> {
        let state = self.shared.lock();
        let asset = state.asset(key).ok()?;
        let href = match (&asset.external_href, &asset.object) {
            (Some(external), _) => Some(external.clone()),
            (None, Some(_)) => Some(format!("{}{}", self.origin(), key.data_path())),
            (None, None) => None,
        };
        Some(AssetSnapshot {
            media_type: asset.media_type.clone(),
            checksum: asset.checksum.clone(),
            size: asset.size,
            href,
            content_encoding: asset
                .object
                .as_ref()
                .and_then(|o| o.content_encoding.clone()),
        })
    }

    /// The stored bytes of the asset's last completed upload (read whole: for small files).
    pub fn object_bytes(&self, key: &AssetKey) -> Option<Vec<u8>> {
        let blobs = self.object_blobs(key)?;
        storage::read_all(&blobs).ok()
    }

    /// The sha256 (hex) of the asset's stored bytes, streamed from storage.
    pub fn object_sha256_hex(&self, key: &AssetKey) -> Option<String> {
        let blobs = self.object_blobs(key)?;
        storage::sha256_hex(&blobs).ok()
    }

    fn object_blobs(&self, key: &AssetKey) -> Option<Vec<storage::Blob>> {
        // Cloned out so that reading files happens outside the lock.
        let state = self.shared.lock();
        Some(state.asset(key).ok()?.object.as_ref()?.blobs.clone())
    }

    /// Every upload of the asset, oldest first.
    pub fn uploads(&self, key: &AssetKey) -> Vec<UploadSnapshot> {
        let state = self.shared.lock();
        let mut uploads: Vec<UploadSnapshot> = state
            .asset(key)
            .map(|a| a.uploads.iter().map(UploadSnapshot::from).collect())
            .unwrap_or_default();
        uploads.sort_by_key(|u| u.created);
        uploads
    }

    /// Every upload in progress, across all assets.
    pub fn in_progress_uploads(&self) -> Vec<(AssetKey, UploadSnapshot)> {
        let state = self.shared.lock();
        let mut found: Vec<(AssetKey, UploadSnapshot)> = state
            .upload_index
            .iter()
            .filter_map(|(id, key)| {
                let upload = state.upload(key, id).ok()?;
                (upload.status == UploadState::InProgress)
                    .then(|| (key.clone(), UploadSnapshot::from(upload)))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Leaves an upload in progress on the asset as if someone else had started it (1 part,
    /// dummy md5 and checksum), creating the asset if needed; returns its id. If an upload is
    /// already in progress there, that one's id is returned instead.
    /// When the asset was read (`GET` of the asset path), oldest first: a client that reads its
    /// asset at the start of every run leaves the times of its runs here.
    pub fn asset_reads(&self, key: &AssetKey) -> Vec<std::time::Instant> {
        self.shared
            .lock()
            .reads
            .get(key)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Removes the S3 multipart upload behind an upload record, as an S3 lifecycle rule for
    /// incomplete uploads does: the record stays in progress (creates on the asset answer 409),
    /// while abort and parts listing answer 500 NoSuchUpload, complete 400 and part PUTs 404.
    pub fn lose_in_s3(&self, upload_id: &str) {
        self.shared.lock().lost_in_s3.insert(upload_id.to_owned());
    }

    pub fn plant_upload(&self, key: &AssetKey, created: DateTime<Utc>) -> String {
        let now = self.shared.now();
        let mut state = self.shared.lock();
        if state.asset(key).is_err() {
            state.ensure_parents(key, now);
            let media_type = state::media_type_for(&key.asset).to_owned();
            // Cannot fail: the parents were just created.
            let _ = state.put_asset(key, media_type, Default::default(), None, now);
        }
        let Ok(asset) = state.asset_mut(key) else {
            return String::new();
        };
        if let Some(upload) = asset.in_progress() {
            return upload.id.clone();
        }
        let id = new_upload_id();
        asset.uploads.push(Upload {
            id: id.clone(),
            status: UploadState::InProgress,
            number_parts: 1,
            // The md5 of nothing and a sha256 of zeros: nobody is going to send this part.
            md5_parts: serde_json::json!([{"part_number": 1, "md5": EMPTY_MD5}]),
            url_parts: vec![(1.into(), 1, EMPTY_MD5.to_owned())],
            checksum: format!("1220{}", "0".repeat(64)),
            created,
            ended: None,
            expires: self.shared.expiry(created),
            content_encoding: None,
            update_interval: -1,
            parts: Default::default(),
            etag: state::new_etag(),
        });
        state.upload_index.insert(id.clone(), key.clone());
        id
    }

    /// Stops accepting, closes every connection and waits until all are gone.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A fresh upload id, opaque like S3's.
pub(crate) fn new_upload_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Where a client reaches a listener bound to `addr`: an unspecified address means loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
