//! Differential placement: the real nutcracker and walnut side by side on the same memcached
//! backends, over generated pool configs and generated keys; every key must land on the server
//! nutcracker puts it on.
//!
//! Each case writes its keys through nutcracker, asks every backend which of them it holds (one
//! multi-get of all keys), empties the backends, then does the same through walnut. Both
//! proxies see the same `host:port` texts, so unnamed servers hash under the same ketama names.
//!
//! A failing case prints its index, seed and config and every differing key in hex. Run one case
//! alone with `WALNUT_DIFF_CASE=<index> cargo test -p walnut-tests --test differential`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use walnut::config::Config;
use walnut::ring::{Ring, RingServer};
use walnut_tests::{Memcached, Proxy};

/// Every case's seed derives from this and the case index.
const BASE_SEED: u64 = 0x7a1c_0de5_eed5_0001;
/// Cases per run: each of the 12 hashes gets `CASES / 12` of them.
const CASES: usize = 192;
/// Keys written per case (duplicates drawn by chance are dropped).
const KEYS_PER_CASE: usize = 400;
/// memcached processes shared by all cases (the largest pool uses all of them).
const BACKENDS: usize = 30;
/// libmemcached's port, left out of an unnamed server's ketama name.
const KETAMA_DEFAULT_PORT: u16 = 11211;

const HASHES: [&str; 12] = [
    "one_at_a_time",
    "md5",
    "crc16",
    "crc32",
    "crc32a",
    "fnv1_64",
    "fnv1a_64",
    "fnv1_32",
    "fnv1a_32",
    "hsieh",
    "murmur",
    "jenkins",
];
const HASH_TAGS: [&str; 5] = ["{}", "$$", "ab", "[]", "::"];

/// splitmix64: small, deterministic, good enough to draw test cases from.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A byte a memcached text-protocol key may hold: 0x21..=0x7e or 0x80..=0xff.
    fn key_byte(&mut self) -> u8 {
        let i = self.below(94 + 128) as u8;
        if i < 94 { 0x21 + i } else { 0x80 + (i - 94) }
    }
}

/// The seed of case `index`.
fn case_seed(index: usize) -> u64 {
    Rng(BASE_SEED ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)).next()
}

/// One `servers:` entry of a generated pool.
#[derive(Debug)]
struct Server {
    /// Index into the shared backends.
    backend: usize,
    /// The host as written: 127.0.0.1 or another text that resolves to it.
    host: &'static str,
    /// Write the port with a leading zero (nutcracker hashes the text as written).
    zero_port: bool,
    weight: u32,
    name: Option<String>,
    /// Write the entry as a double-quoted YAML scalar.
    quoted: bool,
}

#[derive(Debug)]
struct Case {
    index: usize,
    seed: u64,
    hash: &'static str,
    distribution: &'static str,
    hash_tag: Option<&'static str>,
    servers: Vec<Server>,
    keys: Vec<Vec<u8>>,
}

/// What the run environment allows.
struct Env {
    /// Backend 0 listens on 11211, so unnamed it hashes under its bare host.
    has_11211: bool,
    /// `localhost` resolves to 127.0.0.1 only (no ::1 that memcached would not listen on).
    localhost_ok: bool,
}

impl Case {
    fn generate(index: usize, env: &Env) -> Case {
        let seed = case_seed(index);
        let mut rng = Rng(seed);
        let hash = HASHES[index % HASHES.len()];
        // Random distribution places at random, so there is nothing to compare.
        let distribution = if rng.percent(35) { "modula" } else { "ketama" };
        let count = match rng.below(10) {
            0..=2 => rng.range(1, 3),
            3..=6 => rng.range(4, 12),
            _ => rng.range(13, BACKENDS),
        };
        // A partial shuffle of the backends picks the subset; every sixth case includes the
        // 11211 backend unnamed when there is one.
        let mut order: Vec<usize> = (0..BACKENDS).collect();
        for i in 0..count {
            let j = rng.range(i, BACKENDS - 1);
            order.swap(i, j);
        }
        let mut chosen = order[..count].to_vec();
        let force_11211 = env.has_11211 && index % 6 == 0;
        if force_11211 && !chosen.contains(&0) {
            chosen[0] = 0;
        }
        // 0: unnamed, 1: all named, 2: some named.
        let naming = match rng.below(20) {
            0..=7 => 0,
            8..=14 => 1,
            _ => 2,
        };
        let weights = rng.below(20);
        let big = if distribution == "modula" {
            10_000
        } else {
            1_000_000
        };
        let equal_weight = rng.range(1, 10) as u32;
        let mut taken: HashSet<Vec<u8>> = HashSet::new();
        let mut last_long: Option<String> = None;
        let mut servers = Vec::with_capacity(count);
        for &backend in &chosen {
            let weight = match weights {
                0..=11 => rng.range(1, 10) as u32,
                12..=15 => equal_weight,
                16..=18 => rng.range(1, big) as u32,
                _ => rng.pick(&[1, 2, 3, big as u32]),
            };
            let host = match rng.below(10) {
                0 => "127.1",
                1 => "127.0.1",
                2 if env.localhost_ok => "localhost",
                _ => "127.0.0.1",
            };
            let named = match naming {
                0 => false,
                1 => true,
                _ => rng.percent(50),
            } && !(force_11211 && backend == 0);
            let mut server = Server {
                backend,
                host,
                zero_port: rng.percent(5),
                weight,
                name: None,
                quoted: rng.percent(20),
            };
            if named {
                loop {
                    let name = match &last_long {
                        // Alike for the 272 bytes nutcracker hashes: the two share every point,
                        // and the tie goes to the name sorted first.
                        Some(long) if rng.percent(40) => {
                            let mut twin: String = long
                                .chars()
                                .scan(0, |len, c| {
                                    let keep = *len < 273;
                                    *len += c.len_utf8();
                                    keep.then_some(c)
                                })
                                .collect();
                            twin.extend((0..rng.range(1, 8)).map(|_| rng.pick(b"xyz019") as char));
                            twin
                        }
                        _ => server_name(&mut rng),
                    };
                    if name.len() > 272 {
                        last_long = Some(name.clone());
                    }
                    if taken.insert(name.clone().into_bytes()) {
                        server.name = Some(name);
                        break;
                    }
                }
            }
            servers.push(server);
        }
        let hash_tag = rng.percent(30).then(|| rng.pick(&HASH_TAGS));
        let tag = hash_tag.map(|t| [t.as_bytes()[0], t.as_bytes()[1]]);
        let mut seen = HashSet::new();
        let keys = (0..KEYS_PER_CASE)
            .map(|_| key(&mut rng, tag))
            .filter(|k| seen.insert(k.clone()))
            .collect();
        Case {
            index,
            seed,
            hash,
            distribution,
            hash_tag,
            servers,
            keys,
        }
    }

    /// The pool's YAML, `{listen}` left for the harness.
    fn config(&self, backends: &[Memcached]) -> String {
        let mut yaml = format!(
            "differential:\n  listen: {{listen}}\n  hash: {}\n  distribution: {}\n",
            self.hash, self.distribution
        );
        if let Some(tag) = self.hash_tag {
            let _ = writeln!(yaml, "  hash_tag: \"{tag}\"");
        }
        yaml.push_str("  servers:\n");
        for s in &self.servers {
            let port = backends[s.backend].port;
            let zero = if s.zero_port { "0" } else { "" };
            let mut entry = format!("{}:{zero}{port}:{}", s.host, s.weight);
            if let Some(name) = &s.name {
                entry.push(' ');
                entry.push_str(name);
            }
            // Names with punctuation are quoted (a plain "name:" would read as a mapping).
            let plain = s.name.as_ref().is_none_or(|name| {
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
            });
            if s.quoted || !plain {
                let _ = writeln!(yaml, "   - \"{entry}\"");
            } else {
                let _ = writeln!(yaml, "   - {entry}");
            }
        }
        yaml
    }
}

/// A server name: mostly short and plain, sometimes with punctuation or UTF-8, sometimes past
/// the 272 bytes nutcracker hashes of "name-N".
fn server_name(rng: &mut Rng) -> String {
    const PLAIN: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
    const PUNCT: &[u8] = b"!$%&()*+,/:;<=>?@[]^`{|}~'";
    const WIDE: [char; 5] = ['\u{e9}', '\u{df}', '\u{2192}', '\u{4e2d}', '\u{1f600}'];
    let len = match rng.below(10) {
        0..=6 => rng.range(1, 12),
        7 | 8 => rng.range(13, 64),
        _ => rng.range(260, 290),
    };
    let fancy = rng.percent(25);
    let mut name = String::new();
    while name.len() < len {
        match rng.below(20) {
            0 if fancy => name.push(rng.pick(&WIDE)),
            1..=3 if fancy => name.push(rng.pick(PUNCT) as char),
            _ => name.push(rng.pick(PLAIN) as char),
        }
    }
    name
}

/// A key of 1..=250 bytes of any byte memcached accepts in a key; under a hash tag, most keys
/// hold its delimiters, well formed or not.
fn key(rng: &mut Rng, tag: Option<[u8; 2]>) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=44 => rng.range(1, 16),
        45..=79 => rng.range(17, 64),
        80..=94 => rng.range(65, 249),
        _ => 250,
    };
    let ascii = rng.percent(40);
    let mut key: Vec<u8> = (0..len)
        .map(|_| {
            if ascii {
                0x21 + rng.below(94) as u8
            } else {
                rng.key_byte()
            }
        })
        .collect();
    if let Some([open, close]) = tag
        && len >= 2
        && rng.percent(70)
    {
        let i = rng.below(len - 1);
        let j = i + 1 + rng.below((len - i - 1).min(12));
        match rng.below(6) {
            // A tag, possibly empty ("{}" hashes the whole key).
            0..=2 => (key[i], key[j]) = (open, close),
            // Only an opening delimiter.
            3 => key[i] = open,
            // Closing before opening.
            4 => (key[i], key[j]) = (close, open),
            // Two tags; the first one counts.
            _ => {
                (key[i], key[j]) = (open, close);
                if j + 2 < len {
                    let k = rng.range(j + 1, len - 2);
                    (key[k], key[k + 1]) = (open, close);
                }
            }
        }
    }
    key
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Writes every key through `proxy` (one pipelined batch), then asks each backend of the pool
/// which keys it holds (one multi-get of all keys: `lru_crawler metadump` can list an item twice
/// or miss one that moves between LRU segments mid-crawl) and empties it. Returns key ->
/// position in `servers`, and any anomaly (a refused write, a key on two servers, a wrong value).
fn placement(
    proxy: &Proxy,
    keys: &[Vec<u8>],
    value: &[u8],
    servers: &[&Memcached],
) -> (HashMap<Vec<u8>, usize>, Vec<String>) {
    let mut problems = Vec::new();
    let mut req = Vec::with_capacity(keys.len() * 80);
    for key in keys {
        req.extend_from_slice(b"set ");
        req.extend_from_slice(key);
        req.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    let mut client = proxy.client();
    client.send(&req);
    let replies = client.read_replies(keys.len());
    for (key, reply) in keys.iter().zip(replies.split_inclusive(|&b| b == b'\n')) {
        if reply != b"STORED\r\n" {
            problems.push(format!(
                "set {} answered {:?}",
                hex(key),
                String::from_utf8_lossy(reply)
            ));
        }
    }
    let mut get = b"get".to_vec();
    for key in keys {
        get.push(b' ');
        get.extend_from_slice(key);
    }
    get.extend_from_slice(b"\r\n");
    let mut at = HashMap::with_capacity(keys.len());
    for (i, server) in servers.iter().enumerate() {
        for (key, data) in multi_get(server, &get) {
            if data != value {
                problems.push(format!(
                    "{} holds {:?} on server {i}",
                    hex(&key),
                    String::from_utf8_lossy(&data)
                ));
            }
            if let Some(other) = at.insert(key.clone(), i) {
                problems.push(format!("{} is on servers {other} and {i}", hex(&key)));
            }
        }
        let mut c = server.client();
        assert_eq!(c.call(b"flush_all\r\n"), "OK\r\n", "flush_all");
    }
    for key in keys.iter().filter(|k| !at.contains_key(*k)) {
        problems.push(format!("{} is on no server", hex(key)));
    }
    (at, problems)
}

/// The (key, data) pairs `server` answers to the multi-get `request`. Read here rather than
/// with `Client`, whose reply framing splits lines on Unicode whitespace (a key may hold the
/// UTF-8 of U+0085 or U+00A0).
fn multi_get(server: &Memcached, request: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut stream = TcpStream::connect(server.addr()).expect("connect to memcached");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    stream.write_all(request).expect("send the multi-get");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some(values) = parse_values(&buf) {
            return values;
        }
        let n = stream.read(&mut chunk).expect("read the multi-get reply");
        assert!(n > 0, "memcached closed the connection mid-reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The (key, data) pairs of a complete multi-get reply; None while it is incomplete.
fn parse_values(mut reply: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    loop {
        let nl = reply.iter().position(|&b| b == b'\n')?;
        let Some(line) = reply[..nl].strip_prefix(b"VALUE ") else {
            assert_eq!(&reply[..=nl], b"END\r\n", "end of a multi-get reply");
            return Some(out);
        };
        let fields: Vec<&[u8]> = line.strip_suffix(b"\r")?.split(|&b| b == b' ').collect();
        let len: usize = std::str::from_utf8(fields[2])
            .ok()
            .and_then(|t| t.parse().ok())
            .expect("VALUE length");
        let data = reply.get(nl + 1..nl + 1 + len)?;
        out.push((fields[0].to_vec(), data.to_vec()));
        reply = reply.get(nl + 1 + len + 2..)?;
    }
}

/// Where walnut's own config and ring code put `key`, for the report.
fn library_placement(config: &str, key: &[u8]) -> String {
    let text = config.replace("{listen}", "127.0.0.1:1");
    let config = match Config::parse(&text, Path::new("differential.yml")) {
        Ok(config) => config,
        Err(err) => return format!("config refused: {err}"),
    };
    let pool = &config.pools[0];
    let names: Vec<String> = pool.servers.iter().map(|s| s.ring_name()).collect();
    let servers: Vec<RingServer> = names
        .iter()
        .zip(&pool.servers)
        .map(|(name, s)| RingServer {
            name: name.as_bytes(),
            weight: s.weight,
        })
        .collect();
    match Ring::build(pool.distribution, &servers, &[]).locate(pool.hash, pool.hash_tag, key) {
        Some(i) => format!("#{i}"),
        None => "none".to_owned(),
    }
}

/// Starts a proxy, or says why it would not start (its `-t` verdict on the config).
fn start(what: &str, config: &str) -> Result<Proxy, String> {
    let started = std::panic::catch_unwind(|| match what {
        "walnut" => Proxy::walnut(config),
        _ => Proxy::nutcracker(config),
    });
    started.map_err(|_| {
        let dir = walnut_tests::temp_dir("refused");
        let path = dir.join("proxy.yml");
        let text = config.replace(
            "{listen}",
            &format!("127.0.0.1:{}", walnut_tests::free_port()),
        );
        std::fs::write(&path, text).expect("write config");
        let bin = match what {
            "walnut" => walnut_tests::walnut_bin().to_path_buf(),
            _ => walnut_tests::require("nutcracker", "nutcracker"),
        };
        let out = std::process::Command::new(bin)
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run -t");
        let _ = std::fs::remove_dir_all(&dir);
        format!(
            "{what} did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs one case; returns its report when anything differs.
fn run_case(case: &Case, backends: &[Memcached]) -> Option<String> {
    let config = case.config(backends);
    let servers: Vec<&Memcached> = case.servers.iter().map(|s| &backends[s.backend]).collect();
    let mut report = String::new();
    let header = |report: &mut String| {
        let _ = writeln!(
            report,
            "case {} (seed {:#018x}, WALNUT_DIFF_CASE={}): {} servers, {} keys\n{config}",
            case.index,
            case.seed,
            case.index,
            servers.len(),
            case.keys.len()
        );
    };
    let nutcracker = match start("nutcracker", &config) {
        Ok(p) => p,
        Err(why) => {
            header(&mut report);
            let _ = writeln!(report, "{why}");
            return Some(report);
        }
    };
    let (by_nutcracker, n_problems) = placement(&nutcracker, &case.keys, b"n", &servers);
    drop(nutcracker);
    let walnut = match start("walnut", &config) {
        Ok(p) => p,
        Err(why) => {
            header(&mut report);
            let _ = writeln!(report, "{why}");
            return Some(report);
        }
    };
    let (by_walnut, w_problems) = placement(&walnut, &case.keys, b"w", &servers);
    drop(walnut);

    let describe = |at: Option<&usize>| match at {
        None => "nowhere".to_owned(),
        Some(&i) => {
            let s = &case.servers[i];
            format!(
                "#{i} {}:{} {}",
                s.host,
                backends[s.backend].port,
                s.name.as_deref().unwrap_or("(unnamed)")
            )
        }
    };
    let differ: Vec<&Vec<u8>> = case
        .keys
        .iter()
        .filter(|k| by_nutcracker.get(*k) != by_walnut.get(*k))
        .collect();
    if differ.is_empty() && n_problems.is_empty() && w_problems.is_empty() {
        return None;
    }
    header(&mut report);
    for p in n_problems.iter().take(20) {
        let _ = writeln!(report, "  through nutcracker: {p}");
    }
    for p in w_problems.iter().take(20) {
        let _ = writeln!(report, "  through walnut: {p}");
    }
    let _ = writeln!(
        report,
        "  {} of {} keys differ (server #i counts entries in config order)",
        differ.len(),
        case.keys.len()
    );
    for key in differ.iter().take(20) {
        let _ = writeln!(
            report,
            "  key {}: nutcracker {}, walnut {}, walnut's ring code {}",
            hex(key),
            describe(by_nutcracker.get(*key)),
            describe(by_walnut.get(*key)),
            library_placement(&config, key)
        );
    }
    Some(report)
}

/// What the generated cases exercised, printed with the result and checked to stay non-zero.
#[derive(Debug, Default)]
struct Coverage {
    keys: usize,
    keys_of_250_bytes: usize,
    keys_with_high_bytes: usize,
    cases_per_hash: BTreeMap<&'static str, usize>,
    modula_cases: usize,
    hash_tag_cases: usize,
    largest_pool: usize,
    named_servers: usize,
    unnamed_servers: usize,
    unnamed_on_11211: usize,
    names_past_272_bytes: usize,
    names_alike_for_272_bytes: usize,
    names_not_ascii: usize,
    ports_with_leading_zero: usize,
    hosts_not_127_0_0_1: usize,
    weights_over_10: usize,
}

impl Coverage {
    fn add(&mut self, case: &Case, backends: &[Memcached]) {
        self.keys += case.keys.len();
        self.keys_of_250_bytes += case.keys.iter().filter(|k| k.len() == 250).count();
        self.keys_with_high_bytes += case
            .keys
            .iter()
            .filter(|k| k.iter().any(|&b| b >= 0x80))
            .count();
        *self.cases_per_hash.entry(case.hash).or_default() += 1;
        self.modula_cases += usize::from(case.distribution == "modula");
        self.hash_tag_cases += usize::from(case.hash_tag.is_some());
        self.largest_pool = self.largest_pool.max(case.servers.len());
        for s in &case.servers {
            match &s.name {
                Some(name) => {
                    self.named_servers += 1;
                    self.names_not_ascii += usize::from(!name.is_ascii());
                    if name.len() > 272 {
                        self.names_past_272_bytes += 1;
                        self.names_alike_for_272_bytes +=
                            usize::from(case.servers.iter().any(|o| {
                                o.name.as_ref().is_some_and(|other| {
                                    other != name
                                        && other.as_bytes().get(..272) == name.as_bytes().get(..272)
                                })
                            }));
                    }
                }
                None => {
                    self.unnamed_servers += 1;
                    self.unnamed_on_11211 +=
                        usize::from(backends[s.backend].port == KETAMA_DEFAULT_PORT);
                }
            }
            self.ports_with_leading_zero += usize::from(s.zero_port);
            self.hosts_not_127_0_0_1 += usize::from(s.host != "127.0.0.1");
            self.weights_over_10 += usize::from(s.weight > 10);
        }
    }

    /// Every feature was drawn at least once (the generator has not lost one).
    fn check(&self, env: &Env) {
        let counts = [
            ("keys_of_250_bytes", self.keys_of_250_bytes),
            ("keys_with_high_bytes", self.keys_with_high_bytes),
            ("modula_cases", self.modula_cases),
            ("hash_tag_cases", self.hash_tag_cases),
            ("named_servers", self.named_servers),
            ("unnamed_servers", self.unnamed_servers),
            ("names_past_272_bytes", self.names_past_272_bytes),
            ("names_alike_for_272_bytes", self.names_alike_for_272_bytes),
            ("names_not_ascii", self.names_not_ascii),
            ("ports_with_leading_zero", self.ports_with_leading_zero),
            ("hosts_not_127_0_0_1", self.hosts_not_127_0_0_1),
            ("weights_over_10", self.weights_over_10),
            (
                "unnamed_on_11211",
                self.unnamed_on_11211 + usize::from(!env.has_11211),
            ),
        ];
        for (what, n) in counts {
            assert!(n > 0, "the generated cases never had {what}");
        }
        assert_eq!(self.cases_per_hash.len(), HASHES.len(), "every hash");
        assert!(self.largest_pool >= BACKENDS - 5, "a pool of most backends");
    }
}

/// Starts memcached on 11211 when that port is free, for the libmemcached naming rule.
fn memcached_on_11211() -> Option<Memcached> {
    Memcached::try_start_on(KETAMA_DEFAULT_PORT)
}

/// The two tests here start dozens of memcached and proxy processes each. Run side by side,
/// one of them now and then saw a backend refuse a connection (cause not found); run in turn
/// they pass every time, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn placement_matches_nutcracker_on_generated_pools() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    walnut_tests::require("nutcracker", "nutcracker");
    walnut_tests::walnut_bin();
    let begun = Instant::now();
    let localhost_ok = ("localhost", 1)
        .to_socket_addrs()
        .map(|addrs| {
            let addrs: Vec<SocketAddr> = addrs.collect();
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST)
        })
        .unwrap_or(false);
    let first = memcached_on_11211();
    let has_11211 = first.is_some();
    let mut backends: Vec<Memcached> = first.into_iter().collect();
    let started: Vec<Memcached> = std::thread::scope(|s| {
        let handles: Vec<_> = (backends.len()..BACKENDS)
            .map(|_| s.spawn(Memcached::start))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("start memcached"))
            .collect()
    });
    backends.extend(started);
    let env = Env {
        has_11211,
        localhost_ok,
    };

    let only: Option<usize> = std::env::var("WALNUT_DIFF_CASE")
        .ok()
        .map(|v| v.parse().expect("WALNUT_DIFF_CASE is a case index"));
    let indices: Vec<usize> = match only {
        Some(i) => vec![i],
        None => (0..CASES).collect(),
    };
    let mut failures = Vec::new();
    let mut coverage = Coverage::default();
    for &index in &indices {
        let case = Case::generate(index, &env);
        coverage.add(&case, &backends);
        if let Some(report) = run_case(&case, &backends) {
            eprintln!("{report}");
            failures.push(report);
        }
    }
    let summary = format!(
        "{} cases in {:.1} s (11211 backend: {has_11211}, localhost hosts: {localhost_ok})\n{coverage:#?}",
        indices.len(),
        begun.elapsed().as_secs_f64()
    );
    eprintln!("{summary}");
    if only.is_none() {
        coverage.check(&env);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from nutcracker; {summary}\n\n{}",
        failures.len(),
        indices.len(),
        failures.join("\n")
    );
}

/// One request on a fresh connection; the reply's first line, or what went wrong.
fn one_shot(addr: SocketAddr, request: &[u8]) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return "connect failed".to_owned();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(request).is_err() {
        return "write failed".to_owned();
    }
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while !reply.ends_with(b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) => return format!("closed after {:?}", String::from_utf8_lossy(&reply)),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(err) => return format!("read failed: {err}"),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Sends `get` for keys of the dead server until the proxy answers a miss instead of an error,
/// i.e. until it has ejected the server. Returns how many requests failed first, or None when
/// it never ejected it.
fn eject(proxy: &Proxy, dead_keys: &[Vec<u8>]) -> Option<usize> {
    for (attempt, key) in dead_keys.iter().cycle().take(40).enumerate() {
        let mut req = b"get ".to_vec();
        req.extend_from_slice(key);
        req.extend_from_slice(b"\r\n");
        if one_shot(proxy.addr, &req) == "END\r\n" {
            return Some(attempt);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

/// Needs walnut's ejection (auto_eject_hosts) to pass: after a server dies and both proxies have
/// ejected it, the keys must land on the surviving servers exactly where nutcracker puts them.
#[test]
fn ejection_moves_keys_like_nutcracker() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    walnut_tests::require("nutcracker", "nutcracker");
    let mut failures = Vec::new();
    // Warm: both proxies are connected when the server dies, so they see its connection close.
    // Cold: they never connected, so the first request for it finds the port refused.
    for (hash, distribution, warm) in [
        ("fnv1a_64", "ketama", true),
        ("fnv1a_64", "ketama", false),
        ("md5", "modula", true),
        ("crc32a", "modula", false),
    ] {
        let mut backends = vec![Memcached::start(), Memcached::start(), Memcached::start()];
        let mut config = format!(
            "eject:\n  listen: {{listen}}\n  hash: {hash}\n  distribution: {distribution}\n  timeout: 300\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n  servers:\n"
        );
        for m in &backends {
            let _ = writeln!(config, "   - {}:1", m.address());
        }
        let mut rng = Rng(BASE_SEED ^ 0xe7ec7);
        let keys: Vec<Vec<u8>> = {
            let mut seen = HashSet::new();
            (0..600)
                .map(|_| key(&mut rng, None))
                .filter(|k| seen.insert(k.clone()))
                .collect()
        };
        // Keys walnut's ring puts on the server about to die, to trigger the ejection.
        let dead_keys: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| library_placement(&config, k) == "#1")
            .take(10)
            .cloned()
            .collect();
        assert!(!dead_keys.is_empty(), "no key on the second server");

        let nutcracker = Proxy::nutcracker(&config);
        let walnut = Proxy::walnut(&config);
        if warm {
            for proxy in [&nutcracker, &walnut] {
                for key in keys[..30].iter().chain(&dead_keys) {
                    let mut req = b"get ".to_vec();
                    req.extend_from_slice(key);
                    req.extend_from_slice(b"\r\n");
                    assert_eq!(one_shot(proxy.addr, &req), "END\r\n");
                }
            }
        }
        backends[1].kill();
        let n_failed = eject(&nutcracker, &dead_keys);
        let w_failed = eject(&walnut, &dead_keys);
        let survivors = [&backends[0], &backends[2]];
        let (by_nutcracker, n_problems) = placement(&nutcracker, &keys, b"n", &survivors);
        let (by_walnut, w_problems) = placement(&walnut, &keys, b"w", &survivors);
        let differ: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|k| by_nutcracker.get(*k) != by_walnut.get(*k))
            .collect();
        let mut report = format!(
            "{distribution}/{hash}, {}: nutcracker ejected after {n_failed:?} failed requests, walnut after {w_failed:?}; {} of {} keys differ\n{config}",
            if warm { "warm" } else { "cold" },
            differ.len(),
            keys.len()
        );
        for p in n_problems.iter().take(20) {
            let _ = writeln!(report, "  through nutcracker: {p}");
        }
        for p in w_problems.iter().take(10) {
            let _ = writeln!(report, "  through walnut: {p}");
        }
        for key in differ.iter().take(10) {
            let _ = writeln!(
                report,
                "  key {}: nutcracker {:?}, walnut {:?} (0: first server, 1: third)",
                hex(key),
                by_nutcracker.get(*key),
                by_walnut.get(*key)
            );
        }
        eprintln!("{report}");
        if n_failed.is_none()
            || w_failed.is_none()
            || !differ.is_empty()
            || !n_problems.is_empty()
            || !w_problems.is_empty()
        {
            failures.push(report);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
