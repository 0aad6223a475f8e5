//! At start-up: every upload a previous run of the daemon recorded as in flight is resumed (file
//! unchanged, URLs still valid) or aborted. Each is handed to its job as the job's first work
//! ([`super::Job::resume`]), so it runs under the job's limits while the other jobs start at
//! once; an upload of a job no longer in the job file is handled by [`reconcile`]. Nothing of
//! ours is left in progress after a restart.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::JobSpec;
use crate::observe::metrics;
use crate::state::{InFlight, Outcome, RunRecord, StateStore};
use stac_client::retry::{Action, Classified};
use stac_client::{StacClient, UploadStatus};
use stac_upload::{AbortOutcome, FileSnapshot, UploadOptions};

/// How much life the part URLs must have left for a resume to be worth starting.
const MIN_URL_LIFE: chrono::Duration = chrono::Duration::minutes(5);

/// The uploads on record as in flight; none (with a warning) if the record cannot be read: their
/// jobs will meet them as blockers.
pub(crate) async fn inflight(state: &StateStore) -> Vec<InFlight> {
    state.inflight().await.unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the uploads in flight; their jobs will meet them as blockers");
        Vec::new()
    })
}

/// Resumes or aborts each of `records`, one after the other, with the upload options of its job
/// in `jobs` (the defaults for a job not there); returns one record per upload handled.
pub(crate) async fn reconcile(
    client: &StacClient,
    state: &StateStore,
    records: Vec<InFlight>,
    jobs: &[JobSpec],
    cancel: &CancellationToken,
) -> Vec<RunRecord> {
    let mut handled = Vec::new();
    for rec in records {
        let opts = jobs
            .iter()
            .find(|j| j.name == rec.job)
            .map(|j| j.upload.clone())
            .unwrap_or_default();
        if let Some(r) = resume_or_abort(client, state, &rec, &opts, cancel).await {
            if let Err(e) = state.record_run(r.clone()).await {
                warn!(error = %e, "cannot record the run in the state store");
            }
            metrics::run_finished(&r);
            handled.push(r);
        }
    }
    handled
}

/// Resumes one upload a previous process left in flight, or aborts it; `None` when there was
/// nothing to do (it is gone or finished) or it cannot be read now (its job's next run meets
/// it). The caller records the run.
pub(crate) async fn resume_or_abort(
    client: &StacClient,
    state: &StateStore,
    rec: &InFlight,
    opts: &UploadOptions,
    cancel: &CancellationToken,
) -> Option<RunRecord> {
    let id = &rec.upload_id;
    let upload = match client.get_upload(&rec.target, id).await {
        Ok(u) => u,
        Err(e) if e.action() == Action::Forget => {
            // 404: the asset or the upload is gone; nothing of ours can be in progress.
            info!(upload_id = %id, error = %e, "recorded upload no longer exists");
            forget(state, id).await;
            return None;
        }
        Err(e) => {
            // Keep the record: the job's next run meets the upload as ours-and-stale and aborts it.
            warn!(upload_id = %id, error = %e, "cannot read a recorded upload; will retry through its job");
            return None;
        }
    };
    if upload.status != UploadStatus::InProgress {
        forget(state, id).await;
        return None;
    }
    let started = Utc::now();
    let file_same = tokio::fs::metadata(&rec.file)
        .await
        .ok()
        .map(|m| FileSnapshot::of(&m))
        .is_some_and(|s| s.len == rec.size && s.mtime == rec.mtime && s.ino == rec.ino);
    let urls_alive = upload
        .urls
        .iter()
        .filter_map(|u| u.expires)
        .min()
        .is_none_or(|e| e - Utc::now() > MIN_URL_LIFE)
        && !upload.urls.is_empty();
    let record = |outcome, error: Option<String>, bytes| RunRecord {
        instance: None,
        error_class: None,
        public: Vec::new(),
        job: rec.job.clone(),
        started,
        finished: Utc::now(),
        outcome,
        asset: rec.target.asset.clone(),
        item: rec.target.item.clone(),
        file: Some(rec.file.clone()),
        bytes,
        attempts: 1,
        upload_id: Some(id.clone()),
        error,
        assets: Vec::new(),
    };
    if file_same && urls_alive {
        info!(upload_id = %id, job = %rec.job, "resuming an upload interrupted by a restart");
        let _busy = metrics::upload_in_progress(&rec.job);
        let expected = stac_client::Multihash::from_hex(&rec.multihash);
        let result = stac_upload::resume_upload(
            client,
            &rec.target,
            &rec.file,
            &upload,
            &expected,
            rec.part_size,
            opts,
            Arc::new(Gate(state.fence())),
            cancel,
        )
        .await;
        return match result {
            Ok(r) => {
                forget(state, id).await;
                info!(upload_id = %id, bytes = r.bytes, "resumed upload completed");
                Some(record(Outcome::Resumed, None, r.bytes))
            }
            Err(e) => {
                if e.left_in_progress().is_none() {
                    forget(state, id).await;
                }
                warn!(upload_id = %id, error = %e, "resume failed");
                Some(record(Outcome::AbortedAtStart, Some(e.to_string()), 0))
            }
        };
    }
    let why = if file_same {
        "its part URLs expire too soon"
    } else {
        "the file changed"
    };
    if !state.fence().may_send() {
        warn!(upload_id = %id, job = %rec.job, "this instance no longer holds its lease: the upload is left to the instance that takes over");
        return None;
    }
    info!(upload_id = %id, job = %rec.job, why, "aborting an upload interrupted by a restart");
    match stac_upload::abort_upload(client, &rec.target, id, opts).await {
        AbortOutcome::Failed(e) => {
            warn!(upload_id = %id, error = %e, "cannot abort it now; the job's next run will");
            None
        }
        _ => {
            forget(state, id).await;
            Some(record(
                Outcome::AbortedAtStart,
                Some(format!("interrupted by a restart and aborted: {why}")),
                0,
            ))
        }
    }
}

/// Drops the record of an upload that is finished: one left behind is met again as ours and
/// handled, so a failure costs a lookup, not safety.
async fn forget(state: &StateStore, id: &stac_client::UploadId) {
    if let Err(e) = state.remove_inflight(id).await {
        warn!(upload_id = %id, error = %e, "cannot update the state store");
    }
}

/// A resumed session's observer: sends only while this instance may ([`crate::state::Fence`]).
struct Gate(Arc<crate::state::Fence>);

impl stac_upload::UploadObserver for Gate {
    fn on_event(&self, _: &stac_upload::UploadEvent<'_>) {}

    fn may_send(&self) -> bool {
        self.0.may_send()
    }
}
