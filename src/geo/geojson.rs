//! The WGS84 bounding box of a GeoJSON file (RFC 7946): a FeatureCollection, a Feature or a bare
//! geometry, GeometryCollections included. The document is never built: a serde visitor folds
//! each position into the box as the parser reaches it, so memory stays flat however large the
//! file; the file's size is capped and serde_json's recursion limit (128) bounds nesting.

use std::fmt;
use std::io::Read;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{FileMetadata, Footprint, Format, GeoError};

/// The largest GeoJSON file read: a footprint is worth reading a big file for, not any file.
pub const MAX_GEOJSON_BYTES: u64 = 256 * 1024 * 1024;

/// Positions nest at most this deep (a MultiPolygon's: polygons, rings, positions).
const MAX_COORDINATE_DEPTH: usize = 4;

/// The bounding box of every position seen, and how many.
#[derive(Debug, Clone, Copy)]
struct Bbox {
    min: [f64; 2],
    max: [f64; 2],
    positions: u64,
}

impl Bbox {
    const EMPTY: Bbox = Bbox {
        min: [f64::INFINITY; 2],
        max: [f64::NEG_INFINITY; 2],
        positions: 0,
    };

    fn add(&mut self, lon: f64, lat: f64) {
        self.min = [self.min[0].min(lon), self.min[1].min(lat)];
        self.max = [self.max[0].max(lon), self.max[1].max(lat)];
        self.positions += 1;
    }

    fn merge(&mut self, other: &Bbox) {
        self.min = [self.min[0].min(other.min[0]), self.min[1].min(other.min[1])];
        self.max = [self.max[0].max(other.max[0]), self.max[1].max(other.max[1])];
        self.positions += other.positions;
    }
}

/// Reads the bounding box of the GeoJSON in `r` (at most [`MAX_GEOJSON_BYTES`] of it is read;
/// the caller counts the bytes). Refused: not JSON, not a GeoJSON object, no position at all, a
/// position out of WGS84's range, and positions that span no area (a footprint is a polygon).
pub(crate) fn read_geojson<R: Read>(r: R) -> Result<FileMetadata, GeoError> {
    let mut de = serde_json::Deserializer::from_reader(r.take(MAX_GEOJSON_BYTES + 1));
    let bbox = ObjectSeed { depth: 0 }
        .deserialize(&mut de)
        .map_err(|e| GeoError::GeoJson(e.to_string()))?;
    de.end().map_err(|e| GeoError::GeoJson(e.to_string()))?;
    if bbox.positions == 0 {
        return Err(GeoError::GeoJson("no coordinates in any geometry".into()));
    }
    let ([w, s], [e, n]) = (bbox.min, bbox.max);
    if w == e || s == n {
        return Err(GeoError::GeoJson(format!(
            "the coordinates span no area (from ({w}, {s}) to ({e}, {n})): no footprint polygon"
        )));
    }
    Ok(FileMetadata {
        format: Format::GeoJson,
        // RFC 7946: GeoJSON is in WGS84 longitude/latitude, whatever `crs` a file still carries.
        epsg: Some(4326),
        gsd: None,
        size: None,
        footprint: Footprint {
            ring: vec![[w, s], [e, s], [e, n], [w, n], [w, s]],
            bbox: [w, s, e, n],
            corners: [[w, n], [e, n], [e, s], [w, s]],
        },
        bytes_read: 0,
    })
}

/// The kinds of GeoJSON object, by their `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Geometry,
    GeometryCollection,
    Feature,
    FeatureCollection,
}

impl Kind {
    fn of(t: &str) -> Option<Kind> {
        Some(match t {
            "Point" | "MultiPoint" | "LineString" | "MultiLineString" | "Polygon"
            | "MultiPolygon" => Kind::Geometry,
            "GeometryCollection" => Kind::GeometryCollection,
            "Feature" => Kind::Feature,
            "FeatureCollection" => Kind::FeatureCollection,
            _ => return None,
        })
    }
}

/// A GeoJSON object (or `null`, as a Feature's geometry may be): its positions' box. Members
/// arrive in any order, so each member that may hold positions is folded into a box of its
/// own, and the `type` decides at the end which of them count (a `coordinates` member in a
/// Feature's `properties` is not a position).
#[derive(Clone, Copy)]
struct ObjectSeed {
    /// GeoJSON objects this one is nested in (a GeometryCollection's geometries).
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Bbox;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Bbox, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed {
    type Value = Bbox;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a GeoJSON object")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Bbox, E> {
        if self.depth == 0 {
            return Err(E::custom("the document is null, not a GeoJSON object"));
        }
        Ok(Bbox::EMPTY)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Bbox, A::Error> {
        let mut kind = None;
        let (mut coordinates, mut geometry, mut features, mut geometries) =
            (Bbox::EMPTY, Bbox::EMPTY, Bbox::EMPTY, Bbox::EMPTY);
        let nested = ObjectSeed {
            depth: self.depth + 1,
        };
        while let Some(key) = map.next_key::<Member>()? {
            match key {
                Member::Type => {
                    let t: TypeName = map.next_value()?;
                    kind = Some(Kind::of(&t.0).ok_or_else(|| {
                        A::Error::custom(format_args!(
                            "unknown GeoJSON type {:?}",
                            t.0.chars().take(40).collect::<String>()
                        ))
                    })?);
                }
                Member::Coordinates => {
                    coordinates = map.next_value_seed(CoordinatesSeed { depth: 1 })?;
                }
                Member::Geometry => geometry = map.next_value_seed(nested)?,
                Member::Features => features = map.next_value_seed(ListSeed(nested))?,
                Member::Geometries => geometries = map.next_value_seed(ListSeed(nested))?,
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match kind {
            Some(Kind::Geometry) => coordinates,
            Some(Kind::GeometryCollection) => geometries,
            Some(Kind::Feature) => geometry,
            Some(Kind::FeatureCollection) => features,
            None => return Err(A::Error::custom("an object without a GeoJSON `type`")),
        })
    }
}

/// The value of `type`: a string, kept only as long as the type names are (a longer one is no
/// GeoJSON type, and its text is not worth holding).
struct TypeName(String);

impl<'de> serde::Deserialize<'de> for TypeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TypeName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a GeoJSON type name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TypeName, E> {
                Ok(TypeName(v.chars().take(64).collect()))
            }
        }
        d.deserialize_str(V)
    }
}

/// The members that may hold positions; the rest are skipped unread.
enum Member {
    Type,
    Coordinates,
    Geometry,
    Features,
    Geometries,
    Other,
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Member, E> {
                Ok(match v {
                    "type" => Member::Type,
                    "coordinates" => Member::Coordinates,
                    "geometry" => Member::Geometry,
                    "features" => Member::Features,
                    "geometries" => Member::Geometries,
                    _ => Member::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// An array of GeoJSON objects (`features`, `geometries`): the union of their boxes.
struct ListSeed(ObjectSeed);

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Bbox;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Bbox, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Bbox;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of GeoJSON objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bbox, A::Error> {
        let mut all = Bbox::EMPTY;
        while let Some(b) = seq.next_element_seed(self.0)? {
            all.merge(&b);
        }
        Ok(all)
    }
}

/// `coordinates` at some depth: a position (an array of numbers, longitude and latitude first)
/// or an array of such arrays, folded into one box as they are read.
struct CoordinatesSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for CoordinatesSeed {
    type Value = Bbox;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Bbox, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CoordinatesSeed {
    type Value = Bbox;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of positions")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bbox, A::Error> {
        if self.depth > MAX_COORDINATE_DEPTH {
            return Err(A::Error::custom(format_args!(
                "positions nested deeper than {MAX_COORDINATE_DEPTH} arrays (a MultiPolygon's)"
            )));
        }
        let mut bbox = Bbox::EMPTY;
        let mut numbers = 0usize;
        let mut lonlat = [0.0; 2];
        let mut arrays = false;
        while let Some(elem) = seq.next_element_seed(ElementSeed { depth: self.depth })? {
            match elem {
                Element::Number(v) => {
                    if let Some(slot) = lonlat.get_mut(numbers) {
                        *slot = v;
                    }
                    numbers += 1;
                }
                Element::Nested(b) => {
                    arrays = true;
                    bbox.merge(&b);
                }
            }
        }
        match (numbers, arrays) {
            (0, _) => Ok(bbox),
            (_, true) => Err(A::Error::custom("an array mixing numbers and arrays")),
            (1, false) => Err(A::Error::custom("a position with one number")),
            (_, false) => {
                let [lon, lat] = lonlat;
                if !lon.is_finite() || !lat.is_finite() {
                    return Err(A::Error::custom("a position that is not a finite number"));
                }
                if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
                    return Err(A::Error::custom(format_args!(
                        "the position ({lon}, {lat}) is not a WGS84 longitude and latitude \
                         (RFC 7946): is the file in another CRS?"
                    )));
                }
                bbox.add(lon, lat);
                Ok(bbox)
            }
        }
    }
}

enum Element {
    Number(f64),
    Nested(Bbox),
}

struct ElementSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Element;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Element, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or an array of positions")
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Element, E> {
        Ok(Element::Number(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Element, E> {
        Ok(Element::Number(v as f64))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Element, E> {
        Ok(Element::Number(v as f64))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element, A::Error> {
        CoordinatesSeed {
            depth: self.depth + 1,
        }
        .visit_seq(seq)
        .map(Element::Nested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(text: &str) -> Result<[f64; 4], String> {
        read_geojson(text.as_bytes())
            .map(|m| m.footprint.bbox)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_feature_collection_is_the_box_of_all_its_features() {
        let text = r#"{"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"coordinates": [200, 100]},
             "geometry": {"coordinates": [[7.0, 46.0], [7.5, 46.5, 500]], "type": "LineString"}},
            {"type": "Feature", "properties": null, "geometry": null},
            {"type": "Feature", "properties": {}, "geometry": {"type": "GeometryCollection",
             "geometries": [{"type": "Point", "coordinates": [8, 47]},
                            {"type": "MultiPolygon", "coordinates":
                              [[[[6.5, 45.5], [6.6, 45.5], [6.6, 45.6], [6.5, 45.5]]]]}]}}
        ]}"#;
        assert_eq!(bbox(text).unwrap(), [6.5, 45.5, 8.0, 47.0]);
        let m = read_geojson(text.as_bytes()).unwrap();
        assert_eq!(m.epsg, Some(4326));
        assert_eq!(m.gsd, None);
        let ring = &m.footprint.ring;
        assert_eq!(ring.first(), ring.last(), "closed");
        let area: f64 = ring
            .windows(2)
            .map(|p| p[0][0] * p[1][1] - p[1][0] * p[0][1])
            .sum();
        assert!(area > 0.0, "counter-clockwise");
    }

    #[test]
    fn a_bare_geometry_and_a_feature_are_read() {
        let poly = r#"{"coordinates": [[[7, 46], [8, 46], [8, 47], [7, 46]]], "type": "Polygon"}"#;
        assert_eq!(bbox(poly).unwrap(), [7.0, 46.0, 8.0, 47.0]);
        let feature = format!(r#"{{"type": "Feature", "geometry": {poly}, "id": 1}}"#);
        assert_eq!(bbox(&feature).unwrap(), [7.0, 46.0, 8.0, 47.0]);
    }

    #[test]
    fn what_is_not_a_footprint_is_refused_with_the_reason() {
        for (text, reason) in [
            ("", "EOF"),
            ("[]", "GeoJSON object"),
            ("null", "null"),
            ("{}", "without a GeoJSON `type`"),
            (r#"{"type": "Polygon"}"#, "no coordinates"),
            (r#"{"type": "Feature", "geometry": null}"#, "no coordinates"),
            (
                r#"{"type": "Point", "coordinates": [7, 46]}"#,
                "span no area",
            ),
            (
                r#"{"type": "Blob", "coordinates": [7, 46]}"#,
                "unknown GeoJSON type",
            ),
            (
                r#"{"type": "LineString", "coordinates": [[2600000, 1200000], [2600001, 1200001]]}"#,
                "not a WGS84",
            ),
            (
                r#"{"type": "LineString", "coordinates": [[7, 95], [8, 46]]}"#,
                "not a WGS84",
            ),
            (r#"{"type": "Point", "coordinates": [7]}"#, "one number"),
            (
                r#"{"type": "LineString", "coordinates": [7, [8, 46]]}"#,
                "mixing",
            ),
            (
                r#"{"type": "Point", "coordinates": [7, 1e999]}"#,
                "number out of range",
            ),
            (
                r#"{"type": "Point", "coordinates": [[[[[7, 46]]]]]}"#,
                "nested deeper",
            ),
            (r#"{"type": "Point", "coordinates": [7, 46]} x"#, "trailing"),
        ] {
            let err = bbox(text).expect_err(text);
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_or_skipped_without_recursion() {
        // Skipped members are skipped by serde_json without recursing (its stack is a byte a
        // level, bounded by the file's size): no overflow, and not a position.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let text = format!(r#"{{"type": "Feature", "properties": {deep}, "geometry": null}}"#);
        assert!(bbox(&text).unwrap_err().contains("no coordinates"));
        // Nested objects are walked: the recursion limit stops them.
        let deep = format!(
            r#"{}"type": "Point"{}"#,
            r#"{"type": "Feature", "geometry": "#.repeat(50_000),
            "}".repeat(50_000)
        );
        assert!(bbox(&deep).unwrap_err().contains("recursion limit"));
        let deep = format!(
            r#"{{"type": "Point", "coordinates": {}7, 46{}}}"#,
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        assert!(bbox(&deep).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn read_metadata_knows_a_tiff_by_its_bytes_and_geojson_by_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let poly = r#"{"type": "Polygon", "coordinates": [[[7, 46], [8, 46], [8, 47], [7, 46]]]}"#;
        for name in ["a.json", "a.GeoJSON", "a.geo.json"] {
            let path = dir.path().join(name);
            std::fs::write(&path, poly).unwrap();
            let m = super::super::read_metadata(&path).unwrap();
            assert_eq!(m.format, Format::GeoJson);
            assert_eq!(m.footprint.bbox, [7.0, 46.0, 8.0, 47.0]);
            assert_eq!(m.bytes_read, poly.len() as u64, "{name}");
        }
        let path = dir.path().join("a.txt");
        std::fs::write(&path, poly).unwrap();
        let err = super::super::read_metadata(&path).unwrap_err();
        assert!(matches!(err, GeoError::UnknownFormat), "{err}");
        // A TIFF's magic bytes decide, whatever the name.
        let path = dir.path().join("not-really.json");
        std::fs::write(&path, b"II*\0\x08\0\0\0").unwrap();
        let err = super::super::read_metadata(&path).unwrap_err();
        assert!(matches!(err, GeoError::Tiff(_)), "{err}");
    }

    #[test]
    fn a_file_past_the_cap_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.geojson");
        let f = std::fs::File::create(&path).unwrap();
        // Sparse: nothing of it is written, and nothing is read.
        f.set_len(MAX_GEOJSON_BYTES + 1).unwrap();
        let err = super::super::read_metadata(&path).unwrap_err();
        assert!(err.to_string().contains("more than the"), "{err}");
    }
}
