//! The line of every node in one linear pass, for the configs the quick scan cannot follow
//! (flow style, JSON): the text is read a second time by saphyr's YAML parser, which tells
//! where each event starts. Its answer is taken only when it walks through exactly the nodes
//! serde_yaml read, text for text; otherwise `None`, and the slow way is left to find them.

use saphyr_parser::{Event, Parser, Span};

use super::lines::Node;

/// The lines of `nodes` (pool names, pool keys and `servers:` entries, in file order).
pub(super) fn lines(text: &str, nodes: &[Node]) -> Option<Vec<usize>> {
    // libyaml (YAML 1.1) also breaks lines at NEL, LS and PS; saphyr (YAML 1.2) does not.
    if text.contains(['\u{85}', '\u{2028}', '\u{2029}']) {
        return None;
    }
    let mut walk = Walk {
        parser: Parser::new_from_str(text),
        nodes,
        lines: Vec::with_capacity(nodes.len()),
    };
    walk.document()?;
    (walk.lines.len() == nodes.len()).then_some(walk.lines)
}

struct Walk<'t, 'n> {
    parser: Parser<'t, saphyr_parser::StrInput<'t>>,
    nodes: &'n [Node],
    lines: Vec<usize>,
}

impl<'t> Walk<'t, '_> {
    fn next(&mut self) -> Option<(Event<'t>, Span)> {
        self.parser.next_event()?.ok()
    }

    /// The next event's scalar text and line, when it is a scalar.
    fn scalar(event: &Event<'t>, span: Span) -> Option<(String, usize)> {
        match event {
            Event::Scalar(text, ..) => Some((text.to_string(), span.start.line())),
            _ => None,
        }
    }

    /// Records the line of the next node, if it is `node` with this text.
    fn node(&mut self, text: &str, line: usize, item: bool) -> Option<()> {
        let matches = match self.nodes.get(self.lines.len())? {
            Node::Key(key) => !item && key == text,
            Node::Item(entry) => item && entry == text,
        };
        matches.then(|| self.lines.push(line))
    }

    fn document(&mut self) -> Option<()> {
        matches!(self.next()?.0, Event::StreamStart).then_some(())?;
        matches!(self.next()?.0, Event::DocumentStart(_)).then_some(())?;
        matches!(self.next()?.0, Event::MappingStart(..)).then_some(())?;
        loop {
            let (event, span) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                return Some(());
            }
            let (name, line) = Self::scalar(&event, span)?;
            self.node(&name, line, false)?;
            self.pool()?;
        }
    }

    fn pool(&mut self) -> Option<()> {
        matches!(self.next()?.0, Event::MappingStart(..)).then_some(())?;
        loop {
            let (event, span) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                return Some(());
            }
            let (key, line) = Self::scalar(&event, span)?;
            self.node(&key, line, false)?;
            if key == "servers" {
                self.servers()?;
            } else {
                self.skip()?;
            }
        }
    }

    fn servers(&mut self) -> Option<()> {
        matches!(self.next()?.0, Event::SequenceStart(..)).then_some(())?;
        loop {
            let (event, span) = self.next()?;
            if matches!(event, Event::SequenceEnd) {
                return Some(());
            }
            let (entry, line) = Self::scalar(&event, span)?;
            self.node(&entry, line, true)?;
        }
    }

    /// Steps over one value, however nested.
    fn skip(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.next()?.0 {
                Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
                Event::SequenceEnd | Event::MappingEnd => depth = depth.checked_sub(1)?,
                Event::Scalar(..) | Event::Alias(_) => {}
                _ => return None,
            }
            if depth == 0 {
                return Some(());
            }
        }
    }
}
