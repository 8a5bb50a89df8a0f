//! A pool's plugins in one worker: the pool-wide chain, then the chain of the route whose
//! prefix matches the key (longest wins), each plugin's faults contained by its policy.

use std::sync::Arc;

use walnut_sdk::abi::{self, code};

use super::{Compiled, Fault, Hook, Instance};
use crate::config::OnError;
use crate::stats::PoolStats;

/// A pool's compiled plugins: pool-wide, and per route prefix (longest first).
#[derive(Default, Clone)]
pub struct PoolChains {
    pub pool: Vec<Arc<Compiled>>,
    pub routes: Vec<(Vec<u8>, Vec<Arc<Compiled>>)>,
}

impl PoolChains {
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty() && self.routes.is_empty()
    }
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
}

impl Slot {
    fn call(
        &mut self,
        hook: Hook,
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
        instance.call(hook, encode)
    }
}

/// A pool's plugins in one worker.
pub struct PoolPlugins {
    pool_name: String,
    pool: Vec<Slot>,
    routes: Vec<(Vec<u8>, Vec<Slot>)>,
}

fn slots(list: &[Arc<Compiled>]) -> Vec<Slot> {
    list.iter()
        .map(|c| Slot {
            compiled: Arc::clone(c),
            instance: Instance::new(Arc::clone(c)).ok(),
        })
        .collect()
}

impl PoolPlugins {
    pub fn new(pool_name: &str, chains: &PoolChains) -> PoolPlugins {
        PoolPlugins {
            pool_name: pool_name.to_owned(),
            pool: slots(&chains.pool),
            routes: chains
                .routes
                .iter()
                .map(|(p, l)| (p.clone(), slots(l)))
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
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        let mut rewritten: Option<Vec<u8>> = None;
        for slot in chain(pool, routes, key) {
            let current = rewritten.as_deref().unwrap_or(key);
            let answer = slot.call(Hook::Memcache, |buf| {
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
                Ok(None) | Ok(Some((code::CONTINUE, _))) => continue,
                Ok(Some((code::REJECT, message))) => {
                    return Verdict::Reject(String::from_utf8_lossy(&message).into_owned());
                }
                Ok(Some((code::REWRITE, new_key))) => {
                    if crate::memcache::request::check_key(&new_key).is_ok() {
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
            if !contain(slot, pool_name, &fault, stats) {
                return Verdict::Failed;
            }
        }
        Verdict::Continue(rewritten)
    }

    /// Asks the chain's hash hooks where `key` goes; the first answer other than `Ring` wins.
    /// A failing plugin is passed over (placement falls back to the ring).
    pub fn place(&mut self, key: &[u8], stats: &PoolStats) -> Placement {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        for slot in chain(pool, routes, key) {
            let fault = match slot.call(Hook::Hash, |buf| buf.extend_from_slice(key)) {
                Ok(None) | Ok(Some((code::CONTINUE, _))) => continue,
                Ok(Some((code::HASH, bytes))) => return Placement::Hash(bytes),
                Ok(Some((code::SERVER, name))) => {
                    return Placement::Server(String::from_utf8_lossy(&name).into_owned());
                }
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to a hash call"))
                }
                Err(fault) => fault,
            };
            contain(slot, pool_name, &fault, stats);
        }
        Placement::Ring
    }

    /// True when some plugin of the chain for `key` may answer the hash hook.
    pub fn places(&self, key: &[u8]) -> bool {
        let route = self
            .routes
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix))
            .map(|(_, s)| s);
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
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        let route = location.and_then(|l| routes.get_mut(l)).map(|r| &mut r.1);
        for slot in pool.iter_mut().chain(route.into_iter().flatten()) {
            let answer = slot.call(Hook::Http, |buf| {
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
                Ok(None) | Ok(Some((code::CONTINUE, _))) => continue,
                Ok(Some((code::REJECT, message))) => {
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
                        continue;
                    }
                    None => Fault::Protocol("sent malformed HTTP request changes".into()),
                },
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to an HTTP request"))
                }
                Err(fault) => fault,
            };
            if !contain(slot, pool_name, &fault, stats) {
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

/// The plugins for `key`: the pool's, then those of the longest route prefix it starts with.
fn chain<'a>(
    pool: &'a mut [Slot],
    routes: &'a mut [(Vec<u8>, Vec<Slot>)],
    key: &[u8],
) -> impl Iterator<Item = &'a mut Slot> {
    let route = routes
        .iter_mut()
        .find(|(prefix, _)| key.starts_with(prefix))
        .map(|(_, slots)| slots);
    pool.iter_mut().chain(route.into_iter().flatten())
}

/// Records a plugin's fault and replaces its instance. Returns true when the request goes on
/// (`fail_open`), false when it fails (`fail_closed`).
fn contain(slot: &mut Slot, pool: &str, fault: &Fault, stats: &PoolStats) -> bool {
    stats.pool.plugin_errors.incr();
    tracing::warn!(pool, plugin = %slot.compiled.name, reason = %fault, policy = ?slot.compiled.on_error, "plugin failed; its instance is replaced");
    slot.instance = None;
    slot.compiled.on_error == OnError::FailOpen
}
