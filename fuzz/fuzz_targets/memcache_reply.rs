//! libFuzzer entry for [`walnut_fuzz::memcache_reply`]: `cargo fuzz run --features libfuzzer memcache_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walnut_fuzz::memcache_reply::run(data));
