//! One test per rule of `rules.rs`, over real HTTP: the refused body gets the real server's
//! status and body, a good one passes.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::*;

const READ_ONLY: &str = "Found read-only property in payload";
const UNEXPECTED: &str = "Unexpected property in payload";
const REQUIRED: &str = "This field is required.";
const BAD_ID: &str = "Invalid id, only the following characters are allowed: 0-9a-z-_.";

struct Api {
    emu: Emulator,
    http: Client,
}

/// An emulator with collection `coll` and item `item` (both PUT through the API).
async fn api() -> Api {
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    let api = Api {
        emu,
        http: Client::builder().no_proxy().build().unwrap(),
    };
    api.ok("collections/coll", collection_body("coll")).await;
    api.ok("collections/coll/items/item", item_body("item"))
        .await;
    api
}

fn collection_body(id: &str) -> Value {
    json!({"id": id, "description": "A collection", "license": "proprietary"})
}

fn polygon() -> Value {
    json!({"type": "Polygon", "coordinates": [[[7.0, 46.0], [8.0, 46.0], [8.0, 47.0], [7.0, 46.0]]]})
}

fn item_body(id: &str) -> Value {
    json!({"id": id, "geometry": polygon(), "properties": {"datetime": "2024-05-01T12:00:00Z"}})
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

fn props(properties: Value) -> Value {
    with(item_body("item"), "properties", properties)
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.emu.base_url())
    }

    async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::answer(
            self.http
                .put(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::answer(
            self.http
                .patch(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::answer(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::answer(self.http.delete(self.url(path)).send().await.unwrap()).await
    }

    /// A PUT that must pass; its answer.
    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.put(path, body).await;
        assert!(status.is_success(), "PUT {path}: {status} {answer}");
        answer
    }

    /// A PUT that must be refused with 400 and exactly this description.
    async fn refused(&self, path: &str, body: Value, description: Value) {
        let (status, answer) = self.put(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "PUT {path}: {answer}");
        assert_eq!(answer, json!({"code": 400, "description": description}));
    }
}

const ITEM: &str = "collections/coll/items/item";

// ---- items ----------------------------------------------------------------------------------

#[tokio::test]
async fn item_read_only_and_unexpected_keys_are_refused_together() {
    let api = api().await;
    let mut body = item_body("item");
    for (key, value) in [
        ("type", json!("Feature")),
        ("stac_version", json!("1.0.0")),
        ("bbox", json!([7, 46, 8, 47])),
        ("collection", json!("coll")),
        ("stac_extensions", json!([])),
        ("foo", json!(1)),
        ("proj:epsg", json!(2056)),
    ] {
        body[key] = value;
    }
    api.refused(
        ITEM,
        body,
        json!({
            "type": [READ_ONLY], "stac_version": [READ_ONLY], "bbox": [READ_ONLY],
            "collection": [READ_ONLY], "stac_extensions": [READ_ONLY],
            "foo": [UNEXPECTED], "proj:epsg": [UNEXPECTED],
        }),
    )
    .await;
    // The client's body once the computed fields are gone.
    let mut body = item_body("item");
    body["links"] = json!([]);
    api.ok(ITEM, body).await;
}

#[tokio::test]
async fn item_fields_are_required_and_checked_before_the_payload() {
    let api = api().await;
    api.refused(
        ITEM,
        json!({"id": "item", "bbox": [0, 0, 1, 1]}),
        json!({"geometry": [REQUIRED], "properties": [REQUIRED]}),
    )
    .await;
    api.refused(
        ITEM,
        json!({"geometry": null, "properties": "x"}),
        json!({
            "id": [REQUIRED],
            "geometry": ["This field may not be null."],
            "properties": {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]},
        }),
    )
    .await;
    api.refused(
        ITEM,
        json!(null),
        json!({"non_field_errors": ["No data provided"]}),
    )
    .await;
}

#[tokio::test]
async fn unknown_properties_are_dropped_and_gone_on_get() {
    let api = api().await;
    let body = props(json!({
        "datetime": "2024-05-01T14:00:00+02:00",
        "title": "  Radar  ",
        "proj:epsg": 2056,
        "foo": {"bar": 1},
        "created": "2000-01-01T00:00:00Z",
        "updated": "bogus",
    }));
    let answer = api.ok(ITEM, body).await;
    let (status, read) = api.get(ITEM).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, read);
    let properties = read["properties"].as_object().unwrap();
    let mut keys: Vec<&str> = properties.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created", "datetime", "title", "updated"]);
    // Rendered in UTC, trimmed; created/updated are the server's own.
    assert_eq!(properties["datetime"], "2024-05-01T12:00:00Z");
    assert_eq!(properties["title"], "Radar");
    assert_ne!(properties["created"], "2000-01-01T00:00:00Z");
}

#[tokio::test]
async fn ids_allow_only_the_server_charset() {
    let api = api().await;
    api.refused(
        "collections/Coll",
        collection_body("Coll"),
        json!({"id": [BAD_ID]}),
    )
    .await;
    api.refused(
        "collections/coll/items/Item_1",
        item_body("Item_1"),
        json!({"id": [BAD_ID]}),
    )
    .await;
    api.refused(
        "collections/coll/items/item/assets/Data.zip",
        json!({"id": "Data.zip", "type": "application/zip"}),
        json!({"id": [BAD_ID]}),
    )
    .await;
    api.ok("collections/coll/items/a-b_c.1", item_body("a-b_c.1"))
        .await;
}

#[tokio::test]
async fn renaming_is_refused_with_a_plain_message() {
    let api = api().await;
    api.refused(
        ITEM,
        item_body("other"),
        json!({"id": "Renaming is not allowed"}),
    )
    .await;
    api.refused(
        "collections/coll",
        collection_body("other"),
        json!({"id": "Renaming is not allowed"}),
    )
    .await;
    api.ok(
        "collections/coll/items/item/assets/a.zip",
        json!({"id": "a.zip", "type": "application/zip"}),
    )
    .await;
    api.refused(
        "collections/coll/items/item/assets/a.zip",
        json!({"id": "b.zip", "type": "application/zip"}),
        json!({"id": "Renaming is not allowed"}),
    )
    .await;
}

#[tokio::test]
async fn datetime_or_start_and_end() {
    let api = api().await;
    let cases = [
        (
            json!({}),
            "Property end_datetime can't be null when no property datetime is given",
        ),
        (
            json!({"datetime": "2024-01-01T00:00:00Z", "start_datetime": "2024-01-01T00:00:00Z"}),
            "Cannot provide together property datetime with datetime range (start_datetime, \
             end_datetime)",
        ),
        (
            json!({"start_datetime": "2024-01-01T00:00:00Z"}),
            "Property end_datetime can't be null when no property datetime is given",
        ),
        (
            json!({"end_datetime": "2024-01-01T00:00:00Z"}),
            "Property start_datetime can't be null when no property datetime is given",
        ),
        (
            json!({"start_datetime": "2024-01-02T00:00:00Z", "end_datetime": "2024-01-01T00:00:00Z"}),
            "Property end_datetime can't refer to a date earlier than property start_datetime",
        ),
    ];
    for (properties, message) in cases {
        api.refused(
            ITEM,
            props(properties),
            json!({"non_field_errors": [message]}),
        )
        .await;
    }
    api.refused(
        ITEM,
        props(json!({"datetime": "yesterday"})),
        json!({"properties": {"datetime": [
            "Datetime has wrong format. Use one of these formats instead: \
             YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
        ]}}),
    )
    .await;
    // The client's range form: datetime null with start and end.
    let read = api
        .ok(
            ITEM,
            props(
                json!({"datetime": null, "start_datetime": "2024-01-01T00:00:00Z",
                         "end_datetime": "2024-01-01T00:00:00Z"}),
            ),
        )
        .await;
    assert!(read["properties"].get("datetime").is_none(), "{read}");
}

#[tokio::test]
async fn expires_may_not_be_in_the_past_and_hides_the_item_when_reached() {
    let api = api().await;
    api.refused(
        ITEM,
        props(json!({"datetime": "2024-01-01T00:00:00Z", "expires": "2020-01-01T00:00:00Z"})),
        json!({"non_field_errors": ["Property expires can't be in the past."]}),
    )
    .await;
    let soon = rules::isoformat(chrono::Utc::now() + chrono::TimeDelta::milliseconds(1500));
    api.ok(
        ITEM,
        props(json!({"datetime": "2024-01-01T00:00:00Z", "expires": soon})),
    )
    .await;
    assert_eq!(api.get(ITEM).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(api.get(ITEM).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn forecast_properties_are_typed_and_rendered_as_the_server_does() {
    let api = api().await;
    let read = api
        .ok(
            ITEM,
            props(json!({
                "datetime": "2024-01-01T00:00:00Z",
                "forecast:reference_datetime": "2024-01-01T00:00:00Z",
                "forecast:horizon": "PT6H",
                "forecast:duration": "P1DT30M",
                "forecast:variable": "air_temperature",
                "forecast:perturbed": false,
            })),
        )
        .await;
    let p = &read["properties"];
    assert_eq!(p["forecast:horizon"], "P0DT06H00M00S");
    assert_eq!(p["forecast:duration"], "P1DT00H30M00S");
    assert_eq!(p["forecast:perturbed"], false);
    api.refused(
        ITEM,
        props(
            json!({"datetime": "2024-01-01T00:00:00Z", "forecast:horizon": "P1HT2D",
                     "forecast:perturbed": "maybe", "title": ""}),
        ),
        json!({"properties": {
            "forecast_horizon": ["Duration doesn't match ISO 8601 format"],
            "forecast_perturbed": ["Must be a valid boolean."],
            "title": ["This field may not be blank."],
        }}),
    )
    .await;
    api.refused(
        ITEM,
        props(json!({"datetime": "2024-01-01T00:00:00Z", "title": "t".repeat(256)})),
        json!({"properties": {"title": ["Ensure this field has no more than 255 characters."]}}),
    )
    .await;
}

#[tokio::test]
async fn geometries_must_be_buildable() {
    let api = api().await;
    let geos = "Invalid format: string or unicode input unrecognized as GeoJSON, WKT EWKT or \
                HEXEWKB.";
    let ogr = "Unable to convert to python object: Invalid geometry pointer returned from \
               \"OGR_G_CreateGeometryFromJson\".";
    let cases = [
        // An unclosed ring, a ring of 2 positions, a line of 1: GEOS cannot build them.
        (
            json!({"type": "Polygon", "coordinates": [[[7, 46], [8, 46], [8, 47], [7, 47]]]}),
            geos,
        ),
        (
            json!({"type": "Polygon", "coordinates": [[[7, 46], [7, 46]]]}),
            geos,
        ),
        (
            json!({"type": "LineString", "coordinates": [[7, 46]]}),
            geos,
        ),
        (json!({"type": "Polygon", "coordinates": []}), geos),
        // Not GeoJSON: GDAL refuses it.
        (json!({"type": "Circle", "coordinates": [7, 46]}), ogr),
        (json!({"type": "Point", "coordinates": [7]}), ogr),
        (json!({"type": "Point"}), ogr),
    ];
    for (geometry, message) in cases {
        api.refused(
            ITEM,
            with(item_body("item"), "geometry", geometry),
            json!({"geometry": [message]}),
        )
        .await;
    }
    // GEOS builds a closed ring of 3 positions (its minimum is 3, not 4), and the API does not
    // run validate_geometry: this degenerate polygon is stored, as the server stores it.
    let read = api
        .ok(
            ITEM,
            with(
                item_body("item"),
                "geometry",
                json!({"type": "Polygon", "coordinates": [[[7, 46], [8, 46], [7, 46]]]}),
            ),
        )
        .await;
    assert_eq!(read["bbox"], json!([7.0, 46.0, 8.0, 46.0]));
    // Nor are a bow tie and a latitude of 95 refused, as there.
    let bow_tie = json!({"type": "Polygon",
                         "coordinates": [[[7, 46], [8, 47], [8, 46], [7, 47], [7, 46]]]});
    api.ok(ITEM, with(item_body("item"), "geometry", bow_tie))
        .await;
    let read = api
        .ok(
            ITEM,
            with(
                item_body("item"),
                "geometry",
                json!({"type": "Point", "coordinates": [7, 95]}),
            ),
        )
        .await;
    assert_eq!(read["bbox"], json!([7.0, 95.0, 7.0, 95.0]));
}

#[tokio::test]
async fn an_item_get_looks_like_the_servers() {
    let api = api().await;
    let body = with(
        item_body("item"),
        "links",
        json!([{"rel": "describedby", "href": "https://example.com/doc", "foo": 1}]),
    );
    api.ok(ITEM, body).await;
    api.ok(
        "collections/coll/items/item/assets/a.zip",
        json!({"id": "a.zip", "type": "application/zip", "title": "A"}),
    )
    .await;
    let (_, read) = api.get(ITEM).await;
    let mut keys: Vec<&str> = read
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "assets",
            "bbox",
            "collection",
            "geometry",
            "id",
            "links",
            "properties",
            "stac_extensions",
            "stac_version",
            "type"
        ]
    );
    assert_eq!(read["type"], "Feature");
    assert_eq!(read["stac_version"], "1.0.0");
    assert_eq!(read["collection"], "coll");
    assert_eq!(read["bbox"], json!([7.0, 46.0, 8.0, 47.0]));
    let rels: Vec<&str> = read["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    assert_eq!(
        rels,
        ["self", "root", "parent", "collection", "describedby"]
    );
    assert_eq!(
        read["links"][4],
        json!({"rel": "describedby", "href": "https://example.com/doc"})
    );
    assert_eq!(read["assets"]["a.zip"]["title"], "A");
    assert!(read["assets"]["a.zip"].get("id").is_none());
    let v09 = format!("{}/collections/coll/items/item", api.emu.base_url_v09());
    let read: Value = api
        .http
        .get(v09)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["stac_version"], "0.9.0");
}

#[tokio::test]
async fn links_need_href_and_a_rel_of_their_own() {
    let api = api().await;
    api.refused(
        ITEM,
        with(
            item_body("item"),
            "links",
            json!([
                {"rel": "license", "href": "https://example.com/l"},
                {"rel": "self", "href": "not a url"},
                {"title": "t"},
            ]),
        ),
        json!({"links": [
            {},
            {"href": ["Enter a valid URL."], "rel": [
                "Invalid rel attribute, must not be in ['self', 'root', 'parent', 'items', \
                 'collection', 'service-desc', 'service-doc', 'search', 'conformance']"
            ]},
            {"href": [REQUIRED], "rel": [REQUIRED]},
        ]}),
    )
    .await;
    api.refused(
        ITEM,
        with(item_body("item"), "links", json!({})),
        json!({"links": ["Expected a list of items but got type \"dict\"."]}),
    )
    .await;
}

#[tokio::test]
async fn an_item_body_with_assets_is_a_server_error() {
    let api = api().await;
    let (status, answer) = api
        .put(ITEM, with(item_body("item"), "assets", json!({})))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        answer["description"]
            .as_str()
            .unwrap()
            .contains("Direct assignment to the reverse side"),
        "{answer}"
    );
}

#[tokio::test]
async fn items_and_collections_with_children_are_not_deleted() {
    let api = api().await;
    let asset = "collections/coll/items/item/assets/a.zip";
    api.ok(asset, json!({"id": "a.zip", "type": "application/zip"}))
        .await;
    assert_eq!(
        api.delete(ITEM).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "description": ["Deleting Item with assets not allowed"]})
        )
    );
    assert_eq!(
        api.delete("collections/coll").await,
        (
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "description": ["Deleting Collection with items not allowed"]})
        )
    );
    let (status, answer) = api.delete(asset).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["description"], "a.zip successfully deleted");
    assert_eq!(answer["links"][0]["rel"], "parent");
    let (status, answer) = api.delete(ITEM).await;
    assert_eq!(
        (status, &answer["description"]),
        (StatusCode::OK, &json!("coll/item successfully deleted"))
    );
    assert_eq!(api.get(ITEM).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.delete(ITEM).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.delete("collections/coll").await.0, StatusCode::OK);
    assert_eq!(api.get("collections/coll").await.0, StatusCode::NOT_FOUND);
}

// ---- assets ---------------------------------------------------------------------------------

const ASSET: &str = "collections/coll/items/item/assets/data.zip";

fn asset_body() -> Value {
    json!({"id": "data.zip", "type": "application/zip"})
}

#[tokio::test]
async fn asset_read_only_and_unexpected_keys_are_refused_together() {
    let api = api().await;
    let mut body = asset_body();
    for (key, value) in [
        ("file:checksum", json!("1220")),
        ("created", json!("2024-01-01T00:00:00Z")),
        ("updated", json!("2024-01-01T00:00:00Z")),
        ("links", json!([])),
        ("file:size", json!(3)),
        ("checksum:multihash", json!("1220")),
    ] {
        body[key] = value;
    }
    api.refused(
        ASSET,
        body,
        json!({
            "file:checksum": [READ_ONLY], "created": [READ_ONLY], "updated": [READ_ONLY],
            "links": [UNEXPECTED], "file:size": [UNEXPECTED], "checksum:multihash": [UNEXPECTED],
        }),
    )
    .await;
    let body = json!({"id": "data.zip", "type": "application/zip", "title": "T",
                      "description": "D", "roles": ["data"], "gsd": 2.5, "proj:epsg": 2056,
                      "geoadmin:lang": "de", "geoadmin:variant": "komb 1"});
    let answer = api.ok(ASSET, body).await;
    assert_eq!(answer["roles"], json!(["data"]));
    assert_eq!(answer["gsd"], 2.5);
    assert!(answer.get("file:size").is_none());
    let rels: Vec<&str> = answer["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    assert_eq!(rels, ["self", "root", "parent", "collection", "item"]);
}

#[tokio::test]
async fn asset_field_errors_come_together() {
    let api = api().await;
    // The server's own test_asset_upsert_create_invalid_data.
    api.refused(
        ASSET,
        json!({"id": "data.zip", "type": "dummy", "gsd": "x", "geoadmin:lang": 12,
               "proj:epsg": "a"}),
        json!({
            "gsd": ["A valid number is required."],
            "geoadmin:lang": ["\"12\" is not a valid choice."],
            "proj:epsg": ["A valid integer is required."],
            "type": ["Invalid media type \"dummy\""],
        }),
    )
    .await;
    api.refused(
        ASSET,
        json!({"id": "data.zip", "type": "application/zip", "title": "", "description": "",
               "geoadmin:lang": "", "geoadmin:variant": "more than twenty-five characters with s"}),
        json!({
            "title": ["This field may not be blank."],
            "description": ["This field may not be blank."],
            "geoadmin:lang": ["\"\" is not a valid choice."],
            "geoadmin:variant": [
                "Invalid geoadmin:variant \"more than twenty-five characters with s\", special \
                 characters beside one space are not allowed",
                "Ensure this field has no more than 25 characters.",
            ],
        }),
    )
    .await;
    api.refused(
        ASSET,
        json!({"id": "data.zip"}),
        json!({"type": [REQUIRED]}),
    )
    .await;
}

#[tokio::test]
async fn the_id_extension_must_fit_the_media_type() {
    let api = api().await;
    api.refused(
        "collections/coll/items/item/assets/scan.h5",
        json!({"id": "scan.h5", "type": "application/zip"}),
        json!({"non_field_errors": [
            "Invalid id extension '.h5', id must match its media type application/zip"
        ]}),
    )
    .await;
    api.refused(
        "collections/coll/items/item/assets/scan.bin",
        json!({"id": "scan.bin", "type": "application/zip"}),
        json!({"id": ["Invalid id extension '.bin', id must have a valid file extension"]}),
    )
    .await;
    api.ok(
        "collections/coll/items/item/assets/scan.h5",
        json!({"id": "scan.h5", "type": "application/x-hdf5"}),
    )
    .await;
}

#[tokio::test]
async fn media_types_come_from_the_servers_table_and_are_normalised() {
    let api = api().await;
    for unknown in [
        "application/gzip",
        "application/octet-stream",
        "image/tiff; application=GeoTIFF",
        "image/tiff; application = geotiff",
    ] {
        api.refused(
            "collections/coll/items/item/assets/dem.tif",
            json!({"id": "dem.tif", "type": unknown}),
            json!({"type": [format!("Invalid media type \"{unknown}\"")]}),
        )
        .await;
    }
    let answer = api
        .ok(
            "collections/coll/items/item/assets/dem.tif",
            json!({"id": "dem.tif", "type": "Image/TIFF;profile=cloud-optimized; Application=geotiff"}),
        )
        .await;
    assert_eq!(
        answer["type"],
        "image/tiff; application=geotiff; profile=cloud-optimized"
    );
}

#[tokio::test]
async fn an_asset_type_cannot_change() {
    let api = api().await;
    api.ok(ASSET, asset_body()).await;
    let edited = json!({"type": [
        "Type field cannot be edited. You need to delete and recreate the asset with the \
         correct type"
    ]});
    api.refused(
        ASSET,
        json!({"id": "data.zip", "type": "application/x.shapefile+zip"}),
        edited.clone(),
    )
    .await;
    // Compared as sent, before normalising: another spelling of the same type is a change too.
    api.refused(
        ASSET,
        json!({"id": "data.zip", "type": "Application/ZIP"}),
        edited.clone(),
    )
    .await;
    let (status, answer) = api
        .patch(ASSET, json!({"type": "application/x.shapefile+zip"}))
        .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "description": edited})
        )
    );
    let (status, answer) = api.patch(ASSET, json!({"title": "T", "foo": 1})).await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "description": {"foo": [UNEXPECTED]}})
        )
    );
    let (status, answer) = api.patch(ASSET, json!({"title": "T"})).await;
    assert_eq!((status, &answer["title"]), (StatusCode::OK, &json!("T")));
    api.ok(ASSET, asset_body()).await;
}

#[tokio::test]
async fn an_asset_put_keeps_the_optional_fields_it_leaves_out() {
    let api = api().await;
    api.ok(
        ASSET,
        with(
            with(asset_body(), "title", json!("T")),
            "proj:epsg",
            json!(2056),
        ),
    )
    .await;
    let answer = api
        .ok(ASSET, with(asset_body(), "proj:epsg", json!(null)))
        .await;
    assert_eq!(answer["title"], "T");
    assert!(answer.get("proj:epsg").is_none(), "{answer}");
}

#[tokio::test]
async fn href_only_where_the_collection_allows_external_assets() {
    let api = api().await;
    let body = with(
        asset_body(),
        "href",
        json!("https://data.example.com/data.zip"),
    );
    api.refused(ASSET, body.clone(), json!({"href": [READ_ONLY]}))
        .await;
    let (status, answer) = api
        .patch(ASSET, json!({"href": "https://data.example.com/x"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    api.emu
        .allow_external_assets("coll", &["https://data.example.com/"])
        .unwrap();
    let answer = api.ok(ASSET, body).await;
    assert_eq!(answer["href"], "https://data.example.com/data.zip");
    for (href, message) in [
        (
            "http://data.example.com/data.zip",
            "http is not a allowed url scheme",
        ),
        (
            "https://elsewhere.example.com/data.zip",
            "Invalid URL provided. It doesn't match the collection whitelist",
        ),
        ("not a url", "Invalid URL provided"),
    ] {
        api.refused(
            ASSET,
            with(asset_body(), "href", json!(href)),
            json!({"href": [message]}),
        )
        .await;
    }
}

#[tokio::test]
async fn v09_asset_fields_have_their_old_names() {
    let api = api().await;
    let url = format!("{}/{ASSET}", api.emu.base_url_v09());
    let put = |body: Value| {
        let http = api.http.clone();
        let url = url.clone();
        async move {
            let r = http.put(url).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, answer) = put(
        json!({"id": "data.zip", "type": "application/zip", "gsd": 1,
                                      "roles": ["data"], "file:checksum": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer["description"],
        json!({"gsd": [UNEXPECTED], "roles": [UNEXPECTED], "file:checksum": [UNEXPECTED]})
    );
    let (status, answer) = put(
        json!({"id": "data.zip", "type": "application/zip", "eo:gsd": 1,
                                      "checksum:multihash": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer["description"],
        json!({"checksum:multihash": [READ_ONLY]})
    );
    let (status, answer) =
        put(json!({"id": "data.zip", "type": "application/zip", "eo:gsd": 1})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(answer["eo:gsd"], 1.0);
    let (_, v1) = api.get(ASSET).await;
    assert_eq!(v1["gsd"], 1.0);
}

#[tokio::test]
async fn an_asset_with_an_upload_in_progress_is_not_deleted() {
    let api = api().await;
    api.ok(ASSET, asset_body()).await;
    let key = AssetKey::item_asset("coll", "item", "data.zip");
    api.emu.plant_upload(&key, chrono::Utc::now());
    assert_eq!(
        api.delete(ASSET).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "description": ["Asset data.zip has still an upload in progress"]})
        )
    );
    assert!(api.emu.asset(&key).is_some());
}

#[tokio::test]
async fn an_asset_needs_its_item_first() {
    let api = api().await;
    let (status, answer) = api
        .put(
            "collections/coll/items/nope/assets/data.zip",
            json!({"bad": 1}),
        )
        .await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::NOT_FOUND,
            json!({"code": 404, "description": "Not found."})
        )
    );
}

// ---- collections ----------------------------------------------------------------------------

#[tokio::test]
async fn collection_bodies_follow_the_collection_serializer() {
    let api = api().await;
    api.refused(
        "collections/new",
        json!({"id": "new"}),
        json!({"description": [REQUIRED], "license": [REQUIRED]}),
    )
    .await;
    let mut body = collection_body("new");
    for (key, value) in [
        ("type", json!("Collection")),
        ("stac_version", json!("1.0.0")),
        ("extent", json!({})),
        ("summaries", json!({})),
        ("itemType", json!("Feature")),
        ("crs", json!([])),
        ("assets", json!({})),
        ("keywords", json!([])),
    ] {
        body[key] = value;
    }
    api.refused(
        "collections/new",
        body,
        json!({
            "type": [UNEXPECTED], "stac_version": [READ_ONLY], "extent": [READ_ONLY],
            "summaries": [READ_ONLY], "itemType": [READ_ONLY], "crs": [READ_ONLY],
            "assets": [READ_ONLY], "keywords": [UNEXPECTED],
        }),
    )
    .await;
    api.refused(
        "collections/new",
        with(collection_body("new"), "license", json!("x".repeat(31))),
        json!({"license": ["Ensure this field has no more than 30 characters."]}),
    )
    .await;
    let body = with(
        with(collection_body("new"), "title", json!("New")),
        "providers",
        json!([{"name": "swisstopo", "roles": ["producer"], "url": "https://www.swisstopo.ch"}]),
    );
    let (status, answer) = api.put("collections/new", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["type"], "Collection");
    assert_eq!(answer["itemType"], "Feature");
    assert_eq!(answer["providers"][0]["name"], "swisstopo");
    assert!(answer.get("published").is_none());
    let (_, coll) = api.get("collections/coll").await;
    assert_eq!(
        coll["extent"]["spatial"]["bbox"],
        json!([[7.0, 46.0, 8.0, 47.0]])
    );
    assert_eq!(
        coll["extent"]["temporal"]["interval"],
        json!([["2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"]])
    );
    let rels: Vec<&str> = coll["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    assert_eq!(rels, ["self", "root", "parent", "items", "assets"]);
}

// ---- the order of the checks ----------------------------------------------------------------

/// service-stac's abort and complete are DRF views: authentication and permission come first,
/// then the upload is looked up (`get_object`), and only then is the body read. Missing or wrong
/// credentials answer 401 even for an upload that does not exist; with good ones an unknown
/// upload answers 404 whatever the body holds. `stac-uploadd check --online` relies on this to
/// prove credentials without writing anything.
#[tokio::test]
async fn abort_and_complete_check_credentials_then_the_upload_then_the_body() {
    let config = EmulatorConfig {
        auth: EmulatorAuth::Basic {
            username: "u".into(),
            password: "p".into(),
        },
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let key = AssetKey::item_asset("coll", "item", "a.zip");
    emu.create_asset(&key, "application/zip").unwrap();
    let http = Client::builder().no_proxy().build().unwrap();
    let missing_asset = AssetKey::item_asset("coll", "item", "missing.zip");
    for step in ["abort", "complete"] {
        for asset in [&key, &missing_asset] {
            let url = format!("{}/uploads/no-such-upload/{step}", emu.asset_url(asset));
            let anonymous = http.post(&url).send().await.unwrap();
            assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{url}");
            let wrong = http
                .post(&url)
                .basic_auth("u", Some("wrong"))
                .send()
                .await
                .unwrap();
            assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{url}");
            let garbage = http
                .post(&url)
                .basic_auth("u", Some("p"))
                .header("content-type", "text/plain")
                .body("not json")
                .send()
                .await
                .unwrap();
            assert_eq!(garbage.status(), StatusCode::NOT_FOUND, "{url}");
        }
    }
    // A known upload: its body is read, and refused.
    let id = emu.plant_upload(&key, chrono::Utc::now());
    let refused = http
        .post(format!("{}/uploads/{id}/abort", emu.asset_url(&key)))
        .basic_auth("u", Some("p"))
        .header("content-type", "text/plain")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(emu.in_progress_uploads().len(), 1, "nothing was aborted");
}
