//! `run` (the daemon, or each job once), `check` and `status`: the commands over a job file.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config;
use crate::exit::ExitCode;
use stac_client::units::ByteSize;

/// `run`: the daemon, or with --once each job once.
pub(super) async fn run_jobs(
    args: RunArgs,
    need_config: impl FnOnce(ConfigArgs) -> Result<PathBuf, CliError>,
) -> Result<(), CliError> {
    if !args.once && !args.jobs.is_empty() {
        return Err(CliError::usage(anyhow::anyhow!(
            "--job needs --once: the daemon runs every job of its file"
        )));
    }
    let config = need_config(args.config)?;
    if args.once {
        run_once(config, args.jobs, args.shutdown_grace, args.observe_listen).await
    } else {
        run_daemon(config, args.shutdown_grace, args.observe_listen).await
    }
}

/// `run --once`: the summary on stdout, exit 1 if any run did not succeed.
async fn run_once(
    config: PathBuf,
    jobs: Vec<String>,
    shutdown_grace: Option<Duration>,
    observe_listen: Option<std::net::SocketAddr>,
) -> Result<(), CliError> {
    use crate::once::OnceError;
    if let Some(addr) = observe_listen {
        // Often set for the daemon in a shared environment file: not an error here.
        tracing::info!(%addr, "run --once serves no /metrics, /healthz or /readyz");
    }
    let args = crate::once::OnceArgs {
        config,
        jobs,
        grace: shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
    };
    let mut summary = crate::once::run(args).await.map_err(|e| match e {
        OnceError::Config(_) | OnceError::UnknownJob { .. } => CliError::usage(e),
        OnceError::State(e) if e.needs_operator() => CliError {
            code: ExitCode::NeedsOperator,
            error: e.into(),
        },
        e => CliError::failure(e),
    })?;
    print!("{summary}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    if let Some(e) = summary.flush_error.take() {
        return Err(CliError::failure(anyhow::Error::from(e).context(
            "the runs went as the lines above say, but the run history could not be written",
        )));
    }
    match summary.failures() {
        0 => Ok(()),
        n => Err(CliError::failure(anyhow::anyhow!(
            "{n} of {} run(s) did not succeed (see the lines above)",
            summary.runs()
        ))),
    }
}

async fn run_daemon(
    config: PathBuf,
    shutdown_grace: Option<Duration>,
    observe_listen: Option<std::net::SocketAddr>,
) -> Result<(), CliError> {
    let grace = shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    crate::daemon::run(config, grace, observe_listen)
        .await
        .map_err(|e| match e {
            crate::daemon::StartError::Config(e) => CliError::usage(e),
            crate::daemon::StartError::State(e) if e.needs_operator() => CliError {
                code: ExitCode::NeedsOperator,
                error: e.into(),
            },
            crate::daemon::StartError::State(e) => CliError::failure(e),
            // A watch folder the job file names that is missing or unreadable at start is a
            // configuration problem: exit 2, which systemd does not restart on.
            crate::daemon::StartError::Other(e)
                if e.downcast_ref::<crate::trigger::watch::WatchError>()
                    .is_some_and(crate::trigger::watch::WatchError::is_permanent) =>
            {
                CliError::usage(e)
            }
            crate::daemon::StartError::Other(e) => CliError::failure(e),
        })
}

/// The static check; returns the loaded job file.
pub(super) fn run_check(path: &std::path::Path) -> Result<config::Config, CliError> {
    let config = crate::config::load(path).map_err(CliError::usage)?;
    crate::state::check_dir(&config.state_dir).map_err(|problem| {
        CliError::usage(anyhow::anyhow!(
            "{}: state_dir {}: {problem}",
            path.display(),
            config.state_dir.display()
        ))
    })?;
    let now = chrono::Utc::now();
    println!(
        "{}: {} job(s), server {} ({:?}), state in {}",
        path.display(),
        config.jobs.len(),
        stac_client::redact_userinfo(&config.server.url),
        config.server.api_version,
        config.state_dir.display()
    );
    if let Some(c) = &config.cluster {
        use secrecy::ExposeSecret as _;
        // The URL without its password; the database is not reached here (`check --online`
        // reads the server, `status` the database).
        println!(
            "  cluster: PostgreSQL {}{}, instance {}, lease {}, heartbeat {}{}: uploads in flight, runs and claims are there, shared",
            crate::state::redacted_url(c.url.expose_secret()),
            if c.ca_file.is_some() {
                " (TLS, verified with ca_file)"
            } else {
                ""
            },
            c.instance
                .as_deref()
                .unwrap_or("<host>-<pid>-<n> (unique per process)"),
            humantime::format_duration(c.lease),
            humantime::format_duration(c.heartbeat),
            c.expected_members
                .map_or_else(String::new, |n| format!(", {n} members expected")),
        );
    }
    for (i, t) in config.notify.iter().enumerate() {
        // Scheme and host only: the rest of a webhook URL is its secret.
        println!(
            "  notify {i}: POST to {} on {}, jobs: {}, reminder every {}, timeout {}",
            t.url.redacted(),
            t.on,
            t.jobs
                .as_ref()
                .map_or_else(|| "all".to_owned(), |j| j.join(", ")),
            humantime::format_duration(t.repeat),
            humantime::format_duration(t.timeout),
        );
    }
    for job in &config.jobs {
        let asset = if job.assets.is_empty() {
            job.asset.to_string()
        } else {
            let ids: Vec<String> = job.assets.iter().map(|a| a.id.to_string()).collect();
            format!("{{{}}}", ids.join(", "))
        };
        let mut target = match &job.item {
            Some(item) => format!("{}/{}/{asset}", job.collection, item),
            None => format!("{}/{asset}", job.collection),
        };
        if let Some(alias) = &job.alias {
            target.push_str(&format!(", then alias {alias}"));
        }
        // An item job names its files in its assets.
        let files = |file: &std::path::Path| {
            if job.assets.is_empty() {
                file.display().to_string()
            } else {
                let files: Vec<String> = job
                    .assets
                    .iter()
                    .map(|a| a.file.display().to_string())
                    .collect();
                files.join(" + ")
            }
        };
        let policy = crate::supervisor::effective_policy(job, now);
        match &job.trigger {
            crate::trigger::TriggerSpec::Cron { file, schedule } => {
                let mut t = now;
                let next: Vec<String> = (0..3)
                    .filter_map(|_| {
                        t = schedule.next_after(t)?;
                        Some(
                            t.with_timezone(&schedule.timezone())
                                .format("%Y-%m-%d %H:%M:%S %Z")
                                .to_string(),
                        )
                    })
                    .collect();
                println!(
                    "  {}: {} -> {target} on {schedule}, policy {policy:?}; next: {}",
                    job.name,
                    files(file),
                    next.join(", ")
                );
                // Only a schedule naming a local time the change skips or repeats is shown.
                if let Some(around) =
                    schedule.around_next_transition(now, chrono::Duration::days(366))
                {
                    println!("    {around}");
                }
            }
            crate::trigger::TriggerSpec::Every { file, interval } => {
                println!(
                    "  {}: {} -> {target} every {}, policy {policy:?}",
                    job.name,
                    files(file),
                    humantime::format_duration(*interval)
                );
            }
            crate::trigger::TriggerSpec::Watch(w) => {
                println!(
                    "  {}: files matching {:?} in {} -> {target}, policy {policy:?}",
                    job.name,
                    w.pattern.glob().glob(),
                    w.dir.display()
                );
            }
        }
        match crate::retention::Retention::for_job(job) {
            Some(rule) => {
                let alias = job
                    .alias
                    .as_deref()
                    .map(|a| format!(", never {a:?}"))
                    .unwrap_or_default();
                println!(
                    "    retention: {} of the items matching {:?} (time from {}){alias}; at most {} deletions per run",
                    rule.keep,
                    job.item.as_deref().unwrap_or_default(),
                    rule.time_source(),
                    crate::retention::MAX_DELETIONS_PER_RUN
                );
            }
            None => println!("    retention: none (no keep: nothing is deleted)"),
        }
        let told: Vec<String> = config
            .notify
            .iter()
            .enumerate()
            .filter(|(_, t)| t.covers(&job.name))
            .map(|(i, t)| format!("{i} ({})", t.on))
            .collect();
        println!(
            "    notifications: {}; pings: {}",
            if told.is_empty() {
                "none".to_owned()
            } else {
                format!("notify {}", told.join(", "))
            },
            job.ping_url.as_ref().map_or_else(
                || "none".to_owned(),
                |u| format!("{} (/start, success, /fail)", u.redacted())
            ),
        );
        println!(
            "    verify_public: {}",
            match job.verify_public {
                crate::config::VerifyPublic::Warn =>
                    "warn (after an upload, HEAD of the public href: a problem is logged and counted)",
                crate::config::VerifyPublic::Fail =>
                    "fail (after an upload, HEAD of the public href: a problem fails the run)",
                crate::config::VerifyPublic::Off => "off (the public href is not checked)",
            }
        );
        if let Some(p) = &job.name_pattern {
            println!(
                "    name_pattern: {:?} (captures {}; a file whose name does not match is refused)",
                p.as_str(),
                p.capture_names()
                    .iter()
                    .map(|c| format!("{{{c}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let watches = config.jobs.iter().filter_map(|job| match &job.trigger {
        crate::trigger::TriggerSpec::Watch(w) => Some(w),
        _ => None,
    });
    let mut over = None;
    for finding in crate::trigger::watch::limits::check(watches) {
        use crate::trigger::watch::limits::Severity;
        match finding.severity {
            Severity::Warning => println!("warning: {}: {}", path.display(), finding.text),
            Severity::Error => over = Some(finding.text),
        }
    }
    if let Some(text) = over {
        return Err(CliError::usage(anyhow::anyhow!(
            "{}: {text}",
            path.display()
        )));
    }
    println!("ok");
    Ok(config)
}

pub(super) async fn run_status(args: StatusArgs) -> Result<(), CliError> {
    if args.json {
        return status_json(&args).await;
    }
    let dir = match (args.state_dir, args.config.config.as_deref()) {
        (Some(d), _) => d,
        (None, Some(c)) => {
            let config = config_of(c)?;
            if config.cluster.is_some() {
                return cluster_status(&config, usize::from(args.runs)).await;
            }
            config.state_dir
        }
        (None, None) => {
            return Err(CliError::usage(anyhow::anyhow!(
                "status needs --config FILE or --state-dir DIR"
            )));
        }
    };
    if !dir.is_dir() {
        return Err(CliError::usage(anyhow::anyhow!(
            "no state folder at {} (has the daemon run yet?)",
            dir.display()
        )));
    }
    match crate::state::state_holder(&dir) {
        Some(pid) => println!("a daemon (pid {pid}) holds {} now", dir.display()),
        None => println!("no daemon holds {} now", dir.display()),
    }
    // Read only: a daemon may hold the folder, and a corrupt cache is its to move aside.
    let state = crate::state::StateStore::open_read_only(&dir)
        .await
        .map_err(CliError::failure)?;
    let history = state.history().await.map_err(CliError::failure)?;
    if history.is_empty() {
        println!("no runs recorded yet in {}", dir.display());
    } else {
        print_history(&history, usize::from(args.runs));
    }
    for u in state.inflight().await.map_err(CliError::failure)? {
        println!(
            "in flight: upload {} of job {} ({}), created {}",
            u.upload_id,
            u.job,
            u.target,
            u.created.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(())
}

/// `status --json`: the status document built from the job file and the store, as the daemon's
/// `/status.json` builds it, without what only the daemon knows (`"source": "store"`).
async fn status_json(args: &StatusArgs) -> Result<(), CliError> {
    let Some(path) = args.config.config.as_deref() else {
        return Err(CliError::usage(anyhow::anyhow!(
            "status --json needs --config FILE: the document lists the file's jobs"
        )));
    };
    let mut config = config_of(path)?;
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    if config.cluster.is_none() && !config.state_dir.is_dir() {
        return Err(CliError::usage(anyhow::anyhow!(
            "no state folder at {} (has the daemon run yet?)",
            config.state_dir.display()
        )));
    }
    let state = crate::ops::open_for_reading(&config)
        .await
        .map_err(CliError::failure)?;
    let doc = crate::status::from_store(&config, &state)
        .await
        .map_err(CliError::failure)?;
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| CliError::failure(anyhow::anyhow!("cannot write the document: {e}")))?;
    println!("{text}");
    Ok(())
}

/// The job file at `path`, read without the server's secrets: `status` reads only the state
/// folder (or a cluster's database), and is often run from a shell that lacks the daemon's
/// environment. A variable a `*_env` key names (a password, a token) that is not set here reads
/// as a placeholder, except the cluster's database URL, which `status` reads; everything else
/// is checked as `check` does.
fn config_of(path: &std::path::Path) -> Result<crate::config::Config, CliError> {
    let text =
        crate::config::read_job_file(path).map_err(|e| CliError::usage(anyhow::Error::from(e)))?;
    let mut secret_vars = std::collections::HashSet::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        if let Some(toml::Value::String(db)) = table.get("cluster").and_then(|c| c.get("url_env")) {
            let db = db.clone();
            secret_env_names(&toml::Value::Table(table), &mut secret_vars);
            secret_vars.remove(&db);
        } else {
            secret_env_names(&toml::Value::Table(table), &mut secret_vars);
        }
    }
    let env = |name: &str| {
        std::env::var(name).ok().or_else(|| {
            secret_vars
                .contains(name)
                // URL-shaped, so that a webhook's or ping's `url_env` passes too.
                .then(|| "http://not-read-by-status.invalid/".to_owned())
        })
    };
    crate::config::parse(&text, path, &env).map_err(CliError::usage)
}

/// `status` of a cluster: its members and their leases, the runs (with the instance that ran
/// each), the uploads in flight and who holds them; read from its database.
async fn cluster_status(config: &crate::config::Config, runs: usize) -> Result<(), CliError> {
    let state = crate::ops::open_for_reading(config)
        .await
        .map_err(CliError::failure)?;
    let members = state.members().await.map_err(CliError::failure)?;
    let live = members.iter().filter(|m| m.live).count();
    let expected = config
        .cluster
        .as_ref()
        .and_then(|c| c.expected_members)
        .map_or_else(String::new, |n| format!(" (expected {n})"));
    println!("cluster: {live} live member(s){expected}");
    println!(
        "{:<40} {:<24} {:>8} {:<7} {:<20} {:>6}",
        "instance", "host", "pid", "lease", "renewed (UTC)", "holds"
    );
    for m in &members {
        let renewed = chrono::DateTime::from_timestamp_millis(m.renewed_ms).map_or_else(
            || "?".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        );
        println!(
            "{:<40} {:<24} {:>8} {:<7} {:<20} {:>6}",
            crate::observe::escape_controls(&m.instance),
            crate::observe::escape_controls(&m.host),
            m.pid,
            if m.live { "live" } else { "lapsed" },
            renewed,
            m.holds
        );
    }
    let history = state.history().await.map_err(CliError::failure)?;
    if history.is_empty() {
        println!("no runs recorded yet");
    } else {
        print_history(&history, runs);
    }
    for u in state.inflight().await.map_err(CliError::failure)? {
        let holder = match state.holder(&u.upload_id).await {
            Ok(crate::state::Holder::Live(i)) => format!("held by {i} (live)"),
            Ok(crate::state::Holder::Lapsed(Some(i))) => {
                format!("held by {i} (lapsed: the next heartbeat of a live member takes it)")
            }
            Ok(_) => "held by nobody".to_owned(),
            Err(e) => format!("holder unknown: {e}"),
        };
        println!(
            "in flight: upload {} of job {} ({}), created {}, {}",
            u.upload_id,
            u.job,
            u.target,
            u.created.format("%Y-%m-%d %H:%M:%S"),
            crate::observe::escape_controls(&holder)
        );
    }
    Ok(())
}

/// The values of every `*_env` key: the names of the variables that hold secrets.
fn secret_env_names(v: &toml::Value, out: &mut std::collections::HashSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                match v {
                    toml::Value::String(name) if k.ends_with("_env") => {
                        out.insert(name.clone());
                    }
                    v => secret_env_names(v, out),
                }
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| secret_env_names(v, out)),
        _ => {}
    }
}

/// The last runs of each job, newest first.
fn print_history(
    history: &std::collections::BTreeMap<String, Vec<crate::state::RunRecord>>,
    per_job: usize,
) {
    println!(
        "{:<24} {:<20} {:<17} {:>8} {:>10}  upload / error",
        "job", "finished (UTC)", "outcome", "attempts", "bytes"
    );
    for (job, runs) in history {
        for r in runs.iter().rev().take(per_job) {
            let mut detail = r
                .error
                .clone()
                .or_else(|| r.upload_id.as_ref().map(|u| u.0.clone()))
                .unwrap_or_default();
            if let Some(i) = &r.instance {
                detail = format!("[{i}] {detail}");
            }
            println!(
                "{:<24} {:<20} {:<17} {:>8} {:>10}  {}",
                job,
                r.finished.format("%Y-%m-%d %H:%M:%S"),
                r.outcome.as_str(),
                r.attempts,
                ByteSize(r.bytes).to_string(),
                // A recorded error quotes file names and server text: one run, one line.
                crate::observe::escape_controls(&detail)
            );
            // An item run: one line per asset under it.
            for a in &r.assets {
                let detail = a
                    .error
                    .clone()
                    .or_else(|| a.upload_id.as_ref().map(|u| u.0.clone()))
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<20} {:<17} {:>8} {:>10}  {}",
                    "",
                    format!("  {}", a.item.as_deref().unwrap_or("")),
                    a.outcome.as_str(),
                    "",
                    ByteSize(a.bytes).to_string(),
                    crate::observe::escape_controls(&format!("{} {detail}", a.asset))
                );
            }
            // A public link that does not serve what was uploaded (verify_public).
            for p in &r.public {
                let Some(problem) = &p.problem else { continue };
                println!(
                    "{:<24} {:<20} {:<17} {:>8} {:>10}  {}",
                    "",
                    "  public link",
                    problem,
                    "",
                    "",
                    crate::observe::escape_controls(&format!(
                        "{} {}",
                        p.url,
                        p.detail.as_deref().unwrap_or("")
                    ))
                );
            }
        }
    }
}
