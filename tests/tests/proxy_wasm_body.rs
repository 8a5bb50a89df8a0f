//! The body phases of an unmodified proxy-wasm filter (`tests/plugins/pw-body`, built with the
//! proxy-wasm Rust SDK from crates.io, as an Envoy user builds it) on walnut's HTTP locations:
//! the real walnut binary, curl, a real nginx serving the responses a filter rewrites, and an
//! upstream that records the exact bytes it received. A filter sees every body byte once, in
//! order, and the end; what it leaves goes on in the client's framing, or re-framed when it
//! removed Content-Length; it may deny a request from its body; its faults follow `on_error`;
//! what it holds back is bounded by its memory cap; chained filters see a body in chain order.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use walnut_tests::{
    Got, Nginx, Proxy, SeenRequest, TestBackend, curl, eventually, http_site, location_plugin,
    plugin_dir, pool_plugin, require, temp_dir,
};

/// The filter's `.wasm` (built once per run).
fn wasm() -> PathBuf {
    plugin_dir(&["pw-body"]).join("pw_body.wasm")
}

/// A location's `plugins:` list holding pw-body with JSON `config` and extra keys.
fn body_filter(config: &str, extra: &str) -> String {
    location_plugin(&wasm(), &format!("config: {config}\n{extra}"))
}

/// An upstream that records what it gets, and walnut (one worker) proxying to it through
/// pw-body with JSON `config` and `extra` keys on location `/`.
fn one_filter(config: &str, extra: &str) -> (TestBackend, Proxy) {
    let backend = TestBackend::start();
    let site = http_site(backend.addr, "", &[("/", body_filter(config, extra))]);
    let walnut = Proxy::walnut_with(&site, &["-w", "1"]);
    (backend, walnut)
}

fn url(walnut: &Proxy, path: &str) -> String {
    format!("http://{}{path}", walnut.addr)
}

/// FNV-1a 64 of `bytes` in hex, as the filter writes it.
fn fnv(bytes: &[u8]) -> String {
    let sum = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{sum:016x}")
}

/// `len` bytes of lowercase letters, spaces and newlines, the same for the same `seed`.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefghijklmnopqrstuvwxyz   \n"[(x % 30) as usize]
        })
        .collect()
}

/// `body` with every `word` replaced by `with`.
fn replaced(body: &[u8], word: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(word) {
            out.extend_from_slice(with);
            i += word.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

/// What the filter said it saw of the request body (its `x-pw-request-body` header).
#[derive(Debug, PartialEq)]
struct Report {
    bytes: usize,
    calls: u32,
    end: bool,
    sum: String,
}

fn report(value: &str) -> Report {
    let w: Vec<&str> = value.split(' ').collect();
    match w[..] {
        [bytes, calls, end, sum] => Report {
            bytes: bytes.parse().expect("bytes"),
            calls: calls.parse().expect("calls"),
            end: end.parse().expect("end"),
            sum: sum.to_owned(),
        },
        _ => panic!("not a pw-body report: {value:?}"),
    }
}

/// The report of the one pw-body filter on `got`'s request.
fn report_of(got: &Got) -> Report {
    let values = got.headers_named("x-pw-request-body");
    assert_eq!(values.len(), 1, "one filter's report: {:?}", got.headers);
    report(values[0])
}

/// Asserts that the filter saw exactly `sent`, in order, and its end.
fn assert_saw(got: &Got, sent: &[u8], what: &str) -> Report {
    let r = report_of(got);
    assert_eq!(
        (r.bytes, r.end, r.sum.as_str()),
        (sent.len(), true, fnv(sent).as_str()),
        "{what}: the filter sees each of the {} bytes sent once, in order, and the end; it saw {r:?}",
        sent.len()
    );
    r
}

/// curl POSTs `body` to `path` (with Content-Length, or chunked), with `extra` arguments.
fn post(walnut: &Proxy, path: &str, body: &[u8], chunked: bool, extra: &[&str]) -> Got {
    let dir = temp_dir("pw-body-post");
    let file = dir.join("body");
    std::fs::write(&file, body).expect("write the body");
    let data = format!("@{}", file.display());
    let mut args = vec!["--data-binary", data.as_str()];
    if chunked {
        args.extend(["-H", "Transfer-Encoding: chunked"]);
    }
    args.extend(extra);
    let got = curl(&url(walnut, path), &args);
    let _ = std::fs::remove_dir_all(&dir);
    got
}

/// What the upstream received for the requests to exactly `path`.
fn received(backend: &TestBackend, path: &str) -> Vec<SeenRequest> {
    backend
        .seen()
        .into_iter()
        .filter(|s| s.head.split(' ').nth(1) == Some(path))
        .collect()
}

/// The one request the upstream received for `path`, its head lowercased.
fn received_one(backend: &TestBackend, path: &str) -> (String, Vec<u8>) {
    let seen = received(backend, path);
    assert_eq!(
        seen.len(),
        1,
        "the upstream got {path} once: {:?}",
        seen.iter().map(|s| &s.head).collect::<Vec<_>>()
    );
    (seen[0].head.to_ascii_lowercase(), seen[0].body.clone())
}

/// Asserts that the upstream got `want` for `path`, and returns its head (lowercased).
fn assert_upstream_got(backend: &TestBackend, path: &str, want: &[u8]) -> String {
    let (head, body) = received_one(backend, path);
    assert!(
        body == want,
        "{path}: the upstream got {} bytes (sum {}), not the {} bytes (sum {}) expected; head:\n{head}",
        body.len(),
        fnv(&body),
        want.len(),
        fnv(want)
    );
    head
}

/// Asserts that the upstream never got all of the `sent` body for `path`.
fn assert_upstream_never_got(backend: &TestBackend, path: &str, sent: &[u8]) {
    for s in received(backend, path) {
        assert!(
            s.body.len() < sent.len(),
            "{path}: the upstream got a complete body of {} bytes:\n{}",
            s.body.len(),
            s.head
        );
    }
}

/// Waits until `count` lines of walnut's log contain every one of `parts`; returns them.
fn log_lines(walnut: &Proxy, parts: &[&str], count: usize) -> Vec<String> {
    let matching = || -> Vec<String> {
        walnut
            .log()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), || matching().len() >= count),
        "{count} lines of walnut's log with {parts:?}; the log:\n{}",
        walnut.log()
    );
    matching()
}

/// Status, body and header names of `got`, without a long body.
fn brief(got: &Got) -> String {
    let body: String = got.body.chars().take(200).collect();
    format!("{} {:?} {body:?}", got.status, got.headers)
}

#[test]
fn a_filter_sees_every_request_byte_once_in_order_and_the_upstream_gets_them_as_sent() {
    let (backend, walnut) = one_filter("{}", "");

    // Content-Length, 1 MiB: more than walnut reads at once.
    let sent = text(1 << 20, 1);
    let got = post(&walnut, "/cl", &sent, false, &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert_eq!(got.body, format!("path=/cl body={}\n", sent.len()));
    let r = assert_saw(&got, &sent, "1 MiB with Content-Length");
    assert!(
        r.calls >= 2,
        "a 1 MiB body reaches the filter piece by piece as walnut reads it, not whole: {r:?}"
    );
    let head = assert_upstream_got(&backend, "/cl", &sent);
    assert!(
        head.contains("content-length: 1048576\r\n") && !head.contains("transfer-encoding"),
        "the client's framing goes upstream: {head}"
    );
    // The response: its Content-Length kept, its body seen once, with its end.
    assert!(
        got.header("content-length") == Some(got.body.len().to_string().as_str())
            && got.header("transfer-encoding").is_none(),
        "a filter that leaves Content-Length leaves the framing: {got:?}"
    );
    log_lines(
        &walnut,
        &[
            &format!(
                "pw-body: request 1048576 bytes in {} calls; response {} bytes in ",
                r.calls,
                got.body.len()
            ),
            &format!("end=true, sum={}", fnv(got.body.as_bytes())),
        ],
        1,
    );

    // Chunked, 300 KB: the upstream gets it chunked too.
    let sent = text(300_000, 2);
    let got = post(&walnut, "/chunked", &sent, true, &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert_eq!(got.body, format!("path=/chunked body={}\n", sent.len()));
    assert_saw(&got, &sent, "300 KB chunked");
    let head = assert_upstream_got(&backend, "/chunked", &sent);
    assert!(
        head.contains("transfer-encoding: chunked\r\n") && !head.contains("content-length"),
        "the client's framing goes upstream: {head}"
    );

    // A few bytes come in one piece, which is also the end.
    let got = post(&walnut, "/small", b"hello", false, &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    let r = assert_saw(&got, b"hello", "5 bytes");
    assert_eq!(r.calls, 1, "one call, with end_of_stream: {r:?}");
    assert_upstream_got(&backend, "/small", b"hello");

    // No body, no body phase.
    let got = curl(&url(&walnut, "/get"), &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert_eq!(
        report_of(&got),
        report(&format!("0 0 false {}", fnv(b""))),
        "a GET without a body has no request body phase"
    );
}

#[test]
fn a_filter_that_removed_content_length_rewrites_the_request_body_which_goes_upstream_chunked() {
    let (backend, walnut) = one_filter("{ upper_request: true }", "");
    let upper = |b: &[u8]| [b.to_ascii_uppercase(), b"!".to_vec()].concat();
    for (path, sent, chunked) in [
        ("/small", b"hello walnut".to_vec(), false),
        ("/large", text(500_000, 3), false),
        ("/chunked", text(100_000, 4), true),
    ] {
        let got = post(&walnut, path, &sent, chunked, &[]);
        assert_eq!(got.status, 200, "{path}: {}", brief(&got));
        assert_eq!(
            got.body,
            format!("path={path} body={}\n", sent.len() + 1),
            "{path}: the upstream's answer"
        );
        assert_saw(&got, &sent, path);
        let head = assert_upstream_got(&backend, path, &upper(&sent));
        assert!(
            head.contains("transfer-encoding: chunked\r\n") && !head.contains("content-length"),
            "{path}: the filter removed Content-Length, so the body goes upstream chunked: {head}"
        );
    }
}

#[test]
fn a_filter_denies_a_request_by_its_body_and_the_upstream_never_gets_the_body() {
    let (backend, walnut) = one_filter("{ deny_word: forbidden }", "");
    // The word across the first 64 KiB boundary of a 200 KB body; near the end of a chunked
    // one; in a body of a few bytes.
    let mut across = text(200_000, 5);
    across[65_530..65_539].copy_from_slice(b"forbidden");
    let mut late = text(100_000, 6);
    late[99_000..99_009].copy_from_slice(b"forbidden");
    for (path, sent, chunked) in [
        ("/across", across, false),
        ("/late", late, true),
        ("/small", b"a forbidden word".to_vec(), false),
    ] {
        let got = post(&walnut, path, &sent, chunked, &[]);
        assert_eq!(
            (got.status, got.body.as_str()),
            (403, "body denied\n"),
            "{path}: the filter's local answer: {}",
            brief(&got)
        );
        assert_eq!(
            got.header("x-denied-by"),
            Some("pw-body"),
            "{path}: {got:?}"
        );
        assert_upstream_never_got(&backend, path, &sent);
    }
    // Without the word: held back to its end, then passed on whole, as sent.
    let sent = text(200_000, 7);
    let got = post(&walnut, "/fine", &sent, false, &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert_eq!(got.body, "path=/fine body=200000\n");
    // Each call's buffer holds what the filter held back plus the new piece: it skips what
    // it saw before, so this adds up only if walnut counted right.
    let r = assert_saw(&got, &sent, "200 KB held back to its end");
    assert!(r.calls >= 2, "{r:?}");
    let head = assert_upstream_got(&backend, "/fine", &sent);
    assert!(
        head.contains("content-length: 200000\r\n") && !head.contains("transfer-encoding"),
        "{head}"
    );
}

#[test]
fn a_fault_in_the_request_body_phase_follows_on_error() {
    let backend = TestBackend::start();
    let grow = "{ grow_keep_length: true }";
    let pause = "{ pause_at_end: true }";
    let config = http_site(
        backend.addr,
        "",
        &[
            ("/grow-open", body_filter(grow, "on_error: fail_open")),
            ("/grow-closed", body_filter(grow, "on_error: fail_closed")),
            ("/end-open", body_filter(pause, "on_error: fail_open")),
            ("/end-closed", body_filter(pause, "on_error: fail_closed")),
        ],
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    let sent = b"hello body";
    // A body framed by Content-Length may not change length: set_http_request_body is refused,
    // the SDK panics, and the fault goes by on_error.
    let got = post(&walnut, "/grow-open", sent, false, &[]);
    assert_eq!(
        (got.status, got.body.as_str()),
        (200, "path=/grow-open body=10\n"),
        "fail_open: the body goes on unchanged: {got:?}"
    );
    let head = assert_upstream_got(&backend, "/grow-open", sent);
    assert!(head.contains("content-length: 10\r\n"), "{head}");
    let got = post(&walnut, "/grow-closed", sent, false, &[]);
    assert_eq!(
        got.status, 500,
        "fail_closed: a length change refused is a fault: {got:?}"
    );
    assert_upstream_never_got(&backend, "/grow-closed", sent);
    let refused = log_lines(
        &walnut,
        &[
            "pw_body",
            "changed the length of a request body framed by Content-Length",
        ],
        2,
    );
    assert!(
        refused
            .iter()
            .all(|l| l.contains("WARN") || l.contains("ERROR")),
        "{refused:?}"
    );
    // A chunked body has no length to keep: the filter may grow it.
    let got = post(&walnut, "/grow-closed/chunked", sent, true, &[]);
    assert_eq!(
        (got.status, got.body.as_str()),
        (200, "path=/grow-closed/chunked body=11\n"),
        "{got:?}"
    );
    assert_upstream_got(&backend, "/grow-closed/chunked", b"hello bodyx");

    // Holding a body back past its end is a fault: walnut cannot wait for more.
    let large = text(300_000, 8);
    for (path, body) in [("/end-open", &sent[..]), ("/end-open/large", &large[..])] {
        let got = post(&walnut, path, body, false, &[]);
        assert_eq!(
            (got.status, got.body.clone()),
            (200, format!("path={path} body={}\n", body.len())),
            "fail_open: the body goes on unchanged"
        );
        assert_upstream_got(&backend, path, body);
    }
    let got = post(&walnut, "/end-closed", sent, false, &[]);
    assert_eq!(
        got.status, 500,
        "fail_closed: holding back past the end is a fault: {got:?}"
    );
    assert_upstream_never_got(&backend, "/end-closed", sent);
    log_lines(&walnut, &["paused at the end of the body"], 3);

    // The faulty instances were replaced: the next requests are served as before.
    let got = post(&walnut, "/end-open/again", sent, false, &[]);
    assert_eq!(got.status, 200, "{got:?}");
    let got = post(&walnut, "/grow-closed/again", sent, true, &[]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_upstream_got(&backend, "/grow-closed/again", b"hello bodyx");
}

#[test]
fn a_filter_holding_back_more_than_its_memory_cap_gets_the_request_a_413() {
    // 2, not the smallest cap of 1: the filter's own memory starts at 17 pages (1.06 MiB, the
    // 1 MiB stack of Rust's wasm32 target and its data), so a 1 MiB cap would not even let it
    // start.
    let (backend, walnut) = one_filter("{ deny_word: forbidden }", "memory_max_mb: 2");
    let sent = text(3 << 20, 9);
    for (path, chunked) in [("/big", false), ("/big/chunked", true)] {
        let started = std::time::Instant::now();
        let got = post(&walnut, path, &sent, chunked, &[]);
        assert_eq!(got.status, 413, "{path}: 3 MiB held back: {}", brief(&got));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            started.elapsed()
        );
        assert_upstream_never_got(&backend, path, &sent);
    }
    log_lines(&walnut, &["pw_body", "memory cap"], 2);
    // Under the cap the filter works as before.
    let small = text(10_000, 10);
    let got = post(&walnut, "/small", &small, false, &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert_saw(&got, &small, "10 KB");
    assert_upstream_got(&backend, "/small", &small);
}

#[test]
fn a_filter_redacts_a_large_response_body_from_nginx_which_goes_out_rechunked_or_close_delimited() {
    let nginx = Nginx::start("");
    // 300 KB with the word at its start, across the first two 64 KiB boundaries, inside and at
    // its very end.
    let mut page = text(300_000, 11);
    for at in [0, 65_533, 131_070, 200_000, 299_994] {
        page[at..at + 6].copy_from_slice(b"secret");
    }
    let want = replaced(&page, b"secret", b"[redacted]");
    assert_eq!(
        want.len(),
        page.len() + 5 * 4,
        "the page has the word 5 times"
    );
    for dir in ["r", "o"] {
        std::fs::create_dir_all(nginx.dir.join("html").join(dir)).expect("nginx dir");
        nginx.put_file(&format!("{dir}/page.txt"), &page);
    }
    let config = http_site(
        nginx.addr(),
        "",
        &[
            ("/r", body_filter("{ redact: secret }", "")),
            ("/o", body_filter("{}", "")),
        ],
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    let page_url = url(&walnut, "/r/page.txt");

    // HTTP/1.1: the filter removed Content-Length, so the body goes out chunked.
    let got = curl(&page_url, &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert!(
        got.header("transfer-encoding") == Some("chunked")
            && got.header("content-length").is_none(),
        "the filter removed Content-Length: an HTTP/1.1 client gets the body chunked: {:?}",
        got.headers
    );
    assert!(
        got.body.as_bytes() == want,
        "every `secret` redacted, nothing else changed: got {} bytes, {} left unredacted",
        got.body.len(),
        got.body.matches("secret").count()
    );
    // HTTP/1.0: no chunked coding there, the body ends with the connection.
    let got = curl(&page_url, &["-0"]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert!(
        got.header("transfer-encoding").is_none()
            && got.header("content-length").is_none()
            && got.header("connection").map(str::to_ascii_lowercase) == Some("close".into()),
        "the filter removed Content-Length: an HTTP/1.0 client gets the body up to the close, with Connection: close: {:?}",
        got.headers
    );
    assert!(
        got.body.as_bytes() == want,
        "HTTP/1.0: got {} bytes, {} left unredacted",
        got.body.len(),
        got.body.matches("secret").count()
    );
    // A filter that only reads: Content-Length kept, the body as nginx sent it.
    let got = curl(&url(&walnut, "/o/page.txt"), &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert!(
        got.header("content-length") == Some("300000") && got.header("transfer-encoding").is_none(),
        "a filter that leaves Content-Length leaves the framing: {:?}",
        got.headers
    );
    assert!(got.body.as_bytes() == page, "got {} bytes", got.body.len());
    // Each of the three filters saw the 300 KB once, in order, and the end.
    let seen = log_lines(
        &walnut,
        &[
            "pw-body: request 0 bytes in 0 calls; response 300000 bytes in ",
            &format!("end=true, sum={}", fnv(&page)),
        ],
        3,
    );
    assert_eq!(seen.len(), 3, "{seen:?}");

    // HEAD: no body, no body phase; the connection goes on after it.
    let answers = curl_session(&[vec!["-I".into(), page_url.clone()], vec![page_url.clone()]]);
    assert_eq!(
        answers
            .iter()
            .map(|a| (a.status, a.connects))
            .collect::<Vec<_>>(),
        [(200, 1), (200, 0)],
        "a HEAD, then a GET on the same connection: {answers:?}"
    );
    assert!(
        answers[1].body.as_bytes() == want,
        "the GET after the HEAD: {} bytes",
        answers[1].body.len()
    );
    log_lines(
        &walnut,
        &["pw-body: request 0 bytes in 0 calls; response 0 bytes in 0 calls, end=false"],
        1,
    );
}

/// One answer of a [`curl_session`].
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The connections curl opened for it: 0 when it reused the previous one.
    connects: u32,
    /// The response head (the last one, past any 1xx), lowercased, each line ending in CRLF.
    head: String,
    body: String,
}

/// One curl run on several requests (each its arguments, URL included), which it sends on one
/// connection while walnut keeps it alive.
fn curl_session(requests: &[Vec<String>]) -> Vec<Answer> {
    let dir = temp_dir("pw-body-session");
    let mut cmd = Command::new(require("curl", "curl"));
    for (i, args) in requests.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "%{http_code} %{num_connects}\\n",
        ])
        .arg("-D")
        .arg(dir.join(format!("head{i}")))
        .arg("-o")
        .arg(dir.join(format!("body{i}")))
        .args(args);
    }
    let out = cmd.output().expect("run curl");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines.len(),
        requests.len(),
        "curl {requests:?} said {said:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let (status, connects) = line.split_once(' ').expect("code and connects");
            let head = std::fs::read_to_string(dir.join(format!("head{i}"))).unwrap_or_default();
            let body = std::fs::read(dir.join(format!("body{i}"))).unwrap_or_default();
            Answer {
                status: status.parse().expect("status"),
                connects: connects.parse().expect("connects"),
                head: format!(
                    "{}\r\n",
                    head.trim_end().rsplit("\r\n\r\n").next().unwrap_or("")
                )
                .to_ascii_lowercase(),
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    answers
}

#[test]
fn a_connection_goes_on_after_bodies_a_filter_rewrote_both_ways() {
    let (backend, walnut) = one_filter("{ upper_request: true, redact: path }", "");
    let dir = temp_dir("pw-body-ka");
    let file = dir.join("body");
    let sent = text(100_000, 12);
    std::fs::write(&file, &sent).expect("write the body");
    let data = format!("@{}", file.display());
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let answers = curl_session(&[
        s(&["--data-binary", &data, &url(&walnut, "/ka/1")]),
        s(&[&url(&walnut, "/ka/2")]),
        s(&[
            "--data-binary",
            &data,
            "-H",
            "Transfer-Encoding: chunked",
            &url(&walnut, "/ka/3"),
        ]),
        s(&[&url(&walnut, "/ka/4")]),
    ]);
    let got: Vec<(u16, u32, &str)> = answers
        .iter()
        .map(|a| (a.status, a.connects, a.body.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (200, 1, "[redacted]=/ka/1 body=100001\n"),
            (200, 0, "[redacted]=/ka/2 body=0\n"),
            (200, 0, "[redacted]=/ka/3 body=100001\n"),
            (200, 0, "[redacted]=/ka/4 body=0\n"),
        ],
        "four requests on one connection, each body rewritten: {answers:?}"
    );
    for a in &answers {
        assert!(
            a.head.contains("transfer-encoding: chunked\r\n") && !a.head.contains("content-length"),
            "the filter removed Content-Length: the answer goes out chunked: {}",
            a.head
        );
    }
    let upper = [sent.to_ascii_uppercase(), b"!".to_vec()].concat();
    assert_upstream_got(&backend, "/ka/1", &upper);
    assert_upstream_got(&backend, "/ka/3", &upper);
    assert_upstream_got(&backend, "/ka/2", b"");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chained_filters_see_the_body_in_chain_order_both_ways() {
    let backend = TestBackend::start();
    // The pool's filter only reads; the location's rewrites (or denies). A request body goes
    // through the pool's first, a response body through the location's first.
    let config = http_site(
        backend.addr,
        &pool_plugin(&wasm(), "config: {}"),
        &[
            ("/deny", body_filter("{ deny_word: forbidden }", "")),
            (
                "/chain",
                body_filter("{ upper_request: true, redact: secret }", ""),
            ),
        ],
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);

    // Denied by the location's filter: the pool's saw the body before it.
    let sent = b"a forbidden body";
    let got = post(&walnut, "/deny", sent, false, &[]);
    assert_eq!(
        (got.status, got.body.as_str()),
        (403, "body denied\n"),
        "{got:?}"
    );
    assert_upstream_never_got(&backend, "/deny", sent);
    let lines = log_lines(&walnut, &["pw-body: request "], 2);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("pw-body: request 16 bytes in ")),
        "both filters saw the 16 bytes, the pool's first: {lines:?}"
    );

    // Rewritten both ways.
    let sent = b"hello secret";
    let got = post(&walnut, "/chain/secret", sent, false, &[]);
    assert_eq!(
        (got.status, got.body.as_str()),
        (200, "path=/chain/[redacted] body=13\n"),
        "{got:?}"
    );
    assert_eq!(
        got.header("transfer-encoding"),
        Some("chunked"),
        "the location's filter removed Content-Length: {got:?}"
    );
    let reports = got.headers_named("x-pw-request-body");
    assert_eq!(reports.len(), 2, "{got:?}");
    for r in reports {
        let r = report(r);
        assert_eq!(
            (r.bytes, r.end, r.sum.as_str()),
            (12, true, fnv(sent).as_str()),
            "the pool's filter sees the body before the location's uppercases it: {got:?}"
        );
    }
    assert_upstream_got(&backend, "/chain/secret", b"HELLO SECRET!");
    // The location's filter read the upstream's answer; the pool's, what the location's left.
    let original = b"path=/chain/secret body=13\n";
    for body in [&original[..], got.body.as_bytes()] {
        log_lines(
            &walnut,
            &[
                "pw-body: request 12 bytes in ",
                &format!("response {} bytes in ", body.len()),
                &format!("end=true, sum={}", fnv(body)),
            ],
            1,
        );
    }
}

/// An upstream answering every request with `secret` in a body of its framing: chunked for
/// paths starting `/chunked`, until the close for `/close`, else with Content-Length.
fn framing_backend() -> walnut_tests::FakeBackend {
    walnut_tests::FakeBackend::start(|stream, _| {
        use std::io::Write;
        let mut r = std::io::BufReader::new(stream.try_clone().expect("clone"));
        let mut w = stream;
        while let Some(head) = walnut_tests::read_head(&mut r) {
            let body = "the secret word\n";
            let reply = if head.starts_with("GET /chunked") {
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nthe \r\n{:x}\r\n{}\r\n0\r\n\r\n",
                    body.len() - 4,
                    &body[4..]
                )
            } else if head.starts_with("GET /close") {
                format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}")
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            if w.write_all(reply.as_bytes()).is_err() || head.starts_with("GET /close") {
                return;
            }
        }
    })
}

#[test]
fn a_response_body_without_a_promised_length_may_change_length_and_one_with_keeps_it() {
    let backend = framing_backend();
    let config = http_site(
        backend.addr,
        "",
        &[(
            "/",
            body_filter(
                "{ redact: secret, keep_length: true }",
                "on_error: fail_open",
            ),
        )],
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    // No length promised to the client (chunked, or until the close, from the upstream): the
    // filter changes the length without removing any header.
    for path in ["/chunked", "/close"] {
        let got = curl(&url(&walnut, path), &[]);
        assert_eq!(got.status, 200, "{path}: {}", brief(&got));
        assert_eq!(got.body, "the [redacted] word\n", "{path}: {}", brief(&got));
        assert!(
            got.header("content-length").is_none(),
            "{path}: {:?}",
            got.headers
        );
    }
    // Content-Length kept by the filter: the change is refused, the filter fails, and under
    // fail_open the client gets the body as the upstream sent it, whole.
    let got = curl(&url(&walnut, "/length"), &[]);
    assert_eq!(got.status, 200, "{}", brief(&got));
    assert_eq!(
        got.header("content-length"),
        Some("16"),
        "{:?}",
        got.headers
    );
    assert_eq!(got.body, "the secret word\n");
    assert!(
        eventually(Duration::from_secs(5), || {
            walnut
                .log()
                .contains("changed the length of a response body framed by Content-Length")
        }),
        "the refusal is logged: {}",
        walnut.log()
    );
}
