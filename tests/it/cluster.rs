//! The cluster at work with real daemons: three members sharing cron jobs that fire every 2 s,
//! each fire run once; PostgreSQL stopped for 30 s under them; a rolling restart. Each test has
//! its own PostgreSQL, the emulator in the test and three daemon processes (lease 3 s, heartbeat
//! 500 ms, see [`member_config`]).
//!
//! What a fire is and who ran it is read from three records that do not depend on each other:
//! the `claims` table (one row per fire, by primary key: the fire's nominal time and the member
//! that claimed it), the run history (one row per run and the member that ran it; the store keeps
//! only the last 20 runs of a job, so the tests read it every second while the jobs fire and
//! keep every row they saw), and the emulator's reads of each asset (a run reads its asset once,
//! at its start, whichever member runs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, Row as _};

use crate::fixtures::*;
use stac_uploadd_emulator::{AssetKey, Emulator, UploadState};

const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];
/// The period of the cron jobs.
const EVERY_2_S: &str = "*/2 * * * * *";

fn asset(job: &str) -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", &format!("{job}.zip"))
}

/// One claimed fire, as the `claims` table has it.
#[derive(Debug, Clone)]
struct Fire {
    job: String,
    at: DateTime<Utc>,
    instance: String,
    finished: bool,
    retaken: i64,
}

/// A PostgreSQL connection, or why not (the tests read while the server may be down).
async fn connect(pg: &Postgres) -> Result<sqlx::PgConnection, String> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::PgConnection::connect(&pg.url()),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connecting to {}: {e}", pg.url())),
        Err(_) => Err(format!("connecting to {}: no answer in 10 s", pg.url())),
    }
}

/// Every claim of a fire.
async fn fires(pg: &Postgres) -> Vec<Fire> {
    let mut conn = connect(pg).await.unwrap();
    let rows = sqlx::query(
        "SELECT job, work, instance, finished_ms IS NOT NULL AS finished, retaken FROM claims \
         WHERE work LIKE 'fire %' ORDER BY job, work",
    )
    .fetch_all(&mut conn)
    .await
    .expect("the claims are read");
    let _ = conn.close().await;
    rows.iter()
        .map(|r| {
            let work: String = r.get("work");
            Fire {
                job: r.get("job"),
                at: stac_uploadd::cluster::fire_of(&work)
                    .unwrap_or_else(|| panic!("a fire's claim names its time: {work:?}")),
                instance: r.get("instance"),
                finished: r.get("finished"),
                retaken: r.get("retaken"),
            }
        })
        .collect()
}

/// The runs the history showed, every row ever seen: (job, seq) -> the member that ran it.
#[derive(Default)]
struct Runs(BTreeMap<(String, i64), String>);

impl Runs {
    /// Reads the history's rows now; a database that does not answer is skipped (it holds the
    /// rows until it answers again).
    async fn read(&mut self, pg: &Postgres) {
        let Ok(mut conn) = connect(pg).await else {
            return;
        };
        let rows = sqlx::query("SELECT job, seq, instance FROM runs")
            .fetch_all(&mut conn)
            .await;
        let _ = conn.close().await;
        for r in rows.into_iter().flatten() {
            self.0.insert(
                (r.get("job"), r.get("seq")),
                r.get::<Option<String>, _>("instance")
                    .unwrap_or_else(|| "(none)".to_owned()),
            );
        }
    }

    /// How many runs `job` had, by member.
    fn of(&self, job: &str) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for ((j, _), instance) in &self.0 {
            if j == job {
                *out.entry(instance.as_str()).or_default() += 1;
            }
        }
        out
    }

    /// Whether no sequence number of `job` is missing between its first and last: the tests saw
    /// every run of the job (none pruned between two reads).
    fn complete(&self, job: &str) -> bool {
        let seqs: Vec<i64> = self
            .0
            .keys()
            .filter(|(j, _)| j == job)
            .map(|(_, s)| *s)
            .collect();
        seqs.windows(2).all(|w| w[1] == w[0] + 1)
    }
}

/// A cluster of three members with `jobs` cron jobs, each sending a small file of its own to
/// an asset of its own.
struct Cluster {
    pg: Postgres,
    emu: Emulator,
    dir: tempfile::TempDir,
    jobs: Vec<String>,
    members: Vec<Member>,
    /// Members stopped for good, kept for their logs.
    retired: Vec<Member>,
}

impl Cluster {
    async fn new(n_jobs: usize) -> Cluster {
        let pg = Postgres::start().await;
        let emu = basic_emulator().await;
        let dir = tempfile::tempdir().unwrap();
        let jobs: Vec<String> = (0..n_jobs).map(|i| format!("every2s-{i}")).collect();
        for job in &jobs {
            emu.create_asset(&asset(job), "application/zip").unwrap();
            write_file(&dir.path().join(format!("{job}.zip")), 4096, 7);
        }
        Cluster {
            pg,
            emu,
            dir,
            jobs,
            members: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// Member `name`'s job file: `[defaults]` with `defaults` (unless empty), the cron jobs,
    /// `extra` lines after each (e.g. `catch_up`), and `more` jobs.
    fn config(
        &self,
        name: &str,
        defaults: &str,
        extra: &str,
        more: impl FnOnce(JobFile) -> JobFile,
    ) -> PathBuf {
        let files: Vec<(String, PathBuf)> = self
            .jobs
            .iter()
            .map(|j| (j.clone(), self.dir.path().join(format!("{j}.zip"))))
            .collect();
        let (defaults, extra) = (defaults.to_owned(), extra.to_owned());
        member_config(self.dir.path(), name, &self.emu.base_url(), move |mut f| {
            if !defaults.is_empty() {
                f = f.defaults(&defaults);
            }
            for (job, file) in &files {
                f = f
                    .cron(job, &format!("{job}.zip"), file, EVERY_2_S)
                    .lines(&extra);
            }
            more(f)
        })
    }

    /// Starts the three members on `configs` and waits until each has joined.
    async fn start(&mut self, configs: &[PathBuf]) {
        for (name, config) in MEMBERS.iter().zip(configs) {
            self.members
                .push(start_member(name, config, &self.pg.url()).await);
        }
        for m in &self.members {
            joined(m).await;
        }
    }

    /// Lets the jobs fire for `d`, reading the run history every second meanwhile.
    async fn fire_for(&self, d: Duration, runs: &mut Runs) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            runs.read(&self.pg).await;
            // Time passing in the scenario, not a synchronisation.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Stops every member (SIGTERM: the runs they hold end and are written), then reads the
    /// history once more.
    async fn stop_all(&mut self, runs: &mut Runs) {
        for m in &mut self.members {
            let status = terminate(&mut m.child).await;
            assert!(status.success(), "{} stopped with {status}", m.name);
        }
        runs.read(&self.pg).await;
    }

    fn logs(&self) -> String {
        self.retired
            .iter()
            .chain(&self.members)
            .map(|m| format!("--- {}\n{}", m.name, m.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What the three records say of one job's fires.
struct Tally {
    claimed: usize,
    finished: usize,
    runs: usize,
    reads: usize,
}

/// Each fire of each job ran once: per job, when `undisturbed` (no outage), the fires claimed
/// between the first and the last are every 2 s (none lost) and at most the last one is
/// unfinished (the members stopped); always, the runs of the history and the asset's reads number the fires claimed (a
/// fire run twice makes one more of each; a fire lost between claim and run one less). When no
/// claim was retaken, the same holds member by member: the member that claimed a fire ran it.
/// Returns the members that ran anything.
fn assert_each_fire_once(
    c: &Cluster,
    fires: &[Fire],
    runs: &Runs,
    undisturbed: bool,
) -> BTreeSet<String> {
    let mut ran_by = BTreeSet::new();
    let mut problems = Vec::new();
    for job in &c.jobs {
        let mine: Vec<&Fire> = fires.iter().filter(|f| &f.job == job).collect();
        if mine.is_empty() {
            problems.push(format!("{job}: no fire claimed"));
            continue;
        }
        if undisturbed {
            for w in mine.windows(2) {
                if w[1].at - w[0].at != chrono::Duration::seconds(2) {
                    problems.push(format!(
                        "{job}: no fire between {} and {}",
                        w[0].at, w[1].at
                    ));
                }
            }
        }
        let unfinished: Vec<DateTime<Utc>> =
            mine.iter().filter(|f| !f.finished).map(|f| f.at).collect();
        if undisturbed
            && (unfinished.len() > 1
                || unfinished
                    .first()
                    .is_some_and(|at| *at != mine.last().unwrap().at))
        {
            problems.push(format!("{job}: fires never finished: {unfinished:?}"));
        }
        let t = Tally {
            claimed: mine.len(),
            finished: mine.len() - unfinished.len(),
            runs: runs.of(job).values().sum(),
            reads: c.emu.asset_reads(&asset(job)).len(),
        };
        if !runs.complete(job) {
            problems.push(format!(
                "{job}: the history lost runs between two reads: {:?}",
                runs.of(job)
            ));
        }
        for (what, n) in [
            ("runs in the history", t.runs),
            ("reads of the asset", t.reads),
        ] {
            if n < t.finished || n > t.claimed {
                problems.push(format!(
                    "{job}: {n} {what} for {} fires claimed ({} finished)",
                    t.claimed, t.finished
                ));
            }
        }
        if mine.iter().all(|f| f.retaken == 0) {
            let by = runs.of(job);
            for m in MEMBERS {
                let claimed = mine.iter().filter(|f| f.instance == m).count();
                let finished = mine
                    .iter()
                    .filter(|f| f.instance == m && f.finished)
                    .count();
                let ran = by.get(m).copied().unwrap_or(0);
                if ran < finished || ran > claimed {
                    problems.push(format!(
                        "{job}: {m} ran {ran} times, claimed {claimed} fires ({finished} finished)"
                    ));
                }
            }
        }
        ran_by.extend(runs.of(job).keys().map(|m| (*m).to_owned()));
    }
    assert!(
        problems.is_empty(),
        "{}\nlogs:\n{}",
        problems.join("\n"),
        c.logs()
    );
    ran_by
}

/// 3 members, 10 jobs firing every 2 s, for 60 s: every fire in the window ran exactly once,
/// and the runs are spread over the members.
#[tokio::test]
async fn three_instances_run_each_fire_once() {
    let mut c = Cluster::new(10).await;
    let configs: Vec<PathBuf> = MEMBERS.iter().map(|m| c.config(m, "", "", |f| f)).collect();
    c.start(&configs).await;
    let mut runs = Runs::default();
    c.fire_for(Duration::from_secs(60), &mut runs).await;
    c.stop_all(&mut runs).await;

    let fires = fires(&c.pg).await;
    assert!(
        fires.len() >= 10 * 20,
        "{} fires claimed in 60 s by 10 jobs firing every 2 s",
        fires.len()
    );
    assert!(
        fires.iter().all(|f| f.retaken == 0),
        "no member lapsed, yet fires were retaken: {:?}",
        fires.iter().filter(|f| f.retaken > 0).collect::<Vec<_>>()
    );
    let ran_by = assert_each_fire_once(&c, &fires, &runs, true);
    assert!(
        ran_by.len() >= 2,
        "the runs were not spread over the members: only {ran_by:?}"
    );
    let per_member: BTreeMap<&str, usize> = MEMBERS
        .iter()
        .map(|m| (*m, fires.iter().filter(|f| f.instance == *m).count()))
        .collect();
    eprintln!("fires claimed per member: {per_member:?}");
}

/// Polls `GET /readyz` of `m` until it answers `status`, for at most `limit`.
async fn readyz_becomes(m: &Member, status: u16, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let (now, body) = get(m.addr, "/readyz").await;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < end,
            "{}: /readyz still answers {now} ({}) after {limit:?}, not {status}",
            m.name,
            body.trim()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PostgreSQL stopped for 30 s under 3 members while one of them sends a 24 MiB file at 2 MB/s
/// (a job firing once, `catch_up`) and 3 jobs fire every 2 s: every member answers `/readyz`
/// 503 while the database is down and 200 after; the upload in flight is aborted, the fire run
/// again once and the asset holds the file; nothing is left in progress; no fire ran twice; the
/// jobs run again after the restart.
#[tokio::test]
async fn postgres_stopped_for_30_s() {
    let mut c = Cluster::new(3).await;
    let big = asset("big");
    c.emu.create_asset(&big, "application/zip").unwrap();
    let big_file = c.dir.path().join("big.zip");
    let sha = write_file(&big_file, 24 * MIB, 11);
    let configs: Vec<PathBuf> = MEMBERS
        .iter()
        .map(|m| {
            c.config(
                m,
                "part_size = \"5MiB\"\nparallel = 2\nbandwidth_limit = \"2MB/s\"",
                "",
                |f| {
                    f.cron("big", "big.zip", &big_file, "0 0 0 1 1 *")
                        .lines("catch_up = true")
                },
            )
        })
        .collect();
    c.start(&configs).await;
    let mut runs = Runs::default();
    wait_for(
        Duration::from_secs(60),
        "the big upload to store a part",
        || {
            c.emu
                .uploads(&big)
                .iter()
                .any(|u| u.status == UploadState::InProgress && u.parts_received >= 1)
        },
    )
    .await;
    runs.read(&c.pg).await;

    let stopped = Instant::now();
    c.pg.stop().await;
    for m in &c.members {
        readyz_becomes(m, 503, Duration::from_secs(30)).await;
    }
    wait_for(
        Duration::from_secs(30),
        "the upload in flight to be stopped while the database is down",
        || c.emu.in_progress_uploads().is_empty(),
    )
    .await;
    // The outage itself: time passing in the scenario.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
    for m in &c.members {
        let (status, body) = get(m.addr, "/readyz").await;
        assert_eq!(
            status, 503,
            "{}: /readyz after 30 s without the database: {body}",
            m.name
        );
    }
    c.pg.start_again().await;
    let restarted = Utc::now();
    for m in &c.members {
        readyz_becomes(m, 200, Duration::from_secs(60)).await;
    }
    c.fire_for(Duration::from_secs(20), &mut runs).await;

    let done = || {
        c.emu
            .uploads(&big)
            .iter()
            .any(|u| u.status == UploadState::Completed)
    };
    for _ in 0..1200 {
        if done() {
            break;
        }
        runs.read(&c.pg).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        done(),
        "the big fire never ran to its end after the outage; uploads {:?}; logs:\n{}",
        c.emu.uploads(&big),
        c.logs()
    );
    assert_eq!(
        c.emu.object_sha256_hex(&big).as_deref(),
        Some(sha.as_str()),
        "the asset holds the file"
    );
    wait_for(Duration::from_secs(60), "nothing in progress", || {
        c.emu.in_progress_uploads().is_empty()
    })
    .await;
    c.stop_all(&mut runs).await;

    let fires = fires(&c.pg).await;
    let big_fires: Vec<&Fire> = fires.iter().filter(|f| f.job == "big").collect();
    assert_eq!(big_fires.len(), 1, "the big job fires once: {big_fires:?}");
    // Which way the fire came back, for the note: taken over by another member, or run again
    // by its own claimer.
    eprintln!(
        "the big fire: {:?}; took over lapsed work: {:?}",
        big_fires[0],
        c.members
            .iter()
            .filter(|m| m.logged("took over the work of lapsed instances"))
            .map(|m| &m.name)
            .collect::<Vec<_>>()
    );
    let completed = c
        .emu
        .uploads(&big)
        .iter()
        .filter(|u| u.status == UploadState::Completed)
        .count();
    assert_eq!(completed, 1, "the big fire completed once");
    assert_no_overlapping_senders(&c.emu.part_log());
    assert_each_fire_once(&c, &fires, &runs, false);
    for job in &c.jobs {
        assert!(
            fires.iter().any(|f| &f.job == job && f.at > restarted),
            "{job} never fired after the database came back; logs:\n{}",
            c.logs()
        );
    }
}

/// 3 members, 5 jobs firing every 2 s with `catch_up`: each member in turn is stopped
/// (SIGTERM: it hands its work over) and started again, the next only once it is back (joined,
/// `/readyz` 200). No fire in the window is lost or doubled.
#[tokio::test]
async fn rolling_restart_loses_and_doubles_no_fire() {
    let mut c = Cluster::new(5).await;
    let configs: Vec<PathBuf> = MEMBERS
        .iter()
        .map(|m| c.config(m, "", "catch_up = true", |f| f))
        .collect();
    c.start(&configs).await;
    let mut runs = Runs::default();
    c.fire_for(Duration::from_secs(10), &mut runs).await;
    for (i, name) in MEMBERS.iter().enumerate() {
        let status = terminate(&mut c.members[i].child).await;
        assert!(
            status.success(),
            "{} stopped with {status}",
            c.members[i].name
        );
        runs.read(&c.pg).await;
        let config = c.members[i].config.clone();
        let again = start_member(name, &config, &c.pg.url()).await;
        joined(&again).await;
        readyz_becomes(&again, 200, Duration::from_secs(60)).await;
        let old = std::mem::replace(&mut c.members[i], again);
        c.retired.push(old);
        c.fire_for(Duration::from_secs(6), &mut runs).await;
    }
    c.stop_all(&mut runs).await;

    let fires = fires(&c.pg).await;
    let ran_by = assert_each_fire_once(&c, &fires, &runs, true);
    eprintln!(
        "{} fires claimed, {} retaken; run by {ran_by:?}",
        fires.len(),
        fires.iter().filter(|f| f.retaken > 0).count()
    );
}
