//! Requests that never reached a server that was taken out of the ring: sent to their keys'
//! new owners, with the same destination.

use bytes::{BufMut, Bytes, BytesMut};

use super::dispatch::{NO_SERVER, affinity, send_fragment};
use crate::memcache::decode;
use crate::memcache::reply::ReplyKind;
use crate::upstream::{Dest, WorkerPool};

/// Sends a request that never reached its server (now ejected) to its key's new owner, with the
/// same destination. A multi-key retrieval whose keys now live on several servers is split
/// further. Without a live owner the request gets `error`.
pub fn reroute(pool: &WorkerPool, bytes: Bytes, dest: Dest, error: &Bytes) {
    let cfg = &pool.shared.config;
    let ring = pool.shared.ring.load();
    let locate = |key: &[u8]| ring.locate(cfg.hash, cfg.hash_tag, key).map(|s| s as u16);
    // A fragment of a split retrieval (its bytes may be part of a joined line): its keys come
    // from the gather.
    if let Dest::Slot { pending, seq, frag } = &dest
        && let Some(servers) = pending.with_gather(*seq, |g| {
            g.fragment_keys(*frag)
                .map(locate)
                .collect::<Option<Vec<u16>>>()
        })
    {
        let Some(servers) = servers else {
            return settle(dest, Bytes::from_static(NO_SERVER));
        };
        for (server, f) in pending.refragment(*seq, *frag, None, &servers) {
            send_fragment(pool, pending, *seq, f, server);
        }
        return;
    }
    let mut buf = BytesMut::from(&bytes[..]);
    let req = match decode(&mut buf, usize::MAX) {
        Ok(Some(req)) if req.command.is_keyed() => req,
        _ => return settle(dest, error.clone()),
    };
    if req.command.is_retrieval() && req.key_count() > 1 {
        // A multi-key retrieval that went whole to one server: split by key now.
        let Some(servers) = req.keys().map(locate).collect::<Option<Vec<u16>>>() else {
            return settle(dest, Bytes::from_static(NO_SERVER));
        };
        let Dest::Slot { pending, seq, frag } = dest else {
            return;
        };
        for (server, f) in pending.refragment(seq, frag, Some(&req), &servers) {
            send_fragment(pool, &pending, seq, f, server);
        }
        return;
    }
    let mut scratch = [0u8; 512];
    let key = req.placement_key(&mut scratch);
    let Some(server) = ring.locate(cfg.hash, cfg.hash_tag, key) else {
        return settle(dest, Bytes::from_static(NO_SERVER));
    };
    let backend = pool.backend(server, dest_affinity(&dest));
    let from_meta = matches!(&dest, Dest::Slot { pending, seq, .. } if pending.is_from_meta(*seq));
    if from_meta && !backend.speaks_meta() {
        // A classic retrieval walnut sent as a meta get: asked classically again.
        backend.send(dest, ReplyKind::Retrieval, |buf| {
            req.write_meta_get_as_classic(buf)
        });
    } else {
        backend.send(dest, ReplyKind::of(req.command), |buf| {
            buf.put_slice(&bytes)
        });
    }
}

fn dest_affinity(dest: &Dest) -> usize {
    match dest {
        Dest::Slot { pending, .. } => affinity(pending),
        Dest::Discard => 0,
    }
}

fn settle(dest: Dest, reply: Bytes) {
    if let Dest::Slot { pending, seq, frag } = dest {
        pending.deliver(seq, frag, reply);
    }
}
