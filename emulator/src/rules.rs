//! What service-stac accepts in item, asset and collection bodies: one table of rules.
//!
//! Each entry names the file of the real server (under `app/stac_api/` of
//! geoadmin/service-stac) that it follows, so that the next quirk found there is one more line
//! here. The handlers in `api.rs` run a body through the table in the server's order:
//!
//! 1. the fields ([`ITEM`], [`ITEM_PROPERTIES`], [`ASSET`], [`COLLECTION_ASSET`],
//!    [`COLLECTION`]) with [`check_fields`]: every writable field at once, DRF style
//!    (`{"field": ["message"]}`), and only if they all pass,
//! 2. the serializer's `validate()`: the object rules below ([`item_datetimes`],
//!    [`item_expires`], [`asset_href`], [`asset_name_fits_type`]), which answer
//!    `{"non_field_errors": [..]}` or `{"href": [..]}`, then
//! 3. [`check_payload`] (`validate_json_payload`): unknown and read-only top-level keys, all
//!    reported together, then
//! 4. the view: [`renaming`].
//!
//! Not modelled, on purpose: the server parses geometries with GEOS but does not run its
//! `validate_geometry` on the API path (only the model's `full_clean`, used by the admin), so a
//! self-intersecting polygon or a latitude of 95 is accepted there and here (the validator
//! itself is [`crate::validate_geometry`], for tests to hold what a client stores to it); the reachability
//! GET of an external `href`; nested asset bodies inside an item.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::request::ApiVersion;

/// Whether a body may, must or must not carry a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Required,
    Optional,
    /// Refused at the top level ("Found read-only property in payload"), ignored when nested.
    ReadOnly,
}

/// How a field's value is checked (DRF field classes and the server's validators).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// `CharField(max_length=255, validators=[validate_name])`.
    Id,
    /// `CharField(max_length=255, validators=[validate_asset_name])`.
    AssetId,
    /// `CharField`: strings (numbers are turned into strings), trimmed.
    Str {
        max: Option<usize>,
        blank: bool,
    },
    /// `type`: a `CharField` checked by `validate_type` (immutable, then normalised).
    MediaType,
    Float,
    Int,
    Bool,
    /// `ChoiceField`.
    Choice(&'static [&'static str]),
    /// `CharField(max_length=25, validators=[validate_geoadmin_variant])`.
    Variant,
    /// `ListField(child=CharField(max_length))` (an ArrayField of the model).
    StrList {
        max: usize,
    },
    DateTime,
    /// `IsoDurationField`.
    Duration,
    /// rest_framework_gis `GeometryField`.
    Geometry,
    /// The nested `ItemsPropertiesSerializer`.
    Properties,
    /// `ItemLinkSerializer` / `CollectionLinkSerializer` (`many=True`).
    Links {
        type_max: usize,
    },
    /// `ProviderSerializer` (`many=True`).
    Providers,
    /// `HrefField`: anything; checked by [`asset_href`].
    Href,
    /// The nested `AssetsForItemSerializer` (a dict of assets).
    Assets,
}

/// One field of a body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    /// Its JSON name.
    pub(crate) name: &'static str,
    /// Where the server reports its errors (the forecast properties use the model's name).
    pub(crate) error_key: &'static str,
    pub(crate) access: Access,
    pub(crate) kind: Kind,
    /// Whether `null` is accepted.
    pub(crate) null: bool,
    /// The one API version that has it, if it is not in both.
    pub(crate) only: Option<ApiVersion>,
}

impl Field {
    const fn new(name: &'static str, access: Access, kind: Kind) -> Self {
        Field {
            name,
            error_key: name,
            access,
            kind,
            null: false,
            only: None,
        }
    }

    const fn nullable(mut self) -> Self {
        self.null = true;
        self
    }

    const fn errors_as(mut self, key: &'static str) -> Self {
        self.error_key = key;
        self
    }

    const fn v1(mut self) -> Self {
        self.only = Some(ApiVersion::V1);
        self
    }

    const fn v09(mut self) -> Self {
        self.only = Some(ApiVersion::V09);
        self
    }

    fn in_version(&self, version: ApiVersion) -> bool {
        self.only.is_none_or(|v| v == version)
    }
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field::new(name, Access::Required, kind)
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field::new(name, Access::Optional, kind)
}

/// Read-only: the kind is never used.
const fn ro(name: &'static str) -> Field {
    Field::new(name, Access::ReadOnly, Kind::Href)
}

const TITLE: Kind = Kind::Str {
    max: Some(255),
    blank: false,
};
const TEXT: Kind = Kind::Str {
    max: None,
    blank: false,
};

// ---------------------------------------------------------------------------------------------
// The tables.
// ---------------------------------------------------------------------------------------------

/// An item body: serializers/item.py `ItemSerializer` (`Meta.fields` and declared fields).
pub(crate) const ITEM: &[Field] = &[
    req("id", Kind::Id),                 // item.py: id CharField + validate_name
    ro("collection"),                    // item.py: SlugRelatedField read_only
    ro("type"),                          // item.py: SerializerMethodField
    ro("stac_version"),                  // item.py: SerializerMethodField
    req("geometry", Kind::Geometry),     // item.py: GeometryField(required=True)
    ro("bbox"),                          // item.py: BboxSerializer read_only
    req("properties", Kind::Properties), // item.py: ItemsPropertiesSerializer
    ro("stac_extensions"),               // item.py: SerializerMethodField
    opt("links", Kind::Links { type_max: 255 }), // item.py: ItemLinkSerializer(many=True)
    opt("assets", Kind::Assets),         // item.py: AssetsForItemSerializer(many)
];

/// Inside an item's `properties`: serializers/item.py `ItemsPropertiesSerializer`. Keys not
/// listed are dropped without a word (a nested serializer has no payload check).
pub(crate) const ITEM_PROPERTIES: &[Field] = &[
    opt("datetime", Kind::DateTime).nullable(), // item.py: DateTimeField(allow_null)
    opt("start_datetime", Kind::DateTime).nullable(), // item.py
    opt("end_datetime", Kind::DateTime).nullable(), // item.py
    opt("title", TITLE).nullable(),             // item.py: allow_blank=False, max_length=255
    ro("created"),                              // item.py: read_only (dropped when sent)
    ro("updated"),                              // item.py: read_only (dropped when sent)
    opt("expires", Kind::DateTime).nullable(),  // item.py; validators.py validate_expires
    // item.py to_internal_value maps "forecast:x" to the model's "forecast_x", under which
    // the errors come back.
    opt("forecast:reference_datetime", Kind::DateTime)
        .nullable()
        .errors_as("forecast_reference_datetime"),
    opt("forecast:horizon", Kind::Duration)
        .nullable()
        .errors_as("forecast_horizon"), // utils.py IsoDurationField
    opt("forecast:duration", Kind::Duration)
        .nullable()
        .errors_as("forecast_duration"), // utils.py IsoDurationField
    opt("forecast:variable", TEXT)
        .nullable()
        .errors_as("forecast_variable"),
    opt("forecast:perturbed", Kind::Bool)
        .nullable()
        .errors_as("forecast_perturbed"),
];

/// models/item.py `Asset.Language` (`geoadmin:lang`).
pub(crate) const LANGUAGES: &[&str] = &["de", "it", "fr", "rm", "en"];

/// An item asset body: serializers/item.py `AssetBaseSerializer` and its `get_fields`.
pub(crate) const ASSET: &[Field] = &[
    req("id", Kind::AssetId),                    // item.py: validate_asset_name
    opt("title", TITLE).nullable(),              // item.py
    req("type", Kind::MediaType),                // item.py: validate_type
    opt("href", Kind::Href),                     // item.py HrefField; utils.py
    opt("description", TEXT).nullable(),         // item.py: allow_blank=False
    opt("gsd", Kind::Float).nullable().v1(),     // item.py get_fields: eo_gsd -> gsd
    opt("eo:gsd", Kind::Float).nullable().v09(), // item.py get_fields: v0.9 name
    opt("roles", Kind::StrList { max: 255 }).nullable().v1(), // models/general.py; not in v0.9
    opt("geoadmin:lang", Kind::Choice(LANGUAGES)).nullable(), // models/item.py Asset.Language
    opt("geoadmin:variant", Kind::Variant).nullable(), // validators.py validate_geoadmin_variant
    opt("proj:epsg", Kind::Int).nullable(),      // item.py IntegerField
    ro("file:checksum").v1(),                    // item.py get_fields
    ro("checksum:multihash").v09(),              // item.py get_fields: v0.9 name
    ro("created"),                               // item.py
    ro("updated"),                               // item.py
];

/// A collection asset body: serializers/collection.py `CollectionAssetBaseSerializer` (no
/// gsd, no geoadmin fields).
pub(crate) const COLLECTION_ASSET: &[Field] = &[
    req("id", Kind::AssetId),                                 // collection.py
    opt("title", TITLE).nullable(),                           // collection.py
    req("type", Kind::MediaType),                             // collection.py: validate_type
    opt("href", Kind::Href),                                  // collection.py HrefField
    opt("description", TEXT).nullable(),                      // collection.py
    opt("roles", Kind::StrList { max: 255 }).nullable().v1(), // collection.py get_fields
    opt("proj:epsg", Kind::Int).nullable(),                   // collection.py
    ro("file:checksum").v1(),                                 // collection.py get_fields
    ro("checksum:multihash").v09(),                           // collection.py get_fields
    ro("created"),                                            // collection.py
    ro("updated"),                                            // collection.py
];

/// A collection body: serializers/collection.py `CollectionSerializer`. `type` is not a field
/// there (the answer adds it), so a body with it is refused as unexpected.
pub(crate) const COLLECTION: &[Field] = &[
    opt("published", Kind::Bool), // collection.py: write_only, default True
    ro("stac_version"),           // collection.py
    ro("stac_extensions"),        // collection.py
    req("id", Kind::Id),          // collection.py: validate_name
    opt("title", TITLE),          // collection.py: allow_blank=False
    req("description", TEXT),     // models/collection.py: TextField()
    ro("summaries"),              // collection.py
    ro("extent"),                 // collection.py
    opt("providers", Kind::Providers), // collection.py ProviderSerializer
    req(
        "license",
        Kind::Str {
            max: Some(30),
            blank: false,
        },
    ), // models/collection.py
    ro("created"),                // collection.py
    ro("updated"),                // collection.py
    opt("links", Kind::Links { type_max: 150 }), // collection.py CollectionLinkSerializer
    ro("crs"),                    // collection.py
    ro("itemType"),               // collection.py
    ro("assets"),                 // collection.py: read_only
];

/// validators.py `validate_link_rel`: rels the server generates itself.
const RESERVED_RELS: &[&str] = &[
    "self",
    "root",
    "parent",
    "items",
    "collection",
    "service-desc",
    "service-doc",
    "search",
    "conformance",
];

/// validators.py `MEDIA_TYPES`: every media type an asset may have, normalised, with the
/// extensions its id may end in.
pub(crate) const MEDIA_TYPES: &[(&str, &[&str])] = &[
    ("application/vnd.apache.parquet", &[".parquet"]),
    ("application/x.ascii-grid+zip", &[".zip"]),
    ("application/x.ascii-xyz+zip", &[".zip"]),
    ("application/x.e00+zip", &[".zip"]),
    ("application/x.geotiff+zip", &[".zip"]),
    ("image/tiff; application=geotiff", &[".tiff", ".tif"]),
    ("application/x.tiff+zip", &[".zip"]),
    ("application/x.png+zip", &[".zip"]),
    ("application/x.jpeg+zip", &[".zip"]),
    ("application/vnd.google-earth.kml+xml", &[".kml"]),
    ("application/vnd.google-earth.kmz", &[".kmz"]),
    ("application/x.dxf+zip", &[".zip"]),
    ("application/gml+xml", &[".gml", ".xml"]),
    ("application/x.gml+zip", &[".zip"]),
    ("application/vnd.las", &[".las"]),
    ("application/vnd.laszip", &[".laz", ".zip"]),
    ("application/x.vnd.las+zip", &[".zip"]),
    ("application/vnd.laszip+copc", &[".zip", ".laz"]),
    ("application/x.shapefile+zip", &[".zip"]),
    ("application/x.filegdb+zip", &[".zip"]),
    ("application/x.filegdbp+zip", &[".zip"]),
    ("application/x.ms-access+zip", &[".zip"]),
    ("application/x.ms-excel+zip", &[".zip"]),
    ("application/x.tab+zip", &[".zip"]),
    ("application/x.tab-raster+zip", &[".zip"]),
    ("application/x.csv+zip", &[".zip"]),
    ("text/csv", &[".csv"]),
    ("application/geopackage+sqlite3", &[".gpkg"]),
    ("application/x.geopackage+zip", &[".zip"]),
    ("application/geo+json", &[".json", ".geojson"]),
    ("application/x.geojson+zip", &[".zip"]),
    ("application/x.interlis; version=2.3", &[".xtf", ".xml"]),
    ("application/x.interlis+zip; version=2.3", &[".zip"]),
    ("application/x.interlis; version=2.4", &[".xtf", ".xml"]),
    ("application/x.interlis+zip; version=2.4", &[".zip"]),
    ("application/x.interlis; version=1", &[".itf"]),
    ("application/x.interlis+zip; version=1", &[".zip"]),
    (
        "image/tiff; application=geotiff; profile=cloud-optimized",
        &[".tiff", ".tif"],
    ),
    ("application/pdf", &[".pdf"]),
    ("application/x.pdf+zip", &[".zip"]),
    ("application/json", &[".json"]),
    ("application/x.json+zip", &[".zip"]),
    ("application/x-netcdf", &[".nc"]),
    ("application/x.netcdf+zip", &[".zip"]),
    ("application/xml", &[".xml"]),
    ("application/x.xml+zip", &[".zip"]),
    ("application/vnd.mapbox-vector-tile", &[".mbtiles"]),
    ("text/plain", &[".txt"]),
    ("text/x.plain+zip", &[".zip"]),
    ("application/x.dwg+zip", &[".zip"]),
    ("application/zip", &[".zip"]),
    ("image/tiff", &[".tiff", ".tif"]),
    ("image/jpeg", &[".jpeg", ".jpg"]),
    ("image/png", &[".png"]),
    ("application/vnd.sqlite3", &[".sqlite"]),
    ("application/grib", &[".grib", ".grib2"]),
    ("application/x-hdf5", &[".h5"]),
    ("application/x.aixm", &[".aixm"]),
    ("application/x.aixm+zip", &[".zip"]),
    ("application/x-tar", &[".tar"]),
];

/// settings_prod.py `DISALLOWED_EXTERNAL_ASSET_URL_SCHEMES` (its default).
const DISALLOWED_HREF_SCHEMES: &[&str] = &["http"];

// The messages, as the server words them (clients match on them).
pub(crate) const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";
const BLANK: &str = "This field may not be blank.";
const NOT_A_STRING: &str = "Not a valid string.";
const UNEXPECTED: &str = "Unexpected property in payload"; // validators_serializer.py
const READ_ONLY: &str = "Found read-only property in payload"; // validators_serializer.py
const BAD_ID: &str = "Invalid id, only the following characters are allowed: 0-9a-z-_."; // validators.py
const BAD_DATETIME: &str = "Datetime has wrong format. Use one of these formats instead: \
                            YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."; // DRF
const BAD_DURATION: &str = "Duration doesn't match ISO 8601 format"; // utils.py IsoDurationField
const GEOS_REFUSED: &str = "Invalid format: string or unicode input unrecognized as GeoJSON, WKT \
                            EWKT or HEXEWKB."; // rest_framework_gis fields.py
const OGR_REFUSED: &str = "Unable to convert to python object: Invalid geometry pointer returned \
                           from \"OGR_G_CreateGeometryFromJson\"."; // rest_framework_gis + GDAL
const TYPE_EDITED: &str = "Type field cannot be edited. You need to delete and recreate the \
                           asset with the correct type"; // item.py validate_type
pub(crate) const RENAMING: &str = "Renaming is not allowed"; // validators_view.py

// ---------------------------------------------------------------------------------------------
// Step 1: fields.
// ---------------------------------------------------------------------------------------------

/// What a field check may need besides the value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The stored media type of the asset a PUT or PATCH replaces.
    pub(crate) existing_type: Option<&'a str>,
}

/// Checks the writable fields of `table` present in `body` (all of them and the required ones
/// when not `partial`); returns their cleaned values, or every field's errors at once.
pub(crate) fn check_fields(
    table: &[Field],
    version: ApiVersion,
    body: &Map<String, Value>,
    partial: bool,
    ctx: &Context<'_>,
) -> Result<Map<String, Value>, Map<String, Value>> {
    let mut clean = Map::new();
    let mut errors = Map::new();
    for field in table
        .iter()
        .filter(|f| f.in_version(version) && f.access != Access::ReadOnly)
    {
        match body.get(field.name) {
            None if field.access == Access::Required && !partial => {
                errors.insert(field.error_key.into(), json!([REQUIRED]));
            }
            None => {}
            Some(Value::Null) if field.null => {
                clean.insert(field.name.into(), Value::Null);
            }
            Some(Value::Null) => {
                errors.insert(field.error_key.into(), json!([NOT_NULL]));
            }
            Some(value) => match check_value(field.kind, value, version, ctx) {
                Ok(value) => {
                    clean.insert(field.name.into(), value);
                }
                Err(e) => {
                    errors.insert(field.error_key.into(), e);
                }
            },
        }
    }
    if errors.is_empty() {
        Ok(clean)
    } else {
        Err(errors)
    }
}

fn list(message: impl Into<String>) -> Value {
    json!([message.into()])
}

fn check_value(
    kind: Kind,
    value: &Value,
    version: ApiVersion,
    ctx: &Context<'_>,
) -> Result<Value, Value> {
    match kind {
        Kind::Id => {
            let id = check_str(value, Some(255), false, &[&|s| check_name(s)])?;
            Ok(id.into())
        }
        Kind::AssetId => {
            let id = check_str(value, Some(255), false, &[&|s| check_asset_name(s)])?;
            Ok(id.into())
        }
        Kind::Str { max, blank } => Ok(check_str(value, max, blank, &[])?.into()),
        Kind::Variant => Ok(check_str(value, Some(25), false, &[&|s| check_variant(s)])?.into()),
        Kind::MediaType => {
            let given = check_str(value, None, false, &[])?;
            // item.py validate_type: compared as given, before it is normalised.
            if ctx.existing_type.is_some_and(|t| t != given) {
                return Err(list(TYPE_EDITED));
            }
            normalize_media_type(&given)
                .map(Value::String)
                .ok_or_else(|| list(format!("Invalid media type \"{given}\"")))
        }
        Kind::Float => check_float(value).map(Value::from),
        Kind::Int => check_int(value).map(Value::from),
        Kind::Bool => check_bool(value).map(Value::from),
        Kind::Choice(choices) => {
            let text = py_str(value);
            choices
                .iter()
                .find(|c| **c == text)
                .map(|c| Value::from(*c))
                .ok_or_else(|| list(format!("\"{text}\" is not a valid choice.")))
        }
        Kind::StrList { max } => check_str_list(value, max),
        Kind::DateTime => match value.as_str().and_then(parse_datetime) {
            Some(t) => Ok(isoformat(t).into()),
            None => Err(list(BAD_DATETIME)),
        },
        Kind::Duration => match value.as_str().and_then(parse_duration) {
            Some(d) => Ok(duration_iso_string(d).into()),
            None => Err(list(BAD_DURATION)),
        },
        Kind::Geometry => check_geometry(value),
        Kind::Properties => check_properties(value, version, ctx),
        Kind::Links { type_max } => check_links(value, type_max),
        Kind::Providers => check_providers(value),
        Kind::Href | Kind::Assets => Ok(value.clone()),
    }
}

type Validator<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// DRF `CharField`: numbers become strings, whitespace is trimmed, then the validators and the
/// length (every failing one is reported).
fn check_str(
    value: &Value,
    max: Option<usize>,
    blank: bool,
    validators: &[Validator<'_>],
) -> Result<String, Value> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return Err(list(NOT_A_STRING)),
    };
    if text.is_empty() {
        return if blank { Ok(text) } else { Err(list(BLANK)) };
    }
    let mut errors: Vec<Value> = validators
        .iter()
        .filter_map(|v| v(&text).err().map(Value::from))
        .collect();
    if let Some(max) = max.filter(|m| text.chars().count() > *m) {
        errors.push(format!("Ensure this field has no more than {max} characters.").into());
    }
    if errors.is_empty() {
        Ok(text)
    } else {
        Err(Value::Array(errors))
    }
}

/// Python's `str()` of a JSON value, as the server's messages show it.
fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// Python's type name of a JSON value, as DRF's messages show it.
pub(crate) fn py_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// DRF `FloatField`: numbers, numeric strings (and booleans, as Python's `float()` takes them).
fn check_float(value: &Value) -> Result<f64, Value> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    parsed
        .filter(|f| f.is_finite())
        .ok_or_else(|| list("A valid number is required."))
}

/// DRF `IntegerField`: `12`, `"12"` and `12.0` pass, `12.5` does not.
fn check_int(value: &Value) -> Result<i64, Value> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(list("A valid integer is required.")),
    };
    let trimmed = text.trim_end();
    let without_zeros = match trimmed.rsplit_once('.') {
        Some((int, zeros)) if zeros.bytes().all(|b| b == b'0') => int,
        _ => trimmed,
    };
    without_zeros
        .trim()
        .parse::<i64>()
        .map_err(|_| list("A valid integer is required."))
}

/// DRF `BooleanField`'s true and false spellings.
fn check_bool(value: &Value) -> Result<bool, Value> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Ok(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Ok(false),
        Value::String(s) => match s.as_str() {
            "t" | "T" | "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on"
            | "On" | "ON" | "1" => Ok(true),
            "f" | "F" | "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off"
            | "Off" | "OFF" | "0" => Ok(false),
            _ => Err(list("Must be a valid boolean.")),
        },
        _ => Err(list("Must be a valid boolean.")),
    }
}

/// DRF `ListField(child=CharField)`; errors per index: `{"0": ["..."]}`.
fn check_str_list(value: &Value, max: usize) -> Result<Value, Value> {
    let Value::Array(items) = value else {
        return Err(list(format!(
            "Expected a list of items but got type \"{}\".",
            py_type(value)
        )));
    };
    let mut clean = Vec::new();
    let mut errors = Map::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Null => {
                errors.insert(i.to_string(), list(NOT_NULL));
            }
            _ => match check_str(item, Some(max), false, &[]) {
                Ok(s) => clean.push(Value::from(s)),
                Err(e) => {
                    errors.insert(i.to_string(), e);
                }
            },
        }
    }
    if errors.is_empty() {
        Ok(Value::Array(clean))
    } else {
        Err(Value::Object(errors))
    }
}

/// validators.py `validate_name`: `^[0-9a-z-_.]+$`, for collection, item and asset ids.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if valid { Ok(()) } else { Err(BAD_ID.into()) }
}

/// validators.py `validate_asset_name`: the id rule, then an extension of `MEDIA_TYPES`.
pub(crate) fn check_asset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Invalid id must not be empty".into());
    }
    check_name(name)?;
    let ext = extension(name);
    if MEDIA_TYPES
        .iter()
        .any(|(_, exts)| exts.contains(&ext.as_str()))
    {
        Ok(())
    } else {
        Err(format!(
            "Invalid id extension '{ext}', id must have a valid file extension"
        ))
    }
}

/// `.` and what follows the last dot (the whole name when there is none), as the server cuts it.
fn extension(name: &str) -> String {
    format!(".{}", name.rsplit('.').next().unwrap_or(name))
}

/// validators.py `validate_geoadmin_variant`: words of letters and digits, one space apart.
fn check_variant(variant: &str) -> Result<(), String> {
    let mut words = variant.split(|c: char| c.is_whitespace());
    let valid = words.all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric()));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "Invalid geoadmin:variant \"{variant}\", special characters beside one space are \
             not allowed"
        ))
    }
}

/// A media-type token (validators.py `MT_VAR`).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
}

/// validators.py `normalize_and_validate_media_type`: type and parameter names lowercased,
/// parameters sorted, `; ` between them; no spaces around `=`, no quotes. The normalised type
/// if it is in [`MEDIA_TYPES`].
pub(crate) fn normalize_media_type(given: &str) -> Option<String> {
    let mut parts = given.split(';');
    let main = parts.next()?;
    let (kind, sub) = main.split_once('/')?;
    // Whitespace is only allowed around the semicolons.
    let main_ok = is_token(kind) && is_token(sub) && !main.ends_with([' ', '\t']);
    if !main_ok {
        return None;
    }
    let mut params = Vec::new();
    for param in parts {
        let param = param.trim_matches([' ', '\t']);
        let (name, value) = param.split_once('=')?;
        if !is_token(name) || !is_token(value) {
            return None;
        }
        params.push(format!("; {}={value}", name.to_ascii_lowercase()));
    }
    params.sort();
    let normalized = format!("{}{}", main.to_ascii_lowercase(), params.concat());
    MEDIA_TYPES
        .iter()
        .any(|(t, _)| *t == normalized)
        .then_some(normalized)
}

/// validators.py `validate_asset_name_with_media_type`, for a normalised media type.
pub(crate) fn check_name_fits_type(name: &str, media_type: &str) -> Result<(), String> {
    let ext = extension(name);
    let fits = MEDIA_TYPES
        .iter()
        .find(|(t, _)| *t == media_type)
        .is_some_and(|(_, exts)| exts.contains(&ext.as_str()));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "Invalid id extension '{ext}', id must match its media type {media_type}"
        ))
    }
}

/// A media type of the table whose extensions include the id's (for assets made behind the
/// API's back).
pub(crate) fn media_type_for(asset_id: &str) -> &'static str {
    let ext = extension(asset_id);
    MEDIA_TYPES
        .iter()
        .find(|(_, exts)| exts.contains(&ext.as_str()))
        .map_or("application/zip", |(t, _)| t)
}

/// Django's `parse_datetime` (what DRF's `DateTimeField` uses): ISO 8601 with `T` or a space,
/// seconds and fraction optional, an offset or none (then UTC, the server's time zone).
pub(crate) fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1)) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M%:z",
        "%Y-%m-%dT%H:%M%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// DRF's `DateTimeField` answer: Python's `isoformat()` in UTC, `Z` for `+00:00`.
pub(crate) fn isoformat(t: DateTime<Utc>) -> String {
    let micros = t.timestamp_subsec_micros();
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        format!("{}.{micros:06}Z", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// Django's `parse_duration`, ISO 8601 form (`P3DT6H`, days and time only: no years, months
/// or weeks) and its own `[D ]HH:MM:SS[.ffffff]` form.
pub(crate) fn parse_duration(s: &str) -> Option<TimeDelta> {
    parse_iso_duration(s).or_else(|| parse_clock_duration(s))
}

fn parse_iso_duration(s: &str) -> Option<TimeDelta> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let rest = rest.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut micros = 0f64;
    if !date.is_empty() {
        micros += number(date.strip_suffix('D')?)? * 86_400e6;
    }
    if let Some(mut time) = time {
        for (unit, scale) in [('H', 3_600e6), ('M', 60e6), ('S', 1e6)] {
            if let Some((n, after)) = time.split_once(unit) {
                micros += number(n)? * scale;
                time = after;
            }
        }
        if !time.is_empty() {
            return None;
        }
    }
    // Python rounds the float microseconds of the timedelta.
    #[allow(clippy::cast_possible_truncation)]
    let micros = micros.round() as i64;
    let delta = TimeDelta::microseconds(micros);
    Some(if negative { -delta } else { delta })
}

/// `\d+([.,]\d+)?` of a duration component.
fn number(s: &str) -> Option<f64> {
    let (int, frac) = match s.split_once(['.', ',']) {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    format!("{int}.{}", frac.unwrap_or("0")).parse().ok()
}

fn parse_clock_duration(s: &str) -> Option<TimeDelta> {
    let (days, clock) = match s.split_once(' ') {
        Some((d, rest)) => {
            let rest = rest
                .strip_prefix("days, ")
                .or_else(|| rest.strip_prefix("day, "))
                .unwrap_or(rest);
            (d.parse::<i64>().ok()?, rest)
        }
        None => (0, s),
    };
    let (clock, micros) = match clock.split_once(['.', ',']) {
        Some((c, f)) if (1..=6).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            (c, format!("{f:0<6}").parse::<i64>().ok()?)
        }
        Some(_) => return None,
        None => (clock, 0),
    };
    let fields: Vec<&str> = clock.split(':').collect();
    if fields.len() > 3
        || fields
            .iter()
            .any(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let seconds = fields
        .iter()
        .rev()
        .zip([1i64, 60, 3600])
        .map(|(f, scale)| f.parse::<i64>().map(|n| n * scale))
        .sum::<Result<i64, _>>()
        .ok()?;
    Some(TimeDelta::days(days) + TimeDelta::seconds(seconds) + TimeDelta::microseconds(micros))
}

/// Django's `duration_iso_string`, how the server answers a duration: `P0DT06H00M00S`.
pub(crate) fn duration_iso_string(d: TimeDelta) -> String {
    let (sign, d) = if d < TimeDelta::zero() {
        ("-", -d)
    } else {
        ("", d)
    };
    let days = d.num_days();
    let rest = d - TimeDelta::days(days);
    let seconds = rest.num_seconds();
    let micros = rest.subsec_nanos() / 1000;
    let fraction = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    format!(
        "{sign}P{days}DT{:02}H{:02}M{:02}{fraction}S",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// rest_framework_gis `GeometryField` over GDAL and GEOS: GDAL refuses what is not GeoJSON,
/// GEOS what it cannot build (an unclosed ring, a ring of fewer than 3 positions, a line of
/// fewer than 2, empty coordinates here). GEOS builds a closed 3-position ring (its
/// `LinearRing::MINIMUM_VALID_SIZE` is 3) and the item serializer never asks GEOS whether the
/// geometry is valid (`validate_geometry` is a model validator, not run on save), so the server
/// stores such a polygon. Answers the geometry with float coordinates.
fn check_geometry(value: &Value) -> Result<Value, Value> {
    match value {
        Value::Object(_) => {}
        // GEOSGeometry(str) tries WKT and HEX, which the emulator does not parse.
        Value::String(_) => {
            return Err(list(
                "Unable to convert to python object: String input unrecognized as WKT EWKT, and \
                 HEXEWKB.",
            ));
        }
        other => {
            return Err(list(format!(
                "Unable to convert to python object: Improper geometry input type: <class '{}'>",
                py_type(other)
            )));
        }
    }
    geometry(value).map_err(list)
}

fn geometry(value: &Value) -> Result<Value, &'static str> {
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(OGR_REFUSED);
    };
    if kind == "GeometryCollection" {
        let Some(Value::Array(members)) = value.get("geometries") else {
            return Err(OGR_REFUSED);
        };
        if members.is_empty() {
            return Err(GEOS_REFUSED);
        }
        let members = members
            .iter()
            .map(geometry)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(json!({"type": kind, "geometries": members}));
    }
    let coordinates = value.get("coordinates").ok_or(OGR_REFUSED)?;
    let depth = match kind {
        "Point" => 0,
        "MultiPoint" | "LineString" => 1,
        "MultiLineString" | "Polygon" => 2,
        "MultiPolygon" => 3,
        _ => return Err(OGR_REFUSED),
    };
    let clean = nested_positions(coordinates, depth)?;
    let check_line = |line: &Value, ring: bool| -> Result<(), &'static str> {
        let points = line.as_array().map_or(&[][..], Vec::as_slice);
        let too_few = if ring {
            points.len() < 3
        } else {
            points.len() < 2
        };
        if too_few || (ring && points.first() != points.last()) {
            return Err(GEOS_REFUSED);
        }
        Ok(())
    };
    let arrays = |v: &Value| v.as_array().cloned().unwrap_or_default();
    match kind {
        "Point" => {}
        "MultiPoint" => {
            if arrays(&clean).is_empty() {
                return Err(GEOS_REFUSED);
            }
        }
        "LineString" => check_line(&clean, false)?,
        "MultiLineString" | "Polygon" => {
            let lines = arrays(&clean);
            if lines.is_empty() {
                return Err(GEOS_REFUSED);
            }
            for line in &lines {
                check_line(line, kind == "Polygon")?;
            }
        }
        _ => {
            let polygons = arrays(&clean);
            if polygons.is_empty() {
                return Err(GEOS_REFUSED);
            }
            for polygon in &polygons {
                let rings = arrays(polygon);
                if rings.is_empty() {
                    return Err(GEOS_REFUSED);
                }
                for ring in &rings {
                    check_line(ring, true)?;
                }
            }
        }
    }
    Ok(json!({"type": kind, "coordinates": clean}))
}

/// Arrays `depth` deep of positions (2 or 3 numbers), the numbers as floats.
fn nested_positions(value: &Value, depth: usize) -> Result<Value, &'static str> {
    let Value::Array(items) = value else {
        return Err(OGR_REFUSED);
    };
    if depth == 0 {
        let numbers: Option<Vec<Value>> =
            items.iter().map(|n| n.as_f64().map(Value::from)).collect();
        return match numbers {
            Some(n) if (2..=3).contains(&n.len()) => Ok(Value::Array(n)),
            _ => Err(OGR_REFUSED),
        };
    }
    items
        .iter()
        .map(|i| nested_positions(i, depth - 1))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// The bounding box the server computes from a geometry (GEOS `extent`): `[w, s, e, n]`.
pub(crate) fn bbox(geometry: &Value) -> Value {
    fn walk(v: &Value, acc: &mut [f64; 4]) {
        match v {
            Value::Array(items) if items.first().is_some_and(Value::is_number) => {
                if let (Some(x), Some(y)) = (
                    items.first().and_then(Value::as_f64),
                    items.get(1).and_then(Value::as_f64),
                ) {
                    acc[0] = acc[0].min(x);
                    acc[1] = acc[1].min(y);
                    acc[2] = acc[2].max(x);
                    acc[3] = acc[3].max(y);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, acc)),
            Value::Object(map) => {
                for key in ["coordinates", "geometries"] {
                    if let Some(inner) = map.get(key) {
                        walk(inner, acc);
                    }
                }
            }
            _ => {}
        }
    }
    let mut acc = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    walk(geometry, &mut acc);
    if acc[0].is_finite() {
        json!(acc)
    } else {
        json!([0.0, 0.0, 0.0, 0.0])
    }
}

/// The nested properties: keys outside [`ITEM_PROPERTIES`] (and the read-only ones) are
/// dropped; the rest answered as the server renders them, `null`s left out.
fn check_properties(value: &Value, version: ApiVersion, ctx: &Context<'_>) -> Result<Value, Value> {
    let Value::Object(map) = value else {
        return Err(json!({"non_field_errors": [format!(
            "Invalid data. Expected a dictionary, but got {}.",
            py_type(value)
        )]}));
    };
    let clean = check_fields(ITEM_PROPERTIES, version, map, false, ctx).map_err(Value::Object)?;
    Ok(Value::Object(
        clean.into_iter().filter(|(_, v)| !v.is_null()).collect(),
    ))
}

/// A URL as Django's `URLValidator` takes it: http(s) or ftp(s), with a host.
fn valid_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| {
        ["http", "https", "ftp", "ftps"].contains(&u.scheme())
            && u.host_str().is_some_and(|h| !h.is_empty())
    }) && !s.chars().any(char::is_whitespace)
}

/// A nested object's cleaned fields, or its errors by field.
type Checked = Result<Map<String, Value>, Map<String, Value>>;

/// A list of nested objects, DRF's `many=True`: per-item errors in a list, `{}` for the good
/// ones.
fn check_many(
    value: &Value,
    each: &dyn Fn(&Map<String, Value>) -> Checked,
) -> Result<Vec<Map<String, Value>>, Value> {
    let Value::Array(items) = value else {
        return Err(list(format!(
            "Expected a list of items but got type \"{}\".",
            py_type(value)
        )));
    };
    let mut clean = Vec::new();
    let mut errors = Vec::new();
    for item in items {
        match item {
            Value::Object(map) => match each(map) {
                Ok(c) => {
                    clean.push(c);
                    errors.push(json!({}));
                }
                Err(e) => errors.push(Value::Object(e)),
            },
            other => errors.push(json!({"non_field_errors": [format!(
                "Invalid data. Expected a dictionary, but got {}.",
                py_type(other)
            )]})),
        }
    }
    if clean.len() == items.len() {
        Ok(clean)
    } else {
        Err(Value::Array(errors))
    }
}

/// serializers/item.py `ItemLinkSerializer`, serializers/collection.py
/// `CollectionLinkSerializer` (models/general.py `Link`): `href` and `rel` required, `rel` not
/// one the server makes; one link per `rel`, the last one winning (utils.py
/// `update_or_create_links`).
fn check_links(value: &Value, type_max: usize) -> Result<Value, Value> {
    let links = check_many(value, &|map| {
        let errors = link_errors(map, type_max);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut clean = Map::new();
        for name in ["rel", "href", "title", "type", "hreflang"] {
            if let Some(v) = map.get(name).filter(|v| !v.is_null()) {
                clean.insert(name.into(), py_str(v).trim().into());
            }
        }
        Ok(clean)
    })?;
    let mut by_rel: Vec<Map<String, Value>> = Vec::new();
    for link in links {
        match by_rel.iter_mut().find(|l| l.get("rel") == link.get("rel")) {
            Some(existing) => *existing = link,
            None => by_rel.push(link),
        }
    }
    Ok(Value::Array(
        by_rel.into_iter().map(Value::Object).collect(),
    ))
}

fn reserved_rel_message() -> String {
    let rels: Vec<String> = RESERVED_RELS.iter().map(|r| format!("'{r}'")).collect();
    format!(
        "Invalid rel attribute, must not be in [{}]",
        rels.join(", ")
    )
}

/// The errors of one refused link, field by field.
fn link_errors(map: &Map<String, Value>, type_max: usize) -> Map<String, Value> {
    let mut errors = Map::new();
    for (name, max, required) in [
        ("href", 2048, true),
        ("rel", 30, true),
        ("title", 255, false),
        ("type", type_max, false),
        ("hreflang", 32, false),
    ] {
        let problem: Option<Value> = match map.get(name) {
            None if required => Some(list(REQUIRED)),
            None => None,
            Some(Value::Null) if required || name == "type" => Some(list(NOT_NULL)),
            Some(Value::Null) => None,
            Some(v) => match check_str(v, Some(max), !required, &[]) {
                Err(e) => Some(e),
                Ok(h) if name == "href" && !valid_url(&h) => Some(list("Enter a valid URL.")),
                Ok(r) if name == "rel" && RESERVED_RELS.contains(&r.as_str()) => {
                    Some(list(reserved_rel_message()))
                }
                Ok(_) => None,
            },
        };
        if let Some(p) = problem {
            errors.insert(name.into(), p);
        }
    }
    errors
}

/// serializers/collection.py `ProviderSerializer` (models/general.py `Provider`): `name`
/// required.
fn check_providers(value: &Value) -> Result<Value, Value> {
    let providers = check_many(value, &|map| {
        let mut clean = Map::new();
        let mut errors = Map::new();
        match map.get("name") {
            None => {
                errors.insert("name".into(), list(REQUIRED));
            }
            Some(Value::Null) => {
                errors.insert("name".into(), list(NOT_NULL));
            }
            Some(v) => match check_str(v, Some(200), false, &[]) {
                Ok(n) => {
                    clean.insert("name".into(), n.into());
                }
                Err(e) => {
                    errors.insert("name".into(), e);
                }
            },
        }
        for name in ["description", "url"] {
            if let Some(Value::String(s)) = map.get(name) {
                clean.insert(name.into(), s.clone().into());
            }
        }
        if let Some(roles) = map.get("roles").filter(|r| !r.is_null()) {
            match check_str_list(roles, 9) {
                Ok(r) => {
                    clean.insert("roles".into(), r);
                }
                Err(e) => {
                    errors.insert("roles".into(), e);
                }
            }
        }
        if errors.is_empty() {
            Ok(clean)
        } else {
            Err(errors)
        }
    })?;
    Ok(Value::Array(
        providers.into_iter().map(Value::Object).collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Step 2: the serializers' `validate()`.
// ---------------------------------------------------------------------------------------------

fn non_field(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(json!({"non_field_errors": [message.into()]}))
}

/// validators.py `validate_item_properties_datetimes` (run by item.py `validate`): `datetime`,
/// or `start_datetime` and `end_datetime`, the end not before the start.
pub(crate) fn item_datetimes(properties: &Map<String, Value>) -> Result<(), ApiError> {
    let get = |k: &str| {
        properties
            .get(k)
            .and_then(Value::as_str)
            .and_then(parse_datetime)
    };
    let (datetime, start, end) = (get("datetime"), get("start_datetime"), get("end_datetime"));
    if datetime.is_some() {
        if start.is_some() || end.is_some() {
            return Err(non_field(
                "Cannot provide together property datetime with datetime range \
                 (start_datetime, end_datetime)",
            ));
        }
        return Ok(());
    }
    let Some(end) = end else {
        return Err(non_field(
            "Property end_datetime can't be null when no property datetime is given",
        ));
    };
    let Some(start) = start else {
        return Err(non_field(
            "Property start_datetime can't be null when no property datetime is given",
        ));
    };
    if end < start {
        return Err(non_field(
            "Property end_datetime can't refer to a date earlier than property start_datetime",
        ));
    }
    Ok(())
}

/// validators.py `validate_expires` (run by item.py `validate`).
pub(crate) fn item_expires(
    properties: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let expires = properties
        .get("expires")
        .and_then(Value::as_str)
        .and_then(parse_datetime);
    match expires {
        Some(t) if t < now => Err(non_field("Property expires can't be in the past.")),
        _ => Ok(()),
    }
}

/// Whether a collection takes external assets (admin settings, not in the API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExternalAssets {
    /// models/collection.py `allow_external_assets`.
    pub(crate) allowed: bool,
    /// models/collection.py `external_asset_whitelist`: URL prefixes.
    pub(crate) whitelist: Vec<String>,
}

/// serializers/utils.py `validate_href_field` and validators.py `validate_href_url` (the
/// reachability GET is not made): an `href` only where the collection allows external assets.
pub(crate) fn asset_href(
    href: Option<&Value>,
    external: &ExternalAssets,
) -> Result<Option<String>, ApiError> {
    let Some(href) = href else {
        return Ok(None);
    };
    let refuse = |m: &str| ApiError::bad_request(json!({"href": [m]}));
    if !external.allowed {
        return Err(refuse(READ_ONLY));
    }
    let href = py_str(href);
    if let Some((scheme, _)) = href.split_once(':')
        && DISALLOWED_HREF_SCHEMES.contains(&scheme)
    {
        return Err(refuse(&format!("{scheme} is not a allowed url scheme")));
    }
    if !valid_url(&href) {
        return Err(refuse("Invalid URL provided"));
    }
    if !external
        .whitelist
        .iter()
        .any(|prefix| href.starts_with(prefix.as_str()))
    {
        return Err(refuse(
            "Invalid URL provided. It doesn't match the collection whitelist",
        ));
    }
    Ok(Some(href))
}

/// validators.py `validate_asset_name_with_media_type` (run by item.py and collection.py
/// `validate`).
pub(crate) fn asset_name_fits_type(name: &str, media_type: &str) -> Result<(), ApiError> {
    check_name_fits_type(name, media_type).map_err(non_field)
}

// ---------------------------------------------------------------------------------------------
// Step 3: validators_serializer.py `validate_json_payload`.
// ---------------------------------------------------------------------------------------------

/// Every top-level key that is not a field of `table`, and every read-only one, in one answer.
pub(crate) fn check_payload(
    table: &[Field],
    version: ApiVersion,
    body: &Map<String, Value>,
) -> Result<(), ApiError> {
    let mut errors = Map::new();
    for key in body.keys() {
        match table
            .iter()
            .find(|f| f.name == key && f.in_version(version))
        {
            None => {
                errors.insert(key.clone(), list(UNEXPECTED));
            }
            Some(f) if f.access == Access::ReadOnly => {
                errors.insert(key.clone(), list(READ_ONLY));
            }
            Some(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(Value::Object(errors)))
    }
}

// ---------------------------------------------------------------------------------------------
// Step 4: the views.
// ---------------------------------------------------------------------------------------------

/// validators_view.py `validate_renaming`: the body's id must be the path's. Its message is a
/// string, not a list (raised after validation).
pub(crate) fn renaming(clean: &Map<String, Value>, path_id: &str) -> Result<(), ApiError> {
    match clean.get("id").and_then(Value::as_str) {
        Some(id) if id != path_id => Err(ApiError::bad_request(json!({"id": RENAMING}))),
        _ => Ok(()),
    }
}

/// views/mixins.py `DestroyModelMixin.perform_destroy`: an object with children is kept.
pub(crate) fn has_children(model: &str, children: &str) -> ApiError {
    ApiError::bad_request(json!([format!(
        "Deleting {model} with {children} not allowed"
    )]))
}

/// signals.py `check_on_going_upload`, through models/general.py `AssetBase.delete`.
pub(crate) fn upload_in_progress(asset: &str, collection_asset: bool) -> ApiError {
    let what = if collection_asset {
        "Collection Asset"
    } else {
        "Asset"
    };
    ApiError::bad_request(json!([format!(
        "{what} {asset} has still an upload in progress"
    )]))
}

/// The 500 an item body with `assets` gets: the serializer accepts the field, then Django
/// refuses to assign the reverse relation (item.py `update_or_create`).
pub(crate) fn item_assets_assigned() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "TypeError('Direct assignment to the reverse side of a related set is prohibited. Use \
         assets.set() instead.')",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_normalised_like_the_server() {
        assert_eq!(
            normalize_media_type("Image/TIFF;profile=cloud-optimized;  Application=geotiff")
                .as_deref(),
            Some("image/tiff; application=geotiff; profile=cloud-optimized")
        );
        // Parameter values keep their case, and then are not in the table.
        assert_eq!(
            normalize_media_type("image/tiff; application=GeoTIFF"),
            None
        );
        assert_eq!(
            normalize_media_type("image/tiff; application = geotiff"),
            None
        );
        assert_eq!(normalize_media_type("application/gzip"), None);
        assert_eq!(MEDIA_TYPES.len(), 60);
    }

    #[test]
    fn names_and_extensions() {
        assert!(check_asset_name("a.zip").is_ok());
        assert_eq!(
            check_asset_name("data").unwrap_err(),
            "Invalid id extension '.data', id must have a valid file extension"
        );
        assert!(check_asset_name("A.zip").is_err());
        assert_eq!(
            check_name_fits_type("scan.h5", "application/zip").unwrap_err(),
            "Invalid id extension '.h5', id must match its media type application/zip"
        );
        assert_eq!(media_type_for("x.geojson"), "application/geo+json");
    }

    #[test]
    fn durations_and_datetimes_render_as_python() {
        let d = parse_duration("PT6H").unwrap();
        assert_eq!(duration_iso_string(d), "P0DT06H00M00S");
        assert_eq!(
            duration_iso_string(parse_duration("P3DT2H30M1.5S").unwrap()),
            "P3DT02H30M01.500000S"
        );
        assert_eq!(
            duration_iso_string(parse_duration("-PT1S").unwrap()),
            "-P0DT00H00M01S"
        );
        assert_eq!(
            duration_iso_string(parse_duration("01:00:00").unwrap()),
            "P0DT01H00M00S"
        );
        for bad in ["P1HT2D", "P2D1H", "P1Y", "PT1X", "abc"] {
            assert!(parse_duration(bad).is_none(), "{bad}");
        }
        let t = parse_datetime("2020-10-28T15:05:10+02:00").unwrap();
        assert_eq!(isoformat(t), "2020-10-28T13:05:10Z");
        let t = parse_datetime("2020-10-28 13:05:10.5").unwrap();
        assert_eq!(isoformat(t), "2020-10-28T13:05:10.500000Z");
        assert!(parse_datetime("2020-10-28").is_some());
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn variants_are_words_one_space_apart() {
        assert!(check_variant("komb").is_ok());
        assert!(check_variant("krel 2").is_ok());
        assert!(check_variant("a  b").is_err());
        assert!(check_variant("a-b").is_err());
    }

    #[test]
    fn geometries_are_built_as_geos_would() {
        let ring = json!([[7.0, 46.0], [8.0, 46.0], [8.0, 47.0], [7.0, 46.0]]);
        assert!(geometry(&json!({"type": "Polygon", "coordinates": [ring]})).is_ok());
        let open = json!([[7.0, 46.0], [8.0, 46.0], [8.0, 47.0], [7.0, 47.0]]);
        assert_eq!(
            geometry(&json!({"type": "Polygon", "coordinates": [open]})),
            Err(GEOS_REFUSED)
        );
        // GEOS's least ring is 3 positions, closed.
        assert!(
            geometry(&json!({"type": "Polygon", "coordinates": [[[7, 46], [8, 46], [7, 46]]]}))
                .is_ok()
        );
        assert_eq!(
            geometry(&json!({"type": "Polygon", "coordinates": [[[7, 46], [7, 46]]]})),
            Err(GEOS_REFUSED)
        );
        assert_eq!(
            geometry(&json!({"type": "Blob", "coordinates": []})),
            Err(OGR_REFUSED)
        );
        assert_eq!(
            geometry(&json!({"type": "Point", "coordinates": [7]})),
            Err(OGR_REFUSED)
        );
        assert_eq!(
            bbox(&json!({"type": "LineString", "coordinates": [[7, 47], [8, 46]]})),
            json!([7.0, 46.0, 8.0, 47.0])
        );
    }
}
