//! Whether a file is what its media type says, before anything is created on the server.
//!
//! SKELETON (issue 23 integration point): the types are final, `check_file` is filled in by the
//! COG/media-type work.

use std::path::Path;

/// What a job does with a verdict (`validate` in a job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validate {
    /// A file that fails is refused before anything is created (the default).
    #[default]
    Strict,
    /// A file that fails is logged and counted, and published.
    Warn,
    /// No check.
    Off,
}

/// The outcome of checking one file against one media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The media type checked, as given.
    pub media_type: String,
    /// What was checked: `cloud-optimized GeoTIFF`, `GeoTIFF`, `JSON`, `GeoJSON`, `Parquet`,
    /// `zip`; `None` for a media type no check is known for (the file passes).
    pub checked: Option<&'static str>,
    /// Why the file is not what its media type says; empty when it is.
    pub errors: Vec<String>,
    /// What is allowed but worth knowing (a big tiled COG without overviews, ...).
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks `path` against `media_type` (normalised or as written: parameters such as
/// `profile=cloud-optimized` decide the check). Reads headers only, through
/// [`super::read::Counting`] with [`super::read::READ_BUDGET`]; an unreadable file is an error
/// in the verdict, never a panic.
pub fn check_file(path: &Path, media_type: &str) -> Verdict {
    let _ = path;
    Verdict {
        media_type: media_type.to_owned(),
        checked: None,
        errors: Vec::new(),
        warnings: Vec::new(),
    }
}
