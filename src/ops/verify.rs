//! `stac-uploadd verify --config F [--job J]`: for every asset the jobs publish now, the local
//! file against the server's `file:checksum` and against the public object its `href` serves
//! (rclone's `check` for this API). One line per asset; exit 1 on any mismatch.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use chrono::Utc;
use sha2::{Digest as _, Sha256};

use super::{OpsError, job_handle};
use crate::observe::escape_controls;
use crate::supervisor::public::sha256_hex;
use crate::supervisor::{Work, is_glob, public_answer, resolve_glob};
use crate::trigger::TriggerSpec;
use stac_client::{AssetTarget, PublicExpect, StacClient};
use stac_upload::CompressMode;

/// What `verify` was asked.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub config: PathBuf,
    pub job: Option<String>,
}

/// Checks each asset of the selected jobs; exit 1 when one does not match.
pub(crate) async fn run(req: Request) -> Result<(), OpsError> {
    let config = crate::config::load(&req.config).map_err(|e| OpsError::Usage(e.into()))?;
    let names: Vec<String> = req.job.iter().cloned().collect();
    let jobs = config
        .select_jobs(&names)
        .map_err(|e| OpsError::Usage(e.into()))?;
    let client = crate::daemon::client(&config).map_err(OpsError::Usage)?;
    // Only to render targets: opened read-only, a missing folder reads as empty.
    let state = Arc::new(
        super::open_for_reading(&config)
            .await
            .map_err(|e| OpsError::Failure(e.into()))?,
    );
    let now = Utc::now();
    let (mut checked, mut mismatches) = (0usize, 0usize);
    for spec in jobs {
        let work = match &spec.trigger {
            TriggerSpec::Cron { schedule, .. } => {
                Work::Scheduled(schedule.last_at_or_before(now).unwrap_or(now))
            }
            TriggerSpec::Every { .. } => Work::Scheduled(now),
            TriggerSpec::Watch(_) => {
                println!(
                    "job {}: skipped: a watch job names its assets as each file arrives; its runs' public checks are in `stac-uploadd status`",
                    spec.name
                );
                continue;
            }
        };
        let job = job_handle(spec, &client, &state);
        for (target, file) in job.targets(&work) {
            let line = check_asset(&client, spec.upload.compress, &target, &file).await;
            checked += 1;
            let verdict = match &line.mismatch {
                None => "ok".to_owned(),
                Some((reason, _)) => {
                    mismatches += 1;
                    format!("MISMATCH {reason}")
                }
            };
            let detail = line
                .mismatch
                .as_ref()
                .map(|(_, d)| format!(": {d}"))
                .unwrap_or_default();
            // File names and server answers are input: one asset, one line.
            println!(
                "job {}: {target} {verdict} {}{}",
                spec.name,
                escape_controls(&line.url),
                escape_controls(&detail)
            );
        }
    }
    if mismatches > 0 {
        return Err(OpsError::Failure(anyhow!(
            "{mismatches} of {checked} asset(s) do not match (see above)"
        )));
    }
    Ok(())
}

/// One asset's verdict: the URL it was checked at, and the first mismatch (reason, detail).
struct AssetLine {
    url: String,
    mismatch: Option<(&'static str, String)>,
}

/// The local file against `file:checksum`, then the public object against the local file.
async fn check_asset(
    client: &StacClient,
    compress: CompressMode,
    target: &AssetTarget,
    file: &Path,
) -> AssetLine {
    let api_url = client.asset_call_url(target, &[]).to_string();
    let fail = |url: &str, reason, detail: String| AssetLine {
        url: url.to_owned(),
        mismatch: Some((reason, detail)),
    };
    let local = match local_file(file).await {
        Ok(local) => local,
        Err(why) => return fail(&api_url, "local", why),
    };
    let asset = match client.read_asset(target).await {
        Ok(asset) => asset,
        Err(e) => return fail(&api_url, "server", format!("cannot read the asset: {e}")),
    };
    let declared = asset.checksum.as_deref().and_then(sha256_hex);
    if declared.as_deref() != Some(local.sha256_hex.as_str()) {
        return fail(
            &api_url,
            "checksum",
            format!(
                "{} has SHA-256 {}, the server's file:checksum is {}",
                file.display(),
                local.sha256_hex,
                asset.checksum.as_deref().unwrap_or("missing")
            ),
        );
    }
    let (url, answer) = public_answer(client, target, asset.href.as_deref()).await;
    // A compressed object's length is known only to the run that compressed it.
    let expect = PublicExpect {
        size: (compress == CompressMode::None).then_some(local.len),
        sha256_hex: Some(local.sha256_hex),
        content_encoding: match compress {
            CompressMode::None => Some(None),
            CompressMode::Gzip => Some(Some("gzip".to_owned())),
            CompressMode::Br => Some(Some("br".to_owned())),
            CompressMode::Auto => None,
        },
    };
    match answer.judge(&expect) {
        None => AssetLine {
            url,
            mismatch: None,
        },
        Some(m) => fail(&url, m.problem.as_str(), m.detail),
    }
}

/// The local file's length and SHA-256.
struct LocalFile {
    len: u64,
    sha256_hex: String,
}

/// Digests the file a run would send (a glob resolved to its one match), off the async threads;
/// `Err` says why it cannot be read.
async fn local_file(file: &Path) -> Result<LocalFile, String> {
    let path = if is_glob(file) {
        resolve_glob(file).await?
    } else {
        file.to_owned()
    };
    tokio::task::spawn_blocking(move || {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(&path).map_err(|e| format!("{shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{shown}: not a regular file"));
        }
        let mut f = std::fs::File::open(&path).map_err(|e| format!("{shown}: {e}"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1024 * 1024];
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("{shown}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(LocalFile {
            len,
            sha256_hex: hex::encode(hasher.finalize()),
        })
    })
    .await
    .unwrap_or_else(|e| Err(format!("the digest task failed: {e}")))
}
