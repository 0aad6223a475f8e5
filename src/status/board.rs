//! The daemon's memory of its runs for the status page: per job its last run, last failure and
//! runs in progress, and a bounded list of recent runs. Seeded once from the state store's
//! history, then fed by the supervisor's broadcasts: no page reads the database for runs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use super::live::LiveUploads;
use crate::state::{RunRecord, Streak};

/// Recent runs kept, over all jobs.
pub const RECENT_RUNS: usize = 200;
/// Runs in progress kept per job: a watch job runs at most 64 at once.
const RUNNING_PER_JOB: usize = 64;

/// What the board knows of one job.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobFacts {
    pub(crate) last: Option<RunRecord>,
    pub(crate) last_failure: Option<RunRecord>,
    pub(crate) failures_in_a_row: usize,
    /// Runs started and not finished: (what they are for, when they started), oldest first.
    pub(crate) running: VecDeque<(String, DateTime<Utc>)>,
}

#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub(crate) jobs: HashMap<String, JobFacts>,
    /// Newest last.
    pub(crate) recent: VecDeque<RunRecord>,
}

/// The board: facts of the runs, and the uploads being sent now.
#[derive(Debug)]
pub struct Board {
    facts: Mutex<Facts>,
    live: Arc<LiveUploads>,
    /// When the board (and the daemon's `every` grids) started.
    origin: DateTime<Utc>,
    /// Broadcast messages lost because the board's receiver lagged.
    missed: AtomicU64,
}

impl Board {
    /// A board seeded from the store's `history` (per job, oldest first), showing the uploads
    /// of `live`.
    pub fn seeded(
        history: &BTreeMap<String, Vec<RunRecord>>,
        live: Arc<LiveUploads>,
        origin: DateTime<Utc>,
    ) -> Self {
        let mut facts = Facts::default();
        let mut all: Vec<&RunRecord> = Vec::new();
        for (job, runs) in history {
            let f = JobFacts {
                last: runs.last().cloned(),
                last_failure: runs
                    .iter()
                    .rev()
                    .find(|r| r.outcome.streak() == Streak::Failure)
                    .cloned(),
                failures_in_a_row: crate::state::trailing_failures(runs),
                running: VecDeque::new(),
            };
            facts.jobs.insert(job.clone(), f);
            all.extend(runs.iter());
        }
        all.sort_by_key(|r| r.finished);
        let skip = all.len().saturating_sub(RECENT_RUNS);
        facts.recent = all.into_iter().skip(skip).cloned().collect();
        Self {
            facts: Mutex::new(facts),
            live,
            origin,
            missed: AtomicU64::new(0),
        }
    }

    pub(crate) fn facts(&self) -> MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The uploads being sent now.
    pub fn live(&self) -> &Arc<LiveUploads> {
        &self.live
    }

    pub(crate) fn origin(&self) -> DateTime<Utc> {
        self.origin
    }

    /// A run of `job` for `target` started.
    pub fn run_started(&self, job: &str, target: String, started: DateTime<Utc>) {
        let mut facts = self.facts();
        let running = &mut facts.jobs.entry(job.to_owned()).or_default().running;
        if running.len() >= RUNNING_PER_JOB {
            running.pop_front();
        }
        running.push_back((target, started));
    }

    /// A run finished.
    pub fn run_finished(&self, rec: RunRecord) {
        let mut facts = self.facts();
        let f = facts.jobs.entry(rec.job.clone()).or_default();
        // The start it ends: the one of the same instant (the supervisor sends both with one
        // clock reading), else the one for its target, else the oldest.
        let at = f
            .running
            .iter()
            .position(|(_, s)| *s == rec.started)
            .or_else(|| f.running.iter().position(|(t, _)| ends(t, &rec)))
            .or((!f.running.is_empty()).then_some(0));
        if let Some(at) = at {
            f.running.remove(at);
        }
        match rec.outcome.streak() {
            Streak::Success => f.failures_in_a_row = 0,
            Streak::Failure => {
                f.failures_in_a_row += 1;
                f.last_failure = Some(rec.clone());
            }
            Streak::Neutral => {}
        }
        f.last = Some(rec.clone());
        if facts.recent.len() >= RECENT_RUNS {
            facts.recent.pop_front();
        }
        facts.recent.push_back(rec);
    }

    /// `n` broadcast messages were lost (the receiver lagged).
    pub fn missed(&self, n: u64) {
        self.missed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn missed_total(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// Whether a start's target (`collection/item/asset`, or `collection/item` for an item run)
/// is the one `rec` finished.
fn ends(target: &str, rec: &RunRecord) -> bool {
    match &rec.item {
        Some(item) => {
            target.ends_with(&format!("/{item}/{}", rec.asset))
                || target.ends_with(&format!("/{item}"))
        }
        None => target.ends_with(&format!("/{}", rec.asset)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Outcome;

    pub(crate) fn rec(job: &str, outcome: Outcome, at: i64) -> RunRecord {
        let t = DateTime::from_timestamp(at, 0).unwrap();
        RunRecord {
            job: job.into(),
            started: t,
            finished: t + chrono::Duration::seconds(1),
            outcome,
            asset: "a.zip".into(),
            item: Some("i".into()),
            file: None,
            bytes: 10,
            attempts: 1,
            upload_id: None,
            error: (outcome == Outcome::Failed).then(|| "boom".into()),
            assets: Vec::new(),
            instance: None,
            error_class: (outcome == Outcome::Failed).then(|| "server".into()),
            public: Vec::new(),
        }
    }

    #[test]
    fn seeded_then_fed_keeps_last_runs_failures_and_a_bounded_list() {
        let history = BTreeMap::from([(
            "j".to_owned(),
            vec![
                rec("j", Outcome::Failed, 1),
                rec("j", Outcome::Uploaded, 2),
                rec("j", Outcome::Failed, 3),
                rec("j", Outcome::Cancelled, 4),
            ],
        )]);
        let board = Board::seeded(&history, Arc::default(), Utc::now());
        {
            let f = board.facts();
            let j = &f.jobs["j"];
            assert_eq!(j.failures_in_a_row, 1);
            assert_eq!(j.last.as_ref().unwrap().outcome, Outcome::Cancelled);
            assert_eq!(
                j.last_failure.as_ref().unwrap().started.timestamp(),
                3,
                "the last failure"
            );
            assert_eq!(f.recent.len(), 4);
        }
        let started = DateTime::from_timestamp(10, 0).unwrap();
        board.run_started("j", "c/i/a.zip".into(), started);
        board.run_started(
            "j",
            "c/i/b.zip".into(),
            started + chrono::Duration::seconds(1),
        );
        assert_eq!(board.facts().jobs["j"].running.len(), 2);
        board.run_finished(rec("j", Outcome::Uploaded, 10));
        {
            let f = board.facts();
            let j = &f.jobs["j"];
            assert_eq!(j.running.len(), 1);
            assert_eq!(j.running[0].0, "c/i/b.zip");
            assert_eq!(j.failures_in_a_row, 0);
        }
        for at in 0..(RECENT_RUNS as i64 + 50) {
            board.run_finished(rec("k", Outcome::Failed, 100 + at));
        }
        let f = board.facts();
        assert_eq!(f.recent.len(), RECENT_RUNS);
        assert_eq!(f.jobs["k"].failures_in_a_row, RECENT_RUNS + 50);
        assert!(f.jobs["k"].running.is_empty());
    }
}
