//! KFP v2 front end: the `PipelineSpec` IR the KFP SDK compiles to, stand-alone (optionally
//! followed by a Kubernetes `PlatformSpec` document) or embedded by the KFP backend in an Argo
//! `Workflow`.
//!
//! Both forms are first read into the same [`flatten::Program`] (components, executors,
//! per-executor Kubernetes config), which [`flatten::flatten`] turns into executable tasks.
//! The embedded form is the backend's: the root DAG and every component are JSON strings in
//! `spec.arguments.parameters` (`components-root`, `components-<name or hash>`,
//! `implementations-<…>`, `kubernetes-<…>`); which component a DAG task runs is read from
//! the generic driver tasks' arguments. The driver/launcher templates themselves are not
//! analysed: they are the same for every pipeline.

mod embedded;
mod flatten;
mod spec;
mod values;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::document::{DocKind, Document};
use crate::error::{Error, Location, Result};
use crate::model::{Pipeline, PipelineKind};

use flatten::{LineIndex, Program};
use spec::{PipelineSpec, PlatformSpec};

/// Turn the PipelineSpec (and PlatformSpec) documents of one file into pipelines: one per
/// `PipelineSpec` document, each with the `PlatformSpec` document that follows it, if any.
pub fn parse(path: &Path, documents: &[Document]) -> Result<Vec<Pipeline>> {
    let mut pipelines = Vec::new();
    for (i, document) in documents.iter().enumerate() {
        if document.kind != DocKind::PipelineSpec {
            continue;
        }
        let platform = documents
            .iter()
            .skip(i + 1)
            .take_while(|d| d.kind != DocKind::PipelineSpec)
            .find(|d| d.kind == DocKind::PlatformSpec);
        pipelines.push(parse_ir(path, document, platform)?);
    }
    Ok(pipelines)
}

fn parse_ir(path: &Path, document: &Document, platform: Option<&Document>) -> Result<Pipeline> {
    let spec: PipelineSpec = from_yaml(path, document)?;
    let name = match spec.pipeline_info.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => {
            let line = document
                .find_line("pipelineInfo:")
                .and_then(|l| document.find_line_after("name:", l).or(Some(l)));
            return Err(Error::Invalid {
                at: Location::at(path, line.or(Some(document.first_line))),
                what: "pipelineInfo.name".into(),
                message: "the pipeline has no name (`pipelineInfo.name` is missing or null)".into(),
            });
        }
    };
    let Some(root) = spec.root else {
        return Err(Error::Invalid {
            at: Location::at(path, Some(document.first_line)),
            what: "root".into(),
            message: format!("pipeline `{name}` has no `root` component"),
        });
    };
    let platform_by_executor = match platform {
        Some(platform) => {
            from_yaml::<PlatformSpec>(path, platform)?
                .platforms
                .kubernetes
                .deployment_spec
                .executors
        }
        None => Default::default(),
    };
    let program = Program {
        name: name.clone(),
        root,
        components: spec.components,
        executors: spec.deployment_spec.executors,
        platform_by_executor,
        ..Default::default()
    };
    let (parameters, tasks) = flatten::flatten(&program, path, LineIndex::Ir(document))?;
    Ok(Pipeline {
        name,
        kind: PipelineKind::PipelineSpec,
        schedules: Vec::new(),
        timezone: None,
        source: path.display().to_string(),
        line: Some(document.first_line),
        parameters,
        parallelism: None,
        tasks,
    })
}

/// If `document` is an Argo Workflow compiled by the KFP v2 backend (the IR sits as JSON in
/// `spec.arguments.parameters`), parse the embedded pipeline; `None` for any other workflow.
pub fn parse_embedded(path: &Path, document: &Document) -> Option<Result<Pipeline>> {
    embedded::parse(path, document)
}

/// Deserialize a YAML document into `T`, reporting where in the document it failed.
fn from_yaml<T: DeserializeOwned>(path: &Path, document: &Document) -> Result<T> {
    serde_path_to_error::deserialize(&*document.value).map_err(|e| {
        let field = e.path().to_string();
        let line = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
                _ => None,
            })
            .fold(document.first_line, |after, key| {
                document
                    .find_line_after(&format!("{key}:"), after)
                    .unwrap_or(after)
            });
        Error::Invalid {
            at: Location::at(path, Some(line)),
            what: format!("`{field}`"),
            message: e.into_inner().to_string(),
        }
    })
}
