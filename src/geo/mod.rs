//! Metadata from the data (issue 23): where a file lies and in which CRS, read from its header
//! only, its footprint in WGS84, and whether it is what its media type says ([`media`]).
//!
//! The TIFF structure is read with the `tiff` crate (IFDs, tags, BigTIFF, cycles in the IFD
//! chain, a cap on any tag's size); the GeoTIFF keys on top of it are ours: a few tags and a
//! key directory, nothing a crate would spare. Projections: proj4rs with the EPSG definitions
//! of crs-definitions, pure Rust (no PROJ, no GDAL in the product; GDAL is the tests' oracle).

mod footprint;
mod geotiff;
pub mod media;
pub mod read;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub use footprint::{Footprint, footprint};
pub use geotiff::{Georef, read_geotiff};

/// The formats metadata is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    GeoTiff,
    GeoJson,
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
/// `.json`/`.geojson` name). Headers only, bounded by [`read::READ_BUDGET`]. A file with no CRS
/// or no georeferencing is an error naming why.
pub fn read_metadata(path: &Path) -> Result<FileMetadata, GeoError> {
    let file = File::open(path)?;
    let mut r = read::Counting::new(BufReader::with_capacity(16 * 1024, file), read::READ_BUDGET);
    let g = read_geotiff(&mut r)?;
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
        bytes_read: r.bytes_read(),
    })
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
}

#[cfg(test)]
mod oracle;
