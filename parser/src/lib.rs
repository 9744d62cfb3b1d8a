//! kfcache's parser: pipeline YAML → validated [`Pipeline`] model → [`Dag`].
//!
//! Synchronous and free of I/O beyond reading the named files. Two front ends produce the
//! same model:
//! - [`argo`]: Argo `Workflow`, `WorkflowTemplate`, `ClusterWorkflowTemplate`, `CronWorkflow`
//!   (which is also what the KFP v1 compiler emits), with nested `dag`/`steps` templates
//!   flattened into executable tasks;
//! - [`kfp`]: KFP v2 `PipelineSpec` IR, stand-alone or embedded by the KFP backend in an Argo
//!   Workflow's arguments.
//!
//! Every pipeline a front end returns is then checked by [`dag::Dag::build`] (unknown
//! dependencies, duplicate ids, cycles), so callers only ever see a model whose edges are sound.
//!
//! Input is not trusted: [`limits`] lists every bound (file size, YAML nesting and alias
//! expansion, substituted values, loop fan-out, template depth, the size of the flattened
//! pipeline) that turns a hostile file into a located error instead of exhausted memory, time
//! or stack. `fuzz/` at the repository root fuzzes [`parse_bytes`].

pub mod argo;
pub mod dag;
pub mod document;
pub mod error;
pub mod kfp;
pub mod limits;
pub mod model;
mod nesting;
mod order;
pub mod params;
pub mod schedule;

use std::path::{Path, PathBuf};

pub use dag::Dag;
pub use document::{DocKind, Document};
pub use error::{Error, Location, Result};
pub use model::{FanOut, Input, Output, Pipeline, PipelineKind, Task, TaskKind, TaskRole};

/// Options that change how files are read.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Directories (or single files) whose `WorkflowTemplate` / `ClusterWorkflowTemplate`
    /// documents resolve `templateRef` and `workflowTemplateRef`.
    pub template_dirs: Vec<PathBuf>,
}

/// Parse every pipeline in a file and validate its DAG.
pub fn parse_file(path: &Path, options: &ParseOptions) -> Result<Vec<Pipeline>> {
    let documents = document::read_file(path)?;
    parse_owned(path, documents, options)
}

/// Parse pipelines from the bytes of a file's content, reporting errors against `path`: what
/// [`parse_file`] does once the file is read, and the entry point the fuzz target drives.
/// Content over [`limits::MAX_FILE_BYTES`] or not UTF-8 is refused before any YAML is read.
pub fn parse_bytes(path: &Path, bytes: &[u8], options: &ParseOptions) -> Result<Vec<Pipeline>> {
    let documents = document::split_bytes(path, bytes)?;
    parse_owned(path, documents, options)
}

/// Parse pipelines from text, reporting errors against `path`.
pub fn parse_str(path: &Path, text: &str, options: &ParseOptions) -> Result<Vec<Pipeline>> {
    let documents = document::split_documents(path, text)?;
    parse_owned(path, documents, options)
}

/// Parse already-split documents of one file.
pub fn parse_documents(
    path: &Path,
    documents: &[Document],
    options: &ParseOptions,
) -> Result<Vec<Pipeline>> {
    parse_owned(path, documents.to_vec(), options)
}

/// [`parse_documents`] of documents handed over, so that a front end may let go of their YAML
/// values once it has read them.
fn parse_owned(
    path: &Path,
    documents: Vec<Document>,
    options: &ParseOptions,
) -> Result<Vec<Pipeline>> {
    let has_ir = documents.iter().any(|d| d.kind == DocKind::PipelineSpec);
    let has_argo = documents.iter().any(|d| {
        matches!(
            d.kind,
            DocKind::Workflow
                | DocKind::WorkflowTemplate
                | DocKind::ClusterWorkflowTemplate
                | DocKind::CronWorkflow
        )
    });
    let pipelines = if has_ir {
        kfp::parse(path, &documents)?
    } else if has_argo {
        argo::parse_owned(path, documents, options)?
    } else {
        let first = &documents[0];
        let kind = match &first.kind {
            DocKind::Other(kind) => kind.clone(),
            DocKind::PlatformSpec => "KFP PlatformSpec (without a PipelineSpec)".to_string(),
            other => format!("{other:?}"),
        };
        return Err(Error::NotAWorkflow {
            at: Location::at(path, Some(first.first_line)),
            kind,
        });
    };
    for pipeline in &pipelines {
        Dag::build(pipeline)?;
    }
    Ok(pipelines)
}
