//! `locations:` entries: nginx's `location` match rules (compiled once, here) and what each
//! location does (`proxy_pass` or `return`).

use std::path::Path;

use serde::Deserialize;

use super::Upstream;
use crate::config::PluginSpec;

/// The most backtracking steps a look-around regex may take on one path (PCRE's default match
/// limit is 10 million; a path is at most 8 KiB).
const BACKTRACK_LIMIT: usize = 1_000_000;
/// The most memory the compiled form of one regex may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How a location matches a path (nginx's modifiers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationMatch {
    /// `= /path`
    Exact(String),
    /// `^~ /prefix`: when it is the longest prefix, regexes are not tried.
    PrefixNoRegex(String),
    /// `/prefix`
    Prefix(String),
    /// `~ re` (case-sensitive) or `~* re` (case-insensitive).
    Regex(LocationRegex),
}

/// A compiled location regex. Both engines match bytes the way nginx's PCRE does without its
/// UTF-8 mode: `.` is any byte, classes and caseless matching are ASCII.
#[derive(Debug, Clone)]
pub enum LocationRegex {
    /// Patterns the `regex` crate takes: matched in linear time.
    Fast {
        regex: regex::bytes::Regex,
        caseless: bool,
    },
    /// Patterns that need look-around or back-references (PCRE features): matched by
    /// backtracking, at most `BACKTRACK_LIMIT` steps per path.
    Backtracking {
        regex: fancy_regex::Regex,
        caseless: bool,
    },
}

/// A backtracking regex gave up on a path (nginx answers 500 when PCRE does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the location regex ran past its backtracking limit")]
pub struct RegexGaveUp;

impl LocationRegex {
    /// Compiles `pattern` with the fast engine, or with the backtracking one when it needs
    /// look-around or back-references; the error says why neither took it.
    pub fn compile(pattern: &str, caseless: bool) -> Result<LocationRegex, String> {
        let fast = regex::bytes::RegexBuilder::new(pattern)
            .case_insensitive(caseless)
            .unicode(false)
            .size_limit(REGEX_SIZE_LIMIT)
            .build();
        let fast_error = match fast {
            Ok(regex) => return Ok(LocationRegex::Fast { regex, caseless }),
            Err(e) => e,
        };
        let slow = fancy_regex::RegexBuilder::new(pattern)
            .case_insensitive(caseless)
            .bytes_mode(fancy_regex::BytesMode::Ascii)
            .backtrack_limit(BACKTRACK_LIMIT)
            .delegate_size_limit(REGEX_SIZE_LIMIT)
            .build();
        match slow {
            Ok(regex) => Ok(LocationRegex::Backtracking { regex, caseless }),
            // The fast engine's message is the clearer one for plain syntax errors.
            Err(fancy_regex::Error::ParseError(..)) => Err(format!("bad regex: {fast_error}")),
            Err(e) => Err(format!(
                "regex is not supported (neither as a plain regex nor with look-around): {e}"
            )),
        }
    }

    /// Whether the regex matches somewhere in `path`.
    pub fn is_match(&self, path: &[u8]) -> Result<bool, RegexGaveUp> {
        match self {
            LocationRegex::Fast { regex, .. } => Ok(regex.is_match(path)),
            LocationRegex::Backtracking { regex, .. } => {
                regex.is_match(path).map_err(|_| RegexGaveUp)
            }
        }
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        match self {
            LocationRegex::Fast { regex, .. } => regex.as_str(),
            LocationRegex::Backtracking { regex, .. } => regex.as_str(),
        }
    }

    /// `~*`: case-insensitive.
    pub fn caseless(&self) -> bool {
        match self {
            LocationRegex::Fast { caseless, .. } | LocationRegex::Backtracking { caseless, .. } => {
                *caseless
            }
        }
    }

    /// Whether matching backtracks (the pattern needed look-around or back-references).
    pub fn backtracks(&self) -> bool {
        matches!(self, LocationRegex::Backtracking { .. })
    }
}

/// Two regexes are the same location when written the same way.
impl PartialEq for LocationRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern() == other.pattern() && self.caseless() == other.caseless()
    }
}

impl Eq for LocationRegex {}

/// What a location does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationAction {
    /// `proxy_pass: UPSTREAM` (index into `upstreams`), with `proxy_method` if set.
    Proxy {
        upstream: usize,
        method: Option<String>,
    },
    /// `return: CODE [text]`: answered by walnut. For 301, 302, 303, 307 and 308 the text is
    /// the `Location` (as in nginx's `return 301 URL`), else it is the body, as written.
    Return { status: u16, text: String },
}

/// Whether `return`'s text is a redirect's target.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

#[derive(Debug, Clone)]
pub struct Location {
    /// The `match:` text as written.
    pub text: String,
    pub matcher: LocationMatch,
    pub action: LocationAction,
    pub plugins: Vec<PluginSpec>,
    /// The line of the `locations:` key.
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationYaml {
    #[serde(rename = "match")]
    matches: String,
    #[serde(default)]
    proxy_pass: Option<String>,
    #[serde(default)]
    proxy_method: Option<String>,
    #[serde(default, rename = "return")]
    ret: Option<serde_yaml::Value>,
    #[serde(default)]
    plugins: Option<serde_yaml::Value>,
}

/// Checks and compiles a pool's `locations:` list.
pub(super) fn locations(
    value: &serde_yaml::Value,
    line: usize,
    base: &Path,
    upstreams: &[Upstream],
) -> Result<Vec<Location>, String> {
    let serde_yaml::Value::Sequence(items) = value else {
        return Err("locations must be a list of {match: ..., proxy_pass: ...} entries".into());
    };
    let mut out: Vec<Location> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let y: LocationYaml =
            serde_yaml::from_value(item.clone()).map_err(|e| format!("locations[{i}]: {e}"))?;
        let at = |e: String| format!("locations[{i}] ({:?}): {e}", y.matches);
        let matcher = parse_match(&y.matches).map_err(at)?;
        if out.iter().any(|l| l.matcher == matcher) {
            return Err(at("is given twice".into()));
        }
        let action = match (&y.proxy_pass, &y.ret) {
            (Some(up), None) => {
                let upstream = upstreams
                    .iter()
                    .position(|u| &u.name == up)
                    .ok_or_else(|| at(format!("proxy_pass {up:?} names no upstream")))?;
                if let Some(m) = &y.proxy_method
                    && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    return Err(at(format!("proxy_method {m:?} is not a method like GET")));
                }
                LocationAction::Proxy {
                    upstream,
                    method: y.proxy_method.clone(),
                }
            }
            (None, Some(ret)) => parse_return(ret).map_err(at)?,
            _ => return Err(at("needs exactly one of proxy_pass or return".into())),
        };
        let plugins = match &y.plugins {
            Some(v) => crate::config::plugins::plugin_list(v, line, base).map_err(at)?,
            None => Vec::new(),
        };
        out.push(Location {
            text: y.matches.clone(),
            matcher,
            action,
            plugins,
            line,
        });
    }
    Ok(out)
}

/// `return: CODE [text]` (nginx's `return code [text|URL]`).
fn parse_return(ret: &serde_yaml::Value) -> Result<LocationAction, String> {
    let text = match ret {
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        _ => return Err("return must be CODE or \"CODE text\"".into()),
    };
    let (code, rest) = text.split_once(' ').unwrap_or((&text, ""));
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .ok_or_else(|| format!("return {text:?}: the status is not 200 to 599"))?;
    if is_redirect(status) && rest.is_empty() {
        return Err(format!(
            "return {text:?}: a {status} needs a URL after the code"
        ));
    }
    if is_redirect(status) && rest.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("return {text:?}: the URL must not hold spaces"));
    }
    Ok(LocationAction::Return {
        status,
        text: rest.to_owned(),
    })
}

/// `= /x`, `^~ /x`, `~ re`, `~* re` or `/x`.
fn parse_match(text: &str) -> Result<LocationMatch, String> {
    let (modifier, rest) = match text.split_once(' ') {
        Some((m @ ("=" | "^~" | "~" | "~*"), rest)) => (m, rest.trim_start()),
        _ => ("", text),
    };
    if rest.is_empty() {
        return Err("match needs a path or a regex after its modifier".into());
    }
    let prefix = |p: &str| -> Result<String, String> {
        if p.starts_with('/') {
            Ok(p.to_owned())
        } else {
            Err(format!(
                "{p:?} is not a path starting with / (regexes take ~ or ~*)"
            ))
        }
    };
    Ok(match modifier {
        "=" => LocationMatch::Exact(prefix(rest)?),
        "^~" => LocationMatch::PrefixNoRegex(prefix(rest)?),
        "" => LocationMatch::Prefix(prefix(rest)?),
        m => LocationMatch::Regex(LocationRegex::compile(rest, m == "~*")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_regexes_take_the_fast_engine_and_look_around_the_backtracking_one() {
        let r = LocationRegex::compile("/count(.*)", true).unwrap();
        assert!(!r.backtracks());
        assert_eq!(r.is_match(b"/COUNT_a"), Ok(true));
        let r = LocationRegex::compile("^/(?!public/).*\\.php$", false).unwrap();
        assert!(r.backtracks());
        assert_eq!(r.is_match(b"/private/x.php"), Ok(true));
        assert_eq!(r.is_match(b"/public/x.php"), Ok(false));
        // Back-references too.
        let r = LocationRegex::compile("^/(\\w+)/\\1$", false).unwrap();
        assert_eq!(r.is_match(b"/ab/ab"), Ok(true));
        assert_eq!(r.is_match(b"/ab/cd"), Ok(false));
    }

    #[test]
    fn paths_are_matched_as_bytes() {
        // A decoded %FF is one byte that `.` matches, as with PCRE outside UTF-8 mode.
        let fast = LocationRegex::compile("^/a.b$", false).unwrap();
        assert_eq!(fast.is_match(b"/a\xffb"), Ok(true));
        let slow = LocationRegex::compile("^/a(?=.b$)", false).unwrap();
        assert_eq!(slow.is_match(b"/a\xffb"), Ok(true));
    }

    #[test]
    fn refused_regexes_say_why() {
        let e = LocationRegex::compile("/a(", false).unwrap_err();
        assert!(e.starts_with("bad regex:"), "{e}");
        // Variable-length look-behind: PCRE refuses it too.
        let e = LocationRegex::compile("(?<=a+)b", false).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn non_ascii_literals_match_their_utf8_bytes() {
        let r = LocationRegex::compile("^/café$", false).unwrap();
        assert_eq!(r.is_match("/café".as_bytes()), Ok(true));
        let r = LocationRegex::compile("^/café(?!x)", false).unwrap();
        assert_eq!(r.is_match("/café".as_bytes()), Ok(true));
    }
}
