//! Whether a file is what its media type says, before anything is created on the server.
//!
//! The check follows the media type as the server knows it (service-stac's `MEDIA_TYPES`,
//! normalised): `image/tiff; application=geotiff; profile=cloud-optimized` a COG
//! ([`super::cog`]), `image/tiff; application=geotiff` a readable TIFF, `application/json` and
//! `application/geo+json` JSON that parses, `application/vnd.apache.parquet` Parquet's magic,
//! `application/zip` and every `...+zip` type (and KMZ) a zip's end record
//! ([`super::container`]). Any other type is not checked.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use super::cog::{self, Report};
use super::container;
use super::read::{Counting, READ_BUDGET, SeekBuf};

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
    let mut r = SeekBuf::new(Counting::new(file, READ_BUDGET), 16 * 1024);
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const COG: &str = "image/tiff; application=geotiff; profile=cloud-optimized";
    const GEOTIFF: &str = "image/tiff; application=geotiff";

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geo")
            .join(name)
    }

    fn check(name: &str, media_type: &str) -> Verdict {
        check_file(&fixture(name), media_type)
    }

    /// The verdict's errors, one of which contains each of `wanted`.
    #[track_caller]
    fn assert_errors(v: &Verdict, wanted: &[&str]) {
        assert!(!v.is_valid(), "{v:?}");
        for w in wanted {
            assert!(v.errors.iter().any(|e| e.contains(w)), "{w:?} not in {v:?}");
        }
    }

    #[test]
    fn gdals_cog_is_a_cog_and_small_geotiffs_are_too() {
        let v = check("utm32n_cog.tif", COG);
        assert_eq!(v.checked, Some("cloud-optimized GeoTIFF"));
        assert!(v.is_valid() && v.warnings.is_empty(), "{v:?}");
        // Small (512 px or less), IFD first: rio-cogeo calls these COGs too.
        for name in ["lv95_striped.tif", "lv03_tiled.tif", "webmerc_bigtiff.tif"] {
            let v = check(name, COG);
            assert!(v.is_valid(), "{name}: {v:?}");
        }
    }

    #[test]
    fn a_big_striped_file_is_not_a_cog() {
        let v = check("big_striped.tif", COG);
        assert_errors(&v, &["not tiled: 2000x1000 pixels in strips"]);
        assert!(
            v.warnings[0].starts_with("no overviews: 2000x1000"),
            "{v:?}"
        );
        // It is a readable GeoTIFF all the same.
        assert!(check("big_striped.tif", GEOTIFF).is_valid());
    }

    #[test]
    fn appended_overviews_are_not_a_cog() {
        let v = check("appended_overviews.tif", COG);
        assert_errors(
            &v,
            &[
                "the IFD of overview 1 (byte 2072) comes after image data",
                "The main image's first block (byte 506) comes before overview 0's (byte 2246)",
                "Overview 0's first block (byte 2246) comes before overview 1's (byte 2586)",
            ],
        );
        assert!(check("appended_overviews.tif", GEOTIFF).is_valid());
    }

    #[test]
    fn a_big_tiled_file_without_overviews_is_a_cog_with_a_warning() {
        let v = check("big_tiled_no_overviews.tif", COG);
        assert!(v.is_valid(), "{v:?}");
        assert!(
            v.warnings[0].starts_with("no overviews: 1024x1024"),
            "{v:?}"
        );
    }

    #[test]
    fn an_ifd_after_the_data_is_not_a_cog() {
        let v = check("lv95_rotated.tif", COG);
        assert_errors(
            &v,
            &["the first IFD is at byte 392", "comes after image data"],
        );
        assert!(check("lv95_rotated.tif", GEOTIFF).is_valid());
    }

    #[test]
    fn damaged_files_are_refused_as_cog_and_as_geotiff() {
        for (name, why) in [
            ("truncated_cog.tif", "(truncated)"),
            ("looping_ifds.tif", "the IFD chain loops"),
            (
                "offset_past_end.tif",
                "the first IFD is at byte 4488, past the end",
            ),
            ("empty.tif", "an empty file (0 bytes)"),
        ] {
            for t in [COG, GEOTIFF] {
                assert_errors(&check(name, t), &[why]);
            }
        }
    }

    #[test]
    fn a_cog_whose_overviews_are_in_an_ovr_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tif");
        std::fs::copy(fixture("utm32n_cog.tif"), &path).unwrap();
        assert!(check_file(&path, COG).is_valid());
        std::fs::write(dir.path().join("a.tif.ovr"), b"II*\0").unwrap();
        assert_errors(
            &check_file(&path, COG),
            &["a.tif.ovr, which is not uploaded"],
        );
    }

    #[test]
    fn json_geojson_parquet_and_zip_by_their_media_types() {
        let ok = [
            ("bern.geojson", "application/geo+json", "GeoJSON"),
            ("bern.geojson", "application/json", "JSON"),
            ("list.json", "application/json", "JSON"),
            ("table.parquet", "application/vnd.apache.parquet", "Parquet"),
            ("archive.zip", "application/zip", "zip"),
            ("archive.zip", "application/x.geojson+zip", "zip"),
            (
                "archive.zip",
                "application/x.interlis+zip; version=2.4",
                "zip",
            ),
        ];
        for (name, t, checked) in ok {
            let v = check(name, t);
            assert_eq!(v.checked, Some(checked), "{name} as {t}");
            assert!(v.is_valid(), "{name} as {t}: {v:?}");
        }
        let bad = [
            (
                "list.json",
                "application/geo+json",
                "the top level is not an object",
            ),
            ("truncated.json", "application/json", "the JSON ends early"),
            (
                "truncated.parquet",
                "application/vnd.apache.parquet",
                "does not end with PAR1",
            ),
            (
                "truncated.zip",
                "application/zip",
                "no end-of-central-directory record",
            ),
            (
                "utm32n_cog.tif",
                "application/zip",
                "no end-of-central-directory record",
            ),
            ("archive.zip", COG, "not a TIFF"),
        ];
        for (name, t, why) in bad {
            assert_errors(&check(name, t), &[why]);
        }
    }

    #[test]
    fn parameters_decide_and_unknown_types_are_not_checked() {
        // As written, not normalised: parameters in another order, other spacing and case.
        let v = check(
            "big_striped.tif",
            "Image/TIFF;profile=cloud-optimized;  application=geotiff",
        );
        assert_eq!(v.checked, Some("cloud-optimized GeoTIFF"));
        assert!(!v.is_valid());
        for t in [
            "image/tiff",
            "text/plain",
            "application/x-hdf5",
            "not a media type",
        ] {
            let v = check("empty.tif", t);
            assert_eq!((v.checked, v.is_valid()), (None, true), "{t}");
        }
        let v = check_file(Path::new("/nonexistent/x.tif"), GEOTIFF);
        assert_errors(&v, &["cannot read /nonexistent/x.tif"]);
    }

    #[test]
    fn a_verdict_reads_a_few_kilobytes() {
        let (v, read) = check_file_counting(&fixture("utm32n_cog.tif"), COG);
        assert!(v.is_valid());
        // The whole 3 KB header and data, once: seeks inside the buffer read nothing more.
        assert_eq!(read, 3029);
    }
}
