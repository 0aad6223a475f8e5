//! Whether and how a failure is tried again, decided here and nowhere else (docs/retry.md).
//!
//! `stac::error` says what a failure *is* (its [`ErrorClass`], from the status, the body or the
//! transport failure); this module says what to *do* about it: [`action`] for one call of the
//! protocol (by class and step); what a whole run does about a session's error is decided beside
//! that error (`stac_upload::UploadError::run_action`), from these actions. Every retry loop of the crate waits with [`backoff`] (or [`waits`] for a
//! loop that sleeps by hand) and a call is retried with [`call`] / [`call_notify`].

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};
use tracing::warn;

use crate::{ErrorClass, StacError, Step};

/// The shortest first wait of every retry: below this, retries hammer a server that is already in
/// trouble (docs/protocol.md). `retry_min_delay` is refused below it, and every backoff is floored
/// at it.
pub const MIN_DELAY: Duration = Duration::from_millis(100);

/// The backoff of a retried call (see [`backoff`]): its waits, the longest wait it allows (the
/// cap a server's `Retry-After` is held to) and the deadline no wait may reach past.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    waits: ExponentialBuilder,
    cap: Duration,
    deadline: Option<tokio::time::Instant>,
}

impl Backoff {
    /// The same backoff, whose waits must end before `deadline` (the run's).
    pub fn until(self, deadline: Option<tokio::time::Instant>) -> Self {
        Self { deadline, ..self }
    }
}

/// Why a call is not retried although its class says Retry: the server asked for a longer
/// wait than the retry policy's cap, or for one that ends past the run's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitRefused {
    /// What the server asked for (`Retry-After`).
    pub asked: Duration,
    /// The limit it passed.
    pub limit: Duration,
    /// Which limit: `retry_max_delay` or the run's deadline.
    pub what: &'static str,
}

impl Display for WaitRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server asked to retry after {}, longer than {} ({}): not retried",
            humantime::format_duration(self.asked),
            self.what,
            humantime::format_duration(round_ms(self.limit))
        )
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// The wait before the next try of a call: retry after `backoff` — or after the server's
/// `Retry-After` when it asks for longer. A `Retry-After` past `cap` (the policy's
/// `retry_max_delay`) or reaching past what is `left` of the run is refused: the call gives up
/// and says what the server asked for.
pub fn retry_wait(
    backoff: Duration,
    retry_after: Option<Duration>,
    cap: Duration,
    left: Option<Duration>,
) -> Result<Duration, WaitRefused> {
    let Some(asked) = retry_after else {
        return Ok(backoff);
    };
    if asked > cap {
        return Err(WaitRefused {
            asked,
            limit: cap,
            what: "retry_max_delay",
        });
    }
    let wait = backoff.max(asked);
    if let Some(left) = left
        && wait >= left
    {
        return Err(WaitRefused {
            asked,
            limit: left,
            what: "the time left before the run's deadline",
        });
    }
    Ok(wait)
}

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

/// An error whose action is known where it happened.
pub trait Classified {
    /// What the call that failed does about it.
    fn action(&self) -> Action;

    /// Whether the same call may succeed if sent again after a wait.
    fn is_retryable(&self) -> bool {
        self.action().is_retry()
    }

    /// The wait the server asked for before the next try (`Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// Tells the error it is given up because the wait the server asked for was refused.
    fn wait_refused(&mut self, _why: WaitRefused) {}
}

impl Classified for StacError {
    fn action(&self) -> Action {
        action(&self.class, self.step)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after.map(|s| Duration::from_secs(u64::from(s)))
    }

    fn wait_refused(&mut self, why: WaitRefused) {
        self.description = format!("{}; {why}", self.description);
    }
}

/// The one backoff: exponential with jitter, `times` retries, the first wait at least
/// [`MIN_DELAY`] whatever `min` says, none longer than `max`.
pub fn backoff(min: Duration, max: Duration, times: u32) -> Backoff {
    Backoff {
        waits: ExponentialBuilder::default()
            .with_min_delay(min.max(MIN_DELAY))
            .with_max_delay(max)
            .with_max_times(times as usize)
            .with_jitter(),
        cap: max,
        deadline: None,
    }
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
    backoff(min, max, times).waits.build()
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
/// The wait is the backoff's, or the server's `Retry-After` when it asks for longer
/// ([`retry_wait`]); a `Retry-After` past the backoff's cap or deadline ends the retries, and
/// the error says what the server asked for.
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
    // Held across awaits of a future that must be Send: a mutex, never contended.
    let refused = std::sync::Mutex::new(None);
    let result = f
        .retry(backoff.waits)
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.is_retryable())
        .adjust(|e, next| {
            let left = backoff
                .deadline
                .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            match retry_wait(next?, e.retry_after(), backoff.cap, left) {
                Ok(wait) => Some(wait),
                Err(why) => {
                    *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    None
                }
            }
        })
        .notify(|e, wait| {
            let wait_ms = wait.as_millis() as u64;
            match e.retry_after() {
                Some(asked) => {
                    let retry_after = humantime::format_duration(asked);
                    warn!(%step, error = %e, wait_ms, %retry_after, "{step} failed, trying again");
                }
                None => warn!(%step, error = %e, wait_ms, "{step} failed, trying again"),
            }
            on_retry(e, wait);
        })
        .await;
    result.map_err(|mut e| {
        if let Some(why) = refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
            e.wait_refused(why);
        }
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PartNumber, UploadId};

    const STEPS: [Step; 16] = [
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
        Step::DeleteItem,
        Step::ListItems,
        Step::ListAssets,
        Step::DeleteAsset,
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
            retry_after: None,
            source: None,
        }
    }

    #[test]
    fn a_retry_waits_at_least_what_the_server_asked_for() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(retry_wait(ms(400), None, s(20), None), Ok(ms(400)));
        assert_eq!(retry_wait(ms(400), Some(s(2)), s(20), None), Ok(s(2)));
        assert_eq!(
            retry_wait(s(3), Some(s(2)), s(20), None),
            Ok(s(3)),
            "the backoff's wait when it is the longer"
        );
        assert_eq!(
            retry_wait(ms(400), Some(s(2)), s(20), Some(s(60))),
            Ok(s(2))
        );
    }

    #[test]
    fn a_retry_after_past_the_cap_or_the_deadline_is_refused_and_said() {
        let s = Duration::from_secs;
        let capped = retry_wait(s(1), Some(s(30)), s(20), None).unwrap_err();
        assert_eq!((capped.asked, capped.limit), (s(30), s(20)));
        assert_eq!(
            capped.to_string(),
            "the server asked to retry after 30s, longer than retry_max_delay (20s): not retried"
        );
        let late = retry_wait(s(1), Some(s(10)), s(20), Some(s(5))).unwrap_err();
        assert_eq!((late.asked, late.limit), (s(10), s(5)));
        assert!(late.to_string().contains("run's deadline"), "{late}");

        let mut e = stac(ErrorClass::Retryable, Step::CreateUpload);
        e.retry_after = Some(30);
        e.wait_refused(capped);
        assert!(
            e.to_string()
                .contains("the server asked to retry after 30s"),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_gives_up_when_the_server_asks_for_more_than_the_cap() {
        let tries = std::sync::atomic::AtomicU32::new(0);
        let b = backoff(Duration::from_millis(100), Duration::from_secs(5), 3);
        let e = call(Step::CreateUpload, b, || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut e = stac(ErrorClass::Retryable, Step::CreateUpload);
            e.retry_after = Some(60);
            Err::<(), _>(e)
        })
        .await
        .unwrap_err();
        assert_eq!(tries.into_inner(), 1, "not retried");
        assert!(e.to_string().contains("retry after 1m"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_sleeps_the_retry_after_it_was_asked_for() {
        let started = tokio::time::Instant::now();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let b = backoff(Duration::from_millis(100), Duration::from_secs(5), 3);
        call(Step::CreateUpload, b, || async {
            if tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                let mut e = stac(ErrorClass::Retryable, Step::CreateUpload);
                e.retry_after = Some(3);
                return Err(e);
            }
            Ok(())
        })
        .await
        .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(3));
    }

    /// A `Write` into a shared buffer, for reading back what was logged.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_retry_log_line_shows_the_servers_retry_after() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            rt.block_on(async {
                let tries = std::sync::atomic::AtomicU32::new(0);
                let b = backoff(Duration::from_millis(100), Duration::from_secs(5), 3);
                call(Step::CreateUpload, b, || async {
                    if tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                        let mut e = stac(ErrorClass::Retryable, Step::CreateUpload);
                        e.retry_after = Some(2);
                        return Err(e);
                    }
                    Ok(())
                })
                .await
                .unwrap();
            })
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("retry_after=2s"), "{text}");
        assert!(text.contains("wait_ms=2000"), "{text}");
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
