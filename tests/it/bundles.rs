//! Bundles from a watched folder: on the trigger side with real files on a temp dir, inotify and
//! the settle rule, then the bundle collector, with real (short) time (the collector's logic
//! alone, every order, duplicates, the cap, is tested with exact instants in
//! `src/trigger/watch/bundle.rs`); and end to end, the daemon publishing bundles to the emulator.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet};
use stac_uploadd::trigger::watch::WatchSpec;
use stac_uploadd::trigger::watch::Watcher;
use stac_uploadd::trigger::watch::bundle::{
    Bundle, BundleRules, Collector, Incomplete, collect, members,
};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_millis(200);
/// How long to listen for a bundle that must not come.
const QUIET: Duration = Duration::from_millis(700);
/// How long an expected bundle may take.
const PATIENCE: Duration = Duration::from_secs(5);

struct Bundles {
    out: mpsc::UnboundedReceiver<Bundle>,
    _cancel: tokio_util::sync::DropGuard,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    staging: PathBuf,
}

/// A watch of a fresh folder feeding a collector of `{stem}.tif` and `{stem}.json` (required)
/// and `{stem}.png` (optional).
fn start(rules: BundleRules) -> Bundles {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let dir = tmp.path().join("in");
    let staging = tmp.path().join("staging");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(&staging).unwrap();
    let spec = WatchSpec {
        dir: dir.clone(),
        pattern: Glob::new("*").unwrap().compile_matcher(),
        recursive: false,
        ignore: GlobSet::empty(),
        settle: SETTLE,
        poll: None,
        bundle: rules,
    };
    let members = members(
        [
            (Path::new("{stem}.tif"), true),
            (Path::new("{stem}.json"), true),
            (Path::new("{stem}.png"), false),
        ]
        .into_iter(),
    )
    .expect("valid members");
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let watcher = Watcher::start(spec, tx, cancel.clone()).expect("the watch starts");
    let (out_tx, out) = mpsc::unbounded_channel();
    let root = std::path::absolute(&dir).unwrap();
    tokio::spawn(async move {
        collect(
            "bundles".into(),
            root,
            Collector::new(members, rules),
            rx,
            |b| {
                let _ = out_tx.send(b);
            },
        )
        .await;
        drop(watcher);
    });
    Bundles {
        out,
        _cancel: cancel.drop_guard(),
        dir: std::path::absolute(&dir).unwrap(),
        staging,
        _tmp: tmp,
    }
}

impl Bundles {
    /// A file renamed into the folder (finished at once).
    fn rename_in(&self, name: &str) -> PathBuf {
        let staged = self.staging.join(name);
        fs::write(&staged, name.as_bytes()).unwrap();
        let path = self.dir.join(name);
        fs::rename(&staged, &path).unwrap();
        path
    }

    /// A file written in place (finished once it settled).
    fn write_in(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, name.as_bytes()).unwrap();
        path
    }

    async fn next(&mut self) -> Bundle {
        timeout(PATIENCE, self.out.recv())
            .await
            .expect("a bundle in time")
            .expect("the collector runs")
    }

    async fn none_for(&mut self, quiet: Duration) {
        if let Ok(b) = timeout(quiet, self.out.recv()).await {
            panic!("unexpected bundle: {b:?}");
        }
    }
}

fn rules(timeout: Duration, incomplete: Incomplete) -> BundleRules {
    BundleRules {
        timeout,
        incomplete,
    }
}

#[tokio::test]
async fn members_arriving_slowly_in_any_order_become_one_bundle() {
    let mut b = start(rules(Duration::from_secs(60), Incomplete::Leave));
    // The metadata first, the optional thumbnail written in place, the image last; another
    // stem's member in between, which never completes.
    let json = b.rename_in("a.json");
    b.none_for(QUIET).await;
    let png = b.write_in("a.png");
    b.rename_in("b.tif");
    b.none_for(QUIET).await;
    let tif = b.rename_in("a.tif");
    let got = b.next().await;
    assert_eq!(
        got,
        Bundle {
            stem: "a".into(),
            files: vec![Some(tif), Some(json), Some(png)],
            complete: true,
        }
    );
    // Once, and "b" waits.
    b.none_for(QUIET).await;
    // The other order completes "b" with no optional member.
    let json = b.rename_in("b.json");
    let got = b.next().await;
    assert_eq!(got.stem, "b");
    assert_eq!(got.files[1], Some(json));
    assert_eq!(got.files[2], None);
    assert!(got.complete);
}

#[tokio::test]
async fn an_incomplete_bundle_times_out_and_is_published_as_it_is() {
    let timeout = Duration::from_millis(600);
    let mut b = start(rules(timeout, Incomplete::Publish));
    let started = tokio::time::Instant::now();
    let tif = b.rename_in("c.tif");
    let got = b.next().await;
    assert!(started.elapsed() >= timeout, "not before its timeout");
    assert_eq!(
        got,
        Bundle {
            stem: "c".into(),
            files: vec![Some(tif), None, None],
            complete: false,
        }
    );
    b.none_for(QUIET).await;
}

#[tokio::test]
async fn an_incomplete_bundle_left_at_its_timeout_completes_with_a_new_member() {
    let mut b = start(rules(Duration::from_millis(300), Incomplete::Leave));
    let tif = b.rename_in("d.tif");
    // Past its timeout: reported, not handed on.
    b.none_for(QUIET).await;
    let json = b.rename_in("d.json");
    let got = b.next().await;
    assert_eq!(got.files, vec![Some(tif), Some(json), None]);
    assert!(got.complete);
}

// --- published by the daemon ----------------------------------------------------------------

/// A bundle job of the daemon against the emulator: `{stem}.tif` and `{stem}.png` required,
/// `{stem}.json` optional, each bundle the item `<name>-{stem}`.
fn bundle_job(name: &str, dir: &Path, timeout: &str, incomplete: &str) -> String {
    format!(
        r#"[[job]]
name = "{name}"
collection = "{COLLECTION}"
item = "{name}-{{stem}}"
[job.watch]
dir = "{dir}"
pattern = "*"
settle = "200ms"
bundle_timeout = "{timeout}"
bundle_incomplete = "{incomplete}"
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
[[job.assets]]
id = "{{stem}}.tif"
file = "{{stem}}.tif"
[job.assets.metadata]
type = "image/tiff; application=geotiff"
[[job.assets]]
id = "{{stem}}.png"
file = "{{stem}}.png"
[job.assets.metadata]
type = "image/png"
[[job.assets]]
id = "{{stem}}.json"
file = "{{stem}}.json"
required = false
[job.assets.metadata]
type = "application/json"
"#,
        dir = dir.display()
    )
}

const COLLECTION: &str = "ch.test.bundles";

/// Writes `name` beside `dir` and renames it in: a finished file appears at once.
fn arrive(dir: &Path, name: &str, seed: u64) -> String {
    let staging = dir.with_extension("staging");
    fs::create_dir_all(&staging).unwrap();
    let sha = crate::fixtures::write_file(&staging.join(name), 2048, seed);
    fs::rename(staging.join(name), dir.join(name)).unwrap();
    sha
}

fn stored(emu: &stac_uploadd_emulator::Emulator, item: &str, asset: &str) -> bool {
    emu.object_bytes(&stac_uploadd_emulator::AssetKey::item_asset(
        COLLECTION, item, asset,
    ))
    .is_some()
}

#[tokio::test]
async fn the_daemon_publishes_a_bundle_once_complete_and_an_incomplete_one_at_its_timeout() {
    use crate::fixtures::{JobFile, scrape, spawn_observed, terminate, value, wait_for};
    let emu = crate::fixtures::basic_emulator().await;
    emu.create_collection(COLLECTION);
    let tmp = tempfile::tempdir().unwrap();
    let (slow, quick) = (tmp.path().join("slow"), tmp.path().join("quick"));
    fs::create_dir(&slow).unwrap();
    fs::create_dir(&quick).unwrap();
    let config = JobFile::new(tmp.path(), &emu.base_url())
        .lines(&bundle_job("slow", &slow, "1h", "leave"))
        .lines(&bundle_job("quick", &quick, "1s", "publish"))
        .write();
    let (mut daemon, _log, addr) = spawn_observed(&config, &[]).await;
    let open = |samples: &[prometheus_parse::Sample], job: &str| {
        value(samples, "stac_uploadd_bundles_open", &[("job_name", job)])
    };

    // The members of b1 arrive one at a time: nothing is published until the bundle is
    // complete, and the optional member, absent then, is not waited for.
    arrive(&slow, "b1.png", 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while open(&scrape(addr).await, "slow") != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "b1 never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !stored(&emu, "slow-b1", "b1.png"),
        "published before complete"
    );
    arrive(&slow, "b1.tif", 3);
    wait_for(Duration::from_secs(60), "b1 published", || {
        stored(&emu, "slow-b1", "b1.tif") && stored(&emu, "slow-b1", "b1.png")
    })
    .await;
    assert!(!stored(&emu, "slow-b1", "b1.json"));

    // c1 never gets its png: at its timeout it is published as it is, and counted.
    arrive(&quick, "c1.tif", 4);
    wait_for(
        Duration::from_secs(60),
        "c1 published at its timeout",
        || stored(&emu, "quick-c1", "c1.tif"),
    )
    .await;
    assert!(!stored(&emu, "quick-c1", "c1.png"));
    let samples = scrape(addr).await;
    assert_eq!(
        value(
            &samples,
            "stac_uploadd_bundles_incomplete_total",
            &[("job_name", "quick"), ("reason", "timed_out")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "stac_uploadd_bundles_incomplete_total",
            &[("job_name", "slow"), ("reason", "timed_out")]
        )
        .unwrap_or(0.0),
        0.0
    );
    let status = terminate(&mut daemon).await;
    assert!(status.success(), "{status}");
}
