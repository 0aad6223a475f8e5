//! Failover and fencing with real daemons: a member killed mid-upload, one cut from PostgreSQL
//! alone, one paused past its lease. Each test: a PostgreSQL of its own, the emulator in the
//! test, two members (`m1` uploads, `m2` stands by), a 24 MiB file sent in 5 MiB parts at a
//! 2 MB/s limit of the job's own (paced at the sender, as a real limit is: a cancelled part
//! leaves little in flight). The job fires once (`catch_up` of a yearly schedule), so every
//! upload seen belongs to that one fire.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fixtures::*;
use stac_uploadd_emulator::{AssetKey, Emulator, PartRecord, UploadState};

fn key() -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", "big.zip")
}

/// The members' job: the big file, once.
fn jobs(file: &Path) -> impl FnOnce(JobFile) -> JobFile + '_ {
    move |j| {
        j.defaults(
            "part_size = \"5MiB\"\nparallel = 2\npolicy = \"cancel\"\nbandwidth_limit = \"2MB/s\"",
        )
        .cron("nightly", "big.zip", file, "0 0 0 1 1 *")
        .lines("catch_up = true")
    }
}

struct Setup {
    pg: Postgres,
    emu: Emulator,
    dir: tempfile::TempDir,
    file: PathBuf,
    sha: String,
}

async fn setup() -> Setup {
    let pg = Postgres::start().await;
    let emu = basic_emulator().await;
    emu.create_asset(&key(), "application/zip").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.zip");
    let sha = write_file(&file, 24 * MIB, 11);
    Setup {
        pg,
        emu,
        dir,
        file,
        sha,
    }
}

impl Setup {
    fn config(&self, name: &str) -> PathBuf {
        member_config(
            self.dir.path(),
            name,
            &self.emu.base_url(),
            jobs(&self.file),
        )
    }

    /// Starts `m1` (database at `m1_db`) and waits until its upload has a part stored, then
    /// `m2`, and waits until it holds its lease: m1 uploads, m2 stands by.
    async fn two_members(&self, m1_db: &str) -> (Member, Member, String) {
        let m1 = start_member("m1", &self.config("m1"), m1_db).await;
        wait_for(
            Duration::from_secs(60),
            "m1's upload to store a part",
            || {
                self.emu
                    .uploads(&key())
                    .iter()
                    .any(|u| u.status == UploadState::InProgress && u.parts_received >= 1)
            },
        )
        .await;
        let id = self.emu.uploads(&key())[0].id.clone();
        let m2 = start_member("m2", &self.config("m2"), &self.pg.url()).await;
        joined(&m2).await;
        (m1, m2, id)
    }

    /// Waits until the asset holds the file, by one upload (`id`): the fire ran once.
    async fn completed_by(&self, id: &str, members: &[&Member]) {
        let done = || {
            self.emu
                .uploads(&key())
                .iter()
                .any(|u| u.status == UploadState::Completed)
        };
        wait_showing(
            Duration::from_secs(120),
            "the asset to be completed",
            members,
            done,
        )
        .await;
        assert_eq!(
            self.emu.object_sha256_hex(&key()).as_deref(),
            Some(self.sha.as_str()),
            "the asset holds the file"
        );
        let uploads = self.emu.uploads(&key());
        let completed: Vec<&str> = uploads
            .iter()
            .filter(|u| u.status == UploadState::Completed)
            .map(|u| u.id.as_str())
            .collect();
        assert_eq!(completed, [id], "one upload completed, the fire's");
        wait_for(Duration::from_secs(30), "nothing in progress", || {
            self.emu.in_progress_uploads().is_empty()
        })
        .await;
    }
}

/// Parts `name` started sending after `t`.
fn started_after(log: &[PartRecord], name: &str, t: Instant) -> Vec<PartRecord> {
    let agent = agent_of(name);
    log.iter()
        .filter(|p| p.user_agent.as_deref() == Some(agent.as_str()) && p.start > t)
        .cloned()
        .collect()
}

/// m1 killed in the middle of its multi-part upload: m2 takes it over once m1's lease lapses
/// and resumes the same upload id; the asset holds the file, nothing is left in progress, the
/// fire ran once (one create, one completed upload), and never two senders at once.
#[tokio::test]
async fn a_member_killed_mid_upload_is_taken_over_and_its_upload_resumed() {
    let s = setup().await;
    let (mut m1, m2, id) = s.two_members(&s.pg.url()).await;
    // The series the cluster alerts read (deploy/prometheus/alerts.yaml), from a real member.
    let mut seen = None;
    for _ in 0..100 {
        let samples = scrape(m2.addr).await;
        let members = value(&samples, "stac_uploadd_cluster_members", &[]);
        if members == Some(2.0) {
            seen = Some(samples);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let samples = seen.expect("m2 never counted two live members");
    assert_eq!(
        value(&samples, "stac_uploadd_cluster_expected_members", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, "stac_uploadd_cluster_lease_held", &[]),
        Some(1.0)
    );
    // `uploads` shows m1's upload as being sent by m1, never as stale.
    let listed = m2.command(&["uploads"], &s.pg.url()).await;
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(
        listed
            .stdout
            .contains(&format!("{id}  ch.test.collection/item-1/big.zip"))
            && listed
                .stdout
                .contains("held by cluster member m1, whose lease is live"),
        "{}",
        listed.stdout
    );
    let killed = Instant::now();
    signal(&m1.child, libc::SIGKILL);
    m1.child.wait().await.unwrap();

    s.completed_by(&id, &[&m1, &m2]).await;
    assert!(m2.logged("took over the work of lapsed instances"));
    assert!(m2.logged("resumed upload completed"));
    assert_eq!(
        s.emu.uploads(&key()).len(),
        1,
        "one create: the fire ran once"
    );
    let log = s.emu.part_log();
    assert_no_overlapping_senders(&log);
    let resumed = started_after(&log, "m2", killed);
    let first = resumed
        .iter()
        .map(|p| p.start)
        .min()
        .expect("m2 sent parts");
    assert!(
        resumed.iter().all(|p| p.upload_id == id),
        "the same upload id"
    );
    // `status` reads the cluster: the members and their leases, and which member ran each run.
    // The history is written every few seconds: asked until the run is there.
    let mut out: Out;
    let mut asked = 0;
    loop {
        out = m2.command(&["status"], &s.pg.url()).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        asked += 1;
        if out.stdout.contains("[m2]") || asked == 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        out.stdout
            .contains("cluster: 1 live member(s) (expected 2)"),
        "{}",
        out.stdout
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("m1 ") && l.contains("lapsed")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("resumed") && l.contains("[m2]")),
        "{}",
        out.stdout
    );
    // Figures for the note; the bench measures the median (benches/cluster.rs).
    eprintln!(
        "failover: the kill to m2's first part in {} ms (lease 3 s, heartbeat 500 ms)",
        (first - killed).as_millis()
    );
}

/// m1 cut from PostgreSQL alone (through a proxy that stops forwarding; the STAC server still
/// reachable): it stops its upload and aborts it before its lease can lapse; m2 takes the work
/// over and runs the fire again; the emulator never sees both sending at once.
#[tokio::test]
async fn a_member_cut_from_postgres_aborts_before_its_lease_lapses() {
    let s = setup().await;
    let proxy = TcpProxy::start(([127, 0, 0, 1], s.pg.port()).into()).await;
    let via_proxy = s.pg.url().replace(
        &format!(":{}/", s.pg.port()),
        &format!(":{}/", proxy.port()),
    );
    let (m1, m2, first) = s.two_members(&via_proxy).await;
    let cut = Instant::now();
    proxy.cut();

    wait_for(Duration::from_secs(30), "m1 to stop its work", || {
        m1.logged("the lease was not renewed in time")
    })
    .await;
    wait_for(Duration::from_secs(30), "m1's upload to be aborted", || {
        s.emu
            .uploads(&key())
            .iter()
            .any(|u| u.id == first && u.status == UploadState::Aborted)
    })
    .await;
    let aborted_in = cut.elapsed();
    wait_for(Duration::from_secs(60), "m2 to take over", || {
        m2.logged("took over the work of lapsed instances")
    })
    .await;
    assert!(
        !m2.logged("resumed upload completed"),
        "m1 aborted its upload: nothing to resume"
    );
    let second = {
        let mut found = None;
        wait_for(
            Duration::from_secs(60),
            "m2 to upload the fire again",
            || {
                found = s
                    .emu
                    .uploads(&key())
                    .into_iter()
                    .find(|u| u.id != first)
                    .map(|u| u.id);
                found.is_some()
            },
        )
        .await;
        found.unwrap()
    };
    s.completed_by(&second, &[&m1, &m2]).await;
    let log = s.emu.part_log();
    assert_no_overlapping_senders(&log);
    let m1_last = log
        .iter()
        .filter(|p| p.user_agent.as_deref() == Some(agent_of("m1").as_str()))
        .map(|p| p.end)
        .max()
        .unwrap();
    let m2_first = started_after(&log, "m2", cut)
        .iter()
        .map(|p| p.start)
        .min()
        .expect("m2 sent parts");
    assert!(m1_last < m2_first, "m1 had stopped before m2 began");
    assert!(
        aborted_in < Duration::from_secs(3),
        "aborted {} ms after the cut: within the 3 s lease",
        aborted_in.as_millis()
    );
}

/// m1 paused (SIGSTOP) past its lease while uploading, then woken: m2 has taken its upload over
/// meanwhile; m1 finds its lease lost, sends no part (none starts after it wakes) and no abort,
/// and joins again; the asset holds the file, uploaded by the one upload of the one fire.
#[tokio::test]
async fn a_member_paused_past_its_lease_sends_nothing_when_it_wakes() {
    let s = setup().await;
    let (mut m1, m2, id) = s.two_members(&s.pg.url()).await;
    signal(&m1.child, libc::SIGSTOP);
    wait_for(Duration::from_secs(60), "m2 to take over", || {
        m2.logged("took over the work of lapsed instances")
    })
    .await;
    wait_for(Duration::from_secs(60), "m2 to send a part", || {
        !started_after(
            &s.emu.part_log(),
            "m2",
            Instant::now() - Duration::from_secs(600),
        )
        .is_empty()
    })
    .await;
    let woken = Instant::now();
    signal(&m1.child, libc::SIGCONT);
    wait_for(Duration::from_secs(30), "m1 to find its lease lost", || {
        m1.logged("the lease is lost")
    })
    .await;
    s.completed_by(&id, &[&m1, &m2]).await;
    assert!(
        started_after(&s.emu.part_log(), "m1", woken).is_empty(),
        "m1 started a part after it woke"
    );
    assert_eq!(
        s.emu.call_count(stac_uploadd_emulator::CallKind::Abort),
        0,
        "nobody aborted: m1 left the upload to m2"
    );
    assert_eq!(
        s.emu.uploads(&key()).len(),
        1,
        "one create: the fire ran once"
    );
    wait_for(Duration::from_secs(30), "m1 to join again", || {
        m1.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("joined the cluster"))
            .count()
            >= 2
    })
    .await;
    let _ = terminate(&mut m1.child).await;
}

/// PostgreSQL unreachable at start: the member retries, says so in its log, answers `/readyz`
/// 503 and runs nothing; once the database answers it joins and becomes ready.
#[tokio::test]
async fn a_member_that_cannot_reach_postgres_at_start_retries_and_is_not_ready() {
    let s = setup().await;
    let proxy = TcpProxy::start(([127, 0, 0, 1], s.pg.port()).into()).await;
    proxy.cut();
    let via_proxy = s.pg.url().replace(
        &format!(":{}/", s.pg.port()),
        &format!(":{}/", proxy.port()),
    );
    let mut m1 = start_member("m1", &s.config("m1"), &via_proxy).await;
    wait_for(Duration::from_secs(30), "a failed attempt", || {
        m1.logged("cannot open the cluster's database")
    })
    .await;
    let (status, body) = get(m1.addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(s.emu.uploads(&key()).is_empty(), "nothing ran");
    proxy.restore();
    joined(&m1).await;
    let mut ready = false;
    for _ in 0..200 {
        if get(m1.addr, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "{}", m1.log_text());
    let _ = terminate(&mut m1.child).await;
}

/// Two members watching one folder (shared storage): each file dropped there is published once,
/// by one of them (one upload per asset), and each member's claims lost are the other's won.
#[tokio::test]
async fn a_watched_folder_shared_by_two_members_publishes_each_file_once() {
    let pg = Postgres::start().await;
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let watch = |j: JobFile| {
        j.defaults(FAST_RETRIES)
            .watch("drops", "{name}", &incoming, "*.zip")
            .lines(ZIP_SETTLED)
    };
    let m1_config = member_config(dir.path(), "m1", &emu.base_url(), watch);
    let m2_config = member_config(dir.path(), "m2", &emu.base_url(), watch);
    let m1 = start_member("m1", &m1_config, &pg.url()).await;
    let m2 = start_member("m2", &m2_config, &pg.url()).await;
    joined(&m1).await;
    joined(&m2).await;
    let names: Vec<String> = (0..8).map(|n| format!("f{n}.zip")).collect();
    let key = |name: &str| AssetKey::item_asset("ch.test.collection", "item-1", name);
    for name in &names {
        emu.create_asset(&key(name), "application/zip").unwrap();
    }
    let mut shas = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let tmp = incoming.join(format!(".{name}.part"));
        shas.push(write_file(&tmp, 200_000, n as u64));
        std::fs::rename(&tmp, incoming.join(name)).unwrap();
    }
    let published = || {
        names
            .iter()
            .zip(&shas)
            .all(|(n, sha)| emu.object_sha256_hex(&key(n)).as_deref() == Some(sha.as_str()))
    };
    wait_showing(
        Duration::from_secs(60),
        "every file published",
        &[&m1, &m2],
        published,
    )
    .await;
    for name in &names {
        assert_eq!(emu.uploads(&key(name)).len(), 1, "{name}: published once");
    }
    let won = |m: &Member| {
        m.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"claimed\""))
            .count()
    };
    assert_eq!(
        won(&m1) + won(&m2),
        names.len(),
        "each file claimed once:\n{}\n{}",
        m1.log_text(),
        m2.log_text()
    );
    assert_eq!(
        pg.query_i64("SELECT COUNT(*) FROM claims WHERE job = 'drops'")
            .await,
        names.len() as i64
    );
    assert_no_overlapping_senders(&emu.part_log());
}
