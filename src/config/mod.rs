//! The job file: schema, validation with file:line:col errors, secrets.

mod error;
mod load;
mod raw;
mod template;

pub use error::{ConfigError, LocatedError};
pub use load::{load, parse};
pub use template::TemplateError;

use std::path::PathBuf;
use std::time::Duration;

use crate::stac::{ApiVersion, Auth};
use crate::supervisor::PolicySpec;
use crate::trigger::{Schedule, WatchSpec};
use crate::upload::UploadOptions;

/// A validated job file, secrets resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub server: ServerConfig,
    pub jobs: Vec<JobSpec>,
}

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub url: url::Url,
    pub api_version: ApiVersion,
    pub auth: Auth,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// One `[[job]]`, defaults applied.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub collection: String,
    pub item: Option<String>,
    /// Asset id; for watch jobs a template of the file name (`{name}`, `{stem}`, `{ext}`).
    pub asset: AssetTemplate,
    pub trigger: TriggerSpec,
    pub policy: PolicySpec,
    pub upload: UploadOptions,
}

/// What starts a job's runs.
#[derive(Debug, Clone)]
pub enum TriggerSpec {
    /// Upload `file` at each fire time of `schedule`.
    Cron { file: PathBuf, schedule: Schedule },
    /// Upload each finished file that appears in a folder.
    Watch(WatchSpec),
}

/// An asset id, literal or templated from the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetTemplate(pub String);
