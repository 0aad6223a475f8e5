//! Whether an upload in progress that blocks an asset may be aborted: the one decision behind a
//! job's handling of a blocked asset ([`super::Job::staleness`]) and `stac-uploadd uploads`.
//!
//! Pure: what the state store says about the upload is looked up by the caller, so the rule can
//! be shown to an operator exactly as the daemon would apply it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use stac_client::Upload;

/// What the caller knows about who sent a blocking upload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ownership {
    /// The daemon is sending it right now (a run of its own is under way with it).
    pub running: bool,
    /// It is recorded in the state folder as one of ours in flight.
    pub recorded: bool,
    /// A create marker of ours holds its target and checksum: a create whose answer was lost.
    pub unseen_create: bool,
}

impl Ownership {
    /// True when the state folder shows the upload as ours (in flight, or a create marker).
    pub(crate) fn is_ours(&self) -> bool {
        self.recorded || self.unseen_create
    }
}

/// The verdict on a blocking upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Staleness {
    /// It may be aborted, for this reason.
    Stale(&'static str),
    /// Someone may still be sending it. From `stale_from` on it counts as stale; `None`: never
    /// by age (the server gave neither its creation time nor its URLs' expiry).
    Live { stale_from: Option<DateTime<Utc>> },
    /// Runs found it can never be aborted: the server holds it in progress but its S3 upload is
    /// gone (abort answers 500 NoSuchUpload). Only the service's operators can clear it.
    Unfreeable,
}

impl Staleness {
    /// Why it may be aborted, or `None` if it is left alone.
    pub(crate) fn reason(self) -> Option<&'static str> {
        match self {
            Staleness::Stale(why) => Some(why),
            Staleness::Live { .. } | Staleness::Unfreeable => None,
        }
    }
}

/// [`staleness`], knowing whether runs already found the upload unfreeable (their history says
/// so): then no abort is tried, whatever its age, as none can succeed.
pub(crate) fn judge(
    blocking: &Upload,
    ours: Ownership,
    known_unfreeable: bool,
    stale_after: Duration,
    now: DateTime<Utc>,
) -> Staleness {
    if known_unfreeable {
        return Staleness::Unfreeable;
    }
    staleness(blocking, ours, stale_after, now)
}

/// Judges `blocking` at `now`: ours from a run that is over (or from a create whose answer was
/// lost) is stale at once; otherwise it is stale once its part URLs have expired (nobody can
/// finish it) or it is older than `stale_after`, and never waited for longer than its URLs live.
pub(crate) fn staleness(
    blocking: &Upload,
    ours: Ownership,
    stale_after: Duration,
    now: DateTime<Utc>,
) -> Staleness {
    if !ours.running && ours.recorded {
        return Staleness::Stale("it is ours, from a run that is over");
    }
    // A create of ours whose answer was lost: its id never reached the store, its multihash did.
    if !ours.running && ours.unseen_create {
        return Staleness::Stale("it is ours, from a create whose answer was lost");
    }
    let expires = blocking.urls.iter().filter_map(|u| u.expires).min();
    if expires.is_some_and(|e| e <= now) {
        return Staleness::Stale("its part URLs have expired, nobody can finish it");
    }
    let Some(created) = blocking.created else {
        return Staleness::Live {
            stale_from: expires,
        };
    };
    // Never wait longer than the URLs live: past that the upload cannot be finished anyway.
    let mut limit = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    if let Some(lifetime) = expires.map(|e| e - created) {
        limit = limit.min(lifetime);
    }
    if now - created >= limit {
        return Staleness::Stale("it is older than stale_after");
    }
    Staleness::Live {
        stale_from: created.checked_add_signed(limit).or(expires),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stac_client::{PartNumber, PresignedUrl, UploadId, UploadStatus};

    const HOUR: Duration = Duration::from_secs(3600);

    fn upload(created: Option<DateTime<Utc>>, expires: Option<DateTime<Utc>>) -> Upload {
        Upload {
            upload_id: UploadId("u".into()),
            status: UploadStatus::InProgress,
            number_parts: Some(1),
            created,
            completed: None,
            aborted: None,
            urls: vec![PresignedUrl {
                url: "http://s3/part".into(),
                part: PartNumber(1),
                expires,
            }],
            md5_parts: vec![],
            content_encoding: None,
            checksum: Some("1220ab".into()),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ours_from_a_run_that_is_over_is_stale_at_once_but_not_while_running() {
        let now = t("2026-01-01T12:00:00Z");
        let u = upload(Some(now), None);
        let recorded = Ownership {
            recorded: true,
            ..Ownership::default()
        };
        assert_eq!(
            staleness(&u, recorded, HOUR, now).reason(),
            Some("it is ours, from a run that is over")
        );
        let lost = Ownership {
            unseen_create: true,
            ..Ownership::default()
        };
        assert_eq!(
            staleness(&u, lost, HOUR, now).reason(),
            Some("it is ours, from a create whose answer was lost")
        );
        let running = Ownership {
            running: true,
            recorded: true,
            unseen_create: true,
        };
        assert_eq!(
            staleness(&u, running, HOUR, now),
            Staleness::Live {
                stale_from: Some(t("2026-01-01T13:00:00Z"))
            }
        );
    }

    #[test]
    fn someone_elses_upload_is_stale_after_stale_after_or_its_url_lifetime() {
        let created = t("2026-01-01T12:00:00Z");
        let someone = Ownership::default();
        // URLs living 30 minutes: stale from then, not after the hour of stale_after.
        let u = upload(Some(created), Some(t("2026-01-01T12:30:00Z")));
        assert_eq!(
            staleness(&u, someone, HOUR, t("2026-01-01T12:10:00Z")),
            Staleness::Live {
                stale_from: Some(t("2026-01-01T12:30:00Z"))
            }
        );
        assert_eq!(
            staleness(&u, someone, HOUR, t("2026-01-01T12:30:00Z")).reason(),
            Some("its part URLs have expired, nobody can finish it")
        );
        // URLs living a day: stale_after decides.
        let u = upload(Some(created), Some(t("2026-01-02T12:00:00Z")));
        assert_eq!(
            staleness(&u, someone, HOUR, t("2026-01-01T12:59:59Z")),
            Staleness::Live {
                stale_from: Some(t("2026-01-01T13:00:00Z"))
            }
        );
        assert_eq!(
            staleness(&u, someone, HOUR, t("2026-01-01T13:00:00Z")).reason(),
            Some("it is older than stale_after")
        );
    }

    #[test]
    fn an_upload_known_unfreeable_is_never_to_be_aborted() {
        let now = t("2026-01-01T12:00:00Z");
        let old = upload(Some(t("2026-01-01T01:00:00Z")), None);
        assert_eq!(
            judge(&old, Ownership::default(), true, HOUR, now),
            Staleness::Unfreeable
        );
        assert_eq!(
            judge(&old, Ownership::default(), true, HOUR, now).reason(),
            None
        );
        assert_eq!(
            judge(&old, Ownership::default(), false, HOUR, now),
            staleness(&old, Ownership::default(), HOUR, now),
            "otherwise the one rule"
        );
    }

    #[test]
    fn without_a_creation_time_only_expiry_counts() {
        let now = t("2026-01-01T12:00:00Z");
        let u = upload(None, None);
        assert_eq!(
            staleness(&u, Ownership::default(), HOUR, now),
            Staleness::Live { stale_from: None }
        );
        let u = upload(None, Some(t("2026-01-01T12:05:00Z")));
        assert_eq!(
            staleness(&u, Ownership::default(), HOUR, now),
            Staleness::Live {
                stale_from: Some(t("2026-01-01T12:05:00Z"))
            }
        );
    }
}
