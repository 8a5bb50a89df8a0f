//! WebAssembly plugins end to end: the example plugins' effects seen from a client and at the
//! memcached backends, broken plugins contained, and plugins that cannot load refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use walnut_tests::{Memcached, Proxy, mc_owner, mc_pool, plugin_dir, walnut_bin};

fn wasm(name: &str) -> PathBuf {
    plugin_dir(&["command-guard", "key-rewrite", "hash-select", "misbehave"])
        .join(format!("{name}.wasm"))
}

fn start3() -> [Memcached; 3] {
    [Memcached::start(), Memcached::start(), Memcached::start()]
}

fn addresses(ms: &[Memcached]) -> Vec<String> {
    ms.iter().map(Memcached::address).collect()
}

/// A `plugins:` entry.
fn entry(indent: &str, name: &str, config: &str, extra: &str) -> String {
    format!(
        "{indent}- path: {}\n{indent}  config: {config}\n{extra}",
        wasm(name).display()
    )
}

/// The memcached `stats` counter `name` of a backend.
fn stat(m: &Memcached, name: &str) -> u64 {
    let mut c = m.client();
    c.send(b"stats\r\n");
    let text = String::from_utf8(c.read_replies(1)).expect("stats text");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("STAT {name} "))
                .map(|v| v.trim().parse().expect("a number"))
        })
        .unwrap_or_else(|| panic!("no stat {name}"))
}

#[test]
fn key_rewrite_stores_the_new_name_and_answers_with_the_clients() {
    let ms = start3();
    let routes = format!(
        "  routes:\n   - prefix: \"tenant1:\"\n     plugins:\n{}",
        entry(
            "      ",
            "key_rewrite",
            "{ replace: \"tenant1:\", with: \"t1/\" }",
            ""
        )
    );
    let walnut = Proxy::walnut(&(mc_pool(&addresses(&ms), "") + &routes));
    let mut c = walnut.client();
    c.set(b"tenant1:a", b"alpha");
    c.set(b"plain", b"p");
    // At the backend the key is stored under its rewritten name, on the server that name hashes to.
    let home = &ms[mc_owner(3, b"t1/a")];
    assert_eq!(home.client().get(b"t1/a").as_deref(), Some(&b"alpha"[..]));
    assert!(
        ms.iter().all(|m| m.client().get(b"tenant1:a").is_none()),
        "the client's name is not stored"
    );
    // The client gets it back under its own name, also in a multi-key get in key order.
    assert_eq!(
        c.call(b"get tenant1:a\r\n"),
        "VALUE tenant1:a 0 5\r\nalpha\r\nEND\r\n"
    );
    assert_eq!(
        c.call(b"get plain tenant1:a nothing tenant1:a\r\n"),
        "VALUE plain 0 1\r\np\r\nVALUE tenant1:a 0 5\r\nalpha\r\nVALUE tenant1:a 0 5\r\nalpha\r\nEND\r\n"
    );
    // gets/cas round trip through the rewrite.
    let reply = c.call(b"gets tenant1:a\r\n");
    let cas: u64 = reply
        .split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .expect("a cas unique");
    assert_eq!(
        c.call(format!("cas tenant1:a 0 0 1 {cas}\r\nb\r\n").as_bytes()),
        "STORED\r\n"
    );
    assert_eq!(home.client().get(b"t1/a").as_deref(), Some(&b"b"[..]));
    // Meta commands echo the client's key too: mg's `k` flag, and me's key.
    assert_eq!(c.call(b"mg tenant1:a k v\r\n"), "VA 1 ktenant1:a\r\nb\r\n");
    c.send(b"mg tenant1:a k q\r\nmn\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.read_replies(2)),
        "HD ktenant1:a\r\nMN\r\n"
    );
    let me = c.call(b"me tenant1:a\r\n");
    assert!(
        me.starts_with("ME tenant1:a "),
        "me shows the client's key: {me:?}"
    );
    assert_eq!(c.call(b"delete tenant1:a\r\n"), "DELETED\r\n");
    assert!(home.client().get(b"t1/a").is_none());
}

#[test]
fn command_guard_refusals_never_reach_memcached() {
    let ms = start3();
    let plugins = format!(
        "  plugins:\n{}",
        entry("   ", "command_guard", "{ deny: [delete, flush_all] }", "")
    );
    let walnut = Proxy::walnut(&(mc_pool(&addresses(&ms), "") + &plugins));
    let mut c = walnut.client();
    c.set(b"k", b"v");
    assert_eq!(
        c.call(b"delete k\r\n"),
        "CLIENT_ERROR delete is disabled by walnut\r\n"
    );
    assert_eq!(
        c.call(b"flush_all\r\n"),
        "CLIENT_ERROR flush_all is disabled by walnut\r\n"
    );
    // noreply: refused silently, and the next request is answered in order.
    c.send(b"delete k noreply\r\nget k\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.read_replies(1)),
        "VALUE k 0 1\r\nv\r\nEND\r\n"
    );
    for m in &ms {
        assert_eq!(
            stat(m, "delete_hits") + stat(m, "delete_misses"),
            0,
            "no delete reached memcached"
        );
        assert_eq!(stat(m, "cmd_flush"), 0, "no flush_all reached memcached");
    }
    assert_eq!(c.get(b"k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn hash_select_pins_keys_and_falls_back_to_the_ring_when_ejected() {
    let [m1, m2, m3] = start3();
    let mut ms = [m1, m2, m3];
    let options = "  timeout: 300\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n";
    let plugins = format!(
        "  plugins:\n{}",
        entry(
            "   ",
            "hash_select",
            "{ until: \"|\", pin: { \"hot:\": mc2 } }",
            ""
        )
    );
    let walnut = Proxy::walnut_with(
        &(mc_pool(&addresses(&ms), options) + &plugins),
        &["-w", "1"],
    );
    let mut c = walnut.client();
    // Pinned: every hot: key on mc2, whatever the ring says.
    for i in 0..20 {
        let key = format!("hot:{i}");
        c.set(key.as_bytes(), b"h");
        assert!(ms[1].client().get(key.as_bytes()).is_some(), "{key} on mc2");
    }
    // By the part before '|': user|... keys all land where "user" hashes.
    let home = mc_owner(3, b"user");
    for i in 0..20 {
        let key = format!("user|{i}|name");
        c.set(key.as_bytes(), b"u");
        assert!(
            ms[home].client().get(key.as_bytes()).is_some(),
            "{key} on mc{}",
            home + 1
        );
    }
    // mc2 dies: once it is ejected, hot: keys go to the ring of the live servers.
    ms[1].kill();
    let moved = (0..50).any(|_| {
        let reply = c.call(b"set hot:x 0 0 1\r\nh\r\n");
        reply == "STORED\r\n"
    });
    assert!(moved, "hot: keys are served again once mc2 is ejected");
    let live = walnut::ring::Ring::build(
        walnut::ring::Distribution::Ketama,
        &["mc1", "mc2", "mc3"].map(|n| walnut::ring::RingServer {
            name: n.as_bytes(),
            weight: 1,
        }),
        &[true, false, true],
    );
    let owner = live
        .locate(walnut::hash::HashKind::Fnv1a64, None, b"hot:x")
        .expect("a live server");
    assert!(
        ms[owner].client().get(b"hot:x").is_some(),
        "hot:x on the ring's choice, mc{}",
        owner + 1
    );
}

/// Whole-process resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn broken_plugins_fail_only_their_own_requests() {
    let ms = start3();
    let routes = format!(
        "  routes:\n   - prefix: \"bad:\"\n     plugins:\n{}   - prefix: \"open:\"\n     plugins:\n{}",
        entry(
            "      ",
            "misbehave",
            "{}",
            "        time_budget_ms: 100\n        memory_max_mb: 8\n"
        ),
        entry(
            "      ",
            "misbehave",
            "{}",
            "        on_error: fail_open\n        time_budget_ms: 20\n"
        ),
    );
    let walnut = Proxy::walnut_with(&(mc_pool(&addresses(&ms), "") + &routes), &["-w", "1"]);
    let mut c = walnut.client();
    let mut other = walnut.client();
    c.set(b"good", b"g");
    let rss_before = rss_kib(walnut.pid());
    let started = Instant::now();
    for round in 0..10 {
        for bad in ["bad:trap", "bad:loop", "bad:grow"] {
            // The broken request and a good one in the same write: only the first fails.
            c.send(format!("get {bad}\r\nget good\r\n").as_bytes());
            let replies = String::from_utf8_lossy(&c.read_replies(2)).into_owned();
            assert_eq!(
                replies, "SERVER_ERROR plugin failed\r\nVALUE good 0 1\r\ng\r\nEND\r\n",
                "round {round}: {bad}"
            );
            // Another connection is served meanwhile.
            assert_eq!(other.get(b"good").as_deref(), Some(&b"g"[..]));
        }
        // fail_open: the request goes on as if the plugin were absent.
        assert_eq!(c.call(b"set open:trap 0 0 1\r\no\r\n"), "STORED\r\n");
        assert_eq!(
            c.call(b"get open:trap\r\n"),
            "VALUE open:trap 0 1\r\no\r\nEND\r\n"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let grown = rss_kib(walnut.pid()).saturating_sub(rss_before);
    assert!(
        grown < 128 * 1024,
        "memory stays bounded: grew {grown} KiB over 10 rounds of an 8 MiB cap"
    );
    let log = walnut.log();
    for reason in [
        "trapped",
        "ran past its time budget",
        "tried to grow its memory past its cap",
    ] {
        assert!(log.contains(reason), "the log names the failure '{reason}'");
    }
    assert!(log.contains("misbehave.wasm"), "the log names the plugin");
    let stats = walnut.stats_json();
    assert!(stats.contains("\"plugin_errors\":"), "{stats}");
    assert!(
        !stats.contains("\"plugin_errors\":0,"),
        "the failures are counted: {stats}"
    );
}

/// `walnut -t` on `config`: (exit code, stderr).
fn test_conf(dir: &Path, config: &str) -> (i32, String) {
    let path = dir.join("walnut.yml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(walnut_bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run walnut -t");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugins_that_cannot_load_stop_start_up_with_a_clear_message() {
    let dir = walnut_tests::temp_dir("plugin-load");
    let pool = "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:11211:1\n";
    let with = |path: &Path, config: &str| {
        format!(
            "{pool}  routes:\n   - prefix: \"t:\"\n     plugins:\n      - path: {}\n        config: {config}\n",
            path.display()
        )
    };
    // Missing file.
    let (code, err) = test_conf(&dir, &with(&dir.join("nope.wasm"), "{}"));
    assert_eq!(code, 1);
    assert!(
        err.contains("pool \"alpha\": route \"t:\": plugin")
            && err.contains("nope.wasm: cannot read it"),
        "{err}"
    );
    // Not WebAssembly at all.
    let text = dir.join("text.wasm");
    std::fs::write(&text, "hello").unwrap();
    let (code, err) = test_conf(&dir, &with(&text, "{}"));
    assert_eq!(code, 1);
    assert!(err.contains("text.wasm: not a WebAssembly module"), "{err}");
    // WebAssembly, but not a walnut plugin (an empty module).
    let empty = dir.join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x01\0\0\0").unwrap();
    let (code, err) = test_conf(&dir, &with(&empty, "{}"));
    assert_eq!(code, 1);
    assert!(err.contains("empty.wasm: not a walnut plugin"), "{err}");
    // A plugin of another ABI version: exports memory and walnut_abi_version() = 99.
    let mut v99 = b"\0asm\x01\0\0\0".to_vec();
    v99.extend_from_slice(&[0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f]); // type: () -> i32
    v99.extend_from_slice(&[0x03, 0x02, 0x01, 0x00]); // one function of that type
    v99.extend_from_slice(&[0x05, 0x03, 0x01, 0x00, 0x01]); // one memory, one page
    v99.extend_from_slice(&[0x07, 0x1f, 0x02, 0x06]);
    v99.extend_from_slice(b"memory");
    v99.extend_from_slice(&[0x02, 0x00, 0x12]);
    v99.extend_from_slice(b"walnut_abi_version");
    v99.extend_from_slice(&[0x00, 0x00]);
    v99.extend_from_slice(&[0x0a, 0x07, 0x01, 0x05, 0x00, 0x41, 0xe3, 0x00, 0x0b]); // i32.const 99
    let old = dir.join("old.wasm");
    std::fs::write(&old, &v99).unwrap();
    let (code, err) = test_conf(&dir, &with(&old, "{}"));
    assert_eq!(code, 1);
    assert!(
        err.contains("old.wasm: plugin ABI version 99 is not supported"),
        "{err}"
    );
    // A config the plugin itself refuses: its own words reach the operator.
    let (code, err) = test_conf(&dir, &with(&wasm("command_guard"), "{ deny: [] }"));
    assert_eq!(code, 1);
    assert!(
        err.contains("command_guard.wasm: nothing to guard"),
        "{err}"
    );
    let (code, err) = test_conf(&dir, &with(&wasm("key_rewrite"), "{ prefix: x }"));
    assert_eq!(code, 1);
    assert!(
        err.contains("key_rewrite.wasm: config: unknown field `prefix`"),
        "{err}"
    );
    // And a good one passes.
    let (code, err) = test_conf(&dir, &with(&wasm("key_rewrite"), "{ add: \"x:\" }"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_example_config_loads_with_its_plugins() {
    plugin_dir(&["command-guard", "key-rewrite", "hash-select"]);
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/plugins.yml");
    let out = Command::new(walnut_bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run walnut -t");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where a ring of the `live` servers mc1..mc3 puts `key`.
fn live_owner(live: [bool; 3], key: &[u8]) -> usize {
    walnut::ring::Ring::build(
        walnut::ring::Distribution::Ketama,
        &["mc1", "mc2", "mc3"].map(|n| walnut::ring::RingServer {
            name: n.as_bytes(),
            weight: 1,
        }),
        &live,
    )
    .locate(walnut::hash::HashKind::Fnv1a64, None, key)
    .expect("a live server")
}

#[test]
fn keys_a_plugin_places_stay_where_it_places_them_through_a_failover_under_load() {
    let mut ms = start3();
    // The two workers' connections to mc2 see it close (two failures); the third failure is a
    // refused connect, which ejects mc2 and hands back the requests queued for it meanwhile,
    // to be placed again. No rejoin while the test runs.
    let options = "  timeout: 1000\n  auto_eject_hosts: true\n  server_failure_limit: 3\n  server_retry_timeout: 60000\n";
    let plugins = format!(
        "  plugins:\n{}",
        entry("   ", "hash_select", "{ until: \"|\" }", "")
    );
    let walnut = Proxy::walnut_with(
        &(mc_pool(&addresses(&ms), options) + &plugins),
        &["-w", "2"],
    );
    // Four clients, each with its own tenants' keys `user<t>|<j>|name`, written and read back
    // in pipelined batches while mc2 dies.
    let threads = 4;
    let tenants: Vec<String> = (0..40).map(|t| format!("user{t}")).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut c = walnut.client();
            let stop = std::sync::Arc::clone(&stop);
            let keys: Vec<String> = tenants
                .iter()
                .skip(t)
                .step_by(threads)
                .flat_map(|tenant| (0..5).map(move |j| format!("{tenant}|{j}|name")))
                .collect();
            std::thread::spawn(move || {
                let mut last: Vec<Option<String>> = vec![None; keys.len()];
                let (mut wrong, mut requests, mut round) = (Vec::new(), 0usize, 0usize);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for (batch, chunk) in keys.chunks(10).enumerate() {
                        let base = batch * 10;
                        let values: Vec<String> = (0..chunk.len())
                            .map(|i| format!("t{t}r{round}k{}", base + i))
                            .collect();
                        let mut wire = Vec::new();
                        for (key, value) in chunk.iter().zip(&values) {
                            wire.extend_from_slice(
                                format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
                            );
                        }
                        c.send(&wire);
                        let replies =
                            String::from_utf8_lossy(&c.read_replies(chunk.len())).into_owned();
                        for (i, reply) in replies.split_inclusive("\r\n").enumerate() {
                            if reply == "STORED\r\n" {
                                last[base + i] = Some(values[i].clone());
                            }
                        }
                        let gets: String = chunk.iter().map(|k| format!("get {k}\r\n")).collect();
                        c.send(gets.as_bytes());
                        let replies = c.read_replies(chunk.len());
                        let mut rest = &replies[..];
                        for (i, key) in chunk.iter().enumerate() {
                            let n = walnut_tests::reply_len(rest).expect("a whole reply");
                            let reply = String::from_utf8_lossy(&rest[..n]).into_owned();
                            rest = &rest[n..];
                            if let Some(block) = reply.strip_prefix("VALUE ") {
                                let value = block.split("\r\n").nth(1).unwrap_or_default();
                                if last[base + i].as_deref() != Some(value) {
                                    wrong.push(format!(
                                        "{key}: read {value}, last stored {:?}",
                                        last[base + i]
                                    ));
                                }
                            }
                        }
                        requests += 2 * chunk.len();
                    }
                    round += 1;
                }
                (keys, last, wrong, requests)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    ms[1].kill();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut requests = 0;
    for h in handles {
        let (keys, last, wrong, n) = h.join().expect("load thread");
        requests += n;
        assert!(
            wrong.is_empty(),
            "every value read is the last one written: {wrong:?}"
        );
        // Each key is on the server its tenant maps to on the live ring, and nowhere else.
        for (key, last) in keys.iter().zip(last) {
            let tenant = key.split('|').next().expect("tenant");
            let home = live_owner([true, false, true], tenant.as_bytes());
            let last = last.unwrap_or_else(|| panic!("{key} was stored after the failover"));
            for live in [0, 2] {
                let held = ms[live].client().get(key.as_bytes());
                if live == home {
                    assert_eq!(
                        held.as_deref(),
                        Some(last.as_bytes()),
                        "{key} on mc{}",
                        home + 1
                    );
                } else {
                    assert_eq!(
                        held,
                        None,
                        "{key} is only on mc{}, not mc{}",
                        home + 1,
                        live + 1
                    );
                }
            }
        }
    }
    assert!(requests > 1000, "the load ran ({requests} requests)");
    assert!(walnut.log().contains("server ejected"), "mc2 was ejected");
}
