//! Whether the user's inotify limits can hold a job file's watch jobs, for `check`: the daemon
//! takes one inotify instance (of `fs.inotify.max_user_instances`) for all its watch jobs, and
//! one watch (of `fs.inotify.max_user_watches`) per watched folder, and per sub-folder of a
//! recursive watch. A folder watched by several jobs is watched once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::WatchSpec;

/// Where Linux says the limits.
const MAX_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";
const MAX_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The limit may not hold: other programs of the user share it.
    Warning,
    /// The limit cannot hold the job file, whatever else runs.
    Error,
}

/// One finding of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

/// What the watch jobs of a job file need of inotify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// Inotify watches: one per distinct folder, sub-folders of recursive watches included.
    pub watches: usize,
    /// Inotify instances: 1 if any job watches with inotify (they share it), else 0.
    pub instances: usize,
}

/// Counts what the watch jobs `specs` (polling ones need nothing) would take, stopping at
/// `cap` watches (no need to walk a huge tree past the limit). Blocks (it lists the recursive
/// folders).
pub fn needs<'a>(specs: impl IntoIterator<Item = &'a WatchSpec>, cap: usize) -> Needs {
    let mut folders: HashSet<PathBuf> = HashSet::new();
    let mut any = false;
    for spec in specs.into_iter().filter(|s| s.poll.is_none()) {
        any = true;
        let root = std::fs::canonicalize(&spec.dir).unwrap_or_else(|_| spec.dir.clone());
        if spec.recursive {
            count_tree(&root, &mut folders, cap);
        } else {
            folders.insert(root);
        }
        if folders.len() > cap {
            break;
        }
    }
    Needs {
        watches: folders.len(),
        instances: usize::from(any),
    }
}

/// Adds `root` and the folders below it (not through symlinks) to `folders`, up to `cap + 1`.
fn count_tree(root: &Path, folders: &mut HashSet<PathBuf>, cap: usize) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        if folders.len() > cap {
            return;
        }
        if !folders.insert(dir.clone()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(entry.path());
            }
        }
    }
}

/// Reads one of the limits; `None` where Linux does not say (another OS, no /proc).
fn read_limit(path: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok()
}

/// What `check` says of the job file's watch jobs against the user's inotify limits.
pub fn check<'a>(specs: impl IntoIterator<Item = &'a WatchSpec> + Clone) -> Vec<Finding> {
    let (Some(max_watches), Some(max_instances)) =
        (read_limit(MAX_WATCHES), read_limit(MAX_INSTANCES))
    else {
        return Vec::new();
    };
    findings(needs(specs, max_watches), max_watches, max_instances)
}

/// The findings for `needs` against the limits.
pub fn findings(needs: Needs, max_watches: usize, max_instances: usize) -> Vec<Finding> {
    let mut out = Vec::new();
    if needs.watches > max_watches {
        out.push(Finding {
            severity: Severity::Error,
            text: format!(
                "the watch jobs need {} inotify watches (one per watched folder and sub-folder of a recursive watch), more than fs.inotify.max_user_watches = {max_watches}: raise it (sysctl fs.inotify.max_user_watches={}) or give some jobs a poll interval",
                needs.watches,
                suggest(needs.watches)
            ),
        });
    } else if needs.watches > max_watches / 2 {
        out.push(Finding {
            severity: Severity::Warning,
            text: format!(
                "the watch jobs need {} inotify watches, more than half of fs.inotify.max_user_watches = {max_watches}, which the user's other programs share: consider sysctl fs.inotify.max_user_watches={}",
                needs.watches,
                suggest(needs.watches)
            ),
        });
    }
    if needs.instances > max_instances {
        out.push(Finding {
            severity: Severity::Error,
            text: format!(
                "the watch jobs need an inotify instance and fs.inotify.max_user_instances = {max_instances}: raise it (sysctl fs.inotify.max_user_instances=128) or give the watch jobs a poll interval"
            ),
        });
    }
    out
}

/// A limit with room for twice `need`, as a round figure.
fn suggest(need: usize) -> usize {
    need.saturating_mul(2).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, recursive: bool, poll: Option<std::time::Duration>) -> WatchSpec {
        WatchSpec {
            dir: dir.to_path_buf(),
            pattern: globset::Glob::new("*").unwrap().compile_matcher(),
            recursive,
            ignore: globset::GlobSet::empty(),
            settle: std::time::Duration::from_secs(1),
            poll,
            bundle: Default::default(),
        }
    }

    #[test]
    fn counts_a_watch_per_folder_and_sub_folder_once_and_none_for_polling() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for sub in ["a/b", "a/c", "d"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("a/file"), "x").unwrap();
        let flat = spec(root, false, None);
        let recursive = spec(root, true, None);
        let inner = spec(&root.join("a"), false, None);
        let polled = spec(
            &root.join("d"),
            false,
            Some(std::time::Duration::from_secs(5)),
        );
        assert_eq!(
            needs([&flat, &inner], 100),
            Needs {
                watches: 2,
                instances: 1
            }
        );
        // root, a, a/b, a/c, d: the flat watches of root and a are among them.
        assert_eq!(needs([&recursive, &flat, &inner], 100).watches, 5);
        assert_eq!(needs([&polled], 100), Needs::default());
        // Past the cap, the walk stops: a huge tree is not listed whole.
        assert!(needs([&recursive], 2).watches <= 3);
    }

    #[test]
    fn watches_over_the_limit_are_an_error_and_near_it_a_warning() {
        let over = findings(
            Needs {
                watches: 9000,
                instances: 1,
            },
            8192,
            128,
        );
        assert_eq!(over.len(), 1, "{over:?}");
        assert_eq!(over[0].severity, Severity::Error);
        assert!(
            over[0].text.contains("9000")
                && over[0]
                    .text
                    .contains("sysctl fs.inotify.max_user_watches=32768"),
            "{over:?}"
        );
        let near = findings(
            Needs {
                watches: 5000,
                instances: 1,
            },
            8192,
            128,
        );
        assert_eq!(near[0].severity, Severity::Warning, "{near:?}");
        assert!(
            findings(
                Needs {
                    watches: 1000,
                    instances: 1
                },
                8192,
                128
            )
            .is_empty()
        );
        let none = findings(
            Needs {
                watches: 1,
                instances: 1,
            },
            8192,
            0,
        );
        assert!(
            none[0].severity == Severity::Error && none[0].text.contains("max_user_instances = 0"),
            "{none:?}"
        );
    }
}
