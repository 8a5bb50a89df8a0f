//! Turns pools read as text into checked `Pool`s: nutcracker 0.5.0's rules, defaults and refusals.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{Doc, Located, RawPool, RawValue};
use super::{HttpPool, Listen, Pool, ServerAddr, ServerSpec};
use crate::hash::HashKind;
use crate::ring::Distribution;

// nutcracker's defaults (src/nc_conf.h). An unset `timeout` waits forever.
const DEFAULT_BACKLOG: u32 = 512;
const DEFAULT_SERVER_CONNECTIONS: u32 = 1;
const DEFAULT_SERVER_RETRY_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_SERVER_FAILURE_LIMIT: u32 = 2;

/// memcached's own default item size limit (`-I 1m`).
const DEFAULT_ITEM_SIZE_MAX: usize = 1 << 20;
const MIN_ITEM_SIZE_MAX: usize = 1024;
/// memcached refuses `-I` above 1 GiB; so does walnut.
const MAX_ITEM_SIZE_MAX: usize = 1 << 30;

/// The reply bytes walnut holds for one client connection, by default.
const DEFAULT_CLIENT_BUFFER: usize = 64 << 20;

/// nutcracker reads every number into a C `int` and refuses negatives.
const MAX_NUMBER: u32 = i32::MAX as u32;
/// `sun_path` holds 108 bytes, the last one a NUL.
const MAX_UNIX_PATH: usize = 107;

/// The keys a pool may have: nutcracker 0.5.0's, then walnut's own.
const KEYS: [&str; 22] = [
    "protocol",
    "listen",
    "hash",
    "hash_tag",
    "distribution",
    "timeout",
    "backlog",
    "client_connections",
    "redis",
    "redis_auth",
    "redis_db",
    "preconnect",
    "auto_eject_hosts",
    "server_connections",
    "server_retry_timeout",
    "server_failure_limit",
    "tcpkeepalive",
    "servers",
    "item_size_max",
    "client_buffer",
    "plugins",
    "routes",
];

const SERVER_FORMAT: &str = "host:port:weight [name] or /path.sock:weight [name]";

/// Checks every pool, in file order, and the pools against each other; `protocol: http` pools
/// are checked by `http` and returned apart.
pub(super) fn pools(
    doc: &Doc,
    base_dir: &std::path::Path,
) -> Result<(Vec<Pool>, Vec<HttpPool>), Located> {
    if doc.pools.is_empty() {
        return Err(Located {
            line: 1,
            message: "no pools: expected a pool name followed by its indented keys (listen:, servers:, ...)"
                .to_owned(),
        });
    }
    let mut pools: Vec<Pool> = Vec::with_capacity(doc.pools.len());
    let mut http: Vec<HttpPool> = Vec::new();
    for raw in &doc.pools {
        let at = Scope { pool: &raw.name };
        let taken = pools
            .iter()
            .map(|p| (&p.name, p.line, &p.listen))
            .chain(http.iter().map(|p| (&p.name, p.line, &p.listen)));
        if let Some((_, line, _)) = taken.clone().find(|p| *p.0 == raw.name) {
            return Err(at.err(
                raw.line,
                format!("a pool of this name is already on line {line}"),
            ));
        }
        let is_http = super::http::is_http(raw)?;
        let (listen, checked) = if is_http {
            let pool = super::http::pool(raw, base_dir)?;
            (pool.listen.clone(), Err(pool))
        } else {
            let pool = pool(raw, base_dir)?;
            (pool.listen.clone(), Ok(pool))
        };
        // nutcracker compares the text; two texts for one address would fail later, at bind.
        if let Some((name, other_line, _)) = taken.clone().find(|p| same_listener(p.2, &listen)) {
            let (text, line) = raw.text_of("listen").unwrap_or(("", raw.line));
            let message = format!(
                "listen {text:?} is the address pool {name:?} listens on (line {other_line})"
            );
            return Err(at.err(line, message));
        }
        match checked {
            Ok(pool) => pools.push(pool),
            Err(pool) => http.push(pool),
        }
    }
    Ok((pools, http))
}

fn same_listener(a: &Listen, b: &Listen) -> bool {
    match (a, b) {
        (Listen::Tcp { addr: a, .. }, Listen::Tcp { addr: b, .. }) => a == b,
        (Listen::Unix { path: a, .. }, Listen::Unix { path: b, .. }) => a == b,
        _ => false,
    }
}

impl RawPool {
    /// The text and line of `key`, when it has a plain value.
    fn text_of(&self, key: &str) -> Option<(&str, usize)> {
        self.keys
            .iter()
            .find(|k| k.name == key)
            .and_then(|k| match &k.value {
                RawValue::Text(text) => Some((text.as_str(), k.line)),
                RawValue::List(_) | RawValue::Yaml(_) => None,
            })
    }
}

/// Messages about one pool start with its name.
struct Scope<'a> {
    pool: &'a str,
}

impl Scope<'_> {
    fn err(&self, line: usize, what: impl std::fmt::Display) -> Located {
        Located {
            line,
            message: format!("pool {:?}: {what}", self.pool),
        }
    }
}

fn pool(raw: &RawPool, base_dir: &std::path::Path) -> Result<Pool, Located> {
    let at = Scope { pool: &raw.name };
    if raw.name.is_empty() {
        return Err(at.err(raw.line, "a pool needs a name"));
    }
    // Checked before anything else so that a Redis pool gets this answer, not a lesser one.
    if let Some(("true", line)) = raw.text_of("redis") {
        return Err(at.err(
            line,
            "redis: true: Redis pools are not supported; walnut proxies memcached only",
        ));
    }

    let mut listen = None;
    let mut hash = HashKind::Fnv1a64;
    let mut hash_tag = None;
    let mut distribution = Distribution::Ketama;
    let mut timeout = None;
    let mut backlog = DEFAULT_BACKLOG;
    let mut preconnect = false;
    let mut server_connections = DEFAULT_SERVER_CONNECTIONS;
    let mut auto_eject_hosts = false;
    let mut server_retry_timeout = Duration::from_millis(DEFAULT_SERVER_RETRY_TIMEOUT_MS);
    let mut server_failure_limit = DEFAULT_SERVER_FAILURE_LIMIT;
    let mut client_connections = 0;
    let mut tcpkeepalive = false;
    let mut item_size_max = DEFAULT_ITEM_SIZE_MAX;
    let mut client_buffer = None;
    let mut servers = None;
    let mut redis_auth_line = None;
    let mut plugins = Vec::new();
    let mut routes = Vec::new();

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for key in &raw.keys {
        let name = key.name.as_str();
        if !KEYS.contains(&name) {
            return Err(at.err(key.line, format_args!("unknown key {name:?}")));
        }
        if let Some(first) = seen.insert(name, key.line) {
            return Err(at.err(
                key.line,
                format_args!("{name} is given twice (first on line {first})"),
            ));
        }
        let text = match &key.value {
            RawValue::List(items) => {
                servers = Some(server_list(&at, key.line, items)?);
                continue;
            }
            RawValue::Yaml(value) => {
                let fail = |what: String| at.err(key.line, what);
                if name == "plugins" {
                    plugins =
                        super::plugins::plugin_list(value, key.line, base_dir).map_err(fail)?;
                } else {
                    routes = super::plugins::route_list(value, key.line, base_dir).map_err(fail)?;
                }
                continue;
            }
            RawValue::Text(text) => text.as_str(),
        };
        let fail = |what: String| at.err(key.line, what);
        if text.is_empty() {
            return Err(fail(format!("{name} has no value")));
        }
        match name {
            "listen" => {
                listen =
                    Some(parse_listen(text).map_err(|why| fail(format!("listen {text:?} {why}")))?)
            }
            "hash" => hash = named(name, text, &HashKind::ALL).map_err(fail)?,
            "hash_tag" => match text.as_bytes() {
                &[open, close] => hash_tag = Some([open, close]),
                _ => {
                    return Err(fail(format!(
                        "hash_tag {text:?} is not exactly two bytes, e.g. \"{{}}\""
                    )));
                }
            },
            "distribution" => distribution = named(name, text, &Distribution::ALL).map_err(fail)?,
            "timeout" => {
                let ms = number(name, text).map_err(fail)?;
                // nutcracker arms no timer for a timeout of 0: it waits forever, as when unset.
                timeout = (ms > 0).then(|| Duration::from_millis(ms.into()));
            }
            "backlog" => backlog = number(name, text).map_err(fail)?,
            "client_connections" => client_connections = number(name, text).map_err(fail)?,
            "redis" | "preconnect" | "auto_eject_hosts" | "tcpkeepalive" => {
                let value = flag(name, text).map_err(fail)?;
                match name {
                    "preconnect" => preconnect = value,
                    "auto_eject_hosts" => auto_eject_hosts = value,
                    "tcpkeepalive" => tcpkeepalive = value,
                    _ => {} // redis: only `false` gets here
                }
            }
            "redis_auth" => redis_auth_line = Some(key.line),
            // Checked by `http::is_http`: only memcache gets here.
            "protocol" => {}
            // Accepted as nutcracker does, and meaningless without Redis.
            "redis_db" => _ = number(name, text).map_err(fail)?,
            "server_connections" => {
                server_connections = number(name, text).map_err(fail)?;
                if server_connections == 0 {
                    return Err(fail("server_connections cannot be 0".to_owned()));
                }
            }
            "server_retry_timeout" => {
                server_retry_timeout =
                    Duration::from_millis(number(name, text).map_err(fail)?.into());
            }
            "server_failure_limit" => server_failure_limit = number(name, text).map_err(fail)?,
            "item_size_max" => {
                let bytes = number(name, text).map_err(fail)? as usize;
                if !(MIN_ITEM_SIZE_MAX..=MAX_ITEM_SIZE_MAX).contains(&bytes) {
                    let range =
                        format!("between {MIN_ITEM_SIZE_MAX} and {MAX_ITEM_SIZE_MAX} bytes");
                    return Err(fail(format!("item_size_max {bytes} is not {range}")));
                }
                item_size_max = bytes;
            }
            "client_buffer" => {
                client_buffer = Some((number(name, text).map_err(fail)? as usize, key.line));
            }
            // Only `servers` is left, and reading hands it over as a list.
            _ => return Err(fail(format!("{name} must be a list"))),
        }
    }

    if let Some(line) = redis_auth_line {
        return Err(at.err(line, "redis_auth is only valid for a redis pool"));
    }
    // A client's buffer holds at least two of the largest values, so one reply always fits
    // while another is on its way.
    let client_buffer = match client_buffer {
        Some((bytes, line)) if bytes < 2 * item_size_max => {
            return Err(at.err(
                line,
                format_args!(
                    "client_buffer {bytes} is less than twice item_size_max ({item_size_max})"
                ),
            ));
        }
        Some((bytes, _)) => bytes,
        None => DEFAULT_CLIENT_BUFFER.max(2 * item_size_max),
    };
    let Some(listen) = listen else {
        return Err(at.err(raw.line, "missing listen (host:port or /path.sock [mode])"));
    };
    let Some(servers) = servers else {
        return Err(at.err(
            raw.line,
            "missing servers (a list of host:port:weight [name])",
        ));
    };
    Ok(Pool {
        name: raw.name.clone(),
        line: raw.line,
        listen,
        hash,
        hash_tag,
        distribution,
        timeout,
        backlog,
        preconnect,
        server_connections,
        auto_eject_hosts,
        server_retry_timeout,
        server_failure_limit,
        client_connections,
        tcpkeepalive,
        item_size_max,
        client_buffer,
        plugins,
        routes,
        servers,
    })
}

/// A whole number as nutcracker reads it: digits only (no sign, no spaces), within a C `int`.
fn number(key: &str, text: &str) -> Result<u32, String> {
    digits(text)
        .filter(|&n| n <= MAX_NUMBER)
        .ok_or_else(|| format!("{key} {text:?} is not a whole number from 0 to {MAX_NUMBER}"))
}

/// Digits only; `None` for anything else or for a number too large for a `u32`.
fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// nutcracker takes exactly `true` or `false`, nothing else YAML would call a boolean.
fn flag(key: &str, text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key} {text:?} is not true or false")),
    }
}

/// One of a closed list of names (`hash`, `distribution`).
fn named<T: Copy>(key: &str, text: &str, all: &[(&str, T)]) -> Result<T, String> {
    all.iter()
        .find(|(name, _)| *name == text)
        .map(|&(_, value)| value)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|(name, _)| *name).collect();
            format!("{key} {text:?} is not one of {}", names.join(", "))
        })
}

/// `host:port`, or an absolute unix socket path with an optional octal mode after a space.
pub(super) fn parse_listen(text: &str) -> Result<Listen, String> {
    if text.starts_with('/') {
        // As nutcracker: the mode is whatever follows the last space.
        let (path, mode) = match text.rsplit_once(' ') {
            Some((path, mode)) => (
                path,
                octal_mode(mode)
                    .ok_or("has an invalid permission (expected octal, at most 0777)")?,
            ),
            None => (text, 0),
        };
        if path.len() > MAX_UNIX_PATH {
            return Err(format!(
                "has a socket path longer than {MAX_UNIX_PATH} bytes"
            ));
        }
        // nutcracker leaves the socket's mode alone when it is 0.
        return Ok(Listen::Unix {
            path: PathBuf::from(path),
            mode: (mode != 0).then_some(mode),
        });
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("is not host:port or /path.sock [mode]".to_owned());
    };
    let port = tcp_port(port).ok_or("has an invalid port (expected 1 to 65535)")?;
    let addr = resolve(host, port)?;
    Ok(Listen::Tcp {
        host: host.to_owned(),
        port,
        addr,
    })
}

/// The mode as C's `strtol(text, NULL, 8)` reads it, which is what nutcracker does: leading
/// octal digits, anything after them ignored, none at all meaning 0; `None` above 0777.
fn octal_mode(text: &str) -> Option<u32> {
    let text = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, text) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut mode = 0u32;
    for digit in text.bytes().take_while(|b| (b'0'..=b'7').contains(b)) {
        mode = mode * 8 + u32::from(digit - b'0');
        if mode > 0o777 {
            return None;
        }
    }
    // A negative mode turns into a huge `mode_t`, which nutcracker refuses.
    (!negative || mode == 0).then_some(mode)
}

fn tcp_port(text: &str) -> Option<u16> {
    digits(text)
        .filter(|&port| port > 0)
        .and_then(|port| u16::try_from(port).ok())
}

thread_local! {
    /// Set while `offline` runs: host names are then not looked up.
    static OFFLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `check` with host names taken only as IP addresses or `localhost`, never asking the
/// system's resolver (so checking arbitrary text sends no DNS query).
pub(super) fn offline<T>(check: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            OFFLINE.set(self.0);
        }
    }
    let _reset = Reset(OFFLINE.replace(true));
    check()
}

/// The first address `host` resolves to, as nutcracker takes the first from getaddrinfo.
pub(super) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let cannot = |why: String| format!("cannot be resolved: {why}");
    if OFFLINE.get() {
        let ip = match bare {
            "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
            _ => bare.parse().ok(),
        };
        return ip
            .map(|ip| SocketAddr::new(ip, port))
            .ok_or_else(|| cannot(format!("{host:?} is not looked up in an offline check")));
    }
    (bare, port)
        .to_socket_addrs()
        .map_err(|err| cannot(err.to_string()))?
        .next()
        .ok_or_else(|| cannot(format!("{host:?} has no address")))
}

/// The `servers:` entries of one pool; `line` is the key's.
fn server_list(
    at: &Scope,
    line: usize,
    items: &[(String, usize)],
) -> Result<Vec<ServerSpec>, Located> {
    if items.is_empty() {
        return Err(at.err(line, "servers: the list is empty"));
    }
    let mut servers = Vec::with_capacity(items.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (text, line) in items {
        let fail = |why: &str| at.err(*line, format_args!("servers: {text:?} {why}"));
        let server = parse_server(text, *line).map_err(|why| fail(&why))?;
        // nutcracker's only duplicate rule: two servers may not hash under the same name.
        if let Some(first) = names.insert(server.ring_name(), *line) {
            let why = format!(
                "has the same name {:?} as the server on line {first} (add a distinct name after the weight)",
                server.ring_name()
            );
            return Err(fail(&why));
        }
        servers.push(server);
    }
    Ok(servers)
}

/// `host:port:weight [name]` or `/path.sock:weight [name]`, read from the end as nutcracker
/// does: the name is what follows the last space, the weight what follows the last colon.
fn parse_server(text: &str, line: usize) -> Result<ServerSpec, String> {
    let bad_format = || format!("is not {SERVER_FORMAT}");
    let (rest, name) = match text.rsplit_once(' ') {
        Some((rest, name)) => (rest, Some(name.to_owned())),
        None => (text, None),
    };
    let (addr_text, weight) = rest.rsplit_once(':').ok_or_else(bad_format)?;
    let unix = text.starts_with('/');
    let tcp = if unix {
        // nutcracker would read a colon left in the path as a port, and refuse it.
        if addr_text.contains(':') {
            return Err(bad_format());
        }
        None
    } else {
        Some(addr_text.rsplit_once(':').ok_or_else(bad_format)?)
    };
    let weight = digits(weight).filter(|&w| w <= MAX_NUMBER).ok_or_else(|| {
        format!("has an invalid weight (expected a whole number from 1 to {MAX_NUMBER})")
    })?;
    if weight == 0 {
        return Err("has weight 0 (expected 1 or more)".to_owned());
    }
    let addr = match tcp {
        None => ServerAddr::Unix {
            path: PathBuf::from(addr_text),
        },
        Some((host, port)) => {
            let port = tcp_port(port).ok_or("has an invalid port (expected 1 to 65535)")?;
            // nutcracker resolves a backend when it connects; walnut needs the address now.
            let addr = resolve(host, port)?;
            ServerAddr::Tcp {
                host: host.to_owned(),
                port,
                addr,
            }
        }
    };
    Ok(ServerSpec {
        addr,
        weight,
        name,
        addr_text: addr_text.to_owned(),
        line,
    })
}
