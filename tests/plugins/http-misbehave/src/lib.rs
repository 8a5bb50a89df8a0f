//! A broken HTTP plugin for the tests: the request header `X-Test` picks what it writes wrong,
//! in the request it passes on, in a local answer, or (remembered for the response of the same
//! request: one instance per worker, one request at a time in the tests) in the response.
//! Without `X-Test` it changes nothing.

use walnut_sdk::{Filter, HttpRequest, HttpResponse, HttpVerdict};

#[derive(serde::Deserialize)]
pub struct HttpMisbehave {
    #[serde(skip)]
    mode: String,
}

fn respond(status: u16, headers: &[(&str, &str)]) -> HttpVerdict {
    HttpVerdict::Respond {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: b"short".to_vec(),
    }
}

impl Filter for HttpMisbehave {
    fn on_http_request(&mut self, req: &mut HttpRequest) -> HttpVerdict {
        self.mode = req.header("x-test").unwrap_or_default().to_owned();
        match self.mode.as_str() {
            "header-crlf" => req.set_header("X-A", "1\r\nX-Injected: yes"),
            "header-lf" => req.set_header("X-A", "1\nX-Injected: yes"),
            "header-nul" => req.set_header("X-A", "1\0"),
            "header-name" => req.set_header("X-Injected: yes\r\nX-B", "1"),
            "header-space" => req.set_header("X Bad", "1"),
            "underscore" => req.set_header("X_Real_IP", "6.6.6.6"),
            "path-crlf" => {
                req.set_path("/a HTTP/1.1\r\nX-Injected: yes\r\n\r\nGET /smuggled");
            }
            "path-dots" => req.set_path("/public/../admin"),
            "query-crlf" => req.set_path("/a?x=1 HTTP/1.1\r\nX-Injected: yes"),
            "framing" => {
                req.set_header("Content-Length", "0");
                req.set_header("Transfer-Encoding", "chunked");
                req.set_header("X-Forwarded-For", "6.6.6.6");
                req.set_header("X-Ok", "fine");
            }
            "respond-crlf" => return respond(200, &[("X-A", "1\r\nSet-Cookie: evil=1")]),
            "respond-status" => return respond(1000, &[]),
            "respond-interim" => return respond(101, &[]),
            "respond-name" => return respond(200, &[("Bad Name", "1")]),
            "respond-framing" => {
                return respond(200, &[("Content-Length", "1000"), ("X-Ok", "1")]);
            }
            _ => {}
        }
        HttpVerdict::Continue
    }

    fn on_http_response(&mut self, resp: &mut HttpResponse) {
        match self.mode.as_str() {
            "resp-crlf" => resp.add_header("X-A", "1\r\nSet-Cookie: evil=1"),
            "resp-name" => resp.add_header("Bad Name", "1"),
            "resp-panic" => panic!("the response hook was asked to fail"),
            "resp-framing" => {
                resp.set_header("Content-Length", "0");
                resp.set_header("X-Ok", "1");
            }
            _ => {}
        }
    }
}

walnut_sdk::export!(HttpMisbehave);
