//! GeoJSON of any bytes through the streaming bounding-box reader: a WGS84 box with an area, or
//! an error; no panic, flat memory whatever the nesting.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stac_uploadd::fuzzing::geojson_bbox(data));
