//! One pass over the file yields the sha256 multihash and every part's MD5.
//!
//! sha256 is sequential by nature; the parts' MD5s are independent of each other. With SIMD
//! lanes (the default where the CPU has them, see [`md5x`](super::md5x)), the pass runs two
//! readers of the file side by side: the sequential reader below feeds the sha256 thread, and
//! the lane thread reads 8 or 16 parts at once with positioned reads (`pread`) in chunks of
//! `lane_chunk` bytes per lane and hashes them in the lanes of one vector register. Both read
//! through the page cache, so the disk sees the file once; the lane thread starts a part only
//! when the sequential reader has reached the part as many parts back as there are lanes, so
//! the pages the first reader brought in are still cached for the second (at most two lane
//! groups of parts ahead). MD5 in lanes costs a fraction of sha256, and the pass runs near the
//! speed of sha256 on one core. Memory: the 32 MiB window plus one chunk per lane.
//!
//! With `Md5Backend::Scalar` (no SIMD, or forced), one read serves both: the reader fills buffers from a fixed pool (so memory stays bounded whatever the file size)
//! and hands each chunk, shared, to two consumers: the sha256 thread, which sees every chunk in
//! file order, and the MD5 worker that owns the chunk's part. Parts go round-robin to as many MD5
//! workers as there are cores, so while one worker is still hashing part k another starts on
//! part k+1: sha256 is sequential by nature, the MD5s are parallel by part, and the pass runs
//! near max(sha256 on one core, (sha256 + md5) / cores). A chunk's buffer returns to the pool
//! when both consumers have dropped it.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use md5::Md5 as Md5Hasher;
use sha2::{Digest as _, Sha256};

pub use super::md5x::Md5Backend;
use super::md5x::Unavailable;
use super::md5x::{self, Kernel, LaneSource, Span};
use super::plan::PartPlan;
use stac_client::units::ByteSize;
use stac_client::{Md5, Multihash};

/// Tuning of the digest pass.
#[derive(Debug, Clone, Copy)]
pub struct DigestOptions {
    /// Bytes per read.
    pub chunk_size: usize,
    /// Total bytes of buffers in flight: the memory bound of the pass.
    pub window: usize,
    /// MD5 worker threads; 0 means one more than there are cores (measured: with the sha256
    /// thread sharing a core, one extra runnable MD5 thread keeps both cores busier).
    pub md5_workers: usize,
    /// How the parts' MD5s are computed: SIMD lanes (`Auto` picks the widest the CPU has) or
    /// scalar workers. A forced backend the CPU lacks fails the pass with `Unavailable`.
    pub md5_backend: Md5Backend,
    /// Bytes per positioned read of each lane (SIMD backends).
    pub lane_chunk: usize,
}

impl Default for DigestOptions {
    fn default() -> Self {
        Self {
            chunk_size: ByteSize::MIB as usize,
            window: 32 * ByteSize::MIB as usize,
            md5_workers: 0,
            md5_backend: Md5Backend::Auto,
            lane_chunk: 64 * 1024,
        }
    }
}

/// The digests the create call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// The multihash the asset's `file:checksum` declares (of the uncompressed file).
    pub multihash: Multihash,
    /// MD5 of each part, in part order.
    pub part_md5s: Vec<Md5>,
    /// Size of the file digested, in bytes.
    pub size: u64,
}

/// Why the digest pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// Reading the file failed.
    #[error("reading the file failed: {0}")]
    Io(#[from] io::Error),
    /// The file ended sooner or later than its planned size: it changed while it was read.
    #[error("the file changed while it was read: expected {expected} bytes, {found}")]
    SizeChanged {
        /// The size planned, in bytes.
        expected: u64,
        /// What was found instead, for the message.
        found: String,
    },
    #[error("cancelled")]
    /// The pass was cancelled.
    Cancelled,
    #[error(transparent)]
    /// The MD5 backend asked for cannot run on this CPU.
    Unavailable(#[from] Unavailable),
}

/// A filled buffer; gives its allocation back to the pool when the last holder drops it.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
    pool: SyncSender<Vec<u8>>,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // The pool outlives every chunk unless the pass is being torn down; then the buffer is
        // simply freed.
        let _ = self.pool.send(std::mem::take(&mut self.buf));
    }
}

enum Md5Msg {
    Data(Arc<Chunk>),
    EndPart(usize),
}

/// Digests `file` from its current position according to `plan`.
///
/// `on_progress` is called with the byte count of each chunk read (by the sequential reader,
/// in file order). `cancel` is checked between chunks. The file must be exactly
/// `plan.file_size()` long: a file that shrinks or grows while being read is reported, not
/// digested.
pub fn digest_file(
    file: File,
    plan: &PartPlan,
    opts: DigestOptions,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Result<FileDigest, DigestError> {
    match opts.md5_backend.kernel()? {
        Some(kernel) => digest_lanes(file, plan, opts, kernel, cancel, on_progress),
        None => digest_scalar(file, plan, opts, cancel, on_progress),
    }
}

/// The sequential reader's position, shared with the lane thread, and the flag that stops
/// either side when the other failed.
struct Pacing {
    read: AtomicU64,
    stop: AtomicBool,
}

/// Positioned reads of `file` for the lane scheduler, paced behind the sequential reader.
struct PartReader<'a> {
    file: &'a File,
    /// The file position the pass started at.
    base: u64,
    plan: &'a PartPlan,
    lanes: usize,
    pacing: &'a Pacing,
    cancel: &'a AtomicBool,
}

impl LaneSource for PartReader<'_> {
    type Error = DigestError;

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DigestError> {
        self.file
            .read_exact_at(buf, self.base + offset)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => DigestError::SizeChanged {
                    expected: self.plan.file_size(),
                    found: format!("it ended before byte {}", offset + buf.len() as u64),
                },
                _ => DigestError::Io(e),
            })
    }

    fn before_part(&self, index: usize) -> Result<(), DigestError> {
        // Start part `index` once the sequential reader is at part `index - lanes`: what this
        // side reads stays at most two lane groups ahead of the other, in the page cache.
        let due = (index.saturating_sub(self.lanes) as u64) * self.plan.part_size();
        while self.pacing.read.load(Ordering::Acquire) < due {
            self.before_round()?;
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        Ok(())
    }

    fn before_round(&self) -> Result<(), DigestError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(DigestError::Cancelled)
        } else if self.pacing.stop.load(Ordering::Relaxed) {
            Err(io::Error::other("the sequential reader stopped").into())
        } else {
            Ok(())
        }
    }
}

fn digest_lanes(
    mut file: File,
    plan: &PartPlan,
    opts: DigestOptions,
    kernel: Kernel,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Result<FileDigest, DigestError> {
    let chunk_size = opts.chunk_size.max(4096);
    let buffers = (opts.window / chunk_size).max(2);
    let base = file.stream_position()?;
    let spans: Vec<Span> = plan
        .parts()
        .map(|p| Span {
            offset: p.offset,
            len: p.len,
        })
        .collect();
    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(buffers);
    for _ in 0..buffers {
        pool_tx
            .send(Vec::new())
            .expect("the pool channel has room for every buffer");
    }
    let pacing = Pacing {
        read: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let (read, sha, md5s) = std::thread::scope(|s| {
        let (sha_tx, sha_rx) = channel::<Arc<Chunk>>();
        let sha = s.spawn(move || {
            let mut h = Sha256::new();
            for c in sha_rx {
                h.update(c.bytes());
            }
            let d: [u8; 32] = h.finalize().into();
            d
        });
        let lanes = {
            let (file, spans, pacing) = (&file, &spans, &pacing);
            s.spawn(move || {
                let source = PartReader {
                    file,
                    base,
                    plan,
                    lanes: kernel.width(),
                    pacing,
                    cancel,
                };
                let r = md5x::hash_parts(kernel, &source, spans, opts.lane_chunk);
                if r.is_err() {
                    pacing.stop.store(true, Ordering::Relaxed);
                }
                r
            })
        };
        let read = read_sequential(
            &file,
            plan,
            chunk_size,
            &pool_rx,
            &pool_tx,
            &sha_tx,
            &pacing,
            cancel,
            on_progress,
        );
        if read.is_err() {
            pacing.stop.store(true, Ordering::Relaxed);
        }
        drop(sha_tx);
        (read, sha.join(), lanes.join())
    });
    let md5s = md5s.map_err(|_| io::Error::other("the md5 lane thread panicked"))?;
    // The sequential reader's error first: it names what changed in the file; then the lanes'.
    read?;
    let (md5s, _) = md5s?;
    let sha = sha.map_err(|_| io::Error::other("sha256 thread panicked"))?;
    Ok(FileDigest {
        multihash: Multihash::from_sha256(&sha),
        part_md5s: md5s.into_iter().map(Md5).collect(),
        size: plan.file_size(),
    })
}

/// The file in order to the sha256 thread, through the buffer pool; publishes its position.
#[allow(clippy::too_many_arguments)]
fn read_sequential(
    file: &File,
    plan: &PartPlan,
    chunk_size: usize,
    pool_rx: &Receiver<Vec<u8>>,
    pool_tx: &SyncSender<Vec<u8>>,
    sha_tx: &std::sync::mpsc::Sender<Arc<Chunk>>,
    pacing: &Pacing,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Result<(), DigestError> {
    let consumer_gone = || io::Error::other("the sha256 thread stopped early");
    let mut total = 0u64;
    while total < plan.file_size() {
        if cancel.load(Ordering::Relaxed) {
            return Err(DigestError::Cancelled);
        }
        if pacing.stop.load(Ordering::Relaxed) {
            // The lane thread failed; its error is the one reported.
            return Ok(());
        }
        let mut buf = pool_rx.recv().map_err(|_| consumer_gone())?;
        let want = (chunk_size as u64).min(plan.file_size() - total) as usize;
        buf.resize(want, 0);
        let got = read_full(file, &mut buf[..want])?;
        if got < want {
            return Err(DigestError::SizeChanged {
                expected: plan.file_size(),
                found: format!("it ended after {} bytes", total + got as u64),
            });
        }
        let chunk = Arc::new(Chunk {
            buf,
            len: want,
            pool: pool_tx.clone(),
        });
        sha_tx.send(chunk).map_err(|_| consumer_gone())?;
        total += want as u64;
        pacing.read.store(total, Ordering::Release);
        on_progress(want as u64);
    }
    let mut probe = [0u8; 1];
    if read_full(file, &mut probe)? > 0 {
        return Err(DigestError::SizeChanged {
            expected: plan.file_size(),
            found: "it is longer now".to_owned(),
        });
    }
    Ok(())
}

/// Scalar MD5s: one read feeds the sha256 thread and round-robin MD5 workers.
fn digest_scalar(
    mut file: File,
    plan: &PartPlan,
    opts: DigestOptions,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Result<FileDigest, DigestError> {
    let chunk_size = opts.chunk_size.max(4096);
    let buffers = (opts.window / chunk_size).max(2);
    let workers = match opts.md5_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()) + 1,
        n => n,
    }
    .min(plan.count())
    .max(1);

    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(buffers);
    for _ in 0..buffers {
        pool_tx
            .send(Vec::new())
            .expect("the pool channel has room for every buffer");
    }
    let results: Mutex<Vec<Option<Md5>>> = Mutex::new(vec![None; plan.count()]);

    let (read, sha) = std::thread::scope(|s| {
        let (sha_tx, sha_rx) = channel::<Arc<Chunk>>();
        let sha = s.spawn(move || {
            let mut h = Sha256::new();
            for c in sha_rx {
                h.update(c.bytes());
            }
            let d: [u8; 32] = h.finalize().into();
            d
        });
        let mut md5_txs = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = channel::<Md5Msg>();
            md5_txs.push(tx);
            let results = &results;
            s.spawn(move || md5_worker(rx, results));
        }
        let read = read_parts(
            &mut file,
            plan,
            chunk_size,
            &pool_rx,
            &pool_tx,
            &sha_tx,
            &md5_txs,
            cancel,
            on_progress,
        );
        // Closing the channels ends the consumers; the scope joins them.
        drop(sha_tx);
        drop(md5_txs);
        (read, sha.join())
    });
    read?;
    let sha = sha.map_err(|_| io::Error::other("sha256 thread panicked"))?;
    let md5s = results
        .into_inner()
        .map_err(|_| io::Error::other("an md5 thread panicked"))?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| io::Error::other("an md5 thread ended early"))?;
    Ok(FileDigest {
        multihash: Multihash::from_sha256(&sha),
        part_md5s: md5s,
        size: plan.file_size(),
    })
}

fn md5_worker(rx: Receiver<Md5Msg>, results: &Mutex<Vec<Option<Md5>>>) {
    let mut h = Md5Hasher::new();
    for msg in rx {
        match msg {
            Md5Msg::Data(c) => h.update(c.bytes()),
            Md5Msg::EndPart(i) => {
                let d: [u8; 16] = std::mem::take(&mut h).finalize().into();
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(Md5(d));
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn read_parts(
    file: &mut File,
    plan: &PartPlan,
    chunk_size: usize,
    pool_rx: &Receiver<Vec<u8>>,
    pool_tx: &SyncSender<Vec<u8>>,
    sha_tx: &std::sync::mpsc::Sender<Arc<Chunk>>,
    md5_txs: &[std::sync::mpsc::Sender<Md5Msg>],
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Result<(), DigestError> {
    let consumer_gone = || io::Error::other("a hashing thread stopped early");
    let mut total = 0u64;
    for (i, part) in plan.parts().enumerate() {
        let worker = &md5_txs[i % md5_txs.len()];
        let mut left = part.len;
        while left > 0 {
            if cancel.load(Ordering::Relaxed) {
                return Err(DigestError::Cancelled);
            }
            let mut buf = pool_rx.recv().map_err(|_| consumer_gone())?;
            let want = (chunk_size as u64).min(left) as usize;
            buf.resize(want, 0);
            let got = read_full(file, &mut buf[..want])?;
            if got < want {
                return Err(DigestError::SizeChanged {
                    expected: plan.file_size(),
                    found: format!("it ended after {} bytes", total + got as u64),
                });
            }
            let chunk = Arc::new(Chunk {
                buf,
                len: want,
                pool: pool_tx.clone(),
            });
            sha_tx.send(chunk.clone()).map_err(|_| consumer_gone())?;
            worker
                .send(Md5Msg::Data(chunk))
                .map_err(|_| consumer_gone())?;
            left -= want as u64;
            total += want as u64;
            on_progress(want as u64);
        }
        worker
            .send(Md5Msg::EndPart(i))
            .map_err(|_| consumer_gone())?;
    }
    let mut probe = [0u8; 1];
    if read_full(file, &mut probe)? > 0 {
        return Err(DigestError::SizeChanged {
            expected: plan.file_size(),
            found: "it is longer now".to_owned(),
        });
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(mut file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn reference(data: &[u8], plan: &PartPlan) -> FileDigest {
        let sha: [u8; 32] = Sha256::digest(data).into();
        let md5s = plan
            .parts()
            .map(|p| {
                let d: [u8; 16] =
                    Md5Hasher::digest(&data[p.offset as usize..(p.offset + p.len) as usize]).into();
                Md5(d)
            })
            .collect();
        FileDigest {
            multihash: Multihash::from_sha256(&sha),
            part_md5s: md5s,
            size: data.len() as u64,
        }
    }

    fn run(data: &[u8], part: u64, opts: DigestOptions) -> (FileDigest, FileDigest, u64) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        let plan = PartPlan::new(data.len() as u64, ByteSize(part)).unwrap();
        let seen = std::sync::atomic::AtomicU64::new(0);
        let got = digest_file(f, &plan, opts, &AtomicBool::new(false), &|n| {
            seen.fetch_add(n, Ordering::Relaxed);
        })
        .unwrap();
        (got, reference(data, &plan), seen.into_inner())
    }

    #[test]
    fn matches_reference_for_awkward_sizes() {
        let data: Vec<u8> = (0..(11 * ByteSize::MIB + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for backend in Md5Backend::available() {
            for (len, workers) in [
                (0usize, 0usize),
                (1, 1),
                (4096, 3),
                (5 * ByteSize::MIB as usize, 2),
                (data.len(), 0),
                (data.len(), 1),
            ] {
                let opts = DigestOptions {
                    chunk_size: 64 * 1024 + 7,
                    window: 512 * 1024,
                    md5_workers: workers,
                    md5_backend: backend,
                    lane_chunk: 4096 + 64,
                };
                let (got, want, seen) = run(&data[..len], 5 * ByteSize::MIB, opts);
                assert_eq!(got, want, "len {len} workers {workers} {backend:?}");
                assert_eq!(seen, len as u64);
            }
        }
    }

    fn with(backend: Md5Backend) -> DigestOptions {
        DigestOptions {
            md5_backend: backend,
            ..DigestOptions::default()
        }
    }

    #[test]
    fn known_vector() {
        for b in Md5Backend::available() {
            let (got, _, _) = run(b"hello\n", 5 * ByteSize::MIB, with(b));
            assert_eq!(
                got.multihash.as_str(),
                "12205891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
            );
            assert_eq!(got.part_md5s[0].to_base64(), "sZRqySSS0jR8YjW00mERhA==");
        }
    }

    #[test]
    fn a_file_that_shrank_or_grew_is_reported() {
        for b in Md5Backend::available() {
            for (real, planned) in [(1000usize, 2000u64), (3000, 2000), (11 << 20, 12 << 20)] {
                let mut f = tempfile::tempfile().unwrap();
                f.write_all(&vec![1u8; real]).unwrap();
                use std::io::Seek;
                f.rewind().unwrap();
                let plan = PartPlan::new(planned, ByteSize::mib(5)).unwrap();
                let e =
                    digest_file(f, &plan, with(b), &AtomicBool::new(false), &|_| {}).unwrap_err();
                assert!(
                    matches!(e, DigestError::SizeChanged { .. }),
                    "{b:?} {real}: {e}"
                );
            }
        }
    }

    #[test]
    fn cancel_stops_the_pass() {
        for b in Md5Backend::available() {
            let f = tempfile::tempfile().unwrap();
            f.set_len(64 * 1024 * 1024).unwrap();
            let plan = PartPlan::new(64 * 1024 * 1024, ByteSize::mib(16)).unwrap();
            let e = digest_file(f, &plan, with(b), &AtomicBool::new(true), &|_| {}).unwrap_err();
            assert!(matches!(e, DigestError::Cancelled), "{b:?}");
        }
    }

    #[test]
    fn a_backend_the_cpu_lacks_is_refused() {
        let missing = [Md5Backend::Avx2, Md5Backend::Avx512, Md5Backend::Neon]
            .into_iter()
            .find(|b| !Md5Backend::available().contains(b))
            .expect("no CPU has both x86 and aarch64 lanes");
        let f = tempfile::tempfile().unwrap();
        let plan = PartPlan::new(0, ByteSize::mib(5)).unwrap();
        let e = digest_file(f, &plan, with(missing), &AtomicBool::new(false), &|_| {}).unwrap_err();
        assert!(matches!(e, DigestError::Unavailable(_)), "{e}");
    }
}
