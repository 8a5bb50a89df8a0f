//! The buffers a request is served with, lent by the worker: a connection holds a
//! [`Workspace`] only while a request is under way and gives it back whenever it waits for the
//! next one with nothing buffered. An idle connection then costs no buffer at all, and a busy
//! one takes a warm workspace from the worker's [`Spares`] without allocating.

use bytes::BytesMut;

use crate::http::access_log::Try;
use crate::http::body_phases::BodyStages;
use crate::http::head::{MAX_HEADERS, RequestHead, ResponseHead};
use crate::http::plugins::{HttpEdits, ResponseHeaders};

/// The most workspaces a worker keeps for its next requests; more are freed as they come back.
const MAX_SPARES: usize = 32;
/// The most capacity a kept buffer may have: a body relay (64 KiB) and the head read before it
/// fit; a buffer that grew past this in a spike is freed, not kept.
const MAX_KEPT: usize = 96 * 1024;

/// Everything a request needs that grows: read and write buffers and parsed heads.
#[derive(Default)]
pub(super) struct Workspace {
    /// Bytes read from the client (pipelined requests wait here).
    pub buf: BytesMut,
    /// Bytes read from the upstream connection in use.
    pub up: BytesMut,
    /// The current request's head bytes (`head`'s ranges index them).
    pub head_bytes: Vec<u8>,
    pub head: RequestHead,
    /// The normalized path, when it differs from the one sent.
    pub uri: Vec<u8>,
    pub resp: ResponseHead,
    pub out: Vec<u8>,
    pub scratch: Vec<u8>,
    pub key: Vec<u8>,
    pub edits: HttpEdits,
    /// The response head as the response hooks left it.
    pub resp_headers: ResponseHeaders,
    /// What the body phases of proxy-wasm filters hold.
    pub stages: BodyStages,
    /// What the access log says of the request.
    pub served: Served,
}

/// What a request got, for the access log.
#[derive(Default)]
pub(super) struct Served {
    /// The status of the answer the client got (0 while none was written).
    pub status: u16,
    /// Bytes written to the client since the answer's head began, and the head's length.
    pub sent: u64,
    pub head: u64,
    /// The upstream servers tried, in order.
    pub tries: Vec<Try>,
}

impl Served {
    /// A new request begins.
    pub fn clear(&mut self) {
        self.status = 0;
        self.sent = 0;
        self.head = 0;
        self.tries.clear();
    }

    /// The answer is `status` with a head of `head` bytes, about to be written: what was
    /// written before (a `100 Continue`) is not its body.
    pub fn answer(&mut self, status: u16, head: usize) {
        self.status = status;
        self.sent = 0;
        self.head = head as u64;
    }

    /// Body bytes the client was sent.
    pub fn body_bytes(&self) -> u64 {
        self.sent.saturating_sub(self.head)
    }
}

impl Workspace {
    /// Whether a buffer outgrew what is kept (a rare spike: a huge head, thousands of header
    /// lines); such a workspace is freed rather than lent again.
    fn oversized(&self) -> bool {
        let bytes = [self.buf.capacity(), self.up.capacity()];
        let vecs = [
            self.head_bytes.capacity(),
            self.uri.capacity(),
            self.out.capacity(),
            self.scratch.capacity(),
            self.key.capacity(),
        ];
        bytes.into_iter().chain(vecs).any(|c| c > MAX_KEPT)
            || self.stages.capacity() > MAX_KEPT
            || self.head.headers.capacity() > MAX_HEADERS
            || self.resp.headers.capacity() > MAX_HEADERS
    }
}

/// A worker's spare workspaces.
pub struct Spares(Vec<Workspace>);

impl Default for Spares {
    fn default() -> Self {
        Spares(Vec::with_capacity(MAX_SPARES))
    }
}

impl Spares {
    /// A warm workspace, or a new empty one (its buffers grow as the request needs).
    pub(super) fn take(&mut self) -> Workspace {
        self.0.pop().unwrap_or_default()
    }

    /// Takes `ws` back for a later request, unless enough are kept or it grew too big. Nothing
    /// read for one connection may reach another: its read buffers are emptied.
    pub(super) fn put(&mut self, mut ws: Workspace) {
        if self.0.len() < MAX_SPARES && !ws.oversized() {
            ws.buf.clear();
            ws.up.clear();
            ws.stages.clear();
            self.0.push(ws);
        }
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_are_few_and_never_big() {
        let mut spares = Spares::default();
        let mut ws = spares.take();
        ws.buf.reserve(64 * 1024 + 4096);
        ws.out.reserve(40 * 1024);
        spares.put(ws);
        assert_eq!(spares.len(), 1, "a workspace after a body relay is kept");
        let warm = spares.take();
        assert!(warm.buf.capacity() >= 64 * 1024, "and lent again warm");
        let mut big = Workspace::default();
        big.resp.headers.reserve(MAX_HEADERS + 1);
        spares.put(big);
        let mut huge = Workspace::default();
        huge.head_bytes.reserve(MAX_KEPT + 1);
        spares.put(huge);
        assert!(spares.is_empty(), "a spike's buffers are freed");
        let mut stale = Workspace::default();
        stale.buf.extend_from_slice(b"GET /half");
        spares.put(stale);
        assert!(
            spares.take().buf.is_empty(),
            "no byte passes to another connection"
        );
        for _ in 0..MAX_SPARES + 10 {
            spares.put(Workspace::default());
        }
        assert_eq!(spares.len(), MAX_SPARES);
    }
}
