//! Reading and checking the job file: shape by serde, meaning here, every problem located.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use globset::{Glob, GlobBuilder, GlobSetBuilder};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;

use super::error::{ConfigError, Diagnostics};
use super::metadata::{AssetMetadata, ItemMetadata, ItemTime, TimeValue, bbox_polygon};
use super::raw::{
    DurationText, Int, RawAssetMetadata, RawAuth, RawConfig, RawItemMetadata, RawJob, RawObserve,
    RawProperties, RawServer, RawSettings, RawWatch, RawWindow, Size,
};
use super::server::{self as server_rules, MAX_TITLE};
use super::template::{IdExtension, IdTemplate, TemplateError, TextTemplate};
use super::{Config, JobSpec, ObserveConfig, ServerConfig, TriggerSpec};
use crate::stac::rules;
use crate::stac::{ApiVersion, Auth, CognitoAuth};
use crate::supervisor::{PolicyKind, PolicySpec};
use crate::trigger::watch::DEFAULT_IGNORE;
use crate::trigger::{Schedule, ScheduleError, WatchSpec};
use crate::units::ByteSize;
use crate::upload::bandwidth::{BandwidthLimit, BandwidthWindow};
use crate::upload::{CompressMode, MAX_PART_SIZE, MIN_PART_SIZE, UploadOptions};

type Span = Range<usize>;

const PARALLEL: std::ops::RangeInclusive<i64> = 1..=32;
const RETRIES: std::ops::RangeInclusive<i64> = 0..=10;
/// Below this, retries hammer a server that is already in trouble.
const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);
const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Below this, `every` is a busy loop rather than a schedule.
const MIN_EVERY: Duration = Duration::from_secs(1);
const EPSG: std::ops::RangeInclusive<i64> = 1..=999_999;

/// Reads and checks the job file at `path`; secrets named by `*_env` come from the process
/// environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Checks the job file `text` read from `source` (which locates errors and anchors relative
/// paths), looking environment variables up with `env`.
pub fn parse(
    text: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            // serde stops at the first problem of shape; there is only one to report.
            let mut diag = Diagnostics::new(text);
            diag.at_offset(e.span().map_or(0, |s| s.start), tidy(e.message()));
            return Err(diag.into_error(source));
        }
    };
    let mut checker = Checker {
        diag: Diagnostics::new(text),
        source,
        folder: config_folder(source),
        env,
        api_version: ApiVersion::default(),
    };
    let config = checker.config(&raw);
    // Parsed a second time, as a tree with every span: the raw types know only their own keys.
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        for (span, message) in server_rules::unexpanded_vars(doc.get_ref()) {
            checker.diag.at(&span, message);
        }
    }
    checker.diag.finish(source)?;
    // Every path that yields `None` records an error, so a clean run has built everything.
    Ok(config.expect("a job file without errors yields a config"))
}

/// serde and toml quote names with backticks; the rest of our messages use double quotes.
fn tidy(message: &str) -> String {
    message.trim_end().replace('`', "\"")
}

/// The folder relative paths are resolved against: the config file's, made absolute so that it
/// still holds if the daemon changes directory.
fn config_folder(source: &Path) -> PathBuf {
    let source = std::path::absolute(source).unwrap_or_else(|_| source.to_owned());
    match source.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Parses one of our serde enums from a string, so that its names stay defined in one place.
fn parse_enum<'de, T: Deserialize<'de>>(s: &'de str, key: &str) -> Result<T, String> {
    let de: serde::de::value::StrDeserializer<'de, serde::de::value::Error> = s.into_deserializer();
    T::deserialize(de).map_err(|e| format!("invalid {key} {s:?}: {}", tidy(&e.to_string())))
}

fn fmt_duration(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// The auth schemes of `[server.auth] type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AuthKind {
    None,
    Basic,
    Token,
    Bearer,
    Cognito,
}

/// The inheritable settings of one table, each valid value with where it was written.
#[derive(Debug, Clone, Default)]
struct Layer {
    part_size: Option<(ByteSize, Span)>,
    parallel: Option<(usize, Span)>,
    policy: Option<(PolicyKind, Span)>,
    auto_threshold: Option<(Duration, Span)>,
    retries: Option<(u32, Span)>,
    retry_min_delay: Option<(Duration, Span)>,
    retry_max_delay: Option<(Duration, Span)>,
    stale_after: Option<(Duration, Span)>,
    run_timeout: Option<(Duration, Span)>,
    timezone: Option<(Tz, Span)>,
    compress: Option<(CompressMode, Span)>,
    skip_unchanged: Option<(bool, Span)>,
    /// `None` inside: "unlimited".
    bandwidth_limit: Option<(Option<ByteSize>, Span)>,
    bandwidth_timetable: Option<(Vec<BandwidthWindow>, Span)>,
    jitter: Option<(Duration, Span)>,
    catch_up: Option<(bool, Span)>,
}

impl Layer {
    /// This table's values, the `parent`'s where this one has none.
    fn or(&self, parent: &Layer) -> Layer {
        Layer {
            part_size: self.part_size.clone().or_else(|| parent.part_size.clone()),
            parallel: self.parallel.clone().or_else(|| parent.parallel.clone()),
            policy: self.policy.clone().or_else(|| parent.policy.clone()),
            auto_threshold: self
                .auto_threshold
                .clone()
                .or_else(|| parent.auto_threshold.clone()),
            retries: self.retries.clone().or_else(|| parent.retries.clone()),
            retry_min_delay: self
                .retry_min_delay
                .clone()
                .or_else(|| parent.retry_min_delay.clone()),
            retry_max_delay: self
                .retry_max_delay
                .clone()
                .or_else(|| parent.retry_max_delay.clone()),
            stale_after: self
                .stale_after
                .clone()
                .or_else(|| parent.stale_after.clone()),
            run_timeout: self
                .run_timeout
                .clone()
                .or_else(|| parent.run_timeout.clone()),
            timezone: self.timezone.clone().or_else(|| parent.timezone.clone()),
            compress: self.compress.clone().or_else(|| parent.compress.clone()),
            skip_unchanged: self
                .skip_unchanged
                .clone()
                .or_else(|| parent.skip_unchanged.clone()),
            bandwidth_limit: self
                .bandwidth_limit
                .clone()
                .or_else(|| parent.bandwidth_limit.clone()),
            bandwidth_timetable: self
                .bandwidth_timetable
                .clone()
                .or_else(|| parent.bandwidth_timetable.clone()),
            jitter: self.jitter.clone().or_else(|| parent.jitter.clone()),
            catch_up: self.catch_up.clone().or_else(|| parent.catch_up.clone()),
        }
    }

    /// The zone of schedules, templates and timetables.
    fn timezone(&self) -> Tz {
        self.timezone.as_ref().map_or(Tz::UTC, |v| v.0)
    }

    /// The limit of `bandwidth_limit` and `bandwidth_timetable`, read in `tz`; `None` when
    /// nothing is limited.
    fn bandwidth(&self, tz: Tz) -> Option<BandwidthLimit> {
        bandwidth_limit(
            self.bandwidth_limit.as_ref().map(|v| v.0),
            self.bandwidth_timetable.as_ref().map(|v| v.0.clone()),
            tz,
        )
    }

    fn policy(&self) -> PolicySpec {
        let d = PolicySpec::default();
        PolicySpec {
            kind: self.policy.as_ref().map_or(d.kind, |v| v.0),
            auto_threshold: self
                .auto_threshold
                .as_ref()
                .map_or(d.auto_threshold, |v| v.0),
            retries: self.retries.as_ref().map_or(d.retries, |v| v.0),
            retry_min_delay: self
                .retry_min_delay
                .as_ref()
                .map_or(d.retry_min_delay, |v| v.0),
            retry_max_delay: self
                .retry_max_delay
                .as_ref()
                .map_or(d.retry_max_delay, |v| v.0),
            stale_after: self.stale_after.as_ref().map_or(d.stale_after, |v| v.0),
            run_timeout: self.run_timeout.as_ref().map_or(d.run_timeout, |v| v.0),
        }
    }

    /// Part size, parallelism, compression and skipping are per job; the part-level retry and
    /// timeout settings keep their tuned defaults. The bandwidth limiters are shared objects,
    /// attached by whoever runs the jobs.
    fn upload(&self) -> UploadOptions {
        let d = UploadOptions::default();
        UploadOptions {
            part_size: self.part_size.as_ref().map_or(d.part_size, |v| v.0),
            parallel: self.parallel.as_ref().map_or(d.parallel, |v| v.0),
            compress: self.compress.as_ref().map_or(d.compress, |v| v.0),
            skip_unchanged: self
                .skip_unchanged
                .as_ref()
                .map_or(d.skip_unchanged, |v| v.0),
            ..d
        }
    }
}

struct Checker<'a> {
    diag: Diagnostics<'a>,
    source: &'a Path,
    folder: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// `[server] api_version` as far as it was read: the asset fields differ.
    api_version: ApiVersion,
}

impl Checker<'_> {
    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let state_dir = self.state_dir(raw.state_dir.as_ref());
        let server = self.server(&raw.server);
        if let Some(s) = &server {
            self.api_version = s.api_version;
        }

        let defaults = self.layer(raw.defaults.settings());
        self.check_delay_order(&defaults, &Layer::default());
        let bandwidth = self.server_bandwidth(&raw.server, defaults.timezone());

        if raw.job.is_empty() {
            self.diag.at_offset(
                0,
                "no [[job]] defined: expected at least one [[job]] table (a schedule or a watched folder)",
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut targets: HashMap<(&str, Option<&str>, &str), &RawJob> = HashMap::new();
        let mut jobs = Vec::with_capacity(raw.job.len());
        for job in &raw.job {
            self.check_name(&job.name, &mut seen);
            self.check_target(job, &mut targets);
            jobs.push(self.job(job, &defaults));
        }
        let observe = self.observe(&raw.observe);
        Some(Config {
            source: self.source.to_owned(),
            state_dir: state_dir?,
            server: server?,
            jobs: jobs.into_iter().collect::<Option<Vec<_>>>()?,
            observe: observe?,
            bandwidth_limit: bandwidth?,
        })
    }

    // --- values -------------------------------------------------------------------------------

    /// Runs `check` on a value written in the file, recording its error at the value.
    fn value<R, T>(
        &mut self,
        raw: Option<&Spanned<R>>,
        check: impl FnOnce(&R) -> Result<T, String>,
    ) -> Option<(T, Span)> {
        let raw = raw?;
        match check(raw.get_ref()) {
            Ok(v) => Some((v, raw.span())),
            Err(msg) => {
                self.diag.at(&raw.span(), msg);
                None
            }
        }
    }

    fn duration(
        &mut self,
        raw: Option<&Spanned<DurationText>>,
        key: &str,
        check: impl FnOnce(Duration) -> Result<(), String>,
    ) -> Option<(Duration, Span)> {
        self.value(raw, |t| {
            let d = humantime::parse_duration(t.0.trim()).map_err(|e| {
                format!(
                    "invalid duration {:?} for {key}: {e}; expected e.g. \"90s\", \"5m\" or \"1h 30m\"",
                    t.0
                )
            })?;
            check(d).map(|()| d)
        })
    }

    fn positive_duration(
        &mut self,
        raw: Option<&Spanned<DurationText>>,
        key: &str,
    ) -> Option<(Duration, Span)> {
        self.duration(raw, key, |d| {
            if d.is_zero() {
                Err(format!("{key} must be longer than 0"))
            } else {
                Ok(())
            }
        })
    }

    fn int_in(
        &mut self,
        raw: Option<&Spanned<Int>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<(i64, Span)> {
        self.value(raw, |v| {
            if range.contains(&v.0) {
                Ok(v.0)
            } else {
                Err(format!(
                    "{key} = {} is out of range: expected {} to {}",
                    v.0,
                    range.start(),
                    range.end()
                ))
            }
        })
    }

    fn layer(&mut self, s: RawSettings<'_>) -> Layer {
        let parallel = self
            .int_in(s.parallel, "parallel", PARALLEL)
            .map(|(v, span)| (usize::try_from(v).expect("1..=32 fits usize"), span));
        let retries = self
            .int_in(s.retries, "retries", RETRIES)
            .map(|(v, span)| (u32::try_from(v).expect("0..=10 fits u32"), span));
        Layer {
            part_size: self.value(s.part_size, part_size),
            parallel,
            policy: self.value(s.policy, |p| parse_enum(p, "policy")),
            auto_threshold: self.duration(s.auto_threshold, "auto_threshold", |_| Ok(())),
            retries,
            retry_min_delay: self.duration(s.retry_min_delay, "retry_min_delay", |d| {
                if d < MIN_RETRY_DELAY {
                    Err(format!(
                        "retry_min_delay = {} is too short: expected at least 100ms, so that retries do not hammer a struggling server",
                        fmt_duration(d)
                    ))
                } else {
                    Ok(())
                }
            }),
            retry_max_delay: self.duration(s.retry_max_delay, "retry_max_delay", |_| Ok(())),
            stale_after: self.positive_duration(s.stale_after, "stale_after"),
            run_timeout: self.positive_duration(s.run_timeout, "run_timeout"),
            timezone: self.value(s.timezone, |t| {
                Tz::from_str(t).map_err(|_| ScheduleError::TimeZone(t.clone()).to_string())
            }),
            compress: self.value(s.compress, |c| compress_mode(c)),
            skip_unchanged: s.skip_unchanged.map(|v| (*v.get_ref(), v.span())),
            bandwidth_limit: self.value(s.bandwidth_limit, |r| rate(r, "bandwidth_limit")),
            bandwidth_timetable: self.timetable(s.bandwidth_timetable),
            jitter: self.duration(s.jitter, "jitter", |_| Ok(())),
            catch_up: s.catch_up.map(|v| (*v.get_ref(), v.span())),
        }
    }

    /// `[server] bandwidth_limit` and `bandwidth_timetable`, read in the defaults' zone. `None`
    /// when refused (the error is recorded), `Some(None)` when nothing is limited.
    fn server_bandwidth(&mut self, raw: &RawServer, tz: Tz) -> Option<Option<BandwidthLimit>> {
        let limit = self.value(raw.bandwidth_limit.as_ref(), |r| rate(r, "bandwidth_limit"));
        let windows = self.timetable(raw.bandwidth_timetable.as_ref());
        let refused = (raw.bandwidth_limit.is_some() && limit.is_none())
            || (raw.bandwidth_timetable.is_some() && windows.is_none());
        if refused {
            return None;
        }
        Some(bandwidth_limit(
            limit.map(|v| v.0),
            windows.map(|v| v.0),
            tz,
        ))
    }

    /// `bandwidth_timetable = [{ from = "07:00", to = "19:00", limit = "5MB/s" }, ...]`.
    fn timetable(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<RawWindow>>>>,
    ) -> Option<(Vec<BandwidthWindow>, Span)> {
        let raw = raw?;
        let mut windows = Vec::with_capacity(raw.get_ref().len());
        let mut ok = true;
        for w in raw.get_ref() {
            let w = w.get_ref();
            let from = self.value(Some(&w.from), |t| time_of_day(t, "from"));
            let to = self.value(Some(&w.to), |t| time_of_day(t, "to"));
            let limit = self.value(Some(&w.limit), |r| rate(r, "limit"));
            match (from, to, limit) {
                (Some(from), Some(to), Some(limit)) => windows.push(BandwidthWindow {
                    from: from.0,
                    to: to.0,
                    rate: limit.0,
                }),
                _ => ok = false,
            }
        }
        ok.then(|| (windows, raw.span()))
    }

    /// retry_min_delay <= retry_max_delay, checked where either is set, against the inherited
    /// value of the other.
    fn check_delay_order(&mut self, own: &Layer, inherited: &Layer) {
        let merged = own.or(inherited).policy();
        if merged.retry_min_delay <= merged.retry_max_delay {
            return;
        }
        let Some(span) = own
            .retry_min_delay
            .as_ref()
            .or(own.retry_max_delay.as_ref())
            .map(|v| v.1.clone())
        else {
            return;
        };
        self.diag.at(
            &span,
            format!(
                "retry_min_delay ({}) is longer than retry_max_delay ({}): expected retry_min_delay <= retry_max_delay",
                fmt_duration(merged.retry_min_delay),
                fmt_duration(merged.retry_max_delay)
            ),
        );
    }

    /// A string that must not be empty.
    fn non_empty(&mut self, raw: &Spanned<String>, what: &str) -> Option<String> {
        if raw.get_ref().trim().is_empty() {
            self.diag.at(
                &raw.span(),
                format!("{what} is empty: expected a {what} id"),
            );
            None
        } else {
            Some(raw.get_ref().clone())
        }
    }

    /// A path relative to the config file's folder, with `${VAR}` taken from the environment
    /// (e.g. `${CREDENTIALS_DIRECTORY}/stac-password` under systemd's LoadCredential=).
    fn path(&mut self, raw: &Spanned<String>, key: &str) -> Option<PathBuf> {
        if raw.get_ref().is_empty() {
            self.diag
                .at(&raw.span(), format!("{key} is empty: expected a path"));
            return None;
        }
        match expand_vars(raw.get_ref(), self.env) {
            Ok(expanded) => Some(self.folder.join(expanded)),
            Err(problem) => {
                self.diag.at(&raw.span(), format!("{key}: {problem}"));
                None
            }
        }
    }

    fn observe(&mut self, raw: &RawObserve) -> Option<ObserveConfig> {
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

    // --- top level ----------------------------------------------------------------------------

    fn state_dir(&mut self, raw: Option<&Spanned<String>>) -> Option<PathBuf> {
        if let Some(raw) = raw {
            return self.path(raw, "state_dir");
        }
        // systemd's StateDirectory= sets this, possibly to several folders separated by ':'.
        let from_systemd = (self.env)("STATE_DIRECTORY")
            .and_then(|v| v.split(':').next().map(str::to_owned))
            .filter(|v| !v.is_empty());
        Some(match from_systemd {
            Some(dir) => PathBuf::from(dir),
            None => self.folder.join("state"),
        })
    }

    fn server(&mut self, raw: &RawServer) -> Option<ServerConfig> {
        let url = self.value(Some(&raw.url), |u| {
            let url = url::Url::parse(u).map_err(|e| {
                format!("invalid url {u:?}: {e}; expected an http(s) URL such as \"https://data.geo.admin.ch/api/stac/v1\"")
            })?;
            match url.scheme() {
                "http" | "https" => Ok(url),
                other => Err(format!("url {u:?} has scheme {other:?}: expected http or https")),
            }
        });
        let api_version = match raw.api_version.as_ref() {
            Some(v) => self
                .value(Some(v), |v| parse_enum::<ApiVersion>(v, "api_version"))
                .map(|v| v.0),
            None => Some(ApiVersion::default()),
        };
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
    fn ca_file(&mut self, raw: &Spanned<String>) -> Option<PathBuf> {
        let path = self.path(raw, "ca_file")?;
        match crate::stac::load_ca_file(&path) {
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
    fn proxy(&mut self, raw: &Spanned<String>) -> Option<url::Url> {
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

    // --- auth ---------------------------------------------------------------------------------

    fn auth(&mut self, raw: &RawAuth) -> Option<Auth> {
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

    fn username(&mut self, raw: &RawAuth, type_span: &Span, type_name: &str) -> Option<String> {
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
    fn cognito(&mut self, raw: &RawAuth, type_span: &Span, type_name: &str) -> Option<Auth> {
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
                    "http" | "https" => Ok(url),
                    other => Err(format!("endpoint {e:?} has scheme {other:?}: expected http or https")),
                }
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
    fn secret(
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

    fn secret_from_env(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
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

    fn secret_from_file(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
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

    fn inline_secret(&mut self, raw: &Spanned<String>, what: &str) -> Option<String> {
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

    // --- jobs ---------------------------------------------------------------------------------

    fn check_name<'r>(&mut self, raw: &'r Spanned<String>, seen: &mut HashMap<&'r str, usize>) {
        let name = raw.get_ref().as_str();
        let bad = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        if name.is_empty() {
            self.diag.at(
                &raw.span(),
                "job name is empty: expected letters, digits, '.', '_' or '-'",
            );
        } else if let Some(c) = bad {
            self.diag.at(
                &raw.span(),
                format!(
                    "invalid job name {name:?} ({c:?} not allowed): expected only letters, digits, '.', '_' or '-' (the name is used in logs, metrics and file names)"
                ),
            );
        } else if let Some(&first) = seen.get(name) {
            let (line, _) = self.diag.line_col(first);
            self.diag.at(
                &raw.span(),
                format!("duplicate job name {name:?}: already used by the job at line {line}; names must be unique"),
            );
        } else {
            seen.insert(name, raw.span().start);
        }
    }

    /// Two jobs on one asset (the same collection, item and asset, written alike) overwrite each
    /// other's uploads: the second is refused.
    fn check_target<'r>(
        &mut self,
        job: &'r RawJob,
        targets: &mut HashMap<(&'r str, Option<&'r str>, &'r str), &'r RawJob>,
    ) {
        let key = (
            job.collection.get_ref().as_str(),
            job.item.as_ref().map(|i| i.get_ref().as_str()),
            job.asset.get_ref().as_str(),
        );
        if key.0.trim().is_empty() || key.2.trim().is_empty() {
            return;
        }
        match targets.get(&key) {
            Some(first) => {
                let (line, _) = self.diag.line_col(first.name.span().start);
                let item = key.1.map_or_else(
                    || " (a collection asset)".to_owned(),
                    |i| format!(", item {i:?}"),
                );
                self.diag.at(
                    &job.asset.span(),
                    format!(
                        "job {:?} uploads to the same asset as job {:?} (line {line}): collection {:?}{item}, asset {:?}; two jobs on one asset overwrite each other's uploads, expected one job per asset",
                        job.name.get_ref(),
                        first.name.get_ref(),
                        key.0,
                        key.2
                    ),
                );
            }
            None => {
                targets.insert(key, job);
            }
        }
    }

    /// A literal id (a collection): the server's charset, located at the first bad character.
    fn literal_id(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
        let id = raw.get_ref();
        if id.contains("${") {
            // Reported as an unexpanded variable.
            return None;
        }
        match rules::check_id(id) {
            Ok(()) => Some(id.clone()),
            Err(e) => {
                let at = id
                    .char_indices()
                    .find(|&(_, c)| !rules::is_id_char(c))
                    .map_or(0, |(i, _)| i);
                self.at_in_string(raw, at, format!("{key}: {e}"));
                None
            }
        }
    }

    /// Records `message` at byte `offset` inside the string value `raw` when it is written
    /// without escapes (so offsets in the string are offsets in the file), else at the value.
    fn at_in_string(&mut self, raw: &Spanned<String>, offset: usize, message: String) {
        let span = raw.span();
        let text = raw.get_ref();
        let plain = self.diag.source(&span).is_some_and(|s| {
            s.len() == text.len() + 2 && s.get(1..s.len() - 1) == Some(text.as_str())
        });
        let at = if plain {
            span.start + 1 + offset
        } else {
            span.start
        };
        self.diag.at_offset(at, message);
    }

    /// The asset id's extension against the server's table and the asset's media type, as far
    /// as it is known before a file is seen; and `.{ext}` only where every file has an extension.
    fn asset_extension(&mut self, raw: &RawJob, asset: &IdTemplate, media_type: Option<&str>) {
        let pattern = raw
            .watch
            .as_ref()
            .map(|w| w.get_ref().pattern.get_ref().as_str());
        let from_pattern = pattern.and_then(server_rules::pattern_extensions);
        let judged: Vec<(String, String)> = match (asset.extension(), &from_pattern) {
            (IdExtension::Literal(ext), _) => vec![(ext, String::new())],
            (IdExtension::FileExt | IdExtension::FileName, Some(exts)) => exts
                .iter()
                .map(|e| {
                    (
                        e.clone(),
                        format!(
                            " (the extension of the files pattern {:?} matches)",
                            pattern.unwrap_or_default()
                        ),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        for (ext, whence) in judged {
            if let Some(c) = ext.chars().find(|&c| !rules::is_id_char(c)) {
                self.diag.at(
                    &raw.asset.span(),
                    format!(
                        "asset {:?} ends in \".{ext}\"{whence}, which holds {c:?}: ids hold only {}",
                        asset.as_str(),
                        rules::ID_CHARS
                    ),
                );
                return;
            }
            if let Err(why) = rules::check_extension(&ext, media_type) {
                self.diag.at(
                    &raw.asset.span(),
                    format!(
                        "asset {:?} ends in \".{ext}\"{whence}: {why}",
                        asset.as_str()
                    ),
                );
                return;
            }
        }
        if let Some(offset) = asset.dot_ext_offset()
            && raw.watch.is_some()
            && from_pattern.is_none()
        {
            self.at_in_string(
                &raw.asset,
                offset,
                format!(
                    "asset {:?}: a file without an extension (e.g. \"readme\") gives an id ending in \".\" (\"readme.\"), which the server refuses; the pattern {:?} does not guarantee an extension: expected a pattern such as \"*.tif\" that does",
                    asset.as_str(),
                    pattern.unwrap_or_default()
                ),
            );
        }
    }

    fn job(&mut self, raw: &RawJob, defaults: &Layer) -> Option<JobSpec> {
        let name = raw.name.get_ref().clone();
        let own = self.layer(raw.settings());
        self.check_delay_order(&own, defaults);
        let settings = own.or(defaults);
        let tz = settings.timezone();
        // A job whose trigger names one file: file-name placeholders have nothing to read.
        let one_file = raw.watch.is_none()
            && (raw.file.is_some() || raw.schedule.is_some() || raw.every.is_some());

        let collection = self
            .non_empty(&raw.collection, "collection")
            .and_then(|_| self.literal_id(&raw.collection, "collection"));
        // `None`: refused; `Some(None)`: a collection asset.
        let item = match &raw.item {
            Some(item) if item.get_ref().trim().is_empty() => {
                self.diag.at(
                    &item.span(),
                    "item is empty: expected an item id, or leave item out for a collection asset",
                );
                None
            }
            Some(item) => self.id_template(item, "item", one_file).map(Some),
            None => Some(None),
        };
        let asset = if raw.asset.get_ref().trim().is_empty() {
            self.diag.at(
                &raw.asset.span(),
                "asset is empty: expected an asset id, or a template such as \"{name}\" for watch jobs",
            );
            None
        } else {
            self.id_template(&raw.asset, "asset", one_file)
        };

        let trigger = self.trigger(raw, &name, &own, &settings);
        let item_metadata = raw
            .item_metadata
            .as_ref()
            .map(|m| self.item_metadata(m, raw, tz, one_file));
        let asset_metadata = raw
            .asset_metadata
            .as_ref()
            .map(|m| self.asset_metadata(m, asset.as_ref(), tz, one_file));
        if let Some(asset) = &asset {
            let media_type = match &asset_metadata {
                Some(Some(m)) => Some(m.media_type.as_str()),
                _ => None,
            };
            // A refused type is reported where it is written; the id is judged without it.
            self.asset_extension(raw, asset, media_type);
        }

        let uses_local_time = item
            .as_ref()
            .is_some_and(|i| i.as_ref().is_some_and(IdTemplate::uses_time))
            || asset.as_ref().is_some_and(IdTemplate::uses_time)
            || matches!(&item_metadata, Some(Some(m)) if m.uses_time())
            || matches!(&asset_metadata, Some(Some(m)) if m.uses_time())
            || settings
                .bandwidth_timetable
                .as_ref()
                .is_some_and(|t| !t.0.is_empty());
        let is_cron = matches!(trigger, Some(TriggerSpec::Cron { .. }));
        if let Some(tz) = &raw.timezone
            && trigger.is_some()
            && !is_cron
            && !uses_local_time
        {
            self.diag.at(
                &tz.span(),
                "timezone only applies to cron schedules, time fields (%Y, %m, %d, ...) in ids and metadata, and bandwidth timetables, and this job has none of them: remove it",
            );
        }
        let (jitter, catch_up) = self.schedule_options(raw, &own, &settings, trigger.as_ref());

        Some(JobSpec {
            name,
            collection: collection?,
            item: item?,
            asset: asset?,
            timezone: tz,
            trigger: trigger?,
            policy: settings.policy(),
            upload: settings.upload(),
            jitter: jitter?,
            catch_up,
            bandwidth_limit: settings.bandwidth(tz),
            item_metadata: written(item_metadata)?,
            asset_metadata: written(asset_metadata)?,
        })
    }

    /// `jitter` and `catch_up`: for schedule and every jobs, the jitter shorter than the
    /// interval. `None` for a jitter refused.
    fn schedule_options(
        &mut self,
        raw: &RawJob,
        own: &Layer,
        settings: &Layer,
        trigger: Option<&TriggerSpec>,
    ) -> (Option<Option<Duration>>, bool) {
        let (interval, key) = match trigger {
            None => return (Some(None), false),
            Some(TriggerSpec::Watch(_)) => {
                for (key, span) in [
                    ("jitter", own.jitter.as_ref().map(|v| &v.1)),
                    ("catch_up", own.catch_up.as_ref().map(|v| &v.1)),
                ] {
                    if let Some(span) = span {
                        self.diag.at(
                            span,
                            format!("{key} only applies to schedule and every jobs, and this job watches a folder: remove it"),
                        );
                    }
                }
                return (Some(None), false);
            }
            Some(TriggerSpec::Cron { schedule, .. }) => (
                schedule
                    .min_interval(chrono::Utc::now(), 24)
                    .and_then(|d| d.to_std().ok()),
                raw.schedule.as_ref().map(Spanned::span),
            ),
            Some(TriggerSpec::Every { interval, .. }) => {
                (Some(*interval), raw.every.as_ref().map(Spanned::span))
            }
        };
        let catch_up = settings.catch_up.as_ref().is_some_and(|v| v.0);
        let Some((jitter, jitter_span)) = settings.jitter.clone() else {
            return (Some(None), catch_up);
        };
        if jitter.is_zero() {
            return (Some(None), catch_up);
        }
        let Some(interval) = interval.filter(|i| jitter >= *i) else {
            return (Some(Some(jitter)), catch_up);
        };
        // Blame the job's own jitter, or else its trigger: the inherited jitter suits others.
        let (span, whose) = match (&own.jitter, key) {
            (Some(_), _) | (None, None) => (jitter_span.clone(), String::new()),
            (None, Some(k)) => {
                let (line, _) = self.diag.line_col(jitter_span.start);
                (k, format!(" (from [defaults], line {line})"))
            }
        };
        self.diag.at(
            &span,
            format!(
                "jitter = {}{whose} is not shorter than the job's interval ({}): expected a jitter below the time between runs",
                fmt_duration(jitter),
                fmt_duration(interval)
            ),
        );
        (None, catch_up)
    }

    /// An item or asset id. Placeholders of the file name only apply to watch jobs.
    fn id_template(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        one_file: bool,
    ) -> Option<IdTemplate> {
        if raw.get_ref().contains("${") {
            // Reported as an unexpanded variable.
            return None;
        }
        let template = match IdTemplate::parse(raw.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                self.template_error(raw, e.for_key(key));
                return None;
            }
        };
        if one_file && template.uses_file_name() {
            self.diag.at(
                &raw.span(),
                format!(
                    "{key} {:?} uses placeholders, which only apply to watch jobs: a schedule uploads one file, expected a literal {key} id (strftime fields such as %Y-%m-%d are fine)",
                    template.as_str()
                ),
            );
            return None;
        }
        if let Some(id) = template.literal()
            && let Err(e) = rules::check_id(&id)
        {
            self.diag.at(&raw.span(), format!("{key}: {e}"));
            return None;
        }
        Some(template)
    }

    /// A title: not blank and at most 255 characters, as the server takes it (tried with a
    /// sample run and an empty file name).
    fn title(&mut self, raw: &Spanned<String>, tz: Tz, one_file: bool) -> Option<TextTemplate> {
        let template = self.text_template(raw, "title", one_file)?;
        let run = sample_run(tz);
        let sample = template.render("", &run);
        let problem = if sample.trim().is_empty() && !template.uses_file_name() {
            "title is blank: the server refuses a blank title; expected some text, or no title"
                .to_owned()
        } else if sample.chars().count() > MAX_TITLE {
            format!(
                "title renders {} characters (for a run at {}): the server takes at most {MAX_TITLE}",
                sample.chars().count(),
                run.to_rfc3339()
            )
        } else {
            return Some(template);
        };
        self.diag.at(&raw.span(), problem);
        None
    }

    /// `[job.item_metadata.properties]` or `[job.asset_metadata.properties]`: keys that have
    /// keys of their own are refused at the table (`own_keys`), others by `check` at the key or
    /// the value.
    fn properties(
        &mut self,
        table: &Spanned<RawProperties>,
        own_keys: &[(&str, &str)],
        check: server_rules::PropertyCheck,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut map = serde_json::Map::new();
        let mut ok = true;
        for (key, value) in table.get_ref() {
            let name = key.get_ref().as_str();
            if let Some((_, why)) = own_keys.iter().find(|(k, _)| *k == name) {
                self.diag.at(
                    &table.span(),
                    format!("properties may not set {name:?}: {why}"),
                );
                ok = false;
                continue;
            }
            let json = match toml_to_json(value.get_ref()) {
                Ok(j) => j,
                Err(e) => {
                    self.diag.at(&value.span(), e);
                    ok = false;
                    continue;
                }
            };
            if let Err((blame, why)) = check(name, &json) {
                let span = match blame {
                    server_rules::Blame::Key => key.span(),
                    server_rules::Blame::Value => value.span(),
                };
                self.diag.at(&span, why);
                ok = false;
                continue;
            }
            map.insert(name.to_owned(), json);
        }
        ok.then_some(map)
    }

    /// A metadata text (title, date-time). Placeholders of the file name only apply to watch
    /// jobs.
    fn text_template(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        one_file: bool,
    ) -> Option<TextTemplate> {
        if raw.get_ref().contains("${") {
            // Reported as an unexpanded variable.
            return None;
        }
        let template = match TextTemplate::parse(raw.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                self.template_error(raw, e.for_key(key));
                return None;
            }
        };
        if one_file && template.uses_file_name() {
            self.diag.at(
                &raw.span(),
                format!(
                    "{key} {:?} uses placeholders, which only apply to watch jobs: a schedule uploads one file",
                    raw.get_ref()
                ),
            );
            return None;
        }
        Some(template)
    }

    fn template_error(&mut self, raw: &Spanned<String>, e: TemplateError) {
        // At the problem itself when the value is written without escapes.
        self.at_in_string(raw, e.offset(), e.to_string());
    }

    /// Exactly one trigger: file + schedule, file + every, or [job.watch].
    fn trigger(
        &mut self,
        raw: &RawJob,
        name: &str,
        own: &Layer,
        settings: &Layer,
    ) -> Option<TriggerSpec> {
        let expected =
            "expected exactly one trigger: file + schedule, file + every, or [job.watch]";
        if let Some(watch) = &raw.watch {
            let others: Vec<(&str, Span)> = [
                ("file", raw.file.as_ref().map(Spanned::span)),
                ("schedule", raw.schedule.as_ref().map(Spanned::span)),
                ("every", raw.every.as_ref().map(Spanned::span)),
            ]
            .into_iter()
            .filter_map(|(k, s)| Some((k, s?)))
            .collect();
            if let Some((_, span)) = others.first() {
                let keys: Vec<&str> = others.iter().map(|(k, _)| *k).collect();
                self.diag.at(
                    span,
                    format!(
                        "job {name:?} has both {} and [job.watch]: {expected}",
                        keys.join("/")
                    ),
                );
                return None;
            }
            return self.watch(watch.get_ref()).map(TriggerSpec::Watch);
        }
        match (&raw.file, &raw.schedule, &raw.every) {
            (_, Some(schedule), Some(every)) => {
                let later = if every.span().start > schedule.span().start {
                    every.span()
                } else {
                    schedule.span()
                };
                self.diag.at(
                    &later,
                    format!("job {name:?} has both schedule and every: {expected}"),
                );
                None
            }
            (Some(file), Some(schedule), None) => self.cron(file, schedule, own, settings),
            (Some(file), None, Some(every)) => {
                let file = self.upload_file(file);
                let interval = self.duration(Some(every), "every", |d| {
                    if d < MIN_EVERY {
                        Err(format!(
                            "every = {} is too short: expected at least 1s",
                            fmt_duration(d)
                        ))
                    } else {
                        Ok(())
                    }
                });
                Some(TriggerSpec::Every {
                    file: file?,
                    interval: interval?.0,
                })
            }
            (Some(file), None, None) => {
                self.diag.at(
                    &file.span(),
                    format!(
                        "job {name:?} has a file but no schedule: expected schedule = \"<cron>\" or every = \"<interval>\" next to file (or a [job.watch] table instead)"
                    ),
                );
                None
            }
            (None, Some(schedule), None) => {
                self.diag.at(
                    &schedule.span(),
                    format!(
                        "job {name:?} has a schedule but no file: expected file = \"<path>\" next to schedule"
                    ),
                );
                None
            }
            (None, None, Some(every)) => {
                self.diag.at(
                    &every.span(),
                    format!(
                        "job {name:?} has every but no file: expected file = \"<path>\" next to every"
                    ),
                );
                None
            }
            (None, None, None) => {
                self.diag.at(
                    &raw.name.span(),
                    format!(
                        "job {name:?} has no trigger: expected either file + schedule (cron), file + every (an interval) or a [job.watch] table"
                    ),
                );
                None
            }
        }
    }

    /// The file a schedule or every job uploads: it may appear later, but its folder must exist.
    fn upload_file(&mut self, file: &Spanned<String>) -> Option<PathBuf> {
        self.path(file, "file").and_then(|path| {
            let problem = match path.parent() {
                _ if path.is_dir() => format!(
                    "file {} is a directory: expected the path of the file to upload (use [job.watch] for a folder)",
                    path.display()
                ),
                Some(parent) if parent.is_dir() => return Some(path),
                Some(parent) => format!(
                    "folder {} does not exist: the file may appear later, but its folder must exist",
                    parent.display()
                ),
                None => format!("file {} has no folder: expected the path of a file", path.display()),
            };
            self.diag.at(&file.span(), problem);
            None
        })
    }

    fn cron(
        &mut self,
        file: &Spanned<String>,
        schedule: &Spanned<String>,
        own: &Layer,
        settings: &Layer,
    ) -> Option<TriggerSpec> {
        let path = self.upload_file(file);
        let tz = settings.timezone();
        let schedule = match Schedule::parse(schedule.get_ref(), tz.name()) {
            Ok(s) => Some(s),
            Err(e) => {
                // A zone refused here was refused where it was written; blame it, not the cron.
                let span = match e {
                    ScheduleError::TimeZone(_) => own
                        .timezone
                        .as_ref()
                        .map_or_else(|| schedule.span(), |v| v.1.clone()),
                    _ => schedule.span(),
                };
                self.diag.at(&span, e.to_string());
                None
            }
        };
        Some(TriggerSpec::Cron {
            file: path?,
            schedule: schedule?,
        })
    }

    // --- metadata of the objects a job creates ----------------------------------------------------

    /// `[job.item_metadata]`: a geometry (or bbox) and a time are required. `None` when refused.
    fn item_metadata(
        &mut self,
        table: &Spanned<RawItemMetadata>,
        job: &RawJob,
        tz: Tz,
        one_file: bool,
    ) -> Option<ItemMetadata> {
        let raw = table.get_ref();
        let at_table = table.span();
        if job.item.is_none() {
            self.diag.at(
                &at_table,
                "[job.item_metadata] needs item: a collection asset has no item to create; set item = \"...\" or remove the table",
            );
        }
        if job.asset_metadata.is_none() {
            self.diag.at(
                &at_table,
                "[job.item_metadata] needs [job.asset_metadata]: a new item has no assets, so the asset must be created with it (expected at least type = \"<media type>\")",
            );
        }
        let geometry = match (&raw.geometry, &raw.bbox) {
            (Some(g), Some(b)) => {
                let (first, second, later) = if g.span().start < b.span().start {
                    ("geometry", "bbox", b.span())
                } else {
                    ("bbox", "geometry", g.span())
                };
                self.diag.at(
                    &later,
                    format!("{second} conflicts with {first}: expected exactly one of geometry or bbox (the polygon of the box)"),
                );
                None
            }
            (Some(g), None) => self
                .value(Some(g), |t| {
                    let geometry = serde_json::Value::Object(table_to_json(t)?);
                    let bbox = geometry_bbox(&geometry)?;
                    Ok((geometry, bbox))
                })
                .map(|v| v.0),
            (None, Some(b)) => self
                .value(Some(b), |values| {
                    let values: Vec<f64> = values.iter().map(|v| *v.get_ref()).collect();
                    let bbox = check_bbox(&values)?;
                    Ok((bbox_polygon(bbox), bbox))
                })
                .map(|v| v.0),
            (None, None) => {
                self.diag.at(
                    &at_table,
                    "[job.item_metadata] needs a geometry: expected bbox = [west, south, east, north] or geometry = { type = \"Polygon\", coordinates = [...] }",
                );
                None
            }
        };
        let time = self.item_time(raw, &at_table, tz, one_file);
        let expires = self.positive_duration(raw.expires.as_ref(), "expires");
        let title = raw.title.as_ref().map(|t| self.title(t, tz, one_file));
        let properties = raw.properties.as_ref().map(|p| {
            self.properties(
                p,
                &[
                    ("datetime", "the item's time comes from datetime, or start_datetime and end_datetime, of [job.item_metadata]"),
                    ("start_datetime", "write start_datetime in [job.item_metadata] itself"),
                    ("end_datetime", "write end_datetime in [job.item_metadata] itself"),
                    ("title", "write title in [job.item_metadata] itself"),
                    ("expires", "write expires in [job.item_metadata] itself, as a duration after the run"),
                ],
                server_rules::item_property,
            )
        });
        if raw.expires.is_some() && expires.is_none() {
            return None;
        }
        let (geometry, bbox) = geometry?;
        Some(ItemMetadata {
            geometry,
            bbox,
            time: time?,
            expires: expires.map(|v| v.0),
            title: written(title)?,
            properties: written(properties)?.unwrap_or_default(),
        })
    }

    /// `datetime`, or `start_datetime` with `end_datetime`.
    fn item_time(
        &mut self,
        raw: &RawItemMetadata,
        at_table: &Span,
        tz: Tz,
        one_file: bool,
    ) -> Option<ItemTime> {
        let expected = "expected either datetime, or start_datetime and end_datetime";
        match (&raw.datetime, &raw.start_datetime, &raw.end_datetime) {
            (Some(datetime), Some(other), _) | (Some(datetime), None, Some(other)) => {
                let key = if raw.start_datetime.is_some() {
                    "start_datetime"
                } else {
                    "end_datetime"
                };
                let (line, _) = self.diag.line_col(datetime.span().start);
                self.diag.at(
                    &other.span(),
                    format!("{key} conflicts with datetime (line {line}): {expected}"),
                );
                None
            }
            (Some(datetime), None, None) => self
                .time_value(datetime, "datetime", tz, one_file)
                .map(|v| ItemTime::Instant(v.0)),
            (None, Some(start), Some(end)) => {
                let start = self.time_value(start, "start_datetime", tz, one_file);
                let end_value = self.time_value(end, "end_datetime", tz, one_file);
                let ((start, first), (end_value, last)) = (start?, end_value?);
                if first > last {
                    self.diag.at(
                        &end.span(),
                        format!("end_datetime comes before start_datetime (for a run at {}: {last} < {first}): expected a range forwards in time", sample_run(tz).to_rfc3339()),
                    );
                    return None;
                }
                Some(ItemTime::Range {
                    start,
                    end: end_value,
                })
            }
            (None, Some(only), None) | (None, None, Some(only)) => {
                let (key, missing) = if raw.start_datetime.is_some() {
                    ("start_datetime", "end_datetime")
                } else {
                    ("end_datetime", "start_datetime")
                };
                self.diag
                    .at(&only.span(), format!("{key} needs {missing}: {expected}"));
                None
            }
            (None, None, None) => {
                self.diag.at(
                    at_table,
                    "[job.item_metadata] needs a time: expected datetime = \"run\" (the run time), a template such as datetime = \"%Y-%m-%dT00:00:00Z\", or start_datetime and end_datetime",
                );
                None
            }
        }
    }

    /// `"run"` or a template that renders an RFC 3339 date-time (tried with a sample run), with
    /// the sample's instant for ordering checks.
    fn time_value(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        tz: Tz,
        one_file: bool,
    ) -> Option<(TimeValue, chrono::DateTime<chrono::FixedOffset>)> {
        let run = sample_run(tz);
        if raw.get_ref() == "run" {
            return Some((TimeValue::Run, run.fixed_offset()));
        }
        let template = self.text_template(raw, key, one_file)?;
        let sample = template.render("file.ext", &run);
        match chrono::DateTime::parse_from_rfc3339(&sample) {
            Ok(at) => Some((TimeValue::Template(template), at)),
            Err(_) => {
                self.diag.at(
                    &raw.span(),
                    format!(
                        "{key} {:?} renders {sample:?} (for a run at {}), which is not an RFC 3339 date-time: expected \"run\" (the run time) or a template such as \"%Y-%m-%dT00:00:00Z\"",
                        raw.get_ref(),
                        run.to_rfc3339()
                    ),
                );
                None
            }
        }
    }

    /// `[job.asset_metadata]`: `type` is required.
    fn asset_metadata(
        &mut self,
        table: &Spanned<RawAssetMetadata>,
        asset: Option<&IdTemplate>,
        tz: Tz,
        one_file: bool,
    ) -> Option<AssetMetadata> {
        let raw = table.get_ref();
        // The types that fit the asset's extension, when it is written in the asset id.
        let fits = match asset.map(IdTemplate::extension) {
            Some(IdExtension::Literal(ext)) if rules::check_extension(&ext, None).is_ok() => {
                format!(
                    "; for asset {:?}, expected {}",
                    asset.map_or("", |a| a.as_str()),
                    rules::types_for(&ext)
                )
            }
            _ => String::new(),
        };
        let media_type = self.value(Some(&raw.media_type), |t| {
            let t = t.trim();
            match (rules::normalize_media_type(t), rules::media_type(t)) {
                (_, Some(known)) => Ok(known.name.to_owned()),
                (None, _) => Err(format!(
                    "invalid type {t:?}: expected a media type such as \"application/x-hdf5\" or \"image/tiff; application=geotiff\" (the server checks it fits the asset id's extension){fits}"
                )),
                (Some(_), None) => Err(format!(
                    "unknown type {t:?}: the server accepts only the media types of its table, such as \"application/x-hdf5\", \"image/tiff; application=geotiff\", \"application/zip\" or \"text/csv\"{fits}"
                )),
            }
        });
        let title = raw.title.as_ref().map(|t| self.title(t, tz, one_file));
        let mut roles = Vec::new();
        let mut roles_ok = true;
        let v09 = self.api_version == ApiVersion::V09;
        if v09 && let Some(first) = raw.roles.iter().flatten().next() {
            self.diag.at(
                &first.span(),
                "roles do not apply with api_version = \"v0.9\": its assets have no roles, and the server refuses them (400 \"Unexpected property in payload\"); remove roles",
            );
            roles_ok = false;
        }
        for role in raw.roles.iter().flatten() {
            if role.get_ref().trim().is_empty() {
                self.diag.at(
                    &role.span(),
                    "a role is empty: expected names such as \"data\", \"overview\" or \"metadata\"",
                );
                roles_ok = false;
            } else {
                roles.push(role.get_ref().clone());
            }
        }
        let proj_epsg = raw.proj_epsg.as_ref().map(|e| {
            self.int_in(Some(e), "proj:epsg", EPSG)
                .map(|(v, _)| u32::try_from(v).expect("1..=999999 fits u32"))
        });
        let properties = raw.properties.as_ref().map(|p| {
            self.properties(
                p,
                &[
                    ("id", "the asset id is the job's asset"),
                    ("type", "write type in [job.asset_metadata] itself"),
                    ("title", "write title in [job.asset_metadata] itself"),
                    ("roles", "write roles in [job.asset_metadata] itself"),
                    ("proj:epsg", "write \"proj:epsg\" in [job.asset_metadata] itself"),
                    ("href", "an href makes the asset external, and an external asset cannot be uploaded to"),
                    ("file:checksum", "the server sets it from the uploads"),
                    ("checksum:multihash", "the server sets it from the uploads"),
                    ("file:size", "the server sets it from the uploads"),
                ],
                if v09 {
                    server_rules::asset_property_v09
                } else {
                    server_rules::asset_property
                },
            )
        });
        if !roles_ok {
            return None;
        }
        Some(AssetMetadata {
            media_type: media_type?.0,
            title: written(title)?,
            roles,
            proj_epsg: written(proj_epsg)?,
            properties: written(properties)?.unwrap_or_default(),
        })
    }

    fn watch(&mut self, raw: &RawWatch) -> Option<WatchSpec> {
        let dir = self.path(&raw.dir, "dir").and_then(|dir| {
            let problem = match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => return Some(dir),
                Ok(_) => format!(
                    "watch dir {} is not a directory: expected a folder",
                    dir.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                    "watch dir {} does not exist: expected an existing folder",
                    dir.display()
                ),
                Err(e) => format!(
                    "watch dir {} cannot be used: {e}; expected an existing folder",
                    dir.display()
                ),
            };
            self.diag.at(&raw.dir.span(), problem);
            None
        });
        // `*` stays within one folder level, as in .gitignore: `**/*.tif` reaches sub-folders.
        let pattern = self.value(Some(&raw.pattern), |p| {
            if p.starts_with('/') {
                return Err(format!(
                    "pattern {p:?} is absolute: patterns are matched against the path relative to dir, expected e.g. \"*.h5\" or \"**/*.tif\" (with the folder in dir)"
                ));
            }
            GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| {
                    format!(
                        "invalid pattern {p:?}: {}; expected a glob on the path relative to dir, e.g. \"*.h5\" or \"**/*.tif\"",
                        e.kind()
                    )
                })
        });
        let ignore = self.ignore(raw.ignore.as_deref(), &raw.dir.span());
        let settle = self.duration(raw.settle.as_ref(), "settle", |_| Ok(()));
        let poll = self.positive_duration(raw.poll.as_ref(), "poll");
        let durations_ok =
            (raw.settle.is_none() || settle.is_some()) && (raw.poll.is_none() || poll.is_some());
        if !durations_ok {
            return None;
        }
        Some(WatchSpec {
            dir: dir?,
            pattern: pattern?.0,
            recursive: raw.recursive,
            ignore: ignore?,
            settle: settle.map_or(DEFAULT_SETTLE, |v| v.0),
            poll: poll.map(|v| v.0),
        })
    }

    fn ignore(
        &mut self,
        raw: Option<&[Spanned<String>]>,
        dir_span: &Span,
    ) -> Option<globset::GlobSet> {
        let mut builder = GlobSetBuilder::new();
        let mut ok = true;
        match raw {
            Some(globs) => {
                for g in globs {
                    match Glob::new(g.get_ref()) {
                        Ok(glob) => {
                            builder.add(glob);
                        }
                        Err(e) => {
                            self.diag.at(
                                &g.span(),
                                format!(
                                    "invalid ignore glob {:?}: {}; expected a glob on the file name, e.g. \"*.tmp\"",
                                    g.get_ref(),
                                    e.kind()
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
            None => {
                for g in DEFAULT_IGNORE {
                    builder.add(Glob::new(g).expect("the default ignore globs are valid"));
                }
            }
        }
        if !ok {
            return None;
        }
        match builder.build() {
            Ok(set) => Some(set),
            Err(e) => {
                let span = raw
                    .and_then(|g| g.first())
                    .map_or_else(|| dir_span.clone(), |g| g.span());
                self.diag.at(&span, format!("invalid ignore globs: {e}"));
                None
            }
        }
    }
}

/// An optional key's checked value: `None` when it was written and refused (the error is
/// recorded), `Some(None)` when it was not written.
fn written<T>(checked: Option<Option<T>>) -> Option<Option<T>> {
    match checked {
        Some(None) => None,
        Some(Some(v)) => Some(Some(v)),
        None => Some(None),
    }
}

/// The run that templates are tried with at load: a date with single-digit fields, so that
/// padding shows.
fn sample_run(tz: Tz) -> chrono::DateTime<Tz> {
    use chrono::TimeZone;
    tz.with_ymd_and_hms(2026, 1, 5, 3, 4, 5)
        .earliest()
        .expect("no zone skips 03:04 on 5 January 2026")
}

/// `compress`: the names of [`CompressMode`].
fn compress_mode(name: &str) -> Result<CompressMode, String> {
    match name {
        "none" => Ok(CompressMode::None),
        "gzip" => Ok(CompressMode::Gzip),
        "br" => Ok(CompressMode::Br),
        "auto" => Ok(CompressMode::Auto),
        other => Err(format!(
            "invalid compress {other:?}: expected \"gzip\", \"br\", \"none\" or \"auto\" (gzip for files over 10 MB whose media type is not already compressed)"
        )),
    }
}

/// A rate per second: `"20MB/s"`, a number of bytes per second, or `"unlimited"` (`None`).
fn rate(raw: &Size, key: &str) -> Result<Option<ByteSize>, String> {
    let expected = "expected a rate such as \"20MB/s\", or \"unlimited\"";
    let rate = match raw {
        Size::Text(t) if t.trim() == "unlimited" => return Ok(None),
        Size::Text(t) => t
            .parse::<ByteSize>()
            .map_err(|_| format!("invalid {key} {t:?}: {expected}"))?,
        Size::Bytes(n) => u64::try_from(*n)
            .map(ByteSize)
            .map_err(|_| format!("{key} = {n} is negative: {expected}"))?,
    };
    if rate.get() == 0 {
        return Err(format!("{key} of 0 would stop every upload: {expected}"));
    }
    Ok(Some(rate))
}

/// `"07:00"` or `"07:00:30"`, local time.
fn time_of_day(text: &str, key: &str) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::parse_from_str(text, "%H:%M")
        .or_else(|_| chrono::NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .map_err(|_| {
            format!(
                "invalid {key} {text:?}: expected a time of day such as \"07:00\" (00:00 to 23:59)"
            )
        })
}

/// A limit from its two keys; `None` when nothing is limited at any time.
fn bandwidth_limit(
    rate: Option<Option<ByteSize>>,
    windows: Option<Vec<BandwidthWindow>>,
    timezone: Tz,
) -> Option<BandwidthLimit> {
    let rate = rate.flatten();
    let windows = windows.unwrap_or_default();
    if rate.is_none() && windows.iter().all(|w| w.rate.is_none()) {
        return None;
    }
    Some(BandwidthLimit {
        rate,
        windows,
        timezone,
    })
}

/// A TOML value as JSON (date-times as their RFC 3339 text).
fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} cannot be written in JSON: expected a finite number"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => {
            Value::Array(a.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => Value::Object(table_to_json(t)?),
    })
}

fn table_to_json(
    table: &toml::Table,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    table
        .iter()
        .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
        .collect()
}

/// Checks `[west, south, east, north]` in degrees.
fn check_bbox(values: &[f64]) -> Result<[f64; 4], String> {
    let expected = "expected bbox = [west, south, east, north] in degrees (WGS 84), e.g. [5.96, 45.82, 10.49, 47.81]";
    let [w, s, e, n] = <[f64; 4]>::try_from(values)
        .map_err(|_| format!("bbox has {} numbers: {expected}", values.len()))?;
    if !((-180.0..=180.0).contains(&w) && (-180.0..=180.0).contains(&e)) {
        return Err(format!(
            "bbox longitudes {w} and {e} must lie within -180 to 180: {expected}"
        ));
    }
    if !((-90.0..=90.0).contains(&s) && (-90.0..=90.0).contains(&n)) {
        return Err(format!(
            "bbox latitudes {s} and {n} must lie within -90 to 90: {expected}"
        ));
    }
    if w >= e || s >= n {
        return Err(format!(
            "bbox [{w}, {s}, {e}, {n}] is empty: west must be less than east and south less than north; {expected}"
        ));
    }
    Ok([w, s, e, n])
}

/// Checks a GeoJSON geometry and returns its bounding box.
fn geometry_bbox(geometry: &serde_json::Value) -> Result<[f64; 4], String> {
    use serde_json::Value;
    let expected = "expected a GeoJSON geometry such as { type = \"Polygon\", coordinates = [[[w, s], [e, s], [e, n], [w, n], [w, s]]] }, or bbox instead";
    if let Some(key) = geometry.as_object().and_then(|o| {
        o.keys()
            .find(|k| !matches!(k.as_str(), "type" | "coordinates"))
    }) {
        return Err(format!("unexpected key {key:?} in geometry: {expected}"));
    }
    let kind = geometry
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("geometry has no type: {expected}"))?;
    // (nesting of the coordinates above a position, fewest positions in a line, closed rings)
    let (depth, min_line, rings) = match kind {
        "Point" => (0, 1, false),
        "MultiPoint" => (1, 1, false),
        "LineString" => (1, 2, false),
        "MultiLineString" => (2, 2, false),
        "Polygon" => (2, 4, true),
        "MultiPolygon" => (3, 4, true),
        other => {
            return Err(format!(
                "geometry type {other:?} is not supported: expected Point, MultiPoint, LineString, MultiLineString, Polygon or MultiPolygon"
            ));
        }
    };
    let coordinates = geometry
        .get("coordinates")
        .ok_or_else(|| format!("{kind} has no coordinates: {expected}"))?;
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    walk_coordinates(coordinates, depth, min_line, rings, &mut bbox)
        .map_err(|problem| format!("{kind} coordinates: {problem}"))?;
    Ok(bbox)
}

fn walk_coordinates(
    value: &serde_json::Value,
    depth: usize,
    min_line: usize,
    rings: bool,
    bbox: &mut [f64; 4],
) -> Result<(), String> {
    let list = value
        .as_array()
        .ok_or_else(|| format!("expected a list, found {value}"))?;
    if depth == 0 {
        let position: Option<Vec<f64>> = list.iter().map(serde_json::Value::as_f64).collect();
        let (lon, lat) = match position.as_deref() {
            Some([lon, lat]) | Some([lon, lat, _]) => (*lon, *lat),
            _ => {
                return Err(format!(
                    "{value} is not a position: expected [longitude, latitude]"
                ));
            }
        };
        if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
            return Err(format!(
                "{value} lies outside -180..180 / -90..90 degrees (WGS 84)"
            ));
        }
        *bbox = [
            bbox[0].min(lon),
            bbox[1].min(lat),
            bbox[2].max(lon),
            bbox[3].max(lat),
        ];
        return Ok(());
    }
    if depth == 1 && list.len() < min_line {
        return Err(format!(
            "{value} has {} position(s): expected at least {min_line}",
            list.len()
        ));
    }
    if list.is_empty() {
        return Err("an empty list: expected coordinates".to_owned());
    }
    if depth == 1 && rings && list.first() != list.last() {
        return Err(format!(
            "the ring {value} is not closed: its last position must repeat its first"
        ));
    }
    list.iter()
        .try_for_each(|v| walk_coordinates(v, depth - 1, min_line, rings, bbox))
}

fn part_size(raw: &Size) -> Result<ByteSize, String> {
    let size = match raw {
        Size::Bytes(n) => u64::try_from(*n).map(ByteSize).map_err(|_| {
            format!("part_size = {n} is negative: expected a size such as \"16MiB\"")
        })?,
        Size::Text(t) => t
            .parse::<ByteSize>()
            .map_err(|e| format!("invalid part_size: {e}"))?,
    };
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&size.get()) {
        return Err(format!(
            "part_size = {size} is out of range: expected {} to {} (the API's limits for one part)",
            ByteSize(MIN_PART_SIZE),
            ByteSize(MAX_PART_SIZE)
        ));
    }
    Ok(size)
}

/// `Ok` when only the owner can read the file; else why the file is open to others.
fn private_file(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            format!(
                "the permissions of {} cannot be checked ({e})",
                path.display()
            )
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is open to group or others (mode {mode:04o})",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Replaces each `${NAME}` with the value of the environment variable NAME.
fn expand_vars(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed \"${{\" in {text:?}: expected ${{NAME}}"));
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid variable name {name:?} in {text:?}: expected ${{NAME}}"
            ));
        }
        match env(name).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("the environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The largest secret file read: a password or token is far smaller.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A secret file's text. Only a regular file of at most 64 KiB is read, so a path to a FIFO,
/// a device such as /dev/zero, or a large file by mistake cannot hang or fill the loader.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    // Asked before opening: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than a secret's {MAX_SECRET_FILE}",
            meta.len()
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `server` (the `[server]` tables) plus one valid job as `jobs.toml` with `mode`
    /// in a fresh folder, and checks it with `env`.
    fn check(
        server: &str,
        mode: u32,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("export")).expect("mkdir");
        let text = format!(
            "{server}\n[[job]]\nname = \"j\"\ncollection = \"c\"\nasset = \"a.tif\"\nfile = \"export/a.tif\"\nschedule = \"0 3 * * *\"\n"
        );
        let path = dir.path().join("jobs.toml");
        std::fs::write(&path, &text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let result = parse(&text, &path, env);
        (dir, result)
    }

    fn messages(result: Result<Config, ConfigError>) -> Vec<String> {
        match result {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn cognito_auth_reads_its_keys() {
        use secrecy::ExposeSecret;
        let env = |n: &str| (n == "PW").then(|| "from-env".to_owned());
        let server = r#"[server]
url = "https://data.geo.admin.ch/api/stac/v1"
[server.auth]
type = "cognito"
username = "publisher"
password_env = "PW"
client_id = "abc123"
region = "eu-central-1"
"#;
        let (_dir, result) = check(server, 0o644, &env);
        let config = result.expect("valid");
        let Auth::Cognito(c) = &config.server.auth else {
            panic!("{:?}", config.server.auth)
        };
        assert_eq!(c.username, "publisher");
        assert_eq!(c.password.expose_secret(), "from-env");
        assert_eq!(c.client_id, "abc123");
        assert_eq!(
            c.endpoint.as_str(),
            "https://cognito-idp.eu-central-1.amazonaws.com/"
        );
        assert!(!format!("{config:?}").contains("from-env"));

        let with_endpoint = format!("{server}endpoint = \"http://127.0.0.1:5000\"\n");
        let (_dir, result) = check(&with_endpoint, 0o644, &env);
        let config = result.expect("valid");
        let Auth::Cognito(c) = &config.server.auth else {
            panic!()
        };
        assert_eq!(c.endpoint.as_str(), "http://127.0.0.1:5000/");
    }

    #[test]
    fn cognito_auth_errors_are_located() {
        let env = |_: &str| None;
        // Missing client_id and region, an inline password in a world-readable file.
        let (_dir, result) = check(
            r#"[server]
url = "https://x/api/stac/v1"
[server.auth]
type = "cognito"
username = "u"
password = "pw"
"#,
            0o644,
            &env,
        );
        let m = messages(result);
        assert!(
            m.iter()
                .any(|e| e.starts_with("4:8:") && e.contains("needs client_id")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.starts_with("4:8:") && e.contains("needs region")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.starts_with("6:12:") && e.contains("inline password refused")),
            "{m:?}"
        );

        // A bad region and endpoint; a token key that belongs to another scheme.
        let (_dir, result) = check(
            r#"[server]
url = "https://x/api/stac/v1"
[server.auth]
type = "cognito"
username = "u"
password = "pw"
client_id = "c"
region = "Europe"
endpoint = "ftp://x"
token = "t"
"#,
            0o600,
            &env,
        );
        let m = messages(result);
        assert!(
            m.iter()
                .any(|e| e.starts_with("8:10:") && e.contains("invalid region")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.starts_with("9:12:") && e.contains("expected http or https")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.starts_with("10:9:") && e.contains("does not apply to auth type")),
            "{m:?}"
        );

        // Cognito keys on another scheme are refused too.
        let (_dir, result) = check(
            "[server]\nurl = \"https://x/api/stac/v1\"\n[server.auth]\ntype = \"bearer\"\ntoken_env = \"T\"\nregion = \"eu-central-1\"\n",
            0o600,
            &|_| Some("t".into()),
        );
        let m = messages(result);
        assert!(
            m.iter()
                .any(|e| e.starts_with("6:10:") && e.contains("region does not apply")),
            "{m:?}"
        );
    }

    #[test]
    fn proxy_urls_are_checked_and_their_passwords_kept_secret() {
        let env = |_: &str| None;
        let server = |proxy: &str| {
            format!("[server]\nurl = \"https://x/api/stac/v1\"\nproxy = \"{proxy}\"\n")
        };
        let (_dir, result) = check(&server("http://proxy.corp:3128"), 0o644, &env);
        let config = result.expect("valid");
        assert_eq!(
            config.server.proxy.as_ref().map(url::Url::as_str),
            Some("http://proxy.corp:3128/")
        );
        assert_eq!(
            config.server.client_config().proxy,
            config.server.proxy,
            "the client gets the proxy"
        );

        for (proxy, expected) in [
            (
                "socks5://p:1080",
                "proxy scheme \"socks5\" is not supported",
            ),
            ("proxy:3128", "not supported"),
            ("not a url", "invalid proxy"),
            ("http://u:s3cret@proxy.corp:3128", "inline password refused"),
        ] {
            let (_dir, result) = check(&server(proxy), 0o644, &env);
            let m = messages(result);
            assert!(
                m.iter()
                    .any(|e| e.starts_with("3:9:") && e.contains(expected)),
                "{proxy}: {m:?}"
            );
            assert!(!m.iter().any(|e| e.contains("s3cret")), "{m:?}");
        }
        // With a private file a proxy password is accepted, and never shown.
        let (_dir, result) = check(&server("http://u:s3cret@proxy.corp:3128"), 0o600, &env);
        let config = result.expect("valid");
        let shown = format!("{config:?} {:?}", config.server.client_config());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("proxy.corp"), "{shown}");
    }

    #[test]
    fn ca_file_is_resolved_next_to_the_job_file_and_must_hold_a_certificate() {
        let env = |_: &str| None;
        let (dir, result) = check(
            "[server]\nurl = \"https://x/api/stac/v1\"\nca_file = \"missing.pem\"\n",
            0o644,
            &env,
        );
        let m = messages(result);
        assert!(
            m.iter()
                .any(|e| e.starts_with("3:11:") && e.contains("cannot read the CA file")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.contains(&dir.path().join("missing.pem").display().to_string())),
            "{m:?}"
        );
    }

    #[test]
    fn relative_config_paths_get_an_absolute_folder() {
        let folder = config_folder(Path::new("jobs.toml"));
        assert!(folder.is_absolute(), "{}", folder.display());
        assert_eq!(
            config_folder(Path::new("/etc/stac/jobs.toml")),
            Path::new("/etc/stac")
        );
    }

    #[test]
    fn enum_names_come_from_the_serde_types() {
        assert_eq!(
            parse_enum::<PolicyKind>("cancel", "policy"),
            Ok(PolicyKind::Cancel)
        );
        assert_eq!(
            parse_enum::<ApiVersion>("v0.9", "api_version"),
            Ok(ApiVersion::V09)
        );
        let e = parse_enum::<PolicyKind>("Retry", "policy").unwrap_err();
        assert!(e.starts_with("invalid policy \"Retry\""), "{e}");
        assert!(!e.contains('`'), "{e}");
    }

    #[test]
    fn part_size_is_held_to_the_api_limits() {
        assert_eq!(
            part_size(&Size::Text("16MiB".into())),
            Ok(ByteSize::mib(16))
        );
        assert_eq!(
            part_size(&Size::Bytes(5 * 1024 * 1024)),
            Ok(ByteSize::mib(5))
        );
        assert!(
            part_size(&Size::Bytes(-1))
                .unwrap_err()
                .contains("negative")
        );
        assert!(
            part_size(&Size::Text("6GiB".into()))
                .unwrap_err()
                .contains("out of range")
        );
    }
}
