//! Routing one decoded request: answered here, sent to the server its key hashes to, split
//! over several servers (multi-key retrievals), or broadcast (`flush_all`).

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use super::pending::{Pending, Seq, Slot};
use crate::memcache::reply::ReplyKind;
use crate::memcache::{Command, Request};
use crate::plugin::{PoolPlugins, Verdict, chain::Placement};
use crate::upstream::{Dest, WorkerPool};

/// The `version` reply: the memcached protocol level walnut speaks, then walnut's own version,
/// so clients that parse a memcached version keep working.
pub const VERSION_REPLY: &str = concat!(
    "VERSION ",
    "1.6.0-walnut-",
    env!("CARGO_PKG_VERSION"),
    "\r\n"
);

/// Per-connection scratch space reused across requests.
#[derive(Default)]
pub struct Scratch {
    servers: Vec<u16>,
    frag_of_server: Vec<u16>,
    frag_servers: Vec<u16>,
}

pub(super) const NO_SERVER: &[u8] = b"SERVER_ERROR no server available\r\n";

/// Routes `req`; its reply (if any) is queued on `pending` in the client's order.
pub fn dispatch(req: Request, pool: &WorkerPool, pending: &Rc<Pending>, scratch: &mut Scratch) {
    if let Some(plugins) = &pool.plugins {
        return filtered(req, pool, &mut plugins.borrow_mut(), pending, scratch);
    }
    route(&req, pool, None, pending, scratch);
}

/// The request after the plugins let it through (or with no plugins at all).
fn route(
    req: &Request,
    pool: &WorkerPool,
    plugins: Option<&mut PoolPlugins>,
    pending: &Rc<Pending>,
    scratch: &mut Scratch,
) {
    match req.command {
        Command::Version => reply(pending, Bytes::from_static(VERSION_REPLY.as_bytes())),
        Command::Verbosity => {
            if !req.is_noreply() {
                reply(pending, Bytes::from_static(b"OK\r\n"));
            }
        }
        Command::MetaNoop => reply(pending, Bytes::from_static(b"MN\r\n")),
        Command::Quit => {
            pending.push(Slot::Close(None), 0);
        }
        Command::Stats => {
            let text = if req.tokens().next().is_none() {
                Bytes::from(pool.registry.render_memcached(pool.shared.index))
            } else {
                Bytes::from_static(b"ERROR\r\n")
            };
            reply(pending, text);
        }
        Command::FlushAll => broadcast(req, pool, pending),
        c if c.is_retrieval() && req.key_count() > 1 => {
            retrieve_many(req, pool, plugins, None, pending, scratch)
        }
        _ => forward_one(req, pool, plugins, None, pending),
    }
}

fn reply(pending: &Pending, bytes: Bytes) {
    pending.push(Slot::Reply(Some(bytes)), 0);
}

/// Runs the pool's plugins (per key for retrievals), then routes what they let through.
fn filtered(
    req: Request,
    pool: &WorkerPool,
    plugins: &mut PoolPlugins,
    pending: &Rc<Pending>,
    scratch: &mut Scratch,
) {
    let stats = &pool.stats;
    let command = req.command.name();
    let refuse = |verdict: Verdict| {
        if req.is_noreply() {
            return;
        }
        let line = match verdict {
            Verdict::Reject(message) => {
                Bytes::from(format!("CLIENT_ERROR {}\r\n", one_line(&message)))
            }
            _ => Bytes::from_static(PLUGIN_FAILED),
        };
        reply(pending, line);
    };
    if !req.command.is_keyed() {
        if req.command != Command::Quit {
            match plugins.request(command, b"", (0, 0, 0), stats) {
                Verdict::Continue(_) => {}
                refused => return refuse(refused),
            }
        }
        return route(&req, pool, Some(plugins), pending, scratch);
    }
    let storage = req.storage_fields();
    if req.command.is_retrieval() && req.key_count() > 1 {
        // Per key; the first refusal answers for the whole request.
        let mut sent: Option<Vec<Option<Vec<u8>>>> = None;
        for (i, key) in req.keys().enumerate() {
            match plugins.request(command, key, storage, stats) {
                Verdict::Continue(None) => {}
                Verdict::Continue(Some(new_key)) => {
                    sent.get_or_insert_with(|| vec![None; req.key_count()])[i] = Some(new_key);
                }
                refused => return refuse(refused),
            }
        }
        let sent = sent.map(|keys| {
            let mut line = BytesMut::new();
            for (key, new_key) in req.keys().zip(keys) {
                if !line.is_empty() {
                    line.put_u8(b' ');
                }
                line.put_slice(new_key.as_deref().unwrap_or(key));
            }
            line.freeze()
        });
        return retrieve_many(&req, pool, Some(plugins), sent, pending, scratch);
    }
    let mut scratch_key = [0u8; 512];
    match plugins.request(command, req.placement_key(&mut scratch_key), storage, stats) {
        Verdict::Continue(new_key) => {
            forward_one(&req, pool, Some(plugins), new_key.as_deref(), pending)
        }
        refused => refuse(refused),
    }
}

const PLUGIN_FAILED: &[u8] = b"SERVER_ERROR plugin failed\r\n";

/// A plugin's message on one line, as the protocol needs.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The server for `key`: the plugins' choice if they make one (a named server only while it is
/// in the ring), else the pool's ring.
fn place(pool: &WorkerPool, plugins: Option<&mut PoolPlugins>, key: &[u8]) -> Option<usize> {
    let cfg = &pool.shared.config;
    let ring = pool.shared.ring.load();
    if let Some(plugins) = plugins.filter(|p| p.places(key)) {
        match plugins.place(key, &pool.stats) {
            Placement::Ring => {}
            Placement::Hash(bytes) => return ring.locate(cfg.hash, cfg.hash_tag, &bytes),
            Placement::Server(name) => {
                let named = pool.shared.names.iter().position(|n| *n == name);
                if let Some(i) = named.filter(|&i| !pool.shared.health[i].is_ejected()) {
                    return Some(i);
                }
            }
        }
    }
    ring.locate(cfg.hash, cfg.hash_tag, key)
}

/// Sends a one-key request to the server its key goes to; `new_key` replaces the client's.
fn forward_one(
    req: &Request,
    pool: &WorkerPool,
    plugins: Option<&mut PoolPlugins>,
    new_key: Option<&[u8]>,
    pending: &Rc<Pending>,
) {
    let mut scratch = [0u8; 512];
    let key = match new_key {
        Some(k) => k,
        None => req.placement_key(&mut scratch),
    };
    let Some(server) = place(pool, plugins, key) else {
        if !req.is_noreply() {
            reply(pending, Bytes::from_static(NO_SERVER));
        }
        return;
    };
    if req.command.is_retrieval() {
        return retrieve_one(req, pool, server, new_key, pending);
    }
    let backend = pool.backend(server, affinity(pending));
    let dest = if req.is_noreply() {
        Dest::Discard
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
        Dest::Slot {
            pending: Rc::clone(pending),
            seq: pending.push(slot, 1),
            frag: 0,
        }
    };
    backend.send(dest, ReplyKind::of(req.command), |buf| {
        req.write_forward(buf, new_key)
    });
}

/// A one-key retrieval (its key rewritten to `new_key` by a plugin, if given) for `server`: as
/// a meta get when the server speaks meta (see `Slot::FromMeta`), else as it came, or, with a
/// rewritten key, as a one-key gather (whose merge shows the client's key). The client sees
/// the classic reply under its own key either way.
fn retrieve_one(
    req: &Request,
    pool: &WorkerPool,
    server: usize,
    new_key: Option<&[u8]>,
    pending: &Rc<Pending>,
) {
    let backend = pool.backend(server, affinity(pending));
    let meta = backend.speaks_meta() && req.fits_meta_get();
    if !meta && let Some(new_key) = new_key {
        let mut g = pending.gather_for(req, Some(Bytes::copy_from_slice(new_key)));
        g.key_frag.push(0);
        g.frags.push(None);
        let seq = pending.push(Slot::Gather(g), 1);
        return send_fragment(pool, pending, seq, 0, server as u16);
    }
    let (slot, kind) = if meta {
        let key = req.frame().slice(req.keys_range());
        let cas = matches!(req.command, Command::Gets | Command::Gats);
        let slot = Slot::FromMeta {
            key,
            cas,
            reply: None,
        };
        (slot, ReplyKind::Meta)
    } else {
        (Slot::Reply(None), ReplyKind::Retrieval)
    };
    let dest = Dest::Slot {
        pending: Rc::clone(pending),
        seq: pending.push(slot, 1),
        frag: 0,
    };
    backend.send(dest, kind, |buf| {
        if !(meta && req.write_as_meta_get(buf, new_key)) {
            req.write_forward(buf, new_key)
        }
    });
}

/// A retrieval over several keys: one request per server holding some of its keys, merged back
/// in the client's key order. `sent` is the space-separated key
/// list to send instead of the client's, when plugins rewrote keys.
fn retrieve_many(
    req: &Request,
    pool: &WorkerPool,
    mut plugins: Option<&mut PoolPlugins>,
    sent: Option<Bytes>,
    pending: &Rc<Pending>,
    scratch: &mut Scratch,
) {
    scratch.servers.clear();
    let sent_keys = sent.as_deref().unwrap_or(&req.frame()[req.keys_range()]);
    for key in sent_keys.split(|&b| b == b' ').filter(|k| !k.is_empty()) {
        match place(pool, plugins.as_deref_mut(), key) {
            Some(s) => scratch.servers.push(s as u16),
            None => return reply(pending, Bytes::from_static(NO_SERVER)),
        }
    }
    let first = scratch.servers[0];
    if sent.is_none() && scratch.servers.iter().all(|&s| s == first) {
        // All on one server and not rewritten: the request goes as it came, and so does the reply.
        let seq = pending.push(Slot::Reply(None), 1);
        let dest = Dest::Slot {
            pending: Rc::clone(pending),
            seq,
            frag: 0,
        };
        pool.backend(first as usize, affinity(pending))
            .send(dest, ReplyKind::Retrieval, |buf| buf.put_slice(req.frame()));
        return;
    }
    // Number the servers involved as fragments, in order of first appearance.
    scratch.frag_of_server.clear();
    scratch.frag_of_server.resize(pool.server_count(), u16::MAX);
    scratch.frag_servers.clear();
    for s in scratch.servers.iter_mut() {
        let f = &mut scratch.frag_of_server[*s as usize];
        if *f == u16::MAX {
            *f = scratch.frag_servers.len() as u16;
            scratch.frag_servers.push(*s);
        }
        *s = *f;
    }
    let frags = scratch.frag_servers.len();
    let mut gather = pending.gather_for(req, sent);
    gather.key_frag.extend_from_slice(&scratch.servers);
    gather.frags.resize(frags, None);
    let seq = pending.push(Slot::Gather(gather), frags as u16);
    pool.stats.pool.fragments.add(frags as u64);
    for (frag, &server) in scratch.frag_servers.iter().enumerate() {
        send_fragment(pool, pending, seq, frag as u16, server);
    }
}

/// Sends fragment `frag` of gather `seq` to `server` (joined to others there, see `join`).
pub(super) fn send_fragment(
    pool: &WorkerPool,
    pending: &Rc<Pending>,
    seq: Seq,
    frag: u16,
    server: u16,
) {
    let backend = pool.backend(server as usize, affinity(pending));
    let dest = Dest::Slot {
        pending: Rc::clone(pending),
        seq,
        frag,
    };
    pending.with_gather(seq, |g| {
        backend.send_fragment(dest, g.prefix(), |buf| g.write_fragment_keys(frag, buf))
    });
}

/// `flush_all` goes to every server; the client hears `OK` only when all of them said it.
fn broadcast(req: &Request, pool: &WorkerPool, pending: &Rc<Pending>) {
    let n = pool.server_count();
    let seq = (!req.is_noreply()).then(|| pending.push(Slot::AllOk(None), n as u16));
    for server in 0..n {
        let dest = match seq {
            Some(seq) => Dest::Slot {
                pending: Rc::clone(pending),
                seq,
                frag: 0,
            },
            None => Dest::Discard,
        };
        pool.backend(server, affinity(pending))
            .send(dest, ReplyKind::Ok, |buf| req.write_forward(buf, None));
    }
}

/// Which of a server's connections a client's requests use: one per client connection.
pub(super) fn affinity(pending: &Rc<Pending>) -> usize {
    Rc::as_ptr(pending) as usize / std::mem::align_of::<Pending>()
}
