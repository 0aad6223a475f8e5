//! Telling people and monitors how the jobs go: `[[notify]]` webhooks (a notice when a job
//! starts failing, a reminder at most every `repeat` while it goes on failing, one on
//! recovery, and on every success for those who ask) and per-job healthchecks-style pings
//! (`{url}/start`, `{url}`, `{url}/fail`). docs/notifications.md is the user's side.
//!
//! The notifier listens to the runs' broadcasts ([`Shared::starts`], [`Shared::runs`]); a run
//! never waits for it. What a run makes is queued per target ([`deliver::Worker`]) and sent
//! there; a full queue drops (and counts) rather than block.

mod deliver;
mod machine;
mod message;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use self::deliver::{Body, Request, Worker};
use self::machine::{Failures, Tracker};
use self::message::Ping;
use crate::config::{Config, NotifyTarget, SecretUrl};
use crate::observe::metrics;
use crate::state::{RunRecord, StateStore, Streak};
use crate::supervisor::{RunStart, Shared};

/// How long shutdown gives queued notices (and `run --once` its last ones) before dropping
/// them: a few tries' worth, not a receiver's whole timeout.
pub(crate) const FLUSH: Duration = Duration::from_secs(5);

/// What the notifier is told to do from the job file.
#[derive(Clone)]
pub(crate) struct NotifySettings {
    targets: Vec<NotifyTarget>,
    /// Jobs with a ping URL.
    pings: HashMap<String, SecretUrl>,
    client: reqwest::Client,
}

impl NotifySettings {
    /// The settings of `config`: its `[[notify]]` tables and its jobs' pings, sent through a
    /// client with the server's proxy and CA.
    pub(crate) fn of(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            targets: config.notify.clone(),
            pings: config
                .jobs
                .iter()
                .filter_map(|j| Some((j.name.clone(), j.ping_url.clone()?)))
                .collect(),
            client: deliver::http_client(&config.server)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.pings.is_empty()
    }
}

/// What the notifier's task is asked.
enum Control {
    /// The job file was reloaded.
    Reconfigure(NotifySettings),
    /// Send what is queued (bounded), then stop.
    Finish(Duration, oneshot::Sender<()>),
}

/// The running notifier: a task that reads the runs' broadcasts and hands what they make to
/// the targets' workers.
pub(crate) struct Notifier {
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl Notifier {
    /// Starts telling `settings`' targets about the runs of `shared`'s jobs. Called before any
    /// run starts: the failures in a row are read from the history first, so a daemon restarted
    /// while a job fails does not announce it again (the last failure counts as announced).
    pub(crate) async fn start<U: Send + Sync + 'static>(
        shared: &Arc<Shared<U>>,
        settings: NotifySettings,
    ) -> Self {
        let failures = seed(&shared.state).await;
        let mut core = Core {
            settings: None,
            workers: Vec::new(),
            pingers: HashMap::new(),
            failures,
            trackers: HashMap::new(),
            instance: crate::cluster::this_instance()
                .map_or_else(crate::cluster::host_name, str::to_owned),
        };
        core.apply(settings);
        let (control, control_rx) = mpsc::channel(4);
        let task = tokio::spawn(core.run(
            shared.starts.subscribe(),
            shared.runs.subscribe(),
            control_rx,
        ));
        Self { control, task }
    }

    /// From now on, the targets and pings of a reloaded job file. A target whose URL did not
    /// change keeps what it knows (a failing job is not announced again).
    pub(crate) async fn reconfigure(&self, settings: NotifySettings) {
        let _ = self.control.send(Control::Reconfigure(settings)).await;
    }

    /// Handles every run start and end broadcast so far, sends what is queued for at most
    /// `flush`, then stops (what is left is dropped and counted).
    pub(crate) async fn finish(self, flush: Duration) {
        let (done, wait) = oneshot::channel();
        if self
            .control
            .send(Control::Finish(flush, done))
            .await
            .is_ok()
        {
            let _ = wait.await;
        }
        let _ = self.task.await;
    }
}

/// Each job's failures in a row, from the run history.
async fn seed(state: &StateStore) -> HashMap<String, Failures> {
    match state.history().await {
        Ok(history) => history
            .iter()
            .map(|(job, runs)| (job.clone(), machine::seed(runs)))
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot read the run history: a job failing now is announced again at its next failure");
            HashMap::new()
        }
    }
}

/// A broadcast message, to be handled in the order things happened.
enum Happened {
    Start(RunStart),
    Run(Box<RunRecord>),
}

impl Happened {
    /// When it happened; a start sorts before an end at the same instant (a run that failed at
    /// once).
    fn key(&self) -> (DateTime<Utc>, u8) {
        match self {
            Happened::Start(s) => (s.started, 0),
            Happened::Run(r) => (r.finished, 1),
        }
    }
}

/// The notifier's state, owned by its task.
struct Core {
    settings: Option<NotifySettings>,
    /// One worker per `[[notify]]` table, by index.
    workers: Vec<Worker>,
    /// One worker per job with a ping URL: a monitor that hangs holds only its job's pings.
    pingers: HashMap<String, Worker>,
    failures: HashMap<String, Failures>,
    /// What each target (by index) knows of each job.
    trackers: HashMap<(usize, String), Tracker>,
    instance: String,
}

impl Core {
    async fn run(
        mut self,
        mut starts: broadcast::Receiver<RunStart>,
        mut runs: broadcast::Receiver<RunRecord>,
        mut control: mpsc::Receiver<Control>,
    ) {
        // A closed channel (its jobs gone) would answer at once forever: it is listened to no
        // more.
        let (mut starts_open, mut runs_open) = (true, true);
        loop {
            // Woken by whichever comes; then everything already waiting on both channels is
            // taken and handled in time order, so that a run's start ping precedes its end's.
            let mut batch = Vec::new();
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(Control::Reconfigure(s)) => { self.apply(s); continue; }
                    Some(Control::Finish(flush, done)) => {
                        self.handle(drain(&mut starts, &mut runs, Vec::new()));
                        self.finish(flush).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                s = starts.recv(), if starts_open => match s {
                    Ok(s) => batch.push(Happened::Start(s)),
                    Err(broadcast::error::RecvError::Lagged(n)) => lost(n),
                    Err(broadcast::error::RecvError::Closed) => starts_open = false,
                },
                r = runs.recv(), if runs_open => match r {
                    Ok(r) => batch.push(Happened::Run(Box::new(r))),
                    Err(broadcast::error::RecvError::Lagged(n)) => lost(n),
                    Err(broadcast::error::RecvError::Closed) => runs_open = false,
                },
            }
            self.handle(drain(&mut starts, &mut runs, batch));
        }
    }

    fn handle(&mut self, batch: Vec<Happened>) {
        for happened in batch {
            match happened {
                Happened::Start(s) => self.ping(&s.job, Ping::Start, Body::Empty),
                Happened::Run(r) => self.on_run(&r),
            }
        }
    }

    /// Takes the settings of a (re)loaded job file: workers for new or changed targets, the
    /// old ones left to send what they hold.
    fn apply(&mut self, new: NotifySettings) {
        let old = self.settings.take();
        let same_target = |i: usize| {
            old.as_ref()
                .and_then(|o| o.targets.get(i))
                .zip(new.targets.get(i))
                .is_some_and(|(a, b)| a.url == b.url && a.timeout == b.timeout)
        };
        let mut old_workers: Vec<Option<Worker>> = std::mem::take(&mut self.workers)
            .into_iter()
            .map(Some)
            .collect();
        let mut workers = Vec::with_capacity(new.targets.len());
        let mut retired = Vec::new();
        for (i, target) in new.targets.iter().enumerate() {
            let worker = match old_workers.get_mut(i).and_then(Option::take) {
                Some(w) if same_target(i) => w,
                other => {
                    retired.extend(other);
                    self.trackers.retain(|(t, _), _| *t != i);
                    Worker::spawn(
                        i.to_string(),
                        target.url.redacted(),
                        new.client.clone(),
                        target.timeout,
                    )
                }
            };
            workers.push(worker);
        }
        retired.extend(old_workers.into_iter().flatten());
        // Trackers of targets past the new end (those of replaced ones went above).
        let n = new.targets.len();
        self.trackers.retain(|(t, _), _| *t < n);
        self.workers = workers;
        let old_pings = old.as_ref().map(|o| &o.pings);
        let mut pingers = HashMap::new();
        for (job, url) in &new.pings {
            let kept = old_pings.and_then(|p| p.get(job)) == Some(url);
            let worker = match self.pingers.remove(job) {
                Some(w) if kept => w,
                other => {
                    retired.extend(other);
                    Worker::spawn(
                        "ping".to_owned(),
                        url.redacted(),
                        new.client.clone(),
                        crate::config::DEFAULT_NOTIFY_TIMEOUT,
                    )
                }
            };
            pingers.insert(job.clone(), worker);
        }
        retired.extend(self.pingers.drain().map(|(_, w)| w));
        self.pingers = pingers;
        if !retired.is_empty() {
            // Beside: what they hold goes out (bounded) while the new ones take over.
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + FLUSH;
                for w in retired {
                    w.finish(deadline).await;
                }
            });
        }
        if !new.is_empty() {
            info!(
                targets = new.targets.len(),
                pinged_jobs = new.pings.len(),
                "notifications on"
            );
        }
        self.settings = Some(new);
    }

    fn on_run(&mut self, run: &RunRecord) {
        let streak = run.outcome.streak();
        let before = self.failures.get(&run.job).copied().unwrap_or_default();
        let mut after = before;
        after.record(streak, run.finished);
        self.failures.insert(run.job.clone(), after);
        match streak {
            Streak::Success => self.ping(&run.job, Ping::Success, Body::Empty),
            Streak::Failure => {
                let text = run.error.as_deref().unwrap_or("failed");
                let body = message::bounded(text, message::MAX_ERROR);
                self.ping(&run.job, Ping::Fail, Body::Text(body));
            }
            // A shutdown is no failure of the job, and no success either: a monitor hears
            // nothing and waits for the next run.
            Streak::Neutral => {}
        }
        let Some(settings) = &self.settings else {
            return;
        };
        for (i, target) in settings.targets.iter().enumerate() {
            if !target.covers(&run.job) {
                continue;
            }
            let tracker = self
                .trackers
                .entry((i, run.job.clone()))
                .or_insert_with(|| Tracker::from_streak(before));
            if let Some(event) = tracker.on_run(streak, run.finished, target.on, target.repeat) {
                let body = message::notice(event, run, after.failures, &self.instance);
                if let Some(w) = self.workers.get(i) {
                    w.push(Request {
                        url: target.url.expose().clone(),
                        body: Body::Json(body),
                    });
                }
            }
        }
    }

    fn ping(&self, job: &str, ping: Ping, body: Body) {
        let Some(url) = self.settings.as_ref().and_then(|s| s.pings.get(job)) else {
            return;
        };
        if let Some(w) = self.pingers.get(job) {
            w.push(Request {
                url: message::ping_url(url.expose(), ping),
                body,
            });
        }
    }

    async fn finish(self, flush: Duration) {
        let deadline = tokio::time::Instant::now() + flush;
        let all = self.workers.into_iter().chain(self.pingers.into_values());
        futures_util::future::join_all(all.map(|w| w.finish(deadline))).await;
    }
}

/// `batch` and everything waiting on both channels now, in time order.
fn drain(
    starts: &mut broadcast::Receiver<RunStart>,
    runs: &mut broadcast::Receiver<RunRecord>,
    mut batch: Vec<Happened>,
) -> Vec<Happened> {
    loop {
        match starts.try_recv() {
            Ok(s) => batch.push(Happened::Start(s)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => lost(n),
            Err(_) => break,
        }
    }
    loop {
        match runs.try_recv() {
            Ok(r) => batch.push(Happened::Run(Box::new(r))),
            Err(broadcast::error::TryRecvError::Lagged(n)) => lost(n),
            Err(_) => break,
        }
    }
    batch.sort_by_key(Happened::key);
    batch
}

fn lost(n: u64) {
    warn!(
        events = n,
        "the notifier fell behind the runs: notices and pings of these runs are lost"
    );
    metrics::notify_lost(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyOn;

    fn settings(url: &str) -> NotifySettings {
        NotifySettings {
            targets: vec![NotifyTarget {
                url: SecretUrl::new(url.parse().unwrap()),
                on: NotifyOn::default(),
                jobs: None,
                repeat: Duration::from_secs(60),
                timeout: Duration::from_secs(1),
            }],
            pings: HashMap::new(),
            client: reqwest::Client::new(),
        }
    }

    #[tokio::test]
    async fn a_reload_keeps_what_an_unchanged_target_knows_and_forgets_a_changed_ones() {
        let mut core = Core {
            settings: None,
            workers: Vec::new(),
            pingers: HashMap::new(),
            failures: HashMap::new(),
            trackers: HashMap::new(),
            instance: "host1".into(),
        };
        let key = (0, "radar".to_owned());
        core.apply(settings("http://127.0.0.1:9/a"));
        core.trackers.insert(key.clone(), Tracker::default());
        core.apply(settings("http://127.0.0.1:9/a"));
        assert!(core.trackers.contains_key(&key));
        core.apply(settings("http://127.0.0.1:9/b"));
        assert!(!core.trackers.contains_key(&key));
        assert_eq!(core.workers.len(), 1);
        core.finish(Duration::ZERO).await;
    }
}
