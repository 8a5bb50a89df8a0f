//! Command guard: refuses the memcached commands and HTTP methods listed in its config.
//!
//! ```yaml
//! plugins:
//!   - path: command_guard.wasm
//!     config: { deny: [flush_all, delete], methods: [PUT, DELETE, POST] }
//! ```
//! A denied memcached request never reaches memcached: the client gets
//! `CLIENT_ERROR <command> is disabled by walnut`. A denied HTTP method gets `status` (403).

use walnut_sdk::{Command, Filter, HttpRequest, HttpVerdict, McVerdict, MemcacheRequest};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandGuard {
    /// memcached commands to refuse (`set`, `flush_all`, `mg`, ...); a name walnut does not
    /// know is refused when the config loads.
    #[serde(default)]
    deny: Vec<Command>,
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

    fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> McVerdict {
        if self.deny.contains(&req.command()) {
            return McVerdict::reject(format!("{} is disabled by walnut", req.command()));
        }
        McVerdict::Continue
    }

    fn on_http_request(&mut self, req: &mut HttpRequest) -> HttpVerdict {
        if self
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(req.method()))
        {
            return HttpVerdict::respond(self.status, "forbidden\n");
        }
        HttpVerdict::Continue
    }
}

walnut_sdk::export!(CommandGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(deny: &[Command], methods: &[&str]) -> CommandGuard {
        CommandGuard {
            deny: deny.to_vec(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            status: 403,
        }
    }

    #[test]
    fn denies_listed_commands_only() {
        let mut g = guard(&[Command::FlushAll, Command::Delete], &[]);
        let v = g.on_memcache_request(&mut MemcacheRequest::new(Command::Delete, "k"));
        assert_eq!(v, McVerdict::reject("delete is disabled by walnut"));
        assert_eq!(
            g.on_memcache_request(&mut MemcacheRequest::new(Command::Get, "k")),
            McVerdict::Continue
        );
        let v = g.on_memcache_request(&mut MemcacheRequest::keyless(Command::FlushAll));
        assert_eq!(v, McVerdict::reject("flush_all is disabled by walnut"));
    }

    #[test]
    fn denies_listed_methods_in_any_case() {
        let mut g = guard(&[], &["put", "DELETE"]);
        assert_eq!(
            g.on_http_request(&mut HttpRequest::new("PUT", "/count_a")),
            HttpVerdict::respond(403, "forbidden\n")
        );
        assert_eq!(
            g.on_http_request(&mut HttpRequest::new("GET", "/count_a")),
            HttpVerdict::Continue
        );
    }

    #[test]
    fn an_empty_guard_is_refused() {
        assert!(guard(&[], &[]).init().is_err());
    }

    #[test]
    fn a_command_walnut_does_not_know_is_refused_at_load() {
        let err = serde_json::from_str::<CommandGuard>(r#"{"deny": ["flush-all"]}"#)
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .contains("unknown memcached command `flush-all`"),
            "{err}"
        );
    }
}
