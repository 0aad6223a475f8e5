//! service-stac's `validate_geometry` (`app/stac_api/validators.py`, 900c5ed): the model
//! validator of an item's geometry.
//!
//! The server does not run it on the API path: `ItemSerializer` declares
//! `geometry = gis_serializers.GeometryField(required=True)` without the model field's
//! validators (its own comment: "when explicitely declaring fields, we need to add the
//! validation as for the field in model!", which was not done for `geometry`), so a PUT of a
//! self-intersecting polygon answers 201 there; only `full_clean()` (the admin, the model tests
//! `test_item_create_model_invalid_geometry` and `..._invalid_latitude`) refuses it. So the API
//! handlers here do not call it either (the emulator is as strict as the server, not more);
//! tests call [`validate_geometry`] on what a client stored, to hold the client to the rules
//! the server's own data model states.

use serde_json::Value;

/// Rings longer than this are not checked for self-intersection (quadratic): a footprint has
/// tens of positions, a hand-drawn outline hundreds.
const MAX_CHECKED_RING: usize = 4096;

/// The box outside of which the server logs "outside of Switzerland" (a warning only).
const BBOX_CH: [f64; 4] = [3.0, 44.0, 14.0, 50.0];

/// `validate_geometry` of a GeoJSON geometry as the API's field reads it (SRID 4326): the
/// warnings it logs when valid, or the `ValidationError` message it raises. GEOS's validity is
/// modelled as far as it is cheap: finite positions, closed rings of at least 4 positions,
/// lines of at least 2, no ring crossing itself.
pub fn validate_geometry(geometry: &Value) -> Result<Vec<String>, String> {
    let mut positions = Vec::new();
    let kind = geometry.get("type").and_then(Value::as_str).unwrap_or("");
    let coordinates = geometry.get("coordinates").unwrap_or(&Value::Null);
    let depth = match kind {
        "Point" => 0,
        "MultiPoint" | "LineString" => 1,
        "MultiLineString" | "Polygon" => 2,
        "MultiPolygon" => 3,
        other => return Err(format!("The geometry is not valid: unknown type {other:?}")),
    };
    let mut lines: Vec<Vec<[f64; 2]>> = Vec::new();
    collect(coordinates, depth, &mut positions, &mut lines)?;
    if positions.is_empty() {
        return Err(format!("The geometry is empty: {kind} EMPTY"));
    }
    let rings = matches!(kind, "Polygon" | "MultiPolygon");
    let line_kind = matches!(kind, "LineString" | "MultiLineString");
    for line in &lines {
        if rings {
            check_ring(line)?;
        } else if line_kind && line.len() < 2 {
            return Err(format!(
                "The geometry is not valid: Too few points in geometry component[{} {}]",
                line[0][0], line[0][1]
            ));
        }
    }
    let (w, s, e, n) = positions.iter().fold(
        (
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ),
        |(w, s, e, n), [x, y]| (w.min(*x), s.min(*y), e.max(*x), n.max(*y)),
    );
    if s.abs() > 90.0 || n.abs() > 90.0 {
        return Err(format!("Latitude exceeds permitted value: ({s}, {n})"));
    }
    let mut warnings = Vec::new();
    if w.abs() > 180.0 || e.abs() > 180.0 {
        warnings.push(format!("Longitude exceeds usual value range: ({w}, {e})"));
    }
    let [cw, cs, ce, cn] = BBOX_CH;
    // `within` the box: every position inside it (for a box, the same as GEOS's test).
    if !(w >= cw && e <= ce && s >= cs && n <= cn) {
        warnings.push("Location of asset is (partially) outside of Switzerland".to_owned());
    }
    Ok(warnings)
}

fn collect(
    value: &Value,
    depth: usize,
    positions: &mut Vec<[f64; 2]>,
    lines: &mut Vec<Vec<[f64; 2]>>,
) -> Result<(), String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("The geometry is not valid: {value} is not a list"))?;
    if depth == 0 {
        return match items.iter().map(Value::as_f64).collect::<Option<Vec<_>>>() {
            Some(p) if (2..=3).contains(&p.len()) && p.iter().all(|c| c.is_finite()) => {
                positions.push([p[0], p[1]]);
                Ok(())
            }
            _ => Err(format!(
                "The geometry is not valid: Invalid Coordinate {value}"
            )),
        };
    }
    if depth == 1 {
        let mut line = Vec::with_capacity(items.len());
        for i in items {
            collect(i, 0, positions, lines)?;
            line.push(*positions.last().expect("pushed above"));
        }
        if !line.is_empty() {
            lines.push(line);
        }
        return Ok(());
    }
    items
        .iter()
        .try_for_each(|i| collect(i, depth - 1, positions, lines))
}

fn check_ring(ring: &[[f64; 2]]) -> Result<(), String> {
    if ring.len() < 4 {
        return Err(format!(
            "The geometry is not valid: Too few points in geometry component[{} {}]",
            ring[0][0], ring[0][1]
        ));
    }
    if ring.first() != ring.last() {
        return Err("The geometry is not valid: the ring is not closed".to_owned());
    }
    if ring.len() > MAX_CHECKED_RING {
        return Ok(());
    }
    let segments = ring.len() - 1;
    for i in 0..segments {
        for j in i + 1..segments {
            // Neighbours share an end; the first and last segments share the ring's start.
            let adjacent = j == i + 1 || (i == 0 && j == segments - 1);
            let (a, b, c, d) = (ring[i], ring[i + 1], ring[j], ring[j + 1]);
            let crossing = if adjacent {
                // Neighbours may only touch at their shared end: not fold back over each other.
                collinear_overlap(a, b, c, d)
            } else {
                intersect(a, b, c, d)
            };
            if crossing {
                return Err(format!(
                    "The geometry is not valid: Self-intersection[{} {}]",
                    c[0], c[1]
                ));
            }
        }
    }
    Ok(())
}

fn orient(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

fn on_segment(a: [f64; 2], b: [f64; 2], p: [f64; 2]) -> bool {
    p[0] >= a[0].min(b[0])
        && p[0] <= a[0].max(b[0])
        && p[1] >= a[1].min(b[1])
        && p[1] <= a[1].max(b[1])
}

/// Whether segments ab and cd share a point.
fn intersect(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let (o1, o2, o3, o4) = (
        orient(a, b, c),
        orient(a, b, d),
        orient(c, d, a),
        orient(c, d, b),
    );
    if ((o1 > 0.0 && o2 < 0.0) || (o1 < 0.0 && o2 > 0.0))
        && ((o3 > 0.0 && o4 < 0.0) || (o3 < 0.0 && o4 > 0.0))
    {
        return true;
    }
    (o1 == 0.0 && on_segment(a, b, c))
        || (o2 == 0.0 && on_segment(a, b, d))
        || (o3 == 0.0 && on_segment(c, d, a))
        || (o4 == 0.0 && on_segment(c, d, b))
}

/// Whether two segments sharing an end lie on one line and overlap beyond that end.
fn collinear_overlap(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    if orient(a, b, c) != 0.0 || orient(a, b, d) != 0.0 {
        return false;
    }
    // Going back along the line: the dot product of the two directions is negative.
    let (u, v) = ([b[0] - a[0], b[1] - a[1]], [d[0] - c[0], d[1] - c[1]]);
    let shared_middle = b == c || a == d;
    shared_middle && u[0] * v[0] + u[1] * v[1] < 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn polygon(ring: Value) -> Value {
        json!({"type": "Polygon", "coordinates": [ring]})
    }

    #[test]
    fn a_swiss_box_is_valid_without_warnings() {
        let g = polygon(json!([
            [5.96, 45.82],
            [10.49, 45.82],
            [10.49, 47.81],
            [5.96, 47.81],
            [5.96, 45.82]
        ]));
        assert_eq!(validate_geometry(&g), Ok(vec![]));
    }

    #[test]
    fn a_self_intersecting_polygon_is_not_valid() {
        // The server's own test: test_item_create_model_invalid_geometry.
        let g = polygon(json!([
            [5.96, 45.82],
            [5.96, 47.81],
            [10.49, 45.82],
            [10.49, 47.81],
            [5.96, 45.82]
        ]));
        let e = validate_geometry(&g).unwrap_err();
        assert!(
            e.starts_with("The geometry is not valid: Self-intersection"),
            "{e}"
        );
    }

    #[test]
    fn a_latitude_past_90_is_refused() {
        // test_item_create_model_point_geometry_invalid_latitude.
        let e =
            validate_geometry(&json!({"type": "Point", "coordinates": [7.0, 95.0]})).unwrap_err();
        assert!(e.starts_with("Latitude exceeds permitted value"), "{e}");
    }

    #[test]
    fn outside_switzerland_and_odd_longitudes_only_warn() {
        let w = validate_geometry(&json!({"type": "Point", "coordinates": [190.0, 10.0]})).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("Longitude exceeds usual value range"));
        assert!(w[1].contains("outside of Switzerland"));
    }

    #[test]
    fn open_short_or_empty_geometries_are_refused() {
        let open = polygon(json!([[7, 46], [8, 46], [8, 47], [7, 47]]));
        assert!(validate_geometry(&open).unwrap_err().contains("not closed"));
        let short = polygon(json!([[7, 46], [8, 46], [7, 46]]));
        assert!(
            validate_geometry(&short)
                .unwrap_err()
                .contains("Too few points")
        );
        let empty = json!({"type": "MultiPolygon", "coordinates": []});
        assert!(
            validate_geometry(&empty)
                .unwrap_err()
                .starts_with("The geometry is empty")
        );
        let nan = json!({"type": "Point", "coordinates": ["x", 1]});
        assert!(
            validate_geometry(&nan)
                .unwrap_err()
                .contains("Invalid Coordinate")
        );
    }

    #[test]
    fn a_ring_folding_back_on_itself_is_not_valid() {
        let g = polygon(json!([[7, 46], [8, 46], [7.5, 46], [7.5, 47], [7, 46]]));
        assert!(validate_geometry(&g).is_err());
    }
}
