//! One memcached client connection: read and decode requests, route them ([`dispatch`]), and
//! write the replies back in the client's order ([`pending`]) as the servers report them.

pub mod dispatch;
pub mod pending;
mod reroute;

use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};

use crate::memcache::{Command, Refusal, decode};
use crate::net::Stream;
use crate::pool::{Dest, ReplySink, Seq, Unsent, WorkerPool};
use crate::shutdown::Shutdown;
use pending::{Pending, Slot};

/// Requests in flight per connection before walnut stops reading from it (backpressure).
const MAX_PENDING: usize = 4096;
/// Reply bytes buffered per connection before walnut stops reading from it.
const MAX_OUT: usize = 4 * 1024 * 1024;
/// The read buffer starts small, so 10k idle connections stay cheap, and doubles up to this.
const READ_CHUNK: usize = 16 * 1024;
const READ_START: usize = 1024;

/// One client connection as the servers' connections see it: where replies go.
pub struct Session {
    pub pool: Rc<WorkerPool>,
    /// Which of a server's connections this client's requests take (see `WorkerPool::backend`).
    pub id: usize,
    stream: Stream,
    pub pending: Pending,
}

impl Session {
    pub fn new(stream: Stream, pool: Rc<WorkerPool>, id: usize) -> Rc<Session> {
        Rc::new(Session {
            pool,
            id,
            stream,
            pending: Pending::default(),
        })
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
        self.pending.push(Slot::Reply(Some(line)), 0);
    }

    /// Writes what is ready to the client, as far as the socket takes it now.
    fn flush(&self) {
        self.pending.flush(&self.stream, &self.pool.stats.latency);
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
}

/// Serves one client until it leaves, sends `quit`, breaks the protocol fatally, or the
/// process shuts down (then the requests already read are still answered).
///
/// Replies are written by whichever task completes them (see `Session::reply`); this task
/// reads and routes, and waits on the socket only when it is full.
pub async fn serve(stream: Stream, pool: Rc<WorkerPool>, id: usize, mut shutdown: Shutdown) {
    let counters = &pool.stats.pool;
    let item_size_max = pool.shared.config.item_size_max;
    let session = Session::new(stream, Rc::clone(&pool), id);
    let pending = &session.pending;
    let mut scratch = dispatch::Scratch::default();
    let mut inbuf = BytesMut::new();
    // Bytes of an oversized value still to be thrown away as they arrive.
    let mut skip = 0usize;
    let mut reading = !shutdown.is_shutdown();
    let mut closing = false;
    loop {
        if reading && !closing {
            if skip > 0 {
                let n = skip.min(inbuf.len());
                inbuf.advance(n);
                skip -= n;
            }
            while skip == 0 && pending.len() < MAX_PENDING {
                match decode(&mut inbuf, item_size_max) {
                    Ok(Some(req)) => {
                        // Nothing after `quit` is read, as memcached reads nothing after it.
                        let quit = req.command == Command::Quit;
                        dispatch::dispatch(&session, req, &mut scratch);
                        if quit {
                            closing = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(Refusal { error, .. }) if error.is_fatal() => {
                        counters.client_err.incr();
                        pending.push(Slot::Close(Some(error.reply())), 0);
                        closing = true;
                        break;
                    }
                    Err(Refusal { error, skip: n }) => {
                        session.answer(Bytes::from_static(error.reply()));
                        // The refused request's data block is thrown away as it arrives.
                        let now = n.min(inbuf.len());
                        inbuf.advance(now);
                        skip = n - now;
                    }
                }
            }
        }
        // Replies walnut answered itself, and any that are ready, go out now.
        session.flush();
        if pending.is_broken() {
            counters.client_err.incr();
            break;
        }
        if pending.is_closed() {
            break;
        }
        if pending.is_empty() && pending.unwritten() == 0 && (closing || !reading) {
            break;
        }
        let can_read =
            reading && !closing && pending.len() < MAX_PENDING && pending.unwritten() < MAX_OUT;
        // Only a task that is not reading needs waking when replies drain.
        pending.waiting.set(!can_read);
        if can_read && inbuf.capacity() - inbuf.len() < 512 {
            inbuf.reserve(inbuf.capacity().clamp(READ_START, READ_CHUNK));
        }
        tokio::select! {
            biased;
            () = pending.unblock(&session.stream, &pool.stats.latency), if pending.is_blocked() => {}
            () = pending.ready.wait() => {}
            r = session.stream.read_buf(&mut inbuf), if can_read => match r {
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
    pending.close(&session.stream);
}
