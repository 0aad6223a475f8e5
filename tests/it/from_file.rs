//! Metadata from the data (issue 23), end to end against the emulator over real HTTP: a watch
//! job whose rasters arrive in its folder (each handed to the job's run as the watcher hands
//! it), every raster its own item with its footprint, and an asset with its `proj:epsg` and
//! `gsd` read from the file; a file that cannot give what the job asks creates nothing and says
//! why.

use std::path::{Path, PathBuf};

use crate::fixtures::*;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use stac_uploadd::config::JobSpec;
use stac_uploadd::geo;
use stac_uploadd::state::Outcome;
use stac_uploadd::supervisor::Work;
use stac_uploadd_emulator::{CallKind, validate_geometry};

const COLLECTION: &str = "ch.test.satromo";
const GEOTIFF: &str = "image/tiff; application=geotiff";
const COG: &str = "image/tiff; application=geotiff; profile=cloud-optimized";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geo")
        .join(name)
}

fn load_job(env: &Env, jobs: &str) -> JobSpec {
    let mut config = parse_jobs(env, jobs).unwrap_or_else(|e| panic!("the job file loads:\n{e}"));
    config.jobs.remove(0)
}

/// A satromo-like watch job: each `s2_*.tif` its own item `{stem}` (the names are lowercase:
/// `name_pattern` captures are another piece of issue 23), its geometry, EPSG code and pixel
/// size from the file.
fn raster_job(name: &str, dir: &Path, media_type: &str, validate: &str) -> String {
    format!(
        r#"
[[job]]
name = "{name}"
collection = "{COLLECTION}"
item = "{{stem}}"
asset = "{{name}}"
validate = "{validate}"
[job.watch]
dir = "{}"
pattern = "s2_*.tif"
[job.item_metadata]
geometry = "from_file"
datetime = "run"
[job.asset_metadata]
type = "{media_type}"
roles = ["data"]
"proj:epsg" = "from_file"
gsd = "from_file"
"#,
        dir.display()
    )
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 10, 10).unwrap()
}

/// A fixture arriving in the watched folder under `name`.
fn arrive(dir: &Path, fixture_name: &str, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(fixture(fixture_name), &to).expect("the fixture is copied");
    to
}

fn inbox(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `stac_uploadd_files_refused_total` and friends, as the daemon's `/metrics` would show them.
fn scraped(name: &str, labels: &str) -> Option<f64> {
    let handle = crate::watch::metrics_handle();
    handle.run_upkeep();
    let prefix = format!("{name}{{{labels}}} ");
    handle.render().lines().find_map(|l| {
        l.strip_prefix(&prefix)
            .map(|v| v.parse().expect("a number"))
    })
}

/// The issue's publisher: files named like `S2_2026-12-01T101010_ndvi_10m.tif`, ids and the
/// item's datetime from the name, footprint, EPSG code and pixel size from the file.
fn satromo_job(dir: &Path) -> String {
    format!(
        r#"
[[job]]
name = "satromo"
collection = "{COLLECTION}"
name_pattern = '^S2_(?P<date>\d{{4}}-\d{{2}}-\d{{2}}T\d{{6}})_(?P<product>[A-Za-z0-9]+_\d+m)\.tif$'
item = "s2-{{date}}"
asset = "{{product}}.tif"
[job.watch]
dir = "{}"
pattern = "S2_*.tif"
[job.item_metadata]
geometry = "from_file"
datetime = {{ capture = "date", format = "%Y-%m-%dT%H%M%S", timezone = "UTC" }}
[job.asset_metadata]
type = "{COG}"
roles = ["data"]
"proj:epsg" = "from_file"
gsd = "from_file"
"#,
        dir.display()
    )
}

#[tokio::test]
async fn each_raster_becomes_an_item_with_its_footprint_and_an_asset_with_its_epsg_and_gsd() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let dir = inbox(&env);
    let job = http_job(&env, load_job(&env, &satromo_job(&dir)), now()).await;

    for (fixture_name, file, item_id, asset_id, datetime, epsg) in [
        (
            "utm32n_cog.tif",
            "S2_2026-12-01T101010_ndvi_10m.tif",
            "s2-2026-12-01t101010",
            "ndvi_10m.tif",
            "2026-12-01T10:10:10Z",
            32632,
        ),
        (
            "lv03_tiled.tif",
            "S2_2026-12-02T093000_NDVI_20m.tif",
            "s2-2026-12-02t093000",
            "ndvi_20m.tif",
            "2026-12-02T09:30:00Z",
            21781,
        ),
    ] {
        let path = arrive(&dir, fixture_name, file);
        let rec = job.run(Work::File(path.clone())).await;
        assert_eq!(rec.outcome, Outcome::Uploaded, "{file}: {rec:?}");

        let expected = geo::read_metadata(&path).expect("a georeferenced fixture");
        let item = read_json(&env, &format!("collections/{COLLECTION}/items/{item_id}"))
            .await
            .expect("the item was created");
        assert_eq!(
            item["properties"]["datetime"], datetime,
            "{file}: from its name"
        );
        assert_eq!(item["geometry"]["type"], "Polygon", "{file}");
        let ring: Vec<[f64; 2]> =
            serde_json::from_value(item["geometry"]["coordinates"][0].clone())
                .expect("a ring of 2-D positions");
        // The footprint as read, to the last digits JSON numbers keep through the server.
        assert_eq!(ring.len(), expected.footprint.ring.len(), "{file}");
        for (got, want) in ring.iter().zip(&expected.footprint.ring) {
            assert!(
                (got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12,
                "{file}: the file's footprint: {got:?} != {want:?}"
            );
        }
        assert_eq!(
            validate_geometry(&item["geometry"]),
            Ok(vec![]),
            "{file}: valid as service-stac's validate_geometry, inside Switzerland"
        );
        let b = item["bbox"].as_array().expect("the server's bbox");
        for (got, want) in b.iter().zip(expected.footprint.bbox) {
            assert!((got.as_f64().unwrap() - want).abs() < 1e-9, "{file}: {b:?}");
        }

        let asset = read_json(
            &env,
            &format!("collections/{COLLECTION}/items/{item_id}/assets/{asset_id}"),
        )
        .await
        .expect("the asset was created");
        assert_eq!(asset["proj:epsg"], json!(epsg), "{file}");
        assert_eq!(asset["proj:epsg"], json!(expected.epsg.unwrap()), "{file}");
        let gsd = asset["gsd"].as_f64().expect("a gsd");
        assert_eq!(Some(gsd), expected.gsd, "{file}");
        assert_eq!(asset["type"], Value::from(COG));
    }
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_raster_that_cannot_give_what_the_job_reads_from_it_creates_nothing() {
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let dir = inbox(&env);
    let job = http_job(
        &env,
        // The media check off: what cannot be read from a file is under test here.
        load_job(&env, &raster_job("degrees", &dir, GEOTIFF, "off")),
        now(),
    )
    .await;
    let refused = || {
        scraped(
            "stac_uploadd_files_refused_total",
            "job_name=\"degrees\",reason=\"metadata\"",
        )
        .unwrap_or(0.0)
    };
    let before = refused();
    for (fixture_name, stem, why) in [
        // WGS84 degrees: no pixel size in metres, never guessed.
        (
            "wgs84_point.tif",
            "s2_degrees",
            "gsd = \"from_file\": its CRS EPSG:4326 is geographic",
        ),
        // Not a TIFF at all.
        ("empty.tif", "s2_empty", "cannot read its georeferencing"),
    ] {
        let path = arrive(&dir, fixture_name, &format!("{stem}.tif"));
        let puts = env.emu.call_count(CallKind::PutStac);
        let rec = job.run(Work::File(path.clone())).await;
        assert_eq!(rec.outcome, Outcome::Failed, "{stem}: {rec:?}");
        assert_eq!(rec.attempts, 1, "{stem}: not retried");
        assert_eq!(rec.error_class.as_deref(), Some("local_input"), "{stem}");
        let error = rec.error.unwrap_or_default();
        assert!(
            error.starts_with(&path.display().to_string()),
            "{stem}: the error names the file: {error}"
        );
        assert!(error.contains(why), "{stem}: {why:?} in {error}");
        assert_eq!(env.emu.call_count(CallKind::PutStac), puts, "{stem}");
        assert!(
            read_json(&env, &format!("collections/{COLLECTION}/items/{stem}"))
                .await
                .is_none(),
            "{stem}: no item"
        );
    }
    assert_eq!(env.emu.call_count(CallKind::CreateUpload), 0);
    assert_eq!(refused() - before, 2.0, "each refusal counted");
}

#[tokio::test]
async fn a_file_declared_cloud_optimized_that_is_not_creates_nothing_unless_validate_is_warn() {
    // The recorder is installed before the runs count anything.
    let _ = crate::watch::metrics_handle();
    let env = start().await;
    create_collection(&env, COLLECTION).await;
    let dir = inbox(&env);

    let strict = http_job(
        &env,
        load_job(&env, &raster_job("cog-strict", &dir, COG, "strict")),
        now(),
    )
    .await;
    let path = arrive(&dir, "big_striped.tif", "s2_big.tif");
    let puts = env.emu.call_count(CallKind::PutStac);
    let rec = strict.run(Work::File(path.clone())).await;
    assert_eq!(rec.outcome, Outcome::Failed, "{rec:?}");
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.error_class.as_deref(), Some("local_input"));
    let error = rec.error.unwrap_or_default();
    assert!(error.starts_with(&path.display().to_string()), "{error}");
    assert!(error.contains(COG) && error.contains("strict"), "{error}");
    assert_eq!(
        env.emu.call_count(CallKind::PutStac),
        puts,
        "no item, no asset"
    );
    assert_eq!(env.emu.call_count(CallKind::CreateUpload), 0, "no upload");
    assert_eq!(
        scraped(
            "stac_uploadd_files_refused_total",
            "job_name=\"cog-strict\",reason=\"media_type\""
        ),
        Some(1.0)
    );

    let warn = http_job(
        &env,
        load_job(&env, &raster_job("cog-warn", &dir, COG, "warn")),
        now(),
    )
    .await;
    let rec = warn.run(Work::File(path)).await;
    assert_eq!(rec.outcome, Outcome::Uploaded, "published anyway: {rec:?}");
    assert!(
        read_json(&env, &format!("collections/{COLLECTION}/items/s2_big"))
            .await
            .is_some()
    );
    assert_eq!(
        scraped(
            "stac_uploadd_media_type_warnings_total",
            "job_name=\"cog-warn\""
        ),
        Some(1.0)
    );
}

/// The load error of `jobs`, which must name `key_line`'s line (its first line starting so).
fn refused_at(env: &Env, jobs: &str, key_line: &str, fragment: &str) {
    let e = parse_jobs(env, jobs)
        .map(|_| ())
        .expect_err("the job file is refused")
        .to_string();
    let line = jobs
        .lines()
        .position(|l| l.starts_with(key_line))
        .unwrap_or_else(|| panic!("{key_line:?} in the job file"))
        + 7; // the [server] table's lines before the jobs
    assert!(
        e.contains(&format!("jobs.toml:{line}:")),
        "line {line}: {e}"
    );
    assert!(e.contains(fragment), "{fragment:?} in {e}");
}

/// An item job of a GeoTIFF and a thumbnail.
fn item_job(geometry_lines: &str, tif_required: &str) -> String {
    format!(
        r#"
[[job]]
name = "s2"
collection = "{COLLECTION}"
item = "{{stem}}"
[job.watch]
dir = "."
pattern = "*"
[job.item_metadata]
{geometry_lines}
datetime = "run"
[[job.assets]]
id = "thumb.png"
file = "{{stem}}.png"
[job.assets.metadata]
type = "image/png"
[[job.assets]]
id = "{{stem}}.tif"
file = "{{stem}}.tif"
{tif_required}
[job.assets.metadata]
type = "{COG}"
"proj:epsg" = "from_file"
"#
    )
}

#[tokio::test]
async fn the_from_file_keys_are_checked_at_load() {
    let env = start().await;
    // The first member that has a footprint, past the thumbnail.
    let c = parse_jobs(&env, &item_job("geometry = \"from_file\"", "")).expect("loads");
    let item = c.jobs[0].item_metadata.as_ref().unwrap();
    assert_eq!(
        item.geometry,
        stac_uploadd::config::ItemGeometry::FromFile(stac_uploadd::config::GeometryFrom {
            asset: Some(1),
            id: "{stem}.tif".into()
        })
    );
    refused_at(
        &env,
        &item_job(
            "geometry = \"from_file\"\ngeometry_from = \"thumb.png\"",
            "",
        ),
        "geometry_from",
        "geometry_from \"thumb.png\": its type \"image/png\" has no footprint",
    );
    refused_at(
        &env,
        &item_job("geometry = \"from_file\"\ngeometry_from = \"nope.tif\"", ""),
        "geometry_from",
        "names no asset of the job: expected one of the ids of [[job.assets]] as written (\"thumb.png\", \"{stem}.tif\")",
    );
    refused_at(
        &env,
        &item_job("geometry = \"from_file\"", "required = false"),
        "geometry = ",
        "needs a required member whose [job.assets.metadata] type is a GeoTIFF",
    );
    refused_at(
        &env,
        &item_job(
            "bbox = [5.9, 45.8, 10.5, 47.8]\ngeometry_from = \"{stem}.tif\"",
            "",
        ),
        "geometry_from",
        "geometry_from only applies with geometry = \"from_file\"",
    );
    let dir = inbox(&env);
    let raster = raster_job("r", &dir, GEOTIFF, "strict");
    refused_at(
        &env,
        &raster.replace("validate = \"strict\"", "validate = \"lenient\""),
        "validate",
        "invalid validate \"lenient\": expected \"strict\"",
    );
    refused_at(
        &env,
        &raster.replace(
            "\"proj:epsg\" = \"from_file\"",
            "\"proj:epsg\" = \"from file\"",
        ),
        "\"proj:epsg\"",
        "expected a value, or \"from_file\"",
    );
    refused_at(
        &env,
        &raster.replace("gsd = \"from_file\"", "gsd = 10\nproperties = { gsd = 10 }"),
        "gsd",
        "gsd is also given in properties",
    );
    refused_at(
        &env,
        &raster.replace(GEOTIFF, "application/zip"),
        "geometry",
        "geometry = \"from_file\" reads the job's file, whose type \"application/zip\" has no footprint",
    );
}
