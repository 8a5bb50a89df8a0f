//! The body phases of proxy-wasm filters: each piece of a request body (on its way upstream)
//! or a response body (on its way to the client) goes through the filters of the request's
//! chain. A filter sees what it held back so far and the new piece, may change it, and passes
//! it on or holds it back (pauses) until more comes; it may answer a request locally from the
//! request body phase. What a filter holds is bounded by its memory cap, and a body whose
//! length its head promised keeps that length (`set_buffer_bytes` refuses a change).

use super::body::Tap;
use super::plugins::{LocalAnswer, local_answer};
use crate::plugin::chain::{PoolPlugins, Slot, contain, location_chain};
use crate::plugin::{BodyAction, Hook, RequestTag};
use crate::stats::PoolStats;

/// Why a body phase stopped a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyStop {
    /// A filter answered the request locally (request body only).
    Respond(LocalAnswer),
    /// A `fail_closed` filter failed.
    Failed,
    /// A filter held back more than its memory cap.
    TooLarge,
}

/// The body phases' state for one body: what each filter of the chain holds back (paused on),
/// and what passed the whole chain last; reused from body to body.
#[derive(Debug, Default)]
pub struct BodyStages {
    held: Vec<Vec<u8>>,
    passed: Vec<u8>,
}

impl BodyStages {
    /// Forgets a body: nothing is held.
    pub fn clear(&mut self) {
        self.held.iter_mut().for_each(Vec::clear);
        self.passed.clear();
    }

    /// The most bytes one of its buffers can hold without growing.
    pub fn capacity(&self) -> usize {
        let held = self.held.iter().map(Vec::capacity);
        held.chain([self.passed.capacity()]).max().unwrap_or(0)
    }

    /// The bytes that passed the whole chain in the last `http_body`.
    pub fn passed(&self) -> &[u8] {
        &self.passed
    }
}

/// A body as its phases see it: whose it is, which one, and what a filter may do to it.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    pub location: Option<usize>,
    pub tag: RequestTag,
    /// The response's body (else the request's).
    pub response: bool,
    /// The body's length is promised (Content-Length): a filter may not change it.
    pub fixed: bool,
    /// The pool keeps header names with `_` (for a local answer's headers).
    pub underscores: bool,
}

impl PoolPlugins {
    /// Runs the body phases of the proxy-wasm filters of the pool's chain and the body's
    /// location's on its next bytes, `data` (`end`: the body ends with them); a request body
    /// in chain order, a response body reversed. Each filter gets what it held back and what
    /// the filters before it passed on; what passes the last one is `stages.passed()` (nothing
    /// while one holds the body back).
    pub fn http_body(
        &mut self,
        body: &Body,
        (data, end): (&[u8], bool),
        stages: &mut BodyStages,
        stats: &PoolStats,
    ) -> Result<(), BodyStop> {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        let chain = location_chain(pool, routes, body.location);
        stages.passed.clear();
        stages.passed.extend_from_slice(data);
        match body.response {
            false => run_body(chain, pool_name, body, end, stages, stats),
            true => run_body(chain.rev(), pool_name, body, end, stages, stats),
        }
    }
}

/// `PoolPlugins::http_body` over `chain`, in its order, the new bytes in `stages.passed`.
fn run_body<'a>(
    chain: impl Iterator<Item = &'a mut Slot>,
    pool_name: &str,
    body: &Body,
    end: bool,
    stages: &mut BodyStages,
    stats: &PoolStats,
) -> Result<(), BodyStop> {
    let hook = match body.response {
        false => Hook::HttpRequestBody,
        true => Hook::HttpResponseBody,
    };
    let cur = &mut stages.passed;
    for (k, slot) in chain.enumerate() {
        if !slot.is_proxy_wasm() {
            continue;
        }
        if stages.held.len() <= k {
            stages.held.resize_with(k + 1, Vec::new);
        }
        let held = &mut stages.held[k];
        if held.is_empty() {
            std::mem::swap(held, cur);
        } else {
            held.extend_from_slice(cur);
            cur.clear();
        }
        let fault = match slot.http_body(body.tag, hook, held, end, body.fixed, stats) {
            Ok(BodyAction::Continue) => {
                std::mem::swap(held, cur);
                continue;
            }
            Ok(BodyAction::Pause) if held.len() > slot.compiled.memory_max => {
                tracing::warn!(pool = pool_name, plugin = %slot.compiled.name, held = held.len(), "proxy-wasm filter held back more body than its memory cap (memory_max_mb)");
                return Err(BodyStop::TooLarge);
            }
            Ok(BodyAction::Pause) => return Ok(()),
            // Only from a request body: `send_local_response` is refused once a response is
            // under way.
            Ok(BodyAction::Respond(out)) => match local_answer(&out, body.underscores) {
                Ok(answer) => {
                    slot.rejected(stats);
                    return Err(BodyStop::Respond(answer));
                }
                Err(fault) => fault,
            },
            Err(fault) => fault,
        };
        if !contain(slot, pool_name, &fault, stats) {
            return Err(BodyStop::Failed);
        }
        // `fail_open`: what it held goes on as it is.
        std::mem::swap(held, cur);
    }
    Ok(())
}

/// The body phases as a relay's tap: each piece a relay reads goes through the filters, and
/// what passes them is written.
pub struct Filtered<'a> {
    pub plugins: &'a std::cell::RefCell<PoolPlugins>,
    pub stages: &'a mut BodyStages,
    pub stats: &'a PoolStats,
    pub body: Body,
    /// Why the body stopped, once it did.
    pub stop: Option<BodyStop>,
}

impl Tap for Filtered<'_> {
    fn pass(&mut self, data: &[u8], end: bool) -> Option<&[u8]> {
        let ran =
            self.plugins
                .borrow_mut()
                .http_body(&self.body, (data, end), self.stages, self.stats);
        match ran {
            Ok(()) => Some(self.stages.passed()),
            Err(stop) => {
                self.stop = Some(stop);
                None
            }
        }
    }
}
