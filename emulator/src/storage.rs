//! Where part bodies live: in memory, or in files so that a 10 GiB upload needs no RAM.
//!
//! A completed object is the list of its parts' blobs, never copied: S3 does not rewrite parts
//! either. Blobs are reference-counted and a file is deleted when its last blob goes away
//! (replaced part, aborted upload, overwritten object, finished download).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

use super::Storage;

/// Memory buffers start at most this big; a lying Content-Length must not allocate gigabytes.
const MAX_PREALLOC: u64 = 16 * 1024 * 1024;

/// The storage backend of one running emulator.
#[derive(Debug)]
pub(crate) enum Store {
    Memory,
    Dir(InstanceDir),
}

/// A directory owned by one emulator instance, removed with it: state is not persisted, so
/// its files mean nothing to the next run.
#[derive(Debug)]
pub(crate) struct InstanceDir(PathBuf);

impl Drop for InstanceDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove the emulator's data");
        }
    }
}

impl Store {
    pub(crate) async fn new(storage: &Storage) -> io::Result<Store> {
        match storage {
            Storage::Memory => Ok(Store::Memory),
            Storage::Dir(base) => {
                let dir = base.join(format!("stac-emulator-{}", uuid::Uuid::new_v4().simple()));
                tokio::fs::create_dir_all(&dir).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
                })?;
                Ok(Store::Dir(InstanceDir(dir)))
            }
        }
    }

    /// Somewhere to write one part body of `expected_len` bytes as it arrives.
    pub(crate) async fn sink(
        &self,
        upload_id: &str,
        part: u32,
        expected_len: u64,
    ) -> io::Result<PartSink> {
        match self {
            Store::Memory => {
                let capacity = usize::try_from(expected_len.min(MAX_PREALLOC)).unwrap_or(0);
                Ok(PartSink::Memory(BytesMut::with_capacity(capacity)))
            }
            Store::Dir(InstanceDir(dir)) => {
                // A unique name per attempt: the same part may be sent twice at once.
                let path = dir.join(format!(
                    "{upload_id}-{part}-{}.part",
                    uuid::Uuid::new_v4().simple()
                ));
                let file = tokio::fs::File::create(&path).await?;
                Ok(PartSink::File {
                    writer: BufWriter::with_capacity(1024 * 1024, file),
                    stored: StoredFile { path, len: 0 },
                })
            }
        }
    }
}

/// A part body being received.
pub(crate) enum PartSink {
    Memory(BytesMut),
    File {
        writer: BufWriter<tokio::fs::File>,
        stored: StoredFile,
    },
}

impl PartSink {
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self {
            PartSink::Memory(buf) => {
                buf.extend_from_slice(chunk);
                Ok(())
            }
            PartSink::File { writer, stored } => {
                writer.write_all(chunk).await?;
                stored.len += chunk.len() as u64;
                Ok(())
            }
        }
    }

    pub(crate) async fn finish(self) -> io::Result<Blob> {
        match self {
            PartSink::Memory(buf) => Ok(Blob::Memory(buf.freeze())),
            PartSink::File { mut writer, stored } => {
                writer.flush().await?;
                drop(writer);
                Ok(Blob::File(Arc::new(stored)))
            }
        }
    }
}

/// A file holding one part body; deleted when dropped (also when a write failed half-way).
#[derive(Debug)]
pub(crate) struct StoredFile {
    path: PathBuf,
    len: u64,
}

impl Drop for StoredFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!(file = %self.path.display(), error = %e, "cannot remove a part file");
        }
    }
}

/// One stored part body.
#[derive(Debug, Clone)]
pub(crate) enum Blob {
    Memory(Bytes),
    File(Arc<StoredFile>),
}

impl Blob {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Blob::Memory(b) => b.len() as u64,
            Blob::File(f) => f.len,
        }
    }
}

fn open(path: &Path) -> io::Result<std::fs::File> {
    std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The concatenated bytes of `blobs`, read synchronously (for tests, on small objects).
pub(crate) fn read_all(blobs: &[Blob]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for blob in blobs {
        match blob {
            Blob::Memory(b) => out.extend_from_slice(b),
            Blob::File(f) => {
                open(&f.path)?.read_to_end(&mut out)?;
            }
        }
    }
    Ok(out)
}

/// The sha256 of the concatenated `blobs`, streamed so that it works on big files.
pub(crate) fn sha256_hex(blobs: &[Blob]) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    for blob in blobs {
        match blob {
            Blob::Memory(b) => hasher.update(b),
            Blob::File(f) => {
                let mut file = open(&f.path)?;
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            }
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The concatenated `blobs` as a body stream; holding the blobs keeps the files alive even if
/// the object is replaced while it is being downloaded.
pub(crate) fn stream(blobs: Vec<Blob>) -> impl Stream<Item = io::Result<Bytes>> + Send {
    stream::iter(blobs)
        .then(|blob| async move {
            match blob {
                Blob::Memory(b) => stream::once(async move { Ok(b) }).boxed(),
                Blob::File(f) => match tokio::fs::File::open(&f.path).await {
                    Ok(file) => tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                        // Keeps the file (and its Drop) alive until the stream is done.
                        .map(move |chunk| {
                            let _alive = &f;
                            chunk
                        })
                        .boxed(),
                    Err(e) => stream::once(async move { Err(e) }).boxed(),
                },
            }
        })
        .flatten()
}
