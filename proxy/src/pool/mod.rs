//! One memcached pool: its servers, the ring every worker shares, and each worker's pipelined
//! connections to them. [`WorkerPool::place`] decides where every key goes. A server
//! connection ([`backend`]) reports each reply, and each request it could not send, to the
//! client connection that asked through [`ReplySink`]; it never calls into the session itself.

pub mod backend;
pub mod explain;
pub mod failure;
pub mod health;
mod place;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::config::Pool;
use crate::memcache::{KeySpan, ReplyKind};
use crate::plugin::{PoolPlugins, chain::PoolChains};
use crate::ring::{Ring, RingServer};
use crate::stats::{PoolStats, Registry};
pub use backend::{Backend, Target};
pub use failure::Failure;
pub use health::{Health, Standing};
pub use place::{PlaceTrace, Unplaced};

/// Request bytes a server connection queues, at least, before its clients must wait: a server
/// that stops reading cannot make walnut hold more than this per connection (and one request
/// per client that was sending).
const QUEUE_MAX: usize = 4 * 1024 * 1024;

/// A request's position in its client connection's order, as the client connection numbers
/// them; the pool only hands it back.
pub type Seq = u64;

/// The client side of requests in flight: what a server connection reports to. The session
/// implements it.
pub trait ReplySink {
    /// The reply to fragment `frag` of request `seq`: a whole reply, or the request's part of a
    /// reply to a line it shared with others.
    fn reply(&self, seq: Seq, frag: u16, reply: Bytes);

    /// Request `seq` (fragment `frag`) never reached its server, which is now out of the ring:
    /// it may go to its key's new owner, or gets `request.error`.
    fn resend(self: Rc<Self>, seq: Seq, frag: u16, request: Unsent);

    /// The server connection a request of this client was just queued on holds more than it
    /// should: the client sends nothing more until it has room (`Backend::room`).
    fn backpressure(&self, backend: &Rc<Backend>);
}

/// Who gets a request's reply: fragment `frag` of request `seq` of a client connection.
pub struct Dest {
    pub sink: Rc<dyn ReplySink>,
    pub seq: Seq,
    pub frag: u16,
}

impl Dest {
    /// Hands `reply` over.
    pub fn settle(self, reply: Bytes) {
        self.sink.reply(self.seq, self.frag, reply);
    }
}

/// A request taken back from a server connection before it was written.
pub struct Unsent {
    /// The request as it was queued (for a retrieval sharing a line, only its part of it).
    pub bytes: Bytes,
    /// Where its key is in `bytes`.
    pub key: KeySpan,
    pub kind: ReplyKind,
    /// What the request gets if it cannot go anywhere else: the failure's reply.
    pub error: Bytes,
}

/// What every worker shares about a pool: its config and its ring (swapped whole, never locked).
pub struct PoolShared {
    /// The pool's place in the stats registry.
    pub index: usize,
    pub config: Pool,
    /// The name each server goes by in the ring, the logs and the stats.
    pub names: Arc<[String]>,
    /// Request bytes a server connection queues before its clients wait (backpressure).
    pub queue_max: usize,
    pub ring: ArcSwap<Ring>,
    /// Each server's failures and ejection, shared by every worker.
    pub health: Vec<Health>,
    ring_lock: health::RingLock,
    /// The pool's plugins, compiled; each worker instantiates its own.
    pub plugins: PoolChains,
}

impl PoolShared {
    pub fn new(index: usize, config: Pool, plugins: PoolChains) -> PoolShared {
        let names: Arc<[String]> = config.servers.iter().map(|s| s.ring_name()).collect();
        let empty = Ring::build(config.distribution, &[], &[]);
        let shared = PoolShared {
            index,
            queue_max: QUEUE_MAX.max(4 * config.item_size_max),
            health: (0..config.servers.len())
                .map(|_| Health::default())
                .collect(),
            config,
            names,
            ring: ArcSwap::from_pointee(empty),
            plugins,
            ring_lock: health::RingLock::default(),
        };
        shared.rebuild_ring();
        shared
    }

    /// The ring over the servers not ejected, as nutcracker builds its continuum.
    fn build_ring(&self) -> Ring {
        let servers: Vec<RingServer> = self
            .names
            .iter()
            .zip(&self.config.servers)
            .map(|(n, s)| RingServer {
                name: n.as_bytes(),
                weight: s.weight,
            })
            .collect();
        let live: Vec<bool> = self.health.iter().map(|h| !h.is_ejected()).collect();
        Ring::build(self.config.distribution, &servers, &live)
    }
}

/// One worker's view of a pool.
pub struct WorkerPool {
    pub shared: Arc<PoolShared>,
    pub stats: Arc<PoolStats>,
    pub registry: Arc<Registry>,
    /// This worker's plugin instances; `None` when the pool has no plugins (then they cost nothing).
    pub plugins: Option<RefCell<PoolPlugins>>,
    /// Each server's connections in this worker.
    servers: Vec<Vec<Rc<Backend>>>,
}

impl WorkerPool {
    pub fn new(
        shared: Arc<PoolShared>,
        stats: Arc<PoolStats>,
        registry: Arc<Registry>,
    ) -> Rc<WorkerPool> {
        let cfg = &shared.config;
        let plugins = (!shared.plugins.is_empty())
            .then(|| RefCell::new(PoolPlugins::new(&cfg.name, &shared.plugins)));
        let servers = (0..cfg.servers.len())
            .map(|index| {
                let target = Rc::new(Target {
                    shared: Arc::clone(&shared),
                    index,
                    stats: Arc::clone(&stats),
                });
                let n = cfg.server_connections.max(1) as usize;
                (0..n).map(|_| Backend::new(Rc::clone(&target))).collect()
            })
            .collect();
        Rc::new(WorkerPool {
            shared,
            stats,
            registry,
            plugins,
            servers,
        })
    }

    /// The connection to `server` for client connection `client`: always the same one, so one
    /// client's requests to a server stay in order even with several `server_connections`.
    pub fn backend(&self, server: usize, client: usize) -> &Rc<Backend> {
        let conns = &self.servers[server];
        &conns[client % conns.len()]
    }

    /// How many servers the pool has.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Opens every connection now (`preconnect: true`).
    pub fn preconnect(&self) {
        for b in self.servers.iter().flatten() {
            b.preconnect();
        }
    }
}
