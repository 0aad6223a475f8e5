//! The NEON kernel on the aarch64 build: chosen, and equal to `md-5`.

use crate::md5x::{self, Kernel, Md5Backend, Span};
use md5::Digest as _;

const MIB: usize = 1 << 20;
/// The API's smallest part (every part but the last is at least this).
const PART: usize = 5 * MIB;

/// Deterministic bytes (xorshift64*, fixed seed per call) so a failure replays.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Hashes `spans` of `data` through the NEON lanes and checks each against `md-5`.
fn check_spans(data: &[u8], spans: &[Span], chunk: usize, what: &str) {
    let (got, stats) = match md5x::hash_parts(Kernel::Neon, data, spans, chunk) {
        Ok(r) => r,
        Err(never) => match never {},
    };
    assert_eq!(got.len(), spans.len(), "{what}");
    for (s, g) in spans.iter().zip(&got) {
        let bytes = &data[s.offset as usize..(s.offset + s.len) as usize];
        let want: [u8; 16] = md5::Md5::digest(bytes).into();
        assert_eq!(*g, want, "{what}: span {s:?}");
    }
    let whole: u64 = spans.iter().map(|s| s.len / 64).sum();
    assert_eq!(
        stats.live_blocks, whole,
        "{what}: every whole block hashed once"
    );
    // The lanes are NEON's four: what they did not share with a live part is masked.
    assert_eq!(
        (stats.live_blocks + stats.masked_blocks) % 4,
        0,
        "{what}: 4 lanes per round"
    );
}

/// Consecutive spans of the given lengths from offset 0.
fn spans_of(lens: &[usize]) -> Vec<Span> {
    let mut offset = 0;
    lens.iter()
        .map(|&len| {
            let s = Span {
                offset,
                len: len as u64,
            };
            offset += len as u64;
            s
        })
        .collect()
}

#[test]
fn this_is_the_aarch64_build() {
    assert_eq!(
        std::env::consts::ARCH,
        "aarch64",
        "neon-check proves the aarch64 build: run scripts/check-neon.sh"
    );
}

#[test]
fn neon_is_the_backend_an_aarch64_build_chooses() {
    assert!(Kernel::Neon.available(), "NEON detected at run time");
    assert_eq!(Kernel::Neon.width(), 4);
    // Widest first: what a release build's `Auto` takes.
    assert_eq!(
        Md5Backend::available(),
        [Md5Backend::Neon, Md5Backend::Scalar]
    );
    assert_eq!(Md5Backend::Neon.kernel(), Ok(Some(Kernel::Neon)));
    assert_eq!(Md5Backend::parse("neon"), Some(Md5Backend::Neon));
    for x86 in [Md5Backend::Avx2, Md5Backend::Avx512] {
        assert_eq!(x86.kernel(), Err(md5x::Unavailable(x86)));
    }
    // `Auto` reads STAC_UPLOADD_MD5; the script runs the tests without it.
    assert_eq!(
        std::env::var_os("STAC_UPLOADD_MD5"),
        None,
        "run without STAC_UPLOADD_MD5"
    );
    let auto = Md5Backend::Auto.resolve();
    if cfg!(debug_assertions) {
        // A debug build takes the scalar path by design (mod.rs, `resolve`).
        assert_eq!(auto, Ok(Md5Backend::Scalar));
    } else {
        assert_eq!(auto, Ok(Md5Backend::Neon));
        assert_eq!(Md5Backend::Auto.kernel(), Ok(Some(Kernel::Neon)));
    }
}

#[test]
fn neon_compress_equals_the_scalar_compressor_from_any_state() {
    // Not only from the IV: states with every bit pattern, lanes of different content, 1 to 9
    // blocks per call (the kernel's state load, transpose and store, lane by lane).
    for blocks in 1..=9usize {
        let raw = noise(4 * 16 + 4 * blocks * 64, blocks as u64);
        let (st, msg) = raw.split_at(4 * 16);
        let start: Vec<[u32; 4]> = st
            .chunks_exact(16)
            .map(|c| {
                std::array::from_fn(|w| u32::from_le_bytes(c[4 * w..4 * w + 4].try_into().unwrap()))
            })
            .collect();
        let data: Vec<&[u8]> = msg.chunks_exact(blocks * 64).collect();
        let mut neon = start.clone();
        let mut scalar = start;
        Kernel::Neon.compress(&mut neon, &data, blocks);
        Kernel::Portable(4).compress(&mut scalar, &data, blocks);
        assert_eq!(neon, scalar, "{blocks} blocks");
    }
}

#[test]
fn one_part_of_every_edge_length() {
    let data = noise(PART + 1, 1);
    let small = [
        0, 1, 55, 56, 57, 63, 64, 65, 127, 128, 129, 4095, 4096, 4097,
    ];
    for len in small {
        for chunk in [64, 128, 4096] {
            let what = format!("one part of {len} bytes, chunk {chunk}");
            check_spans(&data, &spans_of(&[len]), chunk, &what);
        }
    }
    for len in [PART - 1, PART, PART + 1] {
        let what = format!("one part of {len} bytes");
        check_spans(&data, &spans_of(&[len]), 256 * 1024, &what);
    }
}

#[test]
fn fewer_parts_than_lanes_and_ragged_last_parts() {
    // 1, 2 and 3 parts (a lane or more masked throughout), 4 (every lane busy), 5 to 7 (the
    // last round partly masked); each last part ragged: a byte, a block ± 1, empty, and parts
    // not a multiple of the chunk (lanes ending mid-chunk at different rounds).
    let lasts = [0, 1, 63, 64, 65, 70_001];
    let data = noise(8 * 70_001, 5);
    for parts in 1..=7usize {
        for &last in &lasts {
            let mut lens: Vec<usize> = (1..parts).map(|i| 40_000 + 4_099 * i).collect();
            lens.push(last);
            let what = format!("{parts} parts, the last {last} bytes");
            check_spans(&data, &spans_of(&lens), 16 * 1024, &what);
        }
    }
}

#[test]
fn parts_of_five_mib_and_a_ragged_last() {
    // As the planner cuts a file: 5 MiB parts and a shorter or longer last (5 MiB - 1,
    // 5 MiB + 1, 777 bytes); 3 parts (fewer than the lanes) and 6 (a round and a half).
    let data = noise(6 * PART + 1, 100);
    for lens in [
        vec![PART, PART, PART - 1],
        vec![PART, PART, PART + 1],
        vec![PART, PART, PART, PART, PART, 777],
    ] {
        let what = format!(
            "{} parts, the last {} bytes",
            lens.len(),
            lens[lens.len() - 1]
        );
        check_spans(&data, &spans_of(&lens), 256 * 1024, &what);
    }
}

#[test]
fn every_part_count_up_to_a_hundred() {
    // 1..=100 parts of ragged lengths (0 to ~3000 bytes, empty ones too), lanes ending at
    // different rounds, chunks of 1 to 5 blocks: the scheduler refilling NEON's lanes.
    let data = noise(100 * 3_100, 17);
    for parts in 1..=100usize {
        let lens: Vec<usize> = (0..parts)
            .map(|i| ((i * 977 + parts * 131) % 3_000) * usize::from(i % 7 != 3))
            .collect();
        check_spans(
            &data,
            &spans_of(&lens),
            64 * (1 + parts % 5),
            &format!("{parts} parts"),
        );
    }
}

#[test]
fn the_fuzz_invariant_on_neon() {
    // md5x's own property (the fuzz target's), pinned to the NEON kernel, with odd chunk
    // sizes too (they reverse the span order: short parts first).
    let data = noise(64 * 1024 + 37, 23);
    for (n, chunk) in [64, 65, 128, 191, 4096, 4097].into_iter().enumerate() {
        let cuts: Vec<usize> = (0..(3 * n + 1)).map(|i| i * 7919 + n * 131).collect();
        md5x::check_lanes(&data, &cuts, chunk, Kernel::Neon);
    }
}
