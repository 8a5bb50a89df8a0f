//! One client connection: read a head, route it, run the plugins, answer locally or pass it to
//! an upstream (retrying the next server when that is safe), stream the bodies, repeat while the
//! connection is kept alive. Pipelined requests wait in the read buffer and are answered in order.

use std::net::IpAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Worker;
use super::balance::{KeySource, now_ms};
use super::body::{Out, RelayError, relay};
use super::head::{self, Framing, Refusal, RequestHead, ResponseHead};
use super::headers::{self, hop_by_hop, put, put_number, reason, replaced_upstream};
use super::upstream::{self, Conn};
use crate::config::LocationAction;
use crate::plugin::{HttpEdits, HttpVerdict};

/// Body bytes sent along with a response head in one write.
const COALESCE: usize = 32 * 1024;
/// How long input is drained after walnut closes a connection on its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection's reusable state: nothing here is allocated per request once warm.
struct Session<'w> {
    w: &'w Worker,
    client: TcpStream,
    remote: IpAddr,
    buf: BytesMut,
    /// The current request's head bytes (`head`'s ranges index them).
    head_bytes: Vec<u8>,
    head: RequestHead,
    resp: ResponseHead,
    out: Vec<u8>,
    scratch: Vec<u8>,
    key: Vec<u8>,
    edits: HttpEdits,
    shutdown: watch::Receiver<bool>,
}

/// Serves one client until it closes, misbehaves, idles out or walnut shuts down.
pub async fn serve(w: &Worker, client: TcpStream, remote: IpAddr, shutdown: watch::Receiver<bool>) {
    let mut s = Session {
        w,
        client,
        remote,
        buf: BytesMut::with_capacity(16 * 1024),
        head_bytes: Vec::with_capacity(1024),
        head: RequestHead::default(),
        resp: ResponseHead::default(),
        out: Vec::with_capacity(2048),
        scratch: Vec::new(),
        key: Vec::new(),
        edits: HttpEdits::default(),
        shutdown,
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
        if !s.handle().await {
            break true;
        }
        if *s.shutdown.borrow() {
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
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.client.read(&mut drain)).await {
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
                r = tokio::time::timeout(cfg.keepalive_timeout, self.client.read_buf(&mut self.buf)) => r,
                _ = self.shutdown.changed() => return Ok(false),
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
            match tokio::time::timeout_at(deadline, self.client.read_buf(&mut self.buf)).await {
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
            && !*self.shutdown.borrow();
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
                timeout,
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
            let idle = w.conns.borrow_mut()[u].checkout(i);
            let mut conn = match idle {
                Some(c) => c,
                None => match upstream::connect(server.addr, cfg.timeout).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(pool = %cfg.name, server = %server.text, "{e}");
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
                    w.balancers.borrow()[u].succeeded(i);
                    if reuse {
                        w.conns.borrow_mut()[u].checkin(i, conn);
                    }
                    return keep;
                }
                Err(Attempt::Retry { failed, timeout }) => {
                    if failed {
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

    /// One try on server `i` over `conn`: once a response was relayed (or begun),
    /// `Ok((keep the client connection, reuse conn))`.
    async fn attempt(
        &mut self,
        conn: &mut Conn,
        u: usize,
        i: usize,
        method_override: Option<&str>,
        framing: Framing,
        (retry_safe, head_request): (bool, bool),
    ) -> Result<(bool, bool), Attempt> {
        let w = self.w;
        let cfg = &w.shared.config;
        let server = &w.shared.upstreams[u].config.servers[i];
        self.upstream_head(method_override, framing, &server.text);
        let timeout = cfg.timeout;
        let stale = conn.reused;
        let write = tokio::time::timeout(timeout, conn.stream.write_all(&self.out)).await;
        match write {
            Ok(Ok(())) => {}
            // Nothing the server could act on was sent.
            Ok(Err(_)) if stale => {
                return Err(Attempt::Retry {
                    failed: false,
                    timeout: false,
                });
            }
            Ok(Err(_)) => {
                return Err(Attempt::Retry {
                    failed: true,
                    timeout: false,
                });
            }
            Err(_) => {
                return Err(Attempt::Retry {
                    failed: true,
                    timeout: true,
                });
            }
        }
        if framing.has_body() {
            let out = if framing == Framing::Chunked {
                Out::Chunked
            } else {
                Out::Raw
            };
            let r = relay(
                &mut self.client,
                &mut self.buf,
                framing,
                &mut conn.stream,
                out,
                cfg.client_header_timeout,
                &mut self.scratch,
            )
            .await;
            match r {
                Ok(()) => {}
                Err(RelayError::Bad) => return Err(Attempt::Abort(Some(400))),
                Err(RelayError::Read(_) | RelayError::ReadTimeout) => {
                    return Err(Attempt::Abort(None));
                }
                Err(RelayError::Write(e)) => {
                    tracing::warn!(pool = %cfg.name, server = %server.text, "sending the request body failed: {e}");
                    w.balancers.borrow_mut()[u].failed(i, now_ms());
                    return Err(Attempt::Abort(Some(502)));
                }
            }
        }
        // The response head (interim 1xx answers skipped).
        let deadline = Instant::now() + timeout;
        let mut got_any = false;
        let len = loop {
            if !conn.buf.is_empty() {
                got_any = true;
                match head::parse_response(&conn.buf, head_request, &mut self.resp) {
                    Ok(Some(len))
                        if (100..200).contains(&self.resp.status) && self.resp.status != 101 =>
                    {
                        conn.buf.advance(len);
                        continue;
                    }
                    Ok(Some(len)) => break len,
                    Ok(None) => {}
                    Err(_) => {
                        tracing::warn!(pool = %cfg.name, server = %server.text, "upstream sent an invalid response head");
                        w.balancers.borrow_mut()[u].failed(i, now_ms());
                        return Err(Attempt::Status {
                            status: 502,
                            close: false,
                        });
                    }
                }
            }
            conn.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, conn.stream.read_buf(&mut conn.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Err(_) => {
                    if retry_safe {
                        return Err(Attempt::Retry {
                            failed: true,
                            timeout: true,
                        });
                    }
                    w.balancers.borrow_mut()[u].failed(i, now_ms());
                    tracing::warn!(pool = %cfg.name, server = %server.text, "upstream timed out");
                    return Err(Attempt::Status {
                        status: 504,
                        close: false,
                    });
                }
                Ok(_) => {
                    if stale && !got_any && !framing.has_body() {
                        return Err(Attempt::Retry {
                            failed: false,
                            timeout: false,
                        });
                    }
                    if retry_safe {
                        return Err(Attempt::Retry {
                            failed: true,
                            timeout: false,
                        });
                    }
                    w.balancers.borrow_mut()[u].failed(i, now_ms());
                    tracing::warn!(pool = %cfg.name, server = %server.text, "upstream closed before answering");
                    return Err(Attempt::Status {
                        status: 502,
                        close: false,
                    });
                }
            }
        };
        // Relay the response.
        let resp_framing = self.resp.framing.unwrap_or(Framing::None);
        let h11 = self.head.minor == 1;
        let (out_mode, mut keep) = match resp_framing {
            Framing::None | Framing::Length(_) => (Out::Raw, self.head.keep_alive),
            Framing::Chunked | Framing::Close if h11 => (Out::Chunked, self.head.keep_alive),
            Framing::Chunked | Framing::Close => (Out::Raw, false),
        };
        keep &= !*self.shutdown.borrow();
        self.response_head(&conn.buf[..len], resp_framing, out_mode, keep);
        conn.buf.advance(len);
        let mut rest = resp_framing;
        if let Framing::Length(n) = resp_framing {
            let k = conn.buf.len().min(n as usize).min(COALESCE);
            self.out.extend_from_slice(&conn.buf[..k]);
            conn.buf.advance(k);
            rest = Framing::Length(n - k as u64);
        }
        if self.client.write_all(&self.out).await.is_err() {
            return Ok((false, false));
        }
        let r = relay(
            &mut conn.stream,
            &mut conn.buf,
            rest,
            &mut self.client,
            out_mode,
            timeout,
            &mut self.scratch,
        )
        .await;
        match r {
            Ok(()) => Ok((keep, self.resp.reusable)),
            Err(e) => {
                if !matches!(e, RelayError::Write(_)) {
                    tracing::warn!(pool = %cfg.name, server = %server.text, "upstream response broke off: {e:?}");
                }
                Ok((false, false))
            }
        }
    }

    /// Writes the request head for an upstream into `out`.
    fn upstream_head(&mut self, method_override: Option<&str>, framing: Framing, server: &str) {
        let (hb, h, e) = (&self.head_bytes[..], &self.head, &self.edits);
        let method = method_override.map_or(&hb[h.method.clone()], str::as_bytes);
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(method);
        out.push(b' ');
        out.extend_from_slice(e.path.as_deref().unwrap_or(&hb[h.path.clone()]));
        match &e.query {
            Some(q) if !q.is_empty() => {
                out.push(b'?');
                out.extend_from_slice(q);
            }
            Some(_) => {}
            None if h.has_query => {
                out.push(b'?');
                out.extend_from_slice(&hb[h.query.clone()]);
            }
            None => {}
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let all = || {
            h.headers
                .iter()
                .map(|(n, v)| (&hb[n.clone()], &hb[v.clone()]))
        };
        let mut host = false;
        for (n, v) in all() {
            if hop_by_hop(n, all()) || replaced_upstream(n) || e.edited(n) {
                continue;
            }
            host |= n.eq_ignore_ascii_case(b"host");
            put(out, n, v);
        }
        for (n, v) in &e.headers {
            if let Some(v) = v
                && !hop_by_hop(n, std::iter::empty())
            {
                host |= n.eq_ignore_ascii_case(b"host");
                put(out, n, v);
            }
        }
        if !host {
            put(out, b"Host", server.as_bytes());
        }
        headers::put_forwarded(out, self.remote, all());
        match framing {
            Framing::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                put_number(out, n);
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::None | Framing::Close => {}
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Writes the response head for the client into `out`, from the upstream's head `raw`.
    fn response_head(&mut self, raw: &[u8], framing: Framing, out_mode: Out, keep: bool) {
        let r = &self.resp;
        let out = &mut self.out;
        out.clear();
        status_line(out, r.status, &raw[r.reason.clone()]);
        let all = || {
            r.headers
                .iter()
                .map(|(n, v)| (&raw[n.clone()], &raw[v.clone()]))
        };
        for (n, v) in all() {
            if hop_by_hop(n, all()) {
                // A body-less answer (HEAD, 304) keeps its Content-Length.
                if framing == Framing::None
                    && n.eq_ignore_ascii_case(b"content-length")
                    && r.status != 204
                {
                    put(out, n, v);
                }
                continue;
            }
            put(out, n, v);
        }
        match (framing, out_mode) {
            (Framing::Length(n), _) => {
                out.extend_from_slice(b"Content-Length: ");
                put_number(out, n);
                out.extend_from_slice(b"\r\n");
            }
            (Framing::Chunked | Framing::Close, Out::Chunked) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
            }
            _ => {}
        }
        connection_header(out, keep, self.head.minor);
        out.extend_from_slice(b"\r\n");
    }
}

/// `HTTP/1.1 <status> <reason>\r\n`
fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_number(out, status.into());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// `Connection: close` when closing; `Connection: keep-alive` for an HTTP/1.0 client kept.
fn connection_header(out: &mut Vec<u8>, keep: bool, minor: u8) {
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}
