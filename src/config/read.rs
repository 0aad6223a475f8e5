//! Local files the job file names (the job file itself, secret files) are read only when they
//! are regular files, and only up to a limit: a path to /dev/zero, a FIFO or a huge file by
//! mistake must neither hang nor fill the memory of `check` or the daemon.

use std::io::Read as _;
use std::path::Path;

/// The largest job file read: 4 MiB. A job takes a few hundred bytes, so this holds over ten
/// thousand jobs, while the parse tree of a file (about ten times its text) stays in the tens
/// of megabytes.
pub const MAX_JOB_FILE: u64 = 4 * 1024 * 1024;

/// The bytes of the regular file at `path`, if it holds at most `limit` bytes; `what` names the
/// kind of file in the error ("a job file", "a secret file").
///
/// The file is opened with `O_NONBLOCK` and judged by the metadata of what was opened, not of
/// the path: opening a FIFO then does not wait for a writer, and a file swapped between a check
/// and the open cannot slip through. The read stops one byte past the limit, so a file that
/// grows after the check is refused too.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> std::io::Result<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    let too_big = || {
        std::io::Error::other(format!(
            "larger than {limit} bytes ({}), the most {what} may hold",
            crate::units::ByteSize(limit)
        ))
    };
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "not a regular file: {what} is read only from a regular file of at most {limit} bytes ({})",
            crate::units::ByteSize(limit)
        )));
    }
    if meta.len() > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
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
        assert_eq!(read_bounded(&small, 3, "a test file").unwrap(), b"abc");
        let e = read_bounded(&small, 2, "a test file").unwrap_err();
        assert!(
            e.to_string()
                .contains("larger than 2 bytes (2B), the most a test file may hold"),
            "{e}"
        );
        let e = read_bounded(Path::new("/dev/zero"), 2, "a test file").unwrap_err();
        assert!(e.to_string().starts_with("not a regular file"), "{e}");
        let e = read_bounded(dir.path(), 2, "a test file").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
