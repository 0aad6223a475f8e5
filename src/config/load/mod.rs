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

use super::error::{self, ConfigError, Diagnostics};
use super::geometry::{self, check_bbox, geometry_bbox};
use super::keep::{Keep, MAX_KEEP_COUNT};
use super::metadata::{
    AssetFromFile, AssetMetadata, GeometryFrom, ItemGeometry, ItemMetadata, ItemTime, TimeValue,
    bbox_polygon,
};
use super::names::{CaptureTime, NamePattern};
use super::overlap;
use super::raw::{
    DurationText, FromFileOr, Int, RawAsset, RawAssetMetadata, RawAuth, RawCaptureTime, RawConfig,
    RawGeometry, RawItemMetadata, RawJob, RawKeep, RawObserve, RawProperties, RawServer,
    RawSettings, RawTime, RawWatch, RawWindow, Size,
};
use super::read::{MAX_JOB_FILE, read_bounded};
use super::server::{self as server_rules, MAX_TITLE};
use super::sidecar::ItemJson;
use super::template::{IdExtension, IdPart, IdTemplate, TemplateError, TextTemplate};
use super::{AssetSpec, Config, JobSpec, ObserveConfig, ServerConfig, TriggerSpec};
use super::{PolicyKind, PolicySpec, VerifyPublic};
use crate::geo::media::Validate;
use crate::trigger::watch::DEFAULT_IGNORE;
use crate::trigger::watch::bundle::{self, BundleRules, Incomplete};
use crate::trigger::{Schedule, ScheduleError, WatchSpec};
use stac_client::rules;
use stac_client::units::ByteSize;
use stac_client::{ApiVersion, Auth, CognitoAuth};
use stac_upload::bandwidth::{BandwidthLimit, BandwidthWindow};
use stac_upload::{CompressMode, MAX_PART_SIZE, MIN_PART_SIZE, UploadOptions};

type Span = Range<usize>;

mod cluster;
mod flags;
mod job;
mod metadata;
mod notify;
mod server;
mod settings;
#[cfg(test)]
mod tests;
mod trigger;

pub use self::flags::{FlagError, FlagSettings, FlagTable, check_flags};
pub use self::server::{AuthKind, MAX_CONCURRENT_UPLOADS};
pub use self::settings::SETTING_KEYS;
pub(super) use self::settings::Settings;
use self::settings::*;

/// Reads and checks the job file at `path`; secrets named by `*_env` come from the process
/// environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_job_file(path)?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// The text of the job file at `path`: a regular file of at most [`MAX_JOB_FILE`] bytes, in
/// UTF-8 (else the error locates the first byte that is not).
pub fn read_job_file(path: &Path) -> Result<String, ConfigError> {
    let bytes =
        read_bounded(path, MAX_JOB_FILE, "a job file").map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let (line, col) = error::line_col(
            std::str::from_utf8(&bytes[..valid]).unwrap_or_default(),
            valid,
        );
        ConfigError::Invalid {
            file: path.to_owned(),
            errors: vec![super::LocatedError {
                line,
                col,
                message: format!(
                    "byte 0x{:02X} is not UTF-8: expected a job file in UTF-8 text",
                    bytes.get(valid).copied().unwrap_or_default()
                ),
            }],
        }
    })
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
            let span = e.span().unwrap_or(0..0);
            diag.at_offset(span.start, shape_error(text, &span, e.message()));
            return Err(diag.into_error(source));
        }
    };
    let mut checker = Checker {
        diag: Diagnostics::new(text),
        source,
        folder: config_folder(source),
        env,
        api_version: ApiVersion::default(),
        from_flags: false,
        name_pattern: None,
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

/// A problem of shape as toml and serde give it, naming the key it is about where their message
/// does not: "duplicate key" and "number out of bounds" come without it.
fn shape_error(text: &str, span: &Span, message: &str) -> String {
    let message = tidy(message);
    let written = text.get(span.clone()).unwrap_or_default().trim();
    let key = if message.contains("duplicate key") && !written.is_empty() {
        Some(written.trim_matches(['"', '\'']).to_owned())
    } else {
        key_of_value(text, span.start)
    };
    let Some(key) = key.filter(|k| !message.contains(&format!("\"{k}\""))) else {
        return message;
    };
    let table = table_at(text, span.start).map_or_else(String::new, |t| format!(" in {t}"));
    format!("{message}: key {key:?}{table}")
}

/// The key of the `key = value` line holding `offset` in the value.
fn key_of_value(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches(['"', '\'']);
    (!key.is_empty()).then(|| key.to_owned())
}

/// The `[table]` or `[[table]]` header the line holding `offset` is under.
fn table_at(text: &str, offset: usize) -> Option<&str> {
    text.get(..offset)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.split('#').next().unwrap_or(l).trim())
}

/// serde and toml quote names with backticks; the rest of our messages use double quotes.
pub(super) fn tidy(message: &str) -> String {
    message.trim_end().replace('`', "\"")
}

/// The folder relative paths are resolved against: the config file's, made absolute so that it
/// still holds if the daemon changes directory.
pub(super) fn config_folder(source: &Path) -> PathBuf {
    let source = std::path::absolute(source).unwrap_or_else(|_| source.to_owned());
    match source.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Parses one of our serde enums from a string, so that its names stay defined in one place.
pub(super) fn parse_enum<'de, T: Deserialize<'de>>(s: &'de str, key: &str) -> Result<T, String> {
    let de: serde::de::value::StrDeserializer<'de, serde::de::value::Error> = s.into_deserializer();
    T::deserialize(de).map_err(|e| format!("invalid {key} {s:?}: {}", tidy(&e.to_string())))
}

pub(super) fn fmt_duration(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// An optional key's checked value: `None` when it was written and refused (the error is
/// recorded), `Some(None)` when it was not written.
pub(super) fn written<T>(checked: Option<Option<T>>) -> Option<Option<T>> {
    match checked {
        Some(None) => None,
        Some(Some(v)) => Some(Some(v)),
        None => Some(None),
    }
}

/// `Ok` when only the owner can read the file; else why the file is open to others.
pub(super) fn private_file(path: &Path) -> Result<(), String> {
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
pub(super) fn expand_vars(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
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

struct Checker<'a> {
    diag: Diagnostics<'a>,
    source: &'a Path,
    folder: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// `[server] api_version` as far as it was read: the asset fields differ.
    api_version: ApiVersion,
    /// The text was written from command-line flags (`flags.rs`), not by an operator: paths are
    /// taken as the shell left them (no `${VAR}`), relative to the working directory.
    from_flags: bool,
    /// The `name_pattern` of the job being checked: its captures are the placeholders its
    /// templates may use besides the file name's.
    name_pattern: Option<NamePattern>,
}

impl Checker<'_> {
    pub(super) fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let state_dir = self.state_dir(raw.state_dir.as_ref());
        let server = self.server(&raw.server);
        if let Some(s) = &server {
            self.api_version = s.api_version;
        }

        let defaults = self.layer(raw.defaults.settings());
        self.check_delay_order(&defaults, &Layer::default());
        let bandwidth = self.server_bandwidth(&raw.server, defaults.timezone());
        let max_concurrent_uploads = self.max_concurrent_uploads(&raw.server);

        if raw.job.is_empty() {
            self.diag.at_offset(
                0,
                "no [[job]] defined: expected at least one [[job]] table (a schedule or a watched folder)",
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut targets: HashMap<&str, Vec<&RawJob>> = HashMap::new();
        let mut jobs = Vec::with_capacity(raw.job.len());
        for job in &raw.job {
            self.check_name(&job.name, &mut seen);
            self.check_target(job, &mut targets);
            jobs.push(self.job(job, &defaults));
        }
        let observe = self.observe(&raw.observe);
        let cluster = match &raw.cluster {
            None => Some(None),
            Some(c) => self.cluster(c).map(Some),
        };
        let notify = self.notify(&raw.notify, &raw.job);
        Some(Config {
            source: self.source.to_owned(),
            state_dir: state_dir?,
            server: server?,
            jobs: jobs.into_iter().collect::<Option<Vec<_>>>()?,
            observe: observe?,
            bandwidth_limit: bandwidth?,
            max_concurrent_uploads: max_concurrent_uploads?,
            cluster: cluster?,
            notify: notify?,
        })
    }

    pub(super) fn state_dir(&mut self, raw: Option<&Spanned<String>>) -> Option<PathBuf> {
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

    /// Runs `check` on a value written in the file, recording its error at the value.
    pub(super) fn value<R, T>(
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

    pub(super) fn duration(
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

    pub(super) fn positive_duration(
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

    pub(super) fn int_in(
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

    /// A string that must not be empty.
    pub(super) fn non_empty(&mut self, raw: &Spanned<String>, what: &str) -> Option<String> {
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
    pub(super) fn path(&mut self, raw: &Spanned<String>, key: &str) -> Option<PathBuf> {
        if raw.get_ref().is_empty() {
            self.diag
                .at(&raw.span(), format!("{key} is empty: expected a path"));
            return None;
        }
        if self.from_flags {
            return Some(self.folder.join(raw.get_ref()));
        }
        match expand_vars(raw.get_ref(), self.env) {
            Ok(expanded) => Some(self.folder.join(expanded)),
            Err(problem) => {
                self.diag.at(&raw.span(), format!("{key}: {problem}"));
                None
            }
        }
    }

    /// Records `message` at byte `offset` inside the string value `raw` when it is written
    /// without escapes (so offsets in the string are offsets in the file), else at the value.
    pub(super) fn at_in_string(&mut self, raw: &Spanned<String>, offset: usize, message: String) {
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
}
