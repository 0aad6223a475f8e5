//! Multi-buffer MD5: the MD5s of several parts at once, one part per 32-bit lane of a vector
//! register (8 with AVX2, 16 with AVX-512, 4 with NEON), after MinIO's md5-simd design.
//!
//! One MD5 stream cannot be parallelised (each block's input is the previous block's output),
//! but a file's parts are independent streams, and the vector unit runs the same 64 steps on
//! every lane. The kernels (`avx2`, `avx512`, `neon`) compress equal runs of blocks in every
//! lane; [`hash_parts`], the lane scheduler, keeps the lanes fed: it reads each lane's part in
//! chunks, hands a lane whose part ended its next part, masks lanes with nothing to do (they
//! hash their stale buffer into a state nobody reads), and pads each part's last bytes on its
//! own with the scalar compressor.
//!
//! Written here rather than taken from a crate (judged 2026-12): `md5-simd` 0.2 batches only
//! whole in-memory messages (its incremental `update_many` is scalar), which would need every
//! part in memory at once; `md5-many` 0.1.0-alpha.4 has incremental SIMD lanes but is an alpha
//! on a pre-1.0 SIMD layer with few shipped tests. The kernels are ~150 lines each, share the
//! round code (`rounds.rs`), and are checked against `md-5` on every backend.

// The workspace denies unsafe code (Cargo.toml); the vector kernels are the one place that needs
// it: every block carries a SAFETY comment (clippy::undocumented_unsafe_blocks is denied too).
#![allow(unsafe_code)]

#[macro_use]
mod rounds;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use md5::block_api::compress as scalar_compress;

/// Which MD5 implementation the digest pass uses for the parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Md5Backend {
    /// `STAC_UPLOADD_MD5` (scalar, avx2, avx512, neon) if set, else the widest lanes the CPU has
    /// (the scalar path in an unoptimised debug build).
    #[default]
    Auto,
    /// `md-5`, one thread per core, parts round-robin.
    Scalar,
    /// 8 lanes (x86_64 with AVX2).
    Avx2,
    /// 16 lanes (x86_64 with AVX-512F).
    Avx512,
    /// 4 lanes (aarch64).
    Neon,
}

/// A forced backend the CPU (or the build target) does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MD5 backend {0:?} is not available on this CPU")]
pub struct Unavailable(pub Md5Backend);

impl Md5Backend {
    /// The name `STAC_UPLOADD_MD5` takes.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Self::Auto,
            "scalar" => Self::Scalar,
            "avx2" => Self::Avx2,
            "avx512" => Self::Avx512,
            "neon" => Self::Neon,
            _ => return None,
        })
    }

    /// The backends this CPU can run, widest first, `Scalar` last.
    pub fn available() -> Vec<Self> {
        [Self::Avx512, Self::Avx2, Self::Neon, Self::Scalar]
            .into_iter()
            .filter(|b| b.kernel().is_ok())
            .collect()
    }

    /// What `Auto` means here and now (the environment variable, else the widest lanes).
    pub fn resolve(self) -> Result<Self, Unavailable> {
        let chosen = match self {
            Self::Auto => match std::env::var("STAC_UPLOADD_MD5")
                .ok()
                .and_then(|v| Self::parse(&v))
            {
                // Unoptimised, the lane kernels (in this crate, opt-level 0 in a dev build) are
                // far slower than `md-5`, which the dev profile optimises like every dependency:
                // a debug build (tests, `cargo run` without --release) takes the scalar path
                // unless told otherwise. Release builds take the widest lanes.
                Some(Self::Auto) | None if cfg!(debug_assertions) => Self::Scalar,
                Some(Self::Auto) | None => Self::available()[0],
                Some(forced) => forced,
            },
            other => other,
        };
        chosen.kernel().map(|_| chosen)
    }

    /// The lane kernel of a SIMD backend (`None` for `Scalar`); refuses what the CPU lacks.
    pub fn kernel(self) -> Result<Option<Kernel>, Unavailable> {
        let k = match self {
            Self::Scalar => return Ok(None),
            Self::Auto => return self.resolve()?.kernel(),
            Self::Avx2 => Kernel::Avx2,
            Self::Avx512 => Kernel::Avx512,
            Self::Neon => Kernel::Neon,
        };
        if k.available() {
            Ok(Some(k))
        } else {
            Err(Unavailable(self))
        }
    }
}

/// A multi-buffer compressor: `width()` lanes, each its own MD5 state and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// 8 lanes of 32 bits in 256-bit registers (x86-64).
    Avx2,
    /// 16 lanes in 512-bit registers (x86-64 with AVX-512F).
    Avx512,
    /// 4 lanes in 128-bit registers (aarch64).
    Neon,
    /// The scalar compressor looped over `n` lanes (1..=16): the scheduler's reference, and its
    /// test bench on any CPU.
    Portable(usize),
}

impl Kernel {
    /// How many messages it hashes at once.
    pub fn width(self) -> usize {
        match self {
            Self::Avx2 => 8,
            Self::Avx512 => 16,
            Self::Neon => 4,
            Self::Portable(n) => n.clamp(1, 16),
        }
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Self::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            Self::Portable(_) => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Compresses the first `blocks` 64-byte blocks of `data[l]` into `states[l]`, for every lane.
    ///
    /// Panics unless there are exactly `width()` states and messages, each message at least
    /// `blocks * 64` bytes long, and the CPU has the kernel.
    pub fn compress(self, states: &mut [[u32; 4]], data: &[&[u8]], blocks: usize) {
        let w = self.width();
        assert!(
            states.len() == w && data.len() == w,
            "one state and one message per lane"
        );
        assert!(
            data.iter().all(|d| d.len() >= blocks * 64),
            "every lane needs {blocks} blocks"
        );
        assert!(self.available(), "{self:?} is not available on this CPU");
        if blocks == 0 {
            return;
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                let s: &mut [[u32; 4]; avx2::LANES] = states.try_into().expect("width checked");
                let p: [*const u8; avx2::LANES] = std::array::from_fn(|l| data[l].as_ptr());
                // SAFETY: AVX2 detected above; every message holds `blocks * 64` bytes.
                unsafe { avx2::compress(s, &p, blocks) }
            }
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => {
                let s: &mut [[u32; 4]; avx512::LANES] = states.try_into().expect("width checked");
                let p: [*const u8; avx512::LANES] = std::array::from_fn(|l| data[l].as_ptr());
                // SAFETY: AVX-512F detected above; every message holds `blocks * 64` bytes.
                unsafe { avx512::compress(s, &p, blocks) }
            }
            #[cfg(target_arch = "aarch64")]
            Self::Neon => {
                let s: &mut [[u32; 4]; neon::LANES] = states.try_into().expect("width checked");
                let p: [*const u8; neon::LANES] = std::array::from_fn(|l| data[l].as_ptr());
                // SAFETY: NEON detected above; every message holds `blocks * 64` bytes.
                unsafe { neon::compress(s, &p, blocks) }
            }
            Self::Portable(_) => {
                for (s, d) in states.iter_mut().zip(data) {
                    let (whole, _) = d[..blocks * 64].as_chunks::<64>();
                    scalar_compress(s, whole);
                }
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("availability checked"),
        }
    }
}

/// MD5's initial state.
pub const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The digest of a message whose whole blocks are already in `state`: `tail` is what is left
/// (under 64 bytes) and `len` the message's total length.
pub fn finish(mut state: [u32; 4], tail: &[u8], len: u64) -> [u8; 16] {
    assert!(tail.len() < 64, "whole blocks go through a kernel");
    let mut pad = [0u8; 128];
    pad[..tail.len()].copy_from_slice(tail);
    pad[tail.len()] = 0x80;
    let blocks = if tail.len() < 56 { 1 } else { 2 };
    pad[blocks * 64 - 8..blocks * 64].copy_from_slice(&(len.wrapping_mul(8)).to_le_bytes());
    let (whole, _) = pad[..blocks * 64].as_chunks::<64>();
    scalar_compress(&mut state, whole);
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Where the lane scheduler gets its bytes, and how it is paced and stopped.
pub trait LaneSource {
    /// What a failed read, or a stop, returns.
    type Error;
    /// Fills `buf` with the bytes at `offset` (all of them, or an error).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Self::Error>;
    /// Called before a lane starts part `index`: may wait (pacing) or stop the pass.
    fn before_part(&self, _index: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Called before each round of the kernel: may stop the pass (cancel).
    fn before_round(&self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// One part to hash: where it lies in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Where the part starts in the source, in bytes.
    pub offset: u64,
    /// Its length, in bytes.
    pub len: u64,
}

struct Lane {
    /// The part this lane hashes, if any.
    part: Option<usize>,
    state: [u32; 4],
    /// Bytes of the part read into `buf` so far.
    read: u64,
    buf: Vec<u8>,
    /// `buf[pos..len]` is read and not yet hashed.
    pos: usize,
    len: usize,
}

/// What the scheduler did, for tests and tuning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Kernel calls.
    pub rounds: u64,
    /// Blocks hashed in live lanes.
    pub live_blocks: u64,
    /// Blocks hashed in masked lanes (wasted work: lanes outnumbering the parts left).
    pub masked_blocks: u64,
}

/// The MD5 of every span, in order, through `kernel`'s lanes: each lane reads its part in
/// chunks of `chunk` bytes (rounded up to whole blocks), all lanes hash the blocks they have in
/// common per kernel call, and a lane whose part ends takes the next one. Memory:
/// `kernel.width() * chunk` bytes whatever the sizes.
pub fn hash_parts<S: LaneSource + ?Sized>(
    kernel: Kernel,
    source: &S,
    spans: &[Span],
    chunk: usize,
) -> Result<(Vec<[u8; 16]>, LaneStats), S::Error> {
    let width = kernel.width();
    let chunk = chunk.max(64).next_multiple_of(64);
    let mut out = vec![[0u8; 16]; spans.len()];
    let mut stats = LaneStats::default();
    let mut lanes: Vec<Lane> = (0..width.min(spans.len().max(1)))
        .map(|_| Lane {
            part: None,
            state: IV,
            read: 0,
            buf: vec![0; chunk],
            pos: 0,
            len: 0,
        })
        .collect();
    // Masked lanes beyond the parts' count share one buffer.
    let spare = vec![0u8; if lanes.len() < width { chunk } else { 0 }];
    let mut next = 0;
    loop {
        source.before_round()?;
        for lane in &mut lanes {
            loop {
                let Some(p) = lane.part else {
                    if next == spans.len() {
                        break;
                    }
                    source.before_part(next)?;
                    *lane = Lane {
                        part: Some(next),
                        state: IV,
                        read: 0,
                        buf: std::mem::take(&mut lane.buf),
                        pos: 0,
                        len: 0,
                    };
                    next += 1;
                    continue;
                };
                let span = spans[p];
                if lane.pos == lane.len && lane.read < span.len {
                    let n = (chunk as u64).min(span.len - lane.read) as usize;
                    source.read_at(&mut lane.buf[..n], span.offset + lane.read)?;
                    lane.read += n as u64;
                    lane.pos = 0;
                    lane.len = n;
                }
                if lane.len - lane.pos >= 64 {
                    break;
                }
                // Reads are whole chunks but a part's last, so less than a block left means
                // the part is all read.
                debug_assert_eq!(lane.read, span.len);
                out[p] = finish(lane.state, &lane.buf[lane.pos..lane.len], span.len);
                lane.part = None;
            }
        }
        let live = lanes.iter().filter(|l| l.part.is_some()).count();
        if live == 0 {
            break;
        }
        let blocks = lanes
            .iter()
            .filter(|l| l.part.is_some())
            .map(|l| (l.len - l.pos) / 64)
            .min()
            .expect("a live lane");
        let mut states = [[0u32; 4]; 16];
        let mut data: [&[u8]; 16] = [&[]; 16];
        for i in 0..width {
            data[i] = match lanes.get(i) {
                Some(l) if l.part.is_some() => {
                    states[i] = l.state;
                    &l.buf[l.pos..]
                }
                Some(l) => &l.buf,
                None => &spare,
            };
        }
        kernel.compress(&mut states[..width], &data[..width], blocks);
        for (l, s) in lanes.iter_mut().zip(states) {
            if l.part.is_some() {
                l.state = s;
                l.pos += blocks * 64;
            }
        }
        stats.rounds += 1;
        stats.live_blocks += (live * blocks) as u64;
        stats.masked_blocks += ((width - live) * blocks) as u64;
    }
    Ok((out, stats))
}

/// In-memory source for tests and fuzzing.
impl LaneSource for [u8] {
    type Error = std::convert::Infallible;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Self::Error> {
        let o = offset as usize;
        buf.copy_from_slice(&self[o..o + buf.len()]);
        Ok(())
    }
}

/// The fuzz/property invariant of the lane scheduler: any spans over `data` (cut at
/// `cuts`, in any order of lengths, fewer or more than the lanes), any chunk size, any kernel
/// this CPU has: every span's MD5 is `md-5`'s, and no live block is lost or doubled.
pub fn check_lanes(data: &[u8], cuts: &[usize], chunk: usize, kernel: Kernel) {
    use md5::Digest as _;
    let mut edges: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    edges.push(0);
    edges.push(data.len());
    edges.sort_unstable();
    // Spans in cut order, then shuffled by their lengths so short ones come first sometimes.
    let mut spans: Vec<Span> = edges
        .windows(2)
        .map(|w| Span {
            offset: w[0] as u64,
            len: (w[1] - w[0]) as u64,
        })
        .collect();
    if chunk % 2 == 1 {
        spans.reverse();
    }
    let (got, stats) = match hash_parts(kernel, data, &spans, chunk) {
        Ok(r) => r,
        Err(never) => match never {},
    };
    assert_eq!(got.len(), spans.len());
    let mut whole_blocks = 0;
    for (s, g) in spans.iter().zip(&got) {
        let bytes = &data[s.offset as usize..(s.offset + s.len) as usize];
        let want: [u8; 16] = md5::Md5::digest(bytes).into();
        assert_eq!(*g, want, "span {s:?} of {} with {kernel:?}", data.len());
        whole_blocks += s.len / 64;
    }
    assert_eq!(
        stats.live_blocks, whole_blocks,
        "every whole block hashed once"
    );
}

/// `check_lanes` from fuzzer bytes: a kernel choice, a chunk size, cut points, then the data.
pub fn check_lanes_bytes(input: &[u8]) {
    if input.len() < 4 {
        return;
    }
    let kernels: Vec<Kernel> = [Kernel::Avx512, Kernel::Avx2, Kernel::Neon]
        .into_iter()
        .filter(|k| k.available())
        .chain((1..=16).map(Kernel::Portable))
        .collect();
    let kernel = kernels[input[0] as usize % kernels.len()];
    let chunk = 64 * (1 + input[1] as usize % 8) + (input[1] as usize >> 7);
    let ncuts = input[2] as usize % 24;
    let rest = &input[3..];
    let cut_bytes = (ncuts * 2).min(rest.len());
    let cuts: Vec<usize> = rest[..cut_bytes]
        .chunks(2)
        .map(|c| c.iter().fold(0usize, |a, &b| a << 8 | b as usize) * 7)
        .collect();
    // Data: the remaining bytes, stretched so parts span several chunks.
    let seed = &rest[cut_bytes..];
    let len = seed.len() * 37;
    let data: Vec<u8> = (0..len)
        .map(|i| seed[i % seed.len().max(1)].wrapping_add((i / 251) as u8))
        .collect();
    check_lanes(&data, &cuts, chunk, kernel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    fn kernels() -> Vec<Kernel> {
        [
            Kernel::Avx512,
            Kernel::Avx2,
            Kernel::Neon,
            Kernel::Portable(3),
        ]
        .into_iter()
        .filter(|k| k.available())
        .collect()
    }

    /// The SIMD kernels this CPU has by its feature flags, read here and not through
    /// `Kernel::available` (which `kernels` filters by): the features each kernel enables.
    fn cpu_kernels() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut k = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                k.push(Kernel::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                k.push(Kernel::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            k.push(Kernel::Neon);
        }
        k
    }

    /// Runs `check` with every kernel of [`kernels`], says which ran (`--nocapture` shows it),
    /// and fails if a kernel the CPU has was not among them: a check that skipped the AVX2 or
    /// AVX-512 kernel on a CPU with it would otherwise pass without testing it.
    fn each_kernel(test: &str, check: impl Fn(Kernel)) {
        let ran: Vec<Kernel> = kernels().into_iter().inspect(|&k| check(k)).collect();
        let cpu = cpu_kernels();
        println!("{test}: ran the kernels {ran:?}; the CPU has {cpu:?}");
        for k in &cpu {
            assert!(
                ran.contains(k),
                "{test}: the CPU has the {k:?} kernel, but only {ran:?} ran"
            );
        }
    }

    #[test]
    fn every_kernel_the_cpu_has_is_tested() {
        each_kernel("every_kernel_the_cpu_has_is_tested", |k| {
            let data: Vec<u8> = (0..64 * 9 + 5).map(|i| (i * 7) as u8).collect();
            check_lanes(&data, &[100, 300], 64, k);
        });
    }

    #[test]
    fn each_lane_is_its_own_md5() {
        each_kernel("each_lane_is_its_own_md5", |k| {
            let w = k.width();
            let msgs: Vec<Vec<u8>> = (0..w)
                .map(|l| (0..64 * 5).map(|i| (i * (l + 3) + l) as u8).collect())
                .collect();
            let mut states = vec![IV; w];
            let data: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
            k.compress(&mut states, &data, 5);
            for (s, m) in states.iter().zip(&msgs) {
                let want: [u8; 16] = md5::Md5::digest(m).into();
                assert_eq!(finish(*s, &[], m.len() as u64), want, "{k:?}");
            }
        });
    }

    #[test]
    fn padding_edges() {
        each_kernel("padding_edges", |k| {
            for len in [0usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                check_lanes(&data, &[], 64, k);
                check_lanes(&data, &[len / 3, len / 2], 128, k);
            }
        });
    }

    #[test]
    fn backends_refuse_what_the_cpu_lacks() {
        for b in [Md5Backend::Avx2, Md5Backend::Avx512, Md5Backend::Neon] {
            let ok = b.kernel().is_ok();
            assert_eq!(ok, Md5Backend::available().contains(&b), "{b:?}");
        }
        assert!(Md5Backend::Scalar.kernel().unwrap().is_none());
        #[cfg(not(target_arch = "aarch64"))]
        assert_eq!(
            Md5Backend::Neon.kernel(),
            Err(Unavailable(Md5Backend::Neon))
        );
        #[cfg(target_arch = "aarch64")]
        assert_eq!(Md5Backend::Neon.kernel(), Ok(Some(Kernel::Neon)));
    }

    /// `Kernel::Neon` runs the NEON kernel, not a fallback (checked under qemu by
    /// scripts/check-neon.sh).
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn the_neon_kernel_runs() {
        use std::sync::atomic::Ordering;
        let before = neon::CALLS.load(Ordering::Relaxed);
        let data: Vec<u8> = (0..64 * 9 + 5).map(|i| (i * 7) as u8).collect();
        check_lanes(&data, &[100, 300], 64, Kernel::Neon);
        assert!(neon::CALLS.load(Ordering::Relaxed) > before);
    }
}
