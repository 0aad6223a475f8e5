//! The STAC upload API as typed calls: one client for item and collection assets, v1 and v0.9.

pub mod answer;
mod auth;
mod client;
mod cognito;
mod error;
pub mod rules;
mod tls;
mod types;

pub use auth::{Auth, CognitoAuth, DEFAULT_RENEW_MARGIN};
pub use client::{AssetTarget, ClientBuildError, ClientConfig, StacClient, redact_userinfo};
pub use error::{ErrorClass, StacError, Step};
pub use tls::{CaFileError, load_ca_file};
pub use types::*;

/// A URL without its query string: presigned URLs carry their signature there.
pub fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?<redacted>"),
        None => url.to_owned(),
    }
}
