//! How the daemon shows what it does: logs, Prometheus metrics, `/healthz` and `/readyz`, and
//! the systemd notify protocol with its watchdog.

pub mod health;
pub mod http;
mod lifecycle;
mod logging;
pub mod metrics;
mod systemd;

pub use lifecycle::{ObserveOptions, Observer};
pub use logging::{LogFormat, escape_controls, init_logging};
