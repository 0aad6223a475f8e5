//! The job-file loader: every broken file is refused with `file:line:col` and what was expected;
//! the documented example and the inheritance rules load as described.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::ExposeSecret;
use stac_client::units::ByteSize;
use stac_client::{ApiVersion, Auth};
use stac_upload::CompressMode;
use stac_uploadd::config::PolicyKind;
use stac_uploadd::config::{self, Config, ConfigError, IdTemplate, ItemTime, TimeValue};
use stac_uploadd::trigger::TriggerSpec;
use tempfile::TempDir;

/// Replaced by the temporary folder in every config text.
const DIR: &str = "@DIR@";

/// A valid cron job, appended to cases about `[server]` and `[defaults]` so that only the
/// problem under test is reported.
const JOB: &str = r#"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#;

/// A run time for rendering templates: 25 November 2026, 06:00 in Zurich.
fn run_time() -> chrono::DateTime<chrono_tz::Tz> {
    use chrono::TimeZone;
    chrono_tz::Europe::Zurich
        .with_ymd_and_hms(2026, 11, 25, 6, 0, 0)
        .unwrap()
}

/// Environment seen by the loader: the process environment is never touched.
fn env(name: &str) -> Option<String> {
    match name {
        "STAC_PW" => Some("pw-from-env".into()),
        "DB_URL" => Some("postgres://stac:dbpw@db.example:5432/stac".into()),
        "NOT_PG" => Some("mysql://stac:dbpw@db.example/stac".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

/// A folder with what the configs refer to: `export/`, `incoming/`, a plain file `afile`, and
/// `secret.txt` holding "s3cret" and a newline.
fn folder() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("export")).expect("mkdir");
    std::fs::create_dir(dir.path().join("incoming")).expect("mkdir");
    std::fs::write(dir.path().join("afile"), "x").expect("write");
    std::fs::write(dir.path().join("secret.txt"), "s3cret\n").expect("write");
    dir
}

/// Writes `text` as `jobs.toml` with `mode` into `dir` and loads it.
fn load_in(dir: &Path, text: &str, mode: u32) -> (PathBuf, Result<Config, ConfigError>) {
    let path = dir.join("jobs.toml");
    let text = text.replace(DIR, dir.to_str().expect("utf-8 temp path"));
    std::fs::write(&path, &text).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let result = config::parse(&text, &path, &env);
    (path, result)
}

fn load_ok(text: &str) -> (TempDir, Config) {
    let dir = folder();
    let (_, result) = load_in(dir.path(), text, 0o600);
    match result {
        Ok(c) => (dir, c),
        Err(e) => panic!("expected the config to load, got:\n{e}"),
    }
}

/// Asserts that `text` is refused with an error at `line` (and `col`) whose message contains
/// `fragment`, and that the displayed error is `jobs.toml-path:line:col: message`.
fn expect_error(
    case: &str,
    text: &str,
    mode: u32,
    line: usize,
    col: Option<usize>,
    fragment: &str,
) {
    let dir = folder();
    let (path, result) = load_in(dir.path(), text, mode);
    let err = match result {
        Ok(_) => {
            panic!("case {case}: expected an error containing {fragment:?}, but the config loaded")
        }
        Err(e) => e,
    };
    let found = err.errors().iter().find(|e| e.message.contains(fragment));
    let Some(found) = found else {
        panic!("case {case}: no error contains {fragment:?}; got:\n{err}");
    };
    assert_eq!(
        found.line, line,
        "case {case}: wrong line for {fragment:?}; got:\n{err}"
    );
    if let Some(col) = col {
        assert_eq!(
            found.col, col,
            "case {case}: wrong column for {fragment:?}; got:\n{err}"
        );
    }
    let shown = format!(
        "{}:{}:{}: {}",
        path.display(),
        found.line,
        found.col,
        found.message
    );
    assert!(
        err.to_string().lines().any(|l| l == shown),
        "case {case}: display lacks {shown:?}; got:\n{err}"
    );
}

/// One test per broken config: `name, text, line, col, fragment` (`mode` 0600 unless given).
macro_rules! broken {
    ($name:ident, $text:expr, $line:expr, $col:expr, $fragment:expr $(,)?) => {
        broken!($name, $text, 0o600, $line, $col, $fragment);
    };
    ($name:ident, $text:expr, $mode:expr, $line:expr, $col:expr, $fragment:expr $(,)?) => {
        #[test]
        fn $name() {
            let text: String = $text.into();
            expect_error(stringify!($name), &text, $mode, $line, $col, $fragment);
        }
    };
}

fn with_job(head: &str) -> String {
    format!("{head}{JOB}")
}

// --- shape: syntax, unknown keys, types -----------------------------------------------------

broken!(
    toml_syntax_error,
    with_job("[server\nurl = \"https://stac.example/api/stac/v1\"\n"),
    1,
    Some(8),
    "unclosed table"
);

broken!(
    unknown_top_level_key,
    with_job(
        r#"colour = "blue"
[server]
url = "https://stac.example/api/stac/v1"
"#
    ),
    1,
    Some(1),
    "unknown field \"colour\", expected one of \"state_dir\", \"server\", \"defaults\", \"job\""
);

broken!(
    unknown_key_in_server,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
parralel = 4
"#
    ),
    3,
    Some(1),
    "unknown field \"parralel\", expected one of \"url\""
);

broken!(
    unknown_key_in_auth,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
pasword_env = "STAC_PW"
"#
    ),
    6,
    Some(1),
    "unknown field \"pasword_env\""
);

broken!(
    unknown_key_in_defaults,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
retrys = 3
"#
    ),
    4,
    Some(1),
    "unknown field \"retrys\", expected one of"
);

broken!(
    unknown_key_in_job,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
shedule = "0 3 * * *"
"#,
    8,
    Some(1),
    "unknown field \"shedule\""
);

broken!(
    unknown_key_in_watch,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
[job.watch]
dir = "incoming"
pattern = "*.h5"
recursiv = true
"#,
    10,
    Some(1),
    "unknown field \"recursiv\", expected one of \"dir\", \"pattern\", \"recursive\""
);

broken!(
    wrong_type_parallel,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
parallel = "four"
"#
    ),
    4,
    Some(12),
    "invalid type: string \"four\", expected an integer"
);

broken!(
    duration_given_as_number,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
request_timeout = 60
"#
    ),
    3,
    Some(19),
    "expected a duration string with a unit"
);

broken!(
    missing_server_table,
    JOB,
    1,
    Some(1),
    "missing field \"server\""
);

// --- server ------------------------------------------------------------------------------------

broken!(
    bad_url,
    with_job("[server]\nurl = \"not a url\"\n"),
    2,
    Some(7),
    "invalid url \"not a url\""
);

broken!(
    url_not_http,
    with_job("[server]\nurl = \"ftp://stac.example/v1\"\n"),
    2,
    Some(7),
    "has scheme \"ftp\": expected http or https"
);

broken!(
    bad_api_version,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
api_version = "v2"
"#
    ),
    3,
    Some(15),
    "invalid api_version \"v2\""
);

broken!(
    zero_connect_timeout,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
connect_timeout = "0s"
"#
    ),
    3,
    Some(19),
    "connect_timeout must be longer than 0"
);

// --- auth --------------------------------------------------------------------------------------

broken!(
    bad_auth_type,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "kerberos"
"#
    ),
    4,
    Some(8),
    "invalid auth type \"kerberos\""
);

broken!(
    basic_without_username,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
password_env = "STAC_PW"
"#
    ),
    4,
    Some(8),
    "auth type \"basic\" needs a username"
);

broken!(
    basic_without_password,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
"#
    ),
    4,
    Some(8),
    "needs its password: expected one of password_env, password_file or password"
);

broken!(
    two_secret_sources,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password_env = "STAC_PW"
password_file = "secret.txt"
"#
    ),
    7,
    Some(17),
    "password_file conflicts with password_env (line 6): expected exactly one of"
);

broken!(
    token_key_with_basic,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password_env = "STAC_PW"
token_env = "STAC_PW"
"#
    ),
    7,
    Some(13),
    "token_env does not apply to auth type \"basic\""
);

broken!(
    bearer_without_token,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "bearer"
"#
    ),
    4,
    Some(8),
    "needs its token: expected one of token_env, token_file or token"
);

broken!(
    missing_env_var,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "token"
token_env = "NOT_SET_ANYWHERE"
"#
    ),
    5,
    Some(13),
    "environment variable NOT_SET_ANYWHERE (from token_env) is not set"
);

broken!(
    empty_env_var,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "token"
token_env = "EMPTY"
"#
    ),
    5,
    Some(13),
    "environment variable EMPTY (from token_env) is empty"
);

broken!(
    unreadable_secret_file,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password_file = "no-such-secret"
"#
    ),
    6,
    Some(17),
    "cannot read password_file"
);

// A device, a FIFO or a large file is refused without being read: /dev/zero would never end.
broken!(
    secret_file_that_is_a_device,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password_file = "/dev/zero"
"#
    ),
    6,
    Some(17),
    "cannot read password_file /dev/zero: not a regular file"
);

broken!(
    inline_password_in_world_readable_file,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password = "hunter2"
"#
    ),
    0o644,
    6,
    Some(12),
    "inline password refused"
);

broken!(
    inline_token_in_group_readable_file,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "bearer"
token = "abc"
"#
    ),
    0o640,
    5,
    Some(9),
    "anyone on the machine could read it; use token_file or token_env instead, or chmod 600"
);

// --- defaults and per-job settings -------------------------------------------------------------

broken!(
    bad_duration,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
run_timeout = "2 hourz"
"#
    ),
    4,
    Some(15),
    "invalid duration \"2 hourz\" for run_timeout"
);

broken!(
    bad_size,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
part_size = "16 parsecs"
"#
    ),
    4,
    Some(13),
    "invalid byte size \"16 parsecs\""
);

broken!(
    part_size_below_the_api_minimum,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
part_size = "1MiB"
"#
    ),
    4,
    Some(13),
    "part_size = 1MiB is out of range: expected 5MiB to 5GiB"
);

broken!(
    parallel_zero,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
parallel = 0
"#
    ),
    4,
    Some(12),
    "parallel = 0 is out of range: expected 1 to 32"
);

broken!(
    parallel_99_in_a_job,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
parallel = 99
"#,
    9,
    Some(12),
    "parallel = 99 is out of range: expected 1 to 32"
);

broken!(
    retries_11,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
retries = 11
"#
    ),
    4,
    Some(11),
    "retries = 11 is out of range: expected 0 to 10"
);

broken!(
    retry_min_delay_10ms,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
retry_min_delay = "10ms"
"#
    ),
    4,
    Some(19),
    "retry_min_delay = 10ms is too short: expected at least 100ms"
);

broken!(
    retry_min_above_max,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
retry_min_delay = "5m"
retry_max_delay = "1m"
"#
    ),
    4,
    Some(19),
    "retry_min_delay (5m) is longer than retry_max_delay (1m)"
);

broken!(
    retry_min_in_job_above_inherited_max,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
retry_max_delay = "1s"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
retry_min_delay = "5s"
"#,
    11,
    Some(19),
    "retry_min_delay (5s) is longer than retry_max_delay (1s)"
);

broken!(
    bad_policy,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
policy = "sometimes"
"#
    ),
    4,
    Some(10),
    "invalid policy \"sometimes\": unknown variant \"sometimes\", expected one of \"retry\", \"cancel\", \"auto\""
);

broken!(
    zero_stale_after,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
stale_after = "0s"
"#
    ),
    4,
    Some(15),
    "stale_after must be longer than 0"
);

// --- jobs --------------------------------------------------------------------------------------

broken!(
    no_jobs,
    "[server]\nurl = \"https://stac.example/api/stac/v1\"\n",
    1,
    Some(1),
    "expected at least one [[job]]"
);

broken!(
    empty_job_name,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = ""
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    4,
    Some(8),
    "job name is empty"
);

broken!(
    bad_characters_in_job_name,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "daily map"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    4,
    Some(8),
    "invalid job name \"daily map\" (' ' not allowed)"
);

broken!(
    duplicate_job_names,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
[[job]]
name = "j"
collection = "c"
asset = "b.tif"
file = "export/b.tif"
schedule = "0 4 * * *"
"#,
    10,
    Some(8),
    "duplicate job name \"j\": already used by the job at line 4"
);

broken!(
    empty_collection,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = ""
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    5,
    Some(14),
    "collection is empty"
);

broken!(
    both_file_and_watch,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
[job.watch]
dir = "incoming"
pattern = "*.tif"
"#,
    7,
    Some(8),
    "has both file/schedule and [job.watch]: expected exactly one trigger"
);

broken!(
    neither_file_nor_watch,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
"#,
    4,
    Some(8),
    "job \"j\" has no trigger: expected either file + schedule (cron), file + every (an interval) or a [job.watch] table"
);

broken!(
    schedule_without_file,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
schedule = "0 3 * * *"
"#,
    7,
    Some(12),
    "has a schedule but no file"
);

broken!(
    file_without_schedule,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
"#,
    7,
    Some(8),
    "has a file but no schedule"
);

broken!(
    cron_minute_61,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "61 * * * *"
"#,
    8,
    Some(12),
    "invalid cron expression \"61 * * * *\""
);

broken!(
    cron_with_three_fields,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "* * *"
"#,
    8,
    Some(12),
    "expected 5 fields (minute hour day month weekday) or 6 with seconds first"
);

broken!(
    unknown_time_zone_in_job,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
timezone = "Europe/Zurik"
"#,
    9,
    Some(12),
    "unknown time zone \"Europe/Zurik\": expected an IANA name"
);

broken!(
    unknown_time_zone_in_defaults,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
timezone = "Mars/Olympus"
"#
    ),
    4,
    Some(12),
    "unknown time zone \"Mars/Olympus\""
);

broken!(
    cron_file_in_missing_folder,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "no-such-folder/a.tif"
schedule = "0 3 * * *"
"#,
    7,
    Some(8),
    "no-such-folder does not exist: the file may appear later, but its folder must exist"
);

broken!(
    placeholder_in_cron_asset,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "{stem}.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    6,
    Some(9),
    "uses placeholders, which only apply to watch jobs"
);

// --- watch jobs --------------------------------------------------------------------------------

broken!(
    missing_watch_dir,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
[job.watch]
dir = "no-such-folder"
pattern = "*.h5"
"#,
    8,
    Some(7),
    "no-such-folder does not exist: expected an existing folder"
);

broken!(
    watch_dir_is_a_file,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
[job.watch]
dir = "afile"
pattern = "*.h5"
"#,
    8,
    Some(7),
    "is not a directory"
);

broken!(
    bad_glob_pattern,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
[job.watch]
dir = "incoming"
pattern = "[a-"
"#,
    9,
    Some(11),
    "invalid pattern \"[a-\""
);

broken!(
    bad_ignore_glob,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
[job.watch]
dir = "incoming"
pattern = "*.h5"
ignore = ["*.tmp", "{a"]
"#,
    10,
    Some(20),
    "invalid ignore glob \"{a\""
);

broken!(
    zero_poll,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
[job.watch]
dir = "incoming"
pattern = "*.h5"
poll = "0s"
"#,
    10,
    Some(8),
    "poll must be longer than 0"
);

broken!(
    unknown_template_placeholder,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "radar-{date}.h5"
[job.watch]
dir = "incoming"
pattern = "*.h5"
"#,
    6,
    // At the brace: `asset = "radar-` is 15 characters.
    Some(16),
    "unknown placeholder \"{date}\" in asset \"radar-{date}.h5\": expected {name} (the file name), {stem}"
);

broken!(
    unbalanced_brace,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{stem.h5"
[job.watch]
dir = "incoming"
pattern = "*.h5"
"#,
    6,
    Some(10),
    "unbalanced \"{\" in asset \"{stem.h5\""
);

broken!(
    timezone_in_a_watch_job,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
timezone = "Europe/Zurich"
[job.watch]
dir = "incoming"
pattern = "*.h5"
"#,
    7,
    Some(12),
    "timezone only applies to cron schedules"
);

// --- all problems at once, unreadable files ----------------------------------------------------

#[test]
fn every_problem_is_reported_in_file_order() {
    let dir = folder();
    let text = r#"[server]
url = "https://stac.example/api/stac/v1"
api_version = "v3"
[defaults]
parallel = 0
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "61 * * * *"
"#;
    let (path, result) = load_in(dir.path(), text, 0o600);
    let err = result.expect_err("three problems");
    let at: Vec<(usize, usize)> = err.errors().iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(at, [(3, 15), (5, 12), (11, 12)], "{err}");
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 3, "{shown}");
    let first = format!("{}:3:15: invalid api_version \"v3\"", path.display());
    assert!(shown.starts_with(&first), "{shown}");
}

#[test]
fn an_unreadable_file_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.toml");
    let err = config::load(&path).expect_err("no such file");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.errors().is_empty());
}

// --- files that load ---------------------------------------------------------------------------

/// The README's job file is the first one a reader copies: it must load as it is written, its
/// folders aside.
#[test]
fn the_readme_job_file_loads() {
    let dir = folder();
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme).expect("the README exists");
    let start = readme
        .find("```toml\n[server]")
        .expect("a job file in the README")
        + 8;
    let end = start + readme[start..].find("```").expect("closed");
    let root = dir.path().to_str().expect("utf-8 temp path");
    for folder in ["data/radar", "data/incoming/stations", "data/s2/out"] {
        std::fs::create_dir_all(dir.path().join(folder)).expect("mkdir");
    }
    let text = readme[start..end].replace("\"/data/", &format!("\"{root}/data/"));
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, &text).expect("write");
    let env = |name: &str| (name == "STAC_PASSWORD").then(|| "pw".to_owned());
    let config = config::parse(&text, &path, &env)
        .unwrap_or_else(|e| panic!("the README's job file must load:\n{e}"));
    let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["radar", "stations", "s2-daily"]);
    let s2 = &config.jobs[2];
    assert_eq!(s2.assets.len(), 3);
    assert_eq!(s2.alias.as_deref(), Some("current"));
    assert!(s2.keep.is_some());
}

#[test]
fn the_documented_example_loads() {
    let dir = folder();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/jobs.example.toml");
    let text = std::fs::read_to_string(&example).expect("the example exists");
    let root = dir.path().to_str().expect("utf-8 temp path");
    std::fs::create_dir_all(dir.path().join("data/export")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("data/incoming/radar")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("data/incoming/satromo")).expect("mkdir");
    let text = text
        .replace("\"/data/", &format!("\"{root}/data/"))
        .replace("\"/var/lib/stac-uploadd\"", &format!("\"{root}/state\""));
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, &text).expect("write");
    let env = |name: &str| (name == "STAC_UPLOADD_PASSWORD").then(|| "from-env".to_owned());
    let config = match config::parse(&text, &path, &env) {
        Ok(c) => c,
        Err(e) => panic!("the example must load:\n{e}"),
    };

    assert_eq!(config.source, path);
    assert_eq!(config.state_dir, dir.path().join("state"));
    assert_eq!(
        config.server.url.as_str(),
        "https://data.geo.admin.ch/api/stac/v1"
    );
    assert_eq!(config.server.api_version, ApiVersion::V1);
    assert_eq!(config.server.connect_timeout, Duration::from_secs(10));
    assert_eq!(config.server.request_timeout, Duration::from_secs(60));
    match &config.server.auth {
        Auth::Basic { username, password } => {
            assert_eq!(username, "publisher@example.admin.ch");
            assert_eq!(password.expose_secret(), "from-env");
        }
        other => panic!("expected basic auth, got {other:?}"),
    }

    let [daily, radar, archive, s2, satromo] = config.jobs.as_slice() else {
        panic!("five jobs expected: {:?}", config.jobs);
    };
    // The raster publisher: its footprint, EPSG code and pixel size from each file.
    let item = satromo.item_metadata.as_ref().expect("item metadata");
    assert!(matches!(
        item.geometry,
        config::ItemGeometry::FromFile(config::GeometryFrom { asset: None, .. })
    ));
    let asset = satromo.asset_metadata.as_ref().expect("asset metadata");
    assert!(asset.from_file.proj_epsg && asset.from_file.gsd);
    assert_eq!(satromo.validate, stac_uploadd::geo::media::Validate::Strict);
    // The item job: its assets, their files (a glob for one) and the alias.
    assert_eq!(s2.alias.as_deref(), Some("s2-current"));
    let ids: Vec<&str> = s2.assets.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["s2-%Y-%m-%d.tif", "thumbnail.png"]);
    assert!(s2.assets[0].file.ends_with("data/export/s2_*.tif"));
    assert!(s2.assets.iter().all(|a| a.required && a.metadata.is_some()));
    assert_eq!(daily.name, "daily-map");
    assert_eq!(daily.collection, "ch.swisstopo.example");
    assert_eq!(daily.item.as_deref(), Some("map-current"));
    assert_eq!(daily.asset, IdTemplate::parse("map.tif").unwrap());
    match &daily.trigger {
        TriggerSpec::Cron { file, schedule } => {
            assert_eq!(file, &dir.path().join("data/export/map.tif"));
            assert_eq!(schedule.timezone(), chrono_tz::Europe::Zurich);
        }
        other => panic!("daily-map should be a cron job: {other:?}"),
    }
    assert_eq!(daily.policy.kind, PolicyKind::Auto);
    assert_eq!(daily.policy.auto_threshold, Duration::from_secs(3600));
    assert_eq!(daily.policy.retries, 3);
    assert_eq!(daily.policy.retry_min_delay, Duration::from_secs(1));
    assert_eq!(daily.policy.retry_max_delay, Duration::from_secs(600));
    assert_eq!(daily.policy.stale_after, Duration::from_secs(3600));
    assert_eq!(daily.policy.run_timeout, Duration::from_secs(7200));
    assert_eq!(daily.upload.part_size, ByteSize::mib(16));
    assert_eq!(daily.upload.parallel, 4);

    assert_eq!(radar.name, "radar");
    assert_eq!(radar.policy.kind, PolicyKind::Cancel);
    assert_eq!(
        radar.asset.render("20260101.h5", &run_time()),
        "20260101.h5"
    );
    match &radar.trigger {
        TriggerSpec::Watch(w) => {
            assert_eq!(w.dir, dir.path().join("data/incoming/radar"));
            assert!(w.pattern.is_match("scan.h5"));
            assert!(!w.pattern.is_match("scan.tif"));
            assert!(!w.recursive);
            for name in ["scan.h5.tmp", ".scan.h5", "scan.h5~"] {
                assert!(w.ignore.is_match(name), "{name} is ignored");
            }
            assert!(!w.ignore.is_match("scan.h5"));
            assert_eq!(w.settle, Duration::from_secs(2));
            assert_eq!(w.poll, None);
        }
        other => panic!("radar should be a watch job: {other:?}"),
    }
    assert_eq!(config.bandwidth_limit, None, "commented out in [server]");
    assert_eq!(daily.upload.compress, CompressMode::None);
    assert!(daily.upload.skip_unchanged);
    assert_eq!((daily.jitter, daily.catch_up), (None, false));
    assert_eq!(daily.bandwidth_limit, None);

    assert_eq!(archive.name, "radar-archive");
    match &archive.trigger {
        TriggerSpec::Every { file, interval } => {
            assert_eq!(file, &dir.path().join("data/export/radar.h5"));
            assert_eq!(*interval, Duration::from_secs(600));
        }
        other => panic!("radar-archive should be an every job: {other:?}"),
    }
    assert_eq!(archive.jitter, Some(Duration::from_secs(30)));
    assert_eq!(archive.upload.compress, CompressMode::Gzip);
    assert_eq!(archive.timezone, chrono_tz::Europe::Zurich);
    let limit = archive.bandwidth_limit.as_ref().expect("a job limit");
    assert_eq!(limit.rate, Some(ByteSize(10_000_000)));
    assert_eq!(limit.timezone, chrono_tz::Europe::Zurich);
    assert_eq!(limit.windows.len(), 1);
    let run = run_time();
    let item = archive
        .item
        .as_ref()
        .expect("an item")
        .render("radar.h5", &run);
    let asset = archive.asset.render("radar.h5", &run);
    assert_eq!(
        (item.as_str(), asset.as_str()),
        ("radar-2026-11-25", "radar-20261125-0600.h5")
    );
    let body = archive
        .item_metadata
        .as_ref()
        .expect("item metadata")
        .item_body(&item, "radar.h5", &run);
    assert_eq!(body["properties"]["start_datetime"], "2026-11-24T23:00:00Z");
    assert_eq!(body["properties"]["end_datetime"], "2026-11-25T22:59:59Z");
    assert_eq!(body["properties"]["expires"], "2026-12-25T05:00:00Z");
    assert_eq!(
        body["properties"]["title"],
        "Radar composites of 25.11.2026"
    );
    let asset_body = archive
        .asset_metadata
        .as_ref()
        .expect("asset metadata")
        .asset_body(&asset, "radar.h5", &run);
    assert_eq!(
        asset_body,
        serde_json::json!({
            "id": "radar-20261125-0600.h5", "type": "application/x-hdf5",
            "title": "Composite 06:00", "roles": ["data"], "proj:epsg": 2056,
        })
    );
}

#[test]
fn jobs_inherit_defaults_and_override_them() {
    let (_dir, config) = load_ok(
        r#"[server]
url = "http://127.0.0.1:8080/api/stac/v0.9"
api_version = "v0.9"
[defaults]
part_size = "32MiB"
parallel = 8
policy = "retry"
auto_threshold = "30m"
retries = 5
retry_min_delay = "2s"
retry_max_delay = "1m"
stale_after = "3h"
run_timeout = "1h"
timezone = "Europe/Zurich"

[[job]]
name = "inherits"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"

[[job]]
name = "overrides"
collection = "c"
item = "i"
asset = "b.tif"
file = "export/b.tif"
schedule = "*/5 * * * *"
part_size = 8388608
parallel = 2
policy = "cancel"
auto_threshold = "2h"
retries = 0
retry_min_delay = "500ms"
retry_max_delay = "5s"
stale_after = "10m"
run_timeout = "20m"
timezone = "UTC"
"#,
    );
    assert_eq!(config.server.api_version, ApiVersion::V09);
    assert!(matches!(config.server.auth, Auth::None));
    let [inherits, overrides] = config.jobs.as_slice() else {
        panic!("two jobs: {:?}", config.jobs);
    };

    assert_eq!(inherits.item, None);
    assert_eq!(inherits.upload.part_size, ByteSize::mib(32));
    assert_eq!(inherits.upload.parallel, 8);
    let p = &inherits.policy;
    assert_eq!(p.kind, PolicyKind::Retry);
    assert_eq!(p.auto_threshold, Duration::from_secs(1800));
    assert_eq!(p.retries, 5);
    assert_eq!(p.retry_min_delay, Duration::from_secs(2));
    assert_eq!(p.retry_max_delay, Duration::from_secs(60));
    assert_eq!(p.stale_after, Duration::from_secs(3 * 3600));
    assert_eq!(p.run_timeout, Duration::from_secs(3600));
    let TriggerSpec::Cron { schedule, .. } = &inherits.trigger else {
        panic!("cron expected");
    };
    assert_eq!(schedule.timezone(), chrono_tz::Europe::Zurich);

    assert_eq!(overrides.item.as_deref(), Some("i"));
    assert_eq!(overrides.upload.part_size, ByteSize::mib(8));
    assert_eq!(overrides.upload.parallel, 2);
    let p = &overrides.policy;
    assert_eq!(p.kind, PolicyKind::Cancel);
    assert_eq!(p.auto_threshold, Duration::from_secs(7200));
    assert_eq!(p.retries, 0);
    assert_eq!(p.retry_min_delay, Duration::from_millis(500));
    assert_eq!(p.retry_max_delay, Duration::from_secs(5));
    assert_eq!(p.stale_after, Duration::from_secs(600));
    assert_eq!(p.run_timeout, Duration::from_secs(1200));
    let TriggerSpec::Cron { schedule, .. } = &overrides.trigger else {
        panic!("cron expected");
    };
    assert_eq!(schedule.timezone(), chrono_tz::UTC);

    // The part-level settings of UploadOptions are not in the job file: they keep their defaults.
    let d = stac_upload::UploadOptions::default();
    assert_eq!(overrides.upload.part_retries, d.part_retries);
    assert_eq!(overrides.upload.stall_timeout, d.stall_timeout);
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let (dir, config) = load_ok(
        r#"state_dir = "var/state"
[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password_file = "secret.txt"

[[job]]
name = "cron"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"

[[job]]
name = "watch"
collection = "c"
asset = "scan-{stem}.h5"
[job.watch]
dir = "incoming"
pattern = "**/*.h5"
recursive = true
ignore = ["*.part"]
settle = "500ms"
poll = "5s"
[job.asset_metadata]
type = "application/x-hdf5"
"#,
    );
    assert_eq!(config.state_dir, dir.path().join("var/state"));
    match &config.server.auth {
        // The trailing newline of the secret file is not part of the password.
        Auth::Basic { password, .. } => assert_eq!(password.expose_secret(), "s3cret"),
        other => panic!("basic expected: {other:?}"),
    }
    let TriggerSpec::Cron { file, .. } = &config.jobs[0].trigger else {
        panic!("cron expected");
    };
    assert_eq!(file, &dir.path().join("export/a.tif"));
    let TriggerSpec::Watch(w) = &config.jobs[1].trigger else {
        panic!("watch expected");
    };
    assert_eq!(w.dir, dir.path().join("incoming"));
    assert!(w.recursive);
    assert!(w.pattern.is_match("2026/01/scan.h5"));
    assert!(w.ignore.is_match("scan.part"));
    // A given ignore list replaces the default one.
    assert!(!w.ignore.is_match("scan.tmp"));
    assert_eq!(w.settle, Duration::from_millis(500));
    assert_eq!(w.poll, Some(Duration::from_secs(5)));
}

#[test]
fn state_dir_defaults_to_systemd_then_the_config_folder() {
    let text = format!("[server]\nurl = \"https://stac.example/api/stac/v1\"\n{JOB}");
    let (dir, config) = load_ok(&text);
    assert_eq!(config.state_dir, dir.path().join("state"));

    let systemd =
        |name: &str| (name == "STATE_DIRECTORY").then(|| "/var/lib/a:/var/lib/b".to_owned());
    let path = dir.path().join("jobs.toml");
    let config = config::parse(&text, &path, &systemd).expect("loads");
    assert_eq!(config.state_dir, Path::new("/var/lib/a"));
}

#[test]
fn inline_secrets_are_accepted_in_a_private_file() {
    let dir = folder();
    let text = with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "token"
token = "t0ken"
"#,
    );
    let (_, result) = load_in(dir.path(), &text, 0o600);
    match result {
        Ok(c) => match c.server.auth {
            Auth::Token(t) => assert_eq!(t.expose_secret(), "t0ken"),
            other => panic!("token expected: {other:?}"),
        },
        Err(e) => panic!("a 0600 file may hold an inline token:\n{e}"),
    }
}

#[test]
fn load_reads_the_file_and_uses_the_process_environment() {
    let dir = folder();
    let text = with_job("[server]\nurl = \"https://stac.example/api/stac/v1\"\n");
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, text).expect("write");
    let config = config::load(&path).expect("loads");
    assert_eq!(config.jobs.len(), 1);
    assert_eq!(config.jobs[0].name, "j");
}

#[test]
fn asset_templates_render_from_the_file_name() {
    let (_dir, config) = load_ok(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "radar-{stem}.{ext}"
[job.watch]
dir = "incoming"
pattern = "*.h5"
[job.asset_metadata]
type = "application/x-hdf5"
"#,
    );
    let asset = &config.jobs[0].asset;
    assert!(!asset.is_literal());
    assert_eq!(
        asset.render("scan.20260101.h5", &run_time()),
        "radar-scan.20260101.h5"
    );
    // Rendering alone; `check` refuses `.{ext}` unless the pattern guarantees an extension.
    assert_eq!(asset.render("README", &run_time()), "radar-README.");

    let literal = IdTemplate::parse("map.tif").expect("literal");
    assert!(literal.is_literal());
    assert_eq!(literal.render("anything.h5", &run_time()), "map.tif");
    assert_eq!(
        IdTemplate::parse("{name}")
            .expect("valid")
            .render("a.b.c", &run_time()),
        "a.b.c"
    );
    assert_eq!(
        IdTemplate::parse("{ext}")
            .expect("valid")
            .render("noext", &run_time()),
        ""
    );
}

// --- paths with ${VAR}, [observe] ----------------------------------------------------------

broken!(
    unset_variable_in_a_secret_path,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password_file = "${CREDENTIALS_DIRECTORY}/stac-password"
"#
    ),
    6,
    Some(17),
    "password_file: the environment variable CREDENTIALS_DIRECTORY is not set"
);

broken!(
    unclosed_variable_in_a_path,
    with_job("state_dir = \"${STATE/x\"\n[server]\nurl = \"https://stac.example/api/stac/v1\"\n"),
    1,
    Some(13),
    "unclosed \"${\""
);

broken!(
    bad_observe_listen_address,
    with_job(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[observe]\nlisten = \"localhost:metrics\"\n"
    ),
    4,
    Some(10),
    "expected an address such as \"127.0.0.1:9187\""
);

broken!(
    unknown_observe_key,
    with_job("[server]\nurl = \"https://stac.example/api/stac/v1\"\n[observe]\nport = 9187\n"),
    4,
    Some(1),
    "unknown field"
);

#[test]
fn variables_expand_in_paths_and_observe_is_read() {
    let (dir, c) = load_ok(&with_job(
        "state_dir = \"${STAC_PW}/state\"\n[server]\nurl = \"https://stac.example/api/stac/v1\"\n[observe]\nlisten = \"127.0.0.1:9187\"\nhealth_timeout = \"45s\"\n",
    ));
    assert_eq!(c.state_dir, dir.path().join("pw-from-env/state"));
    assert_eq!(c.observe.listen, Some("127.0.0.1:9187".parse().unwrap()));
    assert_eq!(
        c.observe.health_timeout,
        Some(std::time::Duration::from_secs(45))
    );
    let (_, c) = load_ok(&with_job(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n",
    ));
    assert_eq!(c.observe, config::ObserveConfig::default());
}

// --- recurring publishers: compression, skipping, bandwidth, every/jitter/catch-up -------------

#[test]
fn recurring_publisher_keys_load_and_inherit() {
    let (dir, c) = load_ok(
        r#"[server]
url = "https://stac.example/api/stac/v1"
bandwidth_limit = "20MB/s"
bandwidth_timetable = [
  { from = "07:00", to = "19:00", limit = "5MB/s" },
  { from = "22:00", to = "06:00", limit = "unlimited" },
]
[defaults]
timezone = "Europe/Zurich"
compress = "auto"
skip_unchanged = false
jitter = "10s"
catch_up = true
bandwidth_limit = 1000000

[[job]]
name = "inherits"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
every = "5m"

[[job]]
name = "overrides"
collection = "c"
asset = "b.tif"
file = "export/b.tif"
schedule = "0 * * * *"
timezone = "UTC"
compress = "br"
skip_unchanged = true
jitter = "0s"
catch_up = false
bandwidth_limit = "unlimited"
bandwidth_timetable = [ { from = "08:00", to = "09:30:00", limit = "2MiB/s" } ]

[[job]]
name = "watch"
collection = "c"
asset = "scan-{name}"
compress = "none"
[job.watch]
dir = "incoming"
pattern = "*.tif"
[job.asset_metadata]
type = "image/tiff"
"#,
    );
    // [server]: the daemon's limit, its windows read in the [defaults] zone.
    let limit = c.bandwidth_limit.as_ref().expect("a daemon limit");
    assert_eq!(limit.rate, Some(ByteSize(20_000_000)));
    assert_eq!(limit.timezone, chrono_tz::Europe::Zurich);
    let windows: Vec<_> = limit
        .windows
        .iter()
        .map(|w| (w.from.to_string(), w.to.to_string(), w.rate))
        .collect();
    assert_eq!(
        windows,
        [
            (
                "07:00:00".into(),
                "19:00:00".into(),
                Some(ByteSize(5_000_000))
            ),
            ("22:00:00".into(), "06:00:00".into(), None),
        ]
    );
    use chrono::TimeZone;
    let at = |h| {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, h, 30, 0)
            .unwrap()
    };
    assert_eq!(
        limit.rate_at(at(10)),
        Some(ByteSize(5_000_000)),
        "11:30 in Zurich"
    );
    assert_eq!(
        limit.rate_at(at(2)),
        None,
        "03:30, the night window past midnight"
    );
    assert_eq!(
        limit.rate_at(at(19)),
        Some(ByteSize(20_000_000)),
        "20:30, no window"
    );

    let [inherits, overrides, watch] = c.jobs.as_slice() else {
        panic!("three jobs: {:?}", c.jobs);
    };
    assert!(matches!(
        inherits.trigger,
        TriggerSpec::Every { interval, .. } if interval == Duration::from_secs(300)
    ));
    assert_eq!(inherits.upload.compress, CompressMode::Auto);
    assert!(!inherits.upload.skip_unchanged);
    assert_eq!(inherits.jitter, Some(Duration::from_secs(10)));
    assert!(inherits.catch_up);
    assert_eq!(inherits.timezone, chrono_tz::Europe::Zurich);
    let own = inherits.bandwidth_limit.as_ref().expect("inherited limit");
    assert_eq!(
        (own.rate, own.windows.len()),
        (Some(ByteSize(1_000_000)), 0)
    );

    assert_eq!(overrides.upload.compress, CompressMode::Br);
    assert!(overrides.upload.skip_unchanged);
    assert_eq!((overrides.jitter, overrides.catch_up), (None, false));
    let own = overrides.bandwidth_limit.as_ref().expect("a timetable");
    assert_eq!(own.rate, None, "unlimited outside the window");
    assert_eq!(own.timezone, chrono_tz::UTC, "the job's zone");
    assert_eq!(own.windows[0].rate, Some(ByteSize::mib(2)));
    assert_eq!(own.windows[0].to.to_string(), "09:30:00");

    // Schedule options from [defaults] do not apply to a folder watch.
    assert_eq!((watch.jitter, watch.catch_up), (None, false));
    assert_eq!(watch.upload.compress, CompressMode::None);
    drop(dir);
}

#[test]
fn ids_and_metadata_templates_load_and_render_for_the_run() {
    let (_dir, c) = load_ok(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
item = "scan-{stem}-%Y"
asset = "%Y%m%d-{name}"
timezone = "Europe/Zurich"
[job.watch]
dir = "incoming"
pattern = "*.h5"
[job.item_metadata]
geometry = { type = "MultiPoint", coordinates = [[7.4, 46.9], [8.5, 47.4]] }
datetime = "run"
title = "Scan {stem}"
properties = { "forecast:horizon" = "PT6H", "forecast:perturbed" = false }
[job.asset_metadata]
type = "application/x-hdf5"
properties = { gsd = 2.5 }
"#,
    );
    let job = &c.jobs[0];
    let run = run_time();
    let item = job.item.as_ref().expect("item").render("a.h5", &run);
    assert_eq!(item, "scan-a-2026");
    assert_eq!(job.asset.render("a.h5", &run), "20261125-a.h5");
    let meta = job.item_metadata.as_ref().expect("item metadata");
    assert_eq!(
        meta.geometry.fixed().map(|(_, bbox)| bbox),
        Some([7.4, 46.9, 8.5, 47.4]),
        "bbox of the geometry's positions"
    );
    assert_eq!(meta.time, ItemTime::Instant(TimeValue::Run));
    let body = meta.item_body(&item, "a.h5", &run);
    assert_eq!(body["geometry"]["type"], "MultiPoint");
    assert_eq!(body["properties"]["datetime"], "2026-11-25T05:00:00Z");
    assert_eq!(body["properties"]["title"], "Scan a");
    assert_eq!(body["properties"]["forecast:horizon"], "PT6H");
    assert_eq!(body["properties"]["forecast:perturbed"], false);
    let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(
        keys.len(),
        4,
        "id, geometry, properties, links only: {keys:?}"
    );
    let asset = job.asset_metadata.as_ref().expect("asset metadata");
    assert_eq!(asset.asset_body("x.h5", "a.h5", &run)["gsd"], 2.5);

    let bad = IdTemplate::parse("%Y-%Q").expect_err("unknown field");
    assert_eq!(bad.offset(), 3);
}

/// A cron job with `item_line` as its item, `meta` appended after `[job.item_metadata]` (at
/// line 11), and `asset_meta` as the body of `[job.asset_metadata]`.
fn meta_job(item_meta: &str, asset_meta: &str) -> String {
    format!(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
item = "i-%Y%m%d"
asset = "a.h5"
file = "export/a.h5"
schedule = "0 3 * * *"
[job.item_metadata]
{item_meta}
[job.asset_metadata]
{asset_meta}
"#
    )
}

const BBOX: &str = "bbox = [5.9, 45.8, 10.5, 47.8]";
const HDF5: &str = "type = \"application/x-hdf5\"";

broken!(
    unknown_compress,
    with_job(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[defaults]\ncompress = \"zip\"\n"
    ),
    4,
    Some(12),
    "invalid compress \"zip\": expected \"gzip\", \"br\", \"none\" or \"auto\""
);

broken!(
    skip_unchanged_not_a_bool,
    with_job(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[defaults]\nskip_unchanged = \"yes\"\n"
    ),
    4,
    Some(18),
    "expected a boolean"
);

broken!(
    bad_server_bandwidth_limit,
    with_job("[server]\nurl = \"https://stac.example/api/stac/v1\"\nbandwidth_limit = \"fast\"\n"),
    3,
    Some(19),
    "invalid bandwidth_limit \"fast\": expected a rate such as \"20MB/s\", or \"unlimited\""
);

broken!(
    zero_job_bandwidth_limit,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
bandwidth_limit = 0
"#,
    9,
    Some(19),
    "bandwidth_limit of 0 would stop every upload"
);

broken!(
    timetable_time_not_a_time_of_day,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
bandwidth_timetable = [
  { from = "07:00", to = "19:00", limit = "5MB/s" },
  { from = "7pm", to = "06:00", limit = "unlimited" },
]
"#
    ),
    5,
    Some(12),
    "invalid from \"7pm\": expected a time of day such as \"07:00\""
);

broken!(
    timetable_unknown_key,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
bandwidth_timetable = [ { from = "07:00", until = "19:00", limit = "5MB/s" } ]
"#
    ),
    4,
    None,
    "unknown field \"until\", expected one of \"from\", \"to\", \"limit\""
);

broken!(
    timetable_bad_limit,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
bandwidth_timetable = [ { from = "07:00", to = "19:00", limit = "slow" } ]
"#
    ),
    4,
    Some(65),
    "invalid limit \"slow\""
);

broken!(
    every_and_schedule,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
every = "5m"
"#,
    9,
    Some(9),
    "job \"j\" has both schedule and every: expected exactly one trigger"
);

broken!(
    every_and_watch,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "{name}"
every = "5m"
[job.watch]
dir = "incoming"
pattern = "*.tif"
"#,
    7,
    Some(9),
    "has both every and [job.watch]"
);

broken!(
    every_without_file,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
every = "5m"
"#,
    7,
    Some(9),
    "has every but no file: expected file = \"<path>\" next to every"
);

broken!(
    every_too_short,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
every = "100ms"
"#,
    8,
    Some(9),
    "every = 100ms is too short: expected at least 1s"
);

broken!(
    every_not_a_duration,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
every = "often"
"#,
    8,
    Some(9),
    "invalid duration \"often\" for every"
);

broken!(
    jitter_not_shorter_than_every,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
every = "1m"
jitter = "60s"
"#,
    9,
    Some(10),
    "jitter = 1m is not shorter than the job's interval (1m)"
);

broken!(
    inherited_jitter_longer_than_a_schedule,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
jitter = "2h"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 * * * *"
"#,
    10,
    Some(12),
    "jitter = 2h (from [defaults], line 4) is not shorter than the job's interval (1h)"
);

broken!(
    jitter_in_a_watch_job,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
jitter = "5s"
[job.watch]
dir = "incoming"
pattern = "*.h5"
"#,
    7,
    Some(10),
    "jitter only applies to schedule and every jobs"
);

broken!(
    catch_up_in_a_watch_job,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
catch_up = true
[job.watch]
dir = "incoming"
pattern = "*.h5"
"#,
    7,
    Some(12),
    "catch_up only applies to schedule and every jobs"
);

broken!(
    timezone_in_an_every_job_without_local_time,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
every = "5m"
timezone = "Europe/Zurich"
"#,
    9,
    Some(12),
    "timezone only applies to cron schedules, time fields"
);

// --- templates and metadata --------------------------------------------------------------------

broken!(
    unknown_placeholder_in_item,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
item = "day-{date}"
asset = "{name}"
[job.watch]
dir = "incoming"
pattern = "*.h5"
"#,
    6,
    // At the brace: `item = "day-` is 12 characters.
    Some(13),
    "unknown placeholder \"{date}\" in item \"day-{date}\""
);

broken!(
    unknown_strftime_field_in_item,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
item = "radar-%Y-%Q"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    6,
    // At the field: `item = "radar-%Y-` is 17 characters.
    Some(18),
    "unknown time field \"%Q\" in item \"radar-%Y-%Q\": expected strftime fields such as %Y"
);

broken!(
    unknown_strftime_field_in_asset,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a-%-K.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    6,
    Some(12),
    "unknown time field \"%-K\" in asset"
);

broken!(
    strftime_field_rendering_a_name_in_an_id,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "map-%b.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    6,
    Some(14),
    "time field \"%b\" in asset \"map-%b.tif\" renders \"Jan\", which an id cannot hold"
);

broken!(
    file_name_placeholder_in_an_every_job,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
item = "{stem}-%Y"
asset = "a.tif"
file = "export/a.tif"
every = "1h"
"#,
    6,
    Some(8),
    "item \"{stem}-%Y\" uses placeholders, which only apply to watch jobs"
);

broken!(
    item_metadata_for_a_collection_asset,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.h5"
file = "export/a.h5"
schedule = "0 3 * * *"
[job.item_metadata]
bbox = [5.9, 45.8, 10.5, 47.8]
datetime = "run"
[job.asset_metadata]
type = "application/x-hdf5"
"#,
    9,
    None,
    "[job.item_metadata] needs item: a collection asset has no item to create"
);

broken!(
    item_metadata_without_asset_metadata,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
item = "i"
asset = "a.h5"
file = "export/a.h5"
schedule = "0 3 * * *"
[job.item_metadata]
bbox = [5.9, 45.8, 10.5, 47.8]
datetime = "run"
"#,
    10,
    None,
    "[job.item_metadata] needs [job.asset_metadata]"
);

broken!(
    unknown_key_in_item_metadata,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\"\ndescription = \"x\""),
        HDF5
    ),
    13,
    Some(1),
    "unknown field \"description\""
);

broken!(
    geometry_and_bbox,
    meta_job(
        &format!(
            "geometry = {{ type = \"Point\", coordinates = [7.4, 46.9] }}\n{BBOX}\ndatetime = \"run\""
        ),
        HDF5
    ),
    12,
    Some(8),
    "bbox conflicts with geometry: expected exactly one of geometry or bbox"
);

broken!(
    no_geometry,
    meta_job("datetime = \"run\"", HDF5),
    10,
    None,
    "[job.item_metadata] needs a geometry"
);

broken!(
    empty_bbox,
    meta_job("bbox = [10.5, 45.8, 5.9, 47.8]\ndatetime = \"run\"", HDF5),
    11,
    Some(8),
    "bbox [10.5, 45.8, 5.9, 47.8] is empty: west must be less than east"
);

broken!(
    bbox_of_three_numbers,
    meta_job("bbox = [5.9, 45.8, 10.5]\ndatetime = \"run\"", HDF5),
    11,
    Some(8),
    "bbox has 3 numbers: expected bbox = [west, south, east, north]"
);

broken!(
    unsupported_geometry,
    meta_job(
        "geometry = { type = \"Circle\", coordinates = [7.4, 46.9] }\ndatetime = \"run\"",
        HDF5
    ),
    11,
    Some(12),
    "geometry type \"Circle\" is not supported"
);

broken!(
    open_polygon_ring,
    meta_job(
        "geometry = { type = \"Polygon\", coordinates = [[[5, 45], [10, 45], [10, 47], [5, 47]]] }\ndatetime = \"run\"",
        HDF5
    ),
    11,
    Some(12),
    "is not closed: its last position must repeat its first"
);

broken!(
    position_out_of_range,
    meta_job(
        "geometry = { type = \"Point\", coordinates = [2600000, 1200000] }\ndatetime = \"run\"",
        HDF5
    ),
    11,
    Some(12),
    "lies outside -180..180 / -90..90 degrees (WGS 84)"
);

broken!(
    no_item_time,
    meta_job(BBOX, HDF5),
    10,
    None,
    "[job.item_metadata] needs a time: expected datetime = \"run\""
);

broken!(
    datetime_template_not_rfc3339,
    meta_job(&format!("{BBOX}\ndatetime = \"%Y-%m-%d\""), HDF5),
    12,
    Some(12),
    "datetime \"%Y-%m-%d\" renders \"2026-01-05\" (for a run at 2026-01-05T03:04:05+00:00), which is not an RFC 3339 date-time"
);

broken!(
    unknown_field_in_datetime,
    meta_job(&format!("{BBOX}\ndatetime = \"%Y-%m-%dT%H:%M:%S%Q\""), HDF5),
    12,
    // At the field: `datetime = "%Y-%m-%dT%H:%M:%S` is 29 characters.
    Some(30),
    "unknown time field \"%Q\" in datetime"
);

broken!(
    start_without_end,
    meta_job(&format!("{BBOX}\nstart_datetime = \"run\""), HDF5),
    12,
    Some(18),
    "start_datetime needs end_datetime"
);

broken!(
    datetime_and_a_range,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\"\nend_datetime = \"run\""),
        HDF5
    ),
    13,
    Some(16),
    "end_datetime conflicts with datetime (line 12)"
);

broken!(
    range_backwards,
    meta_job(
        &format!(
            "{BBOX}\nstart_datetime = \"%Y-%m-%dT12:00:00Z\"\nend_datetime = \"%Y-%m-%dT00:00:00Z\""
        ),
        HDF5
    ),
    13,
    Some(16),
    "end_datetime comes before start_datetime"
);

broken!(
    zero_expires,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\"\nexpires = \"0s\""),
        HDF5
    ),
    13,
    Some(11),
    "expires = 0s is not longer than run_timeout (2h)"
);

broken!(
    item_properties_setting_the_datetime,
    meta_job(
        &format!(
            "{BBOX}\ndatetime = \"run\"\nproperties = {{ datetime = \"2026-01-01T00:00:00Z\" }}"
        ),
        HDF5
    ),
    13,
    Some(14),
    "properties may not set \"datetime\""
);

broken!(
    asset_metadata_without_type,
    meta_job(&format!("{BBOX}\ndatetime = \"run\""), "roles = [\"data\"]"),
    13,
    None,
    "missing field \"type\""
);

broken!(
    asset_type_not_a_media_type,
    meta_job(&format!("{BBOX}\ndatetime = \"run\""), "type = \"hdf5\""),
    14,
    Some(8),
    "invalid type \"hdf5\": expected a media type"
);

broken!(
    epsg_out_of_range,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\""),
        &format!("{HDF5}\n\"proj:epsg\" = 0")
    ),
    15,
    Some(15),
    "proj:epsg = 0 is out of range: expected 1 to 999999"
);

broken!(
    empty_role,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\""),
        &format!("{HDF5}\nroles = [\"data\", \" \"]")
    ),
    15,
    Some(18),
    "a role is empty"
);

broken!(
    asset_properties_with_an_href,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\""),
        &format!("{HDF5}\nproperties = {{ href = \"https://elsewhere/a.h5\" }}")
    ),
    15,
    Some(14),
    "properties may not set \"href\": an href makes the asset external"
);

broken!(
    title_with_a_file_name_in_a_cron_job,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\"\ntitle = \"{{stem}}\""),
        HDF5
    ),
    13,
    Some(9),
    "title \"{stem}\" uses placeholders, which only apply to watch jobs"
);

// --- what the server refuses or drops: fixtures in tests/config/refused and accepted ----------

/// Each `tests/config/refused/*.toml` starts with `# refused at LINE:COL: FRAGMENT`: the loader
/// must refuse it with an error at that place whose message contains the fragment.
#[test]
fn refused_fixtures_are_refused_where_they_say() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/refused");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .expect("the fixtures folder")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a fixture");
        let case = file.file_stem().unwrap().to_string_lossy();
        let head = text.lines().next().unwrap_or_default();
        let Some(rest) = head.strip_prefix("# refused at ") else {
            panic!("{case}: the first line must be \"# refused at LINE:COL: FRAGMENT\"");
        };
        let (place, fragment) = rest.split_once(": ").expect("LINE:COL: FRAGMENT");
        let (line, col) = place.split_once(':').expect("LINE:COL");
        expect_error(
            &case,
            &text,
            0o600,
            line.parse().expect("a line"),
            Some(col.parse().expect("a column")),
            fragment,
        );
    }
    assert!(files.len() >= 15, "{} fixtures", files.len());
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config/accepted")
        .join(name);
    std::fs::read_to_string(path).expect("a fixture")
}

#[test]
fn an_item_creating_job_sends_what_the_server_keeps() {
    let (_dir, c) = load_ok(&fixture("item_creating_job.toml"));
    let job = &c.jobs[0];
    let run = run_time();
    let item = job.item.as_ref().expect("item").render("m01.grib2", &run);
    assert_eq!(item, "icon-ch1-2026112506");
    assert_eq!(job.asset.render("m01.grib2", &run), "m01.grib2");
    let body = job
        .item_metadata
        .as_ref()
        .expect("item metadata")
        .item_body(&item, "m01.grib2", &run);
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["geometry", "id", "links", "properties"]);
    assert_eq!(body["geometry"]["type"], "Polygon");
    let p = &body["properties"];
    assert_eq!(p["forecast:reference_datetime"], "2026-11-25T06:00:00Z");
    assert_eq!(p["forecast:horizon"], "PT6H");
    assert_eq!(p["forecast:duration"], "P1DT12H");
    assert_eq!(p["forecast:variable"], "T_2M");
    assert_eq!(p["forecast:perturbed"], false);
    assert_eq!(p["title"], "ICON-CH1 run of 25.11.2026 06:00");
    let asset = job.asset_metadata.as_ref().expect("asset metadata");
    assert_eq!(
        asset.asset_body("m01.grib2", "m01.grib2", &run),
        serde_json::json!({
            "id": "m01.grib2", "type": "application/grib", "title": "Member m01",
            "roles": ["data"], "proj:epsg": 4326,
        })
    );
}

#[test]
fn an_asset_creating_job_normalises_its_type_and_keeps_its_fields() {
    let (_dir, c) = load_ok(&fixture("asset_creating_job.toml"));
    let asset = c.jobs[0].asset_metadata.as_ref().expect("asset metadata");
    assert_eq!(
        asset.media_type, "image/tiff; application=geotiff; profile=cloud-optimized",
        "stored as the server stores it"
    );
    assert_eq!(
        asset.asset_body("map_2056.tif", "map.tif", &run_time()),
        serde_json::json!({
            "id": "map_2056.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": "Map", "roles": ["data", "visual"], "proj:epsg": 2056,
            "description": "The current map, as a cloud-optimized GeoTIFF", "gsd": 0.5,
            "geoadmin:lang": "de", "geoadmin:variant": "krel 2",
        })
    );
}

#[test]
fn collection_assets_with_guaranteed_extensions_load() {
    let (_dir, c) = load_ok(&fixture("collection_asset.toml"));
    let [legend, tiles] = c.jobs.as_slice() else {
        panic!("two jobs: {:?}", c.jobs);
    };
    assert_eq!((legend.item.as_ref(), tiles.item.as_ref()), (None, None));
    assert_eq!(tiles.asset.render("a/b.tiff", &run_time()), "a/b.tiff");
    assert_eq!(tiles.asset.render("b.tif", &run_time()), "b.tif");
}

#[test]
fn the_same_asset_in_two_collections_or_items_is_two_targets() {
    load_ok(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "a"
collection = "c1"
item = "i"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
[[job]]
name = "b"
collection = "c2"
item = "i"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
[[job]]
name = "c"
collection = "c1"
item = "j"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    );
}

#[test]
fn variables_in_paths_expand_and_inline_secrets_may_hold_dollar_braces() {
    let (dir, c) = load_ok(
        r#"state_dir = "${STAC_PW}/state"
[server]
url = "https://stac.example/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password = "pa${ss"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
"#,
    );
    assert_eq!(c.state_dir, dir.path().join("pw-from-env/state"));
    match &c.server.auth {
        Auth::Basic { password, .. } => assert_eq!(password.expose_secret(), "pa${ss"),
        other => panic!("{other:?}"),
    }
}

// --- settings declared once ---------------------------------------------------------------------

broken!(
    part_retries_11,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
part_retries = 11
"#
    ),
    4,
    Some(16),
    "part_retries = 11 is out of range: expected 0 to 10"
);

broken!(
    max_concurrent_uploads_0,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
max_concurrent_uploads = 0
"#
    ),
    3,
    Some(26),
    "max_concurrent_uploads = 0 is out of range: expected 1 to 256"
);

broken!(
    max_concurrent_uploads_257,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
max_concurrent_uploads = 257
"#
    ),
    3,
    Some(26),
    "max_concurrent_uploads = 257 is out of range: expected 1 to 256"
);

broken!(
    max_concurrent_uploads_is_not_a_job_key,
    with_job(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[defaults]
max_concurrent_uploads = 4
"#
    ),
    4,
    Some(1),
    "unknown field \"max_concurrent_uploads\""
);

#[test]
fn max_concurrent_uploads_defaults_from_the_cores_and_is_read_at_its_bounds() {
    let (_dir, c) = load_ok(&with_job(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n",
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c.max_concurrent_uploads, (2 * cores).clamp(2, 256));
    assert_eq!(
        c.max_concurrent_uploads,
        config::default_max_concurrent_uploads()
    );
    for n in [1, 256] {
        let (_dir, c) = load_ok(&with_job(&format!(
            "[server]\nurl = \"https://stac.example/api/stac/v1\"\nmax_concurrent_uploads = {n}\n"
        )));
        assert_eq!(c.max_concurrent_uploads, n);
    }
}

#[test]
fn part_retries_is_inherited_like_every_setting() {
    let (_dir, c) = load_ok(&format!(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[defaults]\npart_retries = 7\n{JOB}"
    ));
    assert_eq!(c.jobs[0].upload.part_retries, 7);
    let (_dir, c) = load_ok(&format!(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[defaults]\npart_retries = 7\n{JOB}part_retries = 0\n"
    ));
    assert_eq!(c.jobs[0].upload.part_retries, 0);
}

/// Every inherited setting is documented where operators read about the job file.
#[test]
fn every_setting_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("config/jobs.example.toml")).unwrap();
    let page = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    for (key, doc) in config::SETTING_KEYS {
        assert!(!doc.trim().is_empty(), "{key} has no doc line");
        assert!(
            example.contains(&format!("{key} = ")),
            "{key} is not in config/jobs.example.toml"
        );
        assert!(
            page.contains(&format!("`{key}`")),
            "{key} is not in docs/configuration.md"
        );
    }
    assert!(example.contains("max_concurrent_uploads = "));
}

/// The enums of the job file and of the command line are one type each, whose serde and clap
/// names agree.
#[test]
fn enum_names_are_the_same_in_the_job_file_and_on_the_command_line() {
    use clap::ValueEnum;
    use serde::de::IntoDeserializer;
    fn names<T: ValueEnum + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug>() {
        for v in T::value_variants() {
            let name = v
                .to_possible_value()
                .expect("not skipped")
                .get_name()
                .to_owned();
            let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
                name.as_str().into_deserializer();
            let parsed = T::deserialize(de)
                .unwrap_or_else(|e| panic!("{name:?}: clap's name, refused by serde: {e}"));
            assert_eq!(&parsed, v, "{name:?}");
        }
    }
    names::<CompressMode>();
    names::<PolicyKind>();
    names::<ApiVersion>();
    names::<config::AuthKind>();
    let listed = |v: &[&str], all: Vec<String>| assert_eq!(v, all.as_slice());
    listed(
        &["none", "gzip", "br", "auto"],
        CompressMode::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_owned())
            .collect(),
    );
    listed(
        &["retry", "cancel", "auto"],
        PolicyKind::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_owned())
            .collect(),
    );
    listed(
        &["none", "basic", "token", "bearer", "cognito"],
        config::AuthKind::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_owned())
            .collect(),
    );
}

// --- stream "check": every job-file read bounded -------------------------------------------------

/// Runs `stac-uploadd check --config path`; `None` when it has not ended within 30 s (it is
/// killed then): a read that never ends is what these tests catch.
fn check_binary(path: &Path) -> Option<std::process::Output> {
    let child = std::process::Command::new(crate::fixtures::BIN)
        .args(["check", "--config"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn stac-uploadd");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(output) => Some(output.expect("wait for stac-uploadd")),
        Err(_) => {
            // Our own child, not yet reaped: the pid is still its.
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            None
        }
    }
}

/// `check` on `path` ends at once with exit code 2, naming the file and the job-file limit.
fn refused_at_once(path: &Path, fragment: &str) {
    let Some(out) = check_binary(path) else {
        panic!("check --config {} did not end within 30 s", path.display());
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "the file is not named: {stderr}"
    );
    assert!(stderr.contains(fragment), "{stderr}");
    assert!(
        stderr.contains("4194304 bytes (4MiB)"),
        "the limit is not named: {stderr}"
    );
}

#[test]
fn check_refuses_dev_zero_as_a_job_file_at_once() {
    refused_at_once(Path::new("/dev/zero"), "not a regular file");
}

#[test]
fn check_refuses_a_fifo_as_a_job_file_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("jobs.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) is needed by this test");
    assert!(made.success());
    refused_at_once(&fifo, "not a regular file");
}

#[test]
fn check_refuses_a_one_gib_job_file_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("jobs.toml");
    // Sparse: no disk is used, and reading it whole would take a GiB of memory.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    refused_at_once(&big, "larger than 4194304 bytes");
}

#[test]
fn a_job_file_that_is_not_utf8_is_refused_at_the_first_bad_byte() {
    let dir = folder();
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, b"[server]\nurl = \"https://x\"\n# caf\xe9 au lait\n").unwrap();
    let e = config::load(&path).unwrap_err();
    assert_eq!(e.errors().len(), 1, "{e}");
    assert_eq!((e.errors()[0].line, e.errors()[0].col), (3, 6), "{e}");
    assert!(e.to_string().contains("byte 0xE9 is not UTF-8"), "{e}");
}

// --- stream "check": forecast:reference_datetime like datetime --------------------------------

#[test]
fn a_daily_forecast_items_reference_time_is_its_runs() {
    let text = |reference: &str| {
        format!(
            r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "forecast"
collection = "c"
item = "forecast-%Y%m%d"
asset = "a.h5"
file = "export/a.h5"
schedule = "0 6 * * *"
timezone = "Europe/Zurich"
[job.item_metadata]
bbox = [5.9, 45.8, 10.5, 47.8]
datetime = "run"
properties = {{ "forecast:reference_datetime" = "{reference}", "forecast:horizon" = "PT6H" }}
[job.asset_metadata]
type = "application/x-hdf5"
"#
        )
    };
    let run = run_time();
    let next_day = run + chrono::Duration::days(1);
    for (reference, today, tomorrow) in [
        ("run", "2026-11-25T05:00:00Z", "2026-11-26T05:00:00Z"),
        (
            "%Y-%m-%dT00:00:00+01:00",
            "2026-11-24T23:00:00Z",
            "2026-11-25T23:00:00Z",
        ),
    ] {
        let (_dir, c) = load_ok(&text(reference));
        let meta = c.jobs[0].item_metadata.as_ref().expect("item metadata");
        let body = |run| meta.item_body("forecast-x", "a.h5", &run);
        assert_eq!(
            body(run)["properties"]["forecast:reference_datetime"],
            today,
            "{reference}"
        );
        assert_eq!(
            body(next_day)["properties"]["forecast:reference_datetime"],
            tomorrow,
            "{reference}"
        );
        assert_eq!(body(run)["properties"]["forecast:horizon"], "PT6H");
    }
    // A fixed date is still a fixed date, and a template must render one.
    let (_dir, c) = load_ok(&text("2026-11-25T06:00:00Z"));
    let meta = c.jobs[0].item_metadata.as_ref().expect("item metadata");
    assert_eq!(
        meta.item_body("x", "a.h5", &next_day)["properties"]["forecast:reference_datetime"],
        "2026-11-25T06:00:00Z"
    );
    expect_error(
        "reference_not_a_date",
        &text("%Y-%m-%d"),
        0o600,
        14,
        Some(48),
        "forecast:reference_datetime \"%Y-%m-%d\" renders",
    );
}

// --- stream "check": what the run would refuse, refused by check ------------------------------

broken!(
    expires_not_longer_than_the_run_timeout,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\"\nexpires = \"30m\""),
        HDF5
    ),
    13,
    Some(11),
    "expires = 30m is not longer than run_timeout (2h): the item is created during the run"
);

broken!(
    expires_past_the_year_9999,
    meta_job(
        &format!("{BBOX}\ndatetime = \"run\"\nexpires = \"10000years\""),
        HDF5
    ),
    13,
    Some(11),
    "puts the item's expiry past the year 9999"
);

broken!(
    every_five_hundred_million_years,
    "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[[job]]\nname = \"j\"\ncollection = \"c\"\nasset = \"a.tif\"\nfile = \"export/a.tif\"\nevery = \"500000000y\"\n",
    8,
    Some(9),
    "is too long: expected at most 366 days"
);

broken!(
    a_job_name_of_100000_characters,
    format!(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[[job]]\nname = \"{}\"\ncollection = \"c\"\nasset = \"a.tif\"\nfile = \"export/a.tif\"\nschedule = \"0 3 * * *\"\n",
        "j".repeat(100_000)
    ),
    4,
    Some(8),
    "characters long: expected at most 64"
);

broken!(
    a_duplicate_key_is_named,
    "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[[job]]\nname = \"j\"\ncollection = \"c\"\ncollection = \"d\"\nasset = \"a.tif\"\nfile = \"export/a.tif\"\nschedule = \"0 3 * * *\"\n",
    6,
    Some(1),
    "collection"
);

broken!(
    a_number_out_of_bounds_names_its_key,
    with_job(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[defaults]\nretries = 99999999999999999999\n"
    ),
    4,
    Some(11),
    "retries"
);

#[test]
fn a_nul_byte_in_an_error_is_escaped() {
    let dir = folder();
    let text =
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n\"bad\\u0000key\\u001b[31m\" = 1\n";
    let (_, result) = load_in(dir.path(), text, 0o600);
    let e = result.expect_err("an unknown key");
    let shown = e.to_string();
    assert!(
        !shown.chars().any(|c| c == '\0' || c == '\u{1b}'),
        "raw control characters: {shown:?}"
    );
    assert!(shown.contains("bad\\0key\\u{1b}[31m"), "{shown}");
}

#[test]
fn name_on_tif_and_name_on_csv_are_two_targets() {
    let (_dir, c) = load_ok(
        r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "tif"
collection = "c"
item = "i"
asset = "{name}"
[job.watch]
dir = "incoming"
pattern = "*.tif"
[job.asset_metadata]
type = "image/tiff"
[[job]]
name = "csv"
collection = "c"
item = "i"
asset = "{name}"
[job.watch]
dir = "incoming"
pattern = "*.csv"
[job.asset_metadata]
type = "text/csv"
"#,
    );
    assert_eq!(c.jobs.len(), 2);
}

#[test]
fn a_literal_asset_and_a_watch_that_ignores_its_name_are_two_targets() {
    let job_file = |ignore: &str| {
        format!(
            r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "nightly"
collection = "c"
item = "i"
asset = "radar.zip"
file = "export/radar.zip"
schedule = "0 3 * * *"
[[job]]
name = "drops"
collection = "c"
item = "i"
asset = "{{name}}"
[job.watch]
dir = "incoming"
pattern = "*.zip"
{ignore}
[job.asset_metadata]
type = "application/zip"
"#
        )
    };
    let (_dir, c) = load_ok(&job_file(r#"ignore = ["radar.zip", "*.tmp"]"#));
    assert_eq!(c.jobs.len(), 2);
    // A pattern that cannot take the name, or a prefix the literal lacks, keep them apart too.
    let (_dir, c) =
        load_ok(&job_file("").replace(r#"pattern = "*.zip""#, r#"pattern = "scan-*.zip""#));
    assert_eq!(c.jobs.len(), 2);
    let (_dir, c) = load_ok(&job_file("").replace(r#"asset = "{name}""#, r#"asset = "in-{name}""#));
    assert_eq!(c.jobs.len(), 2);
}

#[test]
fn check_shows_the_fires_around_the_next_dst_change() {
    let dir = folder();
    let path = dir.path().join("jobs.toml");
    std::fs::write(
        &path,
        r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "night"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "30 1-3 * * *"
timezone = "Europe/Zurich"
[[job]]
name = "morning"
collection = "c"
asset = "b.tif"
file = "export/b.tif"
schedule = "0 6 * * *"
timezone = "Europe/Zurich"
"#,
    )
    .unwrap();
    let out = check_binary(&path).expect("check ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let around: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("around the DST change on "))
        .collect();
    assert_eq!(around.len(), 1, "only the affected schedule: {stdout}");
    assert!(
        around[0].ends_with("(02:30 does not exist)")
            || around[0].ends_with("(02:30 comes twice, fires once)"),
        "{stdout}"
    );
}

broken!(
    concurrency_on_a_schedule_job,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "j"
collection = "c"
asset = "a.tif"
file = "export/a.tif"
schedule = "0 3 * * *"
concurrency = 4
"#,
    9,
    Some(15),
    "concurrency only applies to watch jobs"
);

broken!(
    concurrency_65,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
concurrency = 65
[job.watch]
dir = "incoming"
pattern = "*.h5"
"#,
    7,
    Some(15),
    "concurrency = 65 is out of range: expected 1 to 64"
);

broken!(
    bundle_incomplete_unknown,
    r#"[server]
url = "https://stac.example/api/stac/v1"
[[job]]
name = "w"
collection = "c"
asset = "{name}"
[job.watch]
dir = "incoming"
pattern = "*.h5"
bundle_incomplete = "drop"
bundle_timeout = "0s"
"#,
    10,
    Some(21),
    "bundle_incomplete = \"drop\": expected \"leave\""
);

const CLUSTER_HEAD: &str = "[server]\nurl = \"https://stac.example/api/stac/v1\"\n[cluster]\n";

broken!(
    cluster_url_inline_is_refused,
    with_job(&format!("{CLUSTER_HEAD}url = \"postgres://u:p@db/stac\"\n")),
    4,
    Some(7),
    "[cluster] url refused: a database URL holds its password"
);
broken!(
    cluster_needs_a_url,
    with_job(&format!("{CLUSTER_HEAD}lease = \"10s\"\n")),
    3,
    None,
    "[cluster] needs the database's URL"
);
broken!(
    cluster_url_must_be_postgres,
    with_job(&format!("{CLUSTER_HEAD}url_env = \"NOT_PG\"\n")),
    4,
    Some(11),
    "is not a PostgreSQL URL"
);
broken!(
    cluster_lease_too_short,
    with_job(&format!(
        "{CLUSTER_HEAD}url_env = \"DB_URL\"\nlease = \"1s\"\n"
    )),
    5,
    Some(9),
    "lease must be at least 3s"
);
broken!(
    cluster_heartbeat_over_a_third_of_the_lease,
    with_job(&format!(
        "{CLUSTER_HEAD}url_env = \"DB_URL\"\nlease = \"6s\"\nheartbeat = \"3s\"\n"
    )),
    6,
    Some(13),
    "is more than a third of the lease"
);
broken!(
    cluster_instance_name_is_checked,
    with_job(&format!(
        "{CLUSTER_HEAD}url_env = \"DB_URL\"\ninstance = \"two words\"\n"
    )),
    5,
    Some(12),
    "instance \"two words\": expected 1 to 128 letters"
);

/// `[cluster]` with its defaults; the URL's password never shows in the config's debug output.
#[test]
fn a_cluster_table_loads_with_its_defaults() {
    let (_dir, c) = load_ok(&with_job(&format!(
        "{CLUSTER_HEAD}url_env = \"DB_URL\"\nexpected_members = 3\n"
    )));
    let cluster = c.cluster.expect("a cluster");
    assert_eq!(cluster.lease, config::DEFAULT_LEASE);
    assert_eq!(cluster.heartbeat, config::DEFAULT_HEARTBEAT);
    assert_eq!(cluster.expected_members, Some(3));
    assert_eq!(cluster.instance, None);
    assert!(!format!("{cluster:?}").contains("dbpw"));
    let (_dir, c) = load_ok(&with_job(
        "[server]\nurl = \"https://stac.example/api/stac/v1\"\n",
    ));
    assert!(c.cluster.is_none(), "no table, no cluster");
}
