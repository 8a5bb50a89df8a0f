//! The path locations are matched on, normalized as nginx normalizes `$uri`
//! (`ngx_http_parse_complex_uri` with `merge_slashes on`): percent-escapes decoded, runs of
//! slashes merged, `.` and `..` segments resolved, and a `#` ending the path. A path that
//! climbs above the root, a broken escape or an escaped NUL is refused (400). A decoded `/` or
//! `.` counts as one, as in nginx (`/%2e%2e/` climbs); a decoded `%`, `#` or `?` is kept as a
//! character. The request is still forwarded with the target as the client sent it.

/// Why a path was refused: the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad path")]
pub struct BadPath;

/// Whether `raw` needs work: an escape, a `#`, or a `/` followed by `/`, `.` or `#`. A path
/// without any is already normal and is matched where it lies.
fn needs_work(raw: &[u8]) -> bool {
    raw.is_empty()
        || memchr::memchr2(b'%', b'#', raw).is_some()
        || memchr::memchr_iter(b'/', raw).any(|at| matches!(raw.get(at + 1), Some(b'/' | b'.')))
}

/// Normalizes `raw` (a path, without its query) into `out` when it needs it: `Ok(true)` when
/// `out` holds the normal form, `Ok(false)` when `raw` is already normal (nothing copied).
pub fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<bool, BadPath> {
    if !needs_work(raw) {
        return Ok(false);
    }
    out.clear();
    out.reserve(raw.len() + 1);
    if raw.first() != Some(&b'/') {
        // The empty path of `http://host` or `http://host?q`.
        out.push(b'/');
    }
    let mut state = State::Usual;
    let mut i = 0;
    while i < raw.len() {
        let mut ch = raw[i];
        i += 1;
        if ch == b'%' {
            let hi = raw.get(i).and_then(|&c| hex(c)).ok_or(BadPath)?;
            let lo = raw.get(i + 1).and_then(|&c| hex(c)).ok_or(BadPath)?;
            i += 2;
            ch = hi << 4 | lo;
            match ch {
                0 => return Err(BadPath),
                // Kept as characters, not acted on.
                b'%' | b'#' | b'?' => {
                    out.push(ch);
                    state = State::Usual;
                    continue;
                }
                _ => {}
            }
        } else if ch == b'#' {
            // A fragment ends the path.
            break;
        }
        state = step(state, ch, out)?;
    }
    match state {
        State::Dot => {
            out.pop();
        }
        State::DotDot => climb(out)?,
        State::Usual | State::Slash => {}
    }
    Ok(true)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Usual,
    /// Just after a `/`.
    Slash,
    /// After `/.`
    Dot,
    /// After `/..`
    DotDot,
}

/// Takes one (decoded) byte of the path.
fn step(state: State, ch: u8, out: &mut Vec<u8>) -> Result<State, BadPath> {
    Ok(match (state, ch) {
        (State::Slash, b'/') => State::Slash,
        (_, b'/') => match state {
            State::Dot => {
                // `/./` is `/`.
                out.pop();
                State::Slash
            }
            State::DotDot => {
                climb(out)?;
                State::Slash
            }
            _ => {
                out.push(b'/');
                State::Slash
            }
        },
        (State::Slash, b'.') => {
            out.push(b'.');
            State::Dot
        }
        (State::Dot, b'.') => {
            out.push(b'.');
            State::DotDot
        }
        _ => {
            out.push(ch);
            State::Usual
        }
    })
}

/// `out` ends with `/..`: drops it and the segment before, leaving the `/` that began that
/// segment; a `..` at the root climbs above it.
fn climb(out: &mut Vec<u8>) -> Result<(), BadPath> {
    // Drop "/..", then the segment before it (back to its slash, kept).
    let keep = out.len().checked_sub(3).ok_or(BadPath)?;
    out.truncate(keep);
    match out.iter().rposition(|&b| b == b'/') {
        Some(slash) => {
            out.truncate(slash + 1);
            Ok(())
        }
        None => Err(BadPath),
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, BadPath> {
        let mut out = Vec::new();
        Ok(match normalize(raw.as_bytes(), &mut out)? {
            true => String::from_utf8_lossy(&out).into_owned(),
            false => raw.to_owned(),
        })
    }

    #[test]
    fn normal_paths_are_not_copied() {
        let mut out = vec![b'x'];
        for p in ["/", "/a/b.c", "/a.b/c.", "/a+b/~c-d_e", "/a/b/"] {
            assert_eq!(normalize(p.as_bytes(), &mut out), Ok(false), "{p}");
        }
        assert_eq!(out, b"x");
    }

    #[test]
    fn escapes_slashes_and_dot_segments_are_resolved() {
        for (raw, want) in [
            ("/%61dmin/secret", "/admin/secret"),
            ("//admin/secret", "/admin/secret"),
            ("/x/../admin/secret", "/admin/secret"),
            ("/./admin//./secret", "/admin/secret"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/../../c", "/c"),
            ("/x/%2E%2E/admin", "/admin"),
            ("/x%2f%2fadmin", "/x/admin"),
            ("/a%20b", "/a b"),
            ("/a%25b", "/a%b"),
            ("/a%3fb", "/a?b"),
            ("/a%23b", "/a#b"),
            ("/a#frag/../..", "/a"),
            ("/a/...", "/a/..."),
            ("/a/..b", "/a/..b"),
            ("", "/"),
            ("/%ff", "/\u{fffd}"),
        ] {
            assert_eq!(norm(raw), Ok(want.to_owned()), "{raw}");
        }
    }

    #[test]
    fn climbing_above_the_root_and_broken_escapes_are_refused() {
        for raw in [
            "/..",
            "/../a",
            "/a/../..",
            "/a/../../b",
            "/%2e%2e",
            "/%2e%2e%2fadmin",
            "/a%",
            "/a%4",
            "/a%zz",
            "/a%00b",
        ] {
            assert_eq!(norm(raw), Err(BadPath), "{raw}");
        }
    }
}
