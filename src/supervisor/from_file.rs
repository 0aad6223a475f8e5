//! Before anything is created: each file checked against its asset's media type (`validate`),
//! and what the job writes `"from_file"` read from the files (the item's `geometry`, an asset's
//! `proj:epsg` and `gsd`). A file that fails refuses the run: nothing is created, nothing is
//! retried (the file will not change by asking again), and the refusal names the file, the
//! media type or key, and why.
//!
//! Headers only ([`geo::read_metadata`], [`geo::media::check_file`]: a few KB of a multi-GB
//! COG), on the blocking threads, once per file and run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::job::{Job, Uploader};
use crate::config::AssetFromFile;
use crate::geo::media::{self, Validate, Verdict};
use crate::geo::{self, FileMetadata, Format};
use crate::observe::metrics;

/// What a run wants of one member's file.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    /// The asset, for messages.
    pub(super) asset: String,
    pub(super) path: PathBuf,
    /// Its asset's media type when the job knows it (its metadata): checked unless
    /// `validate = "off"`.
    pub(super) media_type: Option<String>,
    /// The asset fields read from the file.
    pub(super) fields: AssetFromFile,
    /// The item's footprint is this file's.
    pub(super) geometry: bool,
}

/// What the files gave.
#[derive(Debug, Default)]
pub(super) struct Derived {
    /// The item's footprint: a GeoJSON Polygon and its bounding box.
    pub(super) geometry: Option<(Value, [f64; 4])>,
    /// For each [`Wanted`], in order, the fields to set in its asset's body.
    pub(super) asset_fields: Vec<Map<String, Value>>,
}

impl Derived {
    /// `body` (an asset's) with the fields read for member `i`.
    pub(super) fn fill_asset(&self, i: usize, body: &mut Value) {
        if let (Some(fields), Some(body)) = (self.asset_fields.get(i), body.as_object_mut()) {
            body.extend(fields.clone());
        }
    }
}

/// A file refused before anything was created.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    pub(super) path: PathBuf,
    pub(super) reason: RefusedFor,
    /// What is wrong, naming the asset and the media type or key.
    pub(super) message: String,
}

/// The `reason` label of `stac_uploadd_files_refused_total` this module counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefusedFor {
    /// Not what its media type says (`validate = "strict"`).
    MediaType,
    /// A `"from_file"` value could not be read from it.
    Metadata,
}

impl RefusedFor {
    fn metric(self) -> metrics::FileRefusal {
        match self {
            RefusedFor::MediaType => metrics::FileRefusal::MediaType,
            RefusedFor::Metadata => metrics::FileRefusal::Metadata,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            RefusedFor::MediaType => "media_type",
            RefusedFor::Metadata => "metadata",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: refused before anything was created: {}",
            self.path.display(),
            self.message
        )
    }
}

impl Refusal {
    /// The error a one-file run ends with: a problem of the local input (`local_input`, given
    /// up at once).
    pub(super) fn upload_error(&self) -> stac_upload::UploadError {
        stac_upload::UploadError::File {
            path: self.path.clone(),
            action: "refused before anything was created",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, self.message.clone()),
        }
    }
}

/// What was read of one file.
#[derive(Debug)]
enum Inspected {
    /// Not there or not a regular file: the upload's own open reports it, unless a value had
    /// to be read from it.
    Unreadable(String),
    Read {
        verdict: Option<Verdict>,
        metadata: Option<Result<Box<FileMetadata>, String>>,
    },
}

/// The files a run has read, by path: a retry (or the alias's phase) reads none again.
pub(super) type Inspections = HashMap<PathBuf, Arc<InspectedFile>>;

/// One file's inspection, opaque outside this module.
#[derive(Debug)]
pub(super) struct InspectedFile(Inspected);

/// Whether a job reads anything of its files before a run creates something.
pub(super) fn wants_anything(w: &Wanted, validate: Validate) -> bool {
    (validate != Validate::Off && w.media_type.is_some()) || w.fields.any() || w.geometry
}

impl<U: Uploader> Job<U> {
    /// Checks and reads every wanted file (through `seen`, once per path and run), logs and
    /// counts what it finds, and returns what the bodies need; or the first refusal, logged
    /// and counted.
    pub(super) async fn read_files(
        &self,
        wanted: &[Wanted],
        seen: &mut Inspections,
    ) -> Result<Derived, Refusal> {
        let validate = self.spec.validate;
        let mut derived = Derived::default();
        for w in wanted {
            let mut fields = Map::new();
            if !wants_anything(w, validate) {
                derived.asset_fields.push(fields);
                continue;
            }
            let inspected = match seen.get(&w.path) {
                Some(i) => i.clone(),
                None => {
                    let media_type = w.media_type.clone().filter(|_| validate != Validate::Off);
                    let i = Arc::new(InspectedFile(
                        inspect(w.path.clone(), media_type, w.fields.any() || w.geometry).await,
                    ));
                    seen.insert(w.path.clone(), i.clone());
                    // Logged and counted once per file and run.
                    if let Inspected::Read {
                        verdict: Some(v), ..
                    } = &i.0
                    {
                        self.judge(w, v)?;
                    }
                    i
                }
            };
            let metadata = match &inspected.0 {
                Inspected::Unreadable(why) if w.fields.any() || w.geometry => {
                    return Err(self.refuse(w, RefusedFor::Metadata, why.clone()));
                }
                Inspected::Unreadable(_) => None,
                Inspected::Read { verdict, metadata } => {
                    // A file refused by an earlier attempt's check is refused again.
                    if let Some(v) = verdict
                        && !v.is_valid()
                        && validate == Validate::Strict
                    {
                        return Err(media_refusal(w, v));
                    }
                    metadata.as_ref()
                }
            };
            if let Some(metadata) = metadata {
                let m = metadata.as_ref().map_err(|why| {
                    self.refuse(
                        w,
                        RefusedFor::Metadata,
                        format!(
                            "{} = \"from_file\": cannot read its georeferencing: {why}",
                            keys(w)
                        ),
                    )
                })?;
                if w.geometry {
                    derived.geometry = Some((polygon(&m.footprint.ring), m.footprint.bbox));
                }
                if w.fields.proj_epsg {
                    let epsg = m.epsg.ok_or_else(|| {
                        self.refuse(
                            w,
                            RefusedFor::Metadata,
                            "\"proj:epsg\" = \"from_file\": the file names no EPSG code for its CRS".to_owned(),
                        )
                    })?;
                    fields.insert("proj:epsg".into(), epsg.into());
                }
                if w.fields.gsd {
                    let gsd = m.gsd.ok_or_else(|| {
                        self.refuse(
                            w,
                            RefusedFor::Metadata,
                            format!("gsd = \"from_file\": {}", no_gsd(m)),
                        )
                    })?;
                    fields.insert("gsd".into(), json!(gsd));
                }
            }
            derived.asset_fields.push(fields);
        }
        Ok(derived)
    }

    /// A verdict, under the job's `validate`: a refusal in strict mode, logged and counted.
    fn judge(&self, w: &Wanted, v: &Verdict) -> Result<(), Refusal> {
        let checked = v.checked.unwrap_or("nothing");
        if !v.warnings.is_empty() {
            info!(
                file = %w.path.display(),
                asset = %w.asset,
                media_type = %v.media_type,
                warnings = %v.warnings.join("; "),
                "the file is a valid {checked}, with warnings"
            );
        }
        if v.is_valid() {
            return Ok(());
        }
        match self.spec.validate {
            Validate::Strict => {
                let r = media_refusal(w, v);
                warn!(
                    file = %w.path.display(),
                    asset = %w.asset,
                    media_type = %v.media_type,
                    reason = %v.errors.join("; "),
                    "file refused: not what its media type says"
                );
                metrics::file_refused(&self.spec.name, r.reason.metric());
                Err(r)
            }
            Validate::Warn => {
                warn!(
                    file = %w.path.display(),
                    asset = %w.asset,
                    media_type = %v.media_type,
                    reason = %v.errors.join("; "),
                    "not what its media type says; published anyway (validate = \"warn\")"
                );
                metrics::media_type_warning(&self.spec.name);
                Ok(())
            }
            Validate::Off => Ok(()),
        }
    }

    /// A refusal of `w` for `reason`, logged and counted.
    fn refuse(&self, w: &Wanted, reason: RefusedFor, message: String) -> Refusal {
        let message = format!("asset {:?}: {message}", w.asset);
        warn!(file = %w.path.display(), asset = %w.asset, reason = reason.as_str(), error = %message, "file refused");
        metrics::file_refused(&self.spec.name, reason.metric());
        Refusal {
            path: w.path.clone(),
            reason,
            message,
        }
    }
}

fn media_refusal(w: &Wanted, v: &Verdict) -> Refusal {
    Refusal {
        path: w.path.clone(),
        reason: RefusedFor::MediaType,
        message: format!(
            "asset {:?}: not a valid {} as its type {:?} says: {} (validate = \"strict\")",
            w.asset,
            v.checked.unwrap_or("file"),
            v.media_type,
            v.errors.join("; ")
        ),
    }
}

/// The keys a file was read for, for messages.
fn keys(w: &Wanted) -> String {
    let mut k = Vec::new();
    if w.geometry {
        k.push("geometry");
    }
    if w.fields.proj_epsg {
        k.push("\"proj:epsg\"");
    }
    if w.fields.gsd {
        k.push("gsd");
    }
    k.join(", ")
}

/// Why a file has no pixel size in metres (never guessed).
fn no_gsd(m: &FileMetadata) -> String {
    if m.format != Format::GeoTiff {
        return "the file is not a raster: it has no pixel size".to_owned();
    }
    let Some(code) = m.epsg else {
        return "the file names no CRS, so its pixel size has no unit".to_owned();
    };
    let def = u16::try_from(code)
        .ok()
        .and_then(crs_definitions::from_code);
    match def {
        Some(d) if d.proj4.contains("+proj=longlat") => {
            format!("its CRS EPSG:{code} is geographic: its pixels are in degrees, not metres")
        }
        Some(d) if !d.proj4.contains("+units=m") => {
            format!("its CRS EPSG:{code} is not in metres")
        }
        Some(_) => "its grid is rotated or its pixels are not square: no one pixel size".to_owned(),
        None => format!("its CRS EPSG:{code} is not one this build knows"),
    }
}

/// A footprint ring as a GeoJSON Polygon, two coordinates per position.
fn polygon(ring: &[[f64; 2]]) -> Value {
    json!({ "type": "Polygon", "coordinates": [ring] })
}

/// Reads what is wanted of `path` on a blocking thread: `media_type`'s verdict, and the
/// metadata when `metadata`.
async fn inspect(path: PathBuf, media_type: Option<String>, metadata: bool) -> Inspected {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || inspect_blocking(&path, media_type.as_deref(), metadata))
        .await
        .unwrap_or_else(|e| {
            Inspected::Unreadable(format!("the read of {shown} was cut short: {e}"))
        })
}

fn inspect_blocking(path: &Path, media_type: Option<&str>, metadata: bool) -> Inspected {
    // Not opened before it is known to be a regular file: a FIFO must not hang the run.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Inspected::Unreadable("not a regular file".to_owned()),
        Err(e) => return Inspected::Unreadable(format!("cannot read it: {e}")),
    }
    Inspected::Read {
        verdict: media_type.map(|t| media::check_file(path, t)),
        metadata: metadata.then(|| {
            geo::read_metadata(path)
                .map(Box::new)
                .map_err(|e| e.to_string())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geo")
            .join(name)
    }

    #[test]
    fn a_footprint_is_a_closed_2d_polygon() {
        let m = geo::read_metadata(&fixture("lv95_striped.tif")).expect("readable");
        let p = polygon(&m.footprint.ring);
        assert_eq!(p["type"], "Polygon");
        let ring = p["coordinates"][0].as_array().expect("a ring");
        assert!(ring.len() >= 4);
        assert_eq!(ring.first(), ring.last());
        assert!(
            ring.iter()
                .all(|pos| pos.as_array().map(Vec::len) == Some(2))
        );
    }

    #[test]
    fn a_missing_file_is_unreadable_without_opening_it() {
        let i = inspect_blocking(Path::new("/nonexistent/x.tif"), Some("image/tiff"), true);
        assert!(matches!(i, Inspected::Unreadable(why) if why.contains("cannot read")));
    }

    #[test]
    fn why_a_file_has_no_gsd() {
        let m = geo::read_metadata(&fixture("wgs84_point.tif")).expect("readable");
        assert_eq!(m.gsd, None);
        assert!(no_gsd(&m).contains("geographic"), "{}", no_gsd(&m));
        let m = geo::read_metadata(&fixture("lv95_rotated.tif")).expect("readable");
        assert_eq!(m.gsd, None);
        assert!(no_gsd(&m).contains("rotated"), "{}", no_gsd(&m));
    }
}
