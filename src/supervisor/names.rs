//! The run-time side of `name_pattern`: a file whose name does not match, whose captures
//! cannot be part of an id, or whose capture does not read as the item's time, is refused
//! before anything is created, logged and counted.

use std::path::Path;

use tracing::warn;

use super::job::{Job, Uploader};
use crate::config::{Captures, IdTemplate, JobSpec};
use crate::observe::metrics::{self, FileRefusal};
use stac_client::rules;

/// Why a file was refused by the job's `name_pattern` (for the run's error and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameRefusal(pub(super) String);

impl std::fmt::Display for NameRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl NameRefusal {
    /// As a local-input error of the file: not retried, `error_class = "local_input"`.
    pub(super) fn upload_error(&self, path: &Path) -> stac_upload::UploadError {
        stac_upload::UploadError::File {
            path: path.to_owned(),
            action: "refused by the job's name_pattern",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, self.0.clone()),
        }
    }
}

/// The captures of `file_name`, `None` when the job has no `name_pattern` or it does not match
/// (which [`refusal`] reports).
pub(crate) fn captures(spec: &JobSpec, file_name: &str) -> Option<Captures> {
    spec.name_pattern.as_ref()?.captures(file_name)
}

/// Why `file_name` cannot be published by the job, `None` when it can (or the job has no
/// `name_pattern`): the name must match, each capture an id uses must be id characters once
/// lowercased, and each time read from a capture must read.
pub(crate) fn refusal(spec: &JobSpec, file_name: &str) -> Option<String> {
    let pattern = spec.name_pattern.as_ref()?;
    let shown = crate::observe::escape_controls(file_name);
    let Some(captures) = pattern.captures(file_name) else {
        return Some(format!(
            "the name {shown:?} does not match the job's name_pattern {:?}",
            pattern.as_str()
        ));
    };
    let ids = spec
        .item
        .iter()
        .map(|t| ("item", t))
        .chain(std::iter::once(("asset", &spec.asset)))
        .chain(spec.assets.iter().map(|a| ("asset", &a.id)));
    for (key, template) in ids {
        if let Some(why) = id_capture_problem(key, template, &captures) {
            return Some(format!("the name {shown:?}: {why}"));
        }
    }
    for (key, time) in spec.item_metadata.iter().flat_map(|m| m.capture_times()) {
        if let Err(e) = time.of(Some(&captures)) {
            return Some(format!(
                "the name {shown:?} gives no {key}: {e} (format {:?})",
                time.format()
            ));
        }
    }
    None
}

/// A capture `template` uses whose value, lowercased, holds a character an id cannot.
fn id_capture_problem(key: &str, template: &IdTemplate, captures: &Captures) -> Option<String> {
    template.captures().into_iter().find_map(|name| {
        let value = captures.get(name).unwrap_or_default().to_lowercase();
        let bad = value.chars().find(|&c| !rules::is_id_char(c))?;
        Some(format!(
            "capture {name:?} is {:?}, which holds {bad:?}: {key} {:?} needs id characters ({})",
            crate::observe::escape_controls(&value),
            template.as_str(),
            rules::ID_CHARS
        ))
    })
}

impl<U: Uploader> Job<U> {
    /// [`refusal`] for the file a run publishes (a bundle's: the member its item id is
    /// rendered from), logged at warn and counted when it refuses.
    pub(super) fn refuse_name(&self, path: &Path, file_name: &str) -> Option<NameRefusal> {
        let why = refusal(&self.spec, file_name)?;
        warn!(
            job = %self.spec.name,
            file = %crate::observe::escape_controls(&path.to_string_lossy()),
            pattern = self.spec.name_pattern.as_ref().map_or("", |p| p.as_str()),
            reason = %why,
            "file refused: nothing is created for it"
        );
        metrics::file_refused(&self.spec.name, FileRefusal::NamePattern);
        Some(NameRefusal(why))
    }
}
