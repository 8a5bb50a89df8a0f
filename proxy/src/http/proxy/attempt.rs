//! One try of a request on one upstream server: send the head and body, wait for the answer
//! (noticing a client that goes away meanwhile), relay it. Its [`Outcome`] says what happened
//! and, from the request's [`Replay`] safety and how far it got, whether another server may be
//! tried: a request that is not idempotent, or whose body was streamed, is never sent twice
//! (RFC 9110 9.2.2).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{COALESCE, Session};
use crate::http::Worker;
use crate::http::balance::now_ms;
use crate::http::body::{Out, Pace, RelayError, Tap, relay};
use crate::http::body_phases::{Body, BodyStages, BodyStop, Filtered};
use crate::http::conn_pool::Conn;
use crate::http::head::{self, Framing, MAX_HEAD};
use crate::plugin::{Hook, RequestTag};

/// How much pipelined input is read from the client while it waits for an answer (reading is
/// how its leaving is noticed); past this, it is not watched.
const WATCH_LIMIT: usize = 4 * MAX_HEAD;

/// Whether a request may be sent again after it was written to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Idempotent and without a body: a server that failed before answering is replaced.
    Safe,
    /// Not idempotent, or its body was streamed (and is gone): sent once, and only a try that
    /// wrote nothing may be repeated.
    Once,
}

impl Replay {
    pub(super) fn of(method: &[u8], framing: Framing) -> Replay {
        // RFC 9110 9.2.2.
        let idempotent = matches!(
            method,
            b"GET" | b"HEAD" | b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE"
        );
        if idempotent && !framing.has_body() {
            Replay::Safe
        } else {
            Replay::Once
        }
    }

    /// Whether a try that got as far as `reach` may be followed by another.
    fn allows(self, reach: Reach) -> bool {
        self == Replay::Safe || reach == Reach::NotSent
    }
}

/// How far a failed try got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Nothing reached a server that could act on it (the write itself failed).
    NotSent,
    /// The request was written; the server may have acted on it.
    Written,
}

/// Why a server gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// A kept-alive connection the server had closed (not the server's failure).
    Stale,
    Error,
    TimedOut,
}

/// The request as it goes upstream.
pub(super) struct Forward<'a> {
    /// The location whose plugins see the response.
    pub location: usize,
    pub method_override: Option<&'a str>,
    /// The request body's framing as the client sent it.
    pub framing: Framing,
    /// The framing it is sent upstream with: chunked when a body filter may change its length.
    pub send: Framing,
    /// The request body goes through the filters' body phases (the request's tag).
    pub body_tag: Option<RequestTag>,
    pub replay: Replay,
    /// The method sent upstream is HEAD (its answer has no body).
    pub upstream_head: bool,
    /// The client's method is HEAD: it gets no body, whatever the upstream sends.
    pub client_head: bool,
}

/// A response relayed to the client, and what may be used again after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Relayed {
    pub keep_client: bool,
    pub reuse_upstream: bool,
}

/// How one try ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Relayed(Relayed),
    /// The server gave no answer; `retry` when another server may be tried.
    Failed {
        cause: Cause,
        retry: bool,
    },
    /// Answer the client with `status` (the server sent garbage), closing when `close`.
    Answer {
        status: u16,
        close: bool,
    },
    /// The client broke off or broke the framing: close, having answered `Some` status.
    Abort(Option<u16>),
    /// The client went away while its request waited: the upstream try is dropped.
    ClientGone,
    /// A body filter stopped the request body (it answered, failed or held too much).
    Stopped(BodyStop),
}

/// The client's socket, counting the bytes written to it (the access log's body bytes).
struct Counted<'a, W> {
    inner: &'a mut W,
    sent: &'a mut u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            *self.sent += n as u64;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// What woke the wait for a response head.
enum Woke {
    Upstream(io::Result<usize>),
    Client(io::Result<usize>),
}

/// The body phases of request `tag` on `location` for one body (the response's, or the
/// request's), nothing held yet; `fixed` when its length is promised.
fn filters<'a>(
    w: &'a Worker,
    stages: &'a mut BodyStages,
    (location, tag): (usize, RequestTag),
    response: bool,
    fixed: bool,
) -> Filtered<'a> {
    stages.clear();
    Filtered {
        plugins: &w.plugins,
        stages,
        stats: &w.stats,
        body: Body {
            location: Some(location),
            tag,
            response,
            fixed,
            underscores: w.shared.config.underscores_in_headers,
        },
        stop: None,
    }
}

impl Session {
    /// The request's tag when a body it has (`has_body`) goes through the body phases `hook`
    /// of proxy-wasm filters on `location`.
    pub(super) fn body_tag(
        &self,
        hook: Hook,
        location: usize,
        has_body: bool,
    ) -> Option<RequestTag> {
        let (_, tag) = self.hooked.filter(|_| has_body)?;
        let plugins = self.w.plugins.borrow();
        plugins.may_http(hook, Some(location)).then_some(tag)
    }

    /// One try on server `i` of upstream `u` over `conn`.
    pub(super) async fn attempt(
        &mut self,
        conn: &mut Conn,
        u: usize,
        i: usize,
        req: &Forward<'_>,
    ) -> Outcome {
        let w = std::rc::Rc::clone(&self.w.value);
        let cfg = &w.shared.config;
        let server = &w.shared.upstreams[u].config.servers[i];
        self.upstream_head(req.method_override, req.send, &server.text);
        // What an earlier try or request left unread belongs to nothing now.
        self.ws.up.clear();
        let stale = conn.reused;
        let failed = |cause: Cause, reach: Reach| Outcome::Failed {
            cause,
            retry: req.replay.allows(reach),
        };
        let write = self
            .timer
            .timeout(cfg.proxy_send_timeout, conn.stream.write_all(&self.ws.out))
            .await;
        match write {
            Ok(Ok(())) => {}
            // The server had closed the kept-alive connection: it saw nothing.
            Ok(Err(_)) if stale => return failed(Cause::Stale, Reach::NotSent),
            Ok(Err(_)) => return failed(Cause::Error, Reach::NotSent),
            Err(_) => return failed(Cause::TimedOut, Reach::Written),
        }
        if req.framing.has_body() {
            let out = if req.send == Framing::Chunked {
                Out::Chunked
            } else {
                Out::Raw
            };
            let pace = Pace {
                read: cfg.client_header_timeout,
                write: cfg.proxy_send_timeout,
            };
            let ws = &mut *self.ws;
            let fixed = matches!(req.send, Framing::Length(_));
            let mut filtered = req
                .body_tag
                .map(|tag| filters(&w, &mut ws.stages, (req.location, tag), false, fixed));
            let r = relay(
                &mut self.client,
                &mut ws.buf,
                req.framing,
                &mut conn.stream,
                out,
                (&mut self.timer, pace),
                &mut ws.scratch,
                filtered.as_mut().map(|f| f as &mut dyn Tap),
            )
            .await;
            match r {
                Ok(()) => {}
                Err(RelayError::Tapped) => {
                    let stop = filtered.and_then(|f| f.stop);
                    return Outcome::Stopped(stop.unwrap_or(BodyStop::Failed));
                }
                Err(RelayError::Bad) => return Outcome::Abort(Some(400)),
                Err(RelayError::Read(_) | RelayError::ReadTimeout) => return Outcome::Abort(None),
                Err(e @ (RelayError::Write(_) | RelayError::WriteTimeout)) => {
                    // The body is partly gone: no other server can have the request.
                    tracing::warn!(pool = %cfg.name, server = %server.text, "sending the request body: {e}");
                    w.balancers.borrow_mut()[u].failed(i, now_ms());
                    let status = if matches!(e, RelayError::WriteTimeout) {
                        504
                    } else {
                        502
                    };
                    return Outcome::Abort(Some(status));
                }
            }
        }
        // The response head (interim 1xx answers skipped).
        let deadline = Instant::now() + cfg.timeout;
        let mut got_any = false;
        let len = loop {
            if !self.ws.up.is_empty() {
                got_any = true;
                let ws = &mut self.ws;
                match head::parse_response(&ws.up, req.upstream_head, &mut ws.resp) {
                    Ok(Some(len))
                        if (100..200).contains(&self.ws.resp.status)
                            && self.ws.resp.status != 101 =>
                    {
                        self.ws.up.advance(len);
                        continue;
                    }
                    Ok(Some(_)) if self.ws.resp.status == 101 => {
                        // walnut never passes `Upgrade` on, so no switch was asked for (RFC 9110
                        // 15.2.2): the connection now speaks something else. It is closed, and
                        // the client is not handed a protocol it did not ask for.
                        tracing::warn!(pool = %cfg.name, server = %server.text, "upstream answered 101 Switching Protocols to a request without Upgrade");
                        w.balancers.borrow_mut()[u].failed(i, now_ms());
                        return Outcome::Answer {
                            status: 502,
                            close: false,
                        };
                    }
                    Ok(Some(len)) => break len,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(pool = %cfg.name, server = %server.text, "{e}");
                        w.balancers.borrow_mut()[u].failed(i, now_ms());
                        return Outcome::Answer {
                            status: 502,
                            close: false,
                        };
                    }
                }
            }
            self.ws.up.reserve(16 * 1024);
            let watch = self.ws.buf.len() < WATCH_LIMIT;
            if watch {
                self.ws.buf.reserve(4096);
            }
            let (client, cbuf, up) = (&mut self.client, &mut self.ws.buf, &mut self.ws.up);
            let woke = self
                .timer
                .within(deadline, async {
                    tokio::select! {
                        biased;
                        r = conn.stream.read_buf(up) => Woke::Upstream(r),
                        r = client.read_buf(cbuf), if watch => Woke::Client(r),
                    }
                })
                .await;
            match woke {
                Ok(Woke::Upstream(Ok(n))) if n > 0 => {}
                // Pipelined input: kept for its turn.
                Ok(Woke::Client(Ok(n))) if n > 0 => {}
                Ok(Woke::Client(_)) => {
                    // As nginx (499): the client closed, so the try is dropped, and the
                    // server is not blamed.
                    tracing::debug!(pool = %cfg.name, server = %server.text, "client closed while waiting for the upstream");
                    return Outcome::ClientGone;
                }
                Err(_) => return failed(Cause::TimedOut, Reach::Written),
                Ok(Woke::Upstream(_)) => {
                    let cause = if stale && !got_any {
                        Cause::Stale
                    } else {
                        Cause::Error
                    };
                    return failed(cause, Reach::Written);
                }
            }
        };
        self.relay_response(conn, len, req).await
    }

    /// Runs the response hooks of the pool's and `location`'s plugins on the response head,
    /// the first `len` bytes of `up`; false when a `fail_closed` plugin failed.
    fn response_hooks(&mut self, len: usize, location: usize) -> bool {
        let w = std::rc::Rc::clone(&self.w.value);
        let ws = &mut *self.ws;
        ws.resp_headers = Default::default();
        if !w
            .plugins
            .borrow()
            .may_http(Hook::HttpResponse, Some(location))
        {
            return true;
        }
        let (raw, r) = (&ws.up[..len], &ws.resp);
        let headers = || {
            r.headers
                .iter()
                .map(|(n, v)| (&raw[n.clone()], &raw[v.clone()]))
        };
        let tag = self.hooked.map(|h| h.1).unwrap_or_default();
        let hooked = w.plugins.borrow_mut().http_response(
            Some(location),
            tag,
            r.status,
            headers,
            w.shared.config.underscores_in_headers,
            &mut ws.resp_headers,
            &w.stats,
        );
        hooked.is_ok()
    }

    /// Sends the response whose head is the first `len` bytes of `up` to the client.
    async fn relay_response(&mut self, conn: &mut Conn, len: usize, req: &Forward<'_>) -> Outcome {
        let w = std::rc::Rc::clone(&self.w.value);
        let cfg = &w.shared.config;
        let resp_framing = self.ws.resp.framing.unwrap_or(Framing::None);
        if !self.response_hooks(len, req.location) {
            // The client gets 502; the upstream connection, its body unread, is not kept.
            return Outcome::Answer {
                status: 502,
                close: false,
            };
        }
        // The body goes through the filters' body phases; when one removed Content-Length (it
        // may change the body's length), the client gets the body as if the upstream had sent
        // it without one.
        let has_body = !req.client_head && resp_framing.has_body();
        let body_tag = self.body_tag(Hook::HttpResponseBody, req.location, has_body);
        let unframed = body_tag.is_some()
            && self.ws.resp_headers.unframed
            && matches!(resp_framing, Framing::Length(_));
        let shown = if unframed {
            Framing::Close
        } else {
            resp_framing
        };
        let h11 = self.ws.head.minor == 1;
        let (out_mode, mut keep) = match shown {
            _ if req.client_head => (Out::Raw, self.ws.head.keep_alive),
            Framing::None | Framing::Length(_) => (Out::Raw, self.ws.head.keep_alive),
            Framing::Chunked | Framing::Close if h11 => (Out::Chunked, self.ws.head.keep_alive),
            Framing::Chunked | Framing::Close => (Out::Raw, false),
        };
        keep &= !self.shutdown.is_shutdown();
        self.response_head(len, shown, out_mode, keep, req.client_head);
        let head_len = self.ws.out.len();
        self.ws.served.answer(self.ws.resp.status, head_len);
        self.ws.up.advance(len);
        // A request body the server may not have read could be taken for a next request: the
        // connection is never used again (nor after a body left unread for a HEAD client).
        let reusable = self.ws.resp.reusable && !req.framing.has_body();
        if req.client_head {
            // The client's method decides: no body goes back, whatever the server sent (a GET
            // answer under `proxy_method GET`), and its unread body closes the connection.
            let reuse_upstream = reusable && !resp_framing.has_body();
            if !self.write_client().await {
                return Outcome::Relayed(Relayed {
                    keep_client: false,
                    reuse_upstream,
                });
            }
            return Outcome::Relayed(Relayed {
                keep_client: keep,
                reuse_upstream,
            });
        }
        let mut rest = resp_framing;
        if let Framing::Length(n) = resp_framing
            && body_tag.is_none()
        {
            let k = self.ws.up.len().min(n as usize).min(COALESCE);
            let ws = &mut self.ws;
            ws.out.extend_from_slice(&ws.up[..k]);
            ws.up.advance(k);
            rest = Framing::Length(n - k as u64);
        }
        let broken = Relayed {
            keep_client: false,
            reuse_upstream: false,
        };
        if !self.write_client().await {
            return Outcome::Relayed(broken);
        }
        let pace = Pace {
            read: cfg.timeout,
            write: cfg.send_timeout,
        };
        let ws = &mut *self.ws;
        let mut client = Counted {
            inner: &mut self.client,
            sent: &mut ws.served.sent,
        };
        // A filter may change the body's length unless the client was promised it.
        let fixed = matches!(shown, Framing::Length(_));
        let mut filtered =
            body_tag.map(|tag| filters(&w, &mut ws.stages, (req.location, tag), true, fixed));
        let r = relay(
            &mut conn.stream,
            &mut ws.up,
            rest,
            &mut client,
            out_mode,
            (&mut self.timer, pace),
            &mut ws.scratch,
            filtered.as_mut().map(|f| f as &mut dyn Tap),
        )
        .await;
        match r {
            Ok(()) => Outcome::Relayed(Relayed {
                keep_client: keep,
                reuse_upstream: reusable,
            }),
            Err(e) => {
                if !matches!(e, RelayError::Write(_)) {
                    tracing::warn!(pool = %cfg.name, "relaying the response: {e}");
                }
                Outcome::Relayed(broken)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_requests_are_sent_twice() {
        let get = Replay::of(b"GET", Framing::None);
        let post = Replay::of(b"POST", Framing::None);
        let put_body = Replay::of(b"PUT", Framing::Length(3));
        let get_empty_body = Replay::of(b"GET", Framing::Length(0));
        assert_eq!((get, get_empty_body), (Replay::Safe, Replay::Safe));
        assert_eq!((post, put_body), (Replay::Once, Replay::Once));
        assert!(get.allows(Reach::Written));
        assert!(!post.allows(Reach::Written) && post.allows(Reach::NotSent));
        assert!(!put_body.allows(Reach::Written));
    }
}
