//! `item_json`: item metadata from a sidecar file the processing chain wrote beside its product,
//! run against the emulator over real HTTP; the test reads back what the server holds, or that
//! it holds nothing.

use std::path::Path;

use crate::fixtures::*;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use stac_uploadd::config::JobSpec;
use stac_uploadd::state::Outcome;
use stac_uploadd::supervisor::Work;
use stac_uploadd_emulator::CallKind;

const COLLECTION: &str = "ch.test.scenes";

fn load_job(env: &Env, jobs: &str) -> JobSpec {
    let mut config = parse_jobs(env, jobs).unwrap_or_else(|e| panic!("the job file loads:\n{e}"));
    config.jobs.remove(0)
}

/// A watch job: each `.tif` becomes item `{stem}`, its metadata from `{stem}.json` beside it.
fn watch_job(dir: &Path) -> String {
    format!(
        r#"
[[job]]
name = "scenes"
collection = "{COLLECTION}"
item = "{{stem}}"
asset = "{{name}}"
policy = "retry"
retry_min_delay = "100ms"
retry_max_delay = "200ms"
[job.watch]
dir = "{}"
pattern = "*.tif"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
title = "From the job file"
item_json = "{{stem}}.json"
[job.asset_metadata]
type = "image/tiff; application=geotiff"
roles = ["data"]
"#,
        dir.display()
    )
}

/// What a processing chain writes: a STAC Item with its own id, links and assets.
fn stac_item() -> Value {
    json!({
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": "the-chains-own-id",
        "geometry": {"type": "Polygon", "coordinates": [[[7.1, 46.2], [7.9, 46.2], [7.9, 46.8], [7.1, 46.8], [7.1, 46.2]]]},
        "bbox": [7.1, 46.2, 7.9, 46.8],
        "properties": {
            "datetime": null,
            "start_datetime": "2099-11-24T10:00:00+01:00",
            "end_datetime": "2099-11-24T10:05:00+01:00",
            "title": "Scene of 24.11.2099",
        },
        "links": [{"rel": "self", "href": "./scene.json"}],
        "assets": {"data": {"href": "./scene.tif"}},
    })
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2099, 11, 25, 5, 0, 0).unwrap()
}

fn inbox(env: &Env) -> std::path::PathBuf {
    let dir = env.dir.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_sidecar_stac_item_gives_the_created_item_its_geometry_times_and_title() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let dir = inbox(&env);
    let sha = write_file(&dir.join("scene.tif"), 4096, 3);
    std::fs::write(dir.join("scene.json"), stac_item().to_string()).unwrap();
    let job = http_job(&env, load_job(&env, &watch_job(&dir)), now()).await;

    let rec = job.run(Work::File(dir.join("scene.tif"))).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "{rec:?}");

    let item = read_json(&env, &format!("collections/{COLLECTION}/items/scene"))
        .await
        .expect("the item was created under the job's id");
    assert_eq!(
        item["geometry"]["coordinates"][0][1],
        json!([7.9, 46.2]),
        "the sidecar's geometry, not the job's bbox"
    );
    assert_eq!(item["bbox"], json!([7.1, 46.2, 7.9, 46.8]));
    let p = &item["properties"];
    assert_eq!(p["start_datetime"], "2099-11-24T09:00:00Z");
    assert_eq!(p["end_datetime"], "2099-11-24T09:05:00Z");
    assert!(p["datetime"].is_null(), "{p}");
    assert_eq!(p["title"], "Scene of 24.11.2099");
    env.assert_holds(
        &stac_client::AssetTarget::item_asset(COLLECTION, "scene", "scene.tif"),
        &sha,
    );
    assert!(
        read_json(
            &env,
            &format!("collections/{COLLECTION}/items/the-chains-own-id")
        )
        .await
        .is_none()
    );
}

#[tokio::test]
async fn a_sidecar_the_server_would_refuse_fails_the_run_and_creates_nothing() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let dir = inbox(&env);
    let job = http_job(&env, load_job(&env, &watch_job(&dir)), now()).await;

    let mut refused = stac_item();
    refused["properties"]["platform"] = json!("sentinel-2b");
    refused["properties"]["created"] = json!("2099-01-01T00:00:00Z");
    let mut three_d = stac_item();
    three_d["geometry"] = json!({"type": "Point", "coordinates": [7.5, 46.5, 560.0]});
    three_d.as_object_mut().unwrap().remove("bbox");
    let cases: [(&str, Option<String>, &[&str]); 4] = [
        (
            "refused",
            Some(refused.to_string()),
            &[
                "\"properties.created\" (the server sets it",
                "\"properties.platform\" (the server keeps no such item property",
            ],
        ),
        (
            "threed",
            Some(three_d.to_string()),
            &["\"geometry\"", "has a third coordinate"],
        ),
        ("broken", Some("{\"title\": ".to_owned()), &["not JSON"]),
        ("missing", None, &["cannot read it"]),
    ];
    for (stem, sidecar, expected) in cases {
        write_file(&dir.join(format!("{stem}.tif")), 4096, 5);
        let json = dir.join(format!("{stem}.json"));
        if let Some(text) = sidecar {
            std::fs::write(&json, text).unwrap();
        }
        let puts = env.emu.call_count(CallKind::PutStac);
        let creates = env.emu.call_count(CallKind::CreateUpload);

        let rec = job.run(Work::File(dir.join(format!("{stem}.tif")))).await;
        assert_eq!(rec.outcome, Outcome::Failed, "{stem}: {rec:?}");
        assert_eq!(rec.attempts, 1, "{stem}: a sidecar is not retried");
        let error = rec.error.unwrap_or_default();
        assert!(
            error.starts_with(&json.display().to_string()),
            "{stem}: the error names the sidecar: {error}"
        );
        for e in expected {
            assert!(error.contains(e), "{stem}: {e:?} in {error}");
        }
        assert_eq!(env.emu.call_count(CallKind::PutStac), puts, "{stem}");
        assert_eq!(
            env.emu.call_count(CallKind::CreateUpload),
            creates,
            "{stem}"
        );
        assert!(
            read_json(&env, &format!("collections/{COLLECTION}/items/{stem}"))
                .await
                .is_none(),
            "{stem}: no item"
        );
    }
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_third_coordinate_in_the_job_file_is_refused_at_its_line() {
    let env = start().await;
    let dir = inbox(&env);
    let jobs = watch_job(&dir).replace(
        "bbox = [5.96, 45.82, 10.49, 47.81]",
        "geometry = { type = \"Point\", coordinates = [7.5, 46.5, 560.0] }",
    );
    let e = parse_jobs(&env, &jobs).expect_err("refused").to_string();
    let line = jobs
        .lines()
        .position(|l| l.starts_with("geometry = "))
        .unwrap()
        + 7; // the [server] table's lines before the jobs
    assert!(e.contains(&format!("jobs.toml:{line}:")), "{e}");
    assert!(e.contains("has a third coordinate"), "{e}");
    assert!(e.contains("2-D geometries only"), "{e}");

    let jobs = watch_job(&dir).replace("item_json = \"{stem}.json\"", "item_json = \" \"");
    let e = parse_jobs(&env, &jobs).expect_err("refused").to_string();
    assert!(e.contains("item_json is empty"), "{e}");
}
