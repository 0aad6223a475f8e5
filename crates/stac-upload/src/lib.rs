//! One file to one asset: plan parts, digest them in one read, create, send parts in parallel
//! streamed from disk, complete; abort what was created when that cannot succeed.
//!
//! Nothing here knows about schedules or policies: errors go up typed, and the caller decides
//! with the retry table (`stac_client::retry`) and [`UploadError::run_action`]. Depends on
//! `stac-client` only; the MD5 lanes (`md5x`) hold the workspace's only `unsafe` code.

#![warn(missing_docs)]

pub mod bandwidth;
mod classify;
pub mod compress;
mod digest;
mod error;
pub mod md5x;
mod objects;
mod plan;
mod session;
mod transfer;
mod types;

pub use digest::{DigestError, DigestOptions, FileDigest, Md5Backend, digest_file};
pub use error::{AbortOutcome, UploadError};
pub use objects::{
    NewObjects, ObjectsReport, create_item_if_missing, ensure_objects, remove_empty_item,
};
pub use plan::{
    DEFAULT_PART_SIZE, MAX_FILE_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, PartPlan, PartRange,
    TooLarge,
};
pub use session::{abort_upload, find_blocking_upload, publish_file, resume_upload, upload_file};
pub use types::{
    CompressMode, DigestCache, DigestFuture, DigestKey, Durable, FileSnapshot, RecordError,
    RecordFuture, UploadEvent, UploadObserver, UploadOptions, UploadReport,
};
