//! Metadata from the data (issue 23, work in progress on a branch): where a raster lies and in
//! which CRS, read from its header only, and its footprint in WGS84.
//!
//! The TIFF structure is read with the `tiff` crate (IFDs, tags, BigTIFF, cycles in the IFD
//! chain, a cap on any tag's size); the GeoTIFF keys on top of it are ours: a few tags and a
//! key directory, nothing a crate would spare. Projections: proj4rs with the EPSG definitions
//! of crs-definitions, pure Rust (no PROJ, no GDAL in the product; GDAL is the tests' oracle).

mod footprint;
mod geotiff;

pub use footprint::{Footprint, footprint};
pub use geotiff::{Georef, read_geotiff};

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
