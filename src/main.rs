use clap::Parser;
use stac_uploadd::cli::{self, Cli};
use stac_uploadd::exit::ExitCode;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    stac_uploadd::memory::return_large_buffers();
    let cli = Cli::parse();
    stac_uploadd::observe::init_logging(cli.log_format, cli.log_level());
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::from(ExitCode::Success as u8),
        Err(e) => {
            // Every URL in an error is redacted where it is made; this is the net under them
            // (a config or clap error quoting the file's text, say).
            let shown = stac_client::redact_passwords(&cli::render_error(&e.error));
            // A config error is one line per problem; within a line, file names and server
            // text are untrusted: no control character reaches the terminal raw.
            let shown: Vec<_> = shown
                .split('\n')
                .map(stac_uploadd::observe::escape_controls)
                .collect();
            eprintln!("error: {}", shown.join("\n"));
            std::process::ExitCode::from(e.code as u8)
        }
    }
}
