//! Accepting clients, for both protocols: one loop per pool and listener in each worker, and
//! the [`ConnGuard`] that does every connection's bookkeeping.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::net::{Listener, Stream};
use crate::shutdown::Shutdown;
use crate::stats::{PoolStats, ProcessCounters, Registry};
use crate::wake::LocalWake;

/// The connections a worker has open, so shutdown can wait for them.
#[derive(Default)]
pub struct Live {
    pub count: Cell<usize>,
    pub idle: LocalWake,
}

/// One admitted client connection. Made when it is accepted, it counts the connection in the
/// process's counters, the pool's and the worker's live set; its drop takes it out of all of
/// them, however the connection ends.
pub struct ConnGuard {
    process: Arc<ProcessCounters>,
    stats: Arc<PoolStats>,
    live: Rc<Live>,
}

impl ConnGuard {
    fn admit(process: &Arc<ProcessCounters>, stats: &Arc<PoolStats>, live: &Rc<Live>) -> ConnGuard {
        process.total_connections.fetch_add(1, Ordering::Relaxed);
        process.curr_connections.fetch_add(1, Ordering::Relaxed);
        stats.pool.client_connections.incr();
        live.count.set(live.count.get() + 1);
        ConnGuard {
            process: Arc::clone(process),
            stats: Arc::clone(stats),
            live: Rc::clone(live),
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.process
            .curr_connections
            .fetch_sub(1, Ordering::Relaxed);
        self.stats.pool.client_connections.decr();
        self.live.count.set(self.live.count.get() - 1);
        if self.live.count.get() == 0 {
            self.live.idle.wake();
        }
    }
}

/// A client connection handed to its pool's serve function.
pub struct Conn {
    pub stream: Stream,
    /// The client's address (`None` on a unix socket).
    pub peer: Option<IpAddr>,
    /// Numbers the worker's connections: a session's requests to a server keep to the
    /// server connection this picks.
    pub id: usize,
    /// Fires when walnut stops or a reload removes the pool: the connection finishes what it
    /// was asked and closes.
    pub shutdown: Shutdown,
}

/// What a pool's accept loops in one worker read anew for each client: a reload changes them.
pub struct Admission {
    pub registry: Arc<Registry>,
    /// The pool's place in `registry`.
    pub index: usize,
    /// `client_connections` (0: no limit).
    pub limit: u32,
    /// This worker's counters for the pool.
    pub stats: Arc<PoolStats>,
}

/// What the accept loop of one pool in one worker counts with.
pub struct Accept {
    pub name: String,
    pub admission: Rc<RefCell<Admission>>,
    pub live: Rc<Live>,
    /// The pool's connections' shutdown (walnut stopping, or the pool removed).
    pub drain: Shutdown,
    /// Stops this loop alone (its listener was replaced, or the pool removed).
    pub stop: Shutdown,
}

impl Accept {
    /// Accepts `listener`'s clients until stopped, each served by a task running `serve`.
    /// Accept errors (out of file descriptors and the like) back off instead of spinning;
    /// connections past the pool's `client_connections` (across workers) are closed at once.
    pub async fn run<F, Fut>(mut self, listener: Listener, serve: F)
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let name = self.name;
        let listener = match listener.into_async() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(pool = %name, "cannot register listener: {e}");
                return;
            }
        };
        let mut next_id = 0usize;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = self.stop.recv() => return,
                () = self.drain.recv() => return,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(pool = %name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let guard = {
                let a = self.admission.borrow();
                if a.limit > 0 && a.registry.clients(a.index) >= u64::from(a.limit) {
                    tracing::warn!(pool = %name, limit = a.limit, "client_connections reached, closing new connection");
                    continue;
                }
                ConnGuard::admit(&a.registry.process, &a.stats, &self.live)
            };
            next_id = next_id.wrapping_add(1);
            // Boxed once per connection: a future awaited inside an async block is laid out
            // twice in the task (where it was captured and where it is polled), and the serve
            // future is most of an idle connection's memory.
            let served = Box::pin(serve(Conn {
                stream,
                peer,
                id: next_id,
                shutdown: self.drain.clone(),
            }));
            tokio::task::spawn_local(async move {
                served.await;
                drop(guard);
            });
        }
    }
}
