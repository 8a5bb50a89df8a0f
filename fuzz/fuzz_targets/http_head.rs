//! libFuzzer entry for [`walnut_fuzz::http_head`]: `cargo fuzz run --features libfuzzer http_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walnut_fuzz::http_head::run(data));
