//! Where a key goes. Every request is placed here, and only here: one-key requests, each key of
//! a multi-key retrieval, and requests re-sent after their server was ejected, so a key a
//! plugin places is placed the same way before, during and after a failover.

use super::WorkerPool;
use crate::plugin::chain::Placement;

impl WorkerPool {
    /// The server for `key` (as sent to the server, after any plugin rewrote it): the plugins'
    /// choice when they make one (a named server only while it is in the ring), else the
    /// pool's ring. `None` when no server is in the ring.
    pub fn place(&self, key: &[u8]) -> Option<usize> {
        let cfg = &self.shared.config;
        let ring = self.shared.ring.load();
        let chosen = self.plugins.as_ref().and_then(|plugins| {
            let mut plugins = plugins.borrow_mut();
            if !plugins.places(key) {
                return None;
            }
            match plugins.place(key, &self.stats) {
                Placement::Ring => None,
                Placement::Hash(bytes) => Some(ring.locate(cfg.hash, cfg.hash_tag, &bytes)),
                Placement::Server(name) => {
                    let named = self.shared.names.iter().position(|n| *n == name);
                    named
                        .filter(|&i| !self.shared.health[i].is_ejected())
                        .map(Some)
                }
            }
        });
        chosen.unwrap_or_else(|| ring.locate(cfg.hash, cfg.hash_tag, key))
    }
}
