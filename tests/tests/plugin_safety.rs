//! What a plugin answers is checked before it reaches a wire, and every hook obeys its
//! plugin's `on_error`: a rewritten key that is not a key never reaches memcached (not even as
//! a second command), a base64 key a plugin rewrote is sent encoded, a hash hook that fails a
//! `fail_closed` plugin fails its request, and a plugin's panic message, its own log lines and
//! its clocks reach walnut. On HTTP, a CR or LF a plugin writes into a header, a path, a local
//! answer or a response never reaches the upstream or the client, and every such fault is
//! counted.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use walnut_tests::{HttpClient, HttpResponse, Memcached, Proxy, TestBackend, mc_pool, plugin_dir};

fn wasm(name: &str) -> PathBuf {
    plugin_dir(&["key-rewrite", "misbehave", "http-misbehave"]).join(format!("{name}.wasm"))
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

/// Walnut with one HTTP pool over `backend`, the http-misbehave plugin on it under `on_error`.
fn http_pool(backend: &TestBackend, on_error: &str) -> Proxy {
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  plugins:\n    - path: {}\n      on_error: {on_error}\n  upstreams:\n    b:\n      servers: [\"{}\"]\n  locations:\n    - match: /\n      proxy_pass: b\n",
        wasm("http_misbehave").display(),
        backend.addr
    );
    Proxy::walnut_with(&config, &["-w", "1"])
}

/// `GET /x` with `X-Test: mode` on `c`, answered.
fn ask(c: &mut HttpClient, mode: &str) -> HttpResponse {
    c.send(format!("GET /x HTTP/1.1\r\nHost: t\r\nX-Test: {mode}\r\n\r\n").as_bytes());
    c.read_response(false)
}

/// Nothing a plugin injected: no header it smuggled in, no cookie, no second request.
fn clean(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    !lower.contains("x-injected") && !lower.contains("evil") && !lower.contains("smuggled")
}

/// A plugin counter from the stats JSON.
fn counter(stats: &str, name: &str) -> u64 {
    let key = format!("\"plugin:pool:http_misbehave.wasm:{name}\":");
    let at = stats
        .find(&key)
        .unwrap_or_else(|| panic!("{key} in {stats}"))
        + key.len();
    stats[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

#[test]
fn what_an_http_plugin_writes_wrong_never_reaches_the_upstream_or_the_client() {
    let backend = TestBackend::start();
    let walnut = http_pool(&backend, "fail_closed");
    let mut c = HttpClient::connect(walnut.addr);
    let bad_requests = [
        "header-crlf",
        "header-lf",
        "header-nul",
        "header-name",
        "header-space",
        "underscore",
        "path-crlf",
        "path-dots",
        "query-crlf",
    ];
    let bad_answers = [
        "respond-crlf",
        "respond-status",
        "respond-interim",
        "respond-name",
    ];
    for mode in bad_requests.iter().chain(&bad_answers) {
        let r = ask(&mut c, mode);
        assert_eq!(r.status, 500, "{mode}: a fail_closed plugin's fault");
        assert!(r.header("set-cookie").is_none() && r.header("x-injected").is_none());
        assert!(clean(&format!("{:?}", r.headers)), "{mode}: {r:?}");
    }
    assert!(backend.seen().is_empty(), "no faulty request went upstream");
    // The response hook: a bad header or a panic is a 502; the upstream's answer is dropped.
    for mode in ["resp-crlf", "resp-name", "resp-panic"] {
        let r = ask(&mut c, mode);
        assert_eq!(r.status, 502, "{mode}");
        assert!(clean(&format!("{:?}", r.headers)), "{mode}: {r:?}");
    }
    // Headers walnut writes itself are left out of a plugin's changes: the framing stays
    // walnut's, so a body is neither cut off nor taken for a second request.
    c.send(b"POST /x HTTP/1.1\r\nHost: t\r\nX-Test: framing\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "path=/x body=5\n".to_owned()));
    let head = backend
        .seen()
        .last()
        .expect("seen")
        .head
        .to_ascii_lowercase();
    assert!(head.contains("x-ok: fine\r\n"), "{head}");
    assert!(head.contains("content-length: 5\r\n") && !head.contains("transfer-encoding"));
    assert!(head.contains("x-forwarded-for: 127.0.0.1\r\n") && !head.contains("6.6.6.6"));
    let r = ask(&mut c, "respond-framing");
    assert_eq!((r.status, r.text()), (200, "short".to_owned()));
    assert_eq!(
        (r.header("content-length"), r.header("x-ok")),
        (Some("5"), Some("1"))
    );
    let r = ask(&mut c, "resp-framing");
    assert_eq!((r.status, r.text()), (200, "path=/x body=0\n".to_owned()));
    assert_eq!(r.header("x-ok"), Some("1"));
    assert_ne!(r.header("content-length"), Some("0"));
    for seen in backend.seen() {
        assert!(clean(&seen.head), "{}", seen.head);
    }
    // Every fault counted by kind, and named in the log.
    let stats = walnut.stats_json();
    assert_eq!(
        counter(&stats, "fault_protocol"),
        (bad_requests.len() + bad_answers.len() + 2) as u64,
        "{stats}"
    );
    assert_eq!(counter(&stats, "fault_trap"), 1, "{stats}");
    assert_eq!(
        counter(&stats, "rewrites"),
        2,
        "the two framing edits: {stats}"
    );
    let log = walnut.log();
    for reason in [
        "wrote a control byte (0x0d) in the value of header \"X-A\"",
        "wrote a control byte (0x00)",
        "which is not one nginx keeps",
        "set path \"/public/../admin\", which has a . or .. segment",
        "answered with status 1000",
        "answered with status 101",
        "the response hook was asked to fail",
    ] {
        assert!(log.contains(reason), "the log says {reason:?}:\n{log}");
    }
}

#[test]
fn under_fail_open_a_faulty_change_is_dropped_and_the_request_goes_on() {
    let backend = TestBackend::start();
    let walnut = http_pool(&backend, "fail_open");
    let mut c = HttpClient::connect(walnut.addr);
    for mode in ["header-crlf", "path-crlf", "resp-crlf", "resp-panic"] {
        let r = ask(&mut c, mode);
        assert_eq!(
            (r.status, r.text()),
            (200, "path=/x body=0\n".to_owned()),
            "{mode}"
        );
        assert!(clean(&format!("{:?}", r.headers)), "{mode}: {r:?}");
    }
    assert_eq!(backend.seen().len(), 4);
    for seen in backend.seen() {
        assert!(
            clean(&seen.head) && !seen.head.contains("X-A"),
            "{}",
            seen.head
        );
    }
    assert_eq!(counter(&walnut.stats_json(), "fault_protocol"), 3);
}
