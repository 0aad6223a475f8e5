//! `name_pattern`: a job's regular expression over the names of its files, whose named captures
//! feed the templates (`{date}`, `{product}`) and the item's times
//! (`datetime = { capture = "date", format = "%Y-%m-%dT%H%M%S" }`).

use std::fmt;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use regex::{Regex, RegexBuilder};

use super::template::is_capture_name;

/// The most memory a compiled `name_pattern` may take (the regex crate's own default is 10 MiB;
/// a file-name pattern needs a few KiB, and a job file must not make the daemon allocate much).
pub(crate) const MAX_PATTERN_SIZE: usize = 1 << 20;

/// The longest `name_pattern`, in bytes.
pub(crate) const MAX_PATTERN_LEN: usize = 4096;

/// Placeholders that are the file name's own and cannot name a capture.
const BUILT_INS: [&str; 3] = ["name", "stem", "ext"];

/// A job's `name_pattern`, compiled once at load: a regex with at least one named capture.
#[derive(Clone)]
pub struct NamePattern {
    regex: Arc<Regex>,
    names: Vec<String>,
}

impl NamePattern {
    /// Compiles `pattern` within [`MAX_PATTERN_SIZE`]; refuses one without a named capture, or
    /// with a capture named like a built-in placeholder or one a placeholder cannot spell.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "name_pattern is {} bytes long: expected at most {MAX_PATTERN_LEN}",
                pattern.len()
            ));
        }
        let regex = RegexBuilder::new(pattern)
            .size_limit(MAX_PATTERN_SIZE)
            .dfa_size_limit(MAX_PATTERN_SIZE)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => format!(
                    "name_pattern compiles to more than {limit} bytes: expected a simpler expression (a file name's pattern)"
                ),
                e => format!(
                    "name_pattern is not a valid regular expression: {}; expected the regex crate's syntax, e.g. '^S2_(?P<date>\\d{{8}})_(?P<product>\\w+)\\.tif$'",
                    e.to_string().replace('\n', " ")
                ),
            })?;
        let names: Vec<String> = regex.capture_names().flatten().map(str::to_owned).collect();
        if names.is_empty() {
            return Err(format!(
                "name_pattern {pattern:?} has no named capture: expected at least one, such as (?P<date>\\d{{8}}), to use as {{date}} in the templates"
            ));
        }
        if let Some(n) = names.iter().find(|n| BUILT_INS.contains(&n.as_str())) {
            return Err(format!(
                "name_pattern names a capture {n:?}: {{name}}, {{stem}} and {{ext}} are the file name's own placeholders; expected another name"
            ));
        }
        if let Some(n) = names.iter().find(|n| !is_capture_name(n)) {
            return Err(format!(
                "name_pattern names a capture {n:?}: expected letters, digits and '_' only, so that it can be written {{{n}}}"
            ));
        }
        Ok(Self {
            regex: Arc::new(regex),
            names,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    /// The named captures, in the order of the expression.
    pub fn capture_names(&self) -> &[String] {
        &self.names
    }

    /// The captures of a file name, `None` when the pattern does not match it. A capture that
    /// does not take part in the match is empty.
    pub fn captures(&self, file_name: &str) -> Option<Captures> {
        let c = self.regex.captures(file_name)?;
        Some(Captures(
            self.names
                .iter()
                .map(|n| {
                    let value = c.name(n).map_or("", |m| m.as_str());
                    (n.clone(), value.to_owned())
                })
                .collect(),
        ))
    }
}

impl fmt::Debug for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NamePattern").field(&self.as_str()).finish()
    }
}

impl PartialEq for NamePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for NamePattern {}

/// The named captures of one file name, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures(Vec<(String, String)>);

impl Captures {
    /// The value of the capture `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Each capture's name and value, in the order of the expression.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// An item time read from a capture: `{ capture = "date", format = "%Y-%m-%dT%H%M%S",
/// timezone = "Europe/Zurich" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureTime {
    capture: String,
    format: String,
    timezone: Tz,
}

impl CaptureTime {
    /// Checks that `format` is strftime that gives at least a date (tried on a sample time,
    /// written and read back). The caller checks that the capture exists.
    pub fn new(capture: &str, format: &str, timezone: Tz) -> Result<Self, String> {
        let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
        if items.contains(&Item::Error) {
            return Err(format!(
                "format {format:?} is not valid strftime: expected fields such as %Y, %m, %d, %H, %M, %S (write %% for a literal %)"
            ));
        }
        let time = Self {
            capture: capture.to_owned(),
            format: format.to_owned(),
            timezone,
        };
        let sample = Utc
            .with_ymd_and_hms(2026, 1, 5, 3, 4, 5)
            .single()
            .expect("a valid fixed date");
        let mut shown = String::new();
        if fmt::Write::write_fmt(
            &mut shown,
            format_args!("{}", sample.format_with_items(items.into_iter())),
        )
        .is_err()
        {
            return Err(format!(
                "format {format:?} cannot write a time: expected fields such as %Y, %m, %d, %H, %M, %S"
            ));
        }
        if let Err(e) = time.parse(&shown) {
            return Err(format!(
                "format {format:?} cannot be read back ({e}): expected a format giving at least a date, such as \"%Y%m%d\" or \"%Y-%m-%dT%H%M%S\""
            ));
        }
        Ok(time)
    }

    /// The capture it reads.
    pub fn capture(&self) -> &str {
        &self.capture
    }

    /// The strftime format.
    pub fn format(&self) -> &str {
        &self.format
    }

    /// The zone a time without an offset is read in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The instant a capture's value stands for: read with the format, in the zone unless the
    /// format gives an offset (`%z`); a date without a time is midnight. A local time the zone
    /// skips (a spring-forward gap) is refused; one it repeats (autumn) is the earlier.
    pub fn parse(&self, value: &str) -> Result<DateTime<Utc>, String> {
        if let Ok(t) = DateTime::parse_from_str(value, &self.format) {
            return Ok(t.with_timezone(&Utc));
        }
        let local = match NaiveDateTime::parse_from_str(value, &self.format) {
            Ok(t) => t,
            Err(e) => match NaiveDate::parse_from_str(value, &self.format) {
                Ok(d) => d.and_time(chrono::NaiveTime::MIN),
                Err(_) => {
                    return Err(format!("{value:?} does not read as {:?}: {e}", self.format));
                }
            },
        };
        self.timezone
            .from_local_datetime(&local)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| {
                format!(
                    "{value:?} is {local}, a time that does not exist in {} (skipped by a clock change)",
                    self.timezone
                )
            })
    }

    /// The time for a file's captures.
    pub fn of(&self, captures: Option<&Captures>) -> Result<DateTime<Utc>, String> {
        let value = captures
            .and_then(|c| c.get(&self.capture))
            .ok_or_else(|| format!("no capture {:?}", self.capture))?;
        self.parse(value)
            .map_err(|e| format!("capture {:?}: {e}", self.capture))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S2: &str = r"^S2_(?P<date>\d{4}-\d{2}-\d{2}T\d{6})_(?P<product>\w+)\.tif$";

    #[test]
    fn captures_of_a_name() {
        let p = NamePattern::new(S2).unwrap();
        assert_eq!(p.capture_names(), ["date", "product"]);
        let c = p.captures("S2_2026-12-01T101010_NDVI_10m.tif").unwrap();
        assert_eq!(c.get("date"), Some("2026-12-01T101010"));
        assert_eq!(c.get("product"), Some("NDVI_10m"));
        assert_eq!(c.get("other"), None);
        assert!(p.captures("S2_2026-12-01_ndvi.tif").is_none());
        // Optional groups that do not take part are empty.
        let p = NamePattern::new(r"^(?P<a>x)?(?P<b>y)$").unwrap();
        assert_eq!(p.captures("y").unwrap().get("a"), Some(""));
    }

    #[test]
    fn refuses_patterns_that_cannot_serve() {
        for (p, says) in [
            (r"^S2_\d+\.tif$", "no named capture"),
            (r"^(?P<stem>\w+)\.tif$", "file name's own placeholders"),
            (r"^(?P<d>\d+", "not a valid regular expression"),
            (r"(?P<x>\w{1000}){1000}", "compiles to more than"),
        ] {
            let e = NamePattern::new(p).unwrap_err();
            assert!(e.contains(says), "{p}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        assert!(NamePattern::new(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
        // A name regex allows but a placeholder cannot spell (or regex refuses it anyway).
        assert!(NamePattern::new(r"^(?P<a.b>\w+)$").is_err());
    }

    fn zurich(format: &str) -> CaptureTime {
        CaptureTime::new("date", format, chrono_tz::Europe::Zurich).unwrap()
    }

    #[test]
    fn times_in_a_zone_with_daylight_saving() {
        let t = zurich("%Y-%m-%dT%H%M%S");
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            t.parse("2026-12-01T101010").unwrap().to_rfc3339(),
            "2026-12-01T09:10:10+00:00"
        );
        assert_eq!(
            t.parse("2026-07-01T101010").unwrap().to_rfc3339(),
            "2026-07-01T08:10:10+00:00"
        );
        // 29 March 2026, 02:30 does not exist in Zurich; 25 October 02:30 happens twice.
        let gap = t.parse("2026-03-29T023000").unwrap_err();
        assert!(gap.contains("does not exist in Europe/Zurich"), "{gap}");
        assert_eq!(
            t.parse("2026-10-25T023000").unwrap().to_rfc3339(),
            "2026-10-25T00:30:00+00:00"
        );
        assert!(t.parse("2026-13-01T101010").is_err());
        assert!(t.parse("20261201").is_err());
    }

    #[test]
    fn a_date_is_midnight_and_an_offset_wins() {
        assert_eq!(
            zurich("%Y%m%d").parse("20260105").unwrap().to_rfc3339(),
            "2026-01-04T23:00:00+00:00"
        );
        let utc = CaptureTime::new("d", "%Y%m%d", Tz::UTC).unwrap();
        assert_eq!(
            utc.parse("20260105").unwrap().to_rfc3339(),
            "2026-01-05T00:00:00+00:00"
        );
        assert_eq!(
            zurich("%Y%m%dT%H%M%z")
                .parse("20260105T1200+0000")
                .unwrap()
                .to_rfc3339(),
            "2026-01-05T12:00:00+00:00"
        );
    }

    #[test]
    fn formats_are_checked() {
        let tz = Tz::UTC;
        assert!(
            CaptureTime::new("d", "%Q", tz)
                .unwrap_err()
                .contains("not valid strftime")
        );
        let e = CaptureTime::new("d", "%H%M", tz).unwrap_err();
        assert!(e.contains("at least a date"), "{e}");
        assert!(CaptureTime::new("d", "%Y-%j", tz).is_ok());
    }

    #[test]
    fn a_missing_capture_says_which() {
        let t = zurich("%Y%m%d");
        let e = t.of(None).unwrap_err();
        assert!(e.contains("\"date\""), "{e}");
    }
}
