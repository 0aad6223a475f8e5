//! The status page (`GET /`) and its document (`GET /status.json`, `stac-uploadd status
//! --json`): each job with its trigger and next fire, its last run and last failure, what is
//! being sent now, and the recent runs (docs/status.md).
//!
//! The daemon keeps a [`Board`] in memory (seeded from the state store's history, fed by the
//! supervisor's run broadcasts and by each upload session's observer through [`LiveUploads`]);
//! a page reads the store only for the uploads on record, cached for a moment. One builder
//! ([`doc::document`]) serves the JSON, the HTML and the command.

mod board;
mod doc;
mod html;
mod live;

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use tracing::warn;

pub use board::{Board, RECENT_RUNS};
pub use doc::{Document, SCHEMA_VERSION, Source};
pub use live::{LiveGuard, LiveUpload, LiveUploads};

use crate::config::{Config, JobSpec};
use crate::state::{InFlight, StateStore};

/// How long the uploads on record read from the store serve pages: a page refreshing every few
/// seconds in several browsers must not become a query each time.
const INFLIGHT_CACHE: Duration = Duration::from_secs(2);

/// What the page shows of the configuration: changed on a reload.
#[derive(Debug)]
pub struct PageConfig {
    jobs: Vec<JobSpec>,
    server: String,
    instance: String,
    cluster: bool,
}

impl PageConfig {
    /// The page of `jobs` on `server` (benches and tests; the daemon uses [`PageConfig::of`]).
    pub fn new(jobs: Vec<JobSpec>, server: &url::Url) -> Self {
        Self {
            jobs,
            server: stac_client::redact_userinfo(server),
            instance: crate::cluster::host_name(),
            cluster: false,
        }
    }

    /// The parts of `config` the page shows; never a secret (the server URL is redacted, the
    /// notification and ping URLs are not read).
    pub fn of(config: &Config) -> Self {
        Self {
            jobs: config.jobs.clone(),
            server: stac_client::redact_userinfo(&config.server.url),
            instance: crate::cluster::this_instance()
                .map_or_else(crate::cluster::host_name, str::to_owned),
            cluster: config.cluster.is_some(),
        }
    }
}

/// The running daemon's page: its board, its store and its configuration.
#[derive(Debug)]
pub struct StatusPage {
    board: Arc<Board>,
    state: Arc<StateStore>,
    config: RwLock<Arc<PageConfig>>,
    inflight: tokio::sync::Mutex<Option<(Instant, Arc<Vec<InFlight>>)>>,
}

impl StatusPage {
    /// The page over `board` and `state` for `config`.
    pub fn new(board: Arc<Board>, state: Arc<StateStore>, config: PageConfig) -> Self {
        Self {
            board,
            state,
            config: RwLock::new(Arc::new(config)),
            inflight: tokio::sync::Mutex::new(None),
        }
    }

    /// The jobs of a reloaded job file.
    pub fn set_config(&self, config: PageConfig) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
    }

    async fn inflight(&self) -> Arc<Vec<InFlight>> {
        let mut cached = self.inflight.lock().await;
        if let Some((at, list)) = cached.as_ref()
            && at.elapsed() < INFLIGHT_CACHE
        {
            return list.clone();
        }
        let list = Arc::new(self.state.inflight().await.unwrap_or_else(|e| {
            warn!(error = %e, "the status page cannot read the uploads on record");
            Vec::new()
        }));
        *cached = Some((Instant::now(), list.clone()));
        list
    }

    /// The document now.
    pub async fn document(&self) -> Document {
        let inflight = self.inflight().await;
        let config = self
            .config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        document_of(&self.board, &config, &inflight, Source::Daemon)
    }
}

fn document_of(
    board: &Board,
    config: &PageConfig,
    inflight: &[InFlight],
    source: Source,
) -> Document {
    doc::document(
        board,
        &doc::Context {
            jobs: &config.jobs,
            server: config.server.clone(),
            instance: config.instance.clone(),
            cluster: config.cluster,
            source,
            now: Utc::now(),
            inflight,
        },
    )
}

/// The document `status --json` prints: the jobs of `config`, the runs and uploads on record in
/// `state`, nothing live.
pub async fn from_store(
    config: &Config,
    state: &StateStore,
) -> Result<Document, crate::state::StateError> {
    let history = state.history().await?;
    let inflight = state.inflight().await?;
    let board = Board::seeded(&history, Arc::default(), Utc::now());
    Ok(document_of(
        &board,
        &PageConfig::of(config),
        &inflight,
        Source::Store,
    ))
}

/// The page, once the daemon has one: the listener is up before the store is open.
pub type Slot = Arc<OnceLock<Arc<StatusPage>>>;

/// `GET /` and `GET /status.json` (HEAD too; nothing else) over what `slot` will hold.
pub fn router(slot: Slot) -> Router {
    Router::new()
        .route("/", get(page_html))
        .route("/status.json", get(page_json))
        .with_state(slot)
}

/// What no answer of the page may go without: no script, style only inline, nothing fetched,
/// not framed, not sniffed into another type, not cached.
fn hardened(mut r: Response, csp: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const HTML_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; \
                        base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const JSON_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

fn starting() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "starting: the state store is not open yet\n",
    )
        .into_response()
}

async fn page_html(State(slot): State<Slot>) -> Response {
    let r = match slot.get() {
        Some(page) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html::page(&page.document().await),
        )
            .into_response(),
        None => starting(),
    };
    hardened(r, HTML_CSP)
}

async fn page_json(State(slot): State<Slot>) -> Response {
    let r = match slot.get() {
        Some(page) => axum::Json(page.document().await).into_response(),
        None => starting(),
    };
    hardened(r, JSON_CSP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Outcome, PublicCheck, RunRecord};

    fn config(dir: &std::path::Path) -> Config {
        let file = dir.join("a.zip");
        std::fs::write(&file, b"x").unwrap();
        let text = format!(
            "state_dir = \"{d}/state\"\n[server]\nurl = \"https://data.example.org/api/stac/v1\"\n\
             [[job]]\nname = \"daily\"\ncollection = \"c\"\nitem = \"daily-%Y-%m-%d\"\n\
             asset = \"a.zip\"\nfile = \"{f}\"\nschedule = \"30 2 * * *\"\nkeep = 30\n",
            d = dir.display(),
            f = file.display()
        );
        crate::config::parse(&text, std::path::Path::new("jobs.toml"), &|_: &str| None)
            .expect("a valid job file")
    }

    fn failed_run() -> RunRecord {
        let t = Utc::now() - chrono::Duration::minutes(5);
        RunRecord {
            job: "daily".into(),
            started: t,
            finished: t + chrono::Duration::seconds(2),
            outcome: Outcome::Failed,
            asset: "a.zip".into(),
            item: Some("daily-2026-12-07".into()),
            file: Some("/in/<img src=x onerror=alert(1)>.zip".into()),
            bytes: 0,
            attempts: 2,
            upload_id: None,
            error: Some("<script>alert(1)</script>".into()),
            assets: Vec::new(),
            instance: Some("node-1".into()),
            error_class: Some("server".into()),
            public: vec![PublicCheck {
                asset: "a.zip".into(),
                item: Some("daily-2026-12-07".into()),
                url: "https://data.example.org/c/daily/a.zip".into(),
                problem: Some("sha256".into()),
                detail: Some("expected 1220ab, found 1220cd".into()),
                max_age: Some(600),
            }],
        }
    }

    #[test]
    fn the_document_and_the_page_show_a_failing_job_with_everything_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let history = std::collections::BTreeMap::from([("daily".to_owned(), vec![failed_run()])]);
        let board = Board::seeded(&history, Arc::default(), Utc::now());
        let mut page_config = PageConfig::of(&config);
        page_config.cluster = true;
        let doc = document_of(&board, &page_config, &[], Source::Store);
        let job = &doc.jobs[0];
        assert_eq!(job.state, "failing");
        assert_eq!(job.failures_in_a_row, 1);
        assert_eq!(job.retention.as_deref(), Some("keep the newest 30 items"));
        assert_eq!(job.owner.as_deref(), Some("node-1"));
        assert_eq!(job.trigger.kind, "cron");
        assert!(job.next_fire.is_some_and(|t| t > Utc::now()));
        assert_eq!(job.public_problems.len(), 1);
        assert_eq!(job.public_problems[0].problem, "sha256");
        assert_eq!(doc.server, "https://data.example.org/api/stac/v1");

        let page = html::page(&doc);
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(
            page.contains("&lt;img src=x onerror=alert(1)&gt;.zip"),
            "{page}"
        );
        assert!(
            !page.contains("<script") && !page.contains("<img"),
            "{page}"
        );
        assert!(page.contains("public link: sha256"), "{page}");
        assert!(page.contains("keep the newest 30 items"), "{page}");
        assert!(page.contains("read from the state store"), "{page}");
    }
}
