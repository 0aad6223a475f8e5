//! The job-file parser on arbitrary text: parsed, or refused with located errors; no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        stac_uploadd::fuzzing::config(text);
    }
});
