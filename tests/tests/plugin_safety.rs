//! What a plugin answers is checked before it reaches a wire, and every hook obeys its
//! plugin's `on_error`: a rewritten key that is not a key never reaches memcached (not even as
//! a second command), a base64 key a plugin rewrote is sent encoded, a hash hook that fails a
//! `fail_closed` plugin fails its request, and a plugin's panic message, its own log lines and
//! its clocks reach walnut.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use walnut_tests::{Memcached, Proxy, mc_pool, plugin_dir};

fn wasm(name: &str) -> PathBuf {
    plugin_dir(&["key-rewrite", "misbehave"]).join(format!("{name}.wasm"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Walnut over `ms` with the misbehave plugin on the whole pool under `on_error`.
fn misbehave_pool(ms: &[Memcached], on_error: &str) -> Proxy {
    let servers: Vec<String> = ms.iter().map(Memcached::address).collect();
    let config = mc_pool(&servers, "")
        + &format!(
            "  plugins:\n   - path: {}\n     on_error: {on_error}\n     time_budget_ms: 200\n",
            wasm("misbehave").display()
        );
    Proxy::walnut(&config)
}

/// memcached's own counter `name`.
fn stat(m: &Memcached, name: &str) -> u64 {
    let text = m.client().call(b"stats\r\n");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stat {name} in {text}"))
}

#[test]
fn a_rewritten_key_memcached_cannot_take_never_reaches_it() {
    let m = Memcached::start();
    let walnut = misbehave_pool(std::slice::from_ref(&m), "fail_closed");
    let mut c = walnut.client();
    assert_eq!(m.client().call(b"set canary 0 0 1\r\nc\r\n"), "STORED\r\n");
    let sets = stat(&m, "cmd_set");
    // misbehave rewrites a key holding `badkey` into "bad key\r\nflush_all".
    c.send(b"set badkey 0 0 1\r\nx\r\nget badkey\r\nget canary\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.read_replies(3)),
        "SERVER_ERROR plugin failed\r\nSERVER_ERROR plugin failed\r\nVALUE canary 0 1\r\nc\r\nEND\r\n"
    );
    assert_eq!(stat(&m, "cmd_flush"), 0, "no flush_all was injected");
    assert_eq!(stat(&m, "cmd_set"), sets, "nothing was stored");
    assert_eq!(m.client().get(b"canary").as_deref(), Some(&b"c"[..]));
    let log = walnut.log();
    assert!(
        log.contains("rewrote a key into one memcached cannot take"),
        "{log}"
    );
    // A base64 key may be any bytes: the same rewrite is a binary key, sent encoded.
    let key = b64(b"badkey");
    assert_eq!(
        c.call(format!("ms {key} 1 b\r\ny\r\n").as_bytes()),
        "HD\r\n"
    );
    let stored = b64(b"bad key\r\nflush_all");
    assert_eq!(
        m.client().call(format!("mg {stored} b v\r\n").as_bytes()),
        "VA 1\r\ny\r\n"
    );
    assert_eq!(stat(&m, "cmd_flush"), 0);
}

#[test]
fn a_base64_key_is_rewritten_decoded_and_sent_encoded() {
    let m = Memcached::start();
    let servers = [m.address()];
    let config = mc_pool(&servers, "")
        + &format!(
            "  routes:\n   - prefix: \"tenant1:\"\n     plugins:\n      - path: {}\n        config: {{ replace: \"tenant1:\", with: \"t1/\" }}\n",
            wasm("key_rewrite").display()
        );
    let walnut = Proxy::walnut(&config);
    let mut c = walnut.client();
    // A printable key: memcached stores t1/plain, readable classically.
    let plain = b64(b"tenant1:plain");
    assert_eq!(
        c.call(format!("ms {plain} 2 b\r\nhi\r\n").as_bytes()),
        "HD\r\n"
    );
    assert_eq!(m.client().get(b"t1/plain").as_deref(), Some(&b"hi"[..]));
    // A binary key: stored under its rewritten bytes.
    let binary = b64(b"tenant1:\x00\xff\r\n");
    assert_eq!(
        c.call(format!("ms {binary} 3 b\r\nbin\r\n").as_bytes()),
        "HD\r\n"
    );
    let stored = b64(b"t1/\x00\xff\r\n");
    assert_eq!(
        m.client().call(format!("mg {stored} b v\r\n").as_bytes()),
        "VA 3\r\nbin\r\n"
    );
    // Read back through walnut: the client sees its own key in `k`.
    assert_eq!(
        c.call(format!("mg {binary} b v k\r\n").as_bytes()),
        format!("VA 3 k{binary} b\r\nbin\r\n")
    );
    assert_eq!(c.call(format!("md {plain} b\r\n").as_bytes()), "HD\r\n");
    assert_eq!(m.client().get(b"t1/plain"), None);
}

#[test]
fn a_hash_hook_that_fails_obeys_fail_closed() {
    let ms = [Memcached::start(), Memcached::start()];
    let closed = misbehave_pool(&ms, "fail_closed");
    let mut c = closed.client();
    // misbehave's hash hook panics on keys holding `hashfail`.
    c.send(b"set hashfail 0 0 1\r\nx\r\nget hashfail\r\nget a hashfail\r\nset fine 0 0 1\r\nf\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.read_replies(4)),
        "SERVER_ERROR plugin failed\r\nSERVER_ERROR plugin failed\r\nSERVER_ERROR plugin failed\r\nSTORED\r\n"
    );
    assert!(ms.iter().all(|m| m.client().get(b"hashfail").is_none()));
    assert!(closed.log().contains("asked to trap while placing"));
    // fail_open: placed by the ring, as if the plugin were absent.
    let open = misbehave_pool(&ms, "fail_open");
    assert_eq!(
        open.client().call(b"set hashfail 0 0 1\r\nx\r\n"),
        "STORED\r\n"
    );
    assert_eq!(
        ms.iter()
            .filter(|m| m.client().get(b"hashfail").is_some())
            .count(),
        1
    );
}

#[test]
fn a_plugins_panic_message_log_lines_and_clocks_reach_walnut() {
    let m = Memcached::start();
    let walnut = misbehave_pool(std::slice::from_ref(&m), "fail_closed");
    let mut c = walnut.client();
    assert_eq!(c.call(b"get trap:42\r\n"), "SERVER_ERROR plugin failed\r\n");
    assert_eq!(c.call(b"get log:7\r\n"), "END\r\n");
    let reply = c.call(b"get clock\r\n");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let words: Vec<&str> = reply.trim_end().split(' ').collect();
    assert_eq!(words[..2], ["CLIENT_ERROR", "now"], "{reply}");
    let wall: u64 = words[2].parse().expect("seconds");
    assert!(
        wall.abs_diff(now) < 60,
        "the plugin's wall clock {wall} is now ({now})"
    );
    let _monotonic: u64 = words[3].parse().expect("nanoseconds");
    let log = walnut.log();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
            .to_owned()
    };
    // The panic's own words, in the line that reports the fault.
    let fault = line("asked to trap by trap:42");
    assert!(
        fault.contains("misbehave.wasm") && fault.contains("panicked at"),
        "{fault}\n{log}"
    );
    // The plugin's log line, with its name and its pool.
    let logged = line("misbehave saw log:7");
    assert!(
        logged.contains("misbehave.wasm") && logged.contains("alpha"),
        "{logged}"
    );
    assert!(logged.contains("INFO"), "{logged}");
}
