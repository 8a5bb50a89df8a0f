//! Fuzz targets for walnut's decoders and its config loader. Each target is a module with a
//! `run(data)` that feeds the bytes to walnut the way walnut itself uses that code, and
//! asserts the code's invariants, not only that it does not panic: what is consumed lies
//! within the input, an incomplete input is left untouched, what is decoded re-encodes to
//! bytes that decode the same, and the same bytes split into two reads give the same results.
//!
//! Each module calls walnut through one small function (`decode`, `scan`, `parse`...), so a
//! change to that API is adapted in one place.
//!
//! They run two ways: under libFuzzer with `cargo fuzz run --features libfuzzer TARGET` (see
//! `fuzz/README.md`), and as `cargo test -p walnut-fuzz`, a short deterministic run over the
//! seed corpus in `corpus/TARGET/` and thousands of seeded mutations of it ([`mutate`]).

pub mod config;
pub mod http_chunked;
pub mod http_head;
pub mod memcache_reply;
pub mod memcache_request;
pub mod mutate;

/// The places to split an input of `len` bytes into two reads: every one for a short input;
/// for a long one, evenly spaced ones and those around each line end in `data`, so the time
/// stays near linear in the input's size.
pub fn cuts(data: &[u8]) -> Vec<usize> {
    let len = data.len();
    if len <= 300 {
        return (1..len).collect();
    }
    let step = len / 97 + 1;
    let mut cuts: Vec<usize> = (1..len).step_by(step).collect();
    for (at, _) in data
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .take(200)
    {
        cuts.extend([at, at + 1].into_iter().filter(|&c| c > 0 && c < len));
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// `data` as printable text, for failure messages.
pub fn show(data: &[u8]) -> String {
    data.escape_ascii().to_string()
}
