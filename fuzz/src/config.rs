//! The config loader on arbitrary text, with host names never looked up (no DNS query).
//!
//! Invariants: a refusal reads `fuzz.yml:LINE: message` with a line the text has; an accepted
//! config has pools, each with its servers or upstreams, and lines within the text; parsing the
//! same text twice gives the same result.

use std::path::Path;

use walnut::config::{Config, ConfigError};

/// The one call into the loader.
fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_offline(text, Path::new("fuzz.yml"))
}

pub const TOKENS: &[&[u8]] = &[
    b"alpha:\n",
    b"  listen: 127.0.0.1:22121\n",
    b"  servers:\n",
    b"   - 127.0.0.1:11211:1\n",
    b"   - 127.0.0.1:11212:1 name\n",
    b"  hash: fnv1a_64\n",
    b"  hash_tag: \"{}\"\n",
    b"  distribution: ketama\n",
    b"  timeout: 400\n",
    b"  protocol: http\n",
    b"  upstreams:\n    b:\n      servers: [\"127.0.0.1:8081 weight=5\"]\n",
    b"  locations:\n    - match: /\n      proxy_pass: b\n",
    b"      return: \"200 x\"\n",
    b"  plugins:\n   - path: x.wasm\n",
    b"  routes:\n   - prefix: a\n",
    b"- ",
    b": ",
    b"[",
    b"]",
    b"{",
    b"}",
    b", ",
    b"&a ",
    b"*a",
    b"!!str ",
    b"---\n",
    b"...\n",
    b"|\n",
    b">-\n",
    b"\"",
    b"'",
    b"#",
    b"\t",
    b"\r",
    b"\n",
    b"  ",
    b"~ ^/a(?!b)",
    b"localhost",
    b"[::1]",
    b"/tmp/x.sock",
];

/// How many lines `text` has as libyaml counts breaks (a lone CR, NEL, LS and PS too); a
/// break at the very end starts no line.
fn line_count(text: &str) -> usize {
    let mut breaks = 0;
    let mut ends_broken = false;
    for (at, c) in text.char_indices() {
        ends_broken = match c {
            '\r' if text[at + 1..].starts_with('\n') => continue,
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => true,
            _ => false,
        };
        breaks += usize::from(ends_broken);
    }
    (breaks + usize::from(!ends_broken)).max(1)
}

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = line_count(&text);
    let first = parse(&text);
    match &first {
        Err(e @ ConfigError::Invalid { line, message, .. }) => {
            assert!((1..=lines).contains(line), "line {line} of {lines}: {e}");
            assert!(!message.is_empty());
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("fuzz.yml:{line}: ")), "{shown}");
        }
        Err(e @ ConfigError::Read { .. }) => panic!("parsing read a file: {e}"),
        Ok(config) => {
            assert!(!config.pools.is_empty() || !config.http.is_empty());
            for pool in &config.pools {
                assert!((1..=lines).contains(&pool.line), "pool line {}", pool.line);
                assert!(
                    !pool.servers.is_empty(),
                    "pool {:?} has no servers",
                    pool.name
                );
                for server in &pool.servers {
                    assert!((1..=lines).contains(&server.line));
                }
            }
            for site in &config.http {
                assert!(!site.locations.is_empty(), "{:?}", site.name);
            }
        }
    }
    let again = parse(&text);
    assert_eq!(
        format!("{again:?}"),
        format!("{first:?}"),
        "{}",
        crate::show(data)
    );
}
