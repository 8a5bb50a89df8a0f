//! Framing backend replies: where each reply ends, and the VALUE blocks inside a retrieval reply.

/// A reply line longer than this with no end means the backend speaks something else.
const MAX_REPLY_LINE: usize = 8 * 1024;
/// The most a server's answer to `stats <group>` may hold.
pub const MAX_STATS_REPLY: usize = 1024 * 1024;

/// The backend sent bytes that are not a memcached reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("backend sent an invalid reply")]
pub struct BadReply;

/// Finds where replies end in a backend's byte stream. It remembers how far the current reply
/// was already checked, so a large multi-get reply arriving in pieces is scanned once.
#[derive(Debug)]
pub struct ReplyScanner {
    /// Offset of the first VALUE block (or stats line) of the current reply not yet seen whole.
    checked: usize,
    /// The largest value a reply may carry: a bigger one is refused as soon as its length is
    /// read, never buffered.
    max_value: usize,
}

/// The shape of reply a request expects, so anything else from the server is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// get gets gat gats: VALUE blocks, then END.
    Retrieval,
    /// set add replace append prepend cas.
    Storage,
    Delete,
    /// incr decr: a number or NOT_FOUND.
    Arithmetic,
    Touch,
    /// flush_all verbosity: OK.
    Ok,
    /// mg ms md ma me: a two-letter code (VA with a data block).
    Meta,
    /// stats <group>: STAT lines, then END; `stats reset`: RESET.
    Stats,
}

impl ReplyKind {
    /// True when `line` (with its `\r\n`) is a complete reply of this kind, or an error line.
    fn accepts(self, line: &[u8]) -> bool {
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return false;
        };
        if is_error(body) {
            return true;
        }
        let one_of = |words: &[&[u8]]| words.contains(&body);
        match self {
            ReplyKind::Retrieval => body == b"END",
            ReplyKind::Storage => one_of(&[b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND"]),
            ReplyKind::Delete => one_of(&[b"DELETED", b"NOT_FOUND"]),
            ReplyKind::Arithmetic => {
                body == b"NOT_FOUND"
                    || (!body.is_empty() && body.len() <= 20 && body.iter().all(u8::is_ascii_digit))
            }
            ReplyKind::Touch => one_of(&[b"TOUCHED", b"NOT_FOUND"]),
            ReplyKind::Ok => body == b"OK",
            ReplyKind::Stats => one_of(&[b"END", b"RESET"]),
            ReplyKind::Meta => {
                let code = &body[..body.len().min(2)];
                let rest = &body[code.len()..];
                [&b"HD"[..], b"EN", b"NF", b"NS", b"EX", b"MN", b"ME"].contains(&code)
                    && (rest.is_empty() || rest[0] == b' ')
            }
        }
    }
}

impl ReplyScanner {
    /// A scanner refusing values over `max_value` bytes.
    pub fn new(max_value: usize) -> ReplyScanner {
        ReplyScanner {
            checked: 0,
            max_value,
        }
    }

    /// The length of the first complete reply in `buf` to a request expecting `kind`, or `None`
    /// until it has all arrived. After `Some`, the caller removes that many bytes from `buf`.
    /// Anything that is not a memcached reply of that kind is `BadReply`.
    pub fn next(&mut self, buf: &[u8], kind: ReplyKind) -> Result<Option<usize>, BadReply> {
        loop {
            let pos = self.checked;
            let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) else {
                return if buf.len() - pos > MAX_REPLY_LINE {
                    Err(BadReply)
                } else {
                    Ok(None)
                };
            };
            let line_end = pos + nl + 1;
            let line = &buf[pos..line_end];
            let value = match kind {
                ReplyKind::Retrieval => line.strip_prefix(b"VALUE ").map(value_len),
                // VA <size> <flags>*, then the data block.
                ReplyKind::Meta if pos == 0 => {
                    line.strip_prefix(b"VA ").map(|rest| nth_number(rest, 0))
                }
                _ => None,
            };
            if kind == ReplyKind::Stats && line.starts_with(b"STAT ") {
                if line_end > MAX_STATS_REPLY {
                    return Err(BadReply);
                }
                self.checked = line_end;
                continue;
            }
            if let Some(len) = value {
                let len = len.filter(|&n| n <= self.max_value).ok_or(BadReply)?;
                let end = line_end + len + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(BadReply);
                }
                if kind == ReplyKind::Meta {
                    return Ok(Some(end));
                }
                // VALUE <key> <flags> <bytes> [<cas>]: more blocks follow until END.
                self.checked = end;
                continue;
            }
            // Only END closes a reply that has begun (an error or RESET stands alone).
            if !kind.accepts(line) || (pos > 0 && line != b"END\r\n") {
                return Err(BadReply);
            }
            self.checked = 0;
            return Ok(Some(line_end));
        }
    }
}

/// `ERROR`, `CLIENT_ERROR ...` or `SERVER_ERROR ...`.
pub fn is_error(line: &[u8]) -> bool {
    line.starts_with(b"ERROR")
        || line.starts_with(b"CLIENT_ERROR")
        || line.starts_with(b"SERVER_ERROR")
}

/// One `VALUE` block of a retrieval reply: the key, and the block's bytes (line and data).
pub struct ValueBlock<'a> {
    pub key: &'a [u8],
    pub block: &'a [u8],
    /// The VALUE line after the key (` <flags> <bytes> [<cas>]\r\n`), then the data and `\r\n`.
    pub after_key: &'a [u8],
}

/// The VALUE blocks of a complete retrieval reply (as framed by `ReplyScanner`), in order.
pub fn value_blocks(reply: &[u8]) -> impl Iterator<Item = ValueBlock<'_>> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = reply.get(pos..)?.strip_prefix(b"VALUE ")?;
        let nl = memchr::memchr(b'\n', rest)?;
        let len = value_len(&rest[..=nl])?;
        let key_len = memchr::memchr(b' ', rest)?;
        let start = pos;
        let end = pos + 6 + nl + 1 + len + 2;
        pos = end;
        let block = reply.get(start..end)?;
        Some(ValueBlock {
            key: &rest[..key_len],
            block,
            after_key: &block[6 + key_len..],
        })
    })
}

/// The hit of a meta get reply: `VA <len> <flags>*` and the data.
pub struct MetaHit<'a> {
    pub flags: &'a [u8],
    pub len: &'a [u8],
    /// The `c` flag's cas unique (`0` without it).
    pub cas: &'a [u8],
    /// The data and its `\r\n`.
    pub data: &'a [u8],
}

/// The hit a complete meta get reply (as framed by `ReplyScanner`) holds, if it is one.
pub fn meta_hit(reply: &[u8]) -> Option<MetaHit<'_>> {
    let nl = memchr::memchr(b'\n', reply)?;
    let va = reply[..=nl].strip_prefix(b"VA ")?;
    let line = va.strip_suffix(b"\r\n").unwrap_or(va);
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let len = tokens.next()?;
    let n = nth_number(len, 0)?;
    let mut hit = MetaHit {
        flags: b"0",
        len,
        cas: b"0",
        data: reply.get(nl + 1..nl + 1 + n + 2)?,
    };
    for token in tokens {
        match token.split_first() {
            Some((b'f', v)) => hit.flags = v,
            Some((b'c', v)) => hit.cas = v,
            _ => {}
        }
    }
    Some(hit)
}

/// The data length a `VALUE` line announces (`rest` is the line after `VALUE `, its `\r\n`
/// included), when it is a line memcached writes: a key, the flags, the length and maybe a cas
/// unique, one space apart. Anything else (two spaces, an empty key) is no `VALUE` line, so
/// the scanner and `value_blocks` can never read one differently. One pass over the bytes:
/// every value of every retrieval comes through here.
fn value_len(rest: &[u8]) -> Option<usize> {
    let line = rest.strip_suffix(b"\r\n")?;
    let key_end = memchr::memchr(b' ', line)?;
    if key_end == 0 {
        return None;
    }
    // flags, length, cas unique: digits, one space apart, the cas unique optional.
    let mut at = key_end + 1;
    let mut len = None;
    for field in 0..3 {
        let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let max = if field == 1 { 10 } else { 20 };
        if digits == 0 || digits > max {
            return None;
        }
        if field == 1 {
            let mut number = line[at..at + digits].iter();
            len = Some(number.try_fold(0usize, |acc, &d| {
                acc.checked_mul(10)?.checked_add(usize::from(d - b'0'))
            })?);
        }
        at += digits;
        match line.get(at) {
            None if field >= 1 => return len,
            Some(b' ') if field < 2 => at += 1,
            _ => return None,
        }
    }
    None
}

/// The `n`th space-separated number of a reply line (counting from 0 after the code).
fn nth_number(line: &[u8], n: usize) -> Option<usize> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let token = line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .nth(n)?;
    if token.is_empty() || token.len() > 10 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    token.iter().try_fold(0usize, |acc, &d| {
        acc.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `value_len` as a reading of tokens: the rule it implements, written plainly.
    fn value_len_by_tokens(rest: &[u8]) -> Option<usize> {
        let line = rest.strip_suffix(b"\r\n")?;
        let mut tokens = line.split(|&b| b == b' ');
        let (key, flags, len) = (tokens.next()?, tokens.next()?, tokens.next()?);
        let cas = tokens.next();
        let digits =
            |t: &[u8], max| !t.is_empty() && t.len() <= max && t.iter().all(u8::is_ascii_digit);
        if key.is_empty()
            || !digits(flags, 20)
            || !digits(len, 10)
            || cas.is_some_and(|c| !digits(c, 20))
            || tokens.next().is_some()
        {
            return None;
        }
        std::str::from_utf8(len).ok()?.parse().ok()
    }

    #[test]
    fn value_lines_are_read_as_their_tokens_say() {
        let alphabet: &[u8] = b"k0 9\r\n";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut cases: Vec<Vec<u8>> = [
            &b"k 0 5\r\n"[..],
            b"k 0 5 77\r\n",
            b" 0 5\r\n",
            b"k  0 5\r\n",
            b"k 0 5 \r\n",
            b"k 0 5 7 7\r\n",
            b"k 0\r\n",
            b"k 0 12345678901\r\n",
            b"k 123456789012345678901 5\r\n",
            b"k 0 9999999999\r\n",
            b"k 0 5\n",
        ]
        .iter()
        .map(|c| c.to_vec())
        .collect();
        for _ in 0..20_000 {
            let len = (seed % 14) as usize;
            let case = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            cases.push(case);
        }
        for case in &cases {
            assert_eq!(
                value_len(case),
                value_len_by_tokens(case),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    fn frame_all<'a>(stream: &'a [u8], kinds: &[ReplyKind]) -> Result<Vec<&'a [u8]>, BadReply> {
        let mut scanner = ReplyScanner::new(1 << 20);
        let mut out = Vec::new();
        let mut rest = stream;
        for &kind in kinds {
            let Some(n) = scanner.next(rest, kind)? else {
                break;
            };
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        assert!(rest.is_empty(), "left over: {rest:?}");
        Ok(out)
    }

    #[test]
    fn frames_each_kind_of_reply() {
        use ReplyKind::*;
        let stream = b"STORED\r\nVALUE a 0 3\r\nx\r\n\r\nVALUE b 5 0 77\r\n\r\nEND\r\nEND\r\nVA 2 f1\r\nhi\r\nHD\r\nSERVER_ERROR out of memory\r\n42\r\nTOUCHED\r\nDELETED\r\nOK\r\nEN\r\n";
        let kinds = [
            Storage, Retrieval, Retrieval, Meta, Meta, Storage, Arithmetic, Touch, Delete, Ok, Meta,
        ];
        let replies = frame_all(stream, &kinds).unwrap();
        assert_eq!(
            replies,
            vec![
                &b"STORED\r\n"[..],
                b"VALUE a 0 3\r\nx\r\n\r\nVALUE b 5 0 77\r\n\r\nEND\r\n",
                b"END\r\n",
                b"VA 2 f1\r\nhi\r\n",
                b"HD\r\n",
                b"SERVER_ERROR out of memory\r\n",
                b"42\r\n",
                b"TOUCHED\r\n",
                b"DELETED\r\n",
                b"OK\r\n",
                b"EN\r\n",
            ]
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let reply = b"VALUE a 0 3\r\nabc\r\nVALUE bb 1 2 9\r\nxy\r\nEND\r\n";
        for cut in 0..reply.len() {
            let mut scanner = ReplyScanner::new(1 << 20);
            assert_eq!(
                scanner.next(&reply[..cut], ReplyKind::Retrieval),
                Ok(None),
                "cut at {cut}"
            );
        }
        // Resuming after partial scans gives the same answer.
        let mut scanner = ReplyScanner::new(1 << 20);
        for cut in 0..reply.len() {
            assert_eq!(scanner.next(&reply[..cut], ReplyKind::Retrieval), Ok(None));
        }
        assert_eq!(
            scanner.next(reply, ReplyKind::Retrieval),
            Ok(Some(reply.len()))
        );
    }

    #[test]
    fn garbage_is_refused() {
        let bad = |wire: &[u8], kind| {
            assert_eq!(
                ReplyScanner::new(1 << 20).next(wire, kind),
                Err(BadReply),
                "{wire:?}"
            )
        };
        bad(b"VALUE a 0 x\r\n", ReplyKind::Retrieval);
        // Only the lines memcached writes: no empty key, no doubled space, nothing extra.
        bad(b"VALUE  k 0 1\r\nx\r\nEND\r\n", ReplyKind::Retrieval);
        bad(b"VALUE k 0  1\r\nx\r\nEND\r\n", ReplyKind::Retrieval);
        bad(b"VALUE k 0 1 5 6\r\nx\r\nEND\r\n", ReplyKind::Retrieval);
        bad(b"VALUE k 0 1 x\r\nx\r\nEND\r\n", ReplyKind::Retrieval);
        bad(b"VALUE a 0 1\r\nxyz\r\n", ReplyKind::Retrieval);
        bad(b"VALUE a 0 1\r\nx\r\nSTORED\r\n", ReplyKind::Retrieval);
        bad(&[b'x'; 9000], ReplyKind::Storage);
        bad(b"HTTP/1.1 400 Bad Request\r\n", ReplyKind::Storage);
        bad(b"HTTP/1.1 400 Bad Request\r\n", ReplyKind::Retrieval);
        bad(b"STORED\r\n", ReplyKind::Retrieval);
        bad(b"END\r\n", ReplyKind::Storage);
        bad(b"STORED\n", ReplyKind::Storage);
        bad(b"12a\r\n", ReplyKind::Arithmetic);
        bad(b"HDX\r\n", ReplyKind::Meta);
        bad(b"VALUE a 0 1\r\nx\r\n", ReplyKind::Meta);
    }

    #[test]
    fn value_blocks_are_listed_in_order() {
        let reply = b"VALUE a 0 3\r\nabc\r\nVALUE bb 1 2 9\r\nxy\r\nEND\r\n";
        let blocks: Vec<_> = value_blocks(reply)
            .map(|b| (b.key, b.block, b.after_key))
            .collect();
        assert_eq!(
            blocks,
            vec![
                (
                    &b"a"[..],
                    &b"VALUE a 0 3\r\nabc\r\n"[..],
                    &b" 0 3\r\nabc\r\n"[..]
                ),
                (b"bb", b"VALUE bb 1 2 9\r\nxy\r\n", b" 1 2 9\r\nxy\r\n"),
            ]
        );
    }
}
