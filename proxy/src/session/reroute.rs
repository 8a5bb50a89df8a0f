//! Requests handed back by a server connection that failed before writing them, its server now
//! out of the ring: each goes where its key is placed now (asking the plugins again, as a
//! fresh request would), with the same place in the client's order.

use std::rc::Rc;

use bytes::{BufMut, Bytes};

use super::Session;
use super::dispatch::send_fragment;
use crate::memcache::ReplyKind;
use crate::memcache::request::{placement_key, write_meta_get_as_classic};
use crate::pool::{ReplySink, Seq, Unplaced, Unsent};

/// Sends `req`, fragment `frag` of request `seq`, to its key's owner now. A multi-key
/// retrieval whose keys now live on several servers is split further. Without a live owner the
/// request gets `NO_SERVER` (or `PLUGIN_FAILED` when a `fail_closed` plugin failed placing it); a keyless one (a broadcast) gets the failure's error.
pub(super) fn resend(s: &Rc<Session>, seq: Seq, frag: u16, req: Unsent) {
    let pool = &s.pool();
    let place = |key: &[u8]| pool.place(key).map(|server| server as u16);
    let failed =
        |s: &Rc<Session>, why: Unplaced| s.reply(seq, frag, Bytes::from_static(why.line()));
    // A fragment of a split retrieval (its bytes may be part of a joined line): its keys come
    // from the gather.
    let fragment = s.pending.with_gather(seq, |g| {
        g.fragment_keys(frag)
            .map(place)
            .collect::<Result<Vec<u16>, Unplaced>>()
    });
    if let Some(servers) = fragment {
        let servers = match servers {
            Ok(servers) => servers,
            Err(why) => return failed(s, why),
        };
        for (server, f) in s.pending.refragment(seq, frag, None, &servers) {
            send_fragment(s, seq, f, server);
        }
        return;
    }
    let keys = req.key.of(&req.bytes);
    if keys.is_empty() {
        return s.reply(seq, frag, req.error);
    }
    if req.kind == ReplyKind::Retrieval && keys.contains(&b' ') {
        // A multi-key retrieval that went whole to one server: split by key now.
        let servers = keys
            .split(|&b| b == b' ')
            .filter(|k| !k.is_empty())
            .map(place);
        let servers = match servers.collect::<Result<Vec<u16>, Unplaced>>() {
            Ok(servers) => servers,
            Err(why) => return failed(s, why),
        };
        let whole = Some((req.bytes.clone(), req.key.range()));
        for (server, f) in s.pending.refragment(seq, frag, whole, &servers) {
            send_fragment(s, seq, f, server);
        }
        return;
    }
    let mut scratch = [0u8; 512];
    let key = placement_key(keys, req.key.is_base64(), &mut scratch);
    let server = match pool.place(key) {
        Ok(server) => server,
        Err(why) => return failed(s, why),
    };
    let backend = pool.backend(server, s.id);
    if s.pending.is_from_meta(seq) && !backend.speaks_meta() {
        // A classic retrieval walnut sent as a meta get: asked classically again.
        backend.send(s.dest(seq, frag), ReplyKind::Retrieval, |buf| {
            write_meta_get_as_classic(&req.bytes, buf)
        });
    } else {
        backend.send(s.dest(seq, frag), req.kind, |buf| {
            buf.put_slice(&req.bytes);
            req.key
        });
    }
}
