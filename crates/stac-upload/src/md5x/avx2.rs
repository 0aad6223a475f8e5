//! 8 lanes in the 32-bit elements of an AVX2 register.

use std::arch::x86_64::*;

pub(super) const LANES: usize = 8;

#[inline]
#[target_feature(enable = "avx2")]
fn add(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx2")]
fn splat(k: u32) -> __m256i {
    _mm256_set1_epi32(k as i32)
}

#[inline]
#[target_feature(enable = "avx2")]
fn rotl<const L: i32, const R: i32>(x: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi32::<L>(x), _mm256_srli_epi32::<R>(x))
}

/// F = (b & c) | (!b & d), as d ^ (b & (c ^ d)).
#[inline]
#[target_feature(enable = "avx2")]
fn ff(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)))
}

/// G = (b & d) | (c & !d), as c ^ (d & (b ^ c)).
#[inline]
#[target_feature(enable = "avx2")]
fn gg(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c)))
}

#[inline]
#[target_feature(enable = "avx2")]
fn hh(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_xor_si256(_mm256_xor_si256(b, c), d)
}

/// I = c ^ (b | !d).
#[inline]
#[target_feature(enable = "avx2")]
fn ii(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_xor_si256(
        c,
        _mm256_or_si256(b, _mm256_xor_si256(d, _mm256_set1_epi32(-1))),
    )
}

/// Rows `r[l]` (8 words of lane `l`) to columns (word `j` of every lane).
#[inline]
#[target_feature(enable = "avx2")]
fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256::<0x20>(u0, u4),
        _mm256_permute2x128_si256::<0x20>(u1, u5),
        _mm256_permute2x128_si256::<0x20>(u2, u6),
        _mm256_permute2x128_si256::<0x20>(u3, u7),
        _mm256_permute2x128_si256::<0x31>(u0, u4),
        _mm256_permute2x128_si256::<0x31>(u1, u5),
        _mm256_permute2x128_si256::<0x31>(u2, u6),
        _mm256_permute2x128_si256::<0x31>(u3, u7),
    ]
}

/// Compresses `blocks` consecutive 64-byte blocks of each lane into its state.
///
/// # Safety
/// The CPU has AVX2, and every `ptrs[l]` is valid for reading `blocks * 64` bytes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn compress(
    states: &mut [[u32; 4]; LANES],
    ptrs: &[*const u8; LANES],
    blocks: usize,
) {
    let word = |w: usize| {
        let v: [u32; LANES] = std::array::from_fn(|l| states[l][w]);
        // SAFETY: an array of 8 u32 is 32 bytes; unaligned load.
        unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
    };
    let (mut a, mut b, mut c, mut d) = (word(0), word(1), word(2), word(3));
    for blk in 0..blocks {
        let off = blk * 64;
        // SAFETY: the caller guarantees `blocks * 64` readable bytes behind every pointer.
        let lo: [__m256i; LANES] =
            std::array::from_fn(|l| unsafe { _mm256_loadu_si256(ptrs[l].add(off).cast()) });
        // SAFETY: as for `lo`: `off + 32` is within the same 64-byte block.
        let hi: [__m256i; LANES] =
            std::array::from_fn(|l| unsafe { _mm256_loadu_si256(ptrs[l].add(off + 32).cast()) });
        let (lo, hi) = (transpose(lo), transpose(hi));
        let m = [
            lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7], hi[0], hi[1], hi[2], hi[3],
            hi[4], hi[5], hi[6], hi[7],
        ];
        let (a0, b0, c0, d0) = (a, b, c, d);
        md5_rounds!(a, b, c, d, m);
        a = add(a, a0);
        b = add(b, b0);
        c = add(c, c0);
        d = add(d, d0);
    }
    for (w, v) in [a, b, c, d].into_iter().enumerate() {
        let mut out = [0u32; LANES];
        // SAFETY: 32 bytes into an array of 8 u32.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        for l in 0..LANES {
            states[l][w] = out[l];
        }
    }
}
