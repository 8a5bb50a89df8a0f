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
use std::sync::{Arc, Mutex, Weak};

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
    /// Each server's failures and ejection, shared by every worker, and by the pool's next
    /// generation when a reload keeps the server.
    pub health: Vec<Arc<Health>>,
    ring_lock: health::RingLock,
    /// The pool's newest generation (see [`Lineage`]).
    lineage: Arc<Lineage>,
    /// The pool's plugins, compiled; each worker instantiates its own.
    pub plugins: PoolChains,
}

/// Every generation of a pool (one per reload) shares its lineage, which knows the newest: an
/// ejection or rejoin seen through an older generation (a connection not yet moved over, a
/// probe started before the reload) rebuilds the ring that places requests now.
#[derive(Default)]
pub struct Lineage(Mutex<Weak<PoolShared>>);

impl Lineage {
    fn latest(&self) -> Option<Arc<PoolShared>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).upgrade()
    }
}

impl PoolShared {
    pub fn new(index: usize, config: Pool, plugins: PoolChains) -> Arc<PoolShared> {
        PoolShared::succeed(index, config, plugins, None)
    }

    /// The pool made from `config`, following `old` (the pool of that name before a reload):
    /// a server that stays (same name in the ring, same address) keeps its health, so an
    /// ejected server stays out until its probe brings it back. It takes over from `old` only
    /// at `commit`, once the reload took effect.
    pub fn succeed(
        index: usize,
        config: Pool,
        plugins: PoolChains,
        old: Option<&PoolShared>,
    ) -> Arc<PoolShared> {
        let names: Arc<[String]> = config.servers.iter().map(|s| s.ring_name()).collect();
        let health: Vec<Arc<Health>> = config
            .servers
            .iter()
            .zip(names.iter())
            .map(|(server, name)| {
                let kept = old.and_then(|old| old.find(name, server));
                kept.map_or_else(Arc::default, |i| Arc::clone(&old.expect("found").health[i]))
            })
            .collect();
        let empty = Ring::build(config.distribution, &[], &[]);
        let shared = Arc::new(PoolShared {
            index,
            queue_max: QUEUE_MAX.max(4 * config.item_size_max),
            health,
            config,
            names,
            ring: ArcSwap::from_pointee(empty),
            plugins,
            ring_lock: health::RingLock::default(),
            lineage: old.map_or_else(Arc::default, |o| Arc::clone(&o.lineage)),
        });
        shared.rebuild_ring();
        if old.is_none() {
            shared.commit();
        }
        shared
    }

    /// Makes this the pool's newest generation (a reload took effect): ring changes seen
    /// through older ones rebuild its ring from now on, and it is rebuilt once now for any
    /// seen while the reload was under way.
    pub fn commit(self: &Arc<Self>) {
        *self.lineage.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(self);
        self.rebuild_ring();
    }

    /// The servers of this pool that `next` (its successor in a reload) no longer has are
    /// served no more: their probes stop.
    pub fn retire_left(&self, next: &PoolShared) {
        let left = self
            .health
            .iter()
            .filter(|h| !next.health.iter().any(|n| Arc::ptr_eq(n, h)));
        left.for_each(|h| h.retire());
    }

    /// The index of the server named `name` in the ring at `server`'s address, if the pool has it.
    pub fn find(&self, name: &str, server: &crate::config::ServerSpec) -> Option<usize> {
        let mut same = self.names.iter().zip(&self.config.servers);
        same.position(|(n, s)| n == name && s.addr == server.addr)
    }

    /// This pool's servers are served no more (the pool left the config): their probes stop.
    pub fn retire(&self) {
        self.health.iter().for_each(|h| h.retire());
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
        WorkerPool::succeed(shared, stats, registry, None)
    }

    /// This worker's view of a reloaded pool, following `old`: the connections to servers that
    /// stay are kept (moved over to the new config); those to servers that left are retired:
    /// they answer what is in flight, then close. Plugins are instantiated anew.
    pub fn succeed(
        shared: Arc<PoolShared>,
        stats: Arc<PoolStats>,
        registry: Arc<Registry>,
        old: Option<&WorkerPool>,
    ) -> Rc<WorkerPool> {
        let cfg = &shared.config;
        let plugins = (!shared.plugins.is_empty())
            .then(|| RefCell::new(PoolPlugins::new(&cfg.name, &shared.plugins)));
        let mut kept = vec![false; old.map_or(0, |o| o.servers.len())];
        let servers = (0..cfg.servers.len())
            .map(|index| {
                let target = Rc::new(Target {
                    shared: Arc::clone(&shared),
                    index,
                    stats: Arc::clone(&stats),
                });
                let n = cfg.server_connections.max(1) as usize;
                let before = old.and_then(|o| {
                    let at = o.shared.find(&shared.names[index], &cfg.servers[index])?;
                    kept[at] = true;
                    Some(&o.servers[at])
                });
                let mut conns: Vec<Rc<Backend>> = Vec::with_capacity(n);
                for (i, b) in before.into_iter().flatten().enumerate() {
                    if i < n {
                        b.retarget(Rc::clone(&target));
                        conns.push(Rc::clone(b));
                    } else {
                        b.retire();
                    }
                }
                conns.resize_with(n, || Backend::new(Rc::clone(&target)));
                conns
            })
            .collect();
        if let Some(old) = old {
            let gone = old.servers.iter().zip(&kept).filter(|(_, k)| !**k);
            gone.flat_map(|(conns, _)| conns).for_each(|b| b.retire());
        }
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

    /// The pool left the config in a reload: every connection closes once what is in flight
    /// on it is answered.
    pub fn retire(&self) {
        self.servers.iter().flatten().for_each(|b| b.retire());
    }

    /// Opens every connection now (`preconnect: true`).
    pub fn preconnect(&self) {
        for b in self.servers.iter().flatten() {
            b.preconnect();
        }
    }
}
