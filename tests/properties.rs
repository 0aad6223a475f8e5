//! Property tests (proptest; cargo-fuzz needs a nightly toolchain, which CI does not have): the
//! part planner, the server-answer parsers and the job-file parser, on arbitrary input.

use proptest::prelude::*;
use stac_uploadd::stac::{ErrorClass, PartNumber, StacError, Step};
use stac_uploadd::units::ByteSize;
use stac_uploadd::upload::{MAX_FILE_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, PartPlan};

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2_000), ..ProptestConfig::default() })]

    /// Parts cover the file exactly, in order, and obey S3's and the API's limits.
    #[test]
    fn the_planner_covers_the_file_within_the_limits(size in 0..=MAX_FILE_SIZE, target in 0..=(6 * ByteSize::GIB)) {
        let plan = PartPlan::new(size, ByteSize(target)).unwrap();
        let parts: Vec<_> = plan.parts().collect();
        prop_assert!(!parts.is_empty() && parts.len() as u64 <= MAX_PARTS);
        let mut next = 0u64;
        for (i, p) in parts.iter().enumerate() {
            prop_assert_eq!(p.number, PartNumber(i as u32 + 1));
            prop_assert_eq!(p.offset, next);
            prop_assert!(p.len <= MAX_PART_SIZE);
            if i + 1 < parts.len() {
                prop_assert!(p.len >= MIN_PART_SIZE);
            }
            next += p.len;
        }
        prop_assert_eq!(next, size);
    }

    /// Files over the limit are refused, never planned.
    #[test]
    fn the_planner_refuses_what_cannot_fit(extra in 1..=ByteSize::GIB, target in 0..=(6 * ByteSize::GIB)) {
        prop_assert!(PartPlan::new(MAX_FILE_SIZE + extra, ByteSize(target)).is_err());
    }

    /// Any body with any status and content type gives an error with a bounded, non-empty
    /// description and a class; none panics.
    #[test]
    fn answer_parsing_never_panics(
        status in 400u16..600,
        ct in prop::sample::select(vec!["application/json", "application/xml", "text/html", "text/plain", ""]),
        body in prop::collection::vec(any::<u8>(), 0..2_000),
        put in any::<bool>(),
    ) {
        let step = if put { Step::PutPart(PartNumber(3)) } else { Step::CreateUpload };
        let status = reqwest::StatusCode::from_u16(status).unwrap();
        let e = StacError::from_answer(step, "POST", "http://127.0.0.1/x?X-Amz-Signature=s", status, Some(ct), &body);
        prop_assert!(!e.description.is_empty());
        prop_assert!(e.description.chars().count() <= 301, "{}", e.description.len());
        prop_assert!(!e.to_string().contains("X-Amz-Signature"));
        if matches!(status.as_u16(), 502..=504) {
            prop_assert_eq!(e.class, ErrorClass::Retryable);
        }
    }

    /// Structured bodies close to what servers send: JSON with odd descriptions, S3 XML, HTML.
    #[test]
    fn structured_answers_keep_their_words(desc in "[ -~]{0,400}", code in "[A-Za-z]{1,20}") {
        let json = serde_json::json!({"code": 409, "description": desc, "upload_id": "u1"}).to_string();
        let e = StacError::from_answer(Step::CreateUpload, "POST", "http://h/u", reqwest::StatusCode::CONFLICT, Some("application/json"), json.as_bytes());
        prop_assert_eq!(e.class, ErrorClass::AlreadyInProgress { upload_id: Some(stac_uploadd::stac::UploadId("u1".into())) });
        let xml = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>");
        let e = StacError::from_answer(Step::PutPart(PartNumber(1)), "PUT", "http://h/p", reqwest::StatusCode::BAD_REQUEST, Some("application/xml"), xml.as_bytes());
        prop_assert!(e.description.starts_with(&format!("{code}: ")), "{}", e.description);
        let html = format!("<html><head><title>{}</title></head><body>x</body></html>", desc.replace(['<', '>'], ""));
        let e = StacError::from_answer(Step::Complete, "POST", "http://h/c", reqwest::StatusCode::BAD_GATEWAY, Some("text/html"), html.as_bytes());
        prop_assert_eq!(e.class, ErrorClass::Retryable);
    }
}

/// Cases per property: the CI default, or PROPTEST_CASES for a long run
/// (`PROPTEST_CASES=200000 cargo test --release --test properties`).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env(_: &str) -> Option<String> {
    Some("secret".into())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1_000), ..ProptestConfig::default() })]

    /// Arbitrary text: the job-file parser answers Ok or located errors inside the text.
    #[test]
    fn the_config_parser_never_panics_and_locates_errors(text in "\\PC{0,300}") {
        check_config(&text)?;
    }

    /// Near-valid files with one line mangled, where the interesting errors are.
    #[test]
    fn mangled_job_files_are_located(line in 0usize..16, junk in "[ -~]{0,40}") {
        let base = r#"state_dir = "/tmp/stac-uploadd-prop"
[server]
url = "http://127.0.0.1:9/api/stac/v1"
[server.auth]
type = "basic"
username = "u"
password_env = "P"
[defaults]
parallel = 4
[[job]]
name = "j"
collection = "c"
item = "i"
asset = "a.zip"
file = "/tmp/a.zip"
schedule = "30 2 * * *"
"#;
        let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
        lines[line] = junk;
        check_config(&lines.join("\n"))?;
    }
}

fn check_config(text: &str) -> Result<(), TestCaseError> {
    let lines = text.split('\n').count().max(1);
    match stac_uploadd::config::parse(text, std::path::Path::new("/tmp/prop/jobs.toml"), &env) {
        Ok(_) => {}
        Err(e) => {
            let errors = e.errors();
            prop_assert!(
                !errors.is_empty(),
                "an invalid file names at least one place: {e}"
            );
            for err in errors {
                prop_assert!(
                    err.line >= 1 && err.line <= lines + 1,
                    "line {} of {lines}: {e}",
                    err.line
                );
                prop_assert!(err.col >= 1, "{e}");
                prop_assert!(!err.message.is_empty());
            }
        }
    }
    Ok(())
}
