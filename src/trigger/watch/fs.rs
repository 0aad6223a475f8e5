//! What the watcher asks of the file system: which paths it wants, and what they are now.
//!
//! Everything here blocks (on NFS a `stat` can take seconds), so the watch task runs it on the
//! blocking pool.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobMatcher, GlobSet};

use super::events::Change;
use super::settle::{Seen, Signature};

/// Which files under the root are wanted.
#[derive(Debug)]
pub(super) struct Filter {
    pub(super) root: PathBuf,
    pub(super) pattern: GlobMatcher,
    pub(super) ignore: GlobSet,
    pub(super) recursive: bool,
}

impl Filter {
    /// Whether a regular file at `path` is to be sent: under the root (directly, unless
    /// recursive), its name not ignored, its path relative to the root matching the pattern.
    pub(super) fn wants(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        let Some(name) = rel.file_name() else {
            return false;
        };
        if !self.recursive && rel.components().count() != 1 {
            return false;
        }
        !self.ignore.is_match(name) && self.pattern.is_match(rel)
    }

    /// Whether a folder at `path` can hold wanted files that a full scan of the root would list.
    fn descends_into(&self, path: &Path) -> bool {
        self.recursive && path != self.root && path.starts_with(&self.root)
    }
}

/// What a path is now.
#[derive(Debug)]
pub(super) enum Probe {
    File(Signature),
    /// A folder, a symlink, a fifo...: never sent. Symlinks are not followed: their target may
    /// be anywhere, and its writes raise no event here.
    NotAFile {
        is_dir: bool,
    },
    Gone,
    Failed(io::Error),
}

/// Looks at `path` without following a symlink.
pub(super) fn probe(path: &Path) -> Probe {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Probe::File(Signature::of(&meta)),
        Ok(meta) => Probe::NotAFile {
            is_dir: meta.is_dir(),
        },
        Err(e) if is_gone(&e) => Probe::Gone,
        Err(e) => Probe::Failed(e),
    }
}

/// Whether an error means the path no longer exists (or a parent is no longer a folder).
pub(super) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// One finding about a path named by events.
#[derive(Debug)]
pub(super) enum Finding {
    /// A wanted file as it is now, and how the events saw it.
    File(PathBuf, Signature, Seen),
    /// Nothing at this path any more: forget it and anything under it.
    Gone(PathBuf),
    /// Something that is not a regular file: forget this path alone.
    NotAFile(PathBuf),
    Failed(PathBuf, io::Error),
}

/// Looks at the paths events named, with their latest change. A folder that appeared is listed,
/// when recursive: files can land in it before the new inotify watch on it is in place. The
/// files found in it settle, even when the folder was moved in whole: they were not renamed into
/// place themselves, and a writer may still have one open.
pub(super) fn check(filter: &Filter, paths: Vec<(PathBuf, Change)>) -> Vec<Finding> {
    let mut found = Vec::with_capacity(paths.len());
    for (path, change) in paths {
        if !path.starts_with(&filter.root) {
            continue;
        }
        match probe(&path) {
            Probe::File(sig) if filter.wants(&path) => {
                let seen = match change {
                    Change::MovedIn => Seen::MovedIn,
                    Change::Touched => Seen::Written,
                };
                found.push(Finding::File(path, sig, seen));
            }
            Probe::File(_) => {}
            Probe::NotAFile { is_dir } => {
                if is_dir && filter.descends_into(&path) {
                    match walk(filter, &path) {
                        Ok(files) => found.extend(
                            files
                                .into_iter()
                                .map(|(p, s)| Finding::File(p, s, Seen::Written)),
                        ),
                        Err(e) if is_gone(&e) => {}
                        Err(e) => found.push(Finding::Failed(path.clone(), e)),
                    }
                }
                found.push(Finding::NotAFile(path));
            }
            Probe::Gone => found.push(Finding::Gone(path)),
            Probe::Failed(e) => found.push(Finding::Failed(path, e)),
        }
    }
    found
}

/// Lists the wanted files in `dir` (and below it when recursive) with their signatures.
///
/// An error reading `dir` itself is returned; a sub-folder that cannot be read (removed
/// meanwhile, no permission) is skipped, and its files stay as they were in the caller's books
/// until a probe says they are gone.
pub(super) fn walk(filter: &Filter, dir: &Path) -> io::Result<Vec<(PathBuf, Signature)>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if folder == dir => return Err(e),
            Err(e) => {
                tracing::debug!(folder = %folder.display(), error = %e, "cannot list a sub-folder");
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::debug!(folder = %folder.display(), error = %e, "cannot read a folder entry");
                    continue;
                }
            };
            let path = entry.path();
            // `DirEntry::metadata` does not follow symlinks, so a symlink loop cannot trap us.
            match entry.metadata() {
                Ok(meta) if meta.is_dir() && filter.recursive => pending.push(path),
                Ok(meta) if meta.file_type().is_file() && filter.wants(&path) => {
                    files.push((path, Signature::of(&meta)));
                }
                Ok(_) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot stat a file"),
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use globset::{Glob, GlobSetBuilder};

    fn filter(pattern: &str, recursive: bool) -> Filter {
        let mut ignore = GlobSetBuilder::new();
        for glob in super::super::DEFAULT_IGNORE {
            ignore.add(Glob::new(glob).expect("a valid default glob"));
        }
        Filter {
            root: PathBuf::from("/in"),
            pattern: Glob::new(pattern)
                .expect("a valid test glob")
                .compile_matcher(),
            ignore: ignore.build().expect("valid default globs"),
            recursive,
        }
    }

    #[test]
    fn wants_matching_names_not_ignored_ones() {
        let f = filter("*.dat", false);
        assert!(f.wants(Path::new("/in/a.dat")));
        assert!(!f.wants(Path::new("/in/a.txt")));
        assert!(!f.wants(Path::new("/in/.a.dat")));
        assert!(!f.wants(Path::new("/in/a.dat~")));
        assert!(!f.wants(Path::new("/in/a.dat.tmp")));
        assert!(!f.wants(Path::new("/in")));
        assert!(!f.wants(Path::new("/elsewhere/a.dat")));
    }

    #[test]
    fn sub_folders_only_when_recursive() {
        assert!(!filter("**/*.dat", false).wants(Path::new("/in/sub/a.dat")));
        assert!(filter("**/*.dat", true).wants(Path::new("/in/sub/a.dat")));
        assert!(filter("**/*.dat", true).wants(Path::new("/in/a.dat")));
        assert!(!filter("**/*.dat", true).wants(Path::new("/in/sub/.a.dat")));
    }
}
