//! Route explanation end to end: `/route` on a running walnut and `walnut route` on the same
//! config agree with each other and with where keys are actually stored (read from each
//! memcached directly), with plugins (rewrite, hash, pin), hash tags and an ejected server; for
//! HTTP, with where a hashed request is actually served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use walnut_tests::{
    HttpClient, Memcached, Nginx, Proxy, admin_get, eventually, free_port, mc_pool, plugin_dir,
    walnut_bin,
};

fn wasm(name: &str) -> PathBuf {
    plugin_dir(&["command-guard", "key-rewrite", "hash-select"]).join(format!("{name}.wasm"))
}

/// `/route?QUERY` as JSON.
fn route(admin: u16, query: &str) -> Value {
    let (status, body) = admin_get(admin, &format!("/route?{query}"));
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// `walnut route --json -c CONF ARGS...` as JSON.
fn cli(conf: &Path, args: &[&str]) -> Value {
    let out = Command::new(walnut_bin())
        .args(["route", "--json", "-c"])
        .arg(conf)
        .args(args)
        .output()
        .expect("run walnut route");
    assert!(out.status.success(), "walnut route {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The explanation without what only a running walnut knows (health, `live`).
fn placement(v: &Value) -> Value {
    let mut v = v.clone();
    v["live"] = Value::Null;
    if let Some(server) = v.get_mut("server").and_then(Value::as_object_mut) {
        server.remove("health");
    }
    if let Some(list) = v.get_mut("candidates").and_then(Value::as_array_mut) {
        for c in list {
            c.as_object_mut().map(|o| o.remove("health"));
        }
    }
    v
}

#[test]
fn route_and_walnut_route_agree_with_where_keys_are_stored() {
    let mut ms = [Memcached::start(), Memcached::start(), Memcached::start()];
    let addrs: Vec<String> = ms.iter().map(Memcached::address).collect();
    let plugins = format!(
        "  plugins:\n   - path: {}\n     config: {{ until: \"|\", pin: {{ \"hot:\": mc2 }} }}\n  routes:\n   - prefix: \"tenant1:\"\n     plugins:\n      - path: {}\n        config: {{ replace: \"tenant1:\", with: \"t1/\" }}\n",
        wasm("hash_select").display(),
        wasm("key_rewrite").display()
    );
    let options = "  hash_tag: \"{}\"\n  timeout: 1000\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 600000\n";
    let beta = mc_pool(&addrs, "  hash_tag: \"{}\"\n")
        .replace("alpha:", "beta:")
        .replace("{listen}", &format!("127.0.0.1:{}", free_port()));
    let config = mc_pool(&addrs, options) + &plugins + &beta;
    let (walnut, admin) = Proxy::walnut_admin(&config, &["-w", "2"]);
    let beta_port: u16 = beta
        .lines()
        .find_map(|l| l.trim().strip_prefix("listen: 127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .expect("beta's port");

    let mut keys: Vec<String> = Vec::new();
    keys.extend((0..8).map(|i| format!("k{i}")));
    keys.extend((0..6).map(|i| format!("user|{i}|name")));
    keys.extend((0..4).map(|i| format!("hot:{i}")));
    keys.extend((0..6).map(|i| format!("tenant1:x{i}")));
    keys.extend((0..6).map(|i| format!("a{{tag{}}}b{i}", i % 2)));
    let mut c = walnut.client();
    let mut seen = std::collections::BTreeSet::new();
    let check =
        |c: &mut walnut_tests::Client, pool: &str, key: &str, ms: &[Memcached], cli_too: bool| {
            let live = route(admin, &format!("pool={pool}&key={}", enc(key)));
            if cli_too {
                let offline = cli(&walnut.config, &[pool, key]);
                assert_eq!(placement(&live), placement(&offline), "{key}");
                assert_eq!(offline["live"], false);
            }
            let server = live["server"]["index"].as_u64().expect("a server") as usize;
            let sent = live["sent_key"].as_str().expect("sent key").to_owned();
            c.set(key.as_bytes(), pool.as_bytes());
            for (i, m) in ms.iter().enumerate() {
                if i == server {
                    assert_eq!(
                        m.client().get(sent.as_bytes()).as_deref(),
                        Some(pool.as_bytes()),
                        "{key} (sent as {sent}) on mc{} as explained:\n{live:#}",
                        i + 1
                    );
                } else {
                    assert_ne!(
                        m.client().get(sent.as_bytes()).as_deref(),
                        Some(pool.as_bytes()),
                        "{key} (sent as {sent}) not on mc{}",
                        i + 1
                    );
                }
            }
            live
        };
    // `walnut route` loads the config and compiles the plugins anew each time: it is asked
    // about two keys of each kind, /route about every key.
    for (i, key) in keys.iter().enumerate() {
        let live = check(&mut c, "alpha", key, &ms, i % 3 == 0);
        seen.insert(
            live["server"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let by = live["chosen_by"].as_str().unwrap_or_default();
        if key.starts_with("hot:") {
            assert_eq!(
                (by, live["server"]["name"].as_str()),
                ("plugin: named server", Some("mc2"))
            );
        } else if key.starts_with("user|") {
            assert_eq!(live["ring"]["hashed"], "user", "{live:#}");
        } else if key.starts_with("tenant1:") {
            assert!(
                live["sent_key"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("t1/")
            );
            assert_eq!(live["route"], "tenant1:");
        } else if key.contains('{') {
            assert!(
                live["ring"]["hashed"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("tag")
            );
        }
    }
    assert_eq!(seen.len(), 3, "the keys cover every server: {seen:?}");
    // The pool without plugins, on the same servers: its own placement, also explained right.
    let mut b = walnut_tests::Client::connect(SocketAddr::from(([127, 0, 0, 1], beta_port)));
    for (i, key) in keys.iter().filter(|k| !k.starts_with("hot:")).enumerate() {
        let live = check(&mut b, "beta", key, &ms, i % 3 == 0);
        assert_eq!(live["plugins"], Value::Array(Vec::new()));
        assert_eq!(live["sent_key"].as_str(), Some(key.as_str()));
    }

    // mc2 is ejected: hot: keys fall back to the ring, and /route says so.
    ms[1].kill();
    for _ in 0..20 {
        let _ = c.call(b"set hot:0 0 0 1\r\nx\r\n");
        if admin_get(admin, "/status.json")
            .1
            .contains("\"state\":\"ejected\"")
        {
            break;
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || admin_get(admin, "/status.json")
            .1
            .contains("\"state\":\"ejected\"")),
        "mc2 is ejected"
    );
    let (alive_a, alive_c) = (&ms[0], &ms[2]);
    for key in keys
        .iter()
        .filter(|k| k.starts_with("hot:") || k.starts_with('k'))
    {
        let live = route(admin, &format!("pool=alpha&key={}", enc(key)));
        let server = live["server"]["index"].as_u64().expect("a live server") as usize;
        assert_ne!(server, 1, "{live:#}");
        if key.starts_with("hot:") {
            assert_eq!(live["named_server"]["ejected"], true, "{live:#}");
            assert_eq!(live["chosen_by"], "ring");
        }
        c.set(key.as_bytes(), b"after");
        let home = if server == 0 { alive_a } else { alive_c };
        assert_eq!(
            home.client().get(key.as_bytes()).as_deref(),
            Some(&b"after"[..]),
            "{key}"
        );
    }
}

/// An nginx backend whose `/count_key1` names it.
fn named_nginx(name: &str) -> Nginx {
    let n = Nginx::start("");
    n.put_file("count_key1", format!("{name}\n").as_bytes());
    n
}

#[test]
fn http_routes_agree_with_where_requests_are_served() {
    let (a, b) = (named_nginx("A"), named_nginx("B"));
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    hashed:\n      hash: $arg_id\n      servers:\n        - 127.0.0.1:{a}\n        - 127.0.0.1:{b}\n    rr:\n      servers:\n        - 127.0.0.1:{a} weight=2\n        - 127.0.0.1:{b}\n  locations:\n    - match: \"^~ /count\"\n      proxy_pass: hashed\n      plugins:\n        - path: {}\n          config: {{ methods: [POST] }}\n    - match: /\n      proxy_pass: rr\n    - match: \"= /gone\"\n      return: \"410 gone\"\n",
        wasm("command_guard").display(),
        a = a.port,
        b = b.port
    );
    let (walnut, admin) = Proxy::walnut_admin(&config, &["-w", "2"]);
    let mut h = HttpClient::connect(walnut.addr);
    let name_of = |port: u16| if port == a.port { "A" } else { "B" };
    let mut served = std::collections::BTreeSet::new();
    for id in 0..12 {
        let path = format!("/count_key1?id={id}");
        let live = route(admin, &format!("pool=web&path={}", enc(&path)));
        if id % 4 == 0 {
            let offline = cli(&walnut.config, &["web", &path]);
            assert_eq!(placement(&live), placement(&offline));
        }
        assert_eq!(live["location"]["match"], "^~ /count");
        assert_eq!(live["balancing"], "consistent hash");
        assert_eq!(live["hash"]["key"], id.to_string());
        let address = live["server"]["address"]
            .as_str()
            .expect("a server")
            .to_owned();
        let expect = name_of(
            address
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port"),
        );
        let got = h.get(&path).text();
        assert_eq!(got.trim(), expect, "{path} explained as {address}");
        served.insert(expect);
    }
    assert_eq!(served.len(), 2, "the ids cover both servers");
    // The plugin's refusal, a location's return, no location, and round robin.
    let post = route(admin, "pool=web&path=/count_key1&method=POST");
    assert_eq!(post["answer"]["status"], 403);
    assert_eq!(post["plugins"][0]["decision"], "responded");
    assert_eq!(route(admin, "pool=web&path=/gone")["answer"]["status"], 410);
    let rr = route(admin, "pool=web&path=/x");
    assert_eq!(rr["balancing"], "weighted round robin");
    assert_eq!(rr["candidates"].as_array().map(Vec::len), Some(2));
    let text = Command::new(walnut_bin())
        .args(["route", "-c"])
        .arg(&walnut.config)
        .args(["web", "/count_key1?id=3"])
        .output()
        .expect("walnut route");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("balancing: consistent hash") && text.contains("key: 3"),
        "{text}"
    );
}
