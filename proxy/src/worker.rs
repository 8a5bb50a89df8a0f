//! The process at run time: listeners bound once, then one thread per worker, each a
//! single-threaded runtime that owns its client and server connections outright (no locks).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::{Config, Listen};
use crate::session;
use crate::stats::{PoolNames, Registry};
use crate::upstream::{PoolShared, WorkerPool};

/// How long shutdown waits for in-flight requests before leaving anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A bound listening socket, shared by every worker.
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
}

impl Listener {
    /// Binds `listen` with the pool's backlog.
    pub fn bind(listen: &Listen, backlog: u32) -> std::io::Result<Listener> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let backlog = backlog.clamp(1, i32::MAX as u32) as i32;
        match listen {
            Listen::Tcp { addr, .. } => {
                let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                socket.bind(&(*addr).into())?;
                socket.listen(backlog)?;
                socket.set_nonblocking(true)?;
                Ok(Listener::Tcp(socket.into()))
            }
            Listen::Unix { path, mode } => {
                // A socket file left by an earlier run would make bind fail; only a socket is removed.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?)?;
                socket.listen(backlog)?;
                socket.set_nonblocking(true)?;
                if let Some(mode) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
                }
                Ok(Listener::Unix(socket.into(), path.clone()))
            }
        }
    }

    fn try_clone(&self) -> std::io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l, p) => Listener::Unix(l.try_clone()?, p.clone()),
        })
    }
}

/// Everything `run` needs.
pub struct Runtime {
    pub config: Config,
    pub workers: usize,
    pub registry: Arc<Registry>,
    pools: Vec<Arc<PoolShared>>,
    listeners: Vec<Listener>,
    /// `protocol: http` pools and their listeners.
    http: Vec<(Arc<crate::http::Shared>, Listener)>,
}

impl Runtime {
    /// Binds every pool's listener; fails before any thread starts.
    pub fn bind(
        config: Config,
        plugins: crate::plugin::Loaded,
        workers: usize,
    ) -> Result<Runtime, String> {
        let listeners = config
            .pools
            .iter()
            .map(|p| bind_pool(&p.name, &p.listen, p.backlog))
            .collect::<Result<Vec<_>, _>>()?;
        let pools: Vec<Arc<PoolShared>> = config
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Arc::new(PoolShared::new(
                    i,
                    p.clone(),
                    plugins.pools.get(i).cloned().unwrap_or_default(),
                ))
            })
            .collect();
        let mut http = Vec::new();
        for (i, pool) in config.http.iter().enumerate() {
            let l = bind_pool(&pool.name, &pool.listen, pool.backlog)?;
            let chains = plugins.http.get(i).cloned().unwrap_or_default();
            let index = config.pools.len() + i;
            http.push((
                Arc::new(crate::http::Shared::new(index, pool.clone(), chains)),
                l,
            ));
        }
        // Memcached pools, then HTTP pools (their servers named `upstream/host:port`).
        let names = pools
            .iter()
            .map(|p| PoolNames {
                name: p.config.name.clone(),
                servers: p.names.clone(),
            })
            .chain(http.iter().map(|(h, _)| PoolNames {
                name: h.config.name.clone(),
                servers: h.server_names(),
            }))
            .collect();
        let registry = Arc::new(Registry::new(names, workers));
        Ok(Runtime {
            config,
            workers,
            registry,
            pools,
            listeners,
            http,
        })
    }

    /// Runs the workers until `shutdown` turns true, then lets in-flight requests finish.
    pub fn run(self, shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
        let mut threads = Vec::new();
        for w in 0..self.workers {
            let listeners = self
                .listeners
                .iter()
                .map(Listener::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?;
            let pools = self.pools.clone();
            let http = self
                .http
                .iter()
                .map(|(shared, l)| Ok((Arc::clone(shared), l.try_clone()?)))
                .collect::<std::io::Result<Vec<_>>>()?;
            let registry = Arc::clone(&self.registry);
            let shutdown = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("walnut-worker-{w}"))
                .spawn(move || worker(w, pools, listeners, http, registry, shutdown))?;
            threads.push(thread);
        }
        for t in threads {
            if let Ok(Err(e)) = t.join() {
                tracing::error!("worker failed: {e}");
            }
        }
        for l in &self.listeners {
            if let Listener::Unix(_, path) = l {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }
}

/// Binds a pool's listener; the error names the pool and the address.
fn bind_pool(name: &str, listen: &Listen, backlog: u32) -> Result<Listener, String> {
    Listener::bind(listen, backlog)
        .map_err(|e| format!("pool {name:?}: cannot listen on {}: {e}", describe(listen)))
}

fn describe(listen: &Listen) -> String {
    match listen {
        Listen::Tcp { host, port, .. } => format!("{host}:{port}"),
        Listen::Unix { path, .. } => path.display().to_string(),
    }
}

/// Connections a worker has open, so shutdown can wait for them.
#[derive(Default)]
pub struct Live {
    count: Cell<usize>,
    idle: Notify,
}

impl Live {
    /// A connection opened.
    pub fn enter(&self) {
        self.count.set(self.count.get() + 1);
    }

    /// A connection closed.
    pub fn leave(&self) {
        self.count.set(self.count.get() - 1);
        if self.count.get() == 0 {
            self.idle.notify_one();
        }
    }
}

fn worker(
    index: usize,
    pools: Vec<Arc<PoolShared>>,
    listeners: Vec<Listener>,
    http: Vec<(Arc<crate::http::Shared>, Listener)>,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let live = Rc::new(Live::default());
        for (p, listener) in pools.iter().zip(listeners) {
            let wp = WorkerPool::new(
                Arc::clone(p),
                Arc::clone(&registry.workers[index][p.index]),
                Arc::clone(&registry),
            );
            if p.config.preconnect {
                wp.preconnect();
            }
            tokio::task::spawn_local(accept_loop(
                listener,
                wp,
                Rc::clone(&live),
                Arc::clone(&registry),
                shutdown.clone(),
            ));
        }
        for (shared, listener) in http {
            let Listener::Tcp(listener) = listener else {
                continue;
            };
            tokio::task::spawn_local(crate::http::accept_loop(
                listener,
                crate::http::Worker::new(
                    Arc::clone(&registry.workers[index][shared.index]),
                    shared,
                ),
                Rc::clone(&live),
                shutdown.clone(),
            ));
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while live.count.get() > 0 {
                live.idle.notified().await;
            }
        })
        .await;
        Ok(())
    })
}

async fn accept_loop(
    listener: Listener,
    pool: Rc<WorkerPool>,
    live: Rc<Live>,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match listener {
        Listener::Tcp(l) => tokio::net::TcpListener::from_std(l).map(Accept::Tcp),
        Listener::Unix(l, _) => tokio::net::UnixListener::from_std(l).map(Accept::Unix),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(pool = %pool.shared.config.name, "cannot register listener: {e}");
            return;
        }
    };
    let pool_name = pool.shared.config.name.clone();
    let limit = pool.shared.config.client_connections;
    while let Some(conn) = next_client(
        || listener.accept(),
        &mut shutdown,
        &pool.shared.clients,
        limit,
        &pool_name,
    )
    .await
    {
        registry
            .process
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        registry
            .process
            .curr_connections
            .fetch_add(1, Ordering::Relaxed);
        pool.stats.pool.client_connections.incr();
        live.count.set(live.count.get() + 1);
        let (pool, live, registry, shutdown) = (
            Rc::clone(&pool),
            Rc::clone(&live),
            Arc::clone(&registry),
            shutdown.clone(),
        );
        tokio::task::spawn_local(async move {
            match conn {
                Conn::Tcp(s) => {
                    let _ = s.set_nodelay(true);
                    let (r, w) = s.into_split();
                    session::serve(r, session::ClientWriter::Tcp(w), Rc::clone(&pool), shutdown)
                        .await;
                }
                Conn::Unix(s) => {
                    let (r, w) = s.into_split();
                    session::serve(
                        r,
                        session::ClientWriter::Unix(w),
                        Rc::clone(&pool),
                        shutdown,
                    )
                    .await;
                }
            }
            pool.shared.clients.fetch_sub(1, Ordering::Relaxed);
            registry
                .process
                .curr_connections
                .fetch_sub(1, Ordering::Relaxed);
            pool.stats.pool.client_connections.decr();
            live.count.set(live.count.get() - 1);
            if live.count.get() == 0 {
                live.idle.notify_one();
            }
        });
    }
}

/// The next client a pool admits: waits for a connection, backs off when accepting fails
/// (out of file descriptors and the like, instead of spinning), closes connections past
/// `client_connections` (`limit`, 0 for none) and counts the one admitted in `clients`.
/// `None` once shutdown begins.
pub async fn next_client<T, F>(
    mut accept: impl FnMut() -> F,
    shutdown: &mut watch::Receiver<bool>,
    clients: &std::sync::atomic::AtomicU32,
    limit: u32,
    pool: &str,
) -> Option<T>
where
    F: std::future::Future<Output = std::io::Result<T>>,
{
    loop {
        let conn = tokio::select! {
            c = accept() => c,
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return None;
                }
                continue;
            }
        };
        match conn {
            Err(e) => {
                tracing::warn!(pool, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(_) if limit > 0 && clients.load(Ordering::Relaxed) >= limit => {
                tracing::warn!(
                    pool,
                    limit,
                    "client_connections reached, closing new connection"
                );
            }
            Ok(c) => {
                clients.fetch_add(1, Ordering::Relaxed);
                return Some(c);
            }
        }
    }
}

enum Accept {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Accept {
    async fn accept(&self) -> std::io::Result<Conn> {
        match self {
            Accept::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
            Accept::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        }
    }
}
