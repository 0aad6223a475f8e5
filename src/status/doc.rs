//! The status document: what `/status.json`, the page and `status --json` show, built in one
//! place from the jobs, the board and the uploads on record. Its schema is docs/status.md; a
//! field may be added within a `schema_version`, never renamed or removed.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::board::{Board, JobFacts};
use crate::config::JobSpec;
use crate::state::{InFlight, RunRecord};
use crate::trigger::TriggerSpec;
use crate::trigger::schedule::Cadence;

/// The schema's version (docs/status.md).
pub const SCHEMA_VERSION: u32 = 1;

/// Longest error message shown; a server may answer pages of HTML.
const ERROR_CHARS: usize = 2000;

/// Where the facts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The running daemon: runs in progress and upload progress are live.
    Daemon,
    /// `status --json` read the state store: no run in progress is known, `uploads` is empty.
    Store,
}

/// What the document is built from besides the board.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub(crate) jobs: &'a [JobSpec],
    /// The server's URL, already redacted.
    pub(crate) server: String,
    /// This instance's name in a cluster, else the host's.
    pub(crate) instance: String,
    pub(crate) cluster: bool,
    pub(crate) source: Source,
    pub(crate) now: DateTime<Utc>,
    /// The uploads on record as in flight (the state store's).
    pub(crate) inflight: &'a [InFlight],
}

/// The whole document.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub schema_version: u32,
    pub source: Source,
    pub generated: DateTime<Utc>,
    pub instance: String,
    pub server: String,
    /// Run starts and ends the board missed because it fell behind (0 normally).
    pub missed_events: u64,
    pub jobs: Vec<JobView>,
    /// Newest first, at most [`super::RECENT_RUNS`].
    pub recent_runs: Vec<RunView>,
}

/// One job.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub name: String,
    pub collection: String,
    pub trigger: TriggerView,
    pub next_fire: Option<DateTime<Utc>>,
    /// The next fire for a person: a time, or "on new files" for a watch.
    pub next_fire_text: String,
    /// `never_run`, `ok` (the last run that counted published its file) or `failing`.
    pub state: &'static str,
    pub failures_in_a_row: usize,
    pub last_run: Option<RunView>,
    pub last_failure: Option<RunView>,
    /// The public links the last run found wrong (`verify_public`).
    pub public_problems: Vec<PublicProblem>,
    /// Runs in progress now (daemon only).
    pub running: Vec<RunningView>,
    /// Uploads being sent now, with progress (daemon only).
    pub uploads: Vec<UploadView>,
    /// Uploads on record as in progress on the server (the state store's).
    pub inflight: Vec<InflightView>,
    /// The retention rule, if the job has one.
    pub retention: Option<String>,
    /// In a cluster, the instance that ran the last run.
    pub owner: Option<String>,
}

/// A job's trigger.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerView {
    /// `cron`, `every` or `watch`.
    pub kind: &'static str,
    pub text: String,
}

/// One finished run.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub job: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration_seconds: f64,
    pub outcome: &'static str,
    pub item: Option<String>,
    pub asset: String,
    pub file: Option<String>,
    pub bytes: u64,
    pub attempts: u32,
    /// An item run's assets (empty for a one-file run).
    pub assets: Vec<AssetView>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub instance: Option<String>,
}

/// One asset of an item run.
#[derive(Debug, Clone, Serialize)]
pub struct AssetView {
    pub asset: String,
    pub item: Option<String>,
    pub outcome: &'static str,
    pub bytes: u64,
    pub error: Option<String>,
}

/// A public link that did not serve the file.
#[derive(Debug, Clone, Serialize)]
pub struct PublicProblem {
    pub asset: String,
    pub item: Option<String>,
    pub url: String,
    pub problem: String,
    pub detail: Option<String>,
    pub max_age_seconds: Option<u64>,
}

/// A run in progress.
#[derive(Debug, Clone, Serialize)]
pub struct RunningView {
    pub target: String,
    pub started: DateTime<Utc>,
}

/// An upload being sent.
#[derive(Debug, Clone, Serialize)]
pub struct UploadView {
    pub target: String,
    pub file: String,
    pub started: DateTime<Utc>,
    pub bytes_sent: u64,
    /// `None` until the session knows the file's size.
    pub bytes_total: Option<u64>,
    /// Mean since the session started.
    pub rate_bytes_per_second: Option<f64>,
    pub seconds_left: Option<f64>,
}

/// An upload on record as in flight.
#[derive(Debug, Clone, Serialize)]
pub struct InflightView {
    pub upload_id: String,
    pub target: String,
    pub file: String,
    pub size: u64,
    pub created: DateTime<Utc>,
    pub pid: u32,
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

impl RunView {
    fn of(r: &RunRecord) -> Self {
        Self {
            job: r.job.clone(),
            started: r.started,
            finished: r.finished,
            duration_seconds: (r.finished - r.started).num_milliseconds().max(0) as f64 / 1000.0,
            outcome: r.outcome.as_str(),
            item: r.item.clone(),
            asset: r.asset.clone(),
            file: r.file.as_ref().map(|f| f.to_string_lossy().into_owned()),
            bytes: r.bytes,
            attempts: r.attempts,
            assets: r
                .assets
                .iter()
                .map(|a| AssetView {
                    asset: a.asset.clone(),
                    item: a.item.clone(),
                    outcome: a.outcome.as_str(),
                    bytes: a.bytes,
                    error: a.error.as_deref().map(clip),
                })
                .collect(),
            error_class: r.error_class.clone(),
            error: r.error.as_deref().map(clip),
            instance: r.instance.clone(),
        }
    }
}

/// A trigger for a person.
fn trigger(spec: &TriggerSpec) -> TriggerView {
    match spec {
        TriggerSpec::Cron { schedule, .. } => TriggerView {
            kind: "cron",
            text: format!("cron {schedule}"),
        },
        TriggerSpec::Every { interval, .. } => TriggerView {
            kind: "every",
            text: format!("every {}", humantime::format_duration(*interval)),
        },
        TriggerSpec::Watch(w) => TriggerView {
            kind: "watch",
            text: format!("watch {} ({})", w.dir.display(), w.pattern.glob()),
        },
    }
}

/// The next fire of `spec` after `now`. An `every` grid starts with the daemon (`origin`); read
/// from the store, its last run stands in for it.
fn next_fire(
    spec: &JobSpec,
    origin: Option<DateTime<Utc>>,
    last: Option<&RunRecord>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let origin = origin.or(last.map(|r| r.started)).unwrap_or(now);
    Cadence::of(&spec.trigger, origin)?.next_after(now)
}

fn job_view(
    spec: &JobSpec,
    facts: Option<&JobFacts>,
    board: &Board,
    live: &[super::live::LiveView],
    ctx: &Context<'_>,
) -> JobView {
    let empty = JobFacts::default();
    let f = facts.unwrap_or(&empty);
    let origin = (ctx.source == Source::Daemon).then(|| board.origin());
    let next = next_fire(spec, origin, f.last.as_ref(), ctx.now);
    let next_fire_text = match (&spec.trigger, next) {
        (TriggerSpec::Watch(_), _) => "on new files".to_owned(),
        (_, Some(t)) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        (_, None) => "never".to_owned(),
    };
    let state = match (&f.last, f.failures_in_a_row) {
        (None, _) => "never_run",
        (Some(_), 0) => "ok",
        (Some(_), _) => "failing",
    };
    let uploads = live
        .iter()
        .filter(|u| u.job == spec.name)
        .map(|u| {
            let secs = (ctx.now - u.started).num_milliseconds() as f64 / 1000.0;
            let rate = (secs > 0.0 && u.sent > 0).then(|| u.sent as f64 / secs);
            let total = (u.total > 0).then_some(u.total);
            UploadView {
                target: u.target.clone(),
                file: u.file.clone(),
                started: u.started,
                bytes_sent: u.sent,
                bytes_total: total,
                rate_bytes_per_second: rate,
                seconds_left: rate
                    .zip(total)
                    .map(|(r, t)| t.saturating_sub(u.sent) as f64 / r),
            }
        })
        .collect();
    JobView {
        name: spec.name.clone(),
        collection: spec.collection.clone(),
        trigger: trigger(&spec.trigger),
        next_fire: next,
        next_fire_text,
        state,
        failures_in_a_row: f.failures_in_a_row,
        last_run: f.last.as_ref().map(RunView::of),
        last_failure: f.last_failure.as_ref().map(RunView::of),
        public_problems: f
            .last
            .iter()
            .flat_map(|r| &r.public)
            .filter_map(|p| {
                Some(PublicProblem {
                    asset: p.asset.clone(),
                    item: p.item.clone(),
                    url: p.url.clone(),
                    problem: p.problem.clone()?,
                    detail: p.detail.as_deref().map(clip),
                    max_age_seconds: p.max_age,
                })
            })
            .collect(),
        running: f
            .running
            .iter()
            .map(|(target, started)| RunningView {
                target: target.clone(),
                started: *started,
            })
            .collect(),
        uploads,
        inflight: ctx
            .inflight
            .iter()
            .filter(|u| u.job == spec.name)
            .map(|u| InflightView {
                upload_id: u.upload_id.to_string(),
                target: u.target.to_string(),
                file: u.file.to_string_lossy().into_owned(),
                size: u.size,
                created: u.created,
                pid: u.pid,
            })
            .collect(),
        retention: spec.keep.as_ref().map(ToString::to_string),
        owner: ctx
            .cluster
            .then(|| f.last.as_ref().and_then(|r| r.instance.clone()))
            .flatten(),
    }
}

/// The document of `board` for `ctx`'s jobs.
pub(crate) fn document(board: &Board, ctx: &Context<'_>) -> Document {
    let live = board.live().snapshot();
    let facts = board.facts();
    let jobs = ctx
        .jobs
        .iter()
        .map(|spec| job_view(spec, facts.jobs.get(&spec.name), board, &live, ctx))
        .collect();
    let recent_runs = facts.recent.iter().rev().map(RunView::of).collect();
    drop(facts);
    Document {
        schema_version: SCHEMA_VERSION,
        source: ctx.source,
        generated: ctx.now,
        instance: ctx.instance.clone(),
        server: ctx.server.clone(),
        missed_events: board.missed_total(),
        jobs,
        recent_runs,
    }
}
