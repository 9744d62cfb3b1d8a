//! `kfcache bench eviction`: eviction quality of kfcache's DAG-aware policy against LRU with
//! fill on first read and the oracle prefetcher (Belady), on generated pipelines replayed in
//! a simulated clock (the model is documented in `kfcache_prefetcher::evict_sim`).
//!
//! Every seed generates one workload; each is replayed with caches of 25 %, 50 % and 100 % of
//! its working set (the distinct bytes its tasks read) under the three policies. The table
//! gives the mean over the seeds and the half-width of its 95 % confidence interval; the
//! comparisons are paired (same workload, same cache). Its last line is machine-readable, at
//! 50 %, with the mean byte hit ratios:
//! `eviction-bench: cache_frac=0.5 kfcache_hit=<f> lru_hit=<f> belady_hit=<f>`.

use anyhow::{bail, Result};
use clap::Args;
use comfy_table::{presets, Cell, CellAlignment, Table};
use kfcache_prefetcher::evict_sim::{
    generate, simulate, CacheConfig, Policy, SimReport, WorkloadConfig, WorkloadStats,
};

use crate::config::{human_size, parse_size};

/// Mean and half-width of the 95 % confidence interval of the mean (Student's t, from the
/// benchmarks' statistics); the half-width is 0 with fewer than two values.
fn mean_ci95(values: &[f64]) -> (f64, f64) {
    let summary = kfcache_harness::stats::summarize(values);
    if summary.n < 2 {
        return (summary.mean, 0.0);
    }
    (summary.mean, summary.ci95.1 - summary.mean)
}

/// Cache sizes, as fractions of the working set.
const CACHE_FRACTIONS: [f64; 3] = [0.25, 0.5, 1.0];
/// The fraction the last line reports.
const REPORTED_FRACTION: f64 = 0.5;
/// The goals at that fraction.
const GOAL_GAP_TO_BELADY: f64 = 0.05;
const GOAL_FACTOR_OVER_LRU: f64 = 1.5;

#[derive(Debug, Args)]
pub struct EvictionBenchArgs {
    /// Generated workloads (one per seed) per cache size.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub seeds: u64,
    /// The first seed; the others follow it.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// σ of the log-normal factor between a task's predicted and actual duration.
    #[arg(long, value_name = "SIGMA", default_value_t = WorkloadConfig::default().noise_sigma)]
    pub noise: f64,
    /// Bytes per second the staging pipe copies into the cache.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub bandwidth: u64,
    /// GPU tasks per workload (runs are added until there are this many).
    #[arg(long, value_name = "N", default_value_t = WorkloadConfig::default().tasks)]
    pub tasks: usize,
    /// Datasets in the pool the tasks read from.
    #[arg(long, value_name = "N", default_value_t = WorkloadConfig::default().datasets)]
    pub datasets: usize,
    /// Distinct pipelines the runs cycle through.
    #[arg(long, value_name = "N", default_value_t = WorkloadConfig::default().pipelines)]
    pub pipelines: usize,
    /// Tasks that can run at once.
    #[arg(long, value_name = "N", default_value_t = WorkloadConfig::default().gpu_slots)]
    pub gpu_slots: usize,
    /// Seconds between the starts of consecutive runs.
    #[arg(long, value_name = "SECONDS", default_value_t = WorkloadConfig::default().run_interval_s)]
    pub run_interval: f64,
    /// Exponent of the Zipf popularity of datasets (0: every dataset equally popular).
    #[arg(long, value_name = "S", default_value_t = WorkloadConfig::default().zipf_exponent)]
    pub zipf: f64,
    /// Probability that a run's task reads another dataset than its pipeline usually does
    /// (known to kfcache only once the run starts).
    #[arg(long, value_name = "P", default_value_t = WorkloadConfig::default().input_drift)]
    pub input_drift: f64,
}

/// Per seed: the workload's figures and one report per (fraction, policy).
struct SeedResult {
    stats: WorkloadStats,
    reports: Vec<Vec<SimReport>>,
}

pub fn run(args: EvictionBenchArgs) -> Result<()> {
    if !(args.noise >= 0.0 && args.noise.is_finite()) {
        bail!("--noise must be a non-negative number");
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if args.bandwidth == 0 {
        bail!("--bandwidth must be greater than zero");
    }
    if args.tasks == 0 || args.datasets == 0 || args.pipelines == 0 || args.gpu_slots == 0 {
        bail!("--tasks, --datasets, --pipelines and --gpu-slots must be at least 1");
    }
    if !(args.run_interval >= 0.0 && args.run_interval.is_finite()) {
        bail!("--run-interval must be a non-negative number of seconds");
    }
    if !(args.zipf >= 0.0 && args.zipf.is_finite()) {
        bail!("--zipf must be a non-negative number");
    }
    if !(0.0..=1.0).contains(&args.input_drift) {
        bail!("--input-drift must be a probability, between 0 and 1");
    }
    let config = WorkloadConfig {
        tasks: args.tasks,
        datasets: args.datasets,
        pipelines: args.pipelines,
        gpu_slots: args.gpu_slots,
        noise_sigma: args.noise,
        run_interval_s: args.run_interval,
        zipf_exponent: args.zipf,
        input_drift: args.input_drift,
        ..WorkloadConfig::default()
    };
    let bandwidth = args.bandwidth as f64;
    let results: Vec<SeedResult> = (args.seed..args.seed.saturating_add(args.seeds))
        .map(|seed| {
            let workload = generate(&config, seed);
            let working_set_bytes = workload.working_set_bytes();
            let reports = CACHE_FRACTIONS
                .iter()
                .map(|fraction| {
                    let cache = CacheConfig {
                        budget_bytes: (working_set_bytes as f64 * fraction) as u64,
                        bandwidth_bytes_per_s: bandwidth,
                    };
                    Policy::ALL
                        .iter()
                        .map(|&policy| simulate(&workload, policy, &cache))
                        .collect()
                })
                .collect();
            SeedResult {
                stats: workload.stats(),
                reports,
            }
        })
        .collect();

    let mean =
        |f: &dyn Fn(&SeedResult) -> f64| mean_ci95(&results.iter().map(f).collect::<Vec<_>>()).0;
    let working_set = mean(&|r| r.stats.working_set_bytes as f64);
    println!(
        "{} workloads (seeds {}..={}): {:.0} GPU tasks in {:.1} runs of {} pipelines, one every \
         {} s, on {} GPU slots; {} datasets (Zipf {}, drift {}); noise σ={}",
        args.seeds,
        args.seed,
        args.seed.saturating_add(args.seeds - 1),
        mean(&|r| r.stats.tasks as f64),
        mean(&|r| r.stats.runs as f64),
        args.pipelines,
        args.run_interval,
        args.gpu_slots,
        args.datasets,
        args.zipf,
        args.input_drift,
        args.noise
    );
    println!(
        "means: working set {}, read {:.2}× over ({:.0} % of the bytes from upstream outputs, \
         {:.0} % of the reads unforeseen until their run starts); makespan {:.1} h, GPU slots \
         busy {:.0} %, a ready task waits {:.0} s for a slot; staging the working set at {}/s \
         takes {:.0} % of the makespan",
        human_size(working_set as u64),
        mean(&|r| r.stats.read_bytes as f64 / r.stats.working_set_bytes.max(1) as f64),
        100.0 * mean(&|r| r.stats.output_read_bytes as f64 / r.stats.read_bytes.max(1) as f64),
        100.0 * mean(&|r| r.stats.unforeseen_reads as f64 / r.stats.reads.max(1) as f64),
        mean(&|r| r.stats.makespan_s) / 3600.0,
        100.0 * mean(&|r| r.stats.gpu_busy_share),
        mean(&|r| r.stats.mean_slot_wait_s),
        human_size(args.bandwidth),
        100.0 * mean(&|r| r.stats.working_set_bytes as f64 / bandwidth / r.stats.makespan_s)
    );

    let interval =
        |f: &dyn Fn(&SeedResult) -> f64| mean_ci95(&results.iter().map(f).collect::<Vec<_>>());
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_header(vec![
            "cache",
            "policy",
            "byte hit ratio",
            "access hit ratio",
            "staged ÷ working set",
            "filled on read ÷ working set",
        ]);
    for (f, fraction) in CACHE_FRACTIONS.iter().enumerate() {
        for (p, policy) in Policy::ALL.iter().enumerate() {
            let bytes = interval(&|r| r.reports[f][p].byte_hit_ratio());
            let accesses = interval(&|r| r.reports[f][p].access_hit_ratio());
            let share = |bytes: &dyn Fn(&SimReport) -> u64| {
                mean(&|r| bytes(&r.reports[f][p]) as f64 / r.stats.working_set_bytes as f64)
            };
            let staged = share(&|r| r.staged_bytes);
            let filled = share(&|r| r.filled_bytes);
            table.add_row(vec![
                Cell::new(format!("{:.0} %", fraction * 100.0)),
                Cell::new(policy.name()),
                Cell::new(format!("{:.4} ± {:.4}", bytes.0, bytes.1))
                    .set_alignment(CellAlignment::Right),
                Cell::new(format!("{:.4} ± {:.4}", accesses.0, accesses.1))
                    .set_alignment(CellAlignment::Right),
                Cell::new(format!("{staged:.2}")).set_alignment(CellAlignment::Right),
                Cell::new(format!("{filled:.2}")).set_alignment(CellAlignment::Right),
            ]);
        }
    }
    println!("{table}");

    let mut comparison = Table::new();
    comparison
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_header(vec![
            "cache",
            "belady − kfcache (paired)",
            "kfcache ÷ lru (of means)",
            "goals (the issue's, at 50 %)",
        ]);
    let index = |policy: Policy| Policy::ALL.iter().position(|&p| p == policy).unwrap_or(0);
    let (kfcache, lru, belady) = (
        index(Policy::Kfcache),
        index(Policy::Lru),
        index(Policy::Belady),
    );
    let mut last_line = String::new();
    for (f, fraction) in CACHE_FRACTIONS.iter().enumerate() {
        let hit = |r: &SeedResult, p: usize| r.reports[f][p].byte_hit_ratio();
        let gap = interval(&|r| hit(r, belady) - hit(r, kfcache));
        let ours = mean(&|r| hit(r, kfcache));
        let theirs = mean(&|r| hit(r, lru));
        let best = mean(&|r| hit(r, belady));
        let factor = if theirs > 0.0 {
            ours / theirs
        } else {
            f64::INFINITY
        };
        let verdict = |met: bool| if met { "met" } else { "missed" };
        comparison.add_row(vec![
            Cell::new(format!("{:.0} %", fraction * 100.0)),
            Cell::new(format!("{:.4} ± {:.4}", gap.0, gap.1)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{factor:.2}×")).set_alignment(CellAlignment::Right),
            Cell::new(if *fraction == REPORTED_FRACTION {
                format!(
                    "within {GOAL_GAP_TO_BELADY} of belady: {}; ≥ {GOAL_FACTOR_OVER_LRU}× lru: {}",
                    verdict(best - ours <= GOAL_GAP_TO_BELADY),
                    verdict(factor >= GOAL_FACTOR_OVER_LRU)
                )
            } else {
                String::new()
            }),
        ]);
        if *fraction == REPORTED_FRACTION {
            last_line = format!(
                "eviction-bench: cache_frac={fraction} kfcache_hit={ours:.4} lru_hit={theirs:.4} \
                 belady_hit={best:.4}"
            );
        }
    }
    println!("{comparison}");
    println!("{last_line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confidence_interval_uses_students_t() {
        let (mean, half) = mean_ci95(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(mean, 3.0);
        // t(0.975, 4) = 2.776 · sqrt(2.5 / 5)
        assert!((half - 2.776 * 0.5f64.sqrt()).abs() < 1e-3, "{half}");
        assert_eq!(mean_ci95(&[0.4]), (0.4, 0.0));
    }
}
