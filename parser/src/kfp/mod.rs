//! KFP v2 PipelineSpec front end (placeholder until the flattening lands).

use std::path::Path;

use crate::{Document, Pipeline, Result};

/// Turn the PipelineSpec (and PlatformSpec) documents of one file into a pipeline.
pub fn parse(_path: &Path, _documents: &[Document]) -> Result<Vec<Pipeline>> {
    Ok(Vec::new())
}

/// If `document` is an Argo Workflow compiled by the KFP v2 backend (the IR sits as JSON in
/// `spec.arguments.parameters`), parse the embedded pipeline; `None` for any other workflow.
pub fn parse_embedded(_path: &Path, _document: &Document) -> Option<Result<Pipeline>> {
    None
}
