//! Finds the line of each key and server entry: a quick scan of the text, trusted only where
//! each line holding something is exactly the next node, read on its own to the same text.
//!
//! Where that fails (multi-line values, flow style, JSON...), a second YAML parser that tells
//! places reads the file once ([`super::marks`]). Where even that does not name the same nodes,
//! the pools' names are located exactly, then each pool is matched on its own, and only the
//! nodes of a pool that still does not match are located one by one, which costs a parse of the
//! file each: at most `MAX_LOCATES` of them, so that a large file cannot take quadratic time.
//! Past that budget a node is given the line of the node before it.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;

/// The most nodes located the slow way (a parse of the file each) in one file.
const MAX_LOCATES: usize = 32;

/// A key (pool name or pool key) or a `servers:` entry; nodes are numbered in file order.
#[derive(Debug)]
pub(super) enum Node {
    Key(String),
    Item(String),
}

impl Node {
    /// Whether `content` (a line less its indentation) is this node written on one line.
    fn written_as(&self, content: &str) -> bool {
        match self {
            Node::Key(key) => serde_yaml::from_str::<BTreeMap<String, IgnoredAny>>(content)
                .is_ok_and(|map| map.len() == 1 && map.contains_key(key)),
            Node::Item(item) => {
                content.starts_with('-')
                    && serde_yaml::from_str::<Vec<String>>(content)
                        .is_ok_and(|list| list.len() == 1 && list[0] == *item)
            }
        }
    }
}

/// The line of every node. `starts` are the nodes that begin pools; `locate` finds one node's
/// line the slow, exact way.
pub(super) fn lines(
    text: &str,
    nodes: &[Node],
    starts: &[usize],
    locate: impl Fn(usize) -> usize,
) -> Vec<usize> {
    let content = content_lines(text);
    if let Some(lines) = content.as_deref().and_then(|c| match_lines(c, nodes)) {
        return lines;
    }
    if let Some(lines) = super::marks::lines(text, nodes) {
        return lines;
    }
    let mut budget = MAX_LOCATES;
    let mut lines = vec![0; nodes.len()];
    let mut locate = |node: usize, lines: &[usize]| {
        if budget == 0 {
            return lines[..node]
                .iter()
                .rev()
                .copied()
                .find(|&l| l > 0)
                .unwrap_or(1);
        }
        budget -= 1;
        locate(node)
    };
    let Some(content) = content else {
        for node in 0..nodes.len() {
            lines[node] = locate(node, &lines);
        }
        return lines;
    };
    // Somewhere a node is not alone on its line. Locating the pools' names, then matching pool
    // by pool, keeps the slow way to the pools written in an unusual way.
    for &start in starts {
        lines[start] = locate(start, &lines);
    }
    for (index, &start) in starts.iter().enumerate() {
        let end = starts.get(index + 1).copied().unwrap_or(nodes.len());
        let below = content.iter().filter(|(line, _)| {
            *line > lines[start]
                && starts
                    .get(index + 1)
                    .is_none_or(|&next| *line < lines[next])
        });
        let region: Vec<(usize, &str)> = below.copied().collect();
        match match_lines(&region, &nodes[start + 1..end]) {
            Some(found) => lines[start + 1..end].copy_from_slice(&found),
            None => {
                for node in start + 1..end {
                    lines[node] = locate(node, &lines);
                }
            }
        }
    }
    lines
}

/// Each line holding something (not blank, not only a comment), less its indentation, with its
/// 1-based number; `None` if the text breaks lines in ways `str::lines` does not see.
fn content_lines(text: &str) -> Option<Vec<(usize, &str)>> {
    // libyaml also ends lines at a lone CR, NEL, LS and PS.
    let odd_breaks = text.contains(['\u{85}', '\u{2028}', '\u{2029}'])
        || text
            .match_indices('\r')
            .any(|(at, _)| !text[at + 1..].starts_with('\n'));
    if odd_breaks {
        return None;
    }
    let lines = text.trim_start_matches('\u{feff}').lines().enumerate();
    let content = lines.filter_map(|(index, line)| {
        let content = line.trim_start_matches([' ', '\t']);
        let blank = content.trim_end().is_empty() || content.starts_with('#');
        (!blank).then_some((index + 1, content))
    });
    Some(content.collect())
}

/// The lines of `nodes` when `content` is exactly them, one a line, in order.
fn match_lines(content: &[(usize, &str)], nodes: &[Node]) -> Option<Vec<usize>> {
    if content.len() != nodes.len() {
        return None;
    }
    let pairs = content.iter().zip(nodes);
    pairs
        .map(|(&(line, content), node)| node.written_as(content).then_some(line))
        .collect()
}

/// Whether the quick scan alone finds the lines of `nodes` in `text`.
#[cfg(test)]
pub(super) fn quick(text: &str, nodes: &[Node]) -> bool {
    content_lines(text)
        .and_then(|content| match_lines(&content, nodes))
        .is_some()
}
