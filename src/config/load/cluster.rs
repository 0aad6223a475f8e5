//! `[cluster]`: the database the instances share, and this instance's lease.

use std::time::Duration;

use toml::Spanned;

use super::Checker;
use crate::config::raw::RawCluster;
use crate::config::{ClusterConfig, DEFAULT_HEARTBEAT, DEFAULT_LEASE};

/// The shortest lease: a renewal must fit in a heartbeat, and a heartbeat a third of a lease.
const MIN_LEASE: Duration = Duration::from_secs(3);

impl Checker<'_> {
    pub(super) fn cluster(&mut self, raw: &Spanned<RawCluster>) -> Option<ClusterConfig> {
        let span = raw.span();
        let raw = raw.get_ref();
        let url = self.cluster_url(raw, &span);
        let ca_file = match &raw.ca_file {
            None => Some(None),
            Some(p) => self.path(p, "ca_file").map(Some),
        };
        let instance = match &raw.instance {
            None => Some(None),
            Some(i) => self
                .value(Some(i), |name: &String| {
                    if name.is_empty()
                        || name.len() > 128
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                    {
                        Err(format!(
                            "instance {name:?}: expected 1 to 128 letters, digits, '-', '_', '.' or ':' (or no instance key: the host name and process id)"
                        ))
                    } else {
                        Ok(name.clone())
                    }
                })
                .map(|(n, _)| Some(n)),
        };
        let lease = match &raw.lease {
            None => Some(DEFAULT_LEASE),
            Some(_) => self
                .duration(raw.lease.as_ref(), "lease", |d| {
                    if d < MIN_LEASE {
                        Err(format!(
                            "lease must be at least {}s: a dead instance's work is taken over after it, and it must outlast several heartbeats",
                            MIN_LEASE.as_secs()
                        ))
                    } else if d > Duration::from_secs(600) {
                        Err("lease must be at most 10m: a dead instance's uploads wait that long".to_owned())
                    } else {
                        Ok(())
                    }
                })
                .map(|(d, _)| d),
        };
        let heartbeat = match &raw.heartbeat {
            None => lease.map(|l| DEFAULT_HEARTBEAT.min(l / 3)),
            Some(h) => {
                let lease = lease.unwrap_or(DEFAULT_LEASE);
                let checked = self.duration(Some(h), "heartbeat", |d| {
                    if d < Duration::from_millis(100) {
                        Err("heartbeat must be at least 100ms".to_owned())
                    } else if d > lease / 3 {
                        Err(format!(
                            "heartbeat {} is more than a third of the lease ({}): a lease must survive two missed renewals",
                            humantime::format_duration(d),
                            humantime::format_duration(lease)
                        ))
                    } else {
                        Ok(())
                    }
                });
                checked.map(|(d, _)| d)
            }
        };
        let expected_members = match &raw.expected_members {
            None => Some(None),
            Some(n) => self
                .value(Some(n), |n: &i64| match u32::try_from(*n) {
                    Ok(n) if (1..=1000).contains(&n) => Ok(n),
                    _ => Err(format!("expected_members = {n}: expected 1 to 1000")),
                })
                .map(|(n, _)| Some(n)),
        };
        Some(ClusterConfig {
            url: url?,
            ca_file: ca_file?,
            instance: instance?,
            lease: lease?,
            heartbeat: heartbeat?,
            expected_members: expected_members?,
        })
    }

    /// The database URL: from `url_env` or `url_file`, never inline (it holds a password).
    fn cluster_url(
        &mut self,
        raw: &RawCluster,
        span: &std::ops::Range<usize>,
    ) -> Option<secrecy::SecretString> {
        if let Some(inline) = &raw.url {
            self.diag.at(
                &inline.span(),
                "[cluster] url refused: a database URL holds its password; give it as url_env (an environment variable's name) or url_file (a file holding it)",
            );
            return None;
        }
        let text = match (&raw.url_env, &raw.url_file) {
            (Some(e), None) => self.secret_from_env(e, "url_env")?,
            (None, Some(f)) => self.secret_from_file(f, "url_file")?,
            (Some(_), Some(f)) => {
                self.diag.at(
                    &f.span(),
                    "url_file conflicts with url_env: expected exactly one of url_env and url_file",
                );
                return None;
            }
            (None, None) => {
                self.diag.at(
                    span,
                    "[cluster] needs the database's URL: expected url_env = \"VARIABLE\" or url_file = \"/path\" (postgres://user:password@host:5432/database)",
                );
                return None;
            }
        };
        let at = raw
            .url_env
            .as_ref()
            .or(raw.url_file.as_ref())
            .map(Spanned::span)
            .unwrap_or_else(|| span.clone());
        match url::Url::parse(text.trim()) {
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") && u.host().is_some() => {
                Some(secrecy::SecretString::from(text.trim().to_owned()))
            }
            Ok(u) => {
                self.diag.at(
                    &at,
                    format!(
                        "the database URL ({}) is not a PostgreSQL URL: expected postgres://user:password@host:5432/database",
                        stac_client::redact_url(u.as_str())
                    ),
                );
                None
            }
            Err(e) => {
                // Not shown: it may hold the password.
                self.diag.at(
                    &at,
                    format!("the database URL does not parse ({e}): expected postgres://user:password@host:5432/database"),
                );
                None
            }
        }
    }
}
