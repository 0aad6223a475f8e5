//! Whether a file is what its media type says, before anything is created on the server.
//!
//! The check follows the media type as the server knows it (service-stac's `MEDIA_TYPES`,
//! normalised): `image/tiff; application=geotiff; profile=cloud-optimized` a COG
//! ([`super::cog`]), `image/tiff; application=geotiff` a readable TIFF, `application/json` and
//! `application/geo+json` JSON that parses, `application/vnd.apache.parquet` Parquet's magic,
//! `application/zip` and every `...+zip` type (and KMZ) a zip's end record
//! ([`super::container`]). Any other type is not checked.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use super::cog::{self, Report};
use super::container;
use super::read::{Counting, READ_BUDGET};

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
    check_file_counting(path, media_type).0
}

/// [`check_file`], and the bytes it read from the file (for `inspect` and the benches).
pub fn check_file_counting(path: &Path, media_type: &str) -> (Verdict, u64) {
    let mut verdict = Verdict {
        media_type: media_type.to_owned(),
        checked: None,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let Some(check) = Check::for_media_type(media_type) else {
        return (verdict, 0);
    };
    verdict.checked = Some(check.name());
    let opened = File::open(path).and_then(|f| Ok((f.metadata()?.len(), f)));
    let (len, file) = match opened {
        Ok(v) => v,
        Err(e) => {
            verdict
                .errors
                .push(format!("cannot read {}: {e}", path.display()));
            return (verdict, 0);
        }
    };
    // Counting under the buffer: the count is what was read from the file, the budget bounds it.
    let mut r = BufReader::with_capacity(8 * 1024, Counting::new(file, READ_BUDGET));
    let mut report = check.run(&mut r, len);
    if check == Check::Cog {
        // GDAL reads a `.ovr` next to the file as its overviews; uploaded alone, the file has
        // none (rio-cogeo: "Overviews found in external .ovr file. They should be internal").
        let mut ovr = path.as_os_str().to_owned();
        ovr.push(".ovr");
        if Path::new(&ovr).exists() {
            report.errors.push(format!(
                "its overviews are in an external file, {}, which is not uploaded with it: a COG \
                 has them inside (gdal_translate -of COG)",
                Path::new(&ovr).display()
            ));
        }
    }
    verdict.errors = report.errors;
    verdict.warnings = report.warnings;
    (verdict, r.get_ref().bytes_read())
}

/// The checks known, by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Cog,
    GeoTiff,
    Json,
    GeoJson,
    Parquet,
    Zip,
}

impl Check {
    fn for_media_type(media_type: &str) -> Option<Check> {
        let normalized = stac_client::rules::normalize_media_type(media_type)?;
        let mut parts = normalized.split("; ");
        let essence = parts.next()?;
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |name: &str| params.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        Some(match essence {
            "image/tiff" if param("application") == Some("geotiff") => {
                if param("profile") == Some("cloud-optimized") {
                    Check::Cog
                } else {
                    Check::GeoTiff
                }
            }
            "application/json" => Check::Json,
            "application/geo+json" => Check::GeoJson,
            // The server knows the first; the second is what some tools write.
            "application/vnd.apache.parquet" | "application/x-parquet" => Check::Parquet,
            // A `+zip` suffix is a zip archive (RFC 6839); KMZ is one too.
            "application/zip"
            | "application/x-zip-compressed"
            | "application/vnd.google-earth.kmz" => Check::Zip,
            e if e.ends_with("+zip") => Check::Zip,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Check::Cog => "cloud-optimized GeoTIFF",
            Check::GeoTiff => "GeoTIFF",
            Check::Json => "JSON",
            Check::GeoJson => "GeoJSON",
            Check::Parquet => "Parquet",
            Check::Zip => "zip",
        }
    }

    fn run<R: Read + Seek>(self, r: R, len: u64) -> Report {
        match self {
            Check::Cog => cog::check_cog(r, len),
            Check::GeoTiff => cog::check_geotiff(r, len),
            Check::Json => container::check_json(r, len),
            Check::GeoJson => container::check_geojson(r, len),
            Check::Parquet => container::check_parquet(r, len),
            Check::Zip => container::check_zip(r, len),
        }
    }
}
