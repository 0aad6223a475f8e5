//! GDAL as the oracle (issue 23): for each fixture of tests/fixtures/geo (made by
//! scripts/make-geo-fixtures.sh), `gdalinfo -json` and our reader agree on the EPSG code, the
//! transform, and the WGS84 corners within 1e-6 degrees. Fails when gdalinfo is missing.

use std::path::PathBuf;

use super::{footprint, read_geotiff};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geo")
        .join(name)
}

fn gdalinfo(path: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new("gdalinfo")
        .arg("-json")
        .arg(path)
        .output()
        .expect("gdalinfo runs (Debian: apt-get install gdal-bin)");
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
