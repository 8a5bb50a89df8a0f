//! `GET /metrics`: every counter in Prometheus's text exposition format (version 0.0.4),
//! summed over the workers' lock-free counters at the moment of the scrape. Metric names start
//! with `walnut_`; labels are `pool`, `server`, `scope` and `plugin` (and `kind`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::View;
use crate::plugin::proxy_wasm::MetricKind;
use crate::stats::{HistogramSum, PluginLabel, Registry};

/// The whole exposition.
pub fn render(view: &View) -> String {
    let reg = &view.registry;
    let mut out = Exposition::default();
    out.family("walnut_info", "gauge", "walnut's version (always 1)");
    out.sample("walnut_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    out.family(
        "walnut_uptime_seconds",
        "gauge",
        "seconds since walnut started",
    );
    out.sample(
        "walnut_uptime_seconds",
        &[],
        reg.started.elapsed().as_secs(),
    );
    out.family(
        "walnut_connections",
        "gauge",
        "client connections open, all pools",
    );
    let process = &reg.process;
    out.sample(
        "walnut_connections",
        &[],
        process.curr_connections.load(Ordering::Relaxed),
    );
    out.family(
        "walnut_connections_total",
        "counter",
        "client connections accepted, all pools",
    );
    out.sample(
        "walnut_connections_total",
        &[],
        process.total_connections.load(Ordering::Relaxed),
    );
    out.family(
        "walnut_reloads_total",
        "counter",
        "config reloads that took effect (SIGHUP, POST /reload)",
    );
    out.sample(
        "walnut_reloads_total",
        &[],
        process.reloads.load(Ordering::Relaxed),
    );
    out.family(
        "walnut_reload_failures_total",
        "counter",
        "config reloads refused, the running config kept",
    );
    out.sample(
        "walnut_reload_failures_total",
        &[],
        process.reload_failures.load(Ordering::Relaxed),
    );
    pools(&mut out, view);
    servers(&mut out, view);
    plugins(&mut out, reg);
    filter_metrics(&mut out);
    out.family(
        "walnut_request_duration_seconds",
        "histogram",
        "time from a request decoded to its reply handed to the client's socket (memcached), or from a request head read to the response written (HTTP); requests with noreply are not answered, so not counted",
    );
    for (p, names) in reg.pools.iter().enumerate() {
        out.histogram(
            "walnut_request_duration_seconds",
            &[("pool", &names.name)],
            &reg.latency(p),
        );
    }
    out.text
}

fn pools(out: &mut Exposition, view: &View) {
    let reg = &view.registry;
    let totals: Vec<_> = (0..reg.pools.len()).map(|p| reg.pool_totals(p)).collect();
    let each = |out: &mut Exposition, metric: &str, kind: &[(&str, &str)], field: &str| {
        for (names, t) in reg.pools.iter().zip(&totals) {
            let mut labels = vec![("pool", names.name.as_str())];
            labels.extend_from_slice(kind);
            out.sample(metric, &labels, t.get(field));
        }
    };
    out.family(
        "walnut_client_connections",
        "gauge",
        "client connections open on the pool",
    );
    each(out, "walnut_client_connections", &[], "client_connections");
    out.family(
        "walnut_client_errors_total",
        "counter",
        "client connections ended by an EOF (kind=eof) or an error or a fatal protocol error (kind=error)",
    );
    each(
        out,
        "walnut_client_errors_total",
        &[("kind", "eof")],
        "client_eof",
    );
    each(
        out,
        "walnut_client_errors_total",
        &[("kind", "error")],
        "client_err",
    );
    out.family(
        "walnut_fragments_total",
        "counter",
        "pieces multi-key retrievals were split into",
    );
    each(out, "walnut_fragments_total", &[], "fragments");
    out.family(
        "walnut_pool_ejections_total",
        "counter",
        "server ejections in the pool",
    );
    each(out, "walnut_pool_ejections_total", &[], "server_ejects");
}

fn servers(out: &mut Exposition, view: &View) {
    let reg = &view.registry;
    let mut rows = Vec::new();
    for (p, names) in reg.pools.iter().enumerate() {
        let mut states = view.servers(p).into_iter();
        for (s, server) in names.servers.iter().enumerate() {
            rows.push((
                names.name.as_str(),
                server.as_str(),
                reg.server_totals(p, s),
                states.next(),
            ));
        }
    }
    let counted = [
        (
            "walnut_server_requests_total",
            "requests sent to the server",
            "requests",
        ),
        (
            "walnut_server_responses_total",
            "responses from the server",
            "responses",
        ),
        (
            "walnut_server_request_bytes_total",
            "request bytes sent to the server",
            "request_bytes",
        ),
        (
            "walnut_server_response_bytes_total",
            "response bytes from the server",
            "response_bytes",
        ),
    ];
    for (metric, help, field) in counted {
        out.family(metric, "counter", help);
        for (pool, server, t, _) in &rows {
            out.sample(metric, &[("pool", pool), ("server", server)], t.get(field));
        }
    }
    out.family(
        "walnut_server_errors_total",
        "counter",
        "failed server connections or attempts: closed by the server (kind=eof), errors (kind=error), timeouts (kind=timeout)",
    );
    for (kind, field) in [
        ("eof", "server_eof"),
        ("error", "server_err"),
        ("timeout", "server_timedout"),
    ] {
        for (pool, server, t, _) in &rows {
            let labels = [("pool", *pool), ("server", *server), ("kind", kind)];
            out.sample("walnut_server_errors_total", &labels, t.get(field));
        }
    }
    out.family(
        "walnut_server_connections",
        "gauge",
        "connections open to the server, all workers",
    );
    for (pool, server, t, _) in &rows {
        let labels = [("pool", *pool), ("server", *server)];
        out.sample(
            "walnut_server_connections",
            &labels,
            t.get("server_connections"),
        );
    }
    out.family(
        "walnut_server_up",
        "gauge",
        "1 while the server takes requests, 0 while it is ejected (memcached) or failed out (HTTP)",
    );
    for (pool, server, _, state) in &rows {
        let up = state.as_ref().is_some_and(|s| s.state == "up");
        out.sample(
            "walnut_server_up",
            &[("pool", pool), ("server", server)],
            u64::from(up),
        );
    }
    let history = [
        (
            "walnut_server_ejections_total",
            "times the server was ejected (memcached pools)",
        ),
        (
            "walnut_server_rejoins_total",
            "times the server rejoined after a successful probe (memcached pools)",
        ),
    ];
    for (i, (metric, help)) in history.into_iter().enumerate() {
        out.family(metric, "counter", help);
        for (pool, server, _, state) in &rows {
            let n = state
                .as_ref()
                .map_or(0, |s| if i == 0 { s.ejections } else { s.rejoins });
            out.sample(metric, &[("pool", pool), ("server", server)], n);
        }
    }
}

fn plugins(out: &mut Exposition, reg: &Registry) {
    let mut rows = Vec::new();
    for (p, names) in reg.pools.iter().enumerate() {
        for (i, label) in names.plugins.iter().enumerate() {
            rows.push((p, i, names.name.as_str(), label));
        }
    }
    let counted = [
        (
            "walnut_plugin_calls_total",
            "hook calls made to the plugin",
            "calls",
        ),
        (
            "walnut_plugin_rejects_total",
            "requests the plugin refused or answered itself",
            "rejects",
        ),
    ];
    for (metric, help, field) in counted {
        out.family(metric, "counter", help);
        for &(p, i, pool, label) in &rows {
            out.sample(
                metric,
                &labels(pool, label),
                reg.plugin_totals(p, i).get(field),
            );
        }
    }
    out.family(
        "walnut_plugin_faults_total",
        "counter",
        "hook calls that ran out of time (kind=timeout) or memory (kind=memory), trapped (kind=trap), or broke the plugin ABI (kind=protocol)",
    );
    for &(p, i, pool, label) in &rows {
        let t = reg.plugin_totals(p, i);
        for kind in ["timeout", "memory", "trap", "protocol"] {
            let [a, b, c] = labels(pool, label);
            let value = t.get(&format!("fault_{kind}"));
            out.sample(
                "walnut_plugin_faults_total",
                &[a, b, c, ("kind", kind)],
                value,
            );
        }
    }
    out.family(
        "walnut_plugin_hook_duration_seconds",
        "histogram",
        "time of one hook call into the plugin",
    );
    for &(p, i, pool, label) in &rows {
        let sum = reg.hook_latency(p, i);
        out.histogram(
            "walnut_plugin_hook_duration_seconds",
            &labels(pool, label),
            &sum,
        );
    }
}

/// The metrics proxy-wasm filters defined (`proxy_define_metric`), labelled by pool, filter file
/// and the filter's name for them: counters, gauges, and histograms as summaries (`_sum` and
/// `_count`).
fn filter_metrics(out: &mut Exposition) {
    let all = crate::plugin::proxy_wasm::metrics();
    let families = [
        (
            MetricKind::Counter,
            "walnut_filter_count_total",
            "counter",
            "counters proxy-wasm filters defined",
        ),
        (
            MetricKind::Gauge,
            "walnut_filter_value",
            "gauge",
            "gauges proxy-wasm filters defined",
        ),
        (
            MetricKind::Histogram,
            "walnut_filter_recorded",
            "summary",
            "histograms proxy-wasm filters defined: the values' sum and count",
        ),
    ];
    for (kind, family, type_, help) in families {
        let mut of_kind = all.iter().filter(|m| m.kind == kind).peekable();
        if of_kind.peek().is_none() {
            continue;
        }
        out.family(family, type_, help);
        for m in of_kind {
            let labels = [
                ("pool", m.pool.as_str()),
                ("plugin", m.plugin.as_str()),
                ("name", m.name.as_str()),
            ];
            if kind == MetricKind::Histogram {
                out.sample(&format!("{family}_sum"), &labels, m.value());
                out.sample(&format!("{family}_count"), &labels, m.count());
            } else {
                out.sample(family, &labels, m.value());
            }
        }
    }
}

fn labels<'a>(pool: &'a str, label: &'a PluginLabel) -> [(&'static str, &'a str); 3] {
    [
        ("pool", pool),
        ("scope", label.scope.as_str()),
        ("plugin", label.name.as_str()),
    ]
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a metric family: its HELP and TYPE lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.text.push('{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (i, (name, value)) in all.enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{name}=\"{}\"", escape_label(value));
        }
        self.text.push('}');
    }

    /// A histogram's cumulative `_bucket` lines, `_sum` (seconds) and `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSum) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in h.buckets.iter().enumerate() {
            cumulative += count;
            let le = match h.bounds.get(i) {
                Some(&ns) => seconds(ns),
                None => "+Inf".to_owned(),
            };
            self.text.push_str(&bucket);
            self.labels(labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let _ = write!(self.text, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {}", h.sum_ns as f64 / 1e9);
        let _ = write!(self.text, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {cumulative}");
    }
}

/// Nanoseconds as a decimal number of seconds (`0.00005`).
fn seconds(ns: u64) -> String {
    (ns as f64 / 1e9).to_string()
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and newline escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Histogram, REQUEST_BOUNDS_NS};

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut e = Exposition::default();
        e.sample("m", &[("pool", "p\"1")], 3);
        assert_eq!(e.text, "m{pool=\"p\\\"1\"} 3\n");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_in_inf() {
        let h = Histogram::new(REQUEST_BOUNDS_NS);
        h.observe_ns(40_000);
        h.observe_ns(60_000);
        h.observe_ns(20_000_000_000);
        let sum = HistogramSum::of(REQUEST_BOUNDS_NS, [&h].into_iter());
        let mut e = Exposition::default();
        e.histogram("d", &[("pool", "a")], &sum);
        let lines: Vec<&str> = e.text.lines().collect();
        assert_eq!(lines[0], "d_bucket{pool=\"a\",le=\"0.00005\"} 1");
        assert_eq!(lines[1], "d_bucket{pool=\"a\",le=\"0.0001\"} 2");
        assert_eq!(
            lines[REQUEST_BOUNDS_NS.len()],
            "d_bucket{pool=\"a\",le=\"+Inf\"} 3"
        );
        assert_eq!(
            lines[REQUEST_BOUNDS_NS.len() - 1],
            "d_bucket{pool=\"a\",le=\"10\"} 2"
        );
        assert_eq!(lines[lines.len() - 2], "d_sum{pool=\"a\"} 20.0001");
        assert_eq!(lines[lines.len() - 1], "d_count{pool=\"a\"} 3");
    }
}
