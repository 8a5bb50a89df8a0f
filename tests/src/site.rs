//! walnut configs for HTTP sites: one upstream, locations proxied to it, and the plugins of
//! the pool and of each location.

#[allow(unused_imports)]
use super::*;

/// An HTTP pool over `upstream` (upstream `b`) whose locations are `(match, plugins YAML)`,
/// each proxied; `pool_plugins` is the pool's own `plugins:` key (see [`pool_plugin`]), or
/// empty.
pub fn http_site(upstream: SocketAddr, pool_plugins: &str, locations: &[(&str, String)]) -> String {
    let mut config = format!("web:\n  protocol: http\n  listen: {{listen}}\n{pool_plugins}");
    config.push_str(&format!(
        "  upstreams:\n    b:\n      servers: [\"{upstream}\"]\n  locations:\n"
    ));
    for (m, plugins) in locations {
        config.push_str(&format!(
            "    - match: {m}\n      proxy_pass: b\n      plugins:\n{plugins}"
        ));
    }
    config
}

/// An entry of a location's `plugins:` list: `wasm` with these extra keys (one a line).
pub fn location_plugin(wasm: &Path, extra: &str) -> String {
    let mut s = format!("        - path: {}\n", wasm.display());
    for line in extra.lines() {
        s.push_str(&format!("          {line}\n"));
    }
    s
}

/// The pool's `plugins:` key, holding `wasm` with these extra keys (one a line).
pub fn pool_plugin(wasm: &Path, extra: &str) -> String {
    let mut s = format!("  plugins:\n    - path: {}\n", wasm.display());
    for line in extra.lines() {
        s.push_str(&format!("      {line}\n"));
    }
    s
}
