//! The settle rule: a file is ready once what we can see of it stayed the same for a quiet period,
//! or at once when it was renamed into place (and was not written to since).
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

/// How a file was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Listed by a scan (at start, at each poll, after lost events): nothing says whether a
    /// writer is at it, so it settles, from the first sighting of this version.
    Listed,
    /// An event reported a write (or its creation, or a change of what is at the path): it
    /// settles, from now, even if its signature looks the same (an in-place rewrite within the
    /// mtime granularity of the file system).
    Written,
    /// An event reported it renamed (moved) into place: the producer's word that it is
    /// finished. It is ready at once, but for the check of its signature before it is sent.
    MovedIn,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Seen with `sig`, and due for its check at `due`: a quiet period after it was last seen
    /// changing or written to, or at once if it was renamed into place since.
    Settling { sig: Signature, due: Instant },
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

    /// Records that `path` was seen with `sig` at `now`, as `seen` says. Returns whether the file
    /// is a new candidate, i.e. (re)started settling.
    pub(super) fn observe(
        &mut self,
        path: &Path,
        sig: Signature,
        now: Instant,
        seen: Seen,
    ) -> bool {
        let due = match seen {
            Seen::MovedIn => now,
            Seen::Listed | Seen::Written => now + self.quiet,
        };
        match self.files.get_mut(path) {
            // The very version sent (moved away and back, say): nothing new.
            Some(State::Sent(sent)) if *sent == sig => false,
            Some(State::Settling {
                sig: known,
                due: when,
            }) if *known == sig => {
                match seen {
                    Seen::Listed => {}
                    // A write pushes the check back; a rename into place brings it forward.
                    Seen::Written | Seen::MovedIn => *when = due,
                }
                false
            }
            Some(state) => {
                *state = State::Settling { sig, due };
                true
            }
            None => {
                self.files
                    .insert(path.to_path_buf(), State::Settling { sig, due });
                true
            }
        }
    }

    /// When the next settling file is due for its check.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter_map(|state| match state {
                State::Settling { due, .. } => Some(*due),
                State::Sent(_) => None,
            })
            .min()
    }

    /// The settling files due for their check at `now`, the longest due first.
    pub(super) fn due(&self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<(Instant, &PathBuf)> = self
            .files
            .iter()
            .filter_map(|(path, state)| match state {
                State::Settling { due, .. } if *due <= now => Some((*due, path)),
                _ => None,
            })
            .collect();
        due.sort();
        due.into_iter().map(|(_, path)| path.clone()).collect()
    }

    /// The check of a due file, seen with `sig` at `now`: returns whether it is ready to send, in
    /// which case it now counts as sent. A changed file starts its quiet period again (a file
    /// renamed in and changed since settles like a written one).
    pub(super) fn confirm(&mut self, path: &Path, sig: Signature, now: Instant) -> bool {
        let Some(state) = self.files.get_mut(path) else {
            return false;
        };
        match *state {
            State::Settling { sig: seen, due } if seen == sig => {
                let ready = due <= now;
                if ready {
                    *state = State::Sent(sig);
                }
                ready
            }
            State::Settling { .. } => {
                *state = State::Settling {
                    sig,
                    due: now + self.quiet,
                };
                false
            }
            State::Sent(_) => false,
        }
    }

    /// Puts off the check of a settling file that could not be read, by one quiet period.
    pub(super) fn postpone(&mut self, path: &Path, now: Instant) {
        if let Some(State::Settling { due, .. }) = self.files.get_mut(path) {
            *due = now + self.quiet;
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
        assert!(s.observe(p, sig(10, 1), t0, Seen::Written));
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
        s.observe(p, sig(10, 1), t0, Seen::Written);
        assert!(!s.confirm(p, sig(20, 2), t0 + QUIET));
        assert_eq!(s.next_deadline(), Some(t0 + QUIET + QUIET));
        assert!(s.confirm(p, sig(20, 2), t0 + QUIET + QUIET));
    }

    #[test]
    fn write_activity_restarts_the_quiet_period_but_a_scan_does_not() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        s.observe(p, sig(10, 1), t0, Seen::Listed);
        assert!(!s.observe(p, sig(10, 1), t0 + ms(100), Seen::Listed));
        assert_eq!(s.next_deadline(), Some(t0 + QUIET));
        assert!(!s.observe(p, sig(10, 1), t0 + ms(200), Seen::Written));
        assert_eq!(s.next_deadline(), Some(t0 + ms(200) + QUIET));
    }

    #[test]
    fn a_sent_file_is_sent_again_only_after_it_changes_and_settles() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        s.observe(p, sig(10, 1), t0, Seen::Written);
        assert!(s.confirm(p, sig(10, 1), t0 + QUIET));
        assert!(
            !s.observe(p, sig(10, 1), t0 + ms(500), Seen::Written),
            "same version: not a candidate"
        );
        assert_eq!(s.next_deadline(), None);
        let t1 = t0 + ms(600);
        assert!(
            s.observe(p, sig(30, 5), t1, Seen::Written),
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
        s.observe(p, sig(10, 1), t0, Seen::Written);
        assert!(s.confirm(p, sig(10, 1), t0 + QUIET));
        assert!(s.observe(
            p,
            Signature {
                inode: 8,
                ..sig(10, 1)
            },
            t0 + ms(500),
            Seen::Written
        ));
    }

    #[test]
    fn a_file_renamed_into_place_is_ready_at_once() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        assert!(s.observe(p, sig(10, 1), t0, Seen::MovedIn));
        assert_eq!(
            s.next_deadline(),
            Some(t0),
            "due now, not a quiet period later"
        );
        assert_eq!(s.due(t0), vec![p.to_path_buf()]);
        assert!(s.confirm(p, sig(10, 1), t0), "ready on its first check");
    }

    #[test]
    fn a_file_renamed_in_and_written_to_settles_from_the_write() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        s.observe(p, sig(10, 1), t0, Seen::MovedIn);
        // Written before its check: the write decides.
        let t1 = t0 + ms(5);
        assert!(s.observe(p, sig(20, 2), t1, Seen::Written));
        assert_eq!(s.next_deadline(), Some(t1 + QUIET));
        // Changed between the event and the check, with no event yet: it settles too.
        let mut s = Settler::new(QUIET);
        s.observe(p, sig(10, 1), t0, Seen::MovedIn);
        assert!(!s.confirm(p, sig(20, 2), t1));
        assert_eq!(s.next_deadline(), Some(t1 + QUIET));
        assert!(s.confirm(p, sig(20, 2), t1 + QUIET));
        // Sent, then written to: sent again once settled.
        let t2 = t1 + QUIET + ms(10);
        assert!(s.observe(p, sig(30, 3), t2, Seen::Written));
        assert!(s.due(t2 + ms(299)).is_empty());
        assert!(s.confirm(p, sig(30, 3), t2 + QUIET));
    }

    #[test]
    fn a_rename_brings_a_settling_version_forward_but_a_scan_does_not() {
        let t0 = Instant::now();
        let mut s = Settler::new(QUIET);
        let p = Path::new("/in/a.dat");
        // Listed by the start-up scan, then its rename event comes.
        s.observe(p, sig(10, 1), t0, Seen::Listed);
        assert!(!s.observe(p, sig(10, 1), t0 + ms(1), Seen::MovedIn));
        assert_eq!(s.next_deadline(), Some(t0 + ms(1)));
        // A sent version moved away and back is not sent again.
        assert!(s.confirm(p, sig(10, 1), t0 + ms(1)));
        assert!(!s.observe(p, sig(10, 1), t0 + ms(50), Seen::MovedIn));
        assert_eq!(s.next_deadline(), None);
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
            s.observe(Path::new(p), sig(1, 1), t0, Seen::Written);
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
        s.observe(
            Path::new("/in/late.dat"),
            sig(1, 1),
            t0 + ms(50),
            Seen::Written,
        );
        s.observe(Path::new("/in/early.dat"), sig(1, 1), t0, Seen::Written);
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
