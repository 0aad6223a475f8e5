//! The settle rule: a file is ready once what we can see of it stayed the same for a quiet period.
//!
//! Pure bookkeeping, no I/O: the caller stats files and passes the time in, so the rule is tested
//! without a file system or a clock.

use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// What is compared to decide whether a file changed.
///
/// Size and mtime, as the issue asks, plus the inode: a file renamed over another one is a new
/// version even when its size and mtime are the same (`rsync -t`, `cp -p` then `mv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Signature {
    len: u64,
    mtime: Option<SystemTime>,
    inode: u64,
}

impl Signature {
    /// The signature of a file from its metadata.
    pub(super) fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            mtime: meta.modified().ok(),
            inode,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Seen with `sig`, unchanged and without write activity since `since`.
    Settling { sig: Signature, since: Instant },
    /// This version was sent; it is sent again only if it changes and settles again.
    Sent(Signature),
}

/// The files being watched: those settling, and the version last sent of those still present.
///
/// Sent versions are kept so that a spurious event or a rescan does not send a file twice;
/// entries are dropped as soon as their file is known to be gone, so the map never holds more
/// than the matching files in the folder.
#[derive(Debug)]
pub(super) struct Settler {
    quiet: Duration,
    files: HashMap<PathBuf, State>,
}

impl Settler {
    /// A settler that calls a file ready after `quiet` without change.
    pub(super) fn new(quiet: Duration) -> Self {
        Self {
            quiet,
            files: HashMap::new(),
        }
    }

    /// Records that `path` was seen with `sig` at `now`; `activity` says an event reported a write
    /// (which restarts the quiet period even if the signature looks the same, e.g. an in-place
    /// rewrite within the mtime granularity of the file system). Returns whether the file is a
    /// new candidate, i.e. (re)started settling.
    pub(super) fn observe(
        &mut self,
        path: &Path,
        sig: Signature,
        now: Instant,
        activity: bool,
    ) -> bool {
        match self.files.get_mut(path) {
            Some(State::Sent(sent)) if *sent == sig => false,
            Some(State::Settling { sig: seen, since }) if *seen == sig => {
                if activity {
                    *since = now;
                }
                false
            }
            Some(state) => {
                *state = State::Settling { sig, since: now };
                true
            }
            None => {
                self.files
                    .insert(path.to_path_buf(), State::Settling { sig, since: now });
                true
            }
        }
    }

    /// When the next settling file is due for its check.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter_map(|state| match state {
                State::Settling { since, .. } => Some(*since + self.quiet),
                State::Sent(_) => None,
            })
            .min()
    }

    /// The settling files whose quiet period is over at `now`, oldest first.
    pub(super) fn due(&self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<(Instant, &PathBuf)> = self
            .files
            .iter()
            .filter_map(|(path, state)| match state {
                State::Settling { since, .. } if *since + self.quiet <= now => Some((*since, path)),
                _ => None,
            })
            .collect();
        due.sort();
        due.into_iter().map(|(_, path)| path.clone()).collect()
    }

    /// The check of a due file, seen with `sig` at `now`: returns whether it is ready to send, in
    /// which case it now counts as sent. A changed file starts its quiet period again.
    pub(super) fn confirm(&mut self, path: &Path, sig: Signature, now: Instant) -> bool {
        let Some(state) = self.files.get_mut(path) else {
            return false;
        };
        match *state {
            State::Settling { sig: seen, since } if seen == sig => {
                let ready = since + self.quiet <= now;
                if ready {
                    *state = State::Sent(sig);
                }
                ready
            }
            State::Settling { .. } => {
                *state = State::Settling { sig, since: now };
                false
            }
            State::Sent(_) => false,
        }
    }

    /// Puts off the check of a settling file that could not be read, by one quiet period.
    pub(super) fn postpone(&mut self, path: &Path, now: Instant) {
        if let Some(State::Settling { since, .. }) = self.files.get_mut(path) {
            *since = now;
        }
    }

    /// Forgets `path` and, if it was a folder, everything under it.
    pub(super) fn forget(&mut self, path: &Path) {
        if self.files.remove(path).is_none() {
            self.files.retain(|p, _| !p.starts_with(path));
        }
    }

    /// Forgets `path` alone: it is no longer a regular file, but what is under it (if it became
    /// a folder) is tracked on its own.
    pub(super) fn forget_exact(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// The tracked files that are not in `present` (to be checked after a full scan).
    pub(super) fn missing_from<'a>(
        &'a self,
        present: &'a std::collections::HashSet<PathBuf>,
    ) -> impl Iterator<Item = &'a PathBuf> + 'a {
        self.files.keys().filter(move |p| !present.contains(*p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(300);

    fn sig(len: u64, secs: u64) -> Signature {
        Signature {
            len,
            mtime: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
            inode: 7,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_file_is_ready_once_unchanged_for_the_quiet_period() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        assert!(s.observe(p, sig(10, 1), t0, true));
        assert_eq!(s.next_deadline(), Some(t0 + QUIET));
        assert!(s.due(t0 + ms(299)).is_empty());
        assert_eq!(s.due(t0 + QUIET), vec![p.to_path_buf()]);
        assert!(s.confirm(p, sig(10, 1), t0 + QUIET));
        assert_eq!(s.next_deadline(), None, "a sent file has no deadline");
        assert!(!s.confirm(p, sig(10, 1), t0 + ms(400)), "sent once");
    }

    #[test]
    fn a_growing_file_restarts_its_quiet_period() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        s.observe(p, sig(10, 1), t0, true);
        assert!(!s.confirm(p, sig(20, 2), t0 + QUIET));
        assert_eq!(s.next_deadline(), Some(t0 + QUIET + QUIET));
        assert!(s.confirm(p, sig(20, 2), t0 + QUIET + QUIET));
    }

    #[test]
    fn write_activity_restarts_the_quiet_period_but_a_scan_does_not() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        s.observe(p, sig(10, 1), t0, false);
        assert!(!s.observe(p, sig(10, 1), t0 + ms(100), false));
        assert_eq!(s.next_deadline(), Some(t0 + QUIET));
        assert!(!s.observe(p, sig(10, 1), t0 + ms(200), true));
        assert_eq!(s.next_deadline(), Some(t0 + ms(200) + QUIET));
    }

    #[test]
    fn a_sent_file_is_sent_again_only_after_it_changes_and_settles() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        s.observe(p, sig(10, 1), t0, true);
        assert!(s.confirm(p, sig(10, 1), t0 + QUIET));
        assert!(
            !s.observe(p, sig(10, 1), t0 + ms(500), true),
            "same version: not a candidate"
        );
        assert_eq!(s.next_deadline(), None);
        let t1 = t0 + ms(600);
        assert!(
            s.observe(p, sig(30, 5), t1, true),
            "changed: a candidate again"
        );
        assert_eq!(s.due(t1 + QUIET), vec![p.to_path_buf()]);
        assert!(s.confirm(p, sig(30, 5), t1 + QUIET));
    }

    #[test]
    fn a_file_replaced_by_one_with_the_same_size_and_mtime_is_a_new_version() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        s.observe(p, sig(10, 1), t0, true);
        assert!(s.confirm(p, sig(10, 1), t0 + QUIET));
        assert!(s.observe(
            p,
            Signature {
                inode: 8,
                ..sig(10, 1)
            },
            t0 + ms(500),
            true
        ));
    }

    #[test]
    fn forgetting_a_folder_forgets_what_is_under_it_only() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        for p in [
            "/in/sub/a.dat",
            "/in/sub/deep/b.dat",
            "/in/subway.dat",
            "/in/c.dat",
        ] {
            s.observe(Path::new(p), sig(1, 1), t0, true);
        }
        s.forget(Path::new("/in/sub"));
        let mut left = s.due(t0 + QUIET);
        left.sort();
        assert_eq!(
            left,
            vec![PathBuf::from("/in/c.dat"), PathBuf::from("/in/subway.dat")]
        );
        s.forget(Path::new("/in/c.dat"));
        assert_eq!(s.due(t0 + QUIET), vec![PathBuf::from("/in/subway.dat")]);
    }

    #[test]
    fn due_files_come_oldest_first_and_postponing_moves_the_deadline() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        s.observe(Path::new("/in/late.dat"), sig(1, 1), t0 + ms(50), true);
        s.observe(Path::new("/in/early.dat"), sig(1, 1), t0, true);
        assert_eq!(
            s.due(t0 + ms(400)),
            vec![
                PathBuf::from("/in/early.dat"),
                PathBuf::from("/in/late.dat")
            ]
        );
        s.postpone(Path::new("/in/early.dat"), t0 + ms(400));
        assert_eq!(s.next_deadline(), Some(t0 + ms(50) + QUIET));
        s.forget_exact(Path::new("/in/late.dat"));
        assert_eq!(s.next_deadline(), Some(t0 + ms(400) + QUIET));
    }
}
