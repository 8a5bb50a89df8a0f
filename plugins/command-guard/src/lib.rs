//! Command guard: refuses the memcached commands and HTTP methods listed in its config.
//!
//! ```yaml
//! plugins:
//!   - path: command_guard.wasm
//!     config: { deny: [flush_all, delete], methods: [PUT, DELETE, POST] }
//! ```
//! A denied memcached request never reaches memcached: the client gets
//! `CLIENT_ERROR <command> is disabled by walnut`. A denied HTTP method gets `status` (403).

use walnut_sdk::{Filter, HttpRequest, MemcacheRequest, Verdict};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandGuard {
    /// memcached commands to refuse (`set`, `flush_all`, `mg`, ...).
    #[serde(default)]
    deny: Vec<String>,
    /// HTTP methods to refuse (any case).
    #[serde(default)]
    methods: Vec<String>,
    /// The HTTP status for a refused method.
    #[serde(default = "forbidden")]
    status: u16,
}

fn forbidden() -> u16 {
    403
}

impl Filter for CommandGuard {
    fn init(&mut self) -> Result<(), String> {
        if self.deny.is_empty() && self.methods.is_empty() {
            return Err(
                "nothing to guard: list commands in `deny` or HTTP methods in `methods`".into(),
            );
        }
        Ok(())
    }

    fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> Verdict {
        if self.deny.iter().any(|c| c == req.command()) {
            return Verdict::reject(format!("{} is disabled by walnut", req.command()));
        }
        Verdict::Continue
    }

    fn on_http_request(&mut self, req: &mut HttpRequest) -> Verdict {
        if self
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(req.method()))
        {
            return Verdict::respond(self.status, "forbidden\n");
        }
        Verdict::Continue
    }
}

walnut_sdk::export!(CommandGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(deny: &[&str], methods: &[&str]) -> CommandGuard {
        CommandGuard {
            deny: deny.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            status: 403,
        }
    }

    #[test]
    fn denies_listed_commands_only() {
        let mut g = guard(&["flush_all", "delete"], &[]);
        let v = g.on_memcache_request(&mut MemcacheRequest::new("delete", ["k"]));
        assert_eq!(v, Verdict::reject("delete is disabled by walnut"));
        assert_eq!(
            g.on_memcache_request(&mut MemcacheRequest::new("get", ["k"])),
            Verdict::Continue
        );
    }

    #[test]
    fn denies_listed_methods_in_any_case() {
        let mut g = guard(&[], &["put", "DELETE"]);
        assert_eq!(
            g.on_http_request(&mut HttpRequest::new("PUT", "/count_a")),
            Verdict::respond(403, "forbidden\n")
        );
        assert_eq!(
            g.on_http_request(&mut HttpRequest::new("GET", "/count_a")),
            Verdict::Continue
        );
    }

    #[test]
    fn an_empty_guard_is_refused() {
        assert!(guard(&[], &[]).init().is_err());
    }
}
