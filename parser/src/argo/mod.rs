//! Argo front end: `Workflow`, `WorkflowTemplate`, `ClusterWorkflowTemplate` and
//! `CronWorkflow` documents (also what the KFP v1 compiler emits) into [`Pipeline`]s.
//!
//! The work is split the way the data flows:
//! - [`raw`]: serde structs mirroring the YAML, read leniently;
//! - this module: which documents become pipelines, `workflowTemplateRef` merging, and the
//!   template library that resolves `templateRef` across files (loaded lazily and cached per
//!   directory for the life of the process, so a corpus run reads each library once);
//! - [`flatten`]: nested `dag`/`steps` templates into executable tasks;
//! - [`depends`], [`artifacts`], [`substitute`]: the small languages inside the YAML.

pub mod artifacts;
pub mod depends;
mod flatten;
pub mod raw;
pub mod substitute;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_path_to_error::Segment;

use crate::document::{self, DocKind, Document};
use crate::error::{Error, Location, Result};
use crate::model::{Pipeline, PipelineKind};
use crate::ParseOptions;

/// The templates of one Workflow / WorkflowTemplate document, which template names resolve
/// against.
#[derive(Debug)]
pub(crate) struct TemplateSet {
    /// `metadata.name` (what `templateRef.name` names).
    pub name: String,
    pub kind: DocKind,
    /// The file the document was read from.
    pub path: PathBuf,
    pub document: Document,
    /// The (for a Workflow with `workflowTemplateRef`: merged) workflow spec, without its
    /// templates, which are in `templates`.
    pub spec: raw::Spec,
    /// The spec's templates, shared: a call resolves to its template without copying it (a
    /// DAG template of thousands of tasks is called once, but a leaf template many times).
    pub templates: Vec<Arc<raw::Template>>,
    /// Line of the `templates:` key, where template names are searched from; `None` when the
    /// document declares no templates of its own.
    pub templates_line: Option<usize>,
    /// For a Workflow merged with its `workflowTemplateRef`: the referenced template, which
    /// declares the templates the Workflow does not.
    pub base: Option<Arc<TemplateSet>>,
}

impl TemplateSet {
    fn new(
        name: String,
        kind: DocKind,
        path: &Path,
        document: &Document,
        mut spec: raw::Spec,
    ) -> TemplateSet {
        let templates_line = document.find_line("templates:");
        let templates = std::mem::take(&mut spec.templates)
            .into_iter()
            .map(|mut template| {
                // Read into a vector grown by doubling; a DAG of thousands of tasks is kept for
                // the whole flattening, so give back what it does not use.
                if let Some(dag) = &mut template.dag {
                    dag.tasks.shrink_to_fit();
                }
                Arc::new(template)
            })
            .collect();
        TemplateSet {
            name,
            kind,
            path: path.to_path_buf(),
            document: document.clone(),
            spec,
            templates,
            templates_line,
            base: None,
        }
    }

    pub fn template(&self, name: &str) -> Option<&Arc<raw::Template>> {
        self.templates.iter().find(|t| t.name == name)
    }

    /// Line of a template's `- name:` entry.
    pub fn template_line(&self, name: &str) -> Option<usize> {
        flatten::task_line(&self.document, name, self.templates_line?)
    }
}

/// Turn the Argo documents of one file into pipelines.
pub fn parse(path: &Path, documents: &[Document], options: &ParseOptions) -> Result<Vec<Pipeline>> {
    parse_owned(path, documents.to_vec(), options)
}

/// What was read from one document's YAML value before the value was let go.
enum Read {
    /// Not an Argo document, or one that is not used.
    Nothing,
    /// A Workflow carrying a KFP v2 PipelineSpec.
    Embedded(Result<Pipeline>),
    Raw(Box<Result<raw::Document>>),
}

/// [`parse`] of documents the caller hands over: everything needed from the YAML values is
/// read first (in document order, errors kept until they would have been raised), then the
/// values are let go, so they are not held in memory while the workflows are flattened.
pub(crate) fn parse_owned(
    path: &Path,
    mut documents: Vec<Document>,
    options: &ParseOptions,
) -> Result<Vec<Pipeline>> {
    let has_runnable = documents
        .iter()
        .any(|d| matches!(d.kind, DocKind::Workflow | DocKind::CronWorkflow));
    let mut reads: Vec<Read> = Vec::with_capacity(documents.len());
    let mut has_entrypoint: Vec<bool> = Vec::with_capacity(documents.len());
    for document in &documents {
        has_entrypoint.push(
            document
                .value
                .get("spec")
                .and_then(|s| s.get("entrypoint"))
                .and_then(|e| e.as_str())
                .is_some_and(|e| !e.is_empty()),
        );
        let read = match document.kind {
            DocKind::Workflow => match crate::kfp::parse_embedded(path, document) {
                Some(embedded) => Read::Embedded(embedded),
                None => Read::Raw(Box::new(deserialize(path, document))),
            },
            DocKind::CronWorkflow
            | DocKind::WorkflowTemplate
            | DocKind::ClusterWorkflowTemplate => Read::Raw(Box::new(deserialize(path, document))),
            _ => Read::Nothing,
        };
        reads.push(read);
    }
    for document in &mut documents {
        document.release_value();
    }

    // Templates of this file, for `templateRef` / `workflowTemplateRef`. A template document
    // that is also a pipeline (no Workflow in the file) keeps its own copy for that.
    let mut local = Vec::new();
    let mut templates_as_pipelines: Vec<Option<raw::Document>> =
        (0..documents.len()).map(|_| None).collect();
    let mut template_names: Vec<Option<String>> = vec![None; documents.len()];
    for (i, (document, read)) in documents.iter().zip(&mut reads).enumerate() {
        if matches!(
            document.kind,
            DocKind::WorkflowTemplate | DocKind::ClusterWorkflowTemplate
        ) {
            let Read::Raw(raw) = std::mem::replace(read, Read::Nothing) else {
                continue;
            };
            let raw = (*raw)?;
            if !has_runnable && has_entrypoint.get(i).copied().unwrap_or(false) {
                if let Some(slot) = templates_as_pipelines.get_mut(i) {
                    *slot = Some(raw.clone());
                }
            }
            let name = document_name(&raw.metadata, path);
            if let Some(slot) = template_names.get_mut(i) {
                *slot = Some(name.clone());
            }
            local.push(Arc::new(TemplateSet::new(
                name,
                document.kind.clone(),
                path,
                document,
                raw.spec,
            )));
        }
    }
    let mut resolver = Resolver {
        path,
        local,
        options,
        library: None,
    };

    let mut pipelines = Vec::new();
    let mut template_candidates = Vec::new();
    for (i, (document, read)) in documents.iter().zip(reads).enumerate() {
        match document.kind {
            DocKind::Workflow => {
                let raw = match read {
                    Read::Embedded(embedded) => {
                        pipelines.push(embedded?);
                        continue;
                    }
                    Read::Raw(raw) => (*raw)?,
                    Read::Nothing => continue,
                };
                pipelines.push(build(
                    path,
                    document,
                    PipelineKind::Workflow,
                    raw,
                    &mut resolver,
                )?);
            }
            DocKind::CronWorkflow => {
                let Read::Raw(raw) = read else {
                    continue;
                };
                let mut raw = (*raw)?;
                let mut schedules = std::mem::take(&mut raw.spec.schedules);
                if let Some(schedule) = raw.spec.schedule.take() {
                    schedules.insert(0, schedule);
                }
                let timezone = raw.spec.timezone.take();
                let spec = raw
                    .spec
                    .workflow_spec
                    .take()
                    .map(|s| *s)
                    .unwrap_or_default();
                let raw = raw::Document {
                    metadata: raw.metadata,
                    spec,
                };
                let mut pipeline = build(
                    path,
                    document,
                    PipelineKind::CronWorkflow,
                    raw,
                    &mut resolver,
                )?;
                pipeline.schedules = schedules;
                pipeline.timezone = timezone;
                pipelines.push(pipeline);
            }
            DocKind::WorkflowTemplate | DocKind::ClusterWorkflowTemplate if !has_runnable => {
                template_candidates.push(i);
            }
            _ => {}
        }
    }
    if !has_runnable {
        let with_entrypoint: Vec<usize> = template_candidates
            .iter()
            .copied()
            .filter(|&i| has_entrypoint.get(i).copied().unwrap_or(false))
            .collect();
        if with_entrypoint.is_empty() {
            if let Some(&first) = template_candidates.first() {
                let (Some(document), Some(Some(name))) =
                    (documents.get(first), template_names.get_mut(first))
                else {
                    return Ok(pipelines);
                };
                return Err(Error::MissingEntrypoint {
                    at: Location::at(path, Some(document.first_line)),
                    pipeline: std::mem::take(name),
                });
            }
        }
        for i in with_entrypoint {
            let (Some(document), Some(raw)) = (
                documents.get(i),
                templates_as_pipelines.get_mut(i).and_then(Option::take),
            ) else {
                continue;
            };
            let kind = if document.kind == DocKind::WorkflowTemplate {
                PipelineKind::WorkflowTemplate
            } else {
                PipelineKind::ClusterWorkflowTemplate
            };
            pipelines.push(build(path, document, kind, raw, &mut resolver)?);
        }
    }
    Ok(pipelines)
}

/// Build one pipeline from a workflow-like document.
fn build(
    path: &Path,
    document: &Document,
    kind: PipelineKind,
    raw: raw::Document,
    resolver: &mut Resolver<'_>,
) -> Result<Pipeline> {
    let name = document_name(&raw.metadata, path);
    let mut spec = raw.spec;
    let mut base = None;
    if let Some(reference) = spec.workflow_template_ref.clone() {
        let cluster = reference
            .cluster_scope
            .as_ref()
            .is_some_and(|c| c.as_str() == "true");
        let Some(found) = resolver.find(&reference.name, cluster, None) else {
            return Err(Error::UnknownTemplate {
                at: Location::at(path, document.find_line("workflowTemplateRef:")),
                template: reference.name.clone(),
                referenced_by: format!("{name} (workflowTemplateRef)"),
            });
        };
        spec = merge_spec(spec, &found.spec, &found.templates);
        base = Some(found);
    }
    let mut set = TemplateSet::new(name.clone(), document.kind.clone(), path, document, spec);
    set.base = base;
    let set = Arc::new(set);
    let mut pipeline = flatten::flatten(path, set, kind, resolver)?;
    pipeline.line = Some(document.first_line);
    Ok(pipeline)
}

/// A Workflow's spec laid over the spec of the WorkflowTemplate it references.
fn merge_spec(
    own: raw::Spec,
    base: &raw::Spec,
    base_templates: &[Arc<raw::Template>],
) -> raw::Spec {
    let mut merged = own;
    if merged.entrypoint.as_deref().map_or(true, str::is_empty) {
        merged.entrypoint = base.entrypoint.clone();
    }
    let mut templates: Vec<raw::Template> = base_templates.iter().map(|t| (**t).clone()).collect();
    for template in std::mem::take(&mut merged.templates) {
        match templates.iter_mut().find(|t| t.name == template.name) {
            Some(existing) => *existing = template,
            None => templates.push(template),
        }
    }
    merged.templates = templates;
    let mut parameters = base.arguments.parameters.clone();
    for parameter in std::mem::take(&mut merged.arguments.parameters) {
        match parameters.iter_mut().find(|p| p.name == parameter.name) {
            Some(existing) => *existing = parameter,
            None => parameters.push(parameter),
        }
    }
    merged.arguments.parameters = parameters;
    let mut artifacts = base.arguments.artifacts.clone();
    for artifact in std::mem::take(&mut merged.arguments.artifacts) {
        match artifacts.iter_mut().find(|a| a.name == artifact.name) {
            Some(existing) => *existing = artifact,
            None => artifacts.push(artifact),
        }
    }
    merged.arguments.artifacts = artifacts;
    if merged.on_exit.is_none() {
        merged.on_exit = base.on_exit.clone();
    }
    let mut hooks = base.hooks.clone();
    hooks.extend(std::mem::take(&mut merged.hooks));
    merged.hooks = hooks;
    if merged.parallelism.is_none() {
        merged.parallelism = base.parallelism.clone();
    }
    let mut node_selector = base.node_selector.clone();
    node_selector.extend(std::mem::take(&mut merged.node_selector));
    merged.node_selector = node_selector;
    let mut volumes = base.volumes.clone();
    volumes.append(&mut merged.volumes);
    merged.volumes = volumes;
    let mut claims = base.volume_claim_templates.clone();
    claims.append(&mut merged.volume_claim_templates);
    merged.volume_claim_templates = claims;
    merged
}

/// `metadata.name`, else `generateName` without its trailing `-`, else the file stem.
fn document_name(metadata: &raw::Metadata, path: &Path) -> String {
    if let Some(name) = metadata.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    if let Some(name) = metadata
        .generate_name
        .as_deref()
        .map(|n| n.trim_end_matches('-'))
        .filter(|n| !n.is_empty())
    {
        return name.to_string();
    }
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Deserialize a document into the raw structs, locating any type error in the file.
pub(crate) fn deserialize(path: &Path, document: &Document) -> Result<raw::Document> {
    serde_path_to_error::deserialize(&*document.value).map_err(|e| {
        let mut line = document.first_line;
        for segment in e.path().iter() {
            if let Segment::Map { key } = segment {
                if let Some(found) = document.find_line_after(&format!("{key}:"), line) {
                    line = found;
                }
            }
        }
        Error::Invalid {
            at: Location::at(path, Some(line)),
            what: format!("{:?} field `{}`", document.kind, e.path()),
            message: e.inner().to_string(),
        }
    })
}

/// Finds WorkflowTemplates by name: first in the file being parsed, then in the template
/// library of `ParseOptions::template_dirs`, read only when a name is not found locally.
#[derive(Debug)]
pub(crate) struct Resolver<'a> {
    /// The file being parsed.
    path: &'a Path,
    local: Vec<Arc<TemplateSet>>,
    options: &'a ParseOptions,
    library: Option<Vec<Arc<Library>>>,
}

impl Resolver<'_> {
    /// The template set named `name`; `cluster` prefers ClusterWorkflowTemplates. When
    /// `template` is given, only sets holding a template of that name qualify. Several library
    /// documents may share a name; those in the directory of the file being parsed come first.
    pub fn find(
        &mut self,
        name: &str,
        cluster: bool,
        template: Option<&str>,
    ) -> Option<Arc<TemplateSet>> {
        let wanted = if cluster {
            DocKind::ClusterWorkflowTemplate
        } else {
            DocKind::WorkflowTemplate
        };
        let qualifies = |s: &Arc<TemplateSet>| {
            s.name == name && template.map_or(true, |t| s.template(t).is_some())
        };
        let pick = |candidates: Vec<&Arc<TemplateSet>>| {
            candidates
                .iter()
                .find(|s| s.kind == wanted)
                .or(candidates.first())
                .map(|s| Arc::clone(s))
        };
        if let Some(found) = pick(self.local.iter().filter(|s| qualifies(s)).collect()) {
            return Some(found);
        }
        let options = self.options;
        let library = self.library.get_or_insert_with(|| {
            options
                .template_dirs
                .iter()
                .map(|dir| load_library(dir))
                .collect()
        });
        let dir = self.path.parent();
        let candidates: Vec<&Arc<TemplateSet>> = library
            .iter()
            .flat_map(|l| l.sets.iter())
            .filter(|s| qualifies(s))
            .collect();
        let (near, far): (Vec<_>, Vec<_>) =
            candidates.into_iter().partition(|s| s.path.parent() == dir);
        pick(near).or_else(|| pick(far))
    }
}

/// The WorkflowTemplates and ClusterWorkflowTemplates found under one directory.
#[derive(Debug, Default)]
pub(crate) struct Library {
    sets: Vec<Arc<TemplateSet>>,
}

/// Read (once per process) the template library under `dir`. Files that do not parse are
/// skipped: a library may hold broken examples, and only the templates actually referenced
/// matter.
fn load_library(dir: &Path) -> Arc<Library> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Library>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(guard) = cache.lock() {
        if let Some(library) = guard.get(dir) {
            return Arc::clone(library);
        }
    }
    let mut files = Vec::new();
    collect_files(dir, 0, &mut files);
    files.sort();
    let mut library = Library::default();
    for file in files {
        let Ok(documents) = document::read_file(&file) else {
            continue;
        };
        for mut document in documents {
            if !matches!(
                document.kind,
                DocKind::WorkflowTemplate | DocKind::ClusterWorkflowTemplate
            ) {
                continue;
            }
            if let Ok(raw) = deserialize(&file, &document) {
                document.release_value();
                let name = document_name(&raw.metadata, &file);
                library.sets.push(Arc::new(TemplateSet::new(
                    name,
                    document.kind.clone(),
                    &file,
                    &document,
                    raw.spec,
                )));
            }
        }
    }
    let library = Arc::new(library);
    if let Ok(mut guard) = cache.lock() {
        guard.insert(dir.to_path_buf(), Arc::clone(&library));
    }
    library
}

fn collect_files(path: &Path, depth: usize, files: &mut Vec<PathBuf>) {
    if depth > 16 {
        return;
    }
    if path.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_path = entry.path();
        if entry_path.is_dir() {
            collect_files(&entry_path, depth + 1, files);
        } else if entry_path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(entry_path);
        }
    }
}

/// Workflow-level parameter values: `value`, else `default`.
pub(crate) fn parameter_values(parameters: &[raw::Parameter]) -> BTreeMap<String, String> {
    parameters
        .iter()
        .filter_map(|p| {
            let value = p.value.as_ref().or(p.default.as_ref())?;
            Some((p.name.clone(), value.as_str().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
