//! Header rules of a proxy: hop-by-hop headers dropped (RFC 9110 7.6.1), the forwarded headers
//! added, and the heads walnut writes itself.

/// Headers that describe one connection, never forwarded. Content-Length is not one, but
/// walnut writes the framing itself, and Expect is answered by walnut.
const HOP_BY_HOP: [&[u8]; 9] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
    b"expect",
];

/// Leading and trailing spaces and tabs removed.
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Whether the comma-separated `list` holds `token` (case-insensitive).
pub fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Whether header `name` must not be forwarded, given the message's headers (whose
/// `Connection` values may name more).
pub fn hop_by_hop<'a>(name: &[u8], all: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return true;
    }
    all.filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .any(|(_, v)| has_token(v, name))
}

/// The headers walnut sets on the way to an upstream; the client's copies are replaced.
pub fn replaced_upstream(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"x-real-ip")
        || name.eq_ignore_ascii_case(b"x-forwarded-for")
        || name.eq_ignore_ascii_case(b"x-forwarded-proto")
}

/// Appends `name: value\r\n`.
pub fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the forwarded headers for a client at `ip`: X-Forwarded-For extends the client's.
pub fn put_forwarded<'a>(
    out: &mut Vec<u8>,
    ip: &[u8],
    all: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) {
    out.extend_from_slice(b"X-Forwarded-For: ");
    for (_, v) in all.filter(|(n, _)| n.eq_ignore_ascii_case(b"x-forwarded-for")) {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(ip);
    out.extend_from_slice(b"\r\nX-Real-IP: ");
    out.extend_from_slice(ip);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
}

/// The reason phrase walnut writes for `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Appends `n` in decimal.
pub fn put_number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs<'a>(h: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        h.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let h = [
            ("Host", "a"),
            ("Connection", "keep-alive, X-Secret ,Foo"),
            ("X-Secret", "1"),
            ("Foo", "2"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Accept", "*/*"),
            ("X-Other", "3"),
        ];
        let kept: Vec<&str> = h
            .iter()
            .filter(|(n, _)| !hop_by_hop(n.as_bytes(), pairs(&h)))
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(kept, ["Host", "Accept", "X-Other"]);
    }

    #[test]
    fn connection_tokens_are_case_insensitive() {
        assert!(has_token(b"Keep-Alive, Close", b"close"));
        assert!(!has_token(b"closed", b"close"));
        assert_eq!(trim(b" \t x y \t"), b"x y");
    }

    #[test]
    fn forwarded_headers_extend_the_clients() {
        let mut out = Vec::new();
        let h = [("X-Forwarded-For", "10.0.0.1")];
        put_forwarded(&mut out, b"127.0.0.1", pairs(&h));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        );
    }
}
