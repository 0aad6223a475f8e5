//! The parsers of successful answers: pure functions of the body, shared by the client, the
//! property tests and the fuzz targets (`fuzz/`). Each failure is a sentence naming what was
//! expected; the client wraps it in a `StacError` naming the request and the status.

use serde_json::Value;

use super::types::{ApiVersion, AssetInfo, Link, Upload, UploadedPart};

/// Any answer body as JSON.
pub fn json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

/// An upload object (create, get, complete, abort, or an entry of a listing).
pub fn upload(v: Value, api: ApiVersion) -> Result<Upload, String> {
    let checksum = checksum_of(&v, api);
    let mut u: Upload =
        serde_json::from_value(v).map_err(|e| format!("not an upload object: {e}"))?;
    u.checksum = checksum;
    Ok(u)
}

/// An entry of a parts listing.
pub fn part(v: Value) -> Result<UploadedPart, String> {
    serde_json::from_value(v).map_err(|e| format!("not a part object: {e}"))
}

/// What `GET A` says of an asset. Fields that are missing or of another type are `None`.
pub fn asset(v: &Value, api: ApiVersion) -> AssetInfo {
    AssetInfo {
        checksum: checksum_of(v, api),
        href: v.get("href").and_then(Value::as_str).map(str::to_owned),
        size: v.get("file:size").and_then(Value::as_u64),
        media_type: v.get("type").and_then(Value::as_str).map(str::to_owned),
    }
}

/// What `GET A` says of an asset, strictly: each field we use (the checksum under either
/// generation's name, `href`, `file:size`, `type`) is absent, null, or of its type; a field of
/// another type is an answer we do not understand, and the error names it. Fields we do not use
/// are not looked at (the server adds some).
pub fn checked_asset(v: &Value, api: ApiVersion) -> Result<AssetInfo, String> {
    if !v.is_object() {
        return Err(format!("not an asset object: {}", shown(v)));
    }
    let string = |field: &str| -> Result<Option<String>, String> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "field \"{field}\" is {}: expected a string",
                shown(other)
            )),
        }
    };
    let other = match api {
        ApiVersion::V1 => ApiVersion::V09,
        ApiVersion::V09 => ApiVersion::V1,
    };
    let ours = string(api.checksum_field())?;
    let theirs = string(other.checksum_field())?;
    let size = match v.get("file:size") {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.as_u64().ok_or_else(|| {
            format!(
                "field \"file:size\" is {}: expected a whole number of bytes",
                shown(n)
            )
        })?),
    };
    Ok(AssetInfo {
        checksum: ours.or(theirs),
        href: string("href")?,
        size,
        media_type: string("type")?,
    })
}

/// A JSON value as quoted in an error: short, whatever the server sent.
fn shown(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 60 {
        let mut cut = 60;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// One page of a listing: its entries under `key`, and the `href` of its `next` link.
#[derive(Debug)]
pub struct Page {
    /// The entries under the listing's key, as sent.
    pub items: Vec<Value>,
    /// The `href` of the `next` link; `None` on the last page.
    pub next: Option<String>,
}

/// A page of a listing (`{"uploads": [...], "links": [...]}`). Links that are not a list of
/// `{rel, href}` are ignored: a page without a usable `next` link is the last one.
pub fn page(mut v: Value, key: &str) -> Result<Page, String> {
    let Some(Value::Array(items)) = v.get_mut(key).map(Value::take) else {
        return Err(format!("no \"{key}\" list"));
    };
    let links: Vec<Link> = v
        .get("links")
        .cloned()
        .and_then(|l| serde_json::from_value(l).ok())
        .unwrap_or_default();
    let next = links.into_iter().find(|l| l.rel == "next").map(|l| l.href);
    Ok(Page { items, next })
}

/// The multihash of an upload or asset object, under either generation's field name (ours
/// first).
pub fn checksum_of(v: &Value, api: ApiVersion) -> Option<String> {
    let other = match api {
        ApiVersion::V1 => ApiVersion::V09,
        ApiVersion::V09 => ApiVersion::V1,
    };
    [api.checksum_field(), other.checksum_field()]
        .iter()
        .find_map(|f| v.get(*f).and_then(Value::as_str).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_upload_takes_the_checksum_of_either_generation() {
        let v = json!({"upload_id": "u", "status": "in-progress", "checksum:multihash": "1220ab"});
        let u = upload(v, ApiVersion::V1).unwrap();
        assert_eq!(u.checksum.as_deref(), Some("1220ab"));
        let v = json!({"upload_id": "u", "status": "completed", "file:checksum": "1220cd", "checksum:multihash": "1220ab"});
        assert_eq!(
            upload(v.clone(), ApiVersion::V1)
                .unwrap()
                .checksum
                .as_deref(),
            Some("1220cd")
        );
        assert_eq!(
            upload(v, ApiVersion::V09).unwrap().checksum.as_deref(),
            Some("1220ab")
        );
    }

    #[test]
    fn a_wrong_body_names_what_was_expected() {
        assert!(json(b"<html>").unwrap_err().starts_with("invalid JSON: "));
        let e = upload(json!({"status": "completed"}), ApiVersion::V1).unwrap_err();
        assert!(
            e.contains("not an upload object") && e.contains("upload_id"),
            "{e}"
        );
        assert_eq!(
            page(json!({"parts": 3}), "parts").unwrap_err(),
            "no \"parts\" list"
        );
        assert!(
            part(json!({"etag": 1}))
                .unwrap_err()
                .starts_with("not a part object")
        );
    }

    #[test]
    fn a_page_follows_only_a_well_formed_next_link() {
        let p = page(
            json!({"uploads": [{}], "links": [{"rel": "self", "href": "a"}, {"rel": "next", "href": "b"}]}),
            "uploads",
        )
        .unwrap();
        assert_eq!((p.items.len(), p.next.as_deref()), (1, Some("b")));
        let p = page(json!({"uploads": [], "links": "next"}), "uploads").unwrap();
        assert_eq!(p.next, None);
    }

    #[test]
    fn an_asset_with_a_wrongly_typed_field_is_refused_naming_it() {
        let e = checked_asset(&json!({"file:checksum": 5}), ApiVersion::V1).unwrap_err();
        assert_eq!(e, "field \"file:checksum\" is 5: expected a string");
        let e = checked_asset(&json!({"type": []}), ApiVersion::V1).unwrap_err();
        assert_eq!(e, "field \"type\" is []: expected a string");
        let e = checked_asset(&json!({"file:size": -1}), ApiVersion::V1).unwrap_err();
        assert!(e.starts_with("field \"file:size\" is -1"), "{e}");
        let e = checked_asset(&json!({"checksum:multihash": {}}), ApiVersion::V1).unwrap_err();
        assert!(e.contains("checksum:multihash"), "{e}");
        assert!(checked_asset(&json!([1]), ApiVersion::V1).is_err());
    }

    #[test]
    fn a_strict_asset_keeps_unknown_fields_and_nulls_out_of_its_way() {
        let a = checked_asset(
            &json!({"href": "h", "file:size": 12, "type": null, "file:checksum": "1220",
                    "roles": ["data"], "proj:epsg": 2056, "created": "2026-01-01T00:00:00Z"}),
            ApiVersion::V1,
        )
        .unwrap();
        assert_eq!(a.href.as_deref(), Some("h"));
        assert_eq!((a.size, a.media_type), (Some(12), None));
        assert_eq!(a.checksum.as_deref(), Some("1220"));
    }

    #[test]
    fn an_asset_keeps_what_it_can_read() {
        let a = asset(
            &json!({"href": "h", "file:size": "12", "type": 3, "file:checksum": "1220"}),
            ApiVersion::V1,
        );
        assert_eq!(a.href.as_deref(), Some("h"));
        assert_eq!((a.size, a.media_type), (None, None));
        assert_eq!(a.checksum.as_deref(), Some("1220"));
    }
}
