//! Passing a request to an upstream: choose a server, get a connection, try, and on a failure
//! go on to the next server when the attempt's outcome allows it (nginx's
//! `proxy_next_upstream error timeout`).

use super::Session;
use super::attempt::{Cause, Forward, Outcome, Replay};
use crate::config::KeySource;
use crate::http::access_log::Try;
use crate::http::balance::{Tries, now_ms};
use crate::http::body_phases::BodyStop;
use crate::http::conn_pool::{self, ConnectError};
use crate::http::head::Framing;
use crate::plugin::Hook;

impl Session {
    /// Passes the request to upstream `u`; false when the client connection must close.
    pub(super) async fn proxy(
        &mut self,
        location: usize,
        u: usize,
        method_override: Option<&str>,
    ) -> bool {
        let has_key = self.render_key(u);
        // Taken out for the request (and put back) so the key can be borrowed while `self` is
        // used mutably; the buffer keeps its capacity.
        let key = std::mem::take(&mut self.ws.key);
        let keep = self
            .forward(location, u, method_override, has_key.then_some(&key[..]))
            .await;
        self.ws.key = key;
        keep
    }

    /// Writes the request's hash key into `key`: a plugin's, else the upstream's `hash:`
    /// template; false when there is none.
    fn render_key(&mut self, u: usize) -> bool {
        let w = std::rc::Rc::clone(&self.w.value);
        if let Some(k) = &self.ws.edits.hash_key {
            self.ws.key.clear();
            self.ws.key.extend_from_slice(k);
            return true;
        }
        let Some(template) = &w.shared.upstreams[u].config.hash else {
            return false;
        };
        let (hb, h) = (&self.ws.head_bytes[..], &self.ws.head);
        let find = |name: &str| {
            h.headers
                .iter()
                .find(|(n, _)| hb[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| &hb[v.clone()])
        };
        let uri = match (&self.ws.edits.path, self.uri_copied) {
            (Some(p), _) => &p[..],
            (None, true) => &self.ws.uri[..],
            (None, false) => &hb[h.path.clone()],
        };
        let src = KeySource {
            request_uri: &hb[h.origin.clone()],
            uri,
            query: self
                .ws
                .edits
                .query
                .as_deref()
                .unwrap_or(&hb[h.query.clone()]),
            remote: self.remote,
            headers: &find,
        };
        template.render(&src, &mut self.ws.key);
        true
    }

    async fn forward(
        &mut self,
        location: usize,
        u: usize,
        method_override: Option<&str>,
        key: Option<&[u8]>,
    ) -> bool {
        let w = std::rc::Rc::clone(&self.w.value);
        let cfg = &w.shared.config;
        let framing = self.ws.head.framing.unwrap_or(Framing::None);
        let client_head = self.method() == b"HEAD";
        let method: &[u8] = match method_override {
            Some(m) => m.as_bytes(),
            None => self.method(),
        };
        // The request body goes through the filters' body phases; when one removed
        // Content-Length (it may change the body's length), it goes upstream chunked.
        let body_tag = self.body_tag(Hook::HttpRequestBody, location, framing.has_body());
        let send = match framing {
            Framing::Length(_) if body_tag.is_some() && self.ws.edits.unframed => Framing::Chunked,
            _ => framing,
        };
        let req = Forward {
            location,
            method_override,
            framing,
            send,
            body_tag,
            replay: Replay::of(method, framing),
            upstream_head: method == b"HEAD",
            client_head,
        };
        let servers = w.shared.upstreams[u].config.servers.len();
        let mut tries = Tries::default();
        let mut timed_out = false;
        let mut stale_retries = 0;
        let mut sent_continue = false;
        loop {
            let pick = w.balancers.borrow_mut()[u].pick(&mut tries, key, now_ms());
            let Some(i) = pick else {
                let status = if timed_out { 504 } else { 502 };
                tracing::warn!(pool = %cfg.name, upstream = %w.shared.upstreams[u].config.name, status, "no upstream server left for the request");
                return self.local(status, &[], None, true).await;
            };
            let server = &w.shared.upstreams[u].config.servers[i];
            let counters = &w.stats.servers[w.shared.server_index(u, i)];
            counters.requests.incr();
            let started = std::time::Instant::now();
            let tried = Try {
                addr: server.addr,
                took: Default::default(),
            };
            let idle = w.conns.borrow_mut()[u].checkout(i);
            let mut conn = match idle {
                Some(c) => c,
                None => match conn_pool::connect(server.addr, cfg.timeout).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(pool = %cfg.name, server = %server.text, "{e}");
                        let timeout = matches!(e, ConnectError::TimedOut);
                        if timeout {
                            counters.server_timedout.incr();
                        } else {
                            counters.server_err.incr();
                        }
                        w.balancers.borrow_mut()[u].failed(i, now_ms());
                        timed_out |= timeout;
                        self.ws.served.tries.push(Try {
                            took: started.elapsed(),
                            ..tried
                        });
                        // Nothing was sent: the next server may always be tried.
                        continue;
                    }
                },
            };
            if self.ws.head.expect_continue && framing.has_body() && !sent_continue {
                sent_continue = true;
                self.ws.out.clear();
                self.ws
                    .out
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                if !self.write_client().await {
                    return false;
                }
            }
            let outcome = self.attempt(&mut conn, u, i, &req).await;
            self.ws.served.tries.push(Try {
                took: started.elapsed(),
                ..tried
            });
            match outcome {
                Outcome::Relayed(r) => {
                    counters.responses.incr();
                    w.balancers.borrow()[u].succeeded(i);
                    if r.reuse_upstream {
                        w.conns.borrow_mut()[u].checkin(i, conn);
                    }
                    return r.keep_client;
                }
                Outcome::Failed { cause, retry } => {
                    match cause {
                        Cause::Stale => {}
                        Cause::Error => counters.server_err.incr(),
                        Cause::TimedOut => counters.server_timedout.incr(),
                    }
                    if cause != Cause::Stale {
                        w.balancers.borrow_mut()[u].failed(i, now_ms());
                    }
                    timed_out |= cause == Cause::TimedOut;
                    if !retry {
                        tracing::warn!(pool = %cfg.name, server = %server.text, ?cause, "upstream failed after the request was sent; not re-sent");
                        let status = if cause == Cause::TimedOut { 504 } else { 502 };
                        return self.local(status, &[], None, true).await;
                    }
                    if cause == Cause::Stale {
                        // A kept-alive connection the server had closed: the same server may
                        // be tried again, on another connection, a few times.
                        stale_retries += 1;
                        if stale_retries <= servers + 1 {
                            tries.allow(i);
                        }
                    } else {
                        tracing::warn!(pool = %cfg.name, server = %server.text, ?cause, "upstream failed; trying the next server");
                    }
                }
                Outcome::Answer { status, close } => {
                    return self.local(status, &[], None, !close).await;
                }
                Outcome::Abort(status) => {
                    if let Some(status) = status {
                        self.ws.head.keep_alive = false;
                        let _ = self.local(status, &[], None, false).await;
                    }
                    return false;
                }
                Outcome::ClientGone => return false,
                Outcome::Stopped(stop) => {
                    // The upstream got part of the request: its connection is closed. The
                    // client's body may be partly unread: its connection closes too.
                    self.ws.head.keep_alive = false;
                    let _ = match stop {
                        BodyStop::Respond(a) => {
                            self.local(a.status, &a.headers, Some(&a.body), false).await
                        }
                        BodyStop::TooLarge => self.local(413, &[], None, false).await,
                        BodyStop::Failed => self.local(500, &[], None, false).await,
                    };
                    return false;
                }
            }
        }
    }
}
