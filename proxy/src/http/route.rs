//! Which location serves a path, by nginx's rules: an exact `=` match wins; else the longest
//! prefix is remembered, and if it is `^~` it wins; else the first regex (`~`, `~*`, file order)
//! that matches wins; else the longest prefix. Paths are matched as [`super::path`] normalized
//! them, so `/%61dmin`, `//admin` and `/x/../admin` all meet the rules of `/admin`.

use crate::config::{Location, LocationMatch, LocationRegex, RegexGaveUp};

/// The locations of a pool, indexed for matching. Regexes are the ones compiled when the
/// config loaded.
#[derive(Debug, Clone, Default)]
pub struct Router {
    exact: Vec<(Vec<u8>, usize)>,
    /// `(prefix, stops regexes, location)`, longest first.
    prefixes: Vec<(Vec<u8>, bool, usize)>,
    regexes: Vec<(LocationRegex, usize)>,
}

impl Router {
    pub fn new(locations: &[Location]) -> Router {
        let mut r = Router::default();
        for (i, l) in locations.iter().enumerate() {
            match &l.matcher {
                LocationMatch::Exact(p) => r.exact.push((p.clone().into_bytes(), i)),
                LocationMatch::PrefixNoRegex(p) => {
                    r.prefixes.push((p.clone().into_bytes(), true, i))
                }
                LocationMatch::Prefix(p) => r.prefixes.push((p.clone().into_bytes(), false, i)),
                LocationMatch::Regex(re) => r.regexes.push((re.clone(), i)),
            }
        }
        r.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        r
    }

    /// The location serving the normalized `path`, if any; an error when a backtracking regex
    /// gave up (nginx answers 500 when PCRE does).
    pub fn find(&self, path: &[u8]) -> Result<Option<usize>, RegexGaveUp> {
        if let Some((_, i)) = self.exact.iter().find(|(p, _)| p == path) {
            return Ok(Some(*i));
        }
        let longest = self.prefixes.iter().find(|(p, _, _)| path.starts_with(p));
        if let Some((_, true, i)) = longest {
            return Ok(Some(*i));
        }
        for (re, i) in &self.regexes {
            if re.is_match(path)? {
                return Ok(Some(*i));
            }
        }
        Ok(longest.map(|(_, _, i)| *i))
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
                    "~" | "~*" => LocationMatch::Regex(
                        LocationRegex::compile(rest, modifier == "~*").unwrap(),
                    ),
                    _ => LocationMatch::Prefix(m.to_string()),
                };
                Location {
                    text: m.to_string(),
                    matcher,
                    action: LocationAction::Return {
                        status: 200,
                        text: String::new(),
                    },
                    plugins: Vec::new(),
                    line: 1,
                }
            })
            .collect();
        Router::new(&locations)
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
        assert_eq!(r.find(b"/"), Ok(Some(0)));
        assert_eq!(r.find(b"/index.html"), Ok(Some(1)));
        assert_eq!(r.find(b"/documents/document.html"), Ok(Some(2)));
        assert_eq!(r.find(b"/images/1.gif"), Ok(Some(3)));
        assert_eq!(r.find(b"/documents/1.jpg"), Ok(Some(4)));
        assert_eq!(r.find(b"/documents/1.JPG"), Ok(Some(4)));
    }

    #[test]
    fn regexes_in_file_order_and_case() {
        let r = router(&["~ /Count(.*)", "~* /count(.*)", "/count_special"]);
        assert_eq!(r.find(b"/Count_a"), Ok(Some(0)));
        assert_eq!(r.find(b"/COUNT_a"), Ok(Some(1)));
        // A plain prefix, even the longest, loses to a matching regex.
        assert_eq!(r.find(b"/count_special"), Ok(Some(1)));
        assert_eq!(r.find(b"/other"), Ok(None));
    }

    #[test]
    fn longest_prefix_wins_and_caret_tilde_stops_regexes() {
        let r = router(&["/a", "^~ /a/b", "/a/b/c", "~ c$"]);
        assert_eq!(r.find(b"/a/x"), Ok(Some(0)));
        assert_eq!(r.find(b"/a/bc"), Ok(Some(1)));
        // The longest prefix is /a/b/c (not ^~), so the regex wins.
        assert_eq!(r.find(b"/a/b/c"), Ok(Some(3)));
        assert_eq!(r.find(b"/a/b/cd"), Ok(Some(2)));
        let exact = router(&["/x", "= /x"]);
        assert_eq!(exact.find(b"/x"), Ok(Some(1)));
        assert_eq!(exact.find(b"/x/"), Ok(Some(0)));
    }

    #[test]
    fn look_around_regexes_take_part_in_file_order() {
        let r = router(&["/", "~ ^/(?!public/).*\\.php$", "~ \\.php$"]);
        assert_eq!(r.find(b"/private/a.php"), Ok(Some(1)));
        assert_eq!(r.find(b"/public/a.php"), Ok(Some(2)));
        assert_eq!(r.find(b"/public/a.html"), Ok(Some(0)));
    }
}
