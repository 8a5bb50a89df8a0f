//! One memcached client connection: read and decode requests, route them ([`dispatch`]), and
//! write the replies back in the client's order ([`pending`]) as the servers report them.
//!
//! What a connection holds is bounded in bytes: each request waiting for a reply sets aside
//! the most its reply can take (`reply_bound`) out of the pool's `client_buffer`, and walnut
//! reads nothing more from a client whose replies are not being read, or whose last request
//! went to a server connection that is full (`Backend::is_full`).

pub mod dispatch;
pub mod pending;
mod reroute;
mod values;

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::current::Current;
use crate::memcache::reply::MAX_STATS_REPLY;
use crate::memcache::request::MAX_KEY_LEN;
use crate::memcache::{Command, Decoder, Refusal, Request};
use crate::net::Stream;
use crate::pool::{Backend, Dest, ReplySink, Seq, Unsent, WorkerPool};
use crate::shutdown::Shutdown;
use pending::{Pending, Slot};

/// Requests waiting per connection before walnut stops reading from it.
const MAX_PENDING: usize = 4096;
/// Reply bytes waiting for a client to read them before walnut reads no more of its requests.
const MAX_OUT: usize = 4 * 1024 * 1024;
/// The read buffer starts small, so 10k idle connections stay cheap, and doubles up to this.
const READ_CHUNK: usize = 16 * 1024;
const READ_START: usize = 1024;
/// A read buffer grown past this by a spike (a large value) is given back once it is empty.
const KEEP_READ: usize = 64 * 1024;
/// What a reply without a value can take (a status line, a meta line with its flags).
const SMALL_REPLY: usize = 512;

/// One client connection as the servers' connections see it: where replies go.
pub struct Session {
    /// The pool requests are routed by: the newest one when each is read (see `Current`).
    pool: RefCell<Rc<WorkerPool>>,
    /// Which of a server's connections this client's requests take (see `WorkerPool::backend`).
    pub id: usize,
    stream: Stream,
    pub pending: Pending,
    /// A server connection this client's last request left full: nothing more is sent
    /// until it has room.
    full: RefCell<Option<Rc<Backend>>>,
}

impl Session {
    pub fn new(stream: Stream, pool: Rc<WorkerPool>, id: usize) -> Rc<Session> {
        Rc::new(Session {
            pool: RefCell::new(pool),
            id,
            stream,
            pending: Pending::default(),
            full: RefCell::new(None),
        })
    }

    /// The pool this connection's requests are routed by now.
    pub fn pool(&self) -> Rc<WorkerPool> {
        Rc::clone(&self.pool.borrow())
    }

    /// Where a server connection reports fragment `frag` of request `seq`.
    pub fn dest(self: &Rc<Self>, seq: Seq, frag: u16) -> Dest {
        Dest {
            sink: Rc::clone(self) as Rc<dyn ReplySink>,
            seq,
            frag,
        }
    }

    /// A reply walnut gives itself, in its turn.
    pub fn answer(&self, line: Bytes) {
        self.pending.push(Slot::Reply(Some(line)), 0, 0);
    }

    /// Writes what is ready to the client, as far as the socket takes it now.
    fn flush(&self) {
        self.pending.flush(&self.stream, &self.pool.borrow());
    }

    /// The most bytes the reply to `req` can take, set aside while it is in flight.
    fn reply_bound(&self, req: &Request) -> usize {
        let item = self.pool.borrow().shared.config.item_size_max;
        match req.command {
            _ if req.is_noreply() => 0,
            c if c.is_retrieval() => req.key_count() * (item + MAX_KEY_LEN + 48) + 8,
            Command::MetaGet => item + SMALL_REPLY,
            Command::Stats if req.tokens().next().is_some() => {
                self.pool.borrow().server_count() * MAX_STATS_REPLY
            }
            _ => SMALL_REPLY,
        }
    }

    /// Whether a request whose reply needs `need` bytes may be sent now: the connection's
    /// `client_buffer` has room for it beside the replies set aside and those not yet read,
    /// and the client reads what it was sent. A connection with nothing waiting always may (a
    /// request larger than the whole buffer goes alone).
    fn has_room(&self, need: usize) -> bool {
        let p = &self.pending;
        let budget = self.pool.borrow().shared.config.client_buffer;
        if p.is_empty() && p.unwritten() == 0 {
            return true;
        }
        p.len() < MAX_PENDING
            && p.unwritten() < MAX_OUT
            && p.reserved() + p.unwritten() + need <= budget
    }
}

impl ReplySink for Session {
    fn reply(&self, seq: Seq, frag: u16, reply: Bytes) {
        if self.pending.deliver(seq, frag, reply) {
            self.flush();
            self.pending.wake_if_needed();
        }
    }

    fn resend(self: Rc<Self>, seq: Seq, frag: u16, request: Unsent) {
        reroute::resend(&self, seq, frag, request);
    }

    fn backpressure(&self, backend: &Rc<Backend>) {
        *self.full.borrow_mut() = Some(Rc::clone(backend));
    }
}

/// Serves one client until it leaves, sends `quit`, breaks the protocol fatally, stops reading
/// its replies for longer than its buffer holds, or the process shuts down (then the requests
/// already read are still answered).
///
/// Replies are written by whichever task completes them (see `Session::reply`); this task
/// reads and routes, and waits on the socket only when it is full.
pub async fn serve(
    stream: Stream,
    current: Rc<Current<WorkerPool>>,
    id: usize,
    mut shutdown: Shutdown,
) {
    let mut pool = current.follow();
    let mut decoder = Decoder::new(0, 1);
    set_limits(&mut decoder, &pool.value);
    let s = Session::new(stream, Rc::clone(&pool.value), id);
    let pending = &s.pending;
    let mut scratch = dispatch::Scratch::default();
    let mut inbuf = BytesMut::new();
    // A request read but not sent yet: the buffer had no room for its reply.
    let mut held: Option<Request> = None;
    // The client may send more (it has not closed, and walnut is not shutting down).
    let mut reading = !shutdown.is_shutdown();
    // `quit` or a fatal error: nothing more is read or routed.
    let mut closing = false;
    loop {
        // A reload replaced the pool: the requests read from now on use the new one.
        if pool.refresh() {
            set_limits(&mut decoder, &pool.value);
            *s.pool.borrow_mut() = Rc::clone(&pool.value);
        }
        let counters = &pool.value.stats.pool;
        let cfg = &pool.value.shared.config;
        // Route what may go now.
        while !closing && s.full.borrow().is_none() {
            let req = match held.take() {
                Some(req) => req,
                None => match decoder.decode(&mut inbuf) {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(refusal) => {
                        closing = refuse(&s, refusal, &mut scratch);
                        continue;
                    }
                },
            };
            if !s.has_room(s.reply_bound(&req)) {
                held = Some(req);
                break;
            }
            // Nothing after `quit` is read, as memcached reads nothing after it.
            closing = req.command == Command::Quit;
            dispatch::dispatch(&s, req, &mut scratch);
        }
        // Replies walnut answered itself, and any that are ready, go out now.
        s.flush();
        if pending.is_broken() {
            counters.client_err.incr();
            break;
        }
        if pending.is_closed() {
            break;
        }
        // Room is set aside for every reply in flight, so this is a reply larger than its
        // room: a server answering more than asked. The client is cut off rather than held
        // past its budget.
        if pending.unwritten() > cfg.client_buffer {
            tracing::warn!(pool = %cfg.name, unread = pending.unwritten(), client_buffer = cfg.client_buffer, "replies for a client exceed its client_buffer; closing its connection");
            counters.client_err.incr();
            break;
        }
        let idle = pending.is_empty() && pending.unwritten() == 0 && held.is_none();
        if idle && (closing || !reading) {
            break;
        }
        if inbuf.is_empty() && inbuf.capacity() > KEEP_READ {
            inbuf = BytesMut::new();
        }
        let full = s.full.borrow().clone();
        let can_read = reading && !closing && held.is_none() && full.is_none();
        // Only a task that is not reading needs waking when replies drain.
        pending.waiting.set(!can_read);
        if can_read && inbuf.capacity() - inbuf.len() < 512 {
            inbuf.reserve(inbuf.capacity().clamp(READ_START, READ_CHUNK));
        }
        tokio::select! {
            biased;
            () = pending.unblock(&s.stream, &pool.value), if pending.is_blocked() => {}
            () = pending.ready.wait() => {}
            // A reload: routing goes on with the new pool (an idle connection lets go of the old).
            () = pool.changed() => {}
            () = poll_fn(|cx| full.as_ref().map_or(std::task::Poll::Pending, |b| b.poll_room(cx))), if full.is_some() => {
                s.full.borrow_mut().take();
            }
            r = s.stream.read_buf(&mut inbuf), if can_read => match r {
                Ok(0) => {
                    counters.client_eof.incr();
                    reading = false;
                }
                Ok(_) => {}
                Err(_) => {
                    counters.client_err.incr();
                    break;
                }
            },
            () = shutdown.recv(), if reading => reading = false,
        }
    }
    pending.close(&s.stream);
}

/// The decoder's limits from the pool's config. Each batch of a long retrieval sets aside room
/// for its keys' values: two batches fit in the buffer, so one is answered while the next is on
/// its way.
fn set_limits(decoder: &mut Decoder, pool: &WorkerPool) {
    let cfg = &pool.shared.config;
    let batch_keys =
        (cfg.client_buffer / (2 * (cfg.item_size_max + MAX_KEY_LEN + 48))).clamp(1, 100);
    decoder.set_limits(cfg.item_size_max, batch_keys);
}

/// Answers a refused request (unless it said `noreply`), and unlinks the old value of a `set`
/// too large to store, as memcached does. True when the connection is to close.
fn refuse(s: &Rc<Session>, refusal: Refusal, scratch: &mut dispatch::Scratch) -> bool {
    if refusal.error.is_fatal() {
        s.pool().stats.pool.client_err.incr();
        s.pending
            .push(Slot::Close(Some(refusal.error.reply())), 0, 0);
        return true;
    }
    if let Some((key, base64)) = &refusal.unlink {
        dispatch::unlink(s, key, *base64, scratch);
    }
    if !refusal.noreply {
        s.answer(Bytes::from_static(refusal.error.reply()));
    }
    false
}
