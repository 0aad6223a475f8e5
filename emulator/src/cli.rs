//! `stac-uploadd emulator`: the emulator as a standalone server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::{Emulator, EmulatorAuth, EmulatorConfig, EmulatorTls, FaultSpec, Storage};
use crate::units::ByteSize;

/// Options of `stac-uploadd emulator`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Credentials required on writes: none, basic:USER:PASS, token:TOKEN, bearer:TOKEN, or
    /// cognito:ENDPOINT (Bearer tokens the Cognito user pool at ENDPOINT accepts).
    #[arg(
        long,
        env = "STAC_EMULATOR_AUTH",
        default_value = "none",
        hide_env_values = true,
        value_parser = AuthParser
    )]
    pub auth: EmulatorAuth,

    /// Refuse a second upload with the documented 400 (no upload_id) instead of 409.
    #[arg(long)]
    pub legacy_in_progress_400: bool,

    /// How long presigned part URLs stay valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub url_ttl: Duration,

    /// Keep part bodies in files under this directory instead of memory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// JSON file of collections, items and assets to create at start.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,

    /// Read rate limit per connection, e.g. 50MB/s.
    #[arg(long, value_name = "RATE")]
    pub bandwidth: Option<ByteSize>,

    /// Answer every call of the API and of the part URLs this much later, e.g. 20ms (the round
    /// trip of a distant server).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,

    /// Inject a fault: CALL:ACTION[:PARAM][:retry_after=V][:next=N|:p=F], e.g.
    /// put_part:503:next=2, complete:drop_after_commit, create:delay=2s:p=0.5,
    /// create:slow_answer=2s, create:429:retry_after=2, create:no_urls, complete:html_body,
    /// complete:stale_public (the public URL keeps the old object), complete:missing_public
    /// (the public URL answers 404) (repeatable).
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<FaultSpec>,

    /// Serve https with this PEM certificate (chain); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Parses `--auth` without echoing the value in errors, as clap would: it holds a secret.
#[derive(Debug, Clone, Copy)]
struct AuthParser;

impl clap::builder::TypedValueParser for AuthParser {
    type Value = EmulatorAuth;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<EmulatorAuth, clap::Error> {
        value
            .to_str()
            .ok_or_else(|| "not UTF-8".to_owned())
            .and_then(str::parse)
            .map_err(|e| {
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("--auth: {e}\n"),
                )
                .with_cmd(cmd)
            })
    }
}

/// Runs the emulator until ctrl-c or SIGTERM.
pub async fn run(args: EmulatorArgs) -> anyhow::Result<()> {
    let config = EmulatorConfig {
        auth: args.auth,
        legacy_in_progress_400: args.legacy_in_progress_400,
        url_ttl: args.url_ttl,
        storage: args.data_dir.map_or(Storage::Memory, Storage::Dir),
        seed: args.seed,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(EmulatorTls { cert, key }),
            // clap makes each of the two flags require the other.
            _ => None,
        },
        latency: args.latency,
    };
    let emulator = Emulator::start(args.listen, config)
        .await
        .with_context(|| format!("cannot start the emulator on {}", args.listen))?;
    emulator
        .faults()
        .set_bandwidth_limit(args.bandwidth.map(ByteSize::get));
    for fault in args.faults {
        tracing::info!(%fault, "fault injected");
        emulator.faults().add(fault);
    }
    tracing::info!(
        base_url = %emulator.base_url(),
        base_url_v09 = %emulator.base_url_v09(),
        "emulator listening"
    );
    shutdown_signal().await?;
    tracing::info!("emulator stopping");
    emulator.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for ctrl-c"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for ctrl-c")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    #[test]
    fn parses_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "--auth",
            "basic:me:se:cret",
            "--url-ttl",
            "3h",
            "--bandwidth",
            "50MB/s",
            "--fault",
            "put_part:503:next=2",
            "--fault",
            "complete:drop_after_commit",
        ])
        .unwrap();
        assert_eq!(
            cli.args.auth,
            EmulatorAuth::Basic {
                username: "me".into(),
                password: "se:cret".into()
            }
        );
        assert_eq!(cli.args.url_ttl, Duration::from_secs(3 * 3600));
        assert_eq!(cli.args.bandwidth, Some(ByteSize(50_000_000)));
        assert_eq!(cli.args.faults.len(), 2);
        assert_eq!(cli.args.listen.port(), 8080);
        assert!(!format!("{:?}", cli.args.auth).contains("se:cret"));

        let cli = Cli::try_parse_from([
            "x",
            "--auth",
            "cognito:http://127.0.0.1:5000/",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(
            cli.args.auth,
            EmulatorAuth::Cognito {
                endpoint: "http://127.0.0.1:5000/".into()
            }
        );
        assert_eq!(cli.args.tls_key, Some(PathBuf::from("k.pem")));
        assert!(Cli::try_parse_from(["x", "--auth", "cognito:nope"]).is_err());
        assert!(Cli::try_parse_from(["x", "--tls-key", "k.pem"]).is_err());

        let err = Cli::try_parse_from(["x", "--auth", "basic:secretonly"]).unwrap_err();
        assert!(!err.to_string().contains("secretonly"));
        assert!(Cli::try_parse_from(["x", "--fault", "put_part:teapot"]).is_err());
    }
}
