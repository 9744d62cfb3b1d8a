//! The `kfcache` binary: parses arguments, merges settings, runs one subcommand and turns its
//! outcome into an exit code.
//!
//! Exit codes: 0 success, 2 invalid input (the error names the file and line), 1 any other
//! failure. Errors are printed with their whole cause chain.

mod analyze;
#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "bench")]
mod bench_e2e;
#[cfg(feature = "bench")]
mod bench_eviction;
#[cfg(feature = "bench")]
mod bench_monitor;
#[cfg(feature = "bench")]
mod bench_predict;
#[cfg(feature = "bench")]
mod bench_stage;
mod cache;
mod config;
mod cron;
mod gateway;
mod history;
mod inject;
mod nodes;
mod predict;
mod prefetch;
mod prefetch_gantt;
mod prefetch_metrics;
mod prefetch_view;
mod render;
mod settings;
mod sidecar;
mod sidecar_metrics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::settings::GlobalArgs;

/// kfcache: start GPU tasks of Kubeflow / Argo pipelines with their inputs already in memory.
#[derive(Debug, Parser)]
#[command(name = "kfcache", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse pipeline YAML into its task DAG, store it, and show tasks, inputs and timings.
    Analyze(analyze::AnalyzeArgs),
    /// Look at and manage what is staged in the Ignite cache.
    Cache(cache::CacheArgs),
    /// Measure the cache cluster, the staging, the eviction, the predictor and the whole
    /// pipeline (built with the `bench` feature).
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Import the status of past runs into the history predictions learn from.
    History(history::HistoryArgs),
    /// Predict when each task of a run starts and ends and what it reads by then.
    Predict(predict::PredictArgs),
    /// Stage each GPU task's inputs into the cache before its predicted start, within a budget.
    Prefetch(prefetch::PrefetchArgs),
    /// Run inside a pipeline pod: materialise inputs (init) or watch the task (watch).
    Sidecar(sidecar::SidecarArgs),
    /// Add kfcache's init container and sidecar to the GPU tasks of a workflow.
    Inject(inject::InjectArgs),
    /// Batch prefetch for scheduled pipelines: stage what starts within a window.
    Cron(cron::CronArgs),
    /// Rank the cluster's nodes for a new GPU task (free GPU memory, deadline float time).
    Nodes(nodes::NodesArgs),
    /// Serve one namespace's S3 reads from the cache: an S3 endpoint in front of the origin.
    Gateway(gateway::GatewayArgs),
}

/// An error that is the input's fault: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct InvalidInput(#[from] pub kfcache_parser::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    settings::init_tracing(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Analyze(args) => analyze::run(&cli.global, args).await,
            Command::Cache(args) => cache::run(args).await,
            #[cfg(feature = "bench")]
            Command::Bench(args) => bench::run(args).await,
            Command::History(args) => history::run(&cli.global, args).await,
            Command::Predict(args) => predict::run(&cli.global, args).await,
            Command::Prefetch(args) => prefetch::run(&cli.global, args).await,
            Command::Sidecar(args) => sidecar::run(&cli.global, args).await,
            Command::Inject(args) => inject::run(&cli.global, args).await,
            Command::Cron(args) => cron::run(&cli.global, args).await,
            Command::Nodes(args) => nodes::run(&cli.global, args).await,
            Command::Gateway(args) => gateway::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            if error.downcast_ref::<InvalidInput>().is_some()
                || error
                    .downcast_ref::<kfcache_ops::Error>()
                    .is_some_and(kfcache_ops::Error::is_invalid_pipeline)
                || error.downcast_ref::<history::InvalidStatus>().is_some()
                || error
                    .downcast_ref::<sidecar::InvalidSidecarInput>()
                    .is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
