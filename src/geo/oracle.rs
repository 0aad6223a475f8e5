//! GDAL as the oracle (issue 23): for each fixture of tests/fixtures/geo (made by
//! scripts/make-geo-fixtures.sh), `gdalinfo -json` and our reader agree on the EPSG code, the
//! transform, and the WGS84 corners within 1e-6 degrees. rio-cogeo as the oracle of the COG
//! verdicts: the same validity on every undamaged fixture, and ours stricter on damaged ones.
//! Fails when gdalinfo or rio is missing (`.ci/run` installs both).

use std::path::PathBuf;

use super::media::{Verdict, check_file};
use super::{footprint, read_geotiff};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geo")
        .join(name)
}

/// How long one oracle run may take: seconds on an idle machine, bounded on a loaded one.
const ORACLE_TIMEOUT: &str = "120";

/// Runs `program args...` under coreutils' `timeout` (killed past [`ORACLE_TIMEOUT`]); a missing
/// program fails the test with how to install it.
fn bounded(program: &str, args: &[&std::ffi::OsStr], install: &str) -> std::process::Output {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{program} is missing: {install}");
    let out = std::process::Command::new("timeout")
        .args(["--kill-after=10", ORACLE_TIMEOUT, program])
        .args(args)
        .output()
        .expect("coreutils' timeout runs");
    assert!(
        !matches!(out.status.code(), Some(124 | 137) | None),
        "{program} {args:?} did not finish within {ORACLE_TIMEOUT} s"
    );
    out
}

fn gdalinfo(path: &std::path::Path) -> serde_json::Value {
    let out = bounded(
        "gdalinfo",
        &["-json".as_ref(), path.as_os_str()],
        "install GDAL (Debian: apt-get install gdal-bin)",
    );
    assert!(
        out.status.success(),
        "gdalinfo {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("gdalinfo's JSON")
}

#[test]
fn the_reader_agrees_with_gdal_on_every_georeferenced_fixture() {
    for name in [
        "lv95_striped.tif",
        "lv03_tiled.tif",
        "utm32n_cog.tif",
        "webmerc_bigtiff.tif",
        "wgs84_point.tif",
        "lv95_rotated.tif",
        "big_striped.tif",
        "appended_overviews.tif",
        "big_tiled_no_overviews.tif",
    ] {
        let path = fixture(name);
        let ours = read_geotiff(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let gdal = gdalinfo(&path);
        let gt: Vec<f64> = serde_json::from_value(gdal["geoTransform"].clone()).unwrap();
        for (a, b) in ours.transform.iter().zip(&gt) {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{name}: transform {:?} vs GDAL {gt:?}",
                ours.transform
            );
        }
        let wkt = gdal["coordinateSystem"]["wkt"].as_str().unwrap();
        let epsg: u16 = wkt
            .rsplit("ID[\"EPSG\",")
            .next()
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ours.epsg, Some(epsg), "{name}");
        let size: Vec<u32> = serde_json::from_value(gdal["size"].clone()).unwrap();
        assert_eq!((ours.width, ours.height), (size[0], size[1]), "{name}");
        // wgs84Extent: GDAL's four corners (upper left, lower left, lower right, upper right).
        let ext: Vec<[f64; 2]> =
            serde_json::from_value(gdal["wgs84Extent"]["coordinates"][0].clone()).unwrap();
        let f = footprint(&ours).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours_c = [f.corners[0], f.corners[3], f.corners[2], f.corners[1]];
        for (a, b) in ours_c.iter().zip(&ext) {
            assert!(
                (a[0] - b[0]).abs() <= 1e-6 && (a[1] - b[1]).abs() <= 1e-6,
                "{name}: corners {ours_c:?} vs GDAL {ext:?}"
            );
        }
        // A closed ring, counter-clockwise.
        assert_eq!(f.ring.first(), f.ring.last());
    }
}

#[test]
fn damaged_and_empty_files_are_refused_without_panic() {
    for name in [
        "empty.tif",
        "looping_ifds.tif",
        "offset_past_end.tif",
        "truncated_cog.tif",
    ] {
        let r = read_geotiff(std::io::BufReader::new(
            std::fs::File::open(fixture(name)).unwrap(),
        ));
        // The truncated COG's first IFD points at values past its 600 bytes: refused here
        // already (rio-cogeo, reading less, calls it valid).
        assert!(r.is_err(), "{name} read as {r:?}");
    }
}

/// What `rio cogeo validate` says of a file.
#[derive(Debug, PartialEq)]
enum Rio {
    Valid {
        warned: bool,
    },
    NotValid,
    /// rio-cogeo (rasterio, GDAL) could not open it.
    Unreadable,
}

fn rio_cogeo(path: &std::path::Path) -> Rio {
    let out = bounded(
        "rio",
        &["cogeo".as_ref(), "validate".as_ref(), path.as_os_str()],
        "install rio-cogeo (pip install rio-cogeo)",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("is NOT a valid cloud optimized GeoTIFF") {
        Rio::NotValid
    } else if stdout.contains("is a valid cloud optimized GeoTIFF") {
        Rio::Valid {
            warned: stderr.contains("warnings were found"),
        }
    } else {
        assert!(
            !out.status.success(),
            "rio cogeo validate {}: no verdict in {stdout:?} {stderr:?}",
            path.display()
        );
        Rio::Unreadable
    }
}

#[test]
fn cog_verdicts_agree_with_rio_cogeo_and_are_stricter_on_damaged_files() {
    const COG: &str = "image/tiff; application=geotiff; profile=cloud-optimized";
    // rio-cogeo reads the header only: it calls the truncated COG and the looping chain valid.
    const DAMAGED: [&str; 4] = [
        "truncated_cog.tif",
        "looping_ifds.tif",
        "offset_past_end.tif",
        "empty.tif",
    ];
    let dir = fixture("");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tif"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 13,
        "the fixtures of {}: {names:?}",
        dir.display()
    );
    let mut verdicts = Vec::new();
    for name in &names {
        let path = fixture(name);
        let ours: Verdict = check_file(&path, COG);
        let rio = rio_cogeo(&path);
        if DAMAGED.contains(&name.as_str()) {
            assert!(
                !ours.is_valid(),
                "{name} (damaged): ours {ours:?}, rio-cogeo {rio:?}"
            );
        } else {
            let theirs = match rio {
                Rio::Valid { warned } => Some(warned),
                _ => None,
            };
            let mine = ours.is_valid().then_some(!ours.warnings.is_empty());
            assert_eq!(mine, theirs, "{name}: ours {ours:?}, rio-cogeo {rio:?}");
        }
        verdicts.push((name.clone(), ours.is_valid(), ours.warnings.is_empty()));
    }
    // The cases of the issue, so that an oracle wrong in the same way as we are is caught too.
    let verdict = |n: &str| verdicts.iter().find(|v| v.0 == n).map(|v| (v.1, v.2));
    assert_eq!(verdict("utm32n_cog.tif"), Some((true, true)));
    assert_eq!(verdict("big_tiled_no_overviews.tif"), Some((true, false)));
    assert_eq!(verdict("big_striped.tif").map(|v| v.0), Some(false));
    assert_eq!(verdict("appended_overviews.tif").map(|v| v.0), Some(false));
}
