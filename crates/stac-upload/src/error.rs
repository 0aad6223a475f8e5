//! Errors of one upload session, carrying what the supervisor needs to pick an action.

use std::io;
use std::path::PathBuf;

use stac_client::{AssetTarget, ErrorClass, StacError, Upload, UploadId, UploadStatus};

use super::plan::TooLarge;
use stac_client::units::ByteSize;

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
    /// An id the server would refuse, found before anything was sent.
    #[error("{what} id {id:?} would be refused by the server: {problem}")]
    InvalidTarget {
        what: &'static str,
        id: String,
        problem: String,
    },
    #[error("{}: {source}", path.display())]
    TooLarge { path: PathBuf, source: TooLarge },
    #[error("{}: the file changed {what}; it was not sent", path.display())]
    FileChanged { path: PathBuf, what: String },
    /// An interrupted upload that cannot be carried on, for a reason other than the file.
    #[error("{}: the upload cannot be resumed: {reason}", path.display())]
    NotResumable { path: PathBuf, reason: String },
    #[error("asset {target} is blocked by upload {} in progress since {}", upload.upload_id, since(upload))]
    InProgress {
        target: AssetTarget,
        upload: Box<Upload>,
    },
    #[error(transparent)]
    Stac(#[from] StacError),
    #[error("cancelled")]
    Cancelled,
    #[error(
        "the upload's part URLs live {} and expire at {expires}; it was given up before they did, with {} of {} stored: the server's URL lifetime is too short for this file at the rate reached",
        humantime::format_duration(ceil_secs(*lifetime)), ByteSize(*sent), ByteSize(*bytes)
    )]
    UrlsExpiring {
        expires: chrono::DateTime<chrono::Utc>,
        lifetime: std::time::Duration,
        sent: u64,
        bytes: u64,
    },
    #[error(
        "the upload's part URLs live {} ({} usable before they expire), but sending {} at the bandwidth limit of {}/s needs {}: raise the limit, or the server's URL lifetime, or upload a smaller file",
        humantime::format_duration(ceil_secs(*lifetime)), humantime::format_duration(round_secs(*usable)), ByteSize(*bytes), ByteSize(*rate), humantime::format_duration(round_secs(*needs))
    )]
    UrlsTooShort {
        lifetime: std::time::Duration,
        usable: std::time::Duration,
        needs: std::time::Duration,
        bytes: u64,
        rate: u64,
    },
    #[error(
        "asset {target} is blocked for good by upload {upload_id}: the server holds it as in progress but its S3 multipart upload is gone (abort answered NoSuchUpload), so no client can free the asset; only the service's operators can clear that upload record ({cause})"
    )]
    Unfreeable {
        target: AssetTarget,
        upload_id: UploadId,
        cause: Box<StacError>,
    },
    #[error(
        "{target}: a create's answer was lost and the server could not be asked whether it started an upload, so an upload of this file ({}, file:checksum {checksum}) may be in progress and block the asset; a later run finds it by its checksum and carries it on or aborts it ({cause})",
        upload_id.as_ref().map_or_else(|| "id unknown".to_owned(), |id| format!("upload {id}"))
    )]
    MaybeInProgress {
        target: AssetTarget,
        checksum: Box<stac_client::Multihash>,
        upload_id: Option<UploadId>,
        cause: Box<StacError>,
    },
    /// The state store could not make a write-ahead record durable.
    #[error("cannot record {what} in the state store: {source}")]
    NotRecorded {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
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

/// Whole seconds, for messages (a duration of sub-second digits reads as noise).
fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs_f64().round() as u64)
}

/// Whole seconds, rounded up: URL lifetimes are whole seconds on the server, and one computed
/// from two timestamps printed to different precision comes out a fraction short.
fn ceil_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs_f64().ceil() as u64)
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
            UploadError::MaybeInProgress { cause, .. } => Some(&cause.class),
            _ => None,
        }
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
            UploadError::File { .. }
                | UploadError::NotAFile { .. }
                | UploadError::TooLarge { .. }
                | UploadError::InvalidTarget { .. }
        )
    }
}
