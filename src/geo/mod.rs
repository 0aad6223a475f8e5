//! Metadata from the data (issue 23): where a file lies and in which CRS, read from its header
//! only, its footprint in WGS84, and whether it is what its media type says ([`media`]).
//!
//! The TIFF structure is read with the `tiff` crate (IFDs, tags, BigTIFF, cycles in the IFD
//! chain, a cap on any tag's size); the GeoTIFF keys on top of it are ours: a few tags and a
//! key directory, nothing a crate would spare. Projections: proj4rs with the EPSG definitions
//! of crs-definitions, pure Rust (no PROJ, no GDAL in the product; GDAL is the tests' oracle).

pub mod cog;
pub mod container;
mod footprint;
mod geojson;
mod geotiff;
pub mod media;
pub mod read;

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

pub use footprint::{Footprint, footprint};
pub use geojson::MAX_GEOJSON_BYTES;
pub use geotiff::{Georef, read_geotiff};

/// The formats metadata is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    GeoTiff,
    GeoJson,
}

impl Format {
    /// Its name, for people and for `inspect --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::GeoTiff => "GeoTIFF",
            Format::GeoJson => "GeoJSON",
        }
    }
}

/// The first bytes of a TIFF: classic and BigTIFF, little- and big-endian.
const TIFF_MAGIC: [[u8; 4]; 4] = [*b"II*\0", *b"MM\0*", *b"II+\0", *b"MM\0+"];

/// Whether `head` (a file's first bytes) starts like a TIFF.
pub fn is_tiff(head: &[u8]) -> bool {
    TIFF_MAGIC.iter().any(|m| head.starts_with(m))
}

/// Whether `path` is named like a GeoJSON file (`.json`, `.geojson`, `.geo.json`, any case).
pub fn is_geojson_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json") || e.eq_ignore_ascii_case("geojson"))
}

/// What a job may derive from a file (`geometry`, `proj:epsg`, `gsd` = "from_file").
#[derive(Debug, Clone, PartialEq)]
pub struct FileMetadata {
    pub format: Format,
    /// The CRS's EPSG code; `None` when the file names none.
    pub epsg: Option<u32>,
    /// The pixel size in metres: a raster in a projected CRS whose unit is the metre, on a grid
    /// neither rotated nor with oblong pixels; `None` otherwise (never guessed).
    pub gsd: Option<f64>,
    /// Width and height in pixels (rasters).
    pub size: Option<(u32, u32)>,
    /// The footprint in WGS84.
    pub footprint: Footprint,
    /// The bytes read to learn all this.
    pub bytes_read: u64,
}

/// Reads what a job may derive from `path`: a TIFF (by its magic bytes) or GeoJSON (by a
/// `.json`/`.geojson` name). A TIFF's header only, bounded by [`read::READ_BUDGET`]; a GeoJSON
/// file whole, streamed in flat memory, up to [`MAX_GEOJSON_BYTES`]. A file with no CRS or no
/// georeferencing is an error naming why.
pub fn read_metadata(path: &Path) -> Result<FileMetadata, GeoError> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 4];
    let n = read_head(&mut file, &mut head)?;
    file.rewind()?;
    if is_tiff(&head[..n]) {
        let mut r =
            read::Counting::new(BufReader::with_capacity(16 * 1024, file), read::READ_BUDGET);
        let mut m = tiff_metadata(&mut r)?;
        m.bytes_read = r.bytes_read();
        return Ok(m);
    }
    if !is_geojson_name(path) {
        return Err(GeoError::UnknownFormat);
    }
    let len = file.metadata()?.len();
    if len > MAX_GEOJSON_BYTES {
        return Err(GeoError::GeoJson(format!(
            "{len} bytes, more than the {MAX_GEOJSON_BYTES} read for a footprint"
        )));
    }
    // serde_json reads a reader a byte at a time: the buffer goes outside the counter, so that
    // a byte costs a copy from the buffer, and the count is what the file gave.
    let mut r = BufReader::with_capacity(64 * 1024, read::Counting::new(file, MAX_GEOJSON_BYTES));
    let mut m = geojson::read_geojson(&mut r)?;
    m.bytes_read = r.get_ref().bytes_read();
    Ok(m)
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the file.
fn read_head(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The metadata of the TIFF in `r` (`bytes_read` left at 0: the caller's reader counts).
pub(crate) fn tiff_metadata<R: Read + Seek>(r: R) -> Result<FileMetadata, GeoError> {
    let g = read_geotiff(r)?;
    let footprint = footprint(&g)?;
    let gsd = match g.epsg.and_then(crs_definitions::from_code) {
        Some(def) if def.proj4.contains("+units=m") && !def.proj4.contains("+proj=longlat") => {
            g.pixel_size()
        }
        _ => None,
    };
    Ok(FileMetadata {
        format: Format::GeoTiff,
        epsg: g.epsg.map(u32::from),
        gsd,
        size: Some((g.width, g.height)),
        footprint,
        bytes_read: 0,
    })
}

/// The metadata of the GeoJSON in `r` (`bytes_read` left at 0).
pub(crate) fn geojson_metadata<R: Read>(r: R) -> Result<FileMetadata, GeoError> {
    geojson::read_geojson(r)
}

/// Why a file's georeferencing cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    #[error("not a readable TIFF: {0}")]
    Tiff(#[from] tiff::TiffError),
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "no georeferencing (neither ModelTiepoint with ModelPixelScale nor ModelTransformation)"
    )]
    NoGeoreferencing,
    #[error("no CRS (no GeoKey naming an EPSG code)")]
    NoCrs,
    #[error("EPSG:{0} is not a CRS this build knows")]
    UnknownCrs(u16),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot transform to WGS84: {0}")]
    Projection(String),
    #[error("not a readable GeoJSON: {0}")]
    GeoJson(String),
    #[error(
        "not a format metadata is read from: neither a TIFF (by its first bytes) nor GeoJSON (a \
         .json or .geojson name)"
    )]
    UnknownFormat,
}

#[cfg(test)]
mod oracle;
