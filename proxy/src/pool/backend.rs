//! One connection to one memcached server, owned by one worker: requests from many clients are
//! pipelined on it, written in batches, and each reply is handed to the request it belongs to.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::failure::Failure;
use super::health::{self, Standing};
use super::{Dest, PoolShared, Unsent};
use crate::memcache::join::{Join, Joins};
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
}

/// The state shared between the clients that enqueue and the task that drives the socket.
pub struct Backend {
    target: Rc<Target>,
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
    /// The server on this connection answered `mn`: one-key retrievals go as meta gets.
    meta: Cell<bool>,
    /// Counts connections, so a probe's answer only counts for the connection it was made for.
    generation: Cell<u64>,
    /// Split retrievals joined into one line per batch.
    joins: RefCell<Joins>,
}

/// The most bytes read from a server in one call; replies are sliced out of this buffer.
const READ_CHUNK: usize = 16 * 1024;

impl Backend {
    pub fn new(target: Rc<Target>) -> Rc<Backend> {
        Rc::new(Backend {
            target,
            queue: RefCell::new(BytesMut::with_capacity(READ_CHUNK)),
            inflight: RefCell::new(VecDeque::with_capacity(64)),
            written: Cell::new(0),
            wake: LocalWake::default(),
            running: Cell::new(false),
            meta: Cell::new(false),
            generation: Cell::new(0),
            joins: RefCell::new(Joins::default()),
        })
    }

    /// Queues a request: `write` appends its bytes and says where its key went; its reply,
    /// expected to be of `kind`, goes to `dest`.
    pub fn send(
        self: &Rc<Self>,
        dest: Dest,
        kind: ReplyKind,
        write: impl FnOnce(&mut BytesMut) -> KeySpan,
    ) {
        let (before, len, key) = {
            let mut queue = self.queue.borrow_mut();
            self.joins.borrow_mut().close();
            let before = queue.len();
            let key = write(&mut queue);
            (before, queue.len() - before, key)
        };
        self.enqueue(dest, kind, before, len, key, Join::Alone);
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
        );
    }

    /// Records a request whose `len` bytes were appended to the queue at `before`.
    fn enqueue(
        self: &Rc<Self>,
        dest: Dest,
        kind: ReplyKind,
        before: usize,
        len: usize,
        key: KeySpan,
        join: Join,
    ) {
        let stats = self.target.counters();
        stats.requests.incr();
        stats.request_bytes.add(len as u64);
        let deadline = self
            .target
            .shared
            .config
            .timeout
            .map(|t| Instant::now() + t);
        self.inflight.borrow_mut().push_back(Inflight {
            dest,
            kind,
            deadline,
            len: len as u32,
            key,
            join,
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
        self.meta.get()
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
        let stats = self.target.counters();
        // Each connection asks anew: the server may have been replaced by an older one.
        self.meta.set(false);
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
            tracing::warn!(server = %self.target.name(), reason = failure.text(), "server connection failed");
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
        let cfg = &self.target.shared.config;
        let limit = cfg.timeout.unwrap_or(Duration::from_secs(10));
        let addr = &cfg.servers[self.target.index].addr;
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
            .target
            .shared
            .config
            .timeout
            .unwrap_or(Duration::from_secs(2));
        let ask = async { ask_mn(self.connect().await.ok()?).await };
        let meta = tokio::time::timeout(limit, ask).await.ok().flatten();
        if meta == Some(true) && self.generation.get() == generation && self.running.get() {
            self.meta.set(true);
        }
    }

    /// Writes queued requests and reads replies until the connection fails or goes idle.
    async fn drive(&self, stream: &Stream) -> Result<(), Failure> {
        let stats = self.target.counters();
        let mut group: Vec<Inflight> = Vec::new();
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut sending = BytesMut::with_capacity(READ_CHUNK);
        let mut scanner = ReplyScanner::default();
        let mut timer = Timer::default();
        loop {
            if sending.is_empty() {
                sending.clear();
                self.joins.borrow_mut().close();
                std::mem::swap(&mut sending, &mut *self.queue.borrow_mut());
                self.written.set(self.inflight.borrow().len());
            }
            // The oldest request's deadline bounds how long we wait for any reply.
            let head_deadline = self.inflight.borrow().front().and_then(|i| i.deadline);
            tokio::select! {
                biased;
                r = stream.read_buf(&mut rbuf) => {
                    let mut replied = false;
                    match r {
                        Ok(0) => return Err(Failure::Closed),
                        Ok(_) => {}
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
                            self.target.shared.record_success(self.target.index);
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
                        if group[0].join == Join::Alone {
                            group.pop().expect("one").dest.settle(reply);
                            continue;
                        }
                        self.joins.borrow_mut().split(&reply, group.iter().map(|e| e.join), &mut pieces);
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

    /// Settles every request on this connection after `failure`. Those that may have reached
    /// the server get the error, in order. Those never written are handed back to their client
    /// connections to go to their keys' new owners when the failure took the server out of the
    /// ring, and get the error otherwise.
    fn fail_all(&self, failure: Failure) {
        let shared = &self.target.shared;
        let standing = shared.record_failure(self.target.index, &self.target.stats, failure.text());
        if standing == Standing::EjectedNow {
            tokio::task::spawn_local(health::probe_until_alive(
                Arc::clone(shared),
                self.target.index,
            ));
        }
        self.joins.borrow_mut().clear();
        let queued = std::mem::take(&mut *self.queue.borrow_mut()).freeze();
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

/// Sends `mn`; whether the answer is `MN` (`None` when the peer closed or failed instead).
async fn ask_mn(mut s: Stream) -> Option<bool> {
    s.write_all(b"mn\r\n").await.ok()?;
    let mut answer = [0u8; 4];
    s.read_exact(&mut answer).await.ok()?;
    Some(&answer == b"MN\r\n")
}
