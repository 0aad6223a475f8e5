//! getrusage(2) for the benches that report CPU time and peak memory. Neither std nor rustix
//! offers it, hence the benches' one unsafe block (the workspace denies unsafe code; a bench is
//! not shipped). Included by path (`#[path = "support/rusage.rs"] mod rusage;`), not a bench.

/// The resource usage of this process (`RUSAGE_SELF`) or of its children waited for
/// (`RUSAGE_CHILDREN`).
#[allow(unsafe_code)]
pub(crate) fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: rusage is plain old data (all-zero is a valid value), and getrusage only writes
    // into the struct we own and pass by pointer.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        u
    }
}

/// User + system CPU seconds of `who` (see [`rusage`]).
pub(crate) fn cpu_seconds(who: libc::c_int) -> f64 {
    let u = rusage(who);
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
