//! File paths in state records, kept exactly: a file name is any bytes but `/` and NUL, and
//! JSON strings are UTF-8.
//!
//! A UTF-8 path is written as the plain string it is (so every state file written before this
//! adapter existed still loads, and an operator reads it as it is); any other path as
//! `{"bytes": "..."}`, its bytes percent-escaped: printable ASCII but `%` as it is, every other
//! byte as `%XX` (`r%E9sum%E9.txt`). Both read back to the very same bytes.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap as _;
use serde::{Deserializer, Serializer};

/// The key of the escaped form.
const BYTES: &str = "bytes";

/// Writes `path` as its string, or as `{"bytes": "<escaped>"}` when it is not UTF-8.
pub(crate) fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    match path.to_str() {
        Some(text) => s.serialize_str(text),
        None => {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry(BYTES, &escape(path.as_os_str().as_bytes()))?;
            map.end()
        }
    }
}

/// Reads either form written by [`serialize`].
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    d.deserialize_any(PathVisitor)
}

/// The same for an optional path (`null` is `None`).
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        path: &Option<PathBuf>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match path {
            Some(p) => super::serialize(p, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<PathBuf>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<PathBuf>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null or a path")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

struct PathVisitor;

impl<'de> Visitor<'de> for PathVisitor {
    type Value = PathBuf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a path: a string, or {\"bytes\": \"<percent-escaped bytes>\"}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PathBuf, E> {
        Ok(PathBuf::from(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PathBuf, A::Error> {
        let mut bytes: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != BYTES {
                return Err(de::Error::unknown_field(&key, &[BYTES]));
            }
            if bytes.is_some() {
                return Err(de::Error::duplicate_field(BYTES));
            }
            bytes = Some(map.next_value()?);
        }
        let text = bytes.ok_or_else(|| de::Error::missing_field(BYTES))?;
        let raw = unescape(&text).map_err(de::Error::custom)?;
        Ok(PathBuf::from(OsString::from_vec(raw)))
    }
}

/// Printable ASCII but `%` as it is, every other byte as `%XX`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`]; any `%` must start two hex digits.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'%' {
            out.push(b);
            rest = tail;
            continue;
        }
        let byte = tail
            .get(..2)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| {
                format!(
                    "a path's escaped bytes {text:?}: '%' at byte {} is not followed by two hex digits",
                    text.len() - rest.len()
                )
            })?;
        out.push(byte);
        rest = &tail[2..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        #[serde(with = "super")]
        path: PathBuf,
        #[serde(default, with = "super::option")]
        maybe: Option<PathBuf>,
    }

    fn os(bytes: &[u8]) -> PathBuf {
        PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
    }

    #[test]
    fn any_path_round_trips_and_utf8_stays_a_plain_string() {
        for bytes in [
            &b"/data/a.zip"[..],
            b"/data/r\xe9sum\xe9.txt",
            b"bad\xff.txt",
            b"100%\xff",
            b"%41",
            b"new\nline\x1b[31m",
            b"",
        ] {
            let rec = Rec {
                path: os(bytes),
                maybe: Some(os(bytes)),
            };
            let json = serde_json::to_string(&rec).unwrap();
            assert_eq!(serde_json::from_str::<Rec>(&json).unwrap(), rec, "{json}");
            if let Ok(text) = std::str::from_utf8(bytes) {
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&json).unwrap(),
                    serde_json::json!({"path": text, "maybe": text})
                );
            } else {
                assert!(json.contains(r#"{"bytes":"#), "{json}");
            }
        }
        let json = serde_json::to_string(&Rec {
            path: os(b"/d/r\xe9sum\xe9.txt"),
            maybe: None,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"path":{"bytes":"/d/r%E9sum%E9.txt"},"maybe":null}"#
        );
    }

    #[test]
    fn malformed_escapes_are_errors_not_guesses() {
        for bad in [
            r#"{"path": {"bytes": "a%4"}}"#,
            r#"{"path": {"bytes": "a%zz"}}"#,
            r#"{"path": {"bytes": "a%"}}"#,
            r#"{"path": {"other": "a"}}"#,
            r#"{"path": {}}"#,
            r#"{"path": 7}"#,
        ] {
            assert!(serde_json::from_str::<Rec>(bad).is_err(), "{bad}");
        }
        let old: Rec = serde_json::from_str(r#"{"path": "/d/a.zip"}"#).unwrap();
        assert_eq!(old.maybe, None, "a record without the optional path loads");
    }
}
