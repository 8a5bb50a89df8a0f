//! Request and response heads: parsed with httparse, checked against the limits and the
//! message-framing rules of RFC 9112 (the shapes request smuggling relies on are refused).

use std::ops::Range;

use super::headers::{has_token, trim};

/// The longest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 16 * 1024;
/// The longest request target accepted (414 beyond).
pub const MAX_URI: usize = 8 * 1024;
/// The most header lines accepted in a request (431 beyond).
pub const MAX_HEADERS: usize = 100;
/// The longest response head accepted from an upstream (502 beyond).
pub const MAX_RESPONSE_HEAD: usize = 32 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

impl Framing {
    pub fn has_body(self) -> bool {
        !matches!(self, Framing::None | Framing::Length(0))
    }
}

/// Why a request head was refused: the status the client gets before the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub u16);

/// A parsed request head. Ranges index the head's bytes (kept by the caller).
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Range<usize>,
    pub path: Range<usize>,
    /// Without the `?`; empty when absent.
    pub query: Range<usize>,
    pub has_query: bool,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub framing: Option<Framing>,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Parses the head at the start of `buf`: `Ok(Some(len))` when complete (then `head` holds it),
/// `Ok(None)` when more bytes are needed.
pub fn parse_request(buf: &[u8], head: &mut RequestHead) -> Result<Option<usize>, Refusal> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            let line_done = memchr::memchr(b'\n', buf).is_some();
            if !line_done && buf.len() > MAX_URI + 32 {
                return Err(Refusal(414));
            }
            if buf.len() >= MAX_HEAD {
                return Err(Refusal(431));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal(431)),
        Err(_) => return Err(Refusal(400)),
    };
    if len > MAX_HEAD {
        return Err(Refusal(431));
    }
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = req.method.ok_or(Refusal(400))?;
    let target = req.path.ok_or(Refusal(400))?;
    if target.len() > MAX_URI {
        return Err(Refusal(414));
    }
    // Origin form only (and `*` for OPTIONS); a proxy-style absolute URI is not served.
    if !(target.starts_with('/') || (target == "*" && method == "OPTIONS")) {
        return Err(Refusal(400));
    }
    head.method = at(method.as_bytes());
    let target_range = at(target.as_bytes());
    match target.find('?') {
        Some(q) => {
            head.path = target_range.start..target_range.start + q;
            head.query = target_range.start + q + 1..target_range.end;
            head.has_query = true;
        }
        None => {
            head.path = target_range.clone();
            head.query = target_range.end..target_range.end;
            head.has_query = false;
        }
    }
    head.minor = req.version.ok_or(Refusal(400))?;
    head.headers.clear();
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut close = false;
    let mut keep = false;
    head.expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        head.headers.push((at(name), at(value)));
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
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

/// A Content-Length value: digits only, no sign, no list.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A parsed response head from an upstream.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Range<usize>,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub framing: Option<Framing>,
    /// The upstream connection may carry another request after this one.
    pub reusable: bool,
}

/// Why an upstream's response head was refused (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse;

/// Parses a response head to a request with method `head_request` (HEAD has no body).
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<Option<usize>, BadResponse> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut lines);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
        _ => return Err(BadResponse),
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    head.status = resp.code.ok_or(BadResponse)?;
    head.reason = at(resp.reason.unwrap_or("").as_bytes());
    let minor = resp.version.ok_or(BadResponse)?;
    head.headers.clear();
    let (mut length, mut chunked, mut close, mut keep) = (None, false, false, false);
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        head.headers.push((at(name), at(value)));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value).ok_or(BadResponse)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The final coding decides; anything but chunked is read until close.
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
            chunked = last.eq_ignore_ascii_case(b"chunked");
            if !chunked {
                close = true;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(value, b"close");
            keep |= has_token(value, b"keep-alive");
        }
    }
    let no_body =
        head_request || (100..200).contains(&head.status) || matches!(head.status, 204 | 304);
    let framing = if no_body {
        Framing::None
    } else if chunked {
        // Both framings at once: trust chunked, never reuse the connection.
        close |= length.is_some();
        Framing::Chunked
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    head.framing = Some(framing);
    head.reusable = !close && (minor == 1 || keep) && framing != Framing::Close;
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RequestHead>, Refusal> {
        let mut head = RequestHead::default();
        Ok(parse_request(text.as_bytes(), &mut head)?.map(|_| head))
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
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
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

    #[test]
    fn response_framing() {
        let mut h = ResponseHead::default();
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parse_response(r, false, &mut h), Ok(Some(r.len() - 3)));
        assert_eq!((h.framing, h.reusable), (Some(Framing::Length(3)), true));
        parse_response(r, true, &mut h).unwrap();
        assert_eq!(h.framing, Some(Framing::None));
        let r = b"HTTP/1.0 200 OK\r\n\r\n";
        parse_response(r, false, &mut h).unwrap();
        assert_eq!((h.framing, h.reusable), (Some(Framing::Close), false));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        parse_response(r, false, &mut h).unwrap();
        assert_eq!((h.framing, h.reusable), (Some(Framing::Chunked), false));
    }
}
