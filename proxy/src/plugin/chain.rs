//! A pool's plugins in one worker: the pool-wide chain, then the chain of the route whose
//! prefix matches the key (longest wins), each plugin's faults contained by its policy. Every
//! call is counted in its plugin's per-worker counters, and a [`Trace`] may watch each decision.

use std::sync::Arc;
use std::time::Instant;

use walnut_sdk::abi::{self, code};

use super::{Compiled, Fault, Hook, Instance};
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

/// What the plugins decided for one request (one key of a multi-key retrieval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on, with the key to send instead of the client's, if a plugin rewrote it.
    Continue(Option<Vec<u8>>),
    /// A plugin refused: the client gets `CLIENT_ERROR <message>`.
    Reject(String),
    /// A `fail_closed` plugin failed: the client gets `SERVER_ERROR plugin failed`.
    Failed,
}

/// Where the plugins want a key placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Ring,
    Hash(Vec<u8>),
    Server(String),
}

/// One plugin in one worker: its instance, re-created after a fault.
struct Slot {
    compiled: Arc<Compiled>,
    instance: Option<Instance>,
    /// Its number among the pool's plugins: its counters in `PoolStats::plugins`.
    index: usize,
}

impl Slot {
    /// Calls `hook`, counting the call and its time when the plugin implements the hook.
    fn call(
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
        let Some(counters) = stats.plugins.get(self.index) else {
            // Counters not kept (the route explanation's throwaway stats): no clock either.
            return instance.call(hook, encode);
        };
        let start = Instant::now();
        let answer = instance.call(hook, encode);
        // A hook found unimplemented on its first call is not a call of the plugin's.
        if !matches!(answer, Ok(None)) {
            counters.counters.calls.incr();
            counters.hook.observe_since(start);
        }
        answer
    }

    /// Counts a refusal (or a local answer) by this plugin.
    fn rejected(&self, stats: &PoolStats) {
        if let Some(counters) = stats.plugins.get(self.index) {
            counters.counters.rejects.incr();
        }
    }
}

/// A pool's plugins in one worker.
pub struct PoolPlugins {
    pool_name: String,
    pool: Vec<Slot>,
    routes: Vec<(Vec<u8>, Vec<Slot>)>,
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

    /// Runs the memcached hook over the chain for `command` on `key` (empty for keyless
    /// commands). Each plugin sees the key as the one before it left it.
    pub fn request(
        &mut self,
        command: &str,
        key: &[u8],
        storage: (u32, i64, u32),
        stats: &PoolStats,
    ) -> Verdict {
        self.request_traced(command, key, storage, stats, &mut ())
    }

    /// `request`, telling `trace` each plugin's decision.
    pub fn request_traced(
        &mut self,
        command: &str,
        key: &[u8],
        storage: (u32, i64, u32),
        stats: &PoolStats,
        trace: &mut impl Trace,
    ) -> Verdict {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        let mut rewritten: Option<Vec<u8>> = None;
        for slot in chain(pool, routes, key) {
            let current = rewritten.as_deref().unwrap_or(key);
            let answer = slot.call(Hook::Memcache, stats, |buf| {
                let req = abi::McRequest {
                    command: command.as_bytes(),
                    key: current,
                    flags: storage.0,
                    exptime: storage.1,
                    value_len: storage.2,
                    meta_flags: b"",
                };
                abi::encode_memcache(buf, &req)
            });
            let fault = match answer {
                Ok(None) => {
                    trace.decided(slot.index, Decision::Skipped);
                    continue;
                }
                Ok(Some((code::CONTINUE, _))) => {
                    trace.decided(slot.index, Decision::Continue);
                    continue;
                }
                Ok(Some((code::REJECT, message))) => {
                    slot.rejected(stats);
                    trace.decided(slot.index, Decision::Rejected(&message));
                    return Verdict::Reject(String::from_utf8_lossy(&message).into_owned());
                }
                Ok(Some((code::REWRITE, new_key))) => {
                    if crate::memcache::request::check_key(&new_key).is_ok() {
                        trace.decided(slot.index, Decision::Rewrote(&new_key));
                        rewritten = Some(new_key);
                        continue;
                    }
                    Fault::Protocol("rewrote a key into one memcached cannot take".into())
                }
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to a memcached request"))
                }
                Err(fault) => fault,
            };
            let open = contain(slot, pool_name, &fault, stats);
            trace.decided(slot.index, Decision::Failed(&fault, slot.compiled.on_error));
            if !open {
                return Verdict::Failed;
            }
        }
        Verdict::Continue(rewritten)
    }

    /// Asks the chain's hash hooks where `key` goes; the first answer other than `Ring` wins.
    /// A failing plugin is passed over (placement falls back to the ring).
    pub fn place(&mut self, key: &[u8], stats: &PoolStats) -> Placement {
        self.place_traced(key, stats, &mut ())
    }

    /// `place`, telling `trace` each plugin's decision.
    pub fn place_traced(
        &mut self,
        key: &[u8],
        stats: &PoolStats,
        trace: &mut impl Trace,
    ) -> Placement {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        for slot in chain(pool, routes, key) {
            let answer = slot.call(Hook::Hash, stats, |buf| buf.extend_from_slice(key));
            let fault = match answer {
                Ok(None) => {
                    trace.decided(slot.index, Decision::Skipped);
                    continue;
                }
                Ok(Some((code::CONTINUE, _))) => {
                    trace.decided(slot.index, Decision::Continue);
                    continue;
                }
                Ok(Some((code::HASH, bytes))) => {
                    trace.decided(slot.index, Decision::Hash(&bytes));
                    return Placement::Hash(bytes);
                }
                Ok(Some((code::SERVER, name))) => {
                    trace.decided(slot.index, Decision::Server(&name));
                    return Placement::Server(String::from_utf8_lossy(&name).into_owned());
                }
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to a hash call"))
                }
                Err(fault) => fault,
            };
            contain(slot, pool_name, &fault, stats);
            trace.decided(slot.index, Decision::Failed(&fault, OnError::FailOpen));
        }
        Placement::Ring
    }

    /// True when some plugin of the chain for `key` may answer the hash hook.
    pub fn places(&self, key: &[u8]) -> bool {
        let route = route_index(&self.routes, key).map(|r| &self.routes[r].1);
        self.pool
            .iter()
            .chain(route.into_iter().flatten())
            .any(|s| s.instance.as_ref().is_none_or(|i| i.has(Hook::Hash)))
    }
}

impl PoolPlugins {
    /// Whether an HTTP request on `location` runs any plugin (HTTP pools keep one route per
    /// location, in location order).
    pub fn runs_http(&self, location: Option<usize>) -> bool {
        !self.pool.is_empty()
            || location.is_some_and(|l| self.routes.get(l).is_some_and(|r| !r.1.is_empty()))
    }

    /// Runs the HTTP hook over the pool's chain, then `location`'s. Each plugin sees the
    /// request as the ones before it left it; their changes accumulate in `edits`.
    #[allow(clippy::too_many_arguments)]
    pub fn http<'h, I>(
        &mut self,
        location: Option<usize>,
        method: &str,
        path: &[u8],
        query: &[u8],
        headers: impl Fn() -> I,
        edits: &mut HttpEdits,
        stats: &PoolStats,
    ) -> HttpVerdict
    where
        I: Iterator<Item = (&'h [u8], &'h [u8])>,
    {
        self.http_traced(
            location,
            method,
            path,
            query,
            headers,
            edits,
            stats,
            &mut (),
        )
    }

    /// `http`, telling `trace` each plugin's decision.
    #[allow(clippy::too_many_arguments)]
    pub fn http_traced<'h, I>(
        &mut self,
        location: Option<usize>,
        method: &str,
        path: &[u8],
        query: &[u8],
        headers: impl Fn() -> I,
        edits: &mut HttpEdits,
        stats: &PoolStats,
        trace: &mut impl Trace,
    ) -> HttpVerdict
    where
        I: Iterator<Item = (&'h [u8], &'h [u8])>,
    {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        let route = location.and_then(|l| routes.get_mut(l)).map(|r| &mut r.1);
        for slot in pool.iter_mut().chain(route.into_iter().flatten()) {
            let answer = slot.call(Hook::Http, stats, |buf| {
                let mut w = abi::Writer(buf);
                w.bytes(method.as_bytes())
                    .bytes(edits.path.as_deref().unwrap_or(path))
                    .bytes(edits.query.as_deref().unwrap_or(query));
                let count_at = w.0.len();
                w.u16(0);
                let mut n = 0u16;
                for (name, value) in headers().filter(|(name, _)| !edits.edited(name)) {
                    w.bytes(name).bytes(value);
                    n += 1;
                }
                for (name, value) in &edits.headers {
                    if let Some(value) = value {
                        w.bytes(name).bytes(value);
                        n += 1;
                    }
                }
                w.0[count_at..count_at + 2].copy_from_slice(&n.to_le_bytes());
            });
            let fault = match answer {
                Ok(None) => {
                    trace.decided(slot.index, Decision::Skipped);
                    continue;
                }
                Ok(Some((code::CONTINUE, _))) => {
                    trace.decided(slot.index, Decision::Continue);
                    continue;
                }
                Ok(Some((code::REJECT, message))) => {
                    slot.rejected(stats);
                    trace.decided(slot.index, Decision::Rejected(&message));
                    let mut body = message;
                    body.push(b'\n');
                    return HttpVerdict::Respond {
                        status: 403,
                        headers: Vec::new(),
                        body,
                    };
                }
                Ok(Some((code::RESPOND, out))) => match abi::decode_response(&out) {
                    Some(r) if (100..=999).contains(&r.status) => {
                        slot.rejected(stats);
                        trace.decided(slot.index, Decision::Responded(r.status));
                        return HttpVerdict::Respond {
                            status: r.status,
                            headers: r
                                .headers
                                .iter()
                                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                                .collect(),
                            body: r.body.to_vec(),
                        };
                    }
                    _ => Fault::Protocol("sent a malformed HTTP response".into()),
                },
                Ok(Some((code::HTTP_REWRITE, out))) => match abi::decode_http_edits(&out) {
                    Some(e) => {
                        edits.apply(&e);
                        trace.decided(slot.index, Decision::Edited);
                        continue;
                    }
                    None => Fault::Protocol("sent malformed HTTP request changes".into()),
                },
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to an HTTP request"))
                }
                Err(fault) => fault,
            };
            let open = contain(slot, pool_name, &fault, stats);
            trace.decided(slot.index, Decision::Failed(&fault, slot.compiled.on_error));
            if !open {
                return HttpVerdict::Failed;
            }
        }
        HttpVerdict::Continue
    }
}

/// What the plugins decided for an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpVerdict {
    /// Go on (with the changes in the `HttpEdits`).
    Continue,
    /// Answer locally (a refusal is a 403 with the plugin's message).
    Respond {
        status: u16,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// A `fail_closed` plugin failed: the client gets 500.
    Failed,
}

/// The changes plugins made to an HTTP request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HttpEdits {
    pub path: Option<Vec<u8>>,
    pub query: Option<Vec<u8>>,
    /// The last change to each header name: a value to set, or `None` to remove it.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Bytes to choose the upstream server by.
    pub hash_key: Option<Vec<u8>>,
}

impl HttpEdits {
    pub fn clear(&mut self) {
        self.path = None;
        self.query = None;
        self.headers.clear();
        self.hash_key = None;
    }

    /// Whether header `name` was set or removed by a plugin.
    pub fn edited(&self, name: &[u8]) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    fn apply(&mut self, e: &abi::HttpEdits<'_>) {
        if let Some(p) = e.path {
            self.path = Some(p.to_vec());
        }
        if let Some(q) = e.query {
            self.query = Some(q.to_vec());
        }
        if let Some(k) = e.hash_key {
            self.hash_key = Some(k.to_vec());
        }
        for (name, value) in &e.headers {
            let value = value.map(<[u8]>::to_vec);
            match self
                .headers
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some(slot) => slot.1 = value,
                None => self.headers.push((name.to_vec(), value)),
            }
        }
    }
}

/// Which of `routes` (longest prefix first) `key` takes: the first whose prefix it starts with.
fn route_index<T>(routes: &[(Vec<u8>, T)], key: &[u8]) -> Option<usize> {
    routes
        .iter()
        .position(|(prefix, _)| key.starts_with(prefix))
}

/// The plugins for `key`: the pool's, then those of the longest route prefix it starts with.
fn chain<'a>(
    pool: &'a mut [Slot],
    routes: &'a mut [(Vec<u8>, Vec<Slot>)],
    key: &[u8],
) -> impl Iterator<Item = &'a mut Slot> {
    let route = route_index(routes, key).map(|r| &mut routes[r].1);
    pool.iter_mut().chain(route.into_iter().flatten())
}

/// Records a plugin's fault and replaces its instance. Returns true when the request goes on
/// (`fail_open`), false when it fails (`fail_closed`).
fn contain(slot: &mut Slot, pool: &str, fault: &Fault, stats: &PoolStats) -> bool {
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
