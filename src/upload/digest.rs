//! One read of the file yields the sha256 multihash and every part's MD5.
//!
//! The reader fills buffers from a fixed pool (so memory stays bounded whatever the file size)
//! and hands each chunk, shared, to two consumers: the sha256 thread, which sees every chunk in
//! file order, and the MD5 worker that owns the chunk's part. Parts go round-robin to as many MD5
//! workers as there are cores, so while one worker is still hashing part k another starts on
//! part k+1: sha256 is sequential by nature, the MD5s are parallel by part, and the pass runs
//! near max(sha256 on one core, (sha256 + md5) / cores). A chunk's buffer returns to the pool
//! when both consumers have dropped it.

use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use md5::Md5 as Md5Hasher;
use sha2::{Digest as _, Sha256};

use super::plan::PartPlan;
use crate::stac::{Md5, Multihash};
use crate::units::ByteSize;

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
}

impl Default for DigestOptions {
    fn default() -> Self {
        Self {
            chunk_size: ByteSize::MIB as usize,
            window: 32 * ByteSize::MIB as usize,
            md5_workers: 0,
        }
    }
}

/// The digests the create call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub multihash: Multihash,
    /// MD5 of each part, in part order.
    pub part_md5s: Vec<Md5>,
    pub size: u64,
}

/// Why the digest pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("reading the file failed: {0}")]
    Io(#[from] io::Error),
    #[error("the file changed while it was read: expected {expected} bytes, {found}")]
    SizeChanged { expected: u64, found: String },
    #[error("cancelled")]
    Cancelled,
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

/// Reads `file` once from its current position and digests it according to `plan`.
///
/// `on_progress` is called with the byte count of each chunk read. `cancel` is checked between
/// chunks. The file must be exactly `plan.file_size()` long: a file that shrinks or grows while
/// being read is reported, not digested.
pub fn digest_file(
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
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
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
            };
            let (got, want, seen) = run(&data[..len], 5 * ByteSize::MIB, opts);
            assert_eq!(got, want, "len {len} workers {workers}");
            assert_eq!(seen, len as u64);
        }
    }

    #[test]
    fn known_vector() {
        let (got, _, _) = run(b"hello\n", 5 * ByteSize::MIB, DigestOptions::default());
        assert_eq!(
            got.multihash.as_str(),
            "12205891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(got.part_md5s[0].to_base64(), "sZRqySSS0jR8YjW00mERhA==");
    }

    #[test]
    fn a_file_that_shrank_is_reported() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 1000]).unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        let plan = PartPlan::new(2000, ByteSize::mib(5)).unwrap();
        let e = digest_file(
            f,
            &plan,
            DigestOptions::default(),
            &AtomicBool::new(false),
            &|_| {},
        )
        .unwrap_err();
        assert!(matches!(e, DigestError::SizeChanged { .. }), "{e}");
    }

    #[test]
    fn cancel_stops_the_pass() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(64 * 1024 * 1024).unwrap();
        let plan = PartPlan::new(64 * 1024 * 1024, ByteSize::mib(16)).unwrap();
        let e = digest_file(
            f,
            &plan,
            DigestOptions::default(),
            &AtomicBool::new(true),
            &|_| {},
        )
        .unwrap_err();
        assert!(matches!(e, DigestError::Cancelled));
    }
}
