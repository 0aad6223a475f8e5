//! Recurring-publisher features of the engine against the emulator: compression round trips,
//! skip-unchanged, the digest cache, temporary files, bandwidth limits.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::fixtures::*;
use stac_client::AssetTarget;
use stac_client::units::ByteSize;
use stac_upload::bandwidth::{Bandwidth, BandwidthLimit};
use stac_upload::{CompressMode, UploadEvent, UploadObserver, UploadOptions};
use stac_uploadd::state::StateStore;
use stac_uploadd_emulator::{CallKind, FaultAction, UploadState};
use tokio_util::sync::CancellationToken;

/// Counts the bytes the session read to hash or compress.
#[derive(Default)]
struct Reads(AtomicU64);

impl UploadObserver for Reads {
    fn on_event(&self, e: &UploadEvent<'_>) {
        if let UploadEvent::Hashed { bytes } = e {
            self.0.fetch_add(*bytes, Ordering::Relaxed);
        }
    }
}

/// A CSV-like file, compressible like real station data.
fn csv(env: &Env, name: &str, rows: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = Vec::new();
    for i in 0..rows {
        data.extend_from_slice(
            format!(
                "2026-11-25T10:{:02}:00Z,STN{:03},{:.1}\n",
                i % 60,
                i % 97,
                (i % 300) as f64 / 10.0
            )
            .as_bytes(),
        );
    }
    let path = env.dir.path().join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn csv_asset(env: &Env, name: &str) -> AssetTarget {
    let t = AssetTarget::item_asset("ch.test.collection", "item-1", name);
    env.emu.create_asset(&key(&t), "text/csv").unwrap();
    t
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn gzip_and_brotli_round_trip_with_the_uncompressed_checksum() {
    let env = start().await;
    for (mode, name, encoding) in [
        (CompressMode::Gzip, "g.csv", "gzip"),
        (CompressMode::Br, "b.csv", "br"),
    ] {
        let target = csv_asset(&env, name);
        let (path, data) = csv(&env, name, 400_000); // ~12 MB: several parts before compression
        let temp = tempfile::tempdir().unwrap();
        let o = UploadOptions {
            compress: mode,
            temp_dir: Some(temp.path().to_owned()),
            ..opts()
        };
        let report = env.upload_with(&target, &path, &o).await.unwrap();
        assert!(
            report.bytes < data.len() as u64 / 4,
            "{encoding}: sent {} of {}",
            report.bytes,
            data.len()
        );
        let asset = env.emu.asset(&key(&target)).unwrap();
        assert_eq!(
            asset.checksum,
            Some(format!("1220{}", sha256_hex(&data))),
            "{encoding}: checksum of the uncompressed data"
        );
        assert_eq!(asset.content_encoding.as_deref(), Some(encoding));
        let stored = env.emu.object_bytes(&key(&target)).unwrap();
        let mut back = Vec::new();
        match mode {
            CompressMode::Gzip => flate2::read::GzDecoder::new(&stored[..])
                .read_to_end(&mut back)
                .unwrap(),
            _ => brotli::Decompressor::new(&stored[..], 1 << 16)
                .read_to_end(&mut back)
                .unwrap(),
        };
        assert_eq!(
            back, data,
            "{encoding}: the stored bytes decompress to the file"
        );
        assert_eq!(
            std::fs::read_dir(temp.path()).unwrap().count(),
            0,
            "{encoding}: the temporary file is gone"
        );
    }
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn auto_compresses_large_uncompressed_types_only() {
    let env = start().await;
    let text = csv_asset(&env, "big.csv");
    let (path, data) = csv(&env, "big.csv", 350_000);
    assert!(data.len() > 10_000_000);
    let o = UploadOptions {
        compress: CompressMode::Auto,
        ..opts()
    };
    env.upload_with(&text, &path, &o).await.unwrap();
    assert_eq!(
        env.emu
            .asset(&key(&text))
            .unwrap()
            .content_encoding
            .as_deref(),
        Some("gzip")
    );
    // A zip is already compressed: sent as is.
    let (zip, zpath, zsha) = env.asset_with_file("big.zip", 11 * MIB);
    env.upload_with(&zip, &zpath, &o).await.unwrap();
    assert_eq!(env.emu.asset(&key(&zip)).unwrap().content_encoding, None);
    env.assert_holds(&zip, &zsha);
}

#[tokio::test]
async fn an_unchanged_file_is_skipped_and_a_changed_one_sent() {
    let env = start().await;
    let (target, path, sha) = env.asset_with_file("daily.zip", 6 * MIB);
    let first = env.upload(&target, &path).await.unwrap();
    assert!(!first.unchanged && first.upload_id.is_some());
    let second = env.upload(&target, &path).await.unwrap();
    assert!(second.unchanged && second.upload_id.is_none(), "{second:?}");
    assert_eq!(
        env.emu.uploads(&key(&target)).len(),
        1,
        "no upload for an unchanged file"
    );
    env.assert_holds(&target, &sha);
    // One byte changes: sent again.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12_345] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let third = env.upload(&target, &path).await.unwrap();
    assert!(!third.unchanged);
    assert_eq!(env.count(&target, UploadState::Completed), 2);
    env.assert_holds(&target, &sha256_hex(&bytes));
    // --force sends even an unchanged file.
    let forced = env
        .upload_with(
            &target,
            &path,
            &UploadOptions {
                skip_unchanged: false,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert!(!forced.unchanged);
    assert_eq!(env.count(&target, UploadState::Completed), 3);
}

#[tokio::test]
async fn the_digest_cache_spares_a_second_read() {
    let env = start().await;
    let (target, path, _) = env.asset_with_file("cached.zip", 9 * MIB);
    let state_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(StateStore::open(state_dir.path()).await.unwrap());
    let o = UploadOptions {
        digest_cache: Some(cache.clone()),
        ..opts()
    };
    let run = |o: UploadOptions| {
        let (client, target, path) = (env.client.clone(), target.clone(), path.clone());
        async move {
            let reads = Arc::new(Reads::default());
            let r = stac_upload::upload_file(
                &client,
                &target,
                &path,
                &o,
                reads.clone(),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
            (r, reads.0.load(Ordering::Relaxed))
        }
    };
    let (first, read1) = run(o.clone()).await;
    assert!(!first.unchanged);
    assert_eq!(read1, 9 * MIB, "the first run reads the file once");
    let (second, read2) = run(o.clone()).await;
    assert!(second.unchanged);
    assert_eq!(read2, 0, "an unchanged file is not read again");
    // Even a forced upload takes its MD5s from the cache.
    let (forced, read3) = run(UploadOptions {
        skip_unchanged: false,
        ..o.clone()
    })
    .await;
    assert!(!forced.unchanged);
    assert_eq!(read3, 0);
    // The cache survives a restart of the daemon (flushed with the history).
    cache.flush().await.unwrap();
    let reopened = Arc::new(StateStore::open(state_dir.path()).await.unwrap());
    let (again, read4) = run(UploadOptions {
        digest_cache: Some(reopened),
        ..opts()
    })
    .await;
    assert!(again.unchanged);
    assert_eq!(read4, 0);
    // A touched file (new mtime) is read again.
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let (_, read5) = run(o).await;
    assert_eq!(read5, 9 * MIB);
}

#[tokio::test]
async fn temporary_files_are_removed_when_the_upload_fails() {
    let env = start().await;
    env.fault(CallKind::CreateUpload, FaultAction::Status(500), 1);
    let target = csv_asset(&env, "fail.csv");
    let (path, _) = csv(&env, "fail.csv", 10_000);
    let temp = tempfile::tempdir().unwrap();
    let o = UploadOptions {
        compress: CompressMode::Gzip,
        temp_dir: Some(temp.path().to_owned()),
        ..opts()
    };
    env.upload_with(&target, &path, &o).await.unwrap_err();
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_bandwidth_limit_is_never_exceeded() {
    // The rate achieved under the limit is measured by the benchmark; here the bound itself:
    // an upload can only be slowed down by load, so "not faster than the limit" is exact.
    let env = start().await;
    let (target, path, sha) = env.asset_with_file("limited.zip", 3 * MIB);
    let limit = Arc::new(Bandwidth::new(BandwidthLimit::constant(ByteSize(
        2_000_000,
    ))));
    let o = UploadOptions {
        bandwidth: vec![limit],
        skip_unchanged: false,
        ..opts()
    };
    let started = std::time::Instant::now();
    env.upload_with(&target, &path, &o).await.unwrap();
    let took = started.elapsed().as_secs_f64();
    let floor = (3 * MIB) as f64 / 2_000_000.0 * 0.9;
    assert!(
        took >= floor,
        "3 MiB at 2 MB/s took {took:.2} s, less than {floor:.2} s"
    );
    env.assert_holds(&target, &sha);
}

// --- stream "check": the run refuses what the server would fail on, before any call ---------

/// A path `collection/item/asset` over the server's 255 characters fails there with a 500 (after
/// an item may have been created): the run refuses the rendered path before it asks anything.
#[tokio::test]
async fn an_asset_path_over_255_characters_is_refused_before_any_call() {
    let env = start().await;
    let (path, _) = csv(&env, "a.csv", 10);
    let collection = "c".repeat(100);
    let item = "i".repeat(120);
    // 100 + 1 + 120 + 1 + 34 = 256 characters.
    let asset = format!("a{}.csv", "b".repeat(29));
    let target = AssetTarget::item_asset(&collection, &item, &asset);
    let e = env.upload_with(&target, &path, &opts()).await.unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("is 256 characters long"), "{shown}");
    assert!(shown.contains("at most 255"), "{shown}");
    for kind in [
        CallKind::GetAsset,
        CallKind::PutStac,
        CallKind::CreateUpload,
        CallKind::ListUploads,
    ] {
        assert_eq!(env.emu.call_count(kind), 0, "{kind:?}");
    }
    // One character less is sent.
    let asset = format!("a{}.csv", "b".repeat(28));
    let target = AssetTarget::item_asset(&collection, &item, &asset);
    let e = env.upload_with(&target, &path, &opts()).await.unwrap_err();
    assert!(!e.to_string().contains("characters long"), "{e}");
}
