//! A client's request head. The request line is read here, as nginx reads it: any `HTTP/1.x`
//! is served as HTTP/1.1 (`HTTP/2` and up get 505), and an absolute-form target
//! (`GET http://host/p`) is taken, its authority standing for `Host`. The header lines are
//! read by httparse. Header names holding anything but letters, digits and `-` (and `_` when
//! `underscores_in_headers` is on) are dropped as nginx drops them, so `X_Real_IP` never
//! reaches an upstream beside the `X-Real-IP` walnut writes.

use std::ops::Range;

use super::{Framing, MAX_HEAD, MAX_HEADERS, MAX_URI, Refusal, content_length};
use crate::http::headers::{has_token, trim};

/// A parsed request head. Ranges index the head's bytes (kept by the caller).
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Range<usize>,
    /// The target from its path on, as forwarded: `/p?q` (for `http://h/p?q` too); empty for
    /// `http://h`, which is forwarded as `/`.
    pub origin: Range<usize>,
    /// The path part of the target (may be empty, see `origin`).
    pub path: Range<usize>,
    /// Without the `?`; empty when absent.
    pub query: Range<usize>,
    pub has_query: bool,
    /// The `host[:port]` of an absolute-form target, which replaces `Host` (RFC 9112 3.2.2).
    pub authority: Option<Range<usize>>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (and later 1.x).
    pub minor: u8,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub framing: Option<Framing>,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Parses the head at the start of `buf`: `Ok(Some(len))` when complete (then `head` holds it),
/// `Ok(None)` when more bytes are needed. `underscores` keeps header names with `_`.
pub fn parse_request(
    buf: &[u8],
    head: &mut RequestHead,
    underscores: bool,
) -> Result<Option<usize>, Refusal> {
    // Empty lines before a request line are skipped (RFC 9112 2.2).
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let Some(lf) = memchr::memchr(b'\n', &buf[skip..]).map(|at| skip + at) else {
        if buf.len() > MAX_URI + 32 {
            return Err(Refusal(414));
        }
        return Ok(None);
    };
    let line_end = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    request_line(buf, skip, line_end, head)?;
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, parsed) = match httparse::parse_headers(&buf[lf + 1..], &mut lines) {
        Ok(httparse::Status::Complete((n, parsed))) => (lf + 1 + n, parsed),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Refusal(431)),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal(431)),
        Err(_) => return Err(Refusal(400)),
    };
    if len > MAX_HEAD {
        return Err(Refusal(431));
    }
    let at = |s: &[u8]| super::range_in(buf, s);
    head.headers.clear();
    let mut hosts = usize::from(head.authority.is_some());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut close = false;
    let mut keep = false;
    head.expect_continue = false;
    for h in parsed.iter() {
        let name = h.name.as_bytes();
        if !valid_name(name, underscores) {
            // nginx's `ignore_invalid_headers`: the line is not there.
            continue;
        }
        let value = trim(h.value);
        if name.eq_ignore_ascii_case(b"host") {
            // An absolute-form target's authority is the host; a Host line is then ignored.
            if head.authority.is_some() {
                continue;
            }
            hosts += 1;
        }
        head.headers.push((at(name), at(value)));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value).ok_or(Refusal(400))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal(400));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te_seen {
                return Err(Refusal(400));
            }
            te_seen = true;
            if !value.eq_ignore_ascii_case(b"chunked") {
                // Only `chunked` is understood; a coding list or an unknown coding is not.
                return Err(Refusal(if value.is_empty() { 400 } else { 501 }));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(value, b"close");
            keep |= has_token(value, b"keep-alive");
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(Refusal(417));
            }
            head.expect_continue = true;
        }
    }
    if head.minor == 1 && hosts != 1 || hosts > 1 {
        return Err(Refusal(400));
    }
    if te_seen && (length.is_some() || head.minor == 0) {
        return Err(Refusal(400));
    }
    head.framing = Some(if chunked {
        Framing::Chunked
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::None,
        }
    });
    head.keep_alive = !close && (head.minor == 1 || keep);
    Ok(Some(len))
}

/// Reads `METHOD SP target SP HTTP/1.x` from `buf[start..end]` into `head`.
fn request_line(
    buf: &[u8],
    start: usize,
    end: usize,
    head: &mut RequestHead,
) -> Result<(), Refusal> {
    let line = &buf[start..end];
    let sp = memchr::memchr(b' ', line).ok_or(Refusal(400))?;
    let method = &line[..sp];
    if method.is_empty() || !method.iter().all(|&b| tchar(b)) {
        return Err(Refusal(400));
    }
    let rest = &line[sp + 1..];
    let sp2 = memchr::memchr(b' ', rest).ok_or(Refusal(400))?;
    let target = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if target.len() > MAX_URI {
        return Err(Refusal(414));
    }
    if target.is_empty() || !target.iter().all(|&b| b > b' ' && b != 0x7f) {
        return Err(Refusal(400));
    }
    head.minor = version_minor(version)?;
    head.method = start..start + sp;
    let target_start = start + sp + 1;
    // Where the path begins: at the target's start, or after an absolute-form authority.
    head.authority = None;
    let path_at = if target[0] == b'/' || (target == b"*" && method == b"OPTIONS") {
        0
    } else {
        let (authority, path_at) = absolute_form(target).ok_or(Refusal(400))?;
        head.authority = Some(target_start + authority.start..target_start + authority.end);
        path_at
    };
    let origin = &target[path_at..];
    head.origin = target_start + path_at..target_start + target.len();
    let path_start = head.origin.start;
    match memchr::memchr(b'?', origin) {
        Some(q) => {
            head.path = path_start..path_start + q;
            head.query = path_start + q + 1..head.origin.end;
            head.has_query = true;
        }
        None => {
            head.path = head.origin.clone();
            head.query = head.origin.end..head.origin.end;
            head.has_query = false;
        }
    }
    Ok(())
}

/// `HTTP/1.x` as the minor version walnut serves it (0 or 1); a later major version is 505.
fn version_minor(v: &[u8]) -> Result<u8, Refusal> {
    let rest = v.strip_prefix(b"HTTP/").ok_or(Refusal(400))?;
    let dot = memchr::memchr(b'.', rest).ok_or(Refusal(400))?;
    let (major, minor) = (&rest[..dot], &rest[dot + 1..]);
    let digits = |d: &[u8]| !d.is_empty() && d.len() <= 3 && d.iter().all(u8::is_ascii_digit);
    if !digits(major) || !digits(minor) || major[0] == b'0' {
        return Err(Refusal(400));
    }
    if major != b"1" {
        return Err(Refusal(505));
    }
    Ok(u8::from(minor.iter().any(|&d| d != b'0')))
}

/// `scheme://host[:port]` at the start of `target`: the authority's range and where the path
/// starts (at `/`, `?` or the end).
fn absolute_form(target: &[u8]) -> Option<(Range<usize>, usize)> {
    let colon = memchr::memchr(b':', target)?;
    let scheme = &target[..colon];
    if scheme.is_empty()
        || !scheme[0].is_ascii_alphabetic()
        || !scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let host_at = colon + 3;
    if target.get(colon..host_at) != Some(b"://") {
        return None;
    }
    let end = target[host_at..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(target.len(), |p| host_at + p);
    let authority = &target[host_at..end];
    let (host, port) = match authority.iter().rposition(|&b| b == b':') {
        Some(c) if !authority.ends_with(b"]") => (&authority[..c], &authority[c + 1..]),
        _ => (authority, &b""[..]),
    };
    let host_ok = if host.starts_with(b"[") {
        host.len() > 2
            && host.ends_with(b"]")
            && host[1..host.len() - 1]
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    (host_ok && port.iter().all(u8::is_ascii_digit)).then_some((host_at..end, end))
}

/// RFC 9110 token characters.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header name nginx keeps: letters, digits, `-`, and `_` when `underscores`.
fn valid_name(name: &[u8], underscores: bool) -> bool {
    name.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || (underscores && b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RequestHead>, Refusal> {
        let mut head = RequestHead::default();
        Ok(parse_request(text.as_bytes(), &mut head, false)?.map(|_| head))
    }

    fn part<'a>(text: &'a str, r: &Range<usize>) -> &'a str {
        &text[r.clone()]
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = parse("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Some(Framing::Length(5)));
        assert!(h.keep_alive && h.has_query);
        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn every_prefix_of_a_head_is_incomplete() {
        let text = "\r\nGET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nGET /next";
        let end = text.find("GET /next").unwrap();
        for cut in 0..end {
            assert_eq!(parse(&text[..cut]).map(|h| h.is_some()), Ok(false), "{cut}");
        }
        let mut head = RequestHead::default();
        assert_eq!(
            parse_request(text.as_bytes(), &mut head, false),
            Ok(Some(end))
        );
        assert_eq!(part(text, &head.origin), "/a?b");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for bad in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET ftp:/a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a@b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/0.9\r\nHost: a\r\n\r\n",
            "GET / HTTX/1.1\r\nHost: a\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(parse(bad).err(), Some(Refusal(400)), "{bad}");
        }
        let h =
            parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.unwrap().unwrap().framing, Some(Framing::Length(5)));
        let gz = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(gz).err(), Some(Refusal(501)));
    }

    #[test]
    fn later_http_1_versions_are_1_1_and_http_2_is_505() {
        let h = parse("GET / HTTP/1.2\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.minor, h.keep_alive), (1, true));
        let h = parse("GET / HTTP/1.10\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.minor, 1);
        assert_eq!(
            parse("GET / HTTP/2.0\r\nHost: x\r\n\r\n").err(),
            Some(Refusal(505))
        );
    }

    #[test]
    fn absolute_form_targets_carry_their_host() {
        let text = "GET http://example.test:8080/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n";
        let h = parse(text).unwrap().unwrap();
        assert_eq!(
            part(text, h.authority.as_ref().unwrap()),
            "example.test:8080"
        );
        assert_eq!(part(text, &h.origin), "/p/q?x=1");
        assert_eq!((part(text, &h.path), part(text, &h.query)), ("/p/q", "x=1"));
        assert!(
            h.headers.is_empty(),
            "the Host line gives way to the target's"
        );
        let text = "GET HTTP://[::1]?x HTTP/1.0\r\n\r\n";
        let h = parse(text).unwrap().unwrap();
        assert_eq!(part(text, h.authority.as_ref().unwrap()), "[::1]");
        assert_eq!((part(text, &h.path), part(text, &h.query)), ("", "x"));
    }

    #[test]
    fn header_names_with_underscores_or_odd_characters_are_dropped() {
        let text = "GET / HTTP/1.1\r\nHost: x\r\nX_Real_IP: 6.6.6.6\r\nX.Dot: 1\r\nContent_Length: 5\r\nX-Ok: 2\r\n\r\n";
        let h = parse(text).unwrap().unwrap();
        let names: Vec<&str> = h.headers.iter().map(|(n, _)| part(text, n)).collect();
        assert_eq!(names, ["Host", "X-Ok"]);
        assert_eq!(
            h.framing,
            Some(Framing::None),
            "Content_Length is not a length"
        );
        let mut head = RequestHead::default();
        parse_request(text.as_bytes(), &mut head, true)
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.len(), 4, "underscores_in_headers keeps them");
    }

    #[test]
    fn limits_give_414_and_431() {
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_URI + 1)
        );
        assert_eq!(parse(&long).err(), Some(Refusal(414)));
        let partial = format!("GET /{}", "a".repeat(MAX_URI + 100));
        assert_eq!(parse(&partial).err(), Some(Refusal(414)));
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n",
            "b".repeat(MAX_HEAD)
        );
        assert_eq!(parse(&big).err(), Some(Refusal(431)));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(parse(&many).err(), Some(Refusal(431)));
    }
}
