//! `stac-uploadd uploads --config F [--job NAME] [--abort ID [--yes]]`: every upload in progress
//! on the assets the job file targets, whose it is and what the daemon would do with it; and,
//! for an incident, aborting one of them.
//!
//! Read-only beside a daemon: the state folder is opened without writing, and written (to forget
//! an upload aborted here) only when no daemon holds it, under the daemon's own lock.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use chrono::{DateTime, Utc};

use super::{OpsError, current_targets, is_fixed, job_handle, span, when};
use crate::config::JobSpec;
use crate::observe::escape_controls;
use crate::state::{Creating, InFlight, Outcome, RunRecord, StateStore};
use crate::supervisor::stale::{self, Ownership, Staleness};
use stac_client::{AssetTarget, StacClient, Upload, UploadStatus};
use stac_upload::AbortOutcome;

/// What `uploads` was asked.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub config: PathBuf,
    pub job: Option<String>,
    /// The upload to abort.
    pub abort: Option<String>,
    /// Abort without asking.
    pub yes: bool,
}

/// Who sends an upload now.
enum Sender {
    Pid(u32),
    Member(String),
}

/// One upload in progress, with what is known of it.
struct Listed<'a> {
    job: &'a JobSpec,
    target: AssetTarget,
    upload: Upload,
    ours: Ownership,
    /// Who is sending it now: the daemon holding the state folder (its record's creator), or
    /// the cluster member holding its record under a live lease.
    sender: Option<Sender>,
    verdict: Staleness,
}

impl Listed<'_> {
    /// What the daemon would do with it.
    fn verdict_text(&self, now: DateTime<Utc>) -> String {
        match &self.sender {
            Some(Sender::Pid(pid)) => return format!("being sent by the daemon (pid {pid})"),
            Some(Sender::Member(m)) => {
                return format!(
                    "held by cluster member {m}, whose lease is live: being sent, never aborted by another member"
                );
            }
            None => {}
        }
        match self.verdict {
            Staleness::Stale(why) => format!("would abort as stale: {why}"),
            Staleness::Live {
                stale_from: Some(t),
            } => format!(
                "would leave it: someone else's, may still be running; stale from {} (in {})",
                when(t),
                span(t - now)
            ),
            Staleness::Live { stale_from: None } => "would leave it: someone else's, may still be running; never stale by age (the server gave neither its creation time nor its URLs' expiry)".to_owned(),
            Staleness::Unfreeable => format!(
                "would leave it: runs found it unfreeable; {}",
                unfreeable(&self.upload.upload_id)
            ),
        }
    }

    fn line(&self, now: DateTime<Utc>) -> String {
        let age = match self.upload.created {
            Some(c) => format!("created {} ({} ago)", when(c), span(now - c)),
            None => "created at an unknown time".to_owned(),
        };
        let expiry = match self.upload.urls.iter().filter_map(|u| u.expires).min() {
            Some(e) if e <= now => format!("URLs expired {}", when(e)),
            Some(e) => format!("URLs expire {}", when(e)),
            None => "URL expiry unknown".to_owned(),
        };
        let whose = if self.ours.is_ours() {
            "ours"
        } else {
            "someone else's"
        };
        format!(
            "{}  {}  job {}  {age}  {whose}  {expiry}  -> {}",
            self.upload.upload_id,
            self.target,
            self.job.name,
            self.verdict_text(now)
        )
    }
}

/// Lists, and aborts the upload `--abort` names.
pub(crate) async fn run(req: Request) -> Result<(), OpsError> {
    let config = crate::config::load(&req.config).map_err(|e| OpsError::Usage(e.into()))?;
    let names: Vec<String> = req.job.iter().cloned().collect();
    let jobs = config
        .select_jobs(&names)
        .map_err(|e| OpsError::Usage(e.into()))?;
    let client = crate::daemon::client(&config).map_err(OpsError::Usage)?;
    let dir = config.state_dir.clone();
    let holder = crate::state::state_holder(&dir);
    match holder {
        Some(pid) => println!(
            "a daemon (pid {pid}) holds the state folder {}",
            dir.display()
        ),
        None => println!("no daemon holds the state folder {}", dir.display()),
    }
    // Read only: a daemon may hold the folder (a missing folder reads as empty); in a cluster,
    // its database, read beside its members.
    let clustered = config.cluster.is_some();
    let state = Arc::new(
        super::open_for_reading(&config)
            .await
            .map_err(|e| OpsError::Failure(e.into()))?,
    );
    let records = Records {
        inflight: state.inflight().await.map_err(failure)?,
        creating: state.creating().await.map_err(failure)?,
        history: state.history().await.map_err(failure)?,
    };
    let now = Utc::now();
    let mut targets: Vec<(&JobSpec, AssetTarget)> = Vec::new();
    for spec in jobs {
        for target in records.targets(
            spec,
            current_targets(&job_handle(spec, &client, &state), now)
                .into_iter()
                .map(|c| c.target),
        ) {
            if !targets.iter().any(|(_, t)| *t == target) {
                targets.push((spec, target));
            }
        }
    }
    let mut listed = Vec::new();
    for (spec, target) in &targets {
        for upload in in_progress(&client, target).await? {
            let ours = records.ownership(target, &upload);
            let record = records
                .inflight
                .iter()
                .find(|r| r.upload_id == upload.upload_id);
            // Ours and recorded by the daemon that holds the folder: it is sending it. A record
            // of another process is from a run that is over, as the daemon sees it.
            let sender = if clustered {
                match state.holder(&upload.upload_id).await.map_err(failure)? {
                    crate::state::Holder::Live(m) => Some(Sender::Member(m)),
                    _ => None,
                }
            } else {
                match (holder, record) {
                    (Some(0), Some(r)) => Some(Sender::Pid(r.pid)),
                    (Some(h), Some(r)) if r.pid == h => Some(Sender::Pid(h)),
                    _ => None,
                }
            };
            let verdict = stale::judge(
                &upload,
                Ownership {
                    running: sender.is_some(),
                    ..ours
                },
                records.found_unfreeable(spec, target, &upload),
                spec.policy.stale_after,
                now,
            );
            listed.push(Listed {
                job: spec,
                target: target.clone(),
                upload,
                ours,
                sender,
                verdict,
            });
        }
    }
    if listed.is_empty() {
        println!(
            "nothing in progress on the {} asset(s) of {}",
            targets.len(),
            job_names(&targets)
        );
    } else {
        println!(
            "{} upload(s) in progress on the {} asset(s) of {}:",
            listed.len(),
            targets.len(),
            job_names(&targets)
        );
        for l in &listed {
            // Ids and answers are the server's text: one upload, one line.
            println!("{}", escape_controls(&l.line(now)));
        }
    }
    let Some(id) = req.abort else {
        return Ok(());
    };
    let Some(chosen) = listed.iter().find(|l| l.upload.upload_id.0 == id) else {
        return Err(OpsError::Usage(anyhow!(
            "upload {id} is not one of the {} upload(s) in progress listed above: nothing aborted",
            listed.len()
        )));
    };
    if !req.yes && !confirm(chosen, now).await? {
        println!("not aborted: upload {id} is left as it is");
        return Ok(());
    }
    if clustered {
        // The record is the cluster's: whoever holds it (or takes it over) finds the upload
        // aborted at its next look and forgets it.
        return abort(chosen, &client, None, &dir, false).await;
    }
    abort(chosen, &client, holder, &dir, true).await
}

/// Asks on the terminal; refuses when there is none to ask on.
async fn confirm(chosen: &Listed<'_>, now: DateTime<Utc>) -> Result<bool, OpsError> {
    if !std::io::stdin().is_terminal() {
        return Err(OpsError::Usage(anyhow!(
            "refusing to abort upload {} without confirmation: stdin is not a terminal (add --yes to abort it anyway); nothing aborted",
            chosen.upload.upload_id
        )));
    }
    eprint!(
        "abort upload {} on {} ({})? [y/N] ",
        chosen.upload.upload_id,
        chosen.target,
        chosen.verdict_text(now)
    );
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| OpsError::Failure(e.into()))?
    .map_err(|e| OpsError::Failure(anyhow!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Aborts the upload, says how it went, and forgets it in the state folder when it was ours and
/// no daemon holds the folder.
async fn abort(
    chosen: &Listed<'_>,
    client: &StacClient,
    holder: Option<u32>,
    dir: &std::path::Path,
    local: bool,
) -> Result<(), OpsError> {
    let (id, target) = (&chosen.upload.upload_id, &chosen.target);
    match stac_upload::abort_upload(client, target, id, &chosen.job.upload).await {
        AbortOutcome::Aborted => println!(
            "{}",
            escape_controls(&format!("aborted upload {id} on {target}"))
        ),
        AbortOutcome::AlreadyFinished(status) => println!(
            "{}",
            escape_controls(&format!(
                "upload {id} on {target} is already gone: the server shows it {}",
                status.as_query()
            ))
        ),
        AbortOutcome::Failed(e) if e.is_no_such_upload() => {
            return Err(OpsError::Failure(anyhow!(
                "upload {id} on {target} could not be aborted: the server holds it as in progress but its S3 multipart upload is gone (abort answered NoSuchUpload), so it {} ({e})",
                unfreeable(id)
            )));
        }
        AbortOutcome::Failed(e) => {
            return Err(OpsError::Failure(anyhow!(
                "upload {id} on {target} could not be aborted: {e}"
            )));
        }
        // Only a session's observer hands an upload over; an abort asked for here is sent.
        AbortOutcome::Handed => {
            return Err(OpsError::Failure(anyhow!(
                "upload {id} on {target} was not aborted: {}",
                AbortOutcome::Handed
            )));
        }
    }
    if !chosen.ours.is_ours() {
        return Ok(());
    }
    if !local {
        println!(
            "its record is the cluster's: the member holding it (or taking it over) finds it aborted and forgets it"
        );
        return Ok(());
    }
    if let Some(pid) = holder {
        println!(
            "the daemon (pid {pid}) holds the state folder {}: its record of the upload is left to it",
            dir.display()
        );
        return Ok(());
    }
    match forget(dir, target, &chosen.upload).await {
        Ok(()) => println!("forgot it in the state folder {}", dir.display()),
        // The upload is gone either way; a record left over only costs the daemon a lookup.
        Err(e) => println!(
            "the state folder still lists it ({e:#}); the daemon will find it gone at its next start"
        ),
    }
    Ok(())
}

/// What to do about an upload no client can free, the same words in the listing and after a
/// failed `--abort`.
fn unfreeable(id: &stac_client::UploadId) -> String {
    format!(
        "cannot be freed by a client: only the service's operators can clear it (upload id {id})"
    )
}

/// Drops the records of an aborted upload of ours, holding the state folder as a daemon would.
async fn forget(
    dir: &std::path::Path,
    target: &AssetTarget,
    upload: &Upload,
) -> anyhow::Result<()> {
    let _lock = crate::state::lock_state(dir)?;
    let state = StateStore::open(dir).await?;
    state.remove_inflight(&upload.upload_id).await?;
    if let Some(c) = &upload.checksum {
        state.remove_creating(target, c).await?;
    }
    Ok(())
}

/// The uploads in progress on `target`; none when the asset (or its item or collection) does
/// not exist.
async fn in_progress(client: &StacClient, target: &AssetTarget) -> Result<Vec<Upload>, OpsError> {
    match client
        .list_uploads(target, Some(UploadStatus::InProgress))
        .await
    {
        Ok(mut uploads) => {
            uploads.retain(|u| u.status == UploadStatus::InProgress);
            uploads.sort_by_key(|u| u.created);
            Ok(uploads)
        }
        Err(e) if e.status == Some(reqwest::StatusCode::NOT_FOUND) => Ok(Vec::new()),
        Err(e) => Err(OpsError::Failure(e.into())),
    }
}

fn failure(e: crate::state::StateError) -> OpsError {
    OpsError::Failure(e.into())
}

fn job_names(targets: &[(&JobSpec, AssetTarget)]) -> String {
    let mut names: Vec<&str> = targets.iter().map(|(j, _)| j.name.as_str()).collect();
    names.dedup();
    if names.is_empty() {
        return "no job".to_owned();
    }
    format!("job(s) {}", names.join(", "))
}

/// What the state folder holds.
struct Records {
    inflight: Vec<InFlight>,
    creating: Vec<Creating>,
    history: BTreeMap<String, Vec<RunRecord>>,
}

impl Records {
    /// The job's targets: those of its current period, then those its runs on record wrote
    /// (history, uploads in flight), then the create markers that fit it. A fixed job's markers
    /// are its target's; a templated job takes the markers in its collection.
    fn targets(
        &self,
        spec: &JobSpec,
        current: impl Iterator<Item = AssetTarget>,
    ) -> Vec<AssetTarget> {
        let recorded = self
            .history
            .get(&spec.name)
            .into_iter()
            .flatten()
            .flat_map(|r| history_targets(spec, r))
            .chain(
                self.inflight
                    .iter()
                    .filter(|r| r.job == spec.name)
                    .map(|r| r.target.clone()),
            );
        let mut out: Vec<AssetTarget> = Vec::new();
        for t in current.chain(recorded) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
        for c in &self.creating {
            let fits = if is_fixed(spec) {
                out.contains(&c.target)
            } else {
                c.target.collection == spec.collection
            };
            if fits && !out.contains(&c.target) {
                out.push(c.target.clone());
            }
        }
        out
    }

    /// Whether a run of the job on `target` ended `unfreeable` on this upload: the daemon's
    /// abort met NoSuchUpload, and every abort will.
    fn found_unfreeable(&self, spec: &JobSpec, target: &AssetTarget, upload: &Upload) -> bool {
        self.history
            .get(&spec.name)
            .into_iter()
            .flatten()
            .filter(|r| r.outcome == Outcome::Unfreeable)
            .filter(|r| history_targets(spec, r).contains(target))
            .any(|r| {
                r.upload_id.as_ref() == Some(&upload.upload_id)
                    || r.error
                        .as_deref()
                        .is_some_and(|e| e.contains(upload.upload_id.0.as_str()))
            })
    }

    /// Whose the upload is, as the state folder tells.
    fn ownership(&self, target: &AssetTarget, upload: &Upload) -> Ownership {
        let recorded = self
            .inflight
            .iter()
            .any(|r| r.upload_id == upload.upload_id);
        let unseen_create = upload.checksum.as_deref().is_some_and(|c| {
            self.creating
                .iter()
                .any(|m| m.target == *target && m.multihash.eq_ignore_ascii_case(c))
        });
        Ownership {
            running: false,
            recorded,
            unseen_create,
        }
    }
}

/// The targets a recorded run wrote, as far as the record tells: each asset of an item run; a
/// one-file run's asset, and its item from the record or, for records written before they held
/// it, from a job whose item id is fixed.
fn history_targets(spec: &JobSpec, r: &RunRecord) -> Vec<AssetTarget> {
    if !r.assets.is_empty() {
        return r
            .assets
            .iter()
            .map(|a| AssetTarget {
                collection: spec.collection.clone(),
                item: a.item.clone().or_else(|| r.item.clone()),
                asset: a.asset.clone(),
            })
            .collect();
    }
    let item = match (&spec.item, &r.item) {
        (None, _) => None,
        (Some(_), Some(item)) => Some(item.clone()),
        (Some(t), None) => match t.literal() {
            Some(i) => Some(i),
            None => return Vec::new(),
        },
    };
    vec![AssetTarget {
        collection: spec.collection.clone(),
        item,
        asset: r.asset.clone(),
    }]
}
