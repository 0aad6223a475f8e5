//! The MD5 lane scheduler on arbitrary cuts, chunk sizes and kernels: every part's MD5 is
//! md-5's, whatever the lanes' lengths and however few parts there are.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stac_upload::md5x::check_lanes_bytes(data));
