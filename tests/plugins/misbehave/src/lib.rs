//! A broken plugin for the tests: a key holding `trap` makes it panic, `loop` makes it spin
//! forever, `grow` makes it allocate without end; placing a key holding `hashfail` panics. A
//! key holding `log` makes it log a line, `clock` makes it refuse the request with walnut's
//! clocks (`now <unix seconds> <monotonic ns>`), and `badkey` makes it rewrite the key into one
//! memcached cannot take. Every other key passes untouched.

use walnut_sdk::{Filter, McVerdict, MemcacheRequest, Placement};

#[derive(serde::Deserialize)]
pub struct Misbehave {}

impl Filter for Misbehave {
    fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> McVerdict {
        let has = |word: &[u8]| req.key().windows(word.len()).any(|w| w == word);
        if has(b"trap") {
            panic!("asked to trap by {}", String::from_utf8_lossy(req.key()));
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
        if has(b"log") {
            walnut_sdk::info!("misbehave saw {}", String::from_utf8_lossy(req.key()));
        }
        if has(b"clock") {
            let wall = walnut_sdk::time::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let start = walnut_sdk::time::Instant::now();
            let spun = start.elapsed().as_nanos();
            return McVerdict::reject(format!("now {wall} {spun}"));
        }
        if has(b"badkey") {
            req.set_key("bad key\r\nflush_all");
        }
        McVerdict::Continue
    }

    fn on_hash(&mut self, key: &[u8]) -> Placement {
        if key.windows(8).any(|w| w == b"hashfail") {
            panic!("asked to trap while placing");
        }
        Placement::Ring
    }
}

walnut_sdk::export!(Misbehave);
