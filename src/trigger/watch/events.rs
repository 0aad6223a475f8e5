//! inotify events, as each watch sees them: batches of paths worth a look, each with what its
//! latest event says: renamed (moved) into place, or touched otherwise. The one watcher that
//! all watches share, and the routing of its events to the watches they concern, are in
//! [`super::hub`].
//!
//! Events are taken as they come, with no debounce delay: notify's thread folds them into each
//! concerned watch's [`Inbox`] (one entry per path, so a burst of writes to one file is one entry, and the inbox
//! never holds more than the paths touched since the watch task last looked), and wakes the
//! task, which takes the whole inbox at once. While the task is busy (stat-ing the last batch,
//! or waiting for the consumer), events keep folding in; that is all the coalescing needed,
//! since the settle rule, not the event rate, decides when a written file is sent.
//!
//! A debouncer (notify-debouncer-full, used before) cannot tell a rename into place from a file
//! written in place: it holds every event for its timeout, and a file created under a temporary
//! name and renamed within that timeout comes out as a `Create` of the final name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind};
use tokio::sync::Notify;

/// What the latest event about a path says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Renamed (moved) into place (`IN_MOVED_TO`): the convention for "this file is finished"
    /// (rsync, `mv`, most processing chains). Sent without a settle period.
    MovedIn,
    /// Created, written, closed after writing, removed or renamed away: a `stat` tells what is
    /// there, and a file there settles before it is sent.
    Touched,
}

/// What one look at the inbox found, reduced to what the watch task acts on.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Paths that may have changed, appeared or gone, with their latest change, sorted.
    pub(super) paths: Vec<(PathBuf, Change)>,
    /// Events were lost (inotify queue overflow): the folder must be scanned again.
    pub(super) rescan: bool,
    /// The watched folder itself was removed or moved away: its inotify watch is dead.
    pub(super) root_gone: bool,
    /// What the watcher reported as errors, as text (one notify error may concern many
    /// watches).
    pub(super) errors: Vec<String>,
}

/// The most errors kept between two looks; a watcher failing in a loop must not fill memory.
const MAX_ERRORS: usize = 16;

/// Events folded in since the watch task last looked.
#[derive(Debug, Default)]
struct Inbox {
    paths: HashMap<PathBuf, Change>,
    rescan: bool,
    root_gone: bool,
    errors: Vec<String>,
    /// notify's thread dropped its handler: no event will come any more.
    ended: bool,
}

impl Inbox {
    /// Folds one event in; returns whether it is worth waking the task for.
    fn add(&mut self, event: Event, root: &Path) -> bool {
        if event.need_rescan() {
            self.rescan = true;
            return true;
        }
        match event.kind {
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                if event.paths.first().is_some_and(|p| p == root) =>
            {
                self.root_gone = true;
                true
            }
            // Into place. notify also reports `Both` (from, to) when it saw both halves; the
            // `To` half came first, the `From` half on its own.
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                self.mark(event.paths, Change::MovedIn)
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => false,
            // What may have changed otherwise: a writer closed the file, it appeared, it was
            // written to, it was renamed away (or a rename of unknown direction), it went.
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Name(_))
            | EventKind::Remove(_) => self.mark(event.paths, Change::Touched),
            // Opens, reads (our own uploads among them), metadata: nothing to look at.
            _ => false,
        }
    }

    /// The latest change of a path wins: a file renamed in and then written to settles; one
    /// written to and then replaced by a rename is the renamed one.
    fn mark(&mut self, paths: Vec<PathBuf>, change: Change) -> bool {
        let any = !paths.is_empty();
        for path in paths {
            self.paths.insert(path, change);
        }
        any
    }

    fn error(&mut self, error: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(error);
        }
    }

    /// Takes what came in, leaving the inbox empty.
    fn take(&mut self) -> Batch {
        let mut paths: Vec<(PathBuf, Change)> =
            std::mem::take(&mut self.paths).into_iter().collect();
        paths.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Batch {
            paths,
            rescan: std::mem::take(&mut self.rescan),
            root_gone: std::mem::take(&mut self.root_gone),
            errors: std::mem::take(&mut self.errors),
        }
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.rescan && !self.root_gone && self.errors.is_empty()
    }
}

/// The inbox and the bell, shared by the hub's routing (on notify's thread) and the watch task.
#[derive(Debug, Default)]
pub(super) struct Mailbox {
    inbox: Mutex<Inbox>,
    bell: Notify,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Folds an event about this watch's folder in (its paths already under `root`), waking
    /// the task if it is worth a look. Never blocks for more than a short lock: it runs on
    /// notify's thread, which serves every watch.
    pub(super) fn event(&self, event: Event, root: &Path) {
        let wake = self.lock().add(event, root);
        if wake {
            // Stores a permit if the task is not waiting: no wake-up is lost.
            self.bell.notify_one();
        }
    }

    /// A watcher error concerning this watch.
    pub(super) fn error(&self, error: String) {
        self.lock().error(error);
        self.bell.notify_one();
    }

    /// The watch's inotify watch is gone (it could not be put back after another watch's
    /// change): the task treats its folder as lost and watches it again.
    pub(super) fn lost(&self, error: String) {
        {
            let mut inbox = self.lock();
            inbox.error(error);
            inbox.root_gone = true;
        }
        self.bell.notify_one();
    }

    /// No event will come any more: the shared watcher's thread has gone.
    pub(super) fn end(&self) {
        self.lock().ended = true;
        self.bell.notify_one();
    }
}

/// The watch task's end of the events.
#[derive(Debug)]
pub(super) struct Events {
    mailbox: Arc<Mailbox>,
}

impl Events {
    /// The end that reads what `mailbox` collects.
    pub(super) fn new(mailbox: Arc<Mailbox>) -> Self {
        Self { mailbox }
    }

    /// The next batch, as soon as there is one; `None` once notify's thread has gone and
    /// everything it said was taken.
    pub(super) async fn next(&mut self) -> Option<Batch> {
        loop {
            {
                let mut inbox = self.mailbox.lock();
                if !inbox.is_empty() {
                    return Some(inbox.take());
                }
                if inbox.ended {
                    return None;
                }
            }
            self.mailbox.bell.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, Flag, MetadataKind, RemoveKind};

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut event = Event::new(kind);
        for p in paths {
            event = event.add_path(PathBuf::from(p));
        }
        event
    }

    fn fold(events: Vec<Event>) -> Batch {
        let mut inbox = Inbox::default();
        for event in events {
            inbox.add(event, Path::new("/in"));
        }
        inbox.take()
    }

    fn paths(batch: &Batch) -> Vec<(&str, Change)> {
        batch
            .paths
            .iter()
            .map(|(p, c)| (p.to_str().unwrap(), *c))
            .collect()
    }

    #[test]
    fn keeps_the_paths_of_writes_creations_renames_and_removals() {
        let batch = fold(vec![
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/in/a"],
            ),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &["/in/read"],
            ),
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/in/opened"],
            ),
            ev(EventKind::Create(CreateKind::File), &["/in/b"]),
            ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &["/in/c"],
            ),
            ev(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                &["/in/chmod"],
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &["/in/d.tmp"],
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &["/in/d"],
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/in/d.tmp", "/in/d"],
            ),
            ev(EventKind::Remove(RemoveKind::File), &["/in/e"]),
        ]);
        assert_eq!(
            paths(&batch),
            [
                ("/in/a", Change::Touched),
                ("/in/b", Change::Touched),
                ("/in/c", Change::Touched),
                ("/in/d", Change::MovedIn),
                ("/in/d.tmp", Change::Touched),
                ("/in/e", Change::Touched),
            ]
        );
        assert!(!batch.rescan && !batch.root_gone);
    }

    #[test]
    fn the_latest_change_of_a_path_wins() {
        let moved = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            &["/in/a"],
        );
        let written = ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &["/in/a"],
        );
        let closed = ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &["/in/a"],
        );
        let read = ev(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            &["/in/a"],
        );
        assert_eq!(
            paths(&fold(vec![moved.clone(), written.clone()])),
            [("/in/a", Change::Touched)],
            "renamed in, then written: settles"
        );
        assert_eq!(
            paths(&fold(vec![moved.clone(), closed])),
            [("/in/a", Change::Touched)],
            "renamed in while a writer still had it open: settles"
        );
        assert_eq!(
            paths(&fold(vec![written, moved.clone()])),
            [("/in/a", Change::MovedIn)],
            "replaced by a rename: the renamed file"
        );
        assert_eq!(
            paths(&fold(vec![moved, read])),
            [("/in/a", Change::MovedIn)],
            "reading it (our own upload) changes nothing"
        );
    }

    #[test]
    fn flags_a_rescan_and_the_loss_of_the_root() {
        let batch = fold(vec![Event::new(EventKind::Other).set_flag(Flag::Rescan)]);
        assert!(batch.rescan && !batch.root_gone);
        let batch = fold(vec![ev(EventKind::Remove(RemoveKind::Folder), &["/in"])]);
        assert!(batch.root_gone && batch.paths.is_empty());
        let batch = fold(vec![ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            &["/in"],
        )]);
        assert!(batch.root_gone);
    }

    #[test]
    fn taking_empties_the_inbox_and_ignored_events_do_not_wake() {
        let mut inbox = Inbox::default();
        assert!(!inbox.add(
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/in/a"]
            ),
            Path::new("/in")
        ));
        assert!(inbox.is_empty());
        assert!(inbox.add(
            ev(EventKind::Create(CreateKind::File), &["/in/a"]),
            Path::new("/in")
        ));
        assert_eq!(inbox.take().paths.len(), 1);
        assert!(inbox.is_empty());
    }
}
