//! Settings given as command-line flags (`stac-uploadd upload`), checked by the job file's own
//! checks: the flags are written as the job file would hold them, one `key = value` line per
//! flag, and a refused value is reported at its flag (`--retries: ...`) rather than at a
//! `file:line:col`. The same key can then not mean another thing, or take other bounds, on the
//! command line.

use super::*;
use stac_upload::bandwidth::BandwidthLimit;

/// Flags written as a job file: `[server]`, `[server.auth]` and `[defaults]` keys.
#[derive(Debug, Clone, Default)]
pub struct FlagTable {
    text: String,
    /// The flag each line was written from (empty for a table header).
    flags: Vec<String>,
}

impl FlagTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the table `[name]` (`server`, `server.auth` or `defaults`).
    pub fn table(&mut self, name: &str) -> &mut Self {
        self.line(format!("[{name}]"), String::new())
    }

    /// `key = value`, from `flag` (which a refusal names).
    pub fn set(&mut self, flag: &str, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        let value: toml::Value = value.into();
        self.line(format!("{key} = {value}"), flag.to_owned())
    }

    /// The text as the job file's parser reads it.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn line(&mut self, line: String, flag: String) -> &mut Self {
        self.text.push_str(&line);
        self.text.push('\n');
        self.flags.push(flag);
        self
    }

    /// The flag written on 1-based `line`.
    fn flag(&self, line: usize) -> &str {
        line.checked_sub(1)
            .and_then(|i| self.flags.get(i))
            .map_or("", String::as_str)
    }
}

/// What the flags set, checked as the job file's keys of the same names are.
#[derive(Debug)]
pub struct FlagSettings {
    pub server: ServerConfig,
    /// `retries`, `retry_min_delay`, `retry_max_delay`: the runs' retry policy.
    pub policy: PolicySpec,
    pub upload: UploadOptions,
    pub bandwidth_limit: Option<BandwidthLimit>,
}

/// Flags refused, each as `--flag: problem` (the problem as the job file's key would get it).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct FlagError(pub Vec<String>);

/// The flags' keys as the job file reads them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlags {
    server: RawServer,
    #[serde(default)]
    defaults: super::super::raw::RawDefaults,
}

/// Checks `flags` with the job file's checks; `env` holds the secrets named by `*_env` keys.
/// Relative paths are taken from the working directory.
pub fn check_flags(
    flags: &FlagTable,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FlagSettings, FlagError> {
    let source = Path::new("the command line");
    let text = flags.text();
    let at_flags = |e: ConfigError| {
        FlagError(
            e.errors()
                .iter()
                .map(|e| match flags.flag(e.line) {
                    "" => e.message.clone(),
                    flag => format!("{flag}: {}", e.message),
                })
                .collect(),
        )
    };
    let raw: RawFlags = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let mut diag = Diagnostics::new(text);
            diag.at_offset(e.span().map_or(0, |s| s.start), tidy(e.message()));
            return Err(at_flags(diag.into_error(source)));
        }
    };
    let mut checker = Checker {
        diag: Diagnostics::new(text),
        source,
        folder: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        env,
        api_version: ApiVersion::default(),
        from_flags: true,
        name_pattern: None,
    };
    let server = checker.server(&raw.server);
    let layer = checker.layer(raw.defaults.settings());
    checker.check_delay_order(&layer, &Layer::default());
    checker.diag.finish(source).map_err(at_flags)?;
    let settings = layer.resolve();
    Ok(FlagSettings {
        server: server.expect("flags without errors yield a server"),
        bandwidth_limit: settings.bandwidth(),
        policy: settings.policy,
        upload: settings.upload,
    })
}
