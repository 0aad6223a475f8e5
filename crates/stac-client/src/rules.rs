//! The server's rules for ids and media types, kept on the client side so that a job file can be
//! checked before anything is sent, and ids rendered from file names can be checked before a run
//! creates anything.
//!
//! The authority is service-stac (`app/stac_api/validators.py`): ids hold only `0-9 a-z - _ .`,
//! an asset id ends in an extension of the server's media-type table, and that extension must be
//! one of its media type's. The table below is the client's own copy, on purpose: the emulator
//! keeps another, so that neither can hide a bug of the other.
//!
//! Every check is a scan of the id with no allocation unless it fails.

/// What the server's id rule allows, as said in messages.
pub const ID_CHARS: &str = "0-9, a-z, '-', '_' and '.'";

/// The longest id the server stores (its `max_length` for item and asset ids).
pub const MAX_ID_LEN: usize = 255;

/// The longest asset path (`collection/item/asset`, or `collection/asset` for a collection
/// asset) the server stores: a longer one fails with 500 "value too long for type character
/// varying(255)", after the item may have been created.
pub const MAX_PATH_LEN: usize = 255;

/// The longest role the server takes (a longer one is a 400).
pub const MAX_ROLE_LEN: usize = 255;

/// An asset's path, `collection/item/asset`, within [`MAX_PATH_LEN`] characters.
pub fn check_path(collection: &str, item: Option<&str>, asset: &str) -> Result<(), String> {
    let len = collection.chars().count()
        + item.map_or(0, |i| i.chars().count() + 1)
        + 1
        + asset.chars().count();
    if len <= MAX_PATH_LEN {
        return Ok(());
    }
    let path = match item {
        Some(i) => format!("{collection}/{i}/{asset}"),
        None => format!("{collection}/{asset}"),
    };
    let shown: String = path.chars().take(48).collect();
    Err(format!(
        "the asset path {shown:?}... is {len} characters long: the server stores paths (collection/item/asset) of at most {MAX_PATH_LEN}"
    ))
}

/// A media type the server accepts for asset data, with the extensions an asset id of that type
/// may end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType {
    /// The normalised media type (see [`normalize_media_type`]).
    pub name: &'static str,
    /// The extensions, each with its dot.
    pub extensions: &'static [&'static str],
}

const fn mt(name: &'static str, extensions: &'static [&'static str]) -> MediaType {
    MediaType { name, extensions }
}

/// The server's media types, normalised, in the order of its table.
pub const MEDIA_TYPES: &[MediaType] = &[
    mt("application/vnd.apache.parquet", &[".parquet"]),
    mt("application/x.ascii-grid+zip", &[".zip"]),
    mt("application/x.ascii-xyz+zip", &[".zip"]),
    mt("application/x.e00+zip", &[".zip"]),
    mt("application/x.geotiff+zip", &[".zip"]),
    mt("image/tiff; application=geotiff", &[".tiff", ".tif"]),
    mt("application/x.tiff+zip", &[".zip"]),
    mt("application/x.png+zip", &[".zip"]),
    mt("application/x.jpeg+zip", &[".zip"]),
    mt("application/vnd.google-earth.kml+xml", &[".kml"]),
    mt("application/vnd.google-earth.kmz", &[".kmz"]),
    mt("application/x.dxf+zip", &[".zip"]),
    mt("application/gml+xml", &[".gml", ".xml"]),
    mt("application/x.gml+zip", &[".zip"]),
    mt("application/vnd.las", &[".las"]),
    mt("application/vnd.laszip", &[".laz", ".zip"]),
    mt("application/x.vnd.las+zip", &[".zip"]),
    mt("application/vnd.laszip+copc", &[".zip", ".laz"]),
    mt("application/x.shapefile+zip", &[".zip"]),
    mt("application/x.filegdb+zip", &[".zip"]),
    mt("application/x.filegdbp+zip", &[".zip"]),
    mt("application/x.ms-access+zip", &[".zip"]),
    mt("application/x.ms-excel+zip", &[".zip"]),
    mt("application/x.tab+zip", &[".zip"]),
    mt("application/x.tab-raster+zip", &[".zip"]),
    mt("application/x.csv+zip", &[".zip"]),
    mt("text/csv", &[".csv"]),
    mt("application/geopackage+sqlite3", &[".gpkg"]),
    mt("application/x.geopackage+zip", &[".zip"]),
    mt("application/geo+json", &[".json", ".geojson"]),
    mt("application/x.geojson+zip", &[".zip"]),
    mt("application/x.interlis; version=2.3", &[".xtf", ".xml"]),
    mt("application/x.interlis+zip; version=2.3", &[".zip"]),
    mt("application/x.interlis; version=2.4", &[".xtf", ".xml"]),
    mt("application/x.interlis+zip; version=2.4", &[".zip"]),
    mt("application/x.interlis; version=1", &[".itf"]),
    mt("application/x.interlis+zip; version=1", &[".zip"]),
    mt(
        "image/tiff; application=geotiff; profile=cloud-optimized",
        &[".tiff", ".tif"],
    ),
    mt("application/pdf", &[".pdf"]),
    mt("application/x.pdf+zip", &[".zip"]),
    mt("application/json", &[".json"]),
    mt("application/x.json+zip", &[".zip"]),
    mt("application/x-netcdf", &[".nc"]),
    mt("application/x.netcdf+zip", &[".zip"]),
    mt("application/xml", &[".xml"]),
    mt("application/x.xml+zip", &[".zip"]),
    mt("application/vnd.mapbox-vector-tile", &[".mbtiles"]),
    mt("text/plain", &[".txt"]),
    mt("text/x.plain+zip", &[".zip"]),
    mt("application/x.dwg+zip", &[".zip"]),
    mt("application/zip", &[".zip"]),
    mt("image/tiff", &[".tiff", ".tif"]),
    mt("image/jpeg", &[".jpeg", ".jpg"]),
    mt("image/png", &[".png"]),
    mt("application/vnd.sqlite3", &[".sqlite"]),
    mt("application/grib", &[".grib", ".grib2"]),
    mt("application/x-hdf5", &[".h5"]),
    mt("application/x.aixm", &[".aixm"]),
    mt("application/x.aixm+zip", &[".zip"]),
    mt("application/x-tar", &[".tar"]),
];

/// True for the characters an id may hold: `0-9 a-z - _ .`.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
}

/// A collection, item or asset id: not empty, at most 255 characters, only `0-9 a-z - _ .`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("the id is empty: expected {ID_CHARS}"));
    }
    if let Some(c) = id.chars().find(|&c| !is_id_char(c)) {
        // What a file name that is not UTF-8 leaves in an id made from it (its bad bytes read
        // as U+FFFD): say so, rather than leave the reader puzzling over a replacement sign.
        let why = if c == char::REPLACEMENT_CHARACTER {
            " (it comes from a file name that is not UTF-8, whose bytes cannot make an id)"
        } else {
            ""
        };
        return Err(format!(
            "invalid id {id:?}: {c:?} is not allowed{why}; ids hold only {ID_CHARS}"
        ));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "id {:?}... is {} characters long: expected at most {MAX_ID_LEN}",
            &id[..32],
            id.len()
        ));
    }
    Ok(())
}

/// The extension the server reads from an asset id: what follows its last dot, without the dot
/// (the whole id when it has none, as the server has it).
pub fn asset_extension(id: &str) -> &str {
    id.rsplit_once('.').map_or(id, |(_, ext)| ext)
}

/// An asset id: [`check_id`], then an extension of the server's table and, when `media_type` is
/// given, one of that media type's (it is normalised first; an unknown one is refused).
pub fn check_asset_id(id: &str, media_type: Option<&str>) -> Result<(), String> {
    check_id(id)?;
    match media_type {
        Some(t) => asset_fits_type(id, t),
        None => check_extension(asset_extension(id), None)
            .map_err(|why| format!("asset id {id:?}: {why}")),
    }
}

/// Whether an asset of media type `media_type` may have the id `id`: the one rule of the fit,
/// for the run (an asset it creates), `check` and `check --online` (an asset that exists) alike.
/// The server judges the id's extension, never the uploaded file's name: a file `scan.hdf`
/// uploads fine to an existing `scan.h5` of type `application/x-hdf5`.
pub fn asset_fits_type(id: &str, media_type: &str) -> Result<(), String> {
    check_extension(asset_extension(id), Some(media_type))
        .map_err(|why| format!("asset id {id:?}: {why}"))
}

/// An asset id's extension (without its dot, e.g. `"h5"`): one of the server's table and, when
/// `media_type` is given, one of that type's. For checks before the whole id is known, such as
/// `{stem}.h5` or `{name}` with a pattern `*.h5`.
pub fn check_extension(ext: &str, media_type: Option<&str>) -> Result<(), String> {
    let known = MEDIA_TYPES
        .iter()
        .any(|t| t.extensions.iter().any(|e| e[1..] == *ext));
    if !known {
        return Err(if ext.is_empty() {
            format!(
                "the id ends in \".\", with no extension: expected one of {}",
                all_extensions()
            )
        } else {
            format!(
                "\".{ext}\" is not an extension the server knows: expected one of {}",
                all_extensions()
            )
        });
    }
    let Some(media_type) = media_type else {
        return Ok(());
    };
    let t = check_media_type(media_type)?;
    if t.extensions.iter().any(|e| e[1..] == *ext) {
        return Ok(());
    }
    Err(format!(
        "\".{ext}\" does not fit media type {:?}: expected {} (\".{ext}\" fits {})",
        t.name,
        t.extensions.join(" or "),
        types_for(ext)
    ))
}

/// The media type as the server stores it: type and parameter names lower-case, parameters
/// sorted, `"; "` between them. `None` when it is not written as `type/subtype; name=value`.
pub fn normalize_media_type(media_type: &str) -> Option<String> {
    fn token(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
    }
    let media_type = media_type.trim();
    let mut parts = media_type.split(';');
    let essence = parts.next()?.trim_end_matches([' ', '\t']);
    let (main, sub) = essence.split_once('/')?;
    if !(token(main) && token(sub)) {
        return None;
    }
    let mut params = Vec::new();
    for p in parts {
        let (name, value) = p.trim_matches([' ', '\t']).split_once('=')?;
        if !(token(name) && token(value)) {
            return None;
        }
        params.push(format!("; {}={value}", name.to_ascii_lowercase()));
    }
    params.sort();
    Some(format!(
        "{}{}",
        essence.to_ascii_lowercase(),
        params.concat()
    ))
}

/// The server's entry for a media type, after normalising it.
pub fn media_type(media_type: &str) -> Option<&'static MediaType> {
    // Written as stored, the usual case: no allocation.
    if let Some(t) = MEDIA_TYPES.iter().find(|t| t.name == media_type) {
        return Some(t);
    }
    let normalized = normalize_media_type(media_type)?;
    MEDIA_TYPES.iter().find(|t| t.name == normalized)
}

/// [`media_type`], or why the server would refuse it.
pub fn check_media_type(media_type_text: &str) -> Result<&'static MediaType, String> {
    media_type(media_type_text).ok_or_else(|| {
        let how = if normalize_media_type(media_type_text).is_none() {
            "is not a media type (expected type/subtype, with parameters as \"; name=value\")"
        } else {
            "is not one the server accepts"
        };
        format!(
            "media type {media_type_text:?} {how}: expected one of the server's, such as \"application/x-hdf5\", \"image/tiff; application=geotiff\", \"application/zip\", \"text/csv\" or \"application/json\""
        )
    })
}

/// The media types an extension (without its dot) fits, for messages: `"a, b or c"`; past four,
/// the generic one (`application/zip`) first, then how many others.
pub fn types_for(ext: &str) -> String {
    let mut fits: Vec<&str> = MEDIA_TYPES
        .iter()
        .filter(|t| t.extensions.iter().any(|e| e[1..] == *ext))
        .map(|t| t.name)
        .collect();
    if fits.len() > 4 {
        // Zipped types: the plain zip says most.
        fits.sort_by_key(|t| *t != "application/zip");
        return format!(
            "{:?}, {:?} or {} other types",
            fits[0],
            fits[1],
            fits.len() - 2
        );
    }
    let names: Vec<String> = fits.iter().map(|t| format!("{t:?}")).collect();
    match names.split_last() {
        None => "no media type".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Every extension of the table, sorted, once each: `".aixm, .csv, ..."`.
fn all_extensions() -> String {
    let mut all: Vec<&str> = MEDIA_TYPES
        .iter()
        .flat_map(|t| t.extensions.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hold_only_lower_case_digits_and_three_marks() {
        for ok in ["a", "ch.swisstopo.example", "radar-2026_01.h5", "0", "..."] {
            assert_eq!(check_id(ok), Ok(()), "{ok}");
        }
        for (bad, c) in [
            ("A.BIN", 'A'),
            ("Demo Coll", 'D'),
            ("demo coll", ' '),
            ("../../x.bin", '/'),
            ("é.h5", 'é'),
            ("a\n", '\n'),
        ] {
            let e = check_id(bad).unwrap_err();
            assert!(e.contains(&format!("{c:?} is not allowed")), "{bad}: {e}");
            assert!(e.contains(ID_CHARS), "{e}");
        }
        assert!(check_id("").unwrap_err().contains("empty"));
        assert!(check_id(&"a".repeat(255)).is_ok());
        assert!(
            check_id(&"a".repeat(256))
                .unwrap_err()
                .contains("at most 255")
        );
    }

    #[test]
    fn asset_ids_end_in_a_known_extension_that_fits_the_type() {
        assert_eq!(check_asset_id("scan.h5", None), Ok(()));
        assert_eq!(
            check_asset_id("scan.h5", Some("application/x-hdf5")),
            Ok(())
        );
        assert_eq!(
            check_asset_id("a.zip", Some("application/x.geotiff+zip")),
            Ok(())
        );
        assert_eq!(
            check_asset_id("a.tif", Some("IMAGE/TIFF;Application=geotiff")),
            Ok(())
        );

        let e = check_asset_id("scan.bin", None).unwrap_err();
        assert!(
            e.contains("\".bin\" is not an extension the server knows"),
            "{e}"
        );
        assert!(e.contains(".h5") && e.contains(".zip"), "{e}");
        let e = check_asset_id("readme", None).unwrap_err();
        assert!(e.contains("\".readme\" is not an extension"), "{e}");
        let e = check_asset_id("readme.", None).unwrap_err();
        assert!(e.contains("no extension"), "{e}");

        let e = check_asset_id("scan.h5", Some("application/zip")).unwrap_err();
        assert!(
            e.contains("\".h5\" does not fit media type \"application/zip\": expected .zip"),
            "{e}"
        );
        assert!(e.contains("\".h5\" fits \"application/x-hdf5\""), "{e}");
        let e = check_asset_id("a.tif", Some("image/png")).unwrap_err();
        assert!(
            e.contains("fits \"image/tiff; application=geotiff\""),
            "{e}"
        );

        let e = check_asset_id("a.zip", Some("application/octet-stream")).unwrap_err();
        assert!(e.contains("is not one the server accepts"), "{e}");
        let e = check_asset_id("a.zip", Some("zip")).unwrap_err();
        assert!(e.contains("is not a media type"), "{e}");
        // The charset comes first, as on the server.
        assert!(check_asset_id("A.BIN", None).unwrap_err().contains("'A'"));
    }

    #[test]
    fn media_types_are_normalised_before_lookup() {
        assert_eq!(
            normalize_media_type("Image/TIFF; Profile=cloud-optimized;application=geotiff")
                .as_deref(),
            Some("image/tiff; application=geotiff; profile=cloud-optimized")
        );
        assert_eq!(
            media_type("image/tiff ;application=geotiff").map(|t| t.name),
            Some("image/tiff; application=geotiff")
        );
        assert_eq!(normalize_media_type("hdf5"), None);
        assert_eq!(normalize_media_type("a/b; c"), None);
        assert_eq!(normalize_media_type("a/b; c=\"d\""), None);
        assert!(media_type("application/octet-stream").is_none());
        // Every entry is stored normalised, with dotted extensions.
        for t in MEDIA_TYPES {
            assert_eq!(normalize_media_type(t.name).as_deref(), Some(t.name));
            assert!(
                t.extensions
                    .iter()
                    .all(|e| e.starts_with('.') && e.len() > 1)
            );
        }
    }

    #[test]
    fn asset_paths_hold_at_most_255_characters() {
        let a = "a".repeat(100);
        assert_eq!(check_path(&a, Some(&a), &"b".repeat(53)), Ok(()));
        let e = check_path(&a, Some(&a), &"b".repeat(54)).unwrap_err();
        assert!(e.contains("is 256 characters long"), "{e}");
        assert!(e.contains("at most 255"), "{e}");
        assert_eq!(check_path(&a, None, &"b".repeat(154)), Ok(()));
        assert!(check_path(&a, None, &"b".repeat(155)).is_err());
    }

    #[test]
    fn extensions_are_read_as_the_server_reads_them() {
        assert_eq!(asset_extension("a.tar.gz"), "gz");
        assert_eq!(asset_extension("readme"), "readme");
        assert_eq!(asset_extension("readme."), "");
        assert!(
            types_for("zip").starts_with("\"application/zip\", "),
            "{}",
            types_for("zip")
        );
        assert!(types_for("zip").ends_with("other types"));
        assert_eq!(types_for("tif").matches("image/tiff").count(), 3);
        assert_eq!(types_for("bin"), "no media type");
    }
}
