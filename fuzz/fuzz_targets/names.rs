//! File names of any bytes through the watch's filter, a job's ids and the state records: kept
//! exactly with valid ids, or refused by the id rules before any server call; no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stac_uploadd::fuzzing::file_name(data);
});
