//! A proxy-wasm header map (names lowercased, pseudo-headers first, as Envoy presents them) kept
//! in one reused byte arena, its wire format, and what changed in it: the request changes as
//! walnut's `HttpEdits`, the response changes as walnut's header operations, so both go
//! through the very checks a walnut plugin's answers go through.

use std::ops::Range;

use walnut_sdk::abi::{self, Writer};

/// The most bytes a filter may make one map (or a local response's body) hold.
pub(super) const MAP_BYTES_MAX: usize = 1 << 20;

/// Header lines, names and values in one arena, reused from request to request.
#[derive(Default)]
pub(crate) struct HeaderMap {
    bytes: Vec<u8>,
    pairs: Vec<(Range<u32>, Range<u32>)>,
}

/// The map grew past `MAP_BYTES_MAX`.
#[derive(Debug)]
pub(super) struct TooLarge;

impl HeaderMap {
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.pairs.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.pairs.len()
    }

    fn put(&mut self, b: &[u8], lower: bool) -> Result<Range<u32>, TooLarge> {
        if self.bytes.len() + b.len() > MAP_BYTES_MAX {
            return Err(TooLarge);
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        if lower {
            self.bytes[start..].make_ascii_lowercase();
        }
        Ok(start as u32..self.bytes.len() as u32)
    }

    /// Adds a line; the name is lowercased.
    pub(super) fn add(&mut self, name: &[u8], value: &[u8]) -> Result<(), TooLarge> {
        let n = self.put(name, true)?;
        let v = self.put(value, false)?;
        self.pairs.push((n, v));
        Ok(())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|(n, v)| {
            (
                &self.bytes[n.start as usize..n.end as usize],
                &self.bytes[v.start as usize..v.end as usize],
            )
        })
    }

    /// The first value of `name` (any case).
    pub(super) fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub(super) fn remove(&mut self, name: &[u8]) {
        let bytes = &self.bytes;
        self.pairs
            .retain(|(n, _)| !bytes[n.start as usize..n.end as usize].eq_ignore_ascii_case(name));
    }

    /// Sets `name` to `value`: its first line gets the value, its others go; a new line if none.
    pub(super) fn replace(&mut self, name: &[u8], value: &[u8]) -> Result<(), TooLarge> {
        let same = |bytes: &[u8], n: &Range<u32>| {
            bytes[n.start as usize..n.end as usize].eq_ignore_ascii_case(name)
        };
        let Some(first) = self.pairs.iter().position(|(n, _)| same(&self.bytes, n)) else {
            return self.add(name, value);
        };
        let v = self.put(value, false)?;
        self.pairs[first].1 = v;
        let bytes = &self.bytes;
        let mut i = 0;
        self.pairs.retain(|(n, _)| {
            i += 1;
            i - 1 == first || !same(bytes, n)
        });
        Ok(())
    }

    /// The map in proxy-wasm's wire format: the count, each name's and value's length, then
    /// each name and value with a NUL after it.
    pub(super) fn serialize(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&(self.pairs.len() as u32).to_le_bytes());
        for (n, v) in self.iter() {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in self.iter() {
            out.extend_from_slice(n);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
    }

    /// Replaces the map with the lines of `wire` (proxy-wasm's format); `None` when malformed.
    pub(super) fn deserialize(&mut self, wire: &[u8]) -> Option<Result<(), TooLarge>> {
        let pairs = parse_pairs(wire)?;
        self.clear();
        for (n, v) in pairs {
            if let Err(e) = self.add(n, v) {
                return Some(Err(e));
            }
        }
        Some(Ok(()))
    }

    /// The values of `name` (any case), in order.
    fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether `name` has other values here than in `other`.
    fn differs(&self, other: &HeaderMap, name: &[u8]) -> bool {
        !self.values(name).eq(other.values(name))
    }

    /// Every name of `self` and `before`, once each (first spelling), pseudo-headers left out.
    fn names<'a>(&'a self, before: &'a HeaderMap) -> impl Iterator<Item = &'a [u8]> + 'a {
        let all = || before.iter().chain(self.iter()).map(|(n, _)| n);
        all().enumerate().filter_map(move |(i, n)| {
            let first = !all().take(i).any(|m| m.eq_ignore_ascii_case(n));
            (first && !n.starts_with(b":")).then_some(n)
        })
    }
}

/// Parses proxy-wasm's serialized header pairs, without copying.
pub(super) fn parse_pairs(wire: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if wire.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(wire.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let n = u32_at(0)?;
    if n > wire.len() / 8 {
        return None;
    }
    let mut data = 4 + n * 8;
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let (nl, vl) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
        let name = wire.get(data..data.checked_add(nl)?)?;
        data += nl + 1;
        let value = wire.get(data..data.checked_add(vl)?)?;
        data += vl + 1;
        pairs.push((name, value));
    }
    (data <= wire.len()).then_some(pairs)
}

/// A change a filter made that walnut cannot carry out (the caller makes it a fault).
pub(super) type Refused = String;

/// What changed from `before` to `after` in a request's map, as walnut's `HttpEdits` bytes
/// into `out`; false when nothing changed. `:path` is walnut's path and query joined by `?`;
/// a changed `:authority` sets `Host`.
pub(super) fn request_edits(
    before: &HeaderMap,
    after: &HeaderMap,
    out: &mut Vec<u8>,
) -> Result<bool, Refused> {
    for fixed in [&b":method"[..], b":scheme"] {
        if after.differs(before, fixed) {
            return Err(format!(
                "changed {}, which walnut does not let a filter change",
                String::from_utf8_lossy(fixed)
            ));
        }
    }
    let mut edits = abi::HttpEdits::default();
    let (old_path, new_path) = (before.get(b":path"), after.get(b":path"));
    if new_path != old_path {
        let Some(new_path) = new_path else {
            return Err("removed :path".into());
        };
        let (np, nq) = split_path(new_path);
        let (op, oq) = split_path(old_path.unwrap_or_default());
        if np != op {
            edits.path = Some(np);
        }
        if nq != oq {
            edits.query = Some(nq);
        }
    }
    // Values joined with ", " (a header sent twice means its values listed once).
    let mut joined: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut changes: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
    let authority = after
        .differs(before, b":authority")
        .then(|| after.get(b":authority"));
    if let Some(a) = authority {
        changes.push((b"host", a));
    }
    for name in after.names(before) {
        if name.eq_ignore_ascii_case(b"host") && authority.is_some() {
            continue;
        }
        if !after.differs(before, name) {
            continue;
        }
        let mut values = after.values(name);
        match (values.next(), values.next()) {
            (None, _) => changes.push((name, None)),
            (Some(v), None) => changes.push((name, Some(v))),
            (Some(_), Some(_)) => {
                let all: Vec<&[u8]> = after.values(name).collect();
                joined.push((changes.len(), all.join(&b", "[..])));
                changes.push((name, None));
            }
        }
    }
    edits.headers = changes;
    for (at, value) in &joined {
        edits.headers[*at].1 = Some(value);
    }
    if edits.path.is_none() && edits.query.is_none() && edits.headers.is_empty() {
        return Ok(false);
    }
    abi::encode_http_edits(out, &edits);
    Ok(true)
}

/// `:path` as walnut's path and query.
fn split_path(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().position(|&b| b == b'?') {
        Some(q) => (&p[..q], &p[q + 1..]),
        None => (p, b""),
    }
}

/// What changed from `before` to `after` in a response's map, as walnut's header operations
/// into `out`; false when nothing changed.
pub(super) fn response_ops(
    before: &HeaderMap,
    after: &HeaderMap,
    out: &mut Vec<u8>,
) -> Result<bool, Refused> {
    if after.differs(before, b":status") {
        return Err("changed :status, which walnut does not let a filter change".into());
    }
    let mut ops: Vec<(u8, &[u8], &[u8])> = Vec::new();
    for name in after.names(before) {
        if !after.differs(before, name) {
            continue;
        }
        let mut values = after.values(name);
        match (values.next(), values.next()) {
            (None, _) => ops.push((0, name, b"")),
            (Some(v), None) => ops.push((1, name, v)),
            (Some(_), Some(_)) => {
                ops.push((0, name, b""));
                ops.extend(after.values(name).map(|v| (2, name, v)));
            }
        }
    }
    if ops.is_empty() {
        return Ok(false);
    }
    abi::encode_header_ops(out, ops.into_iter());
    Ok(true)
}

/// A local response as walnut's `RESPOND` answer: the status, the header lines, the body.
pub(super) fn local_response(out: &mut Vec<u8>, status: u16, headers: &HeaderMap, body: &[u8]) {
    let mut w = Writer(out);
    w.u16(status);
    w.u16(headers.len().min(u16::MAX as usize) as u16);
    for (n, v) in headers.iter().take(u16::MAX as usize) {
        w.bytes(n).bytes(v);
    }
    w.long_bytes(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::default();
        for (n, v) in lines {
            m.add(n.as_bytes(), v.as_bytes()).unwrap();
        }
        m
    }

    #[test]
    fn the_wire_format_round_trips() {
        let m = map(&[(":path", "/a"), ("X-A", "1"), ("x-b", "")]);
        let mut wire = Vec::new();
        m.serialize(&mut wire);
        assert_eq!(&wire[..4], &3u32.to_le_bytes());
        let pairs = parse_pairs(&wire).unwrap();
        assert_eq!(
            pairs,
            vec![(&b":path"[..], &b"/a"[..]), (b"x-a", b"1"), (b"x-b", b"")]
        );
        assert!(parse_pairs(&wire[..wire.len() - 3]).is_none());
        assert!(parse_pairs(&[255, 255, 255, 255]).is_none());
    }

    #[test]
    fn replace_keeps_the_first_line_and_drops_the_others() {
        let mut m = map(&[("a", "1"), ("b", "2"), ("A", "3")]);
        m.replace(b"A", b"9").unwrap();
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![(&b"a"[..], &b"9"[..]), (b"b", b"2")]
        );
        m.remove(b"B");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn request_changes_become_walnut_edits() {
        let before = map(&[
            (":method", "GET"),
            (":path", "/a?x=1"),
            (":authority", "h"),
            ("host", "h"),
            ("x-gone", "1"),
            ("x-same", "1"),
        ]);
        let mut after = map(&[
            (":method", "GET"),
            (":path", "/b?x=1"),
            (":authority", "h2"),
            ("host", "h"),
            ("x-same", "1"),
            ("x-new", "1"),
            ("x-new", "2"),
        ]);
        let mut out = Vec::new();
        assert!(request_edits(&before, &after, &mut out).unwrap());
        let e = abi::decode_http_edits(&out).unwrap();
        assert_eq!(e.path, Some(&b"/b"[..]));
        assert_eq!(e.query, None);
        assert_eq!(
            e.headers,
            vec![
                (&b"host"[..], Some(&b"h2"[..])),
                (b"x-gone", None),
                (b"x-new", Some(b"1, 2"))
            ]
        );
        after.replace(b":method", b"POST").unwrap();
        assert!(request_edits(&before, &after, &mut out).is_err());
        out.clear();
        assert!(!request_edits(&before, &before, &mut out).unwrap());
    }

    #[test]
    fn response_changes_become_walnut_operations() {
        let before = map(&[(":status", "200"), ("a", "1"), ("b", "2")]);
        let after = map(&[
            (":status", "200"),
            ("a", "1"),
            ("c", "3"),
            ("d", "4"),
            ("d", "5"),
        ]);
        let mut out = Vec::new();
        assert!(response_ops(&before, &after, &mut out).unwrap());
        let ops = abi::decode_header_ops(&out).unwrap();
        assert_eq!(
            ops,
            vec![
                (0, &b"b"[..], &b""[..]),
                (1, b"c", b"3"),
                (0, b"d", b""),
                (2, b"d", b"4"),
                (2, b"d", b"5")
            ]
        );
    }
}
