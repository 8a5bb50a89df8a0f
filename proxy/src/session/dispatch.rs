//! Routing one decoded request: answered here, filtered by the pool's plugins, then sent to the
//! server its key is placed on (`WorkerPool::place`), split over several servers (multi-key
//! retrievals), or broadcast (`flush_all`).

use std::rc::Rc;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use walnut_sdk::abi::{McRequest, ValueParts};

use super::Session;
use super::pending::{Slot, UNANSWERED};
use super::values::Values;
use crate::memcache::lines::{END, ERROR, MN, OK, PLUGIN_FAILED, VERSION};
use crate::memcache::request::placement_key;
use crate::memcache::{Command, Decoder, KeySpan, Part, ReplyKind, Request};
use crate::plugin::{Hook, NewValue, PoolPlugins, Verdict};
use crate::pool::{Seq, WorkerPool};

/// Per-connection scratch space reused across requests.
#[derive(Default)]
pub struct Scratch {
    servers: Vec<u16>,
    frag_of_server: Vec<u16>,
    frag_servers: Vec<u16>,
}

/// The `stats` groups walnut asks every server for (memcached 1.6's; `detail` and `cachedump`
/// are for debugging one server and are not proxied).
const STATS_GROUPS: [&[u8]; 5] = [b"slabs", b"items", b"sizes", b"settings", b"conns"];

/// Routes `req`; its reply (if any) is queued on the session in the client's order.
pub fn dispatch(s: &Rc<Session>, req: Request, scratch: &mut Scratch) {
    let reserve = s.reply_bound(&req);
    let pool = s.pool();
    let filtered = match &pool.plugins {
        Some(plugins) => match filter(&req, &mut plugins.borrow_mut(), &pool) {
            Ok(filtered) => filtered,
            Err(line) => {
                if !req.is_noreply() {
                    s.answer(line);
                }
                return;
            }
        },
        None => Filtered::default(),
    };
    match req.command {
        Command::Version => s.answer(Bytes::from_static(VERSION)),
        Command::Verbosity => {
            if !req.is_noreply() {
                s.answer(Bytes::from_static(OK));
            }
        }
        Command::MetaNoop => s.answer(Bytes::from_static(MN)),
        Command::Quit => {
            s.pending.push(Slot::Close(None), 0, 0);
        }
        Command::Stats => stats(s, &req, reserve),
        Command::FlushAll => broadcast(
            s,
            &req,
            Slot::AllSay {
                ok: OK,
                first_other: None,
            },
            reserve,
        ),
        // `gat <exptime>` with no key, or the end of a line read in batches.
        c if c.is_retrieval() && req.key_count() == 0 => {
            if req.part != Part::Leading {
                s.answer(Bytes::from_static(END));
            }
        }
        c if c.is_retrieval() && (req.key_count() > 1 || req.part.is_batch()) => {
            retrieve_many(s, &req, filtered.key, reserve, scratch)
        }
        _ => forward_one(s, &req, filtered, reserve),
    }
}

/// `stats` is walnut's own counters; `stats <group>` is every server's lines for that group
/// under its name (`STAT mc1:maxbytes ...`) with one `END`; `stats reset` resets every server.
/// Anything else is memcached's `ERROR`.
fn stats(s: &Rc<Session>, req: &Request, reserve: usize) {
    let pool = &s.pool();
    match req.tokens().next() {
        None => s.answer(Bytes::from(
            pool.registry.render_memcached(pool.shared.index),
        )),
        Some(b"reset") => {
            let slot = Slot::AllSay {
                ok: b"RESET\r\n",
                first_other: None,
            };
            broadcast(s, req, slot, reserve)
        }
        Some(group) if STATS_GROUPS.contains(&group) => {
            let slot = Slot::Stats {
                names: Arc::clone(&pool.shared.names),
                replies: vec![None; pool.server_count()],
            };
            broadcast(s, req, slot, reserve)
        }
        Some(_) => s.answer(Bytes::from_static(ERROR)),
    }
}

/// Has the owner of `key` drop its value: memcached unlinks the old value of a `set` (or
/// `ms`) too large to store, so a later `get` misses instead of reading stale data. Sent as a
/// `delete` nobody waits for, through the pool's plugins like any request (a key they rewrite
/// is deleted under its rewritten name). A base64 key that is not a valid classic key goes as
/// a meta delete.
pub(super) fn unlink(s: &Rc<Session>, key: &[u8], base64: bool, scratch: &mut Scratch) {
    let mut decoded = [0u8; 512];
    let plain = placement_key(key, base64, &mut decoded);
    let mut line = BytesMut::with_capacity(key.len() + 24);
    if crate::memcache::request::check_key(plain).is_ok() {
        line.put_slice(b"delete ");
        line.put_slice(plain);
        line.put_slice(b" noreply\r\n");
    } else {
        line.put_slice(b"md ");
        line.put_slice(key);
        line.put_slice(b" b q\r\n");
    }
    let mut one_request = Decoder::new(0, 1);
    if let Ok(Some(req)) = one_request.decode(&mut line) {
        dispatch(s, req, scratch);
    }
}

/// What the pool's plugins made of a request: the key (for a retrieval the space-separated key
/// list) to send instead of the client's, and the value to store instead of the client's.
#[derive(Default)]
struct Filtered {
    key: Option<Bytes>,
    value: Option<NewValue>,
}

/// Runs the pool's plugins over `req` (per key for a multi-key retrieval), then a storage
/// request's value through the store hooks. `Err` is the reply when one refused the request
/// or failed closed.
fn filter(req: &Request, plugins: &mut PoolPlugins, pool: &WorkerPool) -> Result<Filtered, Bytes> {
    let stats = &pool.stats;
    let command = req.command.name().as_bytes();
    let (flags, exptime, value_len) = req.storage_fields();
    let meta_flags = req.meta_flags();
    let call = |key| McRequest {
        command,
        key,
        flags,
        exptime,
        value_len,
        meta_flags,
    };
    if !req.command.is_keyed() {
        if req.command != Command::Quit {
            verdict(plugins.request(&call(b""), false, stats))?;
        }
        return Ok(Filtered::default());
    }
    if req.command.is_retrieval() && req.key_count() > 1 {
        // Per key; the first refusal answers for the whole request.
        let mut rewritten: Option<Vec<Option<Vec<u8>>>> = None;
        for (i, key) in req.keys().enumerate() {
            if let Some(new_key) = verdict(plugins.request(&call(key), false, stats))? {
                rewritten.get_or_insert_with(|| vec![None; req.key_count()])[i] = Some(new_key);
            }
        }
        let key = rewritten.map(|keys| {
            let mut line = BytesMut::new();
            for (key, new_key) in req.keys().zip(keys) {
                if !line.is_empty() {
                    line.put_u8(b' ');
                }
                line.put_slice(new_key.as_deref().unwrap_or(key));
            }
            line.freeze()
        });
        return Ok(Filtered { key, value: None });
    }
    let mut scratch_key = [0u8; 512];
    let key = req.placement_key(&mut scratch_key);
    let new_key = verdict(plugins.request(&call(key), req.is_base64(), stats))?;
    let mut value = None;
    if (req.command.is_storage() || req.command == Command::MetaSet)
        && plugins.may(Hook::Store, key)
    {
        let stored = ValueParts {
            command,
            key,
            flags,
            meta_flags,
            data: req.value(),
        };
        value = verdict(plugins.store(&stored, pool.shared.config.item_size_max, stats))?;
    }
    Ok(Filtered {
        key: new_key.map(Bytes::from),
        value,
    })
}

/// The plugins' verdict as the request's fate: go on (with what they replaced), or this reply.
fn verdict<T>(v: Verdict<T>) -> Result<Option<T>, Bytes> {
    match v {
        Verdict::Continue(new) => Ok(new),
        Verdict::Reject(message) => Err(Bytes::from(format!(
            "CLIENT_ERROR {}\r\n",
            one_line(&message)
        ))),
        Verdict::Failed => Err(Bytes::from_static(PLUGIN_FAILED)),
    }
}

/// A plugin's message on one line, as the protocol needs.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Sends a one-key request to the server its key is placed on, with the key and value the
/// plugins put instead of the client's.
fn forward_one(s: &Rc<Session>, req: &Request, filtered: Filtered, reserve: usize) {
    let new_key = filtered.key.as_deref();
    let mut scratch = [0u8; 512];
    let key = match new_key {
        Some(k) => k,
        None => req.placement_key(&mut scratch),
    };
    let server = match s.pool().place(key) {
        Ok(server) => server,
        Err(why) => {
            if !req.is_noreply() {
                s.answer(Bytes::from_static(why.line()));
            }
            return;
        }
    };
    if req.command.is_retrieval() {
        return retrieve_one(s, req, server, new_key, reserve);
    }
    let backend = Rc::clone(s.pool().backend(server, s.id));
    if req.is_meta() && backend.refuses_meta() {
        // What a memcached without the meta protocol answers; a limited server never sees it.
        return s.answer(Bytes::from_static(ERROR));
    }
    let values = Values::of(&s.pool(), req);
    let hooked = values.is_some();
    let seq = if req.is_noreply() {
        UNANSWERED
    } else {
        let slot = if req.is_meta() {
            Slot::Meta {
                command: req.command,
                quiet: req.is_silent(),
                reply: None,
                client_key: new_key.map(|_| Bytes::copy_from_slice(req.key())),
            }
        } else {
            Slot::Reply(None)
        };
        s.pending.push_with(slot, 1, reserve, values)
    };
    let kind = req.command.reply_kind();
    match (&filtered.value, hooked) {
        (Some((flags, data)), _) => backend.send(s.dest(seq, 0), kind, |buf| {
            req.write_stored(buf, new_key, *flags, data)
        }),
        (None, true) => backend.send(s.dest(seq, 0), kind, |buf| {
            req.write_forward_with_flags(buf, new_key)
        }),
        (None, false) => backend.send(s.dest(seq, 0), kind, |buf| req.write_forward(buf, new_key)),
    }
}

/// A one-key retrieval (its key rewritten to `new_key` by a plugin, if given) for `server`: as
/// a meta get when the server speaks meta (see `Slot::FromMeta`), else as it came, or, with a
/// rewritten key, as a one-key gather (whose merge shows the client's key). The client sees
/// the classic reply under its own key either way.
fn retrieve_one(
    s: &Rc<Session>,
    req: &Request,
    server: usize,
    new_key: Option<&[u8]>,
    reserve: usize,
) {
    let backend = Rc::clone(s.pool().backend(server, s.id));
    let meta = backend.speaks_meta() && req.fits_meta_get();
    if !meta && let Some(new_key) = new_key {
        let mut g = s.pending.gather_for(
            req.frame().clone(),
            req.keys_range(),
            Some(Bytes::copy_from_slice(new_key)),
        );
        g.key_frag.push(0);
        g.frags.push(None);
        let seq = s
            .pending
            .push_with(Slot::Gather(g), 1, reserve, Values::of(&s.pool(), req));
        return send_fragment(s, seq, 0, server as u16);
    }
    let (slot, kind) = if meta {
        let slot = Slot::FromMeta {
            key: req.frame().slice(req.keys_range()),
            cas: req.command.returns_cas(),
            reply: None,
        };
        (slot, ReplyKind::Meta)
    } else {
        (Slot::Reply(None), ReplyKind::Retrieval)
    };
    let seq = s
        .pending
        .push_with(slot, 1, reserve, Values::of(&s.pool(), req));
    if meta {
        backend.send_meta_get(s.dest(seq, 0), |buf, opaque| {
            req.write_as_meta_get(buf, new_key, opaque)
                .expect("fits_meta_get was checked")
        });
    } else {
        backend.send(s.dest(seq, 0), kind, |buf| req.write_forward(buf, new_key));
    }
}

/// A retrieval over several keys (or a batch of a line read in batches): one request per
/// server holding some of its keys, merged back in the client's key order. `sent` is the
/// space-separated key list to send instead of the client's, when plugins rewrote keys.
fn retrieve_many(
    s: &Rc<Session>,
    req: &Request,
    sent: Option<Bytes>,
    reserve: usize,
    scratch: &mut Scratch,
) {
    scratch.servers.clear();
    let sent_keys = sent.as_deref().unwrap_or(&req.frame()[req.keys_range()]);
    for key in sent_keys.split(|&b| b == b' ').filter(|k| !k.is_empty()) {
        match s.pool().place(key) {
            Ok(server) => scratch.servers.push(server as u16),
            Err(why) => return s.answer(Bytes::from_static(why.line())),
        }
    }
    let first = scratch.servers[0];
    let whole = sent.is_none() && !req.part.is_batch();
    if whole && scratch.servers.iter().all(|&s| s == first) {
        // All on one server and not rewritten: the request goes as it came, and so does the reply.
        let seq = s
            .pending
            .push_with(Slot::Reply(None), 1, reserve, Values::of(&s.pool(), req));
        s.pool()
            .backend(first as usize, s.id)
            .send(s.dest(seq, 0), ReplyKind::Retrieval, |buf| {
                buf.put_slice(req.frame());
                KeySpan::new(req.keys_range().start, req.keys_range().len(), false)
            });
        return;
    }
    // Number the servers involved as fragments, in order of first appearance.
    scratch.frag_of_server.clear();
    scratch
        .frag_of_server
        .resize(s.pool().server_count(), u16::MAX);
    scratch.frag_servers.clear();
    for server in scratch.servers.iter_mut() {
        let f = &mut scratch.frag_of_server[*server as usize];
        if *f == u16::MAX {
            *f = scratch.frag_servers.len() as u16;
            scratch.frag_servers.push(*server);
        }
        *server = *f;
    }
    let frags = scratch.frag_servers.len();
    let mut gather = s
        .pending
        .gather_for(req.frame().clone(), req.keys_range(), sent);
    gather.key_frag.extend_from_slice(&scratch.servers);
    gather.frags.resize(frags, None);
    gather.part = req.part;
    let values = Values::of(&s.pool(), req);
    let seq = s
        .pending
        .push_with(Slot::Gather(gather), frags as u16, reserve, values);
    s.pool().stats.pool.fragments.add(frags as u64);
    for (frag, &server) in scratch.frag_servers.iter().enumerate() {
        send_fragment(s, seq, frag as u16, server);
    }
}

/// Sends fragment `frag` of gather `seq` to `server` (joined to others there, see `join`).
pub(super) fn send_fragment(s: &Rc<Session>, seq: Seq, frag: u16, server: u16) {
    let backend = Rc::clone(s.pool().backend(server as usize, s.id));
    s.pending.with_gather(seq, |g| {
        backend.send_fragment(s.dest(seq, frag), g.prefix(), |buf| {
            g.write_fragment_keys(frag, buf)
        })
    });
}

/// A request every server gets (`flush_all`, `stats <group>`), its replies gathered in `slot`
/// (each server's as fragment `server`).
fn broadcast(s: &Rc<Session>, req: &Request, slot: Slot, reserve: usize) {
    let n = s.pool().server_count();
    let seq = match req.is_noreply() {
        true => UNANSWERED,
        false => s.pending.push(slot, n as u16, reserve),
    };
    let kind = req.command.reply_kind();
    for server in 0..n {
        s.pool()
            .backend(server, s.id)
            .send(s.dest(seq, server as u16), kind, |buf| {
                req.write_forward(buf, None)
            });
    }
}
