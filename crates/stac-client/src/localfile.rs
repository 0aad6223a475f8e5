//! Bounded reads of local files: the one way the daemon reads a whole file it did not stream
//! (job files, secret files, CA bundles, the state folder's documents).
//!
//! A path to /dev/zero, a FIFO or a huge file by mistake must neither hang nor fill the memory:
//! only a regular file is read, and only up to a limit. The file is opened with `O_NONBLOCK`
//! and judged by the metadata of what was opened, not of the path, so opening a FIFO does not
//! wait for a writer and a file swapped between a check and the open cannot slip through. The
//! read stops one byte past the limit, so a file that grows after the check is refused too.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::units::ByteSize;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file system refused: missing, permissions, an I/O error.
    #[error(transparent)]
    Io(std::io::Error),
    /// Not a regular file (`what` says what it is instead: "a FIFO", "a symbolic link", ...).
    #[error("{what}, not a regular file")]
    NotAFile {
        /// What the path is instead.
        what: &'static str,
    },
    /// More bytes than the limit (`size`: what was seen, at least the limit plus one).
    #[error("larger than {limit} (at least {size} bytes)")]
    TooLarge {
        /// Bytes seen: at least the limit plus one.
        size: u64,
        /// The limit it passed.
        limit: ByteSize,
    },
}

/// Whether a symbolic link at the path itself is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow it (a file the user names: a job file, a secret, a CA bundle).
    Follow,
    /// Refuse it (a file the daemon writes itself, as a regular file: the state documents).
    Refuse,
}

/// The bytes of the regular file at `path`, if it holds at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: ByteSize, links: Links) -> Result<Vec<u8>, ReadError> {
    let mut flags = libc::O_NONBLOCK;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if links == Links::Refuse && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ReadError::NotAFile {
                what: "a symbolic link",
            });
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    let meta = file.metadata().map_err(ReadError::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "something else"
        };
        return Err(ReadError::NotAFile { what });
    }
    let too_large = |size| ReadError::TooLarge { size, limit };
    if meta.len() > limit.get() {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    (&file)
        .take(limit.get() + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit.get() {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, "abc").unwrap();
        let read = |p: &Path, n: u64, l| read_bounded(p, ByteSize(n), l);
        assert_eq!(read(&small, 3, Links::Follow).unwrap(), b"abc");
        let e = read(&small, 2, Links::Follow).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { size: 3, .. }), "{e}");
        let e = read(Path::new("/dev/zero"), 2, Links::Follow).unwrap_err();
        assert!(matches!(e, ReadError::NotAFile { what: "a device" }), "{e}");
        let e = read(dir.path(), 2, Links::Follow).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotAFile {
                    what: "a directory"
                }
            ),
            "{e}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&small, &link).unwrap();
        assert_eq!(read(&link, 3, Links::Follow).unwrap(), b"abc");
        let e = read(&link, 3, Links::Refuse).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotAFile {
                    what: "a symbolic link"
                }
            ),
            "{e}"
        );
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let e = read(&fifo, 3, Links::Follow).unwrap_err();
        assert!(matches!(e, ReadError::NotAFile { what: "a FIFO" }), "{e}");
    }
}
