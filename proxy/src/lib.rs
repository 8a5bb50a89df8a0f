//! Walnut, a programmable memcached and HTTP proxy, and a drop-in replacement for twemproxy.
//!
//! Where to start reading (dependencies run down this list, never up):
//! - [`server`]: listeners, one accept loop for both protocols, worker threads and shutdown;
//!   [`process`]: signals, daemon, pid file, logs, the open-file limit and giving freed memory
//!   back (every `unsafe` is there), when by [`trim`]'s rule; [`shutdown`].
//! - [`session`]: one memcached client connection: decode, filter, route, answer in order.
//! - [`http`]: the HTTP reverse proxy (`protocol: http` pools).
//! - [`pool`]: a memcached pool's servers: where a key goes ([`pool::WorkerPool::place`]), the
//!   pipelined server connections, health and ejection.
//! - [`plugin`]: the wasmtime host for request filters (compiled once, one instance per worker).
//! - [`memcache`]: the ASCII and meta protocol, pure functions over bytes.
//! - [`config`]: the `nutcracker.yml` file, parsed and validated (the only module that knows YAML).
//! - [`hash`] and [`ring`]: where a key goes, exactly as twemproxy places it.
//! - [`net`], [`timer`], [`wake`]: sockets, per-connection timers and lock-free wake-ups;
//!   [`stats`]: per-worker counters and histograms; [`admin`]: the stats port and the admin
//!   HTTP listener (metrics, status page, route explanation); [`reopen`]: log files reopened
//!   on SIGUSR1; [`cli`]: the command line.
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod current;
pub mod hash;
pub mod http;
pub mod memcache;
pub mod net;
pub mod plugin;
pub mod pool;
pub mod process;
pub mod reopen;
pub mod ring;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stats;
pub mod timer;
pub mod trim;
pub mod wake;

/// The version walnut gives as memcached's (`version`, `stats`): the memcached protocol level
/// it speaks, then its own version, so clients that parse a memcached version keep working.
macro_rules! memcached_version {
    () => {
        concat!("1.6.0-walnut-", env!("CARGO_PKG_VERSION"))
    };
}
pub(crate) use memcached_version;

/// What `version` and `stats` report.
pub const VERSION_LINE: &str = memcached_version!();
