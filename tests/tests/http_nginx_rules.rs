//! walnut and nginx 1.22, configured alike, side by side in front of recording backends: the
//! same requests must meet the same location rules (on nginx's normalized path), the same
//! header rules and the same answers. Each test states any difference walnut keeps on purpose.

use std::io::{BufReader, Write};
use std::net::SocketAddr;

use walnut_tests::{FakeBackend, HttpClient, HttpResponse, SideBySide, TestBackend, read_head};

/// One request on a fresh connection, and its response.
fn one(addr: SocketAddr, raw: &str) -> HttpResponse {
    let mut c = HttpClient::connect(addr);
    c.send(raw.as_bytes());
    c.read_response(raw.starts_with("HEAD "))
}

fn get(addr: SocketAddr, target: &str) -> HttpResponse {
    one(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n"),
    )
}

/// The request lines a backend saw, in order.
fn lines(b: &TestBackend) -> Vec<String> {
    b.seen()
        .iter()
        .map(|r| r.head.lines().next().unwrap_or("").to_owned())
        .collect()
}

/// The method and target of request lines (nginx speaks HTTP/1.0 upstream, walnut 1.1).
fn targets(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.rsplit_once(' ').map_or(l.as_str(), |(t, _)| t).to_owned())
        .collect()
}

const ACCESS_TARGETS: [&str; 22] = [
    "/admin/secret",
    "/%61dmin/secret",
    "//admin/secret",
    "/x/../admin/secret",
    "/./admin/secret",
    "/adm%69n/secret",
    "/x/%2e%2e/admin/secret",
    "/x/%2E%2E%2Fadmin/secret",
    "/ADMIN/secret",
    "/admin/../ok",
    "/../admin/secret",
    "/%2e%2e/x",
    "/a%zz",
    "/a%00b",
    "/ok/%7e/../p?q=%2e%2e",
    "/private/a.php",
    "/public/a.php",
    "/public/../private/a.php",
    "/%70rivate/a.php",
    "/public/a%2ephp",
    "/x.php#frag",
    "/y.php%23",
];

#[test]
fn access_rules_hold_on_the_normalized_path_as_in_nginx() {
    let (bw, bn) = (TestBackend::start(), TestBackend::start());
    let walnut = format!(
        r#"web:
  protocol: http
  listen: {{listen}}
  upstreams:
    b:
      servers: ["{}"]
  locations:
    - match: ^~ /admin/
      return: 403
    - match: "~ ^/(?!public/).*\\.php$"
      return: 403
    - match: /
      proxy_pass: b
"#,
        bw.addr
    );
    let nginx_http = format!("upstream b {{ server {}; }}", bn.addr);
    let nginx_server = r"location ^~ /admin/ { return 403; }
        location ~ ^/(?!public/).*\.php$ { return 403; }
        location / { proxy_pass http://b; }";
    let pair = SideBySide::start(&walnut, &nginx_http, nginx_server);
    let mut statuses = Vec::new();
    for (who, addr) in pair.both() {
        let s: Vec<(String, u16)> = ACCESS_TARGETS
            .iter()
            .map(|t| (t.to_string(), get(addr, t).status))
            .collect();
        statuses.push((who, s));
    }
    assert_eq!(statuses[0].1, statuses[1].1, "walnut vs nginx, per target");
    // Nothing under /admin/ got through, and the backends saw the targets as the clients sent them.
    let forwarded = (targets(&lines(&bw)), targets(&lines(&bn)));
    assert_eq!(forwarded.0, forwarded.1);
    assert!(
        forwarded
            .0
            .iter()
            .all(|t| !t.contains("admin/secret") && !t.contains("private")),
        "{forwarded:?}"
    );
    assert!(
        forwarded
            .0
            .contains(&"GET /ok/%7e/../p?q=%2e%2e".to_owned())
    );
    let status = |t: &str| statuses[0].1.iter().find(|(x, _)| x == t).unwrap().1;
    assert_eq!(status("/%61dmin/secret"), 403);
    assert_eq!(status("/../admin/secret"), 400);
    assert_eq!(status("/public/a.php"), 200);
}

fn forwarded_headers(b: &TestBackend) -> Vec<String> {
    let head = b
        .seen()
        .last()
        .expect("a request")
        .head
        .to_ascii_lowercase();
    head.lines().skip(1).map(str::to_owned).collect()
}

#[test]
fn header_names_with_underscores_are_dropped_unless_allowed_as_in_nginx() {
    for allow in [false, true] {
        let (bw, bn) = (TestBackend::start(), TestBackend::start());
        let walnut = format!(
            "web:\n  protocol: http\n  listen: {{listen}}\n  underscores_in_headers: {allow}\n  upstreams:\n    b:\n      servers: [\"{}\"]\n  locations:\n    - match: /\n      proxy_pass: b\n",
            bw.addr
        );
        let nginx_http = format!("upstream b {{ server {}; }}", bn.addr);
        let nginx_server = format!(
            "underscores_in_headers {}; location / {{ proxy_pass http://b; proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; }}",
            if allow { "on" } else { "off" }
        );
        let pair = SideBySide::start(&walnut, &nginx_http, &nginx_server);
        let request = "GET /h HTTP/1.1\r\nHost: test\r\nX_Real_IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.9\r\nX-Custom_Name: 1\r\nX-Fine: 2\r\n\r\n";
        for (_, addr) in pair.both() {
            assert_eq!(one(addr, request).status, 200);
        }
        let pick = |headers: Vec<String>| -> Vec<String> {
            let mut v: Vec<String> = headers
                .into_iter()
                .filter(|h| h.contains('_') || h.starts_with("x-"))
                .collect();
            v.sort();
            v
        };
        let (w, n) = (pick(forwarded_headers(&bw)), pick(forwarded_headers(&bn)));
        assert_eq!(w, n, "underscores_in_headers {allow}");
        assert_eq!(w.iter().any(|h| h.contains('_')), allow, "{w:?}");
        assert!(w.contains(&"x-real-ip: 127.0.0.1".to_owned()), "{w:?}");
        assert!(
            w.contains(&"x-forwarded-for: 10.0.0.9, 127.0.0.1".to_owned()),
            "{w:?}"
        );
    }
}

#[test]
fn a_head_request_under_proxy_method_get_gets_no_body_as_in_nginx() {
    let (bw, bn) = (TestBackend::start(), TestBackend::start());
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    b:\n      servers: [\"{}\"]\n  locations:\n    - match: ^~ /m\n      proxy_pass: b\n      proxy_method: GET\n",
        bw.addr
    );
    let nginx_http = format!("upstream b {{ server {}; }}", bn.addr);
    let nginx_server = "location ^~ /m { proxy_pass http://b; proxy_method GET; }";
    let pair = SideBySide::start(&walnut, &nginx_http, nginx_server);
    let mut seen = Vec::new();
    for (who, addr) in pair.both() {
        let mut c = HttpClient::connect(addr);
        c.send(b"HEAD /m/x HTTP/1.1\r\nHost: test\r\n\r\n");
        let head = c.read_response(true);
        // The next answer on the connection is the next request's, not the GET's body.
        let next = c.get("/m/y");
        seen.push((
            head.status,
            head.header("content-length").map(str::to_owned),
            next.status,
            next.text(),
        ));
        assert_eq!(next.text(), "path=/m/y body=0\n", "{who}");
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(
        seen[0].1.as_deref(),
        Some("17"),
        "the GET's length, for a HEAD"
    );
    assert_eq!(targets(&lines(&bw)), ["GET /m/x", "GET /m/y"]);
    assert_eq!(targets(&lines(&bn)), targets(&lines(&bw)));
}

#[test]
fn return_sets_location_for_redirects_and_sends_text_as_written_as_in_nginx() {
    let walnut = r#"web:
  protocol: http
  listen: {listen}
  locations:
    - match: = /old
      return: "301 /new"
    - match: = /away
      return: "302 http://example.test/x"
    - match: = /see
      return: "303 /other?a=1"
    - match: = /tmp
      return: "307 /t2"
    - match: = /perm
      return: "308 /p2"
    - match: = /t
      return: "200 text"
    - match: = /empty
      return: 200
"#;
    let nginx_server = "location = /old { return 301 /new; }
        location = /away { return 302 http://example.test/x; }
        location = /see { return 303 /other?a=1; }
        location = /tmp { return 307 /t2; }
        location = /perm { return 308 /p2; }
        location = /t { return 200 text; }
        location = /empty { return 200; }";
    let pair = SideBySide::start(walnut, "", nginx_server);
    let mut seen = Vec::new();
    for (_, addr) in pair.both() {
        let port = addr.port().to_string();
        let answers: Vec<(u16, Option<String>)> = ["/old", "/away", "/see", "/tmp", "/perm"]
            .iter()
            .map(|t| {
                let r = get(addr, t);
                // The proxy's own port, for comparing.
                let location = r.header("location").map(|l| l.replace(&port, "PORT"));
                (r.status, location)
            })
            .collect();
        let text = get(addr, "/t");
        let empty = get(addr, "/empty");
        seen.push((
            answers,
            text.status,
            text.text(),
            empty.status,
            empty.body.len(),
        ));
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(
        seen[0].0[0],
        (301, Some("http://test:PORT/new".to_owned())),
        "a path is made absolute, as nginx's absolute_redirect does"
    );
    assert_eq!(seen[0].0[1].1.as_deref(), Some("http://example.test/x"));
    assert_eq!((seen[0].1, seen[0].2.as_str()), (200, "text"));
}

#[test]
fn every_answer_has_a_date_and_an_upstream_date_is_kept() {
    let (bw, bn) = (TestBackend::start(), TestBackend::start());
    // A backend with its own (old) Date.
    let dated = |_| {
        FakeBackend::start(|stream, _| {
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut w = stream;
            while read_head(&mut r).is_some() {
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
                );
            }
        })
    };
    let (dw, dn) = (dated(0), dated(1));
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    b:\n      servers: [\"{}\"]\n    d:\n      servers: [\"{}\"]\n  locations:\n    - match: /b\n      proxy_pass: b\n    - match: /d\n      proxy_pass: d\n",
        bw.addr, dw.addr
    );
    let nginx_http = format!(
        "upstream b {{ server {}; }} upstream d {{ server {}; }}",
        bn.addr, dn.addr
    );
    let nginx_server = "location /b { proxy_pass http://b; } location /d { proxy_pass http://d; }";
    let pair = SideBySide::start(&walnut, &nginx_http, nginx_server);
    for (who, addr) in pair.both() {
        for t in ["/b/undated", "/nowhere"] {
            let r = get(addr, t);
            let date = r
                .header("date")
                .unwrap_or_else(|| panic!("{who} {t}: no Date"));
            assert!(
                date.ends_with(" GMT") && date.len() == 29,
                "{who} {t}: {date}"
            );
        }
    }
    // The stated difference: walnut keeps an upstream's Date, nginx writes its own.
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    assert_eq!(get(pair.walnut.addr, "/d").header("date"), Some(old));
    assert_ne!(get(pair.nginx.addr(), "/d").header("date"), Some(old));
}

#[test]
fn trace_http_1_2_http_2_and_absolute_targets_are_answered_as_in_nginx() {
    let (bw, bn) = (TestBackend::start(), TestBackend::start());
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    b:\n      servers: [\"{}\"]\n  locations:\n    - match: /\n      proxy_pass: b\n",
        bw.addr
    );
    let nginx_http = format!("upstream b {{ server {}; }}", bn.addr);
    let nginx_server = "location / { proxy_pass http://b; proxy_set_header Host $host; }";
    let pair = SideBySide::start(&walnut, &nginx_http, nginx_server);
    let mut seen = Vec::new();
    for (_, addr) in pair.both() {
        let mut c = HttpClient::connect(addr);
        c.send(b"TRACE /t HTTP/1.1\r\nHost: test\r\n\r\n");
        let trace = c.read_response(false).status;
        let closed_after_trace = c.closed_within(std::time::Duration::from_secs(5));
        let mut c = HttpClient::connect(addr);
        c.send(b"GET /v12 HTTP/1.2\r\nHost: test\r\n\r\n");
        let v12 = c.read_response(false);
        let v12_next = c.get("/v12-next").status;
        let v2 = one(addr, "GET /v2 HTTP/2.0\r\nHost: test\r\n\r\n").status;
        let abs = one(
            addr,
            "GET http://abs.test:9/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        )
        .status;
        seen.push((trace, closed_after_trace, v12.status, v12_next, v2, abs));
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], (405, true, 200, 200, 505, 200));
    let (w, n) = (targets(&lines(&bw)), targets(&lines(&bn)));
    assert_eq!(w, n);
    assert_eq!(w, ["GET /v12", "GET /v12-next", "GET /p?q=1"]);
    // walnut passes the target's authority as Host (nginx's $host drops the port).
    let abs = bw.seen().last().unwrap().head.to_ascii_lowercase();
    assert!(abs.contains("\r\nhost: abs.test:9\r\n"), "{abs}");
}

#[test]
fn an_upstream_answer_with_150_header_lines_is_relayed_as_in_nginx() {
    let many = || {
        FakeBackend::start(|stream, _| {
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut w = stream;
            while read_head(&mut r).is_some() {
                let lines: String = (0..150).map(|i| format!("X-H-{i}: v{i}\r\n")).collect();
                let reply = format!("HTTP/1.1 200 OK\r\n{lines}Content-Length: 2\r\n\r\nok");
                let _ = w.write_all(reply.as_bytes());
            }
        })
    };
    let (mw, mn) = (many(), many());
    let walnut = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    m:\n      servers: [\"{}\"]\n  locations:\n    - match: /\n      proxy_pass: m\n",
        mw.addr
    );
    let nginx_http = format!("upstream m {{ server {}; }}", mn.addr);
    let pair = SideBySide::start(&walnut, &nginx_http, "location / { proxy_pass http://m; }");
    for (who, addr) in pair.both() {
        let r = get(addr, "/many");
        let count = r
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with("X-H-"))
            .count();
        assert_eq!(
            (r.status, count, r.text().as_str()),
            (200, 150, "ok"),
            "{who}"
        );
    }
}
