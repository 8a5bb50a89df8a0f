//! A proxy-wasm HTTP filter written as for Envoy, with the proxy-wasm Rust SDK unmodified: a
//! request whose path starts with `/admin` gets a local 403 with a body, and never reaches the
//! upstream.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Deny) });
}}

struct Deny;

impl Context for Deny {}

impl HttpContext for Deny {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.get_http_request_header(":path") {
            Some(path) if path.starts_with("/admin") => {
                self.send_http_response(
                    403,
                    vec![("x-denied-by", "pw-deny"), ("content-type", "text/plain")],
                    Some(b"denied by proxy-wasm\n"),
                );
                Action::Pause
            }
            _ => Action::Continue,
        }
    }
}
