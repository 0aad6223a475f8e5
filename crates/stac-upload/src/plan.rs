//! Splitting a file into the parts of one multipart upload, within S3's and the API's limits.

use stac_client::PartNumber;
use stac_client::units::ByteSize;

/// Every part but the last must be at least this long (S3 checks at complete).
pub const MIN_PART_SIZE: u64 = 5 * ByteSize::MIB;
/// No part may be longer than this.
pub const MAX_PART_SIZE: u64 = 5 * ByteSize::GIB;
/// The API accepts at most this many parts.
pub const MAX_PARTS: u64 = 100;
/// The largest file one upload can carry.
pub const MAX_FILE_SIZE: u64 = MAX_PARTS * MAX_PART_SIZE;
/// Default target: small enough that a 10 MB file still goes in two parallel parts and that
/// two parts fit in the hashing window (so their MD5s run on two cores), large enough that a
/// 1.6 GB file needs no more than 100; bigger files get bigger parts automatically.
pub const DEFAULT_PART_SIZE: ByteSize = ByteSize::mib(16);

/// One part: where it lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRange {
    /// Its number, from 1.
    pub number: PartNumber,
    /// Where it starts in the file, in bytes.
    pub offset: u64,
    /// Its length, in bytes.
    pub len: u64,
}

/// How a file of a given size is cut into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    file_size: u64,
    part_size: u64,
    count: u64,
}

/// The file cannot be sent in one upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "file is {} but one upload carries at most {} parts of {} ({}); split the file or compress it",
    ByteSize(*size), MAX_PARTS, ByteSize(MAX_PART_SIZE), ByteSize(MAX_FILE_SIZE)
)]
pub struct TooLarge {
    /// The size of the file to send, in bytes.
    pub size: u64,
}

impl PartPlan {
    /// Plans parts of about `target` bytes (clamped to 5 MiB..=5 GiB), growing them when the
    /// file would otherwise need more than 100. An empty file is one empty part.
    pub fn new(file_size: u64, target: ByteSize) -> Result<Self, TooLarge> {
        if file_size > MAX_FILE_SIZE {
            return Err(TooLarge { size: file_size });
        }
        let mut part_size = target.get().clamp(MIN_PART_SIZE, MAX_PART_SIZE);
        if file_size.div_ceil(part_size) > MAX_PARTS {
            // Round up to whole MiB: tidy numbers in logs, and never below what 100 parts need.
            let needed = file_size.div_ceil(MAX_PARTS);
            part_size = needed.next_multiple_of(ByteSize::MIB).min(MAX_PART_SIZE);
        }
        let count = file_size.div_ceil(part_size).max(1);
        Ok(Self {
            file_size,
            part_size,
            count,
        })
    }

    /// The file size this plan covers.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Length of every part but the last.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// Number of parts, 1..=100.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// The parts in order.
    pub fn parts(&self) -> impl ExactSizeIterator<Item = PartRange> + '_ {
        (0..self.count as u32).map(move |i| {
            let offset = u64::from(i) * self.part_size;
            PartRange {
                number: PartNumber(i + 1),
                offset,
                len: self.part_size.min(self.file_size - offset),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invariants(plan: &PartPlan) {
        let parts: Vec<_> = plan.parts().collect();
        assert_eq!(parts.len(), plan.count());
        assert!((1..=MAX_PARTS as usize).contains(&parts.len()));
        let mut next = 0;
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.number.0 as usize, i + 1);
            assert_eq!(p.offset, next, "parts must be contiguous");
            assert!(p.len <= MAX_PART_SIZE);
            if i + 1 < parts.len() {
                assert!(
                    p.len >= MIN_PART_SIZE,
                    "part {} too small: {}",
                    i + 1,
                    p.len
                );
            }
            next += p.len;
        }
        assert_eq!(next, plan.file_size(), "parts must cover the file exactly");
    }

    #[test]
    fn boundaries() {
        let mib = ByteSize::MIB;
        for (size, target, parts) in [
            (0, 16 * mib, 1),
            (1, 16 * mib, 1),
            (5 * mib, 5 * mib, 1),
            (5 * mib + 1, 5 * mib, 2),
            (10_000_000, 5 * mib, 2),
            (1 << 30, 16 * mib, 64),
            (100 << 30, 16 * mib, 100),
            (MAX_FILE_SIZE, 16 * mib, 100),
            (17 * mib, 1, 4), // a target below 5 MiB is raised to 5 MiB
        ] {
            let plan = PartPlan::new(size, ByteSize(target)).unwrap();
            assert_eq!(plan.count(), parts, "size {size} target {target}");
            check_invariants(&plan);
        }
        assert_eq!(
            PartPlan::new(0, DEFAULT_PART_SIZE)
                .unwrap()
                .parts()
                .next()
                .unwrap()
                .len,
            0
        );
    }

    #[test]
    fn too_large_is_refused() {
        let e = PartPlan::new(MAX_FILE_SIZE + 1, DEFAULT_PART_SIZE).unwrap_err();
        assert!(e.to_string().contains("at most 100 parts"), "{e}");
    }

    #[test]
    fn many_sizes_obey_the_limits() {
        // A deterministic sweep over awkward sizes and targets (the fuzz issue adds a property test).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let size = x % (MAX_FILE_SIZE + 1);
            let target = (x >> 20) % (6 * ByteSize::GIB);
            check_invariants(&PartPlan::new(size, ByteSize(target)).unwrap());
        }
    }
}
