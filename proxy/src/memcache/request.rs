//! Decoding client requests: memcached's ASCII and meta commands, as pure functions over bytes.

use std::ops::Range;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};

use super::error::ProtocolError;

/// memcached's key length limit.
pub const MAX_KEY_LEN: usize = 250;
/// The longest command line accepted (a multi-get of ~500 long keys); longer is fatal.
pub const MAX_LINE: usize = 128 * 1024;

/// Every command walnut understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Get,
    Gets,
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Delete,
    Incr,
    Decr,
    Touch,
    MetaGet,
    MetaSet,
    MetaDelete,
    MetaArithmetic,
    MetaDebug,
    MetaNoop,
    Version,
    Verbosity,
    Stats,
    FlushAll,
    Quit,
}

impl Command {
    fn from_name(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"get" => Command::Get,
            b"gets" => Command::Gets,
            b"gat" => Command::Gat,
            b"gats" => Command::Gats,
            b"set" => Command::Set,
            b"add" => Command::Add,
            b"replace" => Command::Replace,
            b"append" => Command::Append,
            b"prepend" => Command::Prepend,
            b"cas" => Command::Cas,
            b"delete" => Command::Delete,
            b"incr" => Command::Incr,
            b"decr" => Command::Decr,
            b"touch" => Command::Touch,
            b"mg" => Command::MetaGet,
            b"ms" => Command::MetaSet,
            b"md" => Command::MetaDelete,
            b"ma" => Command::MetaArithmetic,
            b"me" => Command::MetaDebug,
            b"mn" => Command::MetaNoop,
            b"version" => Command::Version,
            b"verbosity" => Command::Verbosity,
            b"stats" => Command::Stats,
            b"flush_all" => Command::FlushAll,
            b"quit" => Command::Quit,
            _ => return None,
        })
    }

    /// The command's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Delete => "delete",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Touch => "touch",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArithmetic => "ma",
            Command::MetaDebug => "me",
            Command::MetaNoop => "mn",
            Command::Version => "version",
            Command::Verbosity => "verbosity",
            Command::Stats => "stats",
            Command::FlushAll => "flush_all",
            Command::Quit => "quit",
        }
    }

    /// get, gets, gat, gats: many keys, answered with VALUE blocks and one END.
    pub fn is_retrieval(self) -> bool {
        matches!(
            self,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        )
    }

    /// set, add, replace, append, prepend, cas: a data block follows the line.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            Command::Set
                | Command::Add
                | Command::Replace
                | Command::Append
                | Command::Prepend
                | Command::Cas
        )
    }

    /// Commands routed to one server by their key.
    pub fn is_keyed(self) -> bool {
        !matches!(
            self,
            Command::MetaNoop
                | Command::Version
                | Command::Verbosity
                | Command::Stats
                | Command::FlushAll
                | Command::Quit
        )
    }
}

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

    /// How many keys `keys()` yields.
    pub fn key_count(&self) -> usize {
        self.key_count as usize
    }

    /// The line up to the first key (`gat 10 `), for building per-server retrievals.
    pub fn retrieval_prefix(&self) -> &[u8] {
        &self.frame[..self.keys.start]
    }

    /// `noreply` (classic) or `q` (meta) was given.
    pub fn is_silent(&self) -> bool {
        self.silent.is_some()
    }

    /// The classic `noreply`: the client wants no reply at all.
    pub fn is_noreply(&self) -> bool {
        self.silent.is_some() && !self.is_meta()
    }

    /// A meta command (mg ms md ma me mn).
    pub fn is_meta(&self) -> bool {
        matches!(
            self.command,
            Command::MetaGet
                | Command::MetaSet
                | Command::MetaDelete
                | Command::MetaArithmetic
                | Command::MetaDebug
                | Command::MetaNoop
        )
    }

    /// Meta `b`: `key()` is base64 and `decoded_key` gives the bytes to hash.
    pub fn has_base64_key(&self) -> bool {
        self.base64_key
    }

    /// The bytes that place this request: the key itself, or its base64 decoding into `scratch`.
    pub fn placement_key<'a>(&'a self, scratch: &'a mut [u8; 512]) -> &'a [u8] {
        if self.base64_key {
            let n = base64::engine::general_purpose::STANDARD
                .decode_slice(self.key(), scratch)
                .unwrap_or(0);
            &scratch[..n]
        } else {
            self.key()
        }
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
    /// replaced by `key` when a plugin rewrote it.
    pub fn write_forward(&self, buf: &mut bytes::BytesMut, key: Option<&[u8]>) {
        let (head, tail) = self.forward_parts();
        match key {
            // The key always comes before the silencing token, so it lies within `head`.
            Some(key) if self.keys.end <= head.len() => {
                buf.extend_from_slice(&head[..self.keys.start]);
                buf.extend_from_slice(key);
                buf.extend_from_slice(&head[self.keys.end..]);
            }
            _ => buf.extend_from_slice(head),
        }
        buf.extend_from_slice(tail);
    }

    /// The storage fields a plugin sees: flags, exptime, value length (zeros elsewhere).
    pub fn storage_fields(&self) -> (u32, i64, u32) {
        let value_len = self.value.len() as u32;
        let mut t = self.tokens();
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

/// A refused request: the error to answer with, and how many bytes after the consumed command
/// line still belong to it (its data block) and must be discarded as they arrive, unbuffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub error: ProtocolError,
    pub skip: usize,
}

impl From<ProtocolError> for Refusal {
    fn from(error: ProtocolError) -> Refusal {
        Refusal { error, skip: 0 }
    }
}

/// Decodes the first request in `buf`. `Ok(None)`: incomplete, `buf` untouched. On success and
/// on every refusal but `LineTooLong` the request's bytes are consumed from `buf`; a refused
/// storage command's data block is then `skip`ped, as memcached swallows it.
pub fn decode(buf: &mut BytesMut, item_size_max: usize) -> Result<Option<Request>, Refusal> {
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > MAX_LINE {
            Err(ProtocolError::LineTooLong.into())
        } else {
            Ok(None)
        };
    };
    let line_len = nl + 1;
    let line = trim_eol(&buf[..nl]);
    let mut data_len = None;
    let parsed = parse_line(line, item_size_max, &mut data_len);
    let head = match parsed {
        Ok(head) => head,
        Err(error) => {
            let _ = buf.split_to(line_len);
            return Err(Refusal {
                error,
                skip: data_len.map_or(0, |n| n + 2),
            });
        }
    };
    let frame_len = match head.data_len {
        None => line_len,
        Some(n) => {
            let total = line_len + n + 2;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            if &buf[line_len + n..total] != b"\r\n" {
                // Resynchronise at the end of the line holding the promised end of data, so the
                // request after a short or long value still parses.
                let from = line_len + n;
                let skip = memchr::memchr(b'\n', &buf[from..]).map_or(buf.len(), |i| from + i + 1);
                let _ = buf.split_to(skip);
                return Err(ProtocolError::BadDataChunk.into());
            }
            total
        }
    };
    let frame = buf.split_to(frame_len).freeze();
    let value = match head.data_len {
        Some(n) => line_len..line_len + n,
        None => line_len..line_len,
    };
    Ok(Some(Request {
        command: head.command,
        frame,
        keys: head.keys,
        key_count: head.key_count,
        silent: head.silent,
        base64_key: head.base64_key,
        value,
    }))
}

/// What the command line says, before the data block is looked at.
struct Head {
    command: Command,
    keys: Range<usize>,
    key_count: u32,
    silent: Option<Range<usize>>,
    base64_key: bool,
    data_len: Option<usize>,
}

/// Tokens of a line as byte ranges; at most `MAX_TOKENS` are kept (enough for any non-retrieval).
struct Tokens {
    ranges: [Range<usize>; MAX_TOKENS],
    len: usize,
    /// More tokens followed than fitted.
    overflow: bool,
}

const MAX_TOKENS: usize = 24;

impl Tokens {
    fn split(line: &[u8]) -> Tokens {
        let mut t = Tokens {
            ranges: std::array::from_fn(|_| 0..0),
            len: 0,
            overflow: false,
        };
        let mut i = 0;
        while i < line.len() {
            if line[i] == b' ' {
                i += 1;
                continue;
            }
            let start = i;
            while i < line.len() && line[i] != b' ' {
                i += 1;
            }
            if t.len == MAX_TOKENS {
                t.overflow = true;
                break;
            }
            t.ranges[t.len] = start..i;
            t.len += 1;
        }
        t
    }

    fn get<'a>(&self, line: &'a [u8], i: usize) -> &'a [u8] {
        &line[self.ranges[i].clone()]
    }

    /// The range of token `i` with the spaces before it, for removing it from the line.
    fn with_space(&self, i: usize) -> Range<usize> {
        self.ranges[i - 1].end..self.ranges[i].end
    }
}

/// Parses a command line. `data_len` is set as soon as a storage command's length is known,
/// so that a refusal after it still skips the data block.
fn parse_line(
    line: &[u8],
    item_size_max: usize,
    data_len: &mut Option<usize>,
) -> Result<Head, ProtocolError> {
    let name_end = memchr::memchr(b' ', line).unwrap_or(line.len());
    let command = Command::from_name(&line[..name_end]).ok_or(ProtocolError::UnknownCommand)?;
    if command.is_retrieval() {
        return parse_retrieval(command, line, name_end);
    }
    let t = Tokens::split(line);
    if t.overflow {
        return Err(ProtocolError::BadFormat);
    }
    let n = t.len;
    let mut head = Head {
        command,
        keys: name_end..name_end,
        key_count: 0,
        silent: None,
        base64_key: false,
        data_len: None,
    };
    // `min` tokens, then optionally one more: `noreply` silences the reply; any other word is
    // ignored, as memcached ignores it.
    let noreply = |head: &mut Head, min: usize| -> Result<(), ProtocolError> {
        if n == min + 1 {
            if t.get(line, min) == b"noreply" {
                head.silent = Some(t.with_space(min));
            }
        } else if n != min {
            return Err(ProtocolError::BadFormat);
        }
        Ok(())
    };
    match command {
        Command::Set
        | Command::Add
        | Command::Replace
        | Command::Append
        | Command::Prepend
        | Command::Cas => {
            let min = if command == Command::Cas { 6 } else { 5 };
            if n < min {
                return Err(ProtocolError::BadFormat);
            }
            // As memcached: a malformed line leaves its data to be read as commands; only a
            // value too large is swallowed.
            set_key(&mut head, line, &t, 1)?;
            parse_u32(t.get(line, 2))?;
            parse_i64(t.get(line, 3))?;
            let len = parse_len(t.get(line, 4))?;
            if command == Command::Cas {
                parse_u64(t.get(line, 5))?;
            }
            noreply(&mut head, min)?;
            if len > item_size_max {
                *data_len = Some(len);
                return Err(ProtocolError::TooLarge);
            }
            head.data_len = Some(len);
        }
        Command::Delete => {
            if n < 2 {
                return Err(ProtocolError::BadFormat);
            }
            set_key(&mut head, line, &t, 1)?;
            // `delete <key> 0 [noreply]` is accepted for old clients; any other time is not.
            let mut min = 2;
            if n >= 3 && t.get(line, 2) != b"noreply" {
                if t.get(line, 2) != b"0" {
                    return Err(ProtocolError::BadDelete);
                }
                min = 3;
            }
            noreply(&mut head, min)?;
        }
        Command::Incr | Command::Decr => {
            if n < 3 {
                return Err(ProtocolError::BadFormat);
            }
            set_key(&mut head, line, &t, 1)?;
            parse_u64(t.get(line, 2)).map_err(|_| ProtocolError::BadDelta)?;
            noreply(&mut head, 3)?;
        }
        Command::Touch => {
            if n < 3 {
                return Err(ProtocolError::BadFormat);
            }
            set_key(&mut head, line, &t, 1)?;
            parse_i64(t.get(line, 2))?;
            noreply(&mut head, 3)?;
        }
        Command::MetaGet
        | Command::MetaSet
        | Command::MetaDelete
        | Command::MetaArithmetic
        | Command::MetaDebug => {
            if n < 2 {
                return Err(ProtocolError::BadFormat);
            }
            let mut first_flag = 2;
            let base64 = (2..n).any(|i| t.get(line, i) == b"b");
            if !base64 {
                set_key(&mut head, line, &t, 1)?;
            }
            if command == Command::MetaSet {
                if n < 3 {
                    return Err(ProtocolError::BadFormat);
                }
                let len = parse_len(t.get(line, 2))?;
                // As memcached: once the key and length are read, a refused meta set swallows
                // its data block.
                *data_len = Some(len);
                if len > item_size_max {
                    return Err(ProtocolError::TooLarge);
                }
                head.data_len = Some(len);
                first_flag = 3;
            }
            if command == Command::MetaDebug && n > 3 {
                return Err(ProtocolError::BadFormat);
            }
            for i in first_flag..n {
                let flag = t.get(line, i);
                if !flag[0].is_ascii_alphabetic() {
                    return Err(ProtocolError::BadFormat);
                }
                match flag {
                    b"q" if command != Command::MetaDebug => head.silent = Some(t.with_space(i)),
                    b"b" => head.base64_key = true,
                    _ => {}
                }
            }
            if head.base64_key {
                let key = t.get(line, 1);
                let mut scratch = [0u8; 512];
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode_slice(key, &mut scratch)
                    .map_err(|_| ProtocolError::BadBase64Key)?;
                if decoded == 0 || decoded > MAX_KEY_LEN {
                    return Err(ProtocolError::BadBase64Key);
                }
                head.keys = t.ranges[1].clone();
                head.key_count = 1;
            }
        }
        // memcached answers these whatever follows.
        Command::MetaNoop | Command::Version | Command::Quit => {}
        Command::Verbosity => {
            // `verbosity noreply` is silent; `verbosity` alone is memcached's ERROR.
            match n {
                1 => return Err(ProtocolError::UnknownCommand),
                2 if t.get(line, 1) == b"noreply" => head.silent = Some(t.with_space(1)),
                _ => {
                    parse_u32(t.get(line, 1))?;
                    noreply(&mut head, 2)?;
                }
            }
        }
        Command::FlushAll => {
            let mut min = 1;
            if n >= 2 && t.get(line, 1) != b"noreply" {
                parse_i64(t.get(line, 1))?;
                min = 2;
            }
            noreply(&mut head, min)?;
        }
        Command::Stats => {}
        Command::Get | Command::Gets | Command::Gat | Command::Gats => unreachable!(),
    }
    Ok(head)
}

/// `get <key>+`, `gat <exptime> <key>+`: any number of keys, so no token array.
fn parse_retrieval(command: Command, line: &[u8], name_end: usize) -> Result<Head, ProtocolError> {
    let mut rest = name_end;
    if matches!(command, Command::Gat | Command::Gats) {
        let (exp, end) = next_token(line, rest).ok_or(ProtocolError::BadFormat)?;
        parse_i64(exp)?;
        rest = end;
    }
    let keys_start = line[rest..]
        .iter()
        .position(|&b| b != b' ')
        .map_or(line.len(), |i| rest + i);
    let mut count = 0u32;
    for key in line[keys_start..]
        .split(|&b| b == b' ')
        .filter(|k| !k.is_empty())
    {
        check_key(key)?;
        count += 1;
    }
    if count == 0 {
        return Err(ProtocolError::BadFormat);
    }
    let keys_end = line
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(line.len(), |i| i + 1);
    Ok(Head {
        command,
        keys: keys_start..keys_end,
        key_count: count,
        silent: None,
        base64_key: false,
        data_len: None,
    })
}

fn next_token(line: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let start = from + line[from..].iter().position(|&b| b != b' ')?;
    let end = memchr::memchr(b' ', &line[start..]).map_or(line.len(), |i| start + i);
    Some((&line[start..end], end))
}

fn set_key(head: &mut Head, line: &[u8], t: &Tokens, i: usize) -> Result<(), ProtocolError> {
    check_key(t.get(line, i))?;
    head.keys = t.ranges[i].clone();
    head.key_count = 1;
    Ok(())
}

/// A key is 1 to 250 bytes with no space or control characters (bytes >= 0x80 are fine).
pub fn check_key(key: &[u8]) -> Result<(), ProtocolError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(ProtocolError::BadKey);
    }
    Ok(())
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_u64(t: &[u8]) -> Result<u64, ProtocolError> {
    if t.is_empty() || t.len() > 20 || !t.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::BadFormat);
    }
    t.iter()
        .try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(ProtocolError::BadFormat)
}

fn parse_u32(t: &[u8]) -> Result<u32, ProtocolError> {
    u32::try_from(parse_u64(t)?).map_err(|_| ProtocolError::BadFormat)
}

fn parse_i64(t: &[u8]) -> Result<i64, ProtocolError> {
    match t.strip_prefix(b"-") {
        Some(digits) => {
            Ok(-i64::try_from(parse_u64(digits)?).map_err(|_| ProtocolError::BadFormat)?)
        }
        None => i64::try_from(parse_u64(t)?).map_err(|_| ProtocolError::BadFormat),
    }
}

/// A data length: memcached reads it as a non-negative 32-bit int.
fn parse_len(t: &[u8]) -> Result<usize, ProtocolError> {
    let n = parse_u64(t)?;
    if n > i32::MAX as u64 {
        return Err(ProtocolError::BadFormat);
    }
    Ok(n as usize)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
