//! `stac-uploadd inspect FILE...`: what a job would derive from each file (`geometry`,
//! `proj:epsg`, `gsd` = "from_file") and whether it is what its media type says: rio-stac and
//! `rio cogeo validate` in one command, for a person (a block per file) or a script (`--json`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::CliError;
use crate::geo::media::{self, Verdict};
use crate::geo::{self, GeoError};

/// `inspect`'s flags.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// One JSON document on stdout, `{"files": [...]}`, for scripts.
    #[arg(long)]
    pub json: bool,
    /// The media type each file is checked against, instead of the one its extension implies
    /// (.tif/.tiff: a cloud-optimized GeoTIFF; .json; .geojson; .parquet; .zip).
    #[arg(long, value_name = "TYPE")]
    pub media_type: Option<String>,
    /// The files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// The media type a file's name implies, as a job would most likely declare it.
pub(crate) fn default_media_type(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    if name.ends_with(".geo.json") {
        return Some("application/geo+json");
    }
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext {
        "tif" | "tiff" => "image/tiff; application=geotiff; profile=cloud-optimized",
        "json" => "application/json",
        "geojson" => "application/geo+json",
        "parquet" => "application/vnd.apache.parquet",
        "zip" => "application/zip",
        _ => return None,
    })
}

/// What `inspect` says of one file. Every key is always there (`null` when it does not apply),
/// so that scripts can rely on the shape.
#[derive(Debug, Serialize)]
pub(crate) struct FileReport {
    /// The path as given.
    pub(crate) file: String,
    /// `GeoTIFF`, `GeoJSON`, or `null` for a file metadata is not read from.
    pub(crate) format: Option<&'static str>,
    /// The file's size in bytes.
    pub(crate) file_size: Option<u64>,
    /// A raster's width and height in pixels.
    pub(crate) raster_size: Option<[u32; 2]>,
    /// `[west, south, east, north]` in WGS84 degrees.
    pub(crate) bbox: Option<[f64; 4]>,
    /// A GeoJSON Polygon: the footprint as `geometry = "from_file"` would send it.
    pub(crate) footprint: Option<Polygon>,
    #[serde(rename = "proj:epsg")]
    pub(crate) epsg: Option<u32>,
    /// The pixel size in metres (`gsd = "from_file"`).
    pub(crate) gsd: Option<f64>,
    /// The bytes read to learn the metadata.
    pub(crate) bytes_read: Option<u64>,
    /// The media type checked: `--media-type`, else the one the extension implies.
    pub(crate) media_type: Option<String>,
    pub(crate) verdict: VerdictReport,
    /// Why the metadata could not be read, for a file of a format it is read from (or a file
    /// that cannot be opened).
    pub(crate) error: Option<String>,
}

impl FileReport {
    /// Whether a job would take this file: its metadata readable (where there is any) and what
    /// its media type says.
    pub(crate) fn ok(&self) -> bool {
        self.error.is_none() && self.verdict.valid
    }
}

/// A GeoJSON Polygon.
#[derive(Debug, Serialize)]
pub(crate) struct Polygon {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) coordinates: [Vec<[f64; 2]>; 1],
}

/// [`Verdict`] as `inspect` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct VerdictReport {
    pub(crate) valid: bool,
    /// What was checked; `null` when no check is known for the media type (the file passes).
    pub(crate) checked: Option<&'static str>,
    pub(crate) errors: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

impl From<Verdict> for VerdictReport {
    fn from(v: Verdict) -> Self {
        Self {
            valid: v.is_valid(),
            checked: v.checked,
            errors: v.errors,
            warnings: v.warnings,
        }
    }
}

/// Inspects one file (blocking: headers are read from the disk).
pub(crate) fn inspect(path: &Path, media_type: Option<&str>) -> FileReport {
    let media_type = media_type.or_else(|| default_media_type(path));
    let verdict = match media_type {
        Some(t) => media::check_file(path, t).into(),
        None => VerdictReport {
            valid: true,
            checked: None,
            errors: Vec::new(),
            warnings: Vec::new(),
        },
    };
    let mut report = FileReport {
        file: path.display().to_string(),
        format: None,
        file_size: std::fs::metadata(path).ok().map(|m| m.len()),
        raster_size: None,
        bbox: None,
        footprint: None,
        epsg: None,
        gsd: None,
        bytes_read: None,
        media_type: media_type.map(str::to_owned),
        verdict,
        error: None,
    };
    match geo::read_metadata(path) {
        Ok(m) => {
            report.format = Some(m.format.as_str());
            report.raster_size = m.size.map(|(w, h)| [w, h]);
            report.bbox = Some(m.footprint.bbox);
            report.footprint = Some(Polygon {
                kind: "Polygon",
                coordinates: [m.footprint.ring],
            });
            report.epsg = m.epsg;
            report.gsd = m.gsd;
            report.bytes_read = Some(m.bytes_read);
        }
        // Not a format metadata is read from (a zip, a CSV): nothing to derive, nothing wrong;
        // unless it is named like a TIFF, which it then is not.
        Err(GeoError::UnknownFormat) if !tiff_name(path) => {}
        Err(e) => {
            report.format = format_of(path);
            report.error = Some(e.to_string());
        }
    }
    report
}

fn tiff_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"))
}

/// The format a file that failed to read was taken for.
fn format_of(path: &Path) -> Option<&'static str> {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .ok()?;
    if geo::is_tiff(&head[..n]) {
        Some(geo::Format::GeoTiff.as_str())
    } else if geo::is_geojson_name(path) {
        Some(geo::Format::GeoJson.as_str())
    } else {
        None
    }
}

/// One block per file, for a person.
pub(crate) fn render(r: &FileReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let esc = |s: &str| crate::observe::escape_controls(s).into_owned();
    let _ = writeln!(out, "{}", esc(&r.file));
    let none = || "-".to_owned();
    let _ = writeln!(out, "  format       {}", r.format.unwrap_or("-"));
    let _ = writeln!(
        out,
        "  size         {}{}",
        r.file_size.map_or_else(none, |s| format!("{s} bytes")),
        r.raster_size
            .map_or_else(String::new, |[w, h]| format!(", {w}x{h} pixels"))
    );
    if let Some([w, s, e, n]) = r.bbox {
        let _ = writeln!(out, "  bbox         {w:.6}, {s:.6}, {e:.6}, {n:.6} (WGS84)");
    }
    if let Some(p) = &r.footprint {
        let ring = &p.coordinates[0];
        let _ = writeln!(
            out,
            "  footprint    Polygon of {} positions, from ({:.6}, {:.6})",
            ring.len(),
            ring[0][0],
            ring[0][1]
        );
    }
    let _ = writeln!(
        out,
        "  proj:epsg    {}",
        r.epsg.map_or_else(none, |c| c.to_string())
    );
    let _ = writeln!(
        out,
        "  gsd          {}",
        r.gsd.map_or_else(none, |g| format!("{g} m"))
    );
    if let Some(b) = r.bytes_read {
        let _ = writeln!(out, "  bytes read   {b}");
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error        {}", esc(e));
    }
    let v = &r.verdict;
    let media = r.media_type.as_deref().map_or_else(none, esc);
    let outcome = match (v.checked, v.valid) {
        (None, _) => "not checked (no check known for this type)".to_owned(),
        (Some(what), true) => format!("valid {what}"),
        (Some(what), false) => format!("NOT a valid {what}"),
    };
    let _ = writeln!(out, "  media type   {media}: {outcome}");
    for e in &v.errors {
        let _ = writeln!(out, "    error: {}", esc(e));
    }
    for w in &v.warnings {
        let _ = writeln!(out, "    warning: {}", esc(w));
    }
    out
}

/// Runs `inspect`: exit 0 when every file is what its media type says and its metadata (where
/// it has any) could be read; 1 otherwise, after every file was shown.
pub(crate) async fn run_inspect(args: InspectArgs) -> Result<(), CliError> {
    let InspectArgs {
        json,
        media_type,
        files,
    } = args;
    let reports = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|f| inspect(f, media_type.as_deref()))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(CliError::failure)?;
    let text = if json {
        #[derive(Serialize)]
        struct Doc<'a> {
            files: &'a [FileReport],
        }
        let mut s =
            serde_json::to_string_pretty(&Doc { files: &reports }).map_err(CliError::failure)?;
        s.push('\n');
        s
    } else {
        reports.iter().map(render).collect::<Vec<_>>().join("\n")
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(CliError::failure)?;
    let bad = reports.iter().filter(|r| !r.ok()).count();
    if bad > 0 {
        return Err(CliError::failure(anyhow::anyhow!(
            "{bad} of {} files refused or unreadable",
            reports.len()
        )));
    }
    Ok(())
}
