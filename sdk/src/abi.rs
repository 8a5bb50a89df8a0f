//! The plugin ABI, shared by the SDK and the walnut host so both sides speak one encoding.
//!
//! A plugin is a wasm32 module exporting its linear `memory` and:
//! - `walnut_abi_version() -> u32`: [`ABI_VERSION`]; the host refuses any other;
//! - `walnut_buffer(len) -> ptr`: the plugin's exchange buffer, grown to at least `len` bytes;
//! - `walnut_init(len) -> u64`, `walnut_on_memcache(len) -> u64`, `walnut_on_hash(len) -> u64`,
//!   `walnut_on_http(len) -> u64`: the input is the first `len` bytes of the buffer; the answer
//!   is `code << 32 | out_len`, with the output in the first `out_len` bytes of the buffer.
//!
//! Integers are little-endian; byte strings are length-prefixed (u16, bodies u32).

/// The ABI this SDK speaks.
pub const ABI_VERSION: u32 = 1;

/// The export names.
pub mod exports {
    pub const VERSION: &str = "walnut_abi_version";
    pub const BUFFER: &str = "walnut_buffer";
    pub const INIT: &str = "walnut_init";
    pub const ON_MEMCACHE: &str = "walnut_on_memcache";
    pub const ON_HASH: &str = "walnut_on_hash";
    pub const ON_HTTP: &str = "walnut_on_http";
}

/// What a hook answered (the high half of its return value).
pub mod code {
    /// Go on unchanged (memcache, http), keep the ring (hash), config accepted (init).
    pub const CONTINUE: u32 = 0;
    /// Refused; the output is the message.
    pub const REJECT: u32 = 1;
    /// Go on with these keys; the output is the key list.
    pub const REWRITE: u32 = 2;
    /// Place by these bytes; the output is the bytes.
    pub const HASH: u32 = 3;
    /// Place on the server of this name; the output is the name.
    pub const SERVER: u32 = 4;
    /// Answer locally (HTTP); the output is an encoded response.
    pub const RESPOND: u32 = 5;
    /// Go on with these changes (HTTP); the output is encoded [`super::HttpEdits`].
    pub const HTTP_REWRITE: u32 = 6;
    /// `walnut_init` refused the config; the output is the message.
    pub const ERROR: u32 = 0xFFFE;
    /// The plugin leaves this hook at its default; the host stops calling it.
    pub const NOT_IMPLEMENTED: u32 = 0xFFFF;
}

/// Packs a hook's answer.
pub fn pack(code: u32, len: usize) -> u64 {
    (u64::from(code) << 32) | len as u64
}

/// Unpacks a hook's answer into (code, output length).
pub fn unpack(v: u64) -> (u32, usize) {
    ((v >> 32) as u32, (v & 0xFFFF_FFFF) as usize)
}

/// Appends encoded fields to a buffer.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A byte string of at most 65535 bytes (longer ones are cut).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let b = &b[..b.len().min(u16::MAX as usize)];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
        self
    }
    /// A long byte string (bodies).
    pub fn long_bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads encoded fields; every read is checked, `None` on truncated input.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub fn long_bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// A memcached request: command, flags, exptime, value length, then the keys.
pub fn encode_memcache<'k>(
    out: &mut Vec<u8>,
    command: &str,
    flags: u32,
    exptime: i64,
    value_len: u32,
    keys: impl Iterator<Item = &'k [u8]>,
) {
    let mut w = Writer(out);
    w.bytes(command.as_bytes())
        .u32(flags)
        .i64(exptime)
        .u32(value_len);
    let count_at = w.0.len();
    w.u16(0);
    let mut n = 0u16;
    for k in keys {
        w.bytes(k);
        n += 1;
    }
    w.0[count_at..count_at + 2].copy_from_slice(&n.to_le_bytes());
}

/// A key list: count, then each key.
pub fn encode_keys<'k>(out: &mut Vec<u8>, keys: impl ExactSizeIterator<Item = &'k [u8]>) {
    let mut w = Writer(out);
    w.u16(keys.len() as u16);
    for k in keys {
        w.bytes(k);
    }
}

/// Calls `f` with each key of an encoded key list; false when the list is malformed.
pub fn decode_keys<'a>(buf: &'a [u8], mut f: impl FnMut(&'a [u8])) -> bool {
    let mut r = Reader(buf);
    let Some(n) = r.u16() else { return false };
    for _ in 0..n {
        match r.bytes() {
            Some(k) => f(k),
            None => return false,
        }
    }
    true
}

/// An HTTP request head: method, path, query, headers.
pub fn encode_http<'h>(
    out: &mut Vec<u8>,
    method: &str,
    path: &[u8],
    query: &[u8],
    headers: impl ExactSizeIterator<Item = (&'h [u8], &'h [u8])>,
) {
    let mut w = Writer(out);
    w.bytes(method.as_bytes())
        .bytes(path)
        .bytes(query)
        .u16(headers.len() as u16);
    for (n, v) in headers {
        w.bytes(n).bytes(v);
    }
}

/// An HTTP response a plugin answers with: status, headers, body.
pub fn encode_response(out: &mut Vec<u8>, status: u16, headers: &[(String, String)], body: &[u8]) {
    let mut w = Writer(out);
    w.u16(status).u16(headers.len() as u16);
    for (n, v) in headers {
        w.bytes(n.as_bytes()).bytes(v.as_bytes());
    }
    w.long_bytes(body);
}

/// A decoded local HTTP response.
pub struct Response<'a> {
    pub status: u16,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub body: &'a [u8],
}

pub fn decode_response(buf: &[u8]) -> Option<Response<'_>> {
    let mut r = Reader(buf);
    let status = r.u16()?;
    let n = r.u16()?;
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        headers.push((r.bytes()?, r.bytes()?));
    }
    Some(Response {
        status,
        headers,
        body: r.long_bytes()?,
    })
}

/// What an HTTP hook changed: path, query, header sets (`Some`) and removals (`None`) in
/// order, and the hash key for upstream selection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HttpEdits<'a> {
    pub path: Option<&'a [u8]>,
    pub query: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    pub hash_key: Option<&'a [u8]>,
}

const EDIT_PATH: u8 = 1;
const EDIT_QUERY: u8 = 2;
const EDIT_HASH: u8 = 4;

/// Encodes `edits`: a flags byte, the path, query and hash key it flags, then the header edits.
pub fn encode_http_edits(out: &mut Vec<u8>, edits: &HttpEdits<'_>) {
    let mut w = Writer(out);
    let flag = |set: bool, bit: u8| if set { bit } else { 0 };
    let flags = flag(edits.path.is_some(), EDIT_PATH)
        | flag(edits.query.is_some(), EDIT_QUERY)
        | flag(edits.hash_key.is_some(), EDIT_HASH);
    w.u8(flags);
    for b in [edits.path, edits.query, edits.hash_key]
        .into_iter()
        .flatten()
    {
        w.bytes(b);
    }
    w.u16(edits.headers.len() as u16);
    for (name, value) in &edits.headers {
        w.bytes(name);
        match value {
            Some(v) => w.u8(1).bytes(v),
            None => w.u8(0),
        };
    }
}

pub fn decode_http_edits(buf: &[u8]) -> Option<HttpEdits<'_>> {
    let mut r = Reader(buf);
    let flags = r.u8()?;
    let mut edits = HttpEdits::default();
    if flags & EDIT_PATH != 0 {
        edits.path = Some(r.bytes()?);
    }
    if flags & EDIT_QUERY != 0 {
        edits.query = Some(r.bytes()?);
    }
    if flags & EDIT_HASH != 0 {
        edits.hash_key = Some(r.bytes()?);
    }
    let n = r.u16()?;
    for _ in 0..n {
        let name = r.bytes()?;
        let value = match r.u8()? {
            0 => None,
            1 => Some(r.bytes()?),
            _ => return None,
        };
        edits.headers.push((name, value));
    }
    Some(edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcache_requests_round_trip() {
        let mut buf = Vec::new();
        encode_memcache(&mut buf, "set", 7, -1, 100, [&b"a"[..], b"bb"].into_iter());
        let req = crate::rt::decode_memcache(&buf).unwrap();
        assert_eq!(
            req,
            crate::MemcacheRequest::new("set", ["a", "bb"]).with_storage(7, -1, 100)
        );
        assert!(crate::rt::decode_memcache(&buf[..buf.len() - 1]).is_none());
    }

    #[test]
    fn key_lists_round_trip() {
        let mut buf = Vec::new();
        encode_keys(&mut buf, [&b"x"[..], b"", b"zzz"].into_iter());
        let mut keys = Vec::new();
        assert!(decode_keys(&buf, |k| keys.push(k.to_vec())));
        assert_eq!(keys, vec![b"x".to_vec(), b"".to_vec(), b"zzz".to_vec()]);
        assert!(!decode_keys(&buf[..3], |_| {}));
    }

    #[test]
    fn responses_round_trip() {
        let mut buf = Vec::new();
        encode_response(
            &mut buf,
            403,
            &[("x-why".into(), "guard".into())],
            b"forbidden\n",
        );
        let r = decode_response(&buf).unwrap();
        assert_eq!(
            (r.status, r.headers, r.body),
            (
                403,
                vec![(&b"x-why"[..], &b"guard"[..])],
                &b"forbidden\n"[..]
            )
        );
    }

    #[test]
    fn http_edits_round_trip() {
        let edits = HttpEdits {
            path: Some(b"/new"),
            query: None,
            headers: vec![(b"x-a", Some(b"1")), (b"x-b", None)],
            hash_key: Some(b"user7"),
        };
        let mut buf = Vec::new();
        encode_http_edits(&mut buf, &edits);
        assert_eq!(decode_http_edits(&buf), Some(edits));
        assert!(decode_http_edits(&buf[..buf.len() - 1]).is_none());
    }
}
