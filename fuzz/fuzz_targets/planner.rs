//! The part planner on arbitrary sizes: the parts cover the file exactly within the limits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stac_uploadd::fuzzing::planner_bytes(data));
