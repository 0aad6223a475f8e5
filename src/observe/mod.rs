//! How the daemon shows what it does: logs, Prometheus metrics, `/healthz` and `/readyz`, and
//! the systemd notify protocol with its watchdog.

pub mod health;
pub mod http;
pub mod lifecycle;
mod logging;
pub mod metrics;
pub mod systemd;

pub use lifecycle::{ObserveOptions, Observer};
pub use logging::{LogFormat, init_logging};

static LATENESS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
const LATENESS_KEPT: usize = 100_000;

/// Records how late a schedule fired: the histogram metric, and the recent values that the
/// scheduler benchmark reads for its percentiles.
pub fn record_lateness(late: chrono::Duration) {
    metrics::schedule_lateness(late.to_std().unwrap_or_default());
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
