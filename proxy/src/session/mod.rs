//! One client connection: read and decode requests, route them, write replies back in order.

pub mod dispatch;
pub mod gather;
pub mod pending;
pub mod reroute;
pub mod writer;

use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::memcache::{Command, Refusal, decode};
use crate::upstream::WorkerPool;
use pending::{Pending, Slot};
pub use writer::ClientWriter;

/// Requests in flight per connection before walnut stops reading from it (backpressure).
const MAX_PENDING: usize = 4096;
/// Reply bytes buffered per connection before walnut stops reading from it.
const MAX_OUT: usize = 4 * 1024 * 1024;
/// The read buffer starts small, so 10k idle connections stay cheap, and doubles up to this.
const READ_CHUNK: usize = 16 * 1024;
const READ_START: usize = 1024;

/// Serves one client until it leaves, sends `quit`, breaks the protocol fatally, or the
/// process shuts down (then the requests already read are still answered).
///
/// Replies are written by whichever task completes them (see `Pending::flush`); this task
/// reads and routes, and waits on the socket only when it is full.
pub async fn serve<R>(
    mut rd: R,
    writer: ClientWriter,
    pool: Rc<WorkerPool>,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
{
    let counters = &pool.stats.pool;
    let pending = Rc::new(Pending::new(writer));
    let mut scratch = dispatch::Scratch::default();
    let mut inbuf = BytesMut::new();
    let item_size_max = pool.shared.config.item_size_max;
    // Bytes of an oversized value still to be thrown away as they arrive.
    let mut skip = 0usize;
    let mut reading = !*shutdown.borrow();
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
                        dispatch::dispatch(req, &pool, &pending, &mut scratch);
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
                        pending.push(Slot::Reply(Some(Bytes::from_static(error.reply()))), 0);
                        // The refused request's data block is thrown away as it arrives.
                        let now = n.min(inbuf.len());
                        inbuf.advance(now);
                        skip = n - now;
                    }
                }
            }
        }
        // Replies walnut answered itself, and any that are ready, go out now.
        pending.flush();
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
            () = pending.unblock(), if pending.is_blocked() => {}
            () = pending.ready.wait() => {}
            r = rd.read_buf(&mut inbuf), if can_read => match r {
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
            r = shutdown.changed(), if reading => {
                if r.is_err() || *shutdown.borrow() {
                    reading = false;
                }
            }
        }
    }
    pending.close();
}
