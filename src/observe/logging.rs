//! Logs on stderr: text for a terminal, JSON for journald, Docker or a log shipper. Colours
//! only on a terminal, and never a URL's password.
//!
//! Field values and messages carry untrusted text (file names are any bytes but `/` and NUL;
//! server answers are anything): a newline in a file name must not write a second, well-formed
//! but false log line, nor an ESC colour codes into a log file. The text format escapes every
//! control character (C0, DEL, C1), the line and paragraph separators and the bidi overrides in
//! every value and message ([`escape_controls`]); the JSON format's strings are escaped by
//! serde_json already (a newline is `\n`, an ESC `\u001b`), so one event is always one line.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

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
pub(super) fn use_ansi(
    format: LogFormat,
    stderr_is_terminal: bool,
    no_color: Option<&OsStr>,
) -> bool {
    format == LogFormat::Text && stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The filter of the workspace's crates at `level` (the daemon, the upload session, the
/// client, and the emulator a `demo` runs in-process), everything else at warn.
fn default_filter(level: &str) -> String {
    [
        "stac_uploadd",
        "stac_uploadd_emulator",
        "stac_upload",
        "stac_client",
    ]
    .iter()
    .fold("warn".to_owned(), |f, krate| format!("{f},{krate}={level}"))
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(default_level)));
    let ansi = use_ansi(
        format,
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    use tracing_subscriber::util::SubscriberInitExt as _;
    // A second init (tests calling main paths twice) keeps the first subscriber.
    let _ = subscriber(format, filter, ansi, RedactingStderr).try_init();
}

/// The subscriber [`init_logging`] installs, writing to `writer`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Text => Box::new(builder.fmt_fields(EscapingFields).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .finish(),
        ),
    }
}

/// `text` with every character that could forge or restyle a log line (or a line of command
/// output) escaped: `\n`, `\r`, `\t`, and `\u{..}` for the other C0 and C1 controls, DEL,
/// U+2028/U+2029 and the bidi controls. Borrowed when there is none, the usual case.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// The text format's fields (of events and spans) as tracing's default writes them
/// (`message key=value ...`, names in italics on a terminal), with every value and the message
/// escaped by [`escape_controls`].
struct EscapingFields;

impl<'writer> FormatFields<'writer> for EscapingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            ansi: writer.has_ansi_escapes(),
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    ansi: bool,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        let value = escape_controls(value);
        let name = field.name();
        if name == "message" {
            return self.writer.write_str(&value);
        }
        // tracing's `r#type` is shown as `type`, as by the default fields.
        let name = name.strip_prefix("r#").unwrap_or(name);
        if self.ansi {
            write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m{value}")
        } else {
            write!(self.writer, "{name}={value}")
        }
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        // As the default fields do: a message as it is, any other string quoted (Debug).
        if field.name() == "message" {
            self.result = self.write(field, value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        // As the default fields do: the error, then `<name>.sources=[cause, ...]`.
        let mut text = value.to_string();
        let mut sources = Vec::new();
        let mut source = value.source();
        while let Some(cause) = source {
            sources.push(cause.to_string());
            source = cause.source();
        }
        if !sources.is_empty() {
            let _ = write!(text, " {}.sources=[{}]", field.name(), sources.join(", "));
        }
        self.result = self.write(field, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Events from the `log` crate carry their metadata as `log.*` fields, which the
        // formatter has shown already (as the default fields skip them).
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = self.write(field, &format!("{value:?}"));
    }
}

/// Stderr, with the password of any URL in a log line replaced by `***`
/// ([`stac_client::redact_passwords`]): a net under the URLs each call site already redacts.
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
                    .write_all(stac_client::redact_passwords(text).as_bytes())?;
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

    /// Found when the protocol and the session moved into crates of their own: the filter named
    /// only `stac_uploadd`, so `-v` lost every request line and the default lost "upload created".
    #[test]
    fn the_default_filter_lets_every_crate_of_the_workspace_speak() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(default_filter("debug")))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "stac_client::client", "from the client");
            tracing::debug!(target: "stac_upload::session", "from the session");
            tracing::debug!(target: "stac_uploadd::supervisor", "from the supervisor");
            tracing::debug!(target: "stac_uploadd_emulator::api", "from the emulator");
            tracing::debug!(target: "hyper::client", "from a dependency");
            tracing::warn!(target: "hyper::client", "a dependency's warning");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        for line in [
            "from the client",
            "from the session",
            "from the supervisor",
            "from the emulator",
            "a dependency's warning",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("from a dependency"), "{text}");
    }

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

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What one event with hostile fields and message writes in `format`.
    fn hostile_event(format: LogFormat, ansi: bool) -> String {
        let out = Captured::default();
        let subscriber = subscriber(format, EnvFilter::new("info"), ansi, out.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("watch", dir = %"/in\nINFO span forged");
            let _in = span.enter();
            let name = "a.tif\nINFO forged: upload succeeded \x1b[31mred\u{202e}fit.exe";
            tracing::info!(path = %name, asset = ?name, "file ready \r{}", name);
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_text_log_line_escapes_control_characters_in_fields_and_message() {
        let text = hostile_event(LogFormat::Text, false);
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(text.ends_with('\n'), "{text:?}");
        assert!(
            !text.contains('\x1b') && !text.contains('\r') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(
            text.contains(
                r"path=a.tif\nINFO forged: upload succeeded \u{1b}[31mred\u{202e}fit.exe"
            ),
            "{text:?}"
        );
        assert!(
            text.contains(r"file ready \ra.tif\nINFO forged"),
            "{text:?}"
        );
        assert!(text.contains(r"dir=/in\nINFO span forged"), "{text:?}");
    }

    #[test]
    fn a_text_log_line_on_a_terminal_keeps_tracings_own_colours_only() {
        let text = hostile_event(LogFormat::Text, true);
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(text.contains("\x1b[3mpath\x1b[0m"), "{text:?}");
        assert!(!text.contains("\x1b[31m"), "{text:?}");
        assert!(text.contains(r"\u{1b}[31mred"), "{text:?}");
    }

    #[test]
    fn a_json_log_line_escapes_control_characters() {
        let text = hostile_event(LogFormat::Json, false);
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(
            text.contains(r"a.tif\nINFO forged") && text.contains(r"\u001b[31m"),
            "{text:?}"
        );
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            line["path"],
            "a.tif\nINFO forged: upload succeeded \x1b[31mred\u{202e}fit.exe"
        );
        assert_eq!(line["span"]["dir"], "/in\nINFO span forged");
    }

    #[test]
    fn ordinary_events_are_written_as_by_tracings_default_fields() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let emit = || {
            let span = tracing::info_span!("run", job = "radar", attempt = 2);
            let _in = span.enter();
            let e = Outer(std::io::Error::other("inner"));
            tracing::warn!(
                path = %"/in/a b.tif",
                asset = "a.tif",
                r#type = "image/tiff",
                bytes = 42u64,
                ok = true,
                error = &e as &(dyn std::error::Error + 'static),
                "retrying in {} s",
                3
            );
        };
        let default = Captured::default();
        let ours = Captured::default();
        let plain = |w: Captured| {
            tracing_subscriber::fmt()
                .with_writer(w)
                .with_ansi(false)
                .with_target(false)
                .without_time()
        };
        tracing::subscriber::with_default(plain(default.clone()).finish(), emit);
        tracing::subscriber::with_default(
            plain(ours.clone()).fmt_fields(EscapingFields).finish(),
            emit,
        );
        let text = |c: Captured| String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text(ours), text(default));
    }

    #[test]
    fn escaping_leaves_ordinary_text_alone() {
        assert!(matches!(
            escape_controls("résumé 2024/06 a\\b \"q\" 日本"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\u{85}b\u{7f}\u{0}"),
            r"a\u{85}b\u{7f}\u{0}"
        );
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
