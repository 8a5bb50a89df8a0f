//! A proxy-wasm HTTP filter that breaks, on the path's word, a rule walnut checks: a header
//! value with CR/LF, a bad header name, a local response with a bad status or CR/LF in a
//! header, a paused request, a loop past its time budget, memory past its cap, a panic. Other
//! paths go through untouched.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Misbehave) });
}}

struct Misbehave;

impl Context for Misbehave {}

impl HttpContext for Misbehave {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let word = path.rsplit('/').next().unwrap_or_default().to_owned();
        match word.as_str() {
            "crlf" => self.set_http_request_header("x-injected", Some("a\r\nX-Evil: 1")),
            "badname" => self.set_http_request_header("x bad:name", Some("1")),
            "badstatus" => self.send_http_response(99, vec![], Some(b"too low")),
            "localcrlf" => self.send_http_response(200, vec![("x-a", "1\r\nX-Evil: 1")], None),
            "method" => self.set_http_request_header(":method", Some("DELETE")),
            "pause" => return Action::Pause,
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("pw-misbehave was told to panic"),
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if path.ends_with("/respcrlf") {
            self.set_http_response_header("x-resp", Some("1\r\nSet-Cookie: evil=1"));
        }
        Action::Continue
    }
}
