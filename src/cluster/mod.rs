//! Several instances sharing the work through PostgreSQL (`[cluster]`, `docs/cluster.md`).
//!
//! Each instance holds a lease in the database (a row of `members` with a fencing token) and
//! renews it every heartbeat. Work is shared by claims: a schedule's fire or a watched file's
//! version is run by the instance whose claim row went in first. When an instance's lease lapses
//! (it died, paused, or lost the database), the others take what it held at their next
//! heartbeat: its uploads in flight are resumed or aborted, its unfinished fires run again once
//! (with `catch_up`). An instance that cannot renew in time stops itself first ([`Fence`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use crate::state::Fence;

use crate::config::ClusterConfig;
use crate::observe::metrics;
use crate::state::{InFlight, StateError, StateStore, Taken};

/// Claims older than this are forgotten (a watched file's version seen again after that is run
/// again, and its upload finds the asset unchanged).
pub const CLAIMS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Heartbeats between two clean-ups of old claims.
const PRUNE_EVERY: u64 = 900;

/// This host's name: the kernel's, else `$HOSTNAME`, else `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// This instance's name: `instance` from the job file, else the host name, the process id and
/// the start time's low bits, so that two processes never share one (a container's process
/// id is 1 after every restart).
pub fn instance_name(config: &ClusterConfig) -> String {
    if let Some(name) = &config.instance {
        return name.clone();
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{:04x}",
        host_name(),
        std::process::id(),
        (nanos >> 10) & 0xffff
    )
}

static THIS_INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process's instance (once: a process is one instance for its life).
pub fn set_this_instance(name: &str) {
    let _ = THIS_INSTANCE.set(name.to_owned());
}

/// This process's instance name, in a cluster.
pub fn this_instance() -> Option<&'static str> {
    THIS_INSTANCE.get().map(String::as_str)
}

/// A unit of work as claims name it.
pub fn fire_work(at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "fire {}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// The fire time a claim of [`fire_work`] names.
pub fn fire_of(work: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let at = work.strip_prefix("fire ")?;
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// What the heartbeat found to do, for the daemon's loop (it owns the jobs).
#[derive(Debug)]
pub enum Handover {
    /// Uploads in flight this instance now holds: its own after it joined (again), or taken
    /// from lapsed instances; and fires a lapsed instance claimed and never finished.
    Take(Taken),
}

/// This instance's membership: its lease, kept by [`Membership::run`].
#[derive(Debug)]
pub struct Membership {
    pub state: Arc<StateStore>,
    pub fence: Arc<Fence>,
    pub instance: String,
    pub host: String,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub expected: Option<u32>,
    /// Why the instance does no work now, for `/readyz`; `None` when it holds its lease.
    problem: Mutex<Option<String>>,
}

impl Membership {
    pub fn new(state: Arc<StateStore>, config: &ClusterConfig, instance: String) -> Self {
        Self {
            fence: state.fence(),
            state,
            instance,
            host: host_name(),
            lease: config.lease,
            heartbeat: config.heartbeat,
            expected: config.expected_members,
            problem: Mutex::new(Some("joining the cluster".to_owned())),
        }
    }

    /// Why this instance does no work now (not ready), if it does none.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_problem(&self, p: Option<String>) {
        *self
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = p;
    }

    /// Takes a lease; `Ok(false)` while another live process holds this instance's name.
    pub async fn join(&self) -> Result<bool, StateError> {
        let sent = Instant::now();
        match self
            .state
            .join(&self.instance, &self.host, self.lease)
            .await
        {
            Ok(token) => {
                self.fence.extend(sent, self.lease, self.heartbeat);
                self.set_problem(None);
                metrics::cluster_lease_held(true);
                info!(instance = %self.instance, token, lease_ms = self.lease.as_millis() as u64, "joined the cluster");
                Ok(true)
            }
            Err(e @ StateError::InstanceInUse { .. }) => {
                warn!(error = %e, "waiting for the name's lease to lapse");
                self.set_problem(Some(e.to_string()));
                Ok(false)
            }
            Err(e) => {
                self.set_problem(Some(format!("cannot join the cluster: {e}")));
                Err(e)
            }
        }
    }

    /// Joins, retrying with a growing wait (up to the heartbeat ... 30 s) until it succeeds or
    /// `stop`; `false` when stopped first. What failed is logged and shown on `/readyz`.
    pub async fn join_until(&self, stop: &CancellationToken) -> bool {
        let mut wait = self.heartbeat.min(Duration::from_secs(1));
        loop {
            match self.join().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    error!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reach the cluster's database");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return false,
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// Renews the lease every heartbeat, takes the work of lapsed instances, and joins again
    /// after a lost lease, until `stop`; what is taken goes to `handover`. Beside it, a watchdog
    /// stops this instance's work when the lease was not renewed in time ([`Fence`]).
    pub async fn run(
        self: Arc<Self>,
        handover: tokio::sync::mpsc::Sender<Handover>,
        stop: CancellationToken,
    ) {
        let watchdog = tokio::spawn(self.clone().watchdog(stop.clone()));
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut joined = true;
        let mut beats: u64 = 0;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = beat.tick() => {}
                () = stop.cancelled() => break,
            }
            beats += 1;
            if !joined {
                match self.join().await {
                    Ok(true) => {
                        joined = true;
                        // What is still ours after the gap is resumed or aborted, as at a start,
                        // with our unfinished claims and what lapsed members hold, in one
                        // handover (a fire whose upload is resumed is not run again).
                        match self.reclaim().await {
                            Ok(taken) if !taken.uploads.is_empty() || !taken.claims.is_empty() => {
                                let _ = handover.send(Handover::Take(taken)).await;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                warn!(error = %e, "cannot read this instance's work in flight")
                            }
                        }
                    }
                    Ok(false) => continue,
                    Err(e) => {
                        warn!(error = %e, "cannot join the cluster again yet");
                        continue;
                    }
                }
            }
            let sent = Instant::now();
            match self.state.renew(self.lease).await {
                Ok(true) => {
                    self.fence.extend(sent, self.lease, self.heartbeat);
                    if failing {
                        info!("the lease is renewed again");
                        failing = false;
                        self.set_problem(None);
                    }
                    metrics::cluster_lease_held(self.fence.may_start());
                }
                Ok(false) => {
                    error!(instance = %self.instance, "the lease is lost (it lapsed, and another instance may have taken this one's work): stopping all work, then joining again");
                    self.fence.shut();
                    metrics::cluster_lease_held(false);
                    self.set_problem(Some("the lease was lost; joining again".to_owned()));
                    joined = false;
                    continue;
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "cannot renew the lease");
                    }
                    failing = true;
                    metrics::cluster_lease_held(self.fence.may_start());
                    if !self.fence.may_start() {
                        self.set_problem(Some(format!("cannot renew the lease: {e}")));
                    }
                    continue;
                }
            }
            self.beat(&handover, beats).await;
        }
        watchdog.abort();
    }

    /// What this instance holds just after it joined: its own uploads in flight (of an earlier
    /// process or lease under this name), and, through a takeover, its own unfinished claims of
    /// an earlier lease and what lapsed members hold.
    pub async fn reclaim(&self) -> Result<Taken, StateError> {
        let mine = self.state.inflight().await?;
        let mut taken = self.state.take_over().await?;
        if !mine.is_empty() {
            taken.from.push(self.instance.clone());
        }
        taken.uploads.splice(0..0, mine);
        Ok(taken)
    }

    /// One heartbeat's work once the lease is renewed: the members counted, the work of lapsed
    /// instances taken, old claims pruned now and then.
    async fn beat(&self, handover: &tokio::sync::mpsc::Sender<Handover>, beats: u64) {
        match self.state.members().await {
            Ok(members) => {
                metrics::cluster_members(members.iter().filter(|m| m.live).count());
            }
            Err(e) => warn!(error = %e, "cannot read the members"),
        }
        match self.state.take_over().await {
            Ok(taken) if !taken.uploads.is_empty() || !taken.claims.is_empty() => {
                info!(
                    from = ?taken.from,
                    uploads = taken.uploads.len(),
                    fires = taken.claims.len(),
                    "took over the work of lapsed instances"
                );
                metrics::cluster_takeover();
                let _ = handover.send(Handover::Take(taken)).await;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot take over the work of lapsed instances"),
        }
        if beats % PRUNE_EVERY == 1
            && let Err(e) = self.state.prune_claims(CLAIMS_KEPT).await
        {
            warn!(error = %e, "cannot forget old claims");
        }
    }

    /// Stops this instance's work when its start deadline passes without a renewal: runs are
    /// cancelled, and their sessions abort their uploads while they still may.
    async fn watchdog(self: Arc<Self>, stop: CancellationToken) {
        let tick = (self.heartbeat / 4).max(Duration::from_millis(20));
        let mut stopped = false;
        loop {
            let wait = self
                .fence
                .until_start_deadline()
                .map_or(tick, |d| d.min(tick));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            let open = self.fence.may_start();
            if !open && !stopped {
                error!(
                    instance = %self.instance,
                    lease_ms = self.lease.as_millis() as u64,
                    "the lease was not renewed in time: this instance starts no work and stops its uploads before the lease can lapse"
                );
                self.fence.cancel_runs();
                metrics::cluster_fenced();
                metrics::cluster_lease_held(false);
                self.set_problem(Some(
                    "the lease could not be renewed in time: no work is started".to_owned(),
                ));
            }
            stopped = !open;
        }
    }

    /// Gives the lease up (shutdown): what this instance still holds is taken at once by the
    /// others' next heartbeat.
    pub async fn leave(&self) {
        self.fence.shut();
        metrics::cluster_lease_held(false);
        match self.state.leave().await {
            Ok(()) => {
                info!(instance = %self.instance, "left the cluster: its remaining work is handed over")
            }
            Err(e) => {
                warn!(error = %e, "cannot give the lease up: the others take its work when it lapses")
            }
        }
    }
}

/// Whether the taken uploads include one of `job` (its claimed fire is then finished by the
/// resume, not run again).
pub fn has_upload_of(uploads: &[InFlight], job: &str) -> bool {
    uploads.iter().any(|u| u.job == job)
}
