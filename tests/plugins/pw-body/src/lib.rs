//! A proxy-wasm HTTP filter written as for Envoy, with the proxy-wasm Rust SDK unmodified: it
//! reads request and response bodies piece by piece and tells what it saw (bytes, calls, an
//! FNV-1a checksum, whether the end came) in a response header and in the log; as its JSON
//! configuration asks, it holds a body back until its end to deny it, rewrite it or redact a
//! word in it.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Config::default() })
    });
}}

/// Every key is optional; none at all only observes.
#[derive(Deserialize, Clone, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Answer 403 to a request whose body contains this word.
    deny_word: Option<String>,
    /// Send the request body upstream uppercased with "!" appended, without Content-Length.
    upper_request: bool,
    /// Replace this word by `[redacted]` in the response body, without Content-Length.
    redact: Option<String>,
    /// With `redact`: leave the response's Content-Length (the host refuses a length change
    /// then, and allows it on a response without one).
    keep_length: bool,
    /// Append "x" to the request body but keep its Content-Length (the host must refuse it).
    grow_keep_length: bool,
    /// Hold the request body back on every call, its end included (the host must fail it).
    pause_at_end: bool,
}

impl Config {
    /// Whether the request body is held back until its end.
    fn holds_request(&self) -> bool {
        self.deny_word.is_some() || self.upper_request || self.grow_keep_length
    }
}

struct Root {
    config: Config,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        if bytes.is_empty() {
            return true;
        }
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) => {
                self.config = config;
                true
            }
            Err(e) => {
                proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    &format!("pw-body: bad configuration: {e}"),
                )
                .ok();
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(BodyFilter {
            config: self.config.clone(),
            request: Seen::new(),
            response: Seen::new(),
        }))
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// What one body phase saw: each byte once, in order (the bytes it held back on earlier calls
/// are in the buffer again, and are skipped).
struct Seen {
    calls: u32,
    bytes: usize,
    end: bool,
    /// FNV-1a 64 of the bytes so far.
    sum: u64,
    /// How many bytes of the buffer the filter held back (paused on) so far.
    held: usize,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            calls: 0,
            bytes: 0,
            end: false,
            sum: FNV_OFFSET,
            held: 0,
        }
    }

    fn record(&mut self, new: &[u8], end_of_stream: bool) {
        self.calls += 1;
        self.bytes += new.len();
        self.end |= end_of_stream;
        for &b in new {
            self.sum = (self.sum ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }
}

struct BodyFilter {
    config: Config,
    request: Seen,
    response: Seen,
}

impl Context for BodyFilter {}

impl HttpContext for BodyFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.config.upper_request {
            self.set_http_request_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let held = self.request.held;
        let new = self
            .get_http_request_body(held, body_size.saturating_sub(held))
            .unwrap_or_default();
        self.request.record(&new, end_of_stream);
        if self.config.pause_at_end || (self.config.holds_request() && !end_of_stream) {
            self.request.held = body_size;
            return Action::Pause;
        }
        self.request.held = 0;
        if !self.config.holds_request() {
            return Action::Continue;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        if let Some(word) = &self.config.deny_word {
            if find(&body, word.as_bytes()).is_some() {
                self.send_http_response(
                    403,
                    vec![("x-denied-by", "pw-body")],
                    Some(b"body denied\n"),
                );
                return Action::Pause;
            }
        }
        if self.config.upper_request {
            let mut upper = body.to_ascii_uppercase();
            upper.push(b'!');
            self.set_http_request_body(0, body_size, &upper);
        } else if self.config.grow_keep_length {
            let mut grown = body;
            grown.push(b'x');
            self.set_http_request_body(0, body_size, &grown);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let r = &self.request;
        let seen = format!("{} {} {} {:016x}", r.bytes, r.calls, r.end, r.sum);
        self.add_http_response_header("x-pw-request-body", &seen);
        if self.config.redact.is_some() && !self.config.keep_length {
            // As the SDK's examples/http_body does: the body's length is about to change.
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let held = self.response.held;
        let new = self
            .get_http_response_body(held, body_size.saturating_sub(held))
            .unwrap_or_default();
        self.response.record(&new, end_of_stream);
        let Some(word) = &self.config.redact else {
            return Action::Continue;
        };
        if !end_of_stream {
            self.response.held = body_size;
            return Action::Pause;
        }
        self.response.held = 0;
        let body = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        let redacted = replace(&body, word.as_bytes(), b"[redacted]");
        self.set_http_response_body(0, body_size, &redacted);
        Action::Continue
    }

    fn on_log(&mut self) {
        let (q, r) = (&self.request, &self.response);
        proxy_wasm::hostcalls::log(
            LogLevel::Info,
            &format!(
                "pw-body: request {} bytes in {} calls; response {} bytes in {} calls, end={}, sum={:016x}",
                q.bytes, q.calls, r.bytes, r.calls, r.end, r.sum
            ),
        )
        .ok();
    }
}

/// Where `word` first occurs in `haystack`.
fn find(haystack: &[u8], word: &[u8]) -> Option<usize> {
    if word.is_empty() {
        return None;
    }
    haystack.windows(word.len()).position(|w| w == word)
}

/// `body` with every occurrence of `word` replaced by `with`.
fn replace(body: &[u8], word: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = find(rest, word) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + word.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_finds_every_occurrence() {
        assert_eq!(
            replace(b"a secret, secret b", b"secret", b"[r]"),
            b"a [r], [r] b"
        );
        assert_eq!(replace(b"nothing", b"secret", b"[r]"), b"nothing");
        assert_eq!(replace(b"", b"secret", b"[r]"), b"");
    }

    #[test]
    fn fnv_1a_of_a_known_string() {
        let mut s = Seen::new();
        s.record(b"a", false);
        assert_eq!(s.sum, 0xaf63_dc4c_8601_ec8c);
    }
}
