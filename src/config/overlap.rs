//! Whether two jobs can write to one asset: two id templates (each with the files pattern of
//! its watch job) collide when some file name and run time of the one and some of the other
//! render the same id. The files need not be the same: two files of two jobs that land on one
//! asset overwrite each other's uploads.
//!
//! Each (template, pattern) is turned into a glob over the ids it can render: literal text
//! stays, a time field and any part of a file name the pattern leaves open become `*`, what the
//! pattern fixes (the `.tif` of `*.tif`) stays literal, so `{name}` and `{stem}.{ext}` give the
//! same glob. Two such globs share a string exactly when [`intersect`] says so. The globs are
//! wider than what can really be rendered (a `*` also stands for characters an id cannot hold),
//! so a collision may be reported where none can happen, never the other way round.

use super::template::{Segment, segments, time_fields};

/// One element of an id glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Lit(char),
    /// Exactly one character (`?` or `[...]` in a pattern).
    One,
    /// Any text, empty included.
    Any,
}

/// True when `a` (rendered for files matching `pattern_a`, or for a job without files when
/// `None`) and `b` can render the same id.
pub(super) fn can_collide(
    a: &str,
    pattern_a: Option<&str>,
    b: &str,
    pattern_b: Option<&str>,
) -> bool {
    let globs = |template, pattern: Option<&str>| -> Vec<Vec<Token>> {
        match pattern {
            None => vec![id_glob(template, vec![Token::Any])],
            Some(p) => alternatives(p)
                .iter()
                .map(|name| id_glob(template, file_name_glob(name)))
                .collect(),
        }
    };
    let (ours, theirs) = (globs(a, pattern_a), globs(b, pattern_b));
    ours.iter().any(|x| theirs.iter().any(|y| intersect(x, y)))
}

/// Which file names a template renders as a given literal id ([`file_for_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Renders {
    /// No file name renders it.
    Never,
    /// Every file name does: the template is that literal id.
    Any,
    /// This file name only.
    Only(String),
    /// The template's form leaves it open (time fields, `{stem}` without `{ext}`, ...).
    Unknown,
}

/// The file names whose id `template` renders as the literal `id`. Told when the template is
/// literal text, or names the whole file name once (`{name}`, or `{stem}.{ext}`) beside literal
/// text, without time fields: then one file name at most renders `id`, and whether a watch takes
/// that file (its pattern, its `ignore` globs) decides whether the two jobs meet.
pub(super) fn file_for_id(template: &str, id: &str) -> Renders {
    let Ok(segments) = segments(template) else {
        return Renders::Unknown;
    };
    let mut prefix = String::new();
    let mut suffix = String::new();
    let mut named = false;
    let mut i = 0;
    while i < segments.len() {
        let whole_name = match &segments[i..] {
            [Segment::Name, ..] => Some(1),
            [Segment::Stem, Segment::Literal("."), Segment::Ext, ..] => Some(3),
            _ => None,
        };
        match (whole_name, &segments[i]) {
            (Some(_), _) if named => return Renders::Unknown,
            (Some(n), _) => {
                named = true;
                i += n;
                continue;
            }
            (None, Segment::Literal(text)) if !text.contains('%') => {
                if named { &mut suffix } else { &mut prefix }.push_str(text);
            }
            (None, _) => return Renders::Unknown,
        }
        i += 1;
    }
    if !named {
        return if prefix == id {
            Renders::Any
        } else {
            Renders::Never
        };
    }
    match id
        .strip_prefix(prefix.as_str())
        .and_then(|rest| rest.strip_suffix(suffix.as_str()))
    {
        // `{stem}.{ext}` renders a name with a dot (and `{name}` any name): a file name is never
        // empty.
        Some(name) if !name.is_empty() => Renders::Only(name.to_owned()),
        _ => Renders::Never,
    }
}

/// The patterns a pattern with `{a,b}` alternatives stands for, each with one of them (at most
/// [`MAX_ALTERNATIVES`]; past that, or nested, the braces stay and read as any text).
fn alternatives(pattern: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        let inner = &rest[open + 1..close];
        if inner.contains('{') || out.len() * inner.split(',').count() > MAX_ALTERNATIVES {
            break;
        }
        let head = &rest[..open];
        out = out
            .iter()
            .flat_map(|p| inner.split(',').map(move |alt| format!("{p}{head}{alt}")))
            .collect();
        rest = &rest[close + 1..];
    }
    for p in &mut out {
        p.push_str(rest);
    }
    out
}

/// A bound on the patterns `{a,b}` alternatives expand into.
const MAX_ALTERNATIVES: usize = 64;

/// The glob of the ids `template` can render for file names of the glob `name`.
fn id_glob(template: &str, name: Vec<Token>) -> Vec<Token> {
    let Ok(segments) = segments(template) else {
        // Refused elsewhere; anything may collide with it.
        return vec![Token::Any];
    };
    // `{stem}` and `{ext}`: split at the name's last dot when the pattern fixes the extension.
    let dot = name.iter().rposition(|t| *t == Token::Lit('.'));
    let (stem, ext) = match dot {
        Some(i)
            if i > 0
                && name[i + 1..]
                    .iter()
                    .all(|t| matches!(t, Token::Lit(c) if *c != '.')) =>
        {
            (name[..i].to_vec(), name[i + 1..].to_vec())
        }
        _ => (vec![Token::Any], vec![Token::Any]),
    };
    let mut out = Vec::new();
    for segment in segments {
        match segment {
            Segment::Literal(literal) => {
                let fields = time_fields(literal);
                let mut i = 0;
                while i < literal.len() {
                    if let Some((_, field)) = fields.iter().find(|(at, _)| *at == i) {
                        out.push(Token::Any);
                        i += field.len();
                    } else if literal[i..].starts_with("%%") {
                        out.push(Token::Lit('%'));
                        i += 2;
                    } else if let Some(c) = literal[i..].chars().next() {
                        out.push(Token::Lit(c));
                        i += c.len_utf8();
                    } else {
                        break;
                    }
                }
            }
            Segment::Name => out.extend_from_slice(&name),
            Segment::Stem => out.extend_from_slice(&stem),
            Segment::Ext => out.extend_from_slice(&ext),
            // A capture is part of the name, and any part of it.
            Segment::Capture(_) => out.push(Token::Any),
        }
    }
    out
}

/// The glob of the file names a files pattern matches: its last path component, with `*` (and
/// `**`) as [`Token::Any`], `?` and `[...]` as [`Token::One`], `{a,b}` as [`Token::Any`].
fn file_name_glob(pattern: &str) -> Vec<Token> {
    let last = pattern.rsplit('/').next().unwrap_or(pattern);
    let mut out = Vec::new();
    let mut chars = last.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if out.last() != Some(&Token::Any) {
                    out.push(Token::Any);
                }
            }
            '?' => out.push(Token::One),
            '[' => {
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
                out.push(Token::One);
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                out.push(Token::Any);
            }
            '\\' => out.push(Token::Lit(chars.next().unwrap_or('\\'))),
            c => out.push(Token::Lit(c)),
        }
    }
    out
}

/// True when some string matches both globs: a walk over pairs of positions, `Any` either
/// skipped or eating one element of the other glob (a whole `Any` of the other side included).
fn intersect(a: &[Token], b: &[Token]) -> bool {
    // seen[i][j]: the pair (i, j) was reached; reachable pairs are at most (|a|+1)(|b|+1).
    let width = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut todo = vec![(0usize, 0usize)];
    while let Some((i, j)) = todo.pop() {
        if std::mem::replace(&mut seen[i * width + j], true) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        let (x, y) = (a.get(i), b.get(j));
        if x == Some(&Token::Any) {
            todo.push((i + 1, j));
            if j < b.len() {
                todo.push((i, j + 1));
            }
        }
        if y == Some(&Token::Any) {
            todo.push((i, j + 1));
            if i < a.len() {
                todo.push((i + 1, j));
            }
        }
        match (x, y) {
            (Some(Token::Lit(p)), Some(Token::Lit(q))) if p == q => todo.push((i + 1, j + 1)),
            (Some(Token::One), Some(Token::Lit(_) | Token::One))
            | (Some(Token::Lit(_)), Some(Token::One)) => todo.push((i + 1, j + 1)),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_extensions_never_collide() {
        assert!(!can_collide(
            "{name}",
            Some("*.tif"),
            "{name}",
            Some("*.csv")
        ));
        assert!(!can_collide(
            "{stem}.tif",
            Some("*.tif"),
            "{name}",
            Some("*.csv")
        ));
        assert!(!can_collide("a.tif", None, "{name}", Some("*.csv")));
        assert!(!can_collide("radar-%Y.h5", None, "radar-%Y.zip", None));
        assert!(!can_collide(
            "legend.pdf",
            None,
            "{stem}.{ext}",
            Some("**/*.{tif,tiff}")
        ));
        assert!(can_collide(
            "a.tiff",
            None,
            "{stem}.{ext}",
            Some("**/*.{tif,tiff}")
        ));
    }

    #[test]
    fn name_and_stem_dot_ext_render_alike() {
        assert!(can_collide(
            "{name}",
            Some("*.tif"),
            "{stem}.tif",
            Some("*.tif")
        ));
        assert!(can_collide(
            "{name}",
            Some("*.tif"),
            "{stem}.{ext}",
            Some("*.tif")
        ));
        // Different files of two jobs landing on one asset collide too.
        assert!(can_collide(
            "{stem}.tif",
            Some("*.csv"),
            "{name}",
            Some("*.tif")
        ));
        assert!(can_collide(
            "{name}",
            Some("**/*.h5"),
            "{name}",
            Some("*.h5")
        ));
        assert!(can_collide(
            "{name}",
            Some("scan-??.h5"),
            "scan-{stem}.h5",
            Some("*.h5")
        ));
        assert!(!can_collide(
            "{name}",
            Some("scan-??.h5"),
            "scan-1{ext}.h5",
            Some("*.h5")
        ));
        assert!(can_collide("a.h5", None, "{name}", Some("*.h5")));
        assert!(can_collide("radar-%Y.h5", None, "radar-2026.h5", None));
    }

    #[test]
    fn a_literal_id_names_the_one_file_a_whole_name_template_renders_it_from() {
        let only = |n: &str| Renders::Only(n.to_owned());
        assert_eq!(file_for_id("{name}", "radar.zip"), only("radar.zip"));
        assert_eq!(file_for_id("{stem}.{ext}", "radar.zip"), only("radar.zip"));
        assert_eq!(file_for_id("x-{name}", "x-radar.zip"), only("radar.zip"));
        assert_eq!(file_for_id("x-{name}", "radar.zip"), Renders::Never);
        assert_eq!(file_for_id("{name}.zip", ".zip"), Renders::Never);
        assert_eq!(file_for_id("radar.zip", "radar.zip"), Renders::Any);
        assert_eq!(file_for_id("radar.zip", "other.zip"), Renders::Never);
        // Left open: a stem whose extension comes from elsewhere, time fields, two names.
        assert_eq!(file_for_id("{stem}.zip", "radar.zip"), Renders::Unknown);
        assert_eq!(file_for_id("{name}-%Y", "a-2026"), Renders::Unknown);
        assert_eq!(file_for_id("{name}{name}", "aa"), Renders::Unknown);
    }

    #[test]
    fn literal_parts_must_agree() {
        assert!(!can_collide(
            "a-{name}",
            Some("*.h5"),
            "b-{name}",
            Some("*.h5")
        ));
        assert!(!can_collide(
            "{stem}-x.h5",
            Some("*.h5"),
            "{stem}-y.h5",
            Some("*.h5")
        ));
        assert!(can_collide(
            "a-{name}",
            Some("*.h5"),
            "{name}",
            Some("*.h5")
        ));
    }
}
