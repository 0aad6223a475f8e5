//! The status page: the status document as server-rendered HTML. maud escapes every value it
//! interpolates (text and attributes alike), so a job or file name is text whatever it holds;
//! nothing here writes raw markup from data. Inline CSS only, no script, no external asset:
//! the page works offline and under the strict Content-Security-Policy the route sends.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::doc::{Document, JobView, RunView, Source, UploadView};

/// Seconds between the page's own reloads.
pub(crate) const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .5em}\
.meta{color:#555;margin:0 0 1em}\
table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border:1px solid #ddd;padding:.35em .5em;vertical-align:top;text-align:left}\
th{background:#f0f0f0;font-weight:600}\
small,.dim{color:#666}\
.outcome{display:inline-block;padding:0 .4em;border-radius:3px;font-weight:600}\
.good{background:#d9f2dc;color:#14532d}.bad{background:#fde2e1;color:#7f1d1d}\
.neutral{background:#eee;color:#333}.busy{background:#dbeafe;color:#1e3a8a}\
tr.failing td.name{border-left:4px solid #dc2626}tr.ok td.name{border-left:4px solid #16a34a}\
tr.never_run td.name{border-left:4px solid #aaa}\
progress{width:12em;vertical-align:middle}\
.err{color:#7f1d1d;white-space:pre-wrap;word-break:break-word}\
code{word-break:break-all}";

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let whole = std::time::Duration::from_secs(s.round() as u64);
        humantime::format_duration(whole).to_string()
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0) as f64;
    format!("{} ago", seconds(s))
}

/// The badge class of an outcome.
fn tone(outcome: &str) -> &'static str {
    match outcome {
        "uploaded" | "unchanged" | "resumed" => "good",
        "failed" | "blocked" | "unfreeable" => "bad",
        _ => "neutral",
    }
}

fn target(item: Option<&str>, asset: &str) -> String {
    match item {
        Some(i) => format!("{i}/{asset}"),
        None => asset.to_owned(),
    }
}

/// The last part of a path, which says which file it was; the whole path goes in a tooltip.
fn file_name(path: &str) -> &str {
    std::path::Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

fn last_run(r: &RunView, now: DateTime<Utc>) -> Markup {
    html! {
        span class={"outcome " (tone(r.outcome))} { (r.outcome) }
        " " span.dim title=(when(r.finished)) { (ago(r.finished, now)) }
        br;
        (target(r.item.as_deref(), &r.asset))
        @if let Some(f) = &r.file { br; small { "file " code title=(f) { (file_name(f)) } } }
        br;
        small {
            (seconds(r.duration_seconds)) ", " (bytes(r.bytes))
            @if r.attempts > 1 { ", " (r.attempts) " attempts" }
            @if !r.assets.is_empty() { ", " (r.assets.len()) " assets" }
        }
    }
}

fn upload(u: &UploadView) -> Markup {
    html! {
        div.upload data-sent=(u.bytes_sent) data-total=[u.bytes_total] {
            code { (u.target) }
            " " small { "file " code title=(u.file) { (file_name(&u.file)) } }
            br;
            @match u.bytes_total {
                Some(total) => {
                    progress value=(u.bytes_sent) max=(total) {}
                    " " (bytes(u.bytes_sent)) " of " (bytes(total))
                }
                None => { "preparing, " (bytes(u.bytes_sent)) " sent" }
            }
            @if let Some(rate) = u.rate_bytes_per_second {
                br;
                small { (bytes(rate as u64)) "/s" @if let Some(left) = u.seconds_left { ", " (seconds(left)) " left" } }
            }
        }
    }
}

fn job_row(j: &JobView, now: DateTime<Utc>) -> Markup {
    html! {
        tr class=(j.state) data-job=(j.name) {
            td.name { strong { (j.name) } br; small { (j.collection) } }
            td.trigger { (j.trigger.text) br; small { "next: " (j.next_fire_text) } }
            td.last {
                @match &j.last_run {
                    Some(r) => { (last_run(r, now)) }
                    None => { span.dim { "never ran" } }
                }
            }
            td.failure {
                @if let Some(f) = &j.last_failure {
                    span class="outcome bad" { (f.error_class.as_deref().unwrap_or(f.outcome)) }
                    " " span.dim title=(when(f.finished)) { (ago(f.finished, now)) }
                    @if j.failures_in_a_row > 0 { " " small { "(" (j.failures_in_a_row) " in a row)" } }
                    @if let Some(e) = &f.error { div.err { (e) } }
                }
                @for p in &j.public_problems {
                    div.public {
                        span class="outcome bad" { "public link: " (p.problem) }
                        " " code { (p.url) }
                        @if let Some(d) = &p.detail { div.err { (d) } }
                    }
                }
            }
            td.now {
                @for r in &j.running {
                    @if !j.uploads.iter().any(|u| u.target == r.target) {
                        div.running { span class="outcome busy" { "running" } " " code { (r.target) } " " small.dim { "since " (ago(r.started, now)) } }
                    }
                }
                @for u in &j.uploads { span class="outcome busy" { "uploading" } " " (upload(u)) }
                @for u in &j.inflight {
                    div.inflight { small { "on record: upload " code { (u.upload_id) } " of " (bytes(u.size)) ", created " (when(u.created)) } }
                }
            }
            td.rules {
                @if let Some(k) = &j.retention { (k) br; }
                @if let Some(o) = &j.owner { small { "owner " (o) } }
            }
        }
    }
}

/// The page of `doc`.
pub(crate) fn page(doc: &Document) -> String {
    let now = doc.generated;
    let running: usize = doc.jobs.iter().map(|j| j.running.len()).sum();
    let failing = doc.jobs.iter().filter(|j| j.state == "failing").count();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "stac-uploadd · " (doc.instance) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                h1 { "stac-uploadd on " (doc.instance) }
                p.meta {
                    (doc.jobs.len()) " jobs, " (running) " running, " (failing) " failing · server " code { (doc.server) }
                    " · " (when(now))
                    @if doc.source == Source::Store { " · read from the state store (no live progress)" }
                    @if doc.missed_events > 0 { " · " (doc.missed_events) " run events missed" }
                }
                table.jobs {
                    thead { tr { th { "Job" } th { "Trigger" } th { "Last run" } th { "Last failure" } th { "Now" } th { "Retention, owner" } } }
                    tbody { @for j in &doc.jobs { (job_row(j, now)) } }
                }
                h2 { "Recent runs" }
                table.recent {
                    thead { tr { th { "Finished" } th { "Job" } th { "Item / asset" } th { "Outcome" } th { "Duration" } th { "Bytes" } th { "Error" } } }
                    tbody {
                        @for r in &doc.recent_runs {
                            tr data-job=(r.job) {
                                td { (when(r.finished)) }
                                td { (r.job) }
                                td { (target(r.item.as_deref(), &r.asset)) @if let Some(f) = &r.file { br; small { code title=(f) { (file_name(f)) } } } }
                                td { span class={"outcome " (tone(r.outcome))} { (r.outcome) } }
                                td { (seconds(r.duration_seconds)) }
                                td { (bytes(r.bytes)) }
                                td { @if let Some(c) = &r.error_class { strong { (c) } ": " } @if let Some(e) = &r.error { span.err { (e) } } }
                            }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        assert_eq!(seconds(3.25), "3.2 s");
        assert_eq!(seconds(125.0), "2m 5s");
    }
}
