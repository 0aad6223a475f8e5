//! Command line: raw clap arguments, turned into validated settings before anything runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::observe::LogFormat;
use crate::stac::{ApiVersion, AssetTarget, Auth, ClientConfig, StacClient};
use crate::units::ByteSize;
use crate::upload::{self, UploadError, UploadOptions};

/// Exit codes: 0 success, 1 runtime failure, 2 bad usage, input or config, 3 the state folder
/// needs an operator (a corrupt record of uploads in flight). systemd restarts on 1 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    Failure = 1,
    Usage = 2,
    NeedsOperator = 3,
}

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
    /// Job file: without a subcommand, run the daemon with it.
    #[arg(long, global = true, env = "STAC_UPLOADD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once at start-up: the size of the biggest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the jobs of --config, until SIGTERM (the default command).
    Run,
    /// Check a job file and show what it would do, without running anything.
    Check,
    /// Show each job's last runs and any upload in flight, from the state folder.
    Status(StatusArgs),
    /// Upload one file to one asset, now.
    Upload(UploadArgs),
    /// Serve a local emulator of the service-stac upload API, to try jobs safely.
    Emulator(crate::emulator::EmulatorArgs),
    /// Show the tool at work against a built-in emulator, with nothing to set up.
    Demo(crate::demo::DemoArgs),
}

impl Cli {
    /// The log level when neither -v nor RUST_LOG says otherwise.
    pub fn log_level(&self) -> &'static str {
        let base = match self.command {
            // One-shot commands keep the terminal for their progress bar, table or result line.
            Some(Command::Upload(_) | Command::Demo(_) | Command::Check | Command::Status(_)) => 0,
            None | Some(Command::Run | Command::Emulator(_)) => 1,
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

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// On SIGTERM, how long running uploads may go on before they are aborted.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. 127.0.0.1:9187.
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "STAC_UPLOADD_OBSERVE_LISTEN"
    )]
    pub observe_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The state folder (default: the one of --config).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// How to reach and authenticate to the API.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the STAC API, e.g. https://data.geo.admin.ch/api/stac/v1
    #[arg(long, env = "STAC_UPLOADD_URL")]
    pub url: url::Url,
    /// API generation: v1 (file:checksum) or v0.9 (checksum:multihash).
    #[arg(long, value_enum, default_value_t = ApiVersion::V1)]
    pub api_version: ApiVersion,
    /// Authentication scheme.
    #[arg(long, value_enum, default_value_t = AuthKind::None)]
    pub auth: AuthKind,
    /// User name for --auth basic.
    #[arg(long, env = "STAC_UPLOADD_USER")]
    pub user: Option<String>,
    /// File holding the password (basic) or token (token, bearer). Alternatively set
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
    pub cognito_endpoint: Option<url::Url>,
    /// Extra CA certificates (PEM) to trust: self-hosted servers, corporate TLS inspection.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Proxy for the API, the part URLs and Cognito (default: HTTPS_PROXY/HTTP_PROXY).
    #[arg(long)]
    pub proxy: Option<url::Url>,
    /// Bound on establishing a connection.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Bound on each API call (part uploads get a deadline from their length).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `--compress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Br,
    Auto,
}

impl From<CompressArg> for crate::upload::CompressMode {
    fn from(c: CompressArg) -> Self {
        match c {
            CompressArg::None => Self::None,
            CompressArg::Gzip => Self::Gzip,
            CompressArg::Br => Self::Br,
            CompressArg::Auto => Self::Auto,
        }
    }
}

/// Authentication schemes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthKind {
    None,
    Basic,
    Token,
    Bearer,
    /// A Cognito login (user + password), as production v1 wants.
    Cognito,
}

impl ServerArgs {
    /// A client for these settings; errors are usage errors (bad flags, unreadable secret).
    pub fn client(&self) -> Result<StacClient, CliError> {
        let secret = || -> Result<SecretString, CliError> {
            if let Some(path) = &self.secret_file {
                let s = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the secret file {}", path.display()))
                    .map_err(CliError::usage)?;
                return Ok(SecretString::from(
                    s.trim_end_matches(['\n', '\r']).to_owned(),
                ));
            }
            match std::env::var("STAC_UPLOADD_SECRET") {
                Ok(s) if !s.is_empty() => Ok(SecretString::from(s)),
                _ => Err(CliError::usage(anyhow::anyhow!(
                    "--auth {} needs a secret: --secret-file PATH or the STAC_UPLOADD_SECRET variable",
                    clap::ValueEnum::to_possible_value(&self.auth)
                        .map(|v| v.get_name().to_owned())
                        .unwrap_or_default()
                ))),
            }
        };
        let auth = match self.auth {
            AuthKind::None => Auth::None,
            AuthKind::Basic => Auth::Basic {
                username: self
                    .user
                    .clone()
                    .ok_or_else(|| CliError::usage(anyhow::anyhow!("--auth basic needs --user")))?,
                password: secret()?,
            },
            AuthKind::Token => Auth::Token(secret()?),
            AuthKind::Bearer => Auth::Bearer(secret()?),
            AuthKind::Cognito => {
                let need = |v: &Option<String>, flag: &str| {
                    v.clone().ok_or_else(|| {
                        CliError::usage(anyhow::anyhow!("--auth cognito needs {flag}"))
                    })
                };
                let mut c = crate::stac::CognitoAuth::new(
                    need(&self.user, "--user")?,
                    secret()?,
                    need(&self.cognito_client_id, "--cognito-client-id")?,
                    need(&self.cognito_region, "--cognito-region")?,
                );
                if let Some(e) = &self.cognito_endpoint {
                    c.endpoint = e.clone();
                }
                Auth::Cognito(c)
            }
        };
        let mut cfg = ClientConfig::new(self.url.clone());
        cfg.api_version = self.api_version;
        cfg.auth = auth;
        cfg.connect_timeout = self.connect_timeout;
        cfg.request_timeout = self.timeout;
        cfg.ca_file = self.ca_file.clone();
        if self.proxy.is_some() {
            cfg.proxy = self.proxy.clone();
        }
        // What can fail here are the flags: an unreadable CA file, a bad proxy.
        StacClient::new(cfg).map_err(CliError::usage)
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
    /// Target part size; larger files get larger parts (at most 100 parts).
    #[arg(long, default_value_t = upload::DEFAULT_PART_SIZE)]
    pub part_size: ByteSize,
    /// Parts sent at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub parallel: u16,
    /// Retries of a part (and of create/complete/abort) after a transient failure.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// If another upload is in progress on the asset, abort it and upload anyway.
    #[arg(long)]
    pub abort_in_progress: bool,
    /// Upload even when the asset already holds this file (its checksum is the file's).
    #[arg(long)]
    pub force: bool,
    /// Compress before sending: gzip, br, auto (gzip over 10 MB unless the media type is already
    /// compressed) or none.
    #[arg(long, value_enum, default_value_t = CompressArg::None)]
    pub compress: CompressArg,
    /// Cap the upload's rate, e.g. 20MB/s (shared by the parts in flight).
    #[arg(long)]
    pub bandwidth_limit: Option<ByteSize>,
    /// The file to upload.
    pub file: PathBuf,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let config = cli.config;
    let need_config = || {
        config.clone().ok_or_else(|| {
            CliError::usage(anyhow::anyhow!(
                "--config FILE is required (or STAC_UPLOADD_CONFIG)"
            ))
        })
    };
    match cli.command {
        None | Some(Command::Run) => run_daemon(need_config()?, cli.run).await,
        Some(Command::Check) => run_check(&need_config()?),
        Some(Command::Status(args)) => run_status(config.as_deref(), args).await,
        Some(Command::Upload(args)) => run_upload(args).await,
        Some(Command::Emulator(args)) => {
            crate::emulator::run(args).await.map_err(CliError::failure)
        }
        Some(Command::Demo(args)) => crate::demo::run(args).await.map_err(CliError::failure),
    }
}

async fn run_daemon(config: PathBuf, args: RunArgs) -> Result<(), CliError> {
    let grace = args.shutdown_grace.unwrap_or(Duration::from_secs(30));
    crate::daemon::run(config, grace, args.observe_listen)
        .await
        .map_err(|e| match e {
            crate::daemon::StartError::Config(e) => CliError::usage(e),
            crate::daemon::StartError::State(e) if e.needs_operator() => CliError {
                code: ExitCode::NeedsOperator,
                error: e.into(),
            },
            crate::daemon::StartError::State(e) => CliError::failure(e),
            crate::daemon::StartError::Other(e) => CliError::failure(e),
        })
}

fn run_check(path: &std::path::Path) -> Result<(), CliError> {
    let config = crate::config::load(path).map_err(CliError::usage)?;
    crate::state::check_dir(&config.state_dir).map_err(|problem| {
        CliError::usage(anyhow::anyhow!(
            "{}: state_dir {}: {problem}",
            path.display(),
            config.state_dir.display()
        ))
    })?;
    let now = chrono::Utc::now();
    println!(
        "{}: {} job(s), server {} ({:?}), state in {}",
        path.display(),
        config.jobs.len(),
        crate::stac::redact_userinfo(&config.server.url),
        config.server.api_version,
        config.state_dir.display()
    );
    for job in &config.jobs {
        let target = match &job.item {
            Some(item) => format!("{}/{}/{}", job.collection, item, job.asset.0),
            None => format!("{}/{}", job.collection, job.asset.0),
        };
        let policy = crate::supervisor::effective_policy(job, now);
        match &job.trigger {
            crate::config::TriggerSpec::Cron { file, schedule } => {
                let mut t = now;
                let next: Vec<String> = (0..3)
                    .filter_map(|_| {
                        t = schedule.next_after(t)?;
                        Some(
                            t.with_timezone(&schedule.timezone())
                                .format("%Y-%m-%d %H:%M:%S %Z")
                                .to_string(),
                        )
                    })
                    .collect();
                println!(
                    "  {}: {} -> {target} on {schedule}, policy {policy:?}; next: {}",
                    job.name,
                    file.display(),
                    next.join(", ")
                );
            }
            crate::config::TriggerSpec::Every { file, interval } => {
                println!(
                    "  {}: {} -> {target} every {}, policy {policy:?}",
                    job.name,
                    file.display(),
                    humantime::format_duration(*interval)
                );
            }
            crate::config::TriggerSpec::Watch(w) => {
                println!(
                    "  {}: files matching {:?} in {} -> {target}, policy {policy:?}",
                    job.name,
                    w.pattern.glob().glob(),
                    w.dir.display()
                );
            }
        }
    }
    println!("ok");
    Ok(())
}

async fn run_status(config: Option<&std::path::Path>, args: StatusArgs) -> Result<(), CliError> {
    let dir = match (args.state_dir, config) {
        (Some(d), _) => d,
        (None, Some(c)) => crate::config::load(c).map_err(CliError::usage)?.state_dir,
        (None, None) => {
            return Err(CliError::usage(anyhow::anyhow!(
                "status needs --config FILE or --state-dir DIR"
            )));
        }
    };
    if !dir.is_dir() {
        return Err(CliError::usage(anyhow::anyhow!(
            "no state folder at {} (has the daemon run yet?)",
            dir.display()
        )));
    }
    // Read only: a daemon may hold the folder, and a corrupt cache is its to move aside.
    let state = crate::state::StateStore::open_read_only(&dir).map_err(CliError::failure)?;
    let history = state.history().await.map_err(CliError::failure)?;
    if history.is_empty() {
        println!("no runs recorded yet in {}", dir.display());
    } else {
        print_history(&history);
    }
    for u in state.inflight().await.map_err(CliError::failure)? {
        println!(
            "in flight: upload {} of job {} ({}), created {}",
            u.upload_id,
            u.job,
            u.target,
            u.created.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(())
}

/// The last runs of each job, newest first.
fn print_history(history: &std::collections::BTreeMap<String, Vec<crate::state::RunRecord>>) {
    println!(
        "{:<24} {:<20} {:<17} {:>8} {:>10}  upload / error",
        "job", "finished (UTC)", "outcome", "attempts", "bytes"
    );
    for (job, runs) in history {
        for r in runs.iter().rev().take(5) {
            let detail = r
                .error
                .clone()
                .or_else(|| r.upload_id.as_ref().map(|u| u.0.clone()))
                .unwrap_or_default();
            println!(
                "{:<24} {:<20} {:<17} {:>8} {:>10}  {}",
                job,
                r.finished.format("%Y-%m-%d %H:%M:%S"),
                r.outcome.as_str(),
                r.attempts,
                ByteSize(r.bytes).to_string(),
                detail
            );
        }
    }
}

async fn run_upload(args: UploadArgs) -> Result<(), CliError> {
    let client = args.server.client()?;
    let target = AssetTarget {
        collection: args.collection.clone(),
        item: args.item.clone(),
        asset: args.asset.clone(),
    };
    let opts = UploadOptions {
        part_size: args.part_size,
        parallel: args.parallel.into(),
        part_retries: args.retries,
        skip_unchanged: !args.force,
        compress: args.compress.into(),
        bandwidth: args
            .bandwidth_limit
            .map(|r| {
                Arc::new(crate::upload::bandwidth::Bandwidth::new(
                    crate::upload::bandwidth::BandwidthLimit::constant(r),
                ))
            })
            .into_iter()
            .collect(),
        ..UploadOptions::default()
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let progress = Arc::new(crate::progress::Bar::new());
    let attempt = || {
        upload::upload_file(
            &client,
            &target,
            &args.file,
            &opts,
            progress.clone(),
            &cancel,
        )
    };
    let mut result = attempt().await;
    if let Err(UploadError::InProgress { upload, .. }) = &result {
        if !args.abort_in_progress {
            progress.clear();
            return Err(CliError::failure(anyhow::anyhow!(
                "{}; rerun with --abort-in-progress to abort it (only if nobody is still sending it)",
                result.err().map(|e| e.to_string()).unwrap_or_default()
            )));
        }
        let id = upload.upload_id.clone();
        match upload::abort_upload(&client, &target, &id, &opts).await {
            upload::AbortOutcome::Failed(e) => {
                progress.clear();
                return Err(CliError::failure(anyhow::anyhow!(
                    "cannot abort the blocking upload {id}: {e}"
                )));
            }
            outcome => eprintln!("blocking upload {id}: {outcome}"),
        }
        progress.reset();
        result = attempt().await;
    }
    progress.clear();
    let report = result?;
    if report.unchanged {
        println!(
            "unchanged: {target} already holds {} (checksum {}); nothing sent (--force uploads anyway)",
            args.file.display(),
            report.multihash
        );
        return Ok(());
    }
    println!(
        "uploaded {} to {target}: {} in {} part(s) of {}, upload {}, checksum {}, {:.1} s (digest {:.1} s, send {:.1} s){}",
        args.file.display(),
        ByteSize(report.bytes),
        report.parts,
        ByteSize(report.part_size),
        report
            .upload_id
            .as_ref()
            .map(|u| u.0.as_str())
            .unwrap_or("-"),
        report.multihash,
        report.total_time.as_secs_f64(),
        report.digest_time.as_secs_f64(),
        report.send_time.as_secs_f64(),
        if report.part_retries > 0 {
            format!(", {} part retries", report.part_retries)
        } else {
            String::new()
        },
    );
    Ok(())
}
