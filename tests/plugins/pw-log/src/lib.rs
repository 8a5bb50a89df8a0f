//! A proxy-wasm HTTP filter written as for Envoy, with the proxy-wasm Rust SDK unmodified: it
//! logs each request when its headers come (with properties the host gives: method, path,
//! source address, plugin name) and again when it is over (`on_log`, with the response code).

use log::{info, warn};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_http_context(|context_id, _| -> Box<dyn HttpContext> {
        Box::new(Logger { context_id })
    });
}}

struct Logger {
    context_id: u32,
}

impl Logger {
    fn text(&self, path: &[&str]) -> String {
        self.get_property(path.to_vec())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| "-".into())
    }
}

impl Context for Logger {}

impl HttpContext for Logger {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let now = self
            .get_current_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        info!(
            "pw-log: request #{} {} {} from {} by {} ({num_headers} headers, end_of_stream={end_of_stream}, time={now})",
            self.context_id,
            self.text(&["request", "method"]),
            self.text(&["request", "path"]),
            self.text(&["source", "address"]),
            self.text(&["plugin_name"]),
        );
        if let Some(evil) = self.get_http_request_header("x-log-this") {
            warn!("pw-log: asked to log {evil}\nFORGED LINE");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let code = self
            .get_property(vec!["response", "code"])
            .and_then(|b| b.try_into().ok())
            .map(i64::from_le_bytes)
            .unwrap_or(0);
        info!(
            "pw-log: done #{} {} status {code}",
            self.context_id,
            self.text(&["request", "url_path"])
        );
    }
}
