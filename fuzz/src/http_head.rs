//! HTTP heads: a client's request head (the first byte of the input picks whether header
//! names with `_` are kept) or an upstream's response head (whether it answers a HEAD), and
//! the path normalization a request's location is chosen by.
//!
//! Invariants: a complete head's length lies within the input and every range the parser
//! gives lies within the head; the head parses the same without the bytes after it, and every
//! shorter prefix of it is incomplete (so it parses the same however it is split into reads);
//! a refused request gets one of the statuses walnut answers with; a normalized path starts
//! with `/` and holds no `//`, `/./` or `/../` step.

use std::ops::Range;

use walnut::http::head::{
    BadResponse, Framing, MAX_RESPONSE_HEAD, Refusal, RequestHead, ResponseHead, parse_request,
    parse_response,
};
use walnut::http::path::{self, BadPath};

/// The one call into the request parser.
fn request(
    buf: &[u8],
    head: &mut RequestHead,
    underscores: bool,
) -> Result<Option<usize>, Refusal> {
    parse_request(buf, head, underscores)
}

/// The one call into the response parser.
fn response(
    buf: &[u8],
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<Option<usize>, BadResponse> {
    parse_response(buf, head_request, head)
}

/// The one call into path normalization.
fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<bool, BadPath> {
    path::normalize(raw, out)
}

pub const TOKENS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"OPTIONS * ",
    b"TRACE ",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b" HTTP/2.0\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.0 304 x\r\n",
    b"Host: x\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Expect: 100-continue\r\n",
    b"X_Under: 1\r\n",
    b"Date: x\r\n",
    b"\r\n",
    b"\n",
    b": ",
    b"http://",
    b"[::1]",
    b":8080",
    b"/",
    b"//",
    b"/./",
    b"/../",
    b"%2e",
    b"%2F",
    b"%00",
    b"%",
    b"#",
    b"?",
    b"a",
];

/// Whether `r` lies within `0..len`.
fn within(r: &Range<usize>, len: usize) -> bool {
    r.start <= r.end && r.end <= len
}

fn check_request(data: &[u8], underscores: bool) {
    let mut head = RequestHead::default();
    let len = match request(data, &mut head, underscores) {
        Ok(Some(len)) => len,
        Ok(None) => return,
        Err(Refusal(status)) => {
            assert!(
                [400, 414, 417, 431, 501, 505].contains(&status),
                "status {status} for {}",
                crate::show(data)
            );
            return;
        }
    };
    let shown = crate::show(data);
    assert!(len > 0 && len <= data.len(), "{len} of {shown}");
    let mut ranges = vec![&head.method, &head.origin, &head.path, &head.query];
    ranges.extend(head.authority.as_ref());
    ranges.extend(head.headers.iter().flat_map(|(n, v)| [n, v]));
    for r in ranges {
        assert!(within(r, len), "{r:?} outside {len}: {shown}");
    }
    assert!(!head.method.is_empty() && head.framing.is_some());
    assert!(head.path.start >= head.origin.start && head.path.end <= head.origin.end);
    let mut alone = RequestHead::default();
    assert_eq!(
        request(&data[..len], &mut alone, underscores),
        Ok(Some(len)),
        "{shown}"
    );
    assert_eq!(
        (
            &alone.method,
            &alone.origin,
            &alone.headers,
            alone.framing,
            alone.keep_alive
        ),
        (
            &head.method,
            &head.origin,
            &head.headers,
            head.framing,
            head.keep_alive
        )
    );
    for cut in crate::cuts(&data[..len]) {
        assert_eq!(
            request(&data[..cut], &mut alone, underscores),
            Ok(None),
            "the first {cut} bytes of a {len}-byte head: {shown}"
        );
    }
    check_path(&data[head.path.clone()]);
}

fn check_path(raw: &[u8]) {
    let mut out = Vec::new();
    let normal = match normalize(raw, &mut out) {
        Ok(true) => {
            assert!(out.len() <= raw.len() + 1, "grew: {}", crate::show(&out));
            assert!(out.starts_with(b"/"), "{}", crate::show(&out));
            &out[..]
        }
        Ok(false) => raw,
        Err(BadPath) => return,
    };
    let shown = crate::show(normal);
    // Segments are judged by the bytes as they are now: a decoded `%2e` is a `.`.
    assert!(
        !normal.windows(2).any(|w| w == b"//"),
        "// in {shown} from {}",
        crate::show(raw)
    );
    for step in [&b"/./"[..], b"/../"] {
        assert!(!normal.windows(step.len()).any(|w| w == step), "{shown}");
    }
    assert!(
        !normal.ends_with(b"/.") && !normal.ends_with(b"/.."),
        "{shown}"
    );
}

fn check_response(data: &[u8], head_request: bool) {
    let mut head = ResponseHead::default();
    let Ok(Some(len)) = response(data, head_request, &mut head) else {
        return;
    };
    let shown = crate::show(data);
    assert!(
        len > 0 && len <= data.len() && len <= MAX_RESPONSE_HEAD,
        "{len} of {shown}"
    );
    assert!(within(&head.reason, len));
    for (n, v) in &head.headers {
        assert!(within(n, len) && within(v, len), "{shown}");
    }
    assert!((100..1000).contains(&head.status), "{shown}");
    let framing = head.framing.expect("framing");
    if head_request || (100..200).contains(&head.status) || matches!(head.status, 204 | 304) {
        assert_eq!(framing, Framing::None, "{shown}");
    }
    assert!(!(head.reusable && framing == Framing::Close), "{shown}");
    let mut alone = ResponseHead::default();
    assert_eq!(
        response(&data[..len], head_request, &mut alone),
        Ok(Some(len))
    );
    assert_eq!(
        (alone.status, &alone.headers, alone.framing, alone.reusable),
        (head.status, &head.headers, head.framing, head.reusable)
    );
    for cut in crate::cuts(&data[..len]) {
        assert_eq!(
            response(&data[..cut], head_request, &mut alone),
            Ok(None),
            "the first {cut} bytes of a {len}-byte head: {shown}"
        );
    }
}

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    match first % 4 {
        0 => check_request(rest, false),
        1 => check_request(rest, true),
        2 => check_response(rest, false),
        _ => check_response(rest, true),
    }
}
