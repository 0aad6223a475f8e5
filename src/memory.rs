//! Large buffers go back to the system when freed, not into the allocator's arenas for good.
//!
//! glibc maps a block above its mmap threshold (128 KiB at start) on its own and unmaps it when
//! freed, but it raises the threshold to the size of each such block freed (up to 32 MiB). After
//! the first digest, the 1 MiB chunks of every later digest window (32 MiB), the part bodies and
//! the state documents come from the arenas instead: one per thread at first (a blocking-pool
//! thread is a new thread; up to 8 arenas per core), where freed memory between live blocks stays
//! resident. The soak (`cargo bench --bench soak`) saw the daemon's RSS go from 55 to 104 MiB in
//! 4 minutes, rising with each multipart run, at a live heap of 20 MiB (heaptrack), and stay at
//! 33-35 MiB with the threshold fixed. A fixed threshold turns glibc's adjustment off.

/// The threshold the daemon fixes: blocks from this size up are mapped and unmapped on their own.
/// Four times glibc's starting value, so that the many small blocks of a run stay in the arenas.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// [`MMAP_THRESHOLD`] as mallopt takes it (checked at compile time).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_C: libc::c_int = {
    assert!(MMAP_THRESHOLD <= libc::c_int::MAX as usize);
    MMAP_THRESHOLD as libc::c_int
};

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`], unless the operator chose one with
/// `MALLOC_MMAP_THRESHOLD_` (read by glibc itself). Returns whether it was fixed here; with
/// another C library it does nothing.
pub fn return_large_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
            return false;
        }
        // The daemon's one call into the C allocator's settings; no safe binding offers it.
        #[allow(unsafe_code)]
        // SAFETY: mallopt takes no pointer; it sets a parameter of glibc's allocator under the
        // allocator's own lock, and refuses (returns 0) a value it does not take.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_C) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

// Tested in tests/it/bounds.rs, in a process of its own: the resident set is the process's.
