//! Analysing pipeline files: parse and validate them, build their DAGs, store the analyses
//! as pipeline versions, and resolve a pipeline that a caller names by file or by stored
//! name.
//!
//! Every file is parsed and validated before anything touches the store, so invalid input
//! never leaves a half-written analysis behind.

use std::path::{Path, PathBuf};

use kfcache_parser::schedule::TaskTimes;
use kfcache_parser::{Dag, ParseOptions, Pipeline};
use kfcache_predictor::{EstimatorConfig, InputSizes, PipelineHistory};
use kfcache_schema::Store;

use crate::error::{Context as _, Error, Result};

/// A pipeline that passed validation, with its DAG and predicted times.
#[derive(Debug)]
pub struct Analysis {
    pub pipeline: Pipeline,
    pub dag: Dag,
    pub times: Vec<TaskTimes>,
}

/// A pipeline to act on: its model, its DAG and its stored version.
#[derive(Debug)]
pub struct Target {
    pub pipeline: Pipeline,
    pub dag: Dag,
    pub version_id: i64,
}

/// Parses and validates every file, templates resolved from `templates`; the first invalid
/// one stops everything. Times are the predictor's prior (no history, no known sizes).
pub fn analyse_files(files: &[PathBuf], templates: &[PathBuf]) -> Result<Vec<Analysis>> {
    let options = ParseOptions {
        template_dirs: templates.to_vec(),
    };
    let mut analyses = Vec::new();
    for file in files {
        for pipeline in kfcache_parser::parse_file(file, &options)? {
            let dag = Dag::build(&pipeline)?;
            let times = kfcache_predictor::predict(
                &pipeline,
                &dag,
                &PipelineHistory::default(),
                &InputSizes::new(),
                &EstimatorConfig::default(),
            )
            .times();
            analyses.push(Analysis {
                pipeline,
                dag,
                times,
            });
        }
    }
    Ok(analyses)
}

/// The content hash that identifies a pipeline version: the analysed model, so that the same
/// pipeline read from another path (or with the same templates resolved) is the same version,
/// and any change that alters the tasks makes a new one.
pub fn pipeline_hash(pipeline: &Pipeline) -> Result<String> {
    let mut model = serde_json::to_value(pipeline)?;
    if let Some(object) = model.as_object_mut() {
        object.remove("source");
    }
    let bytes = serde_json::to_vec(&model)?;
    Ok(kfcache_schema::content_hash(&bytes))
}

/// Stores `analysis` as a version of its pipeline (a new one only when its content changed);
/// returns the version's id.
pub async fn store_analysis(store: &Store, analysis: &Analysis) -> Result<i64> {
    let hash = pipeline_hash(&analysis.pipeline)?;
    let record = store
        .record_analysis(&analysis.pipeline, &hash, &analysis.times)
        .await
        .context(|| format!("cannot store pipeline `{}`", analysis.pipeline.name))?;
    tracing::info!(
        pipeline = %analysis.pipeline.name,
        version = record.version_id,
        new = record.created,
        "stored analysis"
    );
    Ok(record.version_id)
}

/// The pipelines `target` names: a file (analysed and stored as `kfcache analyze` does, with
/// the prior's times) or the name of a pipeline already analysed (its latest version).
pub async fn resolve_targets(
    store: &Store,
    target: &str,
    templates: &[PathBuf],
) -> Result<Vec<Target>> {
    let path = Path::new(target);
    if path.exists() {
        let mut targets = Vec::new();
        for analysis in analyse_files(&[path.to_path_buf()], templates)? {
            let hash = pipeline_hash(&analysis.pipeline)?;
            let record = store
                .record_analysis(&analysis.pipeline, &hash, &[])
                .await
                .context(|| format!("cannot store pipeline `{}`", analysis.pipeline.name))?;
            targets.push(Target {
                pipeline: analysis.pipeline,
                dag: analysis.dag,
                version_id: record.version_id,
            });
        }
        return Ok(targets);
    }
    let version = store
        .latest_version(target)
        .await
        .context(|| format!("cannot read the versions of `{target}`"))?
        .ok_or_else(|| {
            Error::Invalid(format!(
                "`{target}` is neither a file nor an analysed pipeline (run `kfcache analyze FILE` first)"
            ))
        })?;
    let pipeline = store
        .pipeline(version.id)
        .await
        .context(|| format!("cannot read the stored pipeline `{target}`"))?;
    let dag = Dag::build(&pipeline).map_err(|error| {
        Error::Invalid(format!(
            "stored pipeline `{target}` is not a valid DAG: {error}"
        ))
    })?;
    Ok(vec![Target {
        pipeline,
        dag,
        version_id: version.id,
    }])
}
