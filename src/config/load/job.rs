use super::*;

/// The bounds of a job's `concurrency`.
pub(super) const CONCURRENCY: std::ops::RangeInclusive<i64> = 1..=64;

/// A job with literal ids against a watch job whose ids come from file names: they meet when
/// a file the watch takes (its pattern matches, its `ignore` globs do not) renders the literal
/// ids. `radar.zip` published by a schedule and `{name}` on `*.zip` meet on a file named
/// `radar.zip`, unless the watch ignores it (`ignore = ["radar.zip"]`). `Some(Some(file))` when
/// they meet, on that file; `Some(None)` when they do not, or where the templates' form leaves the
/// file open (time fields, a `{stem}` without its `{ext}`: not judged here); `None` for any other
/// pair.
fn literal_against_watch(a: &RawJob, b: &RawJob) -> Option<Option<String>> {
    let literal = |j: &RawJob| {
        !j.asset.get_ref().contains(['{', '%'])
            && j.item
                .as_ref()
                .is_none_or(|i| !i.get_ref().contains(['{', '%']))
    };
    let (fixed, watch_job) = match (literal(a), literal(b)) {
        (true, false) if b.watch.is_some() => (a, b),
        (false, true) if a.watch.is_some() => (b, a),
        _ => return None,
    };
    let watch = watch_job.watch.as_ref()?.get_ref();
    let item = match (&fixed.item, &watch_job.item) {
        (None, None) => overlap::Renders::Any,
        (Some(id), Some(template)) => overlap::file_for_id(template.get_ref(), id.get_ref()),
        _ => overlap::Renders::Never,
    };
    let asset = overlap::file_for_id(watch_job.asset.get_ref(), fixed.asset.get_ref());
    use overlap::Renders::{Any, Never, Only, Unknown};
    let file = match (item, asset) {
        (Never, _) | (_, Never) | (Unknown, _) | (_, Unknown) => return Some(None),
        (Only(x), Only(y)) if x != y => return Some(None),
        (Only(f), _) | (_, Only(f)) => f,
        // Both literal: not a watch job's template after all.
        (Any, Any) => return None,
    };
    Some(watch_takes(watch, &file).then_some(file))
}

/// Whether the watch takes a file named `name` in its folder: its pattern matches and its
/// `ignore` globs (or the default ones) do not. Globs that do not compile are reported where
/// they are checked; here they take nothing.
fn watch_takes(watch: &RawWatch, name: &str) -> bool {
    let Ok(pattern) = Glob::new(watch.pattern.get_ref()) else {
        return false;
    };
    let mut ignore = GlobSetBuilder::new();
    match &watch.ignore {
        Some(globs) => {
            for g in globs {
                let Ok(glob) = Glob::new(g.get_ref()) else {
                    return false;
                };
                ignore.add(glob);
            }
        }
        None => {
            for g in DEFAULT_IGNORE {
                let Ok(glob) = Glob::new(g) else {
                    return false;
                };
                ignore.add(glob);
            }
        }
    }
    let Ok(ignore) = ignore.build() else {
        return false;
    };
    pattern.compile_matcher().is_match(name) && !ignore.is_match(name)
}

/// The longest job name: it is repeated in every log line, metric series and state record.
pub(super) const MAX_JOB_NAME: usize = 64;

impl Checker<'_> {
    pub(super) fn check_name<'r>(
        &mut self,
        raw: &'r Spanned<String>,
        seen: &mut HashMap<&'r str, usize>,
    ) {
        let name = raw.get_ref().as_str();
        if name.chars().count() > MAX_JOB_NAME {
            let shown: String = name.chars().take(32).collect();
            self.diag.at(
                &raw.span(),
                format!(
                    "job name {shown:?}... is {} characters long: expected at most {MAX_JOB_NAME} (the name is in every log line, metric and state record of the job)",
                    name.chars().count()
                ),
            );
            return;
        }
        let bad = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        if name.is_empty() {
            self.diag.at(
                &raw.span(),
                "job name is empty: expected letters, digits, '.', '_' or '-'",
            );
        } else if let Some(c) = bad {
            self.diag.at(
                &raw.span(),
                format!(
                    "invalid job name {name:?} ({c:?} not allowed): expected only letters, digits, '.', '_' or '-' (the name is used in logs, metrics and file names)"
                ),
            );
        } else if let Some(&first) = seen.get(name) {
            let (line, _) = self.diag.line_col(first);
            self.diag.at(
                &raw.span(),
                format!("duplicate job name {name:?}: already used by the job at line {line}; names must be unique"),
            );
        } else {
            seen.insert(name, raw.span().start);
        }
    }

    /// Two jobs that can write to one asset overwrite each other's uploads: the second is
    /// refused. They can when their collection is the same and their item and asset templates
    /// can render the same ids, for any files their patterns match (`crate::config::overlap`):
    /// `{name}` on `*.tif` and `{stem}.tif` on `*.tif` can, `{name}` on `*.tif` and on `*.csv`
    /// cannot.
    pub(super) fn check_target<'r>(
        &mut self,
        job: &'r RawJob,
        targets: &mut HashMap<&'r str, Vec<&'r RawJob>>,
    ) {
        let collection = job.collection.get_ref().as_str();
        if collection.trim().is_empty() || job.asset.get_ref().trim().is_empty() {
            return;
        }
        let pattern = |j: &RawJob| {
            j.watch
                .as_ref()
                .map(|w| w.get_ref().pattern.get_ref().clone())
        };
        let mine = pattern(job);
        let earlier = targets.entry(collection).or_default();
        let same = earlier.iter().find(|other| {
            let theirs = pattern(other);
            if let Some(meet) = literal_against_watch(job, other) {
                return meet.is_some();
            }
            let items = match (&job.item, &other.item) {
                (None, None) => true,
                (Some(a), Some(b)) => overlap::can_collide(
                    a.get_ref(),
                    mine.as_deref(),
                    b.get_ref(),
                    theirs.as_deref(),
                ),
                _ => false,
            };
            items
                && overlap::can_collide(
                    job.asset.get_ref(),
                    mine.as_deref(),
                    other.asset.get_ref(),
                    theirs.as_deref(),
                )
        });
        let Some(first) = same else {
            earlier.push(job);
            return;
        };
        let (line, _) = self.diag.line_col(first.name.span().start);
        let item = match (&job.item, &first.item) {
            (Some(a), Some(b)) if a.get_ref() == b.get_ref() => format!(", item {:?}", a.get_ref()),
            (Some(a), Some(b)) => format!(", items {:?} and {:?}", b.get_ref(), a.get_ref()),
            _ => " (a collection asset)".to_owned(),
        };
        let assets = if job.asset.get_ref() == first.asset.get_ref() {
            format!("asset {:?}", job.asset.get_ref())
        } else {
            format!(
                "assets {:?} and {:?}",
                first.asset.get_ref(),
                job.asset.get_ref()
            )
        };
        let how = match (literal_against_watch(job, first), pattern(first), &mine) {
            (Some(Some(file)), _, _) => format!(
                " (a file named {file:?} taken by the watch would land there: list it in the watch's ignore globs, or narrow its pattern)"
            ),
            (_, None, None) => String::new(),
            (_, theirs, mine) => format!(
                " (for files matching {} and {}, the ids can be the same)",
                theirs.map_or_else(|| "no pattern".to_owned(), |p| format!("{p:?}")),
                mine.as_ref()
                    .map_or_else(|| "no pattern".to_owned(), |p| format!("{p:?}")),
            ),
        };
        self.diag.at(
            &job.asset.span(),
            format!(
                "job {:?} uploads to the same asset as job {:?} (line {line}): collection {collection:?}{item}, {assets}{how}; two jobs on one asset overwrite each other's uploads, expected one job per asset",
                job.name.get_ref(),
                first.name.get_ref(),
            ),
        );
    }

    /// A literal id (a collection): the server's charset, located at the first bad character.
    pub(super) fn literal_id(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
        let id = raw.get_ref();
        if id.contains("${") {
            // Reported as an unexpanded variable.
            return None;
        }
        match rules::check_id(id) {
            Ok(()) => Some(id.clone()),
            Err(e) => {
                let at = id
                    .char_indices()
                    .find(|&(_, c)| !rules::is_id_char(c))
                    .map_or(0, |(i, _)| i);
                self.at_in_string(raw, at, format!("{key}: {e}"));
                None
            }
        }
    }

    /// The asset id's extension against the server's table and the asset's media type, as far
    /// as it is known before a file is seen; and `.{ext}` only where every file has an extension.
    pub(super) fn asset_extension(
        &mut self,
        raw: &RawJob,
        asset: &IdTemplate,
        media_type: Option<&str>,
    ) {
        let pattern = raw
            .watch
            .as_ref()
            .map(|w| w.get_ref().pattern.get_ref().as_str());
        let from_pattern = pattern.and_then(server_rules::pattern_extensions);
        let judged: Vec<(String, String)> = match (asset.extension(), &from_pattern) {
            (IdExtension::Literal(ext), _) => vec![(ext, String::new())],
            (IdExtension::FileExt | IdExtension::FileName, Some(exts)) => exts
                .iter()
                .map(|e| {
                    (
                        e.clone(),
                        format!(
                            " (the extension of the files pattern {:?} matches)",
                            pattern.unwrap_or_default()
                        ),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        for (ext, whence) in judged {
            if let Some(c) = ext.chars().find(|&c| !rules::is_id_char(c)) {
                self.diag.at(
                    &raw.asset.span(),
                    format!(
                        "asset {:?} ends in \".{ext}\"{whence}, which holds {c:?}: ids hold only {}",
                        asset.as_str(),
                        rules::ID_CHARS
                    ),
                );
                return;
            }
            if let Err(why) = rules::check_extension(&ext, media_type) {
                self.diag.at(
                    &raw.asset.span(),
                    format!(
                        "asset {:?} ends in \".{ext}\"{whence}: {why}",
                        asset.as_str()
                    ),
                );
                return;
            }
        }
        if let Some(offset) = asset.dot_ext_offset()
            && raw.watch.is_some()
            && from_pattern.is_none()
        {
            self.at_in_string(
                &raw.asset,
                offset,
                format!(
                    "asset {:?}: a file without an extension (e.g. \"readme\") gives an id ending in \".\" (\"readme.\"), which the server refuses; the pattern {:?} does not guarantee an extension: expected a pattern such as \"*.tif\" that does",
                    asset.as_str(),
                    pattern.unwrap_or_default()
                ),
            );
        }
    }

    pub(super) fn job(&mut self, raw: &RawJob, defaults: &Layer) -> Option<JobSpec> {
        let name = raw.name.get_ref().clone();
        let own = self.layer(raw.settings());
        self.check_delay_order(&own, defaults);
        let settings = own.or(defaults);
        let resolved = settings.resolve();
        let tz = resolved.timezone;
        let bandwidth_limit = resolved.bandwidth();
        // A job whose trigger names one file: file-name placeholders have nothing to read.
        let one_file = raw.watch.is_none()
            && (raw.file.is_some() || raw.schedule.is_some() || raw.every.is_some());

        let collection = self
            .non_empty(&raw.collection, "collection")
            .and_then(|_| self.literal_id(&raw.collection, "collection"));
        // `None`: refused; `Some(None)`: a collection asset.
        let item = match &raw.item {
            Some(item) if item.get_ref().trim().is_empty() => {
                self.diag.at(
                    &item.span(),
                    "item is empty: expected an item id, or leave item out for a collection asset",
                );
                None
            }
            Some(item) => self.id_template(item, "item", one_file).map(Some),
            None => Some(None),
        };
        let asset = if raw.asset.get_ref().trim().is_empty() {
            self.diag.at(
                &raw.asset.span(),
                "asset is empty: expected an asset id, or a template such as \"{name}\" for watch jobs",
            );
            None
        } else {
            self.id_template(&raw.asset, "asset", one_file)
        };

        let trigger = self.trigger(raw, &name, &own, &settings);
        // A sidecar's relative path: in the watched folder (beside the files it describes), else
        // beside the job file, as every other relative path.
        let sidecar_base = match &trigger {
            Some(TriggerSpec::Watch(w)) => w.dir.clone(),
            _ => self.folder.clone(),
        };
        let item_metadata = raw.item_metadata.as_ref().map(|m| {
            let timeout = resolved.policy.run_timeout;
            self.item_metadata(m, raw, tz, one_file, timeout, &sidecar_base)
        });
        let asset_metadata = raw
            .asset_metadata
            .as_ref()
            .map(|m| self.asset_metadata(m, asset.as_ref(), tz, one_file));
        if let Some(asset) = &asset {
            let media_type = match &asset_metadata {
                Some(Some(m)) => Some(m.media_type.as_str()),
                _ => None,
            };
            // A refused type is reported where it is written; the id is judged without it.
            self.asset_extension(raw, asset, media_type);
        }

        if let (Some(collection), Some(item), Some(asset)) = (&collection, &item, &asset) {
            self.check_path_length(raw, collection, item.as_ref(), asset);
        }
        // A templated asset names a new asset for each file or run: unless the job creates it,
        // the server has none of them, and every upload is a 404.
        if let Some(asset) = &asset
            && !asset.is_literal()
            && raw.asset_metadata.is_none()
        {
            self.diag.at(
                &raw.asset.span(),
                format!(
                    "asset {:?} is rendered for each {}, and the job has no [job.asset_metadata] to create it: the server holds no such asset, so every upload would answer 404; expected [job.asset_metadata] with type = \"<media type>\" (or a literal asset id that exists)",
                    asset.as_str(),
                    if asset.uses_file_name() { "file" } else { "run" }
                ),
            );
        }

        let uses_local_time = item
            .as_ref()
            .is_some_and(|i| i.as_ref().is_some_and(IdTemplate::uses_time))
            || asset.as_ref().is_some_and(IdTemplate::uses_time)
            || matches!(&item_metadata, Some(Some(m)) if m.uses_time())
            || matches!(&asset_metadata, Some(Some(m)) if m.uses_time())
            || settings
                .bandwidth_timetable
                .as_ref()
                .is_some_and(|t| !t.0.is_empty());
        let is_cron = matches!(trigger, Some(TriggerSpec::Cron { .. }));
        if let Some(tz) = &raw.timezone
            && trigger.is_some()
            && !is_cron
            && !uses_local_time
        {
            self.diag.at(
                &tz.span(),
                "timezone only applies to cron schedules, time fields (%Y, %m, %d, ...) in ids and metadata, and bandwidth timetables, and this job has none of them: remove it",
            );
        }
        let (jitter, catch_up) = self.schedule_options(raw, &own, &settings, trigger.as_ref());
        let keep = match &raw.keep {
            Some(k) => self.keep(k, item.as_ref()).map(Some),
            None => Some(None),
        };
        let concurrency = self.concurrency(raw, trigger.as_ref());

        Some(JobSpec {
            name,
            collection: collection?,
            item: item?,
            asset: asset?,
            timezone: tz,
            trigger: trigger?,
            policy: resolved.policy,
            upload: resolved.upload,
            jitter: jitter?,
            catch_up,
            bandwidth_limit,
            item_metadata: written(item_metadata)?,
            asset_metadata: written(asset_metadata)?,
            alias: None,
            keep: keep?,
            assets: Vec::new(),
            concurrency: concurrency?,
        })
    }

    /// `keep`: a count or a duration, on a job whose item template tells its own items from
    /// others. `item` is `None` when the item was refused (reported there).
    fn keep(&mut self, raw: &Spanned<RawKeep>, item: Option<&Option<IdTemplate>>) -> Option<Keep> {
        let keep = match raw.get_ref() {
            RawKeep::Count(n) if (1..=MAX_KEEP_COUNT).contains(n) => {
                Keep::Count(u32::try_from(*n).expect("bounded above"))
            }
            RawKeep::Count(n) => {
                self.diag.at(
                    &raw.span(),
                    format!(
                        "keep = {n} is out of range: expected a number of items from 1 to {MAX_KEEP_COUNT}, or a duration such as \"30d\""
                    ),
                );
                return None;
            }
            RawKeep::Age(text) => match humantime::parse_duration(text.trim()) {
                Ok(d) if !d.is_zero() => Keep::Age(d),
                Ok(_) => {
                    self.diag.at(
                        &raw.span(),
                        "keep must be longer than 0 (it would delete every item)",
                    );
                    return None;
                }
                Err(e) => {
                    self.diag.at(
                        &raw.span(),
                        format!(
                            "invalid duration {text:?} for keep: {e}; expected e.g. \"30d\" or \"12h\", or a number of items such as 30"
                        ),
                    );
                    return None;
                }
            },
        };
        let item = match item {
            None => return Some(keep),
            Some(None) => {
                self.diag.at(
                    &raw.span(),
                    "keep deletes a job's old items, and this job publishes a collection asset (it has no item): remove keep",
                );
                return None;
            }
            Some(Some(item)) => item,
        };
        let parts = item.parts();
        let problem = if item.is_literal() {
            Some(
                "is the same id every run: there is nothing to prune (expected time fields such as %Y-%m-%d, or {stem}, in item)",
            )
        } else if !parts
            .iter()
            .any(|p| matches!(p, IdPart::Text(_) | IdPart::Time(_)))
        {
            Some(
                "can produce any id: every item of the collection would count as this job's (expected literal text or time fields in item besides placeholders, e.g. \"radar-{stem}\")",
            )
        } else {
            None
        };
        if let Some(problem) = problem {
            self.diag.at(
                &raw.span(),
                format!(
                    "keep deletes the items whose id the job's item template can produce, and item {:?} {problem}",
                    item.as_str()
                ),
            );
            return None;
        }
        Some(keep)
    }

    /// `collection/item/asset` within the server's 255 characters, for the shortest ids the
    /// templates can render (so only a path too long for every file and run is refused; the
    /// run checks each rendered path before anything is sent).
    fn check_path_length(
        &mut self,
        raw: &RawJob,
        collection: &str,
        item: Option<&IdTemplate>,
        asset: &IdTemplate,
    ) {
        let least =
            collection.chars().count() + item.map_or(0, |i| i.min_len() + 1) + 1 + asset.min_len();
        if least <= rules::MAX_PATH_LEN {
            return;
        }
        let path = match item {
            Some(i) => format!("{collection}/{i}/{asset}"),
            None => format!("{collection}/{asset}"),
        };
        let at_least = if asset.is_literal() && item.is_none_or(IdTemplate::is_literal) {
            ""
        } else {
            "at least "
        };
        self.diag.at(
            &raw.asset.span(),
            format!(
                "the asset path {path:?} is {at_least}{least} characters long: the server stores paths (collection/item/asset) of at most {} (a longer one fails with 500 after the item is created); expected shorter ids",
                rules::MAX_PATH_LEN
            ),
        );
    }

    /// `concurrency`: 1 to 64, for watch jobs only (a schedule's runs are one at a time); the
    /// default when not set. `None` when refused.
    pub(super) fn concurrency(
        &mut self,
        raw: &RawJob,
        trigger: Option<&TriggerSpec>,
    ) -> Option<usize> {
        let Some(key) = raw.concurrency.as_ref() else {
            return Some(super::super::DEFAULT_CONCURRENCY);
        };
        let (n, span) = self.int_as::<usize>(Some(key), "concurrency", CONCURRENCY)?;
        if matches!(
            trigger,
            Some(TriggerSpec::Cron { .. } | TriggerSpec::Every { .. })
        ) {
            self.diag.at(
                &span,
                "concurrency only applies to watch jobs (a schedule or every job runs one run at a time): remove it",
            );
            return None;
        }
        Some(n)
    }

    /// `jitter` and `catch_up`: for schedule and every jobs, the jitter shorter than the
    /// interval. `None` for a jitter refused.
    pub(super) fn schedule_options(
        &mut self,
        raw: &RawJob,
        own: &Layer,
        settings: &Layer,
        trigger: Option<&TriggerSpec>,
    ) -> (Option<Option<Duration>>, bool) {
        let (interval, key) = match trigger {
            None => return (Some(None), false),
            Some(TriggerSpec::Watch(_)) => {
                for (key, span) in [
                    ("jitter", own.jitter.as_ref().map(|v| &v.1)),
                    ("catch_up", own.catch_up.as_ref().map(|v| &v.1)),
                ] {
                    if let Some(span) = span {
                        self.diag.at(
                            span,
                            format!("{key} only applies to schedule and every jobs, and this job watches a folder: remove it"),
                        );
                    }
                }
                return (Some(None), false);
            }
            Some(TriggerSpec::Cron { schedule, .. }) => (
                schedule
                    .min_interval(chrono::Utc::now(), 24)
                    .and_then(|d| d.to_std().ok()),
                raw.schedule.as_ref().map(Spanned::span),
            ),
            Some(TriggerSpec::Every { interval, .. }) => {
                (Some(*interval), raw.every.as_ref().map(Spanned::span))
            }
        };
        let catch_up = settings.catch_up.as_ref().is_some_and(|v| v.0);
        let Some((jitter, jitter_span)) = settings.jitter.clone() else {
            return (Some(None), catch_up);
        };
        if jitter.is_zero() {
            return (Some(None), catch_up);
        }
        let Some(interval) = interval.filter(|i| jitter >= *i) else {
            return (Some(Some(jitter)), catch_up);
        };
        // Blame the job's own jitter, or else its trigger: the inherited jitter suits others.
        let (span, whose) = match (&own.jitter, key) {
            (Some(_), _) | (None, None) => (jitter_span.clone(), String::new()),
            (None, Some(k)) => {
                let (line, _) = self.diag.line_col(jitter_span.start);
                (k, format!(" (from [defaults], line {line})"))
            }
        };
        self.diag.at(
            &span,
            format!(
                "jitter = {}{whose} is not shorter than the job's interval ({}): expected a jitter below the time between runs",
                fmt_duration(jitter),
                fmt_duration(interval)
            ),
        );
        (None, catch_up)
    }

    /// An item or asset id. Placeholders of the file name only apply to watch jobs.
    pub(super) fn id_template(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        one_file: bool,
    ) -> Option<IdTemplate> {
        if raw.get_ref().contains("${") {
            // Reported as an unexpanded variable.
            return None;
        }
        let template = match IdTemplate::parse(raw.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                self.template_error(raw, e.for_key(key));
                return None;
            }
        };
        if one_file && template.uses_file_name() {
            self.diag.at(
                &raw.span(),
                format!(
                    "{key} {:?} uses placeholders, which only apply to watch jobs: a schedule uploads one file, expected a literal {key} id (strftime fields such as %Y-%m-%d are fine)",
                    template.as_str()
                ),
            );
            return None;
        }
        if let Some(id) = template.literal()
            && let Err(e) = rules::check_id(&id)
        {
            self.diag.at(&raw.span(), format!("{key}: {e}"));
            return None;
        }
        Some(template)
    }
}
