//! `kfcache analyze FILE...`: parse, validate, schedule, store, print.
//!
//! Every file is parsed and validated before anything touches the database, so invalid input
//! (exit code 2) never leaves a half-written analysis behind; all pipelines of one invocation
//! are then stored, each in its own transaction.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kfcache_ops::analysis::{analyse_files, store_analysis};
use kfcache_ops::predict::{predict_from_store, DEFAULT_HISTORY_RUNS};
use kfcache_predictor::EstimatorConfig;
use kfcache_schema::Store;

use crate::render;
use crate::settings::GlobalArgs;

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

pub async fn run(global: &GlobalArgs, args: AnalyzeArgs) -> Result<()> {
    let mut analyses = analyse_files(&args.files, &args.templates)?;

    if !args.no_store {
        let db = global.db_path()?;
        let store = Store::open(&db)
            .await
            .with_context(|| format!("cannot open the database {}", db.display()))?;
        for analysis in &mut analyses {
            // History and probed sizes in the database refine the prior.
            analysis.times = predict_from_store(
                &store,
                &analysis.pipeline,
                &analysis.dag,
                &EstimatorConfig::default(),
                DEFAULT_HISTORY_RUNS,
            )
            .await?
            .times();
            store_analysis(&store, analysis)
                .await
                .with_context(|| format!("in {}", db.display()))?;
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
