//! This instance's own view of its lease: when it may start work, when it may still send.
//!
//! The database judges leases by its clock; an instance cannot ask it before each chunk of a
//! part. So it keeps two local deadlines on the monotonic clock, counted from the moment
//! *before* each successful renewal was sent (the database extended the lease at a later moment,
//! so both deadlines fall before the lease's expiry whatever the latency):
//!
//! - **start** (`sent + lease / 2`): past it, the instance starts no work and cancels its runs,
//!   whose sessions abort their uploads while it still may (a cut from the database, seen in
//!   time);
//! - **send** (`sent + lease - heartbeat`): past it, nothing more goes to the server for an
//!   upload of this instance: no part, no chunk of a part under way, no complete, no abort
//!   (a pause longer than the lease, SIGSTOP or a frozen VM: another instance may hold the work
//!   by now).
//!
//! The monotonic clock goes on while a process is stopped, so a process woken from a pause
//! finds its deadlines past before it sends a byte. Without a cluster, the fence is always open.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The local deadlines of this instance's lease.
#[derive(Debug)]
pub struct Fence {
    /// What the deadlines count from.
    origin: Instant,
    /// Milliseconds since `origin` before which work may start; `u64::MAX`: always.
    start_until: AtomicU64,
    /// Milliseconds since `origin` before which requests may be sent; `u64::MAX`: always.
    send_until: AtomicU64,
    clustered: bool,
    /// Cancelled (and replaced) when the start deadline passes: every run under way is
    /// linked to it.
    epoch: Mutex<CancellationToken>,
}

impl Fence {
    /// The fence of a daemon without a cluster: always open.
    pub fn open() -> Self {
        Self {
            origin: Instant::now(),
            start_until: AtomicU64::new(u64::MAX),
            send_until: AtomicU64::new(u64::MAX),
            clustered: false,
            epoch: Mutex::new(CancellationToken::new()),
        }
    }

    /// The fence of a cluster member: closed until a lease is taken ([`Fence::extend`]).
    pub fn closed() -> Self {
        Self {
            clustered: true,
            start_until: AtomicU64::new(0),
            send_until: AtomicU64::new(0),
            ..Self::open()
        }
    }

    /// Whether this daemon shares its work (claims are needed).
    pub fn clustered(&self) -> bool {
        self.clustered
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Whether work may start now.
    pub fn may_start(&self) -> bool {
        self.now_ms() < self.start_until.load(Ordering::Acquire)
    }

    /// Whether a request for one of this instance's uploads may be sent now.
    pub fn may_send(&self) -> bool {
        self.now_ms() < self.send_until.load(Ordering::Acquire)
    }

    /// A renewal sent at `sent` succeeded: the deadlines move on.
    pub fn extend(&self, sent: Instant, lease: Duration, heartbeat: Duration) {
        let base = sent.saturating_duration_since(self.origin).as_millis() as u64;
        let start = base + (lease / 2).as_millis() as u64;
        let send = base + lease.saturating_sub(heartbeat).as_millis() as u64;
        self.start_until.fetch_max(start, Ordering::AcqRel);
        self.send_until.fetch_max(send, Ordering::AcqRel);
    }

    /// The lease is known lost: both deadlines are now.
    pub fn shut(&self) {
        self.start_until.store(0, Ordering::Release);
        self.send_until.store(0, Ordering::Release);
        self.cancel_runs();
    }

    /// How long until the start deadline; `None` when it is past (or never comes).
    pub fn until_start_deadline(&self) -> Option<Duration> {
        let until = self.start_until.load(Ordering::Acquire);
        if until == u64::MAX {
            return None;
        }
        until.checked_sub(self.now_ms()).map(Duration::from_millis)
    }

    /// A cancellation for a run starting now: a child of `parent` (the daemon's own:
    /// shutdown), also cancelled when the start deadline passes or the lease is lost. The
    /// caller cancels it when the run ends (a drop guard), which ends its link to the fence.
    pub fn run_token(&self, parent: &CancellationToken) -> CancellationToken {
        let token = parent.child_token();
        if self.clustered {
            let epoch = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let run = token.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = epoch.cancelled() => run.cancel(),
                    () = run.cancelled() => {}
                }
            });
        }
        token
    }

    /// Cancels every run under way (their sessions abort their uploads while they still may);
    /// runs started later are cancelled by a later call only.
    pub fn cancel_runs(&self) {
        let mut epoch = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        epoch.cancel();
        *epoch = CancellationToken::new();
    }
}
