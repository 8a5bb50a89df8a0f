//! One try of a request on one upstream server: send the head and body, relay the answer.

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{Attempt, COALESCE, Session};
use crate::http::balance::now_ms;
use crate::http::body::{Out, RelayError, relay};
use crate::http::head::{self, Framing};
use crate::http::upstream::Conn;

impl Session<'_> {
    /// One try on server `i` over `conn`: once a response was relayed (or begun),
    /// `Ok((keep the client connection, reuse conn))`.
    pub(super) async fn attempt(
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
        let write = self
            .timer
            .timeout(timeout, conn.stream.write_all(&self.out))
            .await;
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
                (&mut self.timer, cfg.client_header_timeout),
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
            match self
                .timer
                .within(deadline, conn.stream.read_buf(&mut conn.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                Err(_) => return Err(self.no_answer(u, i, retry_safe, true)),
                Ok(_) => {
                    if stale && !got_any && !framing.has_body() {
                        return Err(Attempt::Retry {
                            failed: false,
                            timeout: false,
                        });
                    }
                    return Err(self.no_answer(u, i, retry_safe, false));
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
        keep &= !self.shutdown.is_shutdown();
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
            (&mut self.timer, timeout),
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

    /// Server `i` of upstream `u` timed out or closed before its response head: the next
    /// server when retrying is safe, else it is marked failed and the client gets 504 or 502.
    fn no_answer(&self, u: usize, i: usize, retry_safe: bool, timeout: bool) -> Attempt {
        if retry_safe {
            return Attempt::Retry {
                failed: true,
                timeout,
            };
        }
        let w = self.w;
        let server = &w.shared.upstreams[u].config.servers[i];
        w.balancers.borrow_mut()[u].failed(i, now_ms());
        let what = if timeout {
            "upstream timed out"
        } else {
            "upstream closed before answering"
        };
        tracing::warn!(pool = %w.shared.config.name, server = %server.text, "{what}");
        Attempt::Status {
            status: if timeout { 504 } else { 502 },
            close: false,
        }
    }
}
