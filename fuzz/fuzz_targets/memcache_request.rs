//! libFuzzer entry for [`walnut_fuzz::memcache_request`]: `cargo fuzz run --features libfuzzer memcache_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walnut_fuzz::memcache_request::run(data));
