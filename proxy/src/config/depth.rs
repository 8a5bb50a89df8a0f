//! A quick look at a config's text before the YAML parser sees it: flow collections (`[...]`,
//! `{...}`) nested deeper than [`MAX_DEPTH`] are refused, naming the line.
//!
//! libyaml keeps a possible simple key for every open flow level and checks them all again at
//! each token, so its time grows with the square of the nesting (16,000 nested `{a: ` take it
//! 4 s, a 1 MiB file of them hours); serde_yaml collects every event of a document before its
//! own recursion limit is reached. This scan is linear: it follows YAML's tokens only as far as
//! needed to tell a flow indicator from the same character inside a quoted, plain or block
//! scalar or a comment.

/// The deepest flow nesting accepted. Real configs use a few levels; serde_yaml stops at 128.
pub const MAX_DEPTH: usize = 64;

/// The 1-based line on which flow collections first nest deeper than `MAX_DEPTH`, if they do.
pub(super) fn too_deep(text: &str) -> Option<usize> {
    let mut scan = Scan {
        b: text.as_bytes(),
        i: 0,
        line: 1,
        line_start: 0,
        flow: 0,
        node_col: None,
    };
    scan.run()
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    /// Where the current line starts.
    line_start: usize,
    /// Open flow collections.
    flow: usize,
    /// The column of the last node begun on this line in block context (a scalar, `-` or
    /// `?`): a block scalar's lines are those indented deeper than it.
    node_col: Option<usize>,
}

impl Scan<'_> {
    fn peek(&self, at: usize) -> Option<u8> {
        self.b.get(at).copied()
    }

    /// Whether the byte at `at` ends a token: a space, a tab, a line break or the end.
    fn blank(&self, at: usize) -> bool {
        matches!(self.peek(at), None | Some(b' ' | b'\t' | b'\r' | b'\n'))
    }

    fn flow_indicator(c: u8) -> bool {
        matches!(c, b',' | b'[' | b']' | b'{' | b'}')
    }

    /// Steps over the line break at `i` (CRLF, LF or a lone CR, as libyaml counts lines).
    fn newline(&mut self) {
        if self.peek(self.i) == Some(b'\r') && self.peek(self.i + 1) == Some(b'\n') {
            self.i += 1;
        }
        self.i += 1;
        self.line += 1;
        self.line_start = self.i;
        self.node_col = None;
    }

    fn skip_line(&mut self) {
        while !matches!(self.peek(self.i), None | Some(b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn run(&mut self) -> Option<usize> {
        while let Some(c) = self.peek(self.i) {
            let col = self.i - self.line_start;
            match c {
                b'\r' | b'\n' => self.newline(),
                b' ' | b'\t' => self.i += 1,
                b'#' => self.skip_line(),
                b'[' | b'{' => {
                    self.flow += 1;
                    if self.flow > MAX_DEPTH {
                        return Some(self.line);
                    }
                    self.i += 1;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    self.i += 1;
                }
                b',' => self.i += 1,
                b'\'' | b'"' => {
                    self.mark_node(col);
                    self.quoted(c);
                }
                b'|' | b'>' if self.flow == 0 => self.block_scalar(col),
                b'-' | b'.' if col == 0 && self.document_marker(c) => {
                    self.i += 3;
                    self.flow = 0;
                }
                b'-' | b'?' | b':' if self.blank(self.i + 1) => {
                    if c != b':' {
                        self.mark_node(col);
                    }
                    self.i += 1;
                }
                b':' if self.flow > 0
                    && self.peek(self.i + 1).is_some_and(Self::flow_indicator) =>
                {
                    self.i += 1
                }
                b'%' if col == 0 => self.skip_line(),
                b'&' | b'*' | b'!' => self.word(),
                _ => {
                    self.mark_node(col);
                    self.plain();
                }
            }
        }
        None
    }

    fn mark_node(&mut self, col: usize) {
        if self.flow == 0 {
            self.node_col = Some(col);
        }
    }

    /// `---` or `...` alone at the start of a line.
    fn document_marker(&self, c: u8) -> bool {
        self.b[self.i..].starts_with(&[c; 3]) && self.blank(self.i + 3)
    }

    /// An anchor, alias or tag: up to a blank (or a flow indicator in a flow collection).
    fn word(&mut self) {
        self.i += 1;
        while !(self.blank(self.i)
            || self.flow > 0 && self.peek(self.i).is_some_and(Self::flow_indicator))
        {
            self.i += 1;
        }
    }

    /// A plain scalar: up to a line end, ` #`, `: `, or in a flow collection a flow indicator.
    /// (One that goes on over the next lines is read on as more tokens, which holds no flow
    /// indicator in block context, where it matters.)
    fn plain(&mut self) {
        while let Some(c) = self.peek(self.i) {
            let next = self.i + 1;
            let ends = match c {
                b'\r' | b'\n' => true,
                b' ' | b'\t' => self.peek(next) == Some(b'#'),
                b':' => {
                    self.blank(next)
                        || (self.flow > 0 && self.peek(next).is_some_and(Self::flow_indicator))
                }
                c => self.flow > 0 && Self::flow_indicator(c),
            };
            if ends {
                return;
            }
            self.i += 1;
        }
    }

    /// A single- or double-quoted scalar, over as many lines as it takes.
    fn quoted(&mut self, quote: u8) {
        self.i += 1;
        while let Some(c) = self.peek(self.i) {
            match c {
                b'\r' | b'\n' => {
                    self.newline();
                    continue;
                }
                b'\\' if quote == b'"' => {
                    self.i += 1;
                    if matches!(self.peek(self.i), Some(b'\r' | b'\n')) {
                        self.newline();
                        continue;
                    }
                }
                b'\'' if quote == b'\'' && self.peek(self.i + 1) == Some(b'\'') => self.i += 1,
                c if c == quote => {
                    self.i += 1;
                    return;
                }
                _ => {}
            }
            self.i += 1;
        }
    }

    /// A literal (`|`) or folded (`>`) scalar: its header line, then every line that is blank or
    /// indented deeper than the node it belongs to.
    fn block_scalar(&mut self, col: usize) {
        let parent = self.node_col.or(col.checked_sub(1));
        self.skip_line();
        while self.peek(self.i).is_some() {
            self.newline();
            let indent = self.b[self.i..].iter().take_while(|&&b| b == b' ').count();
            let rest = self.peek(self.i + indent);
            let blank = matches!(rest, None | Some(b'\r' | b'\n'));
            if !blank && parent.is_some_and(|p| indent <= p) {
                // Not the scalar's: this line is read as tokens.
                return;
            }
            self.skip_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_found_on_its_line() {
        let deep = format!("a:\n  b: {}x{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(too_deep(&deep), Some(2));
        let deep = format!("a:\n\n  b: {}", "{a: ".repeat(100_000));
        assert_eq!(too_deep(&deep), Some(3));
        let split = format!("a: {}\n{}", "[\n".repeat(40), "{\n".repeat(40));
        assert_eq!(too_deep(&split), Some(66));
        let fine = format!("a: {}x{}\n", "[".repeat(64), "]".repeat(64));
        assert_eq!(too_deep(&fine), None);
    }

    #[test]
    fn brackets_inside_scalars_and_comments_do_not_count() {
        let many = "[".repeat(100);
        for text in [
            format!("a:\n  match: ~ ^/{many}\n"),
            format!("a:\n  match: \"~ {many}\"\n"),
            format!("a:\n  match: '~ {many}'\n"),
            format!("a:\n  match: '~ it''s {many}'\n"),
            format!("a:\n  match: \"~ \\\" {many}\"\n"),
            format!("a: # {many}\n  b: 1\n"),
            format!("a:\n  b: |\n    {many}\n\n    {many}\n  c: 1\n"),
            format!("- a: >-\n    {many}\n  b: 1\n"),
            format!("a: [x, \"{many}\", '{many}', y{{]\n"),
            format!("a:\n  b: \"line one\n    {many}\"\n"),
            format!("a: {{k: v}} # {many}\n"),
            format!("a: it's {many}\n"),
            format!("%YAML 1.1\n---\na: &x b{many}\n"),
        ] {
            assert_eq!(too_deep(&text), None, "{text}");
        }
    }

    #[test]
    fn a_block_scalar_ends_where_its_indentation_does() {
        let deep = "[".repeat(70);
        let text = format!("a:\n  b: |\n    text\n  c: {deep}\n");
        assert_eq!(too_deep(&text), Some(4));
        let text = format!("- |\n  text\n- {deep}\n");
        assert_eq!(too_deep(&text), Some(3));
    }

    #[test]
    fn every_shipped_config_passes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(too_deep(&text), None, "{}", path.display());
        }
    }
}
