//! Retrievals from many clients joined into one command. The fragments of split multi-gets that
//! are queued for one server together (`get a1 a2`, `get b1`, `get c1 c2 c3`) go as one line
//! (`get a1 a2 b1 c1 c2 c3`): memcached parses one command and answers in one packet, where
//! each command would cost it a packet of its own. The reply is cut back into one piece per
//! fragment by walking its VALUE blocks against each fragment's keys, in order.
//!
//! The keys of every classic retrieval in flight are kept, joined or not, so each reply is
//! checked against the keys it must answer: a server that answers a request twice, or skips
//! one, would otherwise shift every later reply onto the wrong request.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::reply::{BadReply, is_error, value_blocks};

/// Joined lines stay below this length, far under memcached's limits for a command line.
const MAX_LINE: usize = 2000;

/// How a queued retrieval shares its command line, with the length of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// A request of its own.
    Alone,
    /// The first retrieval of a line; others may join it.
    Head(u32),
    /// Joined to the line of the `Head` before it; its reply is part of the head's.
    Member(u32),
    /// A retrieval on a line of its own, kept whole; its keys are kept to check its reply.
    Whole(u32),
}

impl Join {
    pub fn key_bytes(self) -> usize {
        match self {
            Join::Alone => 0,
            Join::Head(n) | Join::Member(n) | Join::Whole(n) => n as usize,
        }
    }
}

/// The retrieval line still open at the end of a connection's queue, and the keys of every
/// joinable retrieval in flight.
#[derive(Default)]
pub struct Joins {
    /// Where the open line starts in the queue, and the length of its command prefix.
    open: Option<(usize, usize)>,
    /// The keys of each `Head` and `Member` in flight, in order, consumed as replies arrive.
    keys: BytesMut,
}

impl Joins {
    /// Nothing more may join the line at the end of the queue (something else follows it, or
    /// the queue was handed to the socket).
    pub fn close(&mut self) {
        self.open = None;
    }

    /// Everything in flight is gone (the connection failed).
    pub fn clear(&mut self) {
        self.open = None;
        self.keys.clear();
    }

    /// Appends to `queue` the retrieval `prefix` (`get `, `gat 10 `) of the keys `write_keys`
    /// writes (space-separated): joined to the open line when it has the same prefix.
    pub fn append(
        &mut self,
        queue: &mut BytesMut,
        prefix: &[u8],
        write_keys: impl FnOnce(&mut BytesMut),
    ) -> Join {
        let k0 = self.keys.len();
        write_keys(&mut self.keys);
        let keys = &self.keys[k0..];
        let len = keys.len() as u32;
        match self.open {
            Some((start, plen))
                if queue.len() - start + keys.len() < MAX_LINE
                    && queue[start..start + plen] == *prefix =>
            {
                // The open line ends the queue: its keys continue before its `\r\n`.
                queue.truncate(queue.len() - 2);
                queue.put_u8(b' ');
                queue.put_slice(keys);
                queue.put_slice(b"\r\n");
                Join::Member(len)
            }
            _ => {
                self.open = Some((queue.len(), prefix.len()));
                queue.put_slice(prefix);
                queue.put_slice(keys);
                queue.put_slice(b"\r\n");
                Join::Head(len)
            }
        }
    }

    /// Records the keys (space-separated) of a retrieval sent on a line of its own, to check
    /// its reply.
    pub fn keep(&mut self, keys: &[u8]) -> Join {
        self.keys.put_slice(keys);
        Join::Whole(keys.len() as u32)
    }

    /// Cuts `reply`, the reply to one line, into one piece per retrieval of the line (`joins`,
    /// head first) into `pieces`: each its VALUE blocks, without END (the merge adds one). An
    /// error answers for all of them. A reply with a block for a key not asked, or out of
    /// order, is not the line's reply: `BadReply`.
    pub fn split(
        &mut self,
        reply: &Bytes,
        joins: impl Iterator<Item = Join>,
        pieces: &mut Vec<Bytes>,
    ) -> Result<(), BadReply> {
        pieces.clear();
        let failed = is_error(reply);
        let (mut at, mut used) = (0, 0);
        for join in joins {
            let keys = &self.keys[used..used + join.key_bytes()];
            used += keys.len();
            if failed {
                pieces.push(reply.clone());
                continue;
            }
            let start = at;
            at = answered(reply, at, keys);
            pieces.push(reply.slice(start..at));
        }
        self.keys.advance(used);
        if !failed && &reply[at..] != b"END\r\n" {
            return Err(BadReply);
        }
        Ok(())
    }

    /// Checks `reply`, the reply to a retrieval kept whole (`Join::Whole`), against its keys.
    pub fn check_whole(&mut self, reply: &[u8], join: Join) -> Result<(), BadReply> {
        let n = join.key_bytes();
        let at = answered(reply, 0, &self.keys[..n]);
        self.keys.advance(n);
        if is_error(reply) || &reply[at..] == b"END\r\n" {
            Ok(())
        } else {
            Err(BadReply)
        }
    }
}

/// Walks the VALUE blocks of `reply` from `at` against `keys` (space-separated), in order: a
/// server answers the keys it holds in the order they were asked. Returns where the blocks for
/// these keys end.
fn answered(reply: &[u8], mut at: usize, keys: &[u8]) -> usize {
    for key in keys.split(|&b| b == b' ') {
        match value_blocks(&reply[at..]).next() {
            Some(block) if block.key == key => at += block.block.len(),
            _ => {}
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(j: &mut Joins, q: &mut BytesMut, prefix: &str, keys: &str) -> Join {
        j.append(q, prefix.as_bytes(), |b| b.put_slice(keys.as_bytes()))
    }

    #[test]
    fn retrievals_with_the_same_command_share_a_line() {
        let (mut j, mut q) = (Joins::default(), BytesMut::new());
        assert_eq!(append(&mut j, &mut q, "get ", "a1 a2"), Join::Head(5));
        assert_eq!(append(&mut j, &mut q, "get ", "b1"), Join::Member(2));
        // Another command starts its own line; a closed line takes no more.
        assert_eq!(append(&mut j, &mut q, "gat 10 ", "c1"), Join::Head(2));
        assert_eq!(append(&mut j, &mut q, "gat 10 ", "d1"), Join::Member(2));
        j.close();
        q.put_slice(b"set x 0 0 1\r\nx\r\n");
        assert_eq!(append(&mut j, &mut q, "get ", "e1"), Join::Head(2));
        assert_eq!(
            &q[..],
            b"get a1 a2 b1\r\ngat 10 c1 d1\r\nset x 0 0 1\r\nx\r\nget e1\r\n"
        );
        // Lines stay short.
        let key = "k".repeat(200);
        let mut heads = 0;
        for _ in 0..30 {
            if let Join::Head(_) = append(&mut j, &mut q, "get ", &key) {
                heads += 1;
            }
        }
        assert_eq!(heads, 3);
        assert!(q[..].split(|&b| b == b'\n').all(|l| l.len() < MAX_LINE));
    }

    #[test]
    fn a_joined_reply_is_cut_per_retrieval() {
        let (mut j, mut q) = (Joins::default(), BytesMut::new());
        let joins = [
            append(&mut j, &mut q, "get ", "a b a"),
            append(&mut j, &mut q, "get ", "c"),
            append(&mut j, &mut q, "get ", "a d"),
        ];
        // a (asked three times) and d hit, b and c miss.
        let reply = Bytes::from_static(
            b"VALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n1\r\nVALUE d 0 2\r\n22\r\nEND\r\n",
        );
        let mut pieces = Vec::new();
        j.split(&reply, joins.into_iter(), &mut pieces).unwrap();
        assert_eq!(
            pieces,
            [
                &b"VALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n1\r\n"[..],
                b"",
                b"VALUE a 0 1\r\n1\r\nVALUE d 0 2\r\n22\r\n",
            ]
        );
        assert!(j.keys.is_empty());
        // An error answers for every retrieval of the line.
        j.close();
        let joins = [
            append(&mut j, &mut q, "get ", "x"),
            append(&mut j, &mut q, "get ", "y"),
        ];
        let error = Bytes::from_static(b"SERVER_ERROR out of memory\r\n");
        j.split(&error, joins.into_iter(), &mut pieces).unwrap();
        assert_eq!(pieces, [error.clone(), error]);
    }

    #[test]
    fn a_reply_that_is_not_for_the_keys_asked_is_refused() {
        let (mut j, mut q) = (Joins::default(), BytesMut::new());
        let joins = [
            append(&mut j, &mut q, "get ", "a b"),
            append(&mut j, &mut q, "get ", "c"),
        ];
        // A block for a key not asked (another request's reply, shifted onto this one).
        let shifted = Bytes::from_static(b"VALUE z 0 1\r\nz\r\nEND\r\n");
        assert_eq!(
            j.split(&shifted, joins.into_iter(), &mut Vec::new()),
            Err(BadReply)
        );
        // Out of order.
        j.clear();
        let joins = [append(&mut j, &mut q, "get ", "a b")];
        let swapped = Bytes::from_static(b"VALUE b 0 1\r\nb\r\nVALUE a 0 1\r\na\r\nEND\r\n");
        assert_eq!(
            j.split(&swapped, joins.into_iter(), &mut Vec::new()),
            Err(BadReply)
        );
        // A retrieval kept whole: the same check.
        j.clear();
        let whole = j.keep(b"k");
        assert_eq!(
            j.check_whole(b"VALUE wrong_key 0 1\r\nx\r\nEND\r\n", whole),
            Err(BadReply)
        );
        let whole = j.keep(b"k");
        assert_eq!(j.check_whole(b"VALUE k 0 1\r\nx\r\nEND\r\n", whole), Ok(()));
        let whole = j.keep(b"k");
        assert_eq!(j.check_whole(b"END\r\n", whole), Ok(()));
        assert!(j.keys.is_empty());
    }
}
