//! Counters, kept per worker without locks, and nutcracker's stats JSON built from their sum.

mod histogram;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use histogram::{HOOK_BOUNDS_NS, Histogram, HistogramSum, REQUEST_BOUNDS_NS};

/// A counter written by one worker thread only and read by the stats thread: a plain load and
/// store, no locked read-modify-write on the hot path.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    pub fn incr(&self) {
        self.add(1);
    }
    pub fn decr(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($field:ident: $desc:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name { $(#[doc = $desc] pub $field: Counter,)* }
        impl $name {
            /// Field names with nutcracker's descriptions, in nutcracker's order.
            pub const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($field), $desc)),*];
            fn values(&self) -> impl Iterator<Item = u64> + '_ { [$(self.$field.get()),*].into_iter() }
        }
    };
}

counters!(
    /// One pool's counters in one worker.
    PoolCounters {
        client_eof: "# eof on client connections",
        client_err: "# errors on client connections",
        client_connections: "# active client connections",
        server_ejects: "# times backend server was ejected",
        forward_error: "# times we encountered a forwarding error",
        fragments: "# fragments created from a multi-vector request",
        plugin_errors: "# plugin calls that trapped, ran out of time or memory (walnut)",
    }
);

counters!(
    /// One server's counters in one worker.
    ServerCounters {
        server_eof: "# eof on server connections",
        server_err: "# errors on server connections",
        server_timedout: "# timeouts on server connections",
        server_connections: "# active server connections",
        server_ejected_at: "timestamp when server was ejected in usec since epoch",
        requests: "# requests",
        request_bytes: "total request bytes",
        responses: "# responses",
        response_bytes: "total response bytes",
        in_queue: "# requests in incoming queue",
        in_queue_bytes: "current request bytes in incoming queue",
        out_queue: "# requests in outgoing queue",
        out_queue_bytes: "current request bytes in outgoing queue",
    }
);

counters!(
    /// One plugin's counters in one worker.
    PluginCounters {
        calls: "# hook calls",
        rejects: "# requests the plugin refused or answered itself",
        rewrites: "# keys, values and HTTP heads the plugin changed",
        fault_timeout: "# calls that ran past the time budget",
        fault_memory: "# calls that grew past the memory cap",
        fault_trap: "# calls that trapped",
        fault_protocol: "# calls answered against the plugin ABI (or instantiations that failed)",
    }
);

/// One plugin's counters and hook-call latency in one worker.
#[derive(Debug)]
pub struct PluginStats {
    pub counters: PluginCounters,
    pub hook: Histogram,
}

impl Default for PluginStats {
    fn default() -> PluginStats {
        PluginStats {
            counters: PluginCounters::default(),
            hook: Histogram::new(HOOK_BOUNDS_NS),
        }
    }
}

/// Counters that are set, not summed, across workers (a timestamp).
const MAX_NOT_SUM: &[&str] = &["server_ejected_at"];

/// One pool's counters in one worker, with its servers' and its plugins'.
#[derive(Debug)]
/// Each part is shared, so a reload keeps the counters of the pool, servers and plugins that
/// stay (see [`PoolStats::carried`]).
pub struct PoolStats {
    pub pool: Arc<PoolCounters>,
    pub servers: Vec<Arc<ServerCounters>>,
    /// Each request's time in walnut, from decoded to its reply handed to the client's socket.
    pub latency: Arc<Histogram>,
    /// Indexed as the pool's plugins are numbered (`PoolChains::labels`).
    pub plugins: Vec<Arc<PluginStats>>,
}

impl PoolStats {
    pub fn new(servers: usize) -> PoolStats {
        PoolStats::with_plugins(servers, 0)
    }

    pub fn with_plugins(servers: usize, plugins: usize) -> PoolStats {
        PoolStats {
            pool: Arc::default(),
            servers: (0..servers).map(|_| Arc::default()).collect(),
            latency: Arc::new(Histogram::new(REQUEST_BOUNDS_NS)),
            plugins: (0..plugins).map(|_| Arc::default()).collect(),
        }
    }

    /// The counters of a pool named `names` after a reload: those of the pool, and of each
    /// server and plugin, that `old` (the pool of that name before, with its names) already
    /// counted go on; the rest start at zero.
    pub fn carried(names: &PoolNames, old: Option<(&PoolStats, &PoolNames)>) -> PoolStats {
        let Some((old, old_names)) = old else {
            return PoolStats::with_plugins(names.servers.len(), names.plugins.len());
        };
        let servers = names.servers.iter().map(|name| {
            let at = old_names.servers.iter().position(|n| n == name);
            at.map_or_else(Arc::default, |i| Arc::clone(&old.servers[i]))
        });
        let plugins = names.plugins.iter().map(|label| {
            let at = old_names.plugins.iter().position(|l| l == label);
            at.map_or_else(Arc::default, |i| Arc::clone(&old.plugins[i]))
        });
        PoolStats {
            pool: Arc::clone(&old.pool),
            servers: servers.collect(),
            latency: Arc::clone(&old.latency),
            plugins: plugins.collect(),
        }
    }
}

/// Process-wide connection counters (the stats document's top level).
#[derive(Debug, Default)]
pub struct ProcessCounters {
    pub total_connections: AtomicU64,
    pub curr_connections: AtomicU64,
    /// Reloads that took effect, and reloads refused (the running config kept).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// The names the document shows: each pool with its servers, in config order.
#[derive(Debug, Clone)]
pub struct PoolNames {
    pub name: String,
    pub servers: Vec<String>,
    /// The pool's plugins, numbered as their counters are.
    pub plugins: Vec<PluginLabel>,
}

/// How a plugin is named in metrics: where it runs and its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLabel {
    /// `pool`, `route PREFIX` or `location MATCH`.
    pub scope: String,
    /// The file name, with `#N` added when the same file runs twice in one scope.
    pub name: String,
}

/// Everything the stats endpoint reads.
#[derive(Debug)]
pub struct Registry {
    pub started: Instant,
    pub source: String,
    /// Shared by every registry a reload makes: the process's counters go on.
    pub process: Arc<ProcessCounters>,
    pub pools: Vec<PoolNames>,
    /// `workers[w][p]`: pool `p`'s counters in worker `w`.
    pub workers: Vec<Vec<Arc<PoolStats>>>,
}

impl Registry {
    pub fn new(pools: Vec<PoolNames>, workers: usize) -> Registry {
        let workers = (0..workers)
            .map(|_| {
                pools
                    .iter()
                    .map(|p| Arc::new(PoolStats::with_plugins(p.servers.len(), p.plugins.len())))
                    .collect()
            })
            .collect();
        Registry {
            started: Instant::now(),
            source: crate::process::hostname(),
            process: Arc::default(),
            pools,
            workers,
        }
    }

    /// The registry for the pools of a reloaded config: pools matched by name keep their
    /// counters (see [`PoolStats::carried`]), the process's counters and start go on.
    pub fn succeed(&self, pools: Vec<PoolNames>) -> Registry {
        let workers = self
            .workers
            .iter()
            .map(|old| {
                pools
                    .iter()
                    .map(|names| {
                        let at = self.pools.iter().position(|n| n.name == names.name);
                        let old = at.map(|p| (&*old[p], &self.pools[p]));
                        Arc::new(PoolStats::carried(names, old))
                    })
                    .collect()
            })
            .collect();
        Registry {
            started: self.started,
            source: self.source.clone(),
            process: Arc::clone(&self.process),
            pools,
            workers,
        }
    }

    /// Client connections open on pool `pool`, across workers.
    pub fn clients(&self, pool: usize) -> u64 {
        self.workers
            .iter()
            .map(|w| w[pool].pool.client_connections.get())
            .sum()
    }

    /// Pool `p`'s counters summed over workers.
    pub fn pool_totals(&self, p: usize) -> Totals {
        let values = sum(
            self.workers.iter().map(|w| w[p].pool.values()),
            PoolCounters::FIELDS,
        );
        Totals::new(PoolCounters::FIELDS, values)
    }

    /// Server `s` of pool `p`, its counters summed over workers.
    pub fn server_totals(&self, p: usize, s: usize) -> Totals {
        let values = sum(
            self.workers.iter().map(|w| w[p].servers[s].values()),
            ServerCounters::FIELDS,
        );
        Totals::new(ServerCounters::FIELDS, values)
    }

    /// Plugin `i` of pool `p`, its counters summed over workers.
    pub fn plugin_totals(&self, p: usize, i: usize) -> Totals {
        let values = sum(
            self.workers
                .iter()
                .map(|w| w[p].plugins[i].counters.values()),
            PluginCounters::FIELDS,
        );
        Totals::new(PluginCounters::FIELDS, values)
    }

    /// Pool `p`'s request latency over workers.
    pub fn latency(&self, p: usize) -> HistogramSum {
        HistogramSum::of(
            REQUEST_BOUNDS_NS,
            self.workers.iter().map(|w| &*w[p].latency),
        )
    }

    /// Plugin `i` of pool `p`: its hook-call latency over workers.
    pub fn hook_latency(&self, p: usize, i: usize) -> HistogramSum {
        HistogramSum::of(
            HOOK_BOUNDS_NS,
            self.workers.iter().map(|w| &w[p].plugins[i].hook),
        )
    }

    /// nutcracker's stats JSON: the same fields, pools and servers by name.
    pub fn render_json(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = String::with_capacity(1024);
        let _ = write!(
            out,
            "{{\"service\":\"nutcracker\", \"source\":{}, \"version\":\"0.5.0\", \"walnut_version\":\"{}\", \"uptime\":{}, \"timestamp\":{}, \"total_connections\":{}, \"curr_connections\":{}, \"reloads\":{}, \"reload_failures\":{}",
            json_string(&self.source),
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs(),
            now,
            self.process.total_connections.load(Ordering::Relaxed),
            self.process.curr_connections.load(Ordering::Relaxed),
            self.process.reloads.load(Ordering::Relaxed),
            self.process.reload_failures.load(Ordering::Relaxed),
        );
        for (p, names) in self.pools.iter().enumerate() {
            let _ = write!(out, ", {}: {{", json_string(&names.name));
            let sums = sum(
                self.workers.iter().map(|w| w[p].pool.values()),
                PoolCounters::FIELDS,
            );
            write_fields(&mut out, PoolCounters::FIELDS, &sums);
            self.write_plugins(&mut out, p, names);
            for (s, server) in names.servers.iter().enumerate() {
                let sums = sum(
                    self.workers.iter().map(|w| w[p].servers[s].values()),
                    ServerCounters::FIELDS,
                );
                let _ = write!(out, ", {}: {{", json_string(server));
                write_fields(&mut out, ServerCounters::FIELDS, &sums);
                out.push('}');
            }
            out.push('}');
        }
        out.push_str("}\n");
        out
    }

    /// Pool `p`'s plugins' counters as flat pool fields, `"plugin:<scope>:<file>:<counter>"`
    /// (the hook time summed in `hook_us`): a tool that reads nutcracker's document takes
    /// them as more pool counters, as it takes `plugin_errors`, never as servers.
    fn write_plugins(&self, out: &mut String, p: usize, names: &PoolNames) {
        for (i, label) in names.plugins.iter().enumerate() {
            let totals = self.plugin_totals(p, i);
            let prefix = format!("plugin:{}:{}:", label.scope, label.name);
            for ((field, _), v) in PluginCounters::FIELDS.iter().zip(&totals.values) {
                let _ = write!(out, ", {}:{v}", json_string(&format!("{prefix}{field}")));
            }
            let hook_us = self.hook_latency(p, i).sum_ns / 1000;
            let _ = write!(
                out,
                ", {}:{hook_us}",
                json_string(&format!("{prefix}hook_us"))
            );
        }
    }

    /// memcached-style `STAT` lines for the `stats` command, answered by walnut itself.
    pub fn render_memcached(&self, pool: usize) -> String {
        let mut out = String::with_capacity(512);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stat = |out: &mut String, k: &str, v: &dyn std::fmt::Display| {
            let _ = write!(out, "STAT {k} {v}\r\n");
        };
        stat(&mut out, "pid", &std::process::id());
        stat(&mut out, "uptime", &self.started.elapsed().as_secs());
        stat(&mut out, "time", &now);
        stat(&mut out, "version", &crate::VERSION_LINE);
        stat(&mut out, "threads", &self.workers.len());
        stat(
            &mut out,
            "curr_connections",
            &self.process.curr_connections.load(Ordering::Relaxed),
        );
        stat(
            &mut out,
            "total_connections",
            &self.process.total_connections.load(Ordering::Relaxed),
        );
        if let Some(names) = self.pools.get(pool) {
            stat(&mut out, "pool", &names.name);
            let sums = sum(
                self.workers.iter().map(|w| w[pool].pool.values()),
                PoolCounters::FIELDS,
            );
            for ((k, _), v) in PoolCounters::FIELDS.iter().zip(&sums) {
                stat(&mut out, k, v);
            }
            for (s, server) in names.servers.iter().enumerate() {
                let sums = sum(
                    self.workers.iter().map(|w| w[pool].servers[s].values()),
                    ServerCounters::FIELDS,
                );
                for ((k, _), v) in ServerCounters::FIELDS.iter().zip(&sums) {
                    stat(&mut out, &format!("{server}:{k}"), v);
                }
            }
        }
        out.push_str("END\r\n");
        out
    }
}

/// Counters summed over workers, read by field name.
#[derive(Debug, Clone)]
pub struct Totals {
    fields: &'static [(&'static str, &'static str)],
    values: Vec<u64>,
}

impl Totals {
    fn new(fields: &'static [(&'static str, &'static str)], values: Vec<u64>) -> Totals {
        Totals { fields, values }
    }

    /// The value of field `name` (a field of the counters it was summed from).
    pub fn get(&self, name: &str) -> u64 {
        let at = self.fields.iter().position(|(n, _)| *n == name);
        debug_assert!(at.is_some(), "no counter {name}");
        at.map_or(0, |i| self.values[i])
    }
}

/// Sums per-worker values field by field (timestamps take the latest instead).
fn sum<I: Iterator<Item = u64>>(
    workers: impl Iterator<Item = I>,
    fields: &[(&str, &str)],
) -> Vec<u64> {
    let mut sums = vec![0u64; fields.len()];
    for values in workers {
        for ((s, v), (name, _)) in sums.iter_mut().zip(values).zip(fields) {
            if MAX_NOT_SUM.contains(name) {
                *s = (*s).max(v);
            } else {
                *s = s.wrapping_add(v);
            }
        }
    }
    sums
}

fn write_fields(out: &mut String, fields: &[(&str, &str)], values: &[u64]) {
    for (i, ((name, _), v)) in fields.iter().zip(values).enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}\"{name}\":{v}");
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text `nutcracker -D` prints, with walnut's name.
pub fn describe() -> String {
    let mut out = String::from("pool stats:\n");
    for (k, d) in PoolCounters::FIELDS {
        let _ = writeln!(out, "  {k:<20}\"{d}\"");
    }
    out.push_str("\nserver stats:\n");
    for (k, d) in ServerCounters::FIELDS {
        let _ = writeln!(out, "  {k:<20}\"{d}\"");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_nutcrackers_shape_and_sums_workers() {
        let reg = Registry::new(
            vec![PoolNames {
                name: "alpha".into(),
                servers: vec!["one".into(), "127.0.0.1:11212".into()],
                plugins: Vec::new(),
            }],
            2,
        );
        reg.workers[0][0].servers[1].requests.add(3);
        reg.workers[1][0].servers[1].requests.add(4);
        reg.workers[1][0].pool.fragments.incr();
        let json = reg.render_json();
        assert!(
            json.starts_with("{\"service\":\"nutcracker\", \"source\":"),
            "{json}"
        );
        assert!(json.contains("\"alpha\": {\"client_eof\":0, \"client_err\":0, \"client_connections\":0, \"server_ejects\":0, \"forward_error\":0, \"fragments\":1, \"plugin_errors\":0, \"one\": {\"server_eof\":0"), "{json}");
        assert!(json.contains("\"127.0.0.1:11212\": {\"server_eof\":0, \"server_err\":0, \"server_timedout\":0, \"server_connections\":0, \"server_ejected_at\":0, \"requests\":7,"), "{json}");
    }
}
