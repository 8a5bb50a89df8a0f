//! Choosing an upstream server as nginx does: smooth weighted round robin, `max_fails` failures
//! within `fail_timeout` taking a server out for `fail_timeout`, and `hash KEY consistent`.
//!
//! Failure state is shared by every worker (atomics), so a dead server found by one worker is
//! skipped by all, as with nginx's shared `zone`. The round-robin weights are per worker, as
//! in nginx without a zone: no lock on the request path.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::config::Upstream;
use crate::hash::HashKind;

/// Milliseconds since the first call: the clock of failure accounting.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One server's failure record, shared by every worker.
#[derive(Debug, Default)]
struct Health {
    fails: AtomicU32,
    /// When the last failure happened.
    accessed: AtomicU64,
    /// When the server was last failed, or last tried after its fail_timeout.
    checked: AtomicU64,
}

/// An upstream shared by every worker: its servers, their health and its hash ring.
#[derive(Debug)]
pub struct UpstreamShared {
    pub config: Upstream,
    health: Vec<Health>,
    /// `(point, server)`, sorted by point.
    ring: Vec<(u32, usize)>,
    pub key: Option<KeyTemplate>,
}

/// Points per unit of weight on the consistent ring (nginx uses 160).
const POINTS: u32 = 160;
/// Ring points tried before falling back to round robin (nginx's 20).
const RING_TRIES: usize = 20;

impl UpstreamShared {
    pub fn new(config: Upstream) -> UpstreamShared {
        let mut ring = Vec::new();
        if config.servers.len() > 1 {
            for (i, s) in config.servers.iter().enumerate() {
                for p in 0..POINTS * s.weight {
                    let point = format!("{}-{p}", s.text);
                    ring.push((HashKind::Crc32a.hash(point.as_bytes()), i));
                }
            }
            ring.sort_unstable();
        }
        let key = config
            .hash
            .as_deref()
            .map(|h| KeyTemplate::parse(h).expect("checked when the config loaded"));
        UpstreamShared {
            health: config.servers.iter().map(|_| Health::default()).collect(),
            config,
            ring,
            key,
        }
    }
}

impl UpstreamShared {
    /// Whether server `i` is failed out at `now` (`max_fails` within `fail_timeout`).
    pub fn is_down(&self, i: usize, now: u64) -> bool {
        let s = &self.config.servers[i];
        let h = &self.health[i];
        s.max_fails > 0
            && h.fails.load(Ordering::Relaxed) >= s.max_fails
            && now.saturating_sub(h.checked.load(Ordering::Relaxed))
                <= s.fail_timeout.as_millis() as u64
    }

    /// Where `key` lands for a first attempt, as `Balancer::pick` walks the ring, without
    /// touching any state: its hash, the ring point it starts from, and the first server from
    /// there not failed out (`None`: none in reach; round robin then decides).
    pub fn hash_choice(&self, key: &[u8], now: u64) -> (u32, Option<u32>, Option<usize>) {
        let hash = HashKind::Crc32a.hash(key);
        if self.config.servers.len() == 1 {
            return (hash, None, Some(0));
        }
        let ring = &self.ring;
        let start = ring.partition_point(|(p, _)| *p < hash);
        let point = ring.get(start % ring.len().max(1)).map(|(p, _)| *p);
        let server = (0..RING_TRIES.min(ring.len()))
            .map(|k| ring[(start + k) % ring.len()].1)
            .find(|&i| !self.is_down(i, now));
        (hash, point, server)
    }
}

/// One worker's view of an upstream: the shared state plus its own round-robin weights.
pub struct Balancer {
    pub shared: Arc<UpstreamShared>,
    current: Vec<i64>,
    effective: Vec<i64>,
}

impl Balancer {
    pub fn new(shared: Arc<UpstreamShared>) -> Balancer {
        let n = shared.config.servers.len();
        let effective = shared
            .config
            .servers
            .iter()
            .map(|s| i64::from(s.weight))
            .collect();
        Balancer {
            shared,
            current: vec![0; n],
            effective,
        }
    }

    fn single(&self) -> bool {
        self.shared.config.servers.len() == 1
    }

    /// Whether server `i` may be chosen at `now` (not tried, not failed out).
    fn usable(&self, i: usize, tried: u64, now: u64) -> bool {
        tried & (1 << i) == 0 && !self.shared.is_down(i, now)
    }

    /// Chooses a server not in `tried` (a bit per server): by `key` on the ring when given,
    /// else by smooth weighted round robin. `None` when every server is tried or failed out.
    pub fn pick(&mut self, tried: u64, key: Option<&[u8]>, now: u64) -> Option<usize> {
        if self.single() {
            // nginx never marks the only server down.
            return (tried & 1 == 0).then_some(0);
        }
        if let Some(key) = key {
            let hash = HashKind::Crc32a.hash(key);
            let ring = &self.shared.ring;
            let start = ring.partition_point(|(p, _)| *p < hash);
            for k in 0..RING_TRIES.min(ring.len()) {
                let (_, i) = ring[(start + k) % ring.len()];
                if self.usable(i, tried, now) {
                    self.tried_at(i, now);
                    return Some(i);
                }
            }
        }
        let mut best: Option<usize> = None;
        let mut total = 0;
        for i in 0..self.current.len() {
            if !self.usable(i, tried, now) {
                continue;
            }
            self.current[i] += self.effective[i];
            total += self.effective[i];
            if self.effective[i] < i64::from(self.shared.config.servers[i].weight) {
                self.effective[i] += 1;
            }
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let Some(best) = best else {
            if tried == 0 {
                // Every server is failed out: forget the failures for a quick recovery, as
                // nginx does, and answer 502 this time.
                for h in &self.shared.health {
                    h.fails.store(0, Ordering::Relaxed);
                }
            }
            return None;
        };
        self.current[best] -= total;
        self.tried_at(best, now);
        Some(best)
    }

    fn tried_at(&self, i: usize, now: u64) {
        let s = &self.shared.config.servers[i];
        let h = &self.shared.health[i];
        if now.saturating_sub(h.checked.load(Ordering::Relaxed)) > s.fail_timeout.as_millis() as u64
        {
            h.checked.store(now, Ordering::Relaxed);
        }
    }

    /// Server `i` failed (connect error, timeout, bad response).
    pub fn failed(&mut self, i: usize, now: u64) {
        if self.single() {
            return;
        }
        let s = &self.shared.config.servers[i];
        let h = &self.shared.health[i];
        let fails = h.fails.fetch_add(1, Ordering::Relaxed) + 1;
        h.accessed.store(now, Ordering::Relaxed);
        h.checked.store(now, Ordering::Relaxed);
        if s.max_fails > 0 {
            let w = i64::from(s.weight);
            self.effective[i] = (self.effective[i] - w / i64::from(s.max_fails)).max(0);
            if fails == s.max_fails {
                tracing::warn!(server = %s.text, upstream = %self.shared.config.name, "upstream server temporarily disabled");
            }
        }
    }

    /// Server `i` answered: a failure older than its last check is forgotten.
    pub fn succeeded(&self, i: usize) {
        let h = &self.shared.health[i];
        if h.accessed.load(Ordering::Relaxed) < h.checked.load(Ordering::Relaxed) {
            h.fails.store(0, Ordering::Relaxed);
        }
    }
}

/// A `hash:` key: literal text and nginx variables (`$request_uri`, `$uri`, `$args`,
/// `$remote_addr`, `$http_NAME`, `$arg_NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    RequestUri,
    Uri,
    Args,
    RemoteAddr,
    /// Header name, `_` read as `-`.
    Header(String),
    Arg(String),
}

/// What a key is made from.
pub struct KeySource<'a> {
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub has_query: bool,
    pub remote: IpAddr,
    pub headers: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

impl KeyTemplate {
    pub fn parse(text: &str) -> Result<KeyTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            let name_len = rest[at + 1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - at - 1);
            let name = &rest[at + 1..at + 1 + name_len];
            parts.push(match name {
                "request_uri" => Part::RequestUri,
                "uri" => Part::Uri,
                "args" | "query_string" => Part::Args,
                "remote_addr" => Part::RemoteAddr,
                _ => match (name.strip_prefix("http_"), name.strip_prefix("arg_")) {
                    (Some(h), _) if !h.is_empty() => Part::Header(h.replace('_', "-")),
                    (_, Some(a)) if !a.is_empty() => Part::Arg(a.to_owned()),
                    _ => {
                        return Err(format!(
                            "${name} is not one of $request_uri, $uri, $args, $remote_addr, $http_NAME, $arg_NAME"
                        ));
                    }
                },
            });
            rest = &rest[at + 1 + name_len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("is empty".into());
        }
        Ok(KeyTemplate(parts))
    }

    /// Writes the key for a request into `out`.
    pub fn render(&self, src: &KeySource<'_>, out: &mut Vec<u8>) {
        out.clear();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::RequestUri => {
                    out.extend_from_slice(src.path);
                    if src.has_query {
                        out.push(b'?');
                        out.extend_from_slice(src.query);
                    }
                }
                Part::Uri => out.extend_from_slice(src.path),
                Part::Args => out.extend_from_slice(src.query),
                Part::RemoteAddr => {
                    use std::io::Write;
                    let _ = write!(out, "{}", src.remote);
                }
                Part::Header(h) => out.extend_from_slice((src.headers)(h).unwrap_or(b"")),
                Part::Arg(a) => {
                    let v = src.query.split(|&b| b == b'&').find_map(|kv| {
                        let (k, v) = match kv.iter().position(|&b| b == b'=') {
                            Some(e) => (&kv[..e], &kv[e + 1..]),
                            None => (kv, &b""[..]),
                        };
                        (k == a.as_bytes()).then_some(v)
                    });
                    out.extend_from_slice(v.unwrap_or(b""));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamServer;
    use std::time::Duration;

    fn upstream(weights: &[u32], max_fails: u32, fail_timeout_ms: u64) -> Balancer {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| UpstreamServer {
                text: format!("127.0.0.1:{}", 9000 + i),
                addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                weight,
                max_fails,
                fail_timeout: Duration::from_millis(fail_timeout_ms),
            })
            .collect();
        Balancer::new(Arc::new(UpstreamShared::new(Upstream {
            name: "u".into(),
            servers,
            keepalive: 1,
            hash: None,
        })))
    }

    fn sequence(b: &mut Balancer, n: usize, now: u64) -> String {
        (0..n)
            .map(|_| (b'a' + b.pick(0, None, now).unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin() {
        let mut b = upstream(&[5, 1, 1], 1, 10_000);
        assert_eq!(sequence(&mut b, 7, 100), "aabacaa");
        assert_eq!(sequence(&mut b, 7, 100), "aabacaa");
        let mut b = upstream(&[5, 1], 1, 10_000);
        let s = sequence(&mut b, 600, 100);
        assert_eq!(s.matches('a').count(), 500);
    }

    #[test]
    fn failures_take_a_server_out_for_fail_timeout() {
        let mut b = upstream(&[1, 1], 3, 1000);
        for _ in 0..2 {
            b.failed(1, 100);
        }
        // Two failures of three: still used.
        assert!(sequence(&mut b, 4, 100).contains('b'));
        b.failed(1, 100);
        assert_eq!(sequence(&mut b, 6, 200), "aaaaaa");
        // After fail_timeout it is tried again, and one success forgives it.
        assert!(sequence(&mut b, 4, 1200).contains('b'));
        b.succeeded(1);
        b.failed(1, 1300);
        assert!(sequence(&mut b, 4, 1300).contains('b'));
        // Tried servers are skipped within one request.
        assert_eq!(b.pick(0b01, None, 1300), Some(1));
        assert_eq!(b.pick(0b11, None, 1300), None);
    }

    #[test]
    fn a_single_server_is_never_down() {
        let mut b = upstream(&[1], 1, 10_000);
        for _ in 0..10 {
            b.failed(0, 100);
        }
        assert_eq!(b.pick(0, None, 100), Some(0));
    }

    #[test]
    fn all_down_means_none_then_recovery() {
        let mut b = upstream(&[1, 1], 1, 10_000);
        b.failed(0, 100);
        b.failed(1, 100);
        assert_eq!(b.pick(0, None, 100), None);
        assert!(b.pick(0, None, 100).is_some());
    }

    #[test]
    fn consistent_hash_is_stable_and_skips_failed_servers() {
        let mut b = upstream(&[1, 1, 1], 1, 10_000);
        let first: Vec<usize> = (0..50)
            .map(|k| b.pick(0, Some(format!("key{k}").as_bytes()), 100).unwrap())
            .collect();
        let again: Vec<usize> = (0..50)
            .map(|k| b.pick(0, Some(format!("key{k}").as_bytes()), 100).unwrap())
            .collect();
        assert_eq!(first, again);
        assert!((0..3).all(|s| first.contains(&s)));
        b.failed(2, 100);
        for (k, &was) in first.iter().enumerate() {
            let now = b.pick(0, Some(format!("key{k}").as_bytes()), 100).unwrap();
            assert_ne!(now, 2);
            if was != 2 {
                assert_eq!(now, was, "a key on a live server stays there");
            }
        }
    }

    #[test]
    fn hash_choice_agrees_with_pick() {
        let mut b = upstream(&[1, 1, 1], 1, 10_000);
        b.failed(1, 100);
        for k in 0..100 {
            let key = format!("key{k}");
            let (_, point, chosen) = b.shared.hash_choice(key.as_bytes(), 100);
            assert!(point.is_some());
            assert_eq!(chosen, b.pick(0, Some(key.as_bytes()), 100), "{key}");
        }
    }

    #[test]
    fn key_templates() {
        let t = KeyTemplate::parse("u:$request_uri|$http_x_user|$arg_id").unwrap();
        let headers = |n: &str| (n == "x-user").then_some(&b"bob"[..]);
        let src = KeySource {
            path: b"/p",
            query: b"a=1&id=7",
            has_query: true,
            remote: "127.0.0.1".parse().unwrap(),
            headers: &headers,
        };
        let mut out = Vec::new();
        t.render(&src, &mut out);
        assert_eq!(out, b"u:/p?a=1&id=7|bob|7");
        assert!(KeyTemplate::parse("$nope").is_err());
    }
}
