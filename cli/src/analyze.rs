//! `kfcache analyze FILE...`: parse, validate, schedule, store, print.
//!
//! Every file is parsed and validated before anything touches the database, so invalid input
//! (exit code 2) never leaves a half-written analysis behind; all pipelines of one invocation
//! are then stored, each in its own transaction.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kfcache_parser::schedule::TaskTimes;
use kfcache_parser::{Dag, ParseOptions, Pipeline};
use kfcache_predictor::{EstimatorConfig, InputSizes, PipelineHistory};
use kfcache_schema::Store;

use crate::render;
use crate::settings::GlobalArgs;
use crate::InvalidInput;

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Pipeline files: Argo Workflow / WorkflowTemplate / ClusterWorkflowTemplate /
    /// CronWorkflow YAML (KFP v1 output) or KFP v2 PipelineSpec IR.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Directory (or file) of WorkflowTemplates / ClusterWorkflowTemplates that resolve
    /// `templateRef` and `workflowTemplateRef`; may be repeated.
    #[arg(long, value_name = "DIR")]
    pub templates: Vec<PathBuf>,

    /// Do not store the analysis in the database.
    #[arg(long)]
    pub no_store: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One row per executable task, for a terminal.
    Table,
    /// The stable JSON contract (one object, or an array when several pipelines).
    Json,
    /// Graphviz DOT of the DAG, GPU tasks marked.
    Dot,
    /// Mermaid flowchart of the DAG, GPU tasks marked.
    Mermaid,
}

/// A pipeline that passed validation, with its DAG and predicted times.
#[derive(Debug)]
pub struct Analysis {
    pub pipeline: Pipeline,
    pub dag: Dag,
    pub times: Vec<TaskTimes>,
}

/// Parse and validate every file; the first invalid one stops everything.
pub fn analyse_files(files: &[PathBuf], templates: &[PathBuf]) -> Result<Vec<Analysis>> {
    let options = ParseOptions {
        template_dirs: templates.to_vec(),
    };
    let mut analyses = Vec::new();
    for file in files {
        let pipelines = kfcache_parser::parse_file(file, &options).map_err(classify)?;
        for pipeline in pipelines {
            let dag = Dag::build(&pipeline).map_err(classify)?;
            // Without a database: the predictor's prior (no history, no known sizes).
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

/// Invalid input becomes [`InvalidInput`] (exit code 2); an unreadable file stays a plain
/// failure (exit code 1).
fn classify(error: kfcache_parser::Error) -> anyhow::Error {
    if error.is_invalid_input() {
        InvalidInput(error).into()
    } else {
        error.into()
    }
}

pub async fn run(global: &GlobalArgs, args: AnalyzeArgs) -> Result<()> {
    let mut analyses = analyse_files(&args.files, &args.templates)?;

    if !args.no_store {
        let db = global.db_path()?;
        let store = Store::open(&db)
            .await
            .with_context(|| format!("cannot open the database {}", db.display()))?;
        for analysis in &mut analyses {
            // History and probed sizes in the database refine the prior.
            analysis.times = crate::predict::predict_from_store(
                &store,
                &analysis.pipeline,
                &analysis.dag,
                &EstimatorConfig::default(),
                crate::predict::DEFAULT_HISTORY_RUNS,
            )
            .await?
            .times();
            let hash = pipeline_hash(&analysis.pipeline)?;
            let record = store
                .record_analysis(&analysis.pipeline, &hash, &analysis.times)
                .await
                .with_context(|| {
                    format!(
                        "cannot store pipeline `{}` in {}",
                        analysis.pipeline.name,
                        db.display()
                    )
                })?;
            tracing::info!(
                pipeline = %analysis.pipeline.name,
                version = record.version_id,
                new = record.created,
                "stored analysis"
            );
        }
    }

    let out = match args.format {
        Format::Table => render::table(&analyses),
        Format::Json => render::json(&analyses)?,
        Format::Dot => render::dot(&analyses),
        Format::Mermaid => render::mermaid(&analyses),
    };
    print!("{out}");
    Ok(())
}

/// The content hash that identifies a pipeline version: the analysed model, so that the same
/// pipeline read from another path (or with the same templates resolved) is the same version,
/// and any change that alters the tasks makes a new one.
pub(crate) fn pipeline_hash(pipeline: &Pipeline) -> Result<String> {
    let mut model = serde_json::to_value(pipeline).context("cannot serialise the pipeline")?;
    if let Some(object) = model.as_object_mut() {
        object.remove("source");
    }
    let bytes = serde_json::to_vec(&model).context("cannot serialise the pipeline")?;
    Ok(kfcache_schema::content_hash(&bytes))
}
