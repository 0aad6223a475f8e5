//! `[job.item_metadata]` and `[job.asset_metadata]`: what a job creates when its item or asset
//! does not exist yet, rendered into STAC bodies for one run.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::names::CaptureTime;
use super::template::{Names, TextTemplate};

/// The STAC version of the items we create. It is not sent: the server refuses `stac_version`
/// in an item body as read-only.
pub const STAC_VERSION: &str = "1.0.0";

/// The top-level keys of an item body the server accepts (`type`, `stac_version` and `bbox` are
/// read-only there, anything else unexpected: both are refused with 400).
pub const ITEM_FIELDS: &[&str] = &["id", "geometry", "properties", "links"];

/// The item properties the server keeps besides the item's time, `title` and `expires`: the
/// forecast extension. It drops any other property without a word.
pub const ITEM_PROPERTIES: &[&str] = &[
    "forecast:reference_datetime",
    "forecast:horizon",
    "forecast:duration",
    "forecast:variable",
    "forecast:perturbed",
];

/// The fields of an asset body we send (`href` would make the asset external; `file:checksum`,
/// `created` and `updated` are read-only).
pub const ASSET_FIELDS: &[&str] = &[
    "id",
    "type",
    "title",
    "description",
    "roles",
    "gsd",
    "proj:epsg",
    "geoadmin:lang",
    "geoadmin:variant",
];

/// The asset fields given in `[job.asset_metadata.properties]` (the others have keys of their
/// own).
pub const ASSET_PROPERTIES: &[&str] = &["description", "gsd", "geoadmin:lang", "geoadmin:variant"];

/// A STAC Item to create when the job's item is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMetadata {
    /// Where the item's geometry comes from.
    pub geometry: ItemGeometry,
    pub time: ItemTime,
    /// The item's `expires` property: this long after the run time.
    pub expires: Option<Duration>,
    pub title: Option<TextTemplate>,
    /// `forecast:reference_datetime` written as `"run"` or a template: rendered for each run
    /// (a fixed date stays in `properties`).
    pub reference_datetime: Option<TimeValue>,
    /// Further properties: those of [`ITEM_PROPERTIES`] (checked at load; others are left out of
    /// the body, as the server would drop them).
    pub properties: Map<String, Value>,
    /// `item_json`: a sidecar whose fields replace these for a run
    /// ([`item_body_with_sidecar`](super::item_body_with_sidecar)).
    pub item_json: Option<super::ItemJson>,
}

/// An item's geometry: written in the job file, or read from a file of each run.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemGeometry {
    /// `geometry` or `bbox` as written: the same for every run.
    Fixed {
        /// A GeoJSON geometry object (written, or the polygon of `bbox`).
        geometry: Value,
        /// `[west, south, east, north]` of the geometry; not sent (the server computes it,
        /// and refuses `bbox` in a body as read-only).
        bbox: [f64; 4],
    },
    /// `geometry = "from_file"`: the footprint of one member's file, read by each run before
    /// anything is created ([`ItemMetadata::with_geometry`]).
    FromFile(GeometryFrom),
}

/// The member whose file gives the item's footprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeometryFrom {
    /// Its index in `[[job.assets]]`; `None`: the job's one file.
    pub asset: Option<usize>,
    /// Its id as written, for messages.
    pub id: String,
}

impl ItemGeometry {
    /// The geometry written in the job file; `None` when each run reads it from a file.
    pub fn fixed(&self) -> Option<(&Value, [f64; 4])> {
        match self {
            ItemGeometry::Fixed { geometry, bbox } => Some((geometry, *bbox)),
            ItemGeometry::FromFile(_) => None,
        }
    }
}

/// The item's time: one instant, or a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemTime {
    /// `datetime`.
    Instant(TimeValue),
    /// `start_datetime` and `end_datetime` (`datetime` is then null, as STAC wants).
    Range { start: TimeValue, end: TimeValue },
}

/// A date-time of the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeValue {
    /// `"run"`: the run time.
    Run,
    /// An RFC 3339 date-time templated from the run time, e.g. `%Y-%m-%dT00:00:00Z`.
    Template(TextTemplate),
    /// Read from a capture of the job's `name_pattern` with a format, in a zone.
    Capture(CaptureTime),
}

impl TimeValue {
    /// The date-time for a run, in UTC (`2026-11-25T05:00:00Z`). A template that does not render
    /// a date-time (checked at load with a sample, so only a hand-built one) is sent as rendered
    /// for the server to judge. A capture that does not read as a time (the run refuses such a
    /// file before it gets here) is sent as captured.
    pub fn render<'a>(&self, names: impl Into<Names<'a>>, run: &DateTime<Tz>) -> String {
        let names = names.into();
        match self {
            TimeValue::Run => rfc3339(run.with_timezone(&Utc)),
            TimeValue::Template(t) => {
                let text = t.render(names, run);
                DateTime::parse_from_rfc3339(&text).map_or(text, |d| rfc3339(d.with_timezone(&Utc)))
            }
            TimeValue::Capture(c) => match c.of(names.captures()) {
                Ok(t) => rfc3339(t),
                Err(_) => names
                    .captures()
                    .and_then(|n| n.get(c.capture()))
                    .unwrap_or_default()
                    .to_owned(),
            },
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl ItemMetadata {
    /// This metadata with `geometry` written in: what a run builds its body from once it read
    /// the footprint of a `geometry = "from_file"` member.
    pub fn with_geometry(&self, geometry: Value, bbox: [f64; 4]) -> ItemMetadata {
        ItemMetadata {
            geometry: ItemGeometry::Fixed { geometry, bbox },
            ..self.clone()
        }
    }

    /// The body of `PUT collections/{c}/items/{id}` for a run: [`ITEM_FIELDS`] only, and in
    /// `properties` only what the server keeps. A `geometry = "from_file"` not yet read
    /// ([`ItemMetadata::with_geometry`]) is `null`, which the server refuses: runs read it
    /// before they build a body.
    pub fn item_body<'a>(
        &self,
        id: &str,
        names: impl Into<Names<'a>>,
        run: &DateTime<Tz>,
    ) -> Value {
        let names: Names<'_> = names.into();
        let mut properties: Map<String, Value> = self
            .properties
            .iter()
            .filter(|(k, _)| ITEM_PROPERTIES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match &self.time {
            ItemTime::Instant(t) => {
                properties.insert("datetime".into(), t.render(names, run).into());
            }
            ItemTime::Range { start, end } => {
                properties.insert("datetime".into(), Value::Null);
                properties.insert("start_datetime".into(), start.render(names, run).into());
                properties.insert("end_datetime".into(), end.render(names, run).into());
            }
        }
        if let Some(title) = &self.title {
            properties.insert("title".into(), title.render(names, run).into());
        }
        if let Some(reference) = &self.reference_datetime {
            properties.insert(
                "forecast:reference_datetime".into(),
                reference.render(names, run).into(),
            );
        }
        if let Some(expires) = self.expires {
            let at = chrono::Duration::from_std(expires)
                .ok()
                .and_then(|d| run.with_timezone(&Utc).checked_add_signed(d));
            if let Some(at) = at {
                properties.insert("expires".into(), rfc3339(at).into());
            }
        }
        let geometry = self
            .geometry
            .fixed()
            .map_or(Value::Null, |(g, _)| g.clone());
        json!({
            "id": id,
            "geometry": geometry,
            "properties": properties,
            "links": [],
        })
    }

    /// The times of the item read from captures of `name_pattern`, with their keys.
    pub fn capture_times(&self) -> Vec<(&'static str, &CaptureTime)> {
        let mut times = match &self.time {
            ItemTime::Instant(t) => vec![("datetime", t)],
            ItemTime::Range { start, end } => {
                vec![("start_datetime", start), ("end_datetime", end)]
            }
        };
        if let Some(r) = &self.reference_datetime {
            times.push(("forecast:reference_datetime", r));
        }
        times
            .into_iter()
            .filter_map(|(key, t)| match t {
                TimeValue::Capture(c) => Some((key, c)),
                _ => None,
            })
            .collect()
    }

    /// True when the item's metadata depends on the run's local time (not only its instant).
    pub fn uses_time(&self) -> bool {
        let time = |t: &TimeValue| matches!(t, TimeValue::Template(t) if t.uses_time());
        self.title.as_ref().is_some_and(TextTemplate::uses_time)
            || self.reference_datetime.as_ref().is_some_and(time)
            || match &self.time {
                ItemTime::Instant(t) => time(t),
                ItemTime::Range { start, end } => time(start) || time(end),
            }
    }
}

/// The polygon of a bounding box, counter-clockwise from the south-west corner.
pub fn bbox_polygon([w, s, e, n]: [f64; 4]) -> Value {
    json!({
        "type": "Polygon",
        "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
    })
}

/// An asset to create when the job's asset is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetMetadata {
    /// The media type (`type`), normalised as the server stores it; the server checks it fits
    /// the asset id's extension.
    pub media_type: String,
    pub title: Option<TextTemplate>,
    pub roles: Vec<String>,
    pub proj_epsg: Option<u32>,
    /// Further fields of the asset: those of [`ASSET_PROPERTIES`] (checked at load; others are
    /// left out of the body, as the server would refuse them).
    pub properties: Map<String, Value>,
    /// The fields written `"from_file"`: read from the asset's own file by each run, before
    /// anything is created, and then set in the body.
    pub from_file: AssetFromFile,
}

/// `"proj:epsg" = "from_file"` and `gsd = "from_file"` of an asset's metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssetFromFile {
    pub proj_epsg: bool,
    pub gsd: bool,
}

impl AssetFromFile {
    /// Whether any field comes from the file.
    pub fn any(self) -> bool {
        self.proj_epsg || self.gsd
    }
}

impl AssetMetadata {
    /// The body of `PUT .../assets/{id}` for a run: [`ASSET_FIELDS`] only.
    pub fn asset_body<'a>(
        &self,
        id: &str,
        names: impl Into<Names<'a>>,
        run: &DateTime<Tz>,
    ) -> Value {
        let names: Names<'_> = names.into();
        let mut body: Map<String, Value> = self
            .properties
            .iter()
            .filter(|(k, _)| ASSET_PROPERTIES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        body.insert("id".into(), id.into());
        body.insert("type".into(), self.media_type.clone().into());
        if let Some(title) = &self.title {
            body.insert("title".into(), title.render(names, run).into());
        }
        if !self.roles.is_empty() {
            body.insert("roles".into(), self.roles.clone().into());
        }
        if let Some(epsg) = self.proj_epsg {
            body.insert("proj:epsg".into(), epsg.into());
        }
        Value::Object(body)
    }

    /// True when the asset's metadata depends on the run's local time.
    pub fn uses_time(&self) -> bool {
        self.title.as_ref().is_some_and(TextTemplate::uses_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run() -> DateTime<Tz> {
        chrono_tz::Europe::Zurich
            .with_ymd_and_hms(2026, 11, 25, 6, 0, 0)
            .unwrap()
    }

    fn meta() -> ItemMetadata {
        ItemMetadata {
            geometry: ItemGeometry::Fixed {
                geometry: bbox_polygon([5.9, 45.8, 10.5, 47.8]),
                bbox: [5.9, 45.8, 10.5, 47.8],
            },
            time: ItemTime::Range {
                start: TimeValue::Template(TextTemplate::parse("%Y-%m-%dT00:00:00+01:00").unwrap()),
                end: TimeValue::Run,
            },
            expires: Some(Duration::from_secs(7 * 86_400)),
            title: Some(TextTemplate::parse("Radar {stem} %d.%m.%Y").unwrap()),
            reference_datetime: None,
            properties: Map::from_iter([
                ("forecast:horizon".to_owned(), json!("PT6H")),
                ("forecast:perturbed".to_owned(), json!(false)),
            ]),
            item_json: None,
        }
    }

    #[test]
    fn an_item_body_has_what_the_server_accepts() {
        let body = meta().item_body("radar-2026-11-25", "scan.h5", &run());
        assert_eq!(body["id"], "radar-2026-11-25");
        // The bbox is sent as the geometry's polygon, never as `bbox`.
        assert_eq!(body["geometry"]["type"], "Polygon");
        assert_eq!(body["geometry"]["coordinates"][0][2], json!([10.5, 47.8]));
        let p = &body["properties"];
        assert_eq!(p["datetime"], Value::Null);
        assert_eq!(p["start_datetime"], "2026-11-24T23:00:00Z");
        assert_eq!(p["end_datetime"], "2026-11-25T05:00:00Z");
        assert_eq!(p["expires"], "2026-12-02T05:00:00Z");
        assert_eq!(p["title"], "Radar scan 25.11.2026");
        assert_eq!(p["forecast:horizon"], "PT6H");
        assert_eq!(p["forecast:perturbed"], false);
        assert_eq!(body["links"], json!([]));
    }

    #[test]
    fn an_item_body_has_no_key_the_server_refuses_or_drops() {
        let mut meta = meta();
        // Built by hand past the loader's checks: still left out.
        meta.properties.insert("gsd".into(), json!(10));
        meta.properties
            .insert("created".into(), json!("2026-01-01T00:00:00Z"));
        let body = meta.item_body("i", "scan.h5", &run());
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(keys.iter().all(|k| ITEM_FIELDS.contains(k)), "{keys:?}");
        for read_only in ["type", "stac_version", "bbox"] {
            assert!(body.get(read_only).is_none(), "{read_only} is read-only");
        }
        let kept = [
            "datetime",
            "start_datetime",
            "end_datetime",
            "title",
            "expires",
        ];
        for key in body["properties"].as_object().unwrap().keys() {
            assert!(
                kept.contains(&key.as_str()) || ITEM_PROPERTIES.contains(&key.as_str()),
                "{key} would be dropped"
            );
        }
    }

    #[test]
    fn an_asset_body_has_only_the_accepted_fields() {
        let meta = AssetMetadata {
            media_type: "application/x-hdf5".into(),
            title: Some(TextTemplate::parse("Scan {stem}").unwrap()),
            roles: vec!["data".into()],
            proj_epsg: Some(2056),
            properties: Map::from_iter([
                ("gsd".to_owned(), json!(2.5)),
                ("geoadmin:lang".to_owned(), json!("de")),
                ("file:checksum".to_owned(), json!("1220abcd")),
                ("href".to_owned(), json!("https://elsewhere/a.h5")),
            ]),
            from_file: AssetFromFile::default(),
        };
        let body = meta.asset_body("scan.h5", "scan.h5", &run());
        assert_eq!(
            body,
            json!({
                "id": "scan.h5", "type": "application/x-hdf5", "title": "Scan scan",
                "roles": ["data"], "proj:epsg": 2056, "gsd": 2.5, "geoadmin:lang": "de",
            })
        );
        let keys = body.as_object().unwrap().keys();
        assert!(keys.into_iter().all(|k| ASSET_FIELDS.contains(&k.as_str())));
    }

    #[test]
    fn an_asset_body_leaves_unset_fields_out() {
        let meta = AssetMetadata {
            media_type: "application/x-hdf5".into(),
            title: None,
            roles: vec![],
            proj_epsg: Some(2056),
            properties: Map::new(),
            from_file: AssetFromFile::default(),
        };
        assert_eq!(
            meta.asset_body("scan.h5", "scan.h5", &run()),
            json!({"id": "scan.h5", "type": "application/x-hdf5", "proj:epsg": 2056})
        );
    }
}
