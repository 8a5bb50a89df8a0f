//! `protocol: http` pools: a reverse proxy's listener, upstreams (nginx's `server host:port
//! weight=N max_fails=N fail_timeout=Ns`) and locations (nginx's `location` match rules).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::raw::{Located, RawPool, RawValue};
use super::{Listen, PluginSpec};

const DEFAULT_TIMEOUT_MS: u32 = 60_000;
const DEFAULT_CLIENT_HEADER_TIMEOUT_MS: u32 = 60_000;
const DEFAULT_KEEPALIVE_TIMEOUT_MS: u32 = 75_000;
const DEFAULT_BACKLOG: u32 = 511;
/// nginx's defaults for a `server` line.
const DEFAULT_MAX_FAILS: u32 = 1;
const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per upstream server and worker when `keepalive:` is not given.
const DEFAULT_KEEPALIVE: usize = 32;
/// Servers of one upstream (a request remembers the ones it tried in a 64-bit set).
pub const MAX_SERVERS: usize = 64;

const KEYS: [&str; 10] = [
    "protocol",
    "listen",
    "backlog",
    "timeout",
    "client_header_timeout",
    "keepalive_timeout",
    "client_connections",
    "plugins",
    "upstreams",
    "locations",
];

/// An HTTP reverse-proxy pool.
#[derive(Debug, Clone)]
pub struct HttpPool {
    pub name: String,
    pub line: usize,
    pub listen: Listen,
    pub backlog: u32,
    /// Upstream connect and read timeout (504 when a response head does not come in time).
    pub timeout: Duration,
    /// How long a client has to send a whole request head (and each part of its body).
    pub client_header_timeout: Duration,
    /// How long an idle client connection is kept between requests.
    pub keepalive_timeout: Duration,
    /// Most client connections (0: no limit).
    pub client_connections: u32,
    /// Plugins run for every request of the pool, before the location's.
    pub plugins: Vec<PluginSpec>,
    pub upstreams: Vec<Upstream>,
    pub locations: Vec<Location>,
}

/// A named group of servers (nginx's `upstream NAME { ... }`).
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    /// Idle connections kept per server and worker.
    pub keepalive: usize,
    /// `hash:` key template (nginx's `hash $key consistent`), e.g. `$request_uri`.
    pub hash: Option<String>,
}

/// One `host:port weight=N max_fails=N fail_timeout=Ns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// `host:port` as written.
    pub text: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Failures within `fail_timeout` that take the server out for `fail_timeout`; 0: never.
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// How a location matches a path (nginx's modifiers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationMatch {
    /// `= /path`
    Exact(String),
    /// `^~ /prefix`: when it is the longest prefix, regexes are not tried.
    PrefixNoRegex(String),
    /// `/prefix`
    Prefix(String),
    /// `~ re` (case-sensitive) or `~* re` (case-insensitive).
    Regex { pattern: String, caseless: bool },
}

/// What a location does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationAction {
    /// `proxy_pass: UPSTREAM` (index into `upstreams`), with `proxy_method` if set.
    Proxy {
        upstream: usize,
        method: Option<String>,
    },
    /// `return: CODE [text]`: answered by walnut.
    Return { status: u16, body: String },
}

#[derive(Debug, Clone)]
pub struct Location {
    /// The `match:` text as written.
    pub text: String,
    pub matcher: LocationMatch,
    pub action: LocationAction,
    pub plugins: Vec<PluginSpec>,
    /// The line of the `locations:` key.
    pub line: usize,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationYaml {
    #[serde(rename = "match")]
    matches: String,
    #[serde(default)]
    proxy_pass: Option<String>,
    #[serde(default)]
    proxy_method: Option<String>,
    #[serde(default, rename = "return")]
    ret: Option<serde_yaml::Value>,
    #[serde(default)]
    plugins: Option<serde_yaml::Value>,
}

/// Whether `raw` is a `protocol: http` pool; an unknown protocol is an error.
pub(super) fn is_http(raw: &RawPool) -> Result<bool, Located> {
    let Some(key) = raw.keys.iter().find(|k| k.name == "protocol") else {
        return Ok(false);
    };
    match &key.value {
        RawValue::Text(t) if t == "http" => Ok(true),
        RawValue::Text(t) if t == "memcache" || t == "memcached" => Ok(false),
        _ => Err(Located {
            line: key.line,
            message: format!("pool {:?}: protocol is not one of memcache, http", raw.name),
        }),
    }
}

/// Checks an HTTP pool.
pub(super) fn pool(raw: &RawPool, base_dir: &Path) -> Result<HttpPool, Located> {
    let err = |line: usize, what: String| Located {
        line,
        message: format!("pool {:?}: {what}", raw.name),
    };
    let mut listen = None;
    let mut backlog = DEFAULT_BACKLOG;
    let ms = |v: u32| Duration::from_millis(v.into());
    let mut timeout = ms(DEFAULT_TIMEOUT_MS);
    let mut client_header_timeout = ms(DEFAULT_CLIENT_HEADER_TIMEOUT_MS);
    let mut keepalive_timeout = ms(DEFAULT_KEEPALIVE_TIMEOUT_MS);
    let mut client_connections = 0;
    let mut plugins = Vec::new();
    let mut upstream_yaml = None;
    let mut location_yaml = None;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for key in &raw.keys {
        let name = key.name.as_str();
        let fail = |what: String| err(key.line, what);
        if !KEYS.contains(&name) {
            return Err(fail(format!(
                "unknown key {name:?} for an http pool (expected one of {})",
                KEYS.join(", ")
            )));
        }
        if let Some(first) = seen.insert(name, key.line) {
            return Err(fail(format!(
                "{name} is given twice (first on line {first})"
            )));
        }
        match (&key.value, name) {
            (RawValue::Yaml(v), "plugins") => {
                plugins = super::plugins::plugin_list(v, key.line, base_dir).map_err(fail)?
            }
            (RawValue::Yaml(v), "upstreams") => upstream_yaml = Some((v, key.line)),
            (RawValue::Yaml(v), "locations") => location_yaml = Some((v, key.line)),
            (RawValue::Text(text), _) => match name {
                "protocol" => {}
                "listen" => {
                    let l = super::validate::parse_listen(text)
                        .map_err(|why| fail(format!("listen {text:?} {why}")))?;
                    if !matches!(l, Listen::Tcp { .. }) {
                        return Err(fail(format!(
                            "listen {text:?}: an http pool listens on host:port"
                        )));
                    }
                    listen = Some(l);
                }
                "backlog" => backlog = number(name, text).map_err(fail)?,
                "client_connections" => client_connections = number(name, text).map_err(fail)?,
                "timeout" | "client_header_timeout" | "keepalive_timeout" => {
                    let v = number(name, text).map_err(fail)?;
                    if v == 0 {
                        return Err(fail(format!("{name} must be at least 1 (ms)")));
                    }
                    match name {
                        "timeout" => timeout = ms(v),
                        "client_header_timeout" => client_header_timeout = ms(v),
                        _ => keepalive_timeout = ms(v),
                    }
                }
                _ => return Err(fail(format!("{name} must be a list or mapping"))),
            },
            _ => return Err(fail(format!("{name} must be a single value"))),
        }
    }
    let Some(listen) = listen else {
        return Err(err(raw.line, "missing listen (host:port)".into()));
    };
    let upstreams = match upstream_yaml {
        Some((v, line)) => upstreams(v).map_err(|e| err(line, e))?,
        None => Vec::new(),
    };
    let Some((lv, lline)) = location_yaml else {
        return Err(err(
            raw.line,
            "missing locations (a list of {match: ..., proxy_pass: ...})".into(),
        ));
    };
    let locations = locations(lv, lline, base_dir, &upstreams).map_err(|e| err(lline, e))?;
    Ok(HttpPool {
        name: raw.name.clone(),
        line: raw.line,
        listen,
        backlog,
        timeout,
        client_header_timeout,
        keepalive_timeout,
        client_connections,
        plugins,
        upstreams,
        locations,
    })
}

fn number(key: &str, text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| *n <= i32::MAX as u32 && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{key} {text:?} is not a whole number"))
}

fn upstreams(value: &serde_yaml::Value) -> Result<Vec<Upstream>, String> {
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
        if let Some(h) = &y.hash {
            crate::http::balance::KeyTemplate::parse(h)
                .map_err(|e| at(format!("hash {h:?}: {e}")))?;
        }
        out.push(Upstream {
            name,
            servers,
            keepalive: y.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
            hash: y.hash,
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
    let addr = super::validate::resolve(host, port)?;
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
                s.weight = number(k, v)?;
                if s.weight == 0 {
                    return Err("has weight=0 (expected 1 or more)".into());
                }
            }
            "max_fails" => s.max_fails = number(k, v)?,
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

fn locations(
    value: &serde_yaml::Value,
    line: usize,
    base: &Path,
    upstreams: &[Upstream],
) -> Result<Vec<Location>, String> {
    let serde_yaml::Value::Sequence(items) = value else {
        return Err("locations must be a list of {match: ..., proxy_pass: ...} entries".into());
    };
    let mut out: Vec<Location> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let y: LocationYaml =
            serde_yaml::from_value(item.clone()).map_err(|e| format!("locations[{i}]: {e}"))?;
        let at = |e: String| format!("locations[{i}] ({:?}): {e}", y.matches);
        let matcher = parse_match(&y.matches).map_err(at)?;
        if out.iter().any(|l| l.matcher == matcher) {
            return Err(at("is given twice".into()));
        }
        let action = match (&y.proxy_pass, &y.ret) {
            (Some(up), None) => {
                let upstream = upstreams
                    .iter()
                    .position(|u| &u.name == up)
                    .ok_or_else(|| at(format!("proxy_pass {up:?} names no upstream")))?;
                if let Some(m) = &y.proxy_method
                    && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    return Err(at(format!("proxy_method {m:?} is not a method like GET")));
                }
                LocationAction::Proxy {
                    upstream,
                    method: y.proxy_method.clone(),
                }
            }
            (None, Some(ret)) => {
                let text = match ret {
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::String(s) => s.clone(),
                    _ => return Err(at("return must be CODE or \"CODE text\"".into())),
                };
                let (code, body) = text.split_once(' ').unwrap_or((&text, ""));
                let status = code
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (200..=599).contains(c))
                    .ok_or_else(|| at(format!("return {text:?}: the status is not 200 to 599")))?;
                LocationAction::Return {
                    status,
                    body: body.to_owned(),
                }
            }
            _ => return Err(at("needs exactly one of proxy_pass or return".into())),
        };
        let plugins = match &y.plugins {
            Some(v) => super::plugins::plugin_list(v, line, base).map_err(at)?,
            None => Vec::new(),
        };
        out.push(Location {
            text: y.matches.clone(),
            matcher,
            action,
            plugins,
            line,
        });
    }
    Ok(out)
}

/// `= /x`, `^~ /x`, `~ re`, `~* re` or `/x`.
fn parse_match(text: &str) -> Result<LocationMatch, String> {
    let (modifier, rest) = match text.split_once(' ') {
        Some((m @ ("=" | "^~" | "~" | "~*"), rest)) => (m, rest.trim_start()),
        _ => ("", text),
    };
    if rest.is_empty() {
        return Err("match needs a path or a regex after its modifier".into());
    }
    let prefix = |p: &str| -> Result<String, String> {
        if p.starts_with('/') {
            Ok(p.to_owned())
        } else {
            Err(format!(
                "{p:?} is not a path starting with / (regexes take ~ or ~*)"
            ))
        }
    };
    Ok(match modifier {
        "=" => LocationMatch::Exact(prefix(rest)?),
        "^~" => LocationMatch::PrefixNoRegex(prefix(rest)?),
        "" => LocationMatch::Prefix(prefix(rest)?),
        m => {
            let caseless = m == "~*";
            crate::http::route::compile(rest, caseless).map_err(|e| format!("bad regex: {e}"))?;
            LocationMatch::Regex {
                pattern: rest.to_owned(),
                caseless,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("conf/x.yml")).map_err(|e| e.to_string())
    }

    const GOOD: &str = "mc:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\nweb:\n  protocol: http\n  listen: 127.0.0.1:8080\n  upstreams:\n    backend:\n      servers: [\"127.0.0.1:8081 weight=5 max_fails=3 fail_timeout=30s\", \"127.0.0.1:8082\"]\n  locations:\n    - match: \"~* /count(.*)\"\n      proxy_pass: backend\n      proxy_method: GET\n    - match: = /health\n      return: 204\n";

    #[test]
    fn http_pools_sit_beside_memcached_pools() {
        let c = parse(GOOD).unwrap();
        assert_eq!((c.pools.len(), c.http.len()), (1, 1));
        let web = &c.http[0];
        let s = &web.upstreams[0].servers;
        assert_eq!(
            (s[0].weight, s[0].max_fails, s[0].fail_timeout),
            (5, 3, Duration::from_secs(30))
        );
        assert_eq!(
            (s[1].weight, s[1].max_fails, s[1].fail_timeout),
            (1, 1, Duration::from_secs(10))
        );
        assert_eq!(
            web.locations[0].matcher,
            LocationMatch::Regex {
                pattern: "/count(.*)".into(),
                caseless: true
            }
        );
        assert_eq!(
            web.locations[1].action,
            LocationAction::Return {
                status: 204,
                body: String::new()
            }
        );
    }

    #[test]
    fn errors_name_file_line_pool_and_key() {
        let cases = [
            (
                GOOD.replace("weight=5", "weight=0"),
                "conf/x.yml:8: pool \"web\": upstreams: \"backend\": servers:",
            ),
            (
                GOOD.replace("proxy_pass: backend", "proxy_pass: nope"),
                "conf/x.yml:11: pool \"web\": locations[0]",
            ),
            (
                GOOD.replace(
                    "  upstreams:",
                    "  servers:\n   - 127.0.0.1:1:1\n  upstreams:",
                ),
                "conf/x.yml:8: pool \"web\": unknown key \"servers\"",
            ),
            (
                GOOD.replace("protocol: http", "protocol: gopher"),
                "conf/x.yml:6: pool \"web\": protocol",
            ),
            (
                GOOD.replace("8080", "22121"),
                "conf/x.yml:7: pool \"web\": listen \"127.0.0.1:22121\" is the address pool \"mc\"",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.starts_with(want), "{err}\nwanted {want}");
        }
    }
}
