//! The admin HTTP listener end to end: `/metrics` scraped before and after a known load (exact
//! deltas, and the text checked by `promtool` and by the harness's own parser), ejections and
//! rejoins counted, and the listener's answers to bad and unknown requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use walnut_tests::{
    HttpClient, Memcached, Metrics, Nginx, Proxy, admin_get, admin_raw, eventually, free_port,
    mc_owner, mc_pool, plugin_dir, promtool_accepts, split_response, walnut_bin,
};

fn wasm(name: &str) -> PathBuf {
    plugin_dir(&["command-guard", "key-rewrite"]).join(format!("{name}.wasm"))
}

/// The change of each listed sample between two scrapes.
fn delta(before: &Metrics, after: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

#[test]
fn metrics_move_by_exactly_the_load() {
    let ms = [Memcached::start(), Memcached::start()];
    let nginx = Nginx::start("");
    nginx.put_file("hello", b"hi\n");
    let web_port = free_port();
    let config = mc_pool(&ms.iter().map(Memcached::address).collect::<Vec<_>>(), "")
        + &format!(
            "  plugins:\n   - path: {}\n     config: {{ deny: [flush_all] }}\n  routes:\n   - prefix: \"tenant1:\"\n     plugins:\n      - path: {}\n        config: {{ replace: \"tenant1:\", with: \"t1/\" }}\n",
            wasm("command_guard").display(),
            wasm("key_rewrite").display()
        )
        + &format!(
            "web:\n  protocol: http\n  listen: 127.0.0.1:{web_port}\n  upstreams:\n    backend:\n      servers:\n        - 127.0.0.1:{}\n  locations:\n    - match: /\n      proxy_pass: backend\n",
            nginx.port
        );
    let (walnut, admin) = Proxy::walnut_admin(&config, &["-w", "2"]);
    // The harness's own probe of the pool (a connect, then a close) is counted before the
    // baseline is taken.
    let quiet = eventually(Duration::from_secs(10), || {
        let m = Metrics::scrape(admin);
        m.get("walnut_connections_total", &[]) >= 1.0
            && m.get("walnut_connections", &[]) == 0.0
            && m.get(
                "walnut_client_errors_total",
                &[("pool", "alpha"), ("kind", "eof")],
            ) >= 1.0
    });
    assert!(quiet, "the harness's probe connection is over");
    let before = Metrics::scrape(admin);

    // The load: 20 keys set and read back, 5 tenant keys set (stored as t1/...), one refused
    // flush_all, on one connection; then 7 HTTP requests on one connection.
    let mut per_server = [0.0f64; 2];
    let mut c = walnut.client();
    for i in 0..20 {
        let key = format!("k{i}");
        c.set(key.as_bytes(), b"v");
        assert_eq!(c.get(key.as_bytes()).as_deref(), Some(&b"v"[..]));
        per_server[mc_owner(2, key.as_bytes())] += 2.0;
    }
    for t in ["a", "b", "c", "d", "e"] {
        c.set(format!("tenant1:{t}").as_bytes(), b"t");
        per_server[mc_owner(2, format!("t1/{t}").as_bytes())] += 1.0;
    }
    assert!(c.call(b"flush_all\r\n").starts_with("CLIENT_ERROR"));
    drop(c);
    let mut h = HttpClient::connect(SocketAddr::from(([127, 0, 0, 1], web_port)));
    for _ in 0..7 {
        assert_eq!(h.get("/hello").status, 200);
    }
    drop(h);
    // The client's EOF is counted once walnut reads it.
    let settled = eventually(Duration::from_secs(10), || {
        let m = Metrics::scrape(admin);
        delta(
            &before,
            &m,
            "walnut_client_errors_total",
            &[("pool", "alpha"), ("kind", "eof")],
        ) == 1.0
            && m.get("walnut_connections", &[]) == 0.0
    });
    assert!(settled, "both clients left");
    let after = Metrics::scrape(admin);

    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let alpha = [("pool", "alpha")];
    assert_eq!(d("walnut_request_duration_seconds_count", &alpha), 46.0);
    assert_eq!(
        d(
            "walnut_request_duration_seconds_bucket",
            &[("pool", "alpha"), ("le", "+Inf")]
        ),
        46.0
    );
    assert!(d("walnut_request_duration_seconds_sum", &alpha) > 0.0);
    for (i, name) in ["mc1", "mc2"].iter().enumerate() {
        let labels = [("pool", "alpha"), ("server", name)];
        assert_eq!(
            d("walnut_server_requests_total", &labels),
            per_server[i],
            "{name}"
        );
        assert_eq!(
            d("walnut_server_responses_total", &labels),
            per_server[i],
            "{name}"
        );
        assert_eq!(after.get("walnut_server_up", &labels), 1.0);
        for kind in ["eof", "error", "timeout"] {
            let l = [("pool", "alpha"), ("server", name), ("kind", kind)];
            assert_eq!(d("walnut_server_errors_total", &l), 0.0);
        }
    }
    let guard = [
        ("pool", "alpha"),
        ("scope", "pool"),
        ("plugin", "command_guard.wasm"),
    ];
    let rewrite = [
        ("pool", "alpha"),
        ("scope", "route tenant1:"),
        ("plugin", "key_rewrite.wasm"),
    ];
    assert_eq!(d("walnut_plugin_calls_total", &guard), 46.0);
    assert_eq!(d("walnut_plugin_rejects_total", &guard), 1.0);
    assert_eq!(d("walnut_plugin_hook_duration_seconds_count", &guard), 46.0);
    assert_eq!(d("walnut_plugin_calls_total", &rewrite), 5.0);
    assert_eq!(d("walnut_plugin_rejects_total", &rewrite), 0.0);
    for kind in ["timeout", "memory", "trap", "protocol"] {
        let [a, b, c] = guard;
        assert_eq!(
            d("walnut_plugin_faults_total", &[a, b, c, ("kind", kind)]),
            0.0
        );
    }
    let web = [("pool", "web")];
    let upstream = [
        ("pool", "web"),
        ("server", &*format!("backend/127.0.0.1:{}", nginx.port)),
    ];
    assert_eq!(d("walnut_request_duration_seconds_count", &web), 7.0);
    assert_eq!(d("walnut_server_requests_total", &upstream), 7.0);
    assert_eq!(d("walnut_server_responses_total", &upstream), 7.0);
    assert_eq!(d("walnut_connections_total", &[]), 2.0);

    // Histogram buckets are cumulative.
    let buckets: Vec<f64> = after
        .samples
        .iter()
        .filter(|(k, _)| {
            k.starts_with("walnut_request_duration_seconds_bucket{") && k.contains("pool=alpha")
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.len() > 10);
    assert!(buckets.iter().all(|&b| b <= 46.0));

    // Prometheus's own checker accepts the text.
    promtool_accepts(&after.text);
}

#[test]
fn ejections_rejoins_and_eofs_are_counted() {
    let mut ms = [Memcached::start(), Memcached::start()];
    let options = "  timeout: 1000\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 200\n";
    let config = mc_pool(
        &ms.iter().map(Memcached::address).collect::<Vec<_>>(),
        options,
    );
    let (walnut, admin) = Proxy::walnut_admin(&config, &["-w", "1"]);
    let mc2 = [("pool", "alpha"), ("server", "mc2")];
    let key = walnut_tests::mc_keys_on(2, 1, 1, "x")[0].clone();
    let mut c = walnut.client();
    c.set(key.as_bytes(), b"v");
    let before = Metrics::scrape(admin);
    assert_eq!(before.get("walnut_server_connections", &mc2), 1.0);
    // mc2 dies: its idle connection reads EOF, counted but not a failure (an idle close is
    // how a restart or an idle timeout looks); the next request to it fails and ejects it
    // (limit 1).
    ms[1].kill();
    let [a, b] = mc2;
    let eof = eventually(Duration::from_secs(10), || {
        delta(
            &before,
            &Metrics::scrape(admin),
            "walnut_server_errors_total",
            &[a, b, ("kind", "eof")],
        ) == 1.0
    });
    assert!(eof, "mc2's EOF is counted");
    assert_eq!(Metrics::scrape(admin).get("walnut_server_up", &mc2), 1.0);
    // The request's connect fails, which ejects mc2; the unsent request is placed again on
    // the ring without it and misses there.
    assert_eq!(c.call(format!("get {key}\r\n").as_bytes()), "END\r\n");
    let ejected = eventually(Duration::from_secs(10), || {
        Metrics::scrape(admin).get("walnut_server_up", &mc2) == 0.0
    });
    assert!(ejected, "mc2 is ejected");
    let down = Metrics::scrape(admin);
    let d = |m: &Metrics, name: &str, labels: &[(&str, &str)]| delta(&before, m, name, labels);
    assert_eq!(d(&down, "walnut_server_ejections_total", &mc2), 1.0);
    assert_eq!(
        d(&down, "walnut_pool_ejections_total", &[("pool", "alpha")]),
        1.0
    );
    assert_eq!(
        d(
            &down,
            "walnut_server_errors_total",
            &[a, b, ("kind", "eof")]
        ),
        1.0
    );
    assert_eq!(d(&down, "walnut_server_rejoins_total", &mc2), 0.0);
    let (_, status) = admin_get(admin, "/status.json");
    assert!(status.contains("\"state\":\"ejected\""), "{status}");
    // Back on its port: the probe lets it rejoin.
    ms[1].restart();
    let rejoined = eventually(Duration::from_secs(20), || {
        Metrics::scrape(admin).get("walnut_server_up", &mc2) == 1.0
    });
    assert!(rejoined, "mc2 rejoins");
    let up = Metrics::scrape(admin);
    assert_eq!(d(&up, "walnut_server_rejoins_total", &mc2), 1.0);
    assert_eq!(d(&up, "walnut_server_ejections_total", &mc2), 1.0);
    c.set(key.as_bytes(), b"w");
    assert_eq!(
        ms[1].client().get(key.as_bytes()).as_deref(),
        Some(&b"w"[..])
    );
}

#[test]
fn bad_requests_get_400_unknown_paths_404_and_the_listener_stays_up() {
    let m = Memcached::start();
    let (walnut, admin) = Proxy::walnut_admin(&mc_pool(&[m.address()], ""), &[]);
    let answer = |raw: &[u8]| split_response(&admin_raw(admin, raw)).0;
    assert_eq!(answer(b"garbage\r\n\r\n"), 400);
    assert_eq!(answer(b"GET /metrics HTTP/9\r\n\r\n"), 400);
    assert_eq!(answer(b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
    assert_eq!(answer(b"GET /nope HTTP/1.1\r\n\r\n"), 404);
    assert_eq!(
        answer(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        405
    );
    assert_eq!(answer(b"GET /route HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(
        answer(b"GET /route?pool=alpha&key=%zz HTTP/1.1\r\n\r\n"),
        400
    );
    assert_eq!(answer(b"GET /route?pool=nope&key=a HTTP/1.1\r\n\r\n"), 404);
    let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        answer(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        431
    );
    assert_eq!(answer(&[b'A'; 40_000]), 431);
    let head = admin_raw(admin, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    let text = String::from_utf8_lossy(&head);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\n"),
        "{text}"
    );
    // Clients that connect and leave, or send half a head and leave.
    for _ in 0..50 {
        drop(std::net::TcpStream::connect(("127.0.0.1", admin)).expect("connect"));
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).expect("connect");
        use std::io::Write;
        let _ = s.write_all(b"GET /met");
    }
    assert_eq!(admin_get(admin, "/metrics").0, 200);
    assert_eq!(
        walnut.client().call(b"version\r\n").split(' ').next(),
        Some("VERSION")
    );
}

#[test]
fn a_post_with_a_body_it_does_not_read_still_gets_its_whole_answer() {
    let m = Memcached::start();
    let (_walnut, admin) = Proxy::walnut_admin(&mc_pool(&[m.address()], ""), &[]);
    use std::io::{Read, Write};
    for _ in 0..3 {
        // More than the sockets' buffers hold: the body is still coming when the answer is sent.
        let body = vec![b'x'; 16 << 20];
        let head = format!(
            "POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).expect("connect");
        let mut w = s.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            w.write_all(head.as_bytes())?;
            w.write_all(&body)
        });
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got);
        // A client that sends its whole request (curl posting a file) is not cut off mid-send:
        // it would report a reset.
        let sent = writer.join().expect("writer");
        assert!(sent.is_ok(), "the body was taken, not reset: {sent:?}");
        assert!(
            read.is_ok(),
            "the answer is read whole, the connection not reset: {read:?}, got {:?}",
            String::from_utf8_lossy(&got)
        );
        let (status, text) = split_response(&got);
        assert!(
            status == 200 && text.starts_with("reloaded"),
            "{status} {text:?}"
        );
    }
}

#[test]
fn a_bad_admin_address_names_what_is_wrong() {
    let m = Memcached::start();
    let dir = walnut_tests::temp_dir("admin-bad");
    let conf = dir.join("w.yml");
    let listen = free_port();
    std::fs::write(
        &conf,
        mc_pool(&[m.address()], "").replace("{listen}", &format!("127.0.0.1:{listen}")),
    )
    .expect("config");
    let run = |admin: &str| {
        Command::new(walnut_bin())
            .arg("-c")
            .arg(&conf)
            .args(["-s", &free_port().to_string(), "--admin", admin])
            .output()
            .expect("run walnut")
    };
    for (admin, says) in [
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:http", "not a port"),
        ("no-such-host.invalid:9", "does not resolve"),
    ] {
        let out = run(admin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says) && err.contains("--admin"),
            "{admin}: {err}"
        );
    }
    // A taken port: refused at start, naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run(&addr);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&addr) && err.contains("admin"), "{err}");
    // -t does not listen: the config is checked, the flag accepted.
    let out = Command::new(walnut_bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .args(["--admin", &addr])
        .output()
        .expect("run walnut -t");
    assert!(out.status.success(), "{out:?}");
    let _ = std::fs::remove_dir_all(dir);
}
