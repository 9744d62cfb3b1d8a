//! Reading a file into YAML documents, each with the line it starts on and its `kind`.
//!
//! Documents are split on `---` lines by hand before serde_yaml sees them, so that every
//! document knows its own first line and every YAML error can be reported against the line in
//! the *file*, not within the document. serde_yaml already refuses alias bombs ("repetition
//! limit exceeded") and very deep nesting ("recursion limit exceeded"); the byte limit below
//! keeps a single huge file from being read at all.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_yaml::Value;

use crate::error::{Error, Location, Result};

/// Files larger than this are refused before they are parsed.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document's text (shared: documents are cloned into template sets and libraries).
    pub text: Arc<str>,
    /// 1-based line in the file where the document's text starts.
    pub first_line: usize,
    /// The parsed document. For Argo kinds, `key: null` entries are already removed so that
    /// serde defaults apply, the way Argo's own decoder treats them.
    pub value: Arc<Value>,
    pub kind: DocKind,
    /// Built on first use by the line look-ups, so that locating thousands of tasks stays
    /// linear in the size of the document; shared by the document's clones.
    lines: Arc<OnceLock<LineIndex>>,
}

/// Where each line of a document starts and ends, and on which lines each `name: X` stands.
#[derive(Debug, Clone, Default)]
struct LineIndex {
    /// Byte range of each line's text with indentation and a leading `- ` removed.
    trimmed: Vec<(usize, usize)>,
    /// The value of every `name: X` line (quotes removed) → its file lines, ascending.
    names: HashMap<String, Vec<usize>>,
}

impl Document {
    pub fn new(text: String, first_line: usize, mut value: Value, kind: DocKind) -> Document {
        if matches!(
            kind,
            DocKind::Workflow
                | DocKind::WorkflowTemplate
                | DocKind::ClusterWorkflowTemplate
                | DocKind::CronWorkflow
        ) {
            strip_nulls(&mut value);
        }
        Document {
            text: text.into(),
            first_line,
            value: Arc::new(value),
            kind,
            lines: Arc::default(),
        }
    }

    /// Let go of the parsed value (it becomes null) once the front end has read what it needs
    /// from it, so that the value does not stay in memory beside the model built from it. The
    /// text and the line index stay.
    pub(crate) fn release_value(&mut self) {
        self.value = Arc::new(Value::Null);
    }

    fn index(&self) -> &LineIndex {
        self.lines.get_or_init(|| {
            let mut index = LineIndex::default();
            let mut offset = 0;
            for (i, line) in self.text.split_inclusive('\n').enumerate() {
                let body = line.trim_end();
                let indent = body.len() - body.trim_start().len();
                let rest = body[indent..]
                    .strip_prefix("- ")
                    .map_or(&body[indent..], str::trim_start);
                let start = offset + (body.len() - rest.len());
                index.trimmed.push((start, offset + body.len()));
                if let Some(value) = rest.strip_prefix("name: ") {
                    let value = value.trim();
                    let unquoted = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                        .unwrap_or(value);
                    index
                        .names
                        .entry(unquoted.to_string())
                        .or_default()
                        .push(self.first_line + i);
                }
                offset += line.len();
            }
            index
        })
    }

    /// Turn a line within this document (1-based) into a line within the file.
    pub fn file_line(&self, line_in_document: usize) -> usize {
        self.first_line + line_in_document.saturating_sub(1)
    }

    /// The first line in the file whose text, trimmed, starts with `needle`, searching from the
    /// document's start; used to point errors at a task or template by name.
    pub fn find_line(&self, needle: &str) -> Option<usize> {
        self.find_line_after(needle, 0)
    }

    /// Like [`Document::find_line`], but only at or after file line `after`.
    pub fn find_line_after(&self, needle: &str, after: usize) -> Option<usize> {
        let index = self.index();
        let skip = after.saturating_sub(self.first_line);
        index
            .trimmed
            .iter()
            .enumerate()
            .skip(skip)
            .find_map(|(i, &(start, end))| {
                self.text[start..end]
                    .starts_with(needle)
                    .then_some(self.first_line + i)
            })
    }

    /// The line of a `name: <name>` entry (quoted or not) in this document.
    pub fn name_line(&self, name: &str) -> Option<usize> {
        self.name_line_after(name, 0)
    }

    /// The line of a `name: <name>` entry at or after file line `after`.
    pub fn name_line_after(&self, name: &str, after: usize) -> Option<usize> {
        let lines = self.index().names.get(name)?;
        let at = lines.partition_point(|&l| l < after);
        lines.get(at).copied()
    }
}

/// What a document is, from its `kind` (Argo) or its shape (KFP IR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocKind {
    Workflow,
    WorkflowTemplate,
    ClusterWorkflowTemplate,
    CronWorkflow,
    /// KFP v2 `PipelineSpec` IR (has `pipelineInfo` and `root`).
    PipelineSpec,
    /// KFP `PlatformSpec` that accompanies an IR document (has `platforms`).
    PlatformSpec,
    /// Anything else: the string is the kind to name in the error.
    Other(String),
}

/// Read a file and split it into documents. Empty documents (only comments) are dropped; a file
/// with no document at all is an [`Error::EmptyDocument`].
pub fn read_file(path: &Path) -> Result<Vec<Document>> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            at: Location::file(path),
            size: meta.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Yaml {
        at: Location::file(path),
        message: format!("not UTF-8 text ({e})"),
    })?;
    split_documents(path, &text)
}

/// Split `text` (the contents of `path`) into parsed documents.
pub fn split_documents(path: &Path, text: &str) -> Result<Vec<Document>> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            at: Location::file(path),
            size: text.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut documents = Vec::new();
    for (first_line, chunk) in raw_chunks(text) {
        let value: Value = match serde_yaml::from_str(&chunk) {
            Ok(v) => v,
            Err(e) => {
                let (line, column) = match e.location() {
                    Some(loc) => (
                        Some(first_line + loc.line().saturating_sub(1)),
                        Some(loc.column()),
                    ),
                    None => (None, None),
                };
                let message = strip_serde_location(&e.to_string());
                return Err(Error::Yaml {
                    at: Location {
                        file: path.into(),
                        line,
                        column,
                    },
                    message,
                });
            }
        };
        if value.is_null() {
            continue;
        }
        let kind = classify(&value);
        documents.push(Document::new(chunk, first_line, value, kind));
    }
    if documents.is_empty() {
        return Err(Error::EmptyDocument {
            at: Location::at(path, Some(1)),
        });
    }
    Ok(documents)
}

/// serde_yaml appends " at line L column C" to its messages; the location is reported
/// separately, against the file, so drop it from the message.
fn strip_serde_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Split on document markers. Returns each chunk with the 1-based line its text starts on.
/// A `---` line starts a new document (its own line belongs to no document, except for
/// content after the marker on the same line, e.g. `--- !tag`), and `...` ends one.
fn raw_chunks(text: &str) -> Vec<(usize, String)> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_marker || is_end {
            if !current.trim().is_empty() {
                chunks.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = line_no + 1;
            if is_marker {
                let rest = bare[3..].trim_start();
                if !rest.is_empty() && !rest.starts_with('#') {
                    // Content on the marker line: keep it as the document's first line.
                    current.push_str(rest);
                    current.push('\n');
                    start = line_no;
                }
            }
            continue;
        }
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        chunks.push((start, current));
    }
    chunks
}

/// Remove every `key: null` entry of every mapping, recursively, so that serde defaults apply.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            map.retain(|_, v| !v.is_null());
            for (_, v) in map.iter_mut() {
                strip_nulls(v);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(strip_nulls),
        Value::Tagged(tagged) => strip_nulls(&mut tagged.value),
        _ => {}
    }
}

fn classify(value: &Value) -> DocKind {
    let Some(map) = value.as_mapping() else {
        return DocKind::Other(match value {
            Value::Sequence(_) => "a list".into(),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => "a scalar".into(),
            _ => "unknown".into(),
        });
    };
    if let Some(kind) = map.get("kind").and_then(Value::as_str) {
        let api = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let argo = api.starts_with("argoproj.io/") || api.is_empty();
        return match kind {
            "Workflow" if argo => DocKind::Workflow,
            "WorkflowTemplate" if argo => DocKind::WorkflowTemplate,
            "ClusterWorkflowTemplate" if argo => DocKind::ClusterWorkflowTemplate,
            "CronWorkflow" if argo => DocKind::CronWorkflow,
            other if api.is_empty() => DocKind::Other(other.to_string()),
            other => DocKind::Other(format!("{api}/{other}")),
        };
    }
    if map.contains_key("pipelineInfo")
        || (map.contains_key("root") && map.contains_key("components"))
    {
        return DocKind::PipelineSpec;
    }
    if map.contains_key("platforms") {
        return DocKind::PlatformSpec;
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(api) => DocKind::Other(format!("{api} (no kind)")),
        None => DocKind::Other("a document without `kind`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_know_their_first_line() {
        let text = "a: 1\n---\n# c\nkind: Workflow\napiVersion: argoproj.io/v1alpha1\n---\nb: 2\n";
        let docs = split_documents(Path::new("f.yaml"), text).expect("valid");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].first_line, 1);
        assert_eq!(docs[1].first_line, 3);
        assert_eq!(docs[1].kind, DocKind::Workflow);
        assert_eq!(docs[1].find_line("kind:"), Some(4));
        assert_eq!(docs[2].first_line, 7);
    }

    #[test]
    fn names_are_found_quoted_or_not_at_or_after_a_line() {
        let text = "kind: Workflow\nspec:\n  tasks:\n  - name: train\n  - name: \"eval\"\n  - x: 1\n    name: 'train'\n";
        let docs = split_documents(Path::new("f.yaml"), text).expect("valid");
        let d = &docs[0];
        assert_eq!(d.name_line("train"), Some(4));
        assert_eq!(d.name_line("eval"), Some(5));
        assert_eq!(d.name_line_after("train", 5), Some(7));
        assert_eq!(d.name_line_after("train", 8), None);
        assert_eq!(d.find_line_after("name:", 5), Some(5));
        assert_eq!(d.find_line("tasks:"), Some(3));
    }

    #[test]
    fn yaml_errors_are_located_in_the_file() {
        let text = "a: 1\n---\nb: [1, 2\nc: 3\n";
        let err = split_documents(Path::new("f.yaml"), text).expect_err("invalid");
        let at = err.location().expect("located").clone();
        assert!(at.line.expect("line") >= 3, "{err}");
    }

    #[test]
    fn a_file_of_comments_is_an_empty_document() {
        let err = split_documents(Path::new("f.yaml"), "# only\n# comments\n").expect_err("empty");
        assert!(matches!(err, Error::EmptyDocument { .. }));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = split_documents(Path::new("bomb.yaml"), &text).expect_err("refused");
        assert!(matches!(err, Error::Yaml { .. }), "{err}");
    }
}
