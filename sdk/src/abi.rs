//! The plugin ABI: the one definition of every encoding, used by the SDK (plugin side) and by
//! walnut (host side), so both speak the same bytes.
//!
//! A plugin is a wasm32 module exporting its linear `memory` and:
//! - `walnut_abi_version() -> u32`: [`ABI_VERSION`]; the host refuses any other;
//! - `walnut_buffer(len) -> ptr`: the plugin's exchange buffer, grown to at least `len` bytes;
//! - `walnut_init(len) -> u64` and one export per hook (see [`exports`]): the input is the
//!   first `len` bytes of the buffer; the answer is `code << 32 | out_len`, with the output in
//!   the first `out_len` bytes of the buffer.
//!
//! It may import from module `walnut` (see [`imports`]): `walnut_log(level, ptr, len)` and
//! `walnut_clock(kind) -> u64`.
//!
//! Integers are little-endian; byte strings are length-prefixed (u16; values and bodies u32).

/// The ABI this SDK speaks.
pub const ABI_VERSION: u32 = 2;

/// The export names.
pub mod exports {
    pub const VERSION: &str = "walnut_abi_version";
    pub const BUFFER: &str = "walnut_buffer";
    pub const INIT: &str = "walnut_init";
    pub const ON_MEMCACHE: &str = "walnut_on_memcache";
    pub const ON_HASH: &str = "walnut_on_hash";
    pub const ON_STORE: &str = "walnut_on_store";
    pub const ON_VALUE: &str = "walnut_on_value";
    pub const ON_HTTP: &str = "walnut_on_http";
    pub const ON_HTTP_RESPONSE: &str = "walnut_on_http_response";
}

/// What walnut lends a plugin, in import module [`imports::MODULE`].
pub mod imports {
    pub const MODULE: &str = "walnut";
    /// `walnut_log(level: u32, ptr: u32, len: u32)`: a log line (level 1 error to 4 debug; 9 is
    /// a panic's message, just before the plugin traps).
    pub const LOG: &str = "walnut_log";
    /// `walnut_clock(kind: u32) -> u64`: nanoseconds since the Unix epoch (0) or on a clock that
    /// only goes forward (1).
    pub const CLOCK: &str = "walnut_clock";
}

/// What a hook answered (the high half of its return value).
pub mod code {
    /// Go on unchanged; keep the ring (hash); config accepted (init).
    pub const CONTINUE: u32 = 0;
    /// Refused; the output is the message.
    pub const REJECT: u32 = 1;
    /// Go on with this key; the output is the key.
    pub const REWRITE: u32 = 2;
    /// Place by these bytes; the output is the bytes.
    pub const HASH: u32 = 3;
    /// Place on the server of this name; the output is the name.
    pub const SERVER: u32 = 4;
    /// Answer locally (HTTP); the output is an encoded response.
    pub const RESPOND: u32 = 5;
    /// Go on with these changes (HTTP); the output is encoded [`super::HttpEdits`] for a
    /// request, encoded header operations for a response.
    pub const HTTP_REWRITE: u32 = 6;
    /// Go on with this value; the output is [`super::encode_new_value`]'s.
    pub const VALUE: u32 = 7;
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
    /// A long byte string (values, bodies).
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
    /// True when everything was read.
    pub fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// A memcached request, as the host hands it to `walnut_on_memcache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McRequest<'a> {
    /// The command's wire name (`get`, `mg`, `flush_all`).
    pub command: &'a [u8],
    /// The key, decoded when the client wrote it in base64; empty for keyless commands.
    pub key: &'a [u8],
    pub flags: u32,
    pub exptime: i64,
    pub value_len: u32,
    /// A meta command's flags after its key, as the client sent them.
    pub meta_flags: &'a [u8],
}

pub fn encode_memcache(out: &mut Vec<u8>, r: &McRequest<'_>) {
    Writer(out)
        .bytes(r.command)
        .bytes(r.key)
        .u32(r.flags)
        .i64(r.exptime)
        .u32(r.value_len)
        .bytes(r.meta_flags);
}

pub fn decode_memcache(buf: &[u8]) -> Option<McRequest<'_>> {
    let mut r = Reader(buf);
    let req = McRequest {
        command: r.bytes()?,
        key: r.bytes()?,
        flags: r.u32()?,
        exptime: r.i64()?,
        value_len: r.u32()?,
        meta_flags: r.bytes()?,
    };
    r.done().then_some(req)
}

/// A value, as the host hands it to `walnut_on_store` and `walnut_on_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueParts<'a> {
    pub command: &'a [u8],
    /// The client's key (decoded when it was base64).
    pub key: &'a [u8],
    pub flags: u32,
    /// A meta command's flags after its key, as the client sent them (`ms`: after the length).
    pub meta_flags: &'a [u8],
    pub data: &'a [u8],
}

pub fn encode_value(out: &mut Vec<u8>, v: &ValueParts<'_>) {
    Writer(out)
        .bytes(v.command)
        .bytes(v.key)
        .u32(v.flags)
        .bytes(v.meta_flags)
        .long_bytes(v.data);
}

pub fn decode_value(buf: &[u8]) -> Option<ValueParts<'_>> {
    let mut r = Reader(buf);
    let v = ValueParts {
        command: r.bytes()?,
        key: r.bytes()?,
        flags: r.u32()?,
        meta_flags: r.bytes()?,
        data: r.long_bytes()?,
    };
    r.done().then_some(v)
}

/// A value hook's `VALUE` answer: the flags and bytes to use instead.
pub fn encode_new_value(out: &mut Vec<u8>, flags: u32, data: &[u8]) {
    Writer(out).u32(flags).long_bytes(data);
}

pub fn decode_new_value(buf: &[u8]) -> Option<(u32, &[u8])> {
    let mut r = Reader(buf);
    let v = (r.u32()?, r.long_bytes()?);
    r.done().then_some(v)
}

/// An HTTP request head, as the host hands it to `walnut_on_http`.
pub fn encode_http_request<'h>(
    out: &mut Vec<u8>,
    method: &[u8],
    path: &[u8],
    query: &[u8],
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
) {
    let mut w = Writer(out);
    w.bytes(method).bytes(path).bytes(query);
    put_headers(&mut w, headers);
}

/// A header list: its count, then each name and value. The count is written last (the
/// iterator need not know its length).
fn put_headers<'h>(w: &mut Writer<'_>, headers: impl Iterator<Item = (&'h [u8], &'h [u8])>) {
    let count_at = w.0.len();
    w.u16(0);
    let mut n = 0u16;
    for (name, value) in headers.take(u16::MAX as usize) {
        w.bytes(name).bytes(value);
        n += 1;
    }
    w.0[count_at..count_at + 2].copy_from_slice(&n.to_le_bytes());
}

/// Header lines as (name, value).
pub type Headers<'a> = Vec<(&'a [u8], &'a [u8])>;

fn get_headers<'a>(r: &mut Reader<'a>) -> Option<Headers<'a>> {
    let n = r.u16()?;
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        headers.push((r.bytes()?, r.bytes()?));
    }
    Some(headers)
}

/// A decoded HTTP request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestParts<'a> {
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

pub fn decode_http_request(buf: &[u8]) -> Option<HttpRequestParts<'_>> {
    let mut r = Reader(buf);
    let parts = HttpRequestParts {
        method: r.bytes()?,
        path: r.bytes()?,
        query: r.bytes()?,
        headers: get_headers(&mut r)?,
    };
    r.done().then_some(parts)
}

/// An upstream's response head, as the host hands it to `walnut_on_http_response`.
pub fn encode_http_response_head<'h>(
    out: &mut Vec<u8>,
    status: u16,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
) {
    let mut w = Writer(out);
    w.u16(status);
    put_headers(&mut w, headers);
}

pub fn decode_http_response_head(buf: &[u8]) -> Option<(u16, Headers<'_>)> {
    let mut r = Reader(buf);
    let head = (r.u16()?, get_headers(&mut r)?);
    r.done().then_some(head)
}

/// What a response hook does to one header: remove every one of that name (0), set it (1), or
/// add a line (2).
pub fn encode_header_ops<'h>(
    out: &mut Vec<u8>,
    ops: impl Iterator<Item = (u8, &'h [u8], &'h [u8])>,
) {
    let mut w = Writer(out);
    let count_at = w.0.len();
    w.u16(0);
    let mut n = 0u16;
    for (op, name, value) in ops.take(u16::MAX as usize) {
        w.u8(op).bytes(name).bytes(value);
        n += 1;
    }
    w.0[count_at..count_at + 2].copy_from_slice(&n.to_le_bytes());
}

/// A response hook's header operations as (operation, name, value).
pub type HeaderOps<'a> = Vec<(u8, &'a [u8], &'a [u8])>;

pub fn decode_header_ops(buf: &[u8]) -> Option<HeaderOps<'_>> {
    let mut r = Reader(buf);
    let n = r.u16()?;
    let mut ops = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let op = r.u8()?;
        if op > 2 {
            return None;
        }
        ops.push((op, r.bytes()?, r.bytes()?));
    }
    r.done().then_some(ops)
}

/// An HTTP response a plugin answers with: status, headers, body.
pub fn encode_response(out: &mut Vec<u8>, status: u16, headers: &[(String, String)], body: &[u8]) {
    let mut w = Writer(out);
    w.u16(status);
    put_headers(
        &mut w,
        headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
    );
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
    let headers = get_headers(&mut r)?;
    let body = r.long_bytes()?;
    r.done().then_some(Response {
        status,
        headers,
        body,
    })
}

/// What an HTTP request hook changed: path, query, header sets (`Some`) and removals (`None`)
/// in order, and the hash key for upstream selection.
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
    r.done().then_some(edits)
}

#[cfg(test)]
#[path = "abi_tests.rs"]
mod tests;
