//! The continuum: where each key hash lands (ketama, modula, random), built once, swapped whole.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher, RandomState};

use crate::hash::HashKind;
use crate::hash::md5;

/// How keys are spread over servers, named as in `nutcracker.yml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distribution {
    #[default]
    Ketama,
    Modula,
    Random,
}

impl Distribution {
    pub const ALL: [(&'static str, Distribution); 3] = [
        ("ketama", Distribution::Ketama),
        ("modula", Distribution::Modula),
        ("random", Distribution::Random),
    ];

    pub fn from_name(name: &str) -> Option<Distribution> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, d)| *d == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// twemproxy aims at 160 ketama points per server at equal weight.
const KETAMA_POINTS_PER_SERVER: f32 = 160.0;
/// Each md5 digest of "name-N" yields four points.
const KETAMA_POINTS_PER_HASH: u32 = 4;

/// nutcracker 0.5.0 hashes at most this many bytes of "name-N" (it logs that it truncated).
const KETAMA_MAX_HOST_BYTES: usize = 272;

/// The port libmemcached leaves out of a server's ketama name.
const DEFAULT_KETAMA_PORT: u16 = 11211;

/// One backend as the ring sees it: the name its points are hashed from, and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingServer<'a> {
    pub name: &'a [u8],
    pub weight: u32,
}

/// The name twemproxy hashes for a server: the configured name if any, else the address as
/// written (`host:port`), except that port 11211 is left out (libmemcached compatibility).
///
/// A unix socket (`port` is `None`) keeps the `:` that separated it from its weight, because
/// twemproxy takes the name as the path plus one separator plus an empty port.
pub fn ring_name(addr_text: &str, port: Option<u16>, name: Option<&str>) -> String {
    match (name, port) {
        (Some(name), _) => name.to_owned(),
        (None, Some(DEFAULT_KETAMA_PORT)) => addr_text
            .rsplit_once(':')
            .map_or(addr_text, |(host, _)| host)
            .to_owned(),
        (None, Some(_)) => addr_text.to_owned(),
        (None, None) => format!("{addr_text}:"),
    }
}

/// The part of `key` that is hashed under `hash_tag`: the bytes after the first left delimiter
/// up to the next right delimiter, when that span is non-empty; otherwise the whole key.
pub fn hash_tagged(key: &[u8], tag: Option<[u8; 2]>) -> &[u8] {
    let Some([left, right]) = tag else {
        return key;
    };
    let Some(start) = key.iter().position(|&b| b == left) else {
        return key;
    };
    let inner = &key[start + 1..];
    match inner.iter().position(|&b| b == right) {
        Some(end) if end > 0 => &inner[..end],
        _ => key,
    }
}

/// A point on the ketama continuum, owned by a server given as the caller's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    value: u32,
    server: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slots {
    /// No live server (or none with any weight).
    Empty,
    /// Points sorted by value; a hash goes to the first point at or above it, wrapping.
    Ketama(Vec<Point>),
    /// One slot per unit of weight; a hash goes to slot `hash % len`.
    Modula(Vec<u32>),
    /// One slot per live server, picked at random whatever the hash.
    Random(Vec<u32>),
}

/// Where keys go for one pool, built from its servers and which of them are live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    slots: Slots,
}

impl Ring {
    /// Builds the continuum the way twemproxy rebuilds it: servers in name order (shorter names
    /// first, then bytewise, as nutcracker sorts its config), ejected servers left out, and
    /// every place answered as an index into `servers`. A missing `live` entry counts as live.
    pub fn build(dist: Distribution, servers: &[RingServer], live: &[bool]) -> Ring {
        let mut order: Vec<usize> = (0..servers.len())
            .filter(|&i| live.get(i).copied().unwrap_or(true))
            .collect();
        // Index order in nutcracker is this sorted order, so it decides modula slots and
        // which of two equal ketama points comes first.
        order.sort_by(|&a, &b| {
            let (a, b) = (servers[a].name, servers[b].name);
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        });
        let slots = match dist {
            Distribution::Ketama => Slots::Ketama(ketama_points(servers, &order)),
            Distribution::Modula => Slots::Modula(
                order
                    .iter()
                    .flat_map(|&i| std::iter::repeat_n(i as u32, servers[i].weight as usize))
                    .collect(),
            ),
            Distribution::Random => Slots::Random(order.iter().map(|&i| i as u32).collect()),
        };
        let empty = match &slots {
            Slots::Ketama(points) => points.is_empty(),
            Slots::Modula(v) | Slots::Random(v) => v.is_empty(),
            Slots::Empty => true,
        };
        Ring {
            slots: if empty { Slots::Empty } else { slots },
        }
    }

    /// True when no server can take a key.
    pub fn is_empty(&self) -> bool {
        matches!(self.slots, Slots::Empty)
    }

    /// The server (index into the slice given to `build`) for a key hash; `None` when no
    /// server is live. Random ignores the hash.
    pub fn place(&self, hash: u32) -> Option<usize> {
        let server = match &self.slots {
            Slots::Empty => return None,
            Slots::Ketama(points) => {
                let at = points.partition_point(|p| p.value < hash);
                points.get(at).unwrap_or(&points[0]).server
            }
            Slots::Modula(slots) => slots[(hash % slots.len() as u32) as usize],
            Slots::Random(slots) => slots[random_below(slots.len())],
        };
        Some(server as usize)
    }

    /// The server for `key` under `kind` and the pool's `hash_tag`.
    pub fn locate(&self, kind: HashKind, tag: Option<[u8; 2]>, key: &[u8]) -> Option<usize> {
        if matches!(self.slots, Slots::Random(_)) {
            return self.place(0);
        }
        self.place(key_hash(kind, tag, key).1)
    }

    /// `locate`, step by step: the bytes hashed, their hash, the spot on the ring, the server.
    pub fn explain<'k>(&self, kind: HashKind, tag: Option<[u8; 2]>, key: &'k [u8]) -> Located<'k> {
        let (hashed, hash) = key_hash(kind, tag, key);
        let spot = match &self.slots {
            Slots::Empty => Spot::Empty,
            Slots::Ketama(points) => {
                let at = points.partition_point(|p| p.value < hash);
                let index = if at == points.len() { 0 } else { at };
                Spot::Ketama {
                    point: points[index].value,
                    index,
                    points: points.len(),
                }
            }
            Slots::Modula(slots) => Spot::Modula {
                slot: (hash % slots.len() as u32) as usize,
                slots: slots.len(),
            },
            Slots::Random(slots) => Spot::Random {
                servers: slots.len(),
            },
        };
        let server = match spot {
            // A random pick explains nothing: the next request may go elsewhere.
            Spot::Random { .. } => None,
            _ => self.place(hash),
        };
        Located {
            hashed,
            hash,
            spot,
            server,
        }
    }
}

/// The bytes of `key` that are hashed (its hash-tag part, or all of it) and their hash.
fn key_hash(kind: HashKind, tag: Option<[u8; 2]>, key: &[u8]) -> (&[u8], u32) {
    let part = hash_tagged(key, tag);
    // twemproxy never hashes an empty key; it places it as hash 0.
    let hash = if part.is_empty() { 0 } else { kind.hash(part) };
    (part, hash)
}

/// How the ring placed one key (see `Ring::explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located<'k> {
    pub hashed: &'k [u8],
    pub hash: u32,
    pub spot: Spot,
    /// `None` when no server is live, or the distribution is random.
    pub server: Option<usize>,
}

/// Where on the ring a hash landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spot {
    /// No live server.
    Empty,
    /// The first continuum point at or above the hash (wrapping to the first), its position
    /// and how many points there are.
    Ketama {
        point: u32,
        index: usize,
        points: usize,
    },
    /// Slot `hash % slots`.
    Modula { slot: usize, slots: usize },
    /// Any of the live servers, at random.
    Random { servers: usize },
}

/// How many points a server gets, in twemproxy's single-precision arithmetic, including its
/// double-precision nudge; this is why 25 equal servers get 156 points, not 160.
fn points_for(weight: u32, total_weight: u32, nlive: usize) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let scaled = pct * KETAMA_POINTS_PER_SERVER / KETAMA_POINTS_PER_HASH as f32 * nlive as f32;
    let nudged = (f64::from(scaled) + 0.000_000_000_1) as f32;
    nudged.floor() as u32 * KETAMA_POINTS_PER_HASH
}

/// The sorted continuum for the live servers in `order`.
fn ketama_points(servers: &[RingServer], order: &[usize]) -> Vec<Point> {
    let total_weight = order
        .iter()
        .fold(0u32, |t, &i| t.wrapping_add(servers[i].weight));
    if total_weight == 0 {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut host = Vec::new();
    for &i in order {
        let server = servers[i];
        let count = points_for(server.weight, total_weight, order.len());
        for n in 0..count / KETAMA_POINTS_PER_HASH {
            host.clear();
            host.extend_from_slice(server.name);
            host.push(b'-');
            host.extend_from_slice(n.to_string().as_bytes());
            host.truncate(KETAMA_MAX_HOST_BYTES);
            points.extend(md5::words(&host).map(|value| Point {
                value,
                server: i as u32,
            }));
        }
    }
    // glibc's qsort is a merge sort here, so equal values keep their build order; a stable
    // sort reproduces that.
    points.sort_by_key(|p| p.value);
    points
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish() | 1);
}

/// A uniform-enough pick in `0..n` (xorshift64); random distribution needs no more.
fn random_below(n: usize) -> usize {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        ((x >> 32) % n as u64) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three backends every vector file was recorded with, in config order.
    const ADDRS: [&str; 3] = ["127.0.0.1:21211", "127.0.0.1:21212", "127.0.0.1:21213"];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex key"))
            .collect()
    }

    /// A pool as configured when a vector file was recorded.
    struct Pool<'a> {
        names: &'a [&'a str],
        weights: &'a [u32],
        dist: Distribution,
        kind: HashKind,
        tag: Option<[u8; 2]>,
    }

    /// The README's default pool: three equal servers, ketama, fnv1a_64.
    const THREE: Pool = Pool {
        names: &ADDRS,
        weights: &[1, 1, 1],
        dist: Distribution::Ketama,
        kind: HashKind::Fnv1a64,
        tag: None,
    };

    impl Pool<'_> {
        /// Checks every row of a vector file; returns how many rows were checked.
        fn check(&self, file: &str, text: &str, hex_keys: bool) -> usize {
            let servers: Vec<RingServer> = self
                .names
                .iter()
                .zip(self.weights)
                .map(|(n, &weight)| RingServer {
                    name: n.as_bytes(),
                    weight,
                })
                .collect();
            let ring = Ring::build(self.dist, &servers, &[]);
            let mut rows = 0;
            for line in text.lines().filter(|l| !l.is_empty()) {
                let (key, addr) = line.split_once('\t').expect("tab-separated row");
                let key = if hex_keys {
                    unhex(key)
                } else {
                    key.as_bytes().to_vec()
                };
                let want = ADDRS
                    .iter()
                    .position(|a| *a == addr)
                    .expect("known backend");
                let got = ring.locate(self.kind, self.tag, &key);
                assert_eq!(got, Some(want), "{file}: key {key:?}");
                rows += 1;
            }
            rows
        }
    }

    #[test]
    fn vectors_ketama_fnv1a64() {
        let text = include_str!("../tests/vectors/ketama_fnv1a64_3servers.tsv");
        assert_eq!(THREE.check("ketama_fnv1a64", text, false), 1000);
    }

    #[test]
    fn vectors_ketama_weights_1_2_1() {
        let text = include_str!("../tests/vectors/ketama_fnv1a64_w121.tsv");
        let pool = Pool {
            weights: &[1, 2, 1],
            ..THREE
        };
        assert_eq!(pool.check("w121", text, false), 1000);
    }

    #[test]
    fn vectors_ketama_named() {
        let text = include_str!("../tests/vectors/ketama_named.tsv");
        let pool = Pool {
            names: &["server1", "server2", "server3"],
            ..THREE
        };
        assert_eq!(pool.check("named", text, false), 1000);
    }

    #[test]
    fn vectors_modula_md5() {
        let text = include_str!("../tests/vectors/modula_md5.tsv");
        let pool = Pool {
            dist: Distribution::Modula,
            kind: HashKind::Md5,
            ..THREE
        };
        assert_eq!(pool.check("modula_md5", text, false), 1000);
    }

    #[test]
    fn vectors_hashtag() {
        let text = include_str!("../tests/vectors/hashtag.tsv");
        let pool = Pool {
            tag: Some(*b"{}"),
            ..THREE
        };
        assert_eq!(pool.check("hashtag", text, false), 26);
    }

    #[test]
    fn vectors_every_hash() {
        let files = [
            (
                HashKind::OneAtATime,
                include_str!("../tests/vectors/ketama_one_at_a_time_3servers.tsv"),
            ),
            (
                HashKind::Md5,
                include_str!("../tests/vectors/ketama_md5_3servers.tsv"),
            ),
            (
                HashKind::Crc16,
                include_str!("../tests/vectors/ketama_crc16_3servers.tsv"),
            ),
            (
                HashKind::Crc32,
                include_str!("../tests/vectors/ketama_crc32_3servers.tsv"),
            ),
            (
                HashKind::Crc32a,
                include_str!("../tests/vectors/ketama_crc32a_3servers.tsv"),
            ),
            (
                HashKind::Fnv1_64,
                include_str!("../tests/vectors/ketama_fnv1_64_3servers.tsv"),
            ),
            (
                HashKind::Fnv1a64,
                include_str!("../tests/vectors/ketama_fnv1a_64_3servers.tsv"),
            ),
            (
                HashKind::Fnv1_32,
                include_str!("../tests/vectors/ketama_fnv1_32_3servers.tsv"),
            ),
            (
                HashKind::Fnv1a32,
                include_str!("../tests/vectors/ketama_fnv1a_32_3servers.tsv"),
            ),
            (
                HashKind::Hsieh,
                include_str!("../tests/vectors/ketama_hsieh_3servers.tsv"),
            ),
            (
                HashKind::Murmur,
                include_str!("../tests/vectors/ketama_murmur_3servers.tsv"),
            ),
            (
                HashKind::Jenkins,
                include_str!("../tests/vectors/ketama_jenkins_3servers.tsv"),
            ),
        ];
        let mut rows = 0;
        for (kind, text) in files {
            let n = Pool { kind, ..THREE }.check(kind.name(), text, true);
            assert_eq!(n, 400, "{}", kind.name());
            rows += n;
        }
        assert_eq!(rows, 4800);
    }

    /// Scenarios recorded from nutcracker 0.5.0 by tests/vectors/recorded/record.py.
    const RECORDED: [(&str, &str); 26] = [
        (
            "eject_ketama",
            include_str!("../tests/vectors/recorded/eject_ketama.txt"),
        ),
        (
            "eject_modula",
            include_str!("../tests/vectors/recorded/eject_modula.txt"),
        ),
        (
            "hash_crc16",
            include_str!("../tests/vectors/recorded/hash_crc16.txt"),
        ),
        (
            "hash_crc32",
            include_str!("../tests/vectors/recorded/hash_crc32.txt"),
        ),
        (
            "hash_crc32a",
            include_str!("../tests/vectors/recorded/hash_crc32a.txt"),
        ),
        (
            "hash_fnv1_32",
            include_str!("../tests/vectors/recorded/hash_fnv1_32.txt"),
        ),
        (
            "hash_fnv1_64",
            include_str!("../tests/vectors/recorded/hash_fnv1_64.txt"),
        ),
        (
            "hash_fnv1a_32",
            include_str!("../tests/vectors/recorded/hash_fnv1a_32.txt"),
        ),
        (
            "hash_fnv1a_64",
            include_str!("../tests/vectors/recorded/hash_fnv1a_64.txt"),
        ),
        (
            "hash_hsieh",
            include_str!("../tests/vectors/recorded/hash_hsieh.txt"),
        ),
        (
            "hash_jenkins",
            include_str!("../tests/vectors/recorded/hash_jenkins.txt"),
        ),
        (
            "hash_md5",
            include_str!("../tests/vectors/recorded/hash_md5.txt"),
        ),
        (
            "hash_murmur",
            include_str!("../tests/vectors/recorded/hash_murmur.txt"),
        ),
        (
            "hash_one_at_a_time",
            include_str!("../tests/vectors/recorded/hash_one_at_a_time.txt"),
        ),
        (
            "hash_tag_ab",
            include_str!("../tests/vectors/recorded/hash_tag_ab.txt"),
        ),
        (
            "hash_tag_braces",
            include_str!("../tests/vectors/recorded/hash_tag_braces.txt"),
        ),
        (
            "hash_tag_dollar",
            include_str!("../tests/vectors/recorded/hash_tag_dollar.txt"),
        ),
        (
            "ketama_25_equal",
            include_str!("../tests/vectors/recorded/ketama_25_equal.txt"),
        ),
        (
            "ketama_25_weighted",
            include_str!("../tests/vectors/recorded/ketama_25_weighted.txt"),
        ),
        (
            "long_names_270",
            include_str!("../tests/vectors/recorded/long_names_270.txt"),
        ),
        (
            "long_names_300",
            include_str!("../tests/vectors/recorded/long_names_300.txt"),
        ),
        (
            "long_names_tie",
            include_str!("../tests/vectors/recorded/long_names_tie.txt"),
        ),
        (
            "modula_mixed_crc16",
            include_str!("../tests/vectors/recorded/modula_mixed_crc16.txt"),
        ),
        (
            "modula_mixed_md5",
            include_str!("../tests/vectors/recorded/modula_mixed_md5.txt"),
        ),
        (
            "port_11211",
            include_str!("../tests/vectors/recorded/port_11211.txt"),
        ),
        (
            "unix_sockets",
            include_str!("../tests/vectors/recorded/unix_sockets.txt"),
        ),
    ];

    /// Checks one recorded scenario; returns how many keys were checked.
    fn check_recorded(file: &str, text: &str) -> usize {
        let (mut dist, mut kind, mut tag) = (Distribution::Ketama, HashKind::Fnv1a64, None);
        let (mut names, mut weights, mut live, mut running) = (vec![], vec![], vec![], vec![]);
        let mut rows = vec![];
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "dist" => dist = Distribution::from_name(f[1]).expect("distribution"),
                "hash" => kind = HashKind::from_name(f[1]).expect("hash"),
                "tag" if f[1] != "-" => tag = Some([f[1].as_bytes()[0], f[1].as_bytes()[1]]),
                "tag" => {}
                "server" => {
                    let port = (f[2] != "-").then(|| f[2].parse().expect("port"));
                    let name = (f[3] != "-").then_some(f[3]);
                    let addr = match port {
                        Some(_) => format!("{}:{}", f[1], f[2]),
                        None => f[1].to_owned(),
                    };
                    names.push(ring_name(&addr, port, name));
                    weights.push(f[4].parse().expect("weight"));
                    live.push(f[5] == "1");
                    running.push(f[6] == "1");
                }
                "key" => rows.push((unhex(f[1]), f[2].parse::<i64>().expect("index"))),
                _ => panic!("{file}: bad line {line}"),
            }
        }
        let data: Vec<(Vec<u8>, u32)> = names
            .into_iter()
            .map(String::into_bytes)
            .zip(weights)
            .collect();
        let ring = Ring::build(dist, &borrowed(&data), &live);
        for (key, want) in &rows {
            let got = ring.locate(kind, tag, key);
            if *want < 0 {
                // The write failed: nutcracker sent it to a server that was not running.
                let server = got.expect("a server");
                assert!(!running[server], "{file}: key {key:?} on running {server}");
            } else {
                assert_eq!(got, Some(*want as usize), "{file}: key {key:?}");
            }
        }
        rows.len()
    }

    #[test]
    fn recorded_scenarios() {
        let rows: usize = RECORDED
            .iter()
            .map(|(file, text)| check_recorded(file, text))
            .sum();
        assert!(rows > 20_000, "{rows}");
    }

    fn owned(names: &[String], weights: &[u32]) -> Vec<(Vec<u8>, u32)> {
        names
            .iter()
            .zip(weights)
            .map(|(n, &w)| (n.as_bytes().to_vec(), w))
            .collect()
    }

    fn borrowed(v: &[(Vec<u8>, u32)]) -> Vec<RingServer<'_>> {
        v.iter()
            .map(|(name, weight)| RingServer {
                name,
                weight: *weight,
            })
            .collect()
    }

    fn points_per_server(ring: &Ring, n: usize) -> Vec<usize> {
        let Slots::Ketama(points) = &ring.slots else {
            panic!("not ketama");
        };
        let mut counts = vec![0; n];
        for p in points {
            counts[p.server as usize] += 1;
        }
        counts
    }

    #[test]
    fn twenty_five_equal_servers_get_156_points() {
        let names: Vec<String> = (0..25).map(|i| format!("10.0.0.{i}:11212")).collect();
        let data = owned(&names, &[1; 25]);
        let ring = Ring::build(Distribution::Ketama, &borrowed(&data), &[]);
        assert_eq!(points_per_server(&ring, 25), vec![156; 25]);
        assert_eq!(points_for(1, 3, 3), 160);
        assert_eq!(points_for(2, 4, 3), 240);
    }

    #[test]
    fn modula_follows_name_order_not_config_order() {
        // Config order differs from name order: "b" sorts after "a", and the short name first.
        let servers = [
            RingServer {
                name: b"bb",
                weight: 1,
            },
            RingServer {
                name: b"c",
                weight: 2,
            },
            RingServer {
                name: b"aa",
                weight: 1,
            },
        ];
        let ring = Ring::build(Distribution::Modula, &servers, &[]);
        // Slots in name order: c, c, aa, bb.
        let got: Vec<_> = (0..8).map(|h| ring.place(h).unwrap()).collect();
        assert_eq!(got, vec![1, 1, 2, 0, 1, 1, 2, 0]);
    }

    #[test]
    fn config_order_does_not_change_ketama_placement() {
        let forward = [
            RingServer {
                name: b"127.0.0.1:21211",
                weight: 1,
            },
            RingServer {
                name: b"127.0.0.1:21212",
                weight: 2,
            },
            RingServer {
                name: b"127.0.0.1:21213",
                weight: 1,
            },
        ];
        let reversed = [forward[2], forward[1], forward[0]];
        let a = Ring::build(Distribution::Ketama, &forward, &[]);
        let b = Ring::build(Distribution::Ketama, &reversed, &[]);
        for i in 0..2000u32 {
            let key = format!("key{i}");
            let x = a.locate(HashKind::Fnv1a64, None, key.as_bytes()).unwrap();
            let y = b.locate(HashKind::Fnv1a64, None, key.as_bytes()).unwrap();
            assert_eq!(forward[x].name, reversed[y].name);
        }
    }

    #[test]
    fn hash_tag_rules() {
        let tag = Some(*b"{}");
        assert_eq!(hash_tagged(b"{user1}:a", tag), b"user1");
        assert_eq!(hash_tagged(b"x{user1}y", tag), b"user1");
        assert_eq!(hash_tagged(b"{}:a", tag), b"{}:a");
        assert_eq!(hash_tagged(b"{user1", tag), b"{user1");
        assert_eq!(hash_tagged(b"user1}", tag), b"user1}");
        assert_eq!(hash_tagged(b"}user1{", tag), b"}user1{");
        assert_eq!(hash_tagged(b"a{b}c{d}", tag), b"b");
        assert_eq!(hash_tagged(b"{{user1}}", tag), b"{user1");
        assert_eq!(hash_tagged(b"{a}{b}", tag), b"a");
        assert_eq!(hash_tagged(b"{x", tag), b"{x");
        assert_eq!(hash_tagged(b"{user1}", None), b"{user1}");
        // The same byte may open and close a tag.
        assert_eq!(hash_tagged(b"a$b$c", Some(*b"$$")), b"b");
        assert_eq!(hash_tagged(b"a$$c", Some(*b"$$")), b"a$$c");
    }

    #[test]
    fn names_as_nutcracker_gives_them() {
        assert_eq!(
            ring_name("127.0.0.1:21211", Some(21211), None),
            "127.0.0.1:21211"
        );
        assert_eq!(ring_name("cache-1:11211", Some(11211), None), "cache-1");
        assert_eq!(
            ring_name("127.0.0.1", Some(21211), Some("server1")),
            "server1"
        );
        assert_eq!(ring_name("/tmp/mc.sock", None, None), "/tmp/mc.sock:");
    }

    #[test]
    fn ejecting_moves_only_that_servers_keys() {
        let names: Vec<String> = (1..=5).map(|i| format!("127.0.0.1:2121{i}")).collect();
        let data = owned(&names, &[1; 5]);
        let servers = borrowed(&data);
        let all = Ring::build(Distribution::Ketama, &servers, &[true; 5]);
        let without = Ring::build(
            Distribution::Ketama,
            &servers,
            &[true, true, false, true, true],
        );
        let mut moved = 0;
        for i in 0..5000u32 {
            let key = format!("key{i}");
            let before = all.locate(HashKind::Fnv1a64, None, key.as_bytes()).unwrap();
            let after = without
                .locate(HashKind::Fnv1a64, None, key.as_bytes())
                .unwrap();
            assert_ne!(after, 2);
            if before == 2 {
                moved += 1;
            } else {
                // The other servers' points are unchanged in value (equal servers keep 160
                // points whether 5 or 4 are live), so their keys stay.
                assert_eq!(before, after, "{key}");
            }
        }
        assert!(moved > 0);
        let none = Ring::build(Distribution::Ketama, &servers, &[false; 5]);
        assert_eq!(none.locate(HashKind::Fnv1a64, None, b"k"), None);
        assert!(none.is_empty());
    }

    #[test]
    fn long_names_are_cut_at_272_bytes() {
        // Past 272 bytes every "name-N" is the same string, so a server keeps only the four
        // points of one digest; two names alike for 272 bytes share them, and the tie goes to
        // the one sorted first (nutcracker was seen doing exactly this).
        let a = [b'x'; 281];
        let mut b = a;
        b[280] = b'a';
        let mut c = a;
        c[280] = b'c';
        let servers = [
            RingServer {
                name: &c,
                weight: 1,
            },
            RingServer {
                name: &b,
                weight: 1,
            },
        ];
        let ring = Ring::build(Distribution::Ketama, &servers, &[]);
        let Slots::Ketama(points) = &ring.slots else {
            panic!("not ketama");
        };
        let mut values: Vec<u32> = points.iter().map(|p| p.value).collect();
        values.dedup();
        assert_eq!(values.len(), 4);
        for h in [0, 1 << 30, u32::MAX] {
            assert_eq!(ring.place(h), Some(1));
        }
    }

    #[test]
    fn modula_and_random_leave_out_ejected_servers() {
        let servers = [
            RingServer {
                name: b"a",
                weight: 1,
            },
            RingServer {
                name: b"b",
                weight: 1,
            },
            RingServer {
                name: b"c",
                weight: 1,
            },
        ];
        let live = [true, false, true];
        let modula = Ring::build(Distribution::Modula, &servers, &live);
        assert_eq!(
            (0..4).map(|h| modula.place(h).unwrap()).collect::<Vec<_>>(),
            vec![0, 2, 0, 2]
        );
        let random = Ring::build(Distribution::Random, &servers, &live);
        let mut seen = [0; 3];
        for _ in 0..1000 {
            seen[random.locate(HashKind::Md5, None, b"k").unwrap()] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 300 && seen[2] > 300, "{seen:?}");
    }

    #[test]
    fn explain_agrees_with_locate() {
        let names = ["mc1", "mc2", "mc3"];
        let servers = names.map(|n| RingServer {
            name: n.as_bytes(),
            weight: 1,
        });
        for dist in [Distribution::Ketama, Distribution::Modula] {
            for live in [[true, true, true], [true, false, true]] {
                let ring = Ring::build(dist, &servers, &live);
                for i in 0..500 {
                    let key = format!("k{{{i}}}x{}", i % 7);
                    for tag in [None, Some(*b"{}")] {
                        let e = ring.explain(HashKind::Fnv1a64, tag, key.as_bytes());
                        assert_eq!(
                            e.server,
                            ring.locate(HashKind::Fnv1a64, tag, key.as_bytes())
                        );
                        assert_eq!(e.hashed, hash_tagged(key.as_bytes(), tag));
                    }
                }
            }
        }
        let random = Ring::build(Distribution::Random, &servers, &[]);
        let e = random.explain(HashKind::Md5, None, b"k");
        assert_eq!((e.server, e.spot), (None, Spot::Random { servers: 3 }));
    }
}
