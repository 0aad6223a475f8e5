//! Geometries as the server stores them: GeoJSON in WGS 84, two coordinates per position. One
//! check for `[job.item_metadata]` (at load) and for a sidecar file (`item_json`, at run time).
//!
//! The server answers 500 ("Geometry has Z dimension but column does not") for a position with a
//! third coordinate, after the request may have created nothing or something: such a geometry is
//! refused here, never sent.

use serde_json::Value;

/// Checks `[west, south, east, north]` in degrees.
pub(super) fn check_bbox(values: &[f64]) -> Result<[f64; 4], String> {
    let expected = "expected bbox = [west, south, east, north] in degrees (WGS 84), e.g. [5.96, 45.82, 10.49, 47.81]";
    if values.len() == 6 {
        return Err(format!(
            "bbox has 6 numbers, a box with heights: the server stores 2-D geometries only (it answers 500 \"Geometry has Z dimension\"); {expected}"
        ));
    }
    let [w, s, e, n] = <[f64; 4]>::try_from(values)
        .map_err(|_| format!("bbox has {} numbers: {expected}", values.len()))?;
    if !((-180.0..=180.0).contains(&w) && (-180.0..=180.0).contains(&e)) {
        return Err(format!(
            "bbox longitudes {w} and {e} must lie within -180 to 180: {expected}"
        ));
    }
    if !((-90.0..=90.0).contains(&s) && (-90.0..=90.0).contains(&n)) {
        return Err(format!(
            "bbox latitudes {s} and {n} must lie within -90 to 90: {expected}"
        ));
    }
    if w >= e || s >= n {
        return Err(format!(
            "bbox [{w}, {s}, {e}, {n}] is empty: west must be less than east and south less than north; {expected}"
        ));
    }
    Ok([w, s, e, n])
}

/// How a geometry is written in a job file, for messages.
pub(super) const EXPECTED_TOML: &str = "expected a GeoJSON geometry such as { type = \"Polygon\", coordinates = [[[w, s], [e, s], [e, n], [w, n], [w, s]]] }, or bbox instead";

/// How a geometry is written in JSON, for messages.
pub(super) const EXPECTED_JSON: &str = "expected a GeoJSON geometry such as {\"type\": \"Polygon\", \"coordinates\": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}, or bbox instead";

/// Checks a GeoJSON geometry and returns its bounding box; `expected` says how one is written
/// where it came from ([`EXPECTED_TOML`], [`EXPECTED_JSON`]).
pub(super) fn geometry_bbox(geometry: &Value, expected: &str) -> Result<[f64; 4], String> {
    if let Some(key) = geometry.as_object().and_then(|o| {
        o.keys()
            .find(|k| !matches!(k.as_str(), "type" | "coordinates"))
    }) {
        return Err(format!("unexpected key {key:?} in geometry: {expected}"));
    }
    let kind = geometry
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("geometry has no type: {expected}"))?;
    // (nesting of the coordinates above a position, fewest positions in a line, closed rings)
    let (depth, min_line, rings) = match kind {
        "Point" => (0, 1, false),
        "MultiPoint" => (1, 1, false),
        "LineString" => (1, 2, false),
        "MultiLineString" => (2, 2, false),
        "Polygon" => (2, 4, true),
        "MultiPolygon" => (3, 4, true),
        other => {
            return Err(format!(
                "geometry type {other:?} is not supported: expected Point, MultiPoint, LineString, MultiLineString, Polygon or MultiPolygon"
            ));
        }
    };
    let coordinates = geometry
        .get("coordinates")
        .ok_or_else(|| format!("{kind} has no coordinates: {expected}"))?;
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    walk_coordinates(coordinates, depth, min_line, rings, &mut bbox)
        .map_err(|problem| format!("{kind} coordinates: {problem}"))?;
    Ok(bbox)
}

fn walk_coordinates(
    value: &Value,
    depth: usize,
    min_line: usize,
    rings: bool,
    bbox: &mut [f64; 4],
) -> Result<(), String> {
    let list = value
        .as_array()
        .ok_or_else(|| format!("expected a list, found {value}"))?;
    if depth == 0 {
        let position: Option<Vec<f64>> = list.iter().map(Value::as_f64).collect();
        let (lon, lat) = match position.as_deref() {
            Some([lon, lat]) => (*lon, *lat),
            Some([_, _, _, ..]) => {
                return Err(format!(
                    "{value} has a third coordinate: the server stores 2-D geometries only (it answers 500 \"Geometry has Z dimension\"); expected [longitude, latitude]"
                ));
            }
            _ => {
                return Err(format!(
                    "{value} is not a position: expected [longitude, latitude]"
                ));
            }
        };
        if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
            return Err(format!(
                "{value} lies outside -180..180 / -90..90 degrees (WGS 84)"
            ));
        }
        *bbox = [
            bbox[0].min(lon),
            bbox[1].min(lat),
            bbox[2].max(lon),
            bbox[3].max(lat),
        ];
        return Ok(());
    }
    if depth == 1 && list.len() < min_line {
        return Err(format!(
            "{value} has {} position(s): expected at least {min_line}",
            list.len()
        ));
    }
    if list.is_empty() {
        return Err("an empty list: expected coordinates".to_owned());
    }
    if depth == 1 && rings && list.first() != list.last() {
        return Err(format!(
            "the ring {value} is not closed: its last position must repeat its first"
        ));
    }
    list.iter()
        .try_for_each(|v| walk_coordinates(v, depth - 1, min_line, rings, bbox))
}
