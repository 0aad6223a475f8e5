//! The state store's cost per upload, the JSON-files store against the SQLite store, side by
//! side: disk written, CPU, peak RSS and the state folder's size, at an empty and at a full digest
//! cache (issue 24).
//!
//! `cargo bench --bench state_store` (`STATE_BENCH_FILES`, default 240, and
//! `STATE_BENCH_PACE_MS`, default 250, to change the feed; `STATE_BENCH_DIR` for the folder the
//! work happens in, default the temp folder: it must be on a disk file system, see below).
//!
//! # Method
//!
//! Each case (store × digest cache) runs in a child process of its own (the bench binary again,
//! `--case STORE CACHE`), so that its I/O, CPU and RSS are its own. The child starts the emulator
//! in process on 127.0.0.1, a [`Supervisor`] with one watch job (its config written as TOML and
//! parsed as the daemon does), and the daemon's periodic flush (every [`HISTORY_FLUSH`], as
//! `stac-uploadd run` does: without it the JSON store would write its history and digest cache
//! only once, at the end, and look cheaper than it is). A `full` case first fills the digest cache
//! with [`DIGESTS_KEPT`] entries (one MD5 each, like a small file's) in another child
//! (`--prefill`), written and closed, so that the measured child starts with a full cache as a
//! restarted daemon does, and its peak RSS is not the prefill's.
//!
//! The files (1 KiB each, unique contents, so each is a digest-cache miss and a new entry) are
//! written before the measured part into a sibling of the watched folder on the same file system
//! and synced; each is then renamed into the watched folder at its time, one every
//! `STATE_BENCH_PACE_MS`. A rename writes no data pages, so the bench's own writes do not count.
//! Each file becomes its own asset (`asset = "{name}"`), created by its run: so each upload also
//! writes the create marker the daemon records before a create is sent.
//!
//! The measured part runs from the first rename until every asset holds its file on the
//! emulator, nothing is left in flight or creating in the store, the last file's run is in the
//! history, a final `flush` has returned, and the store is closed. The close is counted: it
//! checkpoints SQLite's write-ahead log into `state.db`, which a daemon that runs on does every
//! 1,000 pages of log (SQLite's default), so those writes are part of the uploads' cost; the
//! output gives the part before the close apart. For the JSON store the close writes nothing.
//! Over the measured part:
//!
//! - **disk written**: the delta of `write_bytes` in `/proc/self/io`, which counts the page-cache
//!   pages this process dirtied (or wrote directly) on a block-device file system, charged when
//!   dirtied: rewriting one byte of a page counts 4 KiB; a page written again while still dirty
//!   is not counted again (the disk takes it once: an fsync between two writes makes both
//!   count); the file system's metadata and journal (ext4's jbd2) are the kernel's writes, not
//!   counted. A file on tmpfs counts nothing, hence the check of the file system.
//!   `cancelled_write_bytes` (dirty pages of files truncated or deleted before they reached the
//!   disk) is printed beside it; the table's figure is `write_bytes` alone.
//! - **CPU**: the delta of user + system time from `getrusage(RUSAGE_SELF)`. The process also
//!   hosts the emulator and the watcher: both stores pay the same for them, so the difference
//!   between rows is the store's.
//! - **peak RSS**: `VmHWM` of `/proc/self/status` at the end (the whole child: emulator
//!   included, prefill not).
//! - **state folder at end**: the bytes of the files in the state folder after the final flush,
//!   before the close (SQLite's `-wal` and `-shm` as a running daemon has them); the second
//!   table lists them file by file.
//!
//! The emulator keeps part bodies in memory ([`Storage::Memory`], its default): it writes nothing
//! to disk, so nothing of its is in the figures to subtract.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use stac_client::{Md5, Multihash, StacClient};
use stac_upload::{DigestCache, DigestKey, FileDigest};
use stac_uploadd::config;
use stac_uploadd::state::{DIGESTS_KEPT, HISTORY_FLUSH, StateStore};
use stac_uploadd::supervisor::{HttpUploader, Shared, Supervisor};
use stac_uploadd::trigger::Clock;
use stac_uploadd_emulator::{AssetKey, Emulator, EmulatorConfig, Storage};

#[path = "support/proc.rs"]
mod proc;
#[path = "support/rusage.rs"]
mod rusage;

use proc::{env_or, status_kib};

const COLLECTION: &str = "ch.bench";
const ITEM: &str = "i";
/// tmpfs's `f_type` (linux/magic.h): its pages are never counted in `write_bytes`.
const TMPFS_MAGIC: u64 = 0x0102_1994;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Json,
    Sqlite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    Empty,
    Full,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Json => "json",
            Store::Sqlite => "sqlite",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Store::Json, Store::Sqlite]
            .into_iter()
            .find(|v| v.name() == s)
    }
}

impl Cache {
    fn name(self) -> &'static str {
        match self {
            Cache::Empty => "empty",
            Cache::Full => "full",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Cache::Empty, Cache::Full]
            .into_iter()
            .find(|v| v.name() == s)
    }
}

/// The one place the bench opens a store: the JSON files of earlier releases, or SQLite.
async fn open_store(store: Store, dir: &Path) -> StateStore {
    let opened = match store {
        Store::Json => StateStore::open_json(dir),
        Store::Sqlite => StateStore::open(dir).await,
    };
    opened.unwrap_or_else(|e| {
        fail(&format!(
            "cannot open the {} store in {}: {e}",
            store.name(),
            dir.display()
        ))
    })
}

/// Fills the digest cache of the store in `dir` with [`DIGESTS_KEPT`] entries and writes it.
/// Their keys name inodes no file of the bench has, so the measured uploads all miss.
async fn prefill(store: Store, dir: &Path) {
    let state = open_store(store, dir).await;
    for i in 0..DIGESTS_KEPT as u64 {
        let key = DigestKey {
            dev: 0xbe_7c,
            ino: (1 << 40) + i,
            size: 1024,
            mtime: (1_700_000_000 + i as i64, 0),
            ctime: (1_700_000_000 + i as i64, 0),
            part_size: 1024,
        };
        let sha: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&sha[..16]);
        let digest = FileDigest {
            multihash: Multihash::from_sha256(&sha),
            part_md5s: vec![Md5(md5)],
            size: 1024,
        };
        state.put(key, &digest);
    }
    // Closed as a daemon that stops closes it: the next one opens a checkpointed database.
    state.close().await.unwrap_or_else(|e| {
        fail(&format!(
            "cannot write the prefilled store in {}: {e}",
            dir.display()
        ))
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = |i: usize| {
        let store = args.get(i + 1).and_then(|s| Store::parse(s));
        let cache = args.get(i + 2).and_then(|s| Cache::parse(s));
        (store, cache)
    };
    if let Some(i) = args.iter().position(|a| a == "--prefill") {
        let (Some(store), Some(dir)) = (
            args.get(i + 1).and_then(|s| Store::parse(s)),
            args.get(i + 2),
        ) else {
            fail("usage: --prefill json|sqlite STATE_DIR");
        };
        runtime().block_on(prefill(store, Path::new(dir)));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let (Some(store), Some(cache)) = parsed(i) else {
            fail("usage: --case json|sqlite empty|full");
        };
        runtime().block_on(run_case(&args[0], store, cache));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("state_store bench: run with `cargo bench --bench state_store`");
        return;
    }
    orchestrate(&args[0]);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("cannot start a runtime: {e}")))
}

/// What one case's child reports.
#[derive(Debug, Default)]
struct Figures {
    uploads: u64,
    write_bytes: u64,
    cancelled_write_bytes: u64,
    /// `write_bytes` up to the final flush, before the close.
    write_bytes_flushed: u64,
    cpu_seconds: f64,
    peak_kib: u64,
    files: Vec<(String, u64)>,
}

fn orchestrate(exe: &str) {
    let files = env_or("STATE_BENCH_FILES", 240u64);
    let pace = env_or("STATE_BENCH_PACE_MS", 250u64);
    let work = work_root();
    println!(
        "one watch job, {files} files of 1 KiB (unique contents) renamed into its folder one every {pace} ms; the emulator in process on 127.0.0.1 keeps part bodies in memory (it writes nothing to disk); state folder under {} ({}); digest cache full = {DIGESTS_KEPT} entries put and flushed before the measured part",
        work.display(),
        fs_note(&work)
    );
    let mut all = Vec::new();
    for store in [Store::Json, Store::Sqlite] {
        for cache in [Cache::Empty, Cache::Full] {
            all.push((store, cache, child_case(exe, store, cache)));
        }
    }
    println!();
    println!(
        "| store | digest cache | uploads | disk written per upload | CPU per upload | peak RSS | state folder at end |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (store, cache, f) in &all {
        let n = f.uploads.max(1) as f64;
        let folder: u64 = f.files.iter().map(|(_, b)| b).sum();
        println!(
            "| {} | {} | {} | {:.1} KiB | {:.2} ms | {:.1} MiB | {} |",
            store.name(),
            cache.name(),
            f.uploads,
            f.write_bytes as f64 / n / 1024.0,
            f.cpu_seconds * 1000.0 / n,
            f.peak_kib as f64 / 1024.0,
            bytes(folder)
        );
    }
    println!();
    println!(
        "Disk written per upload, split: up to the final flush, then the close (SQLite checkpoints its write-ahead log into the database); and `cancelled_write_bytes` (pages dirtied, then dropped with their file before writeback):"
    );
    for (store, cache, f) in &all {
        let per = |b: u64| b as f64 / f.uploads.max(1) as f64 / 1024.0;
        println!(
            "- {} / {}: {:.1} KiB to the flush + {:.1} KiB at the close; {:.1} KiB cancelled",
            store.name(),
            cache.name(),
            per(f.write_bytes_flushed),
            per(f.write_bytes - f.write_bytes_flushed),
            per(f.cancelled_write_bytes)
        );
    }
    println!();
    println!("State files after the final flush, before the close:");
    println!("| store | digest cache | state file | bytes |");
    println!("| --- | --- | --- | --- |");
    for (store, cache, f) in &all {
        for (name, size) in &f.files {
            println!("| {} | {} | {name} | {size} |", store.name(), cache.name());
        }
    }
}

fn bytes(n: u64) -> String {
    if n >= 1024 * 1024 {
        format!("{:.2} MiB", n as f64 / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// The folder the cases work in: `STATE_BENCH_DIR`, or the temp folder.
fn work_root() -> PathBuf {
    std::env::var_os("STATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Says whether `dir` is on tmpfs, where `write_bytes` counts nothing.
fn fs_note(dir: &Path) -> String {
    match rustix::fs::statfs(dir) {
        Ok(s) if s.f_type as u64 == TMPFS_MAGIC => {
            "tmpfs: NOTHING IS COUNTED AS WRITTEN, set STATE_BENCH_DIR to a folder on a disk".into()
        }
        Ok(s) => format!("file system type {:#x}", s.f_type as u64),
        Err(e) => format!("file system unknown: {e}"),
    }
}

/// Runs one case in a child and reads its figures.
fn child_case(exe: &str, store: Store, cache: Cache) -> Figures {
    let out = std::process::Command::new(exe)
        .args(["--case", store.name(), cache.name()])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run the case {store:?}/{cache:?}: {e}")));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        fail(&format!(
            "the case {}/{} failed ({}): {text}{}",
            store.name(),
            cache.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_figures(&text).unwrap_or_else(|| {
        fail(&format!(
            "the case {}/{} printed no figures: expected `result ...` and `file ...` lines, got: {text}",
            store.name(),
            cache.name()
        ))
    })
}

/// Reads `result UPLOADS WRITE CANCELLED CPU_S PEAK_KIB WRITE_FLUSHED` and `file BYTES NAME` lines.
fn parse_figures(text: &str) -> Option<Figures> {
    let mut f = Figures::default();
    let mut seen = false;
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("result") => {
                f.uploads = w.next()?.parse().ok()?;
                f.write_bytes = w.next()?.parse().ok()?;
                f.cancelled_write_bytes = w.next()?.parse().ok()?;
                f.cpu_seconds = w.next()?.parse().ok()?;
                f.peak_kib = w.next()?.parse().ok()?;
                f.write_bytes_flushed = w.next()?.parse().ok()?;
                seen = true;
            }
            Some("file") => {
                let size = w.next()?.parse().ok()?;
                f.files.push((w.collect::<Vec<_>>().join(" "), size));
            }
            _ => {}
        }
    }
    seen.then_some(f)
}

/// A field of `/proc/self/io`, in bytes.
fn io_bytes(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/io")
        .unwrap_or_else(|e| fail(&format!("cannot read /proc/self/io: {e}")));
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| fail(&format!("/proc/self/io has no {field} line: {text}")))
}

fn file_name(f: usize) -> String {
    format!("f{f:05}.txt")
}

fn key(f: usize) -> AssetKey {
    AssetKey::item_asset(COLLECTION, ITEM, &file_name(f))
}

async fn run_case(exe: &str, store: Store, cache: Cache) {
    let files = env_or("STATE_BENCH_FILES", 240u64) as usize;
    let pace = Duration::from_millis(env_or("STATE_BENCH_PACE_MS", 250u64));
    let work = tempfile::Builder::new()
        .prefix("state-bench-")
        .tempdir_in(work_root())
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot make a folder in {}: {e}",
                work_root().display()
            ))
        });
    let state_dir = work.path().join("state");
    if cache == Cache::Full {
        let out = std::process::Command::new(exe)
            .args(["--prefill", store.name()])
            .arg(&state_dir)
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run the prefill: {e}")));
        if !out.status.success() {
            fail(&format!(
                "the prefill of {} failed: {}",
                state_dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let config = EmulatorConfig {
        storage: Storage::Memory,
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start("127.0.0.1:0".parse().expect("a socket address"), config)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot start the emulator: {e}")));
    // The item exists; each file's asset is created by its run.
    emu.create_asset(
        &AssetKey::item_asset(COLLECTION, ITEM, "seed.txt"),
        "text/plain",
    )
    .unwrap_or_else(|e| fail(&format!("cannot seed the emulator: {e}")));
    let watched = work.path().join("in");
    let staged = work.path().join("staged");
    for dir in [&watched, &staged] {
        std::fs::create_dir(dir)
            .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
    }
    let text = format!(
        "state_dir = \"{}\"\n[server]\nurl = \"{}\"\n[[job]]\nname = \"feed\"\ncollection = \"{COLLECTION}\"\nitem = \"{ITEM}\"\nasset = \"{{name}}\"\n[job.asset_metadata]\ntype = \"text/plain\"\n[job.watch]\ndir = \"{}\"\npattern = \"*.txt\"\n",
        state_dir.display(),
        emu.base_url(),
        watched.display()
    );
    let config = config::parse(&text, &work.path().join("jobs.toml"), &|_| None)
        .unwrap_or_else(|e| fail(&format!("the bench's job file does not parse: {e}\n{text}")));
    let client = StacClient::new(config.server.client_config())
        .unwrap_or_else(|e| fail(&format!("cannot make the client: {e}")));
    let state = Arc::new(open_store(store, &config.state_dir).await);
    let shared = Arc::new(Shared::new(
        HttpUploader(client),
        state.clone(),
        Clock::System,
    ));
    shared.set_upload_limit(config.max_concurrent_uploads);
    // As `stac-uploadd run` wires each job (daemon.rs, `Runtime::jobs`): the store is its digest
    // cache, and compressed temporary files go beside it.
    let cache: Arc<dyn DigestCache> = state.clone();
    let temp = config.state_dir.join("tmp");
    std::fs::create_dir_all(&temp)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", temp.display())));
    let jobs = config
        .jobs
        .iter()
        .cloned()
        .map(|mut job| {
            job.upload.digest_cache = Some(cache.clone());
            job.upload.temp_dir = Some(temp.clone());
            job
        })
        .collect();
    let supervisor = Supervisor::start(shared, jobs)
        .await
        .unwrap_or_else(|e| fail(&format!("the watch job does not start: {e}")));
    let stop_flusher = tokio_util::sync::CancellationToken::new();
    let flusher = {
        let (state, stop) = (state.clone(), stop_flusher.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(HISTORY_FLUSH) => {}
                    () = stop.cancelled() => return,
                }
                if let Err(e) = state.flush().await {
                    eprintln!("periodic flush: {e}");
                }
            }
        })
    };

    for f in 0..files {
        let mut body = format!("state bench file {f}\n").into_bytes();
        body.resize(1024, b'.');
        let path = staged.join(file_name(f));
        std::fs::write(&path, body)
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
    }
    // On disk before the measured part, so that no writeback of ours falls into it.
    let dir = std::fs::File::open(&staged)
        .unwrap_or_else(|e| fail(&format!("cannot open {}: {e}", staged.display())));
    rustix::fs::syncfs(&dir).unwrap_or_else(|e| fail(&format!("syncfs: {e}")));

    let (write0, cancelled0) = (io_bytes("write_bytes"), io_bytes("cancelled_write_bytes"));
    let cpu0 = rusage::cpu_seconds(libc::RUSAGE_SELF);
    let started = Instant::now();
    let mut tick = tokio::time::interval(pace);
    for f in 0..files {
        tick.tick().await;
        let name = file_name(f);
        std::fs::rename(staged.join(&name), watched.join(&name)).unwrap_or_else(|e| {
            fail(&format!(
                "cannot rename {name} into {}: {e}",
                watched.display()
            ))
        });
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let last = file_name(files.saturating_sub(1));
    loop {
        if Instant::now() > deadline {
            fail(&format!(
                "not every upload recorded within 300 s of the last rename ({} of {files} on the server)",
                (0..files).filter(|f| published(&emu, *f)).count()
            ));
        }
        if (0..files).all(|f| published(&emu, f)) && recorded(&state, &last).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_flusher.cancel();
    let _ = flusher.await;
    state
        .flush()
        .await
        .unwrap_or_else(|e| fail(&format!("the final flush failed: {e}")));
    let write_flushed = io_bytes("write_bytes") - write0;
    let listing = state_files(&config.state_dir);
    // The close checkpoints SQLite's write-ahead log into the database: a daemon that runs on
    // does the same every 1,000 pages of log, so its writes belong to the uploads' cost.
    state
        .close()
        .await
        .unwrap_or_else(|e| fail(&format!("closing the store failed: {e}")));
    let cpu = rusage::cpu_seconds(libc::RUSAGE_SELF) - cpu0;
    let (write, cancelled) = (
        io_bytes("write_bytes") - write0,
        io_bytes("cancelled_write_bytes") - cancelled0,
    );
    let took = started.elapsed();
    let peak = status_kib("VmHWM:");
    let uploads = (0..files).filter(|f| published(&emu, *f)).count();

    supervisor.shutdown(Duration::from_secs(30)).await;
    emu.shutdown().await;
    eprintln!("measured part: {:.1} s", took.as_secs_f64());
    println!("result {uploads} {write} {cancelled} {cpu} {peak} {write_flushed}");
    for (name, size) in listing {
        println!("file {size} {name}");
    }
}

/// The files of the state folder and their sizes, by name.
fn state_files(dir: &Path) -> Vec<(String, u64)> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", dir.display())));
    let mut listing: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok().filter(|m| m.is_file())?;
            Some((entry.file_name().to_string_lossy().into_owned(), meta.len()))
        })
        .collect();
    listing.sort();
    listing
}

fn published(emu: &Emulator, f: usize) -> bool {
    emu.asset(&key(f)).and_then(|a| a.checksum).is_some()
}

/// Whether the store holds nothing in flight and the run of `last` is in the history.
async fn recorded(state: &StateStore, last: &str) -> bool {
    let idle = matches!(state.inflight().await, Ok(v) if v.is_empty())
        && matches!(state.creating().await, Ok(v) if v.is_empty());
    idle && state
        .history()
        .await
        .is_ok_and(|h| h.values().flatten().any(|r| r.asset == last))
}

fn fail(message: &str) -> ! {
    eprintln!("state_store bench: {message}");
    std::process::exit(1);
}
