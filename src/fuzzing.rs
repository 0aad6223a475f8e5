//! Invariants on arbitrary input, shared by the property tests (`tests/it/properties.rs`) and the
//! cargo-fuzz targets (`fuzz/`): each function panics, naming what broke, when its invariant
//! does not hold. Not part of the tool's interface.

use std::path::Path;

use reqwest::StatusCode;

use stac_client::units::ByteSize;
use stac_client::{ApiVersion, ErrorClass, PartNumber, StacError, Step, answer};
use stac_upload::{MAX_FILE_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, PartPlan};

/// The part planner: a file within the limit is covered exactly, in order, by at most
/// `MAX_PARTS` parts of at most `MAX_PART_SIZE`, all but the last at least `MIN_PART_SIZE`;
/// a larger file is refused.
pub fn planner(size: u64, target: u64) {
    let plan = PartPlan::new(size, ByteSize(target));
    if size > MAX_FILE_SIZE {
        assert!(plan.is_err(), "a file of {size} bytes was planned");
        return;
    }
    let plan = plan.unwrap_or_else(|e| panic!("{size} bytes (target {target}) refused: {e}"));
    let parts: Vec<_> = plan.parts().collect();
    assert!(
        !parts.is_empty() && parts.len() as u64 <= MAX_PARTS,
        "{} parts",
        parts.len()
    );
    assert_eq!(plan.count(), parts.len(), "count() disagrees with parts()");
    let mut next = 0u64;
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(
            p.number,
            PartNumber(i as u32 + 1),
            "part numbers run from 1"
        );
        assert_eq!(p.offset, next, "part {} leaves a gap or overlaps", p.number);
        assert!(
            p.len <= MAX_PART_SIZE,
            "part {} is {} bytes",
            p.number,
            p.len
        );
        if i + 1 < parts.len() {
            assert!(
                p.len >= MIN_PART_SIZE,
                "part {} is {} bytes",
                p.number,
                p.len
            );
        }
        next += p.len;
    }
    assert_eq!(next, size, "the parts do not cover the file");
}

/// The content types an error answer is tried with.
pub const CONTENT_TYPES: [&str; 6] = [
    "application/json",
    "application/xml",
    "text/html; charset=utf-8",
    "text/plain",
    "application/problem+json",
    "",
];

/// An error answer (any status from 400, any content type, any body): the error describes it
/// in at most 300 characters, names the status and the URL without its presigned query, and
/// calls a gateway error retryable.
pub fn error_answer(status: u16, content_type: &str, put: bool, body: &[u8]) {
    let status = StatusCode::from_u16(400 + status % 200).expect("400..600 is a status");
    let step = if put {
        Step::PutPart(PartNumber(3))
    } else {
        Step::CreateUpload
    };
    let url = "http://127.0.0.1:9/_s3/u/3?X-Amz-Expires=600&X-Amz-Signature=0badc0de";
    let ct = (!content_type.is_empty()).then_some(content_type);
    let e = StacError::from_answer(step, "PUT", url, status, ct, body);
    // The body is the server's and may say anything; the URL's query is ours and never shown.
    assert!(
        !e.url.contains("X-Amz"),
        "the presigned query is kept: {}",
        e.url
    );
    assert!(!e.description.is_empty(), "empty description");
    assert!(
        e.description.chars().count() <= 301,
        "a description of {} characters",
        e.description.chars().count()
    );
    let shown = e.to_string();
    assert!(
        shown.contains(&e.url),
        "the redacted URL is not shown: {shown}"
    );
    assert!(
        shown.contains(&status.as_u16().to_string()),
        "no status in: {shown}"
    );
    if matches!(status.as_u16(), 502..=504) {
        assert_eq!(e.class, ErrorClass::Retryable, "{shown}");
    }
}

/// A successful answer's body read as each kind of answer: no panic, and whatever parses
/// keeps its checksum under either field name.
pub fn ok_answer(v09: bool, body: &[u8]) {
    let api = if v09 { ApiVersion::V09 } else { ApiVersion::V1 };
    let Ok(v) = answer::json(body) else {
        return;
    };
    let checksum = answer::checksum_of(&v, api);
    let info = answer::asset(&v, api);
    assert_eq!(info.checksum, checksum);
    if let Ok(u) = answer::upload(v.clone(), api) {
        assert_eq!(u.checksum, checksum);
    }
    for key in ["uploads", "parts"] {
        if let Ok(page) = answer::page(v.clone(), key) {
            for item in page.items {
                let _ = answer::part(item.clone());
                let _ = answer::upload(item, api);
            }
        }
    }
}

/// Raw fuzzer bytes as an answer: the first byte picks error or success, the API version and
/// the content type, the next two the status; the rest is the body.
pub fn answer_bytes(data: &[u8]) {
    let [mode, hi, lo, body @ ..] = data else {
        return;
    };
    if mode & 1 == 0 {
        let ct = CONTENT_TYPES[usize::from(mode >> 1) % CONTENT_TYPES.len()];
        error_answer(u16::from_be_bytes([*hi, *lo]), ct, mode & 0x80 != 0, body);
    } else {
        ok_answer(mode & 2 != 0, body);
    }
}

/// Raw fuzzer bytes as a plan: a file size and a target part size.
pub fn planner_bytes(data: &[u8]) {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
        u64::from_le_bytes(w)
    };
    let (a, b) = data.split_at(data.len().min(8));
    // Sizes up to 1 GiB past the limit, targets up to 6 GiB: both sides of every bound.
    planner(
        word(a) % (MAX_FILE_SIZE + ByteSize::GIB),
        word(b) % (6 * ByteSize::GIB + 1),
    );
}

/// A job file: parsed, or refused with errors that each name a line of the text (or the line
/// just past it), a column and a message. Secrets read from the environment are all "secret".
pub fn config(text: &str) {
    let lines = text.split('\n').count().max(1);
    let env = |_: &str| Some("secret".to_owned());
    if let Err(e) = crate::config::parse(text, Path::new("/nonexistent/fuzz/jobs.toml"), &env) {
        let errors = e.errors();
        assert!(!errors.is_empty(), "an invalid file names no place: {e}");
        for err in errors {
            assert!(
                (1..=lines + 1).contains(&err.line),
                "line {} of {lines}: {e}",
                err.line
            );
            assert!(err.col >= 1, "column 0: {e}");
            assert!(!err.message.is_empty(), "an empty message: {e}");
        }
    }
}

/// The jobs [`file_name`] runs names through, all watching one folder: asset ids made of the
/// name (`{name}`), of its stem (`{stem}` item, `{stem}.csv` asset), and a flat one.
struct NamesFixture {
    /// Held for the whole of one name: the folder must hold that file alone.
    turn: std::sync::Mutex<()>,
    incoming: std::path::PathBuf,
    jobs: Vec<crate::supervisor::Job<NoServer>>,
}

/// An uploader that is the server's edge: a name that reached it would have made a server
/// call, which the id rules must have refused first. [`file_name`] never calls it: only
/// [`crate::supervisor::Job::prepare`] is used, which sends nothing.
#[derive(Debug)]
struct NoServer;

impl crate::supervisor::Uploader for NoServer {
    async fn upload(
        &self,
        target: &stac_client::AssetTarget,
        _: &Path,
        _: &stac_upload::NewObjects,
        _: &stac_upload::UploadOptions,
        _: std::sync::Arc<dyn stac_upload::UploadObserver>,
        _: &tokio_util::sync::CancellationToken,
    ) -> Result<stac_upload::UploadReport, stac_upload::UploadError> {
        panic!("a server call for {target}");
    }

    async fn abort(
        &self,
        target: &stac_client::AssetTarget,
        _: &stac_client::UploadId,
        _: &stac_upload::UploadOptions,
    ) -> stac_upload::AbortOutcome {
        panic!("a server call for {target}");
    }
}

fn names_fixture() -> &'static NamesFixture {
    static FIXTURE: std::sync::OnceLock<NamesFixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Kept for the process's life (fuzzing calls this millions of times, and a static is
        // never dropped): the folders of processes that are gone are removed here instead.
        const PREFIX: &str = "stac-uploadd-fuzz-names-";
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(PREFIX));
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let root = tmp.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).expect("a temporary folder");
        let incoming = root.join("incoming");
        std::fs::create_dir(&incoming).expect("the watched folder");
        let job = |name: &str, collection: &str, item: &str, asset: &str, ty: &str| {
            format!(
                "[[job]]\nname = \"{name}\"\ncollection = \"{collection}\"\nitem = \"{item}\"\nasset = \"{asset}\"\n[job.watch]\ndir = \"{dir}\"\npattern = \"*\"\n[job.asset_metadata]\ntype = \"{ty}\"\n",
                dir = incoming.display()
            )
        };
        let text = format!(
            "state_dir = \"{state}\"\n[server]\nurl = \"http://127.0.0.1:9/api/stac/v1\"\n[server.auth]\ntype = \"none\"\n{}{}{}",
            job("name", "ch.fuzz.name", "item-1", "{name}", "text/csv"),
            job("stem", "ch.fuzz.stem", "{stem}", "{stem}.csv", "text/csv"),
            job("flat", "ch.fuzz.flat", "item-1", "data.csv", "text/csv"),
            state = root.join("state").display()
        );
        let config = crate::config::parse(&text, &root.join("jobs.toml"), &|_: &str| None)
            .unwrap_or_else(|e| panic!("the fuzz job file: {e}"));
        let state = std::sync::Arc::new(
            // Nothing is written here (no run): the JSON store opens without a runtime.
            crate::state::StateStore::open_json(&config.state_dir).expect("the state folder"),
        );
        let shared = std::sync::Arc::new(crate::supervisor::Shared::new(
            NoServer,
            state,
            crate::trigger::Clock::System,
        ));
        let jobs = config
            .jobs
            .into_iter()
            .map(|spec| {
                crate::supervisor::Job::new(
                    spec,
                    shared.clone(),
                    tokio_util::sync::CancellationToken::new(),
                )
            })
            .collect();
        NamesFixture {
            turn: std::sync::Mutex::new(()),
            incoming,
            jobs,
        }
    })
}

/// A file name of any bytes, through what a watch job does with it before the server: the
/// watch's filter (the folder listed as `run --once` lists it), the job's ids (rendered by
/// [`crate::supervisor::Job::prepare`], then the server's id rules that
/// [`stac_upload::publish_file`] applies before anything else), and the state records that
/// name the file (a run's history, an upload in flight) written and read back. No panic, and
/// every name is either kept exactly with valid ids, or refused by the id rules, which come
/// before any call to the server; an id made of the name holds its bytes exactly (a part that is
/// not UTF-8 never reaches one). A name the file system cannot hold is skipped.
pub fn file_name(name: &[u8]) {
    use std::os::unix::ffi::OsStrExt as _;
    // Names no file can have: with `/` or NUL, empty, `.`, `..`, over NAME_MAX.
    if name.is_empty()
        || name == b"."
        || name == b".."
        || name.len() > 255
        || name.iter().any(|&b| b == b'/' || b == 0)
    {
        return;
    }
    let fx = names_fixture();
    let _turn = fx
        .turn
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = fx.incoming.join(std::ffi::OsStr::from_bytes(name));
    if std::fs::write(&path, b"x").is_err() {
        return;
    }
    let listed = fx.jobs.iter().map(|job| match &job.spec.trigger {
        crate::trigger::TriggerSpec::Watch(spec) => crate::trigger::watch::present_files(spec),
        _ => unreachable!("the fuzz jobs are watch jobs"),
    });
    let listed: Vec<_> = listed.collect();
    let _ = std::fs::remove_file(&path);
    for (job, listed) in fx.jobs.iter().zip(listed) {
        let listed = listed.unwrap_or_else(|e| panic!("the watched folder: {e}"));
        match listed.as_slice() {
            [] => continue, // ignored: a hidden, temporary or backup name
            [p] => assert_eq!(
                p.file_name().map(|n| n.as_bytes()),
                Some(name),
                "the watch changed the name"
            ),
            more => panic!("one file listed as {more:?}"),
        }
        let (target, file, objects) = job.prepare(&crate::supervisor::Work::File(path.clone()));
        assert_eq!(file, path, "the run's file is not the one found");
        let media_type = objects.asset.as_ref().and_then(|a| a["type"].as_str());
        let ids = stac_client::rules::check_id(&target.collection)
            .and_then(|()| {
                target
                    .item
                    .as_deref()
                    .map_or(Ok(()), stac_client::rules::check_id)
            })
            .and_then(|()| stac_client::rules::check_asset_id(&target.asset, media_type));
        // An id made of the name holds the name's own bytes, exactly: a part of the name that
        // is not UTF-8 never reaches a valid id, lossily or otherwise. (A part it does not use,
        // such as the extension for `{stem}.csv`, may be anything.)
        let stem = match name.iter().rposition(|&b| b == b'.') {
            Some(dot) if dot > 0 => &name[..dot],
            _ => name,
        };
        match (job.spec.name.as_str(), &ids) {
            ("name", Ok(())) => assert_eq!(
                target.asset.as_bytes(),
                name,
                "{{name}} made the id {target}"
            ),
            ("stem", Ok(())) => {
                let item = target.item.as_deref().unwrap_or_default();
                assert_eq!(item.as_bytes(), stem, "{{stem}} made the item {target}");
                assert_eq!(target.asset, format!("{item}.csv"), "{target}");
            }
            ("flat", ids) => assert_eq!(ids, &Ok(()), "a flat id refused: {target}"),
            _ => {}
        }
        if std::str::from_utf8(name).is_err() && job.spec.name == "name" {
            assert!(
                ids.is_err(),
                "a name that is not UTF-8 made the id {target}"
            );
        }
        // Published or refused, the run's record names the file, and so does the record of an
        // upload in flight when there is one: both read back exactly.
        state_records_round_trip(&job.spec.name, &target, &path);
    }
}

fn state_records_round_trip(job: &str, target: &stac_client::AssetTarget, path: &Path) {
    use crate::state::{InFlight, Outcome, RunRecord};
    let now = chrono::Utc::now();
    let run = RunRecord {
        instance: None,
        error_class: None,
        public: Vec::new(),
        job: job.to_owned(),
        started: now,
        finished: now,
        outcome: Outcome::Failed,
        asset: target.asset.clone(),
        item: target.item.clone(),
        file: Some(path.to_owned()),
        bytes: 0,
        attempts: 1,
        upload_id: None,
        error: Some("refused".to_owned()),
        assets: Vec::new(),
    };
    let upload = InFlight {
        upload_id: stac_client::UploadId("u".to_owned()),
        job: job.to_owned(),
        target: target.clone(),
        file: path.to_owned(),
        size: 1,
        mtime: (0, 0),
        ino: 0,
        multihash: "1220".to_owned(),
        part_size: 0,
        created: now,
        urls_expire: None,
        pid: 0,
    };
    // As the store writes them (JSON, in a row or a file), and as it reads them back.
    let json = serde_json::to_vec_pretty(&run).unwrap_or_else(|e| panic!("a run record: {e}"));
    let back: RunRecord = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(back, run, "the run record changed");
    let json = serde_json::to_vec_pretty(&upload).unwrap_or_else(|e| panic!("an upload: {e}"));
    let back: InFlight = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(back, upload, "the in-flight record changed");
}

/// What a footprint read from any bytes must be: a closed ring of finite WGS84 positions, its
/// box holding every one of them, and what was read within the budget.
fn check_metadata(m: &crate::geo::FileMetadata, budget: u64) {
    let ring = &m.footprint.ring;
    assert!(ring.len() >= 4, "a ring of {} positions", ring.len());
    assert_eq!(ring.first(), ring.last(), "an open ring");
    let [w, s, e, n] = m.footprint.bbox;
    for [lon, lat] in ring.iter().chain(&m.footprint.corners) {
        assert!(lon.is_finite() && lat.is_finite(), "({lon}, {lat})");
        assert!((-90.0..=90.0).contains(lat), "latitude {lat}");
        assert!(
            (w..=e).contains(lon) && (s..=n).contains(lat),
            "({lon}, {lat}) outside the box {:?}",
            m.footprint.bbox
        );
    }
    if let Some(gsd) = m.gsd {
        assert!(gsd.is_finite() && gsd > 0.0, "gsd {gsd}");
    }
    assert!(m.bytes_read <= budget, "{} bytes read", m.bytes_read);
}

/// A TIFF header of any bytes, read as `read_metadata` reads a file (through the counting
/// reader, with the read budget): a footprint that holds together, or an error; no panic, no
/// hang, no read past the budget.
pub fn tiff_header(data: &[u8]) {
    use crate::geo::read::{Counting, READ_BUDGET};
    let mut r = Counting::new(std::io::Cursor::new(data), READ_BUDGET);
    if let Ok(mut m) = crate::geo::tiff_metadata(&mut r) {
        m.bytes_read = r.bytes_read();
        check_metadata(&m, READ_BUDGET);
    }
}

/// A GeoJSON document of any bytes: a bounding box of WGS84 positions with an area, or an
/// error; no panic.
pub fn geojson_bbox(data: &[u8]) {
    if let Ok(m) = crate::geo::geojson_metadata(data) {
        check_metadata(&m, crate::geo::MAX_GEOJSON_BYTES);
        let [w, s, e, n] = m.footprint.bbox;
        assert!(w < e && s < n, "a box without area: {:?}", m.footprint.bbox);
        assert!(
            (-180.0..=180.0).contains(&w) && (-180.0..=180.0).contains(&e),
            "longitudes {w}, {e}"
        );
        assert_eq!(m.epsg, Some(4326));
    }
}

#[cfg(test)]
mod tests {
    use crate::geo::read::{Counting, READ_BUDGET};

    /// The hostile headers of the committed seeds (written by hand: an IFD of 2^32 entries,
    /// looping IFD chains, offsets and counts past the end, an empty file) are refused, and
    /// none of them costs more than a few KB to refuse.
    #[test]
    fn hostile_tiff_headers_are_refused_cheaply() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/tiff_header");
        for name in [
            "bigtiff_2pow32_entries",
            "classic_65535_entries",
            "huge_tag_count",
            "two_ifd_loop",
            "geokeys_60000",
            "looping_ifds",
            "offset_past_end",
            "truncated_cog",
            "empty",
        ] {
            let data = std::fs::read(dir.join(name)).unwrap();
            let mut r = Counting::new(std::io::Cursor::new(&data), READ_BUDGET);
            let err = crate::geo::tiff_metadata(&mut r).expect_err(name);
            assert!(
                r.bytes_read() <= 64 * 1024,
                "{name}: {} bytes read",
                r.bytes_read()
            );
            assert!(!err.to_string().is_empty(), "{name}");
            super::tiff_header(&data);
        }
    }

    /// The same past the end of a file that is all zeros where the header points (a sparse
    /// file): the budget, not the file's size, bounds what a declared 2^32 entries cost.
    #[test]
    fn a_huge_ifd_in_a_large_file_costs_at_most_the_budget() {
        let mut data = b"II+\0\x08\0\0\0\x10\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0".to_vec();
        data.resize(40 * 1024 * 1024, 0);
        let mut r = Counting::new(std::io::Cursor::new(&data), READ_BUDGET);
        assert!(crate::geo::tiff_metadata(&mut r).is_err());
        assert!(
            r.bytes_read() <= READ_BUDGET,
            "{} bytes read",
            r.bytes_read()
        );
    }

    #[test]
    fn hostile_geojson_is_refused() {
        for text in [
            String::new(),
            "[".repeat(1_000_000),
            format!(
                "{}{}",
                r#"{"type":"Feature","geometry":"#.repeat(10_000),
                "null"
            ),
            r#"{"type":"Point","coordinates":[7,46]"#.to_owned(),
        ] {
            assert!(crate::geo::geojson_metadata(text.as_bytes()).is_err());
            super::geojson_bbox(text.as_bytes());
        }
    }
}
