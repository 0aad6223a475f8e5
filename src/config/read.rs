//! Local files the job file names (the job file itself, secret files) are read only when they
//! are regular files, and only up to a limit ([`stac_client::localfile`]).

use std::path::Path;

use stac_client::localfile::{self, Links};
use stac_client::units::ByteSize;

/// The largest job file read: 4 MiB. A job takes a few hundred bytes, so this holds over ten
/// thousand jobs, while the parse tree of a file (about ten times its text) stays in the tens
/// of megabytes.
pub const MAX_JOB_FILE: u64 = 4 * 1024 * 1024;

/// The bytes of the regular file at `path`, if it holds at most `limit` bytes; `what` names the
/// kind of file in the error ("a job file", "a secret file").
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> std::io::Result<Vec<u8>> {
    let limit = ByteSize(limit);
    localfile::read_bounded(path, limit, Links::Follow).map_err(|e| match e {
        localfile::ReadError::Io(e) => e,
        localfile::ReadError::NotAFile { what: kind } => std::io::Error::other(format!(
            "not a regular file ({kind}): {what} is read only from a regular file of at most {} bytes ({limit})",
            limit.get()
        )),
        localfile::ReadError::TooLarge { .. } => std::io::Error::other(format!(
            "larger than {} bytes ({limit}), the most {what} may hold",
            limit.get()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_say_what_the_file_is_for_and_the_limit() {
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
        assert!(
            e.to_string().starts_with("not a regular file (a device)"),
            "{e}"
        );
    }
}
