//! The reply scanner, fed as a server connection feeds it: replies framed one after another
//! from a growing buffer, each of the kind its request expects (the first byte of the input
//! picks the kinds, every `ReplyKind` in turn).
//!
//! Invariants: a framed reply lies within the buffer, ends with `\r\n` and is a whole reply of
//! its kind: scanned again alone it has the same length, and none of its prefixes is complete;
//! a retrieval reply is its VALUE blocks and one last line, a meta hit has its data; the
//! replies framed are the same however the input is split into two reads.

use walnut::memcache::reply::{meta_hit, value_blocks};
use walnut::memcache::{BadReply, ReplyKind, ReplyScanner};

const KINDS: [ReplyKind; 8] = [
    ReplyKind::Retrieval,
    ReplyKind::Storage,
    ReplyKind::Delete,
    ReplyKind::Arithmetic,
    ReplyKind::Touch,
    ReplyKind::Ok,
    ReplyKind::Meta,
    ReplyKind::Stats,
];

/// The largest value a reply may carry here: small, so refusals are easy to reach.
const MAX_VALUE: usize = 4096;

fn scanner() -> ReplyScanner {
    ReplyScanner::new(MAX_VALUE)
}

/// The one call into the scanner.
fn scan(
    scanner: &mut ReplyScanner,
    buf: &[u8],
    kind: ReplyKind,
) -> Result<Option<usize>, BadReply> {
    scanner.next(buf, kind)
}

pub const TOKENS: &[&[u8]] = &[
    b"VALUE ",
    b"END\r\n",
    b"STORED\r\n",
    b"NOT_STORED\r\n",
    b"EXISTS\r\n",
    b"NOT_FOUND\r\n",
    b"DELETED\r\n",
    b"TOUCHED\r\n",
    b"OK\r\n",
    b"ERROR\r\n",
    b"CLIENT_ERROR bad\r\n",
    b"SERVER_ERROR out of memory\r\n",
    b"VA ",
    b"HD\r\n",
    b"EN\r\n",
    b"NF\r\n",
    b"NS\r\n",
    b"EX\r\n",
    b"MN\r\n",
    b"ME k exp=-1\r\n",
    b"STAT pid 1\r\n",
    b"RESET\r\n",
    b" f1 c5",
    b"\r\n",
    b"\n",
    b" ",
    b"VALUE k 0 3\r\nabc\r\n",
];

/// What was framed from one stream.
#[derive(Debug, PartialEq)]
struct Framed {
    replies: Vec<Vec<u8>>,
    bad: bool,
}

/// A server connection: bytes arrive, replies are framed and taken off the front.
struct Conn {
    first_kind: usize,
    scanner: ReplyScanner,
    buf: Vec<u8>,
    framed: Framed,
}

impl Conn {
    fn new(first_kind: usize) -> Conn {
        Conn {
            first_kind,
            scanner: scanner(),
            buf: Vec::new(),
            framed: Framed {
                replies: Vec::new(),
                bad: false,
            },
        }
    }

    fn kind(&self) -> ReplyKind {
        KINDS[(self.first_kind + self.framed.replies.len()) % KINDS.len()]
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while !self.framed.bad {
            let kind = self.kind();
            match scan(&mut self.scanner, &self.buf, kind) {
                Ok(None) => return,
                Ok(Some(n)) => {
                    assert!(
                        n > 0 && n <= self.buf.len(),
                        "framed {n} of {}",
                        self.buf.len()
                    );
                    let reply: Vec<u8> = self.buf.drain(..n).collect();
                    check(&reply, kind);
                    self.framed.replies.push(reply);
                }
                Err(BadReply) => self.framed.bad = true,
            }
        }
    }
}

fn check(reply: &[u8], kind: ReplyKind) {
    let shown = crate::show(reply);
    assert!(reply.ends_with(b"\r\n"), "{kind:?} reply {shown}");
    assert_eq!(
        scan(&mut scanner(), reply, kind),
        Ok(Some(reply.len())),
        "{kind:?} reply {shown} scanned alone"
    );
    for cut in crate::cuts(reply) {
        assert_eq!(
            scan(&mut scanner(), &reply[..cut], kind),
            Ok(None),
            "{kind:?} reply {shown}: its first {cut} bytes are complete"
        );
    }
    match kind {
        ReplyKind::Retrieval => {
            let blocks: usize = value_blocks(reply).map(|b| b.block.len()).sum();
            let last = &reply[blocks..];
            assert!(
                last.ends_with(b"\r\n") && !last[..last.len() - 2].contains(&b'\n'),
                "{shown}: not VALUE blocks and one line"
            );
            for b in value_blocks(reply) {
                assert!(b.block.ends_with(b"\r\n"), "{shown}");
                assert!(!b.key.is_empty(), "{shown}: a VALUE block without a key");
            }
        }
        ReplyKind::Meta if reply.starts_with(b"VA ") => {
            let hit =
                meta_hit(reply).unwrap_or_else(|| panic!("{shown}: a VA reply without its data"));
            assert!(hit.data.ends_with(b"\r\n"));
            assert!(reply.ends_with(hit.data));
        }
        _ => assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1, "{shown}"),
    }
}

pub fn run(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let first = usize::from(first);
    let mut whole = Conn::new(first);
    whole.feed(stream);
    for cut in crate::cuts(stream) {
        let mut split = Conn::new(first);
        split.feed(&stream[..cut]);
        split.feed(&stream[cut..]);
        assert_eq!(
            split.framed,
            whole.framed,
            "split at {cut}: {}",
            crate::show(stream)
        );
    }
}
