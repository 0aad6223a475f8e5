//! `[job.item_metadata]` and `[job.asset_metadata]`: what a job creates when its item or asset
//! does not exist yet, rendered into STAC bodies for one run.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::template::TextTemplate;

/// The STAC version written into the items we create.
pub const STAC_VERSION: &str = "1.0.0";

/// A STAC Item to create when the job's item is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMetadata {
    /// A GeoJSON geometry object (written, or the polygon of `bbox`).
    pub geometry: Value,
    /// `[west, south, east, north]` of the geometry.
    pub bbox: [f64; 4],
    pub time: ItemTime,
    /// The item's `expires` property: this long after the run time.
    pub expires: Option<Duration>,
    pub title: Option<TextTemplate>,
    /// Further properties, written as given.
    pub properties: Map<String, Value>,
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
}

impl TimeValue {
    /// The date-time for a run, in UTC (`2026-11-25T05:00:00Z`). A template that does not render
    /// a date-time (checked at load with a sample, so only a hand-built one) is sent as rendered
    /// for the server to judge.
    pub fn render(&self, file_name: &str, run: &DateTime<Tz>) -> String {
        match self {
            TimeValue::Run => rfc3339(run.with_timezone(&Utc)),
            TimeValue::Template(t) => {
                let text = t.render(file_name, run);
                DateTime::parse_from_rfc3339(&text).map_or(text, |d| rfc3339(d.with_timezone(&Utc)))
            }
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl ItemMetadata {
    /// The body of `PUT collections/{c}/items/{id}` for a run.
    pub fn item_body(&self, id: &str, file_name: &str, run: &DateTime<Tz>) -> Value {
        let mut properties = self.properties.clone();
        match &self.time {
            ItemTime::Instant(t) => {
                properties.insert("datetime".into(), t.render(file_name, run).into());
            }
            ItemTime::Range { start, end } => {
                properties.insert("datetime".into(), Value::Null);
                properties.insert("start_datetime".into(), start.render(file_name, run).into());
                properties.insert("end_datetime".into(), end.render(file_name, run).into());
            }
        }
        if let Some(title) = &self.title {
            properties.insert("title".into(), title.render(file_name, run).into());
        }
        if let Some(expires) = self.expires {
            let at = chrono::Duration::from_std(expires)
                .ok()
                .and_then(|d| run.with_timezone(&Utc).checked_add_signed(d));
            if let Some(at) = at {
                properties.insert("expires".into(), rfc3339(at).into());
            }
        }
        json!({
            "type": "Feature",
            "stac_version": STAC_VERSION,
            "id": id,
            "geometry": self.geometry,
            "bbox": self.bbox,
            "properties": properties,
            "links": [],
        })
    }

    /// True when the item's metadata depends on the run's local time (not only its instant).
    pub fn uses_time(&self) -> bool {
        let time = |t: &TimeValue| matches!(t, TimeValue::Template(t) if t.uses_time());
        self.title.as_ref().is_some_and(TextTemplate::uses_time)
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
    /// The media type (`type`); the server checks it fits the asset id's extension.
    pub media_type: String,
    pub title: Option<TextTemplate>,
    pub roles: Vec<String>,
    pub proj_epsg: Option<u32>,
    /// Further fields of the asset, written as given.
    pub properties: Map<String, Value>,
}

impl AssetMetadata {
    /// The body of `PUT .../assets/{id}` for a run.
    pub fn asset_body(&self, id: &str, file_name: &str, run: &DateTime<Tz>) -> Value {
        let mut body = self.properties.clone();
        body.insert("id".into(), id.into());
        body.insert("type".into(), self.media_type.clone().into());
        if let Some(title) = &self.title {
            body.insert("title".into(), title.render(file_name, run).into());
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

    #[test]
    fn an_item_body_has_what_stac_and_the_server_want() {
        let meta = ItemMetadata {
            geometry: bbox_polygon([5.9, 45.8, 10.5, 47.8]),
            bbox: [5.9, 45.8, 10.5, 47.8],
            time: ItemTime::Range {
                start: TimeValue::Template(TextTemplate::parse("%Y-%m-%dT00:00:00+01:00").unwrap()),
                end: TimeValue::Run,
            },
            expires: Some(Duration::from_secs(7 * 86_400)),
            title: Some(TextTemplate::parse("Radar {stem} %d.%m.%Y").unwrap()),
            properties: Map::from_iter([("gsd".to_owned(), json!(10))]),
        };
        let body = meta.item_body("radar-2026-11-25", "scan.h5", &run());
        assert_eq!(body["type"], "Feature");
        assert_eq!(body["stac_version"], STAC_VERSION);
        assert_eq!(body["id"], "radar-2026-11-25");
        assert_eq!(body["bbox"], json!([5.9, 45.8, 10.5, 47.8]));
        assert_eq!(body["geometry"]["coordinates"][0][2], json!([10.5, 47.8]));
        let p = &body["properties"];
        assert_eq!(p["datetime"], Value::Null);
        assert_eq!(p["start_datetime"], "2026-11-24T23:00:00Z");
        assert_eq!(p["end_datetime"], "2026-11-25T05:00:00Z");
        assert_eq!(p["expires"], "2026-12-02T05:00:00Z");
        assert_eq!(p["title"], "Radar scan 25.11.2026");
        assert_eq!(p["gsd"], 10);
        assert_eq!(body["links"], json!([]));
    }

    #[test]
    fn an_asset_body_leaves_unset_fields_out() {
        let meta = AssetMetadata {
            media_type: "application/x-hdf5".into(),
            title: None,
            roles: vec![],
            proj_epsg: Some(2056),
            properties: Map::new(),
        };
        assert_eq!(
            meta.asset_body("scan.h5", "scan.h5", &run()),
            json!({"id": "scan.h5", "type": "application/x-hdf5", "proj:epsg": 2056})
        );
    }
}
