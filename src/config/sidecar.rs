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
use super::template::TextTemplate;

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
    pub fn path(&self, file_name: &str, run: &DateTime<Tz>) -> PathBuf {
        self.base.join(self.template.render(file_name, run))
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
pub fn item_body_with_sidecar(
    meta: &ItemMetadata,
    id: &str,
    file_name: &str,
    run: &DateTime<Tz>,
    sidecar: Option<&Path>,
) -> Result<Value, SidecarError> {
    let mut body = meta.item_body(id, file_name, run);
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
