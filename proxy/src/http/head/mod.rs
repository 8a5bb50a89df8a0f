//! Request and response heads, checked against the limits and the message-framing rules of
//! RFC 9112 (the shapes request smuggling relies on are refused). Heads are kept as offsets
//! into their bytes.

mod request;
mod response;

pub use request::{RequestHead, parse_request};
pub use response::{BadResponse, ResponseHead, parse_response};

/// The longest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 16 * 1024;
/// The longest request target accepted (414 beyond).
pub const MAX_URI: usize = 8 * 1024;
/// The most header lines accepted in a request (431 beyond).
pub const MAX_HEADERS: usize = 100;
/// The longest response head accepted from an upstream (502 beyond); any number of lines fits.
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

/// Where `part`, a slice the parser handed back, lies in `buf`; empty when it is not within it
/// (httparse answers some absent parts with a static `""`).
fn range_in(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if start <= buf.len() && part.len() <= buf.len() - start {
        start..start + part.len()
    } else {
        0..0
    }
}

/// A Content-Length value: digits only, no sign, no list.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}
