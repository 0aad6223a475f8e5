//! Prometheus metrics through the `metrics` facade. Call sites record through the functions
//! here, so every name, label and unit is written once; without an installed recorder (the
//! `upload` command, the demo, unit tests) each call is a cheap no-op.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::{Outcome, RunRecord};

/// Runs by job and outcome (`uploaded`, `failed`, `cancelled`, `resumed`, `aborted_at_start`).
pub const RUNS: &str = "stac_uploadd_runs_total";
/// Upload sessions by job and outcome (see [`UploadOutcome`]).
pub const UPLOADS: &str = "stac_uploadd_uploads_total";
/// Bytes of the files whose upload completed, by job.
pub const BYTES_SENT: &str = "stac_uploadd_bytes_sent_total";
/// Duration of completed upload sessions (digest, create, parts, complete), by job.
pub const UPLOAD_DURATION: &str = "stac_uploadd_upload_duration_seconds";
/// Retries of a failed run by job and reason (the error class name).
pub const RETRIES: &str = "stac_uploadd_retries_total";
/// Parts sent again inside an upload session, by job and reason.
pub const PART_RETRIES: &str = "stac_uploadd_part_retries_total";
/// Stale in-progress uploads aborted because they blocked an asset, by job.
pub const STALE_ABORTED: &str = "stac_uploadd_stale_uploads_aborted_total";
/// Unix time of the last successful run, by job.
pub const LAST_SUCCESS: &str = "stac_uploadd_last_success_timestamp_seconds";
/// Upload sessions running now.
pub const IN_PROGRESS: &str = "stac_uploadd_uploads_in_progress";
/// How late schedules fired.
pub const LATENESS: &str = "stac_uploadd_schedule_lateness_seconds";
/// SIGHUP reloads by result (`ok`, `failed`).
pub const RELOADS: &str = "stac_uploadd_config_reloads_total";
/// Whether a watch job's folder is watched (1) or lost and being retried (0), by job.
pub const TRIGGER_UP: &str = "stac_uploadd_trigger_up";
/// Times a watch job's lost folder was watched again, by job.
pub const TRIGGER_RECOVERIES: &str = "stac_uploadd_trigger_recoveries_total";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "stac_uploadd_build_info";

/// From a second (a small file on a LAN) to the two-hour default run timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];
/// The scheduler fires within milliseconds; seconds mean a starved runtime or a clock jump.
const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A recorder with this crate's histogram buckets; [`install`] makes it the global one.
pub fn recorder() -> Result<metrics_exporter_prometheus::PrometheusRecorder, BuildError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(UPLOAD_DURATION.into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(LATENESS.into()), LATENESS_BUCKETS)?
        .build_recorder())
}

/// Installs the process-wide recorder and describes every metric. The caller renders through
/// the handle and runs its upkeep (no exporter server of its own: `/metrics` is ours).
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    describe();
    handle.run_upkeep();
    Ok(handle)
}

/// HELP texts and units, and the series that exist from the start.
pub fn describe() {
    describe_counter!(RUNS, "Runs by job and outcome");
    describe_counter!(UPLOADS, "Upload sessions by job and outcome");
    describe_counter!(
        BYTES_SENT,
        Unit::Bytes,
        "Bytes of the files whose upload completed"
    );
    describe_histogram!(
        UPLOAD_DURATION,
        Unit::Seconds,
        "Duration of completed uploads: digest, create, parts and complete"
    );
    describe_counter!(
        RETRIES,
        "Retries of a failed run, by reason (the error class)"
    );
    describe_counter!(
        PART_RETRIES,
        "Parts sent again inside an upload, by reason (the error class)"
    );
    describe_counter!(
        STALE_ABORTED,
        "Stale in-progress uploads aborted because they blocked an asset"
    );
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "Unix time at which the job's last successful run finished"
    );
    describe_gauge!(IN_PROGRESS, "Upload sessions running now");
    describe_histogram!(LATENESS, Unit::Seconds, "How late the schedules fired");
    describe_counter!(RELOADS, "Reloads of the job file on SIGHUP, by result");
    describe_gauge!(
        TRIGGER_UP,
        "Whether the watch job's folder is watched (1) or lost and being retried (0)"
    );
    describe_counter!(
        TRIGGER_RECOVERIES,
        "Times the watch job's lost folder was watched again"
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!(IN_PROGRESS).set(0.0);
}

/// Makes a job's main series exist, at zero the first time, so that `rate()` and alerts on
/// failures work before the first failure. A reload registers again without resetting them.
pub fn register_job(job: &str) {
    for outcome in [
        Outcome::Uploaded,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::Unfreeable,
    ] {
        counter!(RUNS, "job" => job.to_owned(), "outcome" => outcome.as_str()).increment(0);
    }
    counter!(BYTES_SENT, "job" => job.to_owned()).increment(0);
    counter!(STALE_ABORTED, "job" => job.to_owned()).increment(0);
}

/// A finished run: its outcome, its bytes and, when it succeeded, the time.
pub fn run_finished(run: &RunRecord) {
    let job = run.job.clone();
    counter!(RUNS, "job" => job.clone(), "outcome" => run.outcome.as_str()).increment(1);
    if run.bytes > 0 {
        counter!(BYTES_SENT, "job" => job.clone()).increment(run.bytes);
    }
    if matches!(
        run.outcome,
        Outcome::Uploaded | Outcome::Unchanged | Outcome::Resumed
    ) {
        let t = run.finished.timestamp_millis() as f64 / 1000.0;
        gauge!(LAST_SUCCESS, "job" => job).set(t);
    }
}

/// A watch job's trigger is `up` (watching) or not (its folder lost, being retried); `recovered`
/// says it is up again after a loss. The watch calls this at its start (up, not recovered), which
/// makes both series exist.
pub fn trigger_state(job: &str, up: bool, recovered: bool) {
    gauge!(TRIGGER_UP, "job" => job.to_owned()).set(if up { 1.0 } else { 0.0 });
    counter!(TRIGGER_RECOVERIES, "job" => job.to_owned()).increment(u64::from(up && recovered));
}

/// How one upload session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The asset now holds the file.
    Uploaded,
    /// Another upload in progress blocked the asset; nothing was created.
    Blocked,
    /// Cut off by the run deadline or by shutdown.
    Cancelled,
    /// Failed; nothing of ours is left in progress.
    Failed,
    /// Failed, and the abort failed too: the upload may still block the asset.
    AbortFailed,
}

impl UploadOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadOutcome::Uploaded => "uploaded",
            UploadOutcome::Blocked => "blocked",
            UploadOutcome::Cancelled => "cancelled",
            UploadOutcome::Failed => "failed",
            UploadOutcome::AbortFailed => "abort_failed",
        }
    }
}

/// One upload session ended; `took` is its duration when it completed.
pub fn upload_finished(job: &str, outcome: UploadOutcome, took: Option<Duration>) {
    counter!(UPLOADS, "job" => job.to_owned(), "outcome" => outcome.as_str()).increment(1);
    if let Some(took) = took {
        histogram!(UPLOAD_DURATION, "job" => job.to_owned()).record(took.as_secs_f64());
    }
}

/// A failed run is tried again.
pub fn run_retry(job: &str, reason: &'static str) {
    counter!(RETRIES, "job" => job.to_owned(), "reason" => reason).increment(1);
}

/// A part is sent again inside an upload.
pub fn part_retry(job: &str, reason: &'static str) {
    counter!(PART_RETRIES, "job" => job.to_owned(), "reason" => reason).increment(1);
}

/// A stale upload that blocked the job's asset was aborted.
pub fn stale_upload_aborted(job: &str) {
    counter!(STALE_ABORTED, "job" => job.to_owned()).increment(1);
}

/// A reload of the job file on SIGHUP.
pub fn reload(ok: bool) {
    counter!(RELOADS, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// How late a schedule fired.
pub fn schedule_lateness(late: Duration) {
    histogram!(LATENESS).record(late.as_secs_f64());
}

/// Counts an upload session as running until dropped, whichever way it ends (a cancelled future
/// included).
#[must_use = "the upload counts as running only while this lives"]
#[derive(Debug)]
pub struct InProgress(());

/// An upload session starts.
pub fn upload_in_progress() -> InProgress {
    gauge!(IN_PROGRESS).increment(1.0);
    InProgress(())
}

impl Drop for InProgress {
    fn drop(&mut self) {
        gauge!(IN_PROGRESS).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: Outcome, bytes: u64) -> RunRecord {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 500_000_000).expect("valid");
        RunRecord {
            job: "radar".into(),
            started: t,
            finished: t,
            outcome,
            asset: "a.zip".into(),
            item: None,
            file: None,
            bytes,
            attempts: 1,
            upload_id: None,
            error: None,
        }
    }

    #[test]
    fn the_trigger_state_exists_from_the_start_and_counts_recoveries() {
        let recorder = recorder().expect("valid buckets");
        let handle = recorder.handle();
        let render = || {
            handle.run_upkeep();
            handle.render()
        };
        let has = |text: &str, line: &str| text.lines().any(|l| l == line);
        metrics::with_local_recorder(&recorder, || {
            describe();
            trigger_state("in", true, false);
        });
        let text = render();
        assert!(
            has(&text, r#"stac_uploadd_trigger_up{job="in"} 1"#),
            "{text}"
        );
        assert!(
            has(
                &text,
                r#"stac_uploadd_trigger_recoveries_total{job="in"} 0"#
            ),
            "{text}"
        );
        metrics::with_local_recorder(&recorder, || trigger_state("in", false, false));
        assert!(has(&render(), r#"stac_uploadd_trigger_up{job="in"} 0"#));
        metrics::with_local_recorder(&recorder, || trigger_state("in", true, true));
        let text = render();
        assert!(
            has(&text, r#"stac_uploadd_trigger_up{job="in"} 1"#),
            "{text}"
        );
        assert!(
            has(
                &text,
                r#"stac_uploadd_trigger_recoveries_total{job="in"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn every_metric_renders_with_its_labels() {
        let recorder = recorder().expect("valid buckets");
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            register_job("radar");
            run_finished(&record(Outcome::Uploaded, 1000));
            run_finished(&record(Outcome::Failed, 0));
            upload_finished(
                "radar",
                UploadOutcome::Uploaded,
                Some(Duration::from_millis(1500)),
            );
            upload_finished("radar", UploadOutcome::Blocked, None);
            run_retry("radar", "retryable");
            part_retry("radar", "retryable");
            stale_upload_aborted("radar");
            schedule_lateness(Duration::from_millis(3));
            reload(false);
            let busy = upload_in_progress();
            drop(busy);
            // A reload registers the job again: its counts stay.
            register_job("radar");
        });
        handle.run_upkeep();
        let text = handle.render();
        for line in [
            r#"stac_uploadd_runs_total{job="radar",outcome="uploaded"} 1"#,
            r#"stac_uploadd_runs_total{job="radar",outcome="failed"} 1"#,
            r#"stac_uploadd_runs_total{job="radar",outcome="cancelled"} 0"#,
            r#"stac_uploadd_bytes_sent_total{job="radar"} 1000"#,
            r#"stac_uploadd_last_success_timestamp_seconds{job="radar"} 1800000000.5"#,
            r#"stac_uploadd_uploads_total{job="radar",outcome="blocked"} 1"#,
            r#"stac_uploadd_upload_duration_seconds_bucket{job="radar",le="2.5"} 1"#,
            r#"stac_uploadd_upload_duration_seconds_bucket{job="radar",le="1"} 0"#,
            r#"stac_uploadd_retries_total{job="radar",reason="retryable"} 1"#,
            r#"stac_uploadd_part_retries_total{job="radar",reason="retryable"} 1"#,
            r#"stac_uploadd_stale_uploads_aborted_total{job="radar"} 1"#,
            r#"stac_uploadd_schedule_lateness_seconds_bucket{le="0.005"} 1"#,
            r#"stac_uploadd_config_reloads_total{result="failed"} 1"#,
            "stac_uploadd_uploads_in_progress 0",
            "# HELP stac_uploadd_runs_total Runs by job and outcome",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
