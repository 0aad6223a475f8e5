//! Operator commands that talk to the server beside (or without) a running daemon:
//! `stac-uploadd uploads` (what is in progress on the job file's assets, and aborting one) and
//! `stac-uploadd check --online` (would the jobs' runs work, asked of the server read-only);
//! `stac-uploadd prune` (the jobs' `keep` rules applied now); `stac-uploadd verify` (the local
//! files against the server's checksums and the public objects).
//!
//! They decide nothing of their own: targets are rendered by [`Job::prepare`], staleness by
//! [`crate::supervisor::stale`], aborts go through [`stac_upload::abort_upload`].

pub(crate) mod online;
pub(crate) mod prune;
pub(crate) mod uploads;
pub(crate) mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::JobSpec;
use crate::state::StateStore;
use crate::supervisor::{HttpUploader, Job, Shared, Work};
use crate::trigger::Clock;
use crate::trigger::TriggerSpec;
use stac_client::{AssetTarget, StacClient};

/// Why an operator command failed: its input (exit 2) or the server (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Bad flags or job file, or an operator's answer that stops the command.
    #[error(transparent)]
    Usage(anyhow::Error),
    /// The server refused or failed a request (named in the message), or the outcome is a
    /// failure (a job that would fail).
    #[error(transparent)]
    Failure(anyhow::Error),
}

/// A job as the daemon would hold it, for rendering its targets with [`Job::prepare`]; it never
/// runs.
pub(crate) fn job_handle(
    spec: &JobSpec,
    client: &StacClient,
    state: &Arc<StateStore>,
) -> Job<HttpUploader> {
    Job::new(
        spec.clone(),
        Arc::new(Shared::new(
            HttpUploader(client.clone()),
            state.clone(),
            Clock::System,
        )),
        CancellationToken::new(),
    )
}

/// True when the job writes the same asset every run: no template in its item or asset id.
pub(crate) fn is_fixed(spec: &JobSpec) -> bool {
    spec.asset.is_literal()
        && spec.assets.iter().all(|a| a.id.is_literal())
        && spec.item.as_ref().is_none_or(|i| i.is_literal())
}

/// A target of the current period and the file the run would publish to it (`None` when no
/// file is known: a watch job's folder holding no file yet).
#[derive(Debug, Clone)]
pub(crate) struct CurrentTarget {
    pub target: AssetTarget,
    pub file: Option<PathBuf>,
}

/// What the job would write now: a cron job's run of its latest fire time (and of now, when the
/// ids render differently), an `every` job's run now, a watch job's run of each file now in its
/// folder. A job with fixed ids has its one target even when its watched folder is empty.
pub(crate) fn current_targets(job: &Job<HttpUploader>, now: DateTime<Utc>) -> Vec<CurrentTarget> {
    let works: Vec<Work> = match &job.spec.trigger {
        TriggerSpec::Cron { schedule, .. } => {
            let mut at = vec![now];
            if let Some(last) = schedule.last_at_or_before(now) {
                at.insert(0, last);
            }
            at.into_iter().map(Work::Scheduled).collect()
        }
        TriggerSpec::Every { .. } => vec![Work::Scheduled(now)],
        // The watch's own rule of which files count (pattern, ignore list, recursion).
        TriggerSpec::Watch(w) => match crate::trigger::watch::present_files(w) {
            Ok(files) => files.into_iter().map(Work::File).collect(),
            Err(e) => {
                tracing::warn!(job = %job.spec.name, error = %e, "cannot list the watched folder: only the runs on record are looked at");
                Vec::new()
            }
        },
    };
    let mut out: Vec<CurrentTarget> = Vec::new();
    for work in &works {
        for (target, file) in job.targets(work) {
            if !out.iter().any(|c| c.target == target) {
                out.push(CurrentTarget {
                    target,
                    file: Some(file),
                });
            }
        }
    }
    if out.is_empty() && is_fixed(&job.spec) {
        let time = now.with_timezone(&job.spec.timezone);
        let item = job.spec.item.as_ref().map(|i| i.render("", &time));
        let ids: Vec<String> = if job.spec.assets.is_empty() {
            vec![job.spec.asset.render("", &time)]
        } else {
            job.spec
                .assets
                .iter()
                .map(|a| a.id.render("", &time))
                .collect()
        };
        for item in std::iter::once(item).chain(job.spec.alias.clone().map(Some)) {
            for asset in &ids {
                out.push(CurrentTarget {
                    target: AssetTarget {
                        collection: job.spec.collection.clone(),
                        item: item.clone(),
                        asset: asset.clone(),
                    },
                    file: None,
                });
            }
        }
    }
    out
}

/// A moment for people: `2026-12-01 09:37:57 UTC`.
pub(crate) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A span for people, to the second: `3h 2m 5s`.
pub(crate) fn span(d: chrono::Duration) -> String {
    let secs = d.num_seconds().unsigned_abs();
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// Opens the store a job file names to read it beside its daemon: the cluster's database when
/// it has a `[cluster]` table, else the state folder's.
pub(crate) async fn open_for_reading(
    config: &crate::config::Config,
) -> Result<crate::state::StateStore, crate::state::StateError> {
    use crate::state::{PgTarget, StateStore};
    use secrecy::ExposeSecret as _;
    match &config.cluster {
        None => StateStore::open_read_only(&config.state_dir).await,
        Some(c) => {
            StateStore::open_cluster_reader(
                &config.state_dir,
                &PgTarget {
                    url: c.url.expose_secret(),
                    ca_file: c.ca_file.as_deref(),
                    host: "",
                    call_limit: std::time::Duration::from_secs(30),
                },
            )
            .await
        }
    }
}
