//! nginx's `hash KEY consistent` continuum (ngx_http_upstream_hash_module, compatible with
//! Cache::Memcached::Fast), so an upstream moved from nginx keeps each key on its server.
//!
//! Each server gets `160 * weight` points. Its host and port are split from the server's text
//! as written (`host:port`; `unix:path` has no port), and point `j` is
//! `crc32(host, NUL, port, point j-1 as 4 little-endian bytes)`, the first chained from 0.
//! Points are sorted, and of equal points the first (in server order) is kept. A key goes to
//! the first point at or after `crc32(key)`, wrapping to the first point; when that point's
//! server is tried or down, the next point is taken, for at most 20 steps over the request's
//! tries, after which nginx falls back to round robin.

use crate::config::UpstreamServer;
use crate::hash::HashKind;

/// Points per unit of weight.
const POINTS: u32 = 160;
/// Ring steps a request may take (over all its tries) before round robin takes over.
pub const MAX_STEPS: u32 = 20;

/// The points of an upstream's servers, sorted.
#[derive(Debug, Default)]
pub struct Continuum {
    /// `(hash, name)`: `name` indexes `names`.
    points: Vec<(u32, u16)>,
    /// Servers written with the same text share a name, and its points.
    names: Vec<Vec<usize>>,
}

/// Where a request stands on the continuum, kept across its tries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    point: usize,
    /// Points stepped over so far (nginx's `hp->tries`).
    steps: u32,
}

impl Continuum {
    pub fn build(servers: &[UpstreamServer]) -> Continuum {
        let mut names: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            match names.iter_mut().find(|(text, _)| *text == s.text) {
                Some((_, same)) => same.push(i),
                None => names.push((&s.text, vec![i])),
            }
        }
        let mut points = Vec::new();
        let mut buf = Vec::new();
        for s in servers {
            let name = names.iter().position(|(t, _)| *t == s.text).unwrap_or(0) as u16;
            let (host, port) = host_and_port(&s.text);
            buf.clear();
            buf.extend_from_slice(host);
            buf.push(0);
            buf.extend_from_slice(port);
            let base = buf.len();
            let mut prev = 0u32;
            for _ in 0..POINTS * s.weight {
                buf.truncate(base);
                buf.extend_from_slice(&prev.to_le_bytes());
                prev = HashKind::Crc32a.hash(&buf);
                points.push((prev, name));
            }
        }
        // Stable, as glibc's qsort (a merge sort) is: of equal points the earlier server's stays.
        points.sort_by_key(|p| p.0);
        points.dedup_by_key(|p| p.0);
        Continuum {
            points,
            names: names.into_iter().map(|(_, same)| same).collect(),
        }
    }

    /// The request's starting point for `key`: the first point at or after its crc32.
    pub fn start(&self, key: &[u8]) -> Cursor {
        let hash = HashKind::Crc32a.hash(key);
        Cursor {
            point: self.points.partition_point(|p| p.0 < hash),
            steps: 0,
        }
    }

    /// The first server, walking from `cursor`, that `usable` accepts; the cursor stays on its
    /// point, so a retry steps on from there. Of servers written the same way, the first usable
    /// one is taken (nginx weighs between them). `None` once the request has stepped over
    /// `MAX_STEPS` points (round robin then).
    pub fn next(&self, cursor: &mut Cursor, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() || cursor.steps > MAX_STEPS {
            return None;
        }
        loop {
            let (_, name) = self.points[cursor.point % self.points.len()];
            let found = self.names[usize::from(name)]
                .iter()
                .copied()
                .find(|&i| usable(i));
            if found.is_some() {
                return found;
            }
            cursor.point += 1;
            cursor.steps += 1;
            if cursor.steps > MAX_STEPS {
                return None;
            }
        }
    }

    /// The hash of the point `cursor` stands on.
    pub fn point(&self, cursor: &Cursor) -> Option<u32> {
        (!self.points.is_empty()).then(|| self.points[cursor.point % self.points.len()].0)
    }

    #[cfg(test)]
    fn points(&self) -> &[(u32, u16)] {
        &self.points
    }
}

/// nginx's split of a server's text: `unix:PATH` is all host; else the digits after the last
/// `:` are the port; else it is all host.
fn host_and_port(text: &str) -> (&[u8], &[u8]) {
    let b = text.as_bytes();
    if b.len() >= 5 && b[..5].eq_ignore_ascii_case(b"unix:") {
        return (&b[5..], b"");
    }
    let digits = b.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    match b.len().checked_sub(digits + 1) {
        Some(colon) if b[colon] == b':' => (&b[..colon], &b[colon + 1..]),
        _ => (b, b""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn servers(list: &[(&str, u32)]) -> Vec<UpstreamServer> {
        list.iter()
            .map(|(text, weight)| UpstreamServer {
                text: text.to_string(),
                addr: "127.0.0.1:1".parse().unwrap(),
                weight: *weight,
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
            })
            .collect()
    }

    #[test]
    fn points_chain_crc32_over_host_nul_port_and_the_previous_point() {
        let c = Continuum::build(&servers(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 2)]));
        assert_eq!(c.points().len(), 480);
        let first = HashKind::Crc32a.hash(b"10.0.0.1\x0080\x00\x00\x00\x00");
        let mut second_input = b"10.0.0.1\x0080".to_vec();
        second_input.extend_from_slice(&first.to_le_bytes());
        let second = HashKind::Crc32a.hash(&second_input);
        assert!(c.points().contains(&(first, 0)));
        assert!(c.points().contains(&(second, 0)));
        assert!(c.points().windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn host_and_port_split_as_nginx_does() {
        assert_eq!(
            host_and_port("127.0.0.1:8081"),
            (&b"127.0.0.1"[..], &b"8081"[..])
        );
        assert_eq!(
            host_and_port("example.com"),
            (&b"example.com"[..], &b""[..])
        );
        assert_eq!(host_and_port("unix:/tmp/s:1"), (&b"/tmp/s:1"[..], &b""[..]));
        assert_eq!(host_and_port("[::1]:80"), (&b"[::1]"[..], &b"80"[..]));
    }

    #[test]
    fn keys_go_to_the_first_point_at_or_after_their_hash_and_wrap() {
        let c = Continuum::build(&servers(&[("a:1", 1), ("b:2", 1), ("c:3", 1)]));
        let all = |_: usize| true;
        for key in [&b"/k1"[..], b"/k2", b"x", b""] {
            let hash = HashKind::Crc32a.hash(key);
            let want = c
                .points()
                .iter()
                .find(|p| p.0 >= hash)
                .unwrap_or(&c.points()[0])
                .1 as usize;
            let mut cur = c.start(key);
            assert_eq!(c.next(&mut cur, all), Some(want));
        }
    }

    #[test]
    fn down_servers_are_stepped_over_for_at_most_twenty_points() {
        let c = Continuum::build(&servers(&[("a:1", 1), ("b:2", 1)]));
        let mut cur = c.start(b"key");
        let first = c.next(&mut cur, |_| true).unwrap();
        let other = c.next(&mut cur, |i| i != first).unwrap();
        assert_ne!(first, other);
        // Nothing usable: 20 steps, then round robin's turn.
        let mut cur = c.start(b"key");
        assert_eq!(c.next(&mut cur, |_| false), None);
        assert_eq!(cur.steps, MAX_STEPS + 1);
    }
}
