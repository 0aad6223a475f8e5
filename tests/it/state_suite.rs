//! The state interface's contract, written once for any engine: each test takes an [`Engine`]
//! that opens a store on a folder, and runs here on SQLite (the default), on the JSON files
//! of earlier releases (still read for the import), and on a real PostgreSQL (the cluster's
//! engine: a server started for each test, a database per folder, the store holding a lease).

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone as _, Utc};
use futures_util::future::BoxFuture;
use stac_client::{AssetTarget, Md5, Multihash, UploadId};
use stac_upload::{DigestCache as _, DigestKey, FileDigest};
use stac_uploadd::state::{
    Creating, DIGESTS_KEPT, HISTORY_PER_JOB, InFlight, Outcome, RunRecord, StateStore,
};

/// Opens a store of one engine on a folder.
pub type Engine = fn(PathBuf) -> BoxFuture<'static, StateStore>;

pub fn sqlite(dir: PathBuf) -> BoxFuture<'static, StateStore> {
    Box::pin(async move { StateStore::open(&dir).await.unwrap() })
}

pub fn json(dir: PathBuf) -> BoxFuture<'static, StateStore> {
    Box::pin(async move { StateStore::open_json(&dir).unwrap() })
}

thread_local! {
    /// The server the `postgres` engine opens stores on, for the test running on this thread
    /// (`#[tokio::test]` runs a test's future on its own thread).
    static PG_URL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A store in PostgreSQL: the database named after the folder (made on first use), the lease of
/// one instance taken, as a cluster member would.
pub fn postgres(dir: PathBuf) -> BoxFuture<'static, StateStore> {
    let url = PG_URL
        .with(|u| u.borrow().clone())
        .expect("a PostgreSQL server for this test");
    Box::pin(async move {
        let url = database_for(&url, &dir).await;
        let s = StateStore::open_cluster(
            &dir,
            &stac_uploadd::state::PgTarget {
                url: &url,
                ca_file: None,
                host: "suite-host",
                call_limit: std::time::Duration::from_secs(10),
            },
        )
        .await
        .unwrap();
        s.join("suite", "suite-host", std::time::Duration::from_secs(60))
            .await
            .unwrap();
        s
    })
}

/// The URL of a database of `server` for `dir`, created if missing.
pub async fn database_for(server: &str, dir: &Path) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    let name = format!("d{:016x}", h.finish());
    let pool = sqlx::PgPool::connect(server).await.unwrap();
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&pool)
        .await
        .unwrap();
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// Runs `test` with a PostgreSQL server of its own behind the `postgres` engine.
pub async fn on_postgres<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    let pg = crate::fixtures::Postgres::start().await;
    PG_URL.with(|u| *u.borrow_mut() = Some(pg.url()));
    test().await;
    PG_URL.with(|u| *u.borrow_mut() = None);
}

/// Runs as any engine returns them: a cluster's store adds the instance that ran each (see
/// `cluster_store.rs`), which the contract here leaves aside.
fn anyone(mut runs: Vec<RunRecord>) -> Vec<RunRecord> {
    for r in &mut runs {
        r.instance = None;
    }
    runs
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 10, minute, 0).unwrap()
}

pub fn upload(id: &str, asset: &str) -> InFlight {
    InFlight {
        upload_id: UploadId(id.into()),
        job: "j".into(),
        target: AssetTarget::item_asset("c", "i", asset),
        file: PathBuf::from(format!("/data/{asset}")),
        size: 10,
        mtime: (1, 2),
        ino: 3,
        multihash: format!("1220{}", "ab".repeat(32)),
        part_size: 5 << 20,
        created: at(1),
        urls_expire: None,
        pid: 42,
    }
}

fn marker(asset: &str, multihash: &str, minute: u32) -> Creating {
    Creating {
        target: AssetTarget::item_asset("c", "i", asset),
        multihash: multihash.into(),
        at: at(minute),
    }
}

pub fn run(job: &str, n: u32) -> RunRecord {
    RunRecord {
        instance: None,
        error_class: None,
        public: Vec::new(),
        job: job.into(),
        started: at(n % 60),
        finished: at(n % 60),
        outcome: Outcome::Uploaded,
        asset: "a".into(),
        item: Some("i".into()),
        file: None,
        bytes: u64::from(n),
        attempts: 1,
        upload_id: None,
        error: None,
        assets: Vec::new(),
    }
}

fn key(n: u64) -> DigestKey {
    DigestKey {
        dev: u64::MAX - 1,
        ino: n,
        size: 1 << 40,
        mtime: (1_700_000_000 + n as i64, 999_999_999),
        ctime: (-5, 7),
        part_size: 5 << 20,
    }
}

fn digest(n: u8, parts: usize) -> FileDigest {
    FileDigest {
        multihash: Multihash::from_hex(&format!("1220{}", format!("{n:02x}").repeat(32))),
        part_md5s: (0..parts).map(|p| Md5([p as u8 ^ n; 16])).collect(),
        size: 1 << 40,
    }
}

async fn reopened(engine: Engine, dir: &Path, store: StateStore) -> StateStore {
    store.close().await.unwrap();
    engine(dir.to_owned()).await
}

/// Uploads in flight: kept across a reopen, replaced by id, removed for good, and told apart
/// from ids that are not ours.
pub async fn uploads_in_flight(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path().to_owned()).await;
    s.add_inflight(upload("u1", "a")).await.unwrap();
    s.add_inflight(upload("u2", "b")).await.unwrap();
    let replaced = InFlight {
        size: 11,
        ..upload("u2", "b")
    };
    s.add_inflight(replaced.clone()).await.unwrap();
    s.remove_inflight(&UploadId("u1".into())).await.unwrap();
    s.remove_inflight(&UploadId("never".into())).await.unwrap();
    let s = reopened(engine, dir.path(), s).await;
    assert_eq!(s.inflight().await.unwrap(), vec![replaced]);
    assert!(s.is_ours(&UploadId("u2".into())).await.unwrap());
    assert!(!s.is_ours(&UploadId("u1".into())).await.unwrap());
}

/// Create markers: one per target and multihash whatever its case, removed by target and
/// multihash or by target, and `record_created` trades the marker for the upload.
pub async fn create_markers(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path().to_owned()).await;
    s.add_creating(marker("a", "1220ab", 1)).await.unwrap();
    s.add_creating(marker("a", "1220AB", 2)).await.unwrap();
    s.add_creating(marker("a", "1220cd", 3)).await.unwrap();
    s.add_creating(marker("b", "1220ab", 4)).await.unwrap();
    assert_eq!(
        s.creating().await.unwrap().len(),
        3,
        "one per target and file"
    );
    let target = AssetTarget::item_asset("c", "i", "a");
    assert!(s.created_unseen(&target, "1220AB").await.unwrap());
    s.remove_creating(&target, "1220AB").await.unwrap();
    assert!(!s.created_unseen(&target, "1220ab").await.unwrap());
    assert!(s.created_unseen(&target, "1220cd").await.unwrap());
    s.clear_creating(&target).await.unwrap();
    let s = reopened(engine, dir.path(), s).await;
    assert_eq!(s.creating().await.unwrap(), vec![marker("b", "1220ab", 4)]);

    let up = InFlight {
        target: AssetTarget::item_asset("c", "i", "b"),
        multihash: "1220AB".into(),
        ..upload("u9", "b")
    };
    s.record_created(up.clone()).await.unwrap();
    let s = reopened(engine, dir.path(), s).await;
    assert!(s.creating().await.unwrap().is_empty(), "the marker went");
    assert_eq!(s.inflight().await.unwrap(), vec![up]);
}

/// The history: seen at once, written by a flush, bounded per job (the oldest go), oldest first.
pub async fn run_history(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path().to_owned()).await;
    for n in 0..(HISTORY_PER_JOB as u32 + 5) {
        s.record_run(run("busy", n)).await.unwrap();
    }
    s.record_run(run("quiet", 7)).await.unwrap();
    let before = s.history().await.unwrap();
    assert_eq!(
        before["busy"].len(),
        HISTORY_PER_JOB,
        "bounded before a flush too"
    );
    s.flush().await.unwrap();
    // More after a flush: the bound holds across what is written and what is held.
    s.record_run(run("busy", 100)).await.unwrap();
    let s = reopened(engine, dir.path(), s).await;
    let h = s.history().await.unwrap();
    let bytes: Vec<u64> = h["busy"].iter().map(|r| r.bytes).collect();
    let expected: Vec<u64> = (6..(HISTORY_PER_JOB as u64 + 5)).chain([100]).collect();
    assert_eq!(bytes, expected, "the newest, oldest first");
    assert_eq!(anyone(h["quiet"].clone()), vec![run("quiet", 7)]);
    assert_eq!(
        anyone(s.job_history("busy").await.unwrap()),
        anyone(h["busy"].clone()),
        "one job's runs alone, the same"
    );
    assert!(s.job_history("none").await.unwrap().is_empty());
}

/// The digest cache: seen at once, written by a flush, a key put again replaced, bounded (the
/// oldest go), and every field of the key counts.
pub async fn digest_cache(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path().to_owned()).await;
    s.put(key(1), &digest(1, 3));
    assert_eq!(s.get(&key(1)).await, Some(digest(1, 3)), "held, and seen");
    s.put(key(1), &digest(2, 0));
    s.flush().await.unwrap();
    let s = reopened(engine, dir.path(), s).await;
    assert_eq!(s.get(&key(1)).await, Some(digest(2, 0)), "replaced");
    for other in [
        DigestKey { dev: 0, ..key(1) },
        DigestKey {
            mtime: (key(1).mtime.0, 0),
            ..key(1)
        },
        DigestKey {
            ctime: (-5, 8),
            ..key(1)
        },
        DigestKey {
            part_size: 1,
            ..key(1)
        },
    ] {
        assert_eq!(s.get(&other).await, None, "{other:?}");
    }
    for n in 2..(DIGESTS_KEPT as u64 + 6) {
        s.put(key(n), &digest(3, 1));
    }
    s.flush().await.unwrap();
    let s = reopened(engine, dir.path(), s).await;
    for n in 1..=5 {
        assert_eq!(s.get(&key(n)).await, None, "entry {n} was among the oldest");
    }
    assert_eq!(s.get(&key(6)).await, Some(digest(3, 1)));
    assert_eq!(
        s.get(&key(DIGESTS_KEPT as u64 + 5)).await,
        Some(digest(3, 1))
    );
}

/// Paths of any bytes, in every record that holds one, come back exactly.
pub async fn paths_of_any_bytes(engine: Engine) {
    use std::os::unix::ffi::OsStrExt as _;
    let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"/data/r\xe9sum\xe9 \xff.tif"));
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path().to_owned()).await;
    let up = InFlight {
        file: odd.clone(),
        ..upload("u1", "a")
    };
    let r = RunRecord {
        instance: None,
        error_class: None,
        public: Vec::new(),
        file: Some(odd.clone()),
        ..run("j", 1)
    };
    s.add_inflight(up.clone()).await.unwrap();
    s.record_run(r.clone()).await.unwrap();
    let s = reopened(engine, dir.path(), s).await;
    assert_eq!(s.inflight().await.unwrap(), vec![up]);
    assert_eq!(anyone(s.history().await.unwrap()["j"].clone()), vec![r]);
}

macro_rules! suite {
    ($engine:ident) => {
        mod $engine {
            #[tokio::test]
            async fn uploads_in_flight() {
                super::uploads_in_flight(super::$engine).await;
            }
            #[tokio::test]
            async fn create_markers() {
                super::create_markers(super::$engine).await;
            }
            #[tokio::test]
            async fn run_history() {
                super::run_history(super::$engine).await;
            }
            #[tokio::test]
            async fn digest_cache() {
                super::digest_cache(super::$engine).await;
            }
            #[tokio::test]
            async fn paths_of_any_bytes() {
                super::paths_of_any_bytes(super::$engine).await;
            }
        }
    };
}

suite!(sqlite);
suite!(json);

mod postgres {
    use super::on_postgres;
    #[tokio::test]
    async fn uploads_in_flight() {
        on_postgres(|| super::uploads_in_flight(super::postgres)).await;
    }
    #[tokio::test]
    async fn create_markers() {
        on_postgres(|| super::create_markers(super::postgres)).await;
    }
    #[tokio::test]
    async fn run_history() {
        on_postgres(|| super::run_history(super::postgres)).await;
    }
    #[tokio::test]
    async fn digest_cache() {
        on_postgres(|| super::digest_cache(super::postgres)).await;
    }
    #[tokio::test]
    async fn paths_of_any_bytes() {
        on_postgres(|| super::paths_of_any_bytes(super::postgres)).await;
    }
}
