//! `kfcache bench ...`: measurements a user can run against their own cluster.
//!
//! `bench cache` writes and reads values through kfcache's Ignite client and, in the same
//! run, through ignite-rs 0.1.1 for comparison (kfcache-ignite's `run_cache_bench`). Its last
//! line is machine-readable:
//! `cache-bench: client=<name> put_mbps=<f> get_mbps=<f> ignite_rs_put_mbps=<f> ignite_rs_get_mbps=<f>`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::config::{human_size, parse_size, ConnectionArgs};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Put and get throughput of the Ignite cluster through kfcache's client and ignite-rs.
    Cache(CacheBenchArgs),
    /// Backtest the predictor on synthetic history of a pipeline against Argo's last-run rule.
    Predict(crate::bench_predict::PredictBenchArgs),
    /// Staging throughput: source read rate, Ignite put rate and the prefetcher's end-to-end
    /// rate in one run, for large objects and for many small ones.
    Stage(crate::bench_stage::StageBenchArgs),
    /// Eviction quality: kfcache's DAG-aware policy against LRU with fill on first read and the
    /// oracle prefetcher (Belady's rule on the actual start times), on generated pipelines in
    /// a simulated clock.
    Eviction(crate::bench_eviction::EvictionBenchArgs),
    /// Start/end detection error and idle CPU of `kfcache sidecar watch`, on worker processes
    /// spawned at known instants.
    Monitor(crate::bench_monitor::MonitorBenchArgs),
    /// A pipeline replayed on a local stack (Ignite, S3 behind a throttling proxy) without a
    /// cache, with an on-demand cache and with kfcache; statistics, report and plots.
    E2e(crate::bench_e2e::E2eBenchArgs),
}

#[derive(Debug, Args)]
pub struct CacheBenchArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Size of each value.
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_size)]
    pub size: u64,
    /// Number of values written and read.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub count: usize,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Cache(args) => cache(args).await,
        BenchCommand::Predict(args) => crate::bench_predict::run(args),
        BenchCommand::Stage(args) => crate::bench_stage::run(args).await,
        BenchCommand::Eviction(args) => crate::bench_eviction::run(args),
        BenchCommand::Monitor(args) => crate::bench_monitor::run(args).await,
        BenchCommand::E2e(args) => crate::bench_e2e::run(args).await,
    }
}

async fn cache(args: CacheBenchArgs) -> Result<()> {
    let settings = args.connection.resolve()?;
    let value_size = usize::try_from(args.size).context("--size is too large")?;
    if value_size == 0 || args.count == 0 {
        bail!("--size and --count must be greater than zero");
    }
    let addresses = settings.client.addresses.clone();
    eprintln!(
        "bench cache: {} values of {} against {} ({})",
        args.count,
        human_size(args.size),
        addresses.join(","),
        settings.addresses_origin
    );
    let report = kfcache_ignite::run_cache_bench(&addresses, value_size, args.count)
        .await
        .with_context(|| format!("cache benchmark against {} failed", addresses.join(",")))?;
    let ours = &report.kfcache_ignite;
    println!(
        "kfcache-ignite: put {:.1} MB/s ({:.2}s), get {:.1} MB/s ({:.2}s){}",
        ours.put_mbps,
        ours.put_seconds,
        ours.get_mbps,
        ours.get_seconds,
        ours.client_cpu_seconds
            .map(|cpu| format!(", client CPU {cpu:.2}s"))
            .unwrap_or_default()
    );
    match &report.ignite_rs {
        Some(Ok(rs)) => println!(
            "ignite-rs 0.1.1: put {:.1} MB/s ({:.2}s), get {:.1} MB/s ({:.2}s)",
            rs.put_mbps, rs.put_seconds, rs.get_mbps, rs.get_seconds
        ),
        Some(Err(reason)) => println!("ignite-rs 0.1.1: failed: {reason}"),
        None => println!("ignite-rs 0.1.1: not built in (feature ignite-rs-baseline)"),
    }
    println!("{}", report.summary_line());
    Ok(())
}
