//! The daemon's MD5 lanes, compiled on their own: `md5x`'s unit tests (every kernel against
//! `md-5`), plus the checks below that the NEON kernel is the one an aarch64 build chooses and
//! that it agrees with `md-5` over the lengths and part counts an upload meets.
//! Run through `scripts/check-neon.sh` (cross-built for aarch64, run under qemu).

#[path = "../../../crates/stac-upload/src/md5x/mod.rs"]
#[allow(dead_code)]
pub mod md5x;

#[cfg(test)]
mod tests;
