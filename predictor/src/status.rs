//! Reading the status of past runs: Argo `Workflow` objects with `status.nodes`, as
//! `kubectl get workflow -o yaml|json`, `argo get -o json` and `argo list -o json` print them
//! (a single object, several YAML documents, a `WorkflowList` / `List`, or a JSON array).
//!
//! Every node of type `Pod` (and the other executable kinds: `Suspend`, `HTTP`, `Plugin`)
//! becomes one [`TaskObservation`]; `Skipped` nodes (a `when` that was false, or a task omitted
//! by `depends`) become observations with phase `Skipped`, which is how branch probabilities
//! are learned. The task key is read from the node's `name`, which Argo builds from the
//! workflow name and the path of task names down the template boundaries:
//! `wf.outer(0:a).train(1)` → task `outer.train`, loop instance `0:a`, retry attempt 1;
//! `wf[0].fail(1)` (steps) → task `fail`, attempt 1. That is the same id the parser gives the
//! flattened task, so runs match analysed tasks whatever the workflow's generated name was.
//!
//! The format follows Argo's `NodeStatus` (`pkg/apis/workflow/v1alpha1/workflow_types.go`):
//! `id`, `name`, `displayName`, `type`, `templateName`, `boundaryID`, `phase`, `startedAt`,
//! `finishedAt`, `children`, `inputs`/`outputs` (parameters, artifacts), `message`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use kfcache_schema::{ArtifactObservation, ObservationSource, RunObservation, TaskObservation};
use serde_json::Value;

use crate::error::{Error, Result};

/// Node types that run something and are tasks of the analysed model.
const EXECUTABLE_NODE_TYPES: &[&str] = &["Pod", "Container", "Suspend", "HTTP", "Plugin"];

/// Read every run in a status file.
pub fn read_status_file(path: &Path) -> Result<Vec<RunObservation>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_status(path, &text)
}

/// Parse every run in `text`, reporting errors against `path`.
pub fn parse_status(path: &Path, text: &str) -> Result<Vec<RunObservation>> {
    let documents = documents(path, text)?;
    let reader = Reader { path, text };
    let mut runs = Vec::new();
    for document in documents {
        reader.collect(&document, &mut runs)?;
    }
    if runs.is_empty() {
        return Err(reader.error(None, "no Argo Workflow objects in the file".to_string()));
    }
    Ok(runs)
}

/// The file's documents as JSON values (JSON text, or one value per YAML document).
fn documents(path: &Path, text: &str) -> Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(text)
            .map(|v| vec![v])
            .map_err(|e| Error::Syntax {
                path: path.to_path_buf(),
                line: Some(e.line()),
                source: Box::new(e),
            });
    }
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: serde_yaml::Value =
            serde::Deserialize::deserialize(document).map_err(|e| Error::Syntax {
                path: path.to_path_buf(),
                line: e.location().map(|l| l.line()),
                source: Box::new(e),
            })?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value).map_err(|e| Error::Syntax {
            path: path.to_path_buf(),
            line: None,
            source: Box::new(e),
        })?;
        out.push(json);
    }
    Ok(out)
}

struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Reader<'_> {
    fn error(&self, line: Option<usize>, message: String) -> Error {
        Error::Status {
            path: self.path.to_path_buf(),
            line,
            message,
        }
    }

    /// The first line (1-based) mentioning `needle` as a key, if any.
    fn line_of(&self, needle: &str) -> Option<usize> {
        if needle.is_empty() {
            return None;
        }
        let keyed = [
            format!("{needle}:"),
            format!("\"{needle}\":"),
            format!("\"{needle}\" :"),
        ];
        self.text
            .lines()
            .position(|l| keyed.iter().any(|k| l.contains(k.as_str())))
            .or_else(|| self.text.lines().position(|l| l.contains(needle)))
            .map(|i| i + 1)
    }

    fn collect(&self, value: &Value, runs: &mut Vec<RunObservation>) -> Result<()> {
        if let Value::Array(items) = value {
            for item in items {
                self.collect(item, runs)?;
            }
            return Ok(());
        }
        let kind = value.get("kind").and_then(Value::as_str);
        match kind {
            Some("WorkflowList" | "List") => {
                let items = value.get("items").and_then(Value::as_array).ok_or_else(|| {
                    self.error(self.line_of("items"), format!("{} without `items`", kind.unwrap_or("List")))
                })?;
                for item in items {
                    self.collect(item, runs)?;
                }
                Ok(())
            }
            // kubectl and the Argo test data sometimes leave apiVersion/kind out.
            Some("Workflow") | None => {
                runs.push(self.workflow(value)?);
                Ok(())
            }
            Some(other) => Err(self.error(
                self.line_of("kind"),
                format!("a `{other}` is not a run: history import reads Workflow objects with their status"),
            )),
        }
    }

    fn workflow(&self, wf: &Value) -> Result<RunObservation> {
        let metadata = wf
            .get("metadata")
            .filter(|m| m.is_object())
            .ok_or_else(|| self.error(None, "a Workflow object without `metadata`".to_string()))?;
        let name = metadata
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                self.error(
                    self.line_of("metadata"),
                    "a Workflow without `metadata.name` has not run".to_string(),
                )
            })?
            .to_string();
        let status = wf.get("status").filter(|s| s.is_object()).ok_or_else(|| {
            self.error(
                self.line_of(&name),
                format!("workflow `{name}` has no `status`: export it with `kubectl get workflow -o yaml` after it ran"),
            )
        })?;
        let nodes = match status.get("nodes") {
            Some(Value::Object(nodes)) => nodes,
            Some(Value::Null) | None => {
                let why = if status.get("compressedNodes").is_some() {
                    "its nodes are compressed (`status.compressedNodes`); export it with `argo get -o json`, which expands them"
                } else if status.get("offloadNodeStatusVersion").is_some() {
                    "its nodes are offloaded to Argo's database; export it with `argo get -o json`, which loads them"
                } else {
                    "it has no `status.nodes`"
                };
                return Err(self.error(self.line_of("status"), format!("workflow `{name}`: {why}")));
            }
            Some(_) => {
                return Err(self.error(
                    self.line_of("nodes"),
                    format!(
                        "workflow `{name}`: `status.nodes` must be a mapping of node id to node"
                    ),
                ))
            }
        };
        let run_started = self.time(status, "startedAt", &name)?;
        let run_finished = self.time(status, "finishedAt", &name)?;
        let mut run = RunObservation {
            pipeline_name: pipeline_name(wf, &name),
            name: name.clone(),
            namespace: metadata
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            uid: metadata
                .get("uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            started_at: run_started,
            finished_at: run_finished,
            phase: status
                .get("phase")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: parameters(wf.pointer("/spec/arguments/parameters")),
            source: ObservationSource::Argo,
            tasks: Vec::new(),
        };
        let mut ids: Vec<&String> = nodes.keys().collect();
        ids.sort();
        for id in ids {
            let node = &nodes[id];
            if !node.is_object() {
                return Err(self.error(
                    self.line_of(id),
                    format!("workflow `{name}`: node `{id}` is not a mapping"),
                ));
            }
            let node_type = node.get("type").and_then(Value::as_str).ok_or_else(|| {
                self.error(
                    self.line_of(id),
                    format!("workflow `{name}`: node `{id}` has no `type`"),
                )
            })?;
            let skipped = node_type == "Skipped";
            if !skipped && !EXECUTABLE_NODE_TYPES.contains(&node_type) {
                continue;
            }
            let node_name = node.get("name").and_then(Value::as_str).ok_or_else(|| {
                self.error(
                    self.line_of(id),
                    format!("workflow `{name}`: node `{id}` has no `name`"),
                )
            })?;
            let Some(path) = node_path(&name, node_name) else {
                return Err(self.error(
                    self.line_of(id),
                    format!("workflow `{name}`: node name `{node_name}` does not start with the workflow's name"),
                ));
            };
            let context = format!("{name}: node `{id}`");
            let started_at = self.time(node, "startedAt", &context)?;
            let finished_at = self.time(node, "finishedAt", &context)?;
            let phase = node
                .get("phase")
                .and_then(Value::as_str)
                .map(str::to_string);
            let phase = if skipped && phase.is_none() {
                Some("Skipped".to_string())
            } else {
                phase
            };
            let artifacts = node
                .pointer("/outputs/artifacts")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(artifact).collect())
                .unwrap_or_default();
            run.tasks.push(TaskObservation {
                task_key: path.task_key,
                instance: path.instance,
                attempt: path.attempt,
                started_at,
                finished_at,
                phase,
                node: Some(id.clone()),
                source: ObservationSource::Argo,
                template: node
                    .get("templateName")
                    .and_then(Value::as_str)
                    .or_else(|| {
                        node.pointer("/templateRef/template")
                            .and_then(Value::as_str)
                    })
                    .map(str::to_string),
                display_name: node
                    .get("displayName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                parameters: parameters(node.pointer("/inputs/parameters")),
                input_bytes: None,
                output_bytes: None,
                message: node
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                artifacts,
            });
        }
        // Retried attempts share a key; keep them in attempt order.
        run.tasks.sort_by(|a, b| {
            (&a.task_key, &a.instance, a.attempt).cmp(&(&b.task_key, &b.instance, b.attempt))
        });
        run.tasks.dedup_by(|a, b| {
            a.task_key == b.task_key && a.instance == b.instance && a.attempt == b.attempt
        });
        Ok(run)
    }

    /// An optional RFC 3339 timestamp field (`null` and absent are both "not known").
    fn time(&self, object: &Value, field: &str, context: &str) -> Result<Option<DateTime<Utc>>> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| {
                    self.error(
                        self.line_of(s),
                        format!("{context}: `{field}` is not an RFC 3339 time ({s:?}: {e})"),
                    )
                }),
            Some(other) => Err(self.error(
                None,
                format!("{context}: `{field}` must be an RFC 3339 time string, not {other}"),
            )),
        }
    }
}

/// The pipeline a run belongs to: the CronWorkflow or WorkflowTemplate it came from, else its
/// `generateName` without the trailing `-`, else its name without Argo's generated suffix.
pub fn pipeline_name(wf: &Value, name: &str) -> String {
    let label = |key: &str| {
        wf.pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(cron) = label("workflows.argoproj.io/cron-workflow") {
        return cron.to_string();
    }
    if let Some(template) = wf
        .pointer("/spec/workflowTemplateRef/name")
        .and_then(Value::as_str)
        .or_else(|| label("workflows.argoproj.io/workflow-template"))
    {
        return template.to_string();
    }
    if let Some(generate) = wf
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .map(|g| g.trim_end_matches('-'))
        .filter(|g| !g.is_empty())
    {
        return generate.to_string();
    }
    strip_generated_suffix(name).to_string()
}

/// `train-x7k2p` → `train` (5 lower-case alphanumerics from `generateName`), `nightly-1700000000`
/// → `nightly` (a CronWorkflow's Unix-time suffix); anything else is returned unchanged.
pub fn strip_generated_suffix(name: &str) -> &str {
    if let Some((base, suffix)) = name.rsplit_once('-') {
        let random = suffix.len() == 5
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && suffix.bytes().any(|b| b.is_ascii_digit());
        let unix_time = suffix.len() >= 9 && suffix.bytes().all(|b| b.is_ascii_digit());
        if !base.is_empty() && (random || unix_time) {
            return base;
        }
    }
    name
}

fn parameters(list: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in list.and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = match p.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => continue,
            Some(other) => other.to_string(),
        };
        out.insert(name.to_string(), value);
    }
    out
}

/// An output artifact's location as a URI, with its size when the status carries one.
fn artifact(a: &Value) -> Option<ArtifactObservation> {
    let name = a.get("name")?.as_str()?.to_string();
    let bucket_key = |scheme: &str, field: &str| -> Option<String> {
        let loc = a.get(field)?;
        let key = loc.get("key").and_then(Value::as_str).unwrap_or("");
        let bucket = loc.get("bucket").and_then(Value::as_str);
        Some(match bucket {
            Some(b) => format!("{scheme}://{b}/{key}"),
            None => format!("artifact-repository://{key}"),
        })
    };
    let uri = bucket_key("s3", "s3")
        .or_else(|| bucket_key("gs", "gcs"))
        .or_else(|| bucket_key("oss", "oss"))
        .or_else(|| {
            a.pointer("/http/url")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| {
            a.pointer("/artifactory/url")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| {
            a.pointer("/hdfs/path")
                .and_then(Value::as_str)
                .map(|p| format!("hdfs://{}", p.trim_start_matches('/')))
        });
    let size_bytes = a.get("size").or_else(|| a.get("sizeBytes")).and_then(|s| {
        s.as_u64()
            .or_else(|| s.as_str().and_then(|s| s.parse().ok()))
    });
    Some(ArtifactObservation {
        name,
        uri,
        size_bytes,
    })
}

/// Where a node sits in its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePath {
    /// Task names from the entrypoint down, joined by `.`.
    pub task_key: String,
    /// Loop instance labels (`0:a`), joined by `/` through nested loops; empty outside loops.
    pub instance: String,
    /// The retry attempt (the last `(n)`), 0 when not retried.
    pub attempt: u32,
}

/// Split a node name into task key, loop instance and attempt. `None` when the name is not
/// under the workflow's name.
pub fn node_path(workflow: &str, node_name: &str) -> Option<NodePath> {
    let rest = node_name.strip_prefix(workflow)?;
    if !(rest.is_empty() || rest.starts_with('.') || rest.starts_with('[') || rest.starts_with('('))
    {
        return None;
    }
    let mut names = Vec::new();
    let mut instances = Vec::new();
    let mut attempt = 0;
    for segment in split_top_level(rest) {
        let (name, groups) = segment_parts(segment);
        if !name.is_empty() {
            names.push(name.to_string());
        }
        for group in groups {
            if let Ok(n) = group.parse::<u32>() {
                attempt = n;
            } else if group.contains(':') {
                instances.push(group.to_string());
            }
        }
    }
    Some(NodePath {
        task_key: names.join("."),
        instance: instances.join("/"),
        attempt,
    })
}

/// Split at `.` outside parentheses and brackets (loop items may contain dots).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '.' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// `train(0:a)(1)` → (`train`, [`0:a`, `1`]); `[0]` → (``, []) — step group indices are dropped.
fn segment_parts(segment: &str) -> (&str, Vec<&str>) {
    let name_end = segment.find(['(', '[']).unwrap_or(segment.len());
    let name = &segment[..name_end];
    let mut groups = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut paren = false;
    for (i, c) in segment[name_end..].char_indices() {
        let i = i + name_end;
        match c {
            '(' | '[' | '{' => {
                if depth == 0 {
                    start = i + 1;
                    paren = c == '(';
                }
                depth += 1;
            }
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 && paren {
                    groups.push(&segment[start..i]);
                }
            }
            _ => {}
        }
    }
    (name, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_map_to_task_keys() {
        let p = |n: &str| node_path("wf-abcde", n).expect("under workflow");
        assert_eq!(p("wf-abcde.train").task_key, "train");
        assert_eq!(
            p("wf-abcde[0].fail(1)"),
            NodePath {
                task_key: "fail".into(),
                instance: String::new(),
                attempt: 1
            }
        );
        assert_eq!(
            p("wf-abcde.outer(0:a.b).train(2)"),
            NodePath {
                task_key: "outer.train".into(),
                instance: "0:a.b".into(),
                attempt: 2
            }
        );
        assert_eq!(
            p("wf-abcde.preprocess(3:{\"x\":1.5})").instance,
            "3:{\"x\":1.5}"
        );
        assert_eq!(
            p("wf-abcde[1].search[0].trial(2:7)").task_key,
            "search.trial"
        );
        assert_eq!(p("wf-abcde.onExit").task_key, "onExit");
        assert!(node_path("wf-abcde", "other.train").is_none());
    }

    #[test]
    fn generated_suffixes_are_removed() {
        assert_eq!(strip_generated_suffix("train-x7k2p"), "train");
        assert_eq!(
            strip_generated_suffix("nightly-retrain-1700000000"),
            "nightly-retrain"
        );
        assert_eq!(strip_generated_suffix("my-pipeline"), "my-pipeline");
    }
}
