//! Server answers on arbitrary bytes: error bodies (JSON, S3 XML, HTML gateway pages, text)
//! under any status and content type, and success bodies read as uploads, pages and assets.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stac_uploadd::fuzzing::answer_bytes(data));
