//! proxy-wasm filters' metrics and shared data, end to end: `tests/plugins/pw-metrics` (built
//! with the proxy-wasm Rust SDK from crates.io, unmodified) counts requests in a counter, a
//! gauge and a histogram, and in shared data with compare-and-swap; the real walnut binary runs
//! it on two workers, curl sends the requests, and `/metrics` (checked by Prometheus's
//! `promtool`) shows what the filter counted, across workers and across a reload.

use std::collections::BTreeSet;

use walnut_tests::{
    Metrics, TestBackend, admin_raw, curl, http_site, location_plugin, plugin_dir, promtool_accepts,
};

fn config(backend: &TestBackend) -> String {
    let wasm = plugin_dir(&["pw-metrics"]).join("pw_metrics.wasm");
    http_site(backend.addr, "", &[("/", location_plugin(&wasm, ""))])
}

/// The value of the one sample of `family` whose labels hold `name=<name>`.
fn sample(m: &Metrics, family: &str, name: &str) -> f64 {
    let found: Vec<f64> = m
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}{{")) && k.contains(name))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "one {family} for {name} in:\n{}", m.text);
    found[0]
}

#[test]
fn a_filters_metrics_and_shared_data_count_every_request_across_workers_and_reloads() {
    let backend = TestBackend::start();
    let (walnut, admin) = walnut_tests::Proxy::walnut_admin(&config(&backend), &["-w", "2"]);
    let mut hits = BTreeSet::new();
    let mut path_bytes = 0;
    let mut requests_seen = BTreeSet::new();
    for i in 0..40 {
        // A new connection each: the kernel spreads them over both workers.
        let path = format!("/item/{i}");
        let got = curl(&format!("http://{}{path}", walnut.addr), &[]);
        assert_eq!(got.status, 200, "{got:?}");
        let hit: u64 = got
            .header("x-pw-hits")
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("x-pw-hits in {got:?}"));
        hits.insert(hit);
        let seen: u64 = got
            .header("x-pw-requests-seen")
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("x-pw-requests-seen in {got:?}"));
        requests_seen.insert(seen);
        path_bytes += path.len();
    }
    // Compare-and-swap lost no update and gave no number twice, whichever worker ran the filter.
    assert_eq!(
        hits,
        (1..=40).collect::<BTreeSet<u64>>(),
        "each request one hit"
    );
    // One counter for both workers: the last request saw all 40.
    assert_eq!(requests_seen.last(), Some(&40));
    let m = Metrics::scrape(admin);
    assert_eq!(sample(&m, "walnut_filter_count_total", "requests"), 40.0);
    assert_eq!(
        sample(&m, "walnut_filter_recorded_count", "path_length"),
        40.0
    );
    assert_eq!(
        sample(&m, "walnut_filter_recorded_sum", "path_length"),
        path_bytes as f64
    );
    assert_eq!(
        sample(&m, "walnut_filter_value", "in_flight"),
        0.0,
        "every request is over"
    );
    assert!(
        m.text.contains("plugin=\"pw_metrics.wasm\"") && m.text.contains("pool=\"web\""),
        "{}",
        m.text
    );
    promtool_accepts(&m.text);

    // A reload makes new instances; what they count goes on where the old ones left off.
    let raw = admin_raw(
        admin,
        b"POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(
        String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let got = curl(&format!("http://{}/after", walnut.addr), &[]);
    assert_eq!(got.header("x-pw-hits"), Some("41"), "{got:?}");
    let m = Metrics::scrape(admin);
    assert_eq!(sample(&m, "walnut_filter_count_total", "requests"), 41.0);
    assert_eq!(backend.seen().len(), 41);
}
