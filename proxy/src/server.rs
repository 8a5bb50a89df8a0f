//! The process at run time: every listener bound once, then one thread per worker, each a
//! single-threaded runtime that owns its client and server connections outright (no locks).
//! One accept loop serves both protocols; a [`ConnGuard`] does every connection's bookkeeping.

use std::cell::Cell;
use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::Listen;
use crate::net::{Listener, Stream};
use crate::plugin::{HttpSite, Loaded, McPool};
use crate::pool::{PoolShared, WorkerPool};
use crate::shutdown::Shutdown;
use crate::stats::{PoolNames, PoolStats, Registry};
use crate::wake::LocalWake;

/// How long shutdown waits for in-flight requests before leaving anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a pool serves its clients with.
enum Site {
    Memcache(Arc<PoolShared>),
    Http(Arc<crate::http::Shared>),
}

/// One listener and what it serves.
struct Front {
    /// The pool's place in the stats registry.
    index: usize,
    name: String,
    /// `client_connections` (0: no limit).
    limit: u32,
    site: Site,
    listener: Listener,
}

impl Front {
    fn try_clone(&self) -> std::io::Result<Front> {
        Ok(Front {
            index: self.index,
            name: self.name.clone(),
            limit: self.limit,
            site: match &self.site {
                Site::Memcache(p) => Site::Memcache(Arc::clone(p)),
                Site::Http(h) => Site::Http(Arc::clone(h)),
            },
            listener: self.listener.try_clone()?,
        })
    }
}

/// Everything `run` needs.
pub struct Runtime {
    pub workers: usize,
    pub registry: Arc<Registry>,
    fronts: Vec<Front>,
}

impl Runtime {
    /// Binds every pool's listener; fails before any thread starts. The stats registry lists
    /// memcached pools, then HTTP pools (their servers named `upstream/host:port`).
    pub fn bind(loaded: Loaded, workers: usize) -> Result<Runtime, String> {
        let mut fronts = Vec::new();
        let mut names = Vec::new();
        for McPool { config, chains } in loaded.memcache {
            let listener = bind_pool(&config.name, &config.listen, config.backlog)?;
            let index = fronts.len();
            let shared = Arc::new(PoolShared::new(index, config, chains));
            names.push(PoolNames {
                name: shared.config.name.clone(),
                servers: shared.names.to_vec(),
                plugins: shared.plugins.labels(),
            });
            fronts.push(Front {
                index,
                name: shared.config.name.clone(),
                limit: shared.config.client_connections,
                site: Site::Memcache(shared),
                listener,
            });
        }
        for HttpSite { config, chains } in loaded.http {
            if let Some(path) = &config.access_log {
                crate::reopen::open_append(path).map_err(|e| {
                    format!(
                        "pool {:?}: cannot open access_log {}: {e}",
                        config.name,
                        path.display()
                    )
                })?;
            }
            let listener = bind_pool(&config.name, &config.listen, config.backlog)?;
            let index = fronts.len();
            let shared = Arc::new(crate::http::Shared::new(index, config, chains));
            names.push(PoolNames {
                name: shared.config.name.clone(),
                servers: shared.server_names(),
                plugins: shared.chains.labels(),
            });
            fronts.push(Front {
                index,
                name: shared.config.name.clone(),
                limit: shared.config.client_connections,
                site: Site::Http(shared),
                listener,
            });
        }
        Ok(Runtime {
            workers,
            registry: Arc::new(Registry::new(names, workers)),
            fronts,
        })
    }

    /// How many pools (listeners) it serves.
    pub fn pools(&self) -> usize {
        self.fronts.len()
    }

    /// The memcached pools, in stats order, for the admin listener.
    pub fn memcache_pools(&self) -> Vec<Arc<PoolShared>> {
        let pools = self.fronts.iter().filter_map(|f| match &f.site {
            Site::Memcache(p) => Some(Arc::clone(p)),
            Site::Http(_) => None,
        });
        pools.collect()
    }

    /// The HTTP pools, in stats order, for the admin listener.
    pub fn http_pools(&self) -> Vec<Arc<crate::http::Shared>> {
        let pools = self.fronts.iter().filter_map(|f| match &f.site {
            Site::Http(h) => Some(Arc::clone(h)),
            Site::Memcache(_) => None,
        });
        pools.collect()
    }

    /// Runs the workers until `shutdown`, then lets in-flight requests finish.
    pub fn run(self, shutdown: Shutdown) -> std::io::Result<()> {
        let mut threads = Vec::new();
        for w in 0..self.workers {
            let fronts = self
                .fronts
                .iter()
                .map(Front::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?;
            let registry = Arc::clone(&self.registry);
            let shutdown = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("walnut-worker-{w}"))
                .spawn(move || worker(w, fronts, registry, shutdown))?;
            threads.push(thread);
        }
        for t in threads {
            if let Ok(Err(e)) = t.join() {
                tracing::error!("worker failed: {e}");
            }
        }
        for f in &self.fronts {
            if let Some(path) = f.listener.socket_file() {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }
}

/// Binds a pool's listener; the error names the pool and the address.
fn bind_pool(name: &str, listen: &Listen, backlog: u32) -> Result<Listener, String> {
    Listener::bind(listen, backlog).map_err(|e| {
        let addr = match listen {
            Listen::Tcp { host, port, .. } => format!("{host}:{port}"),
            Listen::Unix { path, .. } => path.display().to_string(),
        };
        format!("pool {name:?}: cannot listen on {addr}: {e}")
    })
}

/// The connections a worker has open, so shutdown can wait for them.
#[derive(Default)]
struct Live {
    count: Cell<usize>,
    idle: LocalWake,
}

/// One admitted client connection. Made when it is accepted, it counts the connection in the
/// process's counters, the pool's and the worker's live set; its drop takes it out of all of
/// them, however the connection ends.
pub struct ConnGuard {
    registry: Arc<Registry>,
    stats: Arc<PoolStats>,
    live: Rc<Live>,
}

impl ConnGuard {
    fn admit(registry: &Arc<Registry>, stats: &Arc<PoolStats>, live: &Rc<Live>) -> ConnGuard {
        let process = &registry.process;
        process.total_connections.fetch_add(1, Ordering::Relaxed);
        process.curr_connections.fetch_add(1, Ordering::Relaxed);
        stats.pool.client_connections.incr();
        live.count.set(live.count.get() + 1);
        ConnGuard {
            registry: Arc::clone(registry),
            stats: Arc::clone(stats),
            live: Rc::clone(live),
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.registry
            .process
            .curr_connections
            .fetch_sub(1, Ordering::Relaxed);
        self.stats.pool.client_connections.decr();
        self.live.count.set(self.live.count.get() - 1);
        if self.live.count.get() == 0 {
            self.live.idle.wake();
        }
    }
}

fn worker(
    w: usize,
    fronts: Vec<Front>,
    registry: Arc<Registry>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let live = Rc::new(Live::default());
        for front in fronts {
            let stats = Arc::clone(&registry.workers[w][front.index]);
            let accept = Accept {
                registry: Arc::clone(&registry),
                stats: Arc::clone(&stats),
                live: Rc::clone(&live),
                shutdown: shutdown.clone(),
            };
            match &front.site {
                Site::Memcache(shared) => {
                    let pool = WorkerPool::new(Arc::clone(shared), stats, Arc::clone(&registry));
                    if shared.config.preconnect {
                        pool.preconnect();
                    }
                    tokio::task::spawn_local(accept.run(front, move |conn| {
                        crate::session::serve(conn.stream, Rc::clone(&pool), conn.id, conn.shutdown)
                    }));
                }
                Site::Http(shared) => {
                    let site = crate::http::Worker::new(stats, Arc::clone(shared));
                    tokio::task::spawn_local(accept.run(front, move |conn| {
                        let site = Rc::clone(&site);
                        async move {
                            // HTTP pools listen on TCP only (the config refuses a unix socket).
                            if let (Stream::Tcp(s), Some(peer)) = (conn.stream, conn.peer) {
                                crate::http::proxy::serve(&site, s, peer, conn.shutdown).await;
                            }
                        }
                    }));
                }
            }
        }
        shutdown.recv().await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while live.count.get() > 0 {
                live.idle.wait().await;
            }
        })
        .await;
        Ok(())
    })
}

/// A client connection handed to its pool's serve function.
pub struct Conn {
    pub stream: Stream,
    /// The client's address (`None` on a unix socket).
    pub peer: Option<IpAddr>,
    /// Numbers the worker's connections: a session's requests to a server keep to the
    /// server connection this picks.
    pub id: usize,
    pub shutdown: Shutdown,
}

/// What the accept loop of one pool in one worker counts with.
struct Accept {
    registry: Arc<Registry>,
    stats: Arc<PoolStats>,
    live: Rc<Live>,
    shutdown: Shutdown,
}

impl Accept {
    /// Accepts `front`'s clients until shutdown, each served by a task running `serve`. Accept
    /// errors (out of file descriptors and the like) back off instead of spinning; connections
    /// past the pool's `client_connections` (across workers) are closed at once.
    async fn run<F, Fut>(mut self, front: Front, serve: F)
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let name = front.name;
        let listener = match front.listener.into_async() {
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
                () = self.shutdown.recv() => return,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(pool = %name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if front.limit > 0 && self.registry.clients(front.index) >= u64::from(front.limit) {
                tracing::warn!(pool = %name, limit = front.limit, "client_connections reached, closing new connection");
                continue;
            }
            let guard = ConnGuard::admit(&self.registry, &self.stats, &self.live);
            next_id = next_id.wrapping_add(1);
            let served = serve(Conn {
                stream,
                peer,
                id: next_id,
                shutdown: self.shutdown.clone(),
            });
            tokio::task::spawn_local(async move {
                served.await;
                drop(guard);
            });
        }
    }
}
