//! Test plugin for the HTTP hook's changes: `/old/...` is sent as `/new/...`, header
//! `X-Walnut: <tag>` is set, `X-Drop` removed, and the value of `X-Route` (when present)
//! chooses the upstream server by consistent hash.

use walnut_sdk::{Filter, HttpRequest, HttpVerdict};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRewrite {
    tag: String,
}

impl Filter for HttpRewrite {
    fn on_http_request(&mut self, req: &mut HttpRequest) -> HttpVerdict {
        if let Some(rest) = req.path().strip_prefix("/old/") {
            let path = format!("/new/{rest}");
            req.set_path(&path);
        }
        req.set_header("X-Walnut", &self.tag);
        req.remove_header("X-Drop");
        if let Some(route) = req.header("x-route") {
            let key = route.as_bytes().to_vec();
            req.set_hash_key(key);
        }
        HttpVerdict::Continue
    }
}

walnut_sdk::export!(HttpRewrite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_path_headers_and_hash_key() {
        let mut p = HttpRewrite { tag: "t".into() };
        let mut req = HttpRequest::new("GET", "/old/a?x=1")
            .with_header("X-Drop", "1")
            .with_header("X-Route", "r7");
        assert_eq!(p.on_http_request(&mut req), HttpVerdict::Continue);
        assert_eq!((req.path(), req.query()), ("/new/a", "x=1"));
        assert_eq!(req.header("x-walnut"), Some("t"));
        assert_eq!(req.header("x-drop"), None);
        assert_eq!(req.hash_key(), Some(&b"r7"[..]));
    }
}
