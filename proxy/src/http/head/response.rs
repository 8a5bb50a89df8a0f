//! An upstream's response head. Its size is bounded (`MAX_RESPONSE_HEAD`), not its line
//! count: a head of more than `MAX_HEADERS` lines is parsed again with room for as many lines
//! as that size allows (the only allocation, and a rare one).

use std::ops::Range;

use super::{Framing, MAX_HEADERS, MAX_RESPONSE_HEAD, content_length};
use crate::http::headers::{has_token, trim};

/// A parsed response head from an upstream.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Range<usize>,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub framing: Option<Framing>,
    /// The upstream connection may carry another request after this one.
    pub reusable: bool,
    /// The head has a `Date` line.
    pub dated: bool,
}

/// Why an upstream's response head was refused (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upstream sent an invalid or too big response head")]
pub struct BadResponse;

/// Parses a response head to a request sent with method `head_request` (HEAD has no body).
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<Option<usize>, BadResponse> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut lines);
    match resp.parse(buf) {
        Ok(status) => read(buf, status, resp, head_request, head),
        Err(httparse::Error::TooManyHeaders) => many_lines(buf, head_request, head),
        Err(_) => Err(BadResponse),
    }
}

/// `parse_response` for a head of more than `MAX_HEADERS` lines.
#[cold]
fn many_lines(
    buf: &[u8],
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<Option<usize>, BadResponse> {
    // The shortest header line is `a:` and a line end, so a head within the size limit holds
    // at most `MAX_RESPONSE_HEAD / 3` lines; most long heads fit the first size.
    for room in [1024, MAX_RESPONSE_HEAD / 3] {
        let mut lines = vec![httparse::EMPTY_HEADER; room];
        let mut resp = httparse::Response::new(&mut lines);
        match resp.parse(buf) {
            Ok(status) => return read(buf, status, resp, head_request, head),
            Err(httparse::Error::TooManyHeaders) => continue,
            Err(_) => return Err(BadResponse),
        }
    }
    Err(BadResponse)
}

fn read(
    buf: &[u8],
    status: httparse::Status<usize>,
    resp: httparse::Response<'_, '_>,
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<Option<usize>, BadResponse> {
    let len = match status {
        httparse::Status::Complete(len) if len <= MAX_RESPONSE_HEAD => len,
        httparse::Status::Partial if buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
        _ => return Err(BadResponse),
    };
    let at = |s: &[u8]| super::range_in(buf, s);
    head.status = resp.code.ok_or(BadResponse)?;
    // httparse takes any three digits; `000` or `099` would go on as a status line no client
    // reads (`HTTP/1.1 0 ...`).
    if head.status < 100 {
        return Err(BadResponse);
    }
    // httparse gives a reason phrase that is missing, or holds bytes past ASCII, as a static
    // `""` that is not within `buf`: it is then empty here.
    head.reason = at(resp.reason.unwrap_or("").as_bytes());
    let minor = resp.version.ok_or(BadResponse)?;
    head.headers.clear();
    head.dated = false;
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
        } else if name.eq_ignore_ascii_case(b"date") {
            head.dated = true;
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

    #[test]
    fn a_status_below_100_is_refused() {
        let mut h = ResponseHead::default();
        for r in [&b"HTTP/1.1 000 O\r\n\r\n"[..], b"HTTP/1.1 099 x\r\n\r\n"] {
            assert_eq!(parse_response(r, false, &mut h), Err(BadResponse));
        }
    }

    #[test]
    fn a_missing_or_non_ascii_reason_is_empty() {
        let mut h = ResponseHead::default();
        for r in [
            &b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.0 200\n\r\n",
            b"HTTP/1.1 200 Ok\xe9\r\n\r\n",
        ] {
            assert_eq!(parse_response(r, false, &mut h), Ok(Some(r.len())));
            assert_eq!((h.status, h.reason.clone()), (200, 0..0));
        }
    }

    #[test]
    fn many_header_lines_fit_while_the_head_is_within_its_size() {
        let lines: String = (0..150).map(|i| format!("X-H-{i}: v{i}\r\n")).collect();
        let r = format!("HTTP/1.1 200 OK\r\n{lines}Date: x\r\nContent-Length: 0\r\n\r\n");
        let mut h = ResponseHead::default();
        assert_eq!(
            parse_response(r.as_bytes(), false, &mut h),
            Ok(Some(r.len()))
        );
        assert_eq!(h.headers.len(), 152);
        assert!(h.dated);
        // Every prefix is incomplete.
        for cut in 0..r.len() {
            assert_eq!(
                parse_response(&r.as_bytes()[..cut], false, &mut h),
                Ok(None)
            );
        }
        let huge: String = (0..4000).map(|i| format!("X-H-{i}: v\r\n")).collect();
        let r = format!("HTTP/1.1 200 OK\r\n{huge}\r\n");
        assert_eq!(
            parse_response(r.as_bytes(), false, &mut h),
            Err(BadResponse)
        );
    }
}
