//! Where a key goes. Every request is placed here, and only here: one-key requests, each key of
//! a multi-key retrieval, and requests re-sent after their server was ejected, so a key a
//! plugin places is placed the same way before, during and after a failover. The route
//! explanation (`explain.rs`) runs this same function, watching it with a [`PlaceTrace`].

use super::{PoolShared, WorkerPool};
use crate::memcache::lines::{NO_SERVER, PLUGIN_FAILED};
use crate::plugin::chain::{Placement, Trace};
use crate::plugin::{Hook, PoolPlugins};
use crate::ring::Ring;
use crate::stats::PoolStats;

/// Watches a placement step by step: each plugin's decision, a server a plugin named, and the
/// ring's part. `()` watches nothing and costs nothing, on the request path.
pub trait PlaceTrace: Trace {
    /// The plugins named server `name`: its index if the pool has it, and whether it is
    /// ejected (then the ring decides).
    fn named(&mut self, name: &str, server: Option<usize>, ejected: bool) {
        let _ = (name, server, ejected);
    }

    /// The ring places `bytes` (the key, or the bytes a plugin chose to hash).
    fn ring(&mut self, ring: &Ring, bytes: &[u8]) {
        let _ = (ring, bytes);
    }
}

impl PlaceTrace for () {}

/// Why a key has no server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplaced {
    /// No server is in the ring.
    NoServer,
    /// A `fail_closed` plugin failed while placing it.
    PluginFailed,
}

impl Unplaced {
    /// The reply the request gets.
    pub fn line(self) -> &'static [u8] {
        match self {
            Unplaced::NoServer => NO_SERVER,
            Unplaced::PluginFailed => PLUGIN_FAILED,
        }
    }
}

impl WorkerPool {
    /// The server for `key` (as sent to the server, after any plugin rewrote it): the plugins'
    /// choice when they make one (a named server only while it is in the ring), else the
    /// pool's ring.
    pub fn place(&self, key: &[u8]) -> Result<usize, Unplaced> {
        let mut plugins = self.plugins.as_ref().map(|p| p.borrow_mut());
        self.shared
            .place_traced(plugins.as_deref_mut(), key, &self.stats, &mut ())
    }
}

impl PoolShared {
    /// `WorkerPool::place` with the plugin instances `plugins` (a worker's, or the admin
    /// listener's own), telling `trace` each step.
    pub fn place_traced(
        &self,
        plugins: Option<&mut PoolPlugins>,
        key: &[u8],
        stats: &PoolStats,
        trace: &mut impl PlaceTrace,
    ) -> Result<usize, Unplaced> {
        let cfg = &self.config;
        let ring = self.ring.load();
        let on_ring = |bytes: &[u8]| {
            ring.locate(cfg.hash, cfg.hash_tag, bytes)
                .ok_or(Unplaced::NoServer)
        };
        if let Some(plugins) = plugins
            && plugins.may(Hook::Hash, key)
        {
            match plugins.place_traced(key, stats, trace) {
                Placement::Ring => {}
                Placement::Failed => return Err(Unplaced::PluginFailed),
                Placement::Hash(bytes) => {
                    trace.ring(&ring, &bytes);
                    return on_ring(&bytes);
                }
                Placement::Server(name) => {
                    let named = self.names.iter().position(|n| *n == name);
                    let ejected = named.is_some_and(|i| self.health[i].is_ejected());
                    trace.named(&name, named, ejected);
                    if let Some(i) = named
                        && !ejected
                    {
                        return Ok(i);
                    }
                }
            }
        }
        trace.ring(&ring, key);
        on_ring(key)
    }
}
