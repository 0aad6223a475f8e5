//! An item run: the files of one run to the assets of one item (then of its alias), as one run
//! with one record.
//!
//! Every file is opened, snapshotted and digested, and every id checked, before anything is
//! created: a missing, unreadable or refused member leaves the server as it was. Then the item
//! is created if missing (one creator per item in this process, [`Shared::item_lock`]), and
//! each asset goes through the one-asset machinery ([`Job::attempt`]: session permit, stale
//! blockers, in-flight records) in parallel. A retry sends only what is not stored yet.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use globset::GlobBuilder;
use serde_json::Value;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::from_file::{Inspections, Wanted};
use super::job::{Job, NextAttempt, Uploader, Work, cut_short, error_outcome};
use crate::config::{
    Captures, ItemGeometry, ItemMetadata, Names, SidecarError, item_body_with_sidecar,
};
use crate::observe::metrics;
use crate::state::{AssetRun, Outcome, PublicCheck, RunRecord};
use crate::trigger::TriggerSpec;
use stac_client::AssetTarget;
use stac_client::retry;
use stac_client::rules;
use stac_upload::{
    CompressMode, DigestCache, DigestKey, FileDigest, FileSnapshot, NewObjects, PartPlan,
    UploadError, UploadReport,
};

/// What an item run keeps across its attempts to make its bodies: the file name and time its
/// templates are rendered with, the files read, and whether the item bodies are made.
#[derive(Debug)]
struct RunFiles {
    name: String,
    /// The name's captures (a job with a `name_pattern`).
    captures: Option<Captures>,
    /// Why the name refuses the run (`name_pattern`), before any attempt.
    refused: Option<String>,
    time: DateTime<Tz>,
    seen: Inspections,
    bodies_ready: bool,
}

/// Matches of an asset's glob listed in an error, at most.
const MATCHES_SHOWN: usize = 5;

/// One asset of the run: its id, where its file is (a path or a glob until resolved) and the
/// asset to create when it is missing.
#[derive(Debug)]
struct Member {
    id: String,
    /// Its index in `[[job.assets]]`; `None`: the job's one asset.
    index: Option<usize>,
    file: PathBuf,
    /// Whether `file` is a glob (in its name), resolved by each attempt.
    glob: bool,
    /// The file found for this run.
    path: Option<PathBuf>,
    body: Option<Value>,
}

/// One item the run fills: the run's item, then its alias.
#[derive(Debug)]
struct Phase {
    item: String,
    body: Option<Value>,
    /// This run created the item (in any attempt).
    created: bool,
    /// The item is known to exist (created or found): a retry does not ask again.
    exists: bool,
    /// Each member's result, by index: `None` until tried.
    results: Vec<Option<AssetResult>>,
}

#[derive(Debug)]
struct AssetResult {
    outcome: Outcome,
    report: Option<UploadReport>,
    error: Option<String>,
}

impl AssetResult {
    fn stored(&self) -> bool {
        self.report.is_some()
    }
}

impl Phase {
    fn done(&self) -> bool {
        self.results
            .iter()
            .all(|r| r.as_ref().is_some_and(AssetResult::stored))
    }
}

/// Why an attempt failed.
#[derive(Debug)]
enum Failure {
    /// Before anything was created: a file, a glob or an id. Not retried.
    Refused(String),
    /// The item, or an asset's session.
    Upload(UploadError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(why) => f.write_str(why),
            Failure::Upload(e) => e.fmt(f),
        }
    }
}

/// The job's digest cache, if any, with the digests of this run in front: the pre-pass digests
/// each file once and its session finds it here, whether or not the job keeps a cache.
#[derive(Debug, Default)]
struct RunDigests {
    job: Option<Arc<dyn DigestCache>>,
    run: Mutex<HashMap<DigestKey, FileDigest>>,
}

impl DigestCache for RunDigests {
    fn get<'a>(&'a self, key: &'a DigestKey) -> stac_upload::DigestFuture<'a> {
        let run = self
            .run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned();
        Box::pin(async move {
            match (run, &self.job) {
                (Some(d), _) => Some(d),
                (None, Some(job)) => job.get(key).await,
                (None, None) => None,
            }
        })
    }

    fn put(&self, key: DigestKey, digest: &FileDigest) {
        if let Some(c) = &self.job {
            c.put(key.clone(), digest);
        }
        self.run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, digest.clone());
    }
}

impl<U: Uploader> Job<U> {
    /// Whether the job publishes item runs: several assets, or an alias.
    pub(super) fn is_item_job(&self) -> bool {
        !self.spec.assets.is_empty() || self.spec.alias.is_some()
    }

    /// One item run: attempts under the policy, and one record with every asset.
    pub(super) async fn run_item(&self, work: Work) -> RunRecord {
        let started = self.shared.clock.now();
        let (item, name, captures, time) = self.item_of(&work);
        let _ = self.shared.starts.send(super::job::RunStart {
            job: self.spec.name.clone(),
            started,
            target: format!("{}/{item}", self.spec.collection),
        });
        let span = info_span!("run", job = %self.spec.name, collection = %self.spec.collection, item = %item);
        async {
            let members = self.members(&work, &name, captures.as_ref(), &time);
            // The name first, before anything is read or created: a refusal ends the run. The
            // bodies are made by the first attempt, once the files are found and read.
            let refused = self
                .run_file(&work)
                .and_then(|path| self.refuse_name(&path, &name))
                .map(|why| why.to_string());
            let mut phases = vec![Phase {
                item: item.clone(),
                body: None,
                created: false,
                exists: false,
                results: Vec::new(),
            }];
            if let Some(alias) = &self.spec.alias {
                phases.push(Phase {
                    item: alias.clone(),
                    body: None,
                    created: false,
                    exists: false,
                    results: Vec::new(),
                });
            }
            for p in &mut phases {
                p.results = members.iter().map(|_| None).collect();
            }
            let run = RunFiles {
                name,
                captures,
                refused,
                time,
                seen: Inspections::new(),
                bodies_ready: false,
            };
            self.item_attempts(members, phases, started, run).await
        }
        .instrument(span)
        .await
    }

    /// The bodies of the run's item and of its alias when they are to be created: from `meta`
    /// (`[job.item_metadata]`, its footprint read), with the `item_json` sidecar merged when the
    /// job has one (read off the async threads: it is a file).
    async fn item_bodies(
        &self,
        meta: Option<ItemMetadata>,
        item: &str,
        names: Names<'_>,
        time: &DateTime<Tz>,
    ) -> Result<(Option<Value>, Option<Value>), SidecarError> {
        let Some(meta) = meta else {
            return Ok((None, None));
        };
        let sidecar = meta.item_json.as_ref().map(|j| j.path(names, time));
        let (item, alias, name, captures, time) = (
            item.to_owned(),
            self.spec.alias.clone(),
            names.file_name().to_owned(),
            names.captures().cloned(),
            *time,
        );
        let path = sidecar.clone().unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let names = Names::new(&name, captures.as_ref());
            let body =
                |id: &str| item_body_with_sidecar(&meta, id, names, &time, sidecar.as_deref());
            let alias = alias.as_deref().map(body).transpose()?;
            Ok((Some(body(&item)?), alias))
        })
        .await
        .map_err(|e| SidecarError::Read {
            path,
            source: std::io::Error::other(format!("the read was cut short: {e}")),
        })?
    }

    /// Every target a unit of work writes, with its file (a glob as written until a run
    /// resolves it): the item's assets, then the alias's; a one-file job's one target.
    pub fn targets(&self, work: &Work) -> Vec<(AssetTarget, PathBuf)> {
        if !self.is_item_job() && !matches!(work, Work::Bundle { .. }) {
            let (target, path, _) = self.prepare(work);
            return vec![(target, path)];
        }
        let (item, name, captures, time) = self.item_of(work);
        let members = self.members(work, &name, captures.as_ref(), &time);
        std::iter::once(item)
            .chain(self.spec.alias.clone())
            .flat_map(|item| {
                members.iter().map(move |m| {
                    (
                        AssetTarget {
                            collection: self.spec.collection.clone(),
                            item: Some(item.clone()),
                            asset: m.id.clone(),
                        },
                        m.file.clone(),
                    )
                })
            })
            .collect()
    }

    /// The file whose name the run's ids are rendered from and its `name_pattern` is matched
    /// against: the watched file, a bundle's first present member, a one-file schedule's file
    /// (`None` for a schedule of [[job.assets]], which names no one file).
    pub(super) fn run_file(&self, work: &Work) -> Option<PathBuf> {
        match work {
            Work::Scheduled(_) => match &self.spec.trigger {
                TriggerSpec::Cron { file, .. } | TriggerSpec::Every { file, .. }
                    if self.spec.assets.is_empty() =>
                {
                    Some(file.clone())
                }
                _ => None,
            },
            Work::File(p) => Some(p.clone()),
            // In the order of [[job.assets]].
            Work::Bundle { files, .. } => files.iter().flatten().next().cloned(),
        }
    }

    /// The run's item id, and the file name, its captures (when the job has a `name_pattern`)
    /// and time its templates are rendered with.
    pub(super) fn item_of(&self, work: &Work) -> (String, String, Option<Captures>, DateTime<Tz>) {
        let at = match work {
            Work::Scheduled(at) => *at,
            Work::File(_) | Work::Bundle { .. } => self.shared.clock.now(),
        };
        // A one-file schedule's file names its runs only with a name_pattern: without one, its
        // templates have no file placeholders (refused at load), as before.
        let name = match work {
            Work::Scheduled(_) if self.spec.name_pattern.is_none() => String::new(),
            _ => self
                .run_file(work)
                .map(|p| file_name(&p))
                .unwrap_or_default(),
        };
        let captures = super::names::captures(&self.spec, &name);
        let time = at.with_timezone(&self.spec.timezone);
        let item = self
            .spec
            .item
            .as_ref()
            .map(|i| i.render(Names::new(&name, captures.as_ref()), &time))
            .unwrap_or_default();
        (item, name, captures, time)
    }

    /// The assets of this unit of work, ids and bodies rendered; each with its own file's name
    /// and the run's captures.
    fn members(
        &self,
        work: &Work,
        name: &str,
        captures: Option<&Captures>,
        time: &DateTime<Tz>,
    ) -> Vec<Member> {
        let one = |file: PathBuf, glob: bool, name: &str| {
            let name = Names::new(name, captures);
            let id = self.spec.asset.render(name, time);
            let body = self
                .spec
                .asset_metadata
                .as_ref()
                .map(|m| m.asset_body(&id, name, time));
            Member {
                id,
                index: None,
                path: (!glob).then(|| file.clone()),
                file,
                glob,
                body,
            }
        };
        let of_spec = |i: usize, file: PathBuf, glob: bool, name: &str| {
            let name = Names::new(name, captures);
            let a = &self.spec.assets[i];
            let id = a.id.render(name, time);
            let body = a.metadata.as_ref().map(|m| m.asset_body(&id, name, time));
            Member {
                id,
                index: Some(i),
                path: (!glob).then(|| file.clone()),
                file,
                glob,
                body,
            }
        };
        match work {
            Work::Scheduled(_) if self.spec.assets.is_empty() => match &self.spec.trigger {
                TriggerSpec::Cron { file, .. } | TriggerSpec::Every { file, .. } => {
                    vec![one(file.clone(), false, name)]
                }
                TriggerSpec::Watch(_) => Vec::new(),
            },
            Work::Scheduled(_) => (0..self.spec.assets.len())
                .map(|i| {
                    let file = self.spec.assets[i].file.clone();
                    let glob = is_glob(&file);
                    of_spec(i, file, glob, name)
                })
                .collect(),
            Work::File(p) if self.spec.assets.is_empty() => vec![one(p.clone(), false, name)],
            // A single file of a bundle job: the asset whose pattern it matches, if any.
            Work::File(p) => Vec::from_iter(
                self.spec
                    .assets
                    .iter()
                    .position(|a| bundle_match(&a.file, p))
                    .map(|i| of_spec(i, p.clone(), false, &file_name(p))),
            ),
            Work::Bundle { files, .. } => files
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < self.spec.assets.len())
                .filter_map(|(i, f)| Some(of_spec(i, f.clone()?, false, &file_name(f.as_ref()?))))
                .collect(),
        }
    }

    /// The attempts of an item run under the job's policy, and its record.
    async fn item_attempts(
        &self,
        mut members: Vec<Member>,
        mut phases: Vec<Phase>,
        started: DateTime<Utc>,
        mut run: RunFiles,
    ) -> RunRecord {
        let policy = super::job::effective_policy(&self.spec, started);
        let p = &self.spec.policy;
        let mut waits = retry::waits(p.retry_min_delay, p.retry_max_delay, p.retries);
        let digests = Arc::new(RunDigests {
            job: self.spec.upload.digest_cache.clone(),
            run: Mutex::default(),
        });
        let mut attempts = 0u32;
        let mut stopped = false;
        let result = loop {
            attempts += 1;
            if let Some(why) = &run.refused {
                break Err(Failure::Refused(why.clone()));
            }
            let mut result = self
                .item_attempt(&mut members, &mut phases, &mut run, &digests, attempts)
                .await;
            let Err(Failure::Upload(e)) = &mut result else {
                break result;
            };
            match self
                .next_attempt(e, policy, &mut waits, started, attempts)
                .await
            {
                NextAttempt::Retry => {}
                NextAttempt::GiveUp => break result,
                NextAttempt::Stopped => {
                    stopped = true;
                    break result;
                }
            }
        };
        stopped |= matches!(&result, Err(Failure::Upload(e)) if cut_short(e) && self.stopping());
        // An item this run created and could fill with none of its assets goes again, with the
        // assets it created for them.
        let own: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        for phase in &phases {
            if phase.created && !phase.results.iter().flatten().any(AssetResult::stored) {
                self.shared
                    .uploader()
                    .remove_empty_item(&self.spec.collection, &phase.item, &own)
                    .await;
            }
        }
        // The assets sent, once the run stored them all: an unchanged one has nothing new to
        // serve, and a failed run is failed already.
        let public = match &result {
            Ok(()) => self.verify_item(&members, &phases).await,
            Err(_) => Vec::new(),
        };
        self.item_record(
            &members, &phases, result, stopped, started, attempts, public,
        )
        .await
    }

    /// The public check of each asset the run uploaded, side by side.
    async fn verify_item(&self, members: &[Member], phases: &[Phase]) -> Vec<PublicCheck> {
        let checks = phases.iter().flat_map(|phase| {
            members
                .iter()
                .zip(&phase.results)
                .filter_map(move |(m, r)| {
                    let report = r.as_ref()?.report.as_ref()?;
                    let target = AssetTarget {
                        collection: self.spec.collection.clone(),
                        item: Some(phase.item.clone()),
                        asset: m.id.clone(),
                    };
                    Some(async move { self.verify_upload(&target, report).await })
                })
        });
        futures_util::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One attempt: every file and id checked, then each phase's item created if missing and
    /// its assets not stored yet sent in parallel. A phase starts only when the one before it
    /// holds every file.
    async fn item_attempt(
        &self,
        members: &mut [Member],
        phases: &mut [Phase],
        run: &mut RunFiles,
        digests: &Arc<RunDigests>,
        attempt: u32,
    ) -> Result<(), Failure> {
        if members.is_empty() {
            return Err(Failure::Refused(
                "no file of the run matches one of the job's assets".to_owned(),
            ));
        }
        self.check_ids(members, phases).map_err(Failure::Refused)?;
        for m in members.iter_mut() {
            if m.glob {
                m.path = Some(resolve_glob(&m.file).await.map_err(Failure::Refused)?);
            }
        }
        self.prepare_bodies(members, phases, run)
            .await
            .map_err(Failure::Refused)?;
        let opts = stac_upload::UploadOptions {
            digest_cache: Some(digests.clone() as Arc<dyn DigestCache>),
            ..self.spec.upload.clone()
        };
        for m in members.iter() {
            let path = m.path.as_deref().expect("resolved above");
            prepare_file(path, &opts).await.map_err(Failure::Upload)?;
        }
        for phase in phases.iter_mut() {
            if phase.done() {
                continue;
            }
            if let Some(body) = &phase.body
                && !phase.exists
            {
                let created = self
                    .create_item(&phase.item, body)
                    .await
                    .map_err(Failure::Upload)?;
                phase.created |= created;
                phase.exists = true;
            }
            let pending: Vec<usize> = (0..members.len())
                .filter(|&i| !phase.results[i].as_ref().is_some_and(AssetResult::stored))
                .collect();
            let sessions = pending.iter().map(|&i| {
                let m = &members[i];
                let target = AssetTarget {
                    collection: self.spec.collection.clone(),
                    item: Some(phase.item.clone()),
                    asset: m.id.clone(),
                };
                let objects = NewObjects {
                    item: None,
                    asset: m.body.clone(),
                };
                let path = m.path.clone().expect("resolved above");
                let span = info_span!("asset", item = %phase.item, asset = %m.id);
                let opts = opts.clone();
                async move {
                    let r = self
                        .attempt_opts(&target, &path, &objects, attempt, &opts)
                        .await;
                    (i, r)
                }
                .instrument(span)
            });
            let results = futures_util::future::join_all(sessions).await;
            let mut failed: Option<UploadError> = None;
            let shutdown = self.stopping();
            for (i, r) in results {
                let result = match r {
                    Ok(report) => AssetResult {
                        outcome: if report.unchanged {
                            Outcome::Unchanged
                        } else {
                            Outcome::Uploaded
                        },
                        report: Some(report),
                        error: None,
                    },
                    Err(e) => {
                        warn!(item = %phase.item, asset = %members[i].id, error = %e, "asset not stored");
                        let outcome = error_outcome(&e, shutdown && cut_short(&e));
                        let entry = AssetResult {
                            outcome,
                            report: None,
                            error: Some(e.to_string()),
                        };
                        // The run reports an error that ends it before one a retry may cure.
                        let worse = failed.as_ref().is_none_or(|f| {
                            f.run_action().is_retry() && !e.run_action().is_retry()
                        });
                        if worse {
                            failed = Some(e);
                        }
                        entry
                    }
                };
                phase.results[i] = Some(result);
            }
            if let Some(e) = failed {
                return Err(Failure::Upload(e));
            }
        }
        Ok(())
    }

    /// Before anything is created: each file checked against its media type and the values
    /// written `"from_file"` read ([`from_file`](super::from_file)) into the asset bodies; then,
    /// once per run, the item bodies with the footprint and the sidecar.
    async fn prepare_bodies(
        &self,
        members: &mut [Member],
        phases: &mut [Phase],
        run: &mut RunFiles,
    ) -> Result<(), String> {
        let geometry_from = match self.spec.item_metadata.as_ref().map(|m| &m.geometry) {
            Some(ItemGeometry::FromFile(g)) => Some(g),
            _ => None,
        };
        if let Some(g) = geometry_from
            && !members.iter().any(|m| m.index == g.asset)
        {
            let why = format!(
                "geometry = \"from_file\" reads the file of asset {:?}, and this run has none: expected that member in every bundle (make it required)",
                g.id
            );
            warn!(reason = "metadata", error = %why, "run refused");
            metrics::file_refused(&self.spec.name, metrics::FileRefusal::Metadata);
            return Err(why);
        }
        let wanted: Vec<Wanted> = members
            .iter()
            .map(|m| {
                let meta = match m.index {
                    Some(i) => self.spec.assets.get(i).and_then(|a| a.metadata.as_ref()),
                    None => self.spec.asset_metadata.as_ref(),
                };
                Wanted {
                    asset: m.id.clone(),
                    path: m.path.clone().unwrap_or_else(|| m.file.clone()),
                    media_type: meta.map(|x| x.media_type.clone()),
                    fields: meta.map(|x| x.from_file).unwrap_or_default(),
                    geometry: geometry_from.is_some_and(|g| g.asset == m.index),
                }
            })
            .collect();
        let derived = self
            .read_files(&wanted, &mut run.seen)
            .await
            .map_err(|r| r.to_string())?;
        for (i, m) in members.iter_mut().enumerate() {
            if let Some(body) = &mut m.body {
                derived.fill_asset(i, body);
            }
        }
        if run.bodies_ready {
            return Ok(());
        }
        let meta = self
            .spec
            .item_metadata
            .as_ref()
            .map(|m| match &derived.geometry {
                Some((geometry, bbox)) => m.with_geometry(geometry.clone(), *bbox),
                None => m.clone(),
            });
        let item = phases.first().map(|p| p.item.clone()).unwrap_or_default();
        let (item_body, alias_body) = self
            .item_bodies(
                meta,
                &item,
                Names::new(&run.name, run.captures.as_ref()),
                &run.time,
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Some(p) = phases.get_mut(0) {
            p.body = item_body;
        }
        if let Some(p) = phases.get_mut(1) {
            p.body = alias_body;
        }
        run.bodies_ready = true;
        Ok(())
    }

    /// Creates the item if it is missing, as the only creator of it in this process.
    async fn create_item(&self, item: &str, body: &Value) -> Result<bool, UploadError> {
        let lock = self.shared.item_lock(&self.spec.collection, item);
        let _held = tokio::select! {
            g = lock.lock() => g,
            () = self.abort_runs.cancelled() => return Err(UploadError::Cancelled),
        };
        let created = self
            .shared
            .uploader()
            .create_item(&self.spec.collection, item, body)
            .await?;
        if created {
            info!(collection = %self.spec.collection, item = %item, "item created");
        } else {
            debug!(collection = %self.spec.collection, item = %item, "item exists: used as it is");
        }
        Ok(created)
    }

    /// Every id of the run against the server's rules, and the asset ids unique.
    fn check_ids(&self, members: &[Member], phases: &[Phase]) -> Result<(), String> {
        for phase in phases {
            rules::check_id(&phase.item).map_err(|e| format!("item {:?}: {e}", phase.item))?;
        }
        let mut seen: HashMap<&str, &Path> = HashMap::new();
        for m in members {
            rules::check_id(&m.id).map_err(|e| format!("asset {:?}: {e}", m.id))?;
            if let Some(t) = m.body.as_ref().and_then(|b| b["type"].as_str()) {
                rules::asset_fits_type(&m.id, t).map_err(|e| format!("asset {:?}: {e}", m.id))?;
            }
            for phase in phases {
                let len = self.spec.collection.chars().count()
                    + phase.item.chars().count()
                    + m.id.chars().count()
                    + 2;
                if len > rules::MAX_PATH_LEN {
                    return Err(format!(
                        "the asset path {}/{}/{} is {len} characters long: the server stores at most {}",
                        self.spec.collection,
                        phase.item,
                        m.id,
                        rules::MAX_PATH_LEN
                    ));
                }
            }
            if let Some(other) = seen.insert(&m.id, &m.file) {
                return Err(format!(
                    "asset id {:?} is rendered for both {} and {}: expected ids unique within the run",
                    m.id,
                    other.display(),
                    m.file.display()
                ));
            }
        }
        Ok(())
    }

    /// The run's record: one run, each asset with its outcome and the public checks; logged once.
    // The run's facts, each from a different stage of it: a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    async fn item_record(
        &self,
        members: &[Member],
        phases: &[Phase],
        result: Result<(), Failure>,
        stopped: bool,
        started: DateTime<Utc>,
        attempts: u32,
        public: Vec<PublicCheck>,
    ) -> RunRecord {
        let finished = self.shared.clock.now();
        let duration_ms = (finished - started).num_milliseconds();
        let mut assets = Vec::new();
        for (n, phase) in phases.iter().enumerate() {
            // The alias shows only once it was tried.
            if n > 0 && phase.results.iter().all(Option::is_none) {
                continue;
            }
            for (m, r) in members.iter().zip(&phase.results) {
                let file = m.path.clone().or_else(|| Some(m.file.clone()));
                assets.push(match r {
                    Some(r) => AssetRun {
                        asset: m.id.clone(),
                        item: Some(phase.item.clone()),
                        file,
                        bytes: r.report.as_ref().map_or(0, |r| r.bytes),
                        outcome: r.outcome,
                        upload_id: r.report.as_ref().and_then(|r| r.upload_id.clone()),
                        error: r.error.clone(),
                    },
                    None => AssetRun {
                        asset: m.id.clone(),
                        item: Some(phase.item.clone()),
                        file,
                        bytes: 0,
                        outcome: if stopped {
                            Outcome::Cancelled
                        } else {
                            Outcome::Failed
                        },
                        upload_id: None,
                        error: Some("not sent: the run stopped before it".to_owned()),
                    },
                });
            }
        }
        let first = phases.first();
        let bytes = first.map_or(0, |p| {
            p.results
                .iter()
                .flatten()
                .filter_map(|r| r.report.as_ref())
                .map(|r| r.bytes)
                .sum()
        });
        let refusal = self.public_refusal(&public);
        let error_class = match &result {
            Ok(()) if refusal.is_some() => Some(super::public::ERROR_CLASS.to_owned()),
            Ok(()) => None,
            Err(Failure::Refused(_)) => Some("local_input".to_owned()),
            Err(Failure::Upload(e)) => Some(super::job::error_class(e, stopped).to_owned()),
        };
        let (outcome, error) = match &result {
            Ok(()) => {
                let sent = phases
                    .iter()
                    .flat_map(|p| p.results.iter().flatten())
                    .any(|r| r.outcome == Outcome::Uploaded);
                let outcome = if sent {
                    Outcome::Uploaded
                } else {
                    Outcome::Unchanged
                };
                info!(
                    assets = members.len(),
                    bytes,
                    attempts,
                    duration_ms,
                    outcome = outcome.as_str(),
                    alias = self.spec.alias.as_deref().unwrap_or(""),
                    "item published"
                );
                match refusal {
                    Some(error) => {
                        error!(
                            attempts,
                            outcome = Outcome::Failed.as_str(),
                            duration_ms,
                            error,
                            "run given up"
                        );
                        (Outcome::Failed, Some(error))
                    }
                    None => (outcome, None),
                }
            }
            Err(f) => {
                let outcome = match f {
                    Failure::Refused(_) => Outcome::Failed,
                    Failure::Upload(e) => error_outcome(e, stopped),
                };
                let error = match f {
                    Failure::Upload(e) if cut_short(e) && !stopped => format!(
                        "the run deadline of {} was reached: {e}",
                        humantime::format_duration(self.spec.policy.run_timeout)
                    ),
                    f => f.to_string(),
                };
                let stored = assets
                    .iter()
                    .filter(|a| matches!(a.outcome, Outcome::Uploaded | Outcome::Unchanged))
                    .count();
                if outcome == Outcome::Cancelled {
                    warn!(
                        attempts,
                        duration_ms, stored, error, "run cancelled by shutdown"
                    );
                } else {
                    error!(
                        attempts,
                        outcome = outcome.as_str(),
                        stored,
                        assets = assets.len(),
                        duration_ms,
                        error,
                        "run given up"
                    );
                }
                (outcome, Some(error))
            }
        };
        let record = RunRecord {
            instance: None,
            error_class,
            public,
            job: self.spec.name.clone(),
            started,
            finished,
            outcome,
            asset: members.first().map(|m| m.id.clone()).unwrap_or_default(),
            item: first.map(|p| p.item.clone()),
            file: members.first().and_then(|m| m.path.clone()),
            bytes,
            attempts,
            upload_id: None,
            error,
            assets,
        };
        if let Err(e) = self.shared.state.record_run(record.clone()).await {
            error!(error = %e, "cannot record the run in the state store");
        }
        metrics::run_finished(&record);
        self.count_left_in_progress().await;
        let _ = self.shared.runs.send(record.clone());
        record
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) fn is_glob(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().contains(['*', '?', '[', '{']))
}

/// Whether `file` (a watched file) fits a bundle member's pattern (`{stem}.tif`).
fn bundle_match(pattern: &Path, file: &Path) -> bool {
    let pattern = pattern.to_string_lossy();
    let name = file_name(file);
    match pattern.split_once("{stem}") {
        Some((pre, post)) => {
            name.len() > pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        }
        None => *pattern == *name,
    }
}

/// The one file a glob (in the file name) matches now: none or several fail the run, naming
/// the glob and what it matched.
pub(crate) async fn resolve_glob(glob: &Path) -> Result<PathBuf, String> {
    let glob = glob.to_owned();
    tokio::task::spawn_blocking(move || resolve_glob_blocking(&glob))
        .await
        .unwrap_or_else(|e| Err(format!("the glob lookup failed: {e}")))
}

fn resolve_glob_blocking(glob: &Path) -> Result<PathBuf, String> {
    let (Some(folder), Some(name)) = (glob.parent(), glob.file_name()) else {
        return Err(format!(
            "file {}: expected a path with a folder",
            glob.display()
        ));
    };
    let matcher = GlobBuilder::new(&name.to_string_lossy())
        .literal_separator(true)
        .build()
        .map_err(|e| format!("file {}: not a valid glob: {}", glob.display(), e.kind()))?
        .compile_matcher();
    let entries = std::fs::read_dir(folder).map_err(|e| {
        format!(
            "file {}: cannot list {}: {e}",
            glob.display(),
            folder.display()
        )
    })?;
    let mut matches = Vec::new();
    for entry in entries.flatten() {
        let n = entry.file_name();
        if matcher.is_match(&n)
            && entry
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink())
        {
            matches.push(entry.path());
            if matches.len() > MATCHES_SHOWN {
                break;
            }
        }
    }
    matches.sort();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(format!(
            "file {} matches no file: expected exactly one",
            glob.display()
        )),
        n => {
            let shown: Vec<String> = matches
                .iter()
                .take(MATCHES_SHOWN)
                .map(|p| p.display().to_string())
                .collect();
            let more = if n > MATCHES_SHOWN { ", ..." } else { "" };
            Err(format!(
                "file {} matches several files ({}{more}): expected exactly one",
                glob.display(),
                shown.join(", ")
            ))
        }
    }
}

/// Opens, snapshots and (when it is sent as it is) digests a file into the run's digests,
/// before anything is created: its session then finds the digest, and a file that cannot be
/// read fails the run with nothing made on the server.
async fn prepare_file(path: &Path, opts: &stac_upload::UploadOptions) -> Result<(), UploadError> {
    let owned = path.to_owned();
    let part_size = opts.part_size;
    let digest = opts.digest;
    let raw = opts.compress == CompressMode::None;
    let cache = opts.digest_cache.clone();
    // The cache is async (it may be a database): this blocking thread waits on it.
    let runtime = tokio::runtime::Handle::current();
    let io = |action: &'static str, source| UploadError::File {
        path: path.to_owned(),
        action,
        source,
    };
    let result = tokio::task::spawn_blocking(move || -> Result<(), Box<UploadError>> {
        // Non-blocking: a FIFO put where a file was expected must not hang the run in open(2);
        // it is then refused as not a regular file below.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&owned)
            .map_err(|source| {
                Box::new(UploadError::File {
                    path: owned.clone(),
                    action: "cannot open",
                    source,
                })
            })?;
        let meta = file.metadata().map_err(|source| {
            Box::new(UploadError::File {
                path: owned.clone(),
                action: "cannot read",
                source,
            })
        })?;
        if !meta.is_file() {
            return Err(Box::new(UploadError::File {
                path: owned.clone(),
                action: "cannot upload",
                source: std::io::Error::other("not a regular file"),
            }));
        }
        let snapshot = FileSnapshot::of(&meta);
        if !raw {
            return Ok(());
        }
        let plan = PartPlan::new(meta.len(), part_size).map_err(|source| {
            Box::new(UploadError::TooLarge {
                path: owned.clone(),
                source,
            })
        })?;
        let key = DigestKey::new(&snapshot, plan.part_size());
        if let Some(c) = &cache
            && runtime
                .block_on(c.get(&key))
                .is_some_and(|d| d.part_md5s.len() == plan.count())
        {
            return Ok(());
        }
        let never = std::sync::atomic::AtomicBool::new(false);
        let d = stac_upload::digest_file(file, &plan, digest, &never, &|_| {}).map_err(|e| {
            Box::new(UploadError::File {
                path: owned.clone(),
                action: "cannot read",
                source: std::io::Error::other(e),
            })
        })?;
        // Only a digest of a file that stayed as it was is worth keeping.
        let after = std::fs::metadata(&owned).map(|m| FileSnapshot::of(&m));
        if after.is_ok_and(|a| a == snapshot)
            && let Some(c) = &cache
        {
            c.put(key, &d);
        }
        Ok(())
    })
    .await;
    match result {
        Ok(r) => r.map_err(|e| *e),
        Err(e) => Err(io("cannot read", std::io::Error::other(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_member_matches_its_pattern() {
        assert!(bundle_match(Path::new("{stem}.tif"), Path::new("/w/a.tif")));
        assert!(bundle_match(
            Path::new("{stem}_thumb.png"),
            Path::new("/w/a_thumb.png")
        ));
        assert!(!bundle_match(
            Path::new("{stem}.tif"),
            Path::new("/w/a.png")
        ));
        assert!(!bundle_match(Path::new("{stem}.tif"), Path::new("/w/.tif")));
    }

    #[test]
    fn a_glob_must_match_exactly_one_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let glob = dir.path().join("s2_*.tif");
        let none = resolve_glob_blocking(&glob).expect_err("no match");
        assert!(none.contains("matches no file"), "{none}");
        std::fs::write(dir.path().join("s2_a.tif"), b"a").expect("write");
        assert_eq!(
            resolve_glob_blocking(&glob).expect("one match"),
            dir.path().join("s2_a.tif")
        );
        std::fs::write(dir.path().join("s2_b.tif"), b"b").expect("write");
        let two = resolve_glob_blocking(&glob).expect_err("two matches");
        assert!(
            two.contains("s2_a.tif") && two.contains("s2_b.tif"),
            "{two}"
        );
    }
}
