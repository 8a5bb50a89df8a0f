//! The classic twemproxy experiment: two memcached behind walnut with `conf/nutcracker.yml`'s
//! settings, and each key read back directly from the memcached the real nutcracker chose.

use walnut_tests::{Memcached, Proxy};

/// `conf/nutcracker.yml`'s pool over `servers`, named `mc1` and `mc2` so that placement depends
/// only on the names, which both proxies share.
fn classic_config(servers: [&Memcached; 2]) -> String {
    format!(
        "alpha:\n  listen: {{listen}}\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 400\n  backlog: 1024\n  preconnect: true\n  auto_eject_hosts: true\n  server_retry_timeout: 30000\n  server_failure_limit: 3\n  servers:\n   - {}:1 mc1\n   - {}:1 mc2\n",
        servers[0].address(),
        servers[1].address()
    )
}

#[test]
fn each_key_is_on_the_memcached_nutcracker_chose() {
    // key1..key6 are the walkthrough's keys; the others make sure both servers get some.
    let keys: Vec<String> = (1..=6)
        .map(|i| format!("key{i}"))
        .chain(["user:1", "user:2", "10", "11", "a", "session:42"].map(String::from))
        .collect();

    // The real nutcracker on a pair of its own: where does it put each key?
    let n1 = Memcached::start();
    let n2 = Memcached::start();
    let nutcracker = Proxy::nutcracker(&classic_config([&n1, &n2]));
    let mut nc = nutcracker.client();
    for key in &keys {
        nc.set(key.as_bytes(), format!("nc-{key}").as_bytes());
    }
    let chosen: Vec<usize> = keys
        .iter()
        .map(|k| {
            let on = (n1.client().get(k.as_bytes()), n2.client().get(k.as_bytes()));
            match on {
                (Some(_), None) => 0,
                (None, Some(_)) => 1,
                other => panic!("nutcracker stored {k} on (mc1, mc2) = {other:?}"),
            }
        })
        .collect();
    assert!(
        chosen.contains(&0) && chosen.contains(&1),
        "the keys span both servers under nutcracker: {chosen:?}"
    );

    // walnut on another pair with the same server names.
    let m1 = Memcached::start();
    let m2 = Memcached::start();
    let walnut = Proxy::walnut(&classic_config([&m1, &m2]));
    let mut w = walnut.client();
    for key in &keys {
        w.set(key.as_bytes(), format!("walnut-{key}").as_bytes());
    }
    let servers = [&m1, &m2];
    for (key, &index) in keys.iter().zip(&chosen) {
        let expected = format!("walnut-{key}");
        assert_eq!(
            servers[index].client().get(key.as_bytes()).as_deref(),
            Some(expected.as_bytes()),
            "{key} is on mc{} as under nutcracker",
            index + 1
        );
        assert_eq!(
            servers[1 - index].client().get(key.as_bytes()),
            None,
            "{key} is not on mc{}",
            2 - index
        );
        // And through walnut it reads back.
        assert_eq!(w.get(key.as_bytes()).as_deref(), Some(expected.as_bytes()));
    }
    let total = curr_items(&m1) + curr_items(&m2);
    assert_eq!(total, keys.len(), "each key stored exactly once");
}

/// memcached's own count of the items it holds.
fn curr_items(m: &Memcached) -> usize {
    let mut c = m.client();
    let stats = c.call(b"stats\r\n");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("STAT curr_items "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("curr_items in {stats}"))
}
