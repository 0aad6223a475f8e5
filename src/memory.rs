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

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`], unless the operator chose one with
/// `MALLOC_MMAP_THRESHOLD_` (read by glibc itself). Returns whether it was fixed here; with
/// another C library it does nothing.
pub fn return_large_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
            return false;
        }
        let value = libc::c_int::try_from(MMAP_THRESHOLD).expect("256 KiB fits a C int");
        // The daemon's one call into the C allocator's settings; no safe binding offers it.
        #[allow(unsafe_code)]
        // SAFETY: mallopt takes no pointer; it sets a parameter of glibc's allocator under the
        // allocator's own lock, and refuses (returns 0) a value it does not take.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .expect("/proc/self/status")
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("an RssAnon line")
    }

    #[test]
    fn large_buffers_freed_between_live_small_ones_leave_the_resident_set() {
        assert!(
            return_large_buffers() || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some(),
            "mallopt refused the threshold"
        );
        // What a digest does: a 1 MiB chunk freed (left alone, glibc would raise its threshold
        // to 1 MiB here)...
        drop(std::hint::black_box(vec![1u8; 1 << 20]));
        let before = rss_anon_kib();
        // ...then 64 more, each beside a small block that outlives it (a run's bookkeeping).
        let mut small = Vec::new();
        let mut large = Vec::new();
        for i in 0..64u8 {
            large.push(std::hint::black_box(vec![i | 1; 1 << 20]));
            small.push(std::hint::black_box(vec![i; 4096]));
        }
        drop(large);
        let after = rss_anon_kib();
        drop(small);
        // 64 MiB was touched; in the arenas most of it would still be resident.
        assert!(
            after < before + 16 * 1024,
            "RssAnon {before} KiB before, {after} KiB after 64 MiB were freed"
        );
    }
}
