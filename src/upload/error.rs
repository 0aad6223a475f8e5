//! Errors of one upload session, carrying what the supervisor needs to pick an action.

use std::io;
use std::path::PathBuf;

use crate::stac::{AssetTarget, ErrorClass, StacError, Upload, UploadId, UploadStatus};

use super::plan::TooLarge;

/// How the engine left an upload it had created when the session failed.
#[derive(Debug)]
pub enum AbortOutcome {
    /// The abort request succeeded.
    Aborted,
    /// The upload was already finished on the server (e.g. an abort whose answer was lost).
    AlreadyFinished(UploadStatus),
    /// The abort failed: the upload may still be in progress and block the asset.
    Failed(StacError),
}

impl std::fmt::Display for AbortOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortOutcome::Aborted => f.write_str("the upload was aborted"),
            AbortOutcome::AlreadyFinished(s) => {
                write!(f, "the upload was already {}", s.as_query())
            }
            AbortOutcome::Failed(e) => write!(
                f,
                "the upload could NOT be aborted and may block the asset: {e}"
            ),
        }
    }
}

/// Why an upload session did not end with the asset updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    #[error("{}: {action}: {source}", path.display())]
    File {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: {source}", path.display())]
    TooLarge { path: PathBuf, source: TooLarge },
    #[error("{}: the file changed {what}; it was not sent", path.display())]
    FileChanged { path: PathBuf, what: String },
    #[error("asset {target} is blocked by upload {} in progress since {}", upload.upload_id, since(upload))]
    InProgress {
        target: AssetTarget,
        upload: Box<Upload>,
    },
    #[error(transparent)]
    Stac(#[from] StacError),
    #[error("cancelled")]
    Cancelled,
    #[error("the upload's part URLs expire at {expires}; it was given up before they did")]
    UrlsExpiring {
        expires: chrono::DateTime<chrono::Utc>,
    },
    #[error("upload {upload_id} of {target} failed: {cause}; {abort}")]
    AfterCreate {
        target: AssetTarget,
        upload_id: UploadId,
        #[source]
        cause: Box<UploadError>,
        abort: AbortOutcome,
    },
}

fn since(u: &Upload) -> String {
    match u.created {
        Some(c) => {
            let age = chrono::Utc::now().signed_duration_since(c);
            format!(
                "{} ({} min ago)",
                c.format("%Y-%m-%d %H:%M:%S UTC"),
                age.num_minutes().max(0)
            )
        }
        None => "an unknown time".to_owned(),
    }
}

impl UploadError {
    /// The protocol-level class of the underlying server error, if the cause was one.
    pub fn class(&self) -> Option<&ErrorClass> {
        match self {
            UploadError::Stac(e) => Some(&e.class),
            UploadError::AfterCreate { cause, .. } => cause.class(),
            _ => None,
        }
    }

    /// Whether running the same session again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        self.class().is_some_and(ErrorClass::is_retryable)
    }

    /// An upload of ours that may still be in progress on the server.
    pub fn left_in_progress(&self) -> Option<&UploadId> {
        match self {
            UploadError::AfterCreate {
                upload_id,
                abort: AbortOutcome::Failed(_),
                ..
            } => Some(upload_id),
            _ => None,
        }
    }

    /// A problem with the local input rather than with the server (exit code 2 in the CLI).
    pub fn is_local_input(&self) -> bool {
        matches!(
            self,
            UploadError::File { .. } | UploadError::NotAFile { .. } | UploadError::TooLarge { .. }
        )
    }
}
