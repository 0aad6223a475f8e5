//! Invariants on arbitrary input, shared by the property tests (`tests/properties.rs`) and the
//! cargo-fuzz targets (`fuzz/`): each function panics, naming what broke, when its invariant
//! does not hold. Not part of the tool's interface.

use std::path::Path;

use reqwest::StatusCode;

use crate::stac::{ApiVersion, ErrorClass, PartNumber, StacError, Step, answer};
use crate::units::ByteSize;
use crate::upload::{MAX_FILE_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, PartPlan};

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
