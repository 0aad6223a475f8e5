//! A raster's footprint in WGS84: its outline (corners, and points along each edge so that a
//! projection that bends the edges is followed), transformed with proj4rs.

use proj4rs::proj::Proj;

use super::{GeoError, Georef};

/// Points per edge, corners included: enough that a 100 km edge in a transverse Mercator
/// strays from the true curve by far less than a pixel.
const PER_EDGE: usize = 17;

/// A footprint: a closed, counter-clockwise ring of (longitude, latitude) in degrees, and its
/// bounding box `[west, south, east, north]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    pub ring: Vec<[f64; 2]>,
    pub bbox: [f64; 4],
    /// The four corners alone (upper left, upper right, lower right, lower left).
    pub corners: [[f64; 2]; 4],
}

/// The footprint of `g`, whose CRS must be known.
pub fn footprint(g: &Georef) -> Result<Footprint, GeoError> {
    let code = g.epsg.ok_or(GeoError::NoCrs)?;
    let def = crs_definitions::from_code(code).ok_or(GeoError::UnknownCrs(code))?;
    let from = Proj::from_proj_string(def.proj4)
        .map_err(|e| GeoError::Projection(format!("EPSG:{code}: {e}")))?;
    let to = Proj::from_proj_string("+proj=longlat +datum=WGS84 +no_defs")
        .map_err(|e| GeoError::Projection(e.to_string()))?;
    let (w, h) = (f64::from(g.width), f64::from(g.height));
    let to_wgs84 = |col: f64, row: f64| -> Result<[f64; 2], GeoError> {
        let (x, y) = g.model(col, row);
        let mut p = if from.is_latlong() {
            (x.to_radians(), y.to_radians(), 0.0)
        } else {
            (x, y, 0.0)
        };
        proj4rs::transform::transform(&from, &to, &mut p)
            .map_err(|e| GeoError::Projection(format!("({x}, {y}) in EPSG:{code}: {e}")))?;
        let (lon, lat) = (p.0.to_degrees(), p.1.to_degrees());
        if !lon.is_finite() || !lat.is_finite() || lat.abs() > 90.0 {
            return Err(GeoError::Projection(format!(
                "({x}, {y}) in EPSG:{code} maps to ({lon}, {lat})"
            )));
        }
        Ok([lon, lat])
    };
    // Around the grid: top edge left to right, right edge down, bottom right to left, left up.
    let corners_px = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let mut ring = Vec::with_capacity(4 * (PER_EDGE - 1) + 1);
    for k in 0..4 {
        let (a, b) = (corners_px[k], corners_px[(k + 1) % 4]);
        for s in 0..PER_EDGE - 1 {
            let f = s as f64 / (PER_EDGE - 1) as f64;
            ring.push(to_wgs84(a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1))?);
        }
    }
    let corners = [
        ring[0],
        ring[PER_EDGE - 1],
        ring[2 * (PER_EDGE - 1)],
        ring[3 * (PER_EDGE - 1)],
    ];
    // GeoJSON wants the exterior ring counter-clockwise; going round the grid in pixel order is
    // clockwise on the ground for a north-up raster (rows grow southwards), but not for every
    // transform: decide by the ring's signed area.
    if signed_area(&ring) < 0.0 {
        ring.reverse();
    }
    ring.push(ring[0]);
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for [lon, lat] in &ring {
        bbox = [
            bbox[0].min(*lon),
            bbox[1].min(*lat),
            bbox[2].max(*lon),
            bbox[3].max(*lat),
        ];
    }
    Ok(Footprint {
        ring,
        bbox,
        corners,
    })
}

/// Twice the signed area of an open ring (shoelace): positive when counter-clockwise.
fn signed_area(ring: &[[f64; 2]]) -> f64 {
    ring.iter()
        .zip(ring.iter().cycle().skip(1))
        .map(|(a, b)| a[0] * b[1] - b[0] * a[1])
        .sum()
}
