//! A pool's servers: the ring shared by every worker, and each worker's own connections.

pub mod backend;
pub mod failure;
pub mod health;
pub mod join;

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use arc_swap::ArcSwap;

use crate::config::Pool;
use crate::plugin::{PoolPlugins, chain::PoolChains};
use crate::ring::{Ring, RingServer};
use crate::stats::{PoolStats, Registry};
pub use backend::{Backend, Dest, Target};
pub use failure::Failure;
pub use health::{Health, Standing};

/// What every worker shares about a pool: its config and its ring (swapped whole, never locked).
pub struct PoolShared {
    pub index: usize,
    pub config: Pool,
    /// The name each server goes by in the ring, the logs and the stats.
    pub names: Vec<String>,
    pub ring: ArcSwap<Ring>,
    /// Client connections open across all workers.
    pub clients: AtomicU32,
    /// Each server's failures and ejection, shared by every worker.
    pub health: Vec<Health>,
    ring_lock: health::RingLock,
    /// The pool's plugins, compiled; each worker instantiates its own.
    pub plugins: PoolChains,
}

impl PoolShared {
    pub fn new(index: usize, config: Pool, plugins: PoolChains) -> PoolShared {
        let names: Vec<String> = config.servers.iter().map(|s| s.ring_name()).collect();
        let servers: Vec<RingServer> = names
            .iter()
            .zip(&config.servers)
            .map(|(n, s)| RingServer {
                name: n.as_bytes(),
                weight: s.weight,
            })
            .collect();
        let ring = Ring::build(config.distribution, &servers, &[]);
        PoolShared {
            index,
            health: (0..config.servers.len())
                .map(|_| Health::default())
                .collect(),
            config,
            names,
            ring: ArcSwap::from_pointee(ring),
            clients: AtomicU32::new(0),
            plugins,
            ring_lock: health::RingLock::default(),
        }
    }
}

/// One server's connections in one worker.
struct ServerConns {
    conns: Vec<Rc<Backend>>,
}

/// One worker's view of a pool.
pub struct WorkerPool {
    pub shared: Arc<PoolShared>,
    pub stats: Arc<PoolStats>,
    pub registry: Arc<Registry>,
    /// This worker's plugin instances; `None` when the pool has no plugins (then they cost nothing).
    pub plugins: Option<RefCell<PoolPlugins>>,
    servers: Vec<ServerConns>,
}

impl WorkerPool {
    pub fn new(
        shared: Arc<PoolShared>,
        stats: Arc<PoolStats>,
        registry: Arc<Registry>,
    ) -> Rc<WorkerPool> {
        Rc::new_cyclic(|me| WorkerPool::build(me, shared, stats, registry))
    }

    fn build(
        me: &Weak<WorkerPool>,
        shared: Arc<PoolShared>,
        stats: Arc<PoolStats>,
        registry: Arc<Registry>,
    ) -> WorkerPool {
        let cfg = &shared.config;
        let plugins = (!shared.plugins.is_empty())
            .then(|| RefCell::new(PoolPlugins::new(&cfg.name, &shared.plugins)));
        let servers = cfg
            .servers
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let target = Rc::new(Target {
                    addr: spec.addr.clone(),
                    name: shared.names[index].clone(),
                    timeout: cfg.timeout,
                    tcpkeepalive: cfg.tcpkeepalive,
                    stats: Arc::clone(&stats),
                    index,
                    pool: Weak::clone(me),
                });
                let n = cfg.server_connections.max(1) as usize;
                ServerConns {
                    conns: (0..n).map(|_| Backend::new(Rc::clone(&target))).collect(),
                }
            })
            .collect();
        WorkerPool {
            shared,
            stats,
            registry,
            plugins,
            servers,
        }
    }

    /// The connection to `server` for a client: always the same one for the same `affinity`, so
    /// one client's requests to a server stay in order even with several `server_connections`.
    pub fn backend(&self, server: usize, affinity: usize) -> &Rc<Backend> {
        let conns = &self.servers[server].conns;
        &conns[affinity % conns.len()]
    }

    /// How many servers the pool has.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Opens every connection now (`preconnect: true`).
    pub fn preconnect(&self) {
        for s in &self.servers {
            for b in &s.conns {
                b.preconnect();
            }
        }
    }
}
