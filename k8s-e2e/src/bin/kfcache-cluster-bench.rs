//! `kfcache-cluster-bench`: the end-to-end benchmark on the real control plane (see
//! [`kfcache_k8s_e2e::bench`]). It parses flags, runs the benchmark and prints the report's
//! last line; `scripts/bench-e2e.sh --cluster` starts everything it needs first.

use clap::Parser;

/// Submits the pipeline as real Workflows, with no cache, an on-demand cache and kfcache.
#[derive(Debug, Parser)]
#[command(name = "kfcache-cluster-bench", version)]
struct Args {
    #[command(flatten)]
    bench: kfcache_k8s_e2e::bench::BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KFCACHE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let line = kfcache_k8s_e2e::bench::run(args.bench).await?;
    println!("{line}");
    Ok(())
}
