//! `kfcache bench predict --pipeline FILE --runs N --jitter J --seed S`: backtest the
//! predictor on synthetic history of a pipeline (the model is documented in
//! `kfcache_predictor::backtest`) against Argo's last-run rule. Its last line is
//! machine-readable:
//! `predict-backtest: kfcache_mape=<f> last_run_mape=<f> runs=<n> tasks=<n>`.
//! The line before it, `predict-floor: oracle_mape=<f>`, is the error of a predictor that
//! knows the history model itself: the floor the model's randomness puts under any predictor.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use kfcache_predictor::backtest::{backtest, BacktestConfig};

use kfcache_ops::analysis::analyse_files;

#[derive(Debug, Args)]
pub struct PredictBenchArgs {
    /// The pipeline file to generate history for.
    #[arg(long, value_name = "FILE")]
    pub pipeline: PathBuf,
    /// Runs of synthetic history.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub runs: usize,
    /// Relative size of the log-normal duration noise.
    #[arg(long, value_name = "J", default_value_t = 0.15)]
    pub jitter: f64,
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Template directories for `templateRef`, as for `analyze`.
    #[arg(long, value_name = "DIR")]
    pub templates: Vec<PathBuf>,
}

pub fn run(args: PredictBenchArgs) -> Result<()> {
    if !(args.jitter >= 0.0 && args.jitter.is_finite()) {
        bail!("--jitter must be a non-negative number");
    }
    if args.runs < 4 {
        bail!("--runs must be at least 4: each backtested run needs 3 earlier ones");
    }
    let analyses = analyse_files(std::slice::from_ref(&args.pipeline), &args.templates)?;
    let config = BacktestConfig {
        runs: args.runs,
        jitter: args.jitter,
        seed: args.seed,
        ..BacktestConfig::default()
    };
    let (mut ours, mut theirs, mut floor, mut runs, mut tasks) = (0.0, 0.0, 0.0, 0, 0);
    for analysis in &analyses {
        let report = backtest(&analysis.pipeline, &analysis.dag, &config);
        eprintln!(
            "{}: kfcache_mape={:.4} last_run_mape={:.4} oracle_mape={:.4} over {} task starts",
            analysis.pipeline.name,
            report.kfcache_mape,
            report.last_run_mape,
            report.oracle_mape,
            report.tasks
        );
        ours += report.kfcache_mape * report.tasks as f64;
        theirs += report.last_run_mape * report.tasks as f64;
        floor += report.oracle_mape * report.tasks as f64;
        runs += report.runs;
        tasks += report.tasks;
    }
    let mape = |sum: f64| if tasks == 0 { 0.0 } else { sum / tasks as f64 };
    println!("predict-floor: oracle_mape={:.4}", mape(floor));
    println!(
        "predict-backtest: kfcache_mape={:.4} last_run_mape={:.4} runs={runs} tasks={tasks}",
        mape(ours),
        mape(theirs)
    );
    Ok(())
}
