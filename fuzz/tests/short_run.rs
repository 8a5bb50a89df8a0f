//! The short, deterministic run of every fuzz target that CI does: each seed in
//! `corpus/TARGET/`, then thousands of mutants of them from a fixed seed. A failing input is
//! printed and written to `target/fuzz-failures/`, to replay with `cargo fuzz run TARGET FILE`.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

use walnut_fuzz::mutate::Mutator;

/// Mutants per target: a few seconds each in a debug build.
const MUTANTS: usize = 10_000;
/// The largest mutant: long enough for pipelines and several config pools, short enough that
/// splitting every input at every point stays quick.
const MAX_LEN: usize = 1024;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The seed corpus of `target`, in file-name order.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = root().join("corpus").join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).expect("read seed"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Runs `run` on `input`; on a failure, keeps the input and fails naming it.
fn run_one(target: &str, run: fn(&[u8]), input: &[u8], what: &str) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(input))) {
        let dir = root().join("../target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{target}-{what}"));
        let _ = std::fs::write(&file, input);
        eprintln!(
            "{target}: {what} failed; input ({} bytes, kept in {}):\n{}",
            input.len(),
            file.display(),
            input.escape_ascii()
        );
        resume_unwind(panic);
    }
}

fn short_run(target: &str, run: fn(&[u8]), tokens: &'static [&'static [u8]]) {
    let corpus = seeds(target);
    for (i, seed) in corpus.iter().enumerate() {
        run_one(target, run, seed, &format!("seed-{i}"));
    }
    let mut m = Mutator::new(0x5eed ^ target.len() as u64, tokens);
    let mut input = Vec::new();
    for i in 0..MUTANTS {
        // Mostly a fresh mutant of a seed; sometimes the last mutant mutated further.
        if i % 4 != 3 {
            input = corpus[m.below(corpus.len())].clone();
        }
        m.mutate(&mut input, &corpus, MAX_LEN);
        run_one(target, run, &input, &format!("mutant-{i}"));
    }
}

#[test]
fn memcache_request() {
    use walnut_fuzz::memcache_request as t;
    short_run("memcache_request", t::run, t::TOKENS);
}

#[test]
fn memcache_reply() {
    use walnut_fuzz::memcache_reply as t;
    short_run("memcache_reply", t::run, t::TOKENS);
}

#[test]
fn http_head() {
    use walnut_fuzz::http_head as t;
    short_run("http_head", t::run, t::TOKENS);
}

#[test]
fn http_chunked() {
    use walnut_fuzz::http_chunked as t;
    short_run("http_chunked", t::run, t::TOKENS);
}

#[test]
fn config() {
    use walnut_fuzz::config as t;
    short_run("config", t::run, t::TOKENS);
}
