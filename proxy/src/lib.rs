//! Walnut, a programmable memcached proxy and a drop-in replacement for twemproxy.
//!
//! Where to start reading:
//! - [`config`]: the `nutcracker.yml` file, parsed and validated (the only module that knows YAML).
//! - [`hash`] and [`ring`]: where a key goes, exactly as twemproxy places it.
//! - [`memcache`]: the ASCII and meta protocol codecs, pure functions over bytes.
//! - [`session`]: one client connection: decode, route ([`session::dispatch`]), answer in order.
//! - [`upstream`]: a pool's servers and the pipelined connections to them.
//! - [`http`]: the HTTP reverse proxy (`protocol: http` pools).
//! - [`plugin`]: the wasmtime host for request filters (compiled once, one instance per worker).
//! - [`worker`]: threads, listeners and shutdown; [`admin`] and [`stats`]: the stats port.
//! - [`cli`]: the command line.

pub mod admin;
pub mod cli;
pub mod config;
pub mod hash;
pub mod http;
pub mod memcache;
pub mod plugin;
pub mod ring;
pub mod session;
pub mod stats;
pub mod timer;
pub mod upstream;
pub mod wake;
pub mod worker;

/// What `version` and `stats` report.
pub const VERSION_LINE: &str = concat!("1.6.0-walnut-", env!("CARGO_PKG_VERSION"));
