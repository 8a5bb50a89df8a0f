//! Key templates: the text of an upstream's `hash:` key (nginx's `hash KEY consistent`), parsed
//! once when the config loads and rendered per request.

use std::net::IpAddr;

/// A `hash:` key: literal text and nginx variables (`$request_uri`, `$uri`, `$args`,
/// `$remote_addr`, `$http_NAME`, `$arg_NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    /// The template as written, for messages.
    pub text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    RequestUri,
    Uri,
    Args,
    RemoteAddr,
    /// Header name, `_` read as `-` (as nginx's `$http_x_user` reads `X-User`).
    Header(String),
    Arg(String),
}

/// What a key is rendered from.
pub struct KeySource<'a> {
    /// The target as the client sent it (`$request_uri`).
    pub request_uri: &'a [u8],
    /// The normalized path, or the one a plugin set (`$uri`).
    pub uri: &'a [u8],
    /// The query without its `?` (`$args`).
    pub query: &'a [u8],
    pub remote: IpAddr,
    /// A request header's value by lower-case name.
    pub headers: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

impl KeyTemplate {
    /// Parses `text`; the error says which variable is unknown.
    pub fn parse(text: &str) -> Result<KeyTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            let name_len = rest[at + 1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - at - 1);
            let name = &rest[at + 1..at + 1 + name_len];
            parts.push(match name {
                "request_uri" => Part::RequestUri,
                "uri" => Part::Uri,
                "args" | "query_string" => Part::Args,
                "remote_addr" => Part::RemoteAddr,
                _ => match (name.strip_prefix("http_"), name.strip_prefix("arg_")) {
                    (Some(h), _) if !h.is_empty() => {
                        Part::Header(h.replace('_', "-").to_ascii_lowercase())
                    }
                    (_, Some(a)) if !a.is_empty() => Part::Arg(a.to_owned()),
                    _ => {
                        return Err(format!(
                            "${name} is not one of $request_uri, $uri, $args, $remote_addr, $http_NAME, $arg_NAME"
                        ));
                    }
                },
            });
            rest = &rest[at + 1 + name_len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("is empty".into());
        }
        Ok(KeyTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// Writes the key for a request into `out` (cleared first; no allocation once `out` has
    /// grown to the key's size).
    pub fn render(&self, src: &KeySource<'_>, out: &mut Vec<u8>) {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::RequestUri => out.extend_from_slice(src.request_uri),
                Part::Uri => out.extend_from_slice(src.uri),
                Part::Args => out.extend_from_slice(src.query),
                Part::RemoteAddr => {
                    use std::io::Write;
                    let _ = write!(out, "{}", src.remote);
                }
                Part::Header(h) => out.extend_from_slice((src.headers)(h).unwrap_or(b"")),
                Part::Arg(a) => {
                    let v = src.query.split(|&b| b == b'&').find_map(|kv| {
                        let (k, v) = match kv.iter().position(|&b| b == b'=') {
                            Some(e) => (&kv[..e], &kv[e + 1..]),
                            None => (kv, &b""[..]),
                        };
                        (k == a.as_bytes()).then_some(v)
                    });
                    out.extend_from_slice(v.unwrap_or(b""));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_render_from_the_request() {
        let t = KeyTemplate::parse("u:$request_uri|$uri|$http_x_user|$arg_id").unwrap();
        let headers = |n: &str| (n == "x-user").then_some(&b"bob"[..]);
        let src = KeySource {
            request_uri: b"/a/../p?a=1&id=7",
            uri: b"/p",
            query: b"a=1&id=7",
            remote: "127.0.0.1".parse().unwrap(),
            headers: &headers,
        };
        let mut out = Vec::new();
        t.render(&src, &mut out);
        assert_eq!(out, b"u:/a/../p?a=1&id=7|/p|bob|7");
        assert_eq!(t.text, "u:$request_uri|$uri|$http_x_user|$arg_id");
    }

    #[test]
    fn unknown_variables_and_empty_keys_are_refused() {
        assert!(KeyTemplate::parse("$nope").unwrap_err().contains("$nope"));
        assert_eq!(KeyTemplate::parse("").unwrap_err(), "is empty");
        assert!(KeyTemplate::parse("$http_").is_err());
    }
}
