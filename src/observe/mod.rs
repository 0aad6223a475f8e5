//! Logging (and, later, metrics and health): how the daemon shows what it does.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for journald, Docker or a log shipper.
    Json,
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,stac_uploadd={default_level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr.with_max_level(tracing::Level::TRACE))
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

static LATENESS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
const LATENESS_KEPT: usize = 100_000;

/// Records how late a schedule fired (for the scheduler's p99 figure).
pub fn record_lateness(late: chrono::Duration) {
    let micros = late
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .clamp(0, u32::MAX as i64) as u32;
    let mut v = LATENESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if v.len() >= LATENESS_KEPT {
        // Keep the most recent ones: drop the older half at once rather than shift every time.
        v.drain(..LATENESS_KEPT / 2);
    }
    v.push(micros);
}

/// Fire lateness recorded so far, in microseconds, sorted.
pub fn lateness_sorted() -> Vec<u32> {
    let mut v = LATENESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    v.sort_unstable();
    v
}
