//! The HTTP reverse proxy end to end: the real walnut binary in front of real nginx backends
//! (and small Rust backends where a test must see exactly what arrived), with curl and raw
//! clients. Covers the classic nginx setup of conf/http.yml, failover, bad input, keep-alive to
//! upstreams and large bodies in bounded memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use walnut_tests::{
    HttpClient, Nginx, Proxy, TestBackend, plugin_dir, require, vm_rss_kib, walnut_bin,
};

fn guard_wasm() -> PathBuf {
    plugin_dir(&["command-guard"]).join("command_guard.wasm")
}

/// An nginx backend whose `/count_key1` names it.
fn named_nginx(name: &str) -> Nginx {
    let n = Nginx::start("");
    n.put_file("count_key1", format!("{name}\n").as_bytes());
    n
}

/// The setup of conf/http.yml on run-time ports.
fn classic_config(a: u16, b: u16, fail_timeout: &str) -> String {
    format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  timeout: 5000\n  client_header_timeout: 10000\n  upstreams:\n    backend:\n      servers:\n        - 127.0.0.1:{a} weight=5 max_fails=3 fail_timeout={fail_timeout}\n        - 127.0.0.1:{b} weight=1 max_fails=3 fail_timeout={fail_timeout}\n      keepalive: 64\n  locations:\n    - match: \"~* /count(.*)\"\n      proxy_pass: backend\n      proxy_method: GET\n      plugins:\n        - path: {}\n          config: {{ methods: [PUT, DELETE, POST] }}\n",
        guard_wasm().display()
    )
}

/// `curl` status code for `method` on `url`.
fn curl_status(method: &str, url: &str) -> String {
    let curl = require("curl", "curl");
    let out = Command::new(curl)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args(["--data", "x", url])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_get(url: &str) -> String {
    let curl = require("curl", "curl");
    let out = Command::new(curl)
        .args(["-s", "-f", url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {url} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn conf_http_yml_is_valid() {
    guard_wasm();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(walnut_bin())
        .args(["-t", "-c"])
        .arg(root.join("conf/http.yml"))
        .output()
        .expect("run walnut -t");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn classic_setup_balances_5_to_1_and_refuses_writes() {
    let (a, b) = (named_nginx("A"), named_nginx("B"));
    let proxy = Proxy::walnut_with(&classic_config(a.port, b.port, "30s"), &["-w", "1"]);
    let url = format!("http://{}/count_key1", proxy.addr);
    // curl against walnut against nginx.
    let first = curl_get(&url);
    assert!(first == "A\n" || first == "B\n", "{first:?}");
    let mut client = HttpClient::connect(proxy.addr);
    let (mut to_a, mut to_b) = (0, 0);
    for _ in 0..59 {
        let r = client.get("/count_key1");
        assert_eq!(r.status, 200);
        match r.text().as_str() {
            "A\n" => to_a += 1,
            "B\n" => to_b += 1,
            other => panic!("unexpected body {other:?}"),
        }
    }
    match first.as_str() {
        "A\n" => to_a += 1,
        _ => to_b += 1,
    }
    assert_eq!((to_a, to_b), (50, 10), "weights 5 and 1");
    // The location matches case-insensitively.
    assert_eq!(
        client.get("/COUNT_key1").status,
        404,
        "nginx has no /COUNT_key1 file"
    );
    // Writes are refused by the plugin and never reach a backend.
    for method in ["PUT", "DELETE", "POST"] {
        assert_eq!(curl_status(method, &url), "403", "{method}");
    }
    client.send(b"DELETE /count_key1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = client.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (403, "forbidden\n"));
    // Outside the location: 404 from walnut.
    assert_eq!(client.get("/other").status, 404);
    for n in [&a, &b] {
        let methods: Vec<String> = n.requests().into_iter().map(|r| r.0).collect();
        assert!(methods.iter().all(|m| m == "GET"), "{methods:?}");
    }
    // The stats document shows the pool and its upstream servers: 61 requests went upstream
    // (60 counted above and /COUNT_key1), split 5:1.
    let stats = proxy.stats_json();
    let counter = |server: u16, field: &str| -> u64 {
        let at = stats
            .find(&format!("\"backend/127.0.0.1:{server}\": {{"))
            .unwrap_or_else(|| panic!("{stats}"));
        let f = at + stats[at..].find(&format!("\"{field}\":")).expect("field") + field.len() + 3;
        stats[f..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("number")
    };
    assert!(stats.contains("\"web\": {"), "{stats}");
    let (ra, rb) = (counter(a.port, "requests"), counter(b.port, "requests"));
    assert_eq!(ra + rb, 61, "{stats}");
    assert!(ra >= 50 && rb >= 10, "{stats}");
    assert_eq!(
        counter(a.port, "responses") + counter(b.port, "responses"),
        61,
        "{stats}"
    );
}

#[test]
fn a_dead_backend_is_skipped_and_used_again_after_fail_timeout() {
    let (a, mut b) = (named_nginx("A"), named_nginx("B"));
    let proxy = Proxy::walnut(&classic_config(a.port, b.port, "1s"));
    let mut client = HttpClient::connect(proxy.addr);
    assert_eq!(client.get("/count_key1").status, 200);
    b.kill();
    for i in 0..40 {
        let r = if i % 2 == 0 {
            client.get("/count_key1")
        } else {
            HttpClient::connect(proxy.addr).get("/count_key1")
        };
        assert_eq!((r.status, r.text().as_str()), (200, "A\n"), "request {i}");
    }
    let before = b.requests().len();
    b.restart();
    std::thread::sleep(Duration::from_millis(1300));
    let mut to_b = 0;
    for _ in 0..40 {
        let r = client.get("/count_key1");
        assert_eq!(r.status, 200);
        to_b += usize::from(r.text() == "B\n");
    }
    assert!(to_b > 0, "B is used again after fail_timeout");
    assert!(b.requests().len() > before);
}

#[test]
fn every_server_down_gives_502_and_a_slow_one_504() {
    let dead = walnut_tests::free_port();
    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  timeout: 300\n  upstreams:\n    dead:\n      servers: [\"127.0.0.1:{dead}\"]\n    slow:\n      servers: [\"127.0.0.1:{silent_port}\"]\n  locations:\n    - match: /dead\n      proxy_pass: dead\n    - match: /slow\n      proxy_pass: slow\n"
    );
    let proxy = Proxy::walnut(&config);
    let mut c = HttpClient::connect(proxy.addr);
    let r = c.get("/dead");
    assert_eq!(r.status, 502);
    assert!(!r.body.is_empty() && r.body.len() < 100);
    let r = c.get("/slow");
    assert_eq!(r.status, 504);
    drop(silent);
}

fn echo_config(backend: &TestBackend, extra: &str) -> String {
    format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  timeout: 5000\n  client_header_timeout: 500\n  upstreams:\n    echo:\n      servers: [\"{}\"]\n      keepalive: 8\n{extra}  locations:\n    - match: /\n      proxy_pass: echo\n    - match: ^~ /m\n      proxy_pass: echo\n      proxy_method: GET\n    - match: = /teapot\n      return: \"418 short and stout\"\n",
        backend.addr
    )
}

#[test]
fn headers_are_forwarded_and_hop_by_hop_ones_dropped() {
    let backend = TestBackend::start();
    let proxy = Proxy::walnut(&echo_config(&backend, ""));
    let mut c = HttpClient::connect(proxy.addr);
    c.send(
        b"PATCH /m/x?q=1 HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Secret\r\n\
          X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
          Trailer: X-T\r\nUpgrade: websocket\r\nX-Forwarded-For: 10.0.0.9\r\nX-Kept: yes\r\n\
          Content-Length: 3\r\n\r\nabc",
    );
    let r = c.read_response(false);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "path=/m/x?q=1 body=3\n")
    );
    let head = backend.seen().last().unwrap().head.clone();
    assert!(
        head.starts_with("GET /m/x?q=1 HTTP/1.1\r\n"),
        "proxy_method: {head}"
    );
    let lower = head.to_ascii_lowercase();
    for kept in [
        "host: example.test",
        "x-kept: yes",
        "x-forwarded-for: 10.0.0.9, 127.0.0.1",
        "x-real-ip: 127.0.0.1",
        "x-forwarded-proto: http",
        "content-length: 3",
    ] {
        assert!(lower.contains(kept), "{kept} missing in {head}");
    }
    for dropped in [
        "connection:",
        "x-secret",
        "keep-alive:",
        "proxy-connection",
        "\nte:",
        "trailer",
        "upgrade",
    ] {
        assert!(!lower.contains(dropped), "{dropped} forwarded in {head}");
    }
    // Local `return`, HTTP/1.0 with and without keep-alive.
    let r = c.get("/teapot");
    assert_eq!((r.status, r.text().as_str()), (418, "short and stout"));
    c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /b HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.text(), "path=/b body=0\n");
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = TestBackend::start();
    let proxy = Proxy::walnut(&echo_config(&backend, ""));
    let mut c = HttpClient::connect(proxy.addr);
    let mut batch = Vec::new();
    for i in 0..20 {
        if i % 5 == 4 {
            batch.extend_from_slice(
                format!("POST /p{i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n").as_bytes(),
            );
        } else {
            batch.extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
    }
    batch.extend_from_slice(b"GET /teapot HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send(&batch);
    for i in 0..20 {
        let r = c.read_response(false);
        let body = if i % 5 == 4 { 2 } else { 0 };
        assert_eq!(r.text(), format!("path=/p{i} body={body}\n"));
    }
    assert_eq!(c.read_response(false).status, 418);
}

/// Sends `raw` on a fresh connection; the status, and whether walnut then closed.
fn refused(proxy: &Proxy, raw: &[u8]) -> (u16, bool) {
    let mut c = HttpClient::connect(proxy.addr);
    if let Err(e) = c.stream.write_all(raw) {
        panic!(
            "sending {}: {e}",
            String::from_utf8_lossy(&raw[..40.min(raw.len())])
        );
    }
    let r = c.read_response(false);
    (r.status, c.closed_within(Duration::from_secs(3)))
}

#[test]
fn bad_input_gets_its_status_while_others_are_served() {
    let backend = TestBackend::start();
    let proxy = Proxy::walnut(&echo_config(&backend, ""));
    // A slow client that never finishes its head, held open throughout.
    let mut slow = TcpStream::connect(proxy.addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut good = HttpClient::connect(proxy.addr);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(10_000));
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "h".repeat(20_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"HELLO THERE\r\n\r\n".to_vec(), 400),
        ("no host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("long uri", long_uri.into_bytes(), 414),
        ("big header", big_header.into_bytes(), 431),
        (
            "CL and TE",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two lengths",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            400,
        ),
        (
            "bad chunk size",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "chunk longer than its size",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, raw, status) in cases {
        assert_eq!(refused(&proxy, &raw), (status, true), "{what}");
        // Everyone else is still served, on a kept-alive connection.
        assert_eq!(good.get("/still").status, 200, "after {what}");
    }
    // The slow client is dropped after client_header_timeout (500 ms), without an answer.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut b = [0u8; 64];
    assert_eq!(
        slow.read(&mut b).unwrap_or(0),
        0,
        "dropped without an answer"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(good.get("/still").status, 200);
}

#[test]
fn upstream_connections_are_kept_alive_and_reused() {
    let nginx = Nginx::start("location / { return 200 'ok\\n'; }");
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    n:\n      servers: [\"127.0.0.1:{}\"]\n      keepalive: 16\n  locations:\n    - match: /\n      proxy_pass: n\n",
        nginx.port
    );
    let proxy = Proxy::walnut(&config);
    // 300 requests on 30 client connections, one after another.
    for _ in 0..30 {
        let mut c = HttpClient::connect(proxy.addr);
        for _ in 0..10 {
            let r = c.get("/k");
            assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let requests = nginx.requests();
    assert_eq!(requests.len(), 300);
    let mut conns: Vec<u64> = requests.iter().map(|r| r.2).collect();
    conns.sort_unstable();
    conns.dedup();
    // Two workers: at most a couple of upstream connections each.
    assert!(conns.len() <= 4, "{} upstream connections", conns.len());
}

#[test]
fn a_consistent_hash_key_pins_a_uri_to_one_server() {
    let (a, b, c) = (named_nginx("A"), named_nginx("B"), named_nginx("C"));
    for n in [&a, &b, &c] {
        for k in 0..20 {
            n.put_file(&format!("k{k}"), n.dir.to_string_lossy().as_bytes());
        }
    }
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    n:\n      servers: [\"127.0.0.1:{}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n      hash: $request_uri\n  locations:\n    - match: /\n      proxy_pass: n\n",
        a.port, b.port, c.port
    );
    let proxy = Proxy::walnut(&config);
    let mut client = HttpClient::connect(proxy.addr);
    let mut owners = std::collections::HashSet::new();
    for k in 0..20 {
        let first = client.get(&format!("/k{k}")).text();
        for _ in 0..3 {
            assert_eq!(client.get(&format!("/k{k}")).text(), first, "/k{k} moved");
        }
        owners.insert(first);
    }
    assert!(owners.len() >= 2, "keys spread over the servers");
}

const HUNDRED_MIB: u64 = 100 << 20;

/// Samples walnut's VmRSS while `f` runs; returns the highest, in KiB.
fn peak_rss_during(pid: u32, f: impl FnOnce()) -> u64 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(vm_rss_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap()
}

#[test]
fn hundred_mib_bodies_stream_both_ways_in_bounded_memory() {
    let nginx = Nginx::start("");
    // A sparse 100 MiB file for the download.
    std::fs::File::create(nginx.dir.join("html/big"))
        .unwrap()
        .set_len(HUNDRED_MIB)
        .unwrap();
    let backend = TestBackend::start();
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    n:\n      servers: [\"127.0.0.1:{}\"]\n    up:\n      servers: [\"{}\"]\n  locations:\n    - match: /big\n      proxy_pass: n\n    - match: /up\n      proxy_pass: up\n",
        nginx.port, backend.addr
    );
    let proxy = Proxy::walnut(&config);
    let pid = proxy.pid();
    let baseline = vm_rss_kib(pid);
    // Download through walnut, read slowly at first so walnut must hold back.
    let peak_down = peak_rss_during(pid, || {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        assert!(total > HUNDRED_MIB && total < HUNDRED_MIB + 1024, "{total}");
    });
    // Upload with curl (Content-Length, Expect: 100-continue) and chunked by hand.
    let file = proxy.dir.join("upload");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(HUNDRED_MIB)
        .unwrap();
    let peak_up = peak_rss_during(pid, || {
        let out = Command::new(require("curl", "curl"))
            .args(["-s", "-f", "-T"])
            .arg(&file)
            .arg(format!("http://{}/up", proxy.addr))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("path=/up body={HUNDRED_MIB}\n")
        );
        let mut c = HttpClient::connect(proxy.addr);
        c.send(b"POST /up/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..100 {
            c.send(format!("{:x}\r\n", chunk.len()).as_bytes());
            c.send(&chunk);
            c.send(b"\r\n");
        }
        c.send(b"0\r\n\r\n");
        let r = c.read_response(false);
        assert_eq!(r.text(), format!("path=/up/chunked body={HUNDRED_MIB}\n"));
    });
    eprintln!("VmRSS KiB: baseline {baseline}, peak {peak_down} downloading, {peak_up} uploading");
    let limit = baseline + 32 * 1024;
    assert!(
        peak_down < limit && peak_up < limit,
        "VmRSS baseline {baseline} KiB, peak {peak_down} KiB down, {peak_up} KiB up"
    );
}

#[test]
fn plugins_rewrite_path_and_headers_and_choose_the_server() {
    let wasm = plugin_dir(&["http-rewrite"]).join("http_rewrite.wasm");
    let backend = TestBackend::start();
    let named: Vec<Nginx> = ["A", "B", "C"].iter().map(|n| named_nginx(n)).collect();
    for n in &named {
        std::fs::create_dir_all(n.dir.join("html/new")).unwrap();
        n.put_file("new/x", format!("{}\n", n.port).as_bytes());
    }
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  plugins:\n    - path: {}\n      config: {{ tag: seen }}\n  upstreams:\n    echo:\n      servers: [\"{}\"]\n    trio:\n      servers: [\"127.0.0.1:{}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n  locations:\n    - match: /old/\n      proxy_pass: echo\n    - match: /new/\n      proxy_pass: trio\n",
        wasm.display(),
        backend.addr,
        named[0].port,
        named[1].port,
        named[2].port
    );
    let proxy = Proxy::walnut(&config);
    let mut c = HttpClient::connect(proxy.addr);
    c.send(b"GET /old/p?q=2 HTTP/1.1\r\nHost: x\r\nX-Drop: 1\r\nX-Walnut: client\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.text(), "path=/new/p?q=2 body=0\n");
    let head = backend.seen().last().unwrap().head.to_ascii_lowercase();
    assert!(
        head.contains("x-walnut: seen\r\n") && !head.contains("x-drop") && !head.contains("client"),
        "{head}"
    );
    // The X-Route value pins the server; without it, round robin visits all three.
    for route in ["r1", "r2", "r3", "r4"] {
        let get = |c: &mut HttpClient| {
            c.send(
                format!("GET /new/x HTTP/1.1\r\nHost: x\r\nX-Route: {route}\r\n\r\n").as_bytes(),
            );
            c.read_response(false).text()
        };
        let first = get(&mut c);
        for _ in 0..5 {
            assert_eq!(get(&mut c), first, "X-Route {route} moved");
        }
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(c.get("/new/x").text());
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn the_response_headers_plugin_changes_an_upstreams_headers_on_its_location() {
    let wasm = plugin_dir(&["response-headers"]).join("response_headers.wasm");
    let backend = TestBackend::start();
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    b:\n      servers: [\"{}\"]\n  locations:\n    - match: /api/\n      proxy_pass: b\n      plugins:\n        - path: {}\n          config: {{ set: {{ X-Served-By: walnut }}, add: {{ Cache-Control: no-store }}, remove: [X-Backend-Conn] }}\n    - match: /\n      proxy_pass: b\n",
        backend.addr,
        wasm.display()
    );
    let proxy = Proxy::walnut(&config);
    let mut c = HttpClient::connect(proxy.addr);
    for _ in 0..3 {
        let r = c.get("/api/x");
        assert_eq!(
            (r.status, r.text()),
            (200, "path=/api/x body=0\n".to_owned())
        );
        assert_eq!(r.header("x-served-by"), Some("walnut"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("x-backend-conn"), None, "removed");
        assert!(r.header("date").is_some() && r.header("content-length").is_some());
        // Another location has no plugin: the upstream's headers as they are.
        let r = c.get("/other");
        assert!(r.header("x-backend-conn").is_some() && r.header("x-served-by").is_none());
    }
    let stats = proxy.stats_json();
    assert!(
        stats.contains("\"plugin:location /api/:response_headers.wasm:rewrites\":3"),
        "{stats}"
    );
}

#[test]
fn status_lines_without_a_reason_or_with_bytes_past_ascii_are_relayed() {
    // httparse hands these reasons back as a static "" outside the read buffer; walnut once
    // took its place for an offset into the buffer, and the connection's task panicked.
    let lines: [&[u8]; 3] = [
        b"HTTP/1.1 200\r\n",
        b"HTTP/1.1 200 Ok\xe9\r\n",
        b"HTTP/1.0 200\n",
    ];
    let backend = walnut_tests::FakeBackend::start(move |stream, _| {
        let mut r = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        while let Some(head) = walnut_tests::read_head(&mut r) {
            let n: usize = head[5..6].parse().unwrap_or(0);
            let mut reply = lines[n % 3].to_vec();
            reply.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
            if w.write_all(&reply).is_err() {
                return;
            }
        }
    });
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    b:\n      servers: [\"{}\"]\n      keepalive: 4\n  locations:\n    - match: /\n      proxy_pass: b\n",
        backend.addr
    );
    // One worker, with kept-alive upstream connections: every answer must come back whole.
    let proxy = Proxy::walnut_with(&config, &["-w", "1"]);
    for round in 0..2 {
        let mut c = HttpClient::connect(proxy.addr);
        for n in 0..3 {
            let r = c.get(&format!("/{n}"));
            assert_eq!(
                (r.status, r.text()),
                (200, "ok".to_owned()),
                "round {round}, line {n}"
            );
        }
    }
}

#[test]
fn bytes_left_by_a_closed_connection_never_reach_the_next_one() {
    // One worker, so the next connection takes the buffers the last one gave back.
    let proxy = Proxy::walnut_with(
        "web:\n  protocol: http\n  listen: {listen}\n  locations:\n    - match: = /ok\n      return: \"200 ok\"\n    - match: /\n      return: \"404 no\"\n",
        &["-w", "1"],
    );
    for round in 0..20 {
        // A head cut short, or a pipelined request after one that closes the connection.
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        if round % 2 == 0 {
            s.write_all(b"GET /stale HTTP/1.1\r\nHost: x\r\nX-Half: ")
                .unwrap();
        } else {
            s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /stale HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
        }
        drop(s);
        let mut c = HttpClient::connect(proxy.addr);
        let r = c.get("/ok");
        assert_eq!(
            (r.status, r.text()),
            (200, "ok".to_owned()),
            "round {round}"
        );
    }
}
