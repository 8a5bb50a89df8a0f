//! Which location serves a path, by nginx's rules: an exact `=` match wins; else the longest
//! prefix is remembered, and if it is `^~` it wins; else the first regex (`~`, `~*`, file order)
//! that matches wins; else the longest prefix.

use regex::bytes::{Regex, RegexBuilder};

use crate::config::{Location, LocationMatch};

/// Compiles a location regex (`caseless` for `~*`).
pub fn compile(pattern: &str, caseless: bool) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(caseless)
        .size_limit(1 << 20)
        .build()
}

/// The locations of a pool, indexed for matching.
#[derive(Debug, Clone, Default)]
pub struct Router {
    exact: Vec<(Vec<u8>, usize)>,
    /// `(prefix, stops regexes, location)`, longest first.
    prefixes: Vec<(Vec<u8>, bool, usize)>,
    regexes: Vec<(Regex, usize)>,
}

impl Router {
    pub fn new(locations: &[Location]) -> Result<Router, regex::Error> {
        let mut r = Router::default();
        for (i, l) in locations.iter().enumerate() {
            match &l.matcher {
                LocationMatch::Exact(p) => r.exact.push((p.clone().into_bytes(), i)),
                LocationMatch::PrefixNoRegex(p) => {
                    r.prefixes.push((p.clone().into_bytes(), true, i))
                }
                LocationMatch::Prefix(p) => r.prefixes.push((p.clone().into_bytes(), false, i)),
                LocationMatch::Regex { pattern, caseless } => {
                    r.regexes.push((compile(pattern, *caseless)?, i))
                }
            }
        }
        r.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Ok(r)
    }

    /// The location serving `path`, if any.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        if let Some((_, i)) = self.exact.iter().find(|(p, _)| p == path) {
            return Some(*i);
        }
        let longest = self.prefixes.iter().find(|(p, _, _)| path.starts_with(p));
        if let Some((_, true, i)) = longest {
            return Some(*i);
        }
        self.regexes
            .iter()
            .find(|(re, _)| re.is_match(path))
            .map(|(_, i)| *i)
            .or(longest.map(|(_, _, i)| *i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LocationAction;

    fn router(matches: &[&str]) -> Router {
        let locations: Vec<Location> = matches
            .iter()
            .map(|m| {
                let (modifier, rest) = m.split_once(' ').unwrap_or(("", m));
                let matcher = match modifier {
                    "=" => LocationMatch::Exact(rest.into()),
                    "^~" => LocationMatch::PrefixNoRegex(rest.into()),
                    "~" | "~*" => LocationMatch::Regex {
                        pattern: rest.into(),
                        caseless: modifier == "~*",
                    },
                    _ => LocationMatch::Prefix(m.to_string()),
                };
                Location {
                    text: m.to_string(),
                    matcher,
                    action: LocationAction::Return {
                        status: 200,
                        body: String::new(),
                    },
                    plugins: Vec::new(),
                    line: 1,
                }
            })
            .collect();
        Router::new(&locations).unwrap()
    }

    #[test]
    fn nginx_precedence() {
        // The example of nginx's documentation for `location`.
        let r = router(&[
            "= /",
            "/",
            "/documents/",
            "^~ /images/",
            "~* \\.(gif|jpg|jpeg)$",
        ]);
        assert_eq!(r.find(b"/"), Some(0));
        assert_eq!(r.find(b"/index.html"), Some(1));
        assert_eq!(r.find(b"/documents/document.html"), Some(2));
        assert_eq!(r.find(b"/images/1.gif"), Some(3));
        assert_eq!(r.find(b"/documents/1.jpg"), Some(4));
        assert_eq!(r.find(b"/documents/1.JPG"), Some(4));
    }

    #[test]
    fn regexes_in_file_order_and_case() {
        let r = router(&["~ /Count(.*)", "~* /count(.*)", "/count_special"]);
        assert_eq!(r.find(b"/Count_a"), Some(0));
        assert_eq!(r.find(b"/COUNT_a"), Some(1));
        // A plain prefix, even the longest, loses to a matching regex.
        assert_eq!(r.find(b"/count_special"), Some(1));
        assert_eq!(r.find(b"/other"), None);
    }

    #[test]
    fn longest_prefix_wins_and_caret_tilde_stops_regexes() {
        let r = router(&["/a", "^~ /a/b", "/a/b/c", "~ c$"]);
        assert_eq!(r.find(b"/a/x"), Some(0));
        assert_eq!(r.find(b"/a/bc"), Some(1));
        // The longest prefix is /a/b/c (not ^~), so the regex wins.
        assert_eq!(r.find(b"/a/b/c"), Some(3));
        assert_eq!(r.find(b"/a/b/cd"), Some(2));
        let exact = router(&["/x", "= /x"]);
        assert_eq!(exact.find(b"/x"), Some(1));
        assert_eq!(exact.find(b"/x/"), Some(0));
    }
}
