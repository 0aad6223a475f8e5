//! The job file as written: serde structs that only check shape (known keys, value types) and
//! keep the span of every value that `load` checks further, so its errors can be located.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Unexpected, Visitor};
use toml::Spanned;

/// Declares a table struct with the keys of `[defaults]` added (the table of `settings.rs`),
/// which every job may override under the same names. serde's `flatten` would share them, but it
/// loses the spans and does not work with `deny_unknown_fields`.
macro_rules! with_settings {
    (
        { $(#[$attr:meta])* pub(super) struct $name:ident { $(pub(super) $field:ident: $ty:ty,)* } }
        $( $(#[doc = $doc:literal])+ $key:ident : $raw:ty => $val:ty { $($rest:tt)* } )*
    ) => {
        $(#[$attr])*
        pub(super) struct $name {
            $(pub(super) $field: $ty,)*
            $( $(#[doc = $doc])+ pub(super) $key: Option<Spanned<$raw>>, )*
        }

        impl $name {
            /// The inheritable settings of this table.
            pub(super) fn settings(&self) -> RawSettings<'_> {
                RawSettings { $( $key: self.$key.as_ref(), )* }
            }
        }
    };
}

/// The settings a job inherits from `[defaults]`, borrowed from either table.
macro_rules! raw_settings {
    ({} $( $(#[doc = $doc:literal])+ $key:ident : $raw:ty => $val:ty { $($rest:tt)* } )*) => {
        #[derive(Debug, Clone, Copy, Default)]
        pub(super) struct RawSettings<'a> {
            $( pub(super) $key: Option<&'a Spanned<$raw>>, )*
        }
    };
}

settings_table!(raw_settings {});

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    #[serde(default)]
    pub(super) job: Vec<RawJob>,
    #[serde(default)]
    pub(super) observe: RawObserve,
    pub(super) cluster: Option<Spanned<RawCluster>>,
    #[serde(default)]
    pub(super) notify: Vec<Spanned<RawNotify>>,
}

/// One `[[notify]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    /// Refused with a message: a webhook URL is a secret.
    pub(super) url: Option<Spanned<String>>,
    pub(super) url_env: Option<Spanned<String>>,
    pub(super) url_file: Option<Spanned<String>>,
    pub(super) on: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) jobs: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) repeat: Option<Spanned<DurationText>>,
    pub(super) timeout: Option<Spanned<DurationText>>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    /// Refused with a message: the URL holds the database password.
    pub(super) url: Option<Spanned<String>>,
    pub(super) url_env: Option<Spanned<String>>,
    pub(super) url_file: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) instance: Option<Spanned<String>>,
    pub(super) lease: Option<Spanned<DurationText>>,
    pub(super) heartbeat: Option<Spanned<DurationText>>,
    pub(super) expected_members: Option<Spanned<i64>>,
}

/// `[observe]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObserve {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) health_timeout: Option<Spanned<DurationText>>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) url: Spanned<String>,
    pub(super) api_version: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<DurationText>>,
    pub(super) request_timeout: Option<Spanned<DurationText>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) proxy: Option<Spanned<String>>,
    /// The whole daemon's limit, shared by every job.
    pub(super) bandwidth_limit: Option<Spanned<Size>>,
    pub(super) bandwidth_timetable: Option<Spanned<Vec<Spanned<RawWindow>>>>,
    /// The whole daemon's bound on uploads at once, over every job.
    pub(super) max_concurrent_uploads: Option<Spanned<Int>>,
    pub(super) auth: Option<RawAuth>,
}

/// One entry of `bandwidth_timetable`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) from: Spanned<String>,
    pub(super) to: Spanned<String>,
    pub(super) limit: Spanned<Size>,
}

/// `[server.auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_env: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_env: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) client_id: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
}

settings_table!(with_settings {
    /// `[defaults]`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct RawDefaults {}
});

settings_table!(with_settings {
    /// One `[[job]]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct RawJob {
        pub(super) name: Spanned<String>,
        pub(super) collection: Spanned<String>,
        pub(super) item: Option<Spanned<String>>,
        pub(super) asset: Option<Spanned<String>>,
        pub(super) file: Option<Spanned<String>>,
        pub(super) assets: Option<Spanned<Vec<Spanned<RawAsset>>>>,
        pub(super) alias: Option<Spanned<String>>,
        pub(super) schedule: Option<Spanned<String>>,
        pub(super) every: Option<Spanned<DurationText>>,
        pub(super) watch: Option<Spanned<RawWatch>>,
        pub(super) item_metadata: Option<Spanned<RawItemMetadata>>,
        pub(super) asset_metadata: Option<Spanned<RawAssetMetadata>>,
        pub(super) keep: Option<Spanned<RawKeep>>,
        pub(super) concurrency: Option<Spanned<Int>>,
        pub(super) ping_url: Option<Spanned<String>>,
        pub(super) ping_url_env: Option<Spanned<String>>,
        pub(super) ping_url_file: Option<Spanned<String>>,
        pub(super) name_pattern: Option<Spanned<String>>,
    }
});

impl RawJob {
    /// The asset ids the job writes: `asset`, or each `[[job.assets]]` table's `id`.
    pub(super) fn asset_ids(&self) -> Vec<&Spanned<String>> {
        match (&self.asset, &self.assets) {
            (Some(a), _) => vec![a],
            (None, Some(list)) => list.get_ref().iter().map(|a| &a.get_ref().id).collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// `[job.item_metadata]`: the item created when it is missing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawItemMetadata {
    pub(super) geometry: Option<Spanned<RawGeometry>>,
    /// The `[[job.assets]]` id whose file gives `geometry = "from_file"`.
    pub(super) geometry_from: Option<Spanned<String>>,
    pub(super) bbox: Option<Spanned<Vec<Spanned<f64>>>>,
    pub(super) datetime: Option<Spanned<RawTime>>,
    pub(super) start_datetime: Option<Spanned<RawTime>>,
    pub(super) end_datetime: Option<Spanned<RawTime>>,
    pub(super) expires: Option<Spanned<DurationText>>,
    pub(super) title: Option<Spanned<String>>,
    pub(super) properties: Option<Spanned<RawProperties>>,
    pub(super) item_json: Option<Spanned<String>>,
}

/// An item time as written: `"run"` or a template, or a table reading it from a capture of
/// `name_pattern`. The span is the field's (`Spanned<RawTime>`).
#[derive(Debug)]
pub(super) enum RawTime {
    Text(String),
    Capture(RawCaptureTime),
}

/// `{ capture = "date", format = "%Y%m%d", timezone = "Europe/Zurich" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaptureTime {
    pub(super) capture: Spanned<String>,
    pub(super) format: Spanned<String>,
    pub(super) timezone: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawTime {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than `untagged`: a table keeps its own errors (an unknown key, a
        // missing format) instead of "did not match any variant".
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"run\", a date-time template such as \"%Y-%m-%dT00:00:00Z\", or a table { capture = \"<name>\", format = \"<strftime>\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTime, E> {
                Ok(RawTime::Text(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawTime, A::Error> {
                RawCaptureTime::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawTime::Capture)
            }
        }
        d.deserialize_any(V)
    }
}

/// A `properties` table, each key and value with its span so that a refused one can be located.
pub(super) type RawProperties = std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// `[job.asset_metadata]`: the asset created when it is missing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAssetMetadata {
    #[serde(rename = "type")]
    pub(super) media_type: Spanned<String>,
    pub(super) title: Option<Spanned<String>>,
    pub(super) roles: Option<Vec<Spanned<String>>>,
    #[serde(rename = "proj:epsg")]
    pub(super) proj_epsg: Option<Spanned<FromFileOr<Int>>>,
    /// A number, or `"from_file"` (a number may also be given in `properties`, as before).
    pub(super) gsd: Option<Spanned<FromFileOr<f64>>>,
    pub(super) properties: Option<Spanned<RawProperties>>,
}

/// The value of a key that may be read from the file: `"from_file"`, or a value as written.
#[derive(Debug, Clone)]
pub(super) enum FromFileOr<T> {
    FromFile,
    Value(T),
}

/// What `"from_file"` is spelt as in a job file.
pub(super) const FROM_FILE: &str = "from_file";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FromFileOr<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A string is either the keyword or refused with what was expected; anything else is
        // the value's own type, with its own message.
        let value = toml::Value::deserialize(d)?;
        match value {
            toml::Value::String(s) if s == FROM_FILE => Ok(FromFileOr::FromFile),
            toml::Value::String(s) => Err(de::Error::custom(format!(
                "unexpected string {s:?}: expected a value, or \"{FROM_FILE}\" to read it from the file"
            ))),
            other => T::deserialize(other)
                .map(FromFileOr::Value)
                .map_err(|e| de::Error::custom(format!("{e}, or \"{FROM_FILE}\""))),
        }
    }
}

/// `geometry`: a GeoJSON geometry table, or `"from_file"`.
#[derive(Debug, Clone)]
pub(super) enum RawGeometry {
    FromFile,
    Table(toml::Table),
}

impl<'de> Deserialize<'de> for RawGeometry {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) if s == FROM_FILE => Ok(RawGeometry::FromFile),
            toml::Value::Table(t) => Ok(RawGeometry::Table(t)),
            other => Err(de::Error::custom(format!(
                "unexpected {} {other}: expected a GeoJSON geometry such as {{ type = \"Polygon\", coordinates = [...] }}, or \"{FROM_FILE}\" (the footprint of a member's file)",
                other.type_str()
            ))),
        }
    }
}

/// One `[[job.assets]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAsset {
    pub(super) id: Spanned<String>,
    pub(super) file: Spanned<String>,
    pub(super) required: Option<Spanned<bool>>,
    pub(super) metadata: Option<Spanned<RawAssetMetadata>>,
}

/// `[job.watch]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) dir: Spanned<String>,
    pub(super) pattern: Spanned<String>,
    #[serde(default)]
    pub(super) recursive: bool,
    pub(super) ignore: Option<Vec<Spanned<String>>>,
    pub(super) settle: Option<Spanned<DurationText>>,
    pub(super) poll: Option<Spanned<DurationText>>,
    pub(super) bundle_timeout: Option<Spanned<DurationText>>,
    pub(super) bundle_incomplete: Option<Spanned<String>>,
}

/// An integer; its range is checked later so that the message can name the bounds. (serde's
/// own `i64` would say "expected i64".)
#[derive(Debug, Clone, Copy)]
pub(super) struct Int(pub(super) i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A humantime duration as written; parsed later so that every bad one is reported.
#[derive(Debug, Clone)]
pub(super) struct DurationText(pub(super) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string with a unit, such as \"90s\", \"5m\" or \"1h 30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size as written: a number of bytes or a string with a unit, parsed later.
#[derive(Debug, Clone)]
pub(super) enum Size {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"16MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                i64::try_from(v)
                    .map(Size::Bytes)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `keep` as written: a count of items or a duration, checked later.
#[derive(Debug, Clone)]
pub(super) enum RawKeep {
    Count(i64),
    Age(String),
}

impl<'de> Deserialize<'de> for RawKeep {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawKeep;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30d\" or a number of items such as 30")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKeep, E> {
                Ok(RawKeep::Count(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKeep, E> {
                i64::try_from(v)
                    .map(RawKeep::Count)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKeep, E> {
                Ok(RawKeep::Age(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}
