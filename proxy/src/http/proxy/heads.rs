//! The heads walnut writes: the request head for an upstream (the target as the client sent
//! it, unless a plugin changed it) and the response head for the client.

use super::Session;
use crate::http::body::Out;
use crate::http::date::put_date;
use crate::http::head::Framing;
use crate::http::headers::{self, hop_by_hop, put, put_number, replaced_upstream};

impl Session {
    /// Writes the request head for an upstream into `out`.
    pub(super) fn upstream_head(
        &mut self,
        method_override: Option<&str>,
        framing: Framing,
        server: &str,
    ) {
        let (hb, h, e) = (&self.ws.head_bytes[..], &self.ws.head, &self.ws.edits);
        let method = method_override.map_or(&hb[h.method.clone()], str::as_bytes);
        let out = &mut self.ws.out;
        out.clear();
        out.extend_from_slice(method);
        out.push(b' ');
        // `http://host` and `http://host?q` have an empty path, sent as `/`.
        let path = e.path.as_deref().unwrap_or(&hb[h.path.clone()]);
        if path.is_empty() {
            out.push(b'/');
        }
        if e.path.is_none() && e.query.is_none() {
            // The target as the client sent it (nginx's `proxy_pass` without a URI part).
            out.extend_from_slice(&hb[h.origin.clone()]);
        } else {
            out.extend_from_slice(path);
            match &e.query {
                Some(q) if !q.is_empty() => {
                    out.push(b'?');
                    out.extend_from_slice(q);
                }
                Some(_) => {}
                None if h.has_query => {
                    out.push(b'?');
                    out.extend_from_slice(&hb[h.query.clone()]);
                }
                None => {}
            }
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let all = || {
            h.headers
                .iter()
                .map(|(n, v)| (&hb[n.clone()], &hb[v.clone()]))
        };
        let mut host = false;
        if let Some(a) = &h.authority
            && !e.edited(b"host")
        {
            // An absolute-form target names the host (its Host line was dropped when parsed).
            put(out, b"Host", &hb[a.clone()]);
            host = true;
        }
        for (n, v) in all() {
            if hop_by_hop(n, all()) || replaced_upstream(n) || e.edited(n) {
                continue;
            }
            host |= n.eq_ignore_ascii_case(b"host");
            put(out, n, v);
        }
        for (n, v) in &e.headers {
            if let Some(v) = v
                && !hop_by_hop(n, std::iter::empty())
            {
                host |= n.eq_ignore_ascii_case(b"host");
                put(out, n, v);
            }
        }
        if !host {
            put(out, b"Host", server.as_bytes());
        }
        headers::put_forwarded(out, &self.remote_text, all());
        match framing {
            Framing::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                put_number(out, n);
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::None | Framing::Close => {}
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Writes the response head for the client into `out`, from the upstream's head: the first
    /// `len` bytes of `up`. For a HEAD client (`client_head`) only a Content-Length is kept: no
    /// body follows.
    pub(super) fn response_head(
        &mut self,
        len: usize,
        framing: Framing,
        out_mode: Out,
        keep: bool,
        client_head: bool,
    ) {
        let ws = &mut self.ws;
        let (raw, r, out) = (&ws.up[..len], &ws.resp, &mut ws.out);
        out.clear();
        status_line(out, r.status, &raw[r.reason.clone()]);
        let dated = match &ws.resp_headers.lines {
            // As the response hooks left them.
            Some(lines) => {
                let all = || lines.iter().map(|(n, v)| (&n[..], &v[..]));
                put_response_lines(out, all, framing, r.status);
                all().any(|(n, _)| n.eq_ignore_ascii_case(b"date"))
            }
            None => {
                let all = || {
                    r.headers
                        .iter()
                        .map(|(n, v)| (&raw[n.clone()], &raw[v.clone()]))
                };
                put_response_lines(out, all, framing, r.status);
                r.dated
            }
        };
        if !dated {
            put_date(out);
        }
        match (framing, out_mode) {
            (Framing::Length(n), _) => {
                out.extend_from_slice(b"Content-Length: ");
                put_number(out, n);
                out.extend_from_slice(b"\r\n");
            }
            (Framing::Chunked | Framing::Close, Out::Chunked) if !client_head => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
            }
            _ => {}
        }
        connection_header(out, keep, ws.head.minor);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes an upstream's header lines `all` for the client: hop-by-hop ones left out, but a
/// body-less answer's (HEAD, 304) Content-Length.
fn put_response_lines<'a, I>(out: &mut Vec<u8>, all: impl Fn() -> I, framing: Framing, status: u16)
where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    for (n, v) in all() {
        if hop_by_hop(n, all()) {
            if framing == Framing::None
                && n.eq_ignore_ascii_case(b"content-length")
                && status != 204
            {
                put(out, n, v);
            }
            continue;
        }
        put(out, n, v);
    }
}

/// `HTTP/1.1 <status> <reason>\r\n`
pub(super) fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_number(out, status.into());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// `Connection: close` when closing; `Connection: keep-alive` for an HTTP/1.0 client kept.
pub(super) fn connection_header(out: &mut Vec<u8>, keep: bool, minor: u8) {
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}
