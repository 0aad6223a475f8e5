//! The cluster on PostgreSQL, measured with real daemon processes against the emulator running in
//! this process and a throw-away PostgreSQL server (benches/support/pg.rs):
//!
//! - `failover`: two members, a 24 MiB upload in 5 MiB parts at 2 MB/s; the sender is SIGKILLed
//!   once the other has joined, and the time from the kill to the survivor's first part PUT (the
//!   emulator's part log, told apart by User-Agent) is taken, `FAILOVER_RUNS` times (default 10)
//!   for the default lease (10 s, heartbeat 2 s) and the tests' (3 s, 500 ms): min, median, max.
//! - `jobs`: `CLUSTER_JOBS` cron jobs (default 1,000) firing every 5 s (spread over the five
//!   seconds), each a small unchanged file, for `CLUSTER_SECONDS` (default 60) on 3 members,
//!   then the same jobs on one daemon with its embedded SQLite store: PostgreSQL's committed
//!   transactions per second and CPU (its whole process tree, % of one core), and the schedule
//!   lateness p99 of all the daemons' jobs (`stac_uploadd_schedule_lateness_seconds`).
//!
//! `cargo bench --bench cluster` (`CLUSTER_CASES="failover jobs"` by default). It exits non-zero
//! when a case could not be measured.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stac_uploadd_emulator::{AssetKey, Emulator, EmulatorConfig, UploadState};

#[path = "support/pg.rs"]
mod pg;
// The bench reads settings only, not its own /proc figures.
#[allow(dead_code)]
#[path = "support/proc.rs"]
mod proc;

use pg::Postgres;
use proc::env_or;

const BIN: &str = env!("CARGO_BIN_EXE_stac-uploadd");
const COLLECTION: &str = "ch.bench";
const ITEM: &str = "cluster";
const DB_ENV: &str = "STAC_UPLOADD_DATABASE_URL";
/// The lateness histogram every daemon exports (src/observe/metrics.rs, `LATENESS`).
const LATENESS: &str = "stac_uploadd_schedule_lateness_seconds";

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: run with `cargo bench --bench cluster` (CLUSTER_CASES)");
        return ExitCode::SUCCESS;
    }
    let cases = std::env::var("CLUSTER_CASES").unwrap_or_else(|_| "failover jobs".to_owned());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster bench: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("machine: {} cores, {}", nproc(), load());
    println!();
    for case in cases.split_whitespace() {
        let done = match case {
            "failover" => rt.block_on(failover()),
            "jobs" => rt.block_on(jobs()),
            other => Err(anyhow::anyhow!("unknown case {other} (failover, jobs)")),
        };
        if let Err(e) = done {
            eprintln!("cluster bench, case {case}: {e:#}");
            return ExitCode::FAILURE;
        }
        println!();
    }
    ExitCode::SUCCESS
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The load averages, as `uptime` shows them.
fn load() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<&str> = l.split_whitespace().take(3).collect();
    format!("load average {}", v.join(" "))
}

/// One daemon process: its child, its observe address, its log file.
struct Daemon {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Daemon {
    /// Starts `run` on `config` (its log at `log` level to `dir/NAME.log`), `db` in the
    /// environment, and waits until `/metrics` answers.
    async fn start(
        name: &str,
        dir: &Path,
        config: &Path,
        db: Option<&str>,
        log_level: &str,
    ) -> anyhow::Result<Daemon> {
        // The port is chosen here and handed over: reading it from the daemon's log would
        // mean parsing a log kept at warn for the jobs bench.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| log.display().to_string())?;
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["run", "--observe-listen", &addr.to_string(), "--config"])
            .arg(config)
            .env("RUST_LOG", format!("stac_uploadd={log_level}"))
            .env_remove("STAC_UPLOADD_OBSERVE_LISTEN")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        if let Some(db) = db {
            cmd.env(DB_ENV, db);
        }
        let child = cmd.spawn().context("starting the daemon")?;
        let d = Daemon { child, addr, log };
        let until = Instant::now() + Duration::from_secs(60);
        while d.metrics().await.is_err() {
            if Instant::now() > until {
                bail!(
                    "{name} did not serve /metrics within 60 s; its log: {}",
                    d.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(d)
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        let r = reqwest::get(format!("http://{}/metrics", self.addr)).await?;
        Ok(r.error_for_status()?.text().await?)
    }

    fn logged(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(text))
    }

    fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The head of a job file: state folder, server, `defaults`.
fn head(dir: &Path, url: &str, defaults: &str) -> String {
    format!(
        "state_dir = \"{}\"\n[server]\nurl = \"{url}\"\n[defaults]\n{defaults}\n",
        dir.join("state").display()
    )
}

fn cluster_table(name: &str, lease: &str, heartbeat: &str) -> String {
    format!(
        "[cluster]\nurl_env = \"{DB_ENV}\"\ninstance = \"{name}\"\nlease = \"{lease}\"\nheartbeat = \"{heartbeat}\"\n"
    )
}

fn agent_of(name: &str) -> String {
    format!(
        "stac-uploadd/{} (instance {name})",
        env!("CARGO_PKG_VERSION")
    )
}

async fn emulator() -> anyhow::Result<Emulator> {
    Emulator::start("127.0.0.1:0".parse()?, EmulatorConfig::default())
        .await
        .context("starting the emulator")
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    while !f() {
        if Instant::now() > until {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn failover() -> anyhow::Result<()> {
    let runs: usize = env_or("FAILOVER_RUNS", 10);
    let pg = Postgres::start()?;
    println!(
        "failover: 2 members, a 24 MiB file in 5 MiB parts at 2 MB/s (parallel 2), the sender SIGKILLed; from the kill to the survivor's first part PUT, {runs} runs each"
    );
    println!("| lease / heartbeat | min | median | max | runs |");
    println!("| --- | --- | --- | --- | --- |");
    let mut n = 0;
    for (lease, heartbeat) in [("10s", "2s"), ("3s", "500ms")] {
        let mut times = Vec::new();
        for _ in 0..runs {
            n += 1;
            let db = format!("failover{n}");
            pg.create_database(&db).await?;
            let t = failover_once(&pg.url(&db), lease, heartbeat)
                .await
                .with_context(|| format!("run {n} (lease {lease})"))?;
            eprintln!("failover run {n} (lease {lease}): {} ms", t.as_millis());
            times.push(t);
        }
        times.sort();
        let ms = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        println!(
            "| {lease} / {heartbeat} | {} | {} | {} | {} |",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
            times.len()
        );
    }
    Ok(())
}

/// One failover: m1 uploads, m2 joins, m1 is killed; returns the kill to m2's first part.
async fn failover_once(db: &str, lease: &str, heartbeat: &str) -> anyhow::Result<Duration> {
    let work = tempfile::tempdir()?;
    let emu = emulator().await?;
    let key = AssetKey::item_asset(COLLECTION, ITEM, "big.zip");
    emu.create_asset(&key, "application/zip")
        .map_err(anyhow::Error::msg)?;
    let file = work.path().join("big.zip");
    let mut bytes = vec![0u8; 24 << 20];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    std::fs::write(&file, bytes)?;
    let config = |name: &str| -> anyhow::Result<PathBuf> {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let text = format!(
            "{}[[job]]\nname = \"big\"\ncollection = \"{COLLECTION}\"\nitem = \"{ITEM}\"\nasset = \"big.zip\"\nfile = \"{}\"\nschedule = \"0 0 0 1 1 *\"\ncatch_up = true\n{}",
            head(
                &dir,
                &emu.base_url(),
                "part_size = \"5MiB\"\nparallel = 2\npolicy = \"cancel\"\nbandwidth_limit = \"2MB/s\""
            ),
            file.display(),
            cluster_table(name, lease, heartbeat)
        );
        let path = dir.join("jobs.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let mut m1 = Daemon::start("m1", work.path(), &config("m1")?, Some(db), "info").await?;
    wait_until(
        "m1's upload to store a part",
        Duration::from_secs(60),
        || {
            emu.uploads(&key)
                .iter()
                .any(|u| u.status == UploadState::InProgress && u.parts_received >= 1)
        },
    )
    .await?;
    let mut m2 = Daemon::start("m2", work.path(), &config("m2")?, Some(db), "info").await?;
    wait_until("m2 to join", Duration::from_secs(60), || {
        m2.logged("joined the cluster")
    })
    .await?;
    let killed = Instant::now();
    m1.kill();
    m1.child.wait().await?;
    let agent = agent_of("m2");
    let mut first = None;
    wait_until("m2 to send a part", Duration::from_secs(120), || {
        first = emu
            .part_log()
            .iter()
            .filter(|p| p.user_agent.as_deref() == Some(agent.as_str()) && p.start > killed)
            .map(|p| p.start)
            .min();
        first.is_some()
    })
    .await
    .with_context(|| format!("logs in {}", work.path().display()))?;
    m2.kill();
    m2.child.wait().await?;
    Ok(first.expect("found") - killed)
}

async fn jobs() -> anyhow::Result<()> {
    let jobs: usize = env_or("CLUSTER_JOBS", 1000);
    let seconds: u64 = env_or("CLUSTER_SECONDS", 60);
    println!(
        "jobs: {jobs} cron jobs every 5 s (spread over the 5 s), each a 1 KiB file unchanged after its first upload, measured for {seconds} s after a 10 s warm-up"
    );
    println!(
        "| setting | PostgreSQL transactions/s | PostgreSQL CPU (% of a core) | runs/s | lateness p99 |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for members in [3usize, 1] {
        let row = jobs_case(jobs, seconds, members).await?;
        println!("{row}");
    }
    Ok(())
}

/// `members` daemons (1: no cluster, the embedded store) running the jobs; returns a table row.
async fn jobs_case(jobs: usize, seconds: u64, members: usize) -> anyhow::Result<String> {
    let work = tempfile::tempdir()?;
    let emu = emulator().await?;
    let files = work.path().join("files");
    std::fs::create_dir(&files)?;
    let mut job_text = String::new();
    for j in 0..jobs {
        let name = format!("j{j:04}.txt");
        emu.create_asset(&AssetKey::item_asset(COLLECTION, ITEM, &name), "text/plain")
            .map_err(anyhow::Error::msg)?;
        let file = files.join(&name);
        std::fs::write(&file, format!("{name}\n").repeat(64))?;
        job_text.push_str(&format!(
            "[[job]]\nname = \"j{j:04}\"\ncollection = \"{COLLECTION}\"\nitem = \"{ITEM}\"\nasset = \"{name}\"\nfile = \"{}\"\nschedule = \"{}-59/5 * * * * *\"\n",
            file.display(),
            j % 5
        ));
    }
    let pg = if members > 1 {
        let pg = Postgres::start()?;
        pg.create_database("stac").await?;
        Some(pg)
    } else {
        None
    };
    let db = pg.as_ref().map(|p| p.url("stac"));
    let mut daemons = Vec::new();
    for m in 0..members {
        let name = format!("m{m}");
        let dir = work.path().join(&name);
        std::fs::create_dir_all(&dir)?;
        let mut text = head(&dir, &emu.base_url(), "");
        text.push_str(&job_text);
        if members > 1 {
            text.push_str(&cluster_table(&name, "10s", "2s"));
        }
        let config = dir.join("jobs.toml");
        std::fs::write(&config, text)?;
        daemons.push(Daemon::start(&name, work.path(), &config, db.as_deref(), "warn").await?);
    }
    // The first fires upload every file; the measure starts once they are behind.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = lateness(&daemons).await?;
    let xact0 = match &pg {
        Some(p) => Some((p.xact_commit("stac").await?, p.cpu_seconds()?)),
        None => None,
    };
    let runs0 = runs(&daemons).await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = t0.elapsed().as_secs_f64();
    let after = lateness(&daemons).await?;
    let runs1 = runs(&daemons).await?;
    let pg_figures = match (&pg, xact0) {
        (Some(p), Some((x0, c0))) => {
            // The statistics of the last second reach pg_stat_database within one.
            let (x1, c1) = (p.xact_commit("stac").await?, p.cpu_seconds()?);
            (
                format!("{:.0}", (x1 - x0) as f64 / wall),
                format!("{:.0} %", (c1 - c0) / wall * 100.0),
            )
        }
        _ => ("- (SQLite)".to_owned(), "-".to_owned()),
    };
    for d in &mut daemons {
        d.kill();
        d.child.wait().await?;
    }
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            (
                *le,
                n - before
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, b)| *b),
            )
        })
        .collect();
    Ok(format!(
        "| {} | {} | {} | {:.1} | {} |",
        if members > 1 {
            format!("cluster, {members} members (lease 10 s)")
        } else {
            "one daemon, embedded SQLite".to_owned()
        },
        pg_figures.0,
        pg_figures.1,
        (runs1 - runs0) / wall,
        p99(&delta)
    ))
}

/// The lateness histogram summed over every job of every daemon: (upper bound, cumulative count).
async fn lateness(daemons: &[Daemon]) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for d in daemons {
        let text = d.metrics().await?;
        for line in text.lines() {
            let Some(rest) = line
                .strip_prefix(LATENESS)
                .and_then(|r| r.strip_prefix("_bucket{"))
            else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Some(le) = labels
                .split("le=\"")
                .nth(1)
                .and_then(|l| l.split('"').next())
            else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            let value: f64 = value.trim().parse()?;
            match buckets.iter_mut().find(|(l, _)| *l == le) {
                Some(b) => b.1 += value,
                None => buckets.push((le, value)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(buckets)
}

/// The runs the daemons finished, from their `stac_uploadd_runs_total` counters.
async fn runs(daemons: &[Daemon]) -> anyhow::Result<f64> {
    let mut n = 0.0;
    for d in daemons {
        for line in d.metrics().await?.lines() {
            if line.starts_with("stac_uploadd_runs_total{") {
                n += line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    Ok(n)
}

/// The upper bound of the bucket holding the 99th percentile.
fn p99(buckets: &[(f64, f64)]) -> String {
    let Some(&(_, total)) = buckets.last() else {
        return "no fire".to_owned();
    };
    if total <= 0.0 {
        return "no fire".to_owned();
    }
    let (le, _) = buckets
        .iter()
        .find(|(_, n)| *n >= 0.99 * total)
        .copied()
        .unwrap_or((f64::INFINITY, total));
    if le.is_infinite() {
        let last = buckets.iter().rev().nth(1).map_or(0.0, |b| b.0);
        format!("> {last} s ({total:.0} fires)")
    } else {
        format!("<= {le} s ({total:.0} fires)")
    }
}
