use clap::Parser;
use stac_uploadd::cli::{self, Cli, ExitCode};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    stac_uploadd::observe::init_logging(cli.log_format, cli.log_level());
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::from(ExitCode::Success as u8),
        Err(e) => {
            // Every URL in an error is redacted where it is made; this is the net under them
            // (a config or clap error quoting the file's text, say).
            let shown = stac_uploadd::stac::redact_passwords(&cli::render_error(&e.error));
            eprintln!("error: {shown}");
            std::process::ExitCode::from(e.code as u8)
        }
    }
}
