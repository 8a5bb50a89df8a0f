//! `protocol: http` pools: a reverse proxy's listener and timeouts, its upstreams (nginx's
//! `server host:port weight=N max_fails=N fail_timeout=Ns`, [`upstream`]) and its locations
//! (nginx's `location` match rules, [`location`]). Everything is parsed and compiled here, once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{Located, RawPool, RawValue};
use super::{Listen, PluginSpec};

mod location;
mod upstream;

pub use location::{
    Location, LocationAction, LocationMatch, LocationRegex, RegexGaveUp, is_redirect,
};
pub use upstream::{MAX_SERVERS, Upstream, UpstreamServer};

const DEFAULT_TIMEOUT_MS: u32 = 60_000;
const DEFAULT_CLIENT_HEADER_TIMEOUT_MS: u32 = 60_000;
const DEFAULT_KEEPALIVE_TIMEOUT_MS: u32 = 75_000;
/// nginx's `send_timeout` and `proxy_send_timeout` defaults.
const DEFAULT_SEND_TIMEOUT_MS: u32 = 60_000;
const DEFAULT_BACKLOG: u32 = 511;

/// Every key of an http pool, for the message about an unknown one.
const KEYS: [&str; 14] = [
    "protocol",
    "listen",
    "backlog",
    "timeout",
    "client_header_timeout",
    "keepalive_timeout",
    "send_timeout",
    "proxy_send_timeout",
    "underscores_in_headers",
    "client_connections",
    "access_log",
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
    /// How long one write to a client may wait for the client to read (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// How long one write of a request (head or body) to an upstream may wait for the upstream
    /// to read (nginx's `proxy_send_timeout`; 504 when it runs out).
    pub proxy_send_timeout: Duration,
    /// Keep request headers whose names hold `_` (nginx's `underscores_in_headers`); off, they
    /// are dropped, so `X_Real_IP` cannot pose as walnut's `X-Real-IP`.
    pub underscores_in_headers: bool,
    /// Most client connections (0: no limit).
    pub client_connections: u32,
    /// Where each request is logged (nginx's `combined` format and the upstream's address and
    /// time), an absolute path; `None` (`off`, the default) logs nothing.
    pub access_log: Option<PathBuf>,
    /// Plugins run for every request of the pool, before the location's.
    pub plugins: Vec<PluginSpec>,
    pub upstreams: Vec<Upstream>,
    pub locations: Vec<Location>,
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
    let ms = |v: u32| Duration::from_millis(v.into());
    let mut p = HttpPool {
        name: raw.name.clone(),
        line: raw.line,
        // Replaced below; a pool without `listen` is refused.
        listen: Listen::Unix {
            path: Default::default(),
            mode: None,
        },
        backlog: DEFAULT_BACKLOG,
        timeout: ms(DEFAULT_TIMEOUT_MS),
        client_header_timeout: ms(DEFAULT_CLIENT_HEADER_TIMEOUT_MS),
        keepalive_timeout: ms(DEFAULT_KEEPALIVE_TIMEOUT_MS),
        send_timeout: ms(DEFAULT_SEND_TIMEOUT_MS),
        proxy_send_timeout: ms(DEFAULT_SEND_TIMEOUT_MS),
        underscores_in_headers: false,
        client_connections: 0,
        access_log: None,
        plugins: Vec::new(),
        upstreams: Vec::new(),
        locations: Vec::new(),
    };
    let mut listen = false;
    let mut upstream_yaml = None;
    let mut location_yaml = None;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for key in &raw.keys {
        let name = key.name.as_str();
        let fail = |what: String| err(key.line, what);
        if let Some(first) = seen.insert(name, key.line) {
            return Err(fail(format!(
                "{name} is given twice (first on line {first})"
            )));
        }
        match (&key.value, name) {
            (RawValue::Yaml(v), "plugins") => {
                p.plugins = super::plugins::plugin_list(v, key.line, base_dir).map_err(fail)?
            }
            (RawValue::Text(text), "access_log") => {
                p.access_log = access_log(text, base_dir).map_err(fail)?
            }
            (RawValue::Yaml(v), "upstreams") => upstream_yaml = Some((v, key.line)),
            (RawValue::Yaml(v), "locations") => location_yaml = Some((v, key.line)),
            (RawValue::Text(text), _) => {
                set(&mut p, name, text).map_err(fail)?;
                listen |= name == "listen";
            }
            _ if !KEYS.contains(&name) => return Err(fail(unknown(name))),
            _ => return Err(fail(format!("{name} must be a single value"))),
        }
    }
    if !listen {
        return Err(err(raw.line, "missing listen (host:port)".into()));
    }
    if let Some((v, line)) = upstream_yaml {
        p.upstreams = upstream::upstreams(v).map_err(|e| err(line, e))?;
    }
    let Some((lv, lline)) = location_yaml else {
        return Err(err(
            raw.line,
            "missing locations (a list of {match: ..., proxy_pass: ...})".into(),
        ));
    };
    p.locations =
        location::locations(lv, lline, base_dir, &p.upstreams).map_err(|e| err(lline, e))?;
    Ok(p)
}

/// `access_log: PATH` (relative to the config file's folder) or `off`.
fn access_log(text: &str, base_dir: &Path) -> Result<Option<PathBuf>, String> {
    if text == "off" {
        return Ok(None);
    }
    if text.is_empty() {
        return Err("access_log is empty (a file, or off)".into());
    }
    // Absolute, so reopening it after a SIGUSR1 finds it whatever the working folder is then.
    std::path::absolute(base_dir.join(text))
        .map(Some)
        .map_err(|e| format!("access_log {text:?}: {e}"))
}

fn unknown(name: &str) -> String {
    format!(
        "unknown key {name:?} for an http pool (expected one of {})",
        KEYS.join(", ")
    )
}

/// Sets the single-valued key `name` of `p` from `text`: the one place a pool-level key is read.
fn set(p: &mut HttpPool, name: &str, text: &str) -> Result<(), String> {
    let ms = |name: &str| -> Result<Duration, String> {
        match number(name, text)? {
            0 => Err(format!("{name} must be at least 1 (ms)")),
            v => Ok(Duration::from_millis(v.into())),
        }
    };
    match name {
        "protocol" => {}
        "listen" => {
            let l = super::validate::parse_listen(text)
                .map_err(|why| format!("listen {text:?} {why}"))?;
            if !matches!(l, Listen::Tcp { .. }) {
                return Err(format!(
                    "listen {text:?}: an http pool listens on host:port"
                ));
            }
            p.listen = l;
        }
        "backlog" => p.backlog = number(name, text)?,
        "client_connections" => p.client_connections = number(name, text)?,
        "timeout" => p.timeout = ms(name)?,
        "client_header_timeout" => p.client_header_timeout = ms(name)?,
        "keepalive_timeout" => p.keepalive_timeout = ms(name)?,
        "send_timeout" => p.send_timeout = ms(name)?,
        "proxy_send_timeout" => p.proxy_send_timeout = ms(name)?,
        "underscores_in_headers" => {
            p.underscores_in_headers = match text {
                "true" | "on" => true,
                "false" | "off" => false,
                _ => {
                    return Err(format!(
                        "underscores_in_headers {text:?} is not true or false"
                    ));
                }
            }
        }
        "plugins" | "upstreams" | "locations" => {
            return Err(format!("{name} must be a list or mapping"));
        }
        _ => return Err(unknown(name)),
    }
    Ok(())
}

fn number(key: &str, text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| *n <= i32::MAX as u32 && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{key} {text:?} is not a whole number"))
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
    fn the_access_log_is_a_file_beside_the_config_or_off() {
        let with = |v: &str| {
            parse(&GOOD.replace(
                "  protocol: http\n",
                &format!("  protocol: http\n  access_log: {v}\n"),
            ))
        };
        let path = with("logs/access.log").unwrap().http[0]
            .access_log
            .clone()
            .unwrap();
        assert!(
            path.is_absolute() && path.ends_with("conf/logs/access.log"),
            "{path:?}"
        );
        assert_eq!(
            with("/var/log/w.log").unwrap().http[0]
                .access_log
                .as_deref(),
            Some(Path::new("/var/log/w.log"))
        );
        assert_eq!(with("off").unwrap().http[0].access_log, None);
        assert!(with("\"\"").unwrap_err().contains("access_log is empty"));
    }

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
        let LocationMatch::Regex(re) = &web.locations[0].matcher else {
            panic!("{:?}", web.locations[0].matcher);
        };
        assert_eq!((re.pattern(), re.caseless()), ("/count(.*)", true));
        assert_eq!(re.is_match(b"/COUNT_a"), Ok(true), "compiled once, at load");
        assert_eq!(
            web.locations[1].action,
            LocationAction::Return {
                status: 204,
                text: String::new()
            }
        );
        // nginx's defaults: no upstream keepalive, 60 s send timeouts, no underscores.
        assert_eq!(web.upstreams[0].keepalive, 0);
        assert_eq!(web.send_timeout, Duration::from_secs(60));
        assert_eq!(web.proxy_send_timeout, Duration::from_secs(60));
        assert!(!web.underscores_in_headers);
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
                GOOD.replace("  upstreams:", "  send_timeout: soon\n  upstreams:"),
                "conf/x.yml:8: pool \"web\": send_timeout \"soon\" is not a whole number",
            ),
            (
                GOOD.replace(
                    "  upstreams:",
                    "  underscores_in_headers: maybe\n  upstreams:",
                ),
                "conf/x.yml:8: pool \"web\": underscores_in_headers \"maybe\"",
            ),
            (
                GOOD.replace("/count(.*)", "/count(.*"),
                "conf/x.yml:11: pool \"web\": locations[0] (\"~* /count(.*\"): bad regex",
            ),
            (
                GOOD.replace("return: 204", "return: 301"),
                "conf/x.yml:11: pool \"web\": locations[1] (\"= /health\"): return \"301\": a 301 needs a URL",
            ),
            (
                GOOD.replace("proxy_pass: backend", "proxy_pass: backend\n      hash: $x"),
                "conf/x.yml:11: pool \"web\": locations[0]",
            ),
            (
                GOOD.replace("      servers:", "      hash: $nope\n      servers:"),
                "conf/x.yml:8: pool \"web\": upstreams: \"backend\": hash \"$nope\": $nope is not one of",
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
