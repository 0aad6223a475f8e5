//! Command line: raw clap arguments, turned into validated settings before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use crate::exit::ExitCode;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, AuthKind, FlagSettings, FlagTable};
use crate::observe::LogFormat;
use stac_client::ApiVersion;
use stac_upload::{CompressMode, UploadError};

mod inspect;
mod jobs;
mod upload;

pub use inspect::InspectArgs;

/// How long running uploads may go on after SIGTERM, unless --shutdown-grace says.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// One line for an error and its causes. Many errors name their cause in their own message
/// (`cannot read X: No such file`) and also expose it as `source`; a cause already said is not
/// repeated.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !c.is_empty() && !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub error: anyhow::Error,
}

impl CliError {
    fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ExitCode::Usage,
            error: error.into(),
        }
    }
    fn failure(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ExitCode::Failure,
            error: error.into(),
        }
    }
}

impl From<crate::ops::OpsError> for CliError {
    fn from(e: crate::ops::OpsError) -> Self {
        match e {
            crate::ops::OpsError::Usage(e) => Self::usage(e),
            crate::ops::OpsError::Failure(e) => Self::failure(e),
        }
    }
}

impl From<UploadError> for CliError {
    fn from(e: UploadError) -> Self {
        let code = if e.is_local_input() {
            ExitCode::Usage
        } else {
            ExitCode::Failure
        };
        Self {
            code,
            error: e.into(),
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "stac-uploadd",
    version,
    about = "Publish files to a STAC API (service-stac), once or on a schedule"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Without a subcommand: the daemon's flags, as `run` takes them.
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once at start-up: the size of the biggest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the jobs of --config, until SIGTERM (the default command); with --once,
    /// each job once, then exit.
    Run(RunArgs),
    /// Check a job file and show what it would do, without running anything.
    Check(CheckArgs),
    /// Show each job's last runs and any upload in flight, from the state folder.
    Status(StatusArgs),
    /// List the uploads in progress on the job file's assets (whose, and what the daemon would
    /// do with each), and abort one with --abort ID: for an incident.
    Uploads(UploadsArgs),
    /// Apply the jobs' `keep` rules now: delete their old items (assets first), or with
    /// --dry-run show what would be deleted.
    Prune(PruneArgs),
    /// Check every asset the jobs publish now: the local file against the server's
    /// file:checksum and against what its public href serves. Exit 1 on any mismatch.
    Verify(VerifyArgs),
    /// Upload one file to one asset, now.
    Upload(UploadArgs),
    /// Show what a job would derive from each file (footprint, proj:epsg, gsd) and whether it
    /// is what its media type says (a cloud-optimized GeoTIFF, ...). Exit 1 if any is not.
    Inspect(InspectArgs),
    /// Serve a local emulator of the service-stac upload API, to try jobs safely.
    #[cfg(feature = "emulator")]
    Emulator(stac_uploadd_emulator::EmulatorArgs),
    /// Show the tool at work against a built-in emulator, with nothing to set up.
    #[cfg(feature = "emulator")]
    Demo(crate::demo::DemoArgs),
    /// Serve a local emulator of the service-stac upload API (not in this build).
    #[cfg(not(feature = "emulator"))]
    Emulator(NotBuilt),
    /// Show the tool at work against a built-in emulator (not in this build).
    #[cfg(not(feature = "emulator"))]
    Demo(NotBuilt),
}

/// The arguments of a command this build left out, taken whatever they are so that the
/// command can say how to get it instead of a usage error.
#[cfg(not(feature = "emulator"))]
#[derive(Debug, Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<std::ffi::OsString>,
}

/// What `demo` and `emulator` say in a build without the emulator.
#[cfg(not(feature = "emulator"))]
const NO_EMULATOR: &str = "this stac-uploadd was built without the emulator (cargo feature \
    `emulator`); `demo` and `emulator` need it: install a default build (`cargo install --path \
    .` in a checkout, or the container image), or run the emulator from another machine's build";

impl Cli {
    /// The log level when neither -v nor RUST_LOG says otherwise.
    pub fn log_level(&self) -> &'static str {
        let base = match self.command {
            // One-shot commands keep the terminal for their progress bar, table or result line.
            Some(
                Command::Upload(_)
                | Command::Demo(_)
                | Command::Check(_)
                | Command::Status(_)
                | Command::Uploads(_)
                | Command::Prune(_)
                | Command::Verify(_)
                | Command::Inspect(_),
            ) => 0,
            None | Some(Command::Run(_) | Command::Emulator(_)) => 1,
        };
        if matches!(self.command, Some(Command::Demo(_))) && self.verbose == 0 {
            // The demo's table tells the story; -v shows every retry as it happens.
            return "error";
        }
        match base + self.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    }
}

/// The job file of `check` (and of `run`, `status`).
#[derive(Debug, Args, Default)]
pub struct ConfigArgs {
    /// Job file.
    #[arg(long, env = "STAC_UPLOADD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `check`'s flags.
#[derive(Debug, Args, Default)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Also ask the server, read-only: the credentials, each job's collection, item and asset,
    /// and an existing asset's media type. Creates nothing.
    #[arg(long)]
    pub online: bool,
}

/// `uploads`' flags.
#[derive(Debug, Args)]
pub struct UploadsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only the assets of this job.
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Abort this upload (one of those listed), after a y/N question on a terminal.
    #[arg(long, value_name = "ID")]
    pub abort: Option<String>,
    /// Abort without asking (required when stdin is not a terminal).
    #[arg(long, requires = "abort")]
    pub yes: bool,
}

/// `prune`'s flags.
#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only this job's items.
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Show what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `verify`'s flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only the assets of this job.
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
}

/// The daemon's flags: `run`'s (and the top level's, which runs the daemon too).
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// On SIGTERM, how long running uploads may go on before they are aborted [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. 127.0.0.1:9187.
    #[arg(long, value_name = "ADDR", env = "STAC_UPLOADD_OBSERVE_LISTEN")]
    pub observe_listen: Option<std::net::SocketAddr>,
    /// Run each job once, now, with its whole policy, then exit: for a CronJob, a systemd timer
    /// or a CI schedule. One summary line per run on stdout; exit 0 only if every run uploaded,
    /// found the asset unchanged or resumed.
    #[arg(long)]
    pub once: bool,
    /// With --once: run only this job; repeat for several (--job a --job b).
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
}

impl RunArgs {
    /// `run`'s own flags, the top level's where `run` has none (`stac-uploadd --config x run`).
    fn or(self, top: RunArgs) -> RunArgs {
        RunArgs {
            config: ConfigArgs {
                config: self.config.config.or(top.config.config),
            },
            shutdown_grace: self.shutdown_grace.or(top.shutdown_grace),
            observe_listen: self.observe_listen.or(top.observe_listen),
            once: self.once || top.once,
            jobs: if self.jobs.is_empty() {
                top.jobs
            } else {
                self.jobs
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The state folder (default: the one of --config).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Runs shown per job, newest first.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub runs: u16,
    /// Print the status page's document (docs/status.md) read from the store, as JSON: the
    /// jobs of --config with their last runs, the recent runs and the uploads on record.
    #[arg(long)]
    pub json: bool,
}

/// How to reach and authenticate to the API: the `[server]` keys of a job file, checked as
/// they are (see [`ServerArgs::write`]).
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the STAC API, e.g. https://data.geo.admin.ch/api/stac/v1
    #[arg(long, env = "STAC_UPLOADD_URL")]
    pub url: String,
    /// API generation: v1 (file:checksum) or v0.9 (checksum:multihash).
    #[arg(long, value_enum, default_value_t = ApiVersion::V1)]
    pub api_version: ApiVersion,
    /// Authentication scheme.
    #[arg(long, value_enum, default_value_t = AuthKind::None)]
    pub auth: AuthKind,
    /// User name for --auth basic and cognito.
    #[arg(long, env = "STAC_UPLOADD_USER")]
    pub user: Option<String>,
    /// File holding the password (basic, cognito) or token (token, bearer): a regular file of at
    /// most 64 KiB, as password_file and token_file in a job file. Alternatively set
    /// STAC_UPLOADD_SECRET; secrets are never taken from the command line, where `ps` shows them.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Cognito app client id (--auth cognito).
    #[arg(long, env = "STAC_UPLOADD_COGNITO_CLIENT_ID")]
    pub cognito_client_id: Option<String>,
    /// Cognito region, e.g. eu-central-1 (--auth cognito).
    #[arg(long, env = "STAC_UPLOADD_COGNITO_REGION")]
    pub cognito_region: Option<String>,
    /// Cognito endpoint, if not the region's public one (--auth cognito).
    #[arg(long)]
    pub cognito_endpoint: Option<String>,
    /// Extra CA certificates (PEM) to trust: self-hosted servers, corporate TLS inspection.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Proxy for the API, the part URLs and Cognito (default: HTTPS_PROXY/HTTP_PROXY).
    #[arg(long)]
    pub proxy: Option<String>,
    /// Bound on establishing a connection.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub connect_timeout: String,
    /// Bound on each API call (part uploads get a deadline from their length).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeout: String,
}

/// The name clap and serde both know a value by.
fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

fn path_text(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

impl ServerArgs {
    /// These flags as the `[server]` and `[server.auth]` tables of a job file. The secret is read
    /// as `password_file`/`token_file` (`--secret-file`) or `password_env`/`token_env`
    /// (STAC_UPLOADD_SECRET) would be.
    pub fn write(&self, t: &mut FlagTable) {
        t.table("server");
        t.set("--url", "url", self.url.as_str());
        t.set(
            "--api-version",
            "api_version",
            value_name(&self.api_version),
        );
        t.set(
            "--connect-timeout",
            "connect_timeout",
            self.connect_timeout.as_str(),
        );
        t.set("--timeout", "request_timeout", self.timeout.as_str());
        if let Some(p) = &self.ca_file {
            t.set("--ca-file", "ca_file", path_text(p));
        }
        if let Some(p) = &self.proxy {
            t.set("--proxy", "proxy", p.as_str());
        }
        t.table("server.auth");
        t.set("--auth", "type", value_name(&self.auth));
        let what = match self.auth {
            AuthKind::None => return,
            AuthKind::Basic | AuthKind::Cognito => "password",
            AuthKind::Token | AuthKind::Bearer => "token",
        };
        if what == "password"
            && let Some(u) = &self.user
        {
            t.set("--user", "username", u.as_str());
        }
        match &self.secret_file {
            Some(p) => t.set("--secret-file", &format!("{what}_file"), path_text(p)),
            None => t.set(
                "--secret-file or STAC_UPLOADD_SECRET",
                &format!("{what}_env"),
                SECRET_ENV,
            ),
        };
        if self.auth == AuthKind::Cognito {
            if let Some(c) = &self.cognito_client_id {
                t.set("--cognito-client-id", "client_id", c.as_str());
            }
            if let Some(r) = &self.cognito_region {
                t.set("--cognito-region", "region", r.as_str());
            }
            if let Some(e) = &self.cognito_endpoint {
                t.set("--cognito-endpoint", "endpoint", e.as_str());
            }
        }
    }
}

/// The variable `upload` takes its secret from without `--secret-file`.
const SECRET_ENV: &str = "STAC_UPLOADD_SECRET";

/// The job file's settings that apply to one upload, under the job keys' names (`--part-size`
/// is `part_size`, ...) and checked by the same checks, with the same bounds
/// (`src/config/settings.rs`).
#[derive(Debug, Args, Default)]
pub struct SettingArgs {
    /// Target part size, e.g. 16MiB [default: 16MiB]; larger files get larger parts (at most
    /// 100 parts).
    #[arg(long, value_name = "SIZE")]
    pub part_size: Option<String>,
    /// Parts sent at once, 1 to 32 [default: 4].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub parallel: Option<i64>,
    /// Retries of one part (and of create/complete/abort) after a transient failure, 0 to 10
    /// [default: 3].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub part_retries: Option<i64>,
    /// Retries of the whole upload after a transient failure, 0 to 10, as a job's retries: the
    /// first after --retry-min-delay, doubling up to --retry-max-delay [default here: 0].
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub retries: i64,
    /// The first wait before a retry of the upload, at least 100ms [default: 1s].
    #[arg(long, value_name = "DURATION")]
    pub retry_min_delay: Option<String>,
    /// The longest wait before a retry of the upload [default: 10m].
    #[arg(long, value_name = "DURATION")]
    pub retry_max_delay: Option<String>,
    /// Compress before sending: gzip, br, auto (gzip over 10 MB unless the media type is already
    /// compressed) or none [default: none].
    #[arg(long, value_enum)]
    pub compress: Option<CompressMode>,
    /// Cap the upload's rate, e.g. 20MB/s (shared by the parts in flight).
    #[arg(long, value_name = "RATE")]
    pub bandwidth_limit: Option<String>,
    /// Upload even when the asset already holds this file (its checksum is the file's): the
    /// job key skip_unchanged = false.
    #[arg(long)]
    pub force: bool,
}

impl SettingArgs {
    /// These flags as the `[defaults]` table of a job file.
    pub fn write(&self, t: &mut FlagTable) {
        t.table("defaults");
        if let Some(v) = &self.part_size {
            t.set("--part-size", "part_size", v.as_str());
        }
        if let Some(v) = self.parallel {
            t.set("--parallel", "parallel", v);
        }
        if let Some(v) = self.part_retries {
            t.set("--part-retries", "part_retries", v);
        }
        t.set("--retries", "retries", self.retries);
        if let Some(v) = &self.retry_min_delay {
            t.set("--retry-min-delay", "retry_min_delay", v.as_str());
        }
        if let Some(v) = &self.retry_max_delay {
            t.set("--retry-max-delay", "retry_max_delay", v.as_str());
        }
        if let Some(v) = &self.compress {
            t.set("--compress", "compress", value_name(v));
        }
        if let Some(v) = &self.bandwidth_limit {
            t.set("--bandwidth-limit", "bandwidth_limit", v.as_str());
        }
        if self.force {
            t.set("--force", "skip_unchanged", false);
        }
    }
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Collection id.
    #[arg(long)]
    pub collection: String,
    /// Item id; leave out to upload a collection asset.
    #[arg(long)]
    pub item: Option<String>,
    /// Asset id (must already exist on the server).
    #[arg(long)]
    pub asset: String,
    #[command(flatten)]
    pub settings: SettingArgs,
    /// If another upload is in progress on the asset, abort it and upload anyway.
    #[arg(long)]
    pub abort_in_progress: bool,
    /// The file to upload.
    pub file: PathBuf,
}

impl UploadArgs {
    /// The flags checked as a job file's keys would be; the secret from the environment.
    pub fn settings(&self) -> Result<FlagSettings, CliError> {
        let mut t = FlagTable::new();
        self.server.write(&mut t);
        self.settings.write(&mut t);
        config::check_flags(&t, &|name| std::env::var(name).ok()).map_err(CliError::usage)
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let top = cli.run;
    let need_config = |args: ConfigArgs| {
        args.config.ok_or_else(|| {
            CliError::usage(anyhow::anyhow!(
                "--config FILE is required (or STAC_UPLOADD_CONFIG)"
            ))
        })
    };
    match cli.command {
        None => jobs::run_jobs(top, need_config).await,
        Some(Command::Run(args)) => jobs::run_jobs(args.or(top), need_config).await,
        Some(Command::Check(args)) => {
            let config = args.config.config.or(top.config.config);
            let path = need_config(ConfigArgs { config })?;
            let loaded = jobs::run_check(&path)?;
            if args.online {
                crate::ops::online::run(&loaded).await?;
            }
            Ok(())
        }
        Some(Command::Status(mut args)) => {
            args.config.config = args.config.config.or(top.config.config);
            jobs::run_status(args).await
        }
        Some(Command::Uploads(args)) => {
            let config = need_config(ConfigArgs {
                config: args.config.config.or(top.config.config),
            })?;
            crate::ops::uploads::run(crate::ops::uploads::Request {
                config,
                job: args.job,
                abort: args.abort,
                yes: args.yes,
            })
            .await
            .map_err(CliError::from)
        }
        Some(Command::Prune(args)) => {
            let config = need_config(ConfigArgs {
                config: args.config.config.or(top.config.config),
            })?;
            crate::ops::prune::run(crate::ops::prune::Request {
                config,
                job: args.job,
                dry_run: args.dry_run,
            })
            .await
            .map_err(CliError::from)
        }
        Some(Command::Verify(args)) => {
            let config = need_config(ConfigArgs {
                config: args.config.config.or(top.config.config),
            })?;
            crate::ops::verify::run(crate::ops::verify::Request {
                config,
                job: args.job,
            })
            .await
            .map_err(CliError::from)
        }
        Some(Command::Upload(args)) => upload::run_upload(args).await,
        Some(Command::Inspect(args)) => inspect::run_inspect(args).await,
        #[cfg(not(feature = "emulator"))]
        Some(Command::Emulator(_) | Command::Demo(_)) => Err(CliError {
            code: ExitCode::Usage,
            error: anyhow::anyhow!(NO_EMULATOR),
        }),
        // It stops cleanly on SIGTERM and SIGINT itself (emulator/src/cli.rs).
        #[cfg(feature = "emulator")]
        Some(Command::Emulator(args)) => stac_uploadd_emulator::run(args)
            .await
            .map_err(CliError::failure),
        #[cfg(feature = "emulator")]
        Some(Command::Demo(args)) => crate::demo::run(args).await.map_err(|e| {
            match e.downcast_ref::<crate::exit::Stopped>() {
                Some(crate::exit::Stopped(signal)) => CliError {
                    code: signal.exit_code(),
                    error: e,
                },
                None => CliError::failure(e),
            }
        }),
    }
}
