//! Failover: dead and hung memcached servers are ejected and come back, as twemproxy does but
//! without its flapping. Real memcached processes, short timeouts so each test takes seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use walnut::hash::HashKind;
use walnut::ring::{Distribution, Ring, RingServer};
use walnut_tests::{Client, Memcached, Proxy, eventually};

/// A ketama/fnv1a_64 pool over `servers`, named `mc1`, `mc2`, ... so placement is known.
fn pool(servers: &[&Memcached], options: &str) -> String {
    let mut yaml = format!(
        "alpha:\n  listen: {{listen}}\n  hash: fnv1a_64\n  distribution: ketama\n{options}  servers:\n"
    );
    for (i, m) in servers.iter().enumerate() {
        yaml.push_str(&format!("   - {}:1 mc{}\n", m.address(), i + 1));
    }
    yaml
}

/// Which server (index) a ring of the `live` servers puts `key` on.
fn owner(n: usize, live: &[bool], key: &[u8]) -> usize {
    let names: Vec<String> = (1..=n).map(|i| format!("mc{i}")).collect();
    let servers: Vec<RingServer> = names
        .iter()
        .map(|n| RingServer {
            name: n.as_bytes(),
            weight: 1,
        })
        .collect();
    Ring::build(Distribution::Ketama, &servers, live)
        .locate(HashKind::Fnv1a64, None, key)
        .expect("a live server")
}

/// Keys that the full ring puts on server `index`.
fn keys_on(n: usize, index: usize, count: usize) -> Vec<String> {
    let live = vec![true; n];
    (0..)
        .map(|i| format!("key:{i}"))
        .filter(|k| owner(n, &live, k.as_bytes()) == index)
        .take(count)
        .collect()
}

/// `set` that returns the reply instead of asserting it.
fn try_set(c: &mut Client, key: &str, value: &str) -> String {
    c.call(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes())
}

/// Load from `threads` clients, each on its own keys: sets and gets of known values. Returns
/// (errors, wrong values, requests) when `stop` turns true.
fn load(
    proxy: &Proxy,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, usize, usize)>> {
    (0..threads)
        .map(|t| {
            let mut c = proxy.client();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut last: Vec<Option<String>> = vec![None; 200];
                let (mut errors, mut wrong, mut requests) = (0, 0, 0);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let k = i % last.len();
                    let key = format!("load:{t}:{k}");
                    requests += 1;
                    if i % 3 == 0 {
                        let value = format!("v{i}");
                        match try_set(&mut c, &key, &value).as_str() {
                            "STORED\r\n" => last[k] = Some(value),
                            _ => errors += 1,
                        }
                    } else {
                        c.send(format!("get {key}\r\n").as_bytes());
                        let reply = String::from_utf8_lossy(&c.read_replies(1)).into_owned();
                        if reply.starts_with("SERVER_ERROR") {
                            errors += 1;
                        } else if let Some(rest) = reply.strip_prefix("VALUE ") {
                            let value = rest.split("\r\n").nth(1).unwrap_or_default();
                            if last[k].as_deref() != Some(value) {
                                wrong += 1;
                            }
                        }
                    }
                    i += 1;
                }
                (errors, wrong, requests)
            })
        })
        .collect()
}

fn finish(handles: Vec<std::thread::JoinHandle<(usize, usize, usize)>>) -> (usize, usize, usize) {
    handles
        .into_iter()
        .map(|h| h.join().expect("load thread"))
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

const FAST: &str = "  timeout: 300\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 500\n";

#[test]
fn killing_a_server_under_load_fails_only_requests_in_flight() {
    let m1 = Memcached::start();
    let mut m2 = Memcached::start();
    let m3 = Memcached::start();
    let walnut = Proxy::walnut(&pool(&[&m1, &m2, &m3], FAST));
    let threads = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(&walnut, threads, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(400));
    m2.kill();
    // Several retry intervals pass with the server dead: probes fail, clients must not notice.
    std::thread::sleep(Duration::from_millis(1800));
    stop.store(true, Ordering::Relaxed);
    let (errors, wrong, requests) = finish(handles);
    assert!(requests > 100, "the load ran ({requests} requests)");
    assert!(
        errors <= threads,
        "only the {threads} requests in flight at the kill may fail, {errors} did"
    );
    assert_eq!(wrong, 0, "every value read is the value last set");
    // Every key now lives where a ring of the live servers puts it.
    let mut c = walnut.client();
    let live = [true, false, true];
    for i in 0..60 {
        let key = format!("after:{i}");
        c.set(key.as_bytes(), b"x");
        let expected = owner(3, &live, key.as_bytes());
        let server = if expected == 0 { &m1 } else { &m3 };
        assert!(
            server.client().get(key.as_bytes()).is_some(),
            "{key} on mc{}",
            expected + 1
        );
    }
    assert!(
        walnut.log().contains("server ejected"),
        "the ejection is logged: {}",
        walnut.log()
    );
    let stats = walnut.stats_json();
    assert!(stats.contains("\"server_ejects\":1"), "{stats}");
}

#[test]
fn a_restarted_server_rejoins_only_after_a_probe() {
    let m1 = Memcached::start();
    let mut m2 = Memcached::start();
    let m3 = Memcached::start();
    let walnut = Proxy::walnut(&pool(&[&m1, &m2, &m3], FAST));
    let mut c = walnut.client();
    let m2_keys = keys_on(3, 1, 20);
    m2.kill();
    // The failure that ejects it: at most one request per worker connection fails.
    let mut failures = 0;
    for key in &m2_keys {
        if try_set(&mut c, key, "during") != "STORED\r\n" {
            failures += 1;
        }
    }
    assert!(failures <= 2, "{failures} sets failed after the kill");
    // While it stays dead, retries come and go (500 ms): no client request fails for them.
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(&walnut, 2, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(1600));
    stop.store(true, Ordering::Relaxed);
    let (errors, wrong, _) = finish(handles);
    assert_eq!(
        (errors, wrong),
        (0, 0),
        "no request pays for a rejoin attempt while the server is dead"
    );
    // Restart it: once the probe succeeds its keys go back to it.
    let restarted = Instant::now();
    m2.restart();
    let back = eventually(Duration::from_secs(5), || {
        try_set(&mut c, &m2_keys[0], "back") == "STORED\r\n"
            && m2.client().get(m2_keys[0].as_bytes()).is_some()
    });
    assert!(back, "{} went back to mc2 after the restart", m2_keys[0]);
    assert!(restarted.elapsed() >= Duration::from_millis(100));
    for key in &m2_keys {
        c.set(key.as_bytes(), b"again");
        assert_eq!(
            m2.client().get(key.as_bytes()).as_deref(),
            Some(&b"again"[..]),
            "{key} is on mc2 again"
        );
    }
    assert!(walnut.log().contains("rejoined"), "the rejoin is logged");
}

#[test]
fn a_hung_server_times_out_is_ejected_and_rejoins() {
    let m1 = Memcached::start();
    let m2 = Memcached::start();
    let m3 = Memcached::start();
    let walnut = Proxy::walnut_with(&pool(&[&m1, &m2, &m3], FAST), &["-w", "1"]);
    let mut c = walnut.client();
    let key = &keys_on(3, 1, 1)[0];
    c.set(key.as_bytes(), b"before");
    m2.pause();
    let started = Instant::now();
    assert_eq!(
        c.call(format!("get {key}\r\n").as_bytes()),
        "SERVER_ERROR Connection timed out\r\n"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the pool timeout (300 ms) was waited for"
    );
    // Ejected: its keys are served by the others now.
    assert_eq!(try_set(&mut c, key, "moved"), "STORED\r\n");
    let live = [true, false, true];
    let new_owner = if owner(3, &live, key.as_bytes()) == 0 {
        &m1
    } else {
        &m3
    };
    assert_eq!(
        new_owner.client().get(key.as_bytes()).as_deref(),
        Some(&b"moved"[..])
    );
    m2.resume();
    let back = eventually(Duration::from_secs(5), || {
        c.call(format!("get {key}\r\n").as_bytes())
            == format!("VALUE {key} 0 6\r\nbefore\r\nEND\r\n")
    });
    assert!(
        back,
        "after SIGCONT the server rejoins and serves its keys again"
    );
    let stats = walnut.stats_json();
    assert!(stats.contains("\"server_timedout\":1"), "{stats}");
}

#[test]
fn with_every_server_down_requests_fail_at_once_and_service_resumes() {
    let mut m1 = Memcached::start();
    let mut m2 = Memcached::start();
    let walnut = Proxy::walnut_with(&pool(&[&m1, &m2], FAST), &["-w", "1"]);
    let mut c = walnut.client();
    c.set(b"a", b"1");
    m1.kill();
    m2.kill();
    // Each server fails once and is ejected; after that every request is refused at once.
    for i in 0..4 {
        let reply = c.call(format!("get k{i}\r\n").as_bytes());
        assert!(reply.starts_with("SERVER_ERROR"), "{reply}");
    }
    let started = Instant::now();
    assert_eq!(c.call(b"get k\r\n"), "SERVER_ERROR no server available\r\n");
    assert_eq!(
        try_set(&mut c, "k", "v"),
        "SERVER_ERROR no server available\r\n"
    );
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "answered without waiting for a timeout"
    );
    m1.restart();
    m2.restart();
    assert!(
        eventually(Duration::from_secs(5), || try_set(&mut c, "k", "v")
            == "STORED\r\n"),
        "service resumes without restarting walnut"
    );
    assert_eq!(c.get(b"k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn without_auto_eject_a_dead_server_errors_and_recovers_when_back() {
    let m1 = Memcached::start();
    let mut m2 = Memcached::start();
    let options = "  timeout: 300\n  auto_eject_hosts: false\n  server_failure_limit: 1\n  server_retry_timeout: 500\n";
    let walnut = Proxy::walnut_with(&pool(&[&m1, &m2], options), &["-w", "1"]);
    let mut c = walnut.client();
    let on2 = keys_on(2, 1, 3);
    let on1 = keys_on(2, 0, 3);
    m2.kill();
    for round in 0..3 {
        for key in &on2 {
            let reply = try_set(&mut c, key, "v");
            assert!(
                reply.starts_with("SERVER_ERROR "),
                "round {round}: {key}: {reply}"
            );
        }
        for key in &on1 {
            assert_eq!(
                try_set(&mut c, key, "v"),
                "STORED\r\n",
                "keys of the live server still work"
            );
        }
    }
    m2.restart();
    // Never ejected, so the first request after it returns reaches it.
    assert_eq!(try_set(&mut c, &on2[0], "back"), "STORED\r\n");
    assert_eq!(
        m2.client().get(on2[0].as_bytes()).as_deref(),
        Some(&b"back"[..])
    );
}

#[test]
fn the_classic_experiment_with_a_dead_server() {
    // Named as nutcracker names 127.0.0.1:11211 and 127.0.0.1:11212, so keys land as in the
    // classic twemproxy walkthrough.
    let m1 = Memcached::start();
    let mut m2 = Memcached::start();
    let config = format!(
        "alpha:\n  listen: {{listen}}\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 400\n  auto_eject_hosts: true\n  server_retry_timeout: 500\n  server_failure_limit: 3\n  servers:\n   - {}:1 127.0.0.1\n   - {}:1 127.0.0.1:11212\n",
        m1.address(),
        m2.address()
    );
    let walnut = Proxy::walnut_with(&config, &["-w", "1"]);
    let mut c = walnut.client();
    let failures = AtomicUsize::new(0);
    m2.kill();
    let stored = eventually(Duration::from_secs(5), || {
        let ok = try_set(&mut c, "key9", "nine") == "STORED\r\n";
        if !ok {
            failures.fetch_add(1, Ordering::Relaxed);
        }
        ok
    });
    assert!(stored, "set key9 succeeds once memcached2 is ejected");
    assert!(
        failures.load(Ordering::Relaxed) <= 3,
        "at most server_failure_limit requests failed"
    );
    assert_eq!(
        m1.client().get(b"key9").as_deref(),
        Some(&b"nine"[..]),
        "key9 landed on memcached1"
    );
    m2.restart();
    for key in ["key10", "key11"] {
        let on2 = eventually(Duration::from_secs(5), || {
            try_set(&mut c, key, "v") == "STORED\r\n" && m2.client().get(key.as_bytes()).is_some()
        });
        assert!(on2, "{key} lands on memcached2 once it is back");
    }
}

#[test]
fn requests_that_never_reached_an_ejected_server_go_to_the_new_owners() {
    let m1 = Memcached::start();
    let mut m2 = Memcached::start();
    let m3 = Memcached::start();
    // No preconnect: the first requests for mc2 wait on a connect that is refused.
    let walnut = Proxy::walnut_with(&pool(&[&m1, &m2, &m3], FAST), &["-w", "1"]);
    m2.kill();
    let keys: Vec<String> = (0..3).flat_map(|s| keys_on(3, s, 3)).collect();
    // Stored where a ring without mc2 puts each key, straight on those servers.
    let live = [true, false, true];
    for key in &keys {
        let home = if owner(3, &live, key.as_bytes()) == 0 {
            &m1
        } else {
            &m3
        };
        home.client().set(key.as_bytes(), key.as_bytes());
    }
    let mut c = walnut.client();
    // One write: a multi-get spanning all three servers, then single gets of mc2's keys. The
    // connect to mc2 fails, mc2 is ejected, and the queued requests (one of them a fragment of
    // the multi-get, split again over mc1 and mc3) are sent to the new owners.
    let mut request = format!("get {}\r\n", keys.join(" "));
    for key in &keys[3..6] {
        request.push_str(&format!("get {key}\r\n"));
    }
    c.send(request.as_bytes());
    let mut expected = String::new();
    for key in &keys {
        expected.push_str(&format!("VALUE {key} 0 {}\r\n{key}\r\n", key.len()));
    }
    expected.push_str("END\r\n");
    for key in &keys[3..6] {
        expected.push_str(&format!("VALUE {key} 0 {}\r\n{key}\r\nEND\r\n", key.len()));
    }
    let got = String::from_utf8_lossy(&c.read_replies(4)).into_owned();
    assert_eq!(got, expected);
    assert!(walnut.log().contains("server ejected"));
}
