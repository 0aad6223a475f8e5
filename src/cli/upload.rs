//! `upload`: one file to one asset, now, with a progress bar on a terminal, stopped cleanly
//! by a signal.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::FlagSettings;
use crate::exit::{StopSignal, stop_signals};
use stac_client::units::ByteSize;
use stac_client::{AssetTarget, StacClient};
use stac_upload::UploadError;

/// The command `upload`.
pub(super) async fn run_upload(args: UploadArgs) -> Result<(), CliError> {
    let FlagSettings {
        server,
        policy,
        upload: mut opts,
        bandwidth_limit,
    } = args.settings()?;
    // What can fail here are the flags: an unreadable CA file, a bad proxy.
    let client = StacClient::new(server.client_config()).map_err(CliError::usage)?;
    let target = AssetTarget {
        collection: args.collection.clone(),
        item: args.item.clone(),
        asset: args.asset.clone(),
    };
    opts.bandwidth = bandwidth_limit
        .map(|l| Arc::new(stac_upload::bandwidth::Bandwidth::new(l)))
        .into_iter()
        .collect();
    let cancel = CancellationToken::new();
    // A signal cancels the session, which aborts its upload on the server: nothing of ours is
    // left in progress to block the asset (a `kill`, `timeout` or cancelled CI job included).
    let stop = stop_signals().map_err(CliError::failure)?;
    let stopped_by = Arc::new(std::sync::OnceLock::new());
    {
        let (cancel, stopped_by) = (cancel.clone(), stopped_by.clone());
        tokio::spawn(async move {
            let s = stop.await;
            let _ = stopped_by.set(s);
            cancel.cancel();
        });
    }
    let progress = Arc::new(crate::progress::Bar::new());
    let attempt = || {
        stac_upload::upload_file(
            &client,
            &target,
            &args.file,
            &opts,
            progress.clone(),
            &cancel,
        )
    };
    let mut result = attempt().await;
    if let Err(UploadError::InProgress { upload, .. }) = &result {
        if !args.abort_in_progress {
            progress.clear();
            return Err(CliError::failure(anyhow::anyhow!(
                "{}; rerun with --abort-in-progress to abort it (only if nobody is still sending it)",
                result.err().map(|e| e.to_string()).unwrap_or_default()
            )));
        }
        let id = upload.upload_id.clone();
        match stac_upload::abort_upload(&client, &target, &id, &opts).await {
            stac_upload::AbortOutcome::Failed(e) => {
                progress.clear();
                return Err(CliError::failure(anyhow::anyhow!(
                    "cannot abort the blocking upload {id}: {e}"
                )));
            }
            outcome => eprintln!("blocking upload {id}: {outcome}"),
        }
        progress.reset();
        result = attempt().await;
    }
    // --retries: the whole upload again after a transient failure, as a job's run is retried.
    let mut waits = stac_client::retry::waits(
        policy.retry_min_delay,
        policy.retry_max_delay,
        policy.retries,
    );
    let mut retry = 0;
    while let Err(e) = &result
        && e.run_action().is_retry()
        && !cancel.is_cancelled()
        && let Some(wait) = waits.next()
    {
        retry += 1;
        progress.clear();
        eprintln!(
            "upload failed: {e}; retry {retry} of {} in {}",
            policy.retries,
            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => break,
        }
        progress.reset();
        result = attempt().await;
    }
    progress.clear();
    let report = match (result, stopped_by.get()) {
        (Ok(report), _) => report,
        (Err(e), Some(&signal)) => return Err(stopped(signal, e)),
        (Err(e), None) => return Err(e.into()),
    };
    if report.unchanged {
        println!(
            "unchanged: {target} already holds {} (checksum {}); nothing sent (--force uploads anyway)",
            args.file.display(),
            report.multihash
        );
        return Ok(());
    }
    println!(
        "uploaded {} to {target}: {} in {} part(s) of {}, upload {}, checksum {}, {:.1} s (digest {:.1} s, send {:.1} s){}",
        args.file.display(),
        ByteSize(report.bytes),
        report.parts,
        ByteSize(report.part_size),
        report
            .upload_id
            .as_ref()
            .map(|u| u.0.as_str())
            .unwrap_or("-"),
        report.multihash,
        report.total_time.as_secs_f64(),
        report.digest_time.as_secs_f64(),
        report.send_time.as_secs_f64(),
        if report.part_retries > 0 {
            format!(", {} part retries", report.part_retries)
        } else {
            String::new()
        },
    );
    Ok(())
}

/// `upload` cut short by `signal`: what became of its upload on the server, with the signal's
/// exit code.
fn stopped(signal: StopSignal, e: UploadError) -> CliError {
    let name = signal.name();
    let error = match &e {
        UploadError::Cancelled => {
            anyhow::anyhow!("stopped by {name} before an upload was created: nothing to clean up")
        }
        UploadError::AfterCreate { .. } if e.left_in_progress().is_some() => anyhow::Error::from(e)
            .context(format!(
                "stopped by {name}; rerun with --abort-in-progress to free the asset"
            )),
        _ => anyhow::Error::from(e).context(format!("stopped by {name}")),
    };
    CliError {
        code: signal.exit_code(),
        error,
    }
}
