//! Why a key goes where it goes: the route explanation behind the admin listener's `/route`
//! and `walnut route`. It runs the request's plugins and then `PoolShared::place_traced`, the
//! very function every request is placed by, recording each step on the way.

use super::PoolShared;
use crate::memcache::request::check_key;
use crate::plugin::chain::{Decision, Trace};
use crate::plugin::{PoolPlugins, Verdict};
use crate::ring::{Located, Ring, Spot};
use crate::stats::PoolStats;

use super::place::{PlaceTrace, Unplaced};

/// One plugin's decision, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The plugin's number among the pool's (`PoolChains::labels`).
    pub plugin: usize,
    /// `skipped`, `continue`, `rewrote`, `rejected`, `hash`, `server`, `responded`, `edited`
    /// or `failed`.
    pub decision: &'static str,
    /// What it decided on: the new key, the bytes to hash, the server, the message.
    pub detail: String,
}

impl Step {
    pub fn of(plugin: usize, decision: Decision<'_>) -> Step {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (decision, detail) = match decision {
            Decision::Skipped => ("skipped", "does not implement this hook".to_owned()),
            Decision::Continue => ("continue", String::new()),
            Decision::Rewrote(key) => ("rewrote", text(key)),
            Decision::Rejected(message) => ("rejected", text(message)),
            Decision::Hash(bytes) => ("hash", text(bytes)),
            Decision::Server(name) => ("server", text(name)),
            Decision::Responded(status) => ("responded", status.to_string()),
            Decision::Edited => ("edited", String::new()),
            Decision::Failed(fault, policy) => ("failed", format!("{fault} ({policy:?})")),
        };
        Step {
            plugin,
            decision,
            detail,
        }
    }
}

/// Records plugin decisions.
#[derive(Default)]
pub struct Steps(pub Vec<Step>);

impl Trace for Steps {
    fn decided(&mut self, plugin: usize, decision: Decision<'_>) {
        self.0.push(Step::of(plugin, decision));
    }
}

/// The ring's part in a placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingStep {
    pub hashed: Vec<u8>,
    pub hash: u32,
    pub spot: Spot,
}

impl RingStep {
    fn of(located: Located<'_>) -> RingStep {
        RingStep {
            hashed: located.hashed.to_vec(),
            hash: located.hash,
            spot: located.spot,
        }
    }
}

/// A server a plugin named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    /// Its index, when the pool has a server of that name.
    pub server: Option<usize>,
    pub ejected: bool,
}

/// Everything `place_traced` did, as it did it.
struct Recorder<'p> {
    shared: &'p PoolShared,
    steps: Steps,
    named: Option<Named>,
    ring: Option<RingStep>,
}

impl Trace for Recorder<'_> {
    fn decided(&mut self, plugin: usize, decision: Decision<'_>) {
        self.steps.decided(plugin, decision);
    }
}

impl PlaceTrace for Recorder<'_> {
    fn named(&mut self, name: &str, server: Option<usize>, ejected: bool) {
        self.named = Some(Named {
            name: name.to_owned(),
            server,
            ejected,
        });
    }

    fn ring(&mut self, ring: &Ring, bytes: &[u8]) {
        let cfg = &self.shared.config;
        self.ring = Some(RingStep::of(ring.explain(cfg.hash, cfg.hash_tag, bytes)));
    }
}

/// Where one memcached key goes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub command: String,
    pub key: Vec<u8>,
    /// The route (key prefix) whose plugins ran after the pool's, for the client's key.
    pub route: Option<Vec<u8>>,
    /// The request hook's decisions, in chain order.
    pub request: Vec<Step>,
    /// A refusal's message, or that a `fail_closed` plugin failed: then the key goes nowhere.
    pub refused: Option<String>,
    /// The key sent to the server (the client's, or a plugin's rewrite).
    pub sent_key: Vec<u8>,
    /// The route whose hash hooks ran, for the sent key.
    pub place_route: Option<Vec<u8>>,
    /// The hash hook's decisions.
    pub placement: Vec<Step>,
    pub named: Option<Named>,
    /// The ring's part (absent when a plugin's named server was taken).
    pub ring: Option<RingStep>,
    /// The server chosen (`None`: no server is live, or the distribution is random).
    pub server: Option<usize>,
}

/// Why a key cannot be explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey(pub &'static str);

impl PoolShared {
    /// Explains where `command key` goes, with `plugins` (instances of this pool's plugins,
    /// not a worker's) counting into the throwaway `stats`.
    pub fn explain(
        &self,
        plugins: Option<&mut PoolPlugins>,
        command: &str,
        key: &[u8],
        stats: &PoolStats,
    ) -> Result<Explanation, BadKey> {
        if check_key(key).is_err() {
            return Err(BadKey(
                "not a memcached key: 1 to 250 bytes, no spaces or control characters",
            ));
        }
        let mut e = Explanation {
            command: command.to_owned(),
            key: key.to_vec(),
            route: self.plugins.route_for(key).map(<[u8]>::to_vec),
            request: Vec::new(),
            refused: None,
            sent_key: key.to_vec(),
            place_route: None,
            placement: Vec::new(),
            named: None,
            ring: None,
            server: None,
        };
        let mut plugins = plugins;
        if let Some(plugins) = plugins.as_deref_mut() {
            let mut steps = Steps::default();
            let req = walnut_sdk::abi::McRequest {
                command: command.as_bytes(),
                key,
                flags: 0,
                exptime: 0,
                value_len: 0,
                meta_flags: b"",
            };
            let verdict = plugins.request_traced(&req, false, stats, &mut steps);
            e.request = steps.0;
            match verdict {
                Verdict::Continue(Some(new_key)) => e.sent_key = new_key,
                Verdict::Continue(None) => {}
                Verdict::Reject(message) => e.refused = Some(format!("rejected: {message}")),
                Verdict::Failed => e.refused = Some("a fail_closed plugin failed".into()),
            }
            if e.refused.is_some() {
                return Ok(e);
            }
        }
        e.place_route = self.plugins.route_for(&e.sent_key).map(<[u8]>::to_vec);
        let mut recorder = Recorder {
            shared: self,
            steps: Steps::default(),
            named: None,
            ring: None,
        };
        let placed = self.place_traced(plugins, &e.sent_key, stats, &mut recorder);
        if placed == Err(Unplaced::PluginFailed) {
            e.refused = Some("a fail_closed plugin failed while placing it".into());
        }
        e.server = placed.ok();
        e.placement = recorder.steps.0;
        e.named = recorder.named;
        e.ring = recorder.ring;
        Ok(e)
    }
}
