//! How requests to the API authenticate. Presigned part URLs never carry API credentials.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// API credentials. Secrets are held in `SecretString`, which never prints its value.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials (reads, or an emulator without auth).
    #[default]
    None,
    /// HTTP Basic, sent up front: the server challenges with `Bearer` even where Basic works.
    Basic {
        username: String,
        password: SecretString,
    },
    /// `Authorization: Token <token>` (v0.9 and self-hosted servers).
    Token(SecretString),
    /// `Authorization: Bearer <token>` with a static token. Cognito-issued tokens that renew
    /// themselves plug in here as a further variant.
    Bearer(SecretString),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Auth {
    /// Adds the credentials to a request.
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose_secret()))
            }
            Auth::Token(t) => req.header(
                reqwest::header::AUTHORIZATION,
                sensitive(format!("Token {}", t.expose_secret())),
            ),
            Auth::Bearer(t) => req.header(
                reqwest::header::AUTHORIZATION,
                sensitive(format!("Bearer {}", t.expose_secret())),
            ),
        }
    }
}

/// A header value marked sensitive, so that http's Debug output hides it.
fn sensitive(v: String) -> reqwest::header::HeaderValue {
    match reqwest::header::HeaderValue::try_from(v) {
        Ok(mut h) => {
            h.set_sensitive(true);
            h
        }
        // A token with characters not allowed in a header: send nothing rather than panic; the
        // server will answer 401, which names the problem.
        Err(_) => reqwest::header::HeaderValue::from_static(""),
    }
}
