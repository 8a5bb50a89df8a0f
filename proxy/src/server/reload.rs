//! Reloading the config while serving: the file is read, checked and its plugins loaded as
//! `-t` does, and the listeners it adds bound, before anything changes; then the new
//! [`Generation`] is handed to every worker, and the reload returns once each runs it.
//! Pools are matched by name: what stays keeps its state (server health, server connections,
//! upstream balancing, counters), what changed is made anew.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::worker::Follow;
use super::{Bound, Front, Generation, Site, bind_pool, next_listener_id};
use crate::admin::View;
use crate::config::{Config, Listen};
use crate::plugin::{HttpSite, Loaded, McPool};
use crate::pool::PoolShared;
use crate::stats::{PoolNames, Registry};

/// How long a reload waits for every worker to take the new config over.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// The generation made from `loaded`, following `old` (the one served now, if any). Fails,
/// changing nothing, when a listener cannot be bound or an access log opened.
pub(super) fn build(
    loaded: Loaded,
    old: Option<&Generation>,
    workers: usize,
) -> Result<Generation, String> {
    let before = |name: &str, protocol: &str| {
        let fronts = old.map(|g| g.fronts.as_slice()).unwrap_or_default();
        fronts
            .iter()
            .find(|f| f.name == name && f.site.protocol() == protocol)
            .map(|f| &f.site)
    };
    // A listener on an address already listened on is kept, whichever pool it served.
    let bind = |name: &str, listen: &Listen, backlog: u32| -> Result<Arc<Bound>, String> {
        let fronts = old.map(|g| g.fronts.as_slice()).unwrap_or_default();
        if let Some(f) = fronts.iter().find(|f| f.bound.listen == *listen) {
            return Ok(Arc::clone(&f.bound));
        }
        Ok(Arc::new(Bound {
            id: next_listener_id(),
            listen: listen.clone(),
            listener: bind_pool(name, listen, backlog)?,
        }))
    };
    let mut fronts = Vec::new();
    let mut names = Vec::new();
    for McPool { config, chains } in loaded.memcache {
        let bound = bind(&config.name, &config.listen, config.backlog)?;
        let old = match before(&config.name, "memcache") {
            Some(Site::Memcache(p)) => Some(&**p),
            _ => None,
        };
        let shared = PoolShared::succeed(fronts.len(), config, chains, old);
        names.push(PoolNames {
            name: shared.config.name.clone(),
            servers: shared.names.to_vec(),
            plugins: shared.plugins.labels(),
        });
        fronts.push(Front {
            index: fronts.len(),
            name: shared.config.name.clone(),
            limit: shared.config.client_connections,
            preconnect: shared.config.preconnect,
            site: Site::Memcache(shared),
            bound,
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
        let bound = bind(&config.name, &config.listen, config.backlog)?;
        let old = match before(&config.name, "http") {
            Some(Site::Http(h)) => Some(&**h),
            _ => None,
        };
        let shared = Arc::new(crate::http::Shared::succeed(
            fronts.len(),
            config,
            chains,
            old,
        ));
        names.push(PoolNames {
            name: shared.config.name.clone(),
            servers: shared.server_names(),
            plugins: shared.chains.labels(),
        });
        fronts.push(Front {
            index: fronts.len(),
            name: shared.config.name.clone(),
            limit: shared.config.client_connections,
            preconnect: false,
            site: Site::Http(shared),
            bound,
        });
    }
    let registry = match old {
        Some(g) => g.registry.succeed(names),
        None => Registry::new(names, workers),
    };
    Ok(Generation {
        id: old.map_or(0, |g| g.id + 1),
        fronts,
        registry: Arc::new(registry),
    })
}

/// Serves reload requests, one at a time.
pub struct Reloader {
    /// The config file, read again at each reload.
    conf: PathBuf,
    /// The generation served now. Held from reading the file until every worker runs the
    /// new one, so reloads never overlap.
    current: Mutex<Arc<Generation>>,
    publish: watch::Sender<Arc<Generation>>,
    /// The generation each worker runs.
    applied: Arc<[AtomicU64]>,
    views: Arc<ArcSwap<View>>,
}

impl Reloader {
    pub(super) fn new(conf: PathBuf, first: Generation, workers: usize) -> Reloader {
        let first = Arc::new(first);
        let views = Arc::new(ArcSwap::from_pointee(first.view()));
        Reloader {
            conf,
            publish: watch::Sender::new(Arc::clone(&first)),
            current: Mutex::new(first),
            applied: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            views,
        }
    }

    pub(super) fn pools(&self) -> usize {
        self.lock().fronts.len()
    }

    pub(super) fn views(&self) -> Arc<ArcSwap<View>> {
        Arc::clone(&self.views)
    }

    /// What a worker follows the generations with.
    pub(super) fn follow(&self) -> Follow {
        Follow {
            generations: self.publish.subscribe(),
            applied: Arc::clone(&self.applied),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Generation>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the config file again and, if all of it is good, serves it. A refused file
    /// changes nothing: the error (the file, line, pool and key at fault) is logged,
    /// counted and returned.
    pub fn reload(&self) -> Result<(), String> {
        let mut current = self.lock();
        let process = Arc::clone(&current.registry.process);
        let next = Config::load(&self.conf)
            .map_err(|e| e.to_string())
            .and_then(crate::plugin::load)
            .and_then(|loaded| build(loaded, Some(&current), self.applied.len()));
        let next = match next {
            Ok(next) => Arc::new(next),
            Err(e) => {
                process.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload failed: {e}; the running config is kept");
                return Err(e);
            }
        };
        self.publish.send_replace(Arc::clone(&next));
        let started = Instant::now();
        while self
            .applied
            .iter()
            .any(|a| a.load(Ordering::Acquire) < next.id)
        {
            if started.elapsed() > APPLY_WAIT {
                tracing::warn!("reload: a worker has not taken the new config over yet");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        settle(&current, &next);
        self.views.store(Arc::new(next.view()));
        *current = next;
        process.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(pools = current.fronts.len(), "config reloaded");
        Ok(())
    }

    /// Removes the socket files of the unix listeners served now (at exit).
    pub fn close(&self) {
        for f in &self.lock().fronts {
            if let Some(path) = f.bound.listener.socket_file() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Once every worker runs `next`: each memcached pool's new generation places requests from
/// now on, and servers and pools that left stop being probed.
fn settle(old: &Generation, next: &Generation) {
    for f in &next.fronts {
        if let Site::Memcache(p) = &f.site {
            p.commit();
        }
    }
    for f in &old.fronts {
        let Site::Memcache(p) = &f.site else { continue };
        let successor = next.fronts.iter().find_map(|n| match &n.site {
            Site::Memcache(q) if n.name == f.name => Some(q),
            _ => None,
        });
        match successor {
            Some(q) => p.retire_left(q),
            None => p.retire(),
        }
    }
}
