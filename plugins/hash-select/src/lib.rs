//! Hash select: places keys by part of the key, or pins key prefixes to named servers.
//!
//! ```yaml
//! config:
//!   until: ":"                  # hash only the text before the first ':' (user:42:name -> user)
//!   pin: { "hot:": mc1 }        # keys starting with hot: go to server mc1 (ring while it is ejected)
//! ```

use std::collections::BTreeMap;

use walnut_sdk::{Filter, Placement};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashSelect {
    /// Hash only the bytes before the first occurrence of this text.
    #[serde(default)]
    until: String,
    /// Key prefix -> server name.
    #[serde(default)]
    pin: BTreeMap<String, String>,
}

impl Filter for HashSelect {
    fn init(&mut self) -> Result<(), String> {
        if self.until.is_empty() && self.pin.is_empty() {
            return Err("nothing to select: set `until` or `pin`".into());
        }
        Ok(())
    }

    fn on_hash(&mut self, key: &[u8]) -> Placement {
        // The longest matching pinned prefix wins.
        let pinned = self
            .pin
            .iter()
            .filter(|(p, _)| key.starts_with(p.as_bytes()))
            .max_by_key(|(p, _)| p.len());
        if let Some((_, server)) = pinned {
            return Placement::Server(server.clone());
        }
        if !self.until.is_empty() {
            let until = self.until.as_bytes();
            if let Some(at) = key.windows(until.len()).position(|w| w == until) {
                return Placement::Hash(key[..at].to_vec());
            }
        }
        Placement::Ring
    }
}

walnut_sdk::export!(HashSelect);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_part_before_the_separator() {
        let mut h = HashSelect {
            until: ":".into(),
            pin: BTreeMap::new(),
        };
        assert_eq!(
            h.on_hash(b"user:42:name"),
            Placement::Hash(b"user".to_vec())
        );
        assert_eq!(h.on_hash(b"plain"), Placement::Ring);
    }

    #[test]
    fn the_longest_pinned_prefix_wins() {
        let pin =
            [("hot:", "mc1"), ("hot:very:", "mc2")].map(|(a, b)| (a.to_string(), b.to_string()));
        let mut h = HashSelect {
            until: String::new(),
            pin: pin.into_iter().collect(),
        };
        assert_eq!(h.on_hash(b"hot:x"), Placement::Server("mc1".into()));
        assert_eq!(h.on_hash(b"hot:very:x"), Placement::Server("mc2".into()));
        assert_eq!(h.on_hash(b"cold"), Placement::Ring);
    }
}
