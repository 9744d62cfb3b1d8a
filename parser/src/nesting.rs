//! A linear pre-scan of a YAML document's flow-collection nesting (`[…]`, `{…}`), run before
//! libyaml sees the text.
//!
//! libyaml's scanner keeps one "simple key" slot per open flow collection and walks all of
//! them for every token it reads, so a document nested tens of thousands of levels deep costs
//! time quadratic in its size (64 KiB of `{a: ` takes seconds, 64 MiB would take days) before
//! serde_yaml's recursion limit ever refuses it. This scan finds the first flow collection
//! opened deeper than the limit in one pass, so such a document is refused at once, with its
//! line.
//!
//! The scan follows libyaml's lexical rules closely enough to tell flow indicators from text:
//! quoted scalars (which may span lines), comments, block scalars (`|`, `>`: the more indented
//! lines after them are text) and, in block context, plain scalars (`echo [x` is text: only a
//! `[` or `{` where a node starts opens a collection). Inside a flow collection every `[`, `{`,
//! `]`, `}` outside a quoted scalar or comment is an indicator, as it is for libyaml. Where the
//! scan could be wrong it errs towards counting less, so it never refuses a document whose
//! real nesting is within the limit (and serde_yaml still refuses any that is not).

/// The 1-based line and column of the first `[` or `{` that opens a flow collection nested
/// deeper than `limit`, if there is one.
pub(crate) fn flow_too_deep(text: &str, limit: usize) -> Option<(usize, usize)> {
    let mut scan = Scan {
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
        line_start: 0,
    };
    scan.document(limit)
}

struct Scan<'t> {
    bytes: &'t [u8],
    pos: usize,
    line: usize,
    line_start: usize,
}

fn is_blank(b: Option<u8>) -> bool {
    matches!(b, None | Some(b' ' | b'\t' | b'\r' | b'\n'))
}

fn is_flow_indicator(b: Option<u8>) -> bool {
    matches!(b, Some(b',' | b'[' | b']' | b'{' | b'}'))
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    fn bump(&mut self) {
        if let Some(b) = self.peek() {
            self.pos += 1;
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.pos;
            }
        }
    }

    fn column(&self) -> usize {
        self.pos - self.line_start
    }

    fn position(&self) -> (usize, usize) {
        (self.line, self.column() + 1)
    }

    fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'\n'))
    }

    fn skip_to_line_end(&mut self) {
        while !self.at_line_end() {
            self.bump();
        }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.bump();
        }
    }

    /// A quoted scalar starting at the quote under the cursor; it may span lines.
    fn quoted(&mut self) {
        let Some(quote) = self.peek() else {
            return;
        };
        self.bump();
        while let Some(b) = self.peek() {
            if quote == b'"' && b == b'\\' {
                self.bump();
                self.bump();
            } else if b == quote {
                self.bump();
                // `''` inside a single-quoted scalar is an escaped quote.
                if quote == b'\'' && self.peek() == Some(b'\'') {
                    self.bump();
                } else {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// An anchor, tag or alias token: up to a blank or a flow indicator.
    fn property(&mut self) {
        self.bump();
        while !is_blank(self.peek()) && !is_flow_indicator(self.peek()) {
            self.bump();
        }
    }

    /// The block-context lines of a document, one at a time.
    fn document(&mut self, limit: usize) -> Option<(usize, usize)> {
        // Lines indented more than this belong to a block scalar (`None`: not in one).
        let mut block_scalar: Option<isize> = None;
        while self.pos < self.bytes.len() {
            let start = self.pos;
            self.skip_spaces();
            let indent = self.pos - start;
            if let Some(threshold) = block_scalar {
                if self.at_line_end() || indent as isize > threshold {
                    self.skip_to_line_end();
                    self.bump();
                    continue;
                }
                block_scalar = None;
            }
            if let Some(found) = self.block_line(limit, indent, &mut block_scalar) {
                return Some(found);
            }
            self.skip_to_line_end();
            self.bump();
        }
        None
    }

    /// The rest of one line in block context (a flow collection or a quoted scalar started on
    /// it may carry the scan over further lines).
    fn block_line(
        &mut self,
        limit: usize,
        indent: usize,
        block_scalar: &mut Option<isize>,
    ) -> Option<(usize, usize)> {
        let mut node_start = true;
        // Column of the innermost `- ` or `key:` on the line: what a block scalar's text must
        // be indented beyond.
        let mut owner: Option<usize> = None;
        let mut node_column = self.column();
        loop {
            self.skip_spaces();
            let b = self.peek()?;
            if b == b'\n' || b == b'#' {
                return None;
            }
            let next = self.peek_at(1);
            if !node_start {
                if b == b':' && is_blank(next) {
                    self.bump();
                    owner = Some(node_column);
                    node_start = true;
                    continue;
                }
                // Anything else after a complete node is an error libyaml stops at.
                return None;
            }
            node_column = self.column();
            match b {
                b'-' | b'?' | b':' if is_blank(next) => {
                    if b == b'-' {
                        owner = Some(self.column());
                    }
                    self.bump();
                }
                b'[' | b'{' => {
                    if let Some(found) = self.flow(limit) {
                        return Some(found);
                    }
                    node_start = false;
                }
                b'"' | b'\'' => {
                    self.quoted();
                    node_start = false;
                }
                b'|' | b'>' => {
                    *block_scalar = Some(match owner {
                        Some(column) => column as isize,
                        None => indent as isize - 1,
                    });
                    return None;
                }
                b'&' | b'!' => self.property(),
                b'*' => {
                    self.property();
                    node_start = false;
                }
                _ => {
                    // A plain scalar: up to `: ` (a key), ` #` (a comment) or the line's end.
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            return None;
                        }
                        if c == b':' && is_blank(self.peek_at(1)) {
                            break;
                        }
                        if c == b'#'
                            && self.pos > 0
                            && is_blank(self.bytes.get(self.pos - 1).copied())
                        {
                            return None;
                        }
                        self.bump();
                    }
                    node_start = false;
                }
            }
        }
    }

    /// A flow collection opened at the cursor, to its matching close (or the end of the text);
    /// the position of the first opener deeper than `limit`.
    fn flow(&mut self, limit: usize) -> Option<(usize, usize)> {
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > limit {
                        return Some(self.position());
                    }
                    self.bump();
                }
                b']' | b'}' => {
                    self.bump();
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return None;
                    }
                }
                b',' | b' ' | b'\t' | b'\r' | b'\n' | b'?' | b':' => self.bump(),
                b'#' => self.skip_to_line_end(),
                b'"' | b'\'' => self.quoted(),
                b'&' | b'!' | b'*' => self.property(),
                _ => {
                    // A plain scalar: it ends at a flow indicator, at `:` before a blank or a
                    // flow indicator, or at ` #`; it may continue over lines.
                    while let Some(c) = self.peek() {
                        if is_flow_indicator(Some(c)) {
                            break;
                        }
                        let next = self.peek_at(1);
                        if c == b':' && (is_blank(next) || is_flow_indicator(next)) {
                            break;
                        }
                        if c == b'#'
                            && self.pos > 0
                            && is_blank(self.bytes.get(self.pos - 1).copied())
                        {
                            break;
                        }
                        self.bump();
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deepest(text: &str) -> usize {
        (0..200)
            .find(|&limit| flow_too_deep(text, limit).is_none())
            .unwrap_or(200)
    }

    #[test]
    fn counts_flow_collections_nested_in_each_other() {
        assert_eq!(deepest("a: [1, [2, {b: [3]}]]\n"), 4);
        assert_eq!(deepest("[[[]]]\n[]\n"), 3);
        assert_eq!(deepest("a:\n  - [1]\n  - {x: [y]}\nb: c\n"), 2);
        assert_eq!(
            flow_too_deep("a: 1\nb: [[[x]]]\n", 2),
            Some((2, 6)),
            "the third `[` is on line 2, column 6"
        );
        // Unclosed collections still count.
        assert_eq!(deepest(&"[".repeat(150)), 150);
        assert_eq!(deepest(&"{a: ".repeat(150)), 150);
    }

    #[test]
    fn text_is_not_counted() {
        for text in [
            "a: echo [[[[ {{{{\n",
            "a: \"[[[[\"\nb: '[[[['\n",
            "a: \"[[\n  [[ \\\" [[\"\n",
            "a: 'it''s [[[['\n",
            "a: 1 # [[[[\n# [[[[\n",
            "a: |\n  [[[[\n  {{{{\n\n  [[\nb: 1\n",
            "- name: x\n  source: >-\n    [[[[\n      [[[\n  next: 1\n",
            "- |\n  [[[[\n- 2\n",
            "a: &anchor b[[[\nc: !tag d{{{\n",
            "[\"[[[[\", '{{{{', a #[[[\n]\n",
        ] {
            assert!(deepest(text) <= 1, "{text:?}: {}", deepest(text));
        }
    }

    #[test]
    fn closers_in_quotes_do_not_hide_openers() {
        let text = "[\"]\", ".repeat(150);
        assert_eq!(deepest(&text), 150);
        let text = "['}', ".repeat(150);
        assert_eq!(deepest(&text), 150);
    }

    #[test]
    fn a_collection_after_a_block_scalar_counts_again() {
        let text = "a: |\n  [[[[\nb: [[[x]]]\n";
        assert_eq!(deepest(text), 3);
        let text = "- k: |\n    [[[[\n  l: [[x]]\n";
        assert_eq!(deepest(text), 2);
    }
}
