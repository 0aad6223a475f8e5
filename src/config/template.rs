//! Ids and metadata values templated from the run: the run time in the job's zone (strftime
//! fields such as `%Y-%m-%d`) and, for watch jobs, the file's name (`{name}`, `{stem}`, `{ext}`)
//! and the named captures of the job's `name_pattern` (`{date}`, `{product}`, ...).

use std::fmt::{self, Write as _};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;

use super::names::Captures;

/// Why a template was refused. Offsets are byte offsets into the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown placeholder \"{{{name}}}\" in {key} {template:?}: expected {{name}} (the file name), {{stem}} (without the last extension) or {{ext}} (the last extension), strftime fields such as %Y-%m-%d for the run time, or a named capture of a name_pattern (the job has none)"
    )]
    Unknown {
        key: String,
        template: String,
        name: String,
        offset: usize,
    },
    #[error(
        "unknown placeholder \"{{{name}}}\" in {key} {template:?}: it is not a named capture of the job's name_pattern ({}), nor {{name}} (the file name), {{stem}} (without the last extension) or {{ext}} (the last extension)",
        known.join(", ")
    )]
    UnknownCapture {
        key: String,
        template: String,
        name: String,
        offset: usize,
        /// The captures of the job's `name_pattern`, as placeholders (`{date}`).
        known: Vec<String>,
    },
    #[error(
        "unbalanced \"{brace}\" in {key} {template:?}: placeholders are written {{name}}, {{stem}} or {{ext}}, and braces cannot appear otherwise"
    )]
    Unbalanced {
        key: String,
        template: String,
        brace: char,
        offset: usize,
    },
    #[error(
        "unknown time field \"{field}\" in {key} {template:?}: expected strftime fields such as %Y, %m, %d, %H, %M, %j (write %% for a literal %)"
    )]
    UnknownTimeField {
        key: String,
        template: String,
        field: String,
        offset: usize,
    },
    #[error(
        "time field \"{field}\" in {key} {template:?} renders {sample:?}, which an id cannot hold: ids allow only 0-9, a-z, '-', '_' and '.'; expected numeric fields such as %Y, %m, %d, %H, %M, %j"
    )]
    NotAnId {
        key: String,
        template: String,
        field: String,
        sample: String,
        offset: usize,
    },
    #[error(
        "{key} {template:?} holds {ch:?}, which an id cannot hold: ids allow only 0-9, a-z, '-', '_' and '.' (what placeholders such as {{stem}} give is checked when a file is seen)"
    )]
    NotIdChar {
        key: String,
        template: String,
        ch: char,
        offset: usize,
    },
}

impl TemplateError {
    /// Where in the template the problem is.
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::Unknown { offset, .. }
            | TemplateError::UnknownCapture { offset, .. }
            | TemplateError::Unbalanced { offset, .. }
            | TemplateError::UnknownTimeField { offset, .. }
            | TemplateError::NotAnId { offset, .. }
            | TemplateError::NotIdChar { offset, .. } => *offset,
        }
    }

    /// The same error naming the key the template was written for (`asset`, `item`, ...).
    pub fn for_key(mut self, name: &str) -> Self {
        match &mut self {
            TemplateError::Unknown { key, .. }
            | TemplateError::UnknownCapture { key, .. }
            | TemplateError::Unbalanced { key, .. }
            | TemplateError::UnknownTimeField { key, .. }
            | TemplateError::NotAnId { key, .. }
            | TemplateError::NotIdChar { key, .. } => *key = name.to_owned(),
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Segment<'a> {
    /// Text with strftime fields.
    Literal(&'a str),
    Name,
    Stem,
    Ext,
    /// `{capture}`: a named capture of the job's `name_pattern` (known to exist once parsed).
    Capture(&'a str),
}

/// What a template may render to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// An item or asset id: time fields must render to id characters.
    Id,
    /// Free text (titles, date-times).
    Text,
}

pub(super) fn segments(template: &str) -> Result<Vec<Segment<'_>>, TemplateError> {
    let unbalanced = |brace, offset| TemplateError::Unbalanced {
        key: "template".to_owned(),
        template: template.to_owned(),
        brace,
        offset,
    };
    let mut out = Vec::new();
    let mut rest = template;
    let mut pos = 0;
    while let Some(i) = rest.find(['{', '}']) {
        if rest.as_bytes()[i] == b'}' {
            return Err(unbalanced('}', pos + i));
        }
        if i > 0 {
            out.push(Segment::Literal(&rest[..i]));
        }
        let inner = &rest[i + 1..];
        let close = match inner.find(['{', '}']) {
            Some(j) if inner.as_bytes()[j] == b'}' => j,
            _ => return Err(unbalanced('{', pos + i)),
        };
        out.push(match &inner[..close] {
            "name" => Segment::Name,
            "stem" => Segment::Stem,
            "ext" => Segment::Ext,
            other if is_capture_name(other) => Segment::Capture(other),
            other => {
                return Err(TemplateError::Unknown {
                    key: "template".to_owned(),
                    template: template.to_owned(),
                    name: other.to_owned(),
                    offset: pos + i,
                });
            }
        });
        let consumed = i + 1 + close + 1;
        pos += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        out.push(Segment::Literal(rest));
    }
    Ok(out)
}

/// Whether `name` can be a placeholder for a capture: what regex capture names allow, less the
/// `.`, `[` and `]` that would read oddly between braces.
pub(crate) fn is_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The strftime fields of a literal segment: `(offset, field)`, `%%` excluded. A field is `%`,
/// chrono's optional modifiers (`-`, `0`, `_`, `.`, `:`, `#`, digits) and one character.
pub(super) fn time_fields(literal: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut chars = literal.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c != '%' {
            continue;
        }
        if chars.next_if(|&(_, c)| c == '%').is_some() {
            continue;
        }
        while chars.next_if(|&(_, c)| "-0_".contains(c)).is_some() {}
        while chars
            .next_if(|&(_, c)| ".:#".contains(c) || c.is_ascii_digit())
            .is_some()
        {}
        let end = chars
            .next()
            .map_or(literal.len(), |(i, c)| i + c.len_utf8());
        out.push((start, &literal[start..end]));
    }
    out
}

/// A fixed time with single-digit fields, so that space padding (`%e`) shows in a sample.
fn sample_time() -> DateTime<Tz> {
    Tz::UTC
        .with_ymd_and_hms(2026, 1, 5, 3, 4, 5)
        .single()
        .expect("a valid fixed date")
}

use stac_client::rules::is_id_char;

/// Checks placeholders, braces and time fields; with [`Output::Id`] also that every time field
/// renders to characters an id may hold. `captures`: the named captures of the job's
/// `name_pattern` (`None`: it has none), the only other placeholders allowed.
fn check(template: &str, output: Output, captures: Option<&[String]>) -> Result<(), TemplateError> {
    let sample = sample_time();
    for (at, segment) in segments_at(template)? {
        let literal = match segment {
            Segment::Literal(literal) => literal,
            Segment::Capture(name) => match captures {
                Some(known) if known.iter().any(|k| k == name) => continue,
                Some(known) => {
                    return Err(TemplateError::UnknownCapture {
                        key: "template".to_owned(),
                        template: template.to_owned(),
                        name: name.to_owned(),
                        offset: at,
                        known: known.iter().map(|k| format!("{{{k}}}")).collect(),
                    });
                }
                None => {
                    return Err(TemplateError::Unknown {
                        key: "template".to_owned(),
                        template: template.to_owned(),
                        name: name.to_owned(),
                        offset: at,
                    });
                }
            },
            _ => continue,
        };
        // A literal segment is a slice of the template: its offset is where it starts.
        let base = literal.as_ptr() as usize - template.as_ptr() as usize;
        for (offset, field) in time_fields(literal) {
            let items: Vec<Item<'_>> = StrftimeItems::new(field).collect();
            let mut shown = String::new();
            let rendered = !items.contains(&Item::Error)
                && write!(shown, "{}", sample.format_with_items(items.into_iter())).is_ok();
            if !rendered {
                return Err(TemplateError::UnknownTimeField {
                    key: "template".to_owned(),
                    template: template.to_owned(),
                    field: field.to_owned(),
                    offset: base + offset,
                });
            }
            if output == Output::Id && !shown.chars().all(is_id_char) {
                return Err(TemplateError::NotAnId {
                    key: "template".to_owned(),
                    template: template.to_owned(),
                    field: field.to_owned(),
                    sample: shown,
                    offset: base + offset,
                });
            }
        }
    }
    if output == Output::Id {
        check_literal_chars(template)?;
    }
    Ok(())
}

/// The text of an id template outside placeholders and time fields holds only id characters
/// (`%%`, a literal `%`, does not).
fn check_literal_chars(template: &str) -> Result<(), TemplateError> {
    for (base, segment) in segments_at(template)? {
        let Segment::Literal(literal) = segment else {
            continue;
        };
        let fields = time_fields(literal);
        let in_field = |i: usize| fields.iter().any(|(s, f)| (*s..s + f.len()).contains(&i));
        if let Some((i, ch)) = literal
            .char_indices()
            .find(|&(i, c)| !is_id_char(c) && !in_field(i))
        {
            return Err(TemplateError::NotIdChar {
                key: "template".to_owned(),
                template: template.to_owned(),
                ch,
                offset: base + i,
            });
        }
    }
    Ok(())
}

/// The segments with the offset each starts at.
fn segments_at(template: &str) -> Result<Vec<(usize, Segment<'_>)>, TemplateError> {
    let mut pos = 0;
    Ok(segments(template)?
        .into_iter()
        .map(|s| {
            let at = pos;
            pos += match s {
                Segment::Literal(l) => l.len(),
                Segment::Name | Segment::Stem => "{name}".len(),
                Segment::Ext => "{ext}".len(),
                Segment::Capture(name) => name.len() + 2,
            };
            (at, s)
        })
        .collect())
}

/// What an id template's extension (what follows the id's last dot) is before a file is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdExtension {
    /// Written in the template, without the dot: `h5` for `map.h5`, `{stem}.h5`, `radar-%Y.h5`.
    Literal(String),
    /// The template ends in `.{ext}`: the file's extension.
    FileExt,
    /// The template ends in `{name}`: the extension of the file's name, when it has one.
    FileName,
    /// Known only once the file is seen (`{stem}` last, a time field after the last dot, ...).
    Unknown,
}

/// `(stem, ext)`: the name split at its last dot. A leading dot starts a hidden name, not an
/// extension, as with `Path::file_stem`.
fn split_name(file_name: &str) -> (&str, &str) {
    match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, ext),
        _ => (file_name, ""),
    }
}

/// What a file gives a template: its name, and the captures of the job's `name_pattern` when
/// it has one. A bare file name (`&str`) is a file of a job without `name_pattern`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Names<'a> {
    file_name: &'a str,
    captures: Option<&'a Captures>,
}

impl<'a> Names<'a> {
    /// `file_name` with the captures matched (in a bundle, from the member the item id is
    /// rendered from).
    pub fn new(file_name: &'a str, captures: Option<&'a Captures>) -> Self {
        Self {
            file_name,
            captures,
        }
    }

    /// The file's name.
    pub fn file_name(&self) -> &'a str {
        self.file_name
    }

    /// The captures, if the job has a `name_pattern`.
    pub fn captures(&self) -> Option<&'a Captures> {
        self.captures
    }

    /// The value of the capture `name`, empty when it did not take part in the match (or there
    /// are no captures: a template is only parsed with captures its job has).
    fn capture(&self, name: &str) -> &'a str {
        self.captures.and_then(|c| c.get(name)).unwrap_or("")
    }
}

impl<'a> From<&'a str> for Names<'a> {
    fn from(file_name: &'a str) -> Self {
        Self::new(file_name, None)
    }
}

impl<'a> From<&'a String> for Names<'a> {
    fn from(file_name: &'a String) -> Self {
        Self::new(file_name, None)
    }
}

/// Renders `template`; one that does not parse (built by hand, bypassing the checks) is
/// returned as is. In an id, a capture's value is lowercased (the server refuses capitals); the
/// run checks the rest of its characters before anything is sent.
fn render(template: &str, names: Names<'_>, time: &DateTime<Tz>, output: Output) -> String {
    let Ok(segments) = segments(template) else {
        return template.to_owned();
    };
    let file_name = names.file_name;
    let (stem, ext) = split_name(file_name);
    let mut out = String::with_capacity(template.len() + file_name.len());
    for segment in segments {
        match segment {
            Segment::Literal(literal) => {
                let items: Vec<Item<'_>> = StrftimeItems::new(literal).collect();
                if items.contains(&Item::Error)
                    || write!(out, "{}", time.format_with_items(items.into_iter())).is_err()
                {
                    return template.to_owned();
                }
            }
            Segment::Name => out.push_str(file_name),
            Segment::Stem => out.push_str(stem),
            Segment::Ext => out.push_str(ext),
            Segment::Capture(name) => match output {
                Output::Id => out.push_str(&names.capture(name).to_lowercase()),
                Output::Text => out.push_str(names.capture(name)),
            },
        }
    }
    out
}

/// The captures `template` names, each once, in order.
fn captures_used(template: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in segments(template).unwrap_or_default() {
        if let Segment::Capture(name) = s
            && !out.contains(&name)
        {
            out.push(name);
        }
    }
    out
}

fn uses_file_name(template: &str) -> bool {
    segments(template).is_ok_and(|s| s.iter().any(|s| !matches!(s, Segment::Literal(_))))
}

fn uses_time(template: &str) -> bool {
    segments(template).is_ok_and(|s| {
        s.iter().any(|s| match s {
            Segment::Literal(l) => !time_fields(l).is_empty(),
            _ => false,
        })
    })
}

/// An item or asset id: literal, or templated from the run time (`%Y-%m-%d`, ...) and, in
/// watch jobs, the file's name (`{name}`, `{stem}`, `{ext}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTemplate(String);

impl IdTemplate {
    /// Checks the placeholders and braces, and that every time field is known to strftime and
    /// renders to characters an id may hold.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        check(template, Output::Id, None)?;
        Ok(Self(template.to_owned()))
    }

    /// [`IdTemplate::parse`] for a job whose `name_pattern` has these named captures: each may
    /// be a placeholder (`{date}`).
    pub fn parse_with(template: &str, captures: &[String]) -> Result<Self, TemplateError> {
        check(template, Output::Id, Some(captures))?;
        Ok(Self(template.to_owned()))
    }

    /// The id for a file name and a run time (in the job's zone): `{name}` is the whole name,
    /// `{stem}` the name without its last extension, `{ext}` that extension without the dot
    /// (empty if none), a capture its value lowercased; `%` fields are those of strftime.
    pub fn render<'a>(&self, names: impl Into<Names<'a>>, time: &DateTime<Tz>) -> String {
        render(&self.0, names.into(), time, Output::Id)
    }

    /// The captures of `name_pattern` the id uses.
    pub fn captures(&self) -> Vec<&str> {
        captures_used(&self.0)
    }

    /// True when the id is the same for every run: no placeholders, no time fields.
    pub fn is_literal(&self) -> bool {
        !self.uses_file_name() && !self.uses_time()
    }

    /// True when the id depends on the file's name (`{name}`, `{stem}`, `{ext}`, a capture).
    pub fn uses_file_name(&self) -> bool {
        uses_file_name(&self.0)
    }

    /// True when the id depends on the run time (strftime fields).
    pub fn uses_time(&self) -> bool {
        uses_time(&self.0)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The fewest characters the id can have: its literal text, each time field as it renders
    /// for a run with single-digit fields (`%-d` gives one digit, `%Y` four), `{name}` and
    /// `{stem}` one character (a file name is never empty, nor the stem split from it), `{ext}`
    /// none. So an id whose least is too long for the server is too long for every file.
    pub fn min_len(&self) -> usize {
        let Ok(segments) = segments(&self.0) else {
            return self.0.chars().count();
        };
        let sample = sample_time();
        segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => {
                    let items: Vec<Item<'_>> = StrftimeItems::new(l).collect();
                    let mut out = String::new();
                    if items.contains(&Item::Error)
                        || write!(out, "{}", sample.format_with_items(items.into_iter())).is_err()
                    {
                        l.chars().count()
                    } else {
                        out.chars().count()
                    }
                }
                Segment::Name | Segment::Stem => 1,
                // A capture may match nothing.
                Segment::Ext | Segment::Capture(_) => 0,
            })
            .sum()
    }

    /// The id's extension as far as the template tells it.
    pub fn extension(&self) -> IdExtension {
        let Ok(segments) = segments(&self.0) else {
            return IdExtension::Unknown;
        };
        match segments.as_slice() {
            [.., Segment::Literal(l)] if l.contains('.') => {
                let tail = l.rsplit_once('.').map_or("", |(_, t)| t);
                if time_fields(tail).is_empty() && !tail.contains('%') {
                    IdExtension::Literal(tail.to_owned())
                } else {
                    IdExtension::Unknown
                }
            }
            // No dot at all: the server reads the whole id as its extension.
            [Segment::Literal(l)] if time_fields(l).is_empty() && !l.contains('%') => {
                IdExtension::Literal((*l).to_owned())
            }
            [.., Segment::Literal(l), Segment::Ext] if l.ends_with('.') => IdExtension::FileExt,
            [.., Segment::Name] => IdExtension::FileName,
            _ => IdExtension::Unknown,
        }
    }

    /// Where `{ext}` follows a dot (`{stem}.{ext}`): a file without an extension leaves the id
    /// ending in that dot. `None` when there is no such `{ext}`.
    pub fn dot_ext_offset(&self) -> Option<usize> {
        let segments = segments_at(&self.0).ok()?;
        segments.windows(2).find_map(|w| match w {
            [(_, Segment::Literal(l)), (at, Segment::Ext)] if l.ends_with('.') => Some(*at),
            _ => None,
        })
    }

    /// The literal id (`None` when the template has placeholders or time fields), `%%` read as
    /// `%`.
    pub fn literal(&self) -> Option<String> {
        self.is_literal().then(|| self.0.replace("%%", "%"))
    }
}

/// A piece of an id template, for code that reads ids back (retention's matcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdPart<'a> {
    /// Text written as is (an id template holds no `%%`: `%` is not an id character).
    Text(&'a str),
    /// One strftime field, such as `%Y` or `%-d`.
    Time(&'a str),
    /// `{name}`.
    Name,
    /// `{stem}`.
    Stem,
    /// `{ext}`.
    Ext,
    /// A capture of `name_pattern`, such as `{date}` (lowercased).
    Capture(&'a str),
}

impl IdTemplate {
    /// The template's pieces in order.
    pub fn parts(&self) -> Vec<IdPart<'_>> {
        let Ok(segments) = segments(&self.0) else {
            return vec![IdPart::Text(&self.0)];
        };
        let mut out = Vec::new();
        for segment in segments {
            match segment {
                Segment::Literal(literal) => {
                    let mut pos = 0;
                    for (at, field) in time_fields(literal) {
                        if at > pos {
                            out.push(IdPart::Text(&literal[pos..at]));
                        }
                        out.push(IdPart::Time(field));
                        pos = at + field.len();
                    }
                    if pos < literal.len() {
                        out.push(IdPart::Text(&literal[pos..]));
                    }
                }
                Segment::Name => out.push(IdPart::Name),
                Segment::Stem => out.push(IdPart::Stem),
                Segment::Ext => out.push(IdPart::Ext),
                Segment::Capture(name) => out.push(IdPart::Capture(name)),
            }
        }
        out
    }
}

impl std::ops::Deref for IdTemplate {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A metadata value (a title, a date-time) templated like an id, without the id's character
/// rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextTemplate(String);

impl TextTemplate {
    /// Checks the placeholders, braces and time fields.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        check(template, Output::Text, None)?;
        Ok(Self(template.to_owned()))
    }

    /// [`TextTemplate::parse`] for a job whose `name_pattern` has these named captures.
    pub fn parse_with(template: &str, captures: &[String]) -> Result<Self, TemplateError> {
        check(template, Output::Text, Some(captures))?;
        Ok(Self(template.to_owned()))
    }

    /// The text for a file name and a run time, as [`IdTemplate::render`], captures as matched
    /// (not lowercased).
    pub fn render<'a>(&self, names: impl Into<Names<'a>>, time: &DateTime<Tz>) -> String {
        render(&self.0, names.into(), time, Output::Text)
    }

    /// True when the text depends on the file's name.
    pub fn uses_file_name(&self) -> bool {
        uses_file_name(&self.0)
    }

    /// True when the text depends on the run time.
    pub fn uses_time(&self) -> bool {
        uses_time(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> IdTemplate {
        IdTemplate::parse(s).unwrap()
    }

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Tz> {
        chrono_tz::Europe::Zurich
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
    }

    #[test]
    fn renders_placeholders() {
        let now = at(2026, 11, 25, 6, 0);
        assert_eq!(t("{name}").render("radar.h5", &now), "radar.h5");
        assert_eq!(t("{stem}-v2.{ext}").render("a.tar.gz", &now), "a.tar-v2.gz");
        assert_eq!(t("x-{ext}").render("README", &now), "x-");
        assert_eq!(t("{stem}").render(".hidden", &now), ".hidden");
        assert_eq!(t("map.tif").render("whatever.h5", &now), "map.tif");
    }

    #[test]
    fn renders_time_fields_in_the_given_zone() {
        let t = t("radar-%Y-%m-%d_%H%M-%j.{ext}");
        assert_eq!(
            t.render("a.h5", &at(2026, 3, 2, 0, 30)),
            "radar-2026-03-02_0030-061.h5"
        );
        // A file name is never read as strftime, and %% is a literal %.
        assert_eq!(
            TextTemplate::parse("%% {name} %d")
                .unwrap()
                .render("100%.h5", &at(2026, 3, 2, 0, 30)),
            "% 100%.h5 02"
        );
    }

    #[test]
    fn literal_or_not() {
        assert!(t("map.tif").is_literal());
        assert!(!t("{stem}.tif").is_literal());
        assert!(!t("map-%Y.tif").is_literal());
        assert!(t("map-%Y.tif").uses_time());
        assert!(!t("map-%Y.tif").uses_file_name());
        assert!(t("{stem}.tif").uses_file_name());
        // `%%` is a literal `%`, not a time field (and not an id character either).
        assert!(!uses_time("100%%.tif"));
        assert!(IdTemplate::parse("100%%.tif").is_err());
    }

    #[test]
    fn ids_refuse_literal_text_outside_the_charset() {
        for (s, at, ch) in [
            ("A.BIN", 0, 'A'),
            ("Radar_{stem}.h5", 0, 'R'),
            ("../../x.bin", 2, '/'),
            ("{stem} v2.h5", 6, ' '),
            ("x-%Y%%.h5", 4, '%'),
        ] {
            let e = IdTemplate::parse(s).unwrap_err().for_key("asset");
            assert!(
                matches!(&e, TemplateError::NotIdChar { ch: got, offset, .. } if *got == ch && *offset == at),
                "{s}: {e:?}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("asset {s:?} holds {ch:?}")),
                "{e}"
            );
        }
        assert!(IdTemplate::parse("radar-{stem}-%Y%m%d.h5").is_ok());
    }

    #[test]
    fn the_extension_of_an_id_template() {
        let ext = |s: &str| t(s).extension();
        let lit = |e: &str| IdExtension::Literal(e.to_owned());
        assert_eq!(ext("map.tif"), lit("tif"));
        assert_eq!(ext("{stem}.h5"), lit("h5"));
        assert_eq!(ext("radar-%Y%m%d.h5"), lit("h5"));
        assert_eq!(ext("readme"), lit("readme"));
        assert_eq!(ext("{stem}.{ext}"), IdExtension::FileExt);
        assert_eq!(ext("%Y-{name}"), IdExtension::FileName);
        assert_eq!(ext("{stem}"), IdExtension::Unknown);
        assert_eq!(ext("{stem}-{ext}"), IdExtension::Unknown);
        assert_eq!(ext("x.%Y"), IdExtension::Unknown);
        assert_eq!(t("{stem}.{ext}").dot_ext_offset(), Some(7));
        assert_eq!(t("a.{ext}-{name}").dot_ext_offset(), Some(2));
        assert_eq!(t("{stem}-{ext}").dot_ext_offset(), None);
        assert_eq!(t("{name}").dot_ext_offset(), None);
    }

    #[test]
    fn refuses_unknown_and_unbalanced() {
        let e = IdTemplate::parse("a-{date}").unwrap_err();
        assert_eq!(e.offset(), 2);
        assert!(e.to_string().contains("\"{date}\""), "{e}");
        assert!(e.to_string().contains("{stem}"), "{e}");
        for (s, at) in [("{name", 0), ("name}", 4), ("{na{me}", 0), ("a{}", 1)] {
            assert_eq!(IdTemplate::parse(s).unwrap_err().offset(), at, "{s}");
        }
    }

    #[test]
    fn refuses_unknown_time_fields_where_they_are() {
        for (s, at, field) in [
            ("a-%Q", 2, "%Q"),
            ("{stem}-%Y-%K", 10, "%K"),
            ("x%", 1, "%"),
            ("é%-Q", 2, "%-Q"),
        ] {
            let e = IdTemplate::parse(s).unwrap_err().for_key("item");
            assert_eq!(e.offset(), at, "{s}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("unknown time field \"{field}\" in item")),
                "{e}"
            );
        }
        assert!(TextTemplate::parse("%Y-%m-%dT%H:%M:%S%:z").is_ok());
    }

    #[test]
    fn ids_refuse_fields_that_render_other_characters() {
        for (s, sample) in [
            ("%b", "Jan"),
            ("x-%e", " 5"),
            ("%T", "03:04:05"),
            ("%Z", "UTC"),
        ] {
            let e = IdTemplate::parse(s).unwrap_err();
            assert!(
                matches!(&e, TemplateError::NotAnId { sample: got, .. } if got == sample),
                "{s}: {e}"
            );
        }
        assert!(TextTemplate::parse("%b %e").is_ok(), "free text may");
        assert!(IdTemplate::parse("%Y%m%d-%H%M%S.%3f-%P").is_ok());
    }

    #[test]
    fn captures_render_lowercased_in_ids_and_as_captured_in_text() {
        let known = ["date".to_owned(), "product".to_owned()];
        let captures =
            crate::config::NamePattern::new(r"^S2_(?P<date>\d{8})_(?P<product>\w+)\.tif$")
                .unwrap()
                .captures("S2_20261201_NDVI_10m.tif")
                .unwrap();
        let names = Names::new("S2_20261201_NDVI_10m.tif", Some(&captures));
        let now = at(2026, 12, 7, 12, 0);
        let id = IdTemplate::parse_with("s2-{date}-{product}.{ext}", &known).unwrap();
        assert_eq!(id.render(names, &now), "s2-20261201-ndvi_10m.tif");
        assert_eq!(id.captures(), ["date", "product"]);
        assert!(!id.is_literal());
        assert_eq!(id.min_len(), "s2--.".len());
        let text = TextTemplate::parse_with("{product} of {date}, %Y", &known).unwrap();
        assert_eq!(text.render(names, &now), "NDVI_10m of 20261201, 2026");
        // Without captures (a bare file name), a capture renders empty.
        assert_eq!(id.render("x.tif", &now), "s2--.tif");
        let dated = IdTemplate::parse_with("s2-{date}", &known).unwrap();
        assert_eq!(
            dated.parts(),
            [IdPart::Text("s2-"), IdPart::Capture("date")]
        );
    }

    #[test]
    fn unknown_captures_are_refused_where_they_are() {
        let known = ["date".to_owned()];
        let e = IdTemplate::parse_with("s2-{day}", &known)
            .unwrap_err()
            .for_key("item");
        assert_eq!(e.offset(), 3);
        assert!(
            e.to_string()
                .contains("not a named capture of the job's name_pattern ({date})"),
            "{e}"
        );
        // Without a name_pattern, the message says the job has none.
        let e = TextTemplate::parse("{date}").unwrap_err();
        assert!(matches!(e, TemplateError::Unknown { .. }), "{e:?}");
        assert!(e.to_string().contains("the job has none"), "{e}");
        // A placeholder no capture could be named stays an unknown placeholder.
        assert!(matches!(
            IdTemplate::parse_with("{a-b}", &known).unwrap_err(),
            TemplateError::Unknown { .. }
        ));
    }

    #[test]
    fn parts_in_order() {
        assert_eq!(
            t("s2-{stem}_%Y%-m.{ext}").parts(),
            [
                IdPart::Text("s2-"),
                IdPart::Stem,
                IdPart::Text("_"),
                IdPart::Time("%Y"),
                IdPart::Time("%-m"),
                IdPart::Text("."),
                IdPart::Ext,
            ]
        );
        assert_eq!(t("current").parts(), [IdPart::Text("current")]);
    }
}
