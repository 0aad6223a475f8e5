//! `stac-uploadd check --online`: after the static check, asks the server whether each job's
//! runs would work, changing nothing there.
//!
//! - The credentials and the permission to write: reads need none on service-stac
//!   (docs/protocol.md, section 8), so an abort of an upload id that cannot exist is sent. The
//!   server checks authentication and permission before it looks the upload up: 401 or 403 say
//!   the credentials or the permission are refused, 404 that they are accepted. With Cognito,
//!   the login (InitiateAuth) comes first, as for any request.
//! - The collection exists; the item and asset exist, or the job's metadata creates them.
//! - An existing asset's media type fits its id, by the rule the run uses
//!   (`stac_client::rules::asset_fits_type`).

use std::sync::Arc;

use anyhow::anyhow;
use chrono::Utc;
use reqwest::StatusCode;

use super::{CurrentTarget, OpsError, current_targets, job_handle};
use crate::config::{Config, JobSpec};
use crate::observe::escape_controls;
use stac_client::{AssetTarget, ErrorClass, StacClient, StacError, UploadId, rules};

/// Checks every job of `config` against its server; prints one line per job.
pub(crate) async fn run(config: &Config) -> Result<(), OpsError> {
    let client = crate::daemon::client(config).map_err(OpsError::Usage)?;
    // Only to render targets: opened read-only, a missing folder reads as empty.
    let state = Arc::new(
        super::open_for_reading(config)
            .await
            .map_err(|e| OpsError::Failure(e.into()))?,
    );
    println!(
        "online, against {}:",
        stac_client::redact_userinfo(&config.server.url)
    );
    let now = Utc::now();
    let mut failing = 0;
    for spec in &config.jobs {
        let targets = current_targets(&job_handle(spec, &client, &state), now);
        let verdict = check_job(&client, spec, &targets).await;
        if verdict.problems.is_empty() {
            // Notes and problems quote the server's answers: one job, one line.
            let notes = verdict.notes.join("; ");
            println!("  {}: ok ({})", spec.name, escape_controls(&notes));
        } else {
            failing += 1;
            let problems = verdict.problems.join("; ");
            println!(
                "  {}: would fail: {}",
                spec.name,
                escape_controls(&problems)
            );
        }
    }
    if failing > 0 {
        return Err(OpsError::Failure(anyhow!(
            "{failing} of {} job(s) would fail (see above)",
            config.jobs.len()
        )));
    }
    Ok(())
}

/// What was found for one job.
#[derive(Debug, Default)]
struct Verdict {
    notes: Vec<String>,
    problems: Vec<String>,
}

async fn check_job(client: &StacClient, spec: &JobSpec, targets: &[CurrentTarget]) -> Verdict {
    let mut v = Verdict::default();
    let probe = targets
        .first()
        .map(|c| c.target.clone())
        .unwrap_or_else(|| stand_in(spec));
    match credentials(client, &probe).await {
        Ok(note) => v.notes.push(note),
        Err(Refused { problem, login }) => {
            v.problems.push(problem);
            if login {
                // Every request of a Cognito client waits for the login: nothing else can be asked.
                return v;
            }
        }
    }
    match client.get_collection(&spec.collection).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            v.problems.push(format!(
                "collection {} does not exist (GET answered 404); the daemon never creates collections",
                spec.collection
            ));
            return v;
        }
        Err(e) => {
            v.problems.push(e.to_string());
            return v;
        }
    }
    if targets.is_empty() {
        v.notes.push(format!(
            "collection {} exists; the asset ids come from file names, none in the folder now",
            spec.collection
        ));
    }
    for t in targets {
        if let Err(problem) = check_target(client, spec, t, &mut v.notes).await {
            v.problems.push(problem);
        }
    }
    v
}

/// Where to send the credentials probe when the job has no target yet (a watch job whose ids
/// come from file names, with an empty folder): the job's collection, made-up item and asset.
fn stand_in(spec: &JobSpec) -> AssetTarget {
    AssetTarget {
        collection: spec.collection.clone(),
        item: spec
            .item
            .as_ref()
            .map(|i| i.literal().unwrap_or_else(|| "stac-uploadd-check".into())),
        asset: spec
            .asset
            .literal()
            .unwrap_or_else(|| "stac-uploadd-check.zip".into()),
    }
}

/// Why the credentials probe did not pass.
struct Refused {
    problem: String,
    /// The Cognito login itself failed.
    login: bool,
}

/// Sends the abort of an upload id that cannot exist on `target`. 404 means the server took the
/// credentials and the permission and then found no such upload.
async fn credentials(client: &StacClient, target: &AssetTarget) -> Result<String, Refused> {
    let id = UploadId(format!(
        "stac-uploadd-check-{}",
        uuid::Uuid::new_v4().simple()
    ));
    match client.abort(target, &id).await {
        Err(e) if e.status == Some(StatusCode::NOT_FOUND) => {
            Ok("credentials accepted (an abort of a made-up upload answered 404)".to_owned())
        }
        Err(e) if e.class == ErrorClass::Auth => Err(Refused {
            problem: refused(&e),
            // The API answers with a status; a failed Cognito login has none.
            login: e.status.is_none(),
        }),
        Err(e) => Err(Refused {
            problem: format!(
                "cannot tell whether the credentials work: an abort of a made-up upload id should answer 404: {e}"
            ),
            login: false,
        }),
        Ok(_) => Err(Refused {
            problem: format!(
                "the server answered an abort of the made-up upload id {id} as done on {target}: it does not behave as service-stac does"
            ),
            login: false,
        }),
    }
}

/// Why the credentials were refused, in the words of the answer.
fn refused(e: &StacError) -> String {
    match e.status {
        Some(StatusCode::FORBIDDEN) => format!(
            "the server took the credentials but refuses this user the permission to write: {e}"
        ),
        Some(_) => format!("the server refused the credentials: {e}"),
        None => format!("the login was refused: {e}"),
    }
}

/// The item, the asset and the asset's media type of one target.
async fn check_target(
    client: &StacClient,
    spec: &JobSpec,
    current: &CurrentTarget,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let t = &current.target;
    if let Some(item) = &t.item {
        match client.get_item(&t.collection, item).await {
            Ok(Some(_)) => {}
            Ok(None) if spec.item_metadata.is_some() && spec.asset_metadata.is_some() => {
                notes.push(format!("item {item} and asset {t} will be created"));
                return Ok(());
            }
            Ok(None) => {
                return Err(format!(
                    "item {item} does not exist: the run's create upload on {t} would answer 404 ({})",
                    missing_hint(spec)
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let asset = match client.get_asset(t).await {
        Ok(Some(a)) => a,
        Ok(None) if spec.asset_metadata.is_some() => {
            notes.push(format!("asset {t} will be created"));
            return Ok(());
        }
        Ok(None) => {
            return Err(format!(
                "asset {t} does not exist: the run's create upload would answer 404 ({})",
                missing_hint(spec)
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    let Some(media_type) = asset.get("type").and_then(|v| v.as_str()) else {
        notes.push(format!("asset {t} exists"));
        return Ok(());
    };
    // The run uploads to an existing asset whatever its file is called: the server judges the
    // asset id against the type, and the run (creating an asset) does the same.
    match rules::asset_fits_type(&t.asset, media_type) {
        Ok(()) => {
            let receives = current
                .file
                .as_deref()
                .and_then(std::path::Path::file_name)
                .map(|n| format!(", receives {:?}", n.to_string_lossy()))
                .unwrap_or_default();
            notes.push(format!("asset {t} exists, {media_type}{receives}"));
            Ok(())
        }
        Err(why) => Err(format!(
            "asset {t} is of media type {media_type:?}, which does not fit its id: {why}"
        )),
    }
}

fn missing_hint(spec: &JobSpec) -> &'static str {
    match (&spec.item, &spec.item_metadata, &spec.asset_metadata) {
        (Some(_), None, _) => "[job.item_metadata] and [job.asset_metadata] would create them",
        (_, _, None) => "[job.asset_metadata] would create it",
        _ => "create it first",
    }
}
