//! 16 lanes in the 32-bit elements of an AVX-512 register; the round functions are one
//! `vpternlogd` each and the rotation one `vprold`.

use std::arch::x86_64::*;

pub(super) const LANES: usize = 16;

#[inline]
#[target_feature(enable = "avx512f")]
fn add(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn splat(k: u32) -> __m512i {
    _mm512_set1_epi32(k as i32)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn rotl<const L: i32, const R: i32>(x: __m512i) -> __m512i {
    _mm512_rol_epi32::<L>(x)
}

// Truth tables for ternlog(b, c, d): bit (b << 2 | c << 1 | d) of the immediate.
/// F = b ? c : d.
#[inline]
#[target_feature(enable = "avx512f")]
fn ff(b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0xCA>(b, c, d)
}

/// G = d ? b : c.
#[inline]
#[target_feature(enable = "avx512f")]
fn gg(b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0xE4>(b, c, d)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn hh(b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0x96>(b, c, d)
}

/// I = c ^ (b | !d).
#[inline]
#[target_feature(enable = "avx512f")]
fn ii(b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0x39>(b, c, d)
}

/// Rows `r[l]` (the 16 words of lane `l`'s block) to columns (word `j` of every lane).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
    let t: [__m512i; 16] = std::array::from_fn(|i| {
        let (x, y) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi32(x, y)
        } else {
            _mm512_unpackhi_epi32(x, y)
        }
    });
    // u[4q + k]: from t[4q], t[4q+1], t[4q+2], t[4q+3]; 128-bit lane n holds word 4n + k of
    // rows 4q..4q+3.
    let u: [__m512i; 16] = std::array::from_fn(|i| {
        let q = i / 4 * 4;
        match i % 4 {
            0 => _mm512_unpacklo_epi64(t[q], t[q + 2]),
            1 => _mm512_unpackhi_epi64(t[q], t[q + 2]),
            2 => _mm512_unpacklo_epi64(t[q + 1], t[q + 3]),
            _ => _mm512_unpackhi_epi64(t[q + 1], t[q + 3]),
        }
    });
    // v[j] (j < 4): words j and j + 8 of rows 0..8; v[j + 4]: words j + 4, j + 12 of rows 0..8;
    // v[8..16] the same for rows 8..16.
    let v: [__m512i; 16] = std::array::from_fn(|i| {
        let base = i / 8 * 8;
        let j = i % 4;
        let (x, y) = (u[base + j], u[base + 4 + j]);
        if i % 8 < 4 {
            _mm512_shuffle_i32x4::<0x88>(x, y)
        } else {
            _mm512_shuffle_i32x4::<0xDD>(x, y)
        }
    });
    std::array::from_fn(|w| {
        let j = w % 8;
        if w < 8 {
            _mm512_shuffle_i32x4::<0x88>(v[j], v[j + 8])
        } else {
            _mm512_shuffle_i32x4::<0xDD>(v[j], v[j + 8])
        }
    })
}

/// Compresses `blocks` consecutive 64-byte blocks of each lane into its state.
///
/// # Safety
/// The CPU has AVX-512F, and every `ptrs[l]` is valid for reading `blocks * 64` bytes.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn compress(
    states: &mut [[u32; 4]; LANES],
    ptrs: &[*const u8; LANES],
    blocks: usize,
) {
    let word = |w: usize| {
        let v: [u32; LANES] = std::array::from_fn(|l| states[l][w]);
        // SAFETY: an array of 16 u32 is 64 bytes; unaligned load.
        unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
    };
    let (mut a, mut b, mut c, mut d) = (word(0), word(1), word(2), word(3));
    for blk in 0..blocks {
        let off = blk * 64;
        // SAFETY: the caller guarantees `blocks * 64` readable bytes behind every pointer.
        let rows: [__m512i; LANES] =
            std::array::from_fn(|l| unsafe { _mm512_loadu_si512(ptrs[l].add(off).cast()) });
        let m = transpose(rows);
        let (a0, b0, c0, d0) = (a, b, c, d);
        md5_rounds!(a, b, c, d, m);
        a = add(a, a0);
        b = add(b, b0);
        c = add(c, c0);
        d = add(d, d0);
    }
    for (w, v) in [a, b, c, d].into_iter().enumerate() {
        let mut out = [0u32; LANES];
        // SAFETY: 64 bytes into an array of 16 u32.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
        for l in 0..LANES {
            states[l][w] = out[l];
        }
    }
}
