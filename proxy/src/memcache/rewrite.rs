//! Every change walnut makes to a server's reply before the client sees it: a key a plugin
//! rewrote shown as the client's own (in `VALUE` lines, the meta `k` flag and `me`), replies a
//! meta `q` flag hides, meta get replies shown as the classic retrievals they stand for, and
//! values a plugin's value hook replaced.

use bytes::{BufMut, Bytes, BytesMut};

use super::Command;
use super::lines::{END, NO_REPLY};
use super::reply::{MetaHit, is_error, meta_hit, value_blocks};

/// Writes a `VALUE` block under `key`: `after_key` is the rest of the block as the server sent
/// it (` <flags> <bytes> [<cas>]\r\n`, the data and its `\r\n`).
pub fn put_value_as(key: &[u8], after_key: &[u8], out: &mut BytesMut) {
    out.put_slice(b"VALUE ");
    out.put_slice(key);
    out.put_slice(after_key);
}

/// Writes a meta reply with the key it echoes replaced by `key`: the `k` flag's token, and the
/// key of `me`'s `ME <key> ...` line. The rest of the reply (a value block) is copied as is.
pub fn put_meta_as(reply: &[u8], key: &[u8], out: &mut BytesMut) {
    let eol = memchr::memchr(b'\n', reply).map_or(reply.len(), |i| i + 1);
    let line = reply[..eol].strip_suffix(b"\r\n").unwrap_or(&reply[..eol]);
    let is_me = line.starts_with(b"ME ");
    for (i, token) in line.split(|&b| b == b' ').enumerate() {
        if i > 0 {
            out.put_u8(b' ');
        }
        if is_me && i == 1 {
            out.put_slice(key);
        } else if !is_me && i > 0 && token.first() == Some(&b'k') {
            out.put_u8(b'k');
            out.put_slice(key);
        } else {
            out.put_slice(token);
        }
    }
    out.put_slice(b"\r\n");
    out.put_slice(&reply[eol..]);
}

/// The replies a meta command's `q` flag hides, as memcached 1.6 hides them.
pub fn quiet_hides(cmd: Command, reply: &[u8]) -> bool {
    match cmd {
        Command::MetaGet => reply.starts_with(b"EN"),
        Command::MetaSet | Command::MetaDelete => reply.starts_with(b"HD"),
        Command::MetaArithmetic => reply.starts_with(b"HD") || reply.starts_with(b"VA "),
        _ => false,
    }
}

/// Writes the reply to `mg <key> f v [c] [T..]` as memcached answers the classic one-key
/// retrieval it stands for: `VA <len> f<flags> [c<cas>]` and its data become `VALUE <key>
/// <flags> <len> [<cas>]`, the data and `END`; `EN` becomes `END`. The classic reply of a
/// server that was asked classically is shown under `key`; an error is passed on as it is.
pub fn meta_get_as_classic(reply: &[u8], key: &[u8], cas: bool, out: &mut BytesMut) {
    if reply.starts_with(b"EN\r\n") || reply.starts_with(b"EN ") {
        out.put_slice(super::lines::END);
        return;
    }
    if !reply.starts_with(b"VA ") {
        // A classic reply (the request was re-sent classically): shown under `key` too.
        match value_blocks(reply).next() {
            Some(block) => {
                put_value_as(key, &reply[6 + block.key.len()..], out);
            }
            None => out.put_slice(reply),
        }
        return;
    }
    match meta_hit(reply) {
        Some(hit) => {
            put_hit_as_value(&hit, key, cas, out);
            out.put_slice(super::lines::END);
        }
        None => out.put_slice(reply),
    }
}

/// Writes a meta hit as a classic `VALUE <key> <flags> <len> [<cas>]` block.
fn put_hit_as_value(hit: &MetaHit<'_>, key: &[u8], cas: bool, out: &mut BytesMut) {
    out.put_slice(b"VALUE ");
    out.put_slice(key);
    out.put_u8(b' ');
    out.put_slice(hit.flags);
    out.put_u8(b' ');
    out.put_slice(hit.len);
    if cas {
        out.put_u8(b' ');
        out.put_slice(hit.cas);
    }
    out.put_slice(b"\r\n");
    out.put_slice(hit.data);
}

/// What a value hook made of one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    Keep,
    /// These flags and bytes instead.
    Replace(u32, Vec<u8>),
    /// Left out of the reply: a miss.
    Drop,
}

/// A value hook failed by its plugin's policy: the reply becomes `SERVER_ERROR plugin failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookFailed;

/// Writes a classic retrieval reply with each value passed through `hook(key, flags, data)`:
/// a replaced value's `VALUE` line carries its new flags and length (and the cas unique it had).
/// Anything that is not a `VALUE` block (`END`, an error) is copied as it is.
pub fn map_values(
    reply: &[u8],
    out: &mut BytesMut,
    mut hook: impl FnMut(&[u8], u32, &[u8]) -> Result<Mapped, HookFailed>,
) -> Result<(), HookFailed> {
    let mut at = 0;
    for block in value_blocks(reply) {
        at += block.block.len();
        let line_end = memchr::memchr(b'\n', block.block).map_or(0, |i| i + 1);
        let line = &block.block[..line_end];
        let mut fields = line[6 + block.key.len()..]
            .strip_suffix(b"\r\n")
            .unwrap_or_default()
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty());
        let flags = fields.next().and_then(number).unwrap_or(0) as u32;
        let _len = fields.next();
        let cas = fields.next();
        let data = &block.block[line_end..block.block.len() - 2];
        match hook(block.key, flags, data)? {
            Mapped::Keep => out.put_slice(block.block),
            Mapped::Drop => {}
            Mapped::Replace(flags, data) => {
                out.put_slice(b"VALUE ");
                out.put_slice(block.key);
                put_number(out, u64::from(flags));
                put_number(out, data.len() as u64);
                if let Some(cas) = cas {
                    out.put_u8(b' ');
                    out.put_slice(cas);
                }
                out.put_slice(b"\r\n");
                out.put_slice(&data);
                out.put_slice(b"\r\n");
            }
        }
    }
    out.put_slice(&reply[at..]);
    Ok(())
}

/// Writes a meta reply (`VA <len> <flags>*` and its data) with its value passed through
/// `hook(flags, data)`; the `f` flag gives the value's client flags (0 without it). A
/// replaced value's line carries its new length and, where the client asked for `f`
/// (`show_flags`), its new flags; without `show_flags` the `f` token walnut added is dropped.
/// Any other reply is copied as it is.
pub fn map_meta_value(
    reply: &[u8],
    show_flags: bool,
    out: &mut BytesMut,
    hook: impl FnOnce(u32, &[u8]) -> Result<Option<(u32, Vec<u8>)>, HookFailed>,
) -> Result<(), HookFailed> {
    let Some(hit) = meta_hit(reply) else {
        out.put_slice(reply);
        return Ok(());
    };
    let flags = number(hit.flags).unwrap_or(0) as u32;
    let data = &hit.data[..hit.data.len() - 2];
    let new = hook(flags, data)?;
    let (flags, data) = match &new {
        Some((flags, data)) => (*flags, &data[..]),
        None => (flags, data),
    };
    let eol = memchr::memchr(b'\r', reply).unwrap_or(0);
    out.put_slice(b"VA");
    put_number(out, data.len() as u64);
    for token in reply[3..eol]
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .skip(1)
    {
        match token.first() {
            Some(b'f') if !show_flags => continue,
            Some(b'f') => put_flag(out, b'f', flags),
            _ => {
                out.put_u8(b' ');
                out.put_slice(token);
            }
        }
    }
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
    Ok(())
}

fn put_number(out: &mut BytesMut, n: u64) {
    out.put_u8(b' ');
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn put_flag(out: &mut BytesMut, flag: u8, n: u32) {
    out.put_u8(b' ');
    out.put_u8(flag);
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn number(t: &[u8]) -> Option<u64> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// Writes the answers of every server to one `stats <group>` as one reply: each server's
/// `STAT` lines with its name before theirs (`STAT mc1:maxbytes 67108864`), then one `END`.
/// Servers that failed are left out; when all of them failed, the first error is the reply.
pub fn put_stats_of(names: &[String], replies: &[Option<Bytes>], out: &mut BytesMut) {
    let answered = |r: &&Option<Bytes>| r.as_deref().is_some_and(|r| !is_error(r));
    if !replies.iter().any(|r| answered(&r)) {
        let first = replies.iter().flatten().next();
        out.put_slice(first.map_or(NO_REPLY, |r| &r[..]));
        return;
    }
    for (name, reply) in names.iter().zip(replies) {
        let Some(reply) = reply.as_deref().filter(|r| !is_error(r)) else {
            continue;
        };
        for line in reply.split_inclusive(|&b| b == b'\n') {
            if let Some(stat) = line.strip_prefix(b"STAT ") {
                out.put_slice(b"STAT ");
                out.put_slice(name.as_bytes());
                out.put_u8(b':');
                out.put_slice(stat);
            }
        }
    }
    out.put_slice(END);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_get_replies_read_as_classic_ones() {
        let classic = |reply: &[u8], cas| {
            let mut out = BytesMut::new();
            meta_get_as_classic(reply, b"k1", cas, &mut out);
            out.to_vec()
        };
        assert_eq!(classic(b"EN\r\n", false), b"END\r\n");
        assert_eq!(classic(b"EN O12\r\n", false), b"END\r\n");
        assert_eq!(
            classic(b"VA 1 f3 O12\r\nx\r\n", false),
            b"VALUE k1 3 1\r\nx\r\nEND\r\n"
        );
        assert_eq!(
            classic(b"VA 3 f7\r\nabc\r\n", false),
            b"VALUE k1 7 3\r\nabc\r\nEND\r\n"
        );
        assert_eq!(
            classic(b"VA 2 f0 c99\r\n\r\n\r\n", true),
            b"VALUE k1 0 2 99\r\n\r\n\r\nEND\r\n"
        );
        // Flags in any order; an empty value.
        assert_eq!(
            classic(b"VA 0 c5 f4294967295\r\n\r\n", true),
            b"VALUE k1 4294967295 0 5\r\n\r\nEND\r\n"
        );
        for passed in [
            &b"SERVER_ERROR out of memory\r\n"[..],
            b"CLIENT_ERROR bad command line format\r\n",
            b"ERROR\r\n",
            b"END\r\n",
            b"VALUE k1 0 1\r\nx\r\nEND\r\n",
        ] {
            assert_eq!(classic(passed, false), passed);
        }
        assert_eq!(
            classic(b"VALUE new:k1 3 1 8\r\nx\r\nEND\r\n", true),
            b"VALUE k1 3 1 8\r\nx\r\nEND\r\n"
        );
    }

    #[test]
    fn meta_replies_echo_the_clients_key() {
        let rekeyed = |reply: &[u8]| {
            let mut out = BytesMut::new();
            put_meta_as(reply, b"client", &mut out);
            out.to_vec()
        };
        assert_eq!(rekeyed(b"HD kt1/client c5\r\n"), b"HD kclient c5\r\n");
        assert_eq!(
            rekeyed(b"VA 1 kt1/client\r\nx\r\n"),
            b"VA 1 kclient\r\nx\r\n"
        );
        assert_eq!(
            rekeyed(b"ME t1/client exp=-1 la=1\r\n"),
            b"ME client exp=-1 la=1\r\n"
        );
        assert_eq!(rekeyed(b"EN\r\n"), b"EN\r\n");
    }

    #[test]
    fn quiet_mode_hides_what_memcached_hides() {
        assert!(quiet_hides(Command::MetaGet, b"EN\r\n"));
        assert!(!quiet_hides(Command::MetaGet, b"VA 1\r\nx\r\n"));
        assert!(quiet_hides(Command::MetaSet, b"HD\r\n"));
        assert!(!quiet_hides(Command::MetaSet, b"NS\r\n"));
        assert!(quiet_hides(Command::MetaArithmetic, b"VA 1\r\n5\r\n"));
        assert!(!quiet_hides(Command::MetaDebug, b"EN\r\n"));
    }

    #[test]
    fn stats_of_every_server_read_as_one_reply() {
        let names = ["mc1".to_owned(), "mc2".to_owned(), "mc3".to_owned()];
        let replies = [
            Some(Bytes::from_static(
                b"STAT maxbytes 64\r\nSTAT verbosity 0\r\nEND\r\n",
            )),
            Some(Bytes::from_static(b"SERVER_ERROR Connection refused\r\n")),
            Some(Bytes::from_static(b"STAT maxbytes 128\r\nEND\r\n")),
        ];
        let mut out = BytesMut::new();
        put_stats_of(&names, &replies, &mut out);
        assert_eq!(
            &out[..],
            b"STAT mc1:maxbytes 64\r\nSTAT mc1:verbosity 0\r\nSTAT mc3:maxbytes 128\r\nEND\r\n"
        );
        let failed = [
            None,
            Some(Bytes::from_static(b"SERVER_ERROR Connection refused\r\n")),
            None,
        ];
        out.clear();
        put_stats_of(&names, &failed, &mut out);
        assert_eq!(&out[..], b"SERVER_ERROR Connection refused\r\n");
        out.clear();
        put_stats_of(
            &names,
            &[Some(Bytes::from_static(b"END\r\n")), None, None],
            &mut out,
        );
        assert_eq!(&out[..], b"END\r\n");
    }

    #[test]
    fn value_hooks_replace_values_and_their_lines() {
        let reply = b"VALUE a 7 3 99\r\nabc\r\nVALUE b 0 2\r\nxy\r\nEND\r\n";
        let mut out = BytesMut::new();
        map_values(reply, &mut out, |key, flags, data| {
            Ok(match key {
                b"a" => Mapped::Replace(flags & !4, [data, data].concat()),
                _ => Mapped::Keep,
            })
        })
        .unwrap();
        assert_eq!(
            &out[..],
            b"VALUE a 3 6 99\r\nabcabc\r\nVALUE b 0 2\r\nxy\r\nEND\r\n"
        );
        out.clear();
        map_values(b"END\r\n", &mut out, |_, _, _| Err(HookFailed)).unwrap();
        assert_eq!(&out[..], b"END\r\n");
        assert_eq!(
            map_values(reply, &mut out, |_, _, _| Err(HookFailed)),
            Err(HookFailed)
        );
        out.clear();
        map_values(reply, &mut out, |key, _, _| {
            Ok(if key == b"a" {
                Mapped::Drop
            } else {
                Mapped::Keep
            })
        })
        .unwrap();
        assert_eq!(&out[..], b"VALUE b 0 2\r\nxy\r\nEND\r\n");
        // A meta hit: its length, and its flags where the client asked for them.
        let mut out = BytesMut::new();
        let hit = b"VA 3 f7 c5 O9\r\nabc\r\n";
        map_meta_value(hit, true, &mut out, |f, d| {
            Ok(Some((f + 1, [d, b"!"].concat())))
        })
        .unwrap();
        assert_eq!(&out[..], b"VA 4 f8 c5 O9\r\nabc!\r\n");
        out.clear();
        map_meta_value(hit, false, &mut out, |_, _| Ok(None)).unwrap();
        assert_eq!(&out[..], b"VA 3 c5 O9\r\nabc\r\n");
        out.clear();
        map_meta_value(b"EN\r\n", false, &mut out, |_, _| Err(HookFailed)).unwrap();
        assert_eq!(&out[..], b"EN\r\n");
    }
}
