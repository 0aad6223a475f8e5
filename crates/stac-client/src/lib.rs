//! The wire protocol of service-stac's asset uploads (data.geo.admin.ch) as typed calls: one
//! client for item and collection assets, v1 and v0.9; its authentication (basic, token,
//! bearer, Cognito); the typed error classes and the one retry table that turns a class into
//! an action (docs/retry.md); the server's rules on ids and media types.
//!
//! The lowest layer of stac-uploadd: it depends on no other crate of the workspace, and runs no
//! task of its own.

#![warn(missing_docs)]

pub mod answer;
mod auth;
mod body;
mod client;
mod cognito;
mod error;
pub mod localfile;
mod public;
pub mod retry;
pub mod rules;
mod tls;
mod types;
pub mod units;

pub use auth::{Auth, CognitoAuth, DEFAULT_RENEW_MARGIN};
pub use client::{
    AssetTarget, ClientBuildError, ClientConfig, ERROR_BODY_PREFIX, JSON_ANSWER_LIMIT, StacClient,
};
pub use error::{ErrorClass, StacError, Step};
pub use public::{PUBLIC_HEAD_WAITS, PublicAnswer, PublicExpect, PublicMismatch, PublicProblem};
pub use tls::{CaFileError, load_ca_file};
pub use types::*;

/// A URL as it may be shown (logs, errors, `check`): its password replaced by `***`
/// (`https://user:***@host/...`) and its query string dropped, since presigned URLs carry their
/// signature there. Every URL the program prints goes through here.
pub fn redact_url(url: &str) -> String {
    let shown = redact_passwords(url);
    match shown.split_once('?') {
        Some((base, _)) => format!("{base}?<redacted>"),
        None => shown,
    }
}

/// `text` with the password of every `scheme://user:password@host` in it replaced by `***`:
/// for free text that may quote a URL (a cause chain, a log line). A userinfo without a
/// password (`https://user@host`) is kept.
pub fn redact_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the path, query, fragment, or anything that cannot be in it.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                let userinfo = &authority[..userinfo_end];
                match userinfo.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A URL with its password (if any) replaced and its query dropped, for logs and Debug
/// output: [`redact_url`] of a parsed URL.
pub fn redact_userinfo(url: &url::Url) -> String {
    redact_url(url.as_str())
}

/// `url` without its user and password: reqwest sends a URL's userinfo as Basic auth, which
/// no request of ours may carry unless `[server.auth]` says so (the job file refuses it; a URL
/// from elsewhere, a flag or a server's answer, loses it here).
pub(crate) fn without_userinfo(mut url: url::Url) -> url::Url {
    // Fails only for URLs that cannot have userinfo (no host), which then have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_replaced() {
        assert_eq!(
            redact_url("https://user:secret@host:8443/api/stac/v1"),
            "https://user:***@host:8443/api/stac/v1"
        );
        assert_eq!(
            redact_url("http://u:p%40ss@h/x?X-Amz-Signature=s"),
            "http://u:***@h/x?<redacted>"
        );
        // An '@' in the password itself (unescaped): the last '@' ends the userinfo.
        assert_eq!(redact_url("http://u:a@b@h/"), "http://u:***@h/");
        assert_eq!(redact_url("https://user@host/"), "https://user@host/");
        assert_eq!(redact_url("https://host/a@b"), "https://host/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn every_url_in_a_text_loses_its_password() {
        let t = redact_passwords(
            "proxy http://p:pw1@proxy:3128 refused; server https://s:pw2@h/api, \"ftp://x:pw3@y\"",
        );
        assert!(
            !t.contains("pw1") && !t.contains("pw2") && !t.contains("pw3"),
            "{t}"
        );
        assert_eq!(
            t,
            "proxy http://p:***@proxy:3128 refused; server https://s:***@h/api, \"ftp://x:***@y\""
        );
    }
}
