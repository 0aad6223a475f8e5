//! A reader that counts what it reads and refuses to read past a budget: every header reader in
//! this module goes through it, so a hostile header costs at most the budget, and the benches
//! can say how many bytes a verdict cost.

use std::io::{self, Read, Seek, SeekFrom};

/// The most a header reader reads from one file (IFDs, tags, GeoKeys; a GeoJSON file).
pub const READ_BUDGET: u64 = 16 * 1024 * 1024;

/// Counts the bytes read through it; past `budget` a read fails with `InvalidData`.
#[derive(Debug)]
pub struct Counting<R> {
    inner: R,
    read: u64,
    budget: u64,
}

impl<R> Counting<R> {
    pub fn new(inner: R, budget: u64) -> Self {
        Self {
            inner,
            read: 0,
            budget,
        }
    }

    /// The bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.saturating_sub(self.read);
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the header asks for more than {} bytes to be read",
                    self.budget
                ),
            ));
        }
        let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = self.inner.read(&mut buf[..take])?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_stops_at_the_budget() {
        let mut r = Counting::new(io::Cursor::new(vec![7u8; 100]), 10);
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).unwrap(), 10);
        assert_eq!(r.bytes_read(), 10);
        let err = r.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
