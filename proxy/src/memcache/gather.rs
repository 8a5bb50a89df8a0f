//! A retrieval split over several servers: which fragment each key went to, each fragment's
//! request, and the merge of the replies back into the client's key order.
//!
//! Fragments stay classic (`get k1 k4 k7`) even to servers that speak meta: memcached sends a
//! multi-key get's reply in one packet already, and parses one command where a run of meta
//! gets would cost it one per key (measured: 0.82x the throughput on a 10-key load).

use bytes::{BufMut, Bytes, BytesMut};

use super::lines::{END, NO_REPLY};
use super::reply::{is_error, value_blocks};
use super::request::Part;
use super::rewrite::put_value_as;

#[derive(Default)]
pub struct Gather {
    /// The client's request line, for its command and keys.
    pub request: Bytes,
    /// Range of the key list within `request`.
    pub keys: std::ops::Range<usize>,
    /// The keys sent to the servers when plugins rewrote them (space-separated, one per client
    /// key, same order); replies are shown under the client's keys.
    pub sent: Option<Bytes>,
    /// Fragment of each key, in the client's key order.
    pub key_frag: Vec<u16>,
    /// Replies by fragment.
    pub frags: Vec<Option<Bytes>>,
    /// Merge cursors by fragment, kept only to reuse the allocation.
    cursors: Vec<usize>,
    /// A batch of a retrieval line read in batches (see `Part`): more keys of the line follow
    /// (no `END` yet) or went before (part of the reply is out already), so a failed server's
    /// keys are misses, never an error line in the middle of a reply.
    pub part: Part,
}

fn words(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b' ').filter(|k| !k.is_empty())
}

impl Gather {
    /// Empties it for reuse, keeping its allocations.
    pub fn clear(&mut self) {
        self.frags.clear();
        self.key_frag.clear();
        self.request = Bytes::new();
        self.sent = None;
        self.part = Part::Whole;
    }

    /// The keys as sent to the servers: rewritten ones if any, else the client's.
    fn sent_keys(&self) -> &[u8] {
        match &self.sent {
            Some(sent) => sent,
            None => &self.request[self.keys.clone()],
        }
    }

    /// The line up to the first key (`get `, `gat 10 `): every fragment's command.
    pub fn prefix(&self) -> &[u8] {
        &self.request[..self.keys.start]
    }

    /// The keys (as sent) of fragment `frag`, in the client's order.
    pub fn fragment_keys(&self, frag: u16) -> impl Iterator<Item = &[u8]> {
        words(self.sent_keys())
            .zip(&self.key_frag)
            .filter(move |(_, f)| **f == frag)
            .map(|(key, _)| key)
    }

    /// Writes fragment `frag`'s keys, space-separated (its command is `prefix`).
    pub fn write_fragment_keys(&self, frag: u16, buf: &mut BytesMut) {
        for (i, key) in self.fragment_keys(frag).enumerate() {
            if i > 0 {
                buf.put_u8(b' ');
            }
            buf.put_slice(key);
        }
    }

    /// Fragment `frag`'s keys must go to new servers: `servers[i]` for its i-th key. They are
    /// regrouped by server, each group a fragment (the first keeps `frag`); returns (server,
    /// fragment) for each group.
    pub fn refragment(&mut self, frag: u16, servers: &[u16]) -> Vec<(u16, u16)> {
        let mut groups: Vec<(u16, u16)> = Vec::new();
        let positions = self
            .key_frag
            .iter()
            .enumerate()
            .filter(|(_, f)| **f == frag)
            .map(|(i, _)| i)
            .collect::<Vec<_>>();
        for (pos, &server) in positions.into_iter().zip(servers) {
            let f = match groups.iter().find(|(s, _)| *s == server) {
                Some(&(_, f)) => f,
                None => {
                    let f = if groups.is_empty() {
                        frag
                    } else {
                        self.frags.push(None);
                        (self.frags.len() - 1) as u16
                    };
                    groups.push((server, f));
                    f
                }
            };
            self.key_frag[pos] = f;
        }
        groups
    }

    /// Merges the fragments' replies into one, in the client's key order, with one END (none
    /// for a leading batch). A key whose server failed is a miss; when every server failed, the
    /// first error is the reply (unless it is a batch of a longer reply).
    pub fn merge(&mut self, out: &mut BytesMut) {
        let failed = |r: &Option<Bytes>| r.as_deref().is_none_or(is_error);
        if !self.part.is_batch() && self.frags.iter().all(failed) {
            out.put_slice(
                self.frags
                    .iter()
                    .flatten()
                    .next()
                    .map_or(NO_REPLY, |r| &r[..]),
            );
            return;
        }
        // Each server answers its keys' hits in the order they were asked, so one cursor per
        // fragment (an offset into its reply, kept in a reused vector) walks its reply while
        // the keys are walked in the client's order.
        let mut cursors = std::mem::take(&mut self.cursors);
        cursors.clear();
        cursors.resize(self.frags.len(), 0);
        let keys = words(&self.request[self.keys.clone()]);
        for ((key, sent), &frag) in keys.zip(words(self.sent_keys())).zip(&self.key_frag) {
            let Some(reply) = self.frags[frag as usize]
                .as_deref()
                .filter(|r| !is_error(r))
            else {
                continue;
            };
            let at = &mut cursors[frag as usize];
            let Some(block) = value_blocks(&reply[*at..]).next().filter(|b| b.key == sent) else {
                continue;
            };
            *at += block.block.len();
            if self.sent.is_some() {
                put_value_as(key, block.after_key, out);
            } else {
                out.put_slice(block.block);
            }
        }
        self.cursors = cursors;
        if self.part != Part::Leading {
            out.put_slice(END);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gather of `line` (`get k1 k2 ...`) with the i-th key on fragment `frags[i]`.
    fn gather(line: &'static [u8], frags: &[u16]) -> Gather {
        let start = line.iter().position(|&b| b == b' ').unwrap() + 1;
        let start = if line.starts_with(b"gat") {
            start + line[start..].iter().position(|&b| b == b' ').unwrap() + 1
        } else {
            start
        };
        let n = frags.iter().max().map_or(0, |&m| m as usize + 1);
        Gather {
            request: Bytes::from_static(line),
            keys: start..line.len() - 2,
            key_frag: frags.to_vec(),
            frags: vec![None; n],
            ..Gather::default()
        }
    }

    fn written(g: &Gather, frag: u16) -> Vec<u8> {
        let mut buf = BytesMut::from(g.prefix());
        g.write_fragment_keys(frag, &mut buf);
        buf.to_vec()
    }

    fn merged(g: &mut Gather) -> String {
        let mut out = BytesMut::new();
        g.merge(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn fragments_carry_the_command_and_their_keys() {
        let g = gather(b"gats 30 a b c a\r\n", &[0, 1, 0, 0]);
        assert_eq!(written(&g, 0), b"gats 30 a c a");
        assert_eq!(written(&g, 1), b"gats 30 b");
    }

    #[test]
    fn fragments_merge_in_key_order_and_failed_ones_are_misses() {
        // a (twice) and c on one server, b and d on another; c and d miss.
        let mut g = gather(b"get a b c d a\r\n", &[0, 1, 0, 1, 0]);
        g.frags[0] = Some(Bytes::from_static(
            b"VALUE a 3 1\r\nA\r\nVALUE a 3 1\r\nA\r\nEND\r\n",
        ));
        g.frags[1] = Some(Bytes::from_static(b"VALUE b 0 1\r\nB\r\nEND\r\n"));
        assert_eq!(
            merged(&mut g),
            "VALUE a 3 1\r\nA\r\nVALUE b 0 1\r\nB\r\nVALUE a 3 1\r\nA\r\nEND\r\n"
        );
        let mut g = gather(b"get a b\r\n", &[0, 1]);
        g.frags[0] = Some(Bytes::from_static(b"VALUE a 0 1\r\nA\r\nEND\r\n"));
        g.frags[1] = Some(Bytes::from_static(b"SERVER_ERROR Connection timed out\r\n"));
        assert_eq!(merged(&mut g), "VALUE a 0 1\r\nA\r\nEND\r\n");
        g.frags[0] = None;
        assert_eq!(merged(&mut g), "SERVER_ERROR Connection timed out\r\n");
    }
}
