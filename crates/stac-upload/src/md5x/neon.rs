//! 4 lanes in the 32-bit elements of a NEON register (aarch64, where NEON is always present).

use std::arch::aarch64::*;

pub(super) const LANES: usize = 4;

/// Calls of [`compress`] so far: a test's proof that the kernel itself ran, not a fallback.
#[cfg(test)]
pub(super) static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[inline]
#[target_feature(enable = "neon")]
fn add(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
    vaddq_u32(a, b)
}

#[inline]
#[target_feature(enable = "neon")]
fn splat(k: u32) -> uint32x4_t {
    vdupq_n_u32(k)
}

#[inline]
#[target_feature(enable = "neon")]
fn rotl<const L: i32, const R: i32>(x: uint32x4_t) -> uint32x4_t {
    vsriq_n_u32::<R>(vshlq_n_u32::<L>(x), x)
}

/// F = b ? c : d.
#[inline]
#[target_feature(enable = "neon")]
fn ff(b: uint32x4_t, c: uint32x4_t, d: uint32x4_t) -> uint32x4_t {
    vbslq_u32(b, c, d)
}

/// G = d ? b : c.
#[inline]
#[target_feature(enable = "neon")]
fn gg(b: uint32x4_t, c: uint32x4_t, d: uint32x4_t) -> uint32x4_t {
    vbslq_u32(d, b, c)
}

#[inline]
#[target_feature(enable = "neon")]
fn hh(b: uint32x4_t, c: uint32x4_t, d: uint32x4_t) -> uint32x4_t {
    veorq_u32(veorq_u32(b, c), d)
}

/// I = c ^ (b | !d).
#[inline]
#[target_feature(enable = "neon")]
fn ii(b: uint32x4_t, c: uint32x4_t, d: uint32x4_t) -> uint32x4_t {
    veorq_u32(c, vornq_u32(b, d))
}

/// Rows `r[l]` (4 words of lane `l`) to columns (word `j` of every lane).
#[inline]
#[target_feature(enable = "neon")]
fn transpose(r: [uint32x4_t; 4]) -> [uint32x4_t; 4] {
    let t0 = vtrnq_u32(r[0], r[1]);
    let t1 = vtrnq_u32(r[2], r[3]);
    [
        vcombine_u32(vget_low_u32(t0.0), vget_low_u32(t1.0)),
        vcombine_u32(vget_low_u32(t0.1), vget_low_u32(t1.1)),
        vcombine_u32(vget_high_u32(t0.0), vget_high_u32(t1.0)),
        vcombine_u32(vget_high_u32(t0.1), vget_high_u32(t1.1)),
    ]
}

/// Compresses `blocks` consecutive 64-byte blocks of each lane into its state.
///
/// # Safety
/// Every `ptrs[l]` is valid for reading `blocks * 64` bytes.
#[target_feature(enable = "neon")]
pub(super) unsafe fn compress(
    states: &mut [[u32; 4]; LANES],
    ptrs: &[*const u8; LANES],
    blocks: usize,
) {
    #[cfg(test)]
    CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let word = |w: usize| {
        let v: [u32; LANES] = std::array::from_fn(|l| states[l][w]);
        // SAFETY: 4 u32.
        unsafe { vld1q_u32(v.as_ptr()) }
    };
    let (mut a, mut b, mut c, mut d) = (word(0), word(1), word(2), word(3));
    for blk in 0..blocks {
        let off = blk * 64;
        let mut m = [vdupq_n_u32(0); 16];
        for q in 0..4 {
            // SAFETY: the caller guarantees `blocks * 64` readable bytes behind every pointer;
            // MD5 words are little-endian, as aarch64 Linux is.
            let rows: [uint32x4_t; LANES] = std::array::from_fn(|l| unsafe {
                vreinterpretq_u32_u8(vld1q_u8(ptrs[l].add(off + 16 * q)))
            });
            let cols = transpose(rows);
            m[4 * q..4 * q + 4].copy_from_slice(&cols);
        }
        let (a0, b0, c0, d0) = (a, b, c, d);
        md5_rounds!(a, b, c, d, m);
        a = add(a, a0);
        b = add(b, b0);
        c = add(c, c0);
        d = add(d, d0);
    }
    for (w, v) in [a, b, c, d].into_iter().enumerate() {
        let mut out = [0u32; LANES];
        // SAFETY: 4 u32.
        unsafe { vst1q_u32(out.as_mut_ptr(), v) };
        for l in 0..LANES {
            states[l][w] = out[l];
        }
    }
}
