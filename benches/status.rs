//! The status page at scale: 1,000 jobs with 10,000 runs on record (10 each, one in ten a
//! failure), the board seeded from the state store as the daemon seeds it, then `GET /` and
//! `GET /status.json` over real HTTP on loopback: time to answer (median, p99, max) and the
//! process's resident set before the board was built and after the requests.
//!
//! `cargo bench --bench status` (`STATUS_BENCH_JOBS`, default 1,000; `STATUS_BENCH_REQUESTS`,
//! default 200 per route). Target: under 50 ms per answer on the project's 2-core machine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use stac_upload::UploadOptions;
use stac_uploadd::config::{IdTemplate, JobSpec, PolicySpec};
use stac_uploadd::observe::http::Server;
use stac_uploadd::state::{Outcome, RunRecord, StateStore};
use stac_uploadd::status::{Board, LiveUploads, PageConfig, Slot, StatusPage, router};
use stac_uploadd::trigger::{Schedule, TriggerSpec};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn spec(i: usize, dir: &std::path::Path) -> JobSpec {
    JobSpec {
        name: format!("job-{i:04}"),
        collection: "ch.bench.collection".into(),
        item: Some(IdTemplate::parse("item-%Y-%m-%d").expect("a valid id")),
        asset: IdTemplate::parse(&format!("asset-{i}.zip")).expect("a valid id"),
        trigger: TriggerSpec::Cron {
            file: dir.join(format!("f{i}.zip")),
            schedule: Schedule::parse(&format!("{} * * * *", i % 60), "Europe/Zurich")
                .expect("valid"),
        },
        policy: PolicySpec::default(),
        upload: UploadOptions::default(),
        jitter: None,
        catch_up: false,
        bandwidth_limit: None,
        timezone: chrono_tz::Europe::Zurich,
        item_metadata: None,
        asset_metadata: None,
        alias: None,
        keep: None,
        ping_url: None,
        verify_public: stac_uploadd::config::VerifyPublic::Warn,
        name_pattern: None,

        validate: Default::default(),
        assets: Vec::new(),
        concurrency: 1,
    }
}

fn run(job: usize, k: usize, at: DateTime<Utc>) -> RunRecord {
    let failed = k % 10 == 9;
    RunRecord {
        job: format!("job-{job:04}"),
        started: at,
        finished: at + chrono::Duration::seconds(3),
        outcome: if failed {
            Outcome::Failed
        } else {
            Outcome::Uploaded
        },
        asset: format!("asset-{job}.zip"),
        item: Some(format!("item-{k}")),
        file: Some(format!("/srv/data/job-{job}/file-{k}.zip").into()),
        bytes: 5_000_000 + k as u64,
        attempts: 1,
        upload_id: None,
        error: failed.then(|| "the server answered 502 Bad Gateway three times".to_owned()),
        assets: Vec::new(),
        instance: None,
        error_class: failed.then(|| "server".to_owned()),
        public: Vec::new(),
    }
}

/// Median, p99 and max of `times`, in ms.
fn figures(times: &mut [Duration]) -> (f64, f64, f64) {
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |p: f64| ms(times[((times.len() as f64 * p) as usize).min(times.len() - 1)]);
    (at(0.5), at(0.99), ms(*times.last().expect("some requests")))
}

fn main() {
    let jobs = env("STATUS_BENCH_JOBS", 1000);
    let requests = env("STATUS_BENCH_REQUESTS", 200).max(1);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        let state = Arc::new(StateStore::open(dir.path()).await.expect("state"));
        let t0 = Utc::now() - chrono::Duration::days(1);
        for k in 0..10 {
            for j in 0..jobs {
                let at = t0 + chrono::Duration::seconds((k * jobs + j) as i64);
                state.record_run(run(j, k, at)).await.expect("recorded");
            }
            state.flush().await.expect("flushed");
        }
        let specs: Vec<JobSpec> = (0..jobs).map(|i| spec(i, dir.path())).collect();
        let on_record: usize = state
            .history()
            .await
            .expect("history")
            .values()
            .map(Vec::len)
            .sum();

        let rss_before = status_kib("VmRSS");
        let built = Instant::now();
        let history: BTreeMap<String, Vec<RunRecord>> = state.history().await.expect("history");
        let board = Arc::new(Board::seeded(&history, Arc::new(LiveUploads::default()), Utc::now()));
        drop(history);
        let seeded = built.elapsed();
        let server_url = url::Url::parse("https://data.geo.admin.ch/api/stac/v1").expect("a URL");
        let slot: Slot = Arc::default();
        let _ = slot.set(Arc::new(StatusPage::new(
            board,
            state.clone(),
            PageConfig::new(specs, &server_url),
        )));
        let server = Server::start("127.0.0.1:0".parse().expect("an address"), router(slot))
            .await
            .expect("the listener");
        let rss_board = status_kib("VmRSS");
        let client = reqwest::Client::new();
        println!(
            "status page bench: {jobs} jobs, {on_record} runs on record, {requests} requests per route (sequential, one keep-alive connection)"
        );
        println!("board seeded from the store in {:.1} ms", seeded.as_secs_f64() * 1000.0);
        for path in ["/", "/status.json"] {
            let url = format!("http://{}{path}", server.addr());
            let mut times = Vec::with_capacity(requests);
            let mut size = 0;
            for _ in 0..requests {
                let t = Instant::now();
                let r = client.get(&url).send().await.expect("an answer");
                assert_eq!(r.status(), 200);
                size = r.bytes().await.expect("a body").len();
                times.push(t.elapsed());
            }
            let (p50, p99, max) = figures(&mut times);
            println!(
                "GET {path:<13} {size:>9} bytes   median {p50:6.1} ms   p99 {p99:6.1} ms   max {max:6.1} ms{}",
                if p99 < 50.0 { "" } else { "   (over the 50 ms target)" }
            );
        }
        let rss_after = status_kib("VmRSS");
        println!(
            "RSS: {} MiB before the board, {} MiB with it serving, {} MiB after the requests (peak {} MiB)",
            rss_before / 1024,
            rss_board / 1024,
            rss_after / 1024,
            status_kib("VmHWM") / 1024
        );
        server.stop().await;
        state.close().await.expect("closed");
    });
}
