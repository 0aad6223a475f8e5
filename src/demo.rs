//! `stac-uploadd demo`: the tool at work against an in-process emulator, with nothing to set up.
//! It uploads sample files through injected faults and checks what the server holds afterwards.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::emulator::{
    AssetKey, CallKind, Emulator, EmulatorAuth, EmulatorConfig, FaultAction, FaultTrigger,
};
use crate::stac::{AssetTarget, Auth, ClientConfig, StacClient};
use crate::units::ByteSize;
use crate::upload::{self, UploadError, UploadOptions};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the large sample file (sent in 5 MiB parts).
    #[arg(long, default_value = "48MiB")]
    pub size: ByteSize,
}

struct Case {
    name: &'static str,
    target: AssetTarget,
    media_type: &'static str,
    size: u64,
    /// Faults injected before this case runs.
    faults: Vec<(CallKind, FaultAction)>,
    /// Someone else's upload left in progress on the asset beforehand.
    blocked: bool,
}

/// Runs the demo and fails if anything the server holds afterwards is not what was sent.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let password = "demo-password";
    let emu = Emulator::start(
        "127.0.0.1:0".parse().expect("a literal socket address"),
        EmulatorConfig {
            auth: EmulatorAuth::Basic {
                username: "demo".into(),
                password: password.into(),
            },
            ..EmulatorConfig::default()
        },
    )
    .await
    .context("cannot start the emulator")?;
    println!("emulator listening on {}", emu.base_url());
    let mut cfg = ClientConfig::new(emu.base_url().parse()?);
    cfg.auth = Auth::Basic {
        username: "demo".into(),
        password: SecretString::from(password),
    };
    let client = StacClient::new(cfg)?;
    let dir = tempfile::tempdir()?;

    let cases = vec![
        Case {
            name: "small collection asset",
            target: AssetTarget::collection_asset("ch.demo.radar", "legend.json"),
            media_type: "application/json",
            size: 1_000,
            faults: vec![],
            blocked: false,
        },
        Case {
            name: "multi-part, a part fails twice (503, reset)",
            target: AssetTarget::item_asset("ch.demo.radar", "radar-2026-11-25", "radar.tif"),
            media_type: "image/tiff; application=geotiff",
            size: args.size.get(),
            faults: vec![
                (CallKind::PutPart, FaultAction::Status(503)),
                (CallKind::PutPart, FaultAction::Drop),
            ],
            blocked: false,
        },
        Case {
            name: "complete succeeds but its answer is lost",
            target: AssetTarget::item_asset("ch.demo.radar", "radar-2026-11-25", "radar-small.tif"),
            media_type: "image/tiff; application=geotiff",
            size: 6 * ByteSize::MIB + 17,
            faults: vec![(CallKind::Complete, FaultAction::DropAfterCommit)],
            blocked: false,
        },
        Case {
            name: "asset blocked by a stale upload",
            target: AssetTarget::item_asset("ch.demo.radar", "radar-2026-11-24", "radar.tif"),
            media_type: "image/tiff; application=geotiff",
            size: 2_000_000,
            faults: vec![],
            blocked: true,
        },
    ];

    let opts = UploadOptions {
        part_size: ByteSize::mib(5),
        ..UploadOptions::default()
    };
    let cancel = CancellationToken::new();
    println!();
    println!(
        "{:<44} {:>10} {:>6} {:>8}  {:<26} server holds the file?",
        "case", "size", "parts", "retries", "outcome"
    );
    let mut failures = 0;
    for case in &cases {
        let key = AssetKey {
            collection: case.target.collection.clone(),
            item: case.target.item.clone(),
            asset: case.target.asset.clone(),
        };
        emu.create_asset(&key, case.media_type)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = dir.path().join(&case.target.asset);
        let sha = write_sample(&path, case.size, case.name.len() as u64)?;
        if case.blocked {
            emu.plant_upload(&key, chrono::Utc::now() - chrono::Duration::hours(3));
        }
        for (kind, action) in &case.faults {
            emu.faults()
                .inject(*kind, action.clone(), FaultTrigger::Next(1));
        }
        let mut outcome =
            upload::upload_file(&client, &case.target, &path, &opts, Arc::new(()), &cancel).await;
        let mut note = String::new();
        if let Err(UploadError::InProgress { upload, .. }) = &outcome {
            // What `upload --abort-in-progress` does, and what the daemon does with stale uploads.
            note = format!(" (aborted blocker {})", short(&upload.upload_id.0));
            let id = upload.upload_id.clone();
            if let upload::AbortOutcome::Failed(e) =
                upload::abort_upload(&client, &case.target, &id, &opts).await
            {
                bail!("could not abort the blocking upload: {e}");
            }
            outcome =
                upload::upload_file(&client, &case.target, &path, &opts, Arc::new(()), &cancel)
                    .await;
        }
        let stored = emu.object_sha256_hex(&key);
        let checksum_ok = emu
            .asset(&key)
            .and_then(|a| a.checksum)
            .is_some_and(|c| c == format!("1220{sha}"));
        let holds = stored.as_deref() == Some(sha.as_str()) && checksum_ok;
        let in_progress = emu
            .uploads(&key)
            .iter()
            .filter(|u| u.status == crate::emulator::UploadState::InProgress)
            .count();
        let (parts, retries, result) = match &outcome {
            Ok(r) => (
                r.parts.to_string(),
                r.part_retries.to_string(),
                format!("completed{note}"),
            ),
            Err(e) => ("-".into(), "-".into(), format!("FAILED: {e}")),
        };
        let ok = outcome.is_ok() && holds && in_progress == 0;
        if !ok {
            failures += 1;
        }
        println!(
            "{:<44} {:>10} {:>6} {:>8}  {:<26} {}",
            case.name,
            ByteSize(case.size).to_string(),
            parts,
            retries,
            result,
            if ok {
                "yes, checksum verified, nothing in progress"
            } else {
                "NO"
            }
        );
    }
    println!();
    emu.shutdown().await;
    if failures > 0 {
        bail!("{failures} demo case(s) did not end with the file on the server");
    }
    println!(
        "all {} uploads verified: the server holds exactly the bytes of each file.",
        cases.len()
    );
    Ok(())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Writes `size` deterministic pseudo-random bytes and returns their sha256 in hex.
fn write_sample(path: &Path, size: u64, seed: u64) -> anyhow::Result<String> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut h = Sha256::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush()?;
    Ok(hex::encode(h.finalize()))
}
