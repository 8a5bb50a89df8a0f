//! `GET /status`: one self-contained HTML page (inline CSS and script, nothing fetched from
//! elsewhere) showing pools, servers up or ejected and since when, request and error rates, and
//! plugin faults. The data comes embedded in the page, and the page fetches `/status.json`
//! every 2 s to refresh itself; rates are the change between two fetches.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::View;

/// The data the page shows (also served as `/status.json`).
pub fn json(view: &View) -> Value {
    let reg = &view.registry;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut pools = Vec::new();
    let mut plugins = Vec::new();
    for (p, names) in reg.pools.iter().enumerate() {
        let totals = reg.pool_totals(p);
        let states = view.servers(p);
        let mut server_errors = 0;
        let servers: Vec<Value> = names
            .servers
            .iter()
            .enumerate()
            .map(|(s, name)| {
                let t = reg.server_totals(p, s);
                let errors = t.get("server_eof") + t.get("server_err") + t.get("server_timedout");
                server_errors += errors;
                let state = states.get(s);
                json!({
                    "name": name,
                    "address": state.map(|s| s.address.as_str()),
                    "state": state.map_or("unknown", |s| s.state),
                    "since": state.and_then(|s| s.since_us).map(|us| us as f64 / 1e6),
                    "ejections": state.map_or(0, |s| s.ejections),
                    "rejoins": state.map_or(0, |s| s.rejoins),
                    "requests": t.get("requests"),
                    "errors": errors,
                    "timeouts": t.get("server_timedout"),
                    "connections": t.get("server_connections"),
                })
            })
            .collect();
        let mut faults = 0;
        for (i, label) in names.plugins.iter().enumerate() {
            let t = reg.plugin_totals(p, i);
            let f = ["timeout", "memory", "trap", "protocol"]
                .iter()
                .map(|k| t.get(&format!("fault_{k}")))
                .sum::<u64>();
            faults += f;
            plugins.push(json!({
                "pool": names.name,
                "scope": label.scope,
                "plugin": label.name,
                "calls": t.get("calls"),
                "rejects": t.get("rejects"),
                "faults": f,
            }));
        }
        pools.push(json!({
            "name": names.name,
            "protocol": view.site(p).map_or("unknown", |s| s.protocol()),
            "requests": reg.latency(p).count(),
            "client_errors": totals.get("client_eof") + totals.get("client_err"),
            "server_errors": server_errors,
            "plugin_faults": faults,
            "clients": totals.get("client_connections"),
            "servers": servers,
        }));
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "source": reg.source,
        "time": now,
        "uptime": reg.started.elapsed().as_secs(),
        "pools": pools,
        "plugins": plugins,
    })
}

/// The page, with the current data embedded so it shows at once, even before a refresh.
pub fn page(view: &View) -> String {
    // Inside a script element only `</` could end it early; `<\/` reads the same in JSON.
    let data = json(view).to_string().replace("</", "<\\/");
    PAGE.replace("/*DATA*/null", &data)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>walnut status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
.meta { color: #666; } table { border-collapse: collapse; background: #fff; margin-bottom: .6em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f0f0f0; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #0a0; font-weight: 600; } .ejected, .down { color: #c00; font-weight: 600; }
.fault { color: #c00; }
</style></head>
<body>
<h1>walnut</h1>
<div class="meta" id="meta"></div>
<div id="pools"></div>
<h2>Plugins</h2>
<div id="plugins"></div>
<script>
"use strict";
const initial = /*DATA*/null;
let previous = null, refreshes = 0;
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k === null || k === undefined ? "" : String(k));
  return e;
}
function rate(now, before, pick) {
  if (!before || now.time <= before.time) return "\u2013";
  const d = pick(now) - pick(before);
  return (d / (now.time - before.time)).toFixed(1) + "/s";
}
function since(t) {
  if (t === null || t === undefined) return "start";
  return new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}
function table(head, rows) {
  const t = el("table");
  const tr = el("tr");
  head.forEach(h => tr.append(el("th", {}, h)));
  t.append(tr);
  rows.forEach(r => t.append(r));
  return t;
}
function render(d) {
  const before = previous;
  document.getElementById("meta").textContent =
    `version ${d.version} on ${d.source}, up ${d.uptime} s, updated ${since(d.time)}, refreshes ${refreshes}`;
  const pools = document.getElementById("pools");
  pools.replaceChildren();
  d.pools.forEach((p, i) => {
    const old = before && before.pools[i] && before.pools[i].name === p.name ? before : null;
    const pick = f => x => f(x.pools[i]);
    pools.append(el("h2", {}, `Pool ${p.name} (${p.protocol})`));
    pools.append(el("div", { "class": "meta" },
      `requests ${p.requests} (${rate(d, old, pick(x => x.requests))}), ` +
      `client errors ${p.client_errors} (${rate(d, old, pick(x => x.client_errors))}), ` +
      `server errors ${p.server_errors} (${rate(d, old, pick(x => x.server_errors))}), ` +
      `plugin faults ${p.plugin_faults}, clients ${p.clients}`));
    const rows = p.servers.map((s, j) => {
      const tr = el("tr", { "data-server": s.name, "data-state": s.state });
      tr.append(el("td", {}, s.name), el("td", {}, s.address),
        el("td", { "class": s.state }, s.state), el("td", {}, since(s.since)),
        el("td", { "class": "n" }, s.requests),
        el("td", { "class": "n" }, rate(d, old, pick(x => x.servers[j].requests))),
        el("td", { "class": "n" }, s.errors),
        el("td", { "class": "n" }, rate(d, old, pick(x => x.servers[j].errors))),
        el("td", { "class": "n" }, s.timeouts), el("td", { "class": "n" }, s.ejections),
        el("td", { "class": "n" }, s.rejoins), el("td", { "class": "n" }, s.connections));
      return tr;
    });
    pools.append(table(["server", "address", "state", "since", "requests", "req/s", "errors",
      "err/s", "timeouts", "ejections", "rejoins", "connections"], rows));
  });
  const plugins = document.getElementById("plugins");
  plugins.replaceChildren(d.plugins.length === 0 ? el("p", {}, "none") :
    table(["pool", "scope", "plugin", "calls", "rejects", "faults"], d.plugins.map(g => {
      const tr = el("tr", { "data-plugin": g.plugin });
      tr.append(el("td", {}, g.pool), el("td", {}, g.scope), el("td", {}, g.plugin),
        el("td", { "class": "n" }, g.calls), el("td", { "class": "n" }, g.rejects),
        el("td", { "class": g.faults > 0 ? "n fault" : "n" }, g.faults));
      return tr;
    })));
  previous = d;
}
render(initial);
setInterval(() => {
  fetch("/status.json", { cache: "no-store" })
    .then(r => r.json())
    .then(d => { refreshes++; render(d); })
    .catch(() => { document.getElementById("meta").textContent += " (refresh failed)"; });
}, 2000);
</script>
</body></html>
"#;
