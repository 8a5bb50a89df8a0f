//! A pool's plugins in one worker: the pool-wide chain, then the chain of the route whose
//! prefix matches the key (longest wins), each plugin's faults contained by its policy. Every
//! call is counted in its plugin's per-worker counters, and a [`Trace`] may watch each decision.
//! The hooks themselves run in `memcache.rs` and `http.rs`.

use std::sync::Arc;
use std::time::Instant;

use super::proxy_wasm::{BodyAction, Filter, RequestTag};
use super::{Abi, Compiled, Fault, Hook, Instance};
use crate::config::OnError;
use crate::stats::{PluginLabel, PoolStats};

/// A pool's compiled plugins: pool-wide, and per route prefix (longest first).
#[derive(Default, Clone)]
pub struct PoolChains {
    pub pool: Vec<Arc<Compiled>>,
    pub routes: Vec<(Vec<u8>, Vec<Arc<Compiled>>)>,
    /// What a route is called in labels: `route` (memcached key prefixes) or `location`.
    pub scope_kind: &'static str,
}

impl PoolChains {
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty() && self.routes.is_empty()
    }

    /// Every plugin's name for metrics, in the order their counters are numbered: the pool's,
    /// then each route's in `routes` order.
    pub fn labels(&self) -> Vec<PluginLabel> {
        let routes = self.routes.iter().map(|(name, list)| {
            let scope = format!("{} {}", self.scope_kind, String::from_utf8_lossy(name));
            (scope, list)
        });
        let mut labels = Vec::new();
        for (scope, list) in std::iter::once(("pool".to_owned(), &self.pool)).chain(routes) {
            for (i, c) in list.iter().enumerate() {
                let before = list[..i].iter().filter(|o| o.name == c.name).count();
                let name = match before {
                    0 => c.name.clone(),
                    n => format!("{}#{}", c.name, n + 1),
                };
                labels.push(PluginLabel {
                    scope: scope.clone(),
                    name,
                });
            }
        }
        labels
    }

    /// The memcached route whose prefix `key` starts with (the longest), as `PoolPlugins`
    /// chooses it.
    pub fn route_for(&self, key: &[u8]) -> Option<&[u8]> {
        route_index(&self.routes, key).map(|r| &self.routes[r].0[..])
    }
}

/// Watches each plugin's decision while a chain runs. The route explanation records them;
/// `()` watches nothing and compiles to nothing, on the request path.
pub trait Trace {
    /// Plugin `plugin` (numbered as in `PoolChains::labels`) decided `decision`.
    fn decided(&mut self, plugin: usize, decision: Decision<'_>) {
        let _ = (plugin, decision);
    }
}

impl Trace for () {}

/// What one plugin did with one hook call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// It does not implement the hook.
    Skipped,
    Continue,
    /// It rewrote the key to this.
    Rewrote(&'a [u8]),
    /// It refused the request with this message.
    Rejected(&'a [u8]),
    /// It placed the key by hashing these bytes.
    Hash(&'a [u8]),
    /// It placed the key on the server of this name.
    Server(&'a [u8]),
    /// It answered the HTTP request itself with this status.
    Responded(u16),
    /// It changed the HTTP request (path, query, headers or hash key).
    Edited,
    /// It failed; the request goes on (`fail_open`) or fails by the policy.
    Failed(&'a Fault, OnError),
}

/// What the plugins decided: go on (with what they replaced: a key, a value), or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T = Vec<u8>> {
    /// Go on, with what a plugin put instead of the client's, if one did.
    Continue(Option<T>),
    /// A plugin refused: the client gets `CLIENT_ERROR <message>` (HTTP: 403).
    Reject(String),
    /// A `fail_closed` plugin failed: the client gets `SERVER_ERROR plugin failed` (HTTP: 500).
    Failed,
}

/// Where the plugins want a key placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Ring,
    Hash(Vec<u8>),
    Server(String),
    /// A `fail_closed` plugin failed: the request fails.
    Failed,
}

/// One plugin in one worker: its instance, re-created after a fault.
pub(crate) struct Slot {
    pub(crate) compiled: Arc<Compiled>,
    instance: Option<Instance>,
    /// Its number among the pool's plugins: its counters in `PoolStats::plugins`.
    pub(crate) index: usize,
}

impl Slot {
    /// `call` for the HTTP request `tag`: a proxy-wasm filter continues that request's context.
    pub(crate) fn call_http(
        &mut self,
        tag: RequestTag,
        hook: Hook,
        stats: &PoolStats,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Option<(u32, Vec<u8>)>, Fault> {
        if let Some(Instance::ProxyWasm(f)) = &mut self.instance {
            f.tag(tag);
        } else if self.instance.is_none() && self.compiled.abi == Abi::ProxyWasm {
            let mut f = Filter::new(Arc::clone(&self.compiled)).map_err(Fault::Protocol)?;
            f.tag(tag);
            self.instance = Some(Instance::ProxyWasm(Box::new(f)));
        }
        self.call(hook, stats, encode)
    }

    /// A body phase of HTTP request `tag` in a proxy-wasm filter (see `Filter::body`); a walnut
    /// plugin, or a filter whose instance is gone, lets the body pass.
    pub(crate) fn http_body(
        &mut self,
        tag: RequestTag,
        hook: Hook,
        body: &mut Vec<u8>,
        end_of_stream: bool,
        fixed: bool,
        stats: &PoolStats,
    ) -> Result<BodyAction, Fault> {
        let Some(Instance::ProxyWasm(f)) = &mut self.instance else {
            return Ok(BodyAction::Continue);
        };
        if !f.has(hook) {
            return Ok(BodyAction::Continue);
        }
        f.tag(tag);
        let response = hook == Hook::HttpResponseBody;
        timed(
            self.index,
            stats,
            |_| true,
            || f.body(response, body, end_of_stream, fixed),
        )
    }

    /// Ends HTTP request `tag`'s context in a proxy-wasm filter (its `on_done` and `on_log`).
    pub(crate) fn http_done(&mut self, tag: RequestTag, status: u16) -> Result<(), Fault> {
        match &mut self.instance {
            Some(Instance::ProxyWasm(f)) => {
                f.tag(tag);
                f.done(tag.id, status)
            }
            _ => Ok(()),
        }
    }

    /// Whether this is a proxy-wasm filter.
    pub(crate) fn is_proxy_wasm(&self) -> bool {
        self.compiled.abi == Abi::ProxyWasm
    }

    /// Calls `hook`, counting the call and its time when the plugin implements the hook.
    pub(crate) fn call(
        &mut self,
        hook: Hook,
        stats: &PoolStats,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Option<(u32, Vec<u8>)>, Fault> {
        if self.instance.is_none() {
            self.instance =
                Some(Instance::new(Arc::clone(&self.compiled)).map_err(Fault::Protocol)?);
        }
        let instance = self.instance.as_mut().expect("just made");
        if !instance.has(hook) {
            return Ok(None);
        }
        // A hook found unimplemented on its first call is not a call of the plugin's.
        let counts = |answer: &Result<Option<_>, _>| !matches!(answer, Ok(None));
        timed(self.index, stats, counts, || instance.call(hook, encode))
    }

    /// Counts a refusal (or a local answer) by this plugin.
    pub(crate) fn rejected(&self, stats: &PoolStats) {
        if let Some(counters) = stats.plugins.get(self.index) {
            counters.counters.rejects.incr();
        }
    }

    /// Counts a change this plugin made (a key, a value, an HTTP head).
    pub(crate) fn rewrote(&self, stats: &PoolStats) {
        if let Some(counters) = stats.plugins.get(self.index) {
            counters.counters.rewrites.incr();
        }
    }

    /// Whether the plugin may answer `hook` (an instance not made yet may).
    pub(crate) fn may(&self, hook: Hook) -> bool {
        self.instance.as_ref().is_none_or(|i| i.has(hook))
    }
}

/// Runs `call` into plugin `index`, counting it and its time in the plugin's counters when
/// `counts` says its answer was a call. Counters not kept (the route explanation's throwaway
/// stats): no clock either.
fn timed<T>(
    index: usize,
    stats: &PoolStats,
    counts: impl FnOnce(&T) -> bool,
    call: impl FnOnce() -> T,
) -> T {
    let Some(counters) = stats.plugins.get(index) else {
        return call();
    };
    let start = Instant::now();
    let answer = call();
    if counts(&answer) {
        counters.counters.calls.incr();
        counters.hook.observe_since(start);
    }
    answer
}

/// A pool's plugins in one worker.
pub struct PoolPlugins {
    pub(crate) pool_name: String,
    pub(crate) pool: Vec<Slot>,
    pub(crate) routes: Vec<(Vec<u8>, Vec<Slot>)>,
}

/// The slots of `list`, numbered from `*next` on (as `PoolChains::labels` numbers them).
fn slots(list: &[Arc<Compiled>], next: &mut usize) -> Vec<Slot> {
    list.iter()
        .map(|c| {
            *next += 1;
            Slot {
                compiled: Arc::clone(c),
                instance: Instance::new(Arc::clone(c)).ok(),
                index: *next - 1,
            }
        })
        .collect()
}

impl PoolPlugins {
    pub fn new(pool_name: &str, chains: &PoolChains) -> PoolPlugins {
        let mut next = 0;
        PoolPlugins {
            pool_name: pool_name.to_owned(),
            pool: slots(&chains.pool, &mut next),
            routes: chains
                .routes
                .iter()
                .map(|(p, l)| (p.clone(), slots(l, &mut next)))
                .collect(),
        }
    }

    /// True when some plugin of the chain for `key` may answer `hook`.
    pub fn may(&self, hook: Hook, key: &[u8]) -> bool {
        let route = route_index(&self.routes, key).map(|r| &self.routes[r].1);
        self.pool
            .iter()
            .chain(route.into_iter().flatten())
            .any(|s| s.may(hook))
    }

    /// True when some plugin of the pool, on any route, may answer `hook`.
    pub fn may_any(&self, hook: Hook) -> bool {
        self.pool
            .iter()
            .chain(self.routes.iter().flat_map(|(_, r)| r))
            .any(|s| s.may(hook))
    }
}

/// Which of `routes` (longest prefix first) `key` takes: the first whose prefix it starts with.
fn route_index<T>(routes: &[(Vec<u8>, T)], key: &[u8]) -> Option<usize> {
    routes
        .iter()
        .position(|(prefix, _)| key.starts_with(prefix))
}

/// The plugins for `key`: the pool's, then those of the longest route prefix it starts with.
pub(crate) fn chain<'a>(
    pool: &'a mut [Slot],
    routes: &'a mut [(Vec<u8>, Vec<Slot>)],
    key: &[u8],
) -> impl DoubleEndedIterator<Item = &'a mut Slot> {
    let route = route_index(routes, key).map(|r| &mut routes[r].1);
    pool.iter_mut().chain(route.into_iter().flatten())
}

/// The plugins of an HTTP request on `location`: the pool's, then the location's (HTTP pools
/// keep one route per location, in location order).
pub(crate) fn location_chain<'a>(
    pool: &'a mut [Slot],
    routes: &'a mut [(Vec<u8>, Vec<Slot>)],
    location: Option<usize>,
) -> impl DoubleEndedIterator<Item = &'a mut Slot> {
    let route = location.and_then(|l| routes.get_mut(l)).map(|r| &mut r.1);
    pool.iter_mut().chain(route.into_iter().flatten())
}

/// Records a plugin's fault and replaces its instance. Returns true when the request goes on
/// (`fail_open`), false when it fails (`fail_closed`).
pub(crate) fn contain(slot: &mut Slot, pool: &str, fault: &Fault, stats: &PoolStats) -> bool {
    stats.pool.plugin_errors.incr();
    if let Some(counters) = stats.plugins.get(slot.index) {
        let c = &counters.counters;
        match fault {
            Fault::Timeout => c.fault_timeout.incr(),
            Fault::Memory => c.fault_memory.incr(),
            Fault::Trap(_) => c.fault_trap.incr(),
            Fault::Protocol(_) => c.fault_protocol.incr(),
        }
    }
    tracing::warn!(pool, plugin = %slot.compiled.name, reason = %fault, policy = ?slot.compiled.on_error, "plugin failed; its instance is replaced");
    slot.instance = None;
    slot.compiled.on_error == OnError::FailOpen
}
