//! The configuration: a `nutcracker.yml` (every key nutcracker 0.5.0 accepts) plus walnut's own keys.
//! The only module that knows YAML. Errors name the file, the line, the pool and the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hash::HashKind;
use crate::ring::Distribution;

pub use depth::MAX_DEPTH;
pub use file::MAX_SIZE;
pub use http::{
    HttpPool, Location, LocationAction, LocationMatch, LocationRegex, MAX_SERVERS, RegexGaveUp,
    Upstream, UpstreamServer, is_redirect,
};
pub use template::{KeySource, KeyTemplate};

mod depth;
mod file;
mod http;
mod lines;
mod marks;
mod plugins;
mod raw;
mod template;
#[cfg(test)]
mod tests;
mod validate;

/// A whole config file: its pools, in file order.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub pools: Vec<Pool>,
    /// `protocol: http` pools, in file order.
    pub http: Vec<HttpPool>,
}

/// Where a pool listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `host:port`, resolved at load time (`host` kept for messages).
    Tcp {
        host: String,
        port: u16,
        addr: std::net::SocketAddr,
    },
    /// `/path/to.sock [0666]`; `mode` is `None` when absent or 0 (nutcracker then leaves the
    /// socket's mode as created).
    Unix { path: PathBuf, mode: Option<u32> },
}

/// A backend address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// `host` exactly as written before the port; `addr` resolved at load time.
    Tcp {
        host: String,
        port: u16,
        addr: std::net::SocketAddr,
    },
    Unix {
        path: PathBuf,
    },
}

/// One `servers:` entry: `host:port:weight [name]` or `/path.sock:weight [name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub addr: ServerAddr,
    pub weight: u32,
    /// The optional name after the weight.
    pub name: Option<String>,
    /// The entry as written, less the weight and name (`127.0.0.1:11211`), nutcracker's `pname` stem.
    pub addr_text: String,
    /// 1-based line of the entry in the file.
    pub line: usize,
}

/// One pool (a listener and its servers).
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// 1-based line of the pool's name in the file.
    pub line: usize,
    pub listen: Listen,
    pub hash: HashKind,
    /// The two delimiter bytes of `hash_tag`, e.g. `{}`.
    pub hash_tag: Option<[u8; 2]>,
    pub distribution: Distribution,
    /// Server reply timeout; `None` waits forever (nutcracker's default, and its reading of 0).
    pub timeout: Option<Duration>,
    pub backlog: u32,
    pub preconnect: bool,
    pub server_connections: u32,
    pub auto_eject_hosts: bool,
    pub server_retry_timeout: Duration,
    pub server_failure_limit: u32,
    /// Maximum client connections; 0 means unlimited. nutcracker 0.5.0 reads this key but never
    /// applies it: its pools always take any number of clients.
    pub client_connections: u32,
    pub tcpkeepalive: bool,
    /// Largest value accepted from a client (walnut key; memcached's `-I`, default 1 MiB).
    pub item_size_max: usize,
    /// The reply bytes walnut holds for one client connection before it stops reading its
    /// requests (walnut key; default 64 MiB, at least twice `item_size_max`).
    pub client_buffer: usize,
    pub servers: Vec<ServerSpec>,
    /// walnut: plugins run for every request of the pool.
    pub plugins: Vec<PluginSpec>,
    /// walnut: per key-prefix plugin chains.
    pub routes: Vec<RouteSpec>,
}

/// What happens to a request whose plugin fails (traps, runs out of time or memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The request fails: `SERVER_ERROR plugin failed`.
    #[default]
    FailClosed,
    /// The request goes on as if the plugin were absent.
    FailOpen,
}

/// One plugin of a pool or route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// The `.wasm` file, relative paths taken from the config file's folder.
    pub path: PathBuf,
    /// The plugin's `config:` block, as JSON for the plugin to deserialize.
    pub config_json: String,
    pub on_error: OnError,
    /// How long one hook call may run (`time_budget_ms`, default 10).
    pub time_budget: Duration,
    /// The most linear memory the plugin may have (`memory_max_mb`, default 16).
    pub memory_max: usize,
    /// 1-based line of the entry.
    pub line: usize,
}

/// A route: keys starting with `prefix` also run `plugins` (the longest prefix wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: String,
    pub plugins: Vec<PluginSpec>,
    pub line: usize,
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `file:line: pool "name": what`
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl Config {
    /// Reads (at most `MAX_SIZE` bytes) and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = file::read(path)?;
        Config::parse(&text, path)
    }

    /// `parse`, taking hosts only as IP addresses or `localhost` and never asking the system's
    /// resolver: for checking arbitrary text (the fuzzer) without sending DNS queries.
    pub fn parse_offline(text: &str, path: &Path) -> Result<Config, ConfigError> {
        validate::offline(|| Config::parse(text, path))
    }

    /// Parses and validates `text`, read from `path` (used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // libyaml places an error met at the end of the text on the line after the last one.
        let last = lines_in(text);
        let invalid = |err: raw::Located| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: err.line.clamp(1, last),
            message: err.message,
        };
        if let Some(line) = depth::too_deep(text) {
            return Err(invalid(raw::Located {
                line,
                message: format!(
                    "[ ] and {{ }} nest more than {MAX_DEPTH} deep here; walnut refuses deeper nesting"
                ),
            }));
        }
        let doc = raw::read(text).map_err(invalid)?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let (pools, http) = validate::pools(&doc, base_dir).map_err(invalid)?;
        Ok(Config {
            path: path.to_path_buf(),
            pools,
            http,
        })
    }
}

/// How many lines `text` has, as libyaml counts line breaks (a lone CR, NEL, LS and PS too);
/// a break at the very end starts no line.
fn lines_in(text: &str) -> usize {
    let mut breaks = 0;
    let mut ends_broken = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        ends_broken = match c {
            '\r' if chars.peek() == Some(&'\n') => continue,
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => true,
            _ => false,
        };
        breaks += usize::from(ends_broken);
    }
    (breaks + usize::from(!ends_broken)).max(1)
}

impl ServerSpec {
    /// The name twemproxy hashes this server under (ketama points, modula slots) and refuses
    /// twice in a pool: the configured name if any; else the address as written, without the
    /// port when it is 11211 (libmemcached's habit); a unix socket keeps the `:` before its
    /// weight.
    pub fn ring_name(&self) -> String {
        let port = match &self.addr {
            ServerAddr::Tcp { port, .. } => Some(*port),
            ServerAddr::Unix { .. } => None,
        };
        crate::ring::ring_name(&self.addr_text, port, self.name.as_deref())
    }
}
