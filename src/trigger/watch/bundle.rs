//! Bundles: files of a watched folder that belong together, grouped by stem.
//!
//! A bundle job names its members by patterns with one `{stem}` each, relative to the watched
//! folder (`{stem}.tif`, `{stem}.json`, `thumbs/{stem}.png`). A settled file that matches a
//! pattern joins the bundle of its stem; the bundle is complete the moment every required member
//! has a file, and is handed on then with the optional members that are there. A bundle still
//! incomplete [`BundleRules::timeout`] after its first member settled is reported (a warning
//! naming the stem and the missing members, `stac_uploadd_bundles_incomplete_total`) and, per
//! [`Incomplete`], handed on as it is or left: a left bundle keeps its files and no timer; a new
//! member wakes it (and may complete it).
//!
//! Memory is bounded: at most [`MAX_OPEN`] bundles are held per job. When a new stem comes at the
//! cap, the oldest left bundle is dropped, or else the oldest open one (reported like a timeout
//! and never handed on: the cap protects the daemon, not the bundle).
//!
//! [`Collector`] is the logic alone (arrivals and time in, bundles out); [`collect`] drives it
//! from a watch's files with tokio time, so paused-time tests control the timeouts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::observe::metrics;

/// Bundles held at once per job (open, or left after a timeout): the bound on the collector's
/// memory (each holds its stem and one path per member), whatever a folder receives.
pub const MAX_OPEN: usize = 10_000;

/// The default of `[job.watch] bundle_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What happens to a bundle still incomplete at its timeout (`[job.watch] bundle_incomplete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Incomplete {
    /// Reported and kept aside until a new member arrives (`"leave"`, the default).
    #[default]
    Leave,
    /// Reported and handed on as it is (`"publish"`).
    Publish,
}

impl Incomplete {
    /// The value as written in the job file.
    pub fn as_str(self) -> &'static str {
        match self {
            Incomplete::Leave => "leave",
            Incomplete::Publish => "publish",
        }
    }
}

/// The `bundle_*` keys of `[job.watch]`; used only by jobs with `[[job.assets]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleRules {
    /// How long after its first member a bundle may stay incomplete before it is reported.
    pub timeout: Duration,
    /// What then.
    pub incomplete: Incomplete,
}

impl Default for BundleRules {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            incomplete: Incomplete::default(),
        }
    }
}

/// A member pattern: a path relative to the watched folder with exactly one `{stem}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPattern {
    prefix: String,
    suffix: String,
}

impl MemberPattern {
    /// Parses `"{stem}.tif"` and the like; the error says what was expected.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let Some((prefix, suffix)) = pattern.split_once("{stem}") else {
            return Err(format!(
                "bundle member {pattern:?} has no {{stem}}: expected a path relative to the watched folder with one {{stem}}, e.g. \"{{stem}}.tif\""
            ));
        };
        if suffix.contains("{stem}") {
            return Err(format!(
                "bundle member {pattern:?} has {{stem}} twice: expected it once"
            ));
        }
        if prefix.starts_with('/') {
            return Err(format!(
                "bundle member {pattern:?} is absolute: expected a path relative to the watched folder, e.g. \"{{stem}}.tif\""
            ));
        }
        if prefix.is_empty() && suffix.is_empty() {
            return Err(format!(
                "bundle member {pattern:?} is only {{stem}}: expected a prefix or suffix that tells the members apart, e.g. \"{{stem}}.tif\""
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The stem `rel` (a path relative to the folder, `/`-separated) gives this pattern, if it
    /// matches: not empty, and within one folder level.
    fn stem_of<'a>(&self, rel: &'a str) -> Option<&'a str> {
        let stem = rel
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        (!stem.is_empty() && !stem.contains('/')).then_some(stem)
    }

    /// How much of a name the pattern fixes: of two patterns matching one name, the longer
    /// wins (`{stem}.thumb.png` over `{stem}.png`).
    fn fixed_len(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }
}

impl std::fmt::Display for MemberPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{{stem}}{}", self.prefix, self.suffix)
    }
}

/// One member of a bundle job, in the order of the job's assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub pattern: MemberPattern,
    pub required: bool,
}

/// The members of a bundle job from its assets' file patterns and `required` flags, in order.
pub fn members<'a>(
    assets: impl Iterator<Item = (&'a Path, bool)>,
) -> Result<Vec<Member>, super::WatchError> {
    assets
        .map(|(file, required)| {
            let text = file.to_str().ok_or_else(|| super::WatchError::BadMember {
                why: format!(
                    "bundle member {} is not valid UTF-8: expected a pattern such as \"{{stem}}.tif\"",
                    file.display()
                ),
            })?;
            let pattern =
                MemberPattern::parse(text).map_err(|why| super::WatchError::BadMember { why })?;
            Ok(Member { pattern, required })
        })
        .collect()
}

/// A bundle handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub stem: String,
    /// By member index: its file if present.
    pub files: Vec<Option<PathBuf>>,
    /// Every required member is there.
    pub complete: bool,
}

/// Something the collector reports, besides bundles handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A bundle reached its timeout incomplete; `published` says it was handed on as it is.
    TimedOut {
        stem: String,
        missing: Vec<String>,
        published: bool,
    },
    /// A bundle was dropped to stay within [`MAX_OPEN`].
    Evicted { stem: String, missing: Vec<String> },
}

#[derive(Debug)]
struct Open {
    files: Vec<Option<PathBuf>>,
    /// When it times out; `None` once left (no timer until a new member).
    deadline: Option<Instant>,
    /// When it was opened (or woken), to pick the oldest at the cap.
    since: Instant,
}

/// The collector's logic: no I/O, no clock of its own.
#[derive(Debug)]
pub struct Collector {
    members: Vec<Member>,
    rules: BundleRules,
    cap: usize,
    open: HashMap<String, Open>,
}

impl Collector {
    /// A collector for `members` (in asset order).
    pub fn new(members: Vec<Member>, rules: BundleRules) -> Self {
        Self::with_cap(members, rules, MAX_OPEN)
    }

    fn with_cap(members: Vec<Member>, rules: BundleRules, cap: usize) -> Self {
        Self {
            members,
            rules,
            cap: cap.max(1),
            open: HashMap::new(),
        }
    }

    /// Bundles held now (open or left).
    pub fn held(&self) -> usize {
        self.open.len()
    }

    /// The member and stem a file (relative path, `/`-separated) is, if any: the matching
    /// pattern that fixes the most of the name.
    fn classify<'a>(&self, rel: &'a str) -> Option<(usize, &'a str)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                m.pattern
                    .stem_of(rel)
                    .map(|s| (i, s, m.pattern.fixed_len()))
            })
            .max_by_key(|&(i, _, len)| (len, std::cmp::Reverse(i)))
            .map(|(i, s, _)| (i, s))
    }

    /// The names of the required members `files` lacks, as patterns.
    fn missing(&self, files: &[Option<PathBuf>]) -> Vec<String> {
        self.members
            .iter()
            .zip(files)
            .filter(|(m, f)| m.required && f.is_none())
            .map(|(m, _)| m.pattern.to_string())
            .collect()
    }

    fn is_complete(&self, files: &[Option<PathBuf>]) -> bool {
        self.members
            .iter()
            .zip(files)
            .all(|(m, f)| !m.required || f.is_some())
    }

    /// A settled file, `rel` being its path relative to the watched folder. Returns the bundle
    /// it completes, if it does, and what had to be dropped to make room for it.
    pub fn settled(
        &mut self,
        path: PathBuf,
        rel: &str,
        now: Instant,
    ) -> (Option<Bundle>, Option<Report>) {
        let Some((index, stem)) = self.classify(rel) else {
            debug!(file = %rel.escape_debug(), "not a member of any bundle: ignored");
            return (None, None);
        };
        let mut evicted = None;
        if !self.open.contains_key(stem) && self.open.len() >= self.cap {
            evicted = self.evict();
        }
        let timeout = self.rules.timeout;
        let n = self.members.len();
        let open = self.open.entry(stem.to_owned()).or_insert_with(|| Open {
            files: vec![None; n],
            deadline: None,
            since: now,
        });
        // A duplicate (the same member settled again) only replaces the path.
        open.files[index] = Some(path);
        if open.deadline.is_none() {
            // Opened now, or a left bundle woken by a new member: its period starts again.
            open.deadline = Some(now + timeout);
            open.since = now;
        }
        if self.is_complete(&self.open[stem].files) {
            let open = self.open.remove(stem).expect("just looked up");
            let bundle = Bundle {
                stem: stem.to_owned(),
                files: open.files,
                complete: true,
            };
            return (Some(bundle), evicted);
        }
        (None, evicted)
    }

    /// Drops the oldest left bundle, or else the oldest open one.
    fn evict(&mut self) -> Option<Report> {
        let stem = self
            .open
            .iter()
            .min_by_key(|(_, o)| (o.deadline.is_some(), o.since))
            .map(|(s, _)| s.clone())?;
        let open = self.open.remove(&stem)?;
        Some(Report::Evicted {
            missing: self.missing(&open.files),
            stem,
        })
    }

    /// The next time [`Collector::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().filter_map(|o| o.deadline).min()
    }

    /// Bundles whose timeout has come by `now`: each reported, and handed on or left per the
    /// rules. Returns the bundles handed on (incomplete) and the reports, oldest first.
    pub fn expire(&mut self, now: Instant) -> (Vec<Bundle>, Vec<Report>) {
        let mut due: Vec<(Instant, String)> = self
            .open
            .iter()
            .filter_map(|(s, o)| o.deadline.filter(|d| *d <= now).map(|d| (d, s.clone())))
            .collect();
        due.sort();
        let publish = self.rules.incomplete == Incomplete::Publish;
        let (mut bundles, mut reports) = (Vec::new(), Vec::new());
        for (_, stem) in due {
            let missing = self.missing(&self.open[&stem].files);
            if publish {
                let open = self.open.remove(&stem).expect("listed above");
                bundles.push(Bundle {
                    stem: stem.clone(),
                    files: open.files,
                    complete: false,
                });
            } else if let Some(open) = self.open.get_mut(&stem) {
                open.deadline = None;
            }
            reports.push(Report::TimedOut {
                stem,
                missing,
                published: publish,
            });
        }
        (bundles, reports)
    }
}

/// Logs and counts a report of `job`'s collector.
fn report(job: &str, r: &Report) {
    match r {
        Report::TimedOut {
            stem,
            missing,
            published,
        } => {
            let then = if *published {
                "publishing it as it is"
            } else {
                "leaving it until a new member arrives"
            };
            warn!(job, stem = %stem.escape_debug(), missing = %missing.join(", ").escape_debug(), "bundle still incomplete at its timeout: {then}");
            metrics::bundle_incomplete(job, metrics::BundleEnd::TimedOut);
        }
        Report::Evicted { stem, missing } => {
            warn!(job, stem = %stem.escape_debug(), missing = %missing.join(", ").escape_debug(), held = MAX_OPEN, "too many incomplete bundles: dropping the oldest");
            metrics::bundle_incomplete(job, metrics::BundleEnd::Evicted);
        }
    }
}

/// Feeds `rx` (a watch's settled files, absolute paths under `root`) through a collector and
/// hands every bundle to `sink`, until `rx` closes. Timeouts follow tokio time.
pub async fn collect(
    job: String,
    root: PathBuf,
    mut collector: Collector,
    mut rx: mpsc::Receiver<PathBuf>,
    mut sink: impl FnMut(Bundle),
) {
    loop {
        let deadline = collector.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            file = rx.recv() => {
                let Some(path) = file else { return };
                let Some(rel) = relative(&root, &path) else {
                    debug!(file = %path.display(), "not under the watched folder: ignored");
                    continue;
                };
                let (bundle, evicted) = collector.settled(path.clone(), &rel, Instant::now());
                if let Some(r) = evicted {
                    report(&job, &r);
                }
                if let Some(b) = bundle {
                    debug!(job, stem = %b.stem.escape_debug(), "bundle complete");
                    sink(b);
                }
            }
            () = sleep => {
                let (bundles, reports) = collector.expire(Instant::now());
                for r in &reports {
                    report(&job, r);
                }
                bundles.into_iter().for_each(&mut sink);
            }
        }
        metrics::bundles_open(&job, collector.held());
    }
}

/// `path` relative to `root`, `/`-separated, if it is under it and valid UTF-8 (a member pattern
/// is text: a name that is not cannot match it).
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Member> {
        let m = |p: &str, required| Member {
            pattern: MemberPattern::parse(p).unwrap(),
            required,
        };
        vec![
            m("{stem}.tif", true),
            m("{stem}.json", true),
            m("{stem}.thumb.png", false),
        ]
    }

    fn rules(incomplete: Incomplete) -> BundleRules {
        BundleRules {
            timeout: Duration::from_secs(60),
            incomplete,
        }
    }

    fn p(name: &str) -> PathBuf {
        PathBuf::from("/in").join(name)
    }

    fn arrive(c: &mut Collector, name: &str, now: Instant) -> Option<Bundle> {
        let (b, evicted) = c.settled(p(name), name, now);
        assert_eq!(evicted, None);
        b
    }

    #[test]
    fn patterns_need_one_stem_and_a_fixed_part() {
        assert!(MemberPattern::parse("{stem}.tif").is_ok());
        assert!(MemberPattern::parse("thumbs/{stem}.png").is_ok());
        for bad in ["a.tif", "{stem}", "{stem}{stem}.tif", "/abs/{stem}.tif"] {
            assert!(MemberPattern::parse(bad).is_err(), "{bad} accepted");
        }
        let m = MemberPattern::parse("thumbs/{stem}.png").unwrap();
        assert_eq!(m.stem_of("thumbs/a.png"), Some("a"));
        assert_eq!(m.stem_of("thumbs/x/a.png"), None);
        assert_eq!(m.stem_of("thumbs/.png"), None);
        assert_eq!(m.to_string(), "thumbs/{stem}.png");
    }

    #[test]
    fn any_arrival_order_completes_once_with_the_optional_member_if_there() {
        let orders: [&[&str]; 4] = [
            &["a.tif", "a.json"],
            &["a.json", "a.tif"],
            &["a.thumb.png", "a.json", "a.tif"],
            &["a.json", "a.thumb.png", "a.tif"],
        ];
        for order in orders {
            let mut c = Collector::new(members(), rules(Incomplete::Leave));
            let now = Instant::now();
            let (last, first) = order.split_last().unwrap();
            for name in first {
                assert_eq!(arrive(&mut c, name, now), None, "{order:?}");
            }
            let b = arrive(&mut c, last, now).expect("complete");
            assert_eq!(b.stem, "a");
            assert!(b.complete);
            assert_eq!(b.files[0], Some(p("a.tif")));
            assert_eq!(b.files[1], Some(p("a.json")));
            let thumb = order.contains(&"a.thumb.png").then(|| p("a.thumb.png"));
            assert_eq!(b.files[2], thumb, "{order:?}");
            assert_eq!(c.held(), 0);
            assert_eq!(c.next_deadline(), None);
        }
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let mut c = Collector::new(members(), rules(Incomplete::Leave));
        let now = Instant::now();
        // `a.thumb.png` is not the `.png`-less `{stem}.tif`, and not stem "a.thumb" of anything.
        assert_eq!(arrive(&mut c, "a.thumb.png", now), None);
        assert_eq!(arrive(&mut c, "b.txt", now), None);
        assert_eq!(c.held(), 1);
    }

    #[test]
    fn slow_arrivals_within_the_timeout_complete_and_stems_stay_apart() {
        let mut c = Collector::new(members(), rules(Incomplete::Leave));
        let t0 = Instant::now();
        assert_eq!(arrive(&mut c, "a.tif", t0), None);
        assert_eq!(arrive(&mut c, "b.json", t0 + Duration::from_secs(30)), None);
        assert_eq!(c.expire(t0 + Duration::from_secs(59)), (vec![], vec![]));
        let b = arrive(&mut c, "a.json", t0 + Duration::from_secs(59)).unwrap();
        assert_eq!(b.stem, "a");
        assert_eq!(c.held(), 1);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(90)));
    }

    #[test]
    fn duplicates_replace_the_path_and_do_not_complete() {
        let mut c = Collector::new(members(), rules(Incomplete::Leave));
        let now = Instant::now();
        assert_eq!(arrive(&mut c, "a.tif", now), None);
        assert_eq!(arrive(&mut c, "a.tif", now + Duration::from_secs(10)), None);
        // The timer counts from the first member.
        assert_eq!(c.next_deadline(), Some(now + Duration::from_secs(60)));
        let b = arrive(&mut c, "a.json", now).unwrap();
        assert_eq!(b.files, vec![Some(p("a.tif")), Some(p("a.json")), None]);
        // After completion the same stem is a new bundle.
        assert_eq!(arrive(&mut c, "a.tif", now), None);
        assert_eq!(c.held(), 1);
    }

    #[test]
    fn timeout_publish_hands_on_the_bundle_as_it_is() {
        let mut c = Collector::new(members(), rules(Incomplete::Publish));
        let t0 = Instant::now();
        arrive(&mut c, "a.tif", t0);
        arrive(&mut c, "a.thumb.png", t0 + Duration::from_secs(5));
        let (bundles, reports) = c.expire(t0 + Duration::from_secs(60));
        assert_eq!(
            bundles,
            vec![Bundle {
                stem: "a".into(),
                files: vec![Some(p("a.tif")), None, Some(p("a.thumb.png"))],
                complete: false,
            }]
        );
        assert_eq!(
            reports,
            vec![Report::TimedOut {
                stem: "a".into(),
                missing: vec!["{stem}.json".into()],
                published: true
            }]
        );
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn timeout_leave_keeps_the_bundle_quiet_until_a_new_member() {
        let mut c = Collector::new(members(), rules(Incomplete::Leave));
        let t0 = Instant::now();
        arrive(&mut c, "a.json", t0);
        let (bundles, reports) = c.expire(t0 + Duration::from_secs(61));
        assert!(bundles.is_empty());
        assert_eq!(reports.len(), 1);
        // Reported once: no timer any more.
        assert_eq!(c.next_deadline(), None);
        assert_eq!(c.expire(t0 + Duration::from_secs(600)), (vec![], vec![]));
        // A new member wakes it, and here completes it.
        let b = arrive(&mut c, "a.tif", t0 + Duration::from_secs(900)).unwrap();
        assert!(b.complete);
        assert_eq!(b.files[1], Some(p("a.json")));
    }

    #[test]
    fn the_cap_drops_left_bundles_first_then_the_oldest() {
        let mut c = Collector::with_cap(members(), rules(Incomplete::Leave), 2);
        let t0 = Instant::now();
        arrive(&mut c, "a.tif", t0);
        arrive(&mut c, "b.tif", t0 + Duration::from_secs(1));
        c.expire(t0 + Duration::from_secs(60)); // a is left, b not yet due
        let (_, evicted) = c.settled(p("c.tif"), "c.tif", t0 + Duration::from_secs(60));
        assert_eq!(
            evicted,
            Some(Report::Evicted {
                stem: "a".into(),
                missing: vec!["{stem}.json".into()]
            })
        );
        let (_, evicted) = c.settled(p("d.tif"), "d.tif", t0 + Duration::from_secs(61));
        assert!(matches!(evicted, Some(Report::Evicted { stem, .. }) if stem == "b"));
        assert_eq!(c.held(), 2);
        // A member of a held bundle never evicts.
        let (b, evicted) = c.settled(p("d.json"), "d.json", t0 + Duration::from_secs(62));
        assert!(b.is_some() && evicted.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn collect_times_out_with_tokio_time() {
        let (tx, rx) = mpsc::channel(8);
        let (out_tx, mut out) = mpsc::unbounded_channel();
        let c = Collector::new(members(), rules(Incomplete::Publish));
        let task = tokio::spawn(collect("j".into(), "/in".into(), c, rx, move |b| {
            let _ = out_tx.send(b);
        }));
        tx.send(p("a.tif")).await.unwrap();
        tx.send(p("b.tif")).await.unwrap();
        tx.send(p("b.json")).await.unwrap();
        let b = out.recv().await.unwrap();
        assert_eq!((b.stem.as_str(), b.complete), ("b", true));
        // Auto-advance moves to the timeout of "a".
        let t = Instant::now();
        let a = out.recv().await.unwrap();
        assert_eq!((a.stem.as_str(), a.complete), ("a", false));
        assert!(t.elapsed() >= Duration::from_secs(59));
        drop(tx);
        task.await.unwrap();
    }
}
