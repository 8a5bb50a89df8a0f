//! The memcached hooks over a pool's chain: a request (its key may be rewritten), where its key
//! goes, the value a storage request carries, and each value a retrieval reads back. What a
//! plugin answers is checked here before walnut uses it: a rewritten key is one memcached
//! takes, a value fits `item_size_max`; anything else is the plugin's fault.

use walnut_sdk::abi::{self, code};

use super::chain::{Decision, Placement, PoolPlugins, Slot, Trace, Verdict, chain, contain};
use super::{Fault, Hook};
use crate::memcache::request::{MAX_KEY_LEN, check_key};
use crate::memcache::rewrite::HookFailed;
use crate::stats::PoolStats;

/// A replaced value: its client flags and bytes.
pub type NewValue = (u32, Vec<u8>);

/// Whether `key` may replace a request's key: one memcached takes as a key, or for a base64
/// key (meta `b`) 1 to 186 bytes of anything, whose encoding fits memcached's 250.
fn check_new_key(key: &[u8], base64: bool) -> Result<(), Fault> {
    let fits = match base64 {
        true => !key.is_empty() && 4 * key.len().div_ceil(3) <= MAX_KEY_LEN,
        false => check_key(key).is_ok(),
    };
    match fits {
        true => Ok(()),
        false if base64 => Err(Fault::Protocol(format!(
            "rewrote a base64 key into {} bytes (1 to 186 fit)",
            key.len()
        ))),
        false => Err(Fault::Protocol(
            "rewrote a key into one memcached cannot take (1 to 250 bytes, no spaces or \
             control characters)"
                .into(),
        )),
    }
}

/// A value a plugin answered, checked to fit in `max` bytes.
fn new_value(out: &[u8], max: usize) -> Result<NewValue, Fault> {
    let (flags, data) = abi::decode_new_value(out)
        .ok_or_else(|| Fault::Protocol("sent a malformed value".into()))?;
    if data.len() > max {
        return Err(Fault::Protocol(format!(
            "returned a value of {} bytes, over the pool's item_size_max ({max})",
            data.len()
        )));
    }
    Ok((flags, data.to_vec()))
}

impl PoolPlugins {
    /// Runs the memcached hook over the chain for `req` (its key empty for keyless commands,
    /// decoded when `base64`). Each plugin sees the key as the one before it left it.
    pub fn request(
        &mut self,
        req: &abi::McRequest<'_>,
        base64: bool,
        stats: &PoolStats,
    ) -> Verdict {
        self.request_traced(req, base64, stats, &mut ())
    }

    /// `request`, telling `trace` each plugin's decision.
    pub fn request_traced(
        &mut self,
        req: &abi::McRequest<'_>,
        base64: bool,
        stats: &PoolStats,
        trace: &mut impl Trace,
    ) -> Verdict {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        let mut rewritten: Option<Vec<u8>> = None;
        for slot in chain(pool, routes, req.key) {
            let current = rewritten.as_deref().unwrap_or(req.key);
            let answer = slot.call(Hook::Memcache, stats, |buf| {
                abi::encode_memcache(
                    buf,
                    &abi::McRequest {
                        key: current,
                        ..*req
                    },
                )
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
                Ok(Some((code::REWRITE, _))) if req.key.is_empty() => Fault::Protocol(format!(
                    "rewrote the key of `{}`, which has none",
                    String::from_utf8_lossy(req.command)
                )),
                Ok(Some((code::REWRITE, new_key))) => match check_new_key(&new_key, base64) {
                    Ok(()) => {
                        slot.rewrote(stats);
                        trace.decided(slot.index, Decision::Rewrote(&new_key));
                        rewritten = Some(new_key);
                        continue;
                    }
                    Err(fault) => fault,
                },
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
    /// A failing plugin is passed over under `fail_open` and fails the request under
    /// `fail_closed`.
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
            let open = contain(slot, pool_name, &fault, stats);
            trace.decided(slot.index, Decision::Failed(&fault, slot.compiled.on_error));
            if !open {
                return Placement::Failed;
            }
        }
        Placement::Ring
    }

    /// Runs the store hooks over the chain for the value of a storage request, in chain order;
    /// each sees the value as the one before left it. `Continue(Some(..))` carries the value to
    /// store instead; a value over `max` bytes is the plugin's fault.
    pub fn store(
        &mut self,
        value: &abi::ValueParts<'_>,
        max: usize,
        stats: &PoolStats,
    ) -> Verdict<NewValue> {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        let mut replaced: Option<NewValue> = None;
        for slot in chain(pool, routes, value.key) {
            let answer = call_value(slot, Hook::Store, value, replaced.as_ref(), stats);
            let fault = match answer {
                Ok(None) | Ok(Some((code::CONTINUE, _))) => continue,
                Ok(Some((code::REJECT, message))) => {
                    slot.rejected(stats);
                    return Verdict::Reject(String::from_utf8_lossy(&message).into_owned());
                }
                Ok(Some((code::VALUE, out))) => match new_value(&out, max) {
                    Ok(v) => {
                        slot.rewrote(stats);
                        replaced = Some(v);
                        continue;
                    }
                    Err(fault) => fault,
                },
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to a value being stored"))
                }
                Err(fault) => fault,
            };
            if !contain(slot, pool_name, &fault, stats) {
                return Verdict::Failed;
            }
        }
        Verdict::Continue(replaced)
    }

    /// Runs the value hooks over the chain for a value read back, in reverse chain order (the
    /// plugin that stored a value last undoes its change first). `Ok(Some(..))` is the value
    /// the client gets instead; a value over `max` bytes is the plugin's fault.
    pub fn value(
        &mut self,
        value: &abi::ValueParts<'_>,
        max: usize,
        stats: &PoolStats,
    ) -> Result<Option<NewValue>, HookFailed> {
        let PoolPlugins {
            pool_name,
            pool,
            routes,
        } = self;
        let mut replaced: Option<NewValue> = None;
        for slot in chain(pool, routes, value.key).rev() {
            let answer = call_value(slot, Hook::Value, value, replaced.as_ref(), stats);
            let fault = match answer {
                Ok(None) | Ok(Some((code::CONTINUE, _))) => continue,
                Ok(Some((code::VALUE, out))) => match new_value(&out, max) {
                    Ok(v) => {
                        slot.rewrote(stats);
                        replaced = Some(v);
                        continue;
                    }
                    Err(fault) => fault,
                },
                Ok(Some((other, _))) => {
                    Fault::Protocol(format!("answered code {other} to a value read back"))
                }
                Err(fault) => fault,
            };
            if !contain(slot, pool_name, &fault, stats) {
                return Err(HookFailed);
            }
        }
        Ok(replaced)
    }
}

/// Calls a value hook with `value`, or with the flags and bytes a plugin before replaced.
fn call_value(
    slot: &mut Slot,
    hook: Hook,
    value: &abi::ValueParts<'_>,
    replaced: Option<&NewValue>,
    stats: &PoolStats,
) -> Result<Option<(u32, Vec<u8>)>, Fault> {
    slot.call(hook, stats, |buf| {
        let (flags, data) = replaced.map_or((value.flags, value.data), |(f, d)| (*f, &d[..]));
        abi::encode_value(
            buf,
            &abi::ValueParts {
                flags,
                data,
                ..*value
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_keys_are_checked_as_memcached_would() {
        assert!(check_new_key(b"user:1", false).is_ok());
        assert!(check_new_key(b"a b", false).is_err());
        assert!(check_new_key(b"a\r\nset x", false).is_err());
        assert!(check_new_key(&[b'k'; 251], false).is_err());
        // Decoded base64 keys may hold anything; their encoding must fit in 250 bytes.
        assert!(check_new_key(b"a b\r\n\0", true).is_ok());
        assert!(check_new_key(&[0; 186], true).is_ok());
        assert!(check_new_key(&[0; 187], true).is_err());
        assert!(check_new_key(b"", true).is_err());
    }

    #[test]
    fn values_over_the_limit_are_faults() {
        let mut out = Vec::new();
        abi::encode_new_value(&mut out, 3, b"abcd");
        assert_eq!(new_value(&out, 4).unwrap(), (3, b"abcd".to_vec()));
        assert!(new_value(&out, 3).is_err());
        assert!(new_value(&out[..out.len() - 1], 4).is_err());
    }
}
