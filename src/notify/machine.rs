//! When a job's runs make a notice: the first failure, a reminder at most every `repeat` while
//! it keeps failing, the first success after failures, and (when asked for) every success. A
//! pure function of the runs and their times, so that it is tested without a clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::NotifyOn;
use crate::state::{RunRecord, Streak, trailing_failures};

/// What a notice is about: the `event` field of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The job failed after a success (or for the first time).
    Failure,
    /// The job is still failing, `repeat` after the last failure notice.
    Reminder,
    /// The job succeeded after failures.
    Recovery,
    /// The job succeeded (only for targets with `"success"` in `on`).
    Success,
}

impl Event {
    /// The name in the body and the docs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Reminder => "reminder",
            Event::Recovery => "recovery",
            Event::Success => "success",
        }
    }
}

/// A job's failures in a row, whoever is told about them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Failures {
    /// Failed runs since the last success.
    pub(crate) failures: u32,
    /// When the last of them finished.
    pub(crate) last_failure: Option<DateTime<Utc>>,
}

/// A job's failures in a row as its history (oldest first) leaves them: a daemon restarted while
/// a job fails takes the failure as announced at its last failed run, so it is not announced
/// again; a reminder comes `repeat` after that.
pub(crate) fn seed(runs: &[RunRecord]) -> Failures {
    let failures = u32::try_from(trailing_failures(runs)).unwrap_or(u32::MAX);
    let last_failure = runs
        .iter()
        .rev()
        .find(|r| r.outcome.streak() == Streak::Failure)
        .map(|r| r.finished);
    Failures {
        failures,
        last_failure: (failures > 0).then_some(last_failure).flatten(),
    }
}

impl Failures {
    /// Counts a run that ended at `at`.
    pub(crate) fn record(&mut self, streak: Streak, at: DateTime<Utc>) {
        match streak {
            Streak::Success => *self = Failures::default(),
            Streak::Failure => {
                self.failures = self.failures.saturating_add(1);
                self.last_failure = Some(at);
            }
            Streak::Neutral => {}
        }
    }
}

/// What one target knows of one job: whether it was told the job fails, and when it was last
/// told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tracker {
    /// `Some`: the job is failing for this target, its last failure notice (or reminder) sent
    /// then.
    failing_since_notice: Option<DateTime<Utc>>,
}

impl Tracker {
    /// A tracker for a target that starts to watch a job whose failures in a row are `before`
    /// (taken as announced at the last of them).
    pub(crate) fn from_streak(before: Failures) -> Self {
        Self {
            failing_since_notice: if before.failures > 0 {
                before.last_failure.or(Some(DateTime::<Utc>::MIN_UTC))
            } else {
                None
            },
        }
    }

    /// The notice a run with `streak` ending at `at` makes, if any.
    pub(crate) fn on_run(
        &mut self,
        streak: Streak,
        at: DateTime<Utc>,
        on: NotifyOn,
        repeat: Duration,
    ) -> Option<Event> {
        match (streak, self.failing_since_notice) {
            (Streak::Neutral, _) => None,
            (Streak::Failure, None) => {
                self.failing_since_notice = Some(at);
                on.failure.then_some(Event::Failure)
            }
            (Streak::Failure, Some(last)) => {
                let due = (at - last).to_std().is_ok_and(|since| since >= repeat);
                if due && on.failure {
                    self.failing_since_notice = Some(at);
                    Some(Event::Reminder)
                } else {
                    None
                }
            }
            (Streak::Success, Some(_)) => {
                self.failing_since_notice = None;
                if on.recovery {
                    Some(Event::Recovery)
                } else {
                    on.success.then_some(Event::Success)
                }
            }
            (Streak::Success, None) => on.success.then_some(Event::Success),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Outcome;
    use chrono::TimeZone;

    const DEFAULT: NotifyOn = NotifyOn {
        failure: true,
        recovery: true,
        success: false,
    };

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    /// The notices of runs (streak, second) under `on` with a `repeat` of 60 s.
    fn notices(tracker: &mut Tracker, on: NotifyOn, runs: &[(Streak, i64)]) -> Vec<(i64, Event)> {
        runs.iter()
            .filter_map(|&(s, at)| {
                tracker
                    .on_run(s, t(at), on, Duration::from_secs(60))
                    .map(|e| (at, e))
            })
            .collect()
    }

    #[test]
    fn a_failing_job_is_announced_once_reminded_after_repeat_and_its_recovery_announced() {
        use Streak::*;
        let runs = [
            (Success, 0),
            (Failure, 10),
            (Failure, 20),
            (Neutral, 25),
            (Failure, 69),
            (Failure, 70),
            (Failure, 100),
            (Failure, 130),
            (Success, 140),
            (Success, 150),
            (Failure, 160),
        ];
        let got = notices(&mut Tracker::default(), DEFAULT, &runs);
        assert_eq!(
            got,
            vec![
                (10, Event::Failure),
                (70, Event::Reminder),
                (130, Event::Reminder),
                (140, Event::Recovery),
                (160, Event::Failure),
            ]
        );
    }

    #[test]
    fn success_notices_come_for_every_success_and_a_recovery_stands_for_one() {
        use Streak::*;
        let on = NotifyOn {
            failure: false,
            recovery: true,
            success: true,
        };
        let runs = [
            (Success, 0),
            (Failure, 10),
            (Failure, 100),
            (Success, 110),
            (Success, 120),
        ];
        let got = notices(&mut Tracker::default(), on, &runs);
        assert_eq!(
            got,
            vec![
                (0, Event::Success),
                (110, Event::Recovery),
                (120, Event::Success)
            ]
        );
        let only_success = NotifyOn {
            failure: false,
            recovery: false,
            success: true,
        };
        let got = notices(&mut Tracker::default(), only_success, &runs);
        assert_eq!(
            got,
            vec![
                (0, Event::Success),
                (110, Event::Success),
                (120, Event::Success)
            ]
        );
    }

    fn record(outcome: Outcome, at: i64) -> RunRecord {
        RunRecord {
            job: "radar".into(),
            started: t(at),
            finished: t(at),
            outcome,
            asset: "a.zip".into(),
            item: None,
            file: None,
            bytes: 0,
            attempts: 1,
            upload_id: None,
            error: None,
            assets: Vec::new(),
            instance: None,
            error_class: None,
            public: Vec::new(),
        }
    }

    #[test]
    fn a_restart_while_failing_does_not_announce_the_failure_again() {
        let history = [
            record(Outcome::Uploaded, 0),
            record(Outcome::Failed, 10),
            record(Outcome::Cancelled, 15),
            record(Outcome::Blocked, 20),
        ];
        let streak = seed(&history);
        assert_eq!(
            streak,
            Failures {
                failures: 2,
                last_failure: Some(t(20))
            }
        );
        let mut tracker = Tracker::from_streak(streak);
        let got = notices(
            &mut tracker,
            DEFAULT,
            &[
                (Streak::Failure, 30),
                (Streak::Failure, 80),
                (Streak::Success, 90),
            ],
        );
        assert_eq!(got, vec![(80, Event::Reminder), (90, Event::Recovery)]);
        assert_eq!(seed(&[record(Outcome::Uploaded, 0)]), Failures::default());
        assert_eq!(seed(&[]), Failures::default());
    }
}
