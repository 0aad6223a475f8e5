//! One inotify instance for every watch of the process.
//!
//! Linux allows each user 128 inotify instances by default (`fs.inotify.max_user_instances`),
//! and every notify watcher is one; a watcher per watch job stopped the daemon at its 129th
//! job. So all watches share one notify watcher (one inotify instance, one thread), and the
//! hub passes each event on to the watches whose folder it concerns: a file's event to the
//! watches of its folder (and to the recursive watches above it), a folder's removal or rename
//! also to the watches of that folder itself. Two watches of one folder (say, with different
//! patterns) both get every event. What each watch makes of its events is unchanged (see
//! [`super::events`]).
//!
//! Folders are known by their canonical path: inotify has one watch per inode, and notify names
//! an inode's events after the last path it was watched under, so watches of one folder through
//! two paths (a symlink) share one inotify watch and each gets the events under its own path. A
//! bind mount is one folder under two paths that canonicalisation does not join: two jobs
//! watching one folder through a bind mount and its source, with inotify, are not supported
//! (watch it through one path, or poll).
//!
//! notify keeps one watch per path, so the hub decides which paths it asks notify to watch:
//! every folder with a watch, unless a recursive watch of a folder above it covers it already
//! (a watch of its own would change the recursive one's, and its removal would take the
//! recursive one's with it). It works that out again for the folders a change concerns, each
//! time a watch starts or stops. The hub lives while a watch uses it: with the last watch, its
//! inotify instance is closed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, Weak};

use notify::event::ModifyKind;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use super::events::{Events, Mailbox};

/// The hub while a watch uses it.
static HUB: Mutex<Weak<Hub>> = Mutex::new(Weak::new());

/// A watch's claim on the shared watcher: its folder stays watched, and its events come to its
/// [`Events`], while this lives.
#[derive(Debug)]
pub(super) struct Subscription {
    hub: Arc<Hub>,
    route: Arc<Route>,
}

/// Watches `root` (recursively or not) on the shared watcher; its events come out of the
/// returned [`Events`], under `root` as given. The folder is watched when this returns. Blocks:
/// a recursive watch walks the tree, and the watcher's thread answers one request at a time.
pub(super) fn subscribe(root: &Path, recursive: bool) -> notify::Result<(Subscription, Events)> {
    let canonical = std::fs::canonicalize(root)
        .map_err(|e| notify::Error::io(e).add_path(root.to_path_buf()))?;
    let mailbox = Arc::new(Mailbox::default());
    let route = Arc::new(Route {
        root: root.to_path_buf(),
        canonical,
        recursive,
        mailbox: Arc::clone(&mailbox),
    });
    let hub = Hub::get()?;
    hub.add(&route)?;
    Ok((Subscription { hub, route }, Events::new(mailbox)))
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // At once: nothing reaches this watch's inbox any more.
        self.hub.routes_mut().remove(&self.route);
        let release = Release {
            hub: Arc::clone(&self.hub),
            route: Arc::clone(&self.route),
        };
        // Removing an inotify watch waits for notify's thread, which may be walking another
        // watch's tree: not on a runtime thread. A runtime shutting down drops the task
        // without running it, and the release happens there.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(release))),
            Err(_) => drop(release),
        }
    }
}

/// Releases a subscription's folder when dropped, wherever that happens.
struct Release {
    hub: Arc<Hub>,
    route: Arc<Route>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.hub.release(&self.route);
    }
}

/// How many inotify instances this process holds now (each is an `anon_inode:inotify`
/// descriptor): one while any watch with inotify runs, whatever their number. For tests and the
/// watch-jobs bench. Blocks (it reads `/proc/self/fd`).
pub fn inotify_instances() -> std::io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        // A descriptor closed between the listing and the look is no inotify instance.
        if let Ok(target) = std::fs::read_link(entry?.path())
            && target.as_os_str() == "anon_inode:inotify"
        {
            count += 1;
        }
    }
    Ok(count)
}

/// The shared watcher, the folders it watches and where their events go.
#[derive(Debug)]
struct Hub {
    /// Held across every request to notify: the watches asked of notify follow the folders of
    /// the subscriptions, one change at a time.
    state: Mutex<State>,
    /// Read by notify's thread for every event; written only briefly (never while waiting for
    /// notify, whose thread may be waiting for this lock).
    routes: Arc<RwLock<Routes>>,
    /// notify's thread has gone (it dropped its handler): asked anything, notify would panic.
    /// The watches see their events end, and watch again on a new hub.
    dead: Arc<AtomicBool>,
}

impl Hub {
    /// The hub of the process, started if no watch uses one.
    fn get() -> notify::Result<Arc<Hub>> {
        let mut global = HUB.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hub) = global.upgrade()
            && !hub.dead.load(Ordering::Acquire)
        {
            return Ok(hub);
        }
        let routes = Arc::new(RwLock::new(Routes::default()));
        let dead = Arc::new(AtomicBool::new(false));
        let feed = Feed {
            routes: Arc::clone(&routes),
            dead: Arc::clone(&dead),
        };
        let watcher = RecommendedWatcher::new(feed, notify::Config::default())?;
        let hub = Arc::new(Hub {
            state: Mutex::new(State {
                watcher,
                folders: HashMap::new(),
                watched: HashMap::new(),
            }),
            routes,
            dead,
        });
        *global = Arc::downgrade(&hub);
        Ok(hub)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn routes(&self) -> RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn routes_mut(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes events to `route` and has its folder watched; on failure, nothing changed.
    fn add(&self, route: &Arc<Route>) -> notify::Result<()> {
        let mut state = self.state();
        if self.dead.load(Ordering::Acquire) {
            return Err(notify::Error::generic("the shared file watcher stopped"));
        }
        // Routed first: an event between the inotify watch and the routing is not lost.
        self.routes_mut().insert(route);
        let folder = route.canonical.as_path();
        let deep = state.count(folder, route.recursive, true);
        let (added, failed) = state.sync(folder, deep);
        let mut own = None;
        for (path, error) in failed {
            if path == folder {
                own = Some(error);
            } else {
                self.lost(&path, &error);
            }
        }
        if own.is_none() && !added.contains(folder) {
            // Watched already, for another watch or before: watched again all the same, since a
            // folder made again under the same path is another inode, which the inotify watch of
            // the old one does not see. notify adds to an existing watch.
            let recursive = state.watched.get(folder).copied().unwrap_or(true);
            own = state.watcher.watch(folder, mode(recursive)).err();
        }
        let Some(error) = own else {
            return Ok(());
        };
        self.routes_mut().remove(route);
        let deep = state.count(folder, route.recursive, false);
        for (path, error) in state.sync(folder, deep).1 {
            self.lost(&path, &error);
        }
        Err(error)
    }

    /// `route`'s watch is over: its folder is watched no longer unless another watch needs it.
    fn release(&self, route: &Route) {
        let mut state = self.state();
        if self.dead.load(Ordering::Acquire) {
            return;
        }
        let folder = route.canonical.as_path();
        let deep = state.count(folder, route.recursive, false);
        for (path, error) in state.sync(folder, deep).1 {
            self.lost(&path, &error);
        }
    }

    /// Tells the watches of `folder` that its inotify watch could not be put back (after
    /// another watch's change): they see their folder lost, and watch it again.
    fn lost(&self, folder: &Path, error: &notify::Error) {
        if let Some(routes) = self.routes().by_folder.get(folder) {
            for route in routes {
                route.mailbox.lost(error.to_string());
            }
        }
    }
}

/// The subscriptions by folder, and what notify was asked to watch.
#[derive(Debug)]
struct State {
    watcher: RecommendedWatcher,
    /// The subscriptions of each canonical folder.
    folders: HashMap<PathBuf, Count>,
    /// The folders notify watches on the hub's behalf, recursively or not: those with a
    /// subscription that no recursive subscription of a folder above covers.
    watched: HashMap<PathBuf, bool>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    flat: usize,
    recursive: usize,
}

fn mode(recursive: bool) -> RecursiveMode {
    if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    }
}

impl State {
    /// Counts a subscription of `folder` in or out; returns whether the folder's recursiveness
    /// changed (the folders below it may be covered, or uncovered, now).
    fn count(&mut self, folder: &Path, recursive: bool, add: bool) -> bool {
        let count = self.folders.entry(folder.to_path_buf()).or_default();
        let was = count.recursive > 0;
        let n = if recursive {
            &mut count.recursive
        } else {
            &mut count.flat
        };
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
        let is = count.recursive > 0;
        if count.flat == 0 && count.recursive == 0 {
            self.folders.remove(folder);
        }
        was != is
    }

    /// Whether notify is to watch `folder` for the hub, and how (recursively or not).
    fn wanted(&self, folder: &Path) -> Option<bool> {
        let count = self.folders.get(folder)?;
        let covered = folder
            .ancestors()
            .skip(1)
            .any(|above| self.folders.get(above).is_some_and(|c| c.recursive > 0));
        (!covered).then_some(count.recursive > 0)
    }

    /// Brings notify's watches of `folder` (and, when `deep`, of the folders below it) in line
    /// with the subscriptions. Returns the folders it watched, and those it failed to watch.
    fn sync(
        &mut self,
        folder: &Path,
        deep: bool,
    ) -> (HashSet<PathBuf>, Vec<(PathBuf, notify::Error)>) {
        let mut concerned: Vec<PathBuf> = if deep {
            let mut below: HashSet<&PathBuf> = HashSet::new();
            below.extend(self.folders.keys().filter(|p| p.starts_with(folder)));
            below.extend(self.watched.keys().filter(|p| p.starts_with(folder)));
            below.into_iter().cloned().collect()
        } else {
            vec![folder.to_path_buf()]
        };
        // Shorter paths first: a recursive watch is in place before the folders below it count
        // on it.
        concerned.sort();
        for path in &concerned {
            let Some(&recursive) = self.watched.get(path) else {
                continue;
            };
            if self.wanted(path) == Some(recursive) {
                continue;
            }
            self.watched.remove(path);
            let covered = self.wanted(path).is_none() && self.folders.contains_key(path);
            if !covered {
                // A watch notify dropped already (its folder went) is as good as removed.
                let _ = self.watcher.unwatch(path);
            }
            // A covered folder keeps its inotify watch: the recursive watch above owns it now.
        }
        let mut added = HashSet::new();
        let mut failed = Vec::new();
        for path in concerned {
            let Some(recursive) = self.wanted(&path) else {
                continue;
            };
            if self.watched.contains_key(&path) {
                continue;
            }
            match self.watcher.watch(&path, mode(recursive)) {
                Ok(()) => {
                    self.watched.insert(path.clone(), recursive);
                    added.insert(path);
                }
                Err(error) => failed.push((path, error)),
            }
        }
        (added, failed)
    }
}

/// Where one watch's events go.
#[derive(Debug)]
struct Route {
    /// The folder as the watch names it: its events are passed on under this path.
    root: PathBuf,
    /// Its canonical path, which the hub watches and notify names events after.
    canonical: PathBuf,
    recursive: bool,
    mailbox: Arc<Mailbox>,
}

impl Route {
    /// `path` (named after the canonical folder) under the watch's own name for its folder.
    fn rebase(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.canonical).ok()?;
        // `join("")` would add a trailing separator: the folder itself is the root as given.
        Some(if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        })
    }
}

/// The routes by canonical folder.
#[derive(Debug, Default)]
struct Routes {
    by_folder: HashMap<PathBuf, Vec<Arc<Route>>>,
}

impl Routes {
    fn insert(&mut self, route: &Arc<Route>) {
        self.by_folder
            .entry(route.canonical.clone())
            .or_default()
            .push(Arc::clone(route));
    }

    fn remove(&mut self, route: &Arc<Route>) {
        if let Some(routes) = self.by_folder.get_mut(&route.canonical) {
            routes.retain(|r| !Arc::ptr_eq(r, route));
            if routes.is_empty() {
                self.by_folder.remove(&route.canonical);
            }
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_folder.values().flatten()
    }

    /// The routes an event about `path` concerns, each once: those of its folder, the
    /// recursive ones of the folders above, and, for `itself` (an event that may end the watch
    /// of `path` as a folder), those of `path`.
    fn concerned<'a>(
        &'a self,
        path: &Path,
        itself: bool,
        seen: &mut HashSet<*const Route>,
        out: &mut Vec<&'a Arc<Route>>,
    ) {
        for (depth, folder) in path.ancestors().enumerate() {
            let Some(routes) = self.by_folder.get(folder) else {
                continue;
            };
            for route in routes {
                let wanted = match depth {
                    0 => itself,
                    1 => true,
                    _ => route.recursive,
                };
                if wanted && seen.insert(Arc::as_ptr(route)) {
                    out.push(route);
                }
            }
        }
    }

    fn event(&self, event: Event) {
        if event.need_rescan() {
            // Events were lost, whose is unknown: every watch looks again.
            for route in self.all() {
                route.mailbox.event(event.clone(), &route.root);
            }
            return;
        }
        let itself = matches!(
            event.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        let mut seen = HashSet::new();
        let mut routes = Vec::new();
        for path in &event.paths {
            self.concerned(path, itself, &mut seen, &mut routes);
        }
        for route in routes {
            let mut own = event.clone();
            own.paths = event.paths.iter().filter_map(|p| route.rebase(p)).collect();
            route.mailbox.event(own, &route.root);
        }
    }

    fn error(&self, error: &notify::Error) {
        let text = error.to_string();
        if error.paths.is_empty() {
            for route in self.all() {
                route.mailbox.error(text.clone());
            }
            return;
        }
        let mut seen = HashSet::new();
        let mut routes = Vec::new();
        for path in &error.paths {
            self.concerned(path, true, &mut seen, &mut routes);
        }
        for route in routes {
            route.mailbox.error(text.clone());
        }
    }
}

/// notify's event handler: passes each event on, on notify's thread.
struct Feed {
    routes: Arc<RwLock<Routes>>,
    dead: Arc<AtomicBool>,
}

impl Feed {
    fn routes(&self) -> RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl notify::EventHandler for Feed {
    fn handle_event(&mut self, event: notify::Result<Event>) {
        match event {
            Ok(event) => self.routes().event(event),
            Err(error) => self.routes().error(&error),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.dead.store(true, Ordering::Release);
        for route in self.routes().all() {
            route.mailbox.end();
        }
    }
}
