//! The digest pass against `md-5` and `sha2`, for every MD5 backend this CPU has (SIMD lanes
//! and scalar), on files of awkward sizes and part counts; the lane scheduler on its own with
//! parts of every length and fewer or more parts than lanes; cancel, progress and size changes
//! for every backend.

use std::io::{Seek, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use md5::Digest as _;
use proptest::prelude::*;
use stac_client::units::ByteSize;
use stac_client::{Md5, Multihash};
use stac_upload::md5x::{self, Kernel, Span};
use stac_upload::{
    DigestError, DigestOptions, FileDigest, MIN_PART_SIZE, Md5Backend, PartPlan, digest_file,
};

const MIB: u64 = ByteSize::MIB;

/// Deterministic noise (xorshift), fast enough for hundreds of MiB in a debug build.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn reference(data: &[u8], plan: &PartPlan) -> FileDigest {
    let sha: [u8; 32] = sha2::Sha256::digest(data).into();
    FileDigest {
        multihash: Multihash::from_sha256(&sha),
        part_md5s: plan
            .parts()
            .map(|p| {
                Md5(md5::Md5::digest(&data[p.offset as usize..(p.offset + p.len) as usize]).into())
            })
            .collect(),
        size: data.len() as u64,
    }
}

fn file_of(data: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    f.rewind().unwrap();
    f
}

fn opts(backend: Md5Backend, lane_chunk: usize) -> DigestOptions {
    DigestOptions {
        md5_backend: backend,
        lane_chunk,
        ..DigestOptions::default()
    }
}

/// Digests `data` with `plan` and checks it against the reference, and the progress total.
fn check(data: &[u8], plan: &PartPlan, o: DigestOptions) {
    let seen = AtomicU64::new(0);
    let got = digest_file(file_of(data), plan, o, &AtomicBool::new(false), &|n| {
        seen.fetch_add(n, Ordering::Relaxed);
    })
    .unwrap_or_else(|e| panic!("{} bytes, {:?}: {e}", data.len(), o.md5_backend));
    let want = reference(data, plan);
    assert_eq!(
        got.multihash,
        want.multihash,
        "sha256 of {} bytes",
        data.len()
    );
    assert_eq!(got.size, want.size);
    assert_eq!(got.part_md5s.len(), plan.count());
    for (i, (g, w)) in got.part_md5s.iter().zip(&want.part_md5s).enumerate() {
        assert_eq!(
            g,
            w,
            "part {} of {} ({} bytes), {:?}",
            i + 1,
            plan.count(),
            data.len(),
            o.md5_backend
        );
    }
    assert_eq!(
        seen.into_inner(),
        data.len() as u64,
        "progress covers the file"
    );
}

fn backends() -> Vec<Md5Backend> {
    let all = Md5Backend::available();
    assert!(all.contains(&Md5Backend::Scalar));
    all
}

#[test]
fn the_cpu_backends_are_what_it_reports() {
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(
            Md5Backend::Avx2.kernel().is_ok(),
            std::arch::is_x86_feature_detected!("avx2")
        );
        assert_eq!(
            Md5Backend::Avx512.kernel().is_ok(),
            std::arch::is_x86_feature_detected!("avx512f")
        );
    }
    let auto = Md5Backend::Auto.resolve().unwrap();
    assert!(backends().contains(&auto));
    for (name, b) in [
        ("scalar", Md5Backend::Scalar),
        ("AVX512", Md5Backend::Avx512),
        ("auto", Md5Backend::Auto),
    ] {
        assert_eq!(Md5Backend::parse(name), Some(b));
    }
    assert_eq!(Md5Backend::parse("sse"), None);
    eprintln!("backends here: {:?}, auto = {auto:?}", backends());
}

#[test]
fn small_and_boundary_sizes_for_every_backend() {
    let data = noise((5 * MIB + 1) as usize, 7);
    let five = (5 * MIB) as usize;
    for backend in backends() {
        for len in [
            0,
            1,
            55,
            56,
            63,
            64,
            65,
            127,
            128,
            129,
            4095,
            65_536,
            65_537,
            five - 1,
            five,
            five + 1,
        ] {
            let plan = PartPlan::new(len as u64, ByteSize(MIN_PART_SIZE)).unwrap();
            check(&data[..len], &plan, opts(backend, 64 * 1024));
        }
    }
}

#[test]
fn part_counts_and_ragged_last_parts_for_every_backend() {
    // 5 MiB parts: counts around the lane widths (4, 8, 16) and the last part ragged, from one
    // byte to a whole part.
    let cases: [(u64, u64); 8] = [
        (2, 1),
        (3, 63),
        (4, 5 * MIB),
        (5, 65),
        (8, 12_345),
        (9, 5 * MIB - 1),
        (16, 64),
        (17, 3 * MIB + 7),
    ];
    let biggest = cases
        .iter()
        .map(|(n, last)| (n - 1) * 5 * MIB + last)
        .max()
        .unwrap();
    let data = noise(biggest as usize, 11);
    for backend in backends() {
        for (i, (parts, last)) in cases.iter().enumerate() {
            let size = (parts - 1) * 5 * MIB + last;
            let plan = PartPlan::new(size, ByteSize(MIN_PART_SIZE)).unwrap();
            assert_eq!(plan.count() as u64, *parts);
            // A lane chunk that is not a whole number of blocks, every other case.
            let chunk = if i % 2 == 0 { 64 * 1024 } else { 100_000 };
            check(&data[..size as usize], &plan, opts(backend, chunk));
        }
    }
}

#[test]
fn a_hundred_parts_for_every_backend() {
    // The API's most: 100 parts (99 of 5 MiB and a short last one), more than any lane count.
    let size = 99 * 5 * MIB + 777;
    let data = noise(size as usize, 13);
    let plan = PartPlan::new(size, ByteSize(MIN_PART_SIZE)).unwrap();
    assert_eq!(plan.count(), 100);
    for backend in backends() {
        check(&data, &plan, opts(backend, 256 * 1024));
    }
}

#[test]
fn the_lane_scheduler_for_every_part_count_up_to_a_hundred() {
    // Parts of 64..~3000 bytes through every kernel: 1..=100 parts, more and fewer than lanes,
    // lanes finishing at different lengths (every part a different length, empty ones too).
    let data = noise(100 * 3_100, 17);
    let mut kernels: Vec<Kernel> = [Kernel::Avx512, Kernel::Avx2, Kernel::Neon]
        .into_iter()
        .filter(|k| k.available())
        .collect();
    kernels.push(Kernel::Portable(5));
    for kernel in kernels {
        for parts in 1..=100usize {
            let mut spans = Vec::with_capacity(parts);
            let mut offset = 0u64;
            for i in 0..parts {
                let len = ((i * 977 + parts * 131) % 3_000) as u64 * (i % 7 != 3) as u64;
                spans.push(Span { offset, len });
                offset += len;
            }
            let chunk = 64 * (1 + parts % 5);
            let (got, stats) = md5x::hash_parts(kernel, data.as_slice(), &spans, chunk).unwrap();
            for (s, g) in spans.iter().zip(&got) {
                let want: [u8; 16] =
                    md5::Md5::digest(&data[s.offset as usize..(s.offset + s.len) as usize]).into();
                assert_eq!(*g, want, "{kernel:?}, {parts} parts, span {s:?}");
            }
            let whole: u64 = spans.iter().map(|s| s.len / 64).sum();
            assert_eq!(stats.live_blocks, whole, "{kernel:?}, {parts} parts");
        }
    }
}

#[test]
fn progress_and_cancel_mid_pass_for_every_backend() {
    let size = 40 * MIB;
    let data = noise(size as usize, 19);
    let plan = PartPlan::new(size, ByteSize(MIN_PART_SIZE)).unwrap();
    for backend in backends() {
        let cancel = AtomicBool::new(false);
        let seen = AtomicU64::new(0);
        let e = digest_file(
            file_of(&data),
            &plan,
            opts(backend, 64 * 1024),
            &cancel,
            &|n| {
                if seen.fetch_add(n, Ordering::Relaxed) + n >= 8 * MIB {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
        )
        .unwrap_err();
        assert!(matches!(e, DigestError::Cancelled), "{backend:?}: {e}");
        assert!(seen.into_inner() < size, "{backend:?} stopped early");
        // Cancelled before the start: nothing read.
        let seen = AtomicU64::new(0);
        let e = digest_file(
            file_of(&data),
            &plan,
            opts(backend, 64 * 1024),
            &AtomicBool::new(true),
            &|n| {
                seen.fetch_add(n, Ordering::Relaxed);
            },
        )
        .unwrap_err();
        assert!(matches!(e, DigestError::Cancelled), "{backend:?}: {e}");
        assert_eq!(seen.into_inner(), 0);
    }
}

#[test]
fn a_file_that_changed_size_is_reported_for_every_backend() {
    for backend in backends() {
        for (real, planned) in [
            (0u64, 1u64),
            (1, 0),
            (999, 1000),
            (1001, 1000),
            (12 * MIB, 12 * MIB + 1),
            (12 * MIB + 1, 12 * MIB),
            (30 * MIB, 60 * MIB),
        ] {
            let data = noise(real as usize, 23);
            let plan = PartPlan::new(planned, ByteSize(MIN_PART_SIZE)).unwrap();
            let e = digest_file(
                file_of(&data),
                &plan,
                opts(backend, 64 * 1024),
                &AtomicBool::new(false),
                &|_| {},
            )
            .unwrap_err();
            assert!(
                matches!(e, DigestError::SizeChanged { expected, .. } if expected == planned),
                "{backend:?}, {real} bytes planned as {planned}: {e}"
            );
        }
    }
}

#[test]
fn the_pass_starts_at_the_files_position() {
    // The contract: the file is read from its current position (pread offsets follow it).
    let data = noise((11 * MIB) as usize, 29);
    let skip = 4096;
    for backend in backends() {
        let mut f = file_of(&data);
        f.seek(std::io::SeekFrom::Start(skip as u64)).unwrap();
        let plan = PartPlan::new((data.len() - skip) as u64, ByteSize(MIN_PART_SIZE)).unwrap();
        let got = digest_file(
            f,
            &plan,
            opts(backend, 64 * 1024),
            &AtomicBool::new(false),
            &|_| {},
        )
        .unwrap();
        assert_eq!(got, reference(&data[skip..], &plan), "{backend:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any size up to 3 parts and a bit, any part target, any backend, any lane chunk.
    #[test]
    fn any_size_and_part_size(
        size in 0u64..=(16 * MIB + 3),
        extra in 0u64..=(2 * MIB),
        backend in prop::sample::select(Md5Backend::available()),
        chunk in 1usize..=300_000,
        seed in any::<u64>(),
    ) {
        let data = noise(size as usize, seed);
        let plan = PartPlan::new(size, ByteSize(MIN_PART_SIZE + extra)).unwrap();
        check(&data, &plan, opts(backend, chunk));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The lane scheduler on any cut of any data, any chunk, any kernel this CPU has.
    #[test]
    fn the_lane_scheduler_on_any_cuts(input in prop::collection::vec(any::<u8>(), 0..600)) {
        md5x::check_lanes_bytes(&input);
    }
}

/// Found by a tester: the digest cache was keyed by device, inode, size and mtime, so a
/// same-size rewrite whose mtime was set back (`cp -p`, `rsync --inplace -t`, `touch -r`) was
/// "unchanged" for ever while the asset held the old file. ctime, which no user can set, is part
/// of the key now: the next run digests the file again, uploads it, and the asset holds it.
#[tokio::test]
async fn a_same_size_rewrite_with_its_mtime_set_back_is_uploaded_by_the_next_run() {
    let emu = crate::fixtures::basic_emulator().await;
    let key = stac_uploadd_emulator::AssetKey::item_asset("ch.test.collection", "item-1", "s.zip");
    emu.create_asset(&key, "application/zip").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.zip");
    let first = crate::fixtures::write_file(&file, 100_000, 1);
    let config = dir.path().join("jobs.toml");
    std::fs::write(
        &config,
        format!(
            "{head}\n[[job]]\nname = \"nightly\"\ncollection = \"ch.test.collection\"\nitem = \"item-1\"\nasset = \"s.zip\"\nfile = \"{file}\"\nschedule = \"0 3 * * *\"\n",
            head = crate::fixtures::job_file_head(dir.path(), &emu.base_url()),
            file = file.display()
        ),
    )
    .unwrap();
    let once = || async {
        let out = tokio::process::Command::new(crate::fixtures::BIN)
            .args(["run", "--once", "--config"])
            .arg(&config)
            .env("TEST_STAC_PASSWORD", crate::fixtures::PASSWORD)
            .env_remove("STAC_UPLOADD_OBSERVE_LISTEN")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let checksum = || emu.asset(&key).unwrap().checksum;

    assert!(once().await.starts_with("nightly uploaded "));
    assert_eq!(checksum(), Some(format!("1220{first}")));
    assert!(
        once().await.starts_with("nightly unchanged "),
        "the cache still answers for a file left alone"
    );

    // Rewritten in place (same inode, same size, other bytes), its mtime set back.
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let before = std::fs::metadata(&file).unwrap();
    let second = {
        let data = noise(100_000, 2);
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all(&data).unwrap();
        f.set_modified(mtime).unwrap();
        hex::encode(sha2::Sha256::digest(&data))
    };
    let after = std::fs::metadata(&file).unwrap();
    {
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            (after.ino(), after.len(), after.modified().unwrap()),
            (before.ino(), before.len(), mtime),
            "the rewrite keeps what the old key trusted"
        );
    }
    assert_ne!(first, second);

    let out = once().await;
    assert!(out.starts_with("nightly uploaded "), "{out}");
    assert_eq!(checksum(), Some(format!("1220{second}")));
    assert_eq!(
        emu.object_sha256_hex(&key).as_deref(),
        Some(second.as_str())
    );
}
