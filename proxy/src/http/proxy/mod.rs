//! One client connection: read a head, route it on its normalized path, run the plugins, answer
//! locally ([`local`]) or pass it to an upstream ([`forward`], one try at a time in
//! [`attempt`]), stream the bodies, repeat while the connection is kept alive. Pipelined
//! requests wait in the read buffer and are answered in order.

use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;
use std::task::Poll;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::head::{self, Refusal};
use super::path;
use super::plugins::{HttpCall, HttpVerdict};
use super::{Worker, access_log};
use crate::config::LocationAction;
use crate::current::{Current, Follow};
use crate::plugin::RequestTag;
use crate::shutdown::Shutdown;
use crate::timer::Timer;

mod attempt;
mod forward;
mod heads;
mod local;
mod spare;

pub use spare::Spares;
use spare::Workspace;

/// Body bytes sent along with a response head in one write.
const COALESCE: usize = 32 * 1024;
/// How long input is drained after walnut closes a connection on its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection's state. Idle, it holds no buffer; while a request is served it holds a
/// [`Workspace`] lent by the worker, so nothing is allocated per request once warm.
struct Session {
    /// The pool's state in this worker: the newest when each request starts (see `Current`).
    w: Follow<Worker>,
    client: TcpStream,
    remote: IpAddr,
    /// `remote` as text, written into every request's forwarded headers.
    remote_text: Vec<u8>,
    /// The current request's buffers, lent by the worker while `held`; empty otherwise. Boxed:
    /// the connection's task would hold it inline, twice (a captured future and the one it
    /// awaits are laid out apart).
    ws: Box<Workspace>,
    held: bool,
    /// Whether `ws.uri` holds this request's normalized path; else the path as sent is normal.
    uri_copied: bool,
    shutdown: Shutdown,
    /// Every timeout of this connection, client and upstream side (one at a time).
    timer: Timer,
    /// The current request's location and tag once its plugins ran (proxy-wasm filters end its
    /// context when it is over).
    hooked: Option<(Option<usize>, RequestTag)>,
}

/// Serves one client until it closes, misbehaves, idles out or walnut shuts down.
pub async fn serve(
    current: &Rc<Current<Worker>>,
    client: TcpStream,
    remote: IpAddr,
    shutdown: Shutdown,
) {
    let mut s = Session {
        w: current.follow(),
        client,
        remote,
        remote_text: remote.to_string().into_bytes(),
        ws: Box::default(),
        held: false,
        uri_copied: false,
        shutdown,
        timer: Timer::default(),
        hooked: None,
    };
    let mut first = true;
    let linger = loop {
        match s.read_head(first).await {
            Ok(true) => {}
            Ok(false) => break false,
            Err(Refusal(status)) => {
                // The access log shows the line the client sent, as far as it is a line.
                let ws = &mut *s.ws;
                let line = ws.buf[..].split(|&b| b == b'\n').next().unwrap_or_default();
                ws.head_bytes.clear();
                ws.head_bytes
                    .extend_from_slice(&line[..line.len().min(8 * 1024)]);
                s.ws.head.headers.clear();
                s.ws.served.clear();
                s.ws.head.framing = None;
                s.ws.head.keep_alive = false;
                let _ = s.local(status, &[], None, false).await;
                s.log_access();
                break true;
            }
        }
        first = false;
        // A reload replaced the pool: this request and the next use the new one.
        s.w.refresh();
        let started = std::time::Instant::now();
        s.ws.served.clear();
        let keep = s.handle().await;
        if let Some((location, tag)) = s.hooked.take() {
            s.w.plugins
                .borrow_mut()
                .http_done(location, tag, s.ws.served.status, &s.w.stats);
        }
        s.w.stats.latency.observe_since(started);
        s.log_access();
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
        s.acquire();
        loop {
            s.ws.buf.clear();
            s.ws.buf.reserve(4096);
            match s
                .timer
                .within(deadline, s.client.read_buf(&mut s.ws.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
    }
    // What the client sent and nobody will read (a head cut short, pipelined requests after
    // the last answered one) is dropped with the connection.
    s.ws.buf.clear();
    s.release();
}

impl Session {
    /// Takes a workspace from the worker, unless one is held.
    fn acquire(&mut self) {
        if !self.held {
            *self.ws = self.w.spares.borrow_mut().take();
            self.held = true;
        }
    }

    /// Gives the workspace back to the worker: between requests with nothing buffered, or
    /// when the connection ends (`Spares::put` empties its read buffers either way).
    fn release(&mut self) {
        if self.held {
            self.w
                .spares
                .borrow_mut()
                .put(std::mem::take(&mut *self.ws));
            self.held = false;
        }
    }

    /// Waits, holding no buffer, until the client sends something, then reads it into a
    /// workspace's buffer. False when the client closed or failed, `deadline` passed, or
    /// (when `stoppable`) shutdown ended the wait.
    async fn first_bytes(&mut self, deadline: Instant, stoppable: bool) -> bool {
        loop {
            self.release();
            let ready = tokio::select! {
                r = self.timer.within(deadline, self.client.readable()) => matches!(r, Ok(Ok(()))),
                () = self.shutdown.recv(), if stoppable => false,
                // A reload while idle: let go of the old pool now, and wait on.
                () = self.w.changed() => {
                    self.w.refresh();
                    continue;
                }
            };
            if !ready {
                return false;
            }
            self.acquire();
            self.ws.buf.reserve(4096);
            // One poll of a read, not `try_read_buf`: a read that fills less than the buffer
            // tells tokio the socket is drained, so the next read of this client (the watch
            // while the upstream answers) does not cost a system call that finds nothing.
            let mut read = std::pin::pin!(self.client.read_buf(&mut self.ws.buf));
            let polled = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            match polled {
                Poll::Ready(Ok(n)) => return n > 0,
                Poll::Ready(Err(_)) => return false,
                // Readiness can be spurious: wait again.
                Poll::Pending => {}
            }
        }
    }

    /// Reads the next request head. `Ok(false)`: the client closed, idled out, or shutdown.
    async fn read_head(&mut self, first: bool) -> Result<bool, Refusal> {
        // The first request's whole head must come within client_header_timeout; a later one
        // may keep the client waiting for keepalive_timeout, and shutdown ends that wait.
        let cfg = &self.w.shared.config;
        let mut deadline = Instant::now() + cfg.client_header_timeout;
        if self.ws.buf.is_empty() {
            let wait = if first {
                deadline
            } else {
                Instant::now() + cfg.keepalive_timeout
            };
            if !self.first_bytes(wait, !first).await {
                return Ok(false);
            }
            if !first {
                deadline = Instant::now() + self.w.shared.config.client_header_timeout;
            }
        }
        let w = Rc::clone(&self.w.value);
        let cfg = &w.shared.config;
        loop {
            if !self.ws.buf.is_empty()
                && let Some(len) = head::parse_request(
                    &self.ws.buf,
                    &mut self.ws.head,
                    cfg.underscores_in_headers,
                )?
            {
                self.ws.head_bytes.clear();
                self.ws.head_bytes.extend_from_slice(&self.ws.buf[..len]);
                self.ws.buf.advance(len);
                return Ok(true);
            }
            self.ws.buf.reserve(4096);
            match self
                .timer
                .within(deadline, self.client.read_buf(&mut self.ws.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed, or too slow: dropped without an answer.
                _ => return Ok(false),
            }
        }
    }

    /// Writes the access log's line for the request just served, if the pool keeps one and
    /// the client got an answer.
    fn log_access(&self) {
        let Some(log) = &self.w.access_log else {
            return;
        };
        let (ws, hb) = (&self.ws, &self.ws.head_bytes[..]);
        if ws.served.status == 0 {
            return;
        }
        let header = |name: &[u8]| {
            ws.head
                .headers
                .iter()
                .find(|(n, _)| hb[n.clone()].eq_ignore_ascii_case(name))
                .map(|(_, v)| &hb[v.clone()])
        };
        let line = hb.split(|&b| b == b'\n').next().unwrap_or_default();
        log.borrow_mut().write(&access_log::Entry {
            remote: &self.remote_text,
            request: line.strip_suffix(b"\r").unwrap_or(line),
            status: ws.served.status,
            body_bytes: ws.served.body_bytes(),
            referer: header(b"referer"),
            user_agent: header(b"user-agent"),
            authorization: header(b"authorization"),
            tries: &ws.served.tries,
        });
    }

    /// The request's method as sent.
    fn method(&self) -> &[u8] {
        &self.ws.head_bytes[self.ws.head.method.clone()]
    }

    /// Answers the request in `head`; false when the connection must close.
    async fn handle(&mut self) -> bool {
        let w = std::rc::Rc::clone(&self.w.value);
        if self.method() == b"TRACE" {
            // nginx refuses TRACE outright (it would echo credentials back) and closes.
            self.ws.head.keep_alive = false;
            return self.local(405, &[], None, false).await;
        }
        match path::normalize(
            &self.ws.head_bytes[self.ws.head.path.clone()],
            &mut self.ws.uri,
        ) {
            Ok(copied) => self.uri_copied = copied,
            Err(path::BadPath) => {
                self.ws.head.keep_alive = false;
                return self.local(400, &[], None, false).await;
            }
        }
        let (h, hb) = (&self.ws.head, &self.ws.head_bytes[..]);
        let path = if self.uri_copied {
            &self.ws.uri[..]
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
        self.ws.edits.clear();
        if w.plugins.borrow().runs_http(location) {
            // Only a proxy-wasm filter keeps a context per request (walnut plugins need no tag).
            let filters = w.plugins.borrow().runs_proxy_wasm(location);
            let tag = match filters {
                true => RequestTag::next(Some(self.remote)),
                false => RequestTag::default(),
            };
            self.hooked = filters.then_some((location, tag));
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
                tag,
            };
            let verdict = w
                .plugins
                .borrow_mut()
                .http(&call, &mut self.ws.edits, &w.stats);
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
                self.proxy(location, *upstream, method.as_deref()).await
            }
        }
    }
}
