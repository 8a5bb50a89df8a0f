//! Placement and request helpers: where keys go in an mc1..mcN ketama pool, and wire bytes.

#[allow(unused_imports)]
use super::*;

/// The ring nutcracker builds over `n` servers named `mc1`..`mcN` (weight 1, ketama).
fn mc_ring(n: usize) -> walnut::ring::Ring {
    use walnut::ring::{Distribution, Ring, RingServer};
    let names: Vec<String> = (1..=n).map(|i| format!("mc{i}")).collect();
    let servers: Vec<RingServer> = names
        .iter()
        .map(|name| RingServer {
            name: name.as_bytes(),
            weight: 1,
        })
        .collect();
    Ring::build(Distribution::Ketama, &servers, &vec![true; n])
}

/// Which of `n` servers named `mc1`..`mcN` (weight 1, ketama, fnv1a_64) holds `key`: where
/// nutcracker puts it (the `classic` test checks this placement against the real nutcracker).
pub fn mc_owner(n: usize, key: &[u8]) -> usize {
    mc_ring(n)
        .locate(walnut::hash::HashKind::Fnv1a64, None, key)
        .expect("a live server")
}

/// The first `count` keys `{prefix}{i}` that `mc_owner(n, _)` puts on server `index` (0-based).
pub fn mc_keys_on(n: usize, index: usize, count: usize, prefix: &str) -> Vec<String> {
    let ring = mc_ring(n);
    let keys: Vec<String> = (0..1_000_000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| ring.locate(walnut::hash::HashKind::Fnv1a64, None, k.as_bytes()) == Some(index))
        .take(count)
        .collect();
    assert_eq!(
        keys.len(),
        count,
        "no {count} keys {prefix}N on server {index} of {n}"
    );
    keys
}

/// A pool `alpha` listening on `{listen}` (ketama, fnv1a_64) over `servers` (`host:port`, or a
/// unix socket path), named `mc1`, `mc2`, ... in order. `options` are extra lines, each
/// `  key: value\n`.
pub fn mc_pool(servers: &[String], options: &str) -> String {
    let mut yaml = format!(
        "alpha:\n  listen: {{listen}}\n  hash: fnv1a_64\n  distribution: ketama\n{options}  servers:\n"
    );
    for (i, s) in servers.iter().enumerate() {
        yaml.push_str(&format!("   - {s}:1 mc{}\n", i + 1));
    }
    yaml
}

/// A storage request: `<cmd> <key> <flags> 0 <len>[ <extra>]\r\n<data>\r\n` (`extra` is the cas
/// unique and/or `noreply`).
pub fn storage_request(cmd: &str, key: &str, flags: u32, data: &[u8], extra: &str) -> Vec<u8> {
    let mut req = format!("{cmd} {key} {flags} 0 {}", data.len()).into_bytes();
    if !extra.is_empty() {
        req.push(b' ');
        req.extend_from_slice(extra.as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(data);
    req.extend_from_slice(b"\r\n");
    req
}

/// One block of a retrieval reply: `VALUE <key> <flags> <len>\r\n<data>\r\n`.
pub fn value_block(key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut out = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// One block of a retrieval reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub key: String,
    pub flags: u32,
    pub cas: Option<u64>,
    pub data: Vec<u8>,
}

/// Parses a whole `VALUE ... END` reply into its blocks; panics on anything else.
pub fn parse_values(reply: &[u8]) -> Vec<Value> {
    let mut blocks = Vec::new();
    let mut rest = reply;
    loop {
        if rest == b"END\r\n" {
            return blocks;
        }
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or_else(|| panic!("no line in {}", show(reply)));
        let line = std::str::from_utf8(&rest[..nl.saturating_sub(1)]).expect("a text line");
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            parts[0] == "VALUE" && (parts.len() == 4 || parts.len() == 5),
            "not a VALUE line: {line:?} in {}",
            show(reply)
        );
        let len: usize = parts[3].parse().expect("length");
        assert!(rest.len() >= nl + 3 + len, "truncated: {}", show(reply));
        let data = rest[nl + 1..nl + 1 + len].to_vec();
        assert_eq!(
            &rest[nl + 1 + len..nl + 3 + len],
            b"\r\n",
            "{}",
            show(reply)
        );
        blocks.push(Value {
            key: parts[1].to_string(),
            flags: parts[2].parse().expect("flags"),
            cas: parts.get(4).map(|c| c.parse().expect("cas")),
            data,
        });
        rest = &rest[nl + 3 + len..];
    }
}
