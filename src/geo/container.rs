//! Is a file the JSON, GeoJSON, Parquet or zip its media type says? The cheapest check that
//! tells a file of that format from another or from a damaged one: JSON parses (bounded), Parquet
//! has its magic at both ends, a zip has its end-of-central-directory record. Not a full
//! validation of the format (a zip's members are not inflated, a Parquet footer is not decoded).

use std::io::{self, Read, Seek, SeekFrom};

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::cog::Report;

/// The largest JSON parsed. Parsing streams (memory stays small whatever the size: values are
/// skipped, not kept), so the cap bounds time; a bigger file is passed with a warning.
pub const JSON_MAX: u64 = super::read::READ_BUDGET;

/// The GeoJSON object types (RFC 7946, section 1.4).
const GEOJSON_TYPES: [&str; 9] = [
    "Feature",
    "FeatureCollection",
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
];

/// A JSON text: parses as one value with nothing after it.
pub fn check_json<R: Read>(r: R, len: u64) -> Report {
    json(r, len, |r| {
        serde_json::from_reader::<_, IgnoredAny>(r).map(|_| Vec::new())
    })
}

/// A GeoJSON text: JSON whose top level is an object with a GeoJSON `type`.
pub fn check_geojson<R: Read>(r: R, len: u64) -> Report {
    json(r, len, |r| {
        let top: Top = serde_json::from_reader(r)?;
        Ok(match top.kind {
            Some(serde_json::Value::String(t)) if GEOJSON_TYPES.contains(&t.as_str()) => Vec::new(),
            Some(serde_json::Value::String(t)) => vec![format!(
                "JSON, but not GeoJSON: its \"type\" is {t:?}, not one of GeoJSON's (Feature, \
                 FeatureCollection, or a geometry such as Polygon)"
            )],
            Some(other) => vec![format!(
                "JSON, but not GeoJSON: its \"type\" is {other}, not a string such as \
                 \"FeatureCollection\""
            )],
            None => vec![
                "JSON, but not GeoJSON: the top-level object has no \"type\" (a GeoJSON file is \
                 a Feature, a FeatureCollection or a geometry)"
                    .into(),
            ],
        })
    })
}

/// The top level's `type` only: every other member is skipped as it is read. A map, never a
/// sequence (a derived struct would take `[1]` as `{"type": 1}`).
struct Top {
    kind: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Top;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a GeoJSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Top, A::Error> {
                let mut kind = None;
                while let Some(key) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "type" {
                        kind = Some(m.next_value()?);
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Top { kind })
            }
        }
        d.deserialize_map(V)
    }
}

fn json<R: Read>(
    r: R,
    len: u64,
    parse: impl FnOnce(&mut io::BufReader<io::Take<R>>) -> serde_json::Result<Vec<String>>,
) -> Report {
    let mut report = Report::default();
    if len > JSON_MAX {
        report.warnings.push(format!(
            "not parsed: {len} bytes, more than the {JSON_MAX} bytes the check reads"
        ));
        return report;
    }
    if len == 0 {
        report
            .errors
            .push("an empty file (0 bytes), not JSON".into());
        return report;
    }
    let mut r = io::BufReader::new(r.take(JSON_MAX));
    match parse(&mut r) {
        Ok(errors) => report.errors = errors,
        Err(e) => report.errors.push(describe_json(&e)),
    }
    report
}

fn describe_json(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {}, column {}", e.line(), e.column());
    match e.classify() {
        Category::Io => format!("cannot read the file: {e}"),
        Category::Eof => format!("the JSON ends early ({at}): truncated?"),
        Category::Syntax => format!("not valid JSON: {e}"),
        // The GeoJSON check's: the top level is not an object.
        Category::Data => {
            format!("JSON, but not GeoJSON: the top level is not an object ({e})")
        }
    }
}

/// A Parquet file: `PAR1` at both ends, and a footer length that fits between them.
pub fn check_parquet<R: Read + Seek>(mut r: R, len: u64) -> Report {
    let mut report = Report::default();
    let mut error = |e: String| {
        report.errors.push(e);
    };
    if len < 12 {
        error(format!(
            "{len} bytes: a Parquet file has at least 12 (PAR1, a footer length, PAR1)"
        ));
        return report;
    }
    let mut head = [0u8; 4];
    let mut tail = [0u8; 8];
    let read = r
        .read_exact(&mut head)
        .and_then(|()| r.seek(SeekFrom::End(-8)))
        .and_then(|_| r.read_exact(&mut tail));
    if let Err(e) = read {
        error(format!("cannot read the file: {e}"));
        return report;
    }
    if &head != b"PAR1" {
        error(format!(
            "not Parquet: it starts with {:?}, not PAR1",
            String::from_utf8_lossy(&head)
        ));
    }
    if &tail[4..] != b"PAR1" {
        error(
            "not a whole Parquet file: it does not end with PAR1 (truncated, or still being \
             written)"
                .into(),
        );
    } else {
        let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if footer > len - 12 {
            error(format!(
                "a Parquet footer of {footer} bytes in a file of {len}: truncated or damaged"
            ));
        }
    }
    report
}

/// End-of-central-directory signature, and the ZIP64 record's and locator's (APPNOTE 4.3.14-16).
const EOCD: [u8; 4] = *b"PK\x05\x06";
const ZIP64_EOCD: [u8; 4] = *b"PK\x06\x06";
const ZIP64_LOCATOR: [u8; 4] = *b"PK\x06\x07";
/// The record is 22 bytes and may be followed by a comment of up to 65,535.
const EOCD_LEN: u64 = 22;
const EOCD_SEARCH: u64 = EOCD_LEN + 65_535;

/// A zip archive: its end-of-central-directory record is found in the last 65,557 bytes, and the
/// central directory it points at lies inside the file (ZIP64 records followed).
pub fn check_zip<R: Read + Seek>(mut r: R, len: u64) -> Report {
    let mut report = Report::default();
    match zip(&mut r, len) {
        Ok(()) => {}
        Err(ZipError::Io(e)) => report.errors.push(format!("cannot read the file: {e}")),
        Err(ZipError::Invalid(e)) => report.errors.push(e),
    }
    report
}

enum ZipError {
    Io(io::Error),
    Invalid(String),
}

impl From<io::Error> for ZipError {
    fn from(e: io::Error) -> Self {
        ZipError::Io(e)
    }
}

fn zip<R: Read + Seek>(r: &mut R, len: u64) -> Result<(), ZipError> {
    let invalid = |s: String| Err(ZipError::Invalid(s));
    if len < EOCD_LEN {
        return invalid(format!(
            "{len} bytes: a zip archive has at least {EOCD_LEN} (its end-of-central-directory \
             record)"
        ));
    }
    let tail_len = len.min(EOCD_SEARCH);
    let start = len - tail_len;
    r.seek(SeekFrom::Start(start))?;
    let mut tail = vec![0u8; tail_len as usize];
    r.read_exact(&mut tail)?;
    // The last signature whose record and comment fit in the file (as Python's zipfile and
    // libzip look for it): a signature late in a comment does not.
    let Some(at) = (0..=tail.len() - EOCD_LEN as usize).rev().find(|&i| {
        let comment = usize::from(u16::from_le_bytes([tail[i + 20], tail[i + 21]]));
        tail[i..i + 4] == EOCD && i + EOCD_LEN as usize + comment <= tail.len()
    }) else {
        return invalid(
            "not a zip archive: no end-of-central-directory record in its last 65,557 bytes \
             (truncated, or not a zip)"
                .into(),
        );
    };
    let rec = &tail[at..at + EOCD_LEN as usize];
    let eocd_pos = start + at as u64;
    let u32_at =
        |b: &[u8], i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let (mut cd_size, mut cd_offset) = (u32_at(rec, 12), u32_at(rec, 16));
    let mut cd_end_limit = eocd_pos;
    if cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // ZIP64: the locator (20 bytes) right before the record names the ZIP64 record.
        let Some(loc_pos) = eocd_pos.checked_sub(20) else {
            return invalid("a ZIP64 archive without its ZIP64 locator: damaged".into());
        };
        r.seek(SeekFrom::Start(loc_pos))?;
        let mut loc = [0u8; 20];
        r.read_exact(&mut loc)?;
        if loc[..4] != ZIP64_LOCATOR {
            return invalid("a ZIP64 archive without its ZIP64 locator: damaged".into());
        }
        let rec64_pos = u64::from_le_bytes(loc[8..16].try_into().expect("8 bytes"));
        if rec64_pos.checked_add(56).is_none_or(|end| end > loc_pos) {
            return invalid(format!(
                "the ZIP64 end-of-central-directory record (byte {rec64_pos}) is not inside \
                 the file: truncated or damaged"
            ));
        }
        r.seek(SeekFrom::Start(rec64_pos))?;
        let mut rec64 = [0u8; 56];
        r.read_exact(&mut rec64)?;
        if rec64[..4] != ZIP64_EOCD {
            return invalid(format!(
                "no ZIP64 end-of-central-directory record at byte {rec64_pos}: damaged"
            ));
        }
        cd_size = u64::from_le_bytes(rec64[40..48].try_into().expect("8 bytes"));
        cd_offset = u64::from_le_bytes(rec64[48..56].try_into().expect("8 bytes"));
        cd_end_limit = rec64_pos;
    }
    if cd_offset
        .checked_add(cd_size)
        .is_none_or(|end| end > cd_end_limit)
    {
        return invalid(format!(
            "its central directory (byte {cd_offset}, {cd_size} bytes) is not inside the file \
             ({len} bytes): truncated or damaged"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn json_report(text: &str) -> Report {
        check_json(text.as_bytes(), text.len() as u64)
    }

    fn geojson_report(text: &str) -> Report {
        check_geojson(text.as_bytes(), text.len() as u64)
    }

    #[test]
    fn json_parses_or_says_where_it_does_not() {
        assert_eq!(
            json_report(r#"{"a": [1, 2, {"b": null}]}"#),
            Report::default()
        );
        assert_eq!(json_report("[1, 2]\n"), Report::default());
        let r = json_report(r#"{"a": 1"#);
        assert!(r.errors[0].starts_with("the JSON ends early"), "{r:?}");
        let r = json_report(r#"{"a": 1} x"#);
        assert!(
            r.errors[0].starts_with("not valid JSON: trailing characters"),
            "{r:?}"
        );
        let r = json_report("");
        assert!(r.errors[0].starts_with("an empty file"), "{r:?}");
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        // serde_json skips ignored values without recursing.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(json_report(&deep), Report::default());
        let r = json_report(&"[".repeat(100_000));
        assert!(r.errors[0].starts_with("the JSON ends early"), "{r:?}");
        // A deep `type` is built as a value: serde_json's recursion limit stops it.
        let r = geojson_report(&format!("{{\"type\": {deep}}}"));
        assert!(r.errors[0].contains("recursion limit"), "{r:?}");
    }

    #[test]
    fn a_json_bigger_than_the_cap_is_passed_with_a_warning() {
        let r = check_json(io::empty(), JSON_MAX + 1);
        assert!(
            r.errors.is_empty() && r.warnings[0].starts_with("not parsed"),
            "{r:?}"
        );
    }

    #[test]
    fn geojson_is_an_object_with_a_geojson_type() {
        let ok = r#"{"features": [{"type": "Feature", "geometry": null, "properties": {}}],
                     "type": "FeatureCollection"}"#;
        assert_eq!(geojson_report(ok), Report::default());
        assert_eq!(
            geojson_report(r#"{"type": "Point", "coordinates": [7.4, 46.9]}"#),
            Report::default()
        );
        let r = geojson_report(r#"{"type": "Catalog"}"#);
        assert!(
            r.errors[0].contains("\"Catalog\", not one of GeoJSON's"),
            "{r:?}"
        );
        let r = geojson_report(r#"{"features": []}"#);
        assert!(r.errors[0].contains("no \"type\""), "{r:?}");
        let r = geojson_report("[1]");
        assert!(
            r.errors[0].contains("the top level is not an object"),
            "{r:?}"
        );
        let r = geojson_report(r#"{"type": 3}"#);
        assert!(r.errors[0].contains("\"type\" is 3"), "{r:?}");
    }

    fn parquet_report(bytes: &[u8]) -> Report {
        check_parquet(Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn parquet_has_its_magic_at_both_ends() {
        let mut ok = b"PAR1".to_vec();
        ok.extend_from_slice(&[0; 10]);
        ok.extend_from_slice(&10u32.to_le_bytes());
        ok.extend_from_slice(b"PAR1");
        assert_eq!(parquet_report(&ok), Report::default());
        let r = parquet_report(&ok[..ok.len() - 3]);
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("does not end with PAR1")),
            "{r:?}"
        );
        let r = parquet_report(b"PAR1");
        assert!(r.errors[0].contains("at least 12"), "{r:?}");
        let mut long_footer = ok.clone();
        let n = long_footer.len();
        long_footer[n - 8..n - 4].copy_from_slice(&1000u32.to_le_bytes());
        let r = parquet_report(&long_footer);
        assert!(r.errors[0].contains("footer of 1000 bytes"), "{r:?}");
        let r = parquet_report(b"{\"not\": \"parquet\"}");
        assert!(r.errors[0].starts_with("not Parquet"), "{r:?}");
    }

    fn zip_report(bytes: &[u8]) -> Report {
        check_zip(Cursor::new(bytes), bytes.len() as u64)
    }

    /// An empty archive with a comment: its end-of-central-directory record alone.
    fn empty_zip(comment: &[u8]) -> Vec<u8> {
        let mut z = EOCD.to_vec();
        z.extend_from_slice(&[0; 16]);
        z.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        z.extend_from_slice(comment);
        z
    }

    #[test]
    fn a_zip_has_its_end_record_and_a_central_directory_inside() {
        assert_eq!(zip_report(&empty_zip(b"")), Report::default());
        assert_eq!(zip_report(&empty_zip(b"a comment")), Report::default());
        // A signature inside the comment does not count: the real one is before it.
        assert_eq!(
            zip_report(&empty_zip(b"PK\x05\x06 fake")),
            Report::default()
        );
        let mut past = empty_zip(b"");
        past[16..20].copy_from_slice(&100u32.to_le_bytes());
        let r = zip_report(&past);
        assert!(r.errors[0].contains("central directory (byte 100"), "{r:?}");
        let r = zip_report(b"not a zip at all, but long enough to look");
        assert!(r.errors[0].starts_with("not a zip archive"), "{r:?}");
        let r = zip_report(b"PK");
        assert!(r.errors[0].contains("at least 22"), "{r:?}");
    }

    #[test]
    fn a_zip64_record_is_followed() {
        let mut z = ZIP64_EOCD.to_vec();
        z.extend_from_slice(&[0; 36]);
        z.extend_from_slice(&0u64.to_le_bytes()); // central directory size
        z.extend_from_slice(&0u64.to_le_bytes()); // its offset
        z.extend_from_slice(&ZIP64_LOCATOR);
        z.extend_from_slice(&[0; 4]);
        z.extend_from_slice(&0u64.to_le_bytes()); // the ZIP64 record at byte 0
        z.extend_from_slice(&[0; 4]);
        let mut eocd = empty_zip(b"");
        eocd[12..20].copy_from_slice(&[0xFF; 8]);
        z.extend_from_slice(&eocd);
        assert_eq!(zip_report(&z), Report::default());
        // Its central directory past the end.
        z[48..56].copy_from_slice(&1_000_000u64.to_le_bytes());
        let r = zip_report(&z);
        assert!(r.errors[0].contains("byte 1000000"), "{r:?}");
    }
}
