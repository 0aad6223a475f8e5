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
    let server =
        |proxy: &str| format!("[server]\nurl = \"https://x/api/stac/v1\"\nproxy = \"{proxy}\"\n");
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

/// One scheduled job with `item` and `keep` lines as given.
fn keep_job(item: Option<&str>, keep: &str) -> Result<Config, ConfigError> {
    let item = item
        .map(|i| format!("item = \"{i}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "[server]\nurl = \"http://127.0.0.1:1/\"\n[[job]]\nname = \"j\"\ncollection = \"c\"\n{item}asset = \"a.tif\"\nfile = \"/a.tif\"\nschedule = \"0 3 * * *\"\nkeep = {keep}\n"
    );
    parse(&text, Path::new("/t/jobs.toml"), &|_| None)
}

#[test]
fn keep_is_a_duration_or_a_count() {
    let keep = |k: &str| keep_job(Some("s2-%Y-%m-%d"), k).expect("valid").jobs[0].keep;
    assert_eq!(
        keep("\"30d\""),
        Some(Keep::Age(Duration::from_secs(30 * 86_400)))
    );
    assert_eq!(keep("30"), Some(Keep::Count(30)));
    for (k, says) in [
        ("0", "keep = 0 is out of range"),
        ("-3", "keep = -3 is out of range"),
        ("\"0s\"", "keep must be longer than 0"),
        ("\"soon\"", "invalid duration \"soon\" for keep"),
        ("true", "a duration such as \"30d\" or a number of items"),
    ] {
        let m = messages(keep_job(Some("s2-%Y-%m-%d"), k));
        assert!(m.iter().any(|m| m.contains(says)), "{k}: {m:?}");
    }
}

#[test]
fn keep_needs_an_item_template_that_tells_the_jobs_items_apart() {
    for (item, says) in [
        (None, "publishes a collection asset"),
        (Some("current"), "is the same id every run"),
    ] {
        let m = messages(keep_job(item, "3"));
        assert!(m.iter().any(|m| m.contains(says)), "{item:?}: {m:?}");
        assert!(
            m.iter().any(|m| m.contains(":8: keep ")),
            "located at the value: {m:?}"
        );
    }
}

/// `[server]` and `job`, checked in a fresh folder holding `export/`.
fn check_job(job: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("export")).expect("mkdir");
    let text = format!(
        "[server]\nurl = \"https://data.geo.admin.ch/api/stac/v1\"\n[server.auth]\ntype = \"basic\"\nusername = \"u\"\npassword_env = \"PW\"\n{job}"
    );
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, &text).expect("write");
    let env = |n: &str| (n == "PW").then(|| "pw".to_owned());
    let result = parse(&text, &path, &env);
    (dir, result)
}

const ITEM_JOB: &str = r#"
[[job]]
name = "s2"
collection = "c"
item = "s2-%Y-%m-%d"
schedule = "0 5 * * *"
ALIAS
[job.item_metadata]
bbox = [5.96, 45.82, 10.49, 47.81]
datetime = "run"
[[job.assets]]
id = "s2.tif"
file = "export/s2_*.tif"
EXTRA
[job.assets.metadata]
type = "image/tiff; application=geotiff"
[[job.assets]]
id = "SECOND"
file = "export/thumb.png"
[job.assets.metadata]
type = "image/png"
"#;

fn item_job(alias: &str, extra: &str, second: &str) -> String {
    ITEM_JOB
        .replace("ALIAS", alias)
        .replace("EXTRA", extra)
        .replace("SECOND", second)
}

#[test]
fn an_item_job_reads_its_assets_and_alias() {
    let (dir, result) = check_job(&item_job("alias = \"current\"", "", "thumb.png"));
    let config = result.unwrap_or_else(|e| panic!("valid:\n{e}"));
    let job = &config.jobs[0];
    assert_eq!(job.alias.as_deref(), Some("current"));
    assert_eq!(job.assets.len(), 2);
    assert_eq!(job.assets[0].file, dir.path().join("export/s2_*.tif"));
    assert_eq!(
        job.asset.as_str(),
        "s2.tif",
        "the first asset stands for the job"
    );
    match &job.trigger {
        TriggerSpec::Cron { file, .. } => assert_eq!(file, &PathBuf::new()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn item_job_mistakes_are_located_and_explained() {
    let cases = [
        (
            item_job("", "", "s2.tif"),
            "24:",
            "already used by the asset at line 18",
        ),
        (
            item_job("", "required = false", "t.png"),
            "20:",
            "required only applies to bundle jobs",
        ),
        (item_job("alias = \"c d\"", "", "t.png"), "13:", "alias"),
        (
            item_job("alias = \"s2-x\"\nasset = \"a.tif\"", "", "t.png"),
            "14:",
            "both asset and [[job.assets]]",
        ),
        (
            item_job("", "", "t.png")
                .replace("item = \"s2-%Y-%m-%d\"\n", "")
                .replace(
                    "[job.item_metadata]\nbbox = [5.96, 45.82, 10.49, 47.81]\ndatetime = \"run\"\n",
                    "",
                ),
            "",
            "[[job.assets]] needs item",
        ),
        (
            item_job("", "", "t.png").replace("export/thumb.png", "missing/*/thumb.png"),
            "25:",
            "wildcards in its folder",
        ),
    ];
    for (text, at, what) in cases {
        let (_dir, result) = check_job(&text);
        let errors = messages(result);
        assert!(
            errors.iter().any(|e| e.starts_with(at) && e.contains(what)),
            "{at}{what:?} not in:\n{}\n{text}",
            errors.join("\n")
        );
    }
}

/// A watch job in a fresh folder with `keys` added to the job and `meta` to its
/// `[job.item_metadata]`, checked.
fn watch_with(keys: &str, meta: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("in")).expect("mkdir");
    let text = format!(
        "[server]\nurl = \"http://127.0.0.1:1/\"\n[[job]]\nname = \"s2\"\ncollection = \"c\"\n{keys}\n[job.watch]\ndir = \"in\"\npattern = \"*.tif\"\n[job.item_metadata]\nbbox = [5.9, 45.8, 10.5, 47.8]\n{meta}\n[job.asset_metadata]\ntype = \"image/tiff; application=geotiff\"\n"
    );
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, &text).expect("write");
    let result = parse(&text, &path, &|_| None);
    (dir, result)
}

const S2: &str = r"name_pattern = '^S2_(?P<date>\d{4}-\d{2}-\d{2}T\d{6})_(?P<product>\w+)\.tif$'";

#[test]
fn name_pattern_captures_make_ids_titles_and_times() {
    let keys = format!("{S2}\nitem = \"s2-{{date}}\"\nasset = \"{{product}}.tif\"");
    let meta =
        "datetime = { capture = \"date\", format = \"%Y-%m-%dT%H%M%S\" }\ntitle = \"S2 {product}\"";
    let (_dir, result) = watch_with(&keys, meta);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    let job = &config.jobs[0];
    let pattern = job.name_pattern.as_ref().expect("a pattern");
    let captures = pattern
        .captures("S2_2026-12-01T101010_NDVI.tif")
        .expect("matches");
    let names = crate::config::Names::new("S2_2026-12-01T101010_NDVI.tif", Some(&captures));
    let run = metadata::sample_run(Tz::UTC);
    assert_eq!(
        job.item.as_ref().expect("item").render(names, &run),
        "s2-2026-12-01t101010"
    );
    assert_eq!(job.asset.render(names, &run), "ndvi.tif");
    let body = job
        .item_metadata
        .as_ref()
        .expect("metadata")
        .item_body("s2", names, &run);
    assert_eq!(body["properties"]["title"], "S2 NDVI");
    // The job's zone (UTC by default) reads the name's time.
    assert_eq!(body["properties"]["datetime"], "2026-12-01T10:10:10Z");
}

#[test]
fn name_pattern_errors_name_the_line() {
    for (keys, meta, line, says) in [
        (
            "name_pattern = '^S2_(?P<date>\\d+'\nitem = \"i\"\nasset = \"a.tif\"".to_owned(),
            "datetime = \"run\"",
            6,
            "not a valid regular expression",
        ),
        (
            "name_pattern = '^S2_\\d+\\.tif$'\nitem = \"i\"\nasset = \"a.tif\"".to_owned(),
            "datetime = \"run\"",
            6,
            "no named capture",
        ),
        (
            format!("{S2}\nitem = \"s2-{{day}}\"\nasset = \"a.tif\""),
            "datetime = \"run\"",
            7,
            "not a named capture of the job's name_pattern ({date}, {product})",
        ),
        (
            "item = \"s2-{date}\"\nasset = \"a.tif\"".to_owned(),
            "datetime = \"run\"",
            6,
            "(the job has none)",
        ),
        (
            format!("{S2}\nitem = \"s2-{{date}}\"\nasset = \"a.tif\""),
            "datetime = { capture = \"day\", format = \"%Y\" }",
            14,
            "which the job's name_pattern does not have: expected one of \"date\", \"product\"",
        ),
        (
            format!("{S2}\nitem = \"s2-{{date}}\"\nasset = \"a.tif\""),
            "datetime = { capture = \"date\", format = \"%Q\" }",
            14,
            "not valid strftime",
        ),
        (
            format!("{S2}\nitem = \"s2-{{date}}\"\nasset = \"a.tif\""),
            "datetime = { capture = \"date\", format = \"%Y%m%d\", timezone = \"Europe/Zurch\" }",
            14,
            "Europe/Zurch",
        ),
        (
            "item = \"s2\"\nasset = \"a.tif\"".to_owned(),
            "datetime = { capture = \"date\", format = \"%Y%m%d\" }",
            13,
            "the job has no name_pattern",
        ),
    ] {
        let (_dir, result) = watch_with(&keys, meta);
        let errors = messages(result);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(says) && e.starts_with(&format!("{line}:"))),
            "{says} at line {line}: {errors:#?}"
        );
    }
}
