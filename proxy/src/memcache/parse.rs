//! Parsing one command line: its command, key(s), numbers and flags, checked as memcached checks them.

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
pub(super) fn parse_line(
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
        c if c.is_storage() => {
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
        c if c.is_meta() && c != Command::MetaNoop => {
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
        // Retrievals were parsed above; every other command has an arm.
        _ => return Err(ProtocolError::UnknownCommand),
    }
    Ok(head)
}

/// `get <key>+`, `gat <exptime> <key>+`: any number of keys, so no token array.
fn parse_retrieval(command: Command, line: &[u8], name_end: usize) -> Result<Head, ProtocolError> {
    let mut rest = name_end;
    if command.is_touching_retrieval() {
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
