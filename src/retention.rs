//! Retention: which of a job's items its `keep` rule deletes, and deleting them (assets first:
//! the server refuses to delete an item that still has assets).
//!
//! A job's own items are those whose id its item template can produce, read back through a
//! matcher built from the template; never its alias. An item's time comes from the id's time
//! fields when the template has a date's worth of them, else from the item's `datetime` (or
//! `end_datetime`); an item whose time cannot be known is kept.

use std::fmt::Write as _;
use std::future::Future;

use chrono::format::{Item as FmtItem, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use regex::Regex;
use serde_json::Value;
use tracing::{info, warn};

use crate::config::{IdPart, IdTemplate, JobSpec, Keep};
use crate::observe::metrics;
use stac_client::{AssetTarget, StacClient, StacError};

/// The most items one run (or one `prune`) deletes; the rest wait for the next. A bound on what
/// a mistaken rule or clock can destroy in one go, and on the time a run spends after its upload.
pub const MAX_DELETIONS_PER_RUN: usize = 100;

/// What ids an item template may hold for `{name}` and `{stem}`: id characters.
const ANY_ID: &str = "[0-9a-z._-]+";
/// `{ext}`: what follows a file name's last dot, so no dot.
const ANY_EXT: &str = "[0-9a-z_-]*";

/// Reads back the ids an item template produces, and the run time each one was rendered for.
#[derive(Debug, Clone)]
pub struct ItemMatcher {
    re: Regex,
    /// The strftime field of each capture group, in order.
    fields: Vec<String>,
    tz: Tz,
    /// True when the time fields give at least a date.
    dated: bool,
}

impl ItemMatcher {
    /// The matcher of `template`, whose time fields are read in `tz`.
    pub fn new(template: &IdTemplate, tz: Tz) -> Self {
        let mut pattern = String::from("^");
        let mut fields = Vec::new();
        for part in template.parts() {
            match part {
                IdPart::Text(t) => pattern.push_str(&regex::escape(t)),
                IdPart::Time(f) => {
                    let _ = write!(pattern, "({})", field_pattern(f));
                    fields.push(f.to_owned());
                }
                IdPart::Name | IdPart::Stem | IdPart::Capture(_) => pattern.push_str(ANY_ID),
                IdPart::Ext => pattern.push_str(ANY_EXT),
            }
        }
        pattern.push('$');
        let re = Regex::new(&pattern).expect("escaped text and fixed classes always compile");
        let mut matcher = Self {
            re,
            fields,
            tz,
            dated: false,
        };
        // Decided once, on an id the template itself renders, so that every id is read alike.
        let sample = tz
            .with_ymd_and_hms(2026, 3, 14, 15, 9, 26)
            .earliest()
            .expect("a plain date exists in every zone");
        matcher.dated = matcher
            .time_of(&template.render("sample.bin", &sample))
            .is_some();
        matcher
    }

    /// True when `id` is one the template can produce (with a real date, when it has one).
    pub fn matches(&self, id: &str) -> bool {
        self.parse(id)
            .is_some_and(|p| !self.dated || to_time(&p, self.tz).is_some())
    }

    /// True when the template's time fields give at least a date, so ids carry their time.
    pub fn dated(&self) -> bool {
        self.dated
    }

    /// The time `id` was rendered for (`None` when the template has no date in it).
    pub fn time_of(&self, id: &str) -> Option<DateTime<Utc>> {
        to_time(&self.parse(id)?, self.tz)
    }

    /// The id's time fields read into `Parsed`; `None` when the id is not the template's, including
    /// ids that fit its shape but hold no real time (`s2-2026-13-45`).
    fn parse(&self, id: &str) -> Option<Parsed> {
        let caps = self.re.captures(id)?;
        let mut parsed = Parsed::new();
        for (field, cap) in self.fields.iter().zip(caps.iter().skip(1)) {
            chrono::format::parse(&mut parsed, cap?.as_str(), StrftimeItems::new(field)).ok()?;
        }
        Some(parsed)
    }
}

/// The pattern of one strftime field, from what chrono renders for two distant times: digits of
/// the field's width (`%Y` four, `%-d` one or two), else the shape of the text (`%F`, `%.3f`,
/// `%P`), else any id characters, which the parse that follows checks.
fn field_pattern(field: &str) -> String {
    let render = |t: DateTime<Utc>| {
        let items: Vec<FmtItem<'_>> = StrftimeItems::new(field).collect();
        let mut s = String::new();
        let _ = write!(s, "{}", t.format_with_items(items.into_iter()));
        s
    };
    let a = render(
        Utc.with_ymd_and_hms(2005, 1, 5, 3, 4, 5)
            .single()
            .expect("a valid date"),
    );
    let b = render(
        Utc.with_ymd_and_hms(2026, 12, 25, 23, 54, 55)
            .single()
            .expect("a valid date")
            + chrono::Duration::nanoseconds(123_456_789),
    );
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if digits(&a) && digits(&b) {
        let (lo, hi) = (a.len().min(b.len()), a.len().max(b.len()));
        return if lo == hi {
            format!("[0-9]{{{lo}}}")
        } else {
            format!("[0-9]{{{lo},{hi}}}")
        };
    }
    if a.len() == b.len() && !a.is_empty() {
        return a
            .chars()
            .map(|c| match c {
                '0'..='9' => "[0-9]".to_owned(),
                'a'..='z' => "[a-z]".to_owned(),
                c => regex::escape(&c.to_string()),
            })
            .collect();
    }
    "[0-9a-z._-]*?".to_owned()
}

/// The instant of parsed time fields in `tz`: a timestamp, or a date with the time of day it
/// gives (midnight when none); `None` without a date.
fn to_time(parsed: &Parsed, tz: Tz) -> Option<DateTime<Utc>> {
    if let Some(ts) = parsed.timestamp() {
        return DateTime::from_timestamp(ts, parsed.nanosecond().unwrap_or(0));
    }
    let date = parsed.to_naive_date().ok()?;
    let hour = match (parsed.hour_div_12(), parsed.hour_mod_12()) {
        (div, Some(m)) => div.unwrap_or(0) * 12 + m,
        _ => 0,
    };
    let time = NaiveTime::from_hms_nano_opt(
        hour,
        parsed.minute().unwrap_or(0),
        parsed.second().unwrap_or(0),
        parsed.nanosecond().unwrap_or(0),
    )?;
    // A local time skipped by a DST change reads as nothing; a repeated one as its first.
    tz.from_local_datetime(&date.and_time(time))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Where an item's time was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFrom {
    /// The id's time fields.
    Id,
    /// `properties.datetime`.
    Datetime,
    /// `properties.end_datetime` (an item with a range).
    EndDatetime,
}

impl TimeFrom {
    fn as_str(self) -> &'static str {
        match self {
            TimeFrom::Id => "id",
            TimeFrom::Datetime => "datetime",
            TimeFrom::EndDatetime => "end_datetime",
        }
    }
}

/// An item as the server lists it: its id and its properties.
#[derive(Debug, Clone)]
pub struct ListedItem {
    pub id: String,
    pub properties: Value,
}

/// An item the rule deletes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub id: String,
    pub time: DateTime<Utc>,
    pub from: TimeFrom,
    /// For people: what about the rule condemns it.
    pub why: String,
}

/// What a rule makes of a collection's items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// To delete now, oldest first, at most the bound.
    pub delete: Vec<Doomed>,
    /// Also condemned, left for the next run by the bound.
    pub left: usize,
    /// The job's own items (the alias and protected ids included).
    pub own: usize,
    /// Own items kept because their time cannot be known.
    pub undated: Vec<String>,
}

/// A job's retention rule, ready to judge listed items.
#[derive(Debug, Clone)]
pub struct Retention {
    pub collection: String,
    pub keep: Keep,
    matcher: ItemMatcher,
    alias: Option<String>,
}

impl Retention {
    /// The rule of `spec`; `None` when it has no `keep` (or no item template, which the job file
    /// check refuses with `keep`).
    pub fn for_job(spec: &JobSpec) -> Option<Self> {
        Some(Self {
            collection: spec.collection.clone(),
            keep: spec.keep?,
            matcher: ItemMatcher::new(spec.item.as_ref()?, spec.timezone),
            alias: spec.alias.clone(),
        })
    }

    /// Where item times come from, for `check`.
    pub fn time_source(&self) -> &'static str {
        if self.matcher.dated() {
            "its id"
        } else {
            "its datetime (or end_datetime)"
        }
    }

    /// Which of `items` the rule deletes at `now`, never one of `protect` (the item a run just
    /// published) nor the alias, at most `limit`, oldest first.
    pub fn plan(
        &self,
        items: &[ListedItem],
        now: DateTime<Utc>,
        protect: &[&str],
        limit: usize,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut dated = Vec::new();
        for item in items {
            if !self.matcher.matches(&item.id) {
                continue;
            }
            plan.own += 1;
            match self.time_of(item) {
                Some((time, from)) => dated.push((time, from, item.id.as_str())),
                None => plan.undated.push(item.id.clone()),
            }
        }
        // Newest first, ties by id, so that `keep = N` keeps the same N on every server.
        dated.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.2.cmp(a.2)));
        let spared = |id: &str| protect.contains(&id) || self.alias.as_deref() == Some(id);
        let mut condemned: Vec<Doomed> = match self.keep {
            Keep::Age(age) => {
                let cutoff = chrono::Duration::from_std(age)
                    .ok()
                    .and_then(|a| now.checked_sub_signed(a));
                let Some(cutoff) = cutoff else {
                    return plan;
                };
                dated
                    .iter()
                    .filter(|(time, _, id)| *time < cutoff && !spared(id))
                    .map(|&(time, from, id)| Doomed {
                        id: id.to_owned(),
                        time,
                        from,
                        why: format!(
                            "older than {} ({})",
                            humantime::format_duration(age),
                            self.keep
                        ),
                    })
                    .collect()
            }
            Keep::Count(n) => dated
                .iter()
                .skip(n as usize)
                .filter(|(_, _, id)| !spared(id))
                .map(|&(time, from, id)| Doomed {
                    id: id.to_owned(),
                    time,
                    from,
                    why: format!("not among the newest {n} ({})", self.keep),
                })
                .collect(),
        };
        condemned.reverse();
        plan.left = condemned.len().saturating_sub(limit);
        condemned.truncate(limit);
        plan.delete = condemned;
        plan
    }

    /// An own item's time: from its id when the template has a date, else from its properties.
    fn time_of(&self, item: &ListedItem) -> Option<(DateTime<Utc>, TimeFrom)> {
        if self.matcher.dated() {
            return self.matcher.time_of(&item.id).map(|t| (t, TimeFrom::Id));
        }
        let read = |key: &str| {
            item.properties
                .get(key)
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        read("datetime")
            .map(|t| (t, TimeFrom::Datetime))
            .or_else(|| read("end_datetime").map(|t| (t, TimeFrom::EndDatetime)))
    }
}

/// The server calls retention makes; a STAC client in production.
pub trait ItemStore: Sync {
    /// Every item of the collection the server lists.
    fn list_items(
        &self,
        collection: &str,
    ) -> impl Future<Output = Result<Vec<ListedItem>, StacError>> + Send;
    /// The ids of an item's assets.
    fn list_assets(
        &self,
        collection: &str,
        item: &str,
    ) -> impl Future<Output = Result<Vec<String>, StacError>> + Send;
    /// Deletes one asset of an item.
    fn delete_asset(
        &self,
        collection: &str,
        item: &str,
        asset: &str,
    ) -> impl Future<Output = Result<(), StacError>> + Send;
    /// Deletes an item that has no assets left.
    fn delete_item(
        &self,
        collection: &str,
        item: &str,
    ) -> impl Future<Output = Result<(), StacError>> + Send;
}

/// The most items one listing reads. A truncated listing never deletes an item it should keep
/// (an item not among the newest N of those seen is not among the newest N of all); it only
/// leaves some for later.
pub const MAX_LISTED_ITEMS: usize = 10_000;

impl ItemStore for StacClient {
    async fn list_items(&self, collection: &str) -> Result<Vec<ListedItem>, StacError> {
        let items = StacClient::list_items(self, collection, MAX_LISTED_ITEMS).await?;
        Ok(items
            .into_iter()
            .filter_map(|mut v| {
                let id = v.get("id")?.as_str()?.to_owned();
                let properties = v.get_mut("properties").map(Value::take).unwrap_or_default();
                Some(ListedItem { id, properties })
            })
            .collect())
    }

    async fn list_assets(&self, collection: &str, item: &str) -> Result<Vec<String>, StacError> {
        let assets = StacClient::list_assets(self, collection, item).await?;
        Ok(assets
            .iter()
            .filter_map(|a| Some(a.get("id")?.as_str()?.to_owned()))
            .collect())
    }

    async fn delete_asset(
        &self,
        collection: &str,
        item: &str,
        asset: &str,
    ) -> Result<(), StacError> {
        StacClient::delete_asset(self, &AssetTarget::item_asset(collection, item, asset)).await
    }

    async fn delete_item(&self, collection: &str, item: &str) -> Result<(), StacError> {
        StacClient::delete_item(self, collection, item).await
    }
}

/// Why retention could not judge a job's items at all.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("cannot list the items of collection {collection:?}: {source}")]
    List {
        collection: String,
        #[source]
        source: Box<StacError>,
    },
}

/// One deletion's outcome.
#[derive(Debug)]
pub enum Deleted {
    /// Gone, with this many assets.
    Done { assets: usize },
    /// `--dry-run`: nothing was asked of the server.
    DryRun,
    /// A call failed; the item stays for the next run (its assets may be partly deleted).
    Failed(String),
}

/// What a prune did: the plan, and each deletion's outcome in its order.
#[derive(Debug)]
pub struct Pruned {
    pub plan: Plan,
    pub outcomes: Vec<Deleted>,
}

impl Pruned {
    /// Deletions that failed.
    pub fn failures(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Deleted::Failed(_)))
            .count()
    }
}

/// Applies `rule` now: lists the collection, deletes what the plan says (assets first), each
/// deletion logged and counted under `job`, `on_item` told of each as it ends. A failed deletion
/// does not stop the others.
pub async fn prune<S: ItemStore>(
    store: &S,
    job: &str,
    rule: &Retention,
    now: DateTime<Utc>,
    protect: &[&str],
    dry_run: bool,
    mut on_item: impl FnMut(&Doomed, &Deleted) + Send,
) -> Result<Pruned, RetentionError> {
    let collection = rule.collection.as_str();
    let items = store
        .list_items(collection)
        .await
        .map_err(|source| RetentionError::List {
            collection: collection.to_owned(),
            source: Box::new(source),
        })?;
    let plan = rule.plan(&items, now, protect, MAX_DELETIONS_PER_RUN);
    let mut outcomes = Vec::with_capacity(plan.delete.len());
    for doomed in &plan.delete {
        let outcome = if dry_run {
            Deleted::DryRun
        } else {
            delete_item(store, collection, &doomed.id).await
        };
        let time = doomed.time.to_rfc3339();
        match &outcome {
            Deleted::Done { assets } => {
                metrics::retention_deleted(job);
                info!(collection, item = %doomed.id, time, time_from = doomed.from.as_str(), rule = %rule.keep, assets, why = %doomed.why, "retention deleted an item");
            }
            Deleted::Failed(error) => {
                metrics::retention_failed(job);
                warn!(collection, item = %doomed.id, time, rule = %rule.keep, error, "retention could not delete an item; the next run tries again");
            }
            Deleted::DryRun => {}
        }
        on_item(doomed, &outcome);
        outcomes.push(outcome);
    }
    if plan.left > 0 {
        info!(
            collection,
            left = plan.left,
            bound = MAX_DELETIONS_PER_RUN,
            "retention left items for the next run"
        );
    }
    Ok(Pruned { plan, outcomes })
}

/// Deletes an item's assets, then the item.
async fn delete_item<S: ItemStore>(store: &S, collection: &str, item: &str) -> Deleted {
    let assets = match store.list_assets(collection, item).await {
        Ok(a) => a,
        Err(e) => return Deleted::Failed(format!("listing its assets: {e}")),
    };
    for asset in &assets {
        if let Err(e) = store.delete_asset(collection, item, asset).await {
            return Deleted::Failed(format!("deleting asset {asset:?}: {e}"));
        }
    }
    match store.delete_item(collection, item).await {
        Ok(()) => Deleted::Done {
            assets: assets.len(),
        },
        Err(e) => Deleted::Failed(format!("deleting the item: {e}")),
    }
}

/// Retention at `now` (the daemon's clock) after a job's successful run, which published
/// `published`: never fails the run, whatever the server answers (logged and counted).
pub async fn after_run<S: ItemStore>(
    store: &S,
    spec: &JobSpec,
    published: Option<&str>,
    now: DateTime<Utc>,
) {
    let Some(rule) = Retention::for_job(spec) else {
        return;
    };
    let protect: Vec<&str> = published.into_iter().collect();
    if let Err(e) = prune(store, &spec.name, &rule, now, &protect, false, |_, _| {}).await {
        metrics::retention_failed(&spec.name);
        warn!(error = %e, "retention could not run; the next run tries again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn matcher(t: &str, tz: Tz) -> ItemMatcher {
        ItemMatcher::new(&IdTemplate::parse(t).unwrap(), tz)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reads_the_date_of_an_id_in_the_jobs_zone() {
        let m = matcher("s2-%Y-%m-%d", chrono_tz::Europe::Zurich);
        assert!(m.dated());
        assert_eq!(
            m.time_of("s2-2026-03-02"),
            Some(utc("2026-03-01T23:00:00Z"))
        );
        for other in [
            "s2-2026-3-02",
            "s2-2026-03-02x",
            "xs2-2026-03-02",
            "s2-2026-13-02",
            "s2-2026-02-30",
            "current",
            "s1-2026-03-02",
        ] {
            assert!(!m.matches(other), "{other}");
        }
    }

    #[test]
    fn reads_times_of_day_ordinals_timestamps_and_unpadded_fields() {
        let z = chrono_tz::UTC;
        let m = matcher("radar-%Y%m%d_%H%M", z);
        assert_eq!(
            m.time_of("radar-20260302_0930"),
            Some(utc("2026-03-02T09:30:00Z"))
        );
        let m = matcher("d-%Y-%j", z);
        assert_eq!(m.time_of("d-2026-061"), Some(utc("2026-03-02T00:00:00Z")));
        let m = matcher("t-%s", z);
        assert_eq!(m.time_of("t-1772409600"), Some(utc("2026-03-02T00:00:00Z")));
        let m = matcher("x-%Y-%-m-%-d", z);
        assert_eq!(m.time_of("x-2026-3-2"), Some(utc("2026-03-02T00:00:00Z")));
        assert_eq!(m.time_of("x-2026-12-25"), Some(utc("2026-12-25T00:00:00Z")));
        let m = matcher("h-%F-%I%P", z);
        assert_eq!(
            m.time_of("h-2026-03-02-09pm"),
            Some(utc("2026-03-02T21:00:00Z"))
        );
    }

    #[test]
    fn placeholders_match_id_characters_and_the_time_still_reads() {
        let m = matcher("{stem}-%Y%m%d.{ext}", chrono_tz::UTC);
        assert!(m.dated());
        assert_eq!(
            m.time_of("a.b-20260302-20260303.tif"),
            Some(utc("2026-03-03T00:00:00Z"))
        );
        assert!(!m.matches("-20260302.tif"), "a stem is never empty");
        assert!(!m.matches("A-20260302.tif"));
    }

    #[test]
    fn templates_without_a_date_are_not_dated() {
        for t in ["radar-{stem}", "y-%Y-{stem}", "h-%H%M"] {
            assert!(!matcher(t, chrono_tz::UTC).dated(), "{t}");
        }
        let m = matcher("radar-{stem}", chrono_tz::UTC);
        assert!(m.matches("radar-x.y"));
        assert!(!m.matches("radar-"));
        assert!(!m.matches("other"));
    }

    fn spec(item: &str, keep: Keep, alias: Option<&str>) -> JobSpec {
        let file = "[server]\nurl = \"http://127.0.0.1:1/\"\n[[job]]\nname = \"j\"\ncollection = \"c\"\nitem = \"i-%Y\"\nasset = \"a.tif\"\nschedule = \"0 5 * * *\"\nfile = \"/x\"\ntimezone = \"UTC\"\n";
        let mut cfg =
            crate::config::parse(file, std::path::Path::new("/t/jobs.toml"), &|_| None).unwrap();
        let mut j = cfg.jobs.remove(0);
        // Placeholders need a watch job: the template is set here rather than through a folder.
        j.item = Some(IdTemplate::parse(item).unwrap());
        j.keep = Some(keep);
        j.alias = alias.map(str::to_owned);
        j
    }

    fn item(id: &str) -> ListedItem {
        ListedItem {
            id: id.to_owned(),
            properties: serde_json::json!({}),
        }
    }

    fn ids(plan: &Plan) -> Vec<&str> {
        plan.delete.iter().map(|d| d.id.as_str()).collect()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn an_age_rule_deletes_only_own_old_items_oldest_first() {
        let r = Retention::for_job(&spec(
            "s2-%Y-%m-%d",
            Keep::Age(3 * DAY),
            Some("s2-2020-01-01"),
        ))
        .unwrap();
        let items: Vec<_> = [
            "s2-2026-03-10",
            "s2-2026-03-01",
            "s2-2026-03-07",
            "s2-2026-03-06",
            "s1-2026-03-01",
            "hand-made",
            "s2-2020-01-01",
        ]
        .map(item)
        .into();
        let plan = r.plan(&items, utc("2026-03-10T12:00:00Z"), &[], 100);
        // 03-07 00:00 is three and a half days before now; 03-10 is today.
        assert_eq!(
            ids(&plan),
            ["s2-2026-03-01", "s2-2026-03-06", "s2-2026-03-07"]
        );
        assert_eq!(plan.own, 5);
        assert_eq!(plan.left, 0);
        assert_eq!(plan.delete[0].from, TimeFrom::Id);
        assert!(
            plan.delete[0].why.contains("older than 3days"),
            "{}",
            plan.delete[0].why
        );
        // The item a run just published is never deleted, however old its date.
        let plan = r.plan(&items, utc("2026-03-10T12:00:00Z"), &["s2-2026-03-01"], 100);
        assert_eq!(ids(&plan), ["s2-2026-03-06", "s2-2026-03-07"]);
    }

    #[test]
    fn a_count_rule_keeps_the_newest() {
        let r = Retention::for_job(&spec("s2-%Y-%m-%d", Keep::Count(2), None)).unwrap();
        let items: Vec<_> = [
            "s2-2026-03-02",
            "s2-2026-03-04",
            "s2-2026-03-01",
            "s2-2026-03-03",
        ]
        .map(item)
        .into();
        let plan = r.plan(&items, utc("2026-03-10T00:00:00Z"), &[], 100);
        assert_eq!(ids(&plan), ["s2-2026-03-01", "s2-2026-03-02"]);
        assert!(
            plan.delete[0].why.contains("newest 2"),
            "{}",
            plan.delete[0].why
        );
    }

    #[test]
    fn the_bound_leaves_the_newest_condemned_for_next_time() {
        let r = Retention::for_job(&spec("s2-%Y-%m-%d", Keep::Count(1), None)).unwrap();
        let items: Vec<_> = (1..=9).map(|d| item(&format!("s2-2026-03-0{d}"))).collect();
        let plan = r.plan(&items, utc("2026-03-10T00:00:00Z"), &[], 3);
        assert_eq!(
            ids(&plan),
            ["s2-2026-03-01", "s2-2026-03-02", "s2-2026-03-03"]
        );
        assert_eq!(plan.left, 5);
    }

    #[test]
    fn without_a_date_in_the_id_the_items_datetime_decides_and_unknown_is_kept() {
        let r = Retention::for_job(&spec("radar-{stem}", Keep::Age(DAY), None)).unwrap();
        let at = |id: &str, p: Value| ListedItem {
            id: id.to_owned(),
            properties: p,
        };
        let items = [
            at(
                "radar-a",
                serde_json::json!({"datetime": "2026-03-01T00:00:00Z"}),
            ),
            at(
                "radar-b",
                serde_json::json!({"datetime": null, "start_datetime": "2026-03-01T00:00:00Z", "end_datetime": "2026-03-02T00:00:00+01:00"}),
            ),
            at(
                "radar-c",
                serde_json::json!({"datetime": "2026-03-09T23:00:00Z"}),
            ),
            at("radar-d", serde_json::json!({"datetime": "not a time"})),
            at(
                "other",
                serde_json::json!({"datetime": "2026-03-01T00:00:00Z"}),
            ),
        ];
        let plan = r.plan(&items, utc("2026-03-10T00:00:00Z"), &[], 100);
        assert_eq!(ids(&plan), ["radar-a", "radar-b"]);
        assert_eq!(plan.delete[1].from, TimeFrom::EndDatetime);
        assert_eq!(plan.delete[1].time, utc("2026-03-01T23:00:00Z"));
        assert_eq!(plan.undated, ["radar-d"]);
    }

    #[test]
    fn the_alias_is_never_deleted_even_when_the_template_could_produce_it() {
        let r = Retention::for_job(&spec("s2-{stem}", Keep::Count(1), Some("s2-current"))).unwrap();
        let at = |id: &str, t: &str| ListedItem {
            id: id.to_owned(),
            properties: serde_json::json!({ "datetime": t }),
        };
        let items = [
            at("s2-current", "2026-03-01T00:00:00Z"),
            at("s2-x", "2026-03-05T00:00:00Z"),
            at("s2-y", "2026-03-02T00:00:00Z"),
        ];
        let plan = r.plan(&items, utc("2026-03-10T00:00:00Z"), &[], 100);
        assert_eq!(ids(&plan), ["s2-y"]);
    }

    /// A collection in memory that logs every call and refuses, as the server, to delete an
    /// item that still has assets; `broken` items refuse every delete.
    #[derive(Default)]
    struct Fake {
        items: std::sync::Mutex<Vec<(String, Vec<String>)>>,
        calls: std::sync::Mutex<Vec<String>>,
        broken: Vec<String>,
    }

    fn refused(what: &str) -> StacError {
        StacError {
            step: stac_client::Step::DeleteItem,
            method: "DELETE",
            url: what.to_owned(),
            status: Some(reqwest::StatusCode::BAD_REQUEST),
            description: "refused".to_owned(),
            class: stac_client::ErrorClass::RequestWrong,
            retry_after: None,
            source: None,
        }
    }

    impl ItemStore for Fake {
        async fn list_items(&self, _: &str) -> Result<Vec<ListedItem>, StacError> {
            Ok(self
                .items
                .lock()
                .unwrap()
                .iter()
                .map(|(id, _)| item(id))
                .collect())
        }
        async fn list_assets(&self, _: &str, i: &str) -> Result<Vec<String>, StacError> {
            let items = self.items.lock().unwrap();
            Ok(items
                .iter()
                .find(|(id, _)| id == i)
                .map(|(_, a)| a.clone())
                .unwrap_or_default())
        }
        async fn delete_asset(&self, _: &str, i: &str, a: &str) -> Result<(), StacError> {
            self.calls.lock().unwrap().push(format!("asset {i}/{a}"));
            if self.broken.iter().any(|b| b == i) {
                return Err(refused(i));
            }
            let mut items = self.items.lock().unwrap();
            if let Some((_, assets)) = items.iter_mut().find(|(id, _)| id == i) {
                assets.retain(|x| x != a);
            }
            Ok(())
        }
        async fn delete_item(&self, _: &str, i: &str) -> Result<(), StacError> {
            self.calls.lock().unwrap().push(format!("item {i}"));
            let mut items = self.items.lock().unwrap();
            match items.iter().position(|(id, a)| id == i && a.is_empty()) {
                Some(at) => {
                    items.remove(at);
                    Ok(())
                }
                None => Err(refused(i)),
            }
        }
    }

    #[test]
    fn deletes_assets_then_the_item_counts_each_and_goes_on_after_a_failure() {
        let fake = Fake {
            items: std::sync::Mutex::new(vec![
                ("s2-2026-03-01".into(), vec!["a.tif".into(), "b.png".into()]),
                ("s2-2026-03-02".into(), vec!["a.tif".into()]),
                ("s2-2026-03-03".into(), vec![]),
                ("s2-2026-03-09".into(), vec!["a.tif".into()]),
            ]),
            broken: vec!["s2-2026-03-02".into()],
            ..Fake::default()
        };
        let rule = Retention::for_job(&spec("s2-%Y-%m-%d", Keep::Age(3 * DAY), None)).unwrap();
        let recorder = crate::observe::metrics::recorder().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut seen = Vec::new();
        let done = ::metrics::with_local_recorder(&recorder, || {
            runtime.block_on(prune(
                &fake,
                "s2",
                &rule,
                utc("2026-03-10T00:00:00Z"),
                &[],
                false,
                |d, o| seen.push((d.id.clone(), matches!(o, Deleted::Done { .. }))),
            ))
        })
        .unwrap();
        assert_eq!(done.failures(), 1);
        assert_eq!(
            seen,
            [
                ("s2-2026-03-01".to_owned(), true),
                ("s2-2026-03-02".to_owned(), false),
                ("s2-2026-03-03".to_owned(), true),
            ]
        );
        assert_eq!(
            *fake.calls.lock().unwrap(),
            [
                "asset s2-2026-03-01/a.tif",
                "asset s2-2026-03-01/b.png",
                "item s2-2026-03-01",
                "asset s2-2026-03-02/a.tif",
                "item s2-2026-03-03",
            ]
        );
        let text = recorder.handle().render();
        for line in [
            "stac_uploadd_retention_deleted_items_total{job_name=\"s2\"} 2",
            "stac_uploadd_retention_failures_total{job_name=\"s2\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }

        // A dry run asks for nothing but the listing.
        fake.calls.lock().unwrap().clear();
        let done = runtime
            .block_on(prune(
                &fake,
                "s2",
                &rule,
                utc("2026-03-10T00:00:00Z"),
                &[],
                true,
                |_, _| {},
            ))
            .unwrap();
        assert!(matches!(done.outcomes[..], [Deleted::DryRun]), "{done:?}");
        assert!(fake.calls.lock().unwrap().is_empty());
    }
}
