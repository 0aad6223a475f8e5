//! Whether and how a failure is tried again, decided here and nowhere else (docs/retry.md).
//!
//! `stac::error` says what a failure *is* (its [`ErrorClass`], from the status, the body or the
//! transport failure); this module says what to *do* about it: [`action`] for one call of the
//! protocol (by class and step), [`run_action`] for a whole run (the daemon's `retries`, the
//! CLI's `--retries`). Every retry loop of the crate waits with [`backoff`] (or [`waits`] for a
//! loop that sleeps by hand) and a call is retried with [`call`] / [`call_notify`].

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};
use tracing::warn;

use crate::stac::{ErrorClass, StacError, Step};
use crate::upload::UploadError;

/// The shortest first wait of every retry: below this, retries hammer a server that is already in
/// trouble (docs/protocol.md). `retry_min_delay` is refused below it, and every backoff is floored
/// at it.
pub const MIN_DELAY: Duration = Duration::from_millis(100);

/// The backoff of a retried call (see [`backoff`]).
pub type Backoff = ExponentialBuilder;

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the same request again after a backoff wait; for a run, run it again.
    Retry,
    /// The request may have taken effect with its answer lost, or the upload may already be
    /// finished: read the upload back before concluding anything.
    Reread,
    /// Another upload blocks the asset: look it up, carry it on when it holds our bytes, report
    /// it otherwise.
    FindBlocker,
    /// What was read no longer exists (the asset or the upload): forget the record of it.
    Forget,
    /// Report the error: trying again cannot help until someone changes something.
    GiveUp,
}

impl Action {
    /// Whether the same request (or run) is sent again.
    pub fn is_retry(self) -> bool {
        self == Action::Retry
    }
}

/// The table: what one call of the protocol does about an error of `class` at `step`.
pub fn action(class: &ErrorClass, step: Step) -> Action {
    match (class, step) {
        // 502/503/504, 408, 429, timeouts, resets, bodies cut short, our own deadlines, an
        // unreachable Cognito.
        (ErrorClass::Retryable, _) => Action::Retry,
        // 409 with the blocker's id, or the legacy 400 "Upload already in progress".
        (ErrorClass::AlreadyInProgress { .. }, Step::CreateUpload) => Action::FindBlocker,
        // 409 on complete or abort: an earlier try (answer lost) may have finished it.
        (ErrorClass::NotInProgress, Step::Complete | Step::Abort) => Action::Reread,
        // 500 on abort: the abort may have gone through (or S3's upload is already gone).
        (ErrorClass::ServerBroken, Step::Abort) => Action::Reread,
        // 404 (any 4xx but 401/403) reading an upload: the asset or the upload is gone.
        (ErrorClass::RequestWrong, Step::GetUpload) => Action::Forget,
        _ => Action::GiveUp,
    }
}

/// What a run does about the error that ended its session: run again ([`Action::Retry`], when
/// the policy retries) or give up. Transient server failures, a foreign upload that may finish,
/// a file being written and URLs that ran out are worth another run; 500s, wrong requests, auth
/// and local-input problems are not.
pub fn run_action(e: &UploadError) -> Action {
    match e {
        UploadError::InProgress { .. }
        | UploadError::FileChanged { .. }
        | UploadError::UrlsExpiring { .. } => Action::Retry,
        UploadError::AfterCreate { cause, .. } => run_action(cause),
        UploadError::Stac(e) => retry_or_give_up(e),
        UploadError::MaybeInProgress { cause, .. } => retry_or_give_up(cause),
        _ => Action::GiveUp,
    }
}

fn retry_or_give_up(e: &StacError) -> Action {
    if e.action().is_retry() {
        Action::Retry
    } else {
        Action::GiveUp
    }
}

/// An error whose action is known where it happened.
pub trait Classified {
    /// What the call that failed does about it.
    fn action(&self) -> Action;

    /// Whether the same call may succeed if sent again after a wait.
    fn is_retryable(&self) -> bool {
        self.action().is_retry()
    }
}

impl Classified for StacError {
    fn action(&self) -> Action {
        action(&self.class, self.step)
    }
}

/// A session's error, judged at the call that failed (a part's attempt: a local failure such as
/// a changed file is not retried there). Only a retryable server error is retried; for what a
/// whole run does, see [`run_action`].
impl Classified for UploadError {
    fn action(&self) -> Action {
        match self {
            UploadError::Stac(e) => retry_or_give_up(e),
            UploadError::MaybeInProgress { cause, .. } => retry_or_give_up(cause),
            UploadError::AfterCreate { cause, .. } => cause.action(),
            _ => Action::GiveUp,
        }
    }
}

/// The one backoff: exponential with jitter, `times` retries, the first wait at least
/// [`MIN_DELAY`] whatever `min` says, none longer than `max`.
pub fn backoff(min: Duration, max: Duration, times: u32) -> Backoff {
    ExponentialBuilder::default()
        .with_min_delay(min.max(MIN_DELAY))
        .with_max_delay(max)
        .with_max_times(times as usize)
        .with_jitter()
}

/// Waits that never run out, without jitter, for a loop that retries until it is stopped (a
/// watch re-opening its lost folder): `min`, doubling, up to `max`.
pub fn forever(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min.max(MIN_DELAY))
        .with_max_delay(max)
        .without_max_times()
        .build()
}

/// The waits of [`backoff`], for a loop that sleeps by hand (a run, which also stops for the
/// next scheduled fire and for cancellation).
pub fn waits(min: Duration, max: Duration, times: u32) -> ExponentialBackoff {
    backoff(min, max, times).build()
}

/// Runs `f`, and again after each wait of `backoff` while its error says [`Action::Retry`];
/// each retry is logged with `step`.
pub async fn call<T, E, Fut, F>(step: Step, backoff: Backoff, f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Classified + Display,
{
    call_notify(step, backoff, f, |_, _| {}).await
}

/// [`call`], telling `on_retry` of each failure that is tried again and the wait before it.
pub async fn call_notify<T, E, Fut, F>(
    step: Step,
    backoff: Backoff,
    f: F,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Classified + Display,
{
    f.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.is_retryable())
        .notify(|e, wait| {
            warn!(%step, error = %e, wait_ms = wait.as_millis() as u64, "{step} failed, trying again");
            on_retry(e, wait);
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::stac::{AssetTarget, PartNumber, UploadId};
    use crate::upload::AbortOutcome;

    const STEPS: [Step; 12] = [
        Step::CreateUpload,
        Step::ListUploads,
        Step::GetUpload,
        Step::ListParts,
        Step::PutPart(PartNumber(1)),
        Step::Complete,
        Step::Abort,
        Step::ReadAsset,
        Step::ReadItem,
        Step::CreateItem,
        Step::CreateAsset,
        Step::Login,
    ];

    /// docs/retry.md, "By class and step": every class at every step.
    #[test]
    fn every_class_maps_to_the_documented_action() {
        for step in STEPS {
            let expect = |class: &ErrorClass| match class {
                ErrorClass::Retryable => Action::Retry,
                ErrorClass::AlreadyInProgress { .. } if step == Step::CreateUpload => {
                    Action::FindBlocker
                }
                ErrorClass::NotInProgress if matches!(step, Step::Complete | Step::Abort) => {
                    Action::Reread
                }
                ErrorClass::ServerBroken if step == Step::Abort => Action::Reread,
                ErrorClass::RequestWrong if step == Step::GetUpload => Action::Forget,
                _ => Action::GiveUp,
            };
            let classes = [
                ErrorClass::Retryable,
                ErrorClass::AlreadyInProgress { upload_id: None },
                ErrorClass::AlreadyInProgress {
                    upload_id: Some(UploadId("u".into())),
                },
                ErrorClass::NotInProgress,
                ErrorClass::RequestWrong,
                ErrorClass::ServerBroken,
                ErrorClass::Auth,
                ErrorClass::UrlRejected { expired: true },
                ErrorClass::UrlRejected { expired: false },
            ];
            for class in &classes {
                assert_eq!(
                    action(class, step),
                    expect(class),
                    "{} at {step}",
                    class.name()
                );
            }
        }
        // Spelled out, the rows of the table.
        assert_eq!(action(&ErrorClass::Retryable, Step::Abort), Action::Retry);
        assert_eq!(
            action(&ErrorClass::NotInProgress, Step::PutPart(PartNumber(2))),
            Action::GiveUp,
            "S3's NoSuchUpload on a part: the upload is gone"
        );
        assert_eq!(
            action(&ErrorClass::ServerBroken, Step::Complete),
            Action::GiveUp
        );
        assert_eq!(action(&ErrorClass::Auth, Step::Login), Action::GiveUp);
        assert_eq!(
            action(&ErrorClass::RequestWrong, Step::ListParts),
            Action::GiveUp
        );
    }

    fn stac(class: ErrorClass, step: Step) -> StacError {
        StacError {
            step,
            method: "POST",
            url: "http://h/x".into(),
            status: None,
            description: "x".into(),
            class,
            source: None,
        }
    }

    fn target() -> AssetTarget {
        AssetTarget {
            collection: "c".into(),
            item: Some("i".into()),
            asset: "a.zip".into(),
        }
    }

    fn after_create(cause: UploadError) -> UploadError {
        UploadError::AfterCreate {
            target: target(),
            upload_id: UploadId("u".into()),
            cause: Box::new(cause),
            abort: AbortOutcome::Aborted,
        }
    }

    /// docs/retry.md, "A session's error": the call level (a part's attempt, `is_retryable`) and
    /// the run level (`retries` of a job, `--retries`).
    #[test]
    fn upload_errors_map_to_the_documented_actions() {
        let gateway = || UploadError::Stac(stac(ErrorClass::Retryable, Step::Complete));
        let broken = || UploadError::Stac(stac(ErrorClass::ServerBroken, Step::Abort));
        let changed = || UploadError::FileChanged {
            path: PathBuf::from("f"),
            what: "x".into(),
        };
        let cases: Vec<(UploadError, Action, Action)> = vec![
            (gateway(), Action::Retry, Action::Retry),
            (broken(), Action::GiveUp, Action::GiveUp),
            (
                UploadError::Stac(stac(ErrorClass::NotInProgress, Step::Complete)),
                Action::GiveUp,
                Action::GiveUp,
            ),
            (
                UploadError::Stac(stac(ErrorClass::Auth, Step::CreateUpload)),
                Action::GiveUp,
                Action::GiveUp,
            ),
            (after_create(gateway()), Action::Retry, Action::Retry),
            (after_create(broken()), Action::GiveUp, Action::GiveUp),
            (after_create(changed()), Action::GiveUp, Action::Retry),
            (changed(), Action::GiveUp, Action::Retry),
            (
                UploadError::MaybeInProgress {
                    target: target(),
                    checksum: Box::new(crate::stac::Multihash::from_hex("1220")),
                    upload_id: None,
                    cause: Box::new(stac(ErrorClass::Retryable, Step::ListUploads)),
                },
                Action::Retry,
                Action::Retry,
            ),
            (
                UploadError::InProgress {
                    target: target(),
                    upload: Box::new(crate::stac::Upload {
                        upload_id: UploadId("b".into()),
                        status: crate::stac::UploadStatus::InProgress,
                        number_parts: None,
                        created: None,
                        completed: None,
                        aborted: None,
                        urls: Vec::new(),
                        md5_parts: Vec::new(),
                        content_encoding: None,
                        checksum: None,
                    }),
                },
                Action::GiveUp,
                Action::Retry,
            ),
            (
                UploadError::UrlsExpiring {
                    expires: chrono::Utc::now(),
                    lifetime: Duration::from_secs(60),
                    sent: 0,
                    bytes: 1,
                },
                Action::GiveUp,
                Action::Retry,
            ),
            (
                UploadError::UrlsTooShort {
                    lifetime: Duration::from_secs(60),
                    usable: Duration::from_secs(50),
                    needs: Duration::from_secs(100),
                    bytes: 1,
                    rate: 1,
                },
                Action::GiveUp,
                Action::GiveUp,
            ),
            (
                UploadError::Unfreeable {
                    target: target(),
                    upload_id: UploadId("b".into()),
                    cause: Box::new(stac(ErrorClass::ServerBroken, Step::Abort)),
                },
                Action::GiveUp,
                Action::GiveUp,
            ),
            (
                UploadError::NotAFile {
                    path: PathBuf::from("d"),
                },
                Action::GiveUp,
                Action::GiveUp,
            ),
            (UploadError::Cancelled, Action::GiveUp, Action::GiveUp),
            (
                UploadError::NotRecorded {
                    what: "x",
                    source: "disk full".into(),
                },
                Action::GiveUp,
                Action::GiveUp,
            ),
        ];
        for (e, call, run) in cases {
            assert_eq!(e.action(), call, "call level: {e}");
            assert_eq!(e.is_retryable(), call.is_retry(), "{e}");
            assert_eq!(run_action(&e), run, "run level: {e}");
        }
    }

    #[test]
    fn every_backoff_is_floored_at_the_minimum() {
        let w: Vec<_> = waits(Duration::ZERO, Duration::from_secs(1), 3).collect();
        assert_eq!(w.len(), 3);
        assert!(w[0] >= MIN_DELAY, "{w:?}");
        assert!(w.iter().all(|d| *d <= Duration::from_secs(1)), "{w:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn call_retries_only_what_the_table_retries() {
        let tries = std::sync::atomic::AtomicU32::new(0);
        let b = || backoff(MIN_DELAY, MIN_DELAY, 2);
        let r: Result<(), StacError> = call(Step::Complete, b(), || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(stac(ErrorClass::Retryable, Step::Complete))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.swap(0, std::sync::atomic::Ordering::Relaxed), 3);
        let r: Result<(), StacError> = call(Step::Complete, b(), || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(stac(ErrorClass::NotInProgress, Step::Complete))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
