//! Logs on stderr: text for a terminal, JSON for journald, Docker or a log shipper. Colours
//! only on a terminal, and never a URL's password.

use std::ffi::OsStr;
use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for journald, Docker or a log shipper.
    Json,
}

/// Whether log lines get ANSI colour codes: text lines on a terminal only, unless `NO_COLOR`
/// is set to anything but the empty string (<https://no-color.org>). A file, a pipe, journald
/// or a JSON consumer gets plain text.
pub fn use_ansi(format: LogFormat, stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    format == LogFormat::Text && stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,stac_uploadd={default_level}")));
    let ansi = use_ansi(
        format,
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr)
        .with_ansi(ansi)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // A second init (tests calling main paths twice) keeps the first subscriber.
    let _ = result;
}

/// Stderr, with the password of any URL in a log line replaced by `***`
/// ([`crate::stac::redact_passwords`]): a net under the URLs each call site already redacts.
struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = Redacting<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting(io::stderr())
    }
}

/// A writer that redacts URL passwords in what it is given. The fmt layer writes each event
/// whole, with one `write_all`, so a URL is never split between two writes.
struct Redacting<W>(W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) if text.contains("://") => {
                self.0
                    .write_all(crate::stac::redact_passwords(text).as_bytes())?;
                Ok(buf.len())
            }
            _ => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_for_text_on_a_terminal_without_no_color() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(use_ansi(LogFormat::Text, true, None));
        assert!(use_ansi(LogFormat::Text, true, empty));
        assert!(!use_ansi(LogFormat::Text, true, set));
        assert!(!use_ansi(LogFormat::Text, false, None));
        assert!(!use_ansi(LogFormat::Json, true, None));
        assert!(!use_ansi(LogFormat::Json, false, None));
    }

    #[test]
    fn a_log_line_loses_url_passwords() {
        let mut w = Redacting(Vec::new());
        w.write_all(b"proxy http://u:hunter2@p:3128 refused\n")
            .unwrap();
        w.write_all(b"plain line\n").unwrap();
        let out = String::from_utf8(w.0).unwrap();
        assert_eq!(out, "proxy http://u:***@p:3128 refused\nplain line\n");
    }
}
