//! `item_json`: an item's metadata from a JSON file the processing chain wrote beside its
//! product (a STAC Item, or a plain object of item fields), merged over `[job.item_metadata]`
//! for one run, the sidecar winning.
//!
//! The file is read into the few fields the server keeps, by hand rather than with the `stac`
//! crate (docs/configuration.md, "Why not the stac crate"). What the server would refuse or drop
//! fails the run before anything is created, naming the file and the keys: a sidecar is the
//! chain's description of its product, and half of it silently lost is worse than a run that
//! says so.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::geometry::{self, check_bbox, geometry_bbox};
use super::metadata::{ITEM_PROPERTIES, ItemMetadata, bbox_polygon};
use super::read::read_bounded;
use super::server::{self as server_rules, MAX_TITLE};
use super::template::{Names, TextTemplate};

/// The largest sidecar read: 1 MiB. An item's metadata takes a few kilobytes; a footprint of
/// tens of thousands of positions still fits.
pub const MAX_ITEM_JSON: u64 = 1024 * 1024;

/// `item_json`: where a run finds its sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemJson {
    template: TextTemplate,
    /// What a relative path is relative to: the watched folder, or the job file's folder.
    base: PathBuf,
}

impl ItemJson {
    pub(super) fn new(template: TextTemplate, base: PathBuf) -> Self {
        Self { template, base }
    }

    /// The sidecar of a run: the template rendered for the file name and run time, joined to
    /// the base folder (an absolute path stays as it is).
    pub fn path<'a>(&self, names: impl Into<Names<'a>>, run: &DateTime<Tz>) -> PathBuf {
        self.base.join(self.template.render(names, run))
    }

    /// The template as written.
    pub fn template(&self) -> &TextTemplate {
        &self.template
    }
}

/// Members of a STAC Item that describe nothing the server would keep from a sidecar: the id
/// and assets are the job's, links point into the chain's own catalog. Read past, not refused.
const IGNORED: &[&str] = &[
    "id",
    "stac_version",
    "stac_extensions",
    "collection",
    "links",
    "assets",
];

/// A key of a sidecar and why the server would refuse or drop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The key, dotted below the top (`properties.gsd`).
    pub key: String,
    /// What the server would do with it, and what was expected.
    pub why: String,
}

/// A sidecar that cannot be used: the run fails before anything is created.
#[derive(Debug)]
#[non_exhaustive]
pub enum SidecarError {
    /// Missing, not a regular file, too large or unreadable.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not JSON (the error says where).
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// JSON, but not an object.
    NotAnObject { path: PathBuf, found: &'static str },
    /// Keys the server would refuse or drop.
    Refused {
        path: PathBuf,
        refused: Vec<Refusal>,
    },
}

impl SidecarError {
    /// The sidecar the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SidecarError::Read { path, .. }
            | SidecarError::Json { path, .. }
            | SidecarError::NotAnObject { path, .. }
            | SidecarError::Refused { path, .. } => path,
        }
    }

    /// The refused keys, in the file's order (none unless [`SidecarError::Refused`]).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            SidecarError::Refused { refused, .. } => {
                refused.iter().map(|r| r.key.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// What is wrong, without the file's name.
    pub fn problem(&self) -> String {
        match self {
            SidecarError::Read { source, .. } => format!("cannot read it: {source}"),
            SidecarError::Json { source, .. } => format!("not JSON: {source}"),
            SidecarError::NotAnObject { found, .. } => format!(
                "it is {found}: expected a JSON object, a STAC Item or an object of item fields"
            ),
            SidecarError::Refused { refused, .. } => format!(
                "it holds what the server would refuse or drop: {}",
                list(refused)
            ),
        }
    }

    /// The error the run ends with: a problem of the local input, as an unreadable file is
    /// (given up at once: the chain writes the sidecar with its product, and the next run reads
    /// it again).
    pub fn upload_error(&self) -> stac_upload::UploadError {
        stac_upload::UploadError::File {
            path: self.path().to_owned(),
            action: "the item's metadata (item_json) cannot be used",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, self.problem()),
        }
    }
}

impl std::fmt::Display for SidecarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the item's metadata (item_json) cannot be used: {}",
            self.path().display(),
            self.problem()
        )
    }
}

impl std::error::Error for SidecarError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SidecarError::Read { source, .. } => Some(source),
            SidecarError::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn list(refused: &[Refusal]) -> String {
    refused
        .iter()
        .map(|r| format!("{:?} ({})", r.key, r.why))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The body of the item to create for a run: [`ItemMetadata::item_body`], then, when `sidecar`
/// is given, what it holds merged over it (its geometry, time, title, expires and forecast
/// fields replace the job's). Reads at most [`MAX_ITEM_JSON`] bytes.
pub fn item_body_with_sidecar<'a>(
    meta: &ItemMetadata,
    id: &str,
    names: impl Into<Names<'a>>,
    run: &DateTime<Tz>,
    sidecar: Option<&Path>,
) -> Result<Value, SidecarError> {
    let mut body = meta.item_body(id, names, run);
    let Some(path) = sidecar else {
        return Ok(body);
    };
    let bytes = read_bounded(path, MAX_ITEM_JSON, "an item_json file").map_err(|source| {
        SidecarError::Read {
            path: path.to_owned(),
            source,
        }
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|source| SidecarError::Json {
        path: path.to_owned(),
        source,
    })?;
    // The server refuses an `expires` in the past by its own clock, not the run's.
    let fields = parse(value, Utc::now()).map_err(|e| match e {
        Unusable::NotAnObject(found) => SidecarError::NotAnObject {
            path: path.to_owned(),
            found,
        },
        Unusable::Refused(refused) => SidecarError::Refused {
            path: path.to_owned(),
            refused,
        },
    })?;
    fields.merge_into(&mut body);
    Ok(body)
}

/// What a sidecar gives, checked.
#[derive(Debug, Default, PartialEq)]
struct Fields {
    geometry: Option<Value>,
    time: Option<Time>,
    /// `title`, `expires` and the forecast fields, as they go into `properties`.
    properties: Map<String, Value>,
}

#[derive(Debug, PartialEq)]
enum Time {
    Instant(String),
    Range(String, String),
}

enum Unusable {
    NotAnObject(&'static str),
    Refused(Vec<Refusal>),
}

impl Fields {
    fn merge_into(self, body: &mut Value) {
        if let Some(g) = self.geometry {
            body["geometry"] = g;
        }
        let Some(properties) = body.get_mut("properties").and_then(Value::as_object_mut) else {
            return;
        };
        match self.time {
            Some(Time::Instant(t)) => {
                properties.remove("start_datetime");
                properties.remove("end_datetime");
                properties.insert("datetime".into(), t.into());
            }
            Some(Time::Range(start, end)) => {
                properties.insert("datetime".into(), Value::Null);
                properties.insert("start_datetime".into(), start.into());
                properties.insert("end_datetime".into(), end.into());
            }
            None => {}
        }
        properties.extend(self.properties);
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Reads a sidecar: a STAC Item (recognised by `type` or `properties`; its time, title, expires
/// and forecast fields in `properties`) or a plain object of those fields with `geometry` or
/// `bbox`. Every refusal is collected, so that one run names them all.
fn parse(value: Value, now: DateTime<Utc>) -> Result<Fields, Unusable> {
    let Value::Object(top) = value else {
        return Err(Unusable::NotAnObject(json_kind(&value)));
    };
    let mut refused = Vec::new();
    let mut refuse = |key: &str, why: String| {
        refused.push(Refusal {
            key: key.to_owned(),
            why,
        })
    };
    let item_shaped = top.contains_key("type") || top.contains_key("properties");
    let mut geometry = None;
    let mut bbox = None;
    // (the key as shown, its value)
    let mut fields: Vec<(String, &Value)> = Vec::new();
    for (key, value) in &top {
        match key.as_str() {
            "geometry" => geometry = Some(value),
            "bbox" => bbox = Some(value),
            "type" => {
                if *value != "Feature" {
                    refuse(
                        key,
                        format!(
                            "{value} is not \"Feature\": a STAC Item is a GeoJSON Feature (a plain object of item fields has no type)"
                        ),
                    );
                }
            }
            "properties" => match value {
                Value::Object(p) => {
                    fields.extend(p.iter().map(|(k, v)| (format!("properties.{k}"), v)));
                }
                other => refuse(key, format!("is {}: expected an object", json_kind(other))),
            },
            k if item_shaped && IGNORED.contains(&k) => {}
            k if item_shaped => refuse(
                k,
                "a member of the Feature the server does not store: it would drop it".to_owned(),
            ),
            _ => fields.push((key.clone(), value)),
        }
    }

    let mut out = Fields::default();
    let mut times: [Option<(String, String)>; 3] = [None, None, None];
    for (shown, value) in fields {
        let name = shown.strip_prefix("properties.").unwrap_or(&shown);
        if value.is_null() {
            // The server's fields are all nullable: null says "not given".
            continue;
        }
        match name {
            "datetime" | "start_datetime" | "end_datetime" | "expires" => {
                let Some(at) = value.as_str().and_then(rfc3339) else {
                    refuse(
                        &shown,
                        format!(
                            "{value} is not an RFC 3339 date-time: expected e.g. \"2026-11-25T06:00:00Z\" (with its offset)"
                        ),
                    );
                    continue;
                };
                match name {
                    "datetime" => times[0] = Some((shown, at)),
                    "start_datetime" => times[1] = Some((shown, at)),
                    "end_datetime" => times[2] = Some((shown, at)),
                    _ => {
                        if parsed(&at) < now {
                            refuse(
                                &shown,
                                format!(
                                    "{at} is in the past: the server refuses an expires in the past"
                                ),
                            );
                        } else {
                            out.properties.insert("expires".into(), at.into());
                        }
                    }
                }
            }
            "title" => match value.as_str() {
                Some(t) if t.trim().is_empty() => {
                    refuse(
                        &shown,
                        "is blank: the server refuses a blank title".to_owned(),
                    );
                }
                Some(t) if t.chars().count() > MAX_TITLE => refuse(
                    &shown,
                    format!(
                        "is {} characters long: the server takes at most {MAX_TITLE}",
                        t.chars().count()
                    ),
                ),
                Some(t) => {
                    out.properties.insert("title".into(), t.into());
                }
                None => refuse(
                    &shown,
                    format!("is {}: expected a string", json_kind(value)),
                ),
            },
            "created" | "updated" => refuse(
                &shown,
                "the server sets it (read-only) and refuses it in a body".to_owned(),
            ),
            n if ITEM_PROPERTIES.contains(&n) => match server_rules::item_property(n, value) {
                Ok(()) => {
                    let value = match n {
                        // One spelling of an instant, as the job's own times.
                        "forecast:reference_datetime" => value
                            .as_str()
                            .and_then(rfc3339)
                            .map_or_else(|| value.clone(), Value::from),
                        _ => value.clone(),
                    };
                    out.properties.insert(n.to_owned(), value);
                }
                Err((_, why)) => refuse(&shown, why),
            },
            _ => refuse(
                &shown,
                format!(
                    "the server keeps no such item property and drops it: expected only geometry, bbox, datetime, start_datetime, end_datetime, title, expires and {}",
                    ITEM_PROPERTIES.join(", ")
                ),
            ),
        }
    }

    out.time = match times {
        [Some((_, at)), None, None] => Some(Time::Instant(at)),
        [None, Some((_, start)), Some((end_key, end))] => {
            if parsed(&end) < parsed(&start) {
                refuse(
                    &end_key,
                    format!(
                        "{end} comes before start_datetime {start}: expected a range forwards in time (the server refuses it)"
                    ),
                );
                None
            } else {
                Some(Time::Range(start, end))
            }
        }
        [Some((key, _)), Some(_), _] | [Some((key, _)), _, Some(_)] => {
            refuse(
                &key,
                "given with start_datetime or end_datetime: the server takes either datetime, or start_datetime and end_datetime, not both".to_owned(),
            );
            None
        }
        [None, Some((key, _)), None] | [None, None, Some((key, _))] => {
            refuse(
                &key,
                "given alone: the server needs both start_datetime and end_datetime for a range (or datetime)".to_owned(),
            );
            None
        }
        [None, None, None] => None,
    };

    let extent = match geometry.filter(|g| !g.is_null()) {
        Some(g) => match geometry_bbox(g, geometry::EXPECTED_JSON) {
            Ok(extent) => {
                out.geometry = Some(g.clone());
                Some(extent)
            }
            Err(why) => {
                refuse("geometry", why);
                None
            }
        },
        None => None,
    };
    if let Some(b) = bbox.filter(|b| !b.is_null()) {
        let numbers: Option<Vec<f64>> = b
            .as_array()
            .and_then(|a| a.iter().map(Value::as_f64).collect());
        match numbers.as_deref().map(check_bbox) {
            None => refuse(
                "bbox",
                format!("{b} is not a list of numbers: expected [west, south, east, north]"),
            ),
            Some(Err(why)) => refuse("bbox", why),
            Some(Ok(bbox)) => match (geometry.filter(|g| !g.is_null()), extent) {
                // The server computes the bbox from the geometry: one that disagrees with it
                // would be lost.
                (Some(_), Some(extent)) if !same_box(bbox, extent) => refuse(
                    "bbox",
                    format!(
                        "{b} is not the geometry's extent {extent:?}: the server computes bbox from the geometry, so this one would be lost"
                    ),
                ),
                (Some(_), _) => {}
                (None, _) => out.geometry = Some(bbox_polygon(bbox)),
            },
        }
    }

    if refused.is_empty() {
        Ok(out)
    } else {
        Err(Unusable::Refused(refused))
    }
}

/// An RFC 3339 date-time, in UTC as the job's own times are written.
fn rfc3339(text: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| {
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    })
}

/// An instant written by [`rfc3339`].
fn parsed(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .expect("written by rfc3339")
}

/// Two boxes equal up to the rounding of a JSON writer.
fn same_box(a: [f64; 4], b: [f64; 4]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ItemTime, TimeValue};
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap()
    }

    fn run() -> DateTime<Tz> {
        chrono_tz::Europe::Zurich
            .with_ymd_and_hms(2026, 11, 25, 7, 0, 0)
            .unwrap()
    }

    fn meta() -> ItemMetadata {
        ItemMetadata {
            geometry: super::super::ItemGeometry::Fixed {
                geometry: bbox_polygon([5.9, 45.8, 10.5, 47.8]),
                bbox: [5.9, 45.8, 10.5, 47.8],
            },
            time: ItemTime::Instant(TimeValue::Run),
            expires: None,
            title: Some(TextTemplate::parse("From the job").unwrap()),
            reference_datetime: None,
            properties: Map::from_iter([("forecast:horizon".to_owned(), json!("PT6H"))]),
            item_json: None,
        }
    }

    fn refused(v: Value) -> Vec<Refusal> {
        match parse(v, now()) {
            Err(Unusable::Refused(r)) => r,
            Err(Unusable::NotAnObject(found)) => panic!("not an object: {found}"),
            Ok(f) => panic!("accepted: {f:?}"),
        }
    }

    fn keys(r: &[Refusal]) -> Vec<&str> {
        r.iter().map(|r| r.key.as_str()).collect()
    }

    /// A STAC Item as pystac or rustac write it.
    fn stac_item() -> Value {
        json!({
            "type": "Feature",
            "stac_version": "1.0.0",
            "stac_extensions": ["https://stac-extensions.github.io/forecast/v0.2.0/schema.json"],
            "id": "chain-own-id",
            "collection": "elsewhere",
            "geometry": {"type": "Polygon", "coordinates": [[[7.0, 46.0], [8.0, 46.0], [8.0, 47.0], [7.0, 47.0], [7.0, 46.0]]]},
            "bbox": [7.0, 46.0, 8.0, 47.0],
            "properties": {
                "datetime": null,
                "start_datetime": "2026-11-24T00:00:00+01:00",
                "end_datetime": "2026-11-25T00:00:00+01:00",
                "title": "Mosaic 24.11.2026",
                "expires": "2027-01-01T00:00:00Z",
                "forecast:variable": "T_2M",
            },
            "links": [{"rel": "self", "href": "./item.json"}],
            "assets": {"data": {"href": "./data.tif"}},
        })
    }

    #[test]
    fn a_stac_item_gives_geometry_times_title_and_expires() {
        let f = parse(stac_item(), now()).unwrap_or_else(|_| panic!("refused"));
        assert_eq!(f.geometry.unwrap()["coordinates"][0][1], json!([8.0, 46.0]));
        assert_eq!(
            f.time,
            Some(Time::Range(
                "2026-11-23T23:00:00Z".into(),
                "2026-11-24T23:00:00Z".into()
            ))
        );
        assert_eq!(f.properties["title"], "Mosaic 24.11.2026");
        assert_eq!(f.properties["expires"], "2027-01-01T00:00:00Z");
        assert_eq!(f.properties["forecast:variable"], "T_2M");
    }

    #[test]
    fn the_sidecar_wins_over_the_job_and_the_rest_of_the_job_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("item.json");
        std::fs::write(&path, stac_item().to_string()).unwrap();
        let body = item_body_with_sidecar(&meta(), "i-1", "x.tif", &run(), Some(&path))
            .unwrap_or_else(|e| panic!("{e}"));
        let p = &body["properties"];
        assert_eq!(
            p["datetime"],
            Value::Null,
            "the job's datetime gives way to the range"
        );
        assert_eq!(p["start_datetime"], "2026-11-23T23:00:00Z");
        assert_eq!(p["title"], "Mosaic 24.11.2026");
        assert_eq!(
            p["forecast:horizon"], "PT6H",
            "the job's, the sidecar has none"
        );
        assert_eq!(body["geometry"]["coordinates"][0][0], json!([7.0, 46.0]));
        assert_eq!(body["id"], "i-1", "the job's id, not the sidecar's");
        let top: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            top.iter().all(|k| crate::config::ITEM_FIELDS.contains(k)),
            "{top:?}"
        );
        assert_eq!(body["links"], json!([]));

        // No sidecar: the job's body, unchanged.
        let plain = item_body_with_sidecar(&meta(), "i-1", "x.tif", &run(), None).unwrap();
        assert_eq!(plain, meta().item_body("i-1", "x.tif", &run()));
    }

    #[test]
    fn a_plain_object_gives_the_same_fields_at_its_top() {
        let f = parse(
            json!({"bbox": [7, 46, 8, 47], "datetime": "2026-11-25T06:00:00+01:00", "title": "T"}),
            now(),
        )
        .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(f.geometry, Some(bbox_polygon([7.0, 46.0, 8.0, 47.0])));
        assert_eq!(f.time, Some(Time::Instant("2026-11-25T05:00:00Z".into())));
        // A datetime replaces the job's range.
        let mut body = json!({"geometry": {}, "properties": {"datetime": null, "start_datetime": "a", "end_datetime": "b"}});
        f.merge_into(&mut body);
        assert_eq!(
            body["properties"],
            json!({"datetime": "2026-11-25T05:00:00Z", "title": "T"})
        );
    }

    #[test]
    fn keys_the_server_drops_or_refuses_are_all_named() {
        let mut item = stac_item();
        item["properties"]["gsd"] = json!(10);
        item["properties"]["created"] = json!("2026-01-01T00:00:00Z");
        item["properties"]["forecast:horizon"] = json!(6);
        item["foreign"] = json!(1);
        let r = refused(item);
        assert_eq!(
            keys(&r),
            [
                "foreign",
                "properties.created",
                "properties.forecast:horizon",
                "properties.gsd"
            ]
        );
        assert!(r[0].why.contains("drop"), "{r:?}");
        assert!(r[1].why.contains("read-only"), "{r:?}");
        assert!(r[2].why.contains("ISO 8601 duration"), "{r:?}");
        assert!(r[3].why.contains("drops it"), "{r:?}");

        let r = refused(json!({"datetime": "2026-11-25", "platform": "s2"}));
        assert_eq!(keys(&r), ["datetime", "platform"]);
        assert!(r[0].why.contains("RFC 3339"), "{r:?}");
        let r = refused(json!({"type": "FeatureCollection", "features": []}));
        assert_eq!(keys(&r), ["features", "type"]);
    }

    #[test]
    fn times_are_checked_as_the_server_checks_them() {
        let r = refused(
            json!({"datetime": "2026-11-25T00:00:00Z", "start_datetime": "2026-11-24T00:00:00Z", "end_datetime": "2026-11-25T00:00:00Z"}),
        );
        assert_eq!(keys(&r), ["datetime"]);
        assert!(r[0].why.contains("not both"), "{r:?}");
        let r = refused(json!({"start_datetime": "2026-11-24T00:00:00Z"}));
        assert!(r[0].why.contains("needs both"), "{r:?}");
        let r = refused(
            json!({"start_datetime": "2026-11-25T00:00:00Z", "end_datetime": "2026-11-24T00:00:00Z"}),
        );
        assert_eq!(keys(&r), ["end_datetime"]);
        let r = refused(json!({"expires": "2026-11-25T05:59:59Z"}));
        assert!(r[0].why.contains("in the past"), "{r:?}");
        let r = refused(json!({"title": " "}));
        assert!(r[0].why.contains("blank"), "{r:?}");
        let r = refused(json!({"title": "t".repeat(256)}));
        assert!(r[0].why.contains("at most 255"), "{r:?}");
    }

    #[test]
    fn a_third_coordinate_is_refused_never_sent() {
        let r = refused(json!({"geometry": {"type": "Point", "coordinates": [7.0, 46.0, 500.0]}}));
        assert_eq!(keys(&r), ["geometry"]);
        assert!(r[0].why.contains("third coordinate"), "{r:?}");
        let r = refused(json!({"bbox": [7.0, 46.0, 0.0, 8.0, 47.0, 900.0]}));
        assert_eq!(keys(&r), ["bbox"]);
        assert!(r[0].why.contains("2-D geometries only"), "{r:?}");
    }

    #[test]
    fn a_bbox_that_is_not_the_geometrys_extent_is_refused() {
        let mut item = stac_item();
        item["bbox"] = json!([7.0, 46.0, 8.5, 47.0]);
        let r = refused(item);
        assert_eq!(keys(&r), ["bbox"]);
        assert!(
            r[0].why.contains("computes bbox from the geometry"),
            "{r:?}"
        );
        let r = refused(
            json!({"geometry": {"type": "Polygon", "coordinates": [[[7, 46], [8, 46], [8, 47], [7, 46.5]]]}}),
        );
        assert!(r[0].why.contains("not closed"), "{r:?}");
    }

    #[test]
    fn a_missing_or_malformed_sidecar_names_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let body =
            |p: &Path| item_body_with_sidecar(&meta(), "i", "x", &run(), Some(p)).unwrap_err();
        let missing = dir.path().join("missing.json");
        let e = body(&missing);
        assert!(matches!(e, SidecarError::Read { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"title\": \"a\",\n}").unwrap();
        let e = body(&bad);
        assert!(
            e.to_string().contains("not JSON") && e.to_string().contains("line 2"),
            "{e}"
        );

        std::fs::write(&bad, "[1, 2]").unwrap();
        assert!(
            body(&bad)
                .to_string()
                .contains("it is a list: expected a JSON object")
        );

        std::fs::write(&bad, vec![b' '; MAX_ITEM_JSON as usize + 1]).unwrap();
        assert!(
            body(&bad).to_string().contains("larger than"),
            "{}",
            body(&bad)
        );

        std::fs::write(&bad, r#"{"gsd": 10}"#).unwrap();
        let e = body(&bad);
        assert_eq!(e.keys(), ["gsd"]);
        let run_error = e.upload_error();
        assert!(run_error.is_local_input());
        assert!(run_error.to_string().contains("\"gsd\""), "{run_error}");
    }

    #[test]
    fn the_path_is_templated_and_relative_to_its_base() {
        let j = ItemJson::new(
            TextTemplate::parse("{stem}-%Y.json").unwrap(),
            "/watch".into(),
        );
        assert_eq!(
            j.path("scan.tif", &run()),
            Path::new("/watch/scan-2026.json")
        );
        let j = ItemJson::new(
            TextTemplate::parse("/abs/{name}.json").unwrap(),
            "/watch".into(),
        );
        assert_eq!(j.path("a.tif", &run()), Path::new("/abs/a.tif.json"));
    }
}
