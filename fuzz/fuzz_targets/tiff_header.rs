//! TIFF headers of any bytes through the GeoTIFF metadata reader (IFDs, GeoKeys, the footprint
//! in WGS84): a footprint that holds together or an error; no panic, no hang, bounded reads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stac_uploadd::fuzzing::tiff_header(data));
