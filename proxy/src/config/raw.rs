//! Reads a config's YAML into pools of untouched strings, each key and server entry with its line.
//!
//! Values stay the exact text libyaml read (what nutcracker sees), never YAML-typed: `1.50` stays
//! `1.50`, `0x10` is not 16.
//!
//! serde_yaml tells where a node is only in an error, so `locate` reads the file again and fails
//! on purpose at the node asked for: exact, but a parse per node. `lines` needs it only where
//! neither its quick scan nor a second, linear reading can follow the text, and a bounded
//! number of times.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::lines::{Node, lines};

/// A config read as text: its pools in file order.
#[derive(Debug)]
pub(super) struct Doc {
    pub pools: Vec<RawPool>,
}

/// One pool as written.
#[derive(Debug)]
pub(super) struct RawPool {
    pub name: String,
    /// 1-based line of the name.
    pub line: usize,
    pub keys: Vec<RawKey>,
}

/// One `key: value` of a pool, as written.
#[derive(Debug)]
pub(super) struct RawKey {
    pub name: String,
    /// 1-based line of the key.
    pub line: usize,
    pub value: RawValue,
}

#[derive(Debug)]
pub(super) enum RawValue {
    Text(String),
    /// `servers:` entries with their lines.
    List(Vec<(String, usize)>),
    /// walnut's structured keys (`plugins:`, `routes:`), kept as YAML.
    Yaml(serde_yaml::Value),
}

/// A refusal located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Located {
    pub line: usize,
    pub message: String,
}

/// Reads `text` into pools, or says where and why the YAML does not have nutcracker's shape.
pub(super) fn read(text: &str) -> Result<Doc, Located> {
    // Syntax first, over the whole file, so a typo at the end is not hidden by a shape error
    // found earlier on a half-read document.
    if let Err(err) = serde_yaml::from_str::<IgnoredAny>(text) {
        return Err(Located {
            line: line_of(&err),
            message: err.to_string(),
        });
    }
    let walk = Walk::new(None);
    let tree = match (Root { walk: &walk }).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Ok(tree) => tree,
        Err(err) => {
            let (anchor, message) = walk
                .failure
                .into_inner()
                .unwrap_or_else(|| (None, err.to_string()));
            let line = anchor
                .and_then(|node| locate(text, node))
                .unwrap_or_else(|| line_of(&err));
            return Err(Located { line, message });
        }
    };
    let nodes = walk.nodes.into_inner();
    let starts: Vec<usize> = tree.iter().map(|pool| pool.node).collect();
    let lines = lines(text, &nodes, &starts, |node| {
        locate(text, node).unwrap_or(1)
    });
    let pools = tree
        .into_iter()
        .map(|pool| RawPool {
            name: pool.name,
            line: lines[pool.node],
            keys: pool
                .keys
                .into_iter()
                .map(|key| RawKey {
                    name: key.name,
                    line: lines[key.node],
                    value: match key.value {
                        TreeValue::Text(text) => RawValue::Text(text),
                        TreeValue::List(items) => RawValue::List(
                            items
                                .into_iter()
                                .map(|(text, node)| (text, lines[node]))
                                .collect(),
                        ),
                        TreeValue::Yaml(value) => RawValue::Yaml(value),
                    },
                })
                .collect(),
        })
        .collect();
    Ok(Doc { pools })
}

/// serde_yaml's 1-based line; errors without a place (e.g. several documents) point at line 1.
fn line_of(err: &serde_yaml::Error) -> usize {
    err.location().map_or(1, |at| at.line())
}

/// The line of node number `node`: re-reads `text`, failing on purpose when reaching that node.
fn locate(text: &str, node: usize) -> Option<usize> {
    let walk = Walk::new(Some(node));
    let err = (Root { walk: &walk })
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    walk.reached
        .get()
        .then(|| err.location().map(|at| at.line()))
        .flatten()
}

/// One pass over the document: the nodes met so far and, if it failed, why.
struct Walk {
    /// The node at which to fail, to learn its place from serde_yaml.
    target: Option<usize>,
    /// Whether the failure is the one planned at `target`.
    reached: Cell<bool>,
    nodes: RefCell<Vec<Node>>,
    /// Set by the innermost reader that failed: the node to point at (if any) and the message.
    failure: RefCell<Option<(Option<usize>, String)>>,
}

impl Walk {
    fn new(target: Option<usize>) -> Walk {
        Walk {
            target,
            reached: Cell::new(false),
            nodes: RefCell::new(Vec::new()),
            failure: RefCell::new(None),
        }
    }

    fn next_node(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// Keeps the first (innermost) explanation of a failure.
    fn fail<E>(
        &self,
        anchor: Option<usize>,
        message: impl FnOnce() -> String,
    ) -> impl FnOnce(E) -> E {
        move |err| {
            self.failure
                .borrow_mut()
                .get_or_insert_with(|| (anchor, message()));
            err
        }
    }
}

struct TreePool {
    name: String,
    node: usize,
    keys: Vec<TreeKey>,
}

struct TreeKey {
    name: String,
    node: usize,
    value: TreeValue,
}

enum TreeValue {
    Text(String),
    List(Vec<(String, usize)>),
    Yaml(serde_yaml::Value),
}

/// The whole document: a mapping of pool names to pools.
struct Root<'w> {
    walk: &'w Walk,
}

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = Vec<TreePool>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let walk = self.walk;
        de.deserialize_map(self).map_err(walk.fail(None, || {
            "expected pools: each pool's name followed by its indented keys (listen:, servers:, ...)"
                .to_owned()
        }))
    }
}

impl<'de> Visitor<'de> for Root<'_> {
    type Value = Vec<TreePool>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of pool names to pools")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pools = Vec::new();
        while let Some((name, node)) = map.next_key_seed(Key {
            walk: self.walk,
            pool: None,
        })? {
            let keys = map.next_value_seed(PoolKeys {
                walk: self.walk,
                pool: &name,
                node,
            })?;
            pools.push(TreePool { name, node, keys });
        }
        Ok(pools)
    }
}

/// walnut's keys whose values are structures, read whole.
pub(super) const STRUCTURED_KEYS: [&str; 4] = ["plugins", "routes", "upstreams", "locations"];

/// A pool name or a pool's key: a node.
struct Key<'w, 'p> {
    walk: &'w Walk,
    /// The pool this key belongs to, `None` for a pool name.
    pool: Option<&'p str>,
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = (String, usize);

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let node = self.walk.next_node();
        let text = de
            .deserialize_str(Text {
                walk: self.walk,
                node: Some(node),
            })
            .map_err(self.walk.fail(None, || match self.pool {
                None => "a pool name must be plain text".to_owned(),
                Some(pool) => format!("pool {pool:?}: a key must be plain text"),
            }))?;
        self.walk.nodes.borrow_mut().push(Node::Key(text.clone()));
        Ok((text, node))
    }
}

/// The keys of one pool.
struct PoolKeys<'w, 'p> {
    walk: &'w Walk,
    pool: &'p str,
    /// The pool name's node.
    node: usize,
}

impl<'de> DeserializeSeed<'de> for PoolKeys<'_, '_> {
    type Value = Vec<TreeKey>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let (walk, pool, node) = (self.walk, self.pool, self.node);
        de.deserialize_map(self).map_err(walk.fail(Some(node), || {
            format!("pool {pool:?}: expected its keys (listen:, servers:, ...) indented below it")
        }))
    }
}

impl<'de> Visitor<'de> for PoolKeys<'_, '_> {
    type Value = Vec<TreeKey>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of pool keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Vec::new();
        let key = || Key {
            walk: self.walk,
            pool: Some(self.pool),
        };
        while let Some((name, node)) = map.next_key_seed(key())? {
            let value = if STRUCTURED_KEYS.contains(&name.as_str()) {
                TreeValue::Yaml(map.next_value()?)
            } else if name == "servers" {
                TreeValue::List(map.next_value_seed(Items {
                    walk: self.walk,
                    pool: self.pool,
                    node,
                })?)
            } else {
                let seed = Single {
                    walk: self.walk,
                    pool: self.pool,
                    key: &name,
                    node,
                };
                TreeValue::Text(map.next_value_seed(seed)?)
            };
            keys.push(TreeKey { name, node, value });
        }
        Ok(keys)
    }
}

/// A plain value (every key but `servers`).
struct Single<'w, 'p> {
    walk: &'w Walk,
    pool: &'p str,
    key: &'p str,
    /// The key's node.
    node: usize,
}

impl<'de> DeserializeSeed<'de> for Single<'_, '_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let (pool, key) = (self.pool, self.key);
        de.deserialize_str(Text {
            walk: self.walk,
            node: None,
        })
        .map_err(self.walk.fail(Some(self.node), || {
            format!("pool {pool:?}: {key} must be a single value, not a list or mapping")
        }))
    }
}

/// The `servers:` list.
struct Items<'w, 'p> {
    walk: &'w Walk,
    pool: &'p str,
    /// The `servers` key's node.
    node: usize,
}

impl<'de> DeserializeSeed<'de> for Items<'_, '_> {
    type Value = Vec<(String, usize)>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let (walk, pool, node) = (self.walk, self.pool, self.node);
        de.deserialize_seq(self).map_err(walk.fail(Some(node), || {
            format!("pool {pool:?}: servers must be a list of \"host:port:weight [name]\" entries")
        }))
    }
}

impl<'de> Visitor<'de> for Items<'_, '_> {
    type Value = Vec<(String, usize)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of servers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Item {
            walk: self.walk,
            pool: self.pool,
        })? {
            items.push(item);
        }
        Ok(items)
    }
}

/// One `servers:` entry: a node.
struct Item<'w, 'p> {
    walk: &'w Walk,
    pool: &'p str,
}

impl<'de> DeserializeSeed<'de> for Item<'_, '_> {
    type Value = (String, usize);

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let node = self.walk.next_node();
        let pool = self.pool;
        let text = de.deserialize_str(Text { walk: self.walk, node: Some(node) }).map_err(
            self.walk.fail(None, || {
                format!("pool {pool:?}: servers: each entry must be one \"host:port:weight [name]\" value")
            }),
        )?;
        self.walk.nodes.borrow_mut().push(Node::Item(text.clone()));
        Ok((text, node))
    }
}

/// A scalar's text exactly as written (serde_yaml hands any scalar to `deserialize_str` as text).
struct Text<'w> {
    walk: &'w Walk,
    /// The node being read, if this scalar is one.
    node: Option<usize>,
}

impl<'de> Visitor<'de> for Text<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a plain value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        if self.node.is_some() && self.node == self.walk.target {
            // Fails here so serde_yaml stamps the error with this scalar's place.
            self.walk.reached.set(true);
            return Err(E::custom("located"));
        }
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::super::lines::quick;
    use super::*;

    /// The lines `read` finds, against each node located the slow, exact way; whether the quick
    /// scan alone found them.
    #[track_caller]
    fn agree(text: &str) -> bool {
        let walk = Walk::new(None);
        let tree = (Root { walk: &walk })
            .deserialize(serde_yaml::Deserializer::from_str(text))
            .unwrap();
        let nodes = walk.nodes.into_inner();
        let starts: Vec<usize> = tree.iter().map(|pool| pool.node).collect();
        let exact: Vec<usize> = (0..nodes.len())
            .map(|node| locate(text, node).unwrap())
            .collect();
        let locate = |node| locate(text, node).unwrap();
        assert_eq!(lines(text, &nodes, &starts, locate), exact, "{text}");
        quick(text, &nodes)
    }

    #[test]
    fn quick_lines_are_exact_lines() {
        let plain = "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n";
        for text in [
            plain.to_owned(),
            format!("# c\n\n{}", plain.replace('\n', " # c\n\n")),
            plain.replace("\n", "\r\n"),
            format!("\u{feff}{plain}"),
            plain
                .replace("\n  ", "\n      ")
                .replace("alpha", "  alpha"),
            plain.replace("   - ", "  - "),
            plain
                .replace("alpha:", "\"alpha\":")
                .replace("listen:", "'listen':"),
        ] {
            assert!(agree(&text), "not scanned quickly:\n{text}");
        }
        for text in [
            plain.replace('\n', "\r"),
            format!("---\n{plain}...\n"),
            plain.replace("alpha:", "? alpha\n:"),
            format!(
                "{plain}beta: {{listen: 127.0.0.1:22122, servers: [127.0.0.1:11212:1]}}\n{plain}"
            ),
            plain.replace(
                "listen: 127.0.0.1:22121",
                "listen: |-\n    127.0.0.1:22121\n    # not a comment",
            ),
            plain.replace(":11211:1", ":11211:1\n     more"),
            plain.replace(" 127.0.0.1:11211:1", " \"127.0.0.1:11211:1\n\n   - x\""),
        ] {
            assert!(!agree(&text), "scanned quickly:\n{text}");
        }
    }

    /// The nodes serde_yaml reads in `text`, the pools' first nodes, and every node's exact line.
    fn nodes_of(text: &str) -> (Vec<Node>, Vec<usize>, Vec<usize>) {
        let walk = Walk::new(None);
        let tree = (Root { walk: &walk })
            .deserialize(serde_yaml::Deserializer::from_str(text))
            .unwrap();
        let nodes = walk.nodes.into_inner();
        let starts = tree.iter().map(|pool| pool.node).collect();
        let exact = (0..nodes.len())
            .map(|node| locate(text, node).unwrap())
            .collect();
        (nodes, starts, exact)
    }

    #[test]
    fn json_and_flow_configs_are_located_in_one_pass() {
        let servers: Vec<String> = (0..50)
            .map(|i| format!("\"127.0.0.1:{}:1\"", 100 + i))
            .collect();
        let json = format!(
            "{{\n  \"a\": {{\n    \"listen\": \"127.0.0.1:1\",\n    \"servers\": [\n      {}\n    ]\n  }},\n  \"b\": {{\"listen\": \"127.0.0.1:2\", \"plugins\": [{{\"servers\": [x]}}],\n    \"servers\": [\"127.0.0.1:3:1\"]}}\n}}\n",
            servers.join(",\n      ")
        );
        let (nodes, starts, exact) = nodes_of(&json);
        let slow = |_| panic!("located the slow way:\n{json}");
        assert_eq!(lines(&json, &nodes, &starts, slow), exact);
        assert_eq!(exact[exact.len() - 1], 58);
    }

    #[test]
    fn the_slow_way_locates_a_bounded_number_of_nodes() {
        // An aliased pool is read by neither quick way.
        let servers: Vec<String> = (0..100)
            .map(|i| format!("127.0.0.1:{}:1", 100 + i))
            .collect();
        let text = format!(
            "a: &a {{listen: 127.0.0.1:1, servers: [{}]}}\nb: *a\n",
            servers.join(", ")
        );
        let (nodes, starts, _) = nodes_of(&text);
        let calls = Cell::new(0);
        let found = lines(&text, &nodes, &starts, |node| {
            calls.set(calls.get() + 1);
            locate(&text, node).unwrap()
        });
        assert!(
            nodes.len() > 200 && calls.get() <= 32,
            "{} slow locations",
            calls.get()
        );
        assert_eq!(found[starts[1]], 2);
        assert!(found.iter().all(|&line| (1..=2).contains(&line)));
    }

    #[test]
    fn values_keep_their_text() {
        let doc = read("a:\n  timeout: 0x10\n  redis_auth: 1.50\n  hash: ~\n  servers:\n   - 01\n")
            .unwrap();
        let texts: Vec<&RawValue> = doc.pools[0].keys.iter().map(|key| &key.value).collect();
        assert!(matches!(texts[0], RawValue::Text(t) if t == "0x10"));
        assert!(matches!(texts[1], RawValue::Text(t) if t == "1.50"));
        assert!(matches!(texts[2], RawValue::Text(t) if t == "~"));
        assert!(matches!(texts[3], RawValue::List(l) if l[..] == [("01".to_owned(), 6)]));
    }
}
