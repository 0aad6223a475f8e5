//! Helpers shared by the integration tests: an emulator on an ephemeral loopback port, a client
//! for it, and sample files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use stac_uploadd::emulator::{AssetKey, Emulator, EmulatorAuth, EmulatorConfig, UploadState};
use stac_uploadd::stac::{ApiVersion, AssetTarget, Auth, ClientConfig, StacClient};
use stac_uploadd::units::ByteSize;
use stac_uploadd::upload::{self, UploadError, UploadOptions, UploadReport};
use tokio_util::sync::CancellationToken;

pub const USER: &str = "publisher";
pub const PASSWORD: &str = "correct horse battery staple";
pub const MIB: u64 = 1024 * 1024;

pub struct Env {
    pub emu: Emulator,
    pub client: StacClient,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Env {
    start_with(EmulatorConfig::default(), ApiVersion::V1).await
}

pub async fn start_with(mut config: EmulatorConfig, api: ApiVersion) -> Env {
    config.auth = EmulatorAuth::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts");
    let base = match api {
        ApiVersion::V1 => emu.base_url(),
        ApiVersion::V09 => emu.base_url_v09(),
    };
    let client = client_for(&base, api, basic());
    Env {
        emu,
        client,
        dir: tempfile::tempdir().unwrap(),
    }
}

pub fn basic() -> Auth {
    Auth::Basic {
        username: USER.into(),
        password: SecretString::from(PASSWORD),
    }
}

pub fn client_for(base: &str, api: ApiVersion, auth: Auth) -> StacClient {
    let mut cfg = ClientConfig::new(base.parse().unwrap());
    cfg.api_version = api;
    cfg.auth = auth;
    cfg.request_timeout = Duration::from_secs(10);
    StacClient::new(cfg).unwrap()
}

/// Options for tests: 5 MiB parts so small files still make several, short retry waits.
pub fn opts() -> UploadOptions {
    UploadOptions {
        part_size: ByteSize::mib(5),
        retry_min_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_millis(300),
        ..UploadOptions::default()
    }
}

pub fn key(t: &AssetTarget) -> AssetKey {
    AssetKey {
        collection: t.collection.clone(),
        item: t.item.clone(),
        asset: t.asset.clone(),
    }
}

impl Env {
    /// An item asset that exists on the server.
    pub fn item_asset(&self, name: &str) -> AssetTarget {
        let t = AssetTarget::item_asset("ch.test.collection", "item-1", name);
        self.emu.create_asset(&key(&t), "application/zip").unwrap();
        t
    }

    /// A file of `len` deterministic bytes; returns its path and sha256 hex.
    pub fn file(&self, name: &str, len: u64) -> (PathBuf, String) {
        let path = self.dir.path().join(name);
        let sha = write_file(&path, len, name.len() as u64);
        (path, sha)
    }

    pub async fn upload(
        &self,
        target: &AssetTarget,
        path: &Path,
    ) -> Result<UploadReport, UploadError> {
        self.upload_with(target, path, &opts()).await
    }

    pub async fn upload_with(
        &self,
        target: &AssetTarget,
        path: &Path,
        o: &UploadOptions,
    ) -> Result<UploadReport, UploadError> {
        upload::upload_file(
            &self.client,
            target,
            path,
            o,
            Arc::new(()),
            &CancellationToken::new(),
        )
        .await
    }

    /// The asset holds exactly the file: declared checksum and stored bytes.
    pub fn assert_holds(&self, target: &AssetTarget, sha_hex: &str) {
        let k = key(target);
        let asset = self.emu.asset(&k).expect("asset exists");
        assert_eq!(
            asset.checksum.as_deref(),
            Some(format!("1220{sha_hex}").as_str()),
            "declared checksum of {target}"
        );
        assert_eq!(
            self.emu.object_sha256_hex(&k).as_deref(),
            Some(sha_hex),
            "stored bytes of {target}"
        );
    }

    /// No upload is left in progress anywhere on the server.
    pub fn assert_nothing_in_progress(&self) {
        let left = self.emu.in_progress_uploads();
        assert!(left.is_empty(), "uploads left in progress: {left:?}");
    }

    pub fn count(&self, target: &AssetTarget, state: UploadState) -> usize {
        self.emu
            .uploads(&key(target))
            .iter()
            .filter(|u| u.status == state)
            .count()
    }
}

/// Writes `len` deterministic pseudo-random bytes; returns their sha256 in hex.
pub fn write_file(path: &Path, len: u64, seed: u64) -> String {
    stac_uploadd::demo::write_sample(path, len, seed).expect("the test file is written")
}
