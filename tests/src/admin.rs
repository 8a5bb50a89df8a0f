//! The admin HTTP listener from a client's side: walnut started with `--admin`, raw GETs, and
//! a reader of Prometheus's text format (checked line by line against the format as it parses).

#[allow(unused_imports)]
use super::*;

use std::collections::BTreeMap;

impl Proxy {
    /// walnut on `config` with the admin listener on a port of its own; returns that port.
    pub fn walnut_admin(config: &str, args: &[&str]) -> (Proxy, u16) {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut all = vec!["--admin", addr.as_str()];
        all.extend_from_slice(args);
        let walnut = Proxy::walnut_with(config, &all);
        // The admin listener is bound before the pools', so it listens by now.
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok(),
            "the admin listener is not on {addr}: {}",
            walnut.log()
        );
        (walnut, port)
    }
}

/// `GET path` on the admin port: the status and the body.
pub fn admin_get(port: u16, path: &str) -> (u16, String) {
    let raw = admin_raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes(),
    );
    split_response(&raw)
}

/// Sends `request` as is and reads until the listener closes.
pub fn admin_raw(port: u16, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request).expect("send to the admin port");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The status code and body of a raw HTTP response.
pub fn split_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One scrape of `/metrics`: each sample by `name{labels}` (labels sorted by name).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
    pub text: String,
}

impl Metrics {
    pub fn scrape(port: u16) -> Metrics {
        let (status, body) = admin_get(port, "/metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Parses the text format, failing on anything the format does not allow: a sample
    /// without HELP and TYPE before it, a bad name, a bad label or value, a repeated series.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = std::collections::BTreeSet::new();
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(name_ok(name), "bad metric name in {line:?}");
                assert!(helped.insert(name.to_owned()), "second HELP: {line:?}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let (name, kind) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad TYPE: {line:?}"
                );
                assert!(
                    typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "second TYPE: {line:?}"
                );
                continue;
            }
            assert!(
                !line.starts_with('#') || line.is_empty(),
                "unknown comment: {line:?}"
            );
            if line.is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (
                    n,
                    parse_labels(
                        rest.strip_suffix('}')
                            .unwrap_or_else(|| panic!("unclosed labels: {line:?}")),
                    ),
                ),
                None => (series, Vec::new()),
            };
            assert!(name_ok(name), "bad name in {line:?}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s).filter(|f| {
                        typed
                            .get(*f)
                            .is_some_and(|k| k == "histogram" || k == "summary")
                    })
                })
                .unwrap_or(name);
            assert!(
                typed.contains_key(family) && helped.contains(family),
                "sample before its HELP/TYPE: {line:?}"
            );
            if typed[family] == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "a counter not named _total: {line:?}"
                );
            }
            let mut labels = labels;
            labels.sort();
            let key = format!(
                "{name}{{{}}}",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            assert!(
                samples.insert(key, value).is_none(),
                "repeated series: {line:?}"
            );
        }
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of `name` with exactly `labels` (`[("pool", "alpha")]`); panics if absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        let key = format!(
            "{name}{{{}}}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {key} in\n{}", self.text))
    }
}

/// `a="x",b="y\"z"` as unescaped pairs.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels {text:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {text:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {text:?}"),
            }
        };
        out.push((name.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

/// Checks `text` with Prometheus's own checker (`promtool check metrics`): no error, no lint.
pub fn promtool_accepts(text: &str) {
    let promtool = require("promtool", "prometheus");
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool output");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
