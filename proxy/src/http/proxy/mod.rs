//! One client connection: read a head, route it, run the plugins, answer locally or pass it to
//! an upstream (retrying the next server when that is safe), stream the bodies, repeat while the
//! connection is kept alive. Pipelined requests wait in the read buffer and are answered in order.

use std::net::IpAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Worker;
use super::balance::{KeySource, now_ms};
use super::body::{Out, relay};
use super::head::{self, Framing, Refusal, RequestHead, ResponseHead};
use super::headers::{hop_by_hop, put, put_number, reason};
use super::upstream::{self};
use crate::config::LocationAction;
use crate::plugin::{HttpEdits, HttpVerdict};
use crate::shutdown::Shutdown;
use crate::timer::Timer;

mod attempt;
mod heads;

use heads::{connection_header, status_line};

/// Body bytes sent along with a response head in one write.
const COALESCE: usize = 32 * 1024;
/// How long input is drained after walnut closes a connection on its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection's reusable state: nothing here is allocated per request once warm.
struct Session<'w> {
    w: &'w Worker,
    client: TcpStream,
    remote: IpAddr,
    /// `remote` as text, written into every request's forwarded headers.
    remote_text: Vec<u8>,
    buf: BytesMut,
    /// The current request's head bytes (`head`'s ranges index them).
    head_bytes: Vec<u8>,
    head: RequestHead,
    resp: ResponseHead,
    out: Vec<u8>,
    scratch: Vec<u8>,
    key: Vec<u8>,
    edits: HttpEdits,
    shutdown: Shutdown,
    /// Every timeout of this connection, client and upstream side (one at a time).
    timer: Timer,
}

/// Serves one client until it closes, misbehaves, idles out or walnut shuts down.
pub async fn serve(w: &Worker, client: TcpStream, remote: IpAddr, shutdown: Shutdown) {
    let mut s = Session {
        w,
        client,
        remote,
        remote_text: remote.to_string().into_bytes(),
        buf: BytesMut::with_capacity(16 * 1024),
        head_bytes: Vec::with_capacity(1024),
        head: RequestHead::default(),
        resp: ResponseHead::default(),
        out: Vec::with_capacity(2048),
        scratch: Vec::new(),
        key: Vec::new(),
        edits: HttpEdits::default(),
        shutdown,
        timer: Timer::default(),
    };
    let mut first = true;
    let linger = loop {
        match s.read_head(first).await {
            Ok(true) => {}
            Ok(false) => break false,
            Err(Refusal(status)) => {
                s.head_bytes.clear();
                s.head.framing = None;
                s.head.keep_alive = false;
                let _ = s.local(status, &[], None, false).await;
                break true;
            }
        }
        first = false;
        let started = std::time::Instant::now();
        let keep = s.handle().await;
        s.w.stats.latency.observe_since(started);
        if !keep {
            break true;
        }
        if s.shutdown.is_shutdown() {
            break false;
        }
    };
    let _ = s.client.shutdown().await;
    if linger {
        // Closing with unread input would reset the connection and could destroy the answer
        // just sent; read and drop what the client still sends for a moment (nginx's
        // lingering close).
        let deadline = Instant::now() + LINGER;
        let mut drain = [0u8; 4096];
        while let Ok(Ok(n)) = s.timer.within(deadline, s.client.read(&mut drain)).await {
            if n == 0 {
                break;
            }
        }
    }
}

/// Whether a method may be sent twice (RFC 9110 9.2.2).
fn idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE"
    )
}

/// How one attempt at an upstream ended, when it did not answer.
enum Attempt {
    /// Nothing reached a server that could act on it: try again.
    Retry { failed: bool, timeout: bool },
    /// Give the client this status (and close when `close`).
    Status { status: u16, close: bool },
    /// The client broke off or broke the framing: close, having answered `Some` status.
    Abort(Option<u16>),
}

impl Session<'_> {
    /// Reads the next request head. `Ok(false)`: the client closed, idled out, or shutdown.
    async fn read_head(&mut self, first: bool) -> Result<bool, Refusal> {
        let cfg = &self.w.shared.config;
        if self.buf.is_empty() && !first {
            // Idle between requests: keepalive_timeout, and shutdown ends the wait.
            self.buf.reserve(4096);
            let read = tokio::select! {
                r = self.timer.timeout(cfg.keepalive_timeout, self.client.read_buf(&mut self.buf)) => r,
                () = self.shutdown.recv() => return Ok(false),
            };
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return Ok(false);
            }
        }
        let deadline = Instant::now() + cfg.client_header_timeout;
        loop {
            if !self.buf.is_empty()
                && let Some(len) = head::parse_request(&self.buf, &mut self.head)?
            {
                self.head_bytes.clear();
                self.head_bytes.extend_from_slice(&self.buf[..len]);
                self.buf.advance(len);
                return Ok(true);
            }
            self.buf.reserve(4096);
            match self
                .timer
                .within(deadline, self.client.read_buf(&mut self.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed, or too slow: dropped without an answer.
                _ => return Ok(false),
            }
        }
    }

    /// Answers the request in `head`; false when the connection must close.
    async fn handle(&mut self) -> bool {
        let w = self.w;
        let h = &self.head;
        let hb = &self.head_bytes[..];
        let path = &hb[h.path.clone()];
        let location = w.shared.router.find(path);
        self.edits.clear();
        if w.plugins.borrow().runs_http(location) {
            let method = std::str::from_utf8(&hb[h.method.clone()]).unwrap_or("");
            let verdict = w.plugins.borrow_mut().http(
                location,
                method,
                path,
                &hb[h.query.clone()],
                || {
                    h.headers
                        .iter()
                        .map(|(n, v)| (&hb[n.clone()], &hb[v.clone()]))
                },
                &mut self.edits,
                &w.stats,
            );
            match verdict {
                HttpVerdict::Continue => {}
                HttpVerdict::Respond {
                    status,
                    headers,
                    body,
                } => return self.local(status, &headers, Some(&body), true).await,
                HttpVerdict::Failed => return self.local(500, &[], None, true).await,
            }
        }
        let Some(location) = location else {
            return self.local(404, &[], None, true).await;
        };
        match &w.shared.config.locations[location].action {
            LocationAction::Return { status, body } => {
                let body = (!body.is_empty()).then(|| {
                    let mut b = body.clone().into_bytes();
                    b.push(b'\n');
                    b
                });
                self.local(*status, &[], body.as_deref(), true).await
            }
            LocationAction::Proxy { upstream, method } => {
                self.proxy(*upstream, method.as_deref()).await
            }
        }
    }

    /// Answers locally with `status` (a short default body unless `body` is given). When the
    /// request's body is unread it is discarded after (if `keep`), else the connection closes.
    async fn local(
        &mut self,
        status: u16,
        extra: &[(Vec<u8>, Vec<u8>)],
        body: Option<&[u8]>,
        keep: bool,
    ) -> bool {
        let framing = self.head.framing.unwrap_or(Framing::None);
        let unread_body = framing.has_body();
        // A client waiting for 100 Continue is not made to send a body nobody reads.
        let keep = keep
            && self.head.keep_alive
            && !(unread_body && self.head.expect_continue)
            && !self.shutdown.is_shutdown();
        let default;
        let body = match body {
            Some(b) => b,
            None => {
                default = format!("{status} {}\n", reason(status));
                default.as_bytes()
            }
        };
        let out = &mut self.out;
        out.clear();
        status_line(out, status, reason(status).as_bytes());
        out.extend_from_slice(b"Server: walnut\r\n");
        let mut typed = false;
        for (n, v) in extra {
            if hop_by_hop(n, std::iter::empty()) {
                continue;
            }
            typed |= n.eq_ignore_ascii_case(b"content-type");
            put(out, n, v);
        }
        if !typed {
            out.extend_from_slice(b"Content-Type: text/plain\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        put_number(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
        connection_header(out, keep, self.head.minor);
        out.extend_from_slice(b"\r\n");
        // (After a refused head, `head` may describe bytes never kept.)
        let head_request = self.head_bytes.get(self.head.method.clone()) == Some(&b"HEAD"[..]);
        if !head_request {
            out.extend_from_slice(body);
        }
        if self.client.write_all(out).await.is_err() {
            return false;
        }
        if keep && unread_body {
            let timeout = self.w.shared.config.client_header_timeout;
            let mut sink = tokio::io::sink();
            return relay(
                &mut self.client,
                &mut self.buf,
                framing,
                &mut sink,
                Out::Raw,
                (&mut self.timer, timeout),
                &mut self.scratch,
            )
            .await
            .is_ok();
        }
        keep
    }

    /// Passes the request to upstream `u`; false when the client connection must close.
    async fn proxy(&mut self, u: usize, method_override: Option<&str>) -> bool {
        let w = self.w;
        let cfg = &w.shared.config;
        let framing = self.head.framing.unwrap_or(Framing::None);
        let method: &[u8] = match method_override {
            Some(m) => m.as_bytes(),
            None => &self.head_bytes[self.head.method.clone()],
        };
        let retry_safe = idempotent(method) && !framing.has_body();
        let head_request = method == b"HEAD";
        let servers = w.shared.upstreams[u].config.servers.len();
        // The hash key: a plugin's, else the upstream's `hash:` template.
        let key = match (&self.edits.hash_key, &w.shared.upstreams[u].key) {
            (Some(k), _) => Some(&k[..]),
            (None, Some(template)) => {
                let (hb, h) = (&self.head_bytes[..], &self.head);
                let find = |name: &str| {
                    h.headers
                        .iter()
                        .find(|(n, _)| hb[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
                        .map(|(_, v)| &hb[v.clone()])
                };
                let src = KeySource {
                    path: self.edits.path.as_deref().unwrap_or(&hb[h.path.clone()]),
                    query: self.edits.query.as_deref().unwrap_or(&hb[h.query.clone()]),
                    has_query: h.has_query || self.edits.query.is_some(),
                    remote: self.remote,
                    headers: &find,
                };
                template.render(&src, &mut self.key);
                Some(&self.key[..])
            }
            (None, None) => None,
        };
        let key = key.map(<[u8]>::to_vec);
        let mut tried = 0u64;
        let mut timed_out = false;
        let mut stale_retries = 0;
        let mut sent_continue = false;
        loop {
            let pick = w.balancers.borrow_mut()[u].pick(tried, key.as_deref(), now_ms());
            let Some(i) = pick else {
                let status = if timed_out { 504 } else { 502 };
                tracing::warn!(pool = %cfg.name, upstream = %w.shared.upstreams[u].config.name, status, "no upstream server left for the request");
                return self.local(status, &[], None, true).await;
            };
            let server = &w.shared.upstreams[u].config.servers[i];
            let counters = &w.stats.servers[w.shared.server_index(u, i)];
            counters.requests.incr();
            let idle = w.conns.borrow_mut()[u].checkout(i);
            let mut conn = match idle {
                Some(c) => c,
                None => match upstream::connect(server.addr, cfg.timeout).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(pool = %cfg.name, server = %server.text, "{e}");
                        match e {
                            upstream::ConnectError::TimedOut => counters.server_timedout.incr(),
                            _ => counters.server_err.incr(),
                        }
                        w.balancers.borrow_mut()[u].failed(i, now_ms());
                        tried |= 1 << i;
                        timed_out |= matches!(e, upstream::ConnectError::TimedOut);
                        continue;
                    }
                },
            };
            if self.head.expect_continue && framing.has_body() && !sent_continue {
                sent_continue = true;
                if self
                    .client
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            let result = self
                .attempt(
                    &mut conn,
                    u,
                    i,
                    method_override,
                    framing,
                    (retry_safe, head_request),
                )
                .await;
            match result {
                Ok((keep, reuse)) => {
                    counters.responses.incr();
                    w.balancers.borrow()[u].succeeded(i);
                    if reuse {
                        w.conns.borrow_mut()[u].checkin(i, conn);
                    }
                    return keep;
                }
                Err(Attempt::Retry { failed, timeout }) => {
                    if failed {
                        if timeout {
                            counters.server_timedout.incr();
                        } else {
                            counters.server_err.incr();
                        }
                        tracing::warn!(pool = %cfg.name, server = %server.text, timeout, "upstream failed; trying the next server");
                        w.balancers.borrow_mut()[u].failed(i, now_ms());
                        tried |= 1 << i;
                        timed_out |= timeout;
                    } else {
                        // A kept-alive connection the server had closed: once more, fresh.
                        stale_retries += 1;
                        if stale_retries > servers + 1 {
                            tried |= 1 << i;
                        }
                    }
                }
                Err(Attempt::Status { status, close }) => {
                    return self.local(status, &[], None, !close).await;
                }
                Err(Attempt::Abort(status)) => {
                    if let Some(status) = status {
                        self.head.keep_alive = false;
                        let _ = self.local(status, &[], None, false).await;
                    }
                    return false;
                }
            }
        }
    }
}
