//! `GET /route` and `walnut route`: where a memcached key or an HTTP request goes, and why. A
//! memcached key runs through the pool's plugins and `PoolShared::explain` (the placement
//! function itself, watched); an HTTP request through the location rules, the plugins and the
//! upstream's balancer. Both answer the same JSON; `walnut route` prints it as text.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::http::Response;
use super::{Site, View};
use crate::config::KeySource;
use crate::config::LocationAction;
use crate::http::balance::now_ms;
use crate::http::plugins::{HttpCall, HttpEdits, HttpVerdict};
use crate::plugin::PoolPlugins;
use crate::pool::PoolShared;
use crate::pool::explain::{Explanation, Step, Steps};
use crate::ring::Spot;
use crate::stats::PoolStats;

/// What to explain.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pub pool: String,
    /// A memcached key.
    pub key: Option<Vec<u8>>,
    /// The memcached command (default `get`).
    pub command: Option<String>,
    /// An HTTP path, with its query string if any.
    pub path: Option<Vec<u8>>,
    /// The HTTP method (default `GET`).
    pub method: Option<String>,
    /// HTTP request headers, `Name: value`.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The client address, for `$remote_addr` (default 127.0.0.1).
    pub remote: Option<IpAddr>,
}

/// The `/route` answer: JSON, or 400/404 with the reason.
pub fn answer(view: &View, query: &str) -> Response {
    let explained = parse_query(query)
        .map_err(|e| (400, e))
        .and_then(|q| explain(view, &q));
    match explained {
        Ok(v) => Response::new(200, "application/json", format!("{v:#}\n")),
        Err((status, why)) => Response::text(status, &why),
    }
}

/// Explains `q` against the pools of `view`; the error is an HTTP status and the reason.
pub fn explain(view: &View, q: &Query) -> Result<Value, (u16, String)> {
    let (p, site) = view
        .find(&q.pool)
        .ok_or_else(|| (404, format!("no pool {:?}", q.pool)))?;
    match site {
        Site::Memcache(shared) => {
            let key = q.key.as_deref().ok_or_else(|| {
                (
                    400,
                    format!("pool {:?} is a memcached pool: give key=KEY", q.pool),
                )
            })?;
            memcache(view, p, shared, q.command.as_deref().unwrap_or("get"), key)
        }
        Site::Http(shared) => {
            let path = q.path.as_deref().ok_or_else(|| {
                (
                    400,
                    format!("pool {:?} is an HTTP pool: give path=/PATH", q.pool),
                )
            })?;
            http(view, p, shared, q, path)
        }
    }
}

/// Text for a key or other bytes.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The plugins' steps, named.
fn steps(view: &View, p: usize, hook: &str, steps: &[Step]) -> Vec<Value> {
    let labels = &view.registry.pools[p].plugins;
    steps
        .iter()
        .map(|s| {
            let label = labels.get(s.plugin);
            json!({
                "hook": hook,
                "scope": label.map(|l| l.scope.as_str()),
                "plugin": label.map(|l| l.name.as_str()),
                "decision": s.decision,
                "detail": s.detail,
            })
        })
        .collect()
}

fn memcache(
    view: &View,
    p: usize,
    shared: &Arc<PoolShared>,
    command: &str,
    key: &[u8],
) -> Result<Value, (u16, String)> {
    let cfg = &shared.config;
    // Instances of the pool's own, counting into throwaway counters: an explanation is not
    // traffic.
    let mut plugins =
        (!shared.plugins.is_empty()).then(|| PoolPlugins::new(&cfg.name, &shared.plugins));
    let stats = PoolStats::new(cfg.servers.len());
    let e: Explanation = shared
        .explain(plugins.as_mut(), command, key, &stats)
        .map_err(|bad| (400, format!("key {:?}: {}", text(key), bad.0)))?;
    let mut plugin_steps = steps(view, p, "memcache", &e.request);
    plugin_steps.extend(steps(view, p, "hash", &e.placement));
    let states = view.servers(p);
    let chosen_by = match (&e.refused, &e.named, e.placement.last()) {
        (Some(_), _, _) => "nothing: refused",
        (None, Some(n), _) if n.server.is_some() && !n.ejected => "plugin: named server",
        (None, _, Some(last)) if last.decision == "hash" => "plugin: hashed bytes, then ring",
        _ => "ring",
    };
    let ring = e.ring.as_ref().map(|r| {
        let mut v = json!({
            "function": cfg.hash.name(),
            "hash_tag": cfg.hash_tag.map(|t| text(&t)),
            "hashed": text(&r.hashed),
            "hash": r.hash,
            "distribution": cfg.distribution.name(),
        });
        match r.spot {
            Spot::Ketama {
                point,
                index,
                points,
            } => {
                v["ring_point"] = json!(point);
                v["ring_index"] = json!(index);
                v["ring_points"] = json!(points);
            }
            Spot::Modula { slot, slots } => {
                v["modula_slot"] = json!(slot);
                v["modula_slots"] = json!(slots);
            }
            Spot::Random { servers } => {
                v["random"] = json!(format!("any of {servers} live servers, at random"));
            }
            Spot::Empty => v["ring"] = json!("empty: no server is live"),
        }
        v
    });
    let server = e.server.map(|s| {
        let state = states.get(s);
        json!({
            "index": s,
            "name": shared.names[s],
            "address": cfg.servers[s].addr_text,
            "health": {
                "state": state.map_or("unknown", |s| s.state),
                "since": state.and_then(|s| s.since_us).map(|us| us as f64 / 1e6),
                "ejections": state.map_or(0, |s| s.ejections),
                "rejoins": state.map_or(0, |s| s.rejoins),
            },
        })
    });
    Ok(json!({
        "pool": cfg.name,
        "protocol": "memcache",
        "live": view.live,
        "command": e.command,
        "key": text(&e.key),
        "route": e.route.as_deref().map(text),
        "plugins": plugin_steps,
        "refused": e.refused,
        "sent_key": text(&e.sent_key),
        "hash_route": e.place_route.as_deref().map(text),
        "named_server": e.named.as_ref().map(|n| json!({
            "name": n.name,
            "in_pool": n.server.is_some(),
            "ejected": n.ejected,
        })),
        "ring": ring,
        "chosen_by": chosen_by,
        "server": server,
    }))
}

fn http(
    view: &View,
    p: usize,
    shared: &Arc<crate::http::Shared>,
    q: &Query,
    target: &[u8],
) -> Result<Value, (u16, String)> {
    if !target.starts_with(b"/") {
        return Err((
            400,
            format!("path {:?} does not start with /", text(target)),
        ));
    }
    let cfg = &shared.config;
    let (path, query, has_query) = match target.iter().position(|&b| b == b'?') {
        Some(at) => (&target[..at], &target[at + 1..], true),
        None => (target, &b""[..], false),
    };
    let method = q.method.as_deref().unwrap_or("GET");
    let remote = q.remote.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    // Locations are chosen by the normalized path, as the proxy chooses them.
    let mut normal = Vec::new();
    let path = match crate::http::path::normalize(path, &mut normal) {
        Ok(true) => &normal[..],
        Ok(false) => path,
        Err(_) => {
            return Err((400, format!("path {:?} is refused with 400", text(path))));
        }
    };
    let location = shared
        .router
        .find(path)
        .map_err(|e| (500, format!("location lookup failed: {e}")))?;
    let mut edits = HttpEdits::default();
    let mut steps_seen = Steps::default();
    let mut verdict = HttpVerdict::Continue;
    if !shared.chains.is_empty() {
        let mut plugins = PoolPlugins::new(&cfg.name, &shared.chains);
        if plugins.runs_http(location) {
            let stats = PoolStats::new(0);
            let headers = || q.headers.iter().map(|(n, v)| (&n[..], &v[..]));
            let call = HttpCall {
                location,
                method,
                path,
                query,
                headers,
                underscores: cfg.underscores_in_headers,
                // A throwaway chain: a proxy-wasm filter's context is dropped with it, unlogged.
                tag: crate::plugin::RequestTag::default(),
            };
            verdict = plugins.http_traced(&call, &mut edits, &stats, &mut steps_seen);
        }
    }
    let mut v = json!({
        "pool": cfg.name,
        "protocol": "http",
        "live": view.live,
        "method": method,
        "path": text(path),
        "query": has_query.then(|| text(query)),
        "location": location.map(|l| json!({"index": l, "match": cfg.locations[l].text})),
        "plugins": steps(view, p, "http", &steps_seen.0),
    });
    let answered = |status: u16, by: &str| json!({"status": status, "by": by});
    match verdict {
        HttpVerdict::Respond { status, .. } => {
            v["answer"] = answered(status, "plugin");
            return Ok(v);
        }
        HttpVerdict::Failed => {
            v["answer"] = answered(500, "a fail_closed plugin failed");
            return Ok(v);
        }
        HttpVerdict::Continue => {}
    }
    let Some(location) = location else {
        v["answer"] = answered(404, "no location matches");
        return Ok(v);
    };
    let (u, method_override) = match &cfg.locations[location].action {
        LocationAction::Return { status, .. } => {
            v["answer"] = answered(*status, "the location's return");
            return Ok(v);
        }
        LocationAction::Proxy { upstream, method } => (*upstream, method.clone()),
    };
    let upstream = &shared.upstreams[u];
    v["upstream"] = json!(upstream.config.name);
    if let Some(m) = method_override {
        v["upstream_method"] = json!(m);
    }
    // The key as the proxy makes it: a plugin's, else the upstream's `hash:` template.
    let mut rendered = Vec::new();
    let key = match (&edits.hash_key, &upstream.config.hash) {
        (Some(k), _) => Some((k.as_slice(), "plugin")),
        (None, Some(template)) => {
            let find = |name: &str| {
                q.headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| &v[..])
            };
            let src = KeySource {
                request_uri: target,
                uri: edits.path.as_deref().unwrap_or(path),
                query: edits.query.as_deref().unwrap_or(query),
                remote,
                headers: &find,
            };
            template.render(&src, &mut rendered);
            Some((rendered.as_slice(), "upstream hash:"))
        }
        (None, None) => None,
    };
    let now = now_ms();
    let first = shared.server_index(u, 0);
    let states = view.servers(p);
    let server_json = |i: usize| {
        let s = first + i;
        json!({
            "name": view.registry.pools[p].servers.get(s),
            "address": upstream.config.servers[i].text,
            "health": {"state": states.get(s).map_or("unknown", |st| st.state)},
        })
    };
    match key {
        Some((key, source)) => {
            let (hash, point, server) = upstream.hash_choice(key, now);
            v["balancing"] = json!("consistent hash");
            v["hash"] = json!({
                "key": text(key),
                "source": source,
                "function": "crc32a",
                "hash": hash,
                "ring_point": point,
            });
            match server {
                Some(i) => v["server"] = server_json(i),
                None => {
                    v["note"] =
                        json!("no server within reach of the ring is up: round robin decides")
                }
            }
        }
        None => {
            v["balancing"] = json!("weighted round robin");
            v["note"] = json!(
                "round robin: the server depends on the requests before this one; these take turns"
            );
            v["candidates"] = json!(
                (0..upstream.config.servers.len())
                    .map(server_json)
                    .collect::<Vec<_>>()
            );
        }
    }
    Ok(v)
}

/// Reads `pool=`, `key=`, `command=`, `path=`, `method=`, `header=Name: value` (repeated) and
/// `remote=` from a query string (percent-encoded; `+` is a space).
pub fn parse_query(query: &str) -> Result<Query, String> {
    let mut q = Query::default();
    let mut pool = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        let utf8 = |v: Vec<u8>| String::from_utf8(v).map_err(|_| format!("{name}: not UTF-8"));
        match name {
            "pool" => pool = Some(utf8(value)?),
            "key" => q.key = Some(value),
            "command" => q.command = Some(utf8(value)?),
            "path" => q.path = Some(value),
            "method" => q.method = Some(utf8(value)?),
            "header" => q.headers.push(parse_header(&value)?),
            "remote" => {
                let text = utf8(value)?;
                q.remote = Some(
                    text.parse()
                        .map_err(|_| format!("remote: {text:?} is not an IP address"))?,
                );
            }
            _ => {
                return Err(format!(
                    "unknown parameter {name:?} (pool, key, command, path, method, header, remote)"
                ));
            }
        }
    }
    q.pool = pool.ok_or("give pool=NAME")?;
    Ok(q)
}

/// `Name: value` as a header.
pub fn parse_header(text: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let at = text.iter().position(|&b| b == b':').ok_or_else(|| {
        format!(
            "header {:?}: expected `Name: value`",
            String::from_utf8_lossy(text)
        )
    })?;
    let name = text[..at].trim_ascii();
    if name.is_empty() {
        return Err("header: empty name".into());
    }
    Ok((name.to_vec(), text[at + 1..].trim_ascii().to_vec()))
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// An explanation as indented `name: value` lines, for people.
pub fn to_text(v: &Value) -> String {
    let mut out = String::new();
    write_text(&mut out, v, 0);
    out
}

fn write_text(out: &mut String, v: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, value) in map {
                match value {
                    Value::Null => {}
                    Value::Object(_) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_text(out, value, indent + 1);
                    }
                    Value::Array(items) if items.is_empty() => {
                        out.push_str(&format!("{pad}{k}: none\n"))
                    }
                    Value::Array(items) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        for item in items {
                            out.push_str(&format!("{pad}  -\n"));
                            write_text(out, item, indent + 2);
                        }
                    }
                    Value::String(s) => out.push_str(&format!("{pad}{k}: {s}\n")),
                    other => out.push_str(&format!("{pad}{k}: {other}\n")),
                }
            }
        }
        Value::String(s) => out.push_str(&format!("{pad}{s}\n")),
        other => out.push_str(&format!("{pad}{other}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded_and_checked() {
        let q = parse_query("pool=alpha&key=a%20b%2Bc&header=X-User:+bob").unwrap();
        assert_eq!(q.pool, "alpha");
        assert_eq!(q.key.as_deref(), Some(&b"a b+c"[..]));
        assert_eq!(q.headers, vec![(b"X-User".to_vec(), b"bob".to_vec())]);
        assert!(parse_query("key=a").unwrap_err().contains("pool"));
        assert!(
            parse_query("pool=a&key=%zz")
                .unwrap_err()
                .contains("percent")
        );
        assert!(
            parse_query("pool=a&nope=1")
                .unwrap_err()
                .contains("unknown")
        );
        assert!(parse_query("pool=a&remote=x").unwrap_err().contains("IP"));
    }
}
