//! Checks `Authorization: Bearer` tokens against the Cognito user pool that issued them, the
//! way service-stac accepts them in production: a token Cognito's `GetUser` accepts is valid.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::error::ApiError;

/// How long a token Cognito accepted is trusted without asking again: long enough that an
/// upload's burst of calls costs one `GetUser`, short enough that a revoked token stops working.
const VALID_FOR: Duration = Duration::from_secs(30);

/// Asks Cognito about tokens and remembers the valid ones for a short while.
#[derive(Debug)]
pub(crate) struct TokenChecker {
    endpoint: String,
    http: reqwest::Client,
    /// sha256 of accepted tokens (never the tokens themselves) and when they were checked.
    valid: Mutex<HashMap<[u8; 32], Instant>>,
}

impl TokenChecker {
    pub(crate) fn new(endpoint: String) -> Self {
        TokenChecker {
            endpoint,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            valid: Mutex::default(),
        }
    }

    /// `Ok(true)` if Cognito knows the token, `Ok(false)` if it refuses it, and an error answer
    /// when Cognito cannot be asked.
    pub(crate) async fn check(&self, token: &str) -> Result<bool, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        {
            let mut valid = self.valid.lock().unwrap_or_else(PoisonError::into_inner);
            valid.retain(|_, at| now.duration_since(*at) < VALID_FOR);
            if valid.contains_key(&key) {
                return Ok(true);
            }
        }
        let unavailable = |what: String| {
            tracing::warn!(endpoint = %self.endpoint, "cannot check a token with Cognito: {what}");
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "The token cannot be checked now: the identity provider is unavailable.",
            )
        };
        let response = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/x-amz-json-1.1")
            .header("X-Amz-Target", "AWSCognitoIdentityProviderService.GetUser")
            .body(json!({ "AccessToken": token }).to_string())
            .send()
            .await
            .map_err(|e| unavailable(format!("{}", e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            self.valid
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, now);
            Ok(true)
        } else if status.is_server_error() {
            Err(unavailable(format!("HTTP {status}")))
        } else {
            // NotAuthorizedException: expired, revoked, or not from this user pool.
            Ok(false)
        }
    }
}
