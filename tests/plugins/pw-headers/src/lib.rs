//! A proxy-wasm HTTP filter written as for Envoy, with the proxy-wasm Rust SDK unmodified: it
//! adds a header to every request and to every response, and says on the response which path
//! it saw.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AddHeaders {
            path: String::new(),
        }))
    }
}

struct AddHeaders {
    path: String,
}

impl Context for AddHeaders {}

impl HttpContext for AddHeaders {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        self.add_http_request_header("x-pw-request", "added-by-proxy-wasm");
        if let Some(agent) = self.get_http_request_header("user-agent") {
            self.set_http_request_header("x-pw-agent", Some(&agent));
        }
        self.set_http_request_header("x-drop-me", None);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.add_http_response_header("x-pw-response", "added-by-proxy-wasm");
        let status = self.get_http_response_header(":status").unwrap_or_default();
        self.set_http_response_header("x-pw-seen", Some(&format!("{status} {}", self.path)));
        self.set_http_response_header("x-upstream-secret", None);
        Action::Continue
    }
}
