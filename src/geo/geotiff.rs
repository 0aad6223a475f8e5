//! A GeoTIFF's first image: its size, CRS and pixel-to-model transform, from the header.

use std::io::{Read, Seek};

use tiff::decoder::{Decoder, Limits};
use tiff::tags::Tag;

use super::GeoError;

/// GeoKey ids (GeoTIFF 1.1, section 7): the model type, the raster type, and the two CRS codes.
const GT_MODEL_TYPE: u16 = 1024;
const GT_RASTER_TYPE: u16 = 1025;
const GEOGRAPHIC_TYPE: u16 = 2048;
const PROJECTED_CS_TYPE: u16 = 3072;
/// `GTRasterTypeGeoKey` = RasterPixelIsPoint.
const PIXEL_IS_POINT: u16 = 2;
/// A key value meaning "user-defined": no EPSG code.
const USER_DEFINED: u16 = 32767;
/// The largest key directory read: 4 shorts a key, and no GeoTIFF has thousands of keys.
const MAX_KEYS: usize = 1024;

/// Where a raster lies.
#[derive(Debug, Clone, PartialEq)]
pub struct Georef {
    pub width: u32,
    pub height: u32,
    /// The CRS's EPSG code (the projected one, else the geographic one).
    pub epsg: Option<u16>,
    /// Pixel (column, row) to model (x, y), as GDAL writes it: `x = t0 + col*t1 + row*t2`,
    /// `y = t3 + col*t4 + row*t5`, with (0, 0) the outer corner of the first pixel (a
    /// PixelIsPoint raster's tiepoint is moved by half a pixel, as GDAL does by default).
    pub transform: [f64; 6],
    pub pixel_is_point: bool,
}

impl Georef {
    /// The model position of pixel corner (`col`, `row`).
    pub fn model(&self, col: f64, row: f64) -> (f64, f64) {
        let t = &self.transform;
        (
            t[0] + col * t[1] + row * t[2],
            t[3] + col * t[4] + row * t[5],
        )
    }

    /// The pixel size in CRS units when the grid is not rotated and its pixels are square
    /// enough to name one size; `None` otherwise (never guessed).
    pub fn pixel_size(&self) -> Option<f64> {
        let t = &self.transform;
        if t[2] != 0.0 || t[4] != 0.0 {
            return None;
        }
        let (x, y) = (t[1].abs(), t[5].abs());
        ((x - y).abs() <= 1e-9 * x.max(y)).then_some(x)
    }
}

/// Reads the georeferencing of the first image of a TIFF. Only the header is read, with the
/// `tiff` crate's limit on any one tag's size (1 MiB) and its check for a looping IFD chain.
pub fn read_geotiff<R: Read + Seek>(r: R) -> Result<Georef, GeoError> {
    let mut d = Decoder::new(r)?.with_limits(Limits::default());
    let (width, height) = d.dimensions()?;
    if width == 0 || height == 0 {
        return Err(GeoError::Invalid(format!(
            "an image of {width}x{height} pixels"
        )));
    }
    let keys = d
        .find_tag_unsigned_vec::<u16>(Tag::GeoKeyDirectoryTag)?
        .unwrap_or_default();
    let keys = geo_keys(&keys)?;
    let key = |id: u16| keys.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
    let pixel_is_point = key(GT_RASTER_TYPE) == Some(PIXEL_IS_POINT);
    let epsg = match key(GT_MODEL_TYPE) {
        Some(1) => key(PROJECTED_CS_TYPE),
        Some(2) => key(GEOGRAPHIC_TYPE),
        _ => key(PROJECTED_CS_TYPE).or(key(GEOGRAPHIC_TYPE)),
    }
    .filter(|c| *c != 0 && *c != USER_DEFINED);

    let doubles = |d: &mut Decoder<R>, tag| -> Result<Option<Vec<f64>>, GeoError> {
        Ok(d.find_tag(tag)?.map(|v| v.into_f64_vec()).transpose()?)
    };
    let mut transform = if let Some(m) = doubles(&mut d, Tag::ModelTransformationTag)? {
        if m.len() < 16 {
            return Err(GeoError::Invalid(format!(
                "ModelTransformation has {} values, not 16",
                m.len()
            )));
        }
        [m[3], m[0], m[1], m[7], m[4], m[5]]
    } else {
        let tie = doubles(&mut d, Tag::ModelTiepointTag)?;
        let scale = doubles(&mut d, Tag::ModelPixelScaleTag)?;
        match (tie, scale) {
            (Some(tie), Some(scale)) if tie.len() >= 6 && scale.len() >= 2 => {
                let (i, j, x, y) = (tie[0], tie[1], tie[3], tie[4]);
                let (sx, sy) = (scale[0], scale[1]);
                [x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]
            }
            _ => return Err(GeoError::NoGeoreferencing),
        }
    };
    if transform.iter().any(|v| !v.is_finite())
        || transform[1] * transform[5] - transform[2] * transform[4] == 0.0
    {
        return Err(GeoError::Invalid(
            "a degenerate pixel-to-model transform".into(),
        ));
    }
    if pixel_is_point {
        // The tiepoint names a pixel's centre: the grid's corner is half a pixel away (GDAL's
        // default, GTIFF_POINT_GEO_IGNORE=NO).
        transform[0] -= 0.5 * transform[1] + 0.5 * transform[2];
        transform[3] -= 0.5 * transform[4] + 0.5 * transform[5];
    }
    Ok(Georef {
        width,
        height,
        epsg,
        transform,
        pixel_is_point,
    })
}

/// The (key, value) pairs of a GeoKeyDirectory whose values are inline shorts (location 0);
/// keys stored in the double or ASCII params are skipped (none of ours is).
fn geo_keys(dir: &[u16]) -> Result<Vec<(u16, u16)>, GeoError> {
    if dir.is_empty() {
        return Ok(Vec::new());
    }
    let n = *dir
        .get(3)
        .ok_or_else(|| GeoError::Invalid("a GeoKeyDirectory shorter than its header".into()))?
        as usize;
    if n > MAX_KEYS || dir.len() < 4 + 4 * n {
        return Err(GeoError::Invalid(format!(
            "a GeoKeyDirectory of {n} keys in {} values",
            dir.len()
        )));
    }
    Ok(dir[4..4 + 4 * n]
        .chunks_exact(4)
        .filter(|e| e[1] == 0)
        .map(|e| (e[0], e[3]))
        .collect())
}
