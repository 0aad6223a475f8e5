//! Item jobs: several files to the assets of one item in one run, the alias that follows the
//! dated item, and bundles from a watched folder. Jobs loaded from a job file run against the
//! emulator over real HTTP; the test reads back what the server holds.

use std::path::Path;
use std::sync::Arc;

use crate::fixtures::*;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use stac_client::AssetTarget;
use stac_uploadd::config::JobSpec;
use stac_uploadd::state::{Outcome, StateStore};
use stac_uploadd::supervisor::{HttpUploader, Job, Pending, Shared, Work};
use stac_uploadd::trigger::Clock;
use stac_uploadd_emulator::{CallKind, FaultAction, FaultTrigger};
use tokio_util::sync::CancellationToken;

const COLLECTION: &str = "ch.test.items";

/// `[server]` for the emulator, then `jobs`; every job of the file, loaded as the daemon would.
fn load_jobs(env: &Env, jobs: &str) -> Vec<JobSpec> {
    let jobs = jobs.replace("DIR", &env.dir.path().display().to_string());
    parse_jobs(env, &jobs)
        .unwrap_or_else(|e| panic!("the job file loads:\n{e}"))
        .jobs
}

fn job(spec: JobSpec, shared: Arc<Shared<HttpUploader>>) -> Job<HttpUploader> {
    Job {
        spec,
        shared,
        pending: Arc::new(Pending::default()),
        abort_runs: CancellationToken::new(),
    }
}

fn write(dir: &Path, name: &str, len: u64, seed: u64) -> String {
    write_file(&dir.join(name), len, seed)
}

fn item(id: &str) -> String {
    format!("collections/{COLLECTION}/items/{id}")
}

fn asset(item: &str, asset: &str) -> AssetTarget {
    AssetTarget::item_asset(COLLECTION, item, asset)
}

/// 05:00 UTC on `day` November 2099.
fn fire(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2099, 11, day, 5, 0, 0).unwrap()
}

/// A daily product of three files: the GeoTIFF (found by a glob), its thumbnail, its metadata.
const S2: &str = r#"
[[job]]
name = "s2"
collection = "ch.test.items"
item = "s2-%Y-%m-%d"
schedule = "0 6 * * *"
policy = "POLICY"
retry_min_delay = "100ms"
retry_max_delay = "200ms"
part_retries = 0
skip_unchanged = false
ALIAS
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
title = "S2 %d.%m.%Y"
[[job.assets]]
id = "s2-%Y-%m-%d.tif"
file = "DIR/s2_*.tif"
[job.assets.metadata]
type = "image/tiff; application=geotiff"
roles = ["data"]
[[job.assets]]
id = "thumb.png"
file = "DIR/thumb.png"
[job.assets.metadata]
type = "image/png"
roles = ["thumbnail"]
[[job.assets]]
id = "meta.json"
file = "DIR/meta.json"
[job.assets.metadata]
type = "application/json"
"#;

fn s2(env: &Env, policy: &str, alias: Option<&str>) -> JobSpec {
    let alias = alias.map_or(String::new(), |a| format!("alias = {a:?}"));
    let text = S2.replace("POLICY", policy).replace("ALIAS", &alias);
    load_jobs(env, &text).remove(0)
}

/// The three files of the product; their sha256 hex, in the order of the job's assets.
fn product(dir: &Path, seed: u64) -> [String; 3] {
    [
        write(dir, "s2_20991125.tif", 6 * MIB, seed),
        write(dir, "thumb.png", 2048, seed + 1),
        write(dir, "meta.json", 300, seed + 2),
    ]
}

#[tokio::test]
async fn a_three_asset_item_is_created_once_and_every_asset_holds_its_file() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let sha = product(env.dir.path(), 1);
    let job = job(s2(&env, "cancel", None), http_shared(&env, fire(25)).await);

    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    assert_eq!(rec.item.as_deref(), Some("s2-2099-11-25"));
    assert_eq!(rec.assets.len(), 3, "{rec:?}");
    assert!(
        rec.assets.iter().all(|a| a.outcome == Outcome::Uploaded),
        "{rec:?}"
    );
    let ids = ["s2-2099-11-25.tif", "thumb.png", "meta.json"];
    for (id, sha) in ids.iter().zip(&sha) {
        env.assert_holds(&asset("s2-2099-11-25", id), sha);
    }
    let stored = read_json(&env, &item("s2-2099-11-25"))
        .await
        .expect("the item");
    assert_eq!(stored["properties"]["title"], "S2 25.11.2099");
    // One item and three assets created (after the collection): nothing PUT twice.
    assert_eq!(env.emu.call_count(CallKind::PutStac), 1 + 4);
    assert_eq!(env.emu.call_count(CallKind::CreateUpload), 3);
    env.assert_nothing_in_progress();

    // The record on file keeps the assets.
    let history = job.shared.state.history().await.unwrap();
    assert_eq!(history["s2"].last().unwrap().assets, rec.assets);
}

#[tokio::test]
async fn a_missing_file_or_an_ambiguous_glob_creates_nothing() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    product(env.dir.path(), 1);
    std::fs::remove_file(env.dir.path().join("thumb.png")).unwrap();
    let job = job(s2(&env, "retry", None), http_shared(&env, fire(25)).await);

    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    let error = rec.error.as_deref().unwrap();
    assert!(error.contains("thumb.png"), "{error}");
    assert_eq!(read_json(&env, &item("s2-2099-11-25")).await, None);
    assert_eq!(
        env.emu.call_count(CallKind::PutStac),
        1,
        "only the collection"
    );
    assert_eq!(env.emu.call_count(CallKind::CreateUpload), 0);

    // Two files for one glob: the run names the glob and both.
    write(env.dir.path(), "thumb.png", 10, 2);
    write(env.dir.path(), "s2_20991126.tif", 10, 3);
    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    let error = rec.error.as_deref().unwrap();
    assert!(
        error.contains("s2_*.tif")
            && error.contains("s2_20991125.tif")
            && error.contains("s2_20991126.tif"),
        "{error}"
    );
    assert_eq!(
        env.emu.call_count(CallKind::PutStac),
        1,
        "only the collection"
    );
}

/// A FIFO where a member's file should be: refused as not a regular file, without waiting for
/// a writer, and nothing created.
#[tokio::test]
async fn a_fifo_in_place_of_a_file_is_refused_at_once_and_creates_nothing() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    product(env.dir.path(), 1);
    let thumb = env.dir.path().join("thumb.png");
    std::fs::remove_file(&thumb).unwrap();
    let mode = rustix::fs::Mode::from_raw_mode(0o600);
    rustix::fs::mkfifoat(rustix::fs::CWD, &thumb, mode).unwrap();
    let job = job(s2(&env, "retry", None), http_shared(&env, fire(25)).await);

    let rec = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        job.run(Work::Scheduled(fire(25))),
    )
    .await
    .expect("the run does not wait for a writer");
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    let error = rec.error.as_deref().unwrap();
    assert!(
        error.contains("thumb.png") && error.contains("not a regular file"),
        "{error}"
    );
    assert_eq!(rec.attempts, 1, "local input is not retried");
    assert_eq!(read_json(&env, &item("s2-2099-11-25")).await, None);
    assert_eq!(env.emu.call_count(CallKind::CreateUpload), 0);
}

#[tokio::test]
async fn a_failed_asset_is_retried_alone() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let sha = product(env.dir.path(), 1);
    let job = job(s2(&env, "retry", None), http_shared(&env, fire(25)).await);
    // One create of the three fails (with part_retries = 0 the session gives up on it).
    env.emu.faults().inject(
        CallKind::CreateUpload,
        FaultAction::Status(503),
        FaultTrigger::Next(1),
    );

    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    assert_eq!(rec.attempts, 2, "{rec:?}");
    // Without skip_unchanged, an asset sent again would make a new upload: only one was.
    assert_eq!(env.emu.call_count(CallKind::CreateUpload), 4);
    let ids = ["s2-2099-11-25.tif", "thumb.png", "meta.json"];
    for (id, sha) in ids.iter().zip(&sha) {
        env.assert_holds(&asset("s2-2099-11-25", id), sha);
    }
    assert_eq!(
        env.emu.call_count(CallKind::PutStac),
        1 + 4,
        "the collection, then the item and assets once"
    );
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn an_item_the_run_created_and_could_not_fill_is_deleted_with_its_empty_assets() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    product(env.dir.path(), 1);
    let job = job(s2(&env, "cancel", None), http_shared(&env, fire(25)).await);
    // Every upload's create fails: the item and its three assets are made, no file lands.
    env.emu.faults().inject(
        CallKind::CreateUpload,
        FaultAction::Status(503),
        FaultTrigger::Next(3),
    );

    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    assert_eq!(env.emu.call_count(CallKind::CreateUpload), 3);
    assert_eq!(
        read_json(&env, &item("s2-2099-11-25")).await,
        None,
        "the empty item is gone, with the assets the run made for it"
    );
}

#[tokio::test]
async fn an_item_job_takes_its_item_metadata_from_the_sidecar_and_a_bad_one_creates_nothing() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    product(env.dir.path(), 1);
    let text = S2
        .replace("POLICY", "cancel")
        .replace("ALIAS", "alias = \"current\"")
        .replace(
            "title = \"S2 %d.%m.%Y\"",
            "title = \"S2 %d.%m.%Y\"\nitem_json = \"DIR/item.json\"",
        );
    let spec = load_jobs(&env, &text).remove(0);
    let sidecar = env.dir.path().join("item.json");
    std::fs::write(
        &sidecar,
        json!({
            "type": "Feature", "stac_version": "1.0.0", "id": "whatever",
            "geometry": {"type": "Polygon", "coordinates": [[[7.0, 46.0], [8.0, 46.0], [8.0, 47.0], [7.0, 47.0], [7.0, 46.0]]]},
            "properties": {"datetime": "2099-11-24T10:30:00Z", "title": "From the chain"},
            "links": [], "assets": {}
        })
        .to_string(),
    )
    .unwrap();
    let job = job(spec, http_shared(&env, fire(25)).await);

    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    for id in ["s2-2099-11-25", "current"] {
        let stored = read_json(&env, &item(id)).await.expect("the item");
        assert_eq!(stored["properties"]["title"], "From the chain", "{id}");
        assert_eq!(
            stored["properties"]["datetime"], "2099-11-24T10:30:00Z",
            "{id}"
        );
        assert_eq!(
            stored["geometry"]["coordinates"][0][1],
            json!([8.0, 46.0]),
            "{id}"
        );
    }

    // A sidecar with a key the server would drop fails the next day's run before anything is
    // created, naming the file and the key.
    std::fs::write(
        &sidecar,
        json!({"datetime": "2099-11-25T10:30:00Z", "platform": "sentinel-2b"}).to_string(),
    )
    .unwrap();
    let puts = env.emu.call_count(CallKind::PutStac);
    let rec = job.run(Work::Scheduled(fire(26))).await;
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    let error = rec.error.as_deref().unwrap();
    assert!(
        error.contains("item.json") && error.contains("platform"),
        "{error}"
    );
    assert_eq!(rec.attempts, 1, "a refused sidecar is not retried");
    assert_eq!(
        env.emu.call_count(CallKind::PutStac),
        puts,
        "nothing created"
    );
    assert_eq!(read_json(&env, &item("s2-2099-11-26")).await, None);
}

/// Retention after an item run reads the daemon's clock (here anchored in 2099), not the wall
/// clock: the job's items older than its rule by that clock go, assets first.
#[tokio::test]
async fn retention_after_an_item_run_ages_items_by_the_daemons_clock() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    product(env.dir.path(), 1);
    let body = |id: &str| {
        json!({
            "id": id,
            "geometry": {"type": "Point", "coordinates": [7.44, 46.95]},
            "properties": {"datetime": "2099-11-01T00:00:00Z"},
        })
    };
    for id in ["s2-2099-11-20", "s2-2099-11-24"] {
        env.client
            .put_item(COLLECTION, id, &body(id))
            .await
            .unwrap();
    }
    let text = S2
        .replace("POLICY", "cancel")
        .replace("ALIAS", "keep = \"2d\"");
    let job = job(
        load_jobs(&env, &text).remove(0),
        http_shared(&env, fire(25)).await,
    );

    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    assert_eq!(
        read_json(&env, &item("s2-2099-11-20")).await,
        None,
        "older than 2 days"
    );
    for kept in ["s2-2099-11-24", "s2-2099-11-25"] {
        assert!(read_json(&env, &item(kept)).await.is_some(), "{kept}");
    }
}

/// Two jobs with one asset each into the same new item.
const PAIR: &str = r#"
[[job]]
name = "left"
collection = "ch.test.items"
item = "pair-%Y-%m-%d"
schedule = "0 6 * * *"
policy = "cancel"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
title = "made by left"
[[job.assets]]
id = "left.json"
file = "DIR/left.json"
[job.assets.metadata]
type = "application/json"

[[job]]
name = "right"
collection = "ch.test.items"
item = "pair-%Y-%m-%d"
schedule = "0 6 * * *"
policy = "cancel"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
title = "made by right"
[[job.assets]]
id = "right.json"
file = "DIR/right.json"
[job.assets.metadata]
type = "application/json"
"#;

#[tokio::test]
async fn two_jobs_into_one_new_item_create_it_once() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let left_sha = write(env.dir.path(), "left.json", 100, 1);
    let right_sha = write(env.dir.path(), "right.json", 100, 2);
    let mut specs = load_jobs(&env, PAIR);
    let shared = http_shared(&env, fire(25)).await;
    let right = job(specs.pop().unwrap(), shared.clone());
    let left = job(specs.pop().unwrap(), shared);

    let (l, r) = tokio::join!(
        left.run(Work::Scheduled(fire(25))),
        right.run(Work::Scheduled(fire(25)))
    );
    assert_eq!(l.outcome, Outcome::Uploaded, "{l:?}");
    assert_eq!(r.outcome, Outcome::Uploaded, "{r:?}");
    // After the collection, one create of the item (the daemon's one creator per item: the
    // other job, waiting its turn, reads the item and creates nothing) and two asset PUTs.
    assert_eq!(env.emu.call_count(CallKind::PutStac), 1 + 1 + 2);
    pair_item(&env).await;
    env.assert_holds(&asset("pair-2099-11-25", "left.json"), &left_sha);
    env.assert_holds(&asset("pair-2099-11-25", "right.json"), &right_sha);
}

/// The item both jobs of [`PAIR`] fill, as stored, its metadata one job's.
async fn pair_item(env: &Env) -> serde_json::Value {
    let stored = read_json(env, &item("pair-2099-11-25"))
        .await
        .expect("the item");
    let title = stored["properties"]["title"].as_str().unwrap();
    assert!(
        title == "made by left" || title == "made by right",
        "{title}"
    );
    stored
}

/// The same two jobs in two daemons (no shared lock): both find the item missing and both
/// send the create; the server's atomic create makes it once and answers the other "already
/// exists", which uses the item as it is.
#[tokio::test]
async fn two_daemons_creating_one_new_item_never_replace_each_other() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let left_sha = write(env.dir.path(), "left.json", 100, 1);
    let right_sha = write(env.dir.path(), "right.json", 100, 2);
    let mut specs = load_jobs(&env, PAIR);
    let other_state = env.dir.path().join("other-state");
    let other = Arc::new(Shared::new(
        HttpUploader(env.client.clone()),
        Arc::new(StateStore::open(&other_state).await.unwrap()),
        Clock::anchored(fire(25)),
    ));
    let right = job(specs.pop().unwrap(), other);
    let left = job(specs.pop().unwrap(), http_shared(&env, fire(25)).await);
    // Both creates held back on the server until both reads found no item.
    env.emu.faults().inject(
        CallKind::PutStac,
        FaultAction::Delay(std::time::Duration::from_millis(300)),
        FaultTrigger::Next(2),
    );

    let (l, r) = tokio::join!(
        left.run(Work::Scheduled(fire(25))),
        right.run(Work::Scheduled(fire(25)))
    );
    assert_eq!(l.outcome, Outcome::Uploaded, "{l:?}");
    assert_eq!(r.outcome, Outcome::Uploaded, "{r:?}");
    // After the collection: two creates (one made the item, one was told it exists) and the
    // two asset PUTs.
    assert_eq!(env.emu.call_count(CallKind::PutStac), 1 + 2 + 2);
    let stored = pair_item(&env).await;
    assert!(stored["properties"]["created"].is_string(), "{stored}");
    assert_eq!(
        stored["properties"]["created"], stored["properties"]["updated"],
        "the item was made once and never written again: {stored}"
    );
    env.assert_holds(&asset("pair-2099-11-25", "left.json"), &left_sha);
    env.assert_holds(&asset("pair-2099-11-25", "right.json"), &right_sha);
}

#[tokio::test]
async fn the_alias_follows_only_a_complete_dated_item() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let sha = product(env.dir.path(), 1);
    let job = job(
        s2(&env, "cancel", Some("current")),
        http_shared(&env, fire(25)).await,
    );

    // A create refused for good on the dated item: the run fails, the alias is not touched.
    env.emu.faults().inject(
        CallKind::CreateUpload,
        FaultAction::Status(400),
        FaultTrigger::Next(1),
    );
    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    assert!(
        rec.assets
            .iter()
            .all(|a| a.item.as_deref() == Some("s2-2099-11-25")),
        "the alias was not tried: {rec:?}"
    );
    assert_eq!(read_json(&env, &item("current")).await, None);

    // The next run completes the dated item, then fills the alias with the same files.
    let rec = job.run(Work::Scheduled(fire(25))).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    assert_eq!(rec.assets.len(), 6, "{rec:?}");
    let alias = read_json(&env, &item("current"))
        .await
        .expect("the alias item");
    assert_eq!(alias["properties"]["title"], "S2 25.11.2099");
    let ids = ["s2-2099-11-25.tif", "thumb.png", "meta.json"];
    for (id, sha) in ids.iter().zip(&sha) {
        env.assert_holds(&asset("s2-2099-11-25", id), sha);
        env.assert_holds(&asset("current", id), sha);
    }
    env.assert_nothing_in_progress();
}

/// A watch job whose bundles are a GeoTIFF, an optional thumbnail and a metadata file.
const BUNDLE: &str = r#"
[[job]]
name = "bundles"
collection = "ch.test.items"
item = "{stem}"
[job.watch]
dir = "DIR/in"
pattern = "*"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
[[job.assets]]
id = "{stem}.tif"
file = "{stem}.tif"
[job.assets.metadata]
type = "image/tiff; application=geotiff"
[[job.assets]]
id = "{stem}.png"
file = "{stem}.png"
required = false
[job.assets.metadata]
type = "image/png"
[[job.assets]]
id = "{stem}.json"
file = "{stem}.json"
[job.assets.metadata]
type = "application/json"
"#;

#[tokio::test]
async fn a_bundle_publishes_its_present_files_as_one_item() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let inbox = env.dir.path().join("in");
    std::fs::create_dir(&inbox).unwrap();
    let tif = write(&inbox, "scene1.tif", 1000, 1);
    let json = write(&inbox, "scene1.json", 100, 2);
    let job = job(
        load_jobs(&env, BUNDLE).remove(0),
        http_shared(&env, fire(25)).await,
    );

    let rec = job
        .run(Work::Bundle {
            stem: "scene1".into(),
            files: vec![
                Some(inbox.join("scene1.tif")),
                None,
                Some(inbox.join("scene1.json")),
            ],
            complete: true,
        })
        .await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    assert_eq!(rec.item.as_deref(), Some("scene1"));
    assert_eq!(rec.assets.len(), 2, "{rec:?}");
    env.assert_holds(&asset("scene1", "scene1.tif"), &tif);
    env.assert_holds(&asset("scene1", "scene1.json"), &json);
    let stored = read_json(&env, &item("scene1")).await.expect("the item");
    let assets = stored["assets"].as_object().expect("assets");
    assert_eq!(assets.len(), 2, "{assets:?}");
}
