//! Server health shared by every worker: failures counted as twemproxy counts them, ejection
//! that rebuilds the ring at once, and a background probe that lets a server rejoin only once it
//! answers again (nutcracker re-adds blindly and lets client requests pay for the retry).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::PoolShared;
use crate::net::Stream;
use crate::stats::PoolStats;

/// One server's standing in its pool.
#[derive(Debug, Default)]
pub struct Health {
    /// Failures since the last reply.
    failures: AtomicU32,
    ejected: AtomicBool,
    /// Counts the failures counted so far. A connection notes it when it starts; when it
    /// fails, its failure counts only if no other was counted since, so one server event seen
    /// by every worker's connection counts once.
    epoch: AtomicU64,
    /// Ejections and rejoins so far, and when the last one happened (µs since the epoch, 0:
    /// never), for the admin listener. Written only on those rare events.
    ejections: AtomicU64,
    rejoins: AtomicU64,
    changed_at_us: AtomicU64,
    /// A reload took the server out of the config: its probe stops.
    retired: AtomicBool,
}

impl Health {
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// The server left the config in a reload.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// What a connection starting now notes (see `PoolShared::record_failure`).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// (ejections, rejoins, µs since the epoch of the last of them or 0).
    pub fn history(&self) -> (u64, u64, u64) {
        (
            self.ejections.load(Ordering::Relaxed),
            self.rejoins.load(Ordering::Relaxed),
            self.changed_at_us.load(Ordering::Relaxed),
        )
    }
}

/// Where a server stands after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still in the ring: requests to it fail with the error.
    InRing,
    /// Out of the ring already.
    Ejected,
    /// Ejected by this very failure: the caller starts the probe.
    EjectedNow,
}

/// Serialises ring rebuilds so two ejections at once both end up in the ring.
#[derive(Debug, Default)]
pub struct RingLock(Mutex<()>);

impl PoolShared {
    /// A reply came from `server`: its failure count starts again.
    pub fn record_success(&self, server: usize) {
        let h = &self.health[server];
        // A read first, so the common case writes nothing to the shared cache line.
        if h.failures.load(Ordering::Relaxed) != 0 {
            h.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connection to `server`, started at failure epoch `since` (`Health::epoch`), failed or
    /// closed with requests in flight: counts one failure, unless another connection's failure
    /// was counted since this one started (the same event, seen by another worker), and ejects
    /// the server at `server_failure_limit`. Once it is out of the ring, requests that never
    /// reached it may go to their keys' new owners.
    pub fn record_failure(
        &self,
        server: usize,
        since: u64,
        stats: &PoolStats,
        reason: &str,
    ) -> Standing {
        let cfg = &self.config;
        if !cfg.auto_eject_hosts {
            return Standing::InRing;
        }
        let h = &self.health[server];
        if h.is_ejected() {
            return Standing::Ejected;
        }
        if h.epoch
            .compare_exchange(since, since + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Already counted: this connection failed with the others.
            return if h.is_ejected() {
                Standing::Ejected
            } else {
                Standing::InRing
            };
        }
        let failures = h.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < cfg.server_failure_limit.max(1) {
            return Standing::InRing;
        }
        if h.ejected
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Standing::Ejected;
        }
        h.failures.store(0, Ordering::Relaxed);
        self.rebuild_ring();
        let now_us = now_us();
        stats.pool.server_ejects.incr();
        stats.servers[server].server_ejected_at.set(now_us);
        h.ejections.fetch_add(1, Ordering::Relaxed);
        h.changed_at_us.store(now_us, Ordering::Relaxed);
        tracing::warn!(
            pool = %cfg.name,
            server = %self.names[server],
            reason,
            failures,
            retry_ms = cfg.server_retry_timeout.as_millis() as u64,
            "server ejected"
        );
        Standing::EjectedNow
    }

    /// Rebuilds the ring from the servers not ejected, as nutcracker rebuilds its continuum;
    /// and the ring of the pool's newest generation, when a reload made one since.
    pub fn rebuild_ring(&self) {
        self.rebuild_own_ring();
        if let Some(latest) = self.lineage.latest()
            && !std::ptr::eq(&*latest, self)
        {
            latest.rebuild_own_ring();
        }
    }

    fn rebuild_own_ring(&self) {
        let _guard = self.ring_lock.0.lock().unwrap_or_else(|e| e.into_inner());
        self.ring.store(std::sync::Arc::new(self.build_ring()));
    }

    /// Brings `server` back into the ring after a successful probe.
    fn rejoin(&self, server: usize) {
        let h = &self.health[server];
        h.failures.store(0, Ordering::Relaxed);
        h.ejected.store(false, Ordering::Release);
        h.rejoins.fetch_add(1, Ordering::Relaxed);
        h.changed_at_us.store(now_us(), Ordering::Relaxed);
        self.rebuild_ring();
        tracing::warn!(pool = %self.config.name, server = %self.names[server], "server rejoined after a successful probe");
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Waits `server_retry_timeout`, then probes (connect, `version`) until the server answers,
/// then puts it back in the ring. Runs on the worker that ejected the server.
pub async fn probe_until_alive(pool: std::sync::Arc<PoolShared>, server: usize) {
    let retry = pool
        .config
        .server_retry_timeout
        .max(Duration::from_millis(1));
    let limit = pool.config.timeout.unwrap_or(Duration::from_secs(1));
    loop {
        tokio::time::sleep(retry).await;
        if pool.health[server].is_retired() {
            return;
        }
        match tokio::time::timeout(limit, probe(&pool, server, limit)).await {
            Ok(Ok(())) => {
                pool.rejoin(server);
                return;
            }
            Ok(Err(e)) => {
                tracing::info!(pool = %pool.config.name, server = %pool.names[server], "probe failed: {e}")
            }
            Err(_) => {
                tracing::info!(pool = %pool.config.name, server = %pool.names[server], "probe timed out")
            }
        }
    }
}

/// Connects to `server` as a serving connection would, asks `version` and checks the answer.
async fn probe(pool: &PoolShared, server: usize, limit: Duration) -> std::io::Result<()> {
    let addr = &pool.config.servers[server].addr;
    let mut s = Stream::connect(addr, pool.config.tcpkeepalive, limit).await?;
    s.write_all(b"version\r\n").await?;
    let mut buf = [0u8; 256];
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        if buf[..have].contains(&b'\n') || have == buf.len() {
            break;
        }
    }
    if buf.starts_with(b"VERSION ") {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected reply to version"))
    }
}
