//! The process at run time: every listener bound, then one thread per worker, each a
//! single-threaded runtime that owns its client and server connections outright (no locks).
//! A config is served as a [`Generation`]: the first one at start, a new one at each reload
//! ([`reload`]), which every worker takes over at once ([`worker`]). One accept loop serves
//! both protocols ([`accept`]).

mod accept;
mod reload;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::admin::View;
use crate::config::Listen;
use crate::net::Listener;
use crate::plugin::Loaded;
use crate::pool::PoolShared;
use crate::shutdown::Shutdown;
use crate::stats::Registry;
pub use accept::{Conn, ConnGuard};
pub use reload::Reloader;

/// What a pool serves its clients with, as every worker shares it.
#[derive(Clone)]
enum Site {
    Memcache(Arc<PoolShared>),
    Http(Arc<crate::http::Shared>),
}

impl Site {
    fn protocol(&self) -> &'static str {
        match self {
            Site::Memcache(_) => "memcache",
            Site::Http(_) => "http",
        }
    }
}

/// A bound listening socket. A reload keeps it while some pool still listens on its address,
/// so no client is refused while the config changes.
struct Bound {
    /// Tells the workers that a listener is the one they already accept on.
    id: u64,
    listen: Listen,
    listener: Listener,
}

impl Drop for Bound {
    fn drop(&mut self) {
        // The last holder of a unix listener (the config no longer has it) removes its file.
        if let Some(path) = self.listener.socket_file() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One pool of a generation: its listener and what it serves.
struct Front {
    /// The pool's place in the generation's stats registry.
    index: usize,
    name: String,
    /// `client_connections` (0: no limit).
    limit: u32,
    site: Site,
    bound: Arc<Bound>,
    preconnect: bool,
}

/// A config as the workers serve it.
struct Generation {
    /// Counts generations (0 at start), so a worker can say which one it runs.
    id: u64,
    fronts: Vec<Front>,
    registry: Arc<Registry>,
}

impl Generation {
    /// The admin listener's view of it.
    fn view(&self) -> View {
        let mut memcache = Vec::new();
        let mut http = Vec::new();
        for f in &self.fronts {
            match &f.site {
                Site::Memcache(p) => memcache.push(Arc::clone(p)),
                Site::Http(h) => http.push(Arc::clone(h)),
            }
        }
        View {
            registry: Arc::clone(&self.registry),
            memcache,
            http,
            live: true,
        }
    }
}

/// Everything `run` needs.
pub struct Runtime {
    pub workers: usize,
    reloader: Arc<Reloader>,
}

impl Runtime {
    /// Binds every pool's listener; fails before any thread starts. The stats registry lists
    /// memcached pools, then HTTP pools (their servers named `upstream/host:port`). `conf` is
    /// the file a reload reads again.
    pub fn bind(loaded: Loaded, workers: usize, conf: PathBuf) -> Result<Runtime, String> {
        let first = reload::build(loaded, None, workers)?;
        Ok(Runtime {
            workers,
            reloader: Arc::new(Reloader::new(conf, first, workers)),
        })
    }

    /// How many pools (listeners) it serves.
    pub fn pools(&self) -> usize {
        self.reloader.pools()
    }

    /// What the stats port and the admin listener read: swapped by each reload.
    pub fn views(&self) -> Arc<ArcSwap<View>> {
        self.reloader.views()
    }

    /// Reloads the config on request (a signal, the admin listener).
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
    }

    /// Runs the workers until `shutdown`, then lets in-flight requests finish.
    pub fn run(self, shutdown: Shutdown) -> std::io::Result<()> {
        let mut threads = Vec::new();
        for w in 0..self.workers {
            let follow = self.reloader.follow();
            let shutdown = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("walnut-worker-{w}"))
                .spawn(move || worker::run(w, follow, shutdown))?;
            threads.push(thread);
        }
        for t in threads {
            if let Ok(Err(e)) = t.join() {
                tracing::error!("worker failed: {e}");
            }
        }
        self.reloader.close();
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

/// Numbers bound listeners.
fn next_listener_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
