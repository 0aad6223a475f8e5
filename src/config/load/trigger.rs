use super::*;

impl Checker<'_> {
    /// Exactly one trigger: file + schedule, file + every, or [job.watch].
    pub(super) fn trigger(
        &mut self,
        raw: &RawJob,
        name: &str,
        own: &Layer,
        settings: &Layer,
    ) -> Option<TriggerSpec> {
        let expected =
            "expected exactly one trigger: file + schedule, file + every, or [job.watch]";
        if let Some(watch) = &raw.watch {
            let others: Vec<(&str, Span)> = [
                ("file", raw.file.as_ref().map(Spanned::span)),
                ("schedule", raw.schedule.as_ref().map(Spanned::span)),
                ("every", raw.every.as_ref().map(Spanned::span)),
            ]
            .into_iter()
            .filter_map(|(k, s)| Some((k, s?)))
            .collect();
            if let Some((_, span)) = others.first() {
                let keys: Vec<&str> = others.iter().map(|(k, _)| *k).collect();
                self.diag.at(
                    span,
                    format!(
                        "job {name:?} has both {} and [job.watch]: {expected}",
                        keys.join("/")
                    ),
                );
                return None;
            }
            return self.watch(watch.get_ref()).map(TriggerSpec::Watch);
        }
        // A job with [[job.assets]] names its files there: its schedule stands alone.
        if raw.assets.is_some() {
            if let Some(file) = &raw.file {
                self.diag.at(
                    &file.span(),
                    format!(
                        "job {name:?} has both file and [[job.assets]]: expected the file of each asset in its [[job.assets]] table (file = \"...\")"
                    ),
                );
                return None;
            }
            return match (&raw.schedule, &raw.every) {
                (Some(schedule), None) => self.cron(None, schedule, own, settings),
                (None, Some(every)) => self.every(None, every),
                (Some(_), Some(every)) => {
                    self.diag.at(
                        &every.span(),
                        format!("job {name:?} has both schedule and every: expected one trigger: schedule, every, or [job.watch]"),
                    );
                    None
                }
                (None, None) => {
                    self.diag.at(
                        &raw.name.span(),
                        format!(
                            "job {name:?} has no trigger: expected schedule = \"<cron>\", every = \"<interval>\" or a [job.watch] table"
                        ),
                    );
                    None
                }
            };
        }
        match (&raw.file, &raw.schedule, &raw.every) {
            (_, Some(schedule), Some(every)) => {
                let later = if every.span().start > schedule.span().start {
                    every.span()
                } else {
                    schedule.span()
                };
                self.diag.at(
                    &later,
                    format!("job {name:?} has both schedule and every: {expected}"),
                );
                None
            }
            (Some(file), Some(schedule), None) => self.cron(Some(file), schedule, own, settings),
            (Some(file), None, Some(every)) => self.every(Some(file), every),
            (Some(file), None, None) => {
                self.diag.at(
                    &file.span(),
                    format!(
                        "job {name:?} has a file but no schedule: expected schedule = \"<cron>\" or every = \"<interval>\" next to file (or a [job.watch] table instead)"
                    ),
                );
                None
            }
            (None, Some(schedule), None) => {
                self.diag.at(
                    &schedule.span(),
                    format!(
                        "job {name:?} has a schedule but no file: expected file = \"<path>\" next to schedule"
                    ),
                );
                None
            }
            (None, None, Some(every)) => {
                self.diag.at(
                    &every.span(),
                    format!(
                        "job {name:?} has every but no file: expected file = \"<path>\" next to every"
                    ),
                );
                None
            }
            (None, None, None) => {
                self.diag.at(
                    &raw.name.span(),
                    format!(
                        "job {name:?} has no trigger: expected either file + schedule (cron), file + every (an interval) or a [job.watch] table"
                    ),
                );
                None
            }
        }
    }

    /// The file a schedule or every job uploads: it may appear later, but its folder must exist.
    pub(super) fn upload_file(&mut self, file: &Spanned<String>) -> Option<PathBuf> {
        self.path(file, "file").and_then(|path| {
            let problem = match path.parent() {
                _ if path.is_dir() => format!(
                    "file {} is a directory: expected the path of the file to upload (use [job.watch] for a folder)",
                    path.display()
                ),
                Some(parent) if parent.is_dir() => return Some(path),
                Some(parent) => format!(
                    "folder {} does not exist: the file may appear later, but its folder must exist",
                    parent.display()
                ),
                None => format!("file {} has no folder: expected the path of a file", path.display()),
            };
            self.diag.at(&file.span(), problem);
            None
        })
    }

    /// The file of a job with [[job.assets]] is empty: each asset names its own.
    fn trigger_file(&mut self, file: Option<&Spanned<String>>) -> Option<PathBuf> {
        match file {
            Some(f) => self.upload_file(f),
            None => Some(PathBuf::new()),
        }
    }

    fn every(
        &mut self,
        file: Option<&Spanned<String>>,
        every: &Spanned<DurationText>,
    ) -> Option<TriggerSpec> {
        let file = self.trigger_file(file);
        let interval = self.duration(Some(every), "every", |d| {
            if d < MIN_EVERY {
                Err(format!(
                    "every = {} is too short: expected at least {}",
                    fmt_duration(d),
                    fmt_duration(MIN_EVERY)
                ))
            } else if d > MAX_EVERY {
                Err(format!(
                    "every = {} is too long: expected at most {} days (use a cron schedule for rarer runs)",
                    fmt_duration(d),
                    MAX_EVERY.as_secs() / 86_400
                ))
            } else {
                Ok(())
            }
        });
        Some(TriggerSpec::Every {
            file: file?,
            interval: interval?.0,
        })
    }

    pub(super) fn cron(
        &mut self,
        file: Option<&Spanned<String>>,
        schedule: &Spanned<String>,
        own: &Layer,
        settings: &Layer,
    ) -> Option<TriggerSpec> {
        let path = self.trigger_file(file);
        let tz = settings.timezone();
        let schedule = match Schedule::parse(schedule.get_ref(), tz.name()) {
            Ok(s) => Some(s),
            Err(e) => {
                // A zone refused here was refused where it was written; blame it, not the cron.
                let span = match e {
                    ScheduleError::TimeZone(_) => own
                        .timezone
                        .as_ref()
                        .map_or_else(|| schedule.span(), |v| v.1.clone()),
                    _ => schedule.span(),
                };
                self.diag.at(&span, e.to_string());
                None
            }
        };
        Some(TriggerSpec::Cron {
            file: path?,
            schedule: schedule?,
        })
    }

    pub(super) fn watch(&mut self, raw: &RawWatch) -> Option<WatchSpec> {
        let dir = self.path(&raw.dir, "dir").and_then(|dir| {
            let problem = match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => return Some(dir),
                Ok(_) => format!(
                    "watch dir {} is not a directory: expected a folder",
                    dir.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                    "watch dir {} does not exist: expected an existing folder",
                    dir.display()
                ),
                Err(e) => format!(
                    "watch dir {} cannot be used: {e}; expected an existing folder",
                    dir.display()
                ),
            };
            self.diag.at(&raw.dir.span(), problem);
            None
        });
        // `*` stays within one folder level, as in .gitignore: `**/*.tif` reaches sub-folders.
        let pattern = self.value(Some(&raw.pattern), |p| {
            if p.starts_with('/') {
                return Err(format!(
                    "pattern {p:?} is absolute: patterns are matched against the path relative to dir, expected e.g. \"*.h5\" or \"**/*.tif\" (with the folder in dir)"
                ));
            }
            GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| {
                    format!(
                        "invalid pattern {p:?}: {}; expected a glob on the path relative to dir, e.g. \"*.h5\" or \"**/*.tif\"",
                        e.kind()
                    )
                })
        });
        let ignore = self.ignore(raw.ignore.as_deref(), &raw.dir.span());
        let settle = self.duration(raw.settle.as_ref(), "settle", |_| Ok(()));
        let poll = self.positive_duration(raw.poll.as_ref(), "poll");
        let bundle_timeout = self.positive_duration(raw.bundle_timeout.as_ref(), "bundle_timeout");
        let incomplete = self.value(raw.bundle_incomplete.as_ref(), |v| match v.as_str() {
            "leave" => Ok(Incomplete::Leave),
            "publish" => Ok(Incomplete::Publish),
            other => Err(format!(
                "bundle_incomplete = {other:?}: expected \"leave\" (report it and wait for a new member) or \"publish\" (report it and publish what is there)"
            )),
        });
        let durations_ok = (raw.settle.is_none() || settle.is_some())
            && (raw.poll.is_none() || poll.is_some())
            && (raw.bundle_timeout.is_none() || bundle_timeout.is_some())
            && (raw.bundle_incomplete.is_none() || incomplete.is_some());
        if !durations_ok {
            return None;
        }
        Some(WatchSpec {
            dir: dir?,
            pattern: pattern?.0,
            recursive: raw.recursive,
            ignore: ignore?,
            settle: settle.map_or(DEFAULT_SETTLE, |v| v.0),
            poll: poll.map(|v| v.0),
            bundle: BundleRules {
                timeout: bundle_timeout.map_or(bundle::DEFAULT_TIMEOUT, |v| v.0),
                incomplete: incomplete.map(|v| v.0).unwrap_or_default(),
            },
        })
    }

    pub(super) fn ignore(
        &mut self,
        raw: Option<&[Spanned<String>]>,
        dir_span: &Span,
    ) -> Option<globset::GlobSet> {
        let mut builder = GlobSetBuilder::new();
        let mut ok = true;
        match raw {
            Some(globs) => {
                for g in globs {
                    match Glob::new(g.get_ref()) {
                        Ok(glob) => {
                            builder.add(glob);
                        }
                        Err(e) => {
                            self.diag.at(
                                &g.span(),
                                format!(
                                    "invalid ignore glob {:?}: {}; expected a glob on the file name, e.g. \"*.tmp\"",
                                    g.get_ref(),
                                    e.kind()
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
            None => {
                for g in DEFAULT_IGNORE {
                    builder.add(Glob::new(g).expect("the default ignore globs are valid"));
                }
            }
        }
        if !ok {
            return None;
        }
        match builder.build() {
            Ok(set) => Some(set),
            Err(e) => {
                let span = raw
                    .and_then(|g| g.first())
                    .map_or_else(|| dir_span.clone(), |g| g.span());
                self.diag.at(&span, format!("invalid ignore globs: {e}"));
                None
            }
        }
    }
}

pub(super) const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// Below this, `every` is a busy loop rather than a schedule.
pub(super) const MIN_EVERY: Duration = Duration::from_secs(1);

/// Above this, `every` is a schedule that never fires within a daemon's life (and a
/// `500000000y` no longer fits the clock's arithmetic): a year, leap or not.
pub(super) const MAX_EVERY: Duration = Duration::from_secs(366 * 86_400);
