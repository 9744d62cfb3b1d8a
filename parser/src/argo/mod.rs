//! Argo front end (placeholder until the flattening lands).

use std::path::Path;

use crate::{Document, ParseOptions, Pipeline, Result};

/// Turn the Argo documents of one file into pipelines.
pub fn parse(_path: &Path, _documents: &[Document], _options: &ParseOptions) -> Result<Vec<Pipeline>> {
    Ok(Vec::new())
}
