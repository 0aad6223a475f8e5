//! Cron schedules in a time zone, evaluated by `croner`, driven by our own per-job loop.
//!
//! tokio-cron-scheduler 0.15 was the first plan. It keeps the UTC offset a job had when it was
//! created, so a Europe/Zurich job runs an hour off after a DST change (its issues #87 and #107);
//! it also drops missed runs silently and lets runs overlap. Here each fire time is computed
//! afresh in the job's zone from the previous one, and the supervisor owns overlap.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
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

    /// The first fire time strictly after `t`. In a DST gap a fixed-time job fires at the first
    /// real instant after the gap; in an overlap it fires once.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last fire time at or before `t`: the latest run missed by a daemon that was down.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
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
