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
fn literal_against_watch(
    (a, a_asset): (&RawJob, &str),
    (b, b_asset): (&RawJob, &str),
) -> Option<Option<String>> {
    let literal = |(j, asset): (&RawJob, &str)| {
        !asset.contains(['{', '%'])
            && j.item
                .as_ref()
                .is_none_or(|i| !i.get_ref().contains(['{', '%']))
    };
    let ((fixed, fixed_asset), (watch_job, watch_asset)) =
        match (literal((a, a_asset)), literal((b, b_asset))) {
            (true, false) if b.watch.is_some() => ((a, a_asset), (b, b_asset)),
            (false, true) if a.watch.is_some() => ((b, b_asset), (a, a_asset)),
            _ => return None,
        };
    let watch = watch_job.watch.as_ref()?.get_ref();
    let item = match (&fixed.item, &watch_job.item) {
        (None, None) => overlap::Renders::Any,
        (Some(id), Some(template)) => overlap::file_for_id(template.get_ref(), id.get_ref()),
        _ => overlap::Renders::Never,
    };
    let asset = overlap::file_for_id(watch_asset, fixed_asset);
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
        let mine_ids = job.asset_ids();
        if collection.trim().is_empty()
            || mine_ids.is_empty()
            || mine_ids.iter().any(|a| a.get_ref().trim().is_empty())
        {
            return;
        }
        let pattern = |j: &RawJob| {
            j.watch
                .as_ref()
                .map(|w| w.get_ref().pattern.get_ref().clone())
        };
        let mine = pattern(job);
        let earlier = targets.entry(collection).or_default();
        // The first pair of assets (this job's, an earlier job's) that can be the same.
        let same = earlier.iter().find_map(|other| {
            let theirs = pattern(other);
            mine_ids.iter().find_map(|my_asset| {
                other
                    .asset_ids()
                    .into_iter()
                    .find(|their_asset| {
                        if let Some(meet) = literal_against_watch(
                            (job, my_asset.get_ref()),
                            (other, their_asset.get_ref()),
                        ) {
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
                                my_asset.get_ref(),
                                mine.as_deref(),
                                their_asset.get_ref(),
                                theirs.as_deref(),
                            )
                    })
                    .map(|their_asset| (*other, *my_asset, their_asset))
            })
        });
        let Some((first, my_asset, their_asset)) = same else {
            earlier.push(job);
            return;
        };
        let (line, _) = self.diag.line_col(first.name.span().start);
        let item = match (&job.item, &first.item) {
            (Some(a), Some(b)) if a.get_ref() == b.get_ref() => format!(", item {:?}", a.get_ref()),
            (Some(a), Some(b)) => format!(", items {:?} and {:?}", b.get_ref(), a.get_ref()),
            _ => " (a collection asset)".to_owned(),
        };
        let assets = if my_asset.get_ref() == their_asset.get_ref() {
            format!("asset {:?}", my_asset.get_ref())
        } else {
            format!(
                "assets {:?} and {:?}",
                their_asset.get_ref(),
                my_asset.get_ref()
            )
        };
        let how = match (
            literal_against_watch((job, my_asset.get_ref()), (first, their_asset.get_ref())),
            pattern(first),
            &mine,
        ) {
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
            &my_asset.span(),
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
        at: &Spanned<String>,
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
                    &at.span(),
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
                    &at.span(),
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
                at,
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
        // Read first: its captures are placeholders of the templates checked below.
        let name_pattern = self.name_pattern(raw);
        self.name_pattern = name_pattern.clone().flatten();

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
        let (asset, asset_metadata, assets) = match (&raw.asset, &raw.assets) {
            (Some(at), None) => {
                let (asset, meta) = self.one_asset(raw, at, &collection, &item, tz, one_file);
                (asset, meta, Some(Vec::new()))
            }
            (None, Some(list)) => {
                let assets = self.item_assets(raw, list, &collection, &item, tz, one_file);
                let first = assets
                    .as_ref()
                    .and_then(|a| a.first())
                    .map(|a| a.id.clone());
                if let Some(m) = &raw.asset_metadata {
                    self.diag.at(
                        &m.span(),
                        "[job.asset_metadata] does not apply to a job with [[job.assets]]: expected the metadata of each asset in its own [job.assets.metadata] table",
                    );
                }
                (first, Some(None), assets)
            }
            (Some(at), Some(_)) => {
                self.diag.at(
                    &at.span(),
                    format!("job {name:?} has both asset and [[job.assets]]: expected asset (one file to one asset) or [[job.assets]] tables (an item with several assets), not both"),
                );
                (None, None, None)
            }
            (None, None) => {
                self.diag.at(
                    &raw.name.span(),
                    format!("job {name:?} has no asset: expected asset = \"<id>\", or [[job.assets]] tables with id and file"),
                );
                (None, None, None)
            }
        };
        let alias = self.alias(raw, &item);
        let keep = match &raw.keep {
            Some(k) => self.keep(k, item.as_ref()).map(Some),
            None => Some(None),
        };
        let concurrency = self.concurrency(raw, trigger.as_ref());
        let ping_url = self.ping_url(raw);

        let uses_local_time = item
            .as_ref()
            .is_some_and(|i| i.as_ref().is_some_and(IdTemplate::uses_time))
            || asset.as_ref().is_some_and(IdTemplate::uses_time)
            || matches!(&item_metadata, Some(Some(m)) if m.uses_time())
            || matches!(&asset_metadata, Some(Some(m)) if m.uses_time())
            || assets.as_ref().is_some_and(|list| {
                list.iter().any(|a| {
                    a.id.uses_time() || a.metadata.as_ref().is_some_and(AssetMetadata::uses_time)
                })
            })
            || matches!(&item_metadata, Some(Some(m)) if !m.capture_times().is_empty())
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
            asset_metadata: asset_metadata?,
            assets: assets?,
            alias: alias?,
            keep: keep?,
            concurrency: concurrency?,
            ping_url: ping_url?,
            verify_public: resolved.verify_public,
            name_pattern: name_pattern?,

            validate: resolved.validate,
        })
    }

    /// `name_pattern`: a regex with named captures, for jobs that see files (a watch, or a
    /// `file`). `None` when refused; `Some(None)` when not set.
    fn name_pattern(&mut self, raw: &RawJob) -> Option<Option<NamePattern>> {
        let Some(at) = &raw.name_pattern else {
            return Some(None);
        };
        if raw.watch.is_none() && raw.file.is_none() {
            self.diag.at(
                &at.span(),
                "name_pattern applies to jobs that see files ([job.watch], or file = \"...\" with a schedule), and this job's files are its [[job.assets]]: remove it",
            );
            return None;
        }
        match NamePattern::new(at.get_ref()) {
            Ok(p) => Some(Some(p)),
            Err(e) => {
                self.diag.at(&at.span(), e);
                None
            }
        }
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

    /// `asset` (with `[job.asset_metadata]`) of a one-file job: its id template and its metadata
    /// (`None` when refused; `Some(None)` when there is none).
    fn one_asset(
        &mut self,
        raw: &RawJob,
        at: &Spanned<String>,
        collection: &Option<String>,
        item: &Option<Option<IdTemplate>>,
        tz: Tz,
        one_file: bool,
    ) -> (Option<IdTemplate>, Option<Option<AssetMetadata>>) {
        let asset = if at.get_ref().trim().is_empty() {
            self.diag.at(
                &at.span(),
                "asset is empty: expected an asset id, or a template such as \"{name}\" for watch jobs",
            );
            None
        } else {
            self.id_template(at, "asset", one_file)
        };
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
            self.asset_extension(raw, at, asset, media_type);
        }
        if let (Some(collection), Some(item), Some(asset)) = (collection, item, &asset) {
            self.check_path_length(at, collection, item.as_ref(), asset);
        }
        // A templated asset names a new asset for each file or run: unless the job creates it,
        // the server has none of them, and every upload is a 404.
        if let Some(asset) = &asset
            && !asset.is_literal()
            && raw.asset_metadata.is_none()
        {
            self.diag.at(
                &at.span(),
                format!(
                    "asset {:?} is rendered for each {}, and the job has no [job.asset_metadata] to create it: the server holds no such asset, so every upload would answer 404; expected [job.asset_metadata] with type = \"<media type>\" (or a literal asset id that exists)",
                    asset.as_str(),
                    if asset.uses_file_name() { "file" } else { "run" }
                ),
            );
        }
        (asset, written(asset_metadata))
    }

    /// `[[job.assets]]`: each asset's id, file and metadata; ids unique within the job. `None`
    /// when one is refused.
    fn item_assets(
        &mut self,
        raw: &RawJob,
        list: &Spanned<Vec<Spanned<RawAsset>>>,
        collection: &Option<String>,
        item: &Option<Option<IdTemplate>>,
        tz: Tz,
        one_file: bool,
    ) -> Option<Vec<AssetSpec>> {
        let bundle = raw.watch.is_some();
        let mut ok = true;
        if raw.item.is_none() {
            self.diag.at(
                &list.span(),
                "[[job.assets]] needs item: the assets of one run go into one item; set item = \"...\" (e.g. \"s2-%Y-%m-%d\")",
            );
            ok = false;
        }
        if list.get_ref().is_empty() {
            self.diag.at(
                &list.span(),
                "assets is empty: expected at least one [[job.assets]] table with id and file",
            );
            return None;
        }
        // A new item (a templated id) has none of the assets: each must be creatable.
        let new_item = matches!(item, Some(Some(i)) if !i.is_literal());
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for table in list.get_ref() {
            let a = table.get_ref();
            let id = if a.id.get_ref().trim().is_empty() {
                self.diag.at(
                    &a.id.span(),
                    "id is empty: expected an asset id such as \"s2-%Y-%m-%d.tif\"",
                );
                None
            } else {
                self.id_template(&a.id, "asset", one_file)
            };
            if let Some(id) = &id {
                match seen.get(id.as_str()) {
                    Some(&first) => {
                        let (line, _) = self.diag.line_col(first);
                        self.diag.at(
                            &a.id.span(),
                            format!(
                                "asset id {:?} is already used by the asset at line {line}: expected ids unique within the job (two files to one asset overwrite each other)",
                                id.as_str()
                            ),
                        );
                        ok = false;
                    }
                    None => {
                        seen.insert(id.as_str().to_owned(), a.id.span().start);
                    }
                }
            }
            let file = self.asset_file(&a.file, bundle);
            let required = match (&a.required, bundle) {
                (Some(r), false) => {
                    self.diag.at(
                        &r.span(),
                        "required only applies to bundle jobs (a [job.watch] with [[job.assets]]): every asset of a scheduled job is required; remove it",
                    );
                    ok = false;
                    true
                }
                (Some(r), true) => *r.get_ref(),
                (None, _) => true,
            };
            let metadata = a
                .metadata
                .as_ref()
                .map(|m| self.asset_metadata(m, id.as_ref(), tz, one_file));
            if let Some(id) = &id {
                let media_type = match &metadata {
                    Some(Some(m)) => Some(m.media_type.as_str()),
                    _ => None,
                };
                self.asset_extension(raw, &a.id, id, media_type);
                if let (Some(collection), Some(item)) = (collection, item) {
                    self.check_path_length(&a.id, collection, item.as_ref(), id);
                }
                if a.metadata.is_none() && (new_item || !id.is_literal()) {
                    self.diag.at(
                        &table.span(),
                        format!(
                            "asset {:?} has no [job.assets.metadata] to create it, and {}: the server holds no such asset, so its upload would answer 404; expected [job.assets.metadata] with type = \"<media type>\"",
                            id.as_str(),
                            if new_item { "the item is new in each run" } else { "its id is rendered for each run" }
                        ),
                    );
                    ok = false;
                }
            }
            match (id, file, written(metadata)) {
                (Some(id), Some(file), Some(metadata)) => out.push(AssetSpec {
                    id,
                    file,
                    required,
                    metadata,
                }),
                _ => ok = false,
            }
        }
        if bundle && !out.iter().any(|a| a.required) {
            self.diag.at(
                &list.span(),
                "every asset of this bundle job is optional: expected at least one with required = true (a bundle is complete when its required files are there)",
            );
            ok = false;
        }
        ok.then_some(out)
    }

    /// An asset's `file`: a path or a glob; in a bundle job a pattern relative to the watched
    /// folder, with `{stem}`.
    fn asset_file(&mut self, raw: &Spanned<String>, bundle: bool) -> Option<PathBuf> {
        let text = raw.get_ref();
        if bundle {
            let problem = if text.is_empty() {
                Some("file is empty: expected a pattern relative to the watched folder, such as \"{stem}.tif\"".to_owned())
            } else if text.starts_with('/') {
                Some(format!(
                    "file {text:?} is absolute: in a bundle job, expected a pattern relative to the watched folder, such as \"{{stem}}.tif\""
                ))
            } else if !text.contains("{stem}") {
                Some(format!(
                    "file {text:?} has no {{stem}}: in a bundle job, the files of one bundle share their stem; expected e.g. \"{{stem}}.tif\""
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                self.diag.at(&raw.span(), p);
                return None;
            }
            return Some(PathBuf::from(text));
        }
        let path = self.path(raw, "file")?;
        let wild = |s: &str| s.contains(['*', '?', '[', '{']);
        let (folder, name) = match (path.parent(), path.file_name()) {
            (Some(f), Some(n)) => (f, n.to_string_lossy()),
            _ => {
                self.diag.at(
                    &raw.span(),
                    format!(
                        "file {} has no folder: expected the path of a file",
                        path.display()
                    ),
                );
                return None;
            }
        };
        if wild(&folder.to_string_lossy()) {
            self.diag.at(
                &raw.span(),
                format!("file {text:?} has wildcards in its folder: expected them in the file name only (e.g. \"/data/out/s2_*.tif\")"),
            );
            return None;
        }
        if wild(&name)
            && let Err(e) = GlobBuilder::new(&name).literal_separator(true).build()
        {
            self.diag.at(
                &raw.span(),
                format!("file {text:?} is not a valid glob: {}; expected a path, or a glob in the file name matching one file", e.kind()),
            );
            return None;
        }
        if path.is_dir() {
            self.diag.at(
                &raw.span(),
                format!(
                    "file {} is a directory: expected the path of a file, or a glob matching one",
                    path.display()
                ),
            );
            return None;
        }
        if !folder.is_dir() {
            self.diag.at(
                &raw.span(),
                format!("folder {} does not exist: the file may appear later, but its folder must exist", folder.display()),
            );
            return None;
        }
        Some(path)
    }

    /// `alias`: a literal item id, for a job that has an item (and not its item's own id).
    /// `None` when refused.
    fn alias(&mut self, raw: &RawJob, item: &Option<Option<IdTemplate>>) -> Option<Option<String>> {
        let Some(at) = &raw.alias else {
            return Some(None);
        };
        if raw.item.is_none() {
            self.diag.at(
                &at.span(),
                "alias needs item: the alias is a second item that gets the same files as the job's item; set item = \"...\" or remove alias",
            );
            return None;
        }
        let id = self.literal_id(at, "alias")?;
        if let Some(Some(template)) = item
            && template.literal().as_deref() == Some(id.as_str())
        {
            self.diag.at(
                &at.span(),
                format!("alias {id:?} is the job's item itself: expected another item id, such as \"current\""),
            );
            return None;
        }
        Some(Some(id))
    }

    /// `collection/item/asset` within the server's 255 characters, for the shortest ids the
    /// templates can render (so only a path too long for every file and run is refused; the
    /// run checks each rendered path before anything is sent).
    fn check_path_length(
        &mut self,
        at: &Spanned<String>,
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
            &at.span(),
            format!(
                "the asset path {path:?} is {at_least}{least} characters long: the server stores paths (collection/item/asset) of at most {} (a longer one fails with 500 after the item is created); expected shorter ids",
                rules::MAX_PATH_LEN
            ),
        );
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
        let parsed = match &self.name_pattern {
            Some(p) => IdTemplate::parse_with(raw.get_ref(), p.capture_names()),
            None => IdTemplate::parse(raw.get_ref()),
        };
        let template = match parsed {
            Ok(t) => t,
            Err(e) => {
                self.template_error(raw, e.for_key(key));
                return None;
            }
        };
        // With a name_pattern, a one-file job's file is named and matched: its name may be used.
        if one_file && self.name_pattern.is_none() && template.uses_file_name() {
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
