use super::*;

/// The bounds of `[server] max_concurrent_uploads`.
pub const MAX_CONCURRENT_UPLOADS: std::ops::RangeInclusive<i64> = 1..=256;

impl Checker<'_> {
    /// `[server] max_concurrent_uploads`, 1 to 256; `None` when refused.
    pub(super) fn max_concurrent_uploads(&mut self, raw: &RawServer) -> Option<usize> {
        let key = raw.max_concurrent_uploads.as_ref();
        match self.int_as(key, "max_concurrent_uploads", MAX_CONCURRENT_UPLOADS) {
            Some((n, _)) => Some(n),
            None if key.is_some() => None,
            None => Some(super::super::default_max_concurrent_uploads()),
        }
    }

    pub(super) fn server(&mut self, raw: &RawServer) -> Option<ServerConfig> {
        let instead = if self.from_flags {
            "--user and the password in STAC_UPLOADD_SECRET or --secret-file"
        } else {
            "[server.auth] username and password_env or password_file"
        };
        let url = self.value(Some(&raw.url), |u| {
            let url = url::Url::parse(u).map_err(|e| {
                format!("invalid url {u:?}: {e}; expected an http(s) URL such as \"https://data.geo.admin.ch/api/stac/v1\"")
            })?;
            match url.scheme() {
                "http" | "https" => {}
                other => return Err(format!("url {u:?} has scheme {other:?}: expected http or https")),
            }
            no_userinfo(&url, "url", instead)?;
            Ok(url)
        });
        let api_version = match raw.api_version.as_ref() {
            Some(v) => self
                .value(Some(v), |v| parse_enum::<ApiVersion>(v, "api_version"))
                .map(|v| v.0),
            None => Some(ApiVersion::default()),
        };
        if let (Some((u, span)), Some(api)) = (&url, api_version)
            && let Some(problem) = version_mismatch(u, api, raw.api_version.is_some())
        {
            self.diag.at(span, problem);
            return None;
        }
        let connect_timeout =
            self.positive_duration(raw.connect_timeout.as_ref(), "connect_timeout");
        let request_timeout =
            self.positive_duration(raw.request_timeout.as_ref(), "request_timeout");
        let auth = match &raw.auth {
            Some(a) => self.auth(a),
            None => Some(Auth::None),
        };
        let ca_file = raw.ca_file.as_ref().map(|raw| self.ca_file(raw));
        let proxy = raw.proxy.as_ref().map(|raw| self.proxy(raw));
        let connect_ok = raw.connect_timeout.is_none() || connect_timeout.is_some();
        let request_ok = raw.request_timeout.is_none() || request_timeout.is_some();
        if !(connect_ok && request_ok) {
            return None;
        }
        Some(ServerConfig {
            url: url?.0,
            api_version: api_version?,
            auth: auth?,
            connect_timeout: connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |v| v.0),
            request_timeout: request_timeout.map_or(DEFAULT_REQUEST_TIMEOUT, |v| v.0),
            ca_file: written(ca_file)?,
            proxy: written(proxy)?,
        })
    }

    /// `ca_file`: a readable PEM file with at least one usable certificate.
    pub(super) fn ca_file(&mut self, raw: &Spanned<String>) -> Option<PathBuf> {
        let path = self.path(raw, "ca_file")?;
        match stac_client::load_ca_file(&path) {
            Ok(_) => Some(path),
            Err(e) => {
                self.diag.at(
                    &raw.span(),
                    format!("{e}; ca_file names extra trusted root certificates in PEM form"),
                );
                None
            }
        }
    }

    /// `proxy`: an http(s) proxy URL; one with a password is a secret like any other.
    pub(super) fn proxy(&mut self, raw: &Spanned<String>) -> Option<url::Url> {
        let text = raw.get_ref();
        let expected = "expected a proxy URL such as \"http://proxy.example:3128\"";
        let problem = match url::Url::parse(text) {
            Err(e) => format!("invalid proxy {text:?}: {e}; {expected}"),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => format!(
                "proxy scheme {:?} is not supported: {expected} (http or https)",
                u.scheme()
            ),
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                format!("proxy {text:?} has no host: {expected}")
            }
            // On the command line, as before: `--proxy` is the one way to give its password there.
            Ok(u) if u.password().is_some() && self.from_flags => return Some(u),
            Ok(u) if u.password().is_some() => match private_file(self.source) {
                Ok(()) => return Some(u),
                // Said without the URL itself: it holds the password.
                Err(why) => format!(
                    "proxy with an inline password refused: {why}, so anyone on the machine could read it; chmod 600 {}",
                    self.source.display()
                ),
            },
            Ok(u) => return Some(u),
        };
        self.diag.at(&raw.span(), problem);
        None
    }

    pub(super) fn auth(&mut self, raw: &RawAuth) -> Option<Auth> {
        let kind = self
            .value(Some(&raw.kind), |k| parse_enum::<AuthKind>(k, "auth type"))?
            .0;
        let type_span = raw.kind.span();
        let type_name = raw.kind.get_ref().as_str();

        // Keys of another scheme are refused: a misplaced secret must not go unnoticed.
        let allowed: &[&str] = match kind {
            AuthKind::None => &[],
            AuthKind::Basic => &["username", "password", "password_env", "password_file"],
            AuthKind::Token | AuthKind::Bearer => &["token", "token_env", "token_file"],
            AuthKind::Cognito => &[
                "username",
                "password",
                "password_env",
                "password_file",
                "client_id",
                "region",
                "endpoint",
            ],
        };
        let keys = [
            ("username", &raw.username),
            ("password", &raw.password),
            ("password_env", &raw.password_env),
            ("password_file", &raw.password_file),
            ("token", &raw.token),
            ("token_env", &raw.token_env),
            ("token_file", &raw.token_file),
            ("client_id", &raw.client_id),
            ("region", &raw.region),
            ("endpoint", &raw.endpoint),
        ];
        let mut misplaced = false;
        for (key, value) in keys {
            if let Some(v) = value
                && !allowed.contains(&key)
            {
                let expected = if allowed.is_empty() {
                    "no other keys".to_owned()
                } else {
                    allowed.join(", ")
                };
                self.diag.at(
                    &v.span(),
                    format!(
                        "{key} does not apply to auth type {type_name:?}, which takes {expected}"
                    ),
                );
                misplaced = true;
            }
        }

        let auth = match kind {
            AuthKind::None => Some(Auth::None),
            AuthKind::Basic => {
                let username = self.username(raw, &type_span, type_name);
                let password = self.secret(
                    &type_span,
                    type_name,
                    "password",
                    [&raw.password_env, &raw.password_file, &raw.password],
                );
                Some(Auth::Basic {
                    username: username?,
                    password: password?,
                })
            }
            AuthKind::Cognito => self.cognito(raw, &type_span, type_name),
            AuthKind::Token | AuthKind::Bearer => {
                let token = self.secret(
                    &type_span,
                    type_name,
                    "token",
                    [&raw.token_env, &raw.token_file, &raw.token],
                )?;
                Some(if kind == AuthKind::Token {
                    Auth::Token(token)
                } else {
                    Auth::Bearer(token)
                })
            }
        };
        if misplaced { None } else { auth }
    }

    pub(super) fn username(
        &mut self,
        raw: &RawAuth,
        type_span: &Span,
        type_name: &str,
    ) -> Option<String> {
        match &raw.username {
            None => {
                self.diag.at(
                    type_span,
                    format!(
                        "auth type {type_name:?} needs a username: expected username = \"...\""
                    ),
                );
                None
            }
            Some(u) if u.get_ref().is_empty() => {
                self.diag
                    .at(&u.span(), "username is empty: expected the API user name");
                None
            }
            Some(u) => Some(u.get_ref().clone()),
        }
    }

    /// `type = "cognito"`: a user pool login (username, password, client_id, region, and an
    /// optional endpoint that replaces the region's public one).
    pub(super) fn cognito(
        &mut self,
        raw: &RawAuth,
        type_span: &Span,
        type_name: &str,
    ) -> Option<Auth> {
        let username = self.username(raw, type_span, type_name);
        let password = self.secret(
            type_span,
            type_name,
            "password",
            [&raw.password_env, &raw.password_file, &raw.password],
        );
        let client_id = match &raw.client_id {
            None => {
                self.diag.at(
                    type_span,
                    "auth type \"cognito\" needs client_id: expected the id of the user pool's app client",
                );
                None
            }
            Some(c) => self.value(Some(c), |c| {
                if c.trim().is_empty() {
                    Err("client_id is empty: expected the id of the user pool's app client".into())
                } else {
                    Ok(c.clone())
                }
            }),
        };
        let region = match &raw.region {
            None => {
                self.diag.at(
                    type_span,
                    "auth type \"cognito\" needs region: expected the user pool's AWS region, e.g. region = \"eu-central-1\"",
                );
                None
            }
            Some(r) => self.value(Some(r), |r| {
                CognitoAuth::regional_endpoint(r)
                    .map(|_| r.clone())
                    .ok_or_else(|| {
                        format!(
                            "invalid region {r:?}: expected an AWS region such as \"eu-central-1\""
                        )
                    })
            }),
        };
        let endpoint = raw.endpoint.as_ref().map(|e| {
            self.value(Some(e), |e| {
                let url = url::Url::parse(e).map_err(|err| {
                    format!("invalid endpoint {e:?}: {err}; expected an http(s) URL such as \"https://cognito-idp.eu-central-1.amazonaws.com/\"")
                })?;
                match url.scheme() {
                    "http" | "https" => {}
                    other => return Err(format!("endpoint {e:?} has scheme {other:?}: expected http or https")),
                }
                no_userinfo(&url, "endpoint", "username and password_env or password_file")?;
                Ok(url)
            })
            .map(|v| v.0)
        });
        let mut auth = CognitoAuth::new(username?, password?, client_id?.0, region?.0);
        if let Some(endpoint) = endpoint {
            auth = auth.with_endpoint(endpoint?);
        }
        Some(Auth::Cognito(auth))
    }

    /// The secret from exactly one of `<what>_env`, `<what>_file` or `<what>` (inline).
    pub(super) fn secret(
        &mut self,
        type_span: &Span,
        type_name: &str,
        what: &str,
        [env, file, inline]: [&Option<Spanned<String>>; 3],
    ) -> Option<SecretString> {
        let keys = [
            format!("{what}_env"),
            format!("{what}_file"),
            what.to_owned(),
        ];
        let choices = format!("{}, {} or {}", keys[0], keys[1], keys[2]);
        let mut set: Vec<(&str, &Spanned<String>)> = [env, file, inline]
            .into_iter()
            .zip(&keys)
            .filter_map(|(v, k)| v.as_ref().map(|v| (k.as_str(), v)))
            .collect();
        // Report a conflict at whichever was written later in the file.
        set.sort_by_key(|(_, v)| v.span().start);
        let (first_key, first) = match set.as_slice() {
            [] => {
                self.diag.at(
                    type_span,
                    format!("auth type {type_name:?} needs its {what}: expected one of {choices}"),
                );
                return None;
            }
            [one] => *one,
            [(first_key, first), rest @ ..] => {
                let (first_line, _) = self.diag.line_col(first.span().start);
                for (key, v) in rest {
                    self.diag.at(
                        &v.span(),
                        format!(
                            "{key} conflicts with {first_key} (line {first_line}): expected exactly one of {choices}"
                        ),
                    );
                }
                return None;
            }
        };
        let secret = if first_key.ends_with("_env") {
            self.secret_from_env(first, first_key)?
        } else if first_key.ends_with("_file") {
            self.secret_from_file(first, first_key)?
        } else {
            self.inline_secret(first, what)?
        };
        Some(SecretString::from(secret))
    }

    pub(super) fn secret_from_env(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
        let name = raw.get_ref();
        if name.contains("${") {
            // Reported as an unexpanded variable: `_env` names a variable, it does not expand one.
            return None;
        }
        let problem = if name.is_empty() {
            format!("{key} is empty: expected the name of an environment variable")
        } else {
            match (self.env)(name) {
                Some(v) if !v.is_empty() => return Some(v),
                Some(_) => format!("environment variable {name} (from {key}) is empty"),
                None => format!(
                    "environment variable {name} (from {key}) is not set: expected it to hold the secret"
                ),
            }
        };
        self.diag.at(&raw.span(), problem);
        None
    }

    pub(super) fn secret_from_file(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
        let path = self.path(raw, key)?;
        match read_secret_file(&path) {
            Ok(text) => {
                // Files written by `echo` or an editor end with a newline that is not the secret.
                let secret = text.trim_end_matches(['\n', '\r']);
                if secret.is_empty() {
                    self.diag
                        .at(&raw.span(), format!("{key} {} is empty", path.display()));
                    None
                } else {
                    Some(secret.to_owned())
                }
            }
            Err(e) => {
                self.diag.at(
                    &raw.span(),
                    format!("cannot read {key} {}: {e}", path.display()),
                );
                None
            }
        }
    }

    pub(super) fn inline_secret(&mut self, raw: &Spanned<String>, what: &str) -> Option<String> {
        if let Err(why) = private_file(self.source) {
            self.diag.at(
                &raw.span(),
                format!(
                    "inline {what} refused: {why}, so anyone on the machine could read it; use {what}_file or {what}_env instead, or chmod 600 {}",
                    self.source.display()
                ),
            );
            return None;
        }
        if raw.get_ref().is_empty() {
            self.diag.at(&raw.span(), format!("{what} is empty"));
            return None;
        }
        Some(raw.get_ref().clone())
    }

    pub(super) fn observe(&mut self, raw: &RawObserve) -> Option<ObserveConfig> {
        let listen = match &raw.listen {
            None => Ok(None),
            Some(l) => match l.get_ref().parse::<std::net::SocketAddr>() {
                Ok(a) => Ok(Some(a)),
                Err(_) => {
                    self.diag.at(
                        &l.span(),
                        format!("invalid listen address {:?}: expected an address such as \"127.0.0.1:9187\"", l.get_ref()),
                    );
                    Err(())
                }
            },
        };
        let health_timeout = match raw.health_timeout.as_ref() {
            None => Ok(None),
            Some(_) => self
                .duration(raw.health_timeout.as_ref(), "health_timeout", |d| {
                    if d < Duration::from_secs(1) {
                        Err("health_timeout must be at least 1s".to_owned())
                    } else {
                        Ok(())
                    }
                })
                .map(|(d, _)| Some(d))
                .ok_or(()),
        };
        Some(ObserveConfig {
            listen: listen.ok()?,
            health_timeout: health_timeout.ok()?,
        })
    }
}

/// A URL the client sends requests to may not carry credentials: reqwest would send them as
/// Basic auth whatever `[server.auth]` says, and a password there escapes the inline-secret
/// rule. Said without the password.
fn no_userinfo(url: &url::Url, key: &str, instead: &str) -> Result<(), String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    let what = if url.password().is_some() {
        "a user and password"
    } else {
        "a user name"
    };
    Err(format!(
        "{key} {} carries {what} (user:password@ before the host): credentials in a URL are refused, as they would be sent whatever [server.auth] says; give them as {instead} instead",
        stac_client::redact_url(url.as_str())
    ))
}

/// The API generation a URL's path names (`.../api/stac/v1`, `.../v0.9/`) against the one the
/// client will speak: the server would answer every call of the other generation wrongly.
fn version_mismatch(url: &url::Url, api: ApiVersion, explicit: bool) -> Option<String> {
    let last = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    let named = match last {
        "v1" => ApiVersion::V1,
        "v0.9" => ApiVersion::V09,
        _ => return None,
    };
    if named == api {
        return None;
    }
    let (in_url, set) = match named {
        ApiVersion::V1 => ("v1", "v0.9"),
        ApiVersion::V09 => ("v0.9", "v1"),
    };
    let how = if explicit { "" } else { " (the default)" };
    Some(format!(
        "url {} is the {in_url} API but api_version is \"{set}\"{how}: set api_version = \"{in_url}\", or give the .../{set} URL",
        stac_client::redact_url(url.as_str())
    ))
}

pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest secret file read: a password or token is far smaller.
pub(super) const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A secret file's text. Only a regular file of at most 64 KiB is read, so a path to a FIFO,
/// a device such as /dev/zero, or a large file by mistake cannot hang or fill the loader.
pub(super) fn read_secret_file(path: &Path) -> std::io::Result<String> {
    let bytes = super::super::read::read_bounded(path, MAX_SECRET_FILE, "a secret file")?;
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

/// The auth schemes: `[server.auth] type` and `--auth`, by the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    #[default]
    None,
    Basic,
    Token,
    Bearer,
    /// A Cognito login (user + password), as production v1 wants.
    Cognito,
}
