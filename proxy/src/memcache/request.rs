//! Decoding client requests: memcached's ASCII and meta commands, as pure functions over bytes.

use std::ops::Range;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};

pub use super::command::Command;
pub use super::parse::check_key;
use super::parse::trim_eol;

/// memcached's key length limit.
pub const MAX_KEY_LEN: usize = 250;

/// One decoded request. Keys and values are ranges into `frame`, the bytes the client sent.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    frame: Bytes,
    /// The key, or for retrieval commands the space-separated key list.
    keys: Range<usize>,
    key_count: u32,
    /// The ` noreply` or meta ` q` token, removed when forwarding so the backend always answers.
    silent: Option<Range<usize>>,
    /// Meta `b`: the key is base64.
    base64_key: bool,
    /// The data block (storage commands), without its `\r\n`.
    value: Range<usize>,
    /// Where a retrieval read in batches sits in its line.
    pub part: Part,
}

/// A retrieval with many keys, or a line too long to hold, is read in batches of keys, each a
/// request of its own; together they answer as one retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Part {
    /// A request on its own.
    #[default]
    Whole,
    /// A batch more keys of the same line follow: its reply has no `END`.
    Leading,
    /// The last batch of a line: its reply ends with the line's one `END`.
    Last,
}

impl Part {
    /// A batch of a longer line (its reply is part of one that was partly sent already, so a
    /// failed server's keys are misses, never an error line).
    pub fn is_batch(self) -> bool {
        self != Part::Whole
    }
}

impl Request {
    /// The whole request as the client sent it, data block included.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The first (for most commands the only) key; empty for keyless commands.
    pub fn key(&self) -> &[u8] {
        let keys = &self.frame[self.keys.clone()];
        let end = memchr::memchr(b' ', keys).unwrap_or(keys.len());
        &keys[..end]
    }

    /// Every key, in the client's order (one for keyed commands, many for retrievals).
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.frame[self.keys.clone()]
            .split(|&b| b == b' ')
            .filter(|k| !k.is_empty())
    }

    /// Where the key (or key list) sits in `frame()`.
    pub fn keys_range(&self) -> Range<usize> {
        self.keys.clone()
    }

    /// Builds a request from parsed parts; `frame` holds it all.
    pub(super) fn from_parts(
        command: Command,
        frame: Bytes,
        keys: Range<usize>,
        key_count: u32,
        silent: Option<Range<usize>>,
        base64_key: bool,
        value: Range<usize>,
    ) -> Request {
        Request {
            command,
            frame,
            keys,
            key_count,
            silent,
            base64_key,
            value,
            part: Part::Whole,
        }
    }

    /// How many keys `keys()` yields.
    pub fn key_count(&self) -> usize {
        self.key_count as usize
    }

    /// `noreply` (classic) or `q` (meta) was given.
    pub fn is_silent(&self) -> bool {
        self.silent.is_some()
    }

    /// The classic `noreply`: the client wants no reply at all.
    pub fn is_noreply(&self) -> bool {
        self.silent.is_some() && !self.is_meta()
    }

    /// Meta `b`: the key is base64 (`placement_key` decodes it).
    pub fn is_base64(&self) -> bool {
        self.base64_key
    }

    /// A meta command (mg ms md ma me mn).
    pub fn is_meta(&self) -> bool {
        self.command.is_meta()
    }

    /// The bytes that place this request: the key itself, or its base64 decoding into `scratch`.
    pub fn placement_key<'a>(&'a self, scratch: &'a mut [u8; 512]) -> &'a [u8] {
        placement_key(self.key(), self.base64_key, scratch)
    }

    /// The value of a storage command.
    pub fn value(&self) -> &[u8] {
        &self.frame[self.value.clone()]
    }

    /// The request as the backend must see it: the two parts around the silencing token.
    pub fn forward_parts(&self) -> (&[u8], &[u8]) {
        match &self.silent {
            Some(r) => (&self.frame[..r.start], &self.frame[r.end..]),
            None => (&self.frame[..], &[]),
        }
    }

    /// Writes the request as the backend must see it (without `noreply`/`q`), with its key
    /// replaced by `key` when a plugin rewrote it; returns where the key (list) went.
    /// For a meta command with a base64 key (`b`), `key` is the decoded key (as plugins see
    /// it) and is written encoded.
    pub fn write_forward(&self, buf: &mut BytesMut, key: Option<&[u8]>) -> KeySpan {
        let (head, tail) = self.forward_parts();
        let start = self.keys.start;
        let written = match key {
            // The key always comes before the silencing token, so it lies within `head`.
            Some(key) if self.keys.end <= head.len() => {
                buf.extend_from_slice(&head[..start]);
                let len = self.put_key(buf, Some(key));
                buf.extend_from_slice(&head[self.keys.end..]);
                len
            }
            _ => {
                buf.extend_from_slice(head);
                self.keys.len()
            }
        };
        buf.extend_from_slice(tail);
        KeySpan::new(start, written, self.base64_key)
    }

    /// Writes `key` (decoded, for a base64 key) as this request's key, or the client's own
    /// key as it came when `None`; returns its length.
    fn put_key(&self, buf: &mut BytesMut, key: Option<&[u8]>) -> usize {
        let key = match key {
            Some(key) if self.base64_key => {
                let mut encoded = [0u8; 4 * MAX_KEY_LEN.div_ceil(3) + 4];
                let n = base64::engine::general_purpose::STANDARD
                    .encode_slice(key, &mut encoded)
                    .unwrap_or(0);
                buf.extend_from_slice(&encoded[..n]);
                return n;
            }
            Some(key) => key,
            None => self.key(),
        };
        buf.extend_from_slice(key);
        key.len()
    }

    /// `write_forward`, with ` f` added to a meta get that asks for a value without its
    /// flags (the value hooks need them; the reply shows them only where asked).
    pub fn write_forward_with_flags(&self, buf: &mut BytesMut, key: Option<&[u8]>) -> KeySpan {
        let span = self.write_forward(buf, key);
        if self.command == Command::MetaGet
            && self.meta_flag(b'v').is_some()
            && self.meta_flag(b'f').is_none()
        {
            let eol = if buf.ends_with(b"\r\n") { 2 } else { 1 };
            buf.truncate(buf.len() - eol);
            buf.extend_from_slice(b" f\r\n");
        }
        span
    }

    /// Writes a storage request (`set` ... `cas`, or `ms`) as the backend must see it (without
    /// `noreply`/`q`) with its value replaced by `data` and its client flags by `flags` (a
    /// plugin's value hook changed them), and its key by `key` when given.
    pub fn write_stored(
        &self,
        buf: &mut BytesMut,
        key: Option<&[u8]>,
        flags: u32,
        data: &[u8],
    ) -> KeySpan {
        let line = &self.frame[..self.value.start.min(self.frame.len())];
        let mut tokens = trim_eol(line)
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty());
        let mut number = itoa::Buffer::new();
        buf.extend_from_slice(tokens.next().unwrap_or_default());
        buf.extend_from_slice(b" ");
        let key_at = buf.len();
        let key_len = self.put_key(buf, key);
        let _client_key = tokens.next();
        if self.command == Command::MetaSet {
            let _len = tokens.next();
            buf.extend_from_slice(b" ");
            buf.extend_from_slice(number.format(data.len()).as_bytes());
            let mut flags_written = false;
            for t in tokens {
                match t.first() {
                    Some(b'q') if t.len() == 1 => continue,
                    Some(b'F') => {
                        flags_written = true;
                        buf.extend_from_slice(b" F");
                        buf.extend_from_slice(number.format(flags).as_bytes());
                    }
                    _ => {
                        buf.extend_from_slice(b" ");
                        buf.extend_from_slice(t);
                    }
                }
            }
            if !flags_written && flags != 0 {
                buf.extend_from_slice(b" F");
                buf.extend_from_slice(number.format(flags).as_bytes());
            }
        } else {
            let _flags = tokens.next();
            let exptime = tokens.next().unwrap_or(b"0");
            let _len = tokens.next();
            buf.extend_from_slice(b" ");
            buf.extend_from_slice(number.format(flags).as_bytes());
            buf.extend_from_slice(b" ");
            buf.extend_from_slice(exptime);
            buf.extend_from_slice(b" ");
            buf.extend_from_slice(number.format(data.len()).as_bytes());
            if self.command == Command::Cas
                && let Some(unique) = tokens.next()
            {
                buf.extend_from_slice(b" ");
                buf.extend_from_slice(unique);
            }
        }
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(data);
        buf.extend_from_slice(b"\r\n");
        KeySpan::new(key_at, key_len, self.base64_key)
    }

    /// `write_as_meta_get` can write this request.
    pub fn fits_meta_get(&self) -> bool {
        match self.command {
            c if c.is_touching_retrieval() => {
                self.key_count == 1 && self.tokens().next().is_some_and(is_integer)
            }
            c => c.is_retrieval() && self.key_count == 1,
        }
    }

    /// Writes a one-key `get`/`gets`/`gat`/`gats` as the meta get that answers the same:
    /// `mg <key> f v`, with `c` for the cas forms and `T<exptime>` for the touching ones, and
    /// `O<opaque>` unless it is 0; `key` replaces the client's. Returns where the key went, or `None`, writing nothing, for
    /// anything else, and for a `gat` whose exptime is not a number (memcached's own error for
    /// it then stays the same).
    pub fn write_as_meta_get(
        &self,
        buf: &mut BytesMut,
        key: Option<&[u8]>,
        opaque: u32,
    ) -> Option<KeySpan> {
        if !self.fits_meta_get() {
            return None;
        }
        let touch = self.command.is_touching_retrieval();
        let exptime = if touch {
            self.tokens().next().unwrap_or_default()
        } else {
            &[]
        };
        let key = key.unwrap_or(self.key());
        buf.extend_from_slice(b"mg ");
        buf.extend_from_slice(key);
        buf.extend_from_slice(b" f v");
        if self.command.returns_cas() {
            buf.extend_from_slice(b" c");
        }
        if touch {
            buf.extend_from_slice(b" T");
            buf.extend_from_slice(exptime);
        }
        if opaque != 0 {
            buf.extend_from_slice(b" O");
            buf.extend_from_slice(itoa::Buffer::new().format(opaque).as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        Some(KeySpan::new(3, key.len(), false))
    }

    /// A meta command's flags after its key (`ms`: after its length), as the client sent
    /// them; empty for other commands.
    pub fn meta_flags(&self) -> &[u8] {
        if !self.is_meta() {
            return &[];
        }
        let line = trim_eol(&self.frame[..self.value.start.min(self.frame.len())]);
        let mut rest = line.get(self.keys.end..).unwrap_or_default();
        if self.command == Command::MetaSet {
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            let len_end = rest[start..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(rest.len(), |i| start + i);
            rest = &rest[len_end..];
        }
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        &rest[start..]
    }

    /// The meta flag token starting with `flag` (`T30` for `T`), if the client gave one.
    pub fn meta_flag(&self, flag: u8) -> Option<&[u8]> {
        self.meta_flags()
            .split(|&b| b == b' ')
            .find(|t| t.first() == Some(&flag))
    }

    /// The storage fields a plugin sees: flags, exptime, value length (zeros elsewhere); for
    /// `ms` the `F` and `T` flags.
    pub fn storage_fields(&self) -> (u32, i64, u32) {
        let value_len = self.value.len() as u32;
        let mut t = self.tokens();
        let number = |t: Option<&[u8]>| std::str::from_utf8(t?).ok()?.parse().ok();
        if self.command == Command::MetaSet {
            let flags = number(self.meta_flag(b'F').map(|t| &t[1..])).unwrap_or(0);
            let exptime = number(self.meta_flag(b'T').map(|t| &t[1..])).unwrap_or(0);
            return (flags as u32, exptime, value_len);
        }
        match self.command {
            c if c.is_storage() => {
                let _key = t.next();
                let flags = t
                    .next()
                    .and_then(|f| std::str::from_utf8(f).ok()?.parse().ok())
                    .unwrap_or(0);
                let exptime = t
                    .next()
                    .and_then(|f| std::str::from_utf8(f).ok()?.parse().ok())
                    .unwrap_or(0);
                (flags, exptime, value_len)
            }
            Command::Touch | Command::Gat | Command::Gats => {
                let skip = usize::from(self.command == Command::Touch);
                let exptime = t
                    .nth(skip)
                    .and_then(|f| std::str::from_utf8(f).ok()?.parse().ok())
                    .unwrap_or(0);
                (0, exptime, 0)
            }
            _ => (0, 0, value_len),
        }
    }

    /// The numeric argument after the command of `flush_all`/`verbosity` style lines, if any.
    pub fn tokens(&self) -> impl Iterator<Item = &[u8]> {
        let line = &self.frame[..self.value.start.min(self.frame.len())];
        trim_eol(line)
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty())
            .skip(1)
    }
}

/// Where a request's key (a retrieval's key list) lies in the bytes written for a server, so
/// the request can be placed again without parsing them (when its server is ejected before it
/// was sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySpan {
    start: u32,
    len: u32,
    /// Meta `b`: the key is base64 text.
    base64: bool,
}

impl KeySpan {
    pub fn new(start: usize, len: usize, base64: bool) -> KeySpan {
        KeySpan {
            start: start as u32,
            len: len as u32,
            base64,
        }
    }

    /// The key (list) in `bytes`, the request as written; empty for a keyless one.
    pub fn of<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let start = self.start as usize;
        bytes
            .get(start..start + self.len as usize)
            .unwrap_or_default()
    }

    pub fn is_base64(&self) -> bool {
        self.base64
    }

    /// The key list's range in `bytes`.
    pub fn range(&self) -> Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

/// The bytes that place a request with `key`: the key itself, or for a meta `b` key its
/// base64 decoding into `scratch`.
pub fn placement_key<'a>(key: &'a [u8], base64: bool, scratch: &'a mut [u8; 512]) -> &'a [u8] {
    if !base64 {
        return key;
    }
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(key, scratch)
        .unwrap_or(0);
    &scratch[..n]
}

/// Writes the classic retrieval that the meta get `mg` (as `Request::write_as_meta_get` wrote
/// it) stands for: `c` gives `gets`/`gats`, `T<exptime>` gives `gat`/`gats`. For a server found
/// not to speak meta after the request was written for one. Returns where the key went.
pub fn write_meta_get_as_classic(mg: &[u8], buf: &mut BytesMut) -> KeySpan {
    let line = trim_eol(mg);
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty()).skip(1);
    let key = tokens.next().unwrap_or_default();
    let (mut cas, mut exptime) = (false, None);
    for t in tokens {
        match t.split_first() {
            Some((b'c', [])) => cas = true,
            Some((b'T', n)) => exptime = Some(n),
            _ => {}
        }
    }
    let start = buf.len();
    buf.extend_from_slice(match (cas, exptime.is_some()) {
        (false, false) => b"get ",
        (true, false) => b"gets ",
        (false, true) => b"gat ",
        (true, true) => b"gats ",
    });
    if let Some(n) = exptime {
        buf.extend_from_slice(n);
        buf.extend_from_slice(b" ");
    }
    let key_at = buf.len() - start;
    buf.extend_from_slice(key);
    buf.extend_from_slice(b"\r\n");
    KeySpan::new(key_at, key.len(), false)
}

/// An optionally negative decimal integer that fits an i64.
fn is_integer(t: &[u8]) -> bool {
    let digits = t.strip_prefix(b"-").unwrap_or(t);
    !digits.is_empty() && digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit)
}
