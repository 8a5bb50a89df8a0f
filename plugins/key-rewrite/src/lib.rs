//! Key rewrite: gives each tenant its own namespace by adding, stripping or replacing a key
//! prefix. memcached stores the rewritten key; clients keep seeing their own keys.
//!
//! ```yaml
//! config: { add: "tenant1:" }                    # k        -> tenant1:k
//! config: { strip: "public:" }                   # public:k -> k
//! config: { replace: "old:", with: "new:" }      # old:k    -> new:k
//! ```

use walnut_sdk::{Filter, McVerdict, MemcacheRequest};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRewrite {
    #[serde(default)]
    add: String,
    #[serde(default)]
    strip: String,
    #[serde(default)]
    replace: String,
    #[serde(default)]
    with: String,
}

impl KeyRewrite {
    fn rewrite(&self, key: &[u8]) -> Option<Vec<u8>> {
        let key = match key.strip_prefix(self.strip.as_bytes()) {
            Some(rest) if !self.strip.is_empty() => rest,
            _ => key,
        };
        let key: Vec<u8> = match key.strip_prefix(self.replace.as_bytes()) {
            Some(rest) if !self.replace.is_empty() => [self.with.as_bytes(), rest].concat(),
            _ => key.to_vec(),
        };
        let key = [self.add.as_bytes(), &key].concat();
        // memcached keys stay within 250 bytes and non-empty.
        (!key.is_empty() && key.len() <= 250).then_some(key)
    }
}

impl Filter for KeyRewrite {
    fn init(&mut self) -> Result<(), String> {
        if self.add.is_empty() && self.strip.is_empty() && self.replace.is_empty() {
            return Err("nothing to rewrite: set `add`, `strip` or `replace` (with `with`)".into());
        }
        if self
            .add
            .bytes()
            .chain(self.with.bytes())
            .any(|b| b <= b' ' || b == 0x7f)
        {
            return Err("prefixes may not hold spaces or control characters".into());
        }
        Ok(())
    }

    fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> McVerdict {
        if req.key().is_empty() {
            return McVerdict::Continue;
        }
        match self.rewrite(req.key()) {
            Some(key) => req.set_key(key),
            None => return McVerdict::reject("key too long after rewrite"),
        }
        McVerdict::Continue
    }
}

walnut_sdk::export!(KeyRewrite);

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(add: &str, strip: &str, replace: &str, with: &str) -> KeyRewrite {
        KeyRewrite {
            add: add.into(),
            strip: strip.into(),
            replace: replace.into(),
            with: with.into(),
        }
    }

    fn run(r: &mut KeyRewrite, key: &str) -> Vec<u8> {
        let mut req = MemcacheRequest::new(walnut_sdk::Command::Get, key);
        assert_eq!(r.on_memcache_request(&mut req), McVerdict::Continue);
        req.key().to_vec()
    }

    #[test]
    fn adds_strips_and_replaces_prefixes() {
        assert_eq!(run(&mut rule("t1:", "", "", ""), "k"), b"t1:k");
        assert_eq!(run(&mut rule("", "public:", "", ""), "public:k"), b"k");
        assert_eq!(run(&mut rule("", "", "old:", "new:"), "old:k"), b"new:k");
        assert_eq!(run(&mut rule("", "", "old:", "new:"), "other"), b"other");
    }

    #[test]
    fn refuses_keys_that_grow_too_long() {
        let mut r = rule("prefix:", "", "", "");
        let mut req = MemcacheRequest::new(walnut_sdk::Command::Set, "x".repeat(250));
        assert!(matches!(
            r.on_memcache_request(&mut req),
            McVerdict::Reject(_)
        ));
    }

    #[test]
    fn refuses_an_empty_rule() {
        assert!(rule("", "", "", "").init().is_err());
    }
}
