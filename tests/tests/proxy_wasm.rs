//! Unmodified proxy-wasm HTTP filters (built in `tests/plugins/pw-*` with the proxy-wasm Rust
//! SDK from crates.io, as an Envoy user builds them) on walnut's HTTP locations: the real
//! walnut binary, curl, and an upstream that records what it received. A filter adds request
//! and response headers, denies by path with a local response, reads its JSON configuration,
//! logs; an unsupported host call fails its request by `on_error` and is named in the log;
//! what a filter writes wrong, or a filter past its time budget or memory cap, fails only its
//! request.

use std::path::PathBuf;

use walnut_tests::{
    Proxy, TestBackend, curl, http_site, location_plugin, plugin_dir, walnut_check,
};

const FILTERS: [&str; 7] = [
    "pw-headers",
    "pw-deny",
    "pw-config",
    "pw-log",
    "pw-unsupported",
    "pw-misbehave",
    "http-rewrite",
];

/// The `.wasm` of test plugin crate `name` (built once per run).
fn wasm(name: &str) -> PathBuf {
    plugin_dir(&FILTERS).join(format!("{}.wasm", name.replace('-', "_")))
}

/// A location's `plugins:` list holding `name` with these extra keys.
fn filter(name: &str, extra: &str) -> String {
    location_plugin(&wasm(name), extra)
}

fn url(walnut: &Proxy, path: &str) -> String {
    format!("http://{}{path}", walnut.addr)
}

/// The lowercased heads the upstream received.
fn heads(backend: &TestBackend) -> Vec<String> {
    backend
        .seen()
        .into_iter()
        .map(|s| s.head.to_ascii_lowercase())
        .collect()
}

#[test]
fn a_filter_adds_request_and_response_headers_next_to_a_walnut_plugin() {
    let backend = TestBackend::start();
    // A walnut plugin on the pool (http-rewrite sends /old/... as /new/... and sets X-Walnut),
    // the proxy-wasm filter on the location: both run on one request, in chain order.
    let pool_plugins = format!(
        "  plugins:\n    - path: {}\n      config: {{ tag: walnut-sdk }}\n",
        wasm("http-rewrite").display()
    );
    let config = http_site(
        backend.addr,
        &pool_plugins,
        &[("/", filter("pw-headers", ""))],
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    let got = curl(
        &url(&walnut, "/old/hello?b=1"),
        &["-H", "User-Agent: tester/1", "-H", "X-Drop-Me: please"],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, "path=/new/hello?b=1 body=0\n");
    assert_eq!(got.header("x-pw-response"), Some("added-by-proxy-wasm"));
    // The filter saw the path as the walnut plugin left it.
    assert_eq!(
        got.header("x-pw-seen"),
        Some("200 /new/hello?b=1"),
        "{got:?}"
    );
    let seen = heads(&backend);
    assert_eq!(seen.len(), 1);
    let head = &seen[0];
    assert!(
        head.starts_with("get /new/hello?b=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("x-walnut: walnut-sdk\r\n"), "{head}");
    assert!(
        head.contains("x-pw-request: added-by-proxy-wasm\r\n"),
        "{head}"
    );
    assert!(head.contains("x-pw-agent: tester/1\r\n"), "{head}");
    assert!(!head.contains("x-drop-me"), "the filter removed it: {head}");
    // Everything else as the client sent it.
    assert!(head.contains("user-agent: tester/1\r\n"), "{head}");
    // Again on the same worker: contexts come and go per request.
    for i in 0..20 {
        let got = curl(&url(&walnut, &format!("/n{i}")), &[]);
        assert_eq!(got.header("x-pw-seen"), Some(format!("200 /n{i}").as_str()));
    }
    assert_eq!(backend.seen().len(), 21);
}

#[test]
fn a_filter_denies_by_path_with_a_local_response_and_body() {
    let backend = TestBackend::start();
    let config = http_site(backend.addr, "", &[("/", filter("pw-deny", ""))]);
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    let denied = curl(&url(&walnut, "/admin/users"), &[]);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.body, "denied by proxy-wasm\n");
    assert_eq!(denied.header("x-denied-by"), Some("pw-deny"));
    assert_eq!(denied.header("content-type"), Some("text/plain"));
    assert_eq!(denied.header("content-length"), Some("21"));
    assert!(
        backend.seen().is_empty(),
        "a denied request never reaches the upstream"
    );
    let allowed = curl(&url(&walnut, "/public/page"), &[]);
    assert_eq!(
        (allowed.status, allowed.body.as_str()),
        (200, "path=/public/page body=0\n")
    );
    let seen = heads(&backend);
    assert_eq!(seen.len(), 1);
    assert!(seen[0].starts_with("get /public/page "), "{}", seen[0]);
}

#[test]
fn a_filter_reads_its_json_configuration() {
    let backend = TestBackend::start();
    let config = http_site(
        backend.addr,
        "",
        &[
            (
                "/a",
                filter("pw-config", "config: { header: x-tenant, value: acme }"),
            ),
            (
                "/b",
                filter(
                    "pw-config",
                    "config: { header: x-team, value: globex, deny_method: DELETE }",
                ),
            ),
        ],
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    assert_eq!(curl(&url(&walnut, "/a/1"), &[]).status, 200);
    assert_eq!(curl(&url(&walnut, "/b/1"), &[]).status, 200);
    let refused = curl(&url(&walnut, "/b/1"), &["-X", "DELETE"]);
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (405, "DELETE is not allowed here\n")
    );
    assert_eq!(curl(&url(&walnut, "/a/1"), &["-X", "DELETE"]).status, 200);
    let seen = heads(&backend);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].contains("x-tenant: acme\r\n") && !seen[0].contains("x-team"));
    assert!(seen[1].contains("x-team: globex\r\n") && !seen[1].contains("x-tenant"));
    assert!(seen[2].starts_with("delete /a/1 ") && seen[2].contains("x-tenant: acme\r\n"));
    // A configuration the filter refuses (proxy_on_configure answers false) stops start-up,
    // with the filter's own words and the config's place.
    let dir = walnut_tests::temp_dir("pw-config");
    let bad = dir.join("bad.yml");
    let bad_config = http_site(
        backend.addr,
        "",
        &[("/", filter("pw-config", "config: { nothing: here }"))],
    )
    .replace("{listen}", "127.0.0.1:1");
    std::fs::write(&bad, bad_config).expect("write config");
    let (ok, said) = walnut_check(&bad);
    assert!(!ok, "{said}");
    assert!(
        said.contains("proxy_on_configure refused its configuration {\"nothing\":\"here\"}"),
        "{said}"
    );
    assert!(
        said.contains("pool \"web\": location \"/\": plugin"),
        "{said}"
    );
    assert!(
        said.contains("(the filter logged: pw-config: bad configuration: missing field"),
        "{said}"
    );
}

#[test]
fn a_filters_log_lines_reach_walnuts_log_named_and_on_one_line() {
    let backend = TestBackend::start();
    let both = format!("{}{}", filter("pw-log", ""), filter("pw-deny", ""));
    let config = http_site(
        backend.addr,
        "",
        &[("/admin", both), ("/", filter("pw-log", ""))],
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    let got = curl(
        &url(&walnut, "/hello/there?x=1"),
        &["-H", "X-Log-This: boo"],
    );
    assert_eq!(got.status, 200);
    // on_log runs once the request is over: wait for its line.
    let done = "pw-log: done #2 /hello/there status 200";
    assert!(
        walnut_tests::eventually(std::time::Duration::from_secs(5), || walnut
            .log()
            .contains(done)),
        "{}",
        walnut.log()
    );
    let log = walnut.log();
    let request = log
        .lines()
        .find(|l| l.contains("pw-log: request #2 "))
        .unwrap_or_else(|| panic!("the request's line in {log}"));
    assert!(
        request.contains("GET /hello/there?x=1 from 127.0.0.1 by pw_log.wasm (7 headers, end_of_stream=true, time="),
        "{request}"
    );
    assert!(
        request.contains("INFO") && request.contains("pw_log.wasm") && request.contains("web"),
        "{request}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let time: u64 = request
        .split("time=")
        .nth(1)
        .and_then(|t| t.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{request}"));
    assert!(
        now.abs_diff(time) < 60,
        "the filter's clock {time} is now {now}"
    );
    // The filter's newline does not start a line of walnut's log.
    let warned = log
        .lines()
        .find(|l| l.contains("pw-log: asked to log boo"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        warned.contains("WARN") && warned.contains("FORGED LINE"),
        "{warned}"
    );
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "{log}");
    // The next request has a context of its own.
    curl(&url(&walnut, "/second"), &[]);
    assert!(walnut_tests::eventually(
        std::time::Duration::from_secs(5),
        || walnut.log().contains("pw-log: done #3 /second status 200")
    ));
    // A request answered locally by the filter after it (pw-deny): on_log still runs, and
    // sees the status the client got (the /admin location has its own pw-log instance).
    assert_eq!(curl(&url(&walnut, "/admin/x"), &[]).status, 403);
    assert!(
        walnut_tests::eventually(std::time::Duration::from_secs(5), || walnut
            .log()
            .contains("pw-log: done #2 /admin/x status 403")),
        "{}",
        walnut.log()
    );
}

#[test]
fn an_unsupported_host_call_fails_its_request_by_policy_and_is_named() {
    let backend = TestBackend::start();
    let config = http_site(
        backend.addr,
        "",
        &[
            (
                "/callout-closed",
                filter("pw-unsupported", "on_error: fail_closed"),
            ),
            (
                "/callout-open",
                filter("pw-unsupported", "on_error: fail_open"),
            ),
            ("/", filter("pw-unsupported", "")),
        ],
    );
    // The filter loads: an import walnut does not provide traps only when called.
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    assert_eq!(curl(&url(&walnut, "/other"), &[]).status, 200);
    let closed = curl(&url(&walnut, "/callout-closed"), &[]);
    assert_eq!(closed.status, 500, "{closed:?}");
    let open = curl(&url(&walnut, "/callout-open"), &[]);
    assert_eq!(
        (open.status, open.body.as_str()),
        (200, "path=/callout-open body=0\n")
    );
    let seen = heads(&backend);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|h| !h.starts_with("get /callout-closed")));
    let log = walnut.log();
    let named = log
        .lines()
        .filter(|l| l.contains("env::proxy_http_call"))
        .count();
    // Each call: the trap's own line, and the fault's line with the policy.
    assert!(named >= 4, "{log}");
    assert!(
        log.contains("called `env::proxy_http_call`, which walnut does not provide"),
        "{log}"
    );
    assert!(
        log.contains("FailClosed") && log.contains("FailOpen"),
        "{log}"
    );
    // The instance is replaced after its fault: the next request is served.
    assert_eq!(curl(&url(&walnut, "/other"), &[]).status, 200);
}

#[test]
fn what_a_filter_writes_wrong_or_a_runaway_filter_fails_only_its_request() {
    let backend = TestBackend::start();
    let limits = "time_budget_ms: 50\nmemory_max_mb: 16";
    let config = http_site(
        backend.addr,
        "",
        &[
            (
                "/closed",
                filter("pw-misbehave", &format!("on_error: fail_closed\n{limits}")),
            ),
            (
                "/open",
                filter("pw-misbehave", &format!("on_error: fail_open\n{limits}")),
            ),
        ],
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    let clean = |s: &str| {
        let l = s.to_ascii_lowercase();
        !l.contains("evil") && !l.contains("x-injected") && !l.contains("x bad")
    };
    for word in [
        "crlf",
        "badname",
        "badstatus",
        "localcrlf",
        "method",
        "pause",
        "loop",
        "memory",
        "panic",
    ] {
        let started = std::time::Instant::now();
        let got = curl(&url(&walnut, &format!("/closed/{word}")), &[]);
        assert_eq!(got.status, 500, "{word}: {got:?}");
        assert!(clean(&format!("{got:?}")), "{word}: {got:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{word} took {:?}",
            started.elapsed()
        );
        // The instance is replaced: the next request is served as if nothing happened.
        let fine = curl(&url(&walnut, "/closed/fine"), &[]);
        assert_eq!(
            (fine.status, fine.body.as_str()),
            (200, "path=/closed/fine body=0\n"),
            "after {word}"
        );
    }
    // A bad response header is the response hook's fault: 502, the upstream's answer dropped.
    let got = curl(&url(&walnut, "/closed/respcrlf"), &[]);
    assert_eq!(got.status, 502, "{got:?}");
    assert!(clean(&format!("{got:?}")) && got.header("set-cookie").is_none());
    // fail_open: the faulty change is dropped, the request goes on untouched.
    for word in ["crlf", "badname", "loop", "respcrlf"] {
        let got = curl(&url(&walnut, &format!("/open/{word}")), &[]);
        assert_eq!(got.status, 200, "{word}: {got:?}");
        assert!(clean(&format!("{got:?}")) && got.header("set-cookie").is_none());
    }
    for head in heads(&backend) {
        assert!(
            clean(&head),
            "nothing injected reached the upstream: {head}"
        );
        assert!(
            head.starts_with("get /closed/fine ")
                || head.starts_with("get /open/")
                || head.starts_with("get /closed/respcrlf "),
            "{head}"
        );
    }
    let log = walnut.log();
    for reason in [
        "wrote a control byte (0x0d) in the value of header \"x-injected\"",
        "wrote header name \"x bad:name\"",
        "answered with status 99",
        "wrote a control byte (0x0d) in the value of header \"x-a\"",
        "changed :method",
        "paused the request headers phase",
        "ran past its time budget",
        "tried to grow its memory past its cap",
        "pw-misbehave was told to panic",
        "wrote a control byte (0x0d) in the value of header \"x-resp\"",
    ] {
        assert!(log.contains(reason), "the log says {reason:?}:\n{log}");
    }
}

#[test]
fn a_proxy_wasm_filter_on_a_memcached_pool_is_refused_at_load() {
    let dir = walnut_tests::temp_dir("pw-mc");
    let path = dir.join("mc.yml");
    std::fs::write(
        &path,
        format!(
            "mc:\n  listen: 127.0.0.1:1\n  servers:\n    - 127.0.0.1:11211:1\n  plugins:\n    - path: {}\n",
            wasm("pw-headers").display()
        ),
    )
    .expect("write config");
    let (ok, said) = walnut_check(&path);
    assert!(!ok, "{said}");
    assert!(
        said.contains(
            "plugin pw_headers.wasm is a proxy-wasm HTTP filter; it runs on HTTP pools only"
        ),
        "{said}"
    );
}
