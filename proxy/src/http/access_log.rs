//! An HTTP pool's access log: one line per request in nginx's `combined` format, with the
//! upstream's address and response time after it, as nginx writes them:
//!
//! ```text
//! 127.0.0.1 - alice [02/Dec/2026:18:55:01 +0000] "GET /x HTTP/1.1" 200 12 "-" "curl/8.0" "127.0.0.1:8081" 0.002
//! ```
//!
//! A request tried on several servers lists each (`"a:1, b:2" 0.001, 0.004`); one answered by
//! walnut itself has `"-" -`. Values are escaped as nginx escapes them (`"`, `\` and bytes outside
//! printable ASCII as `\xXX`), so a client can never start a line of its own. Times are UTC.
//! Each worker writes its lines to its own handle on the file, one append per line, so lines
//! never interleave; the file is reopened after SIGUSR1 or SIGHUP (`reopen.rs`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use super::date::put_log_time;
use crate::reopen::ReopenFile;

/// One try of an upstream server: where, and how long until its response was relayed (or the
/// try failed).
#[derive(Debug, Clone, Copy)]
pub struct Try {
    pub addr: SocketAddr,
    pub took: Duration,
}

/// What one line says.
pub struct Entry<'a> {
    pub remote: &'a [u8],
    /// The request line as the client sent it.
    pub request: &'a [u8],
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    pub tries: &'a [Try],
}

/// A worker's handle on a pool's access log.
pub struct AccessLog {
    file: ReopenFile,
    line: Vec<u8>,
}

impl AccessLog {
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        Ok(AccessLog {
            file: ReopenFile::open(path)?,
            line: Vec::with_capacity(256),
        })
    }

    /// Appends `e`'s line. A failed write is dropped (as nginx drops it), never the request.
    pub fn write(&mut self, e: &Entry<'_>) {
        self.line.clear();
        format(&mut self.line, e);
        let _ = self.file.write_all(&self.line);
    }
}

/// `e` as one line, its `\n` included.
pub fn format(out: &mut Vec<u8>, e: &Entry<'_>) {
    let mut n = itoa::Buffer::new();
    escaped(out, e.remote);
    out.extend_from_slice(b" - ");
    match e.authorization.and_then(basic_user) {
        Some(user) if !user.is_empty() => escaped(out, &user),
        _ => out.push(b'-'),
    }
    out.extend_from_slice(b" [");
    put_log_time(out);
    out.extend_from_slice(b"] \"");
    escaped(out, e.request);
    out.extend_from_slice(b"\" ");
    out.extend_from_slice(n.format(e.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(n.format(e.body_bytes).as_bytes());
    for value in [e.referer, e.user_agent] {
        out.extend_from_slice(b" \"");
        match value {
            Some(v) => escaped(out, v),
            None => out.push(b'-'),
        }
        out.push(b'"');
    }
    out.extend_from_slice(b" \"");
    if e.tries.is_empty() {
        out.extend_from_slice(b"-\" -\n");
        return;
    }
    for (i, t) in e.tries.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        let _ = write!(out, "{}", t.addr);
    }
    out.extend_from_slice(b"\" ");
    for (i, t) in e.tries.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        let ms = t.took.as_millis();
        let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
    }
    out.push(b'\n');
}

/// Appends `v` escaped as nginx's access log escapes it.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

/// The user of a `Basic` authorization (nginx's `$remote_user`), whatever the pool checks.
fn basic_user(authorization: &[u8]) -> Option<Vec<u8>> {
    let (scheme, credentials) =
        authorization.split_at(authorization.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim_ascii())
        .ok()?;
    let end = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(e: &Entry<'_>) -> String {
        let mut out = Vec::new();
        format(&mut out, e);
        String::from_utf8(out).expect("text")
    }

    fn entry<'a>(tries: &'a [Try]) -> Entry<'a> {
        Entry {
            remote: b"10.0.0.7",
            request: b"GET /a?b=1 HTTP/1.1",
            status: 200,
            body_bytes: 12,
            referer: None,
            user_agent: Some(b"curl/8.0"),
            authorization: None,
            tries,
        }
    }

    #[test]
    fn combined_then_the_upstream() {
        let tries = [Try {
            addr: "127.0.0.1:8081".parse().unwrap(),
            took: Duration::from_micros(2_400),
        }];
        let l = line(&entry(&tries));
        let (head, rest) = l.split_once(" [").unwrap();
        assert_eq!(head, "10.0.0.7 - -");
        let (_, rest) = rest.split_once("] ").unwrap();
        assert_eq!(
            rest,
            "\"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \"curl/8.0\" \"127.0.0.1:8081\" 0.002\n"
        );
        let two = [
            tries[0],
            Try {
                took: Duration::from_millis(1_250),
                ..tries[0]
            },
        ];
        assert!(line(&entry(&two)).ends_with("\"127.0.0.1:8081, 127.0.0.1:8081\" 0.002, 1.250\n"));
        assert!(line(&entry(&[])).ends_with("\"curl/8.0\" \"-\" -\n"));
    }

    #[test]
    fn a_client_cannot_start_a_line_of_its_own() {
        let mut e = entry(&[]);
        e.request = b"GET /\"\r\n10.6.6.6 - - x HTTP/1.1";
        e.user_agent = Some(b"a\\b\xff");
        let l = line(&e);
        assert_eq!(l.matches('\n').count(), 1);
        assert!(
            l.contains("\"GET /\\x22\\x0D\\x0A10.6.6.6 - - x HTTP/1.1\""),
            "{l}"
        );
        assert!(l.contains("\"a\\x5Cb\\xFF\""), "{l}");
    }

    #[test]
    fn the_basic_user() {
        let mut e = entry(&[]);
        e.authorization = Some(b"Basic YWxpY2U6c2VjcmV0");
        assert!(line(&e).starts_with("10.0.0.7 - alice ["));
        e.authorization = Some(b"Bearer abc");
        assert!(line(&e).starts_with("10.0.0.7 - - ["));
    }
}
