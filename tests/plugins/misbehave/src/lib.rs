//! A broken plugin for the tests: a key holding `trap` makes it trap, `loop` makes it spin
//! forever, `grow` makes it allocate without end. Every other key passes untouched.

use walnut_sdk::{Filter, MemcacheRequest, Verdict};

#[derive(serde::Deserialize)]
pub struct Misbehave {}

impl Filter for Misbehave {
    fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> Verdict {
        let has = |word: &[u8]| req.key().windows(word.len()).any(|w| w == word);
        if has(b"trap") {
            panic!("asked to trap");
        }
        if has(b"loop") {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if has(b"grow") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Verdict::Continue
    }
}

walnut_sdk::export!(Misbehave);
