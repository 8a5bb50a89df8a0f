//! A proxy-wasm HTTP filter written as for Envoy, with the proxy-wasm Rust SDK unmodified: on
//! a path starting with `/callout` it makes an HTTP call out (`proxy_http_call`), which walnut
//! does not provide; other requests go through.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(CallOut) });
}}

struct CallOut;

impl Context for CallOut {}

impl HttpContext for CallOut {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if !path.starts_with("/callout") {
            return Action::Continue;
        }
        match self.dispatch_http_call(
            "auth",
            vec![
                (":method", "GET"),
                (":path", "/check"),
                (":authority", "auth"),
            ],
            None,
            vec![],
            Duration::from_secs(1),
        ) {
            Ok(_) => Action::Pause,
            Err(_) => Action::Continue,
        }
    }
}
