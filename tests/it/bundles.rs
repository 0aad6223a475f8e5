//! Bundles from a watched folder, end to end on the trigger side: real files on a temp dir,
//! inotify and the settle rule, then the bundle collector, with real (short) time. The
//! collector's logic alone (every order, duplicates, the cap) is tested with exact instants in
//! `src/trigger/watch/bundle.rs`. These tests assert the bundles handed to the job (what becomes
//! `Work::Bundle`); publishing one is the item run's part (issue 19, several assets per run).

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
