//! Deterministic sample data: the demo's files, and the tests' and benchmarks'.

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// Writes `size` deterministic pseudo-random bytes (incompressible, like real imagery) and returns
/// their sha256 in hex. Also used by the tests and benchmarks.
pub fn write_sample(path: &Path, size: u64, seed: u64) -> anyhow::Result<String> {
    // Written beside and renamed into place, as a careful producer does.
    let tmp = path.with_extension("part");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut h = Sha256::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(hex::encode(h.finalize()))
}
