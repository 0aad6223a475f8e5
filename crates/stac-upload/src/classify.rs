//! What to do about a session's error, from the retry table's actions (docs/retry.md, "A
//! session's error"): at the call that failed (a part's attempt) and for a whole run.

use std::time::Duration;

use stac_client::StacError;
use stac_client::retry::{Action, Classified, WaitRefused};

use crate::UploadError;

impl UploadError {
    /// What a run does about the error that ended its session: run again ([`Action::Retry`], when
    /// the policy retries) or give up. Transient server failures, a foreign upload that may finish,
    /// a file being written and URLs that ran out are worth another run; 500s, wrong requests, auth
    /// and local-input problems are not.
    pub fn run_action(&self) -> Action {
        match self {
            UploadError::InProgress { .. }
            | UploadError::FileChanged { .. }
            | UploadError::NotResumable { .. }
            | UploadError::UrlsExpiring { .. } => Action::Retry,
            UploadError::AfterCreate { cause, .. } => cause.run_action(),
            UploadError::Stac(e) => retry_or_give_up(e),
            UploadError::MaybeInProgress { cause, .. } => retry_or_give_up(cause),
            _ => Action::GiveUp,
        }
    }
}

fn retry_or_give_up(e: &StacError) -> Action {
    if e.action().is_retry() {
        Action::Retry
    } else {
        Action::GiveUp
    }
}

/// A session's error, judged at the call that failed (a part's attempt: a local failure such as
/// a changed file is not retried there). Only a retryable server error is retried; for what a
/// whole run does, see [`UploadError::run_action`].
impl Classified for UploadError {
    fn action(&self) -> Action {
        match self {
            UploadError::Stac(e) => retry_or_give_up(e),
            UploadError::MaybeInProgress { cause, .. } => retry_or_give_up(cause),
            UploadError::AfterCreate { cause, .. } => cause.action(),
            _ => Action::GiveUp,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            UploadError::Stac(e) => Classified::retry_after(e),
            UploadError::MaybeInProgress { cause, .. } => Classified::retry_after(cause.as_ref()),
            UploadError::AfterCreate { cause, .. } => cause.retry_after(),
            _ => None,
        }
    }

    fn wait_refused(&mut self, why: WaitRefused) {
        match self {
            UploadError::Stac(e) => e.wait_refused(why),
            UploadError::MaybeInProgress { cause, .. } => cause.wait_refused(why),
            UploadError::AfterCreate { cause, .. } => cause.wait_refused(why),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use stac_client::{AssetTarget, ErrorClass, Step, UploadId};

    use super::*;
    use crate::AbortOutcome;

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
                UploadError::NotResumable {
                    path: PathBuf::from("f"),
                    reason: "compressed".into(),
                },
                Action::GiveUp,
                Action::Retry,
            ),
            (
                UploadError::MaybeInProgress {
                    target: target(),
                    checksum: Box::new(stac_client::Multihash::from_hex("1220")),
                    upload_id: None,
                    cause: Box::new(stac(ErrorClass::Retryable, Step::ListUploads)),
                },
                Action::Retry,
                Action::Retry,
            ),
            (
                UploadError::InProgress {
                    target: target(),
                    upload: Box::new(stac_client::Upload {
                        upload_id: UploadId("b".into()),
                        status: stac_client::UploadStatus::InProgress,
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
            assert_eq!(e.run_action(), run, "run level: {e}");
        }
    }
}
