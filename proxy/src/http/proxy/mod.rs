//! One client connection: read a head, route it on its normalized path, run the plugins, answer
//! locally ([`local`]) or pass it to an upstream ([`forward`], one try at a time in
//! [`attempt`]), stream the bodies, repeat while the connection is kept alive. Pipelined
//! requests wait in the read buffer and are answered in order.

use std::net::IpAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Worker;
use super::head::{self, Refusal, RequestHead, ResponseHead};
use super::path;
use crate::config::LocationAction;
use super::plugins::{HttpCall, HttpEdits, HttpVerdict};
use crate::shutdown::Shutdown;
use crate::timer::Timer;

mod attempt;
mod forward;
mod heads;
mod local;

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
    /// The normalized path, when it differs from the one sent (see `uri_copied`).
    uri: Vec<u8>,
    /// Whether `uri` holds this request's normalized path; else the path as sent is normal.
    uri_copied: bool,
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
        uri: Vec::new(),
        uri_copied: false,
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
                && let Some(len) =
                    head::parse_request(&self.buf, &mut self.head, cfg.underscores_in_headers)?
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

    /// The request's method as sent.
    fn method(&self) -> &[u8] {
        &self.head_bytes[self.head.method.clone()]
    }

    /// Answers the request in `head`; false when the connection must close.
    async fn handle(&mut self) -> bool {
        let w = self.w;
        if self.method() == b"TRACE" {
            // nginx refuses TRACE outright (it would echo credentials back) and closes.
            self.head.keep_alive = false;
            return self.local(405, &[], None, false).await;
        }
        match path::normalize(&self.head_bytes[self.head.path.clone()], &mut self.uri) {
            Ok(copied) => self.uri_copied = copied,
            Err(path::BadPath) => {
                self.head.keep_alive = false;
                return self.local(400, &[], None, false).await;
            }
        }
        let (h, hb) = (&self.head, &self.head_bytes[..]);
        let path = if self.uri_copied {
            &self.uri[..]
        } else {
            &hb[h.path.clone()]
        };
        let location = match w.shared.router.find(path) {
            Ok(location) => location,
            Err(e) => {
                tracing::warn!(pool = %w.shared.config.name, "{e}");
                return self.local(500, &[], None, true).await;
            }
        };
        self.edits.clear();
        if w.plugins.borrow().runs_http(location) {
            // Plugins see the path the location was chosen by (nginx's `$uri`).
            let method = std::str::from_utf8(&hb[h.method.clone()]).unwrap_or("");
            let call = HttpCall {
                location,
                method,
                path,
                query: &hb[h.query.clone()],
                headers: || {
                    h.headers
                        .iter()
                        .map(|(n, v)| (&hb[n.clone()], &hb[v.clone()]))
                },
                underscores: w.shared.config.underscores_in_headers,
            };
            let verdict = w
                .plugins
                .borrow_mut()
                .http(&call, &mut self.edits, &w.stats);
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
            LocationAction::Return { status, text } => self.answer_return(*status, text).await,
            LocationAction::Proxy { upstream, method } => {
                self.proxy(*upstream, method.as_deref()).await
            }
        }
    }
}
