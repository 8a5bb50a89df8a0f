//! Answers walnut writes itself: errors, plugin answers and `return:`. Every one carries a
//! `Date`; a redirect carries its `Location`, made absolute as nginx's `absolute_redirect`
//! makes it.

use tokio::io::AsyncWriteExt;

use super::Session;
use super::heads::{connection_header, status_line};
use crate::config::is_redirect;
use crate::http::body::{Out, Pace, relay};
use crate::http::date::put_date;
use crate::http::head::Framing;
use crate::http::headers::{hop_by_hop, put, put_number, reason};

impl Session {
    /// Answers locally with `status` (a short default body unless `body` is given). When the
    /// request's body is unread it is discarded after (if `keep`), else the connection closes.
    pub(super) async fn local(
        &mut self,
        status: u16,
        extra: &[(Vec<u8>, Vec<u8>)],
        body: Option<&[u8]>,
        keep: bool,
    ) -> bool {
        let framing = self.ws.head.framing.unwrap_or(Framing::None);
        let unread_body = framing.has_body();
        // A client waiting for 100 Continue is not made to send a body nobody reads.
        let keep = keep
            && self.ws.head.keep_alive
            && !(unread_body && self.ws.head.expect_continue)
            && !self.shutdown.is_shutdown();
        let default;
        let body = match body {
            Some(b) => b,
            None => {
                default = format!("{status} {}\n", reason(status));
                default.as_bytes()
            }
        };
        // 204 and 304 never have a body.
        let bodiless = matches!(status, 204 | 304);
        let out = &mut self.ws.out;
        out.clear();
        status_line(out, status, reason(status).as_bytes());
        out.extend_from_slice(b"Server: walnut\r\n");
        put_date(out);
        let mut typed = false;
        for (n, v) in extra {
            if hop_by_hop(n, std::iter::empty()) {
                continue;
            }
            typed |= n.eq_ignore_ascii_case(b"content-type");
            put(out, n, v);
        }
        if !bodiless {
            if !typed {
                out.extend_from_slice(b"Content-Type: text/plain\r\n");
            }
            out.extend_from_slice(b"Content-Length: ");
            put_number(out, body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        connection_header(out, keep, self.ws.head.minor);
        out.extend_from_slice(b"\r\n");
        self.ws.served.answer(status, out.len());
        // (After a refused head, `head` may describe bytes never kept.)
        let head_request =
            self.ws.head_bytes.get(self.ws.head.method.clone()) == Some(&b"HEAD"[..]);
        if !head_request && !bodiless {
            out.extend_from_slice(body);
        }
        if !self.write_client().await {
            return false;
        }
        if keep && unread_body {
            let pace = Pace {
                read: self.w.shared.config.client_header_timeout,
                write: self.w.shared.config.send_timeout,
            };
            let mut sink = tokio::io::sink();
            return relay(
                &mut self.client,
                &mut self.ws.buf,
                framing,
                &mut sink,
                Out::Raw,
                (&mut self.timer, pace),
                &mut self.ws.scratch,
                None,
            )
            .await
            .is_ok();
        }
        keep
    }

    /// Writes `out` to the client within `send_timeout`; false when it could not.
    pub(super) async fn write_client(&mut self) -> bool {
        let limit = self.w.shared.config.send_timeout;
        let written = matches!(
            self.timer
                .timeout(limit, self.client.write_all(&self.ws.out))
                .await,
            Ok(Ok(()))
        );
        if written {
            self.ws.served.sent += self.ws.out.len() as u64;
        }
        written
    }

    /// `return: CODE [text]`: a redirect to the text, else the text as the body (nginx sends
    /// it as written; with no text, a code under 400 has an empty body and an error its page).
    pub(super) async fn answer_return(&mut self, status: u16, text: &str) -> bool {
        if is_redirect(status) {
            let location = self.absolute(text.as_bytes());
            let extra = [(b"Location".to_vec(), location)];
            return self.local(status, &extra, None, true).await;
        }
        let body = match (text.is_empty(), status < 400) {
            (false, _) => Some(text.as_bytes()),
            (true, true) => Some(&b""[..]),
            (true, false) => None,
        };
        self.local(status, &[], body, true).await
    }

    /// A redirect target as nginx sends it: a path gets `http://`, the request's host (its
    /// `Host` without the port, else walnut's address) and walnut's port unless it is 80.
    fn absolute(&self, target: &[u8]) -> Vec<u8> {
        if target.first() != Some(&b'/') {
            return target.to_vec();
        }
        let (h, hb) = (&self.ws.head, &self.ws.head_bytes[..]);
        let host = h.authority.clone().map(|a| &hb[a]).or_else(|| {
            h.headers
                .iter()
                .find(|(n, _)| hb[n.clone()].eq_ignore_ascii_case(b"host"))
                .map(|(_, v)| &hb[v.clone()])
        });
        let local = self.client.local_addr().ok();
        let mut out = b"http://".to_vec();
        match host.filter(|h| !h.is_empty()) {
            Some(host) => {
                // Without its port: `host:8080` and `[::1]:8080`.
                let end = match host.iter().rposition(|&b| b == b':') {
                    Some(c) if !host.ends_with(b"]") => c,
                    _ => host.len(),
                };
                out.extend(host[..end].iter().map(u8::to_ascii_lowercase));
            }
            None => {
                if let Some(a) = local {
                    out.extend_from_slice(a.ip().to_string().as_bytes());
                }
            }
        }
        if let Some(port) = local.map(|a| a.port()).filter(|&p| p != 80) {
            out.push(b':');
            put_number(&mut out, port.into());
        }
        out.extend_from_slice(target);
        out
    }
}
