//! Choosing an upstream server as nginx does: smooth weighted round robin ([`weighted`]), or
//! `hash KEY consistent` ([`consistent`]), skipping servers that failed out ([`health`]).
//!
//! Failure state is shared by every worker, so a dead server found by one worker is skipped by
//! all, as with nginx's shared `zone`. The round-robin weights are per worker, as in nginx
//! without a zone: no lock on the request path.

use std::sync::Arc;

use crate::config::Upstream;

mod consistent;
mod health;
mod weighted;

pub use health::now_ms;

/// An upstream shared by every worker: its servers, their health and its continuum.
#[derive(Debug)]
pub struct UpstreamShared {
    pub config: Upstream,
    health: Vec<health::Health>,
    continuum: consistent::Continuum,
}

impl UpstreamShared {
    pub fn new(config: Upstream) -> UpstreamShared {
        UpstreamShared {
            health: config.servers.iter().map(|_| Default::default()).collect(),
            continuum: consistent::Continuum::build(&config.servers),
            config,
        }
    }
}

impl UpstreamShared {
    /// Whether server `i` is failed out at `now` (`max_fails` within `fail_timeout`).
    pub fn is_down(&self, i: usize, now: u64) -> bool {
        self.config.servers.len() > 1 && self.health[i].out(&self.config.servers[i], now)
    }

    /// Where `key` lands for a first attempt, as `Balancer::pick` walks the continuum, without
    /// touching any state: its crc32, the point it starts from, and the first server from there
    /// not failed out (`None`: none within nginx's 20 steps; round robin then decides).
    pub fn hash_choice(&self, key: &[u8], now: u64) -> (u32, Option<u32>, Option<usize>) {
        let hash = crate::hash::HashKind::Crc32a.hash(key);
        if self.config.servers.len() == 1 {
            return (hash, None, Some(0));
        }
        let mut cursor = self.continuum.start(key);
        let point = self.continuum.point(&cursor);
        let server = self.continuum.next(&mut cursor, |i| !self.is_down(i, now));
        (hash, point, server)
    }
}

/// One request's choices so far: the servers it tried and its place on the continuum.
#[derive(Debug, Default)]
pub struct Tries {
    /// A bit per server.
    tried: u64,
    cursor: Option<consistent::Cursor>,
}

impl Tries {
    /// Server `i` is not to be chosen again for this request.
    pub fn exclude(&mut self, i: usize) {
        self.tried |= 1 << i;
    }

    /// Server `i` may be chosen again (a retry on a fresh connection to it).
    pub fn allow(&mut self, i: usize) {
        self.tried &= !(1 << i);
    }

    fn has(&self, i: usize) -> bool {
        self.tried & (1 << i) != 0
    }
}

/// One worker's view of an upstream: the shared state plus its own round-robin weights.
pub struct Balancer {
    pub shared: Arc<UpstreamShared>,
    weights: weighted::Weights,
}

impl Balancer {
    pub fn new(shared: Arc<UpstreamShared>) -> Balancer {
        let weights = weighted::Weights::new(shared.config.servers.iter().map(|s| s.weight));
        Balancer { shared, weights }
    }

    fn single(&self) -> bool {
        self.shared.config.servers.len() == 1
    }

    /// Whether server `i` may be chosen at `now` (not tried, not failed out).
    fn usable(&self, i: usize, tries: &Tries, now: u64) -> bool {
        !tries.has(i) && !self.shared.health[i].out(&self.shared.config.servers[i], now)
    }

    /// Chooses a server for the request whose choices are `tries`: by `key` on the continuum
    /// when given (round robin after 20 steps, as nginx), else by smooth weighted round robin.
    /// `None` when every server is tried or failed out.
    pub fn pick(&mut self, tries: &mut Tries, key: Option<&[u8]>, now: u64) -> Option<usize> {
        if self.single() {
            // nginx never marks the only server down.
            return (!tries.has(0)).then(|| {
                tries.exclude(0);
                0
            });
        }
        let picked = match key.filter(|k| !k.is_empty()) {
            Some(key) => {
                let continuum = &self.shared.continuum;
                let mut cursor = tries.cursor.unwrap_or_else(|| continuum.start(key));
                let found = continuum.next(&mut cursor, |i| self.usable(i, tries, now));
                tries.cursor = Some(cursor);
                match found {
                    Some(i) => {
                        self.weights.recover(i);
                        Some(i)
                    }
                    None => self.round_robin(tries, now),
                }
            }
            None => self.round_robin(tries, now),
        };
        let i = picked?;
        self.shared.health[i].chosen(&self.shared.config.servers[i], now);
        tries.exclude(i);
        Some(i)
    }

    fn round_robin(&mut self, tries: &Tries, now: u64) -> Option<usize> {
        let shared = &self.shared;
        let usable =
            |i: usize| !tries.has(i) && !shared.health[i].out(&shared.config.servers[i], now);
        let best = self.weights.pick(usable);
        if best.is_none() && tries.tried == 0 {
            // Every server is failed out: forget the failures for a quick recovery, as nginx
            // does, and answer 502 this time.
            self.shared.health.iter().for_each(health::Health::forgive);
        }
        best
    }

    /// Server `i` failed (connect error, timeout, bad response).
    pub fn failed(&mut self, i: usize, now: u64) {
        if self.single() {
            return;
        }
        let s = &self.shared.config.servers[i];
        let fails = self.shared.health[i].failed(now);
        self.weights.lower(i, s.max_fails);
        if s.max_fails > 0 && fails == s.max_fails {
            tracing::warn!(server = %s.text, upstream = %self.shared.config.name, "upstream server temporarily disabled");
        }
    }

    /// Server `i` answered: a failure older than its last check is forgotten.
    pub fn succeeded(&self, i: usize) {
        self.shared.health[i].succeeded();
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

    fn pick(b: &mut Balancer, tried: &[usize], key: Option<&[u8]>, now: u64) -> Option<usize> {
        let mut t = Tries::default();
        tried.iter().for_each(|&i| t.exclude(i));
        b.pick(&mut t, key, now)
    }

    fn sequence(b: &mut Balancer, n: usize, now: u64) -> String {
        (0..n)
            .map(|_| (b'a' + pick(b, &[], None, now).unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn hash_choice_agrees_with_pick() {
        let mut b = upstream(&[1, 1, 1], 1, 10_000);
        b.failed(1, 100);
        for k in 0..100 {
            let key = format!("key{k}");
            let (_, point, chosen) = b.shared.hash_choice(key.as_bytes(), 100);
            assert!(point.is_some());
            assert_eq!(
                chosen,
                pick(&mut b, &[], Some(key.as_bytes()), 100),
                "{key}"
            );
        }
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
        assert_eq!(pick(&mut b, &[0], None, 1300), Some(1));
        assert_eq!(pick(&mut b, &[0, 1], None, 1300), None);
    }

    #[test]
    fn a_single_server_is_never_down() {
        let mut b = upstream(&[1], 1, 10_000);
        for _ in 0..10 {
            b.failed(0, 100);
        }
        assert_eq!(pick(&mut b, &[], None, 100), Some(0));
    }

    #[test]
    fn all_down_means_none_then_recovery() {
        let mut b = upstream(&[1, 1], 1, 10_000);
        b.failed(0, 100);
        b.failed(1, 100);
        assert_eq!(pick(&mut b, &[], None, 100), None);
        assert!(pick(&mut b, &[], None, 100).is_some());
    }

    #[test]
    fn consistent_hash_is_stable_and_skips_failed_servers() {
        let mut b = upstream(&[1, 1, 1], 1, 10_000);
        let key = |k: usize| format!("key{k}");
        let first: Vec<usize> = (0..50)
            .map(|k| pick(&mut b, &[], Some(key(k).as_bytes()), 100).unwrap())
            .collect();
        let again: Vec<usize> = (0..50)
            .map(|k| pick(&mut b, &[], Some(key(k).as_bytes()), 100).unwrap())
            .collect();
        assert_eq!(first, again);
        assert!((0..3).all(|s| first.contains(&s)));
        b.failed(2, 100);
        for (k, &was) in first.iter().enumerate() {
            let now = pick(&mut b, &[], Some(key(k).as_bytes()), 100).unwrap();
            assert_ne!(now, 2);
            if was != 2 {
                assert_eq!(now, was, "a key on a live server stays there");
            }
        }
    }

    #[test]
    fn a_retry_walks_on_from_the_keys_point() {
        let mut b = upstream(&[1, 1, 1], 0, 10_000);
        let mut t = Tries::default();
        let first = b.pick(&mut t, Some(b"/k"), 100).unwrap();
        let second = b.pick(&mut t, Some(b"/k"), 100).unwrap();
        let third = b.pick(&mut t, Some(b"/k"), 100).unwrap();
        let mut all = [first, second, third];
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2]);
        assert_eq!(b.pick(&mut t, Some(b"/k"), 100), None);
    }
}
