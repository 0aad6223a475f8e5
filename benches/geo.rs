//! Metadata from the data (issue 23): what a file's footprint and media-type verdict cost.
//!
//! - A 2 GiB cloud-optimized GeoTIFF (a sparse file: a real COG header, LV95, 65536x65536
//!   pixels in 512x512 DEFLATE tiles, seven internal overviews, the IFDs first and every tile's
//!   offset spread to the end of the file): `geo::read_metadata` and `geo::media::check_file`,
//!   median and p99 over N runs, and the bytes each read (FileMetadata.bytes_read, and the
//!   process's `rchar` from /proc/self/io: what actually went through read(2)). Targets: under
//!   10 ms and under 1 MiB.
//! - The raster fixtures (tests/fixtures/geo): files per second, metadata and verdict.
//! - A GeoJSON FeatureCollection of some MB (read whole, streamed): MB per second.
//!
//! `cargo bench --bench geo` (`GEO_BENCH_RUNS`, default 200; `GEO_BENCH_GEOJSON_MB`, default
//! 20). Figures only, no assertion: a loaded machine is slow, not wrong.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use stac_uploadd::geo::{self, media};

const COG: &str = "image/tiff; application=geotiff; profile=cloud-optimized";
const FILE_SIZE: u64 = 2 * 1024 * 1024 * 1024;
const WIDTH: u32 = 65_536;
const TILE: u32 = 512;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The bytes this process has read through read(2) so far.
fn rchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("rchar:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A cloud-optimized GeoTIFF's header ([`stac_uploadd::cog_header`]: every IFD first, the
/// smallest overview's tiles next, the full resolution's last) written to `path`, then the file
/// extended to [`FILE_SIZE`] without writing: the tiles are holes.
fn write_sparse_cog(path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(&stac_uploadd::cog_header(WIDTH, TILE, FILE_SIZE))?;
    f.set_len(FILE_SIZE)?;
    f.sync_all()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Runs `f` `runs` times: (median, p99, the most bytes one run read through read(2)).
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration, u64) {
    let mut times = Vec::with_capacity(runs);
    let mut most = 0;
    // Reading /proc/self/io is itself a read: what one look costs is taken off.
    let look = {
        let a = rchar();
        rchar() - a
    };
    for _ in 0..runs {
        let before = rchar();
        let t = Instant::now();
        f();
        times.push(t.elapsed());
        most = most.max((rchar() - before).saturating_sub(look));
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99), most)
}

fn main() {
    let runs = env("GEO_BENCH_RUNS", 200).max(1);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let cog = dir.path().join("sparse-2gib-cog.tif");
    write_sparse_cog(&cog).expect("the sparse COG");

    let m = geo::read_metadata(&cog).expect("the sparse COG's metadata");
    let v = media::check_file(&cog, COG);
    println!(
        "sparse COG: {} bytes on disk as {} bytes, {}x{} px, EPSG:{:?}, gsd {:?}, bbox {:?}",
        FILE_SIZE,
        std::fs::metadata(&cog)
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0),
        WIDTH,
        WIDTH,
        m.epsg,
        m.gsd,
        m.footprint.bbox
    );
    println!(
        "verdict: checked {:?}, valid {}, errors {:?}, warnings {:?}",
        v.checked,
        v.is_valid(),
        v.errors,
        v.warnings
    );

    let (med, p99, read) = time(runs, || {
        let _ = geo::read_metadata(&cog);
    });
    println!(
        "read_metadata x{runs}: median {}, p99 {}; bytes_read {} (FileMetadata), {} through read(2)",
        ms(med),
        ms(p99),
        m.bytes_read,
        read
    );
    let (med, p99, read) = time(runs, || {
        let _ = media::check_file(&cog, COG);
    });
    println!(
        "check_file (COG) x{runs}: median {}, p99 {}; {} bytes through read(2)",
        ms(med),
        ms(p99),
        read
    );
    let (med, p99, read) = time(runs, || {
        let _ = geo::read_metadata(&cog);
        let _ = media::check_file(&cog, COG);
    });
    println!(
        "both (what `inspect` and a from_file job do) x{runs}: median {}, p99 {}; {} bytes through read(2) (targets: < 10 ms, < 1 MiB)",
        ms(med),
        ms(p99),
        read
    );

    // The fixtures: every raster of the differential tests, damaged ones included.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geo");
    let mut files: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("tests/fixtures/geo")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let rounds = runs.max(10);
    let t = Instant::now();
    for _ in 0..rounds {
        for f in &files {
            let _ = geo::read_metadata(f);
            let _ = media::check_file(f, COG);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "fixtures: {} files x{rounds}: {:.0} files/s (metadata and COG verdict each)",
        files.len(),
        (files.len() * rounds) as f64 / secs
    );

    // GeoJSON is read whole: its cost is the parser's speed, in flat memory.
    let mb = env("GEO_BENCH_GEOJSON_MB", 20);
    let path = dir.path().join("features.geojson");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("a GeoJSON file"));
    write!(w, r#"{{"type": "FeatureCollection", "features": ["#).expect("write");
    let mut i = 0u64;
    let mut size = 0;
    while size < mb * 1024 * 1024 {
        let (x, y) = (
            6.0 + (i % 4000) as f64 * 0.001,
            46.0 + (i / 4000 % 2000) as f64 * 0.001,
        );
        let feature = format!(
            r#"{}{{"type": "Feature", "properties": {{"id": {i}, "name": "feature {i}"}}, "geometry": {{"type": "Polygon", "coordinates": [[[{x:.6}, {y:.6}], [{:.6}, {y:.6}], [{:.6}, {:.6}], [{x:.6}, {y:.6}]]]}}}}"#,
            if i == 0 { "" } else { ",\n" },
            x + 0.001,
            x + 0.001,
            y + 0.001
        );
        w.write_all(feature.as_bytes()).expect("write");
        size += feature.len();
        i += 1;
    }
    w.write_all(b"]}\n").expect("write");
    w.flush().expect("write");
    drop(w);
    let geo_runs = (runs / 40).max(3);
    let (med, p99, _) = time(geo_runs, || {
        geo::read_metadata(&path).expect("the generated GeoJSON");
    });
    let m = geo::read_metadata(&path).expect("the generated GeoJSON");
    println!(
        "GeoJSON: {i} features, {} bytes x{geo_runs}: median {} ({:.0} MB/s), p99 {}; bbox {:?}",
        m.bytes_read,
        ms(med),
        m.bytes_read as f64 / 1e6 / med.as_secs_f64(),
        ms(p99),
        m.footprint.bbox
    );
    println!(
        "peak resident set: {} KiB",
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .map(|v| v.trim().trim_end_matches(" kB").to_owned()))
            .unwrap_or_default()
    );
}
