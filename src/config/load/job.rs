use super::*;

impl Checker<'_> {
    pub(super) fn check_name<'r>(
        &mut self,
        raw: &'r Spanned<String>,
        seen: &mut HashMap<&'r str, usize>,
    ) {
        let name = raw.get_ref().as_str();
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

    /// Two jobs on one asset (the same collection, item and asset, written alike) overwrite each
    /// other's uploads: the second is refused.
    pub(super) fn check_target<'r>(
        &mut self,
        job: &'r RawJob,
        targets: &mut HashMap<(&'r str, Option<&'r str>, &'r str), &'r RawJob>,
    ) {
        let key = (
            job.collection.get_ref().as_str(),
            job.item.as_ref().map(|i| i.get_ref().as_str()),
            job.asset.get_ref().as_str(),
        );
        if key.0.trim().is_empty() || key.2.trim().is_empty() {
            return;
        }
        match targets.get(&key) {
            Some(first) => {
                let (line, _) = self.diag.line_col(first.name.span().start);
                let item = key.1.map_or_else(
                    || " (a collection asset)".to_owned(),
                    |i| format!(", item {i:?}"),
                );
                self.diag.at(
                    &job.asset.span(),
                    format!(
                        "job {:?} uploads to the same asset as job {:?} (line {line}): collection {:?}{item}, asset {:?}; two jobs on one asset overwrite each other's uploads, expected one job per asset",
                        job.name.get_ref(),
                        first.name.get_ref(),
                        key.0,
                        key.2
                    ),
                );
            }
            None => {
                targets.insert(key, job);
            }
        }
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
        let item_metadata = raw
            .item_metadata
            .as_ref()
            .map(|m| self.item_metadata(m, raw, tz, one_file));
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
        })
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
