//! What the server keeps of the metadata a job file gives, as checks on single values: item
//! properties, extra asset fields, titles, watch patterns, and `${VAR}` where it is not expanded.
//! The id and media-type rules are in [`stac_client::rules`].

use std::ops::Range;

use serde_json::Value;

use super::metadata::{ASSET_PROPERTIES, ITEM_PROPERTIES};

/// The `geoadmin:lang` values the server accepts.
pub(super) const LANGUAGES: &[&str] = &["de", "it", "fr", "rm", "en"];

/// The longest `title` the server stores, and the longest `geoadmin:variant`.
pub(super) const MAX_TITLE: usize = 255;
pub(super) const MAX_VARIANT: usize = 25;

/// The keys that expand `${VAR}`, as dotted paths: paths, secret files included.
const EXPANDING: &[&str] = &[
    "state_dir",
    "server.ca_file",
    "server.auth.password_file",
    "server.auth.token_file",
    "job.file",
    "job.watch.dir",
    "cluster.ca_file",
    "cluster.url_file",
];

/// Secrets written inline: they may hold anything, and are never shown.
const SECRETS: &[&str] = &["server.auth.password", "server.auth.token", "cluster.url"];

/// Keys whose values may hold a password, and are not shown.
const NOT_SHOWN: &[&str] = &["server.proxy"];

/// `A, B, C and D`.
fn list(items: &[&str]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// What a refused property is blamed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blame {
    Key,
    Value,
}

/// A check of one property: `Err` says where the problem is and what it is.
pub(super) type PropertyCheck = fn(&str, &Value) -> Result<(), (Blame, String)>;

/// An item property of `[job.item_metadata.properties]`: the key, then the value's type.
pub(super) fn item_property(key: &str, value: &Value) -> Result<(), (Blame, String)> {
    match key {
        "created" | "updated" => Err((
            Blame::Key,
            format!("properties may not set {key:?}: the server sets it (read-only)"),
        )),
        "forecast:reference_datetime" => match value.as_str() {
            Some(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Ok(()),
            _ => Err((
                Blame::Value,
                format!(
                    "{key} = {value} is not an RFC 3339 date-time: expected e.g. \"2026-11-25T06:00:00Z\" (with its offset)"
                ),
            )),
        },
        "forecast:horizon" | "forecast:duration" => match value.as_str() {
            Some(s) if iso_duration(s) => Ok(()),
            _ => Err((
                Blame::Value,
                format!(
                    "{key} = {value} is not an ISO 8601 duration: expected e.g. \"PT6H\", \"P2D\" or \"P1DT12H30M\" (days, hours, minutes and seconds; the server takes no years, months or weeks)"
                ),
            )),
        },
        "forecast:variable" => match value.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(()),
            _ => Err((
                Blame::Value,
                format!("{key} = {value}: expected a non-empty string, e.g. \"T_2M\""),
            )),
        },
        "forecast:perturbed" => match value {
            Value::Bool(_) => Ok(()),
            _ => Err((
                Blame::Value,
                format!("{key} = {value}: expected true or false"),
            )),
        },
        other => Err((
            Blame::Key,
            format!(
                "the server drops item property {other:?} without a word: [job.item_metadata.properties] may hold only {} (datetime, start_datetime, end_datetime, title and expires are keys of [job.item_metadata] itself)",
                list(ITEM_PROPERTIES)
            ),
        )),
    }
}

/// An extra asset field of `[job.asset_metadata.properties]`, as [`item_property`].
pub(super) fn asset_property(key: &str, value: &Value) -> Result<(), (Blame, String)> {
    match key {
        "created" | "updated" => Err((
            Blame::Key,
            format!("properties may not set {key:?}: the server sets it (read-only)"),
        )),
        "description" => match value.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(()),
            _ => Err((
                Blame::Value,
                format!(
                    "description = {value}: expected a non-blank string (the server refuses a blank one)"
                ),
            )),
        },
        "gsd" => match value.as_f64() {
            Some(g) if g > 0.0 => Ok(()),
            _ => Err((
                Blame::Value,
                format!(
                    "gsd = {value}: expected a number above 0 (the ground sample distance, in metres)"
                ),
            )),
        },
        "geoadmin:lang" => match value.as_str() {
            Some(s) if LANGUAGES.contains(&s) => Ok(()),
            _ => Err((
                Blame::Value,
                format!(
                    "geoadmin:lang = {value} is not one of the server's languages: expected \"de\", \"it\", \"fr\", \"rm\" or \"en\""
                ),
            )),
        },
        "geoadmin:variant" => match value.as_str() {
            Some(s) if variant(s) && s.chars().count() <= MAX_VARIANT => Ok(()),
            _ => Err((
                Blame::Value,
                format!(
                    "geoadmin:variant = {value}: expected at most {MAX_VARIANT} letters and digits, words separated by one space (e.g. \"komb\" or \"krel 2\")"
                ),
            )),
        },
        other => Err((
            Blame::Key,
            format!(
                "the server refuses asset field {other:?} (400 \"Unexpected property in payload\"): [job.asset_metadata.properties] may hold only {} (type, title, roles and \"proj:epsg\" are keys of [job.asset_metadata] itself)",
                list(ASSET_PROPERTIES)
            ),
        )),
    }
}

/// [`asset_property`] for `api_version = "v0.9"`, whose assets call `gsd` `eo:gsd`.
pub(super) fn asset_property_v09(key: &str, value: &Value) -> Result<(), (Blame, String)> {
    match key {
        "gsd" => Err((
            Blame::Key,
            "gsd does not apply with api_version = \"v0.9\": the server refuses it there (400 \"Unexpected property in payload\"); its field is \"eo:gsd\", which stac-uploadd does not send".to_owned(),
        )),
        _ => asset_property(key, value),
    }
}

/// The server's `geoadmin:variant`: ASCII letters and digits, words separated by one space.
fn variant(s: &str) -> bool {
    let mut words = 0;
    for word in s.split(char::is_whitespace) {
        if word.is_empty() || !word.chars().all(|c| c.is_ascii_alphanumeric()) {
            return false;
        }
        words += 1;
    }
    words > 0
}

/// An ISO 8601 duration as the server reads it: `P`, days, then `T` with hours, minutes and
/// seconds, each optional but at least one given, numbers with an optional fraction, an
/// optional sign first.
pub(super) fn iso_duration(s: &str) -> bool {
    fn number(n: &str) -> bool {
        let (int, frac) = n.split_once(['.', ',']).unwrap_or((n, "0"));
        !int.is_empty()
            && !frac.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    }
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let Some(rest) = s.strip_prefix('P') else {
        return false;
    };
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut any = false;
    if !days.is_empty() {
        match days.strip_suffix('D') {
            Some(n) if number(n) => any = true,
            _ => return false,
        }
    }
    if let Some(mut t) = time {
        let mut in_time = false;
        for unit in ['H', 'M', 'S'] {
            if let Some(i) = t.find(|c: char| c.is_ascii_alphabetic())
                && t[i..].starts_with(unit)
            {
                if !number(&t[..i]) {
                    return false;
                }
                t = &t[i + 1..];
                in_time = true;
            }
        }
        if !t.is_empty() || !in_time {
            return false;
        }
        any = true;
    }
    any
}

/// The extensions (without the dot) of the names a watch pattern matches, when each of its
/// alternatives ends in a literal one: `*.h5` gives `h5`, `**/*.{tif,tiff}` gives `tif` and
/// `tiff`; `*`, `data_*` or `*.t?f` give `None`.
pub(super) fn pattern_extensions(pattern: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for alternative in expand_braces(pattern, 0)? {
        let name = alternative.rsplit('/').next().unwrap_or(&alternative);
        let (_, ext) = name.rsplit_once('.')?;
        if ext.is_empty() || ext.contains(['*', '?', '[', ']', '{', '}', '\\', '!']) {
            return None;
        }
        if !out.iter().any(|e: &String| e == ext) {
            out.push(ext.to_owned());
        }
    }
    Some(out)
}

/// The alternatives of a glob's `{a,b}` groups (not nested); `None` for nesting or too many.
fn expand_braces(pattern: &str, depth: usize) -> Option<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        return Some(vec![pattern.to_owned()]);
    };
    if depth > 4 {
        return None;
    }
    let close = open + pattern[open..].find('}')?;
    let inner = &pattern[open + 1..close];
    if inner.contains('{') {
        return None;
    }
    let mut out = Vec::new();
    for alt in inner.split(',') {
        let joined = format!("{}{alt}{}", &pattern[..open], &pattern[close + 1..]);
        out.extend(expand_braces(&joined, depth + 1)?);
    }
    Some(out)
}

/// Every string written in the file that holds `${` where the key does not expand variables:
/// `(span of the value, message)`.
pub(super) fn unexpanded_vars(doc: &toml::de::DeTable<'_>) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    walk_table(doc, &mut Vec::new(), &mut out);
    out
}

fn walk_table<'a>(
    table: &'a toml::de::DeTable<'_>,
    path: &mut Vec<&'a str>,
    out: &mut Vec<(Range<usize>, String)>,
) {
    for (key, value) in table.iter() {
        path.push(key.get_ref());
        walk_value(value, path, out);
        path.pop();
    }
}

fn walk_value<'a>(
    value: &'a toml::Spanned<toml::de::DeValue<'_>>,
    path: &mut Vec<&'a str>,
    out: &mut Vec<(Range<usize>, String)>,
) {
    use toml::de::DeValue;
    match value.get_ref() {
        DeValue::String(s) if s.contains("${") => {
            let key = path.join(".");
            if EXPANDING.contains(&key.as_str()) || SECRETS.contains(&key.as_str()) {
                return;
            }
            let shown = if NOT_SHOWN.contains(&key.as_str()) {
                String::new()
            } else {
                format!(" {:?}", s.as_ref())
            };
            out.push((
                value.span(),
                format!(
                    "{key}{shown} holds \"${{\", but {key} does not expand ${{VAR}}: it would be used as written; only paths expand variables ({})",
                    list(EXPANDING)
                ),
            ));
        }
        DeValue::Array(items) => {
            for item in items.iter() {
                walk_value(item, path, out);
            }
        }
        DeValue::Table(t) => walk_table(t, path, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn iso_durations_as_the_server_reads_them() {
        for ok in [
            "PT6H",
            "P2D",
            "P1DT12H30M",
            "PT0.5S",
            "-PT1H",
            "PT1,5H",
            "P1DT1S",
        ] {
            assert!(iso_duration(ok), "{ok}");
        }
        for bad in [
            "6h", "P", "PT", "P1Y", "P1W", "PT1H2H", "PT1M1H", "P1H", "PTH", "PT.5S",
        ] {
            assert!(!iso_duration(bad), "{bad}");
        }
    }

    #[test]
    fn pattern_extensions_need_a_literal_one_in_every_alternative() {
        assert_eq!(pattern_extensions("*.h5"), Some(vec!["h5".to_owned()]));
        assert_eq!(
            pattern_extensions("**/scan_*.tif"),
            Some(vec!["tif".to_owned()])
        );
        assert_eq!(
            pattern_extensions("*.{tif,tiff}"),
            Some(vec!["tif".to_owned(), "tiff".to_owned()])
        );
        assert_eq!(
            pattern_extensions("{a,b}*.zip"),
            Some(vec!["zip".to_owned()])
        );
        for none in [
            "*",
            "data_*",
            "*.t?f",
            "*.*",
            "*.{tif,*}",
            "dir.d/*",
            "{*.h5,README}",
        ] {
            assert_eq!(pattern_extensions(none), None, "{none}");
        }
    }

    #[test]
    fn properties_keep_to_what_the_server_keeps() {
        assert!(item_property("forecast:horizon", &json!("PT6H")).is_ok());
        assert!(item_property("forecast:perturbed", &json!(true)).is_ok());
        assert!(
            item_property(
                "forecast:reference_datetime",
                &json!("2026-01-01T00:00:00Z")
            )
            .is_ok()
        );
        assert_eq!(
            item_property("forecast:perturbed", &json!("yes"))
                .unwrap_err()
                .0,
            Blame::Value
        );
        assert_eq!(item_property("gsd", &json!(2)).unwrap_err().0, Blame::Key);
        assert!(asset_property("geoadmin:variant", &json!("krel 2")).is_ok());
        for bad in ["krel  2", " krel", "krel-2", "abcdefghijklmnopqrstuvwxyz"] {
            assert!(
                asset_property("geoadmin:variant", &json!(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(asset_property("gsd", &json!(0)).is_err());
        assert!(asset_property("gsd", &json!(0.5)).is_ok());
        assert!(asset_property("geoadmin:lang", &json!("DE")).is_err());
    }
}
