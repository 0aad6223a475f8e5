//! Cron schedules in a time zone, evaluated by `croner`, driven by our own per-job loop.
//!
//! tokio-cron-scheduler 0.15 was the first plan. It keeps the UTC offset a job had when it was
//! created, so a Europe/Zurich job runs an hour off after a DST change (its issues #87 and #107);
//! it also drops missed runs silently and lets runs overlap. Here each fire time is computed
//! afresh in the job's zone from the previous one, and the supervisor owns overlap.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A cron expression (5 fields, or 6 with seconds first) in an IANA time zone.
#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
    expr: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expr, self.tz)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" ({})", self.expr, self.tz)
    }
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "invalid cron expression {expr:?}: {reason}; expected 5 fields (minute hour day month weekday) or 6 with seconds first, e.g. \"30 2 * * *\""
    )]
    Cron { expr: String, reason: String },
    #[error("unknown time zone {0:?}: expected an IANA name such as \"Europe/Zurich\" or \"UTC\"")]
    TimeZone(String),
    #[error("the cron expression {0:?} never fires")]
    Never(String),
}

impl Schedule {
    /// Parses `expr` for the zone named `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let tz = Tz::from_str(tz).map_err(|_| ScheduleError::TimeZone(tz.to_owned()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr.trim())
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_owned(),
                reason: e.to_string(),
            })?;
        let s = Self {
            cron,
            tz,
            expr: expr.trim().to_owned(),
        };
        if s.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::Never(expr.to_owned()));
        }
        Ok(s)
    }

    /// The zone the expression is read in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `t`.
    ///
    /// The expression is matched against the local wall-clock time of the zone, and each local
    /// time it names fires at most once, whatever the form of its fields (croner's own rule
    /// fires a list, range or step hour twice in the autumn overlap, and skips it in the spring
    /// gap; only a single hour was fired once):
    /// - in the autumn overlap a local time happens twice: it fires at the first, never at the
    ///   second;
    /// - in the spring gap a local time does not happen: it fires once, at the first real
    ///   instant after the gap (02:30 in Zurich's gap fires at 03:00 summer time); several
    ///   local times of the gap, and the first time after it, make that one fire.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut local = t.with_timezone(&self.tz).naive_local();
        // Each round passes one local time; only the second occurrences of an overlap are
        // passed without firing, at most one round per second of the overlap.
        for _ in 0..MAX_SKIPPED {
            let wall = self.cron.find_next_occurrence(&local, false).ok()?;
            match self.instant(wall)? {
                at if at > t => return Some(at),
                _ => local = wall,
            }
        }
        None
    }

    /// The last fire time at or before `t`: the latest run missed by a daemon that was down.
    /// Consistent with [`Schedule::next_after`]: the same local times fire, at the same instants.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut local = t.with_timezone(&self.tz).naive_local();
        let mut inclusive = true;
        let mut found = None;
        for _ in 0..MAX_SKIPPED {
            let wall = self.cron.find_previous_occurrence(&local, inclusive).ok()?;
            match self.instant(wall)? {
                at if at <= t => {
                    found = Some(at);
                    break;
                }
                _ => (local, inclusive) = (wall, false),
            }
        }
        // After the second half of an overlap, local times of its first half (which look later
        // than `t`'s own local time) fired before `t`: walk forward over them.
        let mut last = found?;
        for _ in 0..MAX_SKIPPED {
            match self.next_after(last) {
                Some(next) if next <= t => last = next,
                _ => break,
            }
        }
        Some(last)
    }

    /// The instant a local time the expression names fires at: the earlier of two in an
    /// overlap, the end of the gap for a time that does not exist.
    fn instant(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Some(at.with_timezone(&Utc)),
            LocalResult::None => gap_end(self.tz, wall),
        }
    }

    /// The fires around the first change of UTC offset after `t` (within `horizon`), as
    /// `check` shows them; `None` when there is no change in reach, or the schedule names no
    /// local time that the change skips or repeats (its fires are not affected).
    pub fn around_next_transition(
        &self,
        t: DateTime<Utc>,
        horizon: chrono::Duration,
    ) -> Option<TransitionFires> {
        let at = next_transition(self.tz, t, t + horizon)?;
        let before = self
            .tz
            .offset_from_utc_datetime(&(at - chrono::Duration::seconds(1)).naive_utc())
            .fix();
        let after = self.tz.offset_from_utc_datetime(&at.naive_utc()).fix();
        let jump = i64::from(after.local_minus_utc() - before.local_minus_utc());
        // The local times the change skips (spring) or repeats (autumn): [start, end).
        let (start, end, what) = if jump > 0 {
            let start = at.with_timezone(&before).naive_local();
            (
                start,
                start + chrono::Duration::seconds(jump),
                "does not exist",
            )
        } else {
            let start = at.with_timezone(&after).naive_local();
            (
                start,
                start - chrono::Duration::seconds(jump),
                "comes twice, fires once",
            )
        };
        let mut named = Vec::new();
        let mut w = start - chrono::Duration::seconds(1);
        while let Ok(next) = self.cron.find_next_occurrence(&w, false) {
            if next >= end || named.len() >= MAX_SKIPPED {
                break;
            }
            named.push(next);
            w = next;
        }
        let (first, last) = (named.first()?, named.last()?);
        let note = if named.len() == 1 {
            format!("{} {what}", first.format("%H:%M"))
        } else {
            let what = if jump > 0 {
                "do not exist"
            } else {
                "come twice, fire once"
            };
            format!(
                "{} to {} {what}",
                first.format("%H:%M:%S"),
                last.format("%H:%M:%S")
            )
        };
        // Two fires before the change and three from it on, that day: enough to see what it does.
        let mut fires = Vec::new();
        let mut cursor = at - chrono::Duration::seconds(1);
        for _ in 0..2 {
            match self.last_at_or_before(cursor) {
                Some(f) if at - f <= chrono::Duration::days(1) => {
                    fires.insert(0, f);
                    cursor = f - chrono::Duration::seconds(1);
                }
                _ => break,
            }
        }
        let mut cursor = at - chrono::Duration::seconds(1);
        for _ in 0..3 {
            match self.next_after(cursor) {
                Some(f) if f - at <= chrono::Duration::days(1) => {
                    fires.push(f);
                    cursor = f;
                }
                _ => break,
            }
        }
        let date = at.with_timezone(&self.tz).date_naive();
        Some(TransitionFires {
            date,
            // Times without a date: only those of the day of the change.
            fires: fires
                .into_iter()
                .map(|f| f.with_timezone(&self.tz))
                .filter(|f| f.date_naive() == date)
                .collect(),
            note,
        })
    }

    /// The shortest gap between two consecutive fire times over the next `samples` runs: how
    /// often the job runs, for the `auto` policy and for capping retries.
    pub fn min_interval(&self, from: DateTime<Utc>, samples: usize) -> Option<chrono::Duration> {
        let mut prev = self.next_after(from)?;
        let mut min: Option<chrono::Duration> = None;
        for _ in 0..samples {
            let next = self.next_after(prev)?;
            let gap = next - prev;
            min = Some(min.map_or(gap, |m| m.min(gap)));
            prev = next;
        }
        min
    }
}

/// A bound on the local times passed without firing in one search: an overlap of a schedule
/// firing every second holds 3,600 of them per hour of overlap.
const MAX_SKIPPED: usize = 4 * 3_600;

/// The fires of a schedule around a change of UTC offset, for `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionFires {
    /// The local date of the change.
    pub date: chrono::NaiveDate,
    /// Fire times of that day near the change, in the schedule's zone.
    pub fires: Vec<DateTime<Tz>>,
    /// What the change does to the local times the schedule names ("02:30 does not exist").
    pub note: String,
}

impl fmt::Display for TransitionFires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fires: Vec<String> = self
            .fires
            .iter()
            .map(|t| t.format("%H:%M %Z").to_string())
            .collect();
        write!(
            f,
            "around the DST change on {}: {} ({})",
            self.date,
            fires.join(", "),
            self.note
        )
    }
}

/// The first instant after a gap of `tz` that holds the local time `wall`, which does not
/// exist: the gap's end, the instant of the change of offset.
fn gap_end(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Read with the offset before the change, `wall` lies after it; a day earlier, before it
    // (gaps are shorter than a day).
    let before = tz
        .offset_from_local_datetime(&(wall - chrono::Duration::days(1)))
        .earliest()?;
    let late = wall.checked_sub_signed(chrono::Duration::seconds(i64::from(
        before.fix().local_minus_utc(),
    )))?;
    next_transition(
        tz,
        late.and_utc() - chrono::Duration::days(1),
        late.and_utc(),
    )
}

/// The first instant in `(from, until]` whose UTC offset differs from the one at `from`, to
/// the second. Sampled every 12 hours (offsets change at most a few times a year, never twice
/// within 12 hours), then bisected.
fn next_transition(tz: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let offset = |secs: i64| {
        DateTime::from_timestamp(secs, 0).map(|t| tz.offset_from_utc_datetime(&t.naive_utc()).fix())
    };
    let (from, until) = (from.timestamp(), until.timestamp());
    let first = offset(from)?;
    let mut lo = from;
    while lo < until {
        let hi = (lo + 12 * 3_600).min(until);
        if offset(hi)? != first {
            let (mut lo, mut hi) = (lo, hi);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset(mid)? == first {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return DateTime::from_timestamp(hi, 0);
        }
        lo = hi;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn zurich_0230_across_both_2026_dst_changes() {
        // 2026: CET -> CEST on Sunday 29 March (02:00 -> 03:00), back on Sunday 25 October.
        let s = Schedule::parse("0 30 2 * * *", "Europe/Zurich").unwrap();
        let mut t = utc("2026-03-27T12:00:00Z");
        let mut fired = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t).unwrap();
            fired.push(t.to_rfc3339());
        }
        assert_eq!(
            fired,
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 02:30 does not exist: first instant after the gap, 03:00 CEST
                "2026-03-30T00:30:00+00:00", // 02:30 CEST, not an hour off
                "2026-03-31T00:30:00+00:00",
            ]
        );
        let mut t = utc("2026-10-23T12:00:00Z");
        let mut fired = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t).unwrap();
            fired.push(t.to_rfc3339());
        }
        assert_eq!(
            fired,
            [
                "2026-10-24T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 happens twice: fires once, at the first
                "2026-10-26T01:30:00+00:00", // 02:30 CET
                "2026-10-27T01:30:00+00:00",
            ]
        );
    }

    #[test]
    fn the_last_fire_time_matches_the_fire_times_across_dst_changes() {
        let s = Schedule::parse("0 30 2 * * *", "Europe/Zurich").unwrap();
        let last = |t| s.last_at_or_before(utc(t)).unwrap().to_rfc3339();
        assert_eq!(last("2026-03-28T12:00:00Z"), "2026-03-28T01:30:00+00:00");
        assert_eq!(last("2026-03-28T01:30:00Z"), "2026-03-28T01:30:00+00:00");
        assert_eq!(last("2026-03-28T01:29:59Z"), "2026-03-27T01:30:00+00:00");
        // As `next_after` fires: 03:00 CEST in the spring gap, the first 02:30 in the overlap.
        assert_eq!(last("2026-03-29T12:00:00Z"), "2026-03-29T01:00:00+00:00");
        assert_eq!(last("2026-10-25T12:00:00Z"), "2026-10-25T00:30:00+00:00");
    }

    /// Every fire time in `(from, until]`, in the schedule's zone.
    fn fires(s: &Schedule, from: &str, until: &str) -> Vec<String> {
        let (mut t, until) = (utc(from), utc(until));
        let mut out = Vec::new();
        while let Some(next) = s.next_after(t).filter(|n| *n <= until) {
            out.push(
                next.with_timezone(&s.timezone())
                    .format("%H:%M %Z")
                    .to_string(),
            );
            t = next;
        }
        out
    }

    #[test]
    fn an_autumn_overlap_fires_each_local_time_once_whatever_the_hour_field() {
        // 2027: summer time ends on Sunday 31 October (the last of the month), 03:00 CEST ->
        // 02:00 CET; 02:30 happens twice.
        for expr in [
            "30 2,14 31 10 *",
            "30 1-3 31 10 *",
            "30 */1 31 10 *",
            "30 2 31 10 *",
        ] {
            let s = Schedule::parse(expr, "Europe/Zurich").unwrap();
            let fired = fires(&s, "2027-10-30T22:00:00Z", "2027-10-31T12:00:00Z");
            assert_eq!(
                fired.iter().filter(|f| f.starts_with("02:30")).count(),
                1,
                "{expr}: {fired:?}"
            );
            assert!(
                fired.contains(&"02:30 CEST".to_owned()),
                "{expr}: {fired:?}"
            );
            // The last fire seen from anywhere agrees with the fires.
            let last = s.last_at_or_before(utc("2027-10-31T01:45:00Z")).unwrap();
            assert_eq!(last, utc("2027-10-31T00:30:00Z"), "{expr}");
        }
        let s = Schedule::parse("30 1-3 31 10 *", "Europe/Zurich").unwrap();
        assert_eq!(
            fires(&s, "2027-10-30T22:00:00Z", "2027-10-31T12:00:00Z"),
            ["01:30 CEST", "02:30 CEST", "03:30 CET"]
        );
        // Every 20 minutes: the repeated hour is not fired a second time.
        let s = Schedule::parse("*/20 * 31 10 *", "Europe/Zurich").unwrap();
        assert_eq!(
            fires(&s, "2027-10-30T23:30:00Z", "2027-10-31T02:30:00Z"),
            [
                "01:40 CEST",
                "02:00 CEST",
                "02:20 CEST",
                "02:40 CEST",
                "03:00 CET",
                "03:20 CET",
            ]
        );
        // Started in the second half of the overlap: 02:30 has fired already.
        let s = Schedule::parse("30 2,14 31 10 *", "Europe/Zurich").unwrap();
        assert_eq!(
            s.next_after(utc("2027-10-31T01:10:00Z")),
            Some(utc("2027-10-31T13:30:00Z"))
        );
    }

    #[test]
    fn a_spring_gap_fires_a_local_time_that_does_not_exist_once_after_the_gap() {
        // 2027: 28 March, 02:00 CET -> 03:00 CEST.
        for expr in ["30 2,14 28 3 *", "30 1-3 28 3 *", "30 2 28 3 *"] {
            let s = Schedule::parse(expr, "Europe/Zurich").unwrap();
            let fired = fires(&s, "2027-03-27T22:00:00Z", "2027-03-28T02:00:00Z");
            assert!(
                fired.contains(&"03:00 CEST".to_owned()),
                "{expr}: {fired:?}"
            );
        }
        let s = Schedule::parse("30 1-3 28 3 *", "Europe/Zurich").unwrap();
        assert_eq!(
            fires(&s, "2027-03-27T22:00:00Z", "2027-03-28T12:00:00Z"),
            ["01:30 CET", "03:00 CEST", "03:30 CEST"]
        );
        // The whole missing hour and 03:00 itself make one fire.
        let s = Schedule::parse("*/20 * 28 3 *", "Europe/Zurich").unwrap();
        assert_eq!(
            fires(&s, "2027-03-28T00:30:00Z", "2027-03-28T01:30:00Z"),
            ["01:40 CET", "03:00 CEST", "03:20 CEST"]
        );
        assert_eq!(
            s.last_at_or_before(utc("2027-03-28T01:10:00Z")),
            Some(utc("2027-03-28T01:00:00Z"))
        );
    }

    #[test]
    fn check_shows_the_fires_around_the_next_dst_change_of_an_affected_schedule() {
        let s = Schedule::parse("30 1-3 * * *", "Europe/Zurich").unwrap();
        let around = s
            .around_next_transition(utc("2027-03-01T00:00:00Z"), chrono::Duration::days(366))
            .unwrap();
        assert_eq!(
            around.to_string(),
            "around the DST change on 2027-03-28: 01:30 CET, 03:00 CEST, 03:30 CEST (02:30 does not exist)"
        );
        let s = Schedule::parse("30 2,14 * * *", "Europe/Zurich").unwrap();
        let around = s
            .around_next_transition(utc("2027-10-01T00:00:00Z"), chrono::Duration::days(366))
            .unwrap();
        assert!(
            around
                .to_string()
                .starts_with("around the DST change on 2027-10-31: "),
            "{around}"
        );
        assert!(
            around
                .to_string()
                .ends_with("(02:30 comes twice, fires once)"),
            "{around}"
        );
        // 04:00 is neither skipped nor repeated: nothing to show.
        let s = Schedule::parse("0 4 * * *", "Europe/Zurich").unwrap();
        assert!(
            s.around_next_transition(utc("2027-03-01T00:00:00Z"), chrono::Duration::days(366))
                .is_none()
        );
        let s = Schedule::parse("30 2 * * *", "UTC").unwrap();
        assert!(
            s.around_next_transition(utc("2027-03-01T00:00:00Z"), chrono::Duration::days(366))
                .is_none()
        );
    }

    #[test]
    fn five_and_six_fields() {
        let five = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 0).unwrap();
        assert_eq!(
            five.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 5, 0).unwrap())
        );
        let six = Schedule::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            six.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 10).unwrap())
        );
        assert_eq!(six.min_interval(t, 5), Some(chrono::Duration::seconds(10)));
        assert_eq!(
            Schedule::parse("0 3 * * *", "UTC")
                .unwrap()
                .min_interval(t, 5),
            Some(chrono::Duration::days(1))
        );
    }

    #[test]
    fn errors_say_what_was_expected() {
        let e = Schedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.to_string().contains("expected 5 fields"), "{e}");
        let e = Schedule::parse("* * *", "UTC").unwrap_err();
        assert!(matches!(e, ScheduleError::Cron { .. }), "{e}");
        let e = Schedule::parse("0 3 * * *", "Europe/Zurch").unwrap_err();
        assert_eq!(e, ScheduleError::TimeZone("Europe/Zurch".into()));
    }
}
