//! `[[notify]]` tables and a job's `ping_url_*`: webhook and ping URLs are secrets, read as the
//! server's password is (`*_env`, `*_file`), never written in the job file itself.

use std::time::Duration;

use toml::Spanned;

use super::{Checker, Span, private_file};
use crate::config::raw::{RawJob, RawNotify};
use crate::config::{
    DEFAULT_NOTIFY_TIMEOUT, DEFAULT_REPEAT, MAX_NOTIFY_TIMEOUT, NotifyOn, NotifyTarget, SecretUrl,
};

/// The shortest `repeat`: a reminder a second is already a flood.
const MIN_REPEAT: Duration = Duration::from_secs(1);

impl Checker<'_> {
    /// Every `[[notify]]` table; `None` when any is refused (each problem recorded).
    pub(super) fn notify(
        &mut self,
        raw: &[Spanned<RawNotify>],
        jobs: &[RawJob],
    ) -> Option<Vec<NotifyTarget>> {
        // Every table checked, so that every problem is reported at once.
        let checked: Vec<Option<NotifyTarget>> =
            raw.iter().map(|t| self.notify_target(t, jobs)).collect();
        checked.into_iter().collect()
    }

    fn notify_target(&mut self, raw: &Spanned<RawNotify>, jobs: &[RawJob]) -> Option<NotifyTarget> {
        let span = raw.span();
        let raw = raw.get_ref();
        let url = match self.secret_url(
            [&raw.url, &raw.url_env, &raw.url_file],
            "url",
            "a webhook URL",
        ) {
            Some(Some(url)) => Some(url),
            Some(None) => {
                self.diag.at(
                    &span,
                    "[[notify]] needs its webhook URL: expected url_env = \"VARIABLE\" or url_file = \"/path\" (the URL is a secret: never in the job file)",
                );
                None
            }
            None => None,
        };
        let on = match &raw.on {
            None => Some(NotifyOn::default()),
            Some(list) => self.notify_on(list),
        };
        let names = match &raw.jobs {
            None => Some(None),
            Some(list) => self.notify_jobs(list, jobs).map(Some),
        };
        let repeat = match &raw.repeat {
            None => Some(DEFAULT_REPEAT),
            Some(r) => self
                .duration(Some(r), "repeat", |d| {
                    if d < MIN_REPEAT {
                        Err("repeat must be at least 1s: it is the least time between two reminders of one failing job".to_owned())
                    } else {
                        Ok(())
                    }
                })
                .map(|(d, _)| d),
        };
        let timeout = match &raw.timeout {
            None => Some(DEFAULT_NOTIFY_TIMEOUT),
            Some(t) => self
                .duration(Some(t), "timeout", |d| {
                    if d.is_zero() {
                        Err("timeout must be longer than 0".to_owned())
                    } else if d > MAX_NOTIFY_TIMEOUT {
                        Err(format!(
                            "timeout must be at most {}: it bounds one POST, and notices wait behind it",
                            humantime::format_duration(MAX_NOTIFY_TIMEOUT)
                        ))
                    } else {
                        Ok(())
                    }
                })
                .map(|(d, _)| d),
        };
        Some(NotifyTarget {
            url: url?,
            on: on?,
            jobs: names?,
            repeat: repeat?,
            timeout: timeout?,
        })
    }

    /// `on = ["failure", "recovery", "success"]`, at least one.
    fn notify_on(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Option<NotifyOn> {
        if list.get_ref().is_empty() {
            self.diag.at(
                &list.span(),
                "on is empty: expected one or more of \"failure\", \"recovery\" and \"success\" (or no on: failure and recovery)",
            );
            return None;
        }
        let mut on = NotifyOn {
            failure: false,
            recovery: false,
            success: false,
        };
        let mut ok = true;
        for event in list.get_ref() {
            match event.get_ref().as_str() {
                "failure" => on.failure = true,
                "recovery" => on.recovery = true,
                "success" => on.success = true,
                other => {
                    self.diag.at(
                        &event.span(),
                        format!("invalid on value {other:?}: expected \"failure\", \"recovery\" or \"success\""),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(on)
    }

    /// `jobs = [...]`: names of jobs of this file.
    fn notify_jobs(
        &mut self,
        list: &Spanned<Vec<Spanned<String>>>,
        jobs: &[RawJob],
    ) -> Option<Vec<String>> {
        if list.get_ref().is_empty() {
            self.diag.at(
                &list.span(),
                "jobs is empty: expected names of jobs of this file, or no jobs key for every job",
            );
            return None;
        }
        let mut ok = true;
        for name in list.get_ref() {
            if !jobs.iter().any(|j| j.name.get_ref() == name.get_ref()) {
                let known: Vec<&str> = jobs.iter().map(|j| j.name.get_ref().as_str()).collect();
                self.diag.at(
                    &name.span(),
                    format!(
                        "no job named {:?} in this file: expected one of {}",
                        name.get_ref(),
                        known.join(", ")
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| list.get_ref().iter().map(|n| n.get_ref().clone()).collect())
    }

    /// A job's healthchecks-style ping URL, if it has one. `None`: refused (recorded).
    pub(super) fn ping_url(&mut self, raw: &RawJob) -> Option<Option<SecretUrl>> {
        self.secret_url(
            [&raw.ping_url, &raw.ping_url_env, &raw.ping_url_file],
            "ping_url",
            "a ping URL",
        )
    }

    /// An http(s) URL from `<key>_env` or `<key>_file`; `<key>` itself is refused. `Some(None)`:
    /// none of them is written.
    fn secret_url(
        &mut self,
        [inline, env, file]: [&Option<Spanned<String>>; 3],
        key: &str,
        what: &str,
    ) -> Option<Option<SecretUrl>> {
        let (env_key, file_key) = (format!("{key}_env"), format!("{key}_file"));
        if let Some(inline) = inline {
            // Said without the URL: its path is the credential.
            self.diag.at(
                &inline.span(),
                format!(
                    "{key} refused: {what} is a secret (whoever has it can post as this daemon), and {} would show it to anyone who can read the job file; give it as {env_key} (an environment variable's name) or {file_key} (a file only the daemon's user can read)",
                    self.source.display()
                ),
            );
            return None;
        }
        let (text, at): (String, Span) = match (env, file) {
            (None, None) => return Some(None),
            (Some(e), None) => (self.secret_from_env(e, &env_key)?, e.span()),
            (None, Some(f)) => {
                let text = self.secret_from_file(f, &file_key)?;
                let path = self.path(f, &file_key)?;
                if let Err(why) = private_file(&path) {
                    self.diag.at(
                        &f.span(),
                        format!(
                            "{file_key} refused: {why}, so anyone on the machine could read {what}; chmod 600 {}",
                            path.display()
                        ),
                    );
                    return None;
                }
                (text, f.span())
            }
            (Some(_), Some(f)) => {
                self.diag.at(
                    &f.span(),
                    format!("{file_key} conflicts with {env_key}: expected exactly one of them"),
                );
                return None;
            }
        };
        match url::Url::parse(text.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Some(Some(SecretUrl::new(u)))
            }
            Ok(u) => {
                self.diag.at(
                    &at,
                    format!(
                        "{what} (from {}) is not an http(s) URL with a host (scheme {:?}): expected https://host/path",
                        if env.is_some() { &env_key } else { &file_key },
                        u.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                self.diag.at(
                    &at,
                    format!(
                        "{what} (from {}) does not parse ({e}): expected https://host/path",
                        if env.is_some() { &env_key } else { &file_key }
                    ),
                );
                None
            }
        }
    }
}
