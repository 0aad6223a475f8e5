//! When a scheduled job fires: its cadence (a cron schedule, or `every` on a fixed grid from the
//! supervisor's start), a random delay per fire to spread jobs that share a schedule, and one
//! catch-up run at start-up for runs missed while the daemon was down.
//!
//! The loop only fills the job's pending slot (anything that is [`Fire`]: the supervisor's
//! `Pending`), so neither jitter nor catch-up can make two runs of a job overlap: the runner takes
//! one run at a time and coalesces fires that come meanwhile. The supervisor uses this module;
//! this module knows nothing of the supervisor.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::clock::Clock;
use super::{Schedule, TriggerSpec};

use crate::observe::metrics;
use crate::state::{Outcome, RunRecord};

/// Where a fire goes: the job's pending slot, which takes one run at a time.
pub trait Fire: Send + Sync {
    /// A run is due, standing for the fire time `at` (its nominal time, jitter or not).
    fn fire(&self, at: DateTime<Utc>);
}

/// The fire times of a scheduled job.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// Each fire time of a cron schedule, in its zone (boxed: a parsed expression is large).
    Cron(Box<Schedule>),
    /// `origin + k * step` for every whole `k`: a grid, so how late one fire was never shifts
    /// the next ones.
    Every {
        origin: DateTime<Utc>,
        step: TimeDelta,
    },
}

impl Cadence {
    /// The cadence of a cron or `every` trigger whose supervisor started at `origin`; `None` for
    /// a watch, and for an interval that is zero or too long to reach.
    pub fn of(trigger: &TriggerSpec, origin: DateTime<Utc>) -> Option<Self> {
        match trigger {
            TriggerSpec::Cron { schedule, .. } => Some(Cadence::Cron(Box::new(schedule.clone()))),
            TriggerSpec::Every { interval, .. } => TimeDelta::from_std(*interval)
                .ok()
                .filter(|step| *step > TimeDelta::zero())
                .map(|step| Cadence::Every { origin, step }),
            TriggerSpec::Watch(_) => None,
        }
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Cadence::Cron(schedule) => schedule.next_after(t),
            Cadence::Every { origin, step } => {
                let step_ns = step.num_nanoseconds()?;
                let k = (t - *origin).num_nanoseconds()?.div_euclid(step_ns) + 1;
                origin.checked_add_signed(TimeDelta::nanoseconds(k.checked_mul(step_ns)?))
            }
        }
    }

    /// The latest fire time a job whose last run started at `last` (`None`: it never ran) missed
    /// before `now`, if it missed one. An `every` job's grid began with a daemon that is gone:
    /// its runs were due each interval after its last run.
    pub fn missed_since(
        &self,
        last: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match (self, last) {
            (Cadence::Cron(schedule), None) => Some(schedule.last_at_or_before(now).unwrap_or(now)),
            (Cadence::Cron(schedule), Some(last)) => {
                let due = schedule.next_after(last).filter(|due| *due <= now)?;
                Some(
                    schedule
                        .last_at_or_before(now)
                        .map_or(due, |at| at.max(due)),
                )
            }
            (Cadence::Every { .. }, None) => Some(now),
            (Cadence::Every { step, .. }, Some(last)) => {
                let step_ns = step.num_nanoseconds()?;
                let n = (now - last).num_nanoseconds()? / step_ns;
                (n >= 1).then(|| last + TimeDelta::nanoseconds(n * step_ns))
            }
        }
    }
}

/// A run that was due while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// When the job's last recorded run started; `None` if it never ran.
    pub last_run: Option<DateTime<Utc>>,
    /// The latest fire time missed: the catch-up run stands for that run, and carries its time.
    pub at: DateTime<Utc>,
}

/// The run a job missed before `now`, given its recorded runs: one is missed when a fire time
/// (for `every`, an interval) lies between the last run's start and `now`, or when it never ran.
pub fn missed_run(cadence: &Cadence, runs: &[RunRecord], now: DateTime<Utc>) -> Option<Missed> {
    // Aborting an interrupted upload at start-up is not a run of the schedule: the file was not
    // published. A resumed upload is one: it published the file as it is now.
    let last_run = runs
        .iter()
        .filter(|r| r.outcome != Outcome::AbortedAtStart)
        .map(|r| r.started)
        .max();
    let at = cadence.missed_since(last_run, now)?;
    Some(Missed { last_run, at })
}

/// How far ahead [`expected_interval`] looks for a cron schedule's longest gap: a week holds
/// every pattern of weekdays.
pub const INTERVAL_HORIZON: TimeDelta = TimeDelta::days(7);

/// The time expected between two runs of a job started at `now`: `every`'s interval; for a cron
/// schedule the longest gap between consecutive fire times over the next week (so a weekdays-only
/// job is not expected on a Sunday), or its first gap if it fires less often; zero for a watch job, which has no expectation, and for a
/// schedule that never fires.
///
/// The week is not walked fire by fire (a schedule of every second fires 604 800 times): from
/// each fire it jumps to the last fire within the longest gap seen so far, but at least a minute,
/// since the gaps in between are no longer than that. So the result is exact whenever the
/// longest gap is a minute or more, and under a minute for a schedule whose gaps all are.
pub fn expected_interval(trigger: &TriggerSpec, now: DateTime<Utc>) -> Duration {
    match trigger {
        TriggerSpec::Every { interval, .. } => *interval,
        TriggerSpec::Cron { schedule, .. } => {
            let end = now + INTERVAL_HORIZON;
            let mut longest = TimeDelta::zero();
            let mut at = schedule.next_after(now);
            // A schedule with no gap in the week (fires less often) counts its first gap.
            while let Some(fire) = at.filter(|t| *t <= end || longest.is_zero()) {
                let window = longest.max(TimeDelta::minutes(1));
                let last = schedule
                    .last_at_or_before(fire + window)
                    .filter(|l| *l > fire)
                    .unwrap_or(fire);
                at = schedule.next_after(last);
                if let Some(next) = at {
                    longest = longest.max(next - last);
                }
            }
            longest.to_std().unwrap_or_default()
        }
        TriggerSpec::Watch(_) => Duration::ZERO,
    }
}

/// What a scheduled job's trigger does.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// The job's name, for its metrics.
    pub job: String,
    pub cadence: Cadence,
    /// Each fire waits a random delay in `[0, jitter)`.
    pub jitter: Option<Duration>,
    /// Fire once at once, before the schedule: a run was missed.
    pub catch_up: Option<Missed>,
}

/// Fires `pending` at each time of `trigger` after `start` until `stop`. A fire carries its
/// nominal time, jitter or not. Times missed while the loop was not woken (a suspended machine,
/// a stalled runtime) are skipped, not fired in a burst: only the late one fires. The job's
/// `trigger_up` is 1 while the loop runs, and 0 once the schedule has no further fire time (a
/// stop leaves it: the loop of the job's successor may already be running).
pub async fn fire_loop<F: Fire + ?Sized>(
    trigger: Trigger,
    start: DateTime<Utc>,
    pending: Arc<F>,
    clock: Clock,
    stop: CancellationToken,
) {
    let Trigger {
        job,
        cadence,
        jitter,
        catch_up,
    } = trigger;
    metrics::trigger_up(&job, true);
    if let Some(missed) = catch_up {
        info!(
            last_run = %missed.last_run.map_or_else(|| "never".into(), |t| t.to_rfc3339()),
            missed = %missed.at.to_rfc3339(),
            "catching up a run missed while the daemon was down"
        );
        let room = cadence.next_after(start).map(|next| next - start);
        if !wait(jitter_delay(jitter, room), &stop).await {
            return;
        }
        pending.fire(missed.at);
    }
    let mut after = start;
    loop {
        let Some(nominal) = cadence.next_after(after) else {
            warn!(?cadence, "the schedule has no further fire time");
            metrics::trigger_up(&job, false);
            return;
        };
        tokio::select! {
            () = clock.sleep_until(nominal) => {}
            () = stop.cancelled() => return,
        }
        let woke = clock.now();
        // Lateness is the scheduler's, before the jitter we add on purpose.
        let late = woke - nominal;
        tracing::trace!(late_ms = late.num_milliseconds(), "schedule fired");
        metrics::schedule_lateness(&job, late.to_std().unwrap_or_default());
        after = woke;
        let room = cadence.next_after(woke).map(|next| next - woke);
        if !wait(jitter_delay(jitter, room), &stop).await {
            return;
        }
        pending.fire(nominal);
    }
}

/// A random delay in `[0, jitter)`, drawn afresh for each fire, and shorter than `room` (the
/// time left before the next fire), so that a jitter wider than the schedule's gaps still
/// fires each time once, in order, rather than skipping fires.
pub fn jitter_delay(jitter: Option<Duration>, room: Option<TimeDelta>) -> Duration {
    let Some(jitter) = jitter else {
        return Duration::ZERO;
    };
    let max = room.map_or(jitter, |r| jitter.min(r.to_std().unwrap_or_default()));
    // Whole milliseconds: tokio's timer rounds a sleep up to the next one, which would let a
    // delay drawn just below `max` land on it.
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if max_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::random_range(0..max_ms))
    }
}

/// Waits `d` unless `stop` comes first; whether to go on.
async fn wait(d: Duration, stop: &CancellationToken) -> bool {
    if d.is_zero() {
        return !stop.is_cancelled();
    }
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ran(started: &str, outcome: Outcome) -> RunRecord {
        RunRecord {
            instance: None,
            error_class: None,
            public: Vec::new(),
            job: "job".into(),
            started: utc(started),
            finished: utc(started),
            outcome,
            asset: "a.zip".into(),
            item: None,
            file: None,
            bytes: 0,
            attempts: 1,
            upload_id: None,
            error: None,
            assets: Vec::new(),
        }
    }

    fn every(origin: &str, step: i64) -> Cadence {
        Cadence::Every {
            origin: utc(origin),
            step: TimeDelta::seconds(step),
        }
    }

    #[test]
    fn every_is_a_grid_from_its_origin() {
        let c = every("2026-03-02T10:00:00Z", 300);
        let next = |t| c.next_after(utc(t)).unwrap().to_rfc3339();
        assert_eq!(next("2026-03-02T10:00:00Z"), "2026-03-02T10:05:00+00:00");
        assert_eq!(next("2026-03-02T10:04:59Z"), "2026-03-02T10:05:00+00:00");
        assert_eq!(
            next("2026-03-02T10:05:00Z"),
            "2026-03-02T10:10:00+00:00",
            "strictly after"
        );
        assert_eq!(
            next("2026-03-02T13:21:40Z"),
            "2026-03-02T13:25:00+00:00",
            "after a stall: on the grid, not one interval after the stall"
        );
        assert_eq!(next("2026-03-02T09:58:00Z"), "2026-03-02T10:00:00+00:00");
        let zero = TriggerSpec::Every {
            file: "/f".into(),
            interval: Duration::ZERO,
        };
        assert!(Cadence::of(&zero, Utc::now()).is_none());
    }

    #[test]
    fn a_daily_job_missed_a_run_when_a_fire_time_lies_between_its_last_run_and_now() {
        let daily = Cadence::Cron(Box::new(
            Schedule::parse("30 2 * * *", "Europe/Zurich").unwrap(),
        ));
        let now = utc("2026-03-02T10:00:00Z");
        let two_days_ago = [ran("2026-02-28T01:30:02Z", Outcome::Uploaded)];
        assert_eq!(
            missed_run(&daily, &two_days_ago, now),
            Some(Missed {
                last_run: Some(utc("2026-02-28T01:30:02Z")),
                at: utc("2026-03-02T01:30:00Z"),
            }),
            "two missed, one caught up: the latest"
        );
        let after_the_last_fire = [
            ran("2026-02-28T01:30:02Z", Outcome::Uploaded),
            ran("2026-03-02T01:30:00Z", Outcome::Failed),
        ];
        assert_eq!(
            missed_run(&daily, &after_the_last_fire, now),
            None,
            "a failed run is a run: retrying it is the policy's business"
        );
        assert_eq!(
            missed_run(&daily, &[], now),
            Some(Missed {
                last_run: None,
                at: utc("2026-03-02T01:30:00Z"),
            }),
            "never ran"
        );
        let aborted_at_start = [
            ran("2026-02-28T01:30:02Z", Outcome::Uploaded),
            ran("2026-03-02T09:59:00Z", Outcome::AbortedAtStart),
        ];
        assert!(missed_run(&daily, &aborted_at_start, now).is_some());
        let resumed = [
            ran("2026-02-28T01:30:02Z", Outcome::Uploaded),
            ran("2026-03-02T09:59:00Z", Outcome::Resumed),
        ];
        assert_eq!(missed_run(&daily, &resumed, now), None);
    }

    #[test]
    fn an_every_job_missed_a_run_when_an_interval_has_passed_since_its_last_run() {
        let now = utc("2026-03-02T10:00:00Z");
        let c = every("2026-03-02T10:00:00Z", 300);
        let last = |s| [ran(s, Outcome::Uploaded)];
        let missed = |s| missed_run(&c, &last(s), now).map(|m| m.at);
        assert_eq!(missed("2026-03-02T09:55:00Z"), Some(now));
        assert_eq!(missed("2026-03-02T09:55:01Z"), None);
        assert_eq!(
            missed("2026-03-02T09:38:00Z"),
            Some(utc("2026-03-02T09:58:00Z")),
            "the last time due, one interval after another from the last run"
        );
        assert_eq!(missed_run(&c, &[], now).map(|m| m.at), Some(now));
    }

    #[test]
    fn the_expected_interval_is_the_longest_gap_of_the_coming_week() {
        // A Monday 10:00 UTC.
        let now = utc("2026-03-02T10:00:00Z");
        let cron = |expr: &str| TriggerSpec::Cron {
            file: "/f".into(),
            schedule: Schedule::parse(expr, "Europe/Zurich").unwrap(),
        };
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(
            expected_interval(&cron("*/5 * * * *"), now),
            Duration::from_secs(300)
        );
        assert_eq!(expected_interval(&cron("30 2 * * *"), now), h(24));
        // Weekdays at 06:00: Friday to Monday is the longest wait.
        assert_eq!(expected_interval(&cron("0 6 * * 1-5"), now), h(72));
        // Hourly during working hours: the night is the longest wait.
        assert_eq!(expected_interval(&cron("0 8-17 * * *"), now), h(15));
        // Every second on weekdays: the weekend, found without walking every second.
        assert_eq!(
            expected_interval(&cron("* * * * * 1-5"), now),
            h(48) + Duration::from_secs(1)
        );
        // Under a minute, the gaps are not all looked at: at most the longest.
        let fast = expected_interval(&cron("*/10 * * * * *"), now);
        assert!(
            fast > Duration::ZERO && fast <= Duration::from_secs(10),
            "{fast:?}"
        );
        // Twice a month: no fire in the week ahead; its first gap counts, 15 March to 1 April
        // (less the hour summer time takes on 29 March).
        assert_eq!(
            expected_interval(&cron("0 0 1,15 * *"), now),
            h(17 * 24 - 1)
        );
        let every = TriggerSpec::Every {
            file: "/f".into(),
            interval: Duration::from_secs(90),
        };
        assert_eq!(expected_interval(&every, now), Duration::from_secs(90));
    }

    #[test]
    fn jitter_stays_below_the_jitter_and_the_room_left() {
        let j = Some(Duration::from_secs(30));
        assert_eq!(jitter_delay(None, None), Duration::ZERO);
        assert_eq!(jitter_delay(Some(Duration::ZERO), None), Duration::ZERO);
        assert_eq!(jitter_delay(j, Some(TimeDelta::zero())), Duration::ZERO);
        for _ in 0..1_000 {
            assert!(jitter_delay(j, None) < Duration::from_secs(30));
            assert!(jitter_delay(j, Some(TimeDelta::seconds(10))) < Duration::from_secs(10));
        }
    }
}
