//! Splits a YAML stream into documents (so that one broken document cannot hide
//! the others) and records, for every field of a document, the line and column
//! where its value starts, keyed by the same path syntax `serde_path_to_error`
//! prints (`spec.http[0].route[1].weight`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_saphyr::granit_parser::{Event, Parser};

/// One document of a stream.
#[derive(Debug)]
pub(crate) struct DocumentText<'a> {
    /// 1-based index among the non-empty documents of the stream.
    pub index: usize,
    /// 1-based line of the stream where this document's text begins.
    pub first_line: usize,
    pub text: &'a str,
}

/// Whether a line is a document marker (`---` or `...` followed by nothing or blank).
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// Whether a document has any content besides blanks, comments and markers.
fn has_content(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim();
        !(t.is_empty() || t.starts_with('#') || is_marker(l, "---") || is_marker(l, "..."))
    })
}

/// Splits on `---` and `...` lines at column 0, as `kubectl` does.
pub(crate) fn split_documents<'a>(text: &'a str) -> Vec<DocumentText<'a>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    let push = |from: usize, to: usize, first_line: usize, docs: &mut Vec<DocumentText<'a>>| {
        let chunk: &'a str = &text[from..to];
        if has_content(chunk) {
            let index = docs.len() + 1;
            docs.push(DocumentText {
                index,
                first_line,
                text: chunk,
            });
        }
    };
    for (line_no, line) in (1usize..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_marker(bare, "---") {
            push(start, offset, start_line, &mut docs);
            // The marker line belongs to the new document (it may carry content).
            start = offset;
            start_line = line_no;
        } else if is_marker(bare, "...") {
            push(start, offset, start_line, &mut docs);
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    push(start, text.len(), start_line, &mut docs);
    docs
}

/// Line and column (both 1-based) in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub line: usize,
    pub column: usize,
}

/// Positions of the fields of one document.
#[derive(Debug, Default)]
pub(crate) struct FieldIndex {
    /// Shared by the items of a `kind: List` document.
    positions: Arc<HashMap<String, Position>>,
    /// Where the key of each mapping entry is written.
    keys: Arc<HashMap<String, Position>>,
    /// Path prefix of the object within the document (`items[3]` in a List).
    prefix: String,
}

/// A syntax error found while indexing.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub message: String,
    pub position: Position,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl FieldIndex {
    /// Indexes `doc`, whose first line is line `first_line` of the stream.
    pub fn build(doc: &str, first_line: usize) -> Result<FieldIndex, SyntaxError> {
        let mut positions = HashMap::new();
        let mut keys = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let at = |line: usize, col: usize| Position {
            line: line + first_line - 1,
            column: col + 1,
        };
        for event in Parser::new_from_str(doc) {
            let (event, span) = event.map_err(|e| SyntaxError {
                message: e.info().to_string(),
                position: at(e.marker().line(), e.marker().col()),
            })?;
            let pos = at(span.start.line(), span.start.col());
            // The path of a value starting at this event, if this event is a value.
            let mut value_path = None;
            match stack.last_mut() {
                Some(Frame::Map { path, key }) => match key.take() {
                    None => {
                        if let Event::Scalar(text, ..) = &event {
                            let full = join(path, text);
                            keys.entry(full.clone()).or_insert(pos);
                            *key = Some(full);
                            continue;
                        }
                        // A complex key: index nothing under it.
                        *key = Some(join(path, "?"));
                    }
                    Some(k) => value_path = Some(k),
                },
                Some(Frame::Seq { path, next }) => {
                    if !matches!(event, Event::SequenceEnd) {
                        value_path = Some(format!("{path}[{next}]"));
                        *next += 1;
                    }
                }
                None => {
                    if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
                        value_path = Some(String::new());
                    }
                }
            }
            if let Some(p) = &value_path {
                positions.entry(p.clone()).or_insert(pos);
            }
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map {
                    path: value_path.unwrap_or_default(),
                    key: None,
                }),
                Event::SequenceStart(..) => stack.push(Frame::Seq {
                    path: value_path.unwrap_or_default(),
                    next: 0,
                }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Ok(FieldIndex {
            positions: Arc::new(positions),
            keys: Arc::new(keys),
            prefix: String::new(),
        })
    }

    /// The same positions seen from an object nested at `prefix` (a List item).
    pub fn rooted_at(&self, prefix: &str) -> FieldIndex {
        let full = join(&self.prefix, prefix);
        FieldIndex {
            positions: self.positions.clone(),
            keys: self.keys.clone(),
            prefix: full,
        }
    }

    /// Position of the value at `path` (relative to the object), or of the
    /// nearest enclosing value that has one. A value that starts on a later
    /// line than its key (a block mapping or sequence) is located at its key.
    pub fn position_of(&self, path: &str) -> Option<Position> {
        let path = if path == "." { "" } else { path };
        let mut candidate = join(&self.prefix, path);
        loop {
            if let Some(p) = self.positions.get(&candidate) {
                return Some(match self.keys.get(&candidate) {
                    Some(k) if k.line != p.line => *k,
                    _ => *p,
                });
            }
            if candidate.is_empty() || candidate == self.prefix {
                return None;
            }
            candidate = parent_path(&candidate).to_string();
        }
    }

    /// Line of the value at `path`, see [`FieldIndex::position_of`].
    pub fn line_of(&self, path: &str) -> Option<usize> {
        self.position_of(path).map(|p| p.line)
    }
}

/// `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``.
fn parent_path(path: &str) -> &str {
    if path.ends_with(']')
        && let Some(i) = path.rfind('[')
    {
        return &path[..i];
    }
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_markers_only_at_column_zero() {
        let text = "---\na: 1\n---\n# only a comment\n---\nb: |\n  ---\n  x\n...\nc: 2\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].first_line, 1);
        assert!(docs[1].text.contains("b: |"));
        assert_eq!(docs[1].index, 2);
        assert_eq!(docs[1].first_line, 5);
        assert_eq!(docs[2].first_line, 10);
    }

    #[test]
    fn indexes_nested_fields() {
        let doc = "spec:\n  http:\n  - route:\n    - destination:\n        host: a\n      weight: 10\n    - weight: ten\n";
        let index = FieldIndex::build(doc, 10).unwrap();
        assert_eq!(
            index.position_of("spec.http[0].route[1].weight"),
            Some(Position {
                line: 16,
                column: 15
            })
        );
        assert_eq!(
            index.line_of("spec.http[0].route[0].destination.host"),
            Some(14)
        );
        // Unknown leaf: falls back to the nearest parent, located at its key.
        assert_eq!(
            index.line_of("spec.http[0].route[0].destination.port"),
            Some(13)
        );
        let item = index.rooted_at("spec.http[0]");
        assert_eq!(item.line_of("route[1].weight"), Some(16));
    }

    #[test]
    fn reports_syntax_errors_with_stream_lines() {
        let err = FieldIndex::build("a: 1\nb: [1, 2\n", 5).unwrap_err();
        assert!(err.position.line >= 6, "{err:?}");
    }
}
