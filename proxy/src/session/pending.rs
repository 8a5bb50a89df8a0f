//! A client connection's requests in flight, in the client's order: each waits for its replies
//! (one, or one per server for a split multi-get or a broadcast) and is written out in turn.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::values::{Values, pass_values};
use crate::memcache::Command;
use crate::memcache::Gather;
use crate::memcache::lines::NO_REPLY;
use crate::memcache::rewrite::{meta_get_as_classic, put_meta_as, put_stats_of, quiet_hides};
use crate::net::Stream;
use crate::pool::{Seq, WorkerPool};
use crate::wake::LocalWake;

/// The sequence number of a request nobody waits for (`noreply`): its reply is dropped.
pub const UNANSWERED: Seq = Seq::MAX;

/// An output buffer grown past this by a spike is given back once it has been written.
const KEEP_OUT: usize = 64 * 1024;

/// What a finished request writes back.
pub enum Slot {
    /// One reply, from a server or from walnut itself.
    Reply(Option<Bytes>),
    /// A meta command: with `q`, the reply `q` hides is dropped; with a key a plugin rewrote,
    /// the key the reply echoes (flag `k`, or `me`'s key) is the client's again.
    Meta {
        command: Command,
        quiet: bool,
        reply: Option<Bytes>,
        client_key: Option<Bytes>,
    },
    /// A one-key retrieval sent as a meta get (memcached answers a batch of those in one
    /// packet, but classic retrievals one packet each), shown to the client as the classic
    /// reply under its own `key`, with the cas unique when `cas`.
    FromMeta {
        key: Bytes,
        cas: bool,
        reply: Option<Bytes>,
    },
    /// A retrieval split over several servers, merged back into the client's key order.
    Gather(Box<Gather>),
    /// A broadcast (`flush_all`, `stats reset`): `ok` only when every server said it, else the
    /// first other reply.
    AllSay {
        ok: &'static [u8],
        first_other: Option<Bytes>,
    },
    /// `stats <group>` asked of every server: each server's lines under its name, one `END`.
    Stats {
        names: Arc<[String]>,
        replies: Vec<Option<Bytes>>,
    },
    /// `quit` or a fatal protocol error: close once everything before it is written.
    Close(Option<&'static [u8]>),
}

struct Entry {
    outstanding: u16,
    /// Reply bytes set aside for it until it is written out (see `Pending::has_room`).
    reserved: usize,
    slot: Slot,
    /// The value hooks its values pass through, when the pool's plugins have any.
    values: Option<Box<Values>>,
    decoded: Instant,
}

/// The in-order queue of one client connection, filled as servers report replies.
#[derive(Default)]
pub struct Pending {
    entries: RefCell<VecDeque<Entry>>,
    head: Cell<Seq>,
    /// Replies in order, not yet taken by the socket.
    out: RefCell<BytesMut>,
    /// The sum of the waiting entries' reservations.
    reserved: Cell<usize>,
    /// The socket took nothing: the client task waits until it is writable.
    blocked: Cell<bool>,
    /// Writing failed: the connection is finished.
    broken: Cell<bool>,
    /// A `Close` was reached: the connection ends once `out` is written.
    closing: Cell<bool>,
    /// The client task is not reading and waits for replies to drain.
    pub waiting: Cell<bool>,
    /// Wakes the client task when it has to act: blocked, broken, closed, or drained while waiting.
    pub ready: LocalWake,
    /// Gathers kept for reuse, so a steady multi-get load allocates nothing.
    // Boxed on purpose: the boxes themselves are what is reused, moved in and out of `Slot`.
    #[allow(clippy::vec_box)]
    spare: RefCell<Vec<Box<Gather>>>,
    /// A reply as servers and walnut made it, before the value hooks (kept for reuse).
    raw: RefCell<BytesMut>,
}

impl Pending {
    /// Writes every finished request at the head to `stream`, as far as it takes them now.
    /// The client task calls this itself, and so does a server connection's task when it
    /// completes the oldest request, so a reply needs no task switch.
    pub fn flush(&self, stream: &Stream, pool: &WorkerPool) {
        let reached_close = {
            let mut out = self.out.borrow_mut();
            self.drain_into(&mut out, pool)
        };
        if reached_close {
            self.closing.set(true);
        }
        if self.blocked.get() || self.broken.get() {
            return;
        }
        let mut out = self.out.borrow_mut();
        while !out.is_empty() {
            match stream.try_write(&out) {
                Ok(0) => {
                    self.broken.set(true);
                    break;
                }
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.blocked.set(true);
                    break;
                }
                Err(_) => {
                    self.broken.set(true);
                    break;
                }
            }
        }
        if out.is_empty() {
            if out.capacity() > KEEP_OUT {
                *out = BytesMut::new();
            } else {
                out.clear();
            }
        }
    }

    /// After a reply was written from outside the client task: wake it when it has to act.
    pub fn wake_if_needed(&self) {
        let done = self.closing.get() && self.out.borrow().is_empty();
        if self.blocked.get() || self.broken.get() || done || self.waiting.get() {
            self.ready.wake();
        }
    }

    /// Waits until a blocked socket takes more, then writes what is waiting.
    pub async fn unblock(&self, stream: &Stream, pool: &WorkerPool) {
        if stream.writable().await.is_err() {
            self.broken.set(true);
            return;
        }
        self.blocked.set(false);
        self.flush(stream, pool);
    }

    /// The connection is over: the client reads EOF, and late replies are dropped.
    pub fn close(&self, stream: &Stream) {
        self.broken.set(true);
        self.entries.borrow_mut().clear();
        self.reserved.set(0);
        *self.out.borrow_mut() = BytesMut::new();
        stream.shutdown_write();
    }

    /// The socket took nothing the last time; `unblock` waits for it.
    pub fn is_blocked(&self) -> bool {
        self.blocked.get()
    }

    /// Writing to the client failed.
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// A close was reached and everything before it is written.
    pub fn is_closed(&self) -> bool {
        self.closing.get() && self.out.borrow().is_empty()
    }

    /// Reply bytes not yet taken by the socket.
    pub fn unwritten(&self) -> usize {
        self.out.borrow().len()
    }

    /// Reply bytes set aside for the requests still waiting.
    pub fn reserved(&self) -> usize {
        self.reserved.get()
    }

    /// Adds a request waiting for `outstanding` replies, with `reserve` bytes set aside for
    /// them; returns its sequence number.
    pub fn push(&self, slot: Slot, outstanding: u16, reserve: usize) -> Seq {
        self.push_with(slot, outstanding, reserve, None)
    }

    /// `push`, for a retrieval whose values pass through `values` on their way out.
    pub fn push_with(
        &self,
        slot: Slot,
        outstanding: u16,
        reserve: usize,
        values: Option<Box<Values>>,
    ) -> Seq {
        let mut entries = self.entries.borrow_mut();
        entries.push_back(Entry {
            outstanding,
            reserved: reserve,
            slot,
            values,
            decoded: Instant::now(),
        });
        self.reserved.set(self.reserved.get() + reserve);
        self.head.get() + entries.len() as Seq - 1
    }

    /// The number of requests not yet written back.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// A gather (reused) for the retrieval `request` whose keys are at `keys`, sent as `sent`
    /// when plugins rewrote them; its fragments are for the caller to fill in.
    pub fn gather_for(
        &self,
        request: Bytes,
        keys: Range<usize>,
        sent: Option<Bytes>,
    ) -> Box<Gather> {
        let mut g = self.spare.borrow_mut().pop().unwrap_or_default();
        g.request = request;
        g.keys = keys;
        g.sent = sent;
        g
    }

    /// Where request `seq` is in `entries`, if it is still waiting.
    fn index(&self, seq: Seq) -> Option<usize> {
        let index = seq.checked_sub(self.head.get())? as usize;
        (index < self.entries.borrow().len()).then_some(index)
    }

    /// Records reply `reply` for fragment `frag` of request `seq`. True when that completed
    /// the oldest request: something can be written now.
    pub fn deliver(&self, seq: Seq, frag: u16, reply: Bytes) -> bool {
        let Some(index) = self.index(seq) else {
            return false;
        };
        let mut entries = self.entries.borrow_mut();
        let entry = &mut entries[index];
        match &mut entry.slot {
            Slot::Reply(r) | Slot::Meta { reply: r, .. } | Slot::FromMeta { reply: r, .. } => {
                *r = Some(reply)
            }
            Slot::Gather(g) => g.frags[frag as usize] = Some(reply),
            Slot::AllSay { ok, first_other } => {
                if first_other.is_none() && reply != *ok {
                    *first_other = Some(reply);
                }
            }
            Slot::Stats { replies, .. } => replies[frag as usize] = Some(reply),
            Slot::Close(_) => {}
        }
        entry.outstanding = entry.outstanding.saturating_sub(1);
        index == 0 && entry.outstanding == 0
    }

    /// Request `seq` is a retrieval sent as a meta get (see `Slot::FromMeta`).
    pub fn is_from_meta(&self, seq: Seq) -> bool {
        self.index(seq)
            .is_some_and(|i| matches!(self.entries.borrow()[i].slot, Slot::FromMeta { .. }))
    }

    /// Fragment `frag` of retrieval `seq` must go to new servers: `servers[i]` for its i-th
    /// key. Keys are regrouped by server, each group a fragment (the first keeps `frag`);
    /// returns (server, fragment) for each group. A retrieval that went whole to one server
    /// (`whole`: the request as sent, and where its keys are) becomes a gather here.
    pub fn refragment(
        &self,
        seq: Seq,
        frag: u16,
        whole: Option<(Bytes, Range<usize>)>,
        servers: &[u16],
    ) -> Vec<(u16, u16)> {
        let Some(index) = self.index(seq) else {
            return Vec::new();
        };
        let mut entries = self.entries.borrow_mut();
        let entry = &mut entries[index];
        if let (Slot::Reply(None), Some((request, keys))) = (&entry.slot, whole) {
            let mut g = self.gather_for(request, keys, None);
            g.key_frag.resize(servers.len(), frag);
            g.frags.resize(frag as usize + 1, None);
            entry.slot = Slot::Gather(g);
        }
        let Slot::Gather(g) = &mut entry.slot else {
            return Vec::new();
        };
        let groups = g.refragment(frag, servers);
        entry.outstanding += groups.len().saturating_sub(1) as u16;
        groups
    }

    /// `f` of the gather of request `seq`, if it is one.
    pub fn with_gather<T>(&self, seq: Seq, f: impl FnOnce(&Gather) -> T) -> Option<T> {
        let index = self.index(seq)?;
        match &self.entries.borrow()[index].slot {
            Slot::Gather(g) => Some(f(g)),
            _ => None,
        }
    }

    /// Writes every finished request at the head into `out`, in order. Returns true when a
    /// `Close` was reached: nothing after it is written.
    fn drain_into(&self, out: &mut BytesMut, pool: &WorkerPool) -> bool {
        let mut now = None;
        loop {
            let entry = {
                let mut entries = self.entries.borrow_mut();
                match entries.front() {
                    Some(e) if e.outstanding == 0 => {}
                    _ => return false,
                }
                self.head.set(self.head.get() + 1);
                entries.pop_front().expect("front checked")
            };
            self.reserved.set(self.reserved.get() - entry.reserved);
            pool.stats
                .latency
                .observe(entry.decoded, *now.get_or_insert_with(Instant::now));
            let Some(values) = entry.values else {
                if self.write_slot(entry.slot, out) {
                    return true;
                }
                continue;
            };
            let mut raw = self.raw.borrow_mut();
            self.write_slot(entry.slot, &mut raw);
            pass_values(&values, &raw, out);
            if raw.capacity() > KEEP_OUT {
                *raw = BytesMut::new();
            } else {
                raw.clear();
            }
        }
    }

    /// Writes what `slot` answers into `out`. Returns true for a `Close`: everything after it
    /// is dropped.
    fn write_slot(&self, slot: Slot, out: &mut BytesMut) -> bool {
        match slot {
            Slot::Reply(r) => out.put_slice(r.as_deref().unwrap_or(NO_REPLY)),
            Slot::Meta {
                command,
                quiet,
                reply,
                client_key,
            } => {
                let r = reply.as_deref().unwrap_or(NO_REPLY);
                if quiet && quiet_hides(command, r) {
                    return false;
                }
                match client_key {
                    Some(key) => put_meta_as(r, &key, out),
                    None => out.put_slice(r),
                }
            }
            Slot::FromMeta { key, cas, reply } => {
                meta_get_as_classic(reply.as_deref().unwrap_or(NO_REPLY), &key, cas, out)
            }
            Slot::AllSay { ok, first_other } => out.put_slice(first_other.as_deref().unwrap_or(ok)),
            Slot::Stats { names, replies } => put_stats_of(&names, &replies, out),
            Slot::Gather(mut g) => {
                g.merge(out);
                g.clear();
                self.spare.borrow_mut().push(g);
            }
            Slot::Close(last) => {
                if let Some(line) = last {
                    out.put_slice(line);
                }
                // Nothing after a close is answered.
                self.entries.borrow_mut().clear();
                self.reserved.set(0);
                return true;
            }
        }
        false
    }
}
