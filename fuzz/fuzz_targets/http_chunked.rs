//! libFuzzer entry for [`walnut_fuzz::http_chunked`]: `cargo fuzz run --features libfuzzer http_chunked`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walnut_fuzz::http_chunked::run(data));
