//! What is sent: a webhook's JSON body (docs/notifications.md) and a ping's request.

use serde_json::{Value, json};

use super::machine::Event;
use crate::state::RunRecord;

/// The most characters of an error message in a notice's `text`; the `error` field has it all
/// up to [`MAX_ERROR`].
const MAX_TEXT_ERROR: usize = 300;
/// The most characters of an error message sent anywhere (a server's answer may be long).
pub(crate) const MAX_ERROR: usize = 4_000;

/// The body of a notice about `run`, the job's `failures` in a row included.
pub(crate) fn notice(event: Event, run: &RunRecord, failures: u32, instance: &str) -> Value {
    let assets: Vec<Value> = if run.assets.is_empty() {
        vec![json!({
            "asset": run.asset,
            "item": run.item,
            "file": file_name(run.file.as_deref()),
        })]
    } else {
        run.assets
            .iter()
            .map(|a| {
                json!({
                    "asset": a.asset,
                    "item": a.item,
                    "file": file_name(a.file.as_deref()),
                    "outcome": a.outcome.as_str(),
                })
            })
            .collect()
    };
    let public: Vec<Value> = run
        .public
        .iter()
        .filter(|p| p.problem.is_some())
        .map(|p| {
            json!({
                "asset": p.asset,
                "item": p.item,
                "url": p.url,
                "problem": p.problem,
                "detail": p.detail,
            })
        })
        .collect();
    let mut body = json!({
        "text": text(event, run, failures, instance),
        "event": event.as_str(),
        "job": run.job,
        "item": run.item,
        "assets": assets,
        "outcome": run.outcome.as_str(),
        "error_class": run.error_class,
        "error": run.error.as_deref().map(|e| bounded(e, MAX_ERROR)),
        "attempts": run.attempts,
        "duration_ms": (run.finished - run.started).num_milliseconds().max(0),
        "instance": instance,
        "started": run.started,
        "finished": run.finished,
        "failures_in_a_row": failures,
    });
    if !public.is_empty() {
        body["public_problems"] = Value::Array(public);
    }
    body
}

/// The one line a chat shows: who, which job, what happened, why.
fn text(event: Event, run: &RunRecord, failures: u32, instance: &str) -> String {
    let class = run.error_class.as_deref().unwrap_or("error");
    let error = run
        .error
        .as_deref()
        .map(|e| bounded(e, MAX_TEXT_ERROR))
        .unwrap_or_default();
    let what = match event {
        Event::Failure => format!("failed ({class}): {error}"),
        Event::Reminder => {
            format!("still failing, {failures} runs in a row ({class}): {error}")
        }
        Event::Recovery => format!("recovered: {}", run.outcome.as_str()),
        Event::Success => format!("succeeded: {}", run.outcome.as_str()),
    };
    let problems: Vec<String> = run
        .public
        .iter()
        .filter_map(|p| Some(format!("{} {}", p.asset, p.problem.as_deref()?)))
        .collect();
    let public = if problems.is_empty() {
        String::new()
    } else {
        format!("; public link: {}", problems.join(", "))
    };
    chat_safe(&format!(
        "stac-uploadd on {instance}: job {} {what}{public}",
        run.job
    ))
}

/// One line, with `&`, `<` and `>` escaped as Slack asks: job names, file names and server
/// messages are input, and `<!channel>` in one would otherwise page a whole channel.
fn chat_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, "…" saying it was cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The last part of a path, as text (any bytes: shown lossily, it is for a person).
fn file_name(path: Option<&std::path::Path>) -> Option<String> {
    let path = path?;
    Some(
        path.file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy()
            .into_owned(),
    )
}

/// A healthchecks-style ping: `{url}/start`, `{url}`, `{url}/fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ping {
    Start,
    Success,
    Fail,
}

/// The URL of `ping` under the job's ping URL `base` (its query, if any, kept).
pub(crate) fn ping_url(base: &url::Url, ping: Ping) -> url::Url {
    let mut url = base.clone();
    let tail = match ping {
        Ping::Start => "start",
        Ping::Fail => "fail",
        Ping::Success => return url,
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(tail);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Outcome, PublicCheck};
    use chrono::TimeZone;

    fn failed_run() -> RunRecord {
        let at = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        RunRecord {
            job: "radar<!channel>".into(),
            started: at,
            finished: at + chrono::Duration::milliseconds(1500),
            outcome: Outcome::Failed,
            asset: "radar.zip".into(),
            item: Some("radar-2026".into()),
            file: Some("/data/out/radar\n.zip".into()),
            bytes: 0,
            attempts: 3,
            upload_id: None,
            error: Some("HTTP 409: conflict".into()),
            assets: Vec::new(),
            instance: None,
            error_class: Some("conflict".into()),
            public: vec![PublicCheck {
                asset: "radar.zip".into(),
                item: None,
                url: "https://data.example/radar.zip".into(),
                problem: Some("sha256".into()),
                detail: Some("old bytes".into()),
                max_age: Some(60),
            }],
        }
    }

    #[test]
    fn a_failure_notice_names_job_asset_error_and_instance_on_one_safe_line() {
        let body = notice(Event::Failure, &failed_run(), 1, "host1");
        assert_eq!(
            body["text"],
            "stac-uploadd on host1: job radar&lt;!channel&gt; failed (conflict): HTTP 409: conflict; public link: radar.zip sha256"
        );
        assert_eq!(body["event"], "failure");
        assert_eq!(body["assets"][0]["file"], "radar\n.zip");
        assert_eq!(body["assets"][0]["item"], "radar-2026");
        assert_eq!(body["error_class"], "conflict");
        assert_eq!(body["attempts"], 3);
        assert_eq!(body["duration_ms"], 1500);
        assert_eq!(body["failures_in_a_row"], 1);
        assert_eq!(body["public_problems"][0]["problem"], "sha256");
        assert_eq!(body["started"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn pings_go_under_the_url_and_long_errors_are_cut() {
        let base: url::Url = "https://hc.example/ping/abc-123".parse().unwrap();
        assert_eq!(
            ping_url(&base, Ping::Start).as_str(),
            "https://hc.example/ping/abc-123/start"
        );
        assert_eq!(
            ping_url(&base, Ping::Success).as_str(),
            "https://hc.example/ping/abc-123"
        );
        let slash: url::Url = "https://hc.example/ping/abc/?rid=1".parse().unwrap();
        assert_eq!(
            ping_url(&slash, Ping::Fail).as_str(),
            "https://hc.example/ping/abc/fail?rid=1"
        );
        assert_eq!(bounded("ééé", 2), "éé…");
        assert_eq!(bounded("abc", 3), "abc");
    }
}
