//! Items and assets created when missing, with ids templated from the run time: jobs loaded from
//! a job file run against the emulator over real HTTP, and the test reads back what the server
//! holds.

use std::path::Path;
use std::sync::Arc;

use crate::fixtures::*;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use stac_client::AssetTarget;
use stac_uploadd::config::JobSpec;
use stac_uploadd::state::Outcome;
use stac_uploadd::supervisor::Work;
use stac_uploadd_emulator::{CallKind, FaultAction};
use tokio_util::sync::CancellationToken;

const COLLECTION: &str = "ch.test.daily";

/// `[server]` for the emulator, then `jobs`; loaded from `dir` as the daemon would.
fn load_job(env: &Env, jobs: &str) -> JobSpec {
    let mut config = parse_jobs(env, jobs).unwrap_or_else(|e| panic!("the job file loads:\n{e}"));
    config.jobs.remove(0)
}

/// An item as read, without the assets it embeds (they change with every upload).
async fn read_item(env: &Env, path: &str) -> Option<Value> {
    let mut item = read_json(env, path).await?;
    item.as_object_mut()?.remove("assets");
    Some(item)
}

/// `PUT` of an API path with the test's credentials, as a publisher does by hand.
async fn put(env: &Env, path: &str, body: Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/{path}", env.emu.base_url()))
        .basic_auth(USER, Some(PASSWORD))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
}

fn write(dir: &Path, name: &str, len: u64) -> String {
    write_file(&dir.join(name), len, 7)
}

/// A daily radar job: one item per local day, one asset per run, both created when missing.
const DAILY: &str = r#"
[[job]]
name = "daily"
collection = "ch.test.daily"
item = "radar-%Y-%m-%d"
asset = "radar-%H%M.h5"
file = "radar.h5"
schedule = "0 6 * * *"
timezone = "Europe/Zurich"
policy = "retry"
retry_min_delay = "100ms"
retry_max_delay = "200ms"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
expires = "7d"
title = "Radar %d.%m.%Y"
[job.asset_metadata]
type = "application/x-hdf5"
title = "Composite %H:%M"
roles = ["data"]
"proj:epsg" = 2056
"#;

/// 06:00 in Zurich on `day` November 2099: far enough ahead that the items' `expires` (a week
/// after the run), which the server refuses in the past, stays in the future.
fn fire(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2099, 11, day, 5, 0, 0).unwrap()
}

#[tokio::test]
async fn a_templated_item_is_created_each_day_with_its_asset_uploaded() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let sha = write(env.dir.path(), "radar.h5", 6 * MIB);
    let job = http_job(&env, load_job(&env, DAILY), fire(25)).await;

    for (day, item) in [(25, "radar-2099-11-25"), (26, "radar-2099-11-26")] {
        assert_eq!(
            read_json(&env, &format!("collections/{COLLECTION}/items/{item}")).await,
            None
        );
        let rec = job.run(Work::Scheduled(fire(day))).await;
        assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
        assert_eq!(rec.asset, "radar-0600.h5");

        let stored = read_json(&env, &format!("collections/{COLLECTION}/items/{item}"))
            .await
            .expect("the item was created");
        assert_eq!(stored["geometry"]["type"], "Polygon");
        assert_eq!(
            stored["geometry"]["coordinates"][0][0],
            json!([5.96, 45.82])
        );
        assert_eq!(stored["bbox"], json!([5.96, 45.82, 10.49, 47.81]));
        let p = &stored["properties"];
        assert_eq!(p["datetime"], format!("2099-11-{day}T05:00:00Z"));
        assert_eq!(p["expires"], format!("2099-12-0{}T05:00:00Z", day - 23));
        assert_eq!(p["title"], format!("Radar {day}.11.2099"));

        let target = AssetTarget::item_asset(COLLECTION, item, "radar-0600.h5");
        env.assert_holds(&target, &sha);
        let asset = read_json(
            &env,
            &format!("collections/{COLLECTION}/items/{item}/assets/radar-0600.h5"),
        )
        .await
        .expect("the asset was created");
        assert_eq!(asset["type"], "application/x-hdf5");
        assert_eq!(asset["title"], "Composite 06:00");
        assert_eq!(asset["roles"], json!(["data"]));
        assert_eq!(asset["proj:epsg"], 2056);
    }

    // Day 25 again: item and asset exist, so nothing is PUT over them.
    let puts = env.emu.call_count(CallKind::PutStac);
    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert!(
        matches!(rec.outcome, Outcome::Uploaded | Outcome::Unchanged),
        "{rec:?}"
    );
    assert_eq!(env.emu.call_count(CallKind::PutStac), puts);
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_fire_before_local_midnight_utc_is_the_next_local_day() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    write(env.dir.path(), "radar.h5", 1024);
    let at = Utc.with_ymd_and_hms(2099, 11, 25, 23, 30, 0).unwrap();
    let rec = http_job(&env, load_job(&env, DAILY), at)
        .await
        .run(Work::Scheduled(at))
        .await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    assert_eq!(rec.asset, "radar-0030.h5", "00:30 in Zurich");
    let item = read_json(
        &env,
        &format!("collections/{COLLECTION}/items/radar-2099-11-26"),
    )
    .await
    .expect("the item of the Zurich date");
    assert_eq!(item["properties"]["datetime"], "2099-11-25T23:30:00Z");
}

#[tokio::test]
async fn an_existing_item_and_asset_are_left_untouched() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let item_path = format!("collections/{COLLECTION}/items/radar-2099-11-25");
    put(
        &env,
        &item_path,
        json!({
            "id": "radar-2099-11-25",
            "geometry": {"type": "Point", "coordinates": [7.44, 46.95]},
            "properties": {"datetime": "2020-01-01T00:00:00Z", "title": "made by hand"},
        }),
    )
    .await;
    let asset_path = format!("{item_path}/assets/radar-0600.h5");
    put(
        &env,
        &asset_path,
        json!({"id": "radar-0600.h5", "type": "application/x-hdf5", "title": "kept"}),
    )
    .await;
    let item_before = read_item(&env, &item_path).await.unwrap();
    let puts = env.emu.call_count(CallKind::PutStac);
    let sha = write(env.dir.path(), "radar.h5", 1024);

    let rec = http_job(&env, load_job(&env, DAILY), fire(25))
        .await
        .run(Work::Scheduled(fire(25)))
        .await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");

    assert_eq!(read_item(&env, &item_path).await.unwrap(), item_before);
    assert_eq!(env.emu.call_count(CallKind::PutStac), puts, "no PUT at all");
    let asset = read_json(&env, &asset_path).await.unwrap();
    assert_eq!(asset["title"], "kept");
    assert_eq!(
        asset["roles"],
        Value::Null,
        "the configured roles were not written"
    );
    env.assert_holds(
        &AssetTarget::item_asset(COLLECTION, "radar-2099-11-25", "radar-0600.h5"),
        &sha,
    );
}

#[tokio::test]
async fn metadata_the_server_refuses_fails_the_run_with_its_description() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    write(env.dir.path(), "radar.h5", 1024);
    // A refusal `check` cannot foresee: the server answers the item's PUT with 400.
    env.fault(CallKind::PutStac, FaultAction::Status(400), 1);
    let rec = http_job(&env, load_job(&env, DAILY), fire(25))
        .await
        .run(Work::Scheduled(fire(25)))
        .await;

    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    assert_eq!(rec.attempts, 1, "a wrong request is not retried");
    let error = rec.error.expect("an error");
    assert!(error.contains("create item failed (POST"), "{error}");
    assert!(error.contains("HTTP 400"), "{error}");
    let item = format!("collections/{COLLECTION}/items/radar-2099-11-25");
    assert_eq!(read_json(&env, &item).await, None);
    assert_eq!(
        env.emu.call_count(CallKind::CreateUpload),
        0,
        "nothing was sent"
    );
}

/// An id rendered from a file name cannot be judged when the job file is checked: a file whose
/// name the server would refuse in an id fails its run before anything is created or sent.
#[tokio::test]
async fn a_file_name_the_server_would_refuse_in_an_id_creates_nothing() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    std::fs::create_dir(env.dir.path().join("incoming")).unwrap();
    write(&env.dir.path().join("incoming"), "Stations.csv", 100);
    let spec = load_job(
        &env,
        r#"
[[job]]
name = "stations"
collection = "ch.test.daily"
asset = "{stem}.csv"
[job.watch]
dir = "incoming"
pattern = "*.csv"
[job.asset_metadata]
type = "text/csv"
"#,
    );
    let puts = env.emu.call_count(CallKind::PutStac);
    let rec = http_job(&env, spec, fire(25))
        .await
        .run(Work::File(env.dir.path().join("incoming/Stations.csv")))
        .await;
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    let error = rec.error.unwrap_or_default();
    assert!(
        error.contains(r#"asset id "Stations.csv" would be refused by the server"#),
        "{error}"
    );
    assert_eq!(rec.attempts, 1, "not retried: the name will not change");
    assert_eq!(env.emu.call_count(CallKind::PutStac), puts, "no PUT");
    assert_eq!(env.emu.call_count(CallKind::GetAsset), 0, "not even a read");
}

#[tokio::test]
async fn a_gateway_error_while_creating_is_retried_by_the_policy() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let sha = write(env.dir.path(), "radar.h5", 1024);
    env.fault(CallKind::PutStac, FaultAction::Status(503), 1);

    let rec = http_job(&env, load_job(&env, DAILY), fire(25))
        .await
        .run(Work::Scheduled(fire(25)))
        .await;

    assert_eq!(
        (rec.outcome, rec.attempts),
        (Outcome::Uploaded, 2),
        "{rec:?}"
    );
    assert_eq!(env.emu.faults().injected(CallKind::PutStac), 1);
    env.assert_holds(
        &AssetTarget::item_asset(COLLECTION, "radar-2099-11-25", "radar-0600.h5"),
        &sha,
    );
}

#[tokio::test]
async fn a_watched_file_gets_a_collection_asset_named_from_its_stem_and_pick_up_date() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    std::fs::create_dir(env.dir.path().join("incoming")).unwrap();
    let sha = write(&env.dir.path().join("incoming"), "stations.csv", 2048);
    let spec = load_job(
        &env,
        r#"
[[job]]
name = "stations"
collection = "ch.test.daily"
asset = "{stem}-%Y%m%d.{ext}"
timezone = "Europe/Zurich"
[job.watch]
dir = "incoming"
pattern = "*.csv"
[job.asset_metadata]
type = "text/csv"
title = "Stations {stem}"
"#,
    );
    // Picked up at 23:30 UTC: already the 26th in Zurich.
    let picked_up = Utc.with_ymd_and_hms(2026, 11, 25, 23, 30, 0).unwrap();
    let rec = http_job(&env, spec, picked_up)
        .await
        .run(Work::File(env.dir.path().join("incoming/stations.csv")))
        .await;

    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    let target = AssetTarget::collection_asset(COLLECTION, "stations-20261126.csv");
    env.assert_holds(&target, &sha);
    let asset = read_json(
        &env,
        &format!("collections/{COLLECTION}/assets/stations-20261126.csv"),
    )
    .await
    .unwrap();
    assert_eq!(asset["type"], "text/csv");
    assert_eq!(asset["title"], "Stations stations");
}

/// Found by a tester: the item and asset were created before the file was read, so a missing
/// file left an item and an empty asset on the server. Now nothing is created until the file
/// has been read and digested.
#[tokio::test]
async fn a_file_that_cannot_be_read_creates_nothing() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    // The job file is checked while the file is there; then it goes missing, and then a folder
    // stands where the file should be.
    let file = env.dir.path().join("radar.h5");
    write(env.dir.path(), "radar.h5", 1024);
    let job = http_job(&env, load_job(&env, DAILY), fire(25)).await;
    std::fs::remove_file(&file).unwrap();
    for make in [(|_: &Path| {}) as fn(&Path), |p: &Path| {
        std::fs::create_dir(p).unwrap()
    }] {
        make(&file);
        let puts = env.emu.call_count(CallKind::PutStac);
        let rec = job.run(Work::Scheduled(fire(25))).await;
        assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
        let error = rec.error.unwrap_or_default();
        assert!(error.contains("radar.h5"), "{error}");
        assert_eq!(env.emu.call_count(CallKind::PutStac), puts, "no PUT at all");
        assert_eq!(
            read_json(
                &env,
                &format!("collections/{COLLECTION}/items/radar-2099-11-25")
            )
            .await,
            None,
            "no item"
        );
        assert_eq!(env.emu.call_count(CallKind::CreateUpload), 0);
    }
}

/// An item made by hand, and a job that creates its asset: the asset body the strict server
/// accepts, the item left as it was.
#[tokio::test]
async fn an_asset_is_created_in_an_existing_item() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let item_path = format!("collections/{COLLECTION}/items/radar-2099-11-25");
    put(
        &env,
        &item_path,
        json!({
            "id": "radar-2099-11-25",
            "geometry": {"type": "Point", "coordinates": [7.44, 46.95]},
            "properties": {"datetime": "2099-11-25T00:00:00Z"},
        }),
    )
    .await;
    let item_before = read_item(&env, &item_path).await.unwrap();
    let sha = write(env.dir.path(), "radar.h5", 2048);
    let rec = http_job(&env, load_job(&env, DAILY), fire(25))
        .await
        .run(Work::Scheduled(fire(25)))
        .await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    assert_eq!(read_item(&env, &item_path).await.unwrap(), item_before);
    let asset = read_json(&env, &format!("{item_path}/assets/radar-0600.h5"))
        .await
        .expect("the asset was created");
    assert_eq!(asset["type"], "application/x-hdf5");
    assert_eq!(asset["proj:epsg"], 2056);
    env.assert_holds(
        &AssetTarget::item_asset(COLLECTION, "radar-2099-11-25", "radar-0600.h5"),
        &sha,
    );
}

// --- issue 17 (wire): an item created for nothing is deleted again ----------------------------

#[tokio::test]
async fn an_item_the_run_created_is_deleted_again_when_its_asset_is_refused() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let target = AssetTarget::item_asset(COLLECTION, "radar-lonely", "radar.h5");
    write(env.dir.path(), "radar.h5", 1000);
    let objects = stac_upload::NewObjects {
        item: Some(json!({
            "id": "radar-lonely",
            "geometry": {"type": "Point", "coordinates": [7.44, 46.95]},
            "properties": {"datetime": "2026-01-01T06:00:00Z"},
            "links": [],
        })),
        // The server refuses a role over 255 characters (400), after the item is created.
        asset: Some(json!({"type": "application/x-hdf5", "roles": ["r".repeat(256)]})),
    };
    let err = stac_upload::publish_file(
        &env.client,
        &target,
        &env.dir.path().join("radar.h5"),
        &objects,
        &opts(),
        Arc::new(()),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        stac_error(&err).and_then(|e| e.status).map(|s| s.as_u16()),
        Some(400),
        "{err}"
    );
    assert!(err.to_string().contains("create asset"), "{err}");
    assert_eq!(
        read_json(
            &env,
            &format!("collections/{COLLECTION}/items/radar-lonely")
        )
        .await,
        None,
        "the item the run created is gone again"
    );
}

#[tokio::test]
async fn an_item_that_existed_before_the_run_is_left_when_its_asset_is_refused() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let item = json!({
        "id": "radar-kept",
        "geometry": {"type": "Point", "coordinates": [7.44, 46.95]},
        "properties": {"datetime": "2026-01-01T06:00:00Z"},
        "links": [],
    });
    put(
        &env,
        &format!("collections/{COLLECTION}/items/radar-kept"),
        item.clone(),
    )
    .await;
    let target = AssetTarget::item_asset(COLLECTION, "radar-kept", "radar.h5");
    write(env.dir.path(), "radar.h5", 1000);
    let objects = stac_upload::NewObjects {
        item: Some(item),
        asset: Some(json!({"type": "application/x-hdf5", "roles": ["r".repeat(256)]})),
    };
    stac_upload::publish_file(
        &env.client,
        &target,
        &env.dir.path().join("radar.h5"),
        &objects,
        &opts(),
        Arc::new(()),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        read_json(&env, &format!("collections/{COLLECTION}/items/radar-kept"))
            .await
            .is_some(),
        "not the run's to delete"
    );
}
