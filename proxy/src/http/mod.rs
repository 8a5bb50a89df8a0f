//! The HTTP reverse proxy: `protocol: http` pools. Requests are routed by nginx's location
//! rules ([`route`]) on their normalized path ([`path`]), filtered by the pool's and the
//! location's plugins, and passed to an upstream chosen as nginx chooses ([`balance`]) over
//! fresh or kept-alive connections ([`conn_pool`]), bodies streamed both ways ([`body`]).
//! [`proxy`] is one client connection.

pub mod balance;
pub mod body;
pub mod conn_pool;
pub mod date;
pub mod head;
pub mod headers;
pub mod path;
pub mod proxy;
pub mod route;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::watch;

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
    /// Open client connections, across workers.
    pub clients: AtomicU32,
}

impl Shared {
    pub fn new(index: usize, config: HttpPool, chains: PoolChains) -> Shared {
        let router = route::Router::new(&config.locations);
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Arc::new(balance::UpstreamShared::new(u.clone())))
            .collect();
        Shared {
            index,
            config,
            router,
            upstreams,
            chains,
            clients: AtomicU32::new(0),
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
    /// This worker's counters for the pool, in the stats document.
    pub stats: Arc<PoolStats>,
}

impl Worker {
    pub fn new(stats: Arc<PoolStats>, shared: Arc<Shared>) -> Rc<Worker> {
        let plugins = PoolPlugins::new(&shared.config.name, &shared.chains);
        let balancers = shared
            .upstreams
            .iter()
            .map(|u| balance::Balancer::new(Arc::clone(u)))
            .collect();
        let conns = shared
            .config
            .upstreams
            .iter()
            .map(|u| conn_pool::ConnPool::new(u.servers.len(), u.keepalive))
            .collect();
        Rc::new(Worker {
            shared,
            plugins: RefCell::new(plugins),
            balancers: RefCell::new(balancers),
            conns: RefCell::new(conns),
            stats,
        })
    }
}

/// Accepts clients of `worker`'s pool until shutdown; `live` counts open connections.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    worker: Rc<Worker>,
    live: Rc<crate::worker::Live>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = worker.shared.config.name.clone();
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(pool = %name, "cannot register listener: {e}");
            return;
        }
    };
    let limit = worker.shared.config.client_connections;
    let clients = &worker.shared.clients;
    while let Some((stream, remote)) =
        crate::worker::next_client(|| listener.accept(), &mut shutdown, clients, limit, &name).await
    {
        worker.stats.pool.client_connections.incr();
        live.enter();
        let (worker, live, shutdown) = (Rc::clone(&worker), Rc::clone(&live), shutdown.clone());
        tokio::task::spawn_local(async move {
            let _ = stream.set_nodelay(true);
            proxy::serve(&worker, stream, remote.ip(), shutdown).await;
            worker.shared.clients.fetch_sub(1, Ordering::Relaxed);
            worker.stats.pool.client_connections.decr();
            live.leave();
        });
    }
}
