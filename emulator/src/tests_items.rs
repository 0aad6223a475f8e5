//! Items and assets as service-stac answers them (views/item.py, the `@etag` preconditions,
//! pagination.py): each test states the server's rule it checks.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::*;

async fn start(config: EmulatorConfig) -> Emulator {
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    emu.create_collection("coll");
    emu
}

fn client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

fn item(id: &str) -> Value {
    json!({
        "id": id,
        "geometry": {"type": "Point", "coordinates": [7.5, 46.5]},
        "properties": {"datetime": "2026-01-01T00:00:00Z"},
    })
}

async fn post_items(emu: &Emulator, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = client()
        .post(format!("{}/collections/coll/items", emu.base_url()))
        .json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn post_of_items_needs_an_idempotency_key() {
    let emu = start(EmulatorConfig::default()).await;
    let (status, body) = post_items(&emu, &json!({"features": [item("a")]}), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"code": 400, "description": "No header parameter 'Idempotency-Key'"})
    );
}

#[tokio::test]
async fn post_of_items_creates_all_or_none_and_answers_duplicates_with_a_string() {
    let emu = start(EmulatorConfig::default()).await;
    let (status, body) = post_items(
        &emu,
        &json!({"features": [item("a"), item("b")]}),
        Some("k1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ids: Vec<&str> = body["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    // "c" is new but "a" exists: one INSERT, refused whole.
    let (status, body) = post_items(
        &emu,
        &json!({"features": [item("c"), item("a")]}),
        Some("k2"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = body["description"].as_str().expect("a string description");
    assert!(
        text.contains("duplicate key value violates unique constraint"),
        "{text}"
    );
    let r = client()
        .get(format!("{}/collections/coll/items/c", emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn post_of_items_answers_validation_errors_as_a_string_and_caps_at_100() {
    let emu = start(EmulatorConfig::default()).await;
    let (status, body) = post_items(&emu, &json!({"items": []}), Some("k")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["description"].as_str().unwrap().contains("features"));
    let many: Vec<Value> = (0..101).map(|n| item(&format!("i{n}"))).collect();
    let (status, body) = post_items(&emu, &json!({ "features": many }), Some("k")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .contains("More than 100 features"),
        "{body}"
    );
    let list = client()
        .get(format!("{}/collections/coll/items", emu.base_url()))
        .send()
        .await
        .unwrap();
    let list: Value = list.json().await.unwrap();
    assert_eq!(list["features"], json!([]));
}

#[tokio::test]
async fn items_are_listed_by_id_in_pages_with_a_next_link() {
    let emu = start(EmulatorConfig::default()).await;
    let features: Vec<Value> = (0..5).map(|n| item(&format!("i{n}"))).collect();
    let (status, _) = post_items(&emu, &json!({ "features": features }), Some("k")).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut next = Some(format!("{}/collections/coll/items?limit=2", emu.base_url()));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(url) = next.take() {
        let page: Value = client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["type"], "FeatureCollection");
        pages += 1;
        for f in page["features"].as_array().unwrap() {
            seen.push(f["id"].as_str().unwrap().to_owned());
        }
        next = page["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "next")
            .map(|l| l["href"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["i0", "i1", "i2", "i3", "i4"]);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn a_bad_limit_is_a_list_description_and_a_large_one_is_cut() {
    let emu = start(EmulatorConfig::default()).await;
    let get = |q: &'static str| {
        let url = format!("{}/collections/coll/items?{q}", emu.base_url());
        async move {
            let r = client().get(url).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = get("limit=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["description"],
        json!(["Invalid limit query parameter: must be an integer"])
    );
    let (status, body) = get("limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["description"],
        json!(["limit query parameter too small, must be in range 1..100"])
    );
    let (status, _) = get("limit=1000").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_assets_list_is_not_paged() {
    let emu = start(EmulatorConfig::default()).await;
    for name in ["b.zip", "a.zip"] {
        emu.create_asset(&AssetKey::item_asset("coll", "it", name), "application/zip")
            .unwrap();
    }
    let r = client()
        .get(format!(
            "{}/collections/coll/items/it/assets",
            emu.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let ids: Vec<&str> = body["assets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, ["a.zip", "b.zip"]);
    // Present before any upload; no `roles` key for an asset without roles.
    let first = &body["assets"][0];
    assert!(first["href"].as_str().unwrap().ends_with("/coll/it/a.zip"));
    assert!(first.get("roles").is_none());
    let missing = client()
        .get(format!(
            "{}/collections/coll/items/nope/assets",
            emu.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn gets_answer_an_etag_and_writes_honour_preconditions_with_an_empty_412() {
    let emu = start(EmulatorConfig::default()).await;
    let base = emu.base_url();
    let url = format!("{base}/collections/coll/items/i");
    let body = json!({
        "id": "i",
        "geometry": {"type": "Point", "coordinates": [7.5, 46.5]},
        "properties": {"datetime": "2026-01-01T00:00:00Z"},
    });
    // If-Match on a missing item fails: Django's If-Match never passes without an ETag.
    let r = client()
        .put(&url)
        .header("If-Match", "*")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = client()
        .put(&url)
        .header("If-None-Match", "*")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, StatusCode::CREATED, "{}", r.text().await.unwrap());
    let r = client().get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let r = client()
        .put(&url)
        .header("If-None-Match", "*")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert!(r.bytes().await.unwrap().is_empty());

    let r = client()
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // A change gives a new ETag; the old one no longer matches.
    let r = client()
        .put(&url)
        .header("If-Match", &etag)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client()
        .delete(&url)
        .header("If-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert!(r.bytes().await.unwrap().is_empty());

    // An asset's change changes its item's ETag (the server's triggers).
    let r = client().get(&url).send().await.unwrap();
    let before = r.headers()["etag"].to_str().unwrap().to_owned();
    emu.create_asset(
        &AssetKey::item_asset("coll", "i", "a.zip"),
        "application/zip",
    )
    .unwrap();
    let r = client().get(&url).send().await.unwrap();
    assert_ne!(r.headers()["etag"].to_str().unwrap(), before);

    let asset_url = format!("{url}/assets/a.zip");
    let r = client().get(&asset_url).send().await.unwrap();
    let asset_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = client()
        .delete(&asset_url)
        .header("If-Match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = client()
        .delete(&asset_url)
        .header("If-Match", &asset_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_item_with_assets_is_not_deleted() {
    let emu = start(EmulatorConfig::default()).await;
    emu.create_asset(
        &AssetKey::item_asset("coll", "i", "a.zip"),
        "application/zip",
    )
    .unwrap();
    let r = client()
        .delete(format!("{}/collections/coll/items/i", emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": 400, "description": ["Deleting Item with assets not allowed"]})
    );
}

#[tokio::test(start_paused = true)]
async fn latency_delays_every_api_answer() {
    let emu = start(EmulatorConfig {
        latency: Duration::from_secs(5),
        ..EmulatorConfig::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let r = client()
        .get(format!("{}/collections/coll", emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test]
async fn a_third_coordinate_and_a_numeric_horizon_are_answered_500_as_the_server_does() {
    let emu = start(EmulatorConfig::default()).await;
    let mut z = item("z");
    z["geometry"] = json!({"type": "Point", "coordinates": [7.5, 46.5, 400.0]});
    let (status, body) = post_items(&emu, &json!({ "features": [z] }), Some("k")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .contains("Geometry has Z dimension but column does not"),
        "{body}"
    );
    let mut h = item("h");
    h["properties"]["forecast:horizon"] = json!(3600);
    let r = client()
        .put(format!("{}/collections/coll/items/h", emu.base_url()))
        .json(&h)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let mut ok = item("ok");
    ok["properties"]["forecast:horizon"] = json!("PT6H");
    let (status, body) = post_items(&emu, &json!({ "features": [ok] }), Some("k")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
