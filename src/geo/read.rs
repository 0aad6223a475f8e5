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

/// A read buffer that survives seeks landing inside it (`std::io::BufReader` drops its buffer on
/// every seek): the `tiff` crate seeks before each tag value, and most of them lie in the block
/// just read, so a COG's header costs a few reads of `capacity` bytes, not one per tag.
#[derive(Debug)]
pub struct SeekBuf<R> {
    inner: R,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    buf_at: u64,
    /// The logical position.
    pos: u64,
    capacity: usize,
}

impl<R> SeekBuf<R> {
    pub fn new(inner: R, capacity: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            buf_at: 0,
            pos: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read + Seek> Read for SeekBuf<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let in_buf = self.pos >= self.buf_at && self.pos < self.buf_at + self.buf.len() as u64;
        if !in_buf {
            self.inner.seek(SeekFrom::Start(self.pos))?;
            if out.len() >= self.capacity {
                let n = self.inner.read(out)?;
                self.pos += n as u64;
                return Ok(n);
            }
            self.buf.resize(self.capacity, 0);
            let n = self.inner.read(&mut self.buf)?;
            self.buf.truncate(n);
            self.buf_at = self.pos;
            if n == 0 {
                return Ok(0);
            }
        }
        let start = usize::try_from(self.pos - self.buf_at).expect("inside the buffer");
        let n = out.len().min(self.buf.len() - start);
        out[..n].copy_from_slice(&self.buf[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for SeekBuf<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "a seek before byte 0");
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(invalid)?,
            SeekFrom::End(d) => {
                let end = self.inner.seek(SeekFrom::End(0))?;
                end.checked_add_signed(d).ok_or_else(invalid)?
            }
        };
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seekbuf_reads_what_the_file_holds_and_keeps_its_buffer_across_seeks() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut r = SeekBuf::new(Counting::new(io::Cursor::new(data.clone()), u64::MAX), 1024);
        let mut b = [0u8; 16];
        for at in [0u64, 100, 40, 1000, 9990, 5000, 5010] {
            r.seek(SeekFrom::Start(at)).unwrap();
            let n = r.read(&mut b).unwrap();
            let at = at as usize;
            assert_eq!(&b[..n], &data[at..at + n], "at {at}");
        }
        // 0, 1000 (crosses the first block's end), 9990, 5000: four fills, 100/40/5010 buffered.
        assert!(
            r.get_ref().bytes_read() <= 4 * 1024,
            "{}",
            r.get_ref().bytes_read()
        );
        r.seek(SeekFrom::End(-4)).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[9996..]);
        let mut big = vec![0u8; 4096];
        r.seek(SeekFrom::Start(10)).unwrap();
        r.read_exact(&mut big).unwrap();
        assert_eq!(big, &data[10..4106]);
        assert!(r.seek(SeekFrom::Current(-10_000)).is_err());
    }

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
