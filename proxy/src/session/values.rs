//! Values read back on their way to the client, through the pool's value hooks: each `VALUE`
//! block of a classic retrieval (one key or many, whole or split over servers) and the value
//! of a client's `mg`, with its key as the client wrote it.

use bytes::{BufMut, BytesMut};
use walnut_sdk::abi::ValueParts;

use crate::memcache::lines::PLUGIN_FAILED;
use crate::memcache::rewrite::{HookFailed, Mapped, map_meta_value, map_values};
use crate::memcache::{Command, Request};
use crate::plugin::Hook;
use crate::pool::WorkerPool;

/// How a retrieval's reply passes through the value hooks.
pub struct Values {
    /// The pool the request was routed by: its reply passes that pool's hooks, even when a
    /// reload has replaced the pool since.
    pub pool: std::rc::Rc<WorkerPool>,
    pub command: Command,
    /// A batch of a line read in batches: its reply is partly written already, so a value a
    /// hook fails is left out (a miss); otherwise the reply becomes `SERVER_ERROR plugin
    /// failed`.
    pub batch: bool,
    /// A client's `mg`: the request (its key and flags), and whether the client asked for the
    /// value's flags (`f`), which walnut asks memcached for regardless.
    pub meta: Option<(Request, bool)>,
}

impl Values {
    /// The value hooks the reply to `req` passes through, when the pool's plugins may have any
    /// and the reply can hold a value.
    pub fn of(pool: &std::rc::Rc<WorkerPool>, req: &Request) -> Option<Box<Values>> {
        let plugins = pool.plugins.as_ref()?;
        let meta = match req.command {
            c if c.is_retrieval() => None,
            Command::MetaGet if req.meta_flag(b'v').is_some() => {
                Some((req.clone(), req.meta_flag(b'f').is_some()))
            }
            _ => return None,
        };
        if !plugins.borrow().may_any(Hook::Value) {
            return None;
        }
        Some(Box::new(Values {
            pool: std::rc::Rc::clone(pool),
            command: req.command,
            batch: req.part.is_batch(),
            meta,
        }))
    }
}

/// Writes `raw`, a reply as the servers and walnut made it, into `out` with its values passed
/// through the value hooks of the pool the request was routed by.
pub fn pass_values(values: &Values, raw: &[u8], out: &mut BytesMut) {
    let pool = &*values.pool;
    let Some(plugins) = &pool.plugins else {
        out.put_slice(raw);
        return;
    };
    let mut plugins = plugins.borrow_mut();
    let (max, stats) = (pool.shared.config.item_size_max, &pool.stats);
    let command = values.command.name().as_bytes();
    let mark = out.len();
    let passed = match &values.meta {
        Some((req, show_flags)) => {
            let mut scratch = [0u8; 512];
            let key = req.placement_key(&mut scratch);
            let meta_flags = req.meta_flags();
            map_meta_value(raw, *show_flags, out, |flags, data| {
                let value = ValueParts {
                    command,
                    key,
                    flags,
                    meta_flags,
                    data,
                };
                plugins.value(&value, max, stats)
            })
        }
        None => map_values(raw, out, |key, flags, data| {
            let value = ValueParts {
                command,
                key,
                flags,
                meta_flags: b"",
                data,
            };
            match plugins.value(&value, max, stats) {
                Ok(Some((flags, data))) => Ok(Mapped::Replace(flags, data)),
                Ok(None) => Ok(Mapped::Keep),
                Err(HookFailed) if values.batch => Ok(Mapped::Drop),
                Err(HookFailed) => Err(HookFailed),
            }
        }),
    };
    if passed.is_err() {
        out.truncate(mark);
        out.put_slice(PLUGIN_FAILED);
    }
}
