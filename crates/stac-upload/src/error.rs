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
    /// Not tried: the observer said this process may no longer act on the upload (its lease
    /// in a cluster lapsed, see [`crate::UploadObserver::may_send`]); it is left in progress
    /// for whoever took over the process's work.
    Handed,
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
            AbortOutcome::Handed => f.write_str(
                "the upload was left in progress for the instance that takes over this one's work",
            ),
        }
    }
}

/// Why an upload session did not end with the asset updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The local file could not be opened, read, seeked or compressed.
    #[error("{}: {action}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed, for the message ("cannot read", "open", ...).
        action: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// The path exists but is not a regular file (a directory, a socket, ...).
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// An id the server would refuse, found before anything was sent.
    #[error("{what} id {id:?} would be refused by the server: {problem}")]
    InvalidTarget {
        /// Which id: "collection", "item" or "asset".
        what: &'static str,
        /// The id as given.
        id: String,
        /// Which of the server's rules it breaks.
        problem: String,
    },
    /// The file (compressed, when it is) needs more parts than one upload may have.
    #[error("{}: {source}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, against the limit.
        source: TooLarge,
    },
    /// The file's size, times or inode moved between its digest and a part: what was hashed is
    /// not what would be sent.
    #[error("{}: the file changed {what}; it was not sent", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// When the change was seen, and what moved.
        what: String,
    },
    /// An interrupted upload that cannot be carried on, for a reason other than the file.
    #[error("{}: the upload cannot be resumed: {reason}", path.display())]
    NotResumable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be carried on.
        reason: String,
    },
    /// Another upload is in progress on the asset, not one of ours with the same content: the
    /// supervisor's stale-upload rule decides whether to abort it.
    #[error("asset {target} is blocked by upload {} in progress since {}", upload.upload_id, since(upload))]
    InProgress {
        /// The blocked asset.
        target: AssetTarget,
        /// The upload in progress, as the server describes it.
        upload: Box<Upload>,
    },
    /// A call to the STAC API failed (after its retries).
    #[error(transparent)]
    Stac(#[from] StacError),
    /// The session's cancellation token fired (the run was stopped) before it finished.
    #[error("cancelled")]
    Cancelled,
    /// The observer said this process may no longer send (see
    /// [`crate::UploadObserver::may_send`]): nothing more was sent, not even an abort.
    #[error("stopped: this instance no longer holds its lease, so it sends nothing more")]
    Fenced,
    /// The part URLs were about to expire with parts still unsent: the session gave up on them.
    #[error(
        "the upload's part URLs live {} and expire at {expires}; it was given up before they did, with {} of {} stored: the server's URL lifetime is too short for this file at the rate reached",
        humantime::format_duration(ceil_secs(*lifetime)), ByteSize(*sent), ByteSize(*bytes)
    )]
    UrlsExpiring {
        /// When the part URLs expire.
        expires: chrono::DateTime<chrono::Utc>,
        /// How long the part URLs live from the upload's creation.
        lifetime: std::time::Duration,
        /// Bytes stored by this session before it stopped.
        sent: u64,
        /// Bytes there were to send.
        bytes: u64,
    },
    /// At the bandwidth limit, the parts cannot be sent before their URLs expire: found before
    /// any part was sent.
    #[error(
        "the upload's part URLs live {} ({} usable before they expire), but sending {} at the bandwidth limit of {}/s needs {}: raise the limit, or the server's URL lifetime, or upload a smaller file",
        humantime::format_duration(ceil_secs(*lifetime)), humantime::format_duration(round_secs(*usable)), ByteSize(*bytes), ByteSize(*rate), humantime::format_duration(round_secs(*needs))
    )]
    UrlsTooShort {
        /// How long the part URLs live from the upload's creation.
        lifetime: std::time::Duration,
        /// The part of that lifetime left for sending, with a margin.
        usable: std::time::Duration,
        /// The time sending the parts at `rate` takes.
        needs: std::time::Duration,
        /// Bytes there were to send.
        bytes: u64,
        /// The slowest bandwidth limit, in bytes per second.
        rate: u64,
    },
    /// A stale upload blocks the asset, and its abort answered NoSuchUpload: no client can free
    /// the asset, only the service's operators.
    #[error(
        "asset {target} is blocked for good by upload {upload_id}: the server holds it as in progress but its S3 multipart upload is gone (abort answered NoSuchUpload), so no client can free the asset; only the service's operators can clear that upload record ({cause})"
    )]
    Unfreeable {
        /// The blocked asset.
        target: AssetTarget,
        /// The upload that blocks it.
        upload_id: UploadId,
        /// The abort's error.
        cause: Box<StacError>,
    },
    /// A create's answer was lost and the lookup that would tell whether it started an upload
    /// failed: an upload of ours may be in progress.
    #[error(
        "{target}: a create's answer was lost and the server could not be asked whether it started an upload, so an upload of this file ({}, file:checksum {checksum}) may be in progress and block the asset; a later run finds it by its checksum and carries it on or aborts it ({cause})",
        upload_id.as_ref().map_or_else(|| "id unknown".to_owned(), |id| format!("upload {id}"))
    )]
    MaybeInProgress {
        /// The asset the create was for.
        target: AssetTarget,
        /// The multihash (`file:checksum`) the create declared: how a later run finds the upload.
        checksum: Box<stac_client::Multihash>,
        /// The id of the upload that may block the asset, when the server named it.
        upload_id: Option<UploadId>,
        /// The lookup's error.
        cause: Box<StacError>,
    },
    /// The state store could not make a write-ahead record durable.
    #[error("cannot record {what} in the state store: {source}")]
    NotRecorded {
        /// What was to be recorded, for the message.
        what: &'static str,
        /// The state store's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The session failed after its upload was created; `abort` says how the upload was left.
    #[error("upload {upload_id} of {target} failed: {cause}; {abort}")]
    AfterCreate {
        /// The asset uploaded to.
        target: AssetTarget,
        /// The upload the session created (or adopted).
        upload_id: UploadId,
        /// Why the session failed.
        #[source]
        cause: Box<UploadError>,
        /// Whether the upload was aborted, so whether it still blocks the asset.
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
                abort: AbortOutcome::Failed(_) | AbortOutcome::Handed,
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
