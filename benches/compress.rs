//! Compression throughput and ratio on data like what publishers send: CSV text, a smooth float
//! raster (like an uncompressed GeoTIFF or NetCDF band), and incompressible bytes. Chooses the
//! levels of `stac_upload::compress`. `cargo bench --bench compress` (BENCH_MIB, default 64).

use std::io::Write;
use std::time::Instant;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("compress bench: run with `cargo bench --bench compress`");
        return;
    }
    let mib: usize = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let n = mib << 20;
    let csv: Vec<u8> = {
        let mut v = Vec::with_capacity(n + 100);
        let mut i = 0u64;
        while v.len() < n {
            writeln!(
                v,
                "2026-11-25T{:02}:{:02}:00Z,STN{:03},{:.1},{:.1},{}",
                i / 60 % 24,
                i % 60,
                i % 157,
                (i * 37 % 400) as f64 / 10.0 - 10.0,
                (i * 13 % 1000) as f64 / 10.0,
                i % 7
            )
            .unwrap();
            i += 1;
        }
        v.truncate(n);
        v
    };
    let raster: Vec<u8> = (0..n / 4)
        .flat_map(|i| {
            let (x, y) = ((i % 4096) as f32, (i / 4096) as f32);
            ((x * 0.01).sin() * 100.0 + (y * 0.013).cos() * 50.0 + 400.0)
                .round()
                .to_le_bytes()
        })
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let random: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    println!(
        "{:<12} {:<10} {:>10} {:>8}",
        "data", "codec", "MB/s in", "ratio"
    );
    for (name, data) in [("csv", &csv), ("raster f32", &raster), ("random", &random)] {
        for level in [1u32, 6, 9] {
            let (secs, out) = time(|| {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                e.write_all(data).unwrap();
                e.finish().unwrap().len()
            });
            row(name, &format!("gzip -{level}"), data.len(), secs, out);
        }
        for q in [1u32, 5, 9] {
            let (secs, out) = time(|| {
                let mut e = brotli::CompressorWriter::new(Vec::new(), 1 << 16, q, 22);
                e.write_all(data).unwrap();
                e.flush().unwrap();
                e.into_inner().len()
            });
            row(name, &format!("br q{q}"), data.len(), secs, out);
        }
    }
}

fn time(f: impl FnOnce() -> usize) -> (f64, usize) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

fn row(name: &str, codec: &str, len: usize, secs: f64, out: usize) {
    println!(
        "{:<12} {:<10} {:>10.0} {:>7.1}x",
        name,
        codec,
        len as f64 / secs / 1e6,
        len as f64 / out as f64
    );
}
