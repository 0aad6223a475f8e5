//! The shipped Grafana dashboard (deploy/grafana/stac-uploadd.json) and Prometheus rules
//! (deploy/prometheus/alerts.yaml) ask only for what the daemon exports: every metric name in
//! their expressions appears in a real scrape of the daemon binary (a cron job and a watch job
//! against the emulator, after runs that uploaded, retried a run and sent a part again), and
//! every label they select on or group by exists on that metric. A renamed metric or label
//! breaks this test instead of silently emptying a panel or muting an alert.
//!
//! The rules of group `stac-uploadd-cluster` ask for metrics a daemon exports only in cluster
//! mode (`[cluster]`, on PostgreSQL): a single daemon's scrape must have none of them (or those
//! alerts would fire on it), and their names are checked against the list the cluster's metrics
//! were specified with ([`CLUSTER_METRICS`]), not against a cluster member's scrape.
//!
//! The rule file is read with a small line parser of its `expr:` keys, not a YAML crate:
//! serde_yaml is not a dependency of this project (and is no longer maintained), and the file
//! is ours, written with `expr:` either inline or as a `|` block. The PromQL is read with a
//! small tokenizer that knows what these expressions use (selectors, functions, aggregations
//! with `by`, vector matching with `on`); it refuses what it does not know rather than
//! guessing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fixtures::{
    FAST_RETRIES, JobFile, MIB, ZIP_SETTLED, scrape, spawn_observed, terminate, value, wait_for,
    write_file,
};
use prometheus_parse::{Sample, Value};
use stac_uploadd_emulator::AssetKey;

const DASHBOARD: &str = include_str!("../../deploy/grafana/stac-uploadd.json");
const DASHBOARD_PATH: &str = "deploy/grafana/stac-uploadd.json";
const RULES: &str = include_str!("../../deploy/prometheus/alerts.yaml");
const RULES_PATH: &str = "deploy/prometheus/alerts.yaml";
/// The rule group whose alerts only a cluster member's metrics can fire; it follows the others.
const CLUSTER_GROUP: &str = "- name: stac-uploadd-cluster";
/// What a daemon exports in cluster mode only, and nothing else does.
const CLUSTER_METRICS: [&str; 6] = [
    "stac_uploadd_cluster_members",
    "stac_uploadd_cluster_expected_members",
    "stac_uploadd_cluster_lease_held",
    "stac_uploadd_cluster_fenced_total",
    "stac_uploadd_cluster_takeovers_total",
    "stac_uploadd_cluster_claims_total",
];

/// Labels Prometheus attaches to every series of a target at scrape time: the daemon does not
/// export them (and must not: they would clash), the rules match on them.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// One query of the dashboard or the rules, and where it is.
#[derive(Debug)]
struct Query {
    place: String,
    expr: String,
}

/// A series selector of a query: the metric and the label matchers in its braces.
#[derive(Debug, Default, PartialEq)]
struct Selector {
    metric: String,
    /// Label name and, for an `=` matcher on a literal value, the value.
    matchers: Vec<(String, Option<String>)>,
}

/// What a query asks for: its selectors and the labels it groups or matches by.
#[derive(Debug, Default, PartialEq)]
struct Uses {
    selectors: Vec<Selector>,
    grouping: BTreeSet<String>,
}

/// The `expr:` values of a Prometheus rule file, inline or as `|`/`>` blocks, with their line.
fn rule_exprs(text: &str, path: &str) -> Vec<Query> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            i += 1;
            continue;
        };
        let value = value.trim();
        let place = format!("{path}:{}", i + 1);
        if value.starts_with('|') || value.starts_with('>') {
            let mut block = Vec::new();
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                let deeper = l.len() - l.trim_start().len() > indent;
                if !(l.trim().is_empty() || deeper) {
                    break;
                }
                block.push(l.trim());
                i += 1;
            }
            out.push(Query {
                place,
                expr: block.join(" ").trim().to_owned(),
            });
        } else {
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            out.push(Query {
                place,
                expr: unquoted.to_owned(),
            });
            i += 1;
        }
    }
    out
}

/// Every `expr` of the dashboard's panels (rows and their panels included), with the title.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<Query> {
    fn walk(node: &serde_json::Value, title: &str, out: &mut Vec<Query>) {
        match node {
            serde_json::Value::Object(map) => {
                let title = map.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    out.push(Query {
                        place: format!("{DASHBOARD_PATH}: panel {title:?}"),
                        expr: expr.to_owned(),
                    });
                }
                for v in map.values() {
                    walk(v, title, out);
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    walk(v, title, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], "", &mut out);
    out
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The selectors and grouping labels of a PromQL expression.
fn parse_promql(expr: &str) -> Result<Uses, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut uses = Uses::default();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let ident_at = |mut i: usize| {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        (chars[start..i].iter().collect::<String>(), i)
    };
    // A quoted string starting at `i`: its content and the index after it.
    let string_at = |i: usize| -> Result<(String, usize), String> {
        let quote = chars[i];
        let mut j = i + 1;
        let mut s = String::new();
        while j < chars.len() && chars[j] != quote {
            if chars[j] == '\\' && j + 1 < chars.len() {
                j += 1;
            }
            s.push(chars[j]);
            j += 1;
        }
        if j == chars.len() {
            return Err(format!("unterminated string at {i}"));
        }
        Ok((s, j + 1))
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            i = string_at(i)?.1;
        } else if c == '[' {
            // A range or subquery: durations and Grafana's `$__rate_interval`.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            // A Grafana variable outside a string.
            i = ident_at(i + 1).1;
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            return Err(format!("a selector without a metric name at {i}: {expr}"));
        } else if is_ident_start(c) {
            let (word, end) = ident_at(i);
            let next = skip_ws(end);
            let call = next < chars.len() && chars[next] == '(';
            if LABEL_LISTS.contains(&word.as_str()) {
                i = next;
                if call {
                    let close = chars[next..]
                        .iter()
                        .position(|&c| c == ')')
                        .ok_or_else(|| format!("unclosed {word}( in {expr}"))?;
                    let list: String = chars[next + 1..next + close].iter().collect();
                    uses.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    i = next + close + 1;
                }
            } else if KEYWORDS.contains(&word.as_str())
                || AGGREGATIONS.contains(&word.as_str())
                || call
            {
                i = end;
            } else {
                let mut selector = Selector {
                    metric: word,
                    matchers: Vec::new(),
                };
                i = end;
                if i < chars.len() && chars[i] == '{' {
                    i += 1;
                    loop {
                        i = skip_ws(i);
                        if i >= chars.len() {
                            return Err(format!("unclosed selector in {expr}"));
                        }
                        if chars[i] == '}' {
                            i += 1;
                            break;
                        }
                        if chars[i] == ',' {
                            i += 1;
                            continue;
                        }
                        let (label, end) = ident_at(i);
                        if label.is_empty() {
                            return Err(format!("a label name expected at {i} in {expr}"));
                        }
                        let op_start = skip_ws(end);
                        let mut j = op_start;
                        while j < chars.len() && "=!~".contains(chars[j]) {
                            j += 1;
                        }
                        let op: String = chars[op_start..j].iter().collect();
                        let j = skip_ws(j);
                        if !["=", "!=", "=~", "!~"].contains(&op.as_str())
                            || j >= chars.len()
                            || !"\"'`".contains(chars[j])
                        {
                            return Err(format!("a matcher expected after {label} in {expr}"));
                        }
                        let (value, after) = string_at(j)?;
                        let literal = op == "=" && !value.contains('$');
                        selector.matchers.push((label, literal.then_some(value)));
                        i = after;
                    }
                }
                uses.selectors.push(selector);
            }
        } else if "+-*/%^()<>=!,".contains(c) {
            i += 1;
        } else {
            return Err(format!("unexpected {c:?} at {i} in {expr}"));
        }
    }
    Ok(uses)
}

/// What is wrong with `query` against `samples` (a scrape of the daemon): one line per problem.
fn problems(query: &Query, samples: &[Sample]) -> Vec<String> {
    let uses = match parse_promql(&query.expr) {
        Ok(uses) => uses,
        Err(e) => {
            return vec![format!(
                "{}: cannot read {:?}: {e}",
                query.place, query.expr
            )];
        }
    };
    let mut out = Vec::new();
    let mut metrics = Vec::new();
    for selector in &uses.selectors {
        if selector.metric == "up" {
            continue;
        }
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| selector.metric.strip_suffix(s))
            .unwrap_or(selector.metric.as_str());
        let of: Vec<&Sample> = samples.iter().filter(|s| s.metric == name).collect();
        if of.is_empty() {
            out.push(format!("{}: no metric {name} in the scrape", query.place));
            continue;
        }
        for (label, value) in &selector.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            if !of.iter().any(|s| s.labels.get(label).is_some()) {
                out.push(format!("{}: {name} has no label {label}", query.place));
            } else if let Some(value) = value
                && !of
                    .iter()
                    .any(|s| s.labels.get(label) == Some(value.as_str()))
            {
                out.push(format!(
                    "{}: no {name}{{{label}={value:?}}} in the scrape",
                    query.place
                ));
            }
        }
        metrics.push((name.to_owned(), of));
    }
    for label in &uses.grouping {
        if TARGET_LABELS.contains(&label.as_str()) {
            continue;
        }
        for (name, of) in &metrics {
            let histogram = of.iter().all(|s| matches!(s.value, Value::Histogram(_)));
            let has = if label == "le" {
                histogram
            } else {
                of.iter().any(|s| s.labels.get(label).is_some())
            };
            if !has {
                out.push(format!(
                    "{}: groups by {label}, which {name} does not have",
                    query.place
                ));
            }
        }
    }
    // A metric used twice in one query is one problem.
    let mut seen = BTreeSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// The rule file split before the cluster group: the rules a single daemon's scrape can fire,
/// and those only a cluster member's can.
fn rules_by_mode() -> (&'static str, &'static str) {
    let at = RULES
        .find(CLUSTER_GROUP)
        .unwrap_or_else(|| panic!("{RULES_PATH}: no rule group {CLUSTER_GROUP:?}"));
    RULES.split_at(at)
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD_PATH}: {e}"))
}

/// Every query the two files make of a single daemon: the rules' expressions (the cluster's
/// aside), the panels' queries and the job variable's `label_values(metric, label)` (as the
/// selector `metric{label!=""}`).
fn all_queries() -> Vec<Query> {
    let dashboard = dashboard();
    let mut queries = rule_exprs(rules_by_mode().0, RULES_PATH);
    queries.extend(dashboard_exprs(&dashboard));
    for var in dashboard["templating"]["list"].as_array().expect("a list") {
        if var["type"] != "query" {
            continue;
        }
        let definition = var["definition"].as_str().expect("a definition");
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{DASHBOARD_PATH}: unexpected variable query {definition}"));
        let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
        queries.push(Query {
            place: format!("{DASHBOARD_PATH}: variable {}", var["name"]),
            expr: format!("{}{{{}!=\"\"}}", metric.trim(), label.trim()),
        });
    }
    queries
}

#[test]
fn the_reader_finds_selectors_labels_and_grouping() {
    let uses = parse_promql(
        r#"histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket{job_name=~"$job_name", outcome="failed"}[$__rate_interval])))
           and on (instance, job_name) y > 2 * z offset 5m or absent(w{job="s"}) unless count(v) by (k)"#,
    )
    .expect("readable");
    let names: Vec<&str> = uses.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["x_seconds_bucket", "y", "z", "w", "v"]);
    assert_eq!(
        uses.selectors[0].matchers,
        [
            ("job_name".to_owned(), None),
            ("outcome".to_owned(), Some("failed".to_owned()))
        ]
    );
    assert_eq!(
        uses.grouping,
        BTreeSet::from(["le", "instance", "job_name", "k"].map(str::to_owned))
    );
    assert!(parse_promql(r#"{__name__="x"}"#).is_err());
    assert!(parse_promql("x # a comment").is_err());
    assert!(parse_promql(r#"x{job_name="a}"#).is_err());
}

#[test]
fn both_files_are_read_whole() {
    let rules = rule_exprs(RULES, RULES_PATH);
    let alerts = RULES
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(alerts >= 8, "{RULES_PATH}: {alerts} alerts");
    assert_eq!(rules.len(), alerts, "one expr per alert: {rules:#?}");
    assert!(
        RULES.lines().any(|l| l.trim() == "- name: stac-uploadd"),
        "{RULES_PATH}: the group is called stac-uploadd"
    );
    for q in &rules {
        let uses = parse_promql(&q.expr).unwrap_or_else(|e| panic!("{}: {e}", q.place));
        assert!(!uses.selectors.is_empty(), "{}: {:?}", q.place, q.expr);
        assert!(!q.expr.contains("expr:"), "{}: {:?}", q.place, q.expr);
    }

    let (single, cluster) = rules_by_mode();
    let cluster_rules = rule_exprs(cluster, RULES_PATH);
    assert_eq!(
        cluster_rules.len(),
        2,
        "{RULES_PATH}: the cluster group's alerts: {cluster_rules:#?}"
    );
    for q in &cluster_rules {
        let uses = parse_promql(&q.expr).unwrap_or_else(|e| panic!("{}: {e}", q.place));
        for s in &uses.selectors {
            assert!(
                CLUSTER_METRICS.contains(&s.metric.as_str()),
                "{}: {} is not a cluster metric",
                q.place,
                s.metric
            );
        }
    }
    assert!(
        !single.contains("stac_uploadd_cluster_"),
        "{RULES_PATH}: a cluster metric outside the group {CLUSTER_GROUP:?}"
    );

    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().expect("a schemaVersion") >= 36);
    let vars = d["templating"]["list"].as_array().expect("variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{DASHBOARD_PATH}: no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let job = var("job_name");
    assert_eq!(job["multi"], true);
    assert_eq!(
        job["definition"],
        "label_values(stac_uploadd_runs_total, job_name)"
    );
    let panels = dashboard_exprs(&d);
    assert!(panels.len() >= 10, "{panels:#?}");
    // Every query goes to the chosen data source.
    fn datasources(node: &serde_json::Value, out: &mut Vec<String>) {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(ds) = map.get("datasource")
                    && ds.get("type").is_some_and(|t| t == "prometheus")
                {
                    out.push(ds["uid"].as_str().unwrap_or_default().to_owned());
                }
                map.values().for_each(|v| datasources(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| datasources(v, out)),
            _ => {}
        }
    }
    let mut uids = Vec::new();
    datasources(&d["panels"], &mut uids);
    assert!(!uids.is_empty());
    assert!(uids.iter().all(|u| u == "${datasource}"), "{uids:?}");
}

fn key(name: &str) -> AssetKey {
    AssetKey::item_asset("ch.test.collection", "item-1", name)
}

/// A cron job publishing `radar.zip` every second, and a watch job publishing each `*.zip`
/// dropped into `incoming`.
fn job_file(dir: &Path, url: &str, radar: &Path, incoming: &Path) -> PathBuf {
    JobFile::new(dir, url)
        .defaults(FAST_RETRIES)
        .cron("radar", "radar.zip", radar, "* * * * * *")
        .watch("stations", "{name}", incoming, "*.zip")
        .lines("ignore = [\"radar.zip\", \"*.tmp\", \".*\"]")
        .lines(ZIP_SETTLED)
        .write()
}

fn runs(samples: &[Sample], job_name: &str, outcome: &str) -> f64 {
    value(
        samples,
        "stac_uploadd_runs_total",
        &[("job_name", job_name), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn every_metric_and_label_the_dashboard_and_alerts_use_is_exported() {
    let emu = crate::fixtures::basic_emulator().await;
    for name in ["radar.zip", "a.zip"] {
        emu.create_asset(&key(name), "application/zip").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let radar = dir.path().join("radar.zip");
    let radar_sha = write_file(&radar, 100, 1);
    let config = job_file(dir.path(), &emu.base_url(), &radar, &incoming);

    let (mut daemon, log, addr) = spawn_observed(&config, &[]).await;
    wait_for(
        Duration::from_secs(30),
        "the cron job's first upload",
        || {
            emu.asset(&key("radar.zip")).and_then(|a| a.checksum)
                == Some(format!("1220{radar_sha}"))
        },
    )
    .await;

    // The watch job's run fails on its creates (the session's tries), is retried by the job's
    // policy, and sends its part twice: the retry series get a value whether or not they
    // exist before their first event.
    emu.faults().add("create:503:next=4".parse().unwrap());
    emu.faults().add("put_part:503:next=1".parse().unwrap());
    let tmp = incoming.join(".a.zip.part");
    let sha = write_file(&tmp, MIB, 2);
    std::fs::rename(&tmp, incoming.join("a.zip")).unwrap();
    wait_for(Duration::from_secs(60), "the watch job's upload", || {
        emu.asset(&key("a.zip")).and_then(|a| a.checksum) == Some(format!("1220{sha}"))
    })
    .await;

    // Both runs counted (bounded: on a daemon whose labels differ the checks below say what).
    let mut samples = scrape(addr).await;
    for _ in 0..150 {
        if runs(&samples, "radar", "uploaded") >= 1.0
            && runs(&samples, "stations", "uploaded") >= 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        samples = scrape(addr).await;
    }

    let mut report = Vec::new();
    for q in &all_queries() {
        report.extend(problems(q, &samples));
    }
    let clashing: BTreeSet<(&str, &str)> = samples
        .iter()
        .flat_map(|s| {
            TARGET_LABELS
                .iter()
                .filter(|l| s.labels.get(l).is_some())
                .map(|l| (s.metric.as_str(), *l))
        })
        .collect();
    report.extend(clashing.into_iter().map(|(metric, label)| {
        format!("{metric} carries the label {label}, which Prometheus sets on every scraped series")
    }));
    // Exported in cluster mode only: at 0 here, StacUploaddLeaseLost would fire on every single
    // daemon.
    report.extend(
        samples
            .iter()
            .filter(|s| s.metric.starts_with("stac_uploadd_cluster_"))
            .map(|s| format!("{} is exported without [cluster]", s.metric)),
    );
    let names: BTreeSet<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
    assert!(
        report.is_empty(),
        "{} problem(s):\n{}\n\nthe scrape has: {names:?}",
        report.len(),
        report.join("\n")
    );
    // The check itself can fail: a misspelt metric, a label the metric lacks, a value no
    // series has.
    for (expr, problem) in [
        ("stac_uploadd_run_total", "no metric stac_uploadd_run_total"),
        (
            r#"sum by (reason) (stac_uploadd_runs_total{outcome="uploaded"})"#,
            "groups by reason",
        ),
        (
            r#"stac_uploadd_runs_total{outcome="uploadd"}"#,
            r#"no stac_uploadd_runs_total{outcome="uploadd"}"#,
        ),
    ] {
        let probe = Query {
            place: "probe".into(),
            expr: expr.into(),
        };
        let found = problems(&probe, &samples);
        assert!(
            found.len() == 1 && found[0].contains(problem),
            "{expr}: {found:?}"
        );
    }

    let status = terminate(&mut daemon).await;
    assert_eq!(status.code(), Some(0), "{:?}", log.lock().unwrap());
}
