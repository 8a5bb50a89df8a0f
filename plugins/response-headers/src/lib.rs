//! Response headers: changes the headers of every upstream response before the client gets
//! them (nginx's `add_header` and `proxy_hide_header`).
//!
//! ```yaml
//! config:
//!   set: { X-Served-By: walnut }       # replaces any header of that name
//!   add: { Cache-Control: no-store }   # adds a line, keeping the upstream's
//!   remove: [Server, X-Powered-By]
//! ```

use std::collections::BTreeMap;

use walnut_sdk::{Filter, HttpResponse};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHeaders {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

impl Filter for ResponseHeaders {
    fn init(&mut self) -> Result<(), String> {
        if self.set.is_empty() && self.add.is_empty() && self.remove.is_empty() {
            return Err("nothing to change: give `set`, `add` or `remove`".into());
        }
        Ok(())
    }

    fn on_http_response(&mut self, resp: &mut HttpResponse) {
        for name in &self.remove {
            resp.remove_header(name);
        }
        for (name, value) in &self.set {
            resp.set_header(name, value);
        }
        for (name, value) in &self.add {
            resp.add_header(name, value);
        }
    }
}

walnut_sdk::export!(ResponseHeaders);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_adds_and_removes() {
        let mut p = ResponseHeaders {
            set: [("X-Served-By".into(), "walnut".into())].into(),
            add: [("Vary".into(), "Accept".into())].into(),
            remove: vec!["server".into()],
        };
        let mut resp = HttpResponse::new(200)
            .with_header("Server", "nginx")
            .with_header("Vary", "Origin");
        p.on_http_response(&mut resp);
        let headers: Vec<(&str, &str)> = resp.headers().collect();
        assert_eq!(
            headers,
            [
                ("Vary", "Origin"),
                ("X-Served-By", "walnut"),
                ("Vary", "Accept")
            ]
        );
    }
}
