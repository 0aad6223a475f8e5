//! The folder-watch trigger on real temp dirs, with real (short) time: inotify and the file
//! system do not follow tokio's paused clock. The settle rule itself is tested with exact
//! instants in `src/trigger/watch/settle.rs`. Also the daemon with many watch jobs (one inotify
//! instance for all) and with a watch folder it cannot read (exit 2).

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use metrics_exporter_prometheus::PrometheusHandle;
use stac_uploadd::observe::health::{Health, Phase};
use stac_uploadd::observe::http::{Server, router};
use stac_uploadd::observe::metrics::{TRIGGER_RECOVERIES, TRIGGER_UP};
use stac_uploadd::trigger::watch::{
    DEFAULT_IGNORE, WatchError, WatchSpec, WatchState, Watcher, inotify_instances,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_millis(250);
/// How long to keep listening once the expected files came, to catch one sent twice.
const AFTER: Duration = Duration::from_millis(1000);
/// How long any expected file may take to come.
const PATIENCE: Duration = Duration::from_secs(5);
/// The bound on each whole test.
const TEST_LIMIT: Duration = Duration::from_secs(10);

fn default_ignore() -> GlobSet {
    let mut set = GlobSetBuilder::new();
    for glob in DEFAULT_IGNORE {
        set.add(Glob::new(glob).expect("a valid default glob"));
    }
    set.build().expect("valid default globs")
}

fn spec(dir: &Path, pattern: &str) -> WatchSpec {
    WatchSpec {
        dir: dir.to_path_buf(),
        pattern: Glob::new(pattern)
            .expect("a valid test glob")
            .compile_matcher(),
        recursive: false,
        ignore: default_ignore(),
        settle: SETTLE,
        poll: None,
        bundle: Default::default(),
    }
}

/// A temp dir with the watched folder `in` and a sibling `out` on the same file system.
struct Dirs {
    _tmp: tempfile::TempDir,
    watched: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let watched = tmp.path().join("in");
    let outside = tmp.path().join("out");
    fs::create_dir(&watched).expect("create in/");
    fs::create_dir(&outside).expect("create out/");
    Dirs {
        _tmp: tmp,
        watched,
        outside,
    }
}

struct Watch {
    rx: mpsc::Receiver<PathBuf>,
    cancel: CancellationToken,
    watcher: Watcher,
}

fn start(spec: WatchSpec) -> Watch {
    let (tx, rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let watcher = Watcher::start(spec, tx, cancel.clone()).expect("the watch starts");
    Watch {
        rx,
        cancel,
        watcher,
    }
}

impl Watch {
    /// Receives until `n` files came, then listens [`AFTER`] longer; returns everything received.
    async fn collect(&mut self, n: usize) -> Vec<PathBuf> {
        let deadline = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        while got.len() < n {
            match timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(path)) => got.push(path),
                Ok(None) | Err(_) => return got,
            }
        }
        let quiet_until = Instant::now() + AFTER;
        while let Ok(Some(path)) = timeout_at(quiet_until, self.rx.recv()).await {
            got.push(path);
        }
        got
    }
}

/// Runs a test body within [`TEST_LIMIT`].
async fn bounded(body: impl Future<Output = ()>) {
    timeout(TEST_LIMIT, body)
        .await
        .expect("the test finished in time");
}

fn write(path: &Path, len: usize) {
    fs::write(path, vec![b'x'; len]).expect("write a file");
}

fn append(path: &Path, len: usize) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(&vec![b'y'; len]).expect("append");
}

fn sorted(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths
}

#[tokio::test]
async fn a_file_written_slowly_is_reported_once_complete() {
    bounded(async {
        let d = dirs();
        let mut w = start(WatchSpec {
            settle: Duration::from_millis(300),
            ..spec(&d.watched, "*.dat")
        });
        let path = d.watched.join("slow.dat");
        let writer = tokio::spawn({
            let path = path.clone();
            async move {
                let mut f = fs::File::create(&path).expect("create");
                for chunk in 0..5 {
                    if chunk > 0 {
                        sleep(Duration::from_millis(100)).await;
                    }
                    f.write_all(&[b'z'; 1000]).expect("write a chunk");
                }
                Instant::now()
            }
        });

        // Stat the file the moment it is reported, while the writer may still be at it.
        let mut reports = Vec::new();
        if let Ok(Some(p)) = timeout(PATIENCE, w.rx.recv()).await {
            let len = fs::metadata(&p).expect("the reported file exists").len();
            reports.push((p, len, Instant::now()));
        }
        let last_chunk = writer.await.expect("the writer ran");
        reports.extend(
            w.collect(0)
                .await
                .into_iter()
                .map(|p| (p, 0, Instant::now())),
        );

        assert_eq!(reports.len(), 1, "reported exactly once: {reports:?}");
        let (reported, len, at) = &reports[0];
        assert_eq!(reported, &path);
        assert_eq!(*len, 5000, "the whole file was there when it was reported");
        assert!(
            *at >= last_chunk + Duration::from_millis(300),
            "reported a settle period after the last chunk"
        );
    })
    .await;
}

#[tokio::test]
async fn a_file_written_slowly_by_a_writer_that_reopens_it_is_reported_once_complete() {
    bounded(async {
        let d = dirs();
        let settle = Duration::from_millis(400);
        let mut w = start(WatchSpec {
            settle,
            ..spec(&d.watched, "*.dat")
        });
        let path = d.watched.join("reopened.dat");
        // Each chunk opened, written and closed: every close is an IN_CLOSE_WRITE, and none of
        // them means the file is done.
        let writer = tokio::spawn({
            let path = path.clone();
            async move {
                for chunk in 0..5 {
                    if chunk > 0 {
                        sleep(Duration::from_millis(150)).await;
                    }
                    let mut f = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .expect("open");
                    f.write_all(&[b'r'; 1000]).expect("write a chunk");
                }
                Instant::now()
            }
        });
        let got = timeout(PATIENCE, w.rx.recv())
            .await
            .expect("reported in time");
        let at = Instant::now();
        let len = fs::metadata(&path).expect("stat").len();
        let last_chunk = writer.await.expect("the writer ran");
        assert_eq!(got.as_deref(), Some(path.as_path()));
        assert_eq!(len, 5000, "the whole file was there when it was reported");
        assert!(
            at >= last_chunk + settle,
            "reported a settle period after the last chunk"
        );
        assert_eq!(w.collect(0).await, Vec::<PathBuf>::new(), "once");
    })
    .await;
}

#[tokio::test]
async fn a_rename_into_place_triggers_once() {
    bounded(async {
        let d = dirs();
        // `*` so that only the ignore globs keep the temporary name out.
        let mut w = start(spec(&d.watched, "*"));

        // Written outside the folder, then moved in.
        let outside = d.outside.join("moved.dat");
        write(&outside, 4096);
        fs::rename(&outside, d.watched.join("moved.dat")).expect("move in");

        // Written under a temporary name inside the folder, then renamed into place.
        let temp = d.watched.join("renamed.tmp");
        let mut f = fs::File::create(&temp).expect("create the temp file");
        f.write_all(&[1; 2048]).expect("write");
        sleep(Duration::from_millis(100)).await;
        f.write_all(&[2; 2048]).expect("write");
        drop(f);
        fs::rename(&temp, d.watched.join("renamed.dat")).expect("rename into place");

        let got = sorted(w.collect(2).await);
        assert_eq!(
            got,
            vec![d.watched.join("moved.dat"), d.watched.join("renamed.dat")]
        );
    })
    .await;
}

/// A settle period far longer than any wait of the tests that use it: a file reported while it
/// runs was not made to settle.
const LONG_SETTLE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_file_renamed_in_is_reported_without_waiting_for_settle() {
    bounded(async {
        let d = dirs();
        let mut w = start(WatchSpec {
            settle: LONG_SETTLE,
            ..spec(&d.watched, "*.dat")
        });

        // Moved in from beside the folder, and renamed into place from an ignored name.
        let outside = d.outside.join("moved.dat");
        write(&outside, 1 << 20);
        let temp = d.watched.join("renamed.dat.tmp");
        write(&temp, 4096);
        let at = Instant::now();
        fs::rename(&outside, d.watched.join("moved.dat")).expect("move in");
        fs::rename(&temp, d.watched.join("renamed.dat")).expect("rename into place");

        let mut got = Vec::new();
        while got.len() < 2 {
            match timeout(PATIENCE, w.rx.recv()).await {
                Ok(Some(path)) => got.push(path),
                other => panic!("not reported within {PATIENCE:?} (settle is {LONG_SETTLE:?}): {other:?}, got {got:?}"),
            }
        }
        assert!(at.elapsed() < PATIENCE);
        assert_eq!(
            sorted(got),
            vec![d.watched.join("moved.dat"), d.watched.join("renamed.dat")]
        );
        // Nothing more: each was sent once.
        assert_eq!(w.collect(0).await, Vec::<PathBuf>::new());
    })
    .await;
}

#[tokio::test]
async fn a_renamed_in_file_still_has_to_be_wanted() {
    bounded(async {
        let d = dirs();
        let mut w = start(WatchSpec {
            settle: LONG_SETTLE,
            ..spec(&d.watched, "*.dat")
        });
        for (name, is_dir) in [
            ("notes.txt", false),
            (".hidden.dat", false),
            ("late.dat.tmp", false),
            ("folder.dat", true),
        ] {
            let outside = d.outside.join(name);
            if is_dir {
                fs::create_dir(&outside).expect("make a folder");
            } else {
                write(&outside, 100);
            }
            fs::rename(&outside, d.watched.join(name)).expect("move in");
        }
        let outside = d.outside.join("kept.dat");
        write(&outside, 100);
        fs::rename(&outside, d.watched.join("kept.dat")).expect("move in");
        assert_eq!(w.collect(1).await, vec![d.watched.join("kept.dat")]);
    })
    .await;
}

#[tokio::test]
async fn a_file_written_in_place_is_reported_only_once_settled() {
    bounded(async {
        let d = dirs();
        let settle = Duration::from_millis(1500);
        let mut w = start(WatchSpec {
            settle,
            ..spec(&d.watched, "*.dat")
        });
        let path = d.watched.join("inplace.dat");
        let mut f = fs::File::create(&path).expect("create");
        f.write_all(&[4; 100_000]).expect("write");
        sleep(Duration::from_millis(200)).await;
        f.write_all(&[5; 100_000]).expect("write");
        // Its close (IN_CLOSE_WRITE) does not make it ready: a writer may open it again.
        drop(f);
        let last_write = Instant::now();

        let got = timeout(PATIENCE, w.rx.recv())
            .await
            .expect("reported in time");
        let at = Instant::now();
        assert_eq!(got.as_deref(), Some(path.as_path()));
        assert!(
            at >= last_write + settle,
            "reported {:?} after its last write, before the settle period of {settle:?}",
            at - last_write
        );
        assert_eq!(w.collect(0).await, Vec::<PathBuf>::new(), "once");
    })
    .await;
}

#[tokio::test]
async fn a_file_renamed_in_and_then_appended_to_is_reported_again_once_settled() {
    bounded(async {
        let d = dirs();
        let settle = Duration::from_millis(1500);
        let mut w = start(WatchSpec {
            settle,
            ..spec(&d.watched, "*.dat")
        });
        let path = d.watched.join("grown.dat");
        let outside = d.outside.join("grown.dat");
        write(&outside, 1000);
        let moved = Instant::now();
        fs::rename(&outside, &path).expect("move in");
        let first = timeout(PATIENCE, w.rx.recv())
            .await
            .expect("reported in time");
        assert_eq!(first.as_deref(), Some(path.as_path()));
        assert!(
            moved.elapsed() < settle,
            "the rename was reported at once, not after settling"
        );

        // Written to after all: from that write on, the file settles like any written one.
        append(&path, 1000);
        let appended = Instant::now();
        let again = timeout(PATIENCE, w.rx.recv())
            .await
            .expect("reported again in time");
        let at = Instant::now();
        assert_eq!(again.as_deref(), Some(path.as_path()));
        assert!(
            at >= appended + settle,
            "reported again {:?} after the append, before it settled",
            at - appended
        );
        assert_eq!(fs::metadata(&path).expect("stat").len(), 2000);
        assert_eq!(
            w.collect(0).await,
            Vec::<PathBuf>::new(),
            "not a third time"
        );
    })
    .await;
}

#[tokio::test]
async fn a_file_renamed_in_while_polling_still_settles() {
    bounded(async {
        let d = dirs();
        let settle = Duration::from_millis(1000);
        let mut w = start(WatchSpec {
            settle,
            poll: Some(Duration::from_millis(50)),
            ..spec(&d.watched, "*.dat")
        });
        let outside = d.outside.join("polled.dat");
        write(&outside, 1000);
        let moved = Instant::now();
        fs::rename(&outside, d.watched.join("polled.dat")).expect("move in");
        let got = timeout(PATIENCE, w.rx.recv())
            .await
            .expect("reported in time");
        assert_eq!(got.as_deref(), Some(d.watched.join("polled.dat").as_path()));
        assert!(
            moved.elapsed() >= settle,
            "a poll cannot tell a rename: the file settles"
        );
    })
    .await;
}

#[tokio::test]
async fn a_hundred_files_dropped_at_once_are_all_reported_once() {
    bounded(async {
        let d = dirs();
        let mut w = start(spec(&d.watched, "*.dat"));
        let expected: HashSet<PathBuf> = (0..100)
            .map(|i| d.watched.join(format!("f{i:03}.dat")))
            .collect();
        for path in &expected {
            write(path, 1024);
        }
        let got = w.collect(100).await;
        let distinct: HashSet<PathBuf> = got.iter().cloned().collect();
        assert_eq!(got.len(), 100, "none twice");
        assert_eq!(distinct, expected);
    })
    .await;
}

#[tokio::test]
async fn ignored_names_are_never_reported() {
    bounded(async {
        let d = dirs();
        let mut w = start(spec(&d.watched, "*"));
        for name in ["x.tmp", ".hidden", "backup~"] {
            write(&d.watched.join(name), 100);
        }
        write(&d.watched.join("kept.dat"), 100);
        assert_eq!(w.collect(1).await, vec![d.watched.join("kept.dat")]);
    })
    .await;
}

#[tokio::test]
async fn a_name_not_matching_the_pattern_is_not_reported() {
    bounded(async {
        let d = dirs();
        let mut w = start(spec(&d.watched, "*.dat"));
        write(&d.watched.join("notes.txt"), 100);
        write(&d.watched.join("data.dat"), 100);
        assert_eq!(w.collect(1).await, vec![d.watched.join("data.dat")]);
    })
    .await;
}

/// Writes `top.dat`, `old/a.dat` (in a folder that existed at start) and `new/deeper/b.dat` (in
/// folders made after it); returns their paths.
async fn write_tree(watched: &Path) -> [PathBuf; 3] {
    let files = [
        watched.join("top.dat"),
        watched.join("old/a.dat"),
        watched.join("new/deeper/b.dat"),
    ];
    fs::create_dir_all(watched.join("new/deeper")).expect("make new folders");
    for path in &files {
        write(path, 512);
    }
    files
}

#[tokio::test]
async fn sub_folder_files_are_reported_only_when_recursive() {
    bounded(async {
        let d = dirs();
        fs::create_dir(d.watched.join("old")).expect("make old/");
        let mut flat = start(spec(&d.watched, "**/*.dat"));
        let mut deep = start(WatchSpec {
            recursive: true,
            ..spec(&d.watched, "**/*.dat")
        });
        let files = write_tree(&d.watched).await;

        let (flat_got, deep_got) = tokio::join!(flat.collect(1), deep.collect(3));
        assert_eq!(flat_got, vec![files[0].clone()]);
        assert_eq!(sorted(deep_got), sorted(files.to_vec()));
    })
    .await;
}

#[tokio::test]
async fn a_file_modified_after_it_was_reported_is_reported_again_once() {
    bounded(async {
        let d = dirs();
        let mut w = start(spec(&d.watched, "*.dat"));
        let path = d.watched.join("a.dat");
        write(&path, 100);
        let first = timeout(PATIENCE, w.rx.recv())
            .await
            .expect("reported in time");
        assert_eq!(first.as_deref(), Some(path.as_path()));

        append(&path, 100);
        let again = w.collect(1).await;
        assert_eq!(again, vec![path.clone()]);
        assert_eq!(fs::metadata(&path).expect("stat").len(), 200);
    })
    .await;
}

#[tokio::test]
async fn a_file_deleted_before_it_settled_is_dropped() {
    bounded(async {
        let d = dirs();
        let mut w = start(spec(&d.watched, "*.dat"));
        let doomed = d.watched.join("doomed.dat");
        write(&doomed, 100);
        write(&d.watched.join("kept.dat"), 100);
        sleep(Duration::from_millis(50)).await;
        fs::remove_file(&doomed).expect("delete");
        assert_eq!(w.collect(1).await, vec![d.watched.join("kept.dat")]);
    })
    .await;
}

async fn files_present_before_start_are_reported(poll: Option<Duration>) {
    let d = dirs();
    let expected: Vec<PathBuf> = ["a.dat", "b.dat", "c.dat"]
        .iter()
        .map(|n| d.watched.join(n))
        .collect();
    for path in &expected {
        write(path, 100);
    }
    write(&d.watched.join("partial.tmp"), 100);
    let mut w = start(WatchSpec {
        poll,
        ..spec(&d.watched, "*")
    });
    assert_eq!(sorted(w.collect(3).await), expected);
}

#[tokio::test]
async fn files_present_before_start_are_reported_with_events() {
    bounded(files_present_before_start_are_reported(None)).await;
}

#[tokio::test]
async fn files_present_before_start_are_reported_when_polling() {
    bounded(files_present_before_start_are_reported(Some(
        Duration::from_millis(100),
    )))
    .await;
}

#[tokio::test]
async fn polling_reports_a_new_file_and_a_modified_file() {
    bounded(async {
        let d = dirs();
        let mut w = start(WatchSpec {
            poll: Some(Duration::from_millis(100)),
            ..spec(&d.watched, "*.dat")
        });
        let path = d.watched.join("polled.dat");
        // Written slowly too: a poll in the middle must not send it half-written.
        let mut f = fs::File::create(&path).expect("create");
        for _ in 0..3 {
            f.write_all(&[3; 1000]).expect("write");
            sleep(Duration::from_millis(100)).await;
        }
        drop(f);
        let first = timeout(PATIENCE, w.rx.recv())
            .await
            .expect("reported in time");
        assert_eq!(first.as_deref(), Some(path.as_path()));
        assert_eq!(fs::metadata(&path).expect("stat").len(), 3000);

        append(&path, 1000);
        assert_eq!(w.collect(1).await, vec![path]);
    })
    .await;
}

#[tokio::test]
async fn cancelling_stops_the_watch() {
    bounded(async {
        let d = dirs();
        let mut w = start(spec(&d.watched, "*.dat"));
        write(&d.watched.join("before.dat"), 100);
        assert!(
            timeout(PATIENCE, w.rx.recv())
                .await
                .expect("reported in time")
                .is_some()
        );

        w.cancel.cancel();
        write(&d.watched.join("after.dat"), 100);
        let end = timeout(Duration::from_secs(2), w.rx.recv())
            .await
            .expect("the watch stopped in time");
        assert_eq!(end, None, "the sender side closed without a further report");
        w.watcher
            .join()
            .await
            .expect("a cancelled watch ends cleanly");
    })
    .await;
}

#[tokio::test]
async fn dropping_the_watcher_stops_the_watch() {
    bounded(async {
        let d = dirs();
        let Watch {
            mut rx, watcher, ..
        } = start(spec(&d.watched, "*.dat"));
        drop(watcher);
        write(&d.watched.join("after.dat"), 100);
        let end = timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("the watch stopped in time");
        assert_eq!(end, None);
    })
    .await;
}

/// The process-wide metrics recorder (installed once for this test binary; shared by every test
/// that reads metrics).
pub(crate) fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = stac_uploadd::observe::metrics::recorder().expect("valid buckets");
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
        handle
    })
}

/// The value of `name{job_name="<job>"}` as scraped now.
fn scraped(name: &str, job: &str) -> Option<f64> {
    let handle = metrics_handle();
    handle.run_upkeep();
    let prefix = format!("{name}{{job_name=\"{job}\"}} ");
    handle.render().lines().find_map(|l| {
        l.strip_prefix(&prefix)
            .map(|v| v.parse().expect("a number"))
    })
}

/// Log lines written by the watch (its task carries the test's subscriber).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// `/readyz` of a listener showing the process-wide triggers.
struct Readyz {
    server: Server,
}

impl Readyz {
    async fn start() -> Self {
        let health = Arc::new(Health::new(Duration::from_secs(30)));
        health.set_phase(Phase::Ready);
        let server = Server::start("127.0.0.1:0".parse().unwrap(), router(health, None))
            .await
            .expect("binds");
        Self { server }
    }

    async fn get(&self) -> (u16, String) {
        let r = reqwest::get(format!("http://{}/readyz", self.server.addr()))
            .await
            .expect("an answer");
        (r.status().as_u16(), r.text().await.expect("a body"))
    }

    /// The line of `job` in `/readyz` (which stays 200 either way).
    async fn job_line(&self, job: &str) -> Option<String> {
        let (status, body) = self.get().await;
        assert_eq!(
            status, 200,
            "a lost trigger does not make the daemon unready"
        );
        let prefix = format!("watch {job}: ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }
}

/// Waits (bounded) until the watch is in `want`.
async fn wait_state(state: &mut watch::Receiver<WatchState>, want: WatchState) {
    timeout(PATIENCE, state.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| panic!("the watch was not {want:?} in time"))
        .expect("the watch runs");
}

/// How the watched folder goes away and comes back.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// `rm -r` then `mkdir`.
    Recreated,
    /// Moved out of the way, then back.
    MovedBack,
}

/// The folder goes and comes back: the watch goes lost (state, metric, `/readyz`, one warning)
/// and is back (one info line), and files in the folder that came back are sent, those put
/// there before it was watched again (by the scan) and after (by events or polls).
async fn a_lost_folder_is_watched_again(job: &str, poll: Option<Duration>, loss: Loss) {
    let captured = Captured::default();
    let writer = captured.clone();
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish(),
    );
    // Before the watch records its start values.
    metrics_handle();
    let readyz = Readyz::start().await;
    let d = dirs();
    let (tx, mut rx) = mpsc::channel(8);
    let watcher = Watcher::start_for_job(
        job,
        WatchSpec {
            poll,
            ..spec(&d.watched, "*.dat")
        },
        tx,
        CancellationToken::new(),
    )
    .expect("the watch starts");
    let mut state = watcher.state();
    assert_eq!(*state.borrow_and_update(), WatchState::Watching);
    assert_eq!(scraped(TRIGGER_UP, job), Some(1.0), "exists from the start");
    assert_eq!(scraped(TRIGGER_RECOVERIES, job), Some(0.0));
    assert_eq!(readyz.job_line(job).await.as_deref(), Some("watching"));

    let first = d.watched.join("first.dat");
    write(&first, 100);
    let got = timeout(PATIENCE, rx.recv()).await.expect("sent in time");
    assert_eq!(got.as_deref(), Some(first.as_path()));

    let away = d.outside.join("away");
    match loss {
        Loss::Recreated => fs::remove_dir_all(&d.watched).expect("remove the folder"),
        Loss::MovedBack => fs::rename(&d.watched, &away).expect("move the folder away"),
    }
    wait_state(&mut state, WatchState::Lost).await;
    assert_eq!(scraped(TRIGGER_UP, job), Some(0.0));
    let line = readyz.job_line(job).await.expect("the job is listed");
    assert!(line.starts_with("lost ("), "{line}");
    assert!(line.contains(d.watched.to_str().unwrap()), "{line}");

    // Back, with a file already in it before the watch sees it again.
    match loss {
        Loss::Recreated => fs::create_dir(&d.watched).expect("make the folder again"),
        Loss::MovedBack => fs::rename(&away, &d.watched).expect("move the folder back"),
    }
    let early = d.watched.join("early.dat");
    write(&early, 100);
    wait_state(&mut state, WatchState::Watching).await;
    assert_eq!(scraped(TRIGGER_UP, job), Some(1.0));
    assert_eq!(scraped(TRIGGER_RECOVERIES, job), Some(1.0));
    assert_eq!(readyz.job_line(job).await.as_deref(), Some("watching"));

    let late = d.watched.join("late.dat");
    write(&late, 100);
    let mut expected = vec![early, late];
    if matches!(loss, Loss::MovedBack) {
        // Back as at start-up: what is in the folder is sent again (the upload finds it
        // unchanged).
        expected.push(first);
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < expected.len() {
        match timeout_at(deadline, rx.recv()).await {
            Ok(Some(path)) => got.push(path),
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(sorted(got), sorted(expected));

    assert_eq!(captured.count("lost the watched folder"), 1, "one warning");
    assert_eq!(
        captured.count("the watched folder is back"),
        1,
        "one info line"
    );
    let log = captured.text();
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("job={job}")) && !l.contains("file ready"))
        .collect();
    assert_eq!(
        named.len(),
        2,
        "the two lines name the job; nothing else is logged at info but the files sent:\n{log}"
    );

    drop(watcher);
    let end = timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("the watch stopped in time");
    assert_eq!(end, None);
    assert_eq!(
        readyz.job_line(job).await,
        None,
        "a stopped watch is not listed"
    );
    readyz.server.stop().await;
}

#[tokio::test]
async fn a_removed_and_recreated_folder_is_watched_again_with_events() {
    bounded(a_lost_folder_is_watched_again(
        "recreated-events",
        None,
        Loss::Recreated,
    ))
    .await;
}

#[tokio::test]
async fn a_removed_and_recreated_folder_is_watched_again_when_polling() {
    bounded(a_lost_folder_is_watched_again(
        "recreated-polling",
        Some(Duration::from_millis(100)),
        Loss::Recreated,
    ))
    .await;
}

#[tokio::test]
async fn a_folder_moved_away_and_back_is_watched_again_with_events() {
    bounded(a_lost_folder_is_watched_again(
        "moved-events",
        None,
        Loss::MovedBack,
    ))
    .await;
}

#[tokio::test]
async fn a_folder_moved_away_and_back_is_watched_again_when_polling() {
    bounded(a_lost_folder_is_watched_again(
        "moved-polling",
        Some(Duration::from_millis(100)),
        Loss::MovedBack,
    ))
    .await;
}

#[tokio::test]
async fn a_lost_watch_still_stops_when_cancelled() {
    bounded(async {
        let d = dirs();
        let mut w = start(spec(&d.watched, "*.dat"));
        let mut state = w.watcher.state();
        fs::remove_dir(&d.watched).expect("remove the folder");
        wait_state(&mut state, WatchState::Lost).await;
        w.cancel.cancel();
        let end = timeout(Duration::from_secs(2), w.rx.recv())
            .await
            .expect("the watch stopped in time");
        assert_eq!(end, None);
        w.watcher
            .join()
            .await
            .expect("a cancelled watch ends cleanly");
    })
    .await;
}

#[test]
fn a_missing_folder_cannot_be_watched() {
    let d = dirs();
    let missing = d.watched.join("nope");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    let (tx, _rx) = mpsc::channel(1);
    let err =
        Watcher::start(spec(&missing, "*"), tx, CancellationToken::new()).expect_err("refused");
    assert!(
        matches!(&err, WatchError::Inaccessible { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope"), "{err}");
}

/// Watches `dir` for `pattern`, sending to a channel of its own.
fn start_on(dir: &Path, pattern: &str, recursive: bool) -> Watch {
    start(WatchSpec {
        recursive,
        ..spec(dir, pattern)
    })
}

#[tokio::test]
async fn two_hundred_watches_share_one_inotify_instance_and_each_reports_its_file() {
    // More watches than fs.inotify.max_user_instances (128 by default): one instance each
    // could not start them.
    timeout(Duration::from_secs(60), async {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let mut watches = Vec::new();
        for i in 0..200 {
            let dir = tmp.path().join(format!("in-{i}"));
            fs::create_dir(&dir).expect("create a folder");
            watches.push((dir.clone(), start_on(&dir, "*.dat", false)));
        }
        let instances = inotify_instances().expect("/proc/self/fd");
        assert!(
            instances <= 1,
            "{instances} inotify instances for 200 watches"
        );
        for (dir, _) in &watches {
            let tmp_name = dir.join("f.dat.tmp");
            write(&tmp_name, 10);
            fs::rename(&tmp_name, dir.join("f.dat")).expect("rename into place");
        }
        for (dir, w) in &mut watches {
            let got = timeout(PATIENCE, w.rx.recv()).await;
            assert_eq!(
                got.ok().flatten(),
                Some(dir.join("f.dat")),
                "the watch of {}",
                dir.display()
            );
        }
        // Each got its own file only.
        for (dir, w) in &mut watches {
            assert!(
                w.rx.try_recv().is_err(),
                "a second file for {}",
                dir.display()
            );
        }
    })
    .await
    .expect("the test finished in time");
}

#[tokio::test]
async fn two_watches_of_one_folder_each_get_the_files_of_their_pattern() {
    bounded(async {
        let d = dirs();
        // The same folder through a symlink: one inotify watch, each its own paths.
        let link = d.outside.join("link");
        std::os::unix::fs::symlink(&d.watched, &link).expect("a symlink");
        let mut tifs = start_on(&d.watched, "*.tif", false);
        let mut csvs = start_on(&d.watched, "*.csv", false);
        let mut linked = start_on(&link, "*.csv", false);
        for name in ["a.tif", "b.csv"] {
            let tmp_name = d.watched.join(format!("{name}.tmp"));
            write(&tmp_name, 10);
            fs::rename(&tmp_name, d.watched.join(name)).expect("rename into place");
        }
        assert_eq!(tifs.collect(1).await, [d.watched.join("a.tif")]);
        assert_eq!(csvs.collect(1).await, [d.watched.join("b.csv")]);
        assert_eq!(linked.collect(1).await, [link.join("b.csv")]);

        // One stops: the others still get their files.
        drop(csvs);
        write(&d.watched.join("c.csv"), 10);
        write(&d.watched.join("d.tif"), 10);
        assert_eq!(linked.collect(1).await, [link.join("c.csv")]);
        assert_eq!(tifs.collect(1).await, [d.watched.join("d.tif")]);
    })
    .await;
}

#[tokio::test]
async fn a_flat_watch_inside_a_recursive_one_goes_on_when_the_recursive_one_stops() {
    bounded(async {
        let d = dirs();
        let sub = d.watched.join("sub");
        fs::create_dir(&sub).expect("create sub/");
        let mut inner = start_on(&sub, "*.dat", false);
        let mut outer = start_on(&d.watched, "**/*.dat", true);
        write(&sub.join("a.dat"), 10);
        assert_eq!(outer.collect(1).await, [sub.join("a.dat")]);
        assert_eq!(inner.collect(1).await, [sub.join("a.dat")]);

        // The recursive watch owned the inotify watch of sub/: its end must not take it along.
        drop(outer);
        write(&sub.join("b.dat"), 10);
        assert_eq!(inner.collect(1).await, [sub.join("b.dat")]);

        // And the other way round: a recursive watch whose inner flat one stops still sees
        // its sub-folders, new ones included.
        let mut outer = start_on(&d.watched, "**/*.dat", true);
        assert_eq!(
            sorted(outer.collect(2).await),
            [sub.join("a.dat"), sub.join("b.dat")],
            "what is there at its start"
        );
        drop(inner);
        let deeper = sub.join("deeper");
        fs::create_dir(&deeper).expect("create sub/deeper/");
        // The new folder's watch is added when its creation is seen; a file written a moment
        // later is found by that watch or by the scan of the new folder.
        tokio::time::sleep(Duration::from_millis(100)).await;
        write(&deeper.join("c.dat"), 10);
        write(&sub.join("d.dat"), 10);
        assert_eq!(
            sorted(outer.collect(2).await),
            sorted(vec![deeper.join("c.dat"), sub.join("d.dat")])
        );
    })
    .await;
}

/// The inotify instances of process `pid` (its `anon_inode:inotify` descriptors) and the
/// watches they hold (the `inotify wd:` lines of their fdinfo).
fn inotify_of(pid: u32) -> (usize, usize) {
    let (mut instances, mut watches) = (0, 0);
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).expect("the process's descriptors") {
        let path = entry.expect("an entry").path();
        if fs::read_link(&path).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify") {
            instances += 1;
            let fd = path
                .file_name()
                .expect("a number")
                .to_string_lossy()
                .into_owned();
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            watches += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    (instances, watches)
}

/// A job file with `n` watch jobs, each on a folder of its own under `dir` and publishing to
/// the asset `a{i}.txt` (made on the emulator); returns the file and the folders.
fn many_watch_jobs(
    dir: &Path,
    url: &str,
    emu: &stac_uploadd_emulator::Emulator,
    n: usize,
) -> (PathBuf, Vec<PathBuf>) {
    let mut jobs = crate::fixtures::JobFile::new(dir, url).defaults("part_retries = 0");
    let mut folders = Vec::new();
    for i in 0..n {
        let folder = dir.join(format!("in-{i}"));
        fs::create_dir(&folder).expect("create a folder");
        let asset = format!("a{i}.txt");
        emu.create_asset(
            &stac_uploadd_emulator::AssetKey::item_asset("ch.test.collection", "item-1", &asset),
            "text/plain",
        )
        .expect("the asset exists");
        jobs = jobs
            .watch(&format!("w{i}"), &asset, &folder, "*.dat")
            .lines("settle = \"200ms\"");
        folders.push(folder);
    }
    (jobs.write(), folders)
}

#[tokio::test]
async fn the_daemon_starts_two_hundred_watch_jobs_and_each_publishes_its_file() {
    let emu = crate::fixtures::basic_emulator().await;
    let tmp = tempfile::tempdir().expect("a temp dir");
    let n = 200;
    let (config, folders) = many_watch_jobs(tmp.path(), &emu.base_url(), &emu, n);
    let (mut daemon, log) = crate::fixtures::spawn_logged(&["run"], &config);
    let ready = || log.lock().unwrap().iter().any(|l| l.contains(" ready"));
    let failed = |d: &mut tokio::process::Child| d.try_wait().ok().flatten();
    let limit = Instant::now() + Duration::from_secs(60);
    while !ready() {
        if let Some(status) = failed(&mut daemon) {
            panic!("the daemon ended ({status}): {:?}", log.lock().unwrap());
        }
        assert!(
            Instant::now() < limit,
            "not ready: {:?}",
            log.lock().unwrap()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let pid = daemon.id().expect("running");
    assert_eq!(
        inotify_of(pid),
        (1, n),
        "one inotify instance with a watch per folder"
    );
    for (i, folder) in folders.iter().enumerate() {
        let tmp_name = folder.join(format!("f{i}.dat.tmp"));
        write(&tmp_name, 100 + i);
        fs::rename(&tmp_name, folder.join(format!("f{i}.dat"))).expect("rename into place");
    }
    let keys: Vec<_> = (0..n)
        .map(|i| {
            stac_uploadd_emulator::AssetKey::item_asset(
                "ch.test.collection",
                "item-1",
                &format!("a{i}.txt"),
            )
        })
        .collect();
    crate::fixtures::wait_for(
        Duration::from_secs(120),
        "every job's file on the server",
        || {
            keys.iter()
                .enumerate()
                .all(|(i, k)| emu.object_bytes(k).is_some_and(|b| b.len() == 100 + i))
        },
    )
    .await;
    assert!(
        emu.in_progress_uploads().is_empty(),
        "{:?}",
        emu.in_progress_uploads()
    );
    let status = crate::fixtures::terminate(&mut daemon).await;
    assert!(status.success(), "{status}: {:?}", log.lock().unwrap());
}

#[tokio::test]
async fn a_watch_folder_the_daemon_cannot_read_stops_the_start_with_exit_2_naming_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("a temp dir");
    // Reachable by an unprivileged user: the daemon runs as one when the test runs as root,
    // for whom permission bits stop no read.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let state = tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    let locked = tmp.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let config = tmp.path().join("jobs.toml");
    fs::write(
        &config,
        format!(
            "{}[[job]]\nname = \"locked\"\ncollection = \"c\"\nitem = \"i\"\nasset = \"a.txt\"\n[job.watch]\ndir = \"{}\"\npattern = \"*.dat\"\n",
            // Nothing is sent: the start fails first.
            crate::fixtures::job_file_head(tmp.path(), "http://127.0.0.1:9"),
            locked.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = tokio::process::Command::new(crate::fixtures::BIN);
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("TEST_STAC_PASSWORD", crate::fixtures::PASSWORD)
        .env("RUST_LOG", "stac_uploadd=info")
        .env_remove("STAC_UPLOADD_OBSERVE_LISTEN")
        .kill_on_drop(true);
    if rustix::process::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("ends in time")
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        error.contains(&locked.display().to_string()) && error.contains("ermission denied"),
        "{error}"
    );
    assert!(!error.contains("inotify"), "{error}");
}

#[tokio::test]
async fn a_folder_watched_again_right_after_its_watch_stopped_gets_its_events() {
    // What a reload does to a changed job: a new watch of the folder while the old one's
    // inotify watch is being released on the shared watcher.
    bounded(async {
        let d = dirs();
        write(&d.watched.join("seed.dat"), 10);
        let mut w = start_on(&d.watched, "*.dat", false);
        for i in 0..6 {
            drop(w);
            w = start_on(&d.watched, "*.dat", false);
            // The new watch's first scan finds what is there (seed.dat and the earlier
            // rounds' files) and sends it once settled: then it is past its scan.
            let mut present = 0;
            while present < i + 1 {
                timeout(PATIENCE, w.rx.recv())
                    .await
                    .expect("the present files come")
                    .expect("the watch runs");
                present += 1;
            }
            // A file renamed in now can only come from an inotify event.
            let name = d.watched.join(format!("f{i}.dat"));
            let tmp_name = d.watched.join(format!("f{i}.dat.tmp"));
            write(&tmp_name, 10);
            fs::rename(&tmp_name, &name).expect("rename into place");
            let got = timeout(PATIENCE, w.rx.recv()).await;
            assert_eq!(got, Ok(Some(name)), "round {i}");
        }
    })
    .await;
}

/// Waits until the daemon's log has a line containing `what`, or it ended.
async fn wait_log(daemon: &mut tokio::process::Child, log: &Arc<Mutex<Vec<String>>>, what: &str) {
    let limit = Instant::now() + Duration::from_secs(60);
    while !log.lock().unwrap().iter().any(|l| l.contains(what)) {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("the daemon ended ({status}): {:?}", log.lock().unwrap());
        }
        assert!(
            Instant::now() < limit,
            "no {what:?} in {:?}",
            log.lock().unwrap()
        );
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reload_adds_and_removes_folders_on_the_one_inotify_instance() {
    let emu = crate::fixtures::basic_emulator().await;
    let tmp = tempfile::tempdir().expect("a temp dir");
    // Jobs w0 and w1 on in-0 and in-1 (in-2 made for the reload).
    let (config, folders) = many_watch_jobs(tmp.path(), &emu.base_url(), &emu, 3);
    let text = fs::read_to_string(&config).unwrap();
    let mut parts = text.split("[[job]]");
    let head = parts.next().expect("the head");
    let jobs: Vec<String> = parts.map(|j| format!("[[job]]{j}")).collect();
    fs::write(&config, format!("{head}{}{}", jobs[0], jobs[1])).unwrap();
    let (mut daemon, log) = crate::fixtures::spawn_logged(&["run"], &config);
    wait_log(&mut daemon, &log, " ready").await;
    let pid = daemon.id().expect("running");
    assert_eq!(inotify_of(pid), (1, 2));

    // w0 goes, w2 comes.
    fs::write(&config, format!("{head}{}{}", jobs[1], jobs[2])).unwrap();
    crate::fixtures::signal(&daemon, libc::SIGHUP);
    wait_log(&mut daemon, &log, "reloaded").await;
    crate::fixtures::wait_for(Duration::from_secs(30), "in-0's watch released", || {
        inotify_of(pid) == (1, 2)
    })
    .await;
    for i in [1, 2] {
        let tmp_name = folders[i].join("f.dat.tmp");
        write(&tmp_name, 10 + i);
        fs::rename(&tmp_name, folders[i].join("f.dat")).expect("rename into place");
    }
    crate::fixtures::wait_for(Duration::from_secs(60), "w1's and w2's files", || {
        [1, 2].iter().all(|i| {
            emu.object_bytes(&stac_uploadd_emulator::AssetKey::item_asset(
                "ch.test.collection",
                "item-1",
                &format!("a{i}.txt"),
            ))
            .is_some_and(|b| b.len() == 10 + i)
        })
    })
    .await;
    assert_eq!(inotify_of(pid), (1, 2), "still one instance, in-1 and in-2");
    let status = crate::fixtures::terminate(&mut daemon).await;
    assert!(status.success(), "{status}");
}
