//! `stac-uploadd prune --config F [--job NAME] [--dry-run]`: applies the jobs' `keep` rules now,
//! as a daemon's run does after its upload (see [`crate::retention`]), printing each item it
//! deletes, or with `--dry-run` would delete, and why.

use std::path::PathBuf;

use anyhow::anyhow;
use chrono::Utc;

use super::{OpsError, when};
use crate::observe::escape_controls;
use crate::retention::{self, Deleted, Retention};

/// What `prune` was asked.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub config: PathBuf,
    pub job: Option<String>,
    pub dry_run: bool,
}

/// Prunes each selected job with a rule; exit 1 when a listing or a deletion failed.
pub(crate) async fn run(req: Request) -> Result<(), OpsError> {
    let config = crate::config::load(&req.config).map_err(|e| OpsError::Usage(e.into()))?;
    let names: Vec<String> = req.job.iter().cloned().collect();
    let jobs = config
        .select_jobs(&names)
        .map_err(|e| OpsError::Usage(e.into()))?;
    if let (Some(name), [job]) = (&req.job, jobs.as_slice())
        && job.keep.is_none()
    {
        return Err(OpsError::Usage(anyhow!(
            "{}: job {name:?} has no keep rule: nothing to prune",
            req.config.display()
        )));
    }
    let client = crate::daemon::client(&config).map_err(OpsError::Usage)?;
    let verb = if req.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut failures = 0;
    for job in jobs {
        let Some(rule) = Retention::for_job(job) else {
            println!("job {}: no keep rule", job.name);
            continue;
        };
        let print = |d: &retention::Doomed, outcome: &Deleted| {
            let what = format!(
                "{}/{}: time {} (from its {}), {}",
                rule.collection,
                d.id,
                when(d.time),
                match d.from {
                    retention::TimeFrom::Id => "id",
                    retention::TimeFrom::Datetime => "datetime",
                    retention::TimeFrom::EndDatetime => "end_datetime",
                },
                d.why
            );
            match outcome {
                Deleted::Done { assets } => println!("  {verb} {what}; {assets} asset(s)"),
                Deleted::DryRun => println!("  {verb} {what}"),
                Deleted::Failed(e) => {
                    println!("  FAILED to delete {what}: {}", escape_controls(e));
                }
            }
        };
        println!(
            "job {}: {} in {} (time from {})",
            job.name,
            rule.keep,
            rule.collection,
            rule.time_source()
        );
        match retention::prune(
            &client,
            &job.name,
            &rule,
            Utc::now(),
            &[],
            req.dry_run,
            print,
        )
        .await
        {
            Ok(done) => {
                failures += done.failures();
                let plan = &done.plan;
                let mut line = format!(
                    "  {} of the job's {} item(s) {verb}",
                    plan.delete.len() - done.failures(),
                    plan.own
                );
                if plan.left > 0 {
                    line.push_str(&format!(
                        ", {} more left for the next run (at most {} per run)",
                        plan.left,
                        retention::MAX_DELETIONS_PER_RUN
                    ));
                }
                if !plan.undated.is_empty() {
                    line.push_str(&format!(
                        ", {} kept because their time is unknown",
                        plan.undated.len()
                    ));
                }
                println!("{line}");
            }
            Err(e) => {
                failures += 1;
                println!("  FAILED: {}", escape_controls(&e.to_string()));
            }
        }
    }
    match failures {
        0 => Ok(()),
        n => Err(OpsError::Failure(anyhow!(
            "{n} deletion(s) or listing(s) failed (see the lines above); the rest went as shown"
        ))),
    }
}
