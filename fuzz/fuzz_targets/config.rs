//! libFuzzer entry for [`walnut_fuzz::config`]: `cargo fuzz run --features libfuzzer config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walnut_fuzz::config::run(data));
