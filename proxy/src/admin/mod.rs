//! The operator's listeners, each on a thread of its own so they never slow a worker: the
//! nutcracker stats port ([`stats_port`], its JSON unchanged) and the admin HTTP listener
//! ([`http`], walnut only, off unless `--admin ADDR` is given) with Prometheus metrics
//! ([`metrics`]), a status page ([`status`]) and the route explanation ([`route`]).

pub mod http;
pub mod metrics;
pub mod route;
pub mod stats_port;
pub mod status;

use std::sync::Arc;

use crate::plugin::{HttpSite, Loaded, McPool};
use crate::pool::PoolShared;
use crate::stats::{PoolNames, Registry};

pub use stats_port::{bind, spawn};

/// What the admin listener reads: the counters, and each pool as the workers share it (its
/// servers' health, its ring, its plugins).
pub struct View {
    pub registry: Arc<Registry>,
    pub memcache: Vec<Arc<PoolShared>>,
    pub http: Vec<Arc<crate::http::Shared>>,
    /// Whether walnut is serving (the admin listener) or only loaded a config (`walnut route`).
    pub live: bool,
}

/// One pool as the admin listener sees it.
pub enum Site<'v> {
    Memcache(&'v Arc<PoolShared>),
    Http(&'v Arc<crate::http::Shared>),
}

impl Site<'_> {
    pub fn protocol(&self) -> &'static str {
        match self {
            Site::Memcache(_) => "memcache",
            Site::Http(_) => "http",
        }
    }
}

/// A server's standing now.
pub struct ServerState {
    /// Its address as configured.
    pub address: String,
    /// `up`, `ejected` (memcached) or `down` (HTTP, failed out for `fail_timeout`).
    pub state: &'static str,
    /// When it was last ejected or rejoined, in µs since the epoch (memcached only).
    pub since_us: Option<u64>,
    pub ejections: u64,
    pub rejoins: u64,
}

impl View {
    /// The pools of a loaded config as a fresh walnut would have them, every server up and
    /// nothing counted, numbered as `server::Runtime` numbers them: for `walnut route`, which
    /// needs no running walnut.
    pub fn offline(loaded: Loaded) -> View {
        let mut names = Vec::new();
        let mut memcache = Vec::new();
        let mut http = Vec::new();
        for McPool { config, chains } in loaded.memcache {
            let shared = PoolShared::new(names.len(), config, chains);
            names.push(PoolNames {
                name: shared.config.name.clone(),
                servers: shared.names.to_vec(),
                plugins: shared.plugins.labels(),
            });
            memcache.push(shared);
        }
        for HttpSite { config, chains } in loaded.http {
            let shared = Arc::new(crate::http::Shared::new(names.len(), config, chains));
            names.push(PoolNames {
                name: shared.config.name.clone(),
                servers: shared.server_names(),
                plugins: shared.chains.labels(),
            });
            http.push(shared);
        }
        View {
            registry: Arc::new(Registry::new(names, 1)),
            memcache,
            http,
            live: false,
        }
    }

    /// The pool at stats index `p`.
    pub fn site(&self, p: usize) -> Option<Site<'_>> {
        if let Some(m) = self.memcache.iter().find(|m| m.index == p) {
            return Some(Site::Memcache(m));
        }
        self.http.iter().find(|h| h.index == p).map(Site::Http)
    }

    /// The pool called `name`, with its stats index.
    pub fn find(&self, name: &str) -> Option<(usize, Site<'_>)> {
        let p = self.registry.pools.iter().position(|n| n.name == name)?;
        Some((p, self.site(p)?))
    }

    /// Each server of pool `p`, in stats order.
    pub fn servers(&self, p: usize) -> Vec<ServerState> {
        match self.site(p) {
            Some(Site::Memcache(m)) => m
                .health
                .iter()
                .zip(&m.config.servers)
                .map(|(h, spec)| {
                    let (ejections, rejoins, changed) = h.history();
                    ServerState {
                        address: spec.addr_text.clone(),
                        state: if h.is_ejected() { "ejected" } else { "up" },
                        since_us: (changed != 0).then_some(changed),
                        ejections,
                        rejoins,
                    }
                })
                .collect(),
            Some(Site::Http(h)) => {
                let now = crate::http::balance::now_ms();
                h.upstreams
                    .iter()
                    .flat_map(|u| {
                        u.config
                            .servers
                            .iter()
                            .enumerate()
                            .map(move |(i, s)| ServerState {
                                address: s.text.clone(),
                                state: if u.is_down(i, now) { "down" } else { "up" },
                                since_us: None,
                                ejections: 0,
                                rejoins: 0,
                            })
                    })
                    .collect()
            }
            None => Vec::new(),
        }
    }
}
