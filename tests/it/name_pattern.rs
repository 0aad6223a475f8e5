//! `name_pattern`: ids and the item's time from the captures of a watched file's name, run
//! against the emulator over real HTTP; a file whose name does not match (or whose captures
//! cannot make the ids or the time) creates nothing, and is counted.

use std::path::Path;

use crate::fixtures::*;
use chrono::{DateTime, TimeZone, Utc};
use stac_uploadd::config::JobSpec;
use stac_uploadd::observe::metrics::FILES_REFUSED;
use stac_uploadd::state::Outcome;
use stac_uploadd::supervisor::Work;

const COLLECTION: &str = "ch.test.s2";

fn load_job(env: &Env, jobs: &str) -> JobSpec {
    let mut config = parse_jobs(env, jobs).unwrap_or_else(|e| panic!("the job file loads:\n{e}"));
    config.jobs.remove(0)
}

/// The satromo case: `S2_<local time>_<product>.tif`, one item per file, its datetime the
/// name's time in Zurich.
fn s2_job(name: &str, dir: &Path) -> String {
    format!(
        r#"
[[job]]
name = "{name}"
collection = "{COLLECTION}"
name_pattern = '^S2_(?P<date>\d{{4}}-\d{{2}}-\d{{2}}T\d{{6}})_(?P<product>\w+)\.tif$'
item = "s2-{{date}}-{{product}}"
asset = "s2-{{product}}.tif"
policy = "retry"
retry_min_delay = "100ms"
retry_max_delay = "200ms"
# Random bytes stand for the rasters here: the names are under test (media types: from_file.rs).
validate = "off"
[job.watch]
dir = "{}"
pattern = "*.tif"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = {{ capture = "date", format = "%Y-%m-%dT%H%M%S", timezone = "Europe/Zurich" }}
title = "Sentinel-2 {{product}} of {{date}}"
[job.asset_metadata]
type = "image/tiff; application=geotiff"
roles = ["data"]
"#,
        dir.display()
    )
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
}

fn inbox(env: &Env) -> std::path::PathBuf {
    let dir = env.dir.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `stac_uploadd_files_refused_total{job_name=job, reason="name_pattern"}` as scraped now.
fn refused(job: &str) -> f64 {
    let handle = crate::watch::metrics_handle();
    handle.run_upkeep();
    let series = format!("{FILES_REFUSED}{{job_name=\"{job}\",reason=\"name_pattern\"}} ");
    handle
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&series)
                .map(|v| v.parse().expect("a number"))
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn ids_and_datetime_come_from_the_name() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let dir = inbox(&env);
    let job = http_job(&env, load_job(&env, &s2_job("s2-names", &dir)), now()).await;
    let winter = dir.join("S2_2026-12-01T101010_NDVI_10m.tif");
    let sha = write_file(&winter, 4096, 1);
    let summer = dir.join("S2_2026-07-01T101010_rgb.tif");
    write_file(&summer, 2048, 2);

    let rec = job.run(Work::File(winter)).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    // Capitals lowercased in ids (the server refuses them), kept in the title.
    let item = read_json(
        &env,
        &format!("collections/{COLLECTION}/items/s2-2026-12-01t101010-ndvi_10m"),
    )
    .await
    .expect("the item named from the captures");
    let p = &item["properties"];
    assert_eq!(
        p["datetime"], "2026-12-01T09:10:10Z",
        "10:10:10 in Zurich, winter"
    );
    assert_eq!(p["title"], "Sentinel-2 NDVI_10m of 2026-12-01T101010");
    env.assert_holds(
        &stac_client::AssetTarget::item_asset(
            COLLECTION,
            "s2-2026-12-01t101010-ndvi_10m",
            "s2-ndvi_10m.tif",
        ),
        &sha,
    );

    let rec = job.run(Work::File(summer)).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    let item = read_json(
        &env,
        &format!("collections/{COLLECTION}/items/s2-2026-07-01t101010-rgb"),
    )
    .await
    .expect("a second item");
    assert_eq!(
        item["properties"]["datetime"], "2026-07-01T08:10:10Z",
        "summer time: UTC+2"
    );
}

#[tokio::test]
async fn a_name_that_does_not_serve_creates_nothing_and_is_counted() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let dir = inbox(&env);
    let name = "s2-refused";
    let job = http_job(&env, load_job(&env, &s2_job(name, &dir)), now()).await;
    let before = refused(name);
    let cases = [
        // Does not match.
        (
            "S2_20261201_ndvi.tif",
            "does not match the job's name_pattern",
        ),
        // Matches, but 25:00 is no time.
        ("S2_2026-12-01T250000_ndvi.tif", "gives no datetime"),
        // Matches, but 02:30 on 29 March does not exist in Zurich.
        (
            "S2_2026-03-29T023000_ndvi.tif",
            "does not exist in Europe/Zurich",
        ),
    ];
    for (n, (file, says)) in cases.iter().enumerate() {
        let path = dir.join(file);
        write_file(&path, 1024, 9);
        let rec = job.run(Work::File(path)).await;
        assert_eq!(rec.outcome, Outcome::Failed, "{file}: {rec:?}");
        assert_eq!(rec.error_class.as_deref(), Some("local_input"), "{file}");
        assert_eq!(rec.attempts, 1, "{file}: not retried");
        let error = rec.error.as_deref().unwrap_or_default();
        assert!(error.contains(says), "{file}: {error}");
        assert_eq!(refused(name), before + n as f64 + 1.0, "{file} counted");
    }
    let items = read_json(&env, &format!("collections/{COLLECTION}/items"))
        .await
        .expect("the collection's items");
    assert_eq!(
        items["features"].as_array().map(Vec::len),
        Some(0),
        "nothing created: {items}"
    );
    env.assert_nothing_in_progress();
}

/// A bundle: the item and its time from the first present member's name, each asset id from
/// the same captures.
fn bundle_job(dir: &Path) -> String {
    format!(
        r#"
[[job]]
name = "s2-bundle"
collection = "{COLLECTION}"
name_pattern = '^S2_(?P<date>\d{{8}})_(?P<product>[A-Za-z]+)\.(tif|json)$'
item = "s2-{{date}}"
# Random bytes stand for the rasters here: the names are under test (media types: from_file.rs).
validate = "off"
[job.watch]
dir = "{}"
pattern = "*"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = {{ capture = "date", format = "%Y%m%d" }}
[[job.assets]]
id = "{{product}}.tif"
file = "{{stem}}.tif"
[job.assets.metadata]
type = "image/tiff; application=geotiff"
[[job.assets]]
id = "{{product}}.json"
file = "{{stem}}.json"
[job.assets.metadata]
type = "application/json"
"#,
        dir.display()
    )
}

#[tokio::test]
async fn a_bundle_is_named_from_its_first_member() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let dir = inbox(&env);
    let job = http_job(&env, load_job(&env, &bundle_job(&dir)), now()).await;
    let bundle = |stem: &str| {
        let (tif, json) = (
            dir.join(format!("{stem}.tif")),
            dir.join(format!("{stem}.json")),
        );
        write_file(&tif, 2048, 3);
        std::fs::write(&json, "{}").unwrap();
        Work::Bundle {
            stem: stem.to_owned(),
            files: vec![Some(tif), Some(json)],
            complete: true,
        }
    };

    let rec = job.run(bundle("S2_20261201_NDVI")).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");
    let item = read_json(&env, &format!("collections/{COLLECTION}/items/s2-20261201"))
        .await
        .expect("the item from the first member's captures");
    // A date without a time: midnight in the job's zone (UTC here).
    assert_eq!(item["properties"]["datetime"], "2026-12-01T00:00:00Z");
    for asset in ["ndvi.tif", "ndvi.json"] {
        assert!(
            read_json(
                &env,
                &format!("collections/{COLLECTION}/items/s2-20261201/assets/{asset}")
            )
            .await
            .is_some(),
            "{asset}"
        );
    }

    let rec = job.run(bundle("S2_2026-12-02_NDVI")).await;
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    assert_eq!(rec.error_class.as_deref(), Some("local_input"));
    let items = read_json(&env, &format!("collections/{COLLECTION}/items"))
        .await
        .expect("the collection's items");
    assert_eq!(
        items["features"].as_array().map(Vec::len),
        Some(1),
        "nothing more created: {items}"
    );
}
