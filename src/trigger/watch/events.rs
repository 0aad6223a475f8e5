//! inotify (through notify's recommended watcher and notify-debouncer-full) as a stream of paths
//! worth a look.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// What one debounced delivery says, reduced to what the watch task acts on.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Paths that may have changed, appeared or gone; a `stat` tells which.
    pub(super) paths: Vec<PathBuf>,
    /// Events were lost (inotify queue overflow): the folder must be scanned again.
    pub(super) rescan: bool,
    /// The watched folder itself was removed or moved away: its inotify watch is dead.
    pub(super) root_gone: bool,
    pub(super) errors: Vec<notify::Error>,
}

impl Batch {
    fn from_result(result: DebounceEventResult, root: &Path) -> Self {
        let mut batch = Self::default();
        let events = match result {
            Ok(events) => events,
            Err(errors) => {
                batch.errors = errors;
                return batch;
            }
        };
        for event in events {
            let event = event.event;
            if event.need_rescan() {
                batch.rescan = true;
                continue;
            }
            match event.kind {
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                    if event.paths.first().is_some_and(|p| p == root) =>
                {
                    batch.root_gone = true;
                }
                // What may have changed: a writer closed the file, it appeared, it was written
                // to, or it was renamed (into place, or away: the stat sorts that out).
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Create(_)
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Name(_))
                | EventKind::Remove(_) => batch.paths.extend(event.paths),
                _ => {}
            }
        }
        batch
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.rescan && !self.root_gone && self.errors.is_empty()
    }
}

/// The debouncer, which must live as long as the watch; dropping it stops its threads.
pub(super) type EventWatcher = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Watches `root` and hands each non-empty batch to `batches`.
///
/// The debouncer calls back on its own thread; an unbounded send never blocks it. The channel is
/// bounded in practice by the debouncer, which coalesces a burst of writes to one event per file
/// and kind.
pub(super) fn watch(
    root: &Path,
    recursive: bool,
    debounce: Duration,
    batches: mpsc::UnboundedSender<Batch>,
) -> notify::Result<EventWatcher> {
    let own_root = root.to_path_buf();
    let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
        let batch = Batch::from_result(result, &own_root);
        if !batch.is_empty() {
            // A closed channel means the watch task ended and drops this debouncer shortly.
            let _ = batches.send(batch);
        }
    })?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    debouncer.watch(root, mode)?;
    Ok(debouncer)
}

/// How long the debouncer waits for quiet before passing events on: short next to the settle
/// period (which is what decides), long enough to fold a burst of writes into one event, and
/// not so short that its ticker (a quarter of this) spins.
pub(super) fn debounce_for(settle: Duration) -> Duration {
    (settle / 2).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::Event;
    use notify::event::{CreateKind, DataChange, Flag, MetadataKind, RemoveKind, RenameMode};
    use notify_debouncer_full::DebouncedEvent;
    use std::time::Instant;

    fn ev(kind: EventKind, paths: &[&str]) -> DebouncedEvent {
        let mut event = Event::new(kind);
        for p in paths {
            event = event.add_path(PathBuf::from(p));
        }
        DebouncedEvent::new(event, Instant::now())
    }

    #[test]
    fn keeps_the_paths_of_writes_creations_renames_and_removals() {
        let batch = Batch::from_result(
            Ok(vec![
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    &["/in/a"],
                ),
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Read)),
                    &["/in/read"],
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
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/in/d.tmp", "/in/d"],
                ),
                ev(EventKind::Remove(RemoveKind::File), &["/in/e"]),
            ]),
            Path::new("/in"),
        );
        assert_eq!(
            batch.paths,
            ["/in/a", "/in/b", "/in/c", "/in/d.tmp", "/in/d", "/in/e"].map(PathBuf::from)
        );
        assert!(!batch.rescan && !batch.root_gone);
    }

    #[test]
    fn flags_a_rescan_and_the_loss_of_the_root() {
        let overflow = DebouncedEvent::new(
            Event::new(EventKind::Other).set_flag(Flag::Rescan),
            Instant::now(),
        );
        let batch = Batch::from_result(Ok(vec![overflow]), Path::new("/in"));
        assert!(batch.rescan && !batch.root_gone);
        let batch = Batch::from_result(
            Ok(vec![ev(EventKind::Remove(RemoveKind::Folder), &["/in"])]),
            Path::new("/in"),
        );
        assert!(batch.root_gone && batch.paths.is_empty());
        let batch = Batch::from_result(
            Ok(vec![ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &["/in"],
            )]),
            Path::new("/in"),
        );
        assert!(batch.root_gone);
    }
}
