//! One connection to one memcached server, owned by one worker: requests from many clients are
//! pipelined on it, written in batches, and each reply is handed to the request it belongs to.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::failure::Failure;
use super::health::{self, Standing};
use super::{Dest, PoolShared, Unsent};
use crate::memcache::join::{Join, Joins};
use crate::memcache::reply::{BadReply, is_error};
use crate::memcache::{KeySpan, ReplyKind, ReplyScanner};
use crate::net::Stream;
use crate::stats::{PoolStats, ServerCounters};
use crate::timer::Timer;
use crate::wake::LocalWake;

struct Inflight {
    dest: Dest,
    /// The reply shape expected, to refuse anything else.
    kind: ReplyKind,
    deadline: Option<Instant>,
    /// Bytes of the request in the queue, so a request never written can be sent elsewhere.
    len: u32,
    /// Where the request's key is in those bytes.
    key: KeySpan,
    join: Join,
    /// The opaque (`O`) token its reply must echo (a meta get walnut wrote), or 0.
    opaque: u32,
}

/// The server a connection goes to, and the counters it keeps.
pub struct Target {
    pub shared: Arc<PoolShared>,
    /// The server's index in the pool.
    pub index: usize,
    /// This worker's counters for the pool.
    pub stats: Arc<PoolStats>,
}

impl Target {
    fn name(&self) -> &str {
        &self.shared.names[self.index]
    }

    fn counters(&self) -> &ServerCounters {
        &self.stats.servers[self.index]
    }

    /// The server's counters, to keep while a connection lives without keeping the rest of
    /// the pool's generation (a reload may replace it meanwhile).
    fn shared_counters(&self) -> Arc<ServerCounters> {
        Arc::clone(&self.stats.servers[self.index])
    }
}

/// The state shared between the clients that enqueue and the task that drives the socket.
pub struct Backend {
    /// Swapped by a reload that keeps the server (`retarget`).
    target: RefCell<Rc<Target>>,
    /// A reload took the server out of the pool: the connection closes once nothing is in
    /// flight on it.
    retired: Cell<bool>,
    /// Bytes waiting to be written.
    queue: RefCell<BytesMut>,
    /// Requests written or queued, in order; replies come back in this order.
    inflight: RefCell<VecDeque<Inflight>>,
    /// How many of the oldest `inflight` requests were handed to the socket (they may have
    /// reached the server); the rest are still only in `queue`.
    written: Cell<usize>,
    /// Wakes the task: work was queued.
    wake: LocalWake,
    /// The driving task is running (connected, or connecting).
    running: Cell<bool>,
    /// Whether the server on this connection speaks the meta protocol: unknown until it
    /// answered `mn` on a connection of its own (see `probe_meta`).
    meta: Cell<Option<bool>>,
    /// The failure epoch when the current connection started (see `Health::epoch`).
    since: Cell<u64>,
    /// Clients waiting for room in `queue`.
    waiters: RefCell<Vec<Waker>>,
    /// Counts connections, so a probe's answer only counts for the connection it was made for.
    generation: Cell<u64>,
    /// Split retrievals joined into one line per batch, and every classic retrieval's keys.
    joins: RefCell<Joins>,
    /// The last opaque token given to a meta get on this connection.
    opaque: Cell<u32>,
}

/// The most bytes read from a server in one call; replies are sliced out of this buffer.
const READ_CHUNK: usize = 16 * 1024;

impl Backend {
    pub fn new(target: Rc<Target>) -> Rc<Backend> {
        Rc::new(Backend {
            target: RefCell::new(target),
            retired: Cell::new(false),
            queue: RefCell::new(BytesMut::with_capacity(READ_CHUNK)),
            inflight: RefCell::new(VecDeque::with_capacity(64)),
            written: Cell::new(0),
            wake: LocalWake::default(),
            running: Cell::new(false),
            meta: Cell::new(None),
            since: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            generation: Cell::new(0),
            joins: RefCell::new(Joins::default()),
            opaque: Cell::new(0),
        })
    }

    fn target(&self) -> Rc<Target> {
        Rc::clone(&self.target.borrow())
    }

    /// Serves the same server as part of a reloaded pool: its health, its counters and its
    /// place in the new config are `target`'s from now on.
    pub fn retarget(&self, target: Rc<Target>) {
        *self.target.borrow_mut() = target;
    }

    /// The server left the pool in a reload: what is in flight is answered, then the
    /// connection closes.
    pub fn retire(&self) {
        self.retired.set(true);
        self.wake.wake();
    }

    /// True when the queue holds more than the pool's `queue_max`: the client that sent the
    /// last request there waits for `room` before sending more.
    pub fn is_full(&self) -> bool {
        self.queue.borrow().len() >= self.target.borrow().shared.queue_max
    }

    /// Ready once the queue has room again (under half of `queue_max`), or the connection
    /// failed and dropped it.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.queue.borrow().len() < self.target.borrow().shared.queue_max / 2 {
            return Poll::Ready(());
        }
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn wake_waiters(&self) {
        if self.waiters.borrow().is_empty() {
            return;
        }
        for w in self.waiters.take() {
            w.wake();
        }
    }

    /// Queues a request: `write` appends its bytes and says where its key went; its reply,
    /// expected to be of `kind`, goes to `dest`. A retrieval's keys are kept to check its
    /// reply against.
    pub fn send(
        self: &Rc<Self>,
        dest: Dest,
        kind: ReplyKind,
        write: impl FnOnce(&mut BytesMut) -> KeySpan,
    ) {
        let (before, len, key, join) = {
            let mut queue = self.queue.borrow_mut();
            let mut joins = self.joins.borrow_mut();
            joins.close();
            let before = queue.len();
            let key = write(&mut queue);
            let join = match kind {
                ReplyKind::Retrieval => joins.keep(key.of(&queue[before..])),
                _ => Join::Alone,
            };
            (before, queue.len() - before, key, join)
        };
        self.enqueue(dest, kind, before, len, key, join, 0);
    }

    /// Queues a meta get that `write` appends with the opaque token it is given (`O<token>`),
    /// which the reply must echo: a reply with another token is not this request's.
    pub fn send_meta_get(
        self: &Rc<Self>,
        dest: Dest,
        write: impl FnOnce(&mut BytesMut, u32) -> KeySpan,
    ) {
        let opaque = self.opaque.get().wrapping_add(1).max(1);
        self.opaque.set(opaque);
        let (before, len, key) = {
            let mut queue = self.queue.borrow_mut();
            self.joins.borrow_mut().close();
            let before = queue.len();
            let key = write(&mut queue, opaque);
            (before, queue.len() - before, key)
        };
        self.enqueue(dest, ReplyKind::Meta, before, len, key, Join::Alone, opaque);
    }

    /// Queues a fragment of a split retrieval: `prefix` is its command (`get `, `gat 10 `) and
    /// `write_keys` writes its keys. Fragments queued together with the same command share one
    /// line (see `join`); the reply goes to `dest` as the fragment's VALUE blocks.
    pub fn send_fragment(
        self: &Rc<Self>,
        dest: Dest,
        prefix: &[u8],
        write_keys: impl FnOnce(&mut BytesMut),
    ) {
        let (before, len, join) = {
            let mut queue = self.queue.borrow_mut();
            let before = queue.len();
            let join = self
                .joins
                .borrow_mut()
                .append(&mut queue, prefix, write_keys);
            (before, queue.len() - before, join)
        };
        self.enqueue(
            dest,
            ReplyKind::Retrieval,
            before,
            len,
            KeySpan::default(),
            join,
            0,
        );
    }

    /// Records a request whose `len` bytes were appended to the queue at `before`.
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        self: &Rc<Self>,
        dest: Dest,
        kind: ReplyKind,
        before: usize,
        len: usize,
        key: KeySpan,
        join: Join,
        opaque: u32,
    ) {
        let target = self.target.borrow();
        let stats = target.counters();
        stats.requests.incr();
        stats.request_bytes.add(len as u64);
        if before + len >= target.shared.queue_max {
            dest.sink.backpressure(self);
        }
        let deadline = target.shared.config.timeout.map(|t| Instant::now() + t);
        drop(target);
        self.inflight.borrow_mut().push_back(Inflight {
            dest,
            kind,
            deadline,
            len: len as u32,
            key,
            join,
            opaque,
        });
        if !self.running.get() {
            self.running.set(true);
            tokio::task::spawn_local(Rc::clone(self).run());
        } else if before == 0 {
            self.wake.wake();
        }
    }

    /// The server on this connection speaks the meta protocol (known once it answered `mn` on
    /// a connection of its own, see `probe_meta`).
    pub fn speaks_meta(&self) -> bool {
        self.meta.get() == Some(true)
    }

    /// The server on this connection is known not to speak the meta protocol: meta commands
    /// are not sent to it (a limited server may close the connection on them).
    pub fn refuses_meta(&self) -> bool {
        self.meta.get() == Some(false)
    }

    /// Opens the connection ahead of the first request (`preconnect`).
    pub fn preconnect(self: &Rc<Self>) {
        if !self.running.get() {
            self.running.set(true);
            tokio::task::spawn_local(Rc::clone(self).run());
        }
    }

    /// Connects, then drives the connection until it fails or has nothing left to do.
    async fn run(self: Rc<Self>) {
        let stats = self.target().shared_counters();
        // Each connection asks anew: the server may have been replaced by an older one.
        self.meta.set(None);
        let target = self.target();
        self.since.set(target.shared.health[target.index].epoch());
        drop(target);
        let result = match self.connect().await {
            Ok(stream) => {
                self.generation.set(self.generation.get() + 1);
                tokio::task::spawn_local(Rc::clone(&self).probe_meta(self.generation.get()));
                stats.server_connections.incr();
                let res = self.drive(&stream).await;
                stats.server_connections.decr();
                res
            }
            Err(f) => Err(f),
        };
        if let Err(failure) = result {
            match failure {
                Failure::TimedOut | Failure::ConnectTimedOut => stats.server_timedout.incr(),
                Failure::Closed => stats.server_eof.incr(),
                _ => stats.server_err.incr(),
            }
            tracing::warn!(server = %self.target().name(), reason = failure.text(), "server connection failed");
            self.fail_all(failure);
        }
        self.running.set(false);
        // Work queued while we were failing starts a fresh connection.
        if !self.inflight.borrow().is_empty() {
            self.running.set(true);
            tokio::task::spawn_local(Rc::clone(&self).run());
        }
    }

    /// Connects within the pool's `timeout` (10 s without one).
    async fn connect(&self) -> Result<Stream, Failure> {
        let target = self.target();
        let cfg = &target.shared.config;
        let limit = cfg.timeout.unwrap_or(Duration::from_secs(10));
        let addr = &cfg.servers[target.index].addr;
        Stream::connect(addr, cfg.tcpkeepalive, limit)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => Failure::ConnectTimedOut,
                _ => Failure::from_io(&e),
            })
    }

    /// Asks the server, on a short connection of its own, whether it speaks the meta protocol
    /// (`mn` answered `MN`). Never on the serving connection: a server or proxy that does not know
    /// `mn` may close the connection (nutcracker does), taking the requests on it along.
    async fn probe_meta(self: Rc<Self>, generation: u64) {
        let limit = self
            .target()
            .shared
            .config
            .timeout
            .unwrap_or(Duration::from_secs(2));
        let ask = async { ask_mn(self.connect().await.ok()?).await };
        let meta = tokio::time::timeout(limit, ask).await.ok().flatten();
        if self.generation.get() == generation && self.running.get() {
            self.meta.set(Some(meta == Some(true)));
        }
    }

    /// Writes queued requests and reads replies until the connection fails or goes idle.
    async fn drive(&self, stream: &Stream) -> Result<(), Failure> {
        let (stats, item_size_max) = {
            let target = self.target();
            (target.shared_counters(), target.shared.config.item_size_max)
        };
        let mut group: Vec<Inflight> = Vec::new();
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut sending = BytesMut::with_capacity(READ_CHUNK);
        let mut scanner = ReplyScanner::new(item_size_max);
        let mut timer = Timer::default();
        loop {
            if self.retired.get() && self.inflight.borrow().is_empty() {
                return Ok(());
            }
            if sending.is_empty() {
                self.take_queued(&mut sending);
            }
            // The oldest request's deadline bounds how long we wait for any reply.
            let head_deadline = self.inflight.borrow().front().and_then(|i| i.deadline);
            tokio::select! {
                biased;
                r = stream.read_buf(&mut rbuf) => {
                    let mut replied = false;
                    // Nothing handed to the socket is waiting for a reply.
                    let idle = self.written.get() == 0 && rbuf.is_empty();
                    match r {
                        // Closed with nothing in flight (a server restart, an idle timeout):
                        // not a failure; what is queued goes on a new connection.
                        Ok(0) if idle => {
                            stats.server_eof.incr();
                            return Ok(());
                        }
                        Ok(0) => return Err(Failure::Closed),
                        Ok(_) => {}
                        Err(_) if idle => {
                            stats.server_err.incr();
                            return Ok(());
                        }
                        Err(e) => return Err(Failure::from_io(&e)),
                    }
                    while !rbuf.is_empty() {
                        // Bytes nobody asked for, or not the reply the oldest request expects:
                        // the connection no longer speaks memcached.
                        let kind = self.inflight.borrow().front().map(|e| e.kind).ok_or(Failure::BadReply)?;
                        let Some(n) = scanner.next(&rbuf, kind).map_err(|_| Failure::BadReply)? else {
                            break;
                        };
                        let reply = rbuf.split_to(n).freeze();
                        if !replied {
                            replied = true;
                            let target = self.target();
                            target.shared.record_success(target.index);
                        }
                        // The request the reply answers, with those joined to its line.
                        {
                            let mut inflight = self.inflight.borrow_mut();
                            group.push(inflight.pop_front().expect("peeked"));
                            if group[0].join != Join::Alone {
                                while inflight
                                    .front()
                                    .is_some_and(|e| matches!(e.join, Join::Member(_)))
                                {
                                    group.push(inflight.pop_front().expect("checked"));
                                }
                            }
                        }
                        self.written.set(self.written.get().saturating_sub(group.len()));
                        stats.responses.add(group.len() as u64);
                        stats.response_bytes.add(reply.len() as u64);
                        let checked = match group[0].join {
                            Join::Alone => check_opaque(&reply, group[0].opaque),
                            Join::Whole(_) => self.joins.borrow_mut().check_whole(&reply, group[0].join),
                            _ => self.joins.borrow_mut().split(&reply, group.iter().map(|e| e.join), &mut pieces),
                        };
                        if checked.is_err() {
                            // Not the reply these requests wait for: the server and walnut are out
                            // of step, so nothing more on this connection can be trusted.
                            for entry in group.drain(..) {
                                entry.dest.settle(Failure::BadReply.reply());
                            }
                            return Err(Failure::BadReply);
                        }
                        if !matches!(group[0].join, Join::Head(_)) {
                            group.pop().expect("one").dest.settle(reply);
                            continue;
                        }
                        for (entry, piece) in group.drain(..).zip(pieces.drain(..)) {
                            entry.dest.settle(piece);
                        }
                    }
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(READ_CHUNK);
                    }
                }
                r = stream.write(&sending), if !sending.is_empty() => {
                    match r {
                        Ok(0) => return Err(Failure::Closed),
                        Ok(n) => sending.advance(n),
                        Err(e) => return Err(Failure::from_io(&e)),
                    }
                }
                () = std::future::poll_fn(|cx| match head_deadline {
                    Some(d) => timer.poll_until(cx, d),
                    None => std::task::Poll::Pending,
                }) => {
                    return Err(Failure::TimedOut);
                }
                () = self.wake.wait(), if sending.is_empty() => {}
            }
        }
    }

    /// Moves every queued request into `sending` (which is empty), to be written: from now on
    /// they may reach the server.
    fn take_queued(&self, sending: &mut BytesMut) {
        sending.clear();
        self.joins.borrow_mut().close();
        std::mem::swap(sending, &mut *self.queue.borrow_mut());
        self.written.set(self.inflight.borrow().len());
        self.wake_waiters();
    }

    /// Settles every request on this connection after `failure`. Those that may have reached
    /// the server get the error, in order. Those never written are handed back to their client
    /// connections to go to their keys' new owners when the failure took the server out of the
    /// ring, and get the error otherwise.
    fn fail_all(&self, failure: Failure) {
        let target = self.target();
        let shared = &target.shared;
        let standing = shared.record_failure(
            target.index,
            self.since.get(),
            &target.stats,
            failure.text(),
        );
        if standing == Standing::EjectedNow {
            tokio::task::spawn_local(health::probe_until_alive(Arc::clone(shared), target.index));
        }
        self.joins.borrow_mut().clear();
        let queued = std::mem::take(&mut *self.queue.borrow_mut()).freeze();
        self.wake_waiters();
        let entries = std::mem::take(&mut *self.inflight.borrow_mut());
        let written = self.written.replace(0);
        let reply = failure.reply();
        let mut offset = 0usize;
        for (i, entry) in entries.into_iter().enumerate() {
            if i >= written {
                let bytes = queued.slice(offset..offset + entry.len as usize);
                offset += entry.len as usize;
                if standing != Standing::InRing {
                    let Dest { sink, seq, frag } = entry.dest;
                    let unsent = Unsent {
                        bytes,
                        key: entry.key,
                        kind: entry.kind,
                        error: reply.clone(),
                    };
                    sink.resend(seq, frag, unsent);
                    continue;
                }
            }
            entry.dest.settle(reply.clone());
        }
    }
}

/// A meta reply given `opaque` (not 0) must echo it as its `O` token.
fn check_opaque(reply: &[u8], opaque: u32) -> Result<(), BadReply> {
    if opaque == 0 || is_error(reply) {
        return Ok(());
    }
    let eol = memchr::memchr(b'\r', reply).unwrap_or(reply.len());
    let mut token = [0u8; 11];
    token[0] = b'O';
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(opaque).as_bytes();
    token[1..=digits.len()].copy_from_slice(digits);
    let token = &token[..=digits.len()];
    if reply[..eol]
        .split(|&b| b == b' ')
        .skip(1)
        .any(|t| t == token)
    {
        Ok(())
    } else {
        Err(BadReply)
    }
}

/// Sends `mn`; whether the answer is `MN` (`None` when the peer closed or failed instead).
async fn ask_mn(mut s: Stream) -> Option<bool> {
    s.write_all(b"mn\r\n").await.ok()?;
    let mut answer = [0u8; 4];
    s.read_exact(&mut answer).await.ok()?;
    Some(&answer == b"MN\r\n")
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::Path;

    use bytes::BufMut;

    use super::*;
    use crate::config::Config;
    use crate::pool::{ReplySink, Seq};

    /// Records what a server connection reports.
    #[derive(Default)]
    struct Recorder {
        replies: RefCell<Vec<(Seq, Bytes)>>,
        resent: RefCell<Vec<(Seq, Bytes, Vec<u8>)>>,
    }

    impl ReplySink for Recorder {
        fn reply(&self, seq: Seq, _frag: u16, reply: Bytes) {
            self.replies.borrow_mut().push((seq, reply));
        }

        fn resend(self: Rc<Self>, seq: Seq, _frag: u16, request: Unsent) {
            let key = request.key.of(&request.bytes).to_vec();
            self.resent.borrow_mut().push((seq, request.bytes, key));
        }

        fn backpressure(&self, _backend: &Rc<Backend>) {}
    }

    /// A connection to server `a` of a two-server pool with `options`.
    fn backend(options: &str) -> (Arc<PoolShared>, Rc<Backend>) {
        let yaml = format!(
            "p:\n  listen: 127.0.0.1:1\n{options}  servers:\n   - 127.0.0.1:1:1 a\n   - 127.0.0.1:2:1 b\n"
        );
        let config = Config::parse(&yaml, Path::new("t.yml")).expect("config");
        let pool = config.pools.into_iter().next().expect("a pool");
        let shared = PoolShared::new(0, pool, Default::default());
        let target = Target {
            shared: Arc::clone(&shared),
            index: 0,
            stats: Arc::new(PoolStats::new(2)),
        };
        (shared, Backend::new(Rc::new(target)))
    }

    /// Queues four requests on `b`, the first of them handed to the socket before the others
    /// come, the last two retrievals sharing a line; then the connection fails.
    fn four_then_fail(b: &Rc<Backend>, sink: &Rc<Recorder>) {
        let dest = |seq| Dest {
            sink: Rc::clone(sink) as Rc<dyn ReplySink>,
            seq,
            frag: 0,
        };
        b.send(dest(1), ReplyKind::Storage, |q| {
            q.put_slice(b"set a 0 0 1\r\nx\r\n");
            KeySpan::new(4, 1, false)
        });
        let mut sending = BytesMut::new();
        b.take_queued(&mut sending);
        assert_eq!(&sending[..], b"set a 0 0 1\r\nx\r\n");
        b.send(dest(2), ReplyKind::Delete, |q| {
            q.put_slice(b"delete bb\r\n");
            KeySpan::new(7, 2, false)
        });
        b.send_fragment(dest(3), b"get ", |q| q.put_slice(b"k1 k2"));
        b.send_fragment(dest(4), b"get ", |q| q.put_slice(b"k3"));
        assert_eq!(&b.queue.borrow()[..], b"delete bb\r\nget k1 k2 k3\r\n");
        b.fail_all(Failure::Closed);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failure_that_ejects_hands_back_what_was_never_written() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let (shared, b) = backend("  auto_eject_hosts: true\n  server_failure_limit: 1\n");
                let sink = Rc::new(Recorder::default());
                four_then_fail(&b, &sink);
                assert!(shared.health[0].is_ejected());
                // The request that may have reached the server gets the error: never guessed.
                assert_eq!(*sink.replies.borrow(), [(1, Failure::Closed.reply())]);
                // The rest go back to their client with their bytes and keys; the joined
                // retrievals' keys are their gather's business.
                let resent = sink.resent.borrow();
                let seqs: Vec<Seq> = resent.iter().map(|r| r.0).collect();
                assert_eq!(seqs, [2, 3, 4]);
                assert_eq!(
                    (&resent[0].1[..], &resent[0].2[..]),
                    (&b"delete bb\r\n"[..], &b"bb"[..])
                );
                assert!(resent[1].2.is_empty() && resent[2].2.is_empty());
                assert!(b.inflight.borrow().is_empty() && b.queue.borrow().is_empty());
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failure_that_leaves_the_server_in_the_ring_errors_everything() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let (shared, b) = backend("  auto_eject_hosts: true\n  server_failure_limit: 2\n");
                let sink = Rc::new(Recorder::default());
                four_then_fail(&b, &sink);
                assert!(!shared.health[0].is_ejected());
                let error = Failure::Closed.reply();
                assert_eq!(
                    *sink.replies.borrow(),
                    [1, 2, 3, 4].map(|seq| (seq, error.clone()))
                );
                assert!(sink.resent.borrow().is_empty());
            })
            .await;
    }
}
