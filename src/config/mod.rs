//! The job file: schema, validation with file:line:col errors, secrets.

#[macro_use]
mod settings;
mod error;
mod fingerprint;
mod geometry;
mod keep;
mod load;
mod metadata;
mod names;
mod notify;
mod overlap;
mod policy;
mod raw;
mod read;
mod server;
mod sidecar;
mod template;

pub use error::{ConfigError, LocatedError};
pub use fingerprint::job_fingerprints;
pub use keep::Keep;
pub use load::{
    AuthKind, FlagError, FlagSettings, FlagTable, MAX_CONCURRENT_UPLOADS, SETTING_KEYS,
    check_flags, load, parse, read_job_file,
};
pub use metadata::{
    ASSET_FIELDS, ASSET_PROPERTIES, AssetFromFile, AssetMetadata, GeometryFrom, ITEM_FIELDS,
    ITEM_PROPERTIES, ItemGeometry, ItemMetadata, ItemTime, STAC_VERSION, TimeValue, bbox_polygon,
};
pub use names::{CaptureTime, Captures, NamePattern};
pub use notify::{
    DEFAULT_NOTIFY_TIMEOUT, DEFAULT_REPEAT, MAX_NOTIFY_TIMEOUT, NotifyOn, NotifyTarget, SecretUrl,
};
pub use policy::{PolicyKind, PolicySpec};
pub use read::{MAX_JOB_FILE, read_bounded};
pub use sidecar::{ItemJson, MAX_ITEM_JSON, Refusal, SidecarError, item_body_with_sidecar};
pub use template::{IdExtension, IdPart, IdTemplate, Names, TemplateError, TextTemplate};

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::trigger::TriggerSpec;
use stac_client::{ApiVersion, Auth, ClientConfig, redact_userinfo};
use stac_upload::UploadOptions;

/// A validated job file, secrets resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub server: ServerConfig,
    pub jobs: Vec<JobSpec>,
    pub observe: ObserveConfig,
    /// `[server] bandwidth_limit`: shared by every job of the daemon.
    pub bandwidth_limit: Option<stac_upload::bandwidth::BandwidthLimit>,
    /// `[server] max_concurrent_uploads`: at most this many uploads at once over every job of
    /// the daemon (1 to 256; default [`default_max_concurrent_uploads`]).
    pub max_concurrent_uploads: usize,
    /// `[cluster]`: the state in PostgreSQL, shared with other instances; `None`: the embedded
    /// store in `state_dir`.
    pub cluster: Option<ClusterConfig>,
    /// `[[notify]]`: webhooks told about failures, recoveries and successes (docs/notifications.md).
    pub notify: Vec<NotifyTarget>,
}

/// `[cluster]`: several instances sharing the work through PostgreSQL (`docs/cluster.md`).
#[derive(Clone)]
pub struct ClusterConfig {
    /// `postgres://user:password@host:port/database`, from `url_env` or `url_file`.
    pub url: secrecy::SecretString,
    /// TLS to the database, its certificate verified with this CA.
    pub ca_file: Option<PathBuf>,
    /// This instance's name; `None`: the host name and the process id.
    pub instance: Option<String>,
    /// How long a lease lasts unrenewed: a dead instance's work is taken over after it.
    pub lease: std::time::Duration,
    /// How often the lease is renewed and lapsed instances are looked for.
    pub heartbeat: std::time::Duration,
    /// The members the cluster should have (exported for an alert).
    pub expected_members: Option<u32>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("url", &"(secret)")
            .field("ca_file", &self.ca_file)
            .field("instance", &self.instance)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("expected_members", &self.expected_members)
            .finish()
    }
}

/// A lease's length when `[cluster] lease` is not given.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(10);
/// The heartbeat when `[cluster] heartbeat` is not given.
pub const DEFAULT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

/// `--job NAME` naming no job of the file (exit code 2 wherever it is given).
#[derive(Debug, thiserror::Error)]
#[error("{}: no job named {name:?} (--job); the file's jobs: {}", file.display(), known.join(", "))]
pub struct UnknownJob {
    pub file: PathBuf,
    pub name: String,
    pub known: Vec<String>,
}

impl Config {
    /// The jobs `names` asks for (`--job`), in the file's order; every job when `names` is
    /// empty.
    pub fn select_jobs(&self, names: &[String]) -> Result<Vec<&JobSpec>, UnknownJob> {
        if let Some(unknown) = names
            .iter()
            .find(|n| !self.jobs.iter().any(|j| &j.name == *n))
        {
            return Err(UnknownJob {
                file: self.source.clone(),
                name: unknown.clone(),
                known: self.jobs.iter().map(|j| j.name.clone()).collect(),
            });
        }
        Ok(self
            .jobs
            .iter()
            .filter(|j| names.is_empty() || names.contains(&j.name))
            .collect())
    }
}

/// The default of `[server] max_concurrent_uploads`: twice the cores, at least 2 (uploads wait
/// on the network more than on the CPU, but each digests and may compress its file).
pub fn default_max_concurrent_uploads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (2 * cores).clamp(2, *load::MAX_CONCURRENT_UPLOADS.end() as usize)
}

/// `[observe]`: the metrics and health listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObserveConfig {
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `--observe-listen` overrides it.
    pub listen: Option<std::net::SocketAddr>,
    /// `/healthz` fails when the supervisor loop has not ticked for this long.
    pub health_timeout: Option<std::time::Duration>,
}

/// How to reach the API.
#[derive(Clone)]
pub struct ServerConfig {
    pub url: url::Url,
    pub api_version: ApiVersion,
    pub auth: Auth,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// `ca_file`: PEM roots trusted on top of the system's, checked to hold a certificate.
    pub ca_file: Option<PathBuf>,
    /// `proxy`: the proxy for the API, the part URLs and Cognito alike (`NO_PROXY` still
    /// applies). Without it, `HTTPS_PROXY`/`HTTP_PROXY` from the environment apply.
    pub proxy: Option<url::Url>,
}

impl ServerConfig {
    /// The client settings for this server (`NO_PROXY` read from the environment).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(self.url.clone());
        c.api_version = self.api_version;
        c.auth = self.auth.clone();
        c.connect_timeout = self.connect_timeout;
        c.request_timeout = self.request_timeout;
        c.ca_file = self.ca_file.clone();
        c.proxy = self.proxy.clone();
        c
    }
}

/// A proxy URL may hold a password: never shown.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("url", &redact_userinfo(&self.url))
            .field("api_version", &self.api_version)
            .field("auth", &self.auth)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("ca_file", &self.ca_file)
            .field("proxy", &self.proxy.as_ref().map(redact_userinfo))
            .finish()
    }
}

/// One `[[job]]`, defaults applied.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub collection: String,
    /// Item id (`None`: a collection asset), templated like `asset`.
    pub item: Option<IdTemplate>,
    /// Asset id: literal, or templated from the run time in `timezone` (`%Y-%m-%d`, ...) and,
    /// for watch jobs, the file name (`{name}`, `{stem}`, `{ext}`).
    pub asset: IdTemplate,
    /// The zone run times are read in: templates, and the job's bandwidth timetable. Cron
    /// schedules carry the same zone.
    pub timezone: chrono_tz::Tz,
    pub trigger: TriggerSpec,
    pub policy: PolicySpec,
    pub upload: UploadOptions,
    /// A random delay of up to this much before each scheduled run, to spread many jobs.
    pub jitter: Option<std::time::Duration>,
    /// Run once at start-up if a scheduled run was missed while the daemon was down.
    pub catch_up: bool,
    /// This job's own bandwidth limit (besides the daemon's `[server] bandwidth_limit`).
    pub bandwidth_limit: Option<stac_upload::bandwidth::BandwidthLimit>,
    /// `[job.item_metadata]`: the item to create before the upload when it is missing.
    pub item_metadata: Option<ItemMetadata>,
    /// `[job.asset_metadata]`: the asset to create before the upload when it is missing.
    pub asset_metadata: Option<AssetMetadata>,
    /// `alias`: a fixed item that also gets the same files, after the dated item succeeded; never
    /// pruned.
    pub alias: Option<String>,
    /// `keep`: the retention rule for the job's own items (`None`: nothing is deleted).
    pub keep: Option<Keep>,
    /// `[[job.assets]]`: the assets of an item job, published together in one run (empty for a
    /// one-file job, which publishes `asset`). For such a job `asset` is its first asset's id
    /// and the trigger's file is empty: each asset names its own. In a watch job, the members
    /// of a bundle.
    pub assets: Vec<AssetSpec>,
    /// Runs of a watch job at once (different files or bundles; 1 to 64, default
    /// [`DEFAULT_CONCURRENCY`]). Schedule and `every` jobs run one at a time whatever it says.
    pub concurrency: usize,
    /// `ping_url_env` / `ping_url_file`: a healthchecks-style URL pinged at each run's start
    /// (`/start`), success (the URL) and failure (`/fail`).
    pub ping_url: Option<SecretUrl>,
    /// `verify_public`: what a run does after an upload about the asset's public `href`.
    pub verify_public: VerifyPublic,
    /// `name_pattern`: the names of the files the job publishes, whose named captures its
    /// templates and times may use; a file whose name does not match is refused.
    pub name_pattern: Option<NamePattern>,

    /// `validate`: whether each file is checked against its asset's media type before
    /// anything is created (`crate::geo::media::check_file`), and what a failure does.
    pub validate: crate::geo::media::Validate,
}

/// `verify_public`: after each upload, a `HEAD` of the asset's public `href` compared with what
/// was sent (docs/verify.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyPublic {
    /// Check; a problem is logged, counted and recorded, and the run stays a success.
    #[default]
    Warn,
    /// Check; a problem fails the run (`error_class = "verify_public"`).
    Fail,
    /// No check.
    Off,
}

impl VerifyPublic {
    /// As the job file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyPublic::Warn => "warn",
            VerifyPublic::Fail => "fail",
            VerifyPublic::Off => "off",
        }
    }
}

/// `concurrency` when a job does not set it: enough runs to keep the link busy while each waits
/// on the API's round trips (docs/performance.md, "Bursts").
pub const DEFAULT_CONCURRENCY: usize = 8;

/// One `[[job.assets]]` table: an asset of an item job.
#[derive(Debug, Clone)]
pub struct AssetSpec {
    /// The asset id, templated like `asset`.
    pub id: IdTemplate,
    /// The file: a path, or a glob that must match exactly one file when the job runs. In a
    /// bundle job (a watch job), a pattern relative to the watched folder with `{stem}`.
    pub file: PathBuf,
    /// Bundle jobs: a bundle is complete only when this member is there (default true).
    pub required: bool,
    /// `[job.assets.metadata]`: the asset to create when it is missing.
    pub metadata: Option<AssetMetadata>,
}
