//! Compression before upload (`content_encoding` gzip or br), streaming into a temporary file.
//!
//! One read of the source computes the sha256 of the *uncompressed* bytes (what `file:checksum`
//! must declare, per docs/protocol.md) while the compressed bytes stream into a temporary file beside
//! the state store; the parts and their MD5s are then taken from that file. Memory stays bounded
//! (the encoders keep a window of a few MiB at most); the temporary file is removed when the
//! returned handle is dropped, whatever happened.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest as _, Sha256};

use stac_client::{ContentEncoding, Multihash};

/// gzip level: 6 is zlib's default. Measured with `cargo bench --bench compress`; see README.
pub const GZIP_LEVEL: u32 = 6;
/// brotli quality: 5 compresses about as well as gzip -9 at a fraction of brotli's top levels'
/// cost. Measured with `cargo bench --bench compress`; see README.
pub const BROTLI_QUALITY: u32 = 5;
/// brotli window (log2 bytes): 22 = 4 MiB, the encoder's largest standard window.
const BROTLI_WINDOW: u32 = 22;

/// A compressed copy of a file, deleted on drop.
#[derive(Debug)]
pub struct Compressed {
    /// The temporary file with the compressed bytes.
    pub file: tempfile::NamedTempFile,
    /// Length of the compressed bytes.
    pub size: u64,
    /// Length of the source.
    pub source_size: u64,
    /// sha256 multihash of the uncompressed source.
    pub multihash: Multihash,
}

impl Compressed {
    /// Where the compressed bytes are.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Compresses `source` into a new temporary file in `dir`.
pub fn compress_file(
    source: &Path,
    dir: &Path,
    encoding: ContentEncoding,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(u64) + Sync),
) -> io::Result<Compressed> {
    let mut input = File::open(source)?;
    let tmp = tempfile::Builder::new()
        .prefix(".stac-uploadd-")
        .suffix(".compressed")
        .tempfile_in(dir)?;
    let out = BufWriter::with_capacity(1 << 20, tmp.reopen()?);
    let mut sha = Sha256::new();
    let mut read = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut pump = |w: &mut dyn Write| -> io::Result<()> {
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sha.update(&buf[..n]);
            w.write_all(&buf[..n])?;
            read += n as u64;
            on_progress(n as u64);
        }
    };
    let mut out = match encoding {
        ContentEncoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            pump(&mut enc)?;
            enc.finish()?
        }
        ContentEncoding::Br => {
            let mut enc =
                brotli::CompressorWriter::new(out, 1 << 16, BROTLI_QUALITY, BROTLI_WINDOW);
            pump(&mut enc)?;
            enc.flush()?;
            enc.into_inner()
        }
    };
    out.flush()?;
    let size = out.get_ref().metadata()?.len();
    drop(out);
    let digest: [u8; 32] = sha.finalize().into();
    Ok(Compressed {
        file: tmp,
        size,
        source_size: read,
        multihash: Multihash::from_sha256(&digest),
    })
}

/// Media types whose bytes are already compressed: `auto` leaves them alone.
pub fn is_compressed_media_type(media_type: &str) -> bool {
    let t = media_type.to_ascii_lowercase();
    let essence = t.split(';').next().unwrap_or("").trim();
    matches!(
        essence,
        "application/zip"
            | "application/gzip"
            | "application/x-gzip"
            | "application/x-bzip2"
            | "application/x-xz"
            | "application/zstd"
            | "application/x-7z-compressed"
            | "application/x.ascii-grid+zip"
            | "application/vnd.apache.parquet"
            | "image/png"
            | "image/jpeg"
            | "image/webp"
            | "video/mp4"
    ) || essence.ends_with("+zip")
        || essence.ends_with("+gzip")
        // Cloud-optimised GeoTIFFs are compressed inside (DEFLATE/LZW/ZSTD tiles).
        || (essence == "image/tiff" && t.contains("cloud-optimized"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..len)
            .map(|i| b"station,2026-11-25T10:00:00Z,5.3\n"[i % 33])
            .collect();
        let p = dir.join("data.csv");
        std::fs::File::create(&p).unwrap().write_all(&data).unwrap();
        (p, data)
    }

    #[test]
    fn gzip_and_brotli_round_trip_with_the_uncompressed_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (p, data) = sample(dir.path(), 3 << 20);
        let want = Multihash::from_sha256(&Sha256::digest(&data).into());
        for enc in [ContentEncoding::Gzip, ContentEncoding::Br] {
            let c = compress_file(&p, dir.path(), enc, &AtomicBool::new(false), &|_| {}).unwrap();
            assert_eq!(c.multihash, want);
            assert_eq!(c.source_size, data.len() as u64);
            assert!(c.size < data.len() as u64 / 10, "{enc:?}: {} bytes", c.size);
            let bytes = std::fs::read(c.path()).unwrap();
            let mut back = Vec::new();
            match enc {
                ContentEncoding::Gzip => {
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                ContentEncoding::Br => {
                    brotli::Decompressor::new(&bytes[..], 1 << 16)
                        .read_to_end(&mut back)
                        .unwrap();
                }
            }
            assert_eq!(back, data, "{enc:?} round trip");
            let path = c.path().to_owned();
            drop(c);
            assert!(!path.exists(), "the temporary file is removed");
        }
    }

    #[test]
    fn cancel_and_errors_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = sample(dir.path(), 1 << 20);
        let e = compress_file(
            &p,
            dir.path(),
            ContentEncoding::Gzip,
            &AtomicBool::new(true),
            &|_| {},
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "only the source remains: {left:?}");
    }

    #[test]
    fn already_compressed_types() {
        assert!(is_compressed_media_type("application/zip"));
        assert!(is_compressed_media_type(
            "image/tiff; application=geotiff; profile=cloud-optimized"
        ));
        assert!(!is_compressed_media_type("image/tiff; application=geotiff"));
        assert!(!is_compressed_media_type("text/csv"));
        assert!(!is_compressed_media_type("application/x-netcdf"));
    }
}
