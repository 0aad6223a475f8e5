//! The STAC upload API as typed calls: one client for item and collection assets, v1 and v0.9.

mod auth;
mod client;
mod error;
mod types;

pub use auth::Auth;
pub use client::{AssetTarget, ClientConfig, StacClient};
pub use error::{ErrorClass, StacError, Step};
pub use types::*;

/// A URL without its query string: presigned URLs carry their signature there.
pub fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?<redacted>"),
        None => url.to_owned(),
    }
}
