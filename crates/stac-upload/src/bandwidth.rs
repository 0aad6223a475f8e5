//! Bandwidth limits: a token bucket shared by every part in flight that it governs (one for the
//! whole daemon, one per job), whose rate may follow a timetable by time of day.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use tokio::time::Instant;

use stac_client::units::ByteSize;

/// A rate, optionally varying by time of day (e.g. full speed at night, throttled in office hours).
#[derive(Debug, Clone, PartialEq)]
pub struct BandwidthLimit {
    /// Bytes per second outside every window; `None` = unlimited.
    pub rate: Option<ByteSize>,
    /// Windows of local time with their own rate; the first that contains the time wins.
    pub windows: Vec<BandwidthWindow>,
    /// The zone the windows' times are read in.
    pub timezone: Tz,
}

/// `from`..`to` local time (wrapping past midnight when `to` <= `from`) at `rate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthWindow {
    /// Start of the window, local time (inclusive).
    pub from: NaiveTime,
    /// End of the window, local time (exclusive).
    pub to: NaiveTime,
    /// `None` = unlimited in this window.
    pub rate: Option<ByteSize>,
}

impl BandwidthLimit {
    /// A constant rate.
    pub fn constant(rate: ByteSize) -> Self {
        Self {
            rate: Some(rate),
            windows: Vec::new(),
            timezone: Tz::UTC,
        }
    }

    /// The rate in force at `t`.
    pub fn rate_at(&self, t: DateTime<Utc>) -> Option<ByteSize> {
        let local = t.with_timezone(&self.timezone).time();
        for w in &self.windows {
            let inside = if w.from < w.to {
                local >= w.from && local < w.to
            } else {
                local >= w.from || local < w.to
            };
            if inside {
                return w.rate;
            }
        }
        self.rate
    }
}

/// A shared limiter. Each request for bytes reserves its slot on a virtual timeline that
/// advances by `bytes / rate`; the caller sleeps until its slot (less a small burst allowance).
/// Because the timeline does not depend on when sleepers actually wake, timer overshoot never
/// accumulates into a lower rate, and slots are handed out in request order, so the parts in
/// flight share the rate fairly.
#[derive(Debug)]
pub struct Bandwidth {
    limit: BandwidthLimit,
    /// When the bytes reserved so far will have been sent at the limit.
    next: Mutex<Instant>,
}

/// Bytes may go this far ahead of the timeline: enough that chunks are not cut up, little
/// enough that the rate holds within a percent over seconds.
const BURST: Duration = Duration::from_millis(100);

impl Bandwidth {
    /// A limiter following `limit`.
    pub fn new(limit: BandwidthLimit) -> Self {
        Self {
            limit,
            next: Mutex::new(Instant::now()),
        }
    }

    /// The limit it follows.
    pub fn limit(&self) -> &BandwidthLimit {
        &self.limit
    }

    /// Waits until `n` bytes may be sent.
    pub async fn acquire(&self, n: u64) {
        let Some(rate) = self
            .limit
            .rate_at(Utc::now())
            .map(|r| r.get() as f64)
            .filter(|r| *r > 0.0)
        else {
            return;
        };
        let cost = Duration::from_secs_f64(n as f64 / rate);
        let slot = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            // An idle limiter does not bank more than the burst.
            let floor = now.checked_sub(BURST).unwrap_or(now);
            let start = (*next).max(floor);
            *next = start + cost;
            next.checked_sub(BURST).unwrap_or(*next)
        };
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timetable_windows_pick_the_rate() {
        let limit = BandwidthLimit {
            rate: None,
            windows: vec![BandwidthWindow {
                from: NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
                to: NaiveTime::from_hms_opt(19, 0, 0).unwrap(),
                rate: Some(ByteSize(5_000_000)),
            }],
            timezone: chrono_tz::Europe::Zurich,
        };
        // 10:00 UTC in November is 11:00 in Zurich: office hours.
        assert_eq!(
            limit.rate_at(Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap()),
            Some(ByteSize(5_000_000))
        );
        // 22:00 UTC is 23:00: full speed.
        assert_eq!(
            limit.rate_at(Utc.with_ymd_and_hms(2026, 11, 25, 22, 0, 0).unwrap()),
            None
        );
        let night = BandwidthLimit {
            rate: Some(ByteSize(1)),
            windows: vec![BandwidthWindow {
                from: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
                to: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
                rate: None,
            }],
            timezone: Tz::UTC,
        };
        assert_eq!(
            night.rate_at(Utc.with_ymd_and_hms(2026, 11, 25, 23, 0, 0).unwrap()),
            None,
            "wraps midnight"
        );
        assert_eq!(
            night.rate_at(Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap()),
            None
        );
        assert_eq!(
            night.rate_at(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()),
            Some(ByteSize(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_rate_shared_by_parts() {
        let bw = std::sync::Arc::new(Bandwidth::new(BandwidthLimit::constant(ByteSize(
            1_000_000,
        ))));
        let start = Instant::now();
        // Four "parts" sending 256 KiB chunks, 2.5 MB each: 10 MB at 1 MB/s is about 10 s.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let bw = bw.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        bw.acquire(250_000).await;
                    }
                    Instant::now()
                })
            })
            .collect();
        let mut ends = Vec::new();
        for t in tasks {
            ends.push(t.await.unwrap().duration_since(start).as_secs_f64());
        }
        let total = ends.iter().cloned().fold(0.0, f64::max);
        assert!(
            (9.5..=10.5).contains(&total),
            "10 MB at 1 MB/s took {total} s"
        );
        let first = ends.iter().cloned().fold(f64::MAX, f64::min);
        assert!(
            first > 9.0,
            "parts share the rate fairly, none finishes far ahead: {ends:?}"
        );
    }
}
