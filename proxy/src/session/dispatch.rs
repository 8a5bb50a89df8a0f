//! Routing one decoded request: answered here, sent to the server its key hashes to, split
//! over several servers (multi-key retrievals), or broadcast (`flush_all`).

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use super::pending::{Pending, Slot};
use crate::memcache::{Command, Request, decode};
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

const NO_SERVER: &[u8] = b"SERVER_ERROR no server available\r\n";

/// Routes `req`; its reply (if any) is queued on `pending` in the client's order.
pub fn dispatch(req: Request, pool: &WorkerPool, pending: &Rc<Pending>, scratch: &mut Scratch) {
    match req.command {
        Command::Version => {
            pending.push(
                Slot::Reply(Some(Bytes::from_static(VERSION_REPLY.as_bytes()))),
                0,
            );
        }
        Command::Verbosity => {
            if !req.is_noreply() {
                pending.push(Slot::Reply(Some(Bytes::from_static(b"OK\r\n"))), 0);
            }
        }
        Command::MetaNoop => {
            pending.push(Slot::Reply(Some(Bytes::from_static(b"MN\r\n"))), 0);
        }
        Command::Quit => {
            pending.push(Slot::Close(None), 0);
        }
        Command::Stats => {
            let reply = if req.tokens().next().is_none() {
                Bytes::from(pool.registry.render_memcached(pool.shared.index))
            } else {
                Bytes::from_static(b"ERROR\r\n")
            };
            pending.push(Slot::Reply(Some(reply)), 0);
        }
        Command::FlushAll => broadcast(&req, pool, pending),
        c if c.is_retrieval() && req.key_count() > 1 => retrieve_many(&req, pool, pending, scratch),
        _ => forward_one(&req, pool, pending),
    }
}

/// Sends a one-key request to the server its key hashes to.
fn forward_one(req: &Request, pool: &WorkerPool, pending: &Rc<Pending>) {
    let cfg = &pool.shared.config;
    let mut scratch = [0u8; 512];
    let key = req.placement_key(&mut scratch);
    let Some(server) = pool.shared.ring.load().locate(cfg.hash, cfg.hash_tag, key) else {
        if !req.is_noreply() {
            pending.push(Slot::Reply(Some(Bytes::from_static(NO_SERVER))), 0);
        }
        return;
    };
    let dest = if req.is_noreply() {
        Dest::Discard
    } else {
        let slot = if req.is_silent() {
            Slot::Quiet(req.command, None)
        } else {
            Slot::Reply(None)
        };
        Dest::Slot {
            pending: Rc::clone(pending),
            seq: pending.push(slot, 1),
            frag: 0,
        }
    };
    let (head, tail) = req.forward_parts();
    pool.backend(server).send(dest, |buf| {
        buf.put_slice(head);
        buf.put_slice(tail);
    });
}

/// A multi-key retrieval: one request per server holding some of its keys, merged in key order.
fn retrieve_many(req: &Request, pool: &WorkerPool, pending: &Rc<Pending>, scratch: &mut Scratch) {
    let cfg = &pool.shared.config;
    let ring = pool.shared.ring.load();
    scratch.servers.clear();
    for key in req.keys() {
        match ring.locate(cfg.hash, cfg.hash_tag, key) {
            Some(s) => scratch.servers.push(s as u16),
            None => {
                pending.push(Slot::Reply(Some(Bytes::from_static(NO_SERVER))), 0);
                return;
            }
        }
    }
    let first = scratch.servers[0];
    if scratch.servers.iter().all(|&s| s == first) {
        // All on one server: the request goes as it came, and so does the reply.
        let seq = pending.push(Slot::Reply(None), 1);
        pool.backend(first as usize).send(
            Dest::Slot {
                pending: Rc::clone(pending),
                seq,
                frag: 0,
            },
            |buf| buf.put_slice(req.frame()),
        );
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
    let mut gather = pending.gather();
    gather.request = req.frame().clone();
    gather.keys = req.keys_range();
    gather.key_frag.extend_from_slice(&scratch.servers);
    gather.frags.resize(frags, None);
    let seq = pending.push(Slot::Gather(gather), frags as u16);
    pool.stats.pool.fragments.add(frags as u64);
    for (frag, &server) in scratch.frag_servers.iter().enumerate() {
        let frag = frag as u16;
        let dest = Dest::Slot {
            pending: Rc::clone(pending),
            seq,
            frag,
        };
        pool.backend(server as usize)
            .send(dest, |buf| pending.write_fragment(seq, frag, buf));
    }
}

/// `flush_all` goes to every server; the client hears `OK` only when all of them said it.
fn broadcast(req: &Request, pool: &WorkerPool, pending: &Rc<Pending>) {
    let n = pool.server_count();
    let seq = (!req.is_noreply()).then(|| pending.push(Slot::AllOk(None), n as u16));
    let (head, tail) = req.forward_parts();
    for server in 0..n {
        let dest = match seq {
            Some(seq) => Dest::Slot {
                pending: Rc::clone(pending),
                seq,
                frag: 0,
            },
            None => Dest::Discard,
        };
        pool.backend(server).send(dest, |buf| {
            buf.put_slice(head);
            buf.put_slice(tail);
        });
    }
}

/// Sends a request that never reached its server (now ejected) to its key's new owner, with the
/// same destination. A multi-key retrieval whose keys now live on several servers is split
/// further. Without a live owner the request gets `error`.
pub fn reroute(pool: &WorkerPool, bytes: Bytes, dest: Dest, error: &Bytes) {
    let mut buf = BytesMut::from(&bytes[..]);
    let req = match decode(&mut buf, usize::MAX) {
        Ok(Some(req)) if req.command.is_keyed() => req,
        _ => return settle(dest, error.clone()),
    };
    let cfg = &pool.shared.config;
    let ring = pool.shared.ring.load();
    if req.command.is_retrieval() && req.key_count() > 1 {
        let mut servers = Vec::with_capacity(req.key_count());
        for key in req.keys() {
            match ring.locate(cfg.hash, cfg.hash_tag, key) {
                Some(s) => servers.push(s as u16),
                None => return settle(dest, Bytes::from_static(NO_SERVER)),
            }
        }
        let Dest::Slot { pending, seq, frag } = dest else {
            return;
        };
        for (server, frag) in pending.refragment(seq, frag, &req, &servers) {
            let dest = Dest::Slot {
                pending: Rc::clone(&pending),
                seq,
                frag,
            };
            pool.backend(server as usize)
                .send(dest, |buf| pending.write_fragment(seq, frag, buf));
        }
        return;
    }
    let mut scratch = [0u8; 512];
    let key = req.placement_key(&mut scratch);
    match ring.locate(cfg.hash, cfg.hash_tag, key) {
        Some(server) => pool.backend(server).send(dest, |buf| buf.put_slice(&bytes)),
        None => settle(dest, Bytes::from_static(NO_SERVER)),
    }
}

fn settle(dest: Dest, reply: Bytes) {
    if let Dest::Slot { pending, seq, frag } = dest {
        pending.deliver(seq, frag, reply);
    }
}
