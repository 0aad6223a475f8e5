//! How requests to the API authenticate. Presigned part URLs never carry API credentials.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// API credentials. Secrets are held in `SecretString`, which never prints its value.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials (reads, or an emulator without auth).
    #[default]
    None,
    /// HTTP Basic, sent up front: the server challenges with `Bearer` even where Basic works.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: SecretString,
    },
    /// `Authorization: Token <token>` (v0.9 and self-hosted servers).
    Token(SecretString),
    /// `Authorization: Bearer <token>` with a static token.
    Bearer(SecretString),
    /// `Authorization: Bearer <access token>` from AWS Cognito (v1 production): logged in with
    /// USER_PASSWORD_AUTH, renewed with REFRESH_TOKEN_AUTH before it expires.
    Cognito(CognitoAuth),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Cognito(c) => write!(f, "{c:?}"),
        }
    }
}

/// A Cognito user pool login: who, with which app client, at which endpoint.
#[derive(Clone)]
pub struct CognitoAuth {
    /// The Cognito user name.
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// The user pool's app client id (it must allow USER_PASSWORD_AUTH and REFRESH_TOKEN_AUTH).
    pub client_id: String,
    /// e.g. `eu-central-1`.
    pub region: String,
    /// `https://cognito-idp.<region>.amazonaws.com/` unless pointed elsewhere (a test double).
    pub endpoint: Url,
    /// Renew the access token this long before it expires, or at 80% of its life if that is
    /// sooner. A margin as long as the token's life renews it before every request.
    pub renew_margin: Duration,
}

/// The renewal margin of a production login: 5 minutes.
pub const DEFAULT_RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

impl CognitoAuth {
    /// A login at the region's public Cognito endpoint, renewed 5 minutes before expiry.
    pub fn new(
        username: impl Into<String>,
        password: SecretString,
        client_id: impl Into<String>,
        region: impl Into<String>,
    ) -> Self {
        let region = region.into();
        let endpoint = Self::regional_endpoint(&region).unwrap_or_else(|| {
            // Only reachable with a region that is not a DNS label; the login then fails with
            // a message naming this host rather than panicking here.
            Url::parse("https://cognito-idp.invalid/").expect("a literal URL")
        });
        CognitoAuth {
            username: username.into(),
            password,
            client_id: client_id.into(),
            region,
            endpoint,
            renew_margin: DEFAULT_RENEW_MARGIN,
        }
    }

    /// `https://cognito-idp.<region>.amazonaws.com/`, or `None` when `region` is not a
    /// lowercase AWS region name such as `eu-central-1`.
    pub fn regional_endpoint(region: &str) -> Option<Url> {
        let valid = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !region.starts_with('-')
            && !region.ends_with('-');
        if !valid {
            return None;
        }
        Url::parse(&format!("https://cognito-idp.{region}.amazonaws.com/")).ok()
    }

    /// The same login at another endpoint (e.g. moto in tests, a VPC endpoint).
    pub fn with_endpoint(mut self, endpoint: Url) -> Self {
        self.endpoint = super::without_userinfo(endpoint);
        self
    }

    /// The same login with another renewal margin.
    pub fn with_renew_margin(mut self, margin: Duration) -> Self {
        self.renew_margin = margin;
        self
    }
}

impl fmt::Debug for CognitoAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cognito")
            .field("username", &self.username)
            .field("password", &"***")
            .field("client_id", &self.client_id)
            .field("region", &self.region)
            .field("endpoint", &super::redact_url(self.endpoint.as_str()))
            .finish()
    }
}

impl Auth {
    /// Adds static credentials to a request. Cognito tokens are added by the client, which
    /// owns their renewal.
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None | Auth::Cognito(_) => req,
            Auth::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose_secret()))
            }
            Auth::Token(t) => req.header(
                reqwest::header::AUTHORIZATION,
                sensitive(format!("Token {}", t.expose_secret())),
            ),
            Auth::Bearer(t) => bearer(req, t),
        }
    }
}

/// Adds `Authorization: Bearer <token>`.
pub(crate) fn bearer(
    req: reqwest::RequestBuilder,
    token: &SecretString,
) -> reqwest::RequestBuilder {
    req.header(
        reqwest::header::AUTHORIZATION,
        sensitive(format!("Bearer {}", token.expose_secret())),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_every_secret() {
        let c = CognitoAuth::new(
            "alice",
            SecretString::from("hunter2-pass"),
            "client123",
            "eu-central-1",
        );
        assert_eq!(
            c.endpoint.as_str(),
            "https://cognito-idp.eu-central-1.amazonaws.com/"
        );
        let shown = format!("{:?}", Auth::Cognito(c));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("alice") && shown.contains("client123"),
            "{shown}"
        );
    }

    #[test]
    fn regions_must_be_dns_labels() {
        assert!(CognitoAuth::regional_endpoint("us-east-1").is_some());
        for bad in ["", "EU", "eu central", "evil.com/", "-x", "a_b"] {
            assert!(CognitoAuth::regional_endpoint(bad).is_none(), "{bad:?}");
        }
    }
}
