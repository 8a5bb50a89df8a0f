//! Running walnut: `-t` config checks, `-V`, `-D`, Redis pools refused, the stats port's JSON,
//! and SIGTERM/SIGINT finishing in-flight requests before a clean exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use walnut_tests::{
    Memcached, Proxy, eventually, mc_keys_on, mc_pool, require, temp_dir, walnut_bin,
};

fn walnut(args: &[&str]) -> Output {
    Command::new(walnut_bin())
        .args(args)
        .output()
        .expect("run walnut")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write config");
    path
}

#[test]
fn test_conf_accepts_a_good_file_and_every_shipped_config() {
    let dir = temp_dir("conf-good");
    let good = write_config(
        &dir,
        "good.yml",
        "alpha:\n  listen: 127.0.0.1:22121\n  hash: fnv1a_64\n  distribution: ketama\n  servers:\n   - 127.0.0.1:11211:1\n   - 127.0.0.1:11212:1 two\n",
    );
    let mut files = vec![good];
    // conf/plugins.yml loads the example plugins from the workspace's target folder.
    walnut_tests::plugin_dir(&["command-guard", "key-rewrite", "hash-select"]);
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let mut shipped: Vec<PathBuf> = std::fs::read_dir(&conf)
        .expect("conf/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    shipped.sort();
    assert!(!shipped.is_empty(), "conf/*.yml exist");
    files.extend(shipped);
    for file in files {
        let path = file.to_str().expect("utf-8 path");
        for flag in ["-t", "--test-conf"] {
            let out = walnut(&[flag, "-c", path]);
            assert!(
                out.status.success(),
                "{path}: exit {:?}: {}{}",
                out.status.code(),
                text(&out.stdout),
                text(&out.stderr)
            );
            assert!(
                text(&out.stdout).contains("syntax is ok"),
                "{path}: {}",
                text(&out.stdout)
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn test_conf_refuses_a_bad_file_with_file_line_and_pool() {
    let dir = temp_dir("conf-bad");
    let cases = [
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  hash: fnv2\n  servers:\n   - 127.0.0.1:11211:1\n",
            3,
            "fnv2",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  distribution: nope\n  servers:\n   - 127.0.0.1:11211:1\n",
            3,
            "nope",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  timeout: soon\n  servers:\n   - 127.0.0.1:11211:1\n",
            3,
            "soon",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n   - 127.0.0.1:x:1\n",
            5,
            "127.0.0.1:x:1",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  bogus_key: 1\n  servers:\n   - 127.0.0.1:11211:1\n",
            3,
            "bogus_key",
        ),
    ];
    for (i, (yaml, line, mention)) in cases.iter().enumerate() {
        let file = write_config(&dir, &format!("bad{i}.yml"), yaml);
        let path = file.to_str().expect("utf-8");
        let out = walnut(&["-t", "-c", path]);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {all}");
        let prefix = format!("{path}:{line}: pool \"alpha\": ");
        let line_text = all
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in {all:?}"));
        assert!(
            line_text.contains(mention),
            "{line_text:?} names {mention:?}"
        );
        assert!(!all.contains("syntax is ok"), "{all}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn redis_pools_are_refused() {
    let dir = temp_dir("redis");
    let port = walnut_tests::free_port();
    let file = write_config(
        &dir,
        "redis.yml",
        &format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n"
        ),
    );
    let path = file.to_str().expect("utf-8");
    let stats = walnut_tests::free_port().to_string();
    for args in [
        vec!["-t", "-c", path],
        vec!["-c", path, "-s", &stats, "-a", "127.0.0.1"],
    ] {
        let out = walnut(&args);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
        assert!(
            all.contains(&format!("{path}:3: pool \"alpha\": ")),
            "{args:?}: {all}"
        );
        assert!(
            all.contains("Redis") && all.contains("not supported"),
            "says Redis is not supported: {all}"
        );
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn version_and_describe_stats_flags() {
    for flag in ["-V", "--version"] {
        let out = walnut(&[flag]);
        assert!(out.status.success(), "{flag}");
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with("This is walnut-") && stdout.contains(env!("CARGO_PKG_VERSION")),
            "{flag}: {stdout:?}"
        );
    }
    let out = walnut(&["-D"]);
    assert!(out.status.success());
    let ours = text(&out.stdout);
    // Every field nutcracker describes, walnut describes too.
    let nutcracker = require("nutcracker", "nutcracker");
    let theirs = Command::new(nutcracker)
        .arg("-D")
        .output()
        .expect("nutcracker -D");
    let theirs = text(&theirs.stdout) + &text(&theirs.stderr);
    let fields: Vec<&str> = theirs
        .lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(fields.len() >= 19, "nutcracker lists its fields: {theirs}");
    for field in fields {
        let line = ours
            .lines()
            .find(|l| l.split_whitespace().next() == Some(field))
            .unwrap_or_else(|| panic!("walnut -D lacks {field}: {ours}"));
        let theirs_line = theirs
            .lines()
            .find(|l| l.split_whitespace().next() == Some(field))
            .expect("their line");
        assert_eq!(
            line.trim(),
            theirs_line.trim(),
            "{field} is described as nutcracker does"
        );
    }
}

/// The `"name":` keys of a JSON document, in order (enough for nutcracker's flat stats).
fn json_keys(json: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = json;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let end = after.find('"').expect("closing quote");
        let name = &after[..end];
        let tail = after[end + 1..].trim_start();
        if tail.starts_with(':') {
            keys.push(name.to_string());
        }
        rest = &after[end + 1..];
    }
    keys
}

/// The number after `"field":` inside the object named `object` (the first such object).
fn counter(json: &str, object: &str, field: &str) -> u64 {
    let at = json
        .find(&format!("\"{object}\": {{"))
        .or_else(|| json.find(&format!("\"{object}\":{{")))
        .unwrap_or_else(|| panic!("no object {object} in {json}"));
    let inner = &json[at..];
    let f = inner
        .find(&format!("\"{field}\":"))
        .unwrap_or_else(|| panic!("no {field} in {object}: {json}"));
    inner[f + field.len() + 3..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{object}.{field} is a number: {json}"))
}

#[test]
fn the_stats_port_serves_nutcrackers_json_and_the_counters_move() {
    let m1 = Memcached::start();
    let m2 = Memcached::start();
    let config = mc_pool(&[m1.address(), m2.address()], "  timeout: 400\n");
    let walnut = Proxy::walnut(&config);
    let nutcracker = Proxy::nutcracker(&config);
    let ours = walnut.stats_json();
    let theirs = nutcracker.stats_json();
    assert!(ours.trim_start().starts_with('{') && ours.trim_end().ends_with('}'));
    assert!(ours.contains("\"service\":\"nutcracker\""), "{ours}");
    // Every field of nutcracker's document, in the same order and the same objects (walnut may
    // add its own, such as walnut_version).
    let our_keys = json_keys(&ours);
    let mut at = 0;
    for key in json_keys(&theirs) {
        match our_keys[at..].iter().position(|k| *k == key) {
            Some(i) => at += i + 1,
            None => panic!(
                "nutcracker's {key:?} missing or out of place\nours:   {ours}\ntheirs: {theirs}"
            ),
        }
    }
    for name in ["alpha", "mc1", "mc2"] {
        assert!(ours.contains(&format!("\"{name}\":")), "{name} in {ours}");
    }

    // Counters move: requests to mc1's keys, a multi-get over both, a client connection.
    let before = ours;
    let mut c = walnut.client();
    let keys = mc_keys_on(2, 0, 5, "stat:");
    let other = mc_keys_on(2, 1, 1, "stat:")[0].clone();
    for key in &keys {
        c.set(key.as_bytes(), b"x");
    }
    c.call(format!("get {} {other}\r\n", keys[0]).as_bytes());
    let after = walnut.stats_json();
    assert!(
        counter(&after, "mc1", "requests") >= counter(&before, "mc1", "requests") + 6,
        "mc1 requests grew: {after}"
    );
    assert!(
        counter(&after, "mc1", "responses") >= counter(&before, "mc1", "responses") + 6,
        "{after}"
    );
    assert!(
        counter(&after, "mc1", "request_bytes") > counter(&before, "mc1", "request_bytes"),
        "{after}"
    );
    assert!(counter(&after, "mc2", "requests") > counter(&before, "mc2", "requests"));
    assert!(counter(&after, "alpha", "fragments") >= counter(&before, "alpha", "fragments") + 2);
    assert_eq!(counter(&after, "alpha", "client_connections"), 1, "{after}");
    assert!(counter(&after, "mc1", "server_connections") >= 1, "{after}");
    drop(c);
    assert!(walnut.client().call(b"version\r\n").starts_with("VERSION "));
    let later = walnut.stats_json();
    assert!(counter(&later, "alpha", "client_eof") >= 1, "{later}");
    assert!(
        later.contains("\"total_connections\":") && counter_top(&later, "total_connections") >= 2,
        "{later}"
    );
}

/// A top-level counter of the stats document.
fn counter_top(json: &str, field: &str) -> u64 {
    let f = json.find(&format!("\"{field}\":")).expect("field");
    json[f + field.len() + 3..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("number")
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let m1 = Memcached::start();
    let m2 = Memcached::start();
    // No timeout: a request to a paused server waits until it answers.
    let mut walnut = Proxy::walnut(&mc_pool(&[m1.address(), m2.address()], ""));
    let mut c = walnut.client();
    let k1 = mc_keys_on(2, 0, 1, "term:")[0].clone();
    let k2 = mc_keys_on(2, 1, 1, "term:")[0].clone();
    c.set(k1.as_bytes(), b"one");
    c.set(k2.as_bytes(), b"two");
    m2.pause();
    // In flight: a pipeline whose middle request waits on the paused server.
    c.send(
        format!("get {k1}\r\nget {k2}\r\nset {k1} 0 0 5\r\nafter\r\nget {k1} {k2}\r\n").as_bytes(),
    );
    // The first reply proves walnut has read the pipeline; the second waits on mc2.
    assert_eq!(
        text(&c.read_replies(1)),
        format!("VALUE {k1} 0 3\r\none\r\nEND\r\n")
    );
    walnut.signal("-TERM");
    // Still running: it waits for the answers it owes.
    if let Some(status) = walnut.wait_exit(Duration::from_millis(300)) {
        let got = c.read_len(1 << 20);
        panic!(
            "walnut exited ({status:?}) with a request in flight; the client got {:?}; log:\n{}",
            text(&got),
            walnut.log()
        );
    }
    m2.resume();
    let status = walnut
        .wait_exit(Duration::from_secs(15))
        .expect("walnut exits once the requests are answered");
    assert!(status.success(), "exit status 0: {status:?}");
    let expected = format!(
        "VALUE {k2} 0 3\r\ntwo\r\nEND\r\nSTORED\r\nVALUE {k1} 0 5\r\nafter\r\nVALUE {k2} 0 3\r\ntwo\r\nEND\r\n"
    );
    let got = c.read_len(expected.len());
    assert_eq!(
        text(&got),
        expected,
        "every request read before SIGTERM was answered"
    );
    assert!(c.is_closed(), "then the connection closes");
    assert_eq!(
        m1.client().get(k1.as_bytes()).as_deref(),
        Some(&b"after"[..])
    );
    assert!(walnut.log().contains("signal received"), "{}", walnut.log());
}

#[test]
fn sigterm_or_sigint_with_idle_clients_exits_zero_at_once_and_removes_the_pid_file() {
    let m1 = Memcached::start();
    for sig in ["-TERM", "-INT"] {
        let dir = temp_dir("pidfile");
        let pid_file = dir.join("walnut.pid");
        let pid_arg = pid_file.to_str().expect("utf-8").to_string();
        let mut walnut =
            Proxy::walnut_with(&mc_pool(&[m1.address()], ""), &["-w", "2", "-p", &pid_arg]);
        // walnut listens before it writes the pid file (the pid is known only after `-d`).
        assert!(
            eventually(Duration::from_secs(5), || {
                std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
            }),
            "the pid file is written"
        );
        assert_eq!(
            std::fs::read_to_string(&pid_file)
                .expect("the pid file is written")
                .trim(),
            walnut.pid().to_string()
        );
        let mut idle = walnut.client();
        idle.set(b"k", b"v");
        walnut.signal(sig);
        let status = walnut
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("exits promptly on {sig}"));
        assert!(status.success(), "{sig}: {status:?}");
        assert!(idle.is_closed(), "idle clients are closed");
        assert!(!pid_file.exists(), "the pid file is removed on exit");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn sigterm_right_after_start_is_still_a_clean_exit() {
    // As soon as walnut accepts connections, SIGTERM must mean "finish and exit 0", never the
    // signal's default action. bash sends it the moment the port answers.
    let bash = require("bash", "bash");
    let m1 = Memcached::start();
    let dir = temp_dir("early-term");
    let mut codes = Vec::new();
    for attempt in 0..10 {
        let port = walnut_tests::free_port();
        let config = write_config(
            &dir,
            &format!("early{attempt}.yml"),
            &mc_pool(&[m1.address()], "").replace("{listen}", &format!("127.0.0.1:{port}")),
        );
        let script = format!(
            "'{bin}' -c '{conf}' -s {stats} -a 127.0.0.1 -w 2 -o '{log}' & p=$!\n\
             until (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; do [ $SECONDS -gt 10 ] && break; done\n\
             kill -TERM $p\n\
             n=0; while kill -0 $p 2>/dev/null && [ $n -lt 1000 ]; do sleep 0.01; n=$((n+1)); done\n\
             if kill -0 $p 2>/dev/null; then kill -9 $p; wait $p; echo hung; else wait $p; echo $?; fi",
            bin = walnut_bin().display(),
            conf = config.display(),
            stats = walnut_tests::free_port(),
            log = dir.join(format!("early{attempt}.log")).display(),
        );
        let out = Command::new(&bash)
            .args(["-c", &script])
            .output()
            .expect("run bash");
        codes.push(text(&out.stdout).trim().to_string());
    }
    assert!(
        codes.iter().all(|c| c == "0"),
        "exit statuses of walnut after an early SIGTERM (143: killed by the signal): {codes:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
