//! The HTTP reverse proxy: `protocol: http` pools. Requests are routed by nginx's location
//! rules ([`route`]) on their normalized path ([`path`]), filtered by the pool's and the
//! location's plugins, and passed to an upstream chosen as nginx chooses ([`balance`]) over
//! fresh or kept-alive connections ([`conn_pool`]), bodies streamed both ways ([`body`]).
//! [`proxy`] is one client connection.

pub mod access_log;
pub mod balance;
pub mod body;
pub mod body_phases;
pub mod conn_pool;
pub mod date;
pub mod head;
pub mod headers;
pub mod path;
pub mod plugins;
pub mod proxy;
pub mod route;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::HttpPool;
use crate::plugin::PoolPlugins;
use crate::plugin::chain::PoolChains;
use crate::stats::PoolStats;

/// An HTTP pool as every worker shares it.
pub struct Shared {
    /// The pool's place in the stats document.
    pub index: usize,
    pub config: HttpPool,
    pub router: route::Router,
    pub upstreams: Vec<Arc<balance::UpstreamShared>>,
    pub chains: PoolChains,
}

impl Shared {
    pub fn new(index: usize, config: HttpPool, chains: PoolChains) -> Shared {
        Shared::succeed(index, config, chains, None)
    }

    /// The pool made from `config` after a reload, following `old` (the pool of that name
    /// before): an upstream configured as before is the same upstream, with its servers'
    /// failures and its balancing.
    pub fn succeed(
        index: usize,
        config: HttpPool,
        chains: PoolChains,
        old: Option<&Shared>,
    ) -> Shared {
        let router = route::Router::new(&config.locations);
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let kept = old.and_then(|o| o.upstreams.iter().find(|x| x.config == *u));
                kept.map_or_else(
                    || Arc::new(balance::UpstreamShared::new(u.clone())),
                    Arc::clone,
                )
            })
            .collect();
        Shared {
            index,
            config,
            router,
            upstreams,
            chains,
        }
    }
}

impl Shared {
    /// The stats document's server names: `upstream/host:port`, upstream by upstream.
    pub fn server_names(&self) -> Vec<String> {
        let upstreams = &self.config.upstreams;
        upstreams
            .iter()
            .flat_map(|u| {
                u.servers
                    .iter()
                    .map(move |s| format!("{}/{}", u.name, s.text))
            })
            .collect()
    }

    /// The stats index of server `i` of upstream `u` (upstreams' servers numbered in order).
    pub fn server_index(&self, u: usize, i: usize) -> usize {
        self.config.upstreams[..u]
            .iter()
            .map(|x| x.servers.len())
            .sum::<usize>()
            + i
    }
}

/// An HTTP pool in one worker: its plugin instances, balancers and idle connections.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub plugins: RefCell<PoolPlugins>,
    pub balancers: RefCell<Vec<balance::Balancer>>,
    pub conns: RefCell<Vec<conn_pool::ConnPool>>,
    /// Request buffers lent to this worker's connections while they serve a request.
    pub spares: RefCell<proxy::Spares>,
    /// This worker's counters for the pool, in the stats document.
    pub stats: Arc<PoolStats>,
    /// This worker's handle on the pool's access log, if it has one.
    pub access_log: Option<RefCell<access_log::AccessLog>>,
}

impl Worker {
    pub fn new(stats: Arc<PoolStats>, shared: Arc<Shared>) -> Rc<Worker> {
        Worker::succeed(stats, shared, None)
    }

    /// This worker's view of a reloaded pool, following `old`: an upstream that stayed keeps
    /// its balancer and its idle connections; plugins are instantiated anew.
    pub fn succeed(stats: Arc<PoolStats>, shared: Arc<Shared>, old: Option<&Worker>) -> Rc<Worker> {
        let plugins = PoolPlugins::new(&shared.config.name, &shared.chains);
        let mut balancers = Vec::with_capacity(shared.upstreams.len());
        let mut conns = Vec::with_capacity(shared.upstreams.len());
        for (u, config) in shared.upstreams.iter().zip(&shared.config.upstreams) {
            let before = old.and_then(|o| {
                let at = o.shared.upstreams.iter().position(|x| Arc::ptr_eq(x, u))?;
                // The old view, still serving requests begun before, gets fresh ones.
                let fresh = balance::Balancer::new(Arc::clone(u));
                let balancer = std::mem::replace(&mut o.balancers.borrow_mut()[at], fresh);
                let empty = conn_pool::ConnPool::new(config.servers.len(), 0);
                let idle = std::mem::replace(&mut o.conns.borrow_mut()[at], empty);
                Some((balancer, idle))
            });
            let (balancer, idle) = before.unwrap_or_else(|| {
                (
                    balance::Balancer::new(Arc::clone(u)),
                    conn_pool::ConnPool::new(config.servers.len(), config.keepalive),
                )
            });
            balancers.push(balancer);
            conns.push(idle);
        }
        let access_log = shared.config.access_log.as_deref().and_then(|path| {
            access_log::AccessLog::open(path)
                .map_err(|e| tracing::error!(pool = %shared.config.name, path = %path.display(), "cannot open the access log: {e}"))
                .ok()
                .map(RefCell::new)
        });
        Rc::new(Worker {
            access_log,
            shared,
            plugins: RefCell::new(plugins),
            balancers: RefCell::new(balancers),
            conns: RefCell::new(conns),
            spares: RefCell::default(),
            stats,
        })
    }
}
