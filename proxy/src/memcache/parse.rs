//! Parsing one command line as memcached 1.6 parses it: the same token counts per command, the
//! same checks in the same order, the same error line for each, and `noreply` (the last token)
//! honoured even for an error.

use std::ops::Range;

use base64::Engine as _;

use super::command::Command;
use super::error::ProtocolError;
use super::request::MAX_KEY_LEN;

/// What the command line says, before the data block is looked at.
pub(super) struct Head {
    pub(super) command: Command,
    pub(super) keys: Range<usize>,
    pub(super) key_count: u32,
    pub(super) silent: Option<Range<usize>>,
    pub(super) base64_key: bool,
    pub(super) data_len: Option<usize>,
}

/// A line memcached refuses, and what goes with the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LineError {
    pub(super) error: ProtocolError,
    /// The line ended in `noreply`: the error is not answered, as memcached does not answer it.
    pub(super) noreply: bool,
    /// A data block follows that memcached swallows (a value too large, a refused meta set).
    pub(super) data_len: Option<usize>,
    /// A `set` or `ms` too large to store: memcached also unlinks the key's old value. The
    /// key's range in the line, and whether it is base64 (`ms ... b`).
    pub(super) unlink: Option<(Range<usize>, bool)>,
}

impl From<ProtocolError> for LineError {
    fn from(error: ProtocolError) -> LineError {
        LineError {
            error,
            noreply: false,
            data_len: None,
            unlink: None,
        }
    }
}

/// memcached keeps 23 tokens of a line (`MAX_TOKENS` 24 with its terminal token); a longer
/// line counts as 24, which no fixed-arity command takes.
const MAX_TOKENS: usize = 23;

/// Tokens of a line as byte ranges.
struct Tokens {
    ranges: [Range<usize>; MAX_TOKENS],
    /// How many tokens memcached counts: up to `MAX_TOKENS`, one more when the line has more.
    n: usize,
}

impl Tokens {
    fn split(line: &[u8]) -> Tokens {
        let mut t = Tokens {
            ranges: std::array::from_fn(|_| 0..0),
            n: 0,
        };
        let mut i = 0;
        while i < line.len() {
            if line[i] == b' ' {
                i += 1;
                continue;
            }
            if t.n == MAX_TOKENS {
                t.n += 1;
                break;
            }
            let start = i;
            while i < line.len() && line[i] != b' ' {
                i += 1;
            }
            t.ranges[t.n] = start..i;
            t.n += 1;
        }
        t
    }

    fn get<'a>(&self, line: &'a [u8], i: usize) -> &'a [u8] {
        &line[self.ranges[i].clone()]
    }

    /// The last token memcached looks at for `noreply` (the 23rd of a longer line).
    fn last<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        match self.n {
            0 => b"",
            n => self.get(line, n.min(MAX_TOKENS) - 1),
        }
    }

    /// The range of token `i` with the spaces before it, for removing it from the line.
    fn with_space(&self, i: usize) -> Range<usize> {
        self.ranges[i - 1].end..self.ranges[i].end
    }
}

/// Parses a command line (without its end of line).
pub(super) fn parse_line(line: &[u8], item_size_max: usize) -> Result<Head, LineError> {
    let name_end = memchr::memchr(b' ', line).unwrap_or(line.len());
    let Some(command) = Command::from_name(&line[..name_end]) else {
        return Err(unknown(line));
    };
    if command.is_retrieval() {
        return parse_retrieval(command, line, name_end).map_err(LineError::from);
    }
    let t = Tokens::split(line);
    let n = t.n;
    let mut head = Head {
        command,
        keys: name_end..name_end,
        key_count: 0,
        silent: None,
        base64_key: false,
        data_len: None,
    };
    // As memcached's `set_noreply_maybe`: the last token, whatever the line's length.
    let noreply = t.last(line) == b"noreply" && n > 1;
    let refuse = |error: ProtocolError| LineError {
        error,
        noreply,
        data_len: None,
        unlink: None,
    };
    let arity = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(LineError::from(ProtocolError::UnknownCommand))
        }
    };
    if noreply {
        head.silent = Some(t.with_space(n - 1));
    }
    match command {
        c if c.is_storage() => {
            let cas = c == Command::Cas;
            let min = if cas { 6 } else { 5 };
            arity(n == min || n == min + 1)?;
            // As memcached: a malformed line leaves its data to be read as commands; only a
            // value too large is swallowed.
            set_key(&mut head, line, &t, 1).map_err(refuse)?;
            parse_u32(t.get(line, 2)).map_err(refuse)?;
            parse_i64(t.get(line, 3)).map_err(refuse)?;
            let len = parse_len(t.get(line, 4)).map_err(refuse)?;
            if cas {
                parse_u64(t.get(line, 5)).map_err(refuse)?;
            }
            if len > item_size_max {
                return Err(LineError {
                    data_len: Some(len),
                    unlink: (c == Command::Set).then(|| (head.keys.clone(), false)),
                    ..refuse(ProtocolError::TooLarge)
                });
            }
            head.data_len = Some(len);
        }
        Command::Delete => {
            arity((2..=4).contains(&n))?;
            if n > 2 {
                // `delete <key> 0 [noreply]` is accepted for old clients; any other time is not.
                let hold_is_zero = t.get(line, 2) == b"0";
                let valid =
                    (n == 3 && (hold_is_zero || noreply)) || (n == 4 && hold_is_zero && noreply);
                if !valid {
                    return Err(refuse(ProtocolError::BadDelete));
                }
            } else {
                head.silent = None;
            }
            set_key(&mut head, line, &t, 1).map_err(refuse)?;
        }
        Command::Incr | Command::Decr => {
            arity(n == 3 || n == 4)?;
            set_key(&mut head, line, &t, 1).map_err(refuse)?;
            parse_u64(t.get(line, 2)).map_err(|_| refuse(ProtocolError::BadDelta))?;
        }
        Command::Touch => {
            arity(n == 3 || n == 4)?;
            set_key(&mut head, line, &t, 1).map_err(refuse)?;
            parse_i64(t.get(line, 2)).map_err(|_| refuse(ProtocolError::BadExptime))?;
        }
        Command::Verbosity => {
            arity(n == 2 || n == 3)?;
            parse_u32(t.get(line, 1)).map_err(refuse)?;
        }
        Command::FlushAll => {
            arity((1..=3).contains(&n))?;
            if n != if noreply { 2 } else { 1 } {
                parse_i64(t.get(line, 1)).map_err(|_| refuse(ProtocolError::BadExptime))?;
            }
        }
        c if c.is_meta() && c != Command::MetaNoop => {
            head.silent = None;
            parse_meta(&mut head, line, &t, item_size_max)?;
        }
        // memcached answers these whatever follows.
        Command::MetaNoop | Command::Version | Command::Quit | Command::Stats => {
            head.silent = None;
        }
        // Retrievals were parsed above; every other command has an arm.
        _ => return Err(unknown(line)),
    }
    Ok(head)
}

/// A command memcached does not know: `ERROR`, or, for a line that looks like an HTTP request
/// (its last token starts with `HTTP/`), the connection closes, as memcached closes it to stop
/// browsers' cross-protocol requests. memcached dispatches on the first letter first, so an
/// unknown command starting with one of its commands' letters is an `ERROR` whatever follows.
fn unknown(line: &[u8]) -> LineError {
    let t = Tokens::split(line);
    let name = if t.n > 0 { t.get(line, 0) } else { b"" };
    let letter_dispatched = match name {
        [b'm', _] => true,
        [first, ..] => b"gsacidt".contains(first),
        [] => true,
    };
    if !letter_dispatched && name.len() >= 2 && t.last(line).starts_with(b"HTTP/") {
        return ProtocolError::NotMemcached.into();
    }
    ProtocolError::UnknownCommand.into()
}

/// The meta commands' own rules (mg ms md ma me).
fn parse_meta(
    head: &mut Head,
    line: &[u8],
    t: &Tokens,
    item_size_max: usize,
) -> Result<(), LineError> {
    let n = t.n.min(MAX_TOKENS);
    let command = head.command;
    if n < 2 {
        // memcached wants a key token before its meta command's own checks (but `me`'s).
        return Err(match command {
            Command::MetaDebug => ProtocolError::BadFormat,
            _ => ProtocolError::UnknownCommand,
        }
        .into());
    }
    let mut first_flag = 2;
    // As memcached reads them, a flag is its token's first character (`b\r` is `b`).
    let base64 = (2..n).any(|i| t.get(line, i).first() == Some(&b'b'));
    if !base64 {
        set_key(head, line, t, 1)?;
    }
    let mut swallow = None;
    if command == Command::MetaSet {
        if n < 3 {
            return Err(ProtocolError::BadFormat.into());
        }
        let len = parse_len(t.get(line, 2))?;
        // As memcached: once the key and length are read, a refused meta set swallows its
        // data block.
        swallow = Some(len);
        first_flag = 3;
    }
    let refuse = |error: ProtocolError| LineError {
        error,
        noreply: false,
        data_len: swallow,
        unlink: None,
    };
    if command == Command::MetaDebug && n > 3 {
        return Err(refuse(ProtocolError::BadFormat));
    }
    let mut seen = 0u64;
    for i in first_flag..n {
        let flag = t.get(line, i);
        if !flag[0].is_ascii_alphabetic() {
            return Err(refuse(ProtocolError::BadFormat));
        }
        // As memcached: a flag is its first character, and none may come twice (`me` has
        // no flags; its extra tokens are not read).
        let c = flag[0];
        let bit = 1u64
            << if c.is_ascii_lowercase() {
                c - b'a'
            } else {
                c - b'A' + 26
            };
        if seen & bit != 0 && command != Command::MetaDebug {
            return Err(refuse(match command {
                Command::MetaDelete | Command::MetaArithmetic => {
                    ProtocolError::DuplicateOrInvalidFlag
                }
                _ => ProtocolError::DuplicateFlag,
            }));
        }
        seen |= bit;
        match c {
            b'q' if command != Command::MetaDebug => head.silent = Some(t.with_space(i)),
            b'b' => head.base64_key = true,
            _ => {}
        }
    }
    if head.base64_key {
        let key = t.get(line, 1);
        let mut scratch = [0u8; 512];
        let decoded = base64::engine::general_purpose::STANDARD
            .decode_slice(key, &mut scratch)
            .map_err(|_| refuse(ProtocolError::BadBase64Key))?;
        if decoded == 0 || decoded > MAX_KEY_LEN {
            return Err(refuse(ProtocolError::BadBase64Key));
        }
        head.keys = t.ranges[1].clone();
        head.key_count = 1;
    }
    if let Some(len) = swallow {
        if len > item_size_max {
            // memcached unlinks the old value of a meta set too large, whatever its mode.
            return Err(LineError {
                unlink: Some((head.keys.clone(), head.base64_key)),
                ..refuse(ProtocolError::TooLarge)
            });
        }
        head.data_len = Some(len);
    }
    Ok(())
}

/// `get <key>*`, `gat <exptime> <key>*`: any number of keys, so no token array. A `gat` with
/// an exptime and no key is answered `END`, as memcached answers it.
fn parse_retrieval(command: Command, line: &[u8], name_end: usize) -> Result<Head, ProtocolError> {
    let mut rest = name_end;
    if command.is_touching_retrieval() {
        let (exp, end) = next_token(line, rest).ok_or(ProtocolError::UnknownCommand)?;
        parse_i64(exp).map_err(|_| ProtocolError::BadExptime)?;
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
    if count == 0 && !command.is_touching_retrieval() {
        return Err(ProtocolError::UnknownCommand);
    }
    let keys_end = line
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(line.len(), |i| i + 1)
        .max(keys_start);
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

pub(super) fn trim_eol(line: &[u8]) -> &[u8] {
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

/// A signed number, as memcached reads exptimes (`strtol`: any long, cut to an int after).
fn parse_i64(t: &[u8]) -> Result<i64, ProtocolError> {
    match t.strip_prefix(b"-") {
        Some(digits) => {
            Ok(-i64::try_from(parse_u64(digits)?).map_err(|_| ProtocolError::BadFormat)?)
        }
        None => i64::try_from(parse_u64(t)?).map_err(|_| ProtocolError::BadFormat),
    }
}

/// A data length: memcached refuses anything above `INT_MAX - 2` (so the length with its
/// `\r\n` still fits an int). Only plain digits are taken: a length memcached could read
/// differently from walnut (a sign, a number past an int that it would cut) would put the two
/// out of step on where the data ends, so such a line is refused, never forwarded.
fn parse_len(t: &[u8]) -> Result<usize, ProtocolError> {
    let n = parse_u64(t)?;
    if n > i32::MAX as u64 - 2 {
        return Err(ProtocolError::BadFormat);
    }
    Ok(n as usize)
}
