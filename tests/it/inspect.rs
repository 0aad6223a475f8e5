//! `stac-uploadd inspect`: the built binary on the raster fixtures (tests/fixtures/geo) and on
//! GeoJSON written here: the JSON document's shape, its figures equal to the library's
//! (`geo::read_metadata`), the human blocks, and the exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use stac_uploadd::geo;

use crate::fixtures::BIN;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geo")
        .join(name)
}

fn inspect(args: &[&str], files: &[&Path]) -> Output {
    std::process::Command::new(BIN)
        .arg("inspect")
        .args(args)
        .args(files)
        .output()
        .expect("the binary runs")
}

fn json(out: &Output) -> Vec<Value> {
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["files"].as_array().expect("a files array").clone()
}

/// The keys every file's entry has, whatever the file.
const KEYS: [&str; 12] = [
    "file",
    "format",
    "file_size",
    "raster_size",
    "bbox",
    "footprint",
    "proj:epsg",
    "gsd",
    "bytes_read",
    "media_type",
    "verdict",
    "error",
];

fn assert_shape(f: &Value) {
    let obj = f.as_object().expect("an object per file");
    for key in KEYS {
        assert!(obj.contains_key(key), "no {key:?} in {f}");
    }
    let v = &f["verdict"];
    assert!(v["valid"].is_boolean(), "{v}");
    assert!(v["checked"].is_null() || v["checked"].is_string(), "{v}");
    assert!(v["errors"].is_array() && v["warnings"].is_array(), "{v}");
}

fn close(a: f64, b: f64) -> bool {
    // serde_json's default float parsing may be one ulp off the printed value.
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

/// The georeferenced fixtures, checked against a type with no check (so that only the
/// metadata decides): every figure is the library's, the footprint is a closed GeoJSON
/// Polygon, and the command exits 0.
#[test]
fn json_figures_are_the_librarys() {
    let dir = tempfile::tempdir().unwrap();
    let geojson = dir.path().join("area.geojson");
    std::fs::write(
        &geojson,
        r#"{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
            "geometry": {"type": "Polygon", "coordinates":
              [[[7.4, 46.9], [7.5, 46.9], [7.5, 47.0], [7.4, 46.9]]]}}]}"#,
    )
    .unwrap();
    let mut files: Vec<PathBuf> = [
        "lv95_striped.tif",
        "lv03_tiled.tif",
        "utm32n_cog.tif",
        "webmerc_bigtiff.tif",
        "wgs84_point.tif",
        "lv95_rotated.tif",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect();
    files.push(geojson);
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = inspect(&["--json", "--media-type", "text/plain"], &paths);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = json(&out);
    assert_eq!(entries.len(), files.len());
    for (f, path) in entries.iter().zip(&files) {
        assert_shape(f);
        let m = geo::read_metadata(path).unwrap();
        assert_eq!(f["file"], path.display().to_string());
        assert_eq!(f["format"], m.format.as_str());
        assert_eq!(f["error"], Value::Null, "{f}");
        assert_eq!(f["media_type"], "text/plain");
        assert_eq!(
            f["verdict"]["checked"],
            Value::Null,
            "no check for text/plain"
        );
        assert_eq!(f["verdict"]["valid"], true);
        let bbox: Vec<f64> = f["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(bbox.len(), 4);
        for (a, b) in bbox.iter().zip(m.footprint.bbox) {
            assert!(
                close(*a, b),
                "{}: bbox {bbox:?} != {:?}",
                path.display(),
                m.footprint.bbox
            );
        }
        assert_eq!(f["footprint"]["type"], "Polygon");
        let ring = f["footprint"]["coordinates"][0].as_array().unwrap();
        assert_eq!(ring.len(), m.footprint.ring.len());
        assert_eq!(ring.first(), ring.last(), "a closed ring");
        assert_eq!(f["proj:epsg"].as_u64(), m.epsg.map(u64::from));
        match m.gsd {
            Some(g) => assert!(close(f["gsd"].as_f64().unwrap(), g), "{f}"),
            None => assert_eq!(f["gsd"], Value::Null),
        }
        assert_eq!(f["bytes_read"].as_u64(), Some(m.bytes_read));
        assert_eq!(
            f["file_size"].as_u64(),
            Some(std::fs::metadata(path).unwrap().len())
        );
    }
    // Spot checks against what gdalinfo says of the fixtures (src/geo/oracle.rs).
    assert_eq!(entries[0]["proj:epsg"], 2056);
    assert_eq!(entries[6]["proj:epsg"], 4326);
    assert_eq!(entries[6]["raster_size"], Value::Null);
    assert!(entries[0]["raster_size"].is_array());
}

/// A damaged file is reported with the reason, the others still are, and the command exits 1.
#[test]
fn a_damaged_file_is_named_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.geojson");
    std::fs::write(
        &bad,
        r#"{"type": "Point", "coordinates": [2600000, 1200000]}"#,
    )
    .unwrap();
    let files = [
        fixture("lv95_striped.tif"),
        fixture("truncated_cog.tif"),
        fixture("looping_ifds.tif"),
        fixture("empty.tif"),
        bad.clone(),
        dir.path().join("missing.tif"),
    ];
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = inspect(&["--json", "--media-type", "text/plain"], &paths);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("5 of 6 files"), "{stderr}");
    let entries = json(&out);
    assert_eq!(entries.len(), files.len());
    assert_eq!(entries[0]["error"], Value::Null);
    for f in &entries[1..] {
        assert_shape(f);
        assert!(f["error"].is_string(), "{f}");
        assert_eq!(f["bbox"], Value::Null, "{f}");
        assert_eq!(f["footprint"], Value::Null, "{f}");
    }
    assert_eq!(entries[1]["format"], "GeoTIFF");
    assert_eq!(entries[4]["format"], "GeoJSON");
    let why = entries[4]["error"].as_str().unwrap();
    assert!(why.contains("not a WGS84 longitude and latitude"), "{why}");
    assert!(
        entries[5]["error"]
            .as_str()
            .unwrap()
            .contains("No such file"),
        "{}",
        entries[5]
    );
}

/// A file metadata is not read from (a CSV) is no error: nothing to derive, the media type
/// alone decides.
#[test]
fn a_file_without_metadata_is_judged_by_its_media_type_alone() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("table.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let out = inspect(&["--json", "--media-type", "text/csv"], &[&csv]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = &json(&out)[0];
    assert_shape(f);
    assert_eq!(f["format"], Value::Null);
    assert_eq!(f["error"], Value::Null);
    assert_eq!(f["bbox"], Value::Null);
    assert_eq!(f["file_size"], 8);
    // No extension a type is known for, and no --media-type: nothing is checked.
    let out = inspect(&["--json"], &[&csv]);
    assert_eq!(out.status.code(), Some(0));
    let f = &json(&out)[0];
    assert_eq!(f["media_type"], Value::Null);
    assert_eq!(f["verdict"]["checked"], Value::Null);
}

/// Without --media-type the extension picks it.
#[test]
fn the_extension_picks_the_media_type() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![fixture("utm32n_cog.tif")];
    for name in ["a.json", "a.geojson", "a.geo.json", "a.parquet", "a.zip"] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"{}").unwrap();
        files.push(path);
    }
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = inspect(&["--json"], &paths);
    let types: Vec<_> = json(&out)
        .iter()
        .map(|f| f["media_type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "image/tiff; application=geotiff; profile=cloud-optimized",
            "application/json",
            "application/geo+json",
            "application/geo+json",
            "application/vnd.apache.parquet",
            "application/zip",
        ]
    );
}

/// The COG verdicts of the fixtures, as rio-cogeo gives them (scripts/make-geo-fixtures.sh).
#[test]
fn cog_verdicts_follow_rio_cogeo() {
    for (name, valid) in [
        ("utm32n_cog.tif", true),
        ("big_tiled_no_overviews.tif", true),
        ("big_striped.tif", false),
        ("appended_overviews.tif", false),
        ("truncated_cog.tif", false),
    ] {
        let path = fixture(name);
        let out = inspect(&["--json"], &[&path]);
        let f = &json(&out)[0];
        assert_shape(f);
        let v = &f["verdict"];
        assert_eq!(v["checked"], "cloud-optimized GeoTIFF", "{name}: {v}");
        assert_eq!(v["valid"], valid, "{name}: {v}");
        assert_eq!(
            !v["errors"].as_array().unwrap().is_empty(),
            !valid,
            "{name}: {v}"
        );
        let code = if valid && f["error"].is_null() { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{name}: {f}");
    }
}

/// For a person: one block per file, with the figures a job would use.
#[test]
fn human_output_is_a_block_per_file() {
    let files = [fixture("lv95_striped.tif"), fixture("empty.tif")];
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = inspect(&["--media-type", "text/plain"], &paths);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let blocks: Vec<_> = text.split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "{text}");
    assert!(
        blocks[0].starts_with(&files[0].display().to_string()),
        "{text}"
    );
    for line in [
        "format       GeoTIFF",
        "proj:epsg    2056",
        "gsd          2 m",
        "bbox ",
        "(WGS84)",
        "media type   text/plain: not checked",
    ] {
        assert!(blocks[0].contains(line), "no {line:?} in {text}");
    }
    assert!(blocks[1].contains("error "), "{text}");
}

#[test]
fn no_file_is_a_usage_error() {
    let out = inspect(&["--json"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
