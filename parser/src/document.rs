//! Reading a file into YAML documents, each with the line it starts on and its `kind`.
//!
//! Documents are split on `---` lines by hand before serde_yaml sees them, so that every
//! document knows its own first line and every YAML error can be reported against the line in
//! the *file*, not within the document.
//!
//! Three limits (see [`crate::limits`]) guard the reading: content over
//! [`MAX_FILE_BYTES`] is refused before it is parsed (and a file is never read past it, so a
//! FIFO or device cannot feed it forever); serde_yaml's recursion limit refuses nesting deeper
//! than [`MAX_YAML_DEPTH`]; and each document's value is built by `Budgeted`, which counts
//! the nodes and scalar bytes that alias expansion produces against
//! [`limits::yaml_expansion_budget`]. serde_yaml's own repetition limit stops the classic
//! "billion laughs" early, but not an anchored list of *n* items aliased *n* times. Flow
//! collections nested past the depth limit are refused by a linear pre-scan
//! (`nesting.rs`) before libyaml reads them, because libyaml's scanner is quadratic in
//! their depth.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml::mapping::Entry;
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

use crate::error::{Error, Location, Result};
use crate::limits::{self, MAX_YAML_DEPTH};

pub use crate::limits::MAX_FILE_BYTES;

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
    /// The value of every `name: X` entry (quotes removed), in block style or on a flow-style
    /// line, → its file lines, ascending. Indexed once, so that locating each of thousands of
    /// tasks does not scan the whole document again.
    names: HashMap<String, Vec<usize>>,
    /// The text before the first `:` of every line that has one (trimmed as in `trimmed`) →
    /// its file lines, ascending: [`Document::find_line_after`] of a `key:` needle.
    keys: HashMap<String, Vec<usize>>,
}

impl LineIndex {
    fn add_name(&mut self, value: &str, file_line: usize) {
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        let lines = self.names.entry(unquoted.to_string()).or_default();
        if lines.last() != Some(&file_line) {
            lines.push(file_line);
        }
    }
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
                let file_line = self.first_line + i;
                if let Some((key, _)) = rest.split_once(':') {
                    index
                        .keys
                        .entry(key.to_string())
                        .or_default()
                        .push(file_line);
                }
                if let Some(value) = rest.strip_prefix("name: ") {
                    index.add_name(value, file_line);
                } else if rest.starts_with('{') {
                    // Flow style (`- {name: train, template: t}`): every `name: X` entry on the
                    // line, as a task's or a parameter's name.
                    let mut from = 0;
                    while let Some(found) = rest[from..].find("name: ") {
                        let at = from + found;
                        let after = at + "name: ".len();
                        if matches!(rest[..at].chars().next_back(), Some('{' | ' ' | ',')) {
                            let value = &rest[after..];
                            let end = value.find([',', '}']).unwrap_or(value.len());
                            index.add_name(&value[..end], file_line);
                        }
                        from = after;
                    }
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
        if let Some(key) = needle.strip_suffix(':').filter(|k| !k.contains(':')) {
            let lines = index.keys.get(key)?;
            let at = lines.partition_point(|&l| l < after);
            return lines.get(at).copied();
        }
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
/// with no document at all is an [`Error::EmptyDocument`]. A file over [`MAX_FILE_BYTES`] is
/// refused without being read past the limit.
pub fn read_file(path: &Path) -> Result<Vec<Document>> {
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let too_large = |size: u64| Error::TooLarge {
        at: Location::file(path),
        size,
        limit: MAX_FILE_BYTES,
    };
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(too_large(size));
    }
    // The size above is only a hint (a FIFO or a device reports 0, a file may grow): read at
    // most one byte more than the limit, so going over it is seen without reading further.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    split_bytes(path, &bytes)
}

/// Split the content of `path` into parsed documents: refused when over [`MAX_FILE_BYTES`]
/// or not UTF-8 text (a leading byte-order mark is dropped).
pub fn split_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<Document>> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            at: Location::file(path),
            size: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Yaml {
        at: Location::file(path),
        message: format!("not UTF-8 text ({e})"),
    })?;
    split_documents(path, text)
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
        let value = load(path, first_line, &chunk)?;
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

/// Parse one document's text into its value, within the limits of [`crate::limits`]; errors
/// are located in the file (the document starts on `first_line`).
fn load(path: &Path, first_line: usize, chunk: &str) -> Result<Value> {
    let too_deep = |line: Option<usize>, column: Option<usize>| Error::LimitExceeded {
        at: Location {
            file: path.into(),
            line,
            column,
        },
        what: "YAML nested too deeply".to_string(),
        limit: format!("{MAX_YAML_DEPTH} levels of nesting"),
    };
    // Before libyaml, whose scanner is quadratic in the depth of flow collections.
    if let Some((line, column)) = crate::nesting::flow_too_deep(chunk, MAX_YAML_DEPTH) {
        return Err(too_deep(Some(first_line + line - 1), Some(column)));
    }
    let budget = Budget {
        remaining: Cell::new(limits::yaml_expansion_budget(chunk.len())),
        exceeded: Cell::new(false),
    };
    let deserializer = serde_yaml::Deserializer::from_str(chunk);
    let error = match (Budgeted { budget: &budget }).deserialize(deserializer) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let (line, column) = match error.location() {
        Some(loc) => (
            Some(first_line + loc.line().saturating_sub(1)),
            Some(loc.column()),
        ),
        None => (None, None),
    };
    let at = Location {
        file: path.into(),
        line,
        column,
    };
    let message = strip_serde_location(&error.to_string());
    let limit = |what: &str, limit: String| Error::LimitExceeded {
        at: at.clone(),
        what: what.to_string(),
        limit,
    };
    Err(if budget.exceeded.get() {
        limit(
            "YAML aliases expand the document to more nodes and bytes than it could hold \
             without them",
            format!(
                "{} units for this document: {}\u{d7} its {} bytes + {}",
                limits::yaml_expansion_budget(chunk.len()),
                limits::YAML_EXPANSION_FACTOR,
                chunk.len(),
                limits::YAML_EXPANSION_ALLOWANCE
            ),
        )
    } else if message.starts_with("recursion limit exceeded") {
        too_deep(at.line, at.column)
    } else if message.starts_with("repetition limit exceeded") {
        limit(
            "YAML aliases repeat content too many times (an alias bomb)",
            "100 alias expansions per event of the document (serde_yaml)".to_string(),
        )
    } else {
        Error::Yaml { at, message }
    })
}

/// What is left of a document's expansion budget; `exceeded` tells a budget error apart from
/// serde_yaml's own errors.
#[derive(Debug)]
struct Budget {
    remaining: Cell<u64>,
    exceeded: Cell<bool>,
}

impl Budget {
    fn charge<E: de::Error>(&self, cost: usize) -> std::result::Result<(), E> {
        let cost = (cost as u64).saturating_add(1);
        match self.remaining.get().checked_sub(cost) {
            Some(left) => {
                self.remaining.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("YAML alias expansion over budget"))
            }
        }
    }
}

/// Builds a [`serde_yaml::Value`] the way its own `Deserialize` does (duplicate keys refused,
/// tags kept), charging every node and scalar byte to the document's [`Budget`].
#[derive(Debug, Clone, Copy)]
struct Budgeted<'b> {
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.budget.charge(s.len())?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.budget.charge(s.len())?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        self.budget.charge(0)?;
        let mut sequence = Vec::new();
        while let Some(item) = items.next_element_seed(self)? {
            sequence.push(item);
        }
        Ok(Value::Sequence(sequence))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        self.budget.charge(0)?;
        let mut mapping = Mapping::new();
        while let Some(key) = entries.next_key_seed(self)? {
            match mapping.entry(key) {
                Entry::Occupied(entry) => {
                    let key = match entry.key() {
                        Value::Null => "with null key".to_string(),
                        Value::Bool(b) => format!("with key `{b}`"),
                        Value::Number(n) => format!("with key {n}"),
                        Value::String(s) => format!("with key {s:?}"),
                        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
                            "in YAML map".to_string()
                        }
                    };
                    return Err(de::Error::custom(format!("duplicate entry {key}")));
                }
                Entry::Vacant(entry) => {
                    entry.insert(entries.next_value_seed(self)?);
                }
            }
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use serde::de::VariantAccess;
        let (tag, contents) = data.variant_seed(TagSeed)?;
        self.budget.charge(tag.to_string().len())?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag, value })))
    }
}

/// A YAML tag, as serde_yaml hands it to a visitor of a tagged value.
#[derive(Debug, Clone, Copy)]
struct TagSeed;

impl<'de> DeserializeSeed<'de> for TagSeed {
    type Value = Tag;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Tag, D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for TagSeed {
    type Value = Tag;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a YAML tag string")
    }

    fn visit_str<E: de::Error>(self, tag: &str) -> Result<Tag, E> {
        self.visit_string(tag.to_owned())
    }

    fn visit_string<E: de::Error>(self, tag: String) -> Result<Tag, E> {
        if tag.is_empty() {
            return Err(E::custom("empty YAML tag is not allowed"));
        }
        Ok(Tag::new(tag))
    }
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
        assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    }
}
