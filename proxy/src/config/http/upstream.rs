//! `upstreams:` entries: nginx's `upstream NAME { server host:port weight=N ...; keepalive N;
//! hash KEY consistent; }` as YAML.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::template::KeyTemplate;

/// nginx's defaults for a `server` line.
const DEFAULT_MAX_FAILS: u32 = 1;
const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Servers of one upstream (a request remembers the ones it tried in a 64-bit set).
pub const MAX_SERVERS: usize = 64;

/// A named group of servers (nginx's `upstream NAME { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    /// Idle connections kept per server and worker; 0 (nginx's default, without a
    /// `keepalive` directive): a connection serves one request.
    pub keepalive: usize,
    /// `hash:` key (nginx's `hash $key consistent`), e.g. `$request_uri`.
    pub hash: Option<KeyTemplate>,
}

/// One `host:port weight=N max_fails=N fail_timeout=Ns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// `host:port` as written (nginx's consistent hash places the server by this text).
    pub text: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Failures within `fail_timeout` that take the server out for `fail_timeout`; 0: never.
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamYaml {
    servers: Vec<String>,
    #[serde(default)]
    keepalive: Option<usize>,
    #[serde(default)]
    hash: Option<String>,
}

/// Checks a pool's `upstreams:` mapping.
pub(super) fn upstreams(value: &serde_yaml::Value) -> Result<Vec<Upstream>, String> {
    let serde_yaml::Value::Mapping(map) = value else {
        return Err("upstreams must map names to {servers: [...]}".into());
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, body) in map {
        let name = name
            .as_str()
            .ok_or("upstreams: a name must be plain text")?
            .to_owned();
        let at = |e: String| format!("upstreams: {name:?}: {e}");
        let y: UpstreamYaml =
            serde_yaml::from_value(body.clone()).map_err(|e| at(e.to_string()))?;
        if y.servers.is_empty() || y.servers.len() > MAX_SERVERS {
            return Err(at(format!("servers must list 1 to {MAX_SERVERS} servers")));
        }
        let servers = y
            .servers
            .iter()
            .map(|s| server(s).map_err(|e| at(format!("servers: {s:?} {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let hash = match &y.hash {
            Some(h) => Some(KeyTemplate::parse(h).map_err(|e| at(format!("hash {h:?}: {e}")))?),
            None => None,
        };
        out.push(Upstream {
            name,
            servers,
            keepalive: y.keepalive.unwrap_or(0),
            hash,
        });
    }
    Ok(out)
}

/// `host:port [weight=N] [max_fails=N] [fail_timeout=TIME]`.
fn server(text: &str) -> Result<UpstreamServer, String> {
    let mut words = text.split_ascii_whitespace();
    let addr_text = words.next().ok_or("is empty")?;
    let (host, port) = addr_text
        .rsplit_once(':')
        .ok_or("is not host:port [weight=N] [max_fails=N] [fail_timeout=Ns]")?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("has an invalid port (expected 1 to 65535)")?;
    let addr = crate::config::validate::resolve(host, port)?;
    let mut s = UpstreamServer {
        text: addr_text.to_owned(),
        addr,
        weight: 1,
        max_fails: DEFAULT_MAX_FAILS,
        fail_timeout: DEFAULT_FAIL_TIMEOUT,
    };
    for word in words {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("has {word:?}, expected key=value"))?;
        match k {
            "weight" => {
                s.weight = super::number(k, v)?;
                if s.weight == 0 {
                    return Err("has weight=0 (expected 1 or more)".into());
                }
            }
            "max_fails" => s.max_fails = super::number(k, v)?,
            "fail_timeout" => {
                s.fail_timeout = nginx_time(v).ok_or_else(|| {
                    format!("has fail_timeout={v:?}, expected e.g. 30s, 500ms, 1m")
                })?
            }
            _ => {
                return Err(format!(
                    "has unknown parameter {k:?} (expected weight, max_fails, fail_timeout)"
                ));
            }
        }
    }
    Ok(s)
}

/// nginx's time syntax: a number with `ms`, `s`, `m` or `h` (bare means seconds).
fn nginx_time(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}
