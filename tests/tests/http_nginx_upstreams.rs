//! walnut and nginx 1.22, configured alike, side by side towards their upstreams: where keys
//! land under `hash $request_uri consistent`, what is (not) sent twice, which connections are
//! reused, and the timeouts that keep a slow peer from holding a connection forever.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use walnut_tests::{
    FakeBackend, HttpClient, Nginx, SideBySide, TestBackend, eventually, read_head,
};

/// Request lines a fake backend saw, shared with the test.
type Seen = Arc<Mutex<Vec<String>>>;

fn first_line(head: &str) -> String {
    head.lines().next().unwrap_or("").to_owned()
}

#[test]
fn hash_consistent_places_every_key_where_nginx_does() {
    let backends: Vec<TestBackend> = (0..4).map(|_| TestBackend::start()).collect();
    // A fifth server that refuses connections: both walk on to the next point.
    let dead = walnut_tests::free_port();
    let weights = [1, 2, 1, 3, 1];
    let mut servers: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    servers.push(format!("127.0.0.1:{dead}"));
    let with_weights: Vec<String> = servers
        .iter()
        .zip(weights)
        .map(|(s, w)| format!("{s} weight={w}"))
        .collect();
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    h:\n      hash: $request_uri\n      servers: [{}]\n  locations:\n    - match: /\n      proxy_pass: h\n",
        with_weights
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let nginx_http = format!(
        "upstream h {{ hash $request_uri consistent; {} }}",
        with_weights
            .iter()
            .map(|s| format!("server {s};"))
            .collect::<String>()
    );
    let pair = SideBySide::start(&walnut, &nginx_http, "location / { proxy_pass http://h; }");
    let uris: Vec<String> = (0..300).map(|i| format!("/k{i}?v={}", i * 7)).collect();
    let mut placements = Vec::new();
    for (who, addr) in pair.both() {
        let before: Vec<usize> = backends.iter().map(|b| b.seen().len()).collect();
        let mut c = HttpClient::connect(addr);
        for u in &uris {
            assert_eq!(c.get(u).status, 200, "{who} {u}");
        }
        // Which backend got each URI.
        let mut at: Vec<(String, usize)> = Vec::new();
        for (n, b) in backends.iter().enumerate() {
            for r in &b.seen()[before[n]..] {
                let target = first_line(&r.head).split(' ').nth(1).unwrap().to_owned();
                at.push((target, n));
            }
        }
        at.sort();
        assert_eq!(at.len(), uris.len(), "{who}: every URI reached one backend");
        placements.push(at);
    }
    let moved: Vec<_> = placements[0]
        .iter()
        .zip(&placements[1])
        .filter(|(w, n)| w != n)
        .collect();
    assert!(moved.is_empty(), "walnut vs nginx: {moved:?}");
    let used = (0..4)
        .filter(|n| placements[0].iter().any(|(_, b)| b == n))
        .count();
    assert_eq!(used, 4, "keys spread over every live server");
}

/// Answers a connection's first request, then reads its second and closes without a word: a
/// kept-alive connection that turns out to be stale.
fn stale_backend(seen: Seen) -> FakeBackend {
    FakeBackend::start(move |stream, _| {
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let Some(head) = read_head(&mut r) else {
            return;
        };
        seen.lock().unwrap().push(first_line(&head));
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        if let Some(head) = read_head(&mut r) {
            seen.lock().unwrap().push(first_line(&head));
        }
    })
}

#[test]
fn a_bodyless_post_is_not_sent_twice_on_a_stale_connection_as_in_nginx() {
    let (sw, sn): (Seen, Seen) = Default::default();
    let (bw, bn) = (stale_backend(sw.clone()), stale_backend(sn.clone()));
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    s:\n      servers: [\"{}\"]\n      keepalive: 8\n  locations:\n    - match: /\n      proxy_pass: s\n",
        bw.addr
    );
    let nginx_http = format!("upstream s {{ server {}; keepalive 8; }}", bn.addr);
    let nginx_server = "location / { proxy_pass http://s; proxy_http_version 1.1; proxy_set_header Connection \"\"; }";
    let pair = SideBySide::start(&walnut, &nginx_http, nginx_server);
    let mut outcomes = Vec::new();
    for ((who, addr), seen) in pair.both().into_iter().zip([&sw, &sn]) {
        let mut c = HttpClient::connect(addr);
        let warm = c.get("/warm").status;
        c.send(b"POST /p HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
        let post = c.read_response(false).status;
        // A GET is idempotent: on a stale connection it is sent again.
        let mut c = HttpClient::connect(addr);
        let warm2 = c.get("/warm2").status;
        let again = c.get("/again").status;
        let seen = seen.lock().unwrap().clone();
        let count = |line: &str| seen.iter().filter(|l| l.starts_with(line)).count();
        outcomes.push((
            warm,
            post,
            warm2,
            again,
            count("POST /p "),
            count("GET /again "),
        ));
        assert_eq!(count("POST /p "), 1, "{who}: {seen:?}");
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert_eq!(outcomes[0], (200, 502, 200, 200, 1, 2));
}

/// Never reads a request body, and answers a request for `/smuggled...` only after 300 ms, so
/// the body of `GET /a` is answered as a second request once nobody watches the connection.
fn lazy_backend(seen: Seen) -> FakeBackend {
    FakeBackend::start(move |stream, _| {
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        while let Some(head) = read_head(&mut r) {
            let line = first_line(&head);
            seen.lock().unwrap().push(line.clone());
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            if path.starts_with("/smuggled") {
                std::thread::sleep(Duration::from_millis(300));
            }
            let body = format!("path={path}\n");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if w.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// `GET /a` carrying a body that reads as a request, then `GET /b` on another connection:
/// what the second client reads.
fn smuggle_through(addr: SocketAddr) -> (String, String) {
    let inner = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut a = HttpClient::connect(addr);
    a.send(
        format!(
            "GET /a HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{inner}",
            inner.len()
        )
        .as_bytes(),
    );
    let first = a.read_response(false).text();
    let mut b = HttpClient::connect(addr);
    let second = b.get("/b").text();
    (first, second)
}

#[test]
fn an_unread_request_body_never_answers_another_client() {
    let (sw, sn, sk): (Seen, Seen, Seen) = Default::default();
    let (bw, bn, bk) = (
        lazy_backend(sw.clone()),
        lazy_backend(sn.clone()),
        lazy_backend(sk.clone()),
    );
    let config = |addr: SocketAddr, keepalive: &str| {
        format!(
            "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    l:\n      servers: [\"{addr}\"]\n{keepalive}  locations:\n    - match: /\n      proxy_pass: l\n"
        )
    };
    // nginx's default: no upstream keepalive, so every request has a connection of its own.
    let nginx_http = format!("upstream l {{ server {}; }}", bn.addr);
    let pair = SideBySide::start(
        &config(bw.addr, ""),
        &nginx_http,
        "location / { proxy_pass http://l; }",
    );
    let want = ("path=/a\n".to_owned(), "path=/b\n".to_owned());
    for (who, addr) in pair.both() {
        assert_eq!(smuggle_through(addr), want, "{who}");
    }
    // With keepalive, walnut still never reuses a connection whose request carried a body
    // (a stated difference: nginx would pool it).
    let kept =
        walnut_tests::Proxy::walnut_with(&config(bk.addr, "      keepalive: 8\n"), &["-w", "1"]);
    assert_eq!(smuggle_through(kept.addr), want, "walnut with keepalive");
    let _ = (sw, sn, sk);
}

#[test]
fn send_timeout_drops_a_client_that_stops_reading_as_in_nginx() {
    let origin = Nginx::start("");
    std::fs::File::create(origin.dir.join("html/big"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  send_timeout: 300\n  upstreams:\n    o:\n      servers: [\"127.0.0.1:{}\"]\n  locations:\n    - match: /\n      proxy_pass: o\n",
        origin.port
    );
    let nginx_http = format!("upstream o {{ server 127.0.0.1:{}; }}", origin.port);
    let pair = SideBySide::start(
        &walnut,
        &nginx_http,
        "send_timeout 300ms; location / { proxy_pass http://o; }",
    );
    for (who, addr) in pair.both() {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        // Not reading, for well past send_timeout.
        std::thread::sleep(Duration::from_millis(1500));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let ended = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(ended, "{who}: the connection was closed");
        assert!(
            total < 64 << 20,
            "{who}: {total} bytes: the body was cut short"
        );
    }
}

/// Accepts, never reads: a request body fills its buffers and stops.
fn deaf_backend() -> FakeBackend {
    FakeBackend::start(|stream, _| {
        std::thread::sleep(Duration::from_secs(30));
        drop(stream);
    })
}

#[test]
fn proxy_send_timeout_answers_504_when_the_upstream_takes_no_body_as_in_nginx() {
    let (dw, dn) = (deaf_backend(), deaf_backend());
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  proxy_send_timeout: 300\n  upstreams:\n    d:\n      servers: [\"{}\"]\n  locations:\n    - match: /\n      proxy_pass: d\n",
        dw.addr
    );
    let nginx_http = format!("upstream d {{ server {}; }}", dn.addr);
    let pair = SideBySide::start(
        &walnut,
        &nginx_http,
        "client_max_body_size 0; proxy_send_timeout 300ms; location / { proxy_pass http://d; }",
    );
    const BODY: usize = 32 << 20;
    for (who, addr) in pair.both() {
        let mut c = HttpClient::connect(addr);
        let mut writer = c.stream.try_clone().unwrap();
        let sending = std::thread::spawn(move || {
            let head = format!("POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: {BODY}\r\n\r\n");
            let _ = writer.write_all(head.as_bytes());
            let chunk = vec![b'z'; 1 << 16];
            for _ in 0..BODY / chunk.len() {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        assert_eq!(c.read_response(false).status, 504, "{who}");
        sending.join().unwrap();
    }
}

#[test]
fn a_client_that_leaves_while_its_request_waits_closes_the_upstream_try_as_in_nginx() {
    let hang = |closed: Arc<AtomicU32>, seen: Arc<AtomicU32>| {
        FakeBackend::start(move |stream, _| {
            let mut r = BufReader::new(stream);
            if read_head(&mut r).is_none() {
                return;
            }
            seen.fetch_add(1, Ordering::SeqCst);
            // Never answers; notes when the proxy closes the connection.
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
            closed.fetch_add(1, Ordering::SeqCst);
        })
    };
    let counters: Vec<(Arc<AtomicU32>, Arc<AtomicU32>)> =
        (0..2).map(|_| Default::default()).collect();
    let hw = hang(counters[0].0.clone(), counters[0].1.clone());
    let hn = hang(counters[1].0.clone(), counters[1].1.clone());
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  timeout: 60000\n  upstreams:\n    h:\n      servers: [\"{}\"]\n  locations:\n    - match: /\n      proxy_pass: h\n",
        hw.addr
    );
    let nginx_http = format!("upstream h {{ server {}; }}", hn.addr);
    let pair = SideBySide::start(
        &walnut,
        &nginx_http,
        "proxy_read_timeout 60s; location / { proxy_pass http://h; }",
    );
    for ((who, addr), (closed, seen)) in pair.both().into_iter().zip(&counters) {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /hang HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        assert!(
            eventually(Duration::from_secs(10), || seen.load(Ordering::SeqCst) == 1),
            "{who}: the request reached the backend"
        );
        assert_eq!(closed.load(Ordering::SeqCst), 0);
        drop(c);
        // The proxy's timeout is a minute away: only the client's leaving closes it.
        assert!(
            eventually(Duration::from_secs(10), || closed.load(Ordering::SeqCst)
                == 1),
            "{who}: the upstream connection was closed after the client left"
        );
    }
}

/// Answers every request with `101 Switching Protocols` and bytes of another protocol, though
/// nobody asked for an upgrade; a request that comes after on the same connection (a proxy
/// that took the connection back for reuse) gets `200 reused`. A connection silent for 3 s is
/// closed.
fn switching_backend(seen: Seen) -> FakeBackend {
    FakeBackend::start(move |stream, n| {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let mut answered = 0;
        while let Some(head) = read_head(&mut r) {
            seen.lock()
                .unwrap()
                .push(format!("{} conn={n}", first_line(&head)));
            let reply: &[u8] = if answered == 0 {
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05frame"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nreused"
            };
            answered += 1;
            if w.write_all(reply).is_err() {
                return;
            }
        }
    })
}

/// Everything the proxy sends on one connection after `GET /ws`, until it closes it.
fn raw_answer(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all
}

#[test]
fn an_unasked_101_is_a_502_and_its_connection_is_never_reused_where_nginx_relays_it() {
    let (sw, sn): (Seen, Seen) = Default::default();
    let (bw, bn) = (switching_backend(sw.clone()), switching_backend(sn.clone()));
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    s:\n      servers: [\"{}\"]\n      keepalive: 8\n  locations:\n    - match: /\n      proxy_pass: s\n",
        bw.addr
    );
    let nginx_http = format!("upstream s {{ server {}; keepalive 8; }}", bn.addr);
    let nginx_server = "location / { proxy_pass http://s; proxy_http_version 1.1; proxy_set_header Connection \"\"; }";
    let pair = SideBySide::start(&walnut, &nginx_http, nginx_server);
    // walnut: 502, and the client's connection goes on; each request gets a new upstream
    // connection, so no request is ever answered on one that switched protocols.
    let mut c = HttpClient::connect(pair.walnut.addr);
    for path in ["/ws", "/again", "/third"] {
        let r = c.get(path);
        assert_eq!(
            (r.status, r.text()),
            (502, "502 Bad Gateway\n".to_owned()),
            "{path}"
        );
    }
    let seen = sw.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "GET /ws HTTP/1.1 conn=0",
            "GET /again HTTP/1.1 conn=1",
            "GET /third HTTP/1.1 conn=2"
        ],
        "walnut"
    );
    assert!(
        !String::from_utf8_lossy(&raw_answer(pair.walnut.addr)).contains("frame"),
        "walnut passed on bytes of the other protocol"
    );
    // nginx 1.22 relays the 101 head, then the other protocol's bytes as a body read until
    // the upstream closes, and closes the client connection; it does not reuse the upstream
    // connection either.
    let answer = raw_answer(pair.nginx.addr());
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n")
            && answer.ends_with(b"\x81\x05frame"),
        "nginx: {text:?}"
    );
    let mut n = HttpClient::connect(pair.nginx.addr());
    n.send(b"GET /again HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    assert_eq!(n.read_response(false).status, 101, "nginx");
    let seen = sn.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|l| !l.contains("conn=0") || l.starts_with("GET /ws ")),
        "nginx reused the connection: {seen:?}"
    );
}
