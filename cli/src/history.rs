//! `kfcache history import FILE...`: read the status of past runs (Argo Workflow objects as
//! `kubectl get workflow -o yaml|json` or `argo get|list -o json` print them) into the run
//! history the predictor learns from.
//!
//! Every file is read and checked before the database is touched, and all runs are stored in
//! one transaction, so a bad file (exit code 2, with its path and line) imports nothing.
//!
//! `kfcache history drain` records what the sidecars reported through the cache (see
//! kfcache-sidecar's `events`): the real start and end of each task's work.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kfcache_predictor::status::read_status_file;
use kfcache_schema::Store;

use crate::settings::GlobalArgs;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub command: HistoryCommand,
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Import Argo Workflow objects with their status (YAML or JSON, one object, several
    /// documents, a WorkflowList or a JSON array).
    Import(ImportArgs),
    /// Record the task events the sidecars published to the cache (real start and end of
    /// the work, bytes read and written) and remove them from the cache.
    Drain(Box<DrainArgs>),
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub connection: crate::config::ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Record the runs as runs of this pipeline instead of the name derived from each
    /// workflow (CronWorkflow / WorkflowTemplate label, generateName, or the name without
    /// its generated suffix).
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
}

/// A status file that cannot be imported: the input's fault (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct InvalidStatus(#[from] pub kfcache_predictor::Error);

pub async fn run(global: &GlobalArgs, args: HistoryArgs) -> Result<()> {
    match args.command {
        HistoryCommand::Import(args) => import(global, args).await,
        HistoryCommand::Drain(args) => drain(global, *args).await,
    }
}

/// Drains the sidecars' events from the cache of `connection` into the history in `store`;
/// `kfcache history drain`, `prefetch --follow` and `cron` share it.
pub async fn drain_events(
    connection: &crate::config::ConnectionArgs,
    store: &Store,
) -> Result<kfcache_sidecar::drain::DrainSummary> {
    let settings = connection.resolve()?;
    let cache = crate::cache::open_cache(&settings).await?;
    let log = kfcache_sidecar::EventLog::new(cache.sink().clone(), settings.base_namespace.clone());
    kfcache_sidecar::drain::drain(&log, store)
        .await
        .context("cannot drain the sidecars' events")
}

async fn drain(global: &GlobalArgs, args: DrainArgs) -> Result<()> {
    let db = global.db_path()?;
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open the database {}", db.display()))?;
    let summary = drain_events(&args.connection, &store).await?;
    println!(
        "drained {} events: {} task runs recorded, {} still running, {} unreadable removed",
        summary.events, summary.observations, summary.running, summary.bad
    );
    Ok(())
}

async fn import(global: &GlobalArgs, args: ImportArgs) -> Result<()> {
    let mut runs = Vec::new();
    for file in &args.files {
        let read = read_status_file(file).map_err(|e| match e {
            kfcache_predictor::Error::Read { .. } => anyhow::Error::from(e),
            other => InvalidStatus(other).into(),
        })?;
        runs.extend(read);
    }
    if let Some(name) = &args.pipeline {
        for run in &mut runs {
            run.pipeline_name = name.clone();
        }
    }
    let db = global.db_path()?;
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open the database {}", db.display()))?;
    let summary = store
        .import_runs(&runs)
        .await
        .with_context(|| format!("cannot store the runs in {}", db.display()))?;
    let mut per_pipeline: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &runs {
        *per_pipeline.entry(run.pipeline_name.as_str()).or_default() += 1;
    }
    println!(
        "imported {} runs ({} replaced), {} task observations",
        summary.runs, summary.replaced, summary.task_runs
    );
    for (pipeline, count) in per_pipeline {
        let total = store.run_count(pipeline).await?;
        println!("  {pipeline}: {count} imported, {total} in history");
    }
    Ok(())
}
