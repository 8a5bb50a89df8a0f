//! The HTTP access log: one line per request in nginx's `combined` format with the upstream's
//! address and time, read field by field against what each client sent and got; a client's
//! bytes escaped so they never start a line; and the file reopened after SIGUSR1, by hand and by
//! the real logrotate.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use walnut_tests::{HttpClient, Proxy, TestBackend, eventually, free_port, require};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One line, split into its fields.
#[derive(Debug)]
struct Line {
    remote: String,
    user: String,
    time: String,
    request: String,
    status: u16,
    bytes: u64,
    referer: String,
    user_agent: String,
    upstream: String,
    upstream_time: String,
}

/// Splits a line as a log reader would: quoted fields end at the next `"` (a client's own
/// quotes are escaped, so there is none inside).
fn parse(line: &str) -> Line {
    let (remote, rest) = line.split_once(" - ").expect("remote");
    let (user, rest) = rest.split_once(" [").expect("user");
    let (time, rest) = rest.split_once("] \"").expect("time");
    let (request, rest) = rest.split_once("\" ").expect("request");
    let (status, rest) = rest.split_once(' ').expect("status");
    let (bytes, rest) = rest.split_once(" \"").expect("bytes");
    let (referer, rest) = rest.split_once("\" \"").expect("referer");
    let (user_agent, rest) = rest.split_once("\" \"").expect("user agent");
    let (upstream, upstream_time) = rest.split_once("\" ").expect("upstream");
    Line {
        remote: remote.into(),
        user: user.into(),
        time: time.into(),
        request: request.into(),
        status: status.parse().expect("status"),
        bytes: bytes.parse().expect("bytes"),
        referer: referer.into(),
        user_agent: user_agent.into(),
        upstream: upstream.into(),
        upstream_time: upstream_time.into(),
    }
}

fn lines(path: &Path) -> Vec<Line> {
    read(path).lines().map(parse).collect()
}

/// A pool logging to `access.log` beside its config: `/` proxied to a dead server and the
/// backend (the dead one is tried first, once), `= /health` answered by walnut.
fn logged_pool(backend: &TestBackend) -> Proxy {
    let dead = free_port();
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  access_log: access.log\n  upstreams:\n    b:\n      servers: [\"127.0.0.1:{dead} max_fails=1 fail_timeout=60s\", \"{}\"]\n  locations:\n    - match: = /health\n      return: 204\n    - match: /\n      proxy_pass: b\n",
        backend.addr
    );
    Proxy::walnut_with(&config, &["-w", "1"])
}

#[test]
fn each_request_has_one_line_saying_what_it_got() {
    let backend = TestBackend::start();
    let walnut = logged_pool(&backend);
    let log = walnut.dir.join("access.log");
    let mut c = HttpClient::connect(walnut.addr);
    let first = c.get("/first");
    c.send(
        b"GET /a?b=1 HTTP/1.1\r\nHost: t\r\nReferer: http://r/x\r\nUser-Agent: curl/8.0\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n",
    );
    let second = c.read_response(false);
    c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let post = c.read_response(false);
    c.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.read_response(true);
    let health = c.get("/health");
    // A client's quotes, backslashes and bytes past ASCII are escaped, never a line of their own.
    c.send(b"GET /q HTTP/1.1\r\nHost: t\r\nUser-Agent: a\"b\\c\xff \" 1.2.3.4 - -\r\n\r\n");
    let quoted = c.read_response(false);
    // A head walnut refuses is logged with what the client sent.
    let mut bad = HttpClient::connect(walnut.addr);
    bad.send(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n");
    let refused = bad.read_response(false);
    assert_eq!(refused.status, 400);
    let done = eventually(Duration::from_secs(5), || read(&log).lines().count() == 7);
    assert!(done, "{}", read(&log));
    let l = lines(&log);
    let responses = [&first, &second, &post, &head, &health, &quoted, &refused];
    let requests = [
        "GET /first HTTP/1.1",
        "GET /a?b=1 HTTP/1.1",
        "POST /p HTTP/1.1",
        "HEAD /h HTTP/1.1",
        "GET /health HTTP/1.1",
        "GET /q HTTP/1.1",
        "GET /x HTTP/1.1",
    ];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("now")
        .as_secs();
    let today = {
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{now}"), "+%d/%b/%Y:"])
            .output()
            .expect("date");
        String::from_utf8(out.stdout)
            .expect("text")
            .trim()
            .to_owned()
    };
    for ((line, r), request) in l.iter().zip(responses).zip(requests) {
        assert_eq!(line.remote, "127.0.0.1", "{line:?}");
        assert_eq!(line.request, request);
        assert_eq!(line.status, r.status, "{line:?}");
        assert_eq!(line.bytes, r.body.len() as u64, "{line:?}");
        assert!(
            line.time.starts_with(&today) && line.time.ends_with(" +0000"),
            "{line:?}"
        );
    }
    // The dead server was tried first, then the backend; later requests go to the backend.
    let backend_addr = backend.addr.to_string();
    let (addrs, times) = (&l[0].upstream, &l[0].upstream_time);
    assert_eq!(
        addrs.split(", ").nth(1),
        Some(backend_addr.as_str()),
        "{addrs}"
    );
    assert_eq!(times.split(", ").count(), 2, "{times}");
    for t in times.split(", ") {
        let secs: f64 = t.parse().expect("seconds");
        assert!((0.0..10.0).contains(&secs) && t.len() == 5, "{t}");
    }
    for line in &l[1..4] {
        assert_eq!(line.upstream, backend_addr, "{line:?}");
    }
    // Answered by walnut itself: no upstream.
    for line in [&l[4], &l[6]] {
        assert_eq!(
            (line.upstream.as_str(), line.upstream_time.as_str()),
            ("-", "-")
        );
    }
    assert_eq!(
        (
            l[1].user.as_str(),
            l[1].referer.as_str(),
            l[1].user_agent.as_str()
        ),
        ("alice", "http://r/x", "curl/8.0")
    );
    assert_eq!((l[0].user.as_str(), l[0].referer.as_str()), ("-", "-"));
    assert_eq!(l[3].bytes, 0, "HEAD has no body");
    assert_eq!(l[5].user_agent, "a\\x22b\\x5Cc\\xFF \\x22 1.2.3.4 - -");
}

#[test]
fn sigusr1_reopens_the_access_log_after_a_rename_and_logrotate_works() {
    let backend = TestBackend::start();
    let walnut = logged_pool(&backend);
    let log = walnut.dir.join("access.log");
    let mut c = HttpClient::connect(walnut.addr);
    for i in 0..3 {
        c.get(&format!("/before/{i}"));
    }
    assert!(eventually(Duration::from_secs(5), || read(&log)
        .lines()
        .count()
        == 3));
    let old = walnut.dir.join("access.log.0");
    std::fs::rename(&log, &old).expect("rename");
    walnut.signal("-USR1");
    // A reopen is seen at the next write: every line from now on lands in the new file.
    assert!(eventually(Duration::from_secs(10), || read(
        &walnut.dir.join("proxy.log")
    )
    .contains("log files reopened")));
    for i in 0..3 {
        c.get(&format!("/after/{i}"));
    }
    assert!(eventually(Duration::from_secs(5), || read(&log)
        .lines()
        .count()
        == 3));
    assert!(read(&old).lines().all(|l| l.contains("/before/")));
    assert!(read(&log).lines().all(|l| l.contains("/after/")));

    // The real logrotate: rename, create, then a postrotate SIGUSR1.
    let logrotate = require("logrotate", "logrotate");
    let conf = walnut.dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 3\n  create\n  postrotate\n    kill -USR1 {}\n  endscript\n}}\n",
            log.display(),
            walnut.pid()
        ),
    )
    .expect("logrotate config");
    let out = Command::new(logrotate)
        .arg("-f")
        .arg("-s")
        .arg(walnut.dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("run logrotate");
    assert!(out.status.success(), "logrotate: {out:?}");
    // Walnut has seen the signal once it logged its second reopen.
    assert!(eventually(Duration::from_secs(10), || read(
        &walnut.dir.join("proxy.log")
    )
    .matches("log files reopened")
    .count()
        == 2));
    for i in 0..2 {
        c.get(&format!("/rotated/{i}"));
    }
    assert!(eventually(Duration::from_secs(5), || read(&log)
        .lines()
        .count()
        == 2));
    assert!(
        read(&log).lines().all(|l| l.contains("/rotated/")),
        "{}",
        read(&log)
    );
    let rotated = walnut.dir.join("access.log.1");
    assert!(read(&rotated).lines().all(|l| l.contains("/after/")));
    assert_eq!(read(&rotated).lines().count(), 3);
}
