//! The HTTP hooks over a pool's chain: the request hook (the pool's plugins, then the
//! location's), and the response hook (the same plugins in reverse). Everything a plugin
//! answers is checked before it reaches a head walnut writes: header names are names nginx
//! keeps, values and paths carry no CR, LF, NUL or other control byte, a path climbs nowhere,
//! a local answer's status is 200 to 599. A bad answer is the plugin's fault, contained by its
//! `on_error` policy. Headers walnut writes itself (framing, `Connection`, the forwarded ones)
//! are not a plugin's to set: such changes are left out.

use walnut_sdk::abi::{self, code};

use super::headers::{hop_by_hop, replaced_upstream};
use super::path;
use crate::plugin::Fault;
use crate::plugin::chain::{Decision, PoolPlugins, Slot, Trace, contain, location_chain};
use crate::plugin::{Hook, RequestTag};
use crate::stats::PoolStats;

/// What the plugins decided for an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpVerdict {
    /// Go on (with the changes in the `HttpEdits`).
    Continue,
    /// Answer locally (a refusal is a 403 with the plugin's message).
    Respond {
        status: u16,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// A `fail_closed` plugin failed: the client gets 500.
    Failed,
}

/// An HTTP request as the request hook sees it.
pub struct HttpCall<'a, F> {
    pub location: Option<usize>,
    pub method: &'a str,
    /// The normalized path the location was chosen by (nginx's `$uri`).
    pub path: &'a [u8],
    pub query: &'a [u8],
    /// The client's header lines.
    pub headers: F,
    /// The pool keeps header names with `_` (`underscores_in_headers`).
    pub underscores: bool,
    /// The request, for proxy-wasm filters (whose context lasts until `http_done`).
    pub tag: RequestTag,
}

/// The changes plugins made to an HTTP request, every one checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HttpEdits {
    pub path: Option<Vec<u8>>,
    pub query: Option<Vec<u8>>,
    /// The last change to each header name: a value to set, or `None` to remove it.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Bytes to choose the upstream server by.
    pub hash_key: Option<Vec<u8>>,
    /// A plugin removed Content-Length: a body filter may change the body's length, so the
    /// body goes upstream chunked.
    pub unframed: bool,
}

impl HttpEdits {
    pub fn clear(&mut self) {
        self.path = None;
        self.query = None;
        self.headers.clear();
        self.hash_key = None;
        self.unframed = false;
    }

    /// Whether header `name` was set or removed by a plugin.
    pub fn edited(&self, name: &[u8]) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Checks the changes `e` and applies them; nothing is applied when one is bad.
    fn apply(&mut self, e: &abi::HttpEdits<'_>, underscores: bool) -> Result<(), Fault> {
        if let Some(p) = e.path {
            check_path(p)?;
        }
        if let Some(q) = e.query {
            check_query(q)?;
        }
        for (name, value) in &e.headers {
            check_name(name, underscores)?;
            if let Some(v) = value {
                check_value(name, v)?;
            }
        }
        if let Some(p) = e.path {
            self.path = Some(p.to_vec());
        }
        if let Some(q) = e.query {
            self.query = Some(q.to_vec());
        }
        if let Some(k) = e.hash_key {
            self.hash_key = Some(k.to_vec());
        }
        for (name, value) in &e.headers {
            if walnut_writes(name) {
                self.unframed |= value.is_none() && name.eq_ignore_ascii_case(b"content-length");
                continue;
            }
            let value = value.map(<[u8]>::to_vec);
            match self
                .headers
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some(slot) => slot.1 = value,
                None => self.headers.push((name.to_vec(), value)),
            }
        }
        Ok(())
    }
}

/// A `fail_closed` plugin failed on an upstream's response: the client gets 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHookFailed;

/// A response head after the response hooks.
#[derive(Debug, Default)]
pub struct ResponseHeaders {
    /// `None` until a plugin changed a header line, then every line to write, in order.
    pub lines: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// A plugin removed Content-Length: a body filter may change the body's length, so the
    /// client gets it chunked (or close-delimited).
    pub unframed: bool,
}

impl PoolPlugins {
    /// Whether an HTTP request on `location` runs any plugin (HTTP pools keep one route per
    /// location, in location order).
    pub fn runs_http(&self, location: Option<usize>) -> bool {
        !self.pool.is_empty()
            || location.is_some_and(|l| self.routes.get(l).is_some_and(|r| !r.1.is_empty()))
    }

    /// Whether a plugin of the pool's chain or `location`'s may answer `hook`.
    pub fn may_http(&self, hook: Hook, location: Option<usize>) -> bool {
        self.http_slots(location).any(|s| s.may(hook))
    }

    /// The plugins an HTTP request on `location` runs: the pool's, then the location's.
    fn http_slots(&self, location: Option<usize>) -> impl Iterator<Item = &Slot> {
        let route = location.and_then(|l| self.routes.get(l)).map(|r| &r.1);
        self.pool.iter().chain(route.into_iter().flatten())
    }

    /// Runs the HTTP request hook over the pool's chain, then `location`'s. Each plugin sees
    /// the request as the ones before it left it; their changes accumulate in `edits`.
    pub fn http<'h, F, I>(
        &mut self,
        call: &HttpCall<'_, F>,
        edits: &mut HttpEdits,
        stats: &PoolStats,
    ) -> HttpVerdict
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'h [u8], &'h [u8])>,
    {
        self.http_traced(call, edits, stats, &mut ())
    }

    /// `http`, telling `trace` each plugin's decision.
    pub fn http_traced<'h, F, I>(
        &mut self,
        call: &HttpCall<'_, F>,
        edits: &mut HttpEdits,
        stats: &PoolStats,
        trace: &mut impl Trace,
    ) -> HttpVerdict
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'h [u8], &'h [u8])>,
    {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        for slot in location_chain(pool, routes, call.location) {
            let answer = slot.call_http(call.tag, Hook::Http, stats, |buf| {
                let client = (call.headers)()
                    .filter(|(name, _)| !edits.edited(name))
                    // Not the identity: it shortens the lines' lifetime to the edits' own.
                    .map(|(n, v)| -> (&[u8], &[u8]) { (n, v) });
                let set = edits
                    .headers
                    .iter()
                    .filter_map(|(n, v)| Some((&n[..], v.as_deref()?)));
                abi::encode_http_request(
                    buf,
                    call.method.as_bytes(),
                    edits.path.as_deref().unwrap_or(call.path),
                    edits.query.as_deref().unwrap_or(call.query),
                    client.chain(set),
                )
            });
            let fault = match answer {
                Ok(None) => {
                    trace.decided(slot.index, Decision::Skipped);
                    continue;
                }
                Ok(Some((code::CONTINUE, _))) => {
                    trace.decided(slot.index, Decision::Continue);
                    continue;
                }
                Ok(Some((code::REJECT, message))) => {
                    slot.rejected(stats);
                    trace.decided(slot.index, Decision::Rejected(&message));
                    let mut body = message;
                    body.push(b'\n');
                    return HttpVerdict::Respond {
                        status: 403,
                        headers: Vec::new(),
                        body,
                    };
                }
                Ok(Some((code::RESPOND, out))) => match local_answer(&out, call.underscores) {
                    Ok(LocalAnswer {
                        status,
                        headers,
                        body,
                    }) => {
                        slot.rejected(stats);
                        trace.decided(slot.index, Decision::Responded(status));
                        return HttpVerdict::Respond {
                            status,
                            headers,
                            body,
                        };
                    }
                    Err(fault) => fault,
                },
                Ok(Some((code::HTTP_REWRITE, out))) => match abi::decode_http_edits(&out) {
                    Some(e) => match edits.apply(&e, call.underscores) {
                        Ok(()) => {
                            slot.rewrote(stats);
                            trace.decided(slot.index, Decision::Edited);
                            continue;
                        }
                        Err(fault) => fault,
                    },
                    None => Fault::Protocol("sent malformed HTTP request changes".into()),
                },
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to an HTTP request"))
                }
                Err(fault) => fault,
            };
            let open = contain(slot, pool_name, &fault, stats);
            trace.decided(slot.index, Decision::Failed(&fault, slot.compiled.on_error));
            if !open {
                return HttpVerdict::Failed;
            }
        }
        HttpVerdict::Continue
    }

    /// Runs the HTTP response hook over `location`'s chain, then the pool's (the request
    /// hook's order reversed), on an upstream's `status` and header lines. Each plugin sees the
    /// headers as the ones before left them; `out` holds the result once one changed them.
    /// `Err` when a `fail_closed` plugin failed (the client gets 502).
    #[allow(clippy::too_many_arguments)]
    pub fn http_response<'h, I>(
        &mut self,
        location: Option<usize>,
        tag: RequestTag,
        status: u16,
        headers: impl Fn() -> I,
        underscores: bool,
        out: &mut ResponseHeaders,
        stats: &PoolStats,
    ) -> Result<(), ResponseHookFailed>
    where
        I: Iterator<Item = (&'h [u8], &'h [u8])>,
    {
        let content_length = |name: &[u8]| name.eq_ignore_ascii_case(b"content-length");
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        for slot in location_chain(pool, routes, location).rev() {
            let answer = slot.call_http(tag, Hook::HttpResponse, stats, |buf| match &out.lines {
                Some(lines) => abi::encode_http_response_head(
                    buf,
                    status,
                    lines.iter().map(|(n, v)| (&n[..], &v[..])),
                ),
                None => abi::encode_http_response_head(buf, status, headers()),
            });
            let fault = match answer {
                Ok(None) | Ok(Some((code::CONTINUE, _))) => continue,
                Ok(Some((code::HTTP_REWRITE, ops))) => match abi::decode_header_ops(&ops) {
                    Some(ops) => {
                        let lines = out.lines.get_or_insert_with(|| {
                            headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
                        });
                        match apply_ops(lines, &ops, underscores) {
                            Ok(()) => {
                                out.unframed |=
                                    ops.iter().any(|&(op, n, _)| op == 0 && content_length(n));
                                slot.rewrote(stats);
                                continue;
                            }
                            Err(fault) => fault,
                        }
                    }
                    None => Fault::Protocol("sent malformed response header changes".into()),
                },
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to an HTTP response"))
                }
                Err(fault) => fault,
            };
            if !contain(slot, pool_name, &fault, stats) {
                return Err(ResponseHookFailed);
            }
        }
        Ok(())
    }
}

impl PoolPlugins {
    /// Ends HTTP request `tag`, answered with `status` (0: none), in the proxy-wasm filters of
    /// the pool's chain and `location`'s (their `on_done`, `on_log`, `on_delete`). A fault here
    /// only replaces the instance: the client has its answer.
    pub fn http_done(
        &mut self,
        location: Option<usize>,
        tag: RequestTag,
        status: u16,
        stats: &PoolStats,
    ) {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        for slot in location_chain(pool, routes, location) {
            if let Err(fault) = slot.http_done(tag, status) {
                contain(slot, pool_name, &fault, stats);
            }
        }
    }

    /// Whether the pool's chain or `location`'s holds a proxy-wasm filter.
    pub fn runs_proxy_wasm(&self, location: Option<usize>) -> bool {
        self.http_slots(location).any(|s| s.is_proxy_wasm())
    }
}

/// A local answer a plugin asked for: status, header lines, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAnswer {
    pub status: u16,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// A plugin's local answer, checked.
pub(super) fn local_answer(out: &[u8], underscores: bool) -> Result<LocalAnswer, Fault> {
    let r = abi::decode_response(out)
        .ok_or_else(|| Fault::Protocol("sent a malformed HTTP response".into()))?;
    if !(200..=599).contains(&r.status) {
        return Err(Fault::Protocol(format!(
            "answered with status {} (200 to 599 may be answered)",
            r.status
        )));
    }
    let mut headers = Vec::with_capacity(r.headers.len());
    for (name, value) in &r.headers {
        check_name(name, underscores)?;
        check_value(name, value)?;
        if !walnut_writes(name) {
            headers.push((name.to_vec(), value.to_vec()));
        }
    }
    Ok(LocalAnswer {
        status: r.status,
        headers,
        body: r.body.to_vec(),
    })
}

/// Applies a response hook's header operations to `lines`: remove every line of a name (0),
/// set one (1: the first line of that name replaced, the others removed), add one (2). All
/// are checked before any is applied.
fn apply_ops(
    lines: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ops: &abi::HeaderOps<'_>,
    underscores: bool,
) -> Result<(), Fault> {
    for (op, name, value) in ops {
        check_name(name, underscores)?;
        if *op != 0 {
            check_value(name, value)?;
        }
    }
    for &(op, name, value) in ops {
        if walnut_writes(name) {
            continue;
        }
        let same = |n: &Vec<u8>| n.eq_ignore_ascii_case(name);
        match op {
            0 => lines.retain(|(n, _)| !same(n)),
            1 => match lines.iter().position(|(n, _)| same(n)) {
                Some(first) => {
                    lines[first].1 = value.to_vec();
                    let mut i = 0;
                    lines.retain(|(n, _)| {
                        i += 1;
                        i - 1 == first || !same(n)
                    });
                }
                None => lines.push((name.to_vec(), value.to_vec())),
            },
            _ => lines.push((name.to_vec(), value.to_vec())),
        }
    }
    Ok(())
}

/// Headers walnut writes itself: a plugin's changes to them are left out.
fn walnut_writes(name: &[u8]) -> bool {
    hop_by_hop(name, std::iter::empty()) || replaced_upstream(name)
}

/// A header name a plugin may write: letters, digits and `-` (and `_` where the pool keeps
/// such names), as nginx keeps them; 1 to 256 bytes.
fn check_name(name: &[u8], underscores: bool) -> Result<(), Fault> {
    let ok = (1..=256).contains(&name.len())
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || (underscores && b == b'_'));
    match ok {
        true => Ok(()),
        false => Err(Fault::Protocol(format!(
            "wrote header name {:?}, which is not one nginx keeps (letters, digits, -{})",
            String::from_utf8_lossy(name),
            if underscores { ", _" } else { "" }
        ))),
    }
}

/// A header value a plugin may write: no control byte but a tab (no CR, LF or NUL).
fn check_value(name: &[u8], value: &[u8]) -> Result<(), Fault> {
    match value
        .iter()
        .position(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        None => Ok(()),
        Some(at) => Err(Fault::Protocol(format!(
            "wrote a control byte (0x{:02x}) in the value of header {:?}",
            value[at],
            String::from_utf8_lossy(name)
        ))),
    }
}

/// A path a plugin may send: it starts with `/`, holds no space, control byte, `?` or `#`, no
/// `.` or `..` segment, no `//`, no escaped dot or slash, and no bad or NUL escape. The upstream
/// then sees the path the plugin meant: nothing in it moves when it is normalized.
fn check_path(p: &[u8]) -> Result<(), Fault> {
    let bad = |why: &str| {
        Err(Fault::Protocol(format!(
            "set path {:?}, which {why}",
            String::from_utf8_lossy(p)
        )))
    };
    if p.first() != Some(&b'/') {
        return bad("does not start with /");
    }
    if p.iter()
        .any(|&b| b <= b' ' || b == 0x7f || b == b'#' || b == b'?')
    {
        return bad("holds a space, a control byte, ? or #");
    }
    let segments = p[1..].split(|&b| b == b'/');
    let last = p[1..].split(|&b| b == b'/').count() - 1;
    for (i, segment) in segments.enumerate() {
        if matches!(segment, b"." | b"..") || (segment.is_empty() && i < last) {
            return bad("has a . or .. segment or a //");
        }
    }
    let escaped_dot_or_slash =
        |w: &[u8]| w[0] == b'%' && w[1] == b'2' && matches!(w[2], b'e' | b'E' | b'f' | b'F');
    if p.windows(3).any(escaped_dot_or_slash) {
        return bad("escapes a dot or a slash");
    }
    let mut normal = Vec::new();
    match path::normalize(p, &mut normal) {
        Ok(_) => Ok(()),
        Err(_) => bad("holds a bad or NUL escape"),
    }
}

/// A query a plugin may send: no space, control byte or `#`.
fn check_query(q: &[u8]) -> Result<(), Fault> {
    match q.iter().any(|&b| b <= b' ' || b == 0x7f || b == b'#') {
        false => Ok(()),
        true => Err(Fault::Protocol(format!(
            "set query {:?}, which holds a space, a control byte or #",
            String::from_utf8_lossy(q)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_queries_and_headers_that_would_break_a_head_are_faults() {
        for p in [&b"/"[..], b"/api/v1/users%20x", b"/a/", b"/a.b/..c"] {
            assert!(check_path(p).is_ok(), "{}", String::from_utf8_lossy(p));
        }
        for p in [
            &b"api"[..],
            b"/a\r\nX-Injected: 1",
            b"/a b",
            b"/a\0",
            b"/a#frag",
            b"/a?b",
            b"/../etc/passwd",
            b"/public/../admin",
            b"/a/./b",
            b"/a//b",
            b"/a/%2e%2e/b",
            b"/a%2Fb",
            b"/a%00",
            b"/a%zz",
        ] {
            assert!(check_path(p).is_err(), "{}", String::from_utf8_lossy(p));
        }
        assert!(check_query(b"a=1&b=%0d").is_ok());
        assert!(check_query(b"a=1\r\nHost: evil").is_err());
        assert!(check_name(b"X-User", false).is_ok());
        for n in [
            &b""[..],
            b"X User",
            b"X:Y",
            b"X\r\nY",
            b"X_User",
            b"X\xc3\xa9",
        ] {
            assert!(check_name(n, false).is_err(), "{n:?}");
        }
        assert!(check_name(b"X_User", true).is_ok());
        assert!(check_value(b"X", b"a\tb c").is_ok());
        for v in [&b"a\rb"[..], b"a\nb", b"a\0b", b"a\x7f"] {
            assert!(check_value(b"X", v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn a_bad_edit_applies_nothing_and_walnuts_own_headers_are_left_out() {
        let mut edits = HttpEdits::default();
        let bad = abi::HttpEdits {
            path: Some(b"/ok"),
            headers: vec![(b"X-A", Some(b"1\r\nX-B: 2"))],
            ..Default::default()
        };
        assert!(edits.apply(&bad, false).is_err());
        assert_eq!(edits, HttpEdits::default());
        let good = abi::HttpEdits {
            headers: vec![
                (b"Content-Length", Some(b"0")),
                (b"X-Real-IP", Some(b"1.2.3.4")),
                (b"X-A", Some(b"1")),
            ],
            ..Default::default()
        };
        edits.apply(&good, false).unwrap();
        assert_eq!(edits.headers, vec![(b"X-A".to_vec(), Some(b"1".to_vec()))]);
    }

    #[test]
    fn response_header_operations() {
        let mut lines = vec![
            (b"A".to_vec(), b"1".to_vec()),
            (b"B".to_vec(), b"2".to_vec()),
            (b"a".to_vec(), b"3".to_vec()),
        ];
        let ops: abi::HeaderOps<'_> = vec![
            (1, b"a", b"9"),
            (2, b"C", b"4"),
            (0, b"b", b""),
            (2, b"Transfer-Encoding", b"chunked"),
        ];
        apply_ops(&mut lines, &ops, false).unwrap();
        assert_eq!(
            lines,
            vec![
                (b"A".to_vec(), b"9".to_vec()),
                (b"C".to_vec(), b"4".to_vec())
            ]
        );
        let bad: abi::HeaderOps<'_> = vec![(2, b"D", b"5"), (2, b"E", b"x\r\nSet-Cookie: a=b")];
        assert!(apply_ops(&mut lines, &bad, false).is_err());
        assert_eq!(lines.len(), 2, "nothing applied");
    }
}
