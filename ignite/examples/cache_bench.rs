//! Cache throughput benchmark: kfcache-ignite against ignite-rs 0.1.1 on the same cluster.
//!
//! ```text
//! cargo run --release -p kfcache-ignite --features ignite-rs-baseline --example cache_bench -- \
//!     [ADDRESSES] [VALUE_BYTES] [COUNT]
//! ```
//! ADDRESSES defaults to $KFCACHE_TEST_IGNITE_1 (see scripts/services.sh), VALUE_BYTES to 4 MiB,
//! COUNT to 64. The last line printed is the machine-readable summary.

use kfcache_ignite::{run_cache_bench, ClientConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addresses = match args.next() {
        Some(addresses) => addresses,
        None => std::env::var("KFCACHE_TEST_IGNITE_1").map_err(|_| {
            "no addresses given and KFCACHE_TEST_IGNITE_1 is unset; run \
             `scripts/services.sh up && eval \"$(scripts/services.sh env)\"` first"
        })?,
    };
    let value_size: usize = args
        .next()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(4 << 20);
    let count: usize = args.next().map(|v| v.parse()).transpose()?.unwrap_or(64);
    let addresses = ClientConfig::from_address_list(&addresses).addresses;
    let report = run_cache_bench(&addresses, value_size, count).await?;
    let ours = report.kfcache_ignite;
    println!(
        "kfcache-ignite: put {count} x {value_size} B in {:.3} s, get in {:.3} s, client CPU {:?} s",
        ours.put_seconds, ours.get_seconds, ours.client_cpu_seconds
    );
    match &report.ignite_rs {
        Some(Ok(rs)) => println!(
            "ignite-rs 0.1.1: put in {:.3} s, get in {:.3} s, client CPU {:?} s; kfcache-ignite is {:.1}x (put) and {:.1}x (get) faster",
            rs.put_seconds,
            rs.get_seconds,
            rs.client_cpu_seconds,
            ours.put_mbps / rs.put_mbps,
            ours.get_mbps / rs.get_mbps
        ),
        Some(Err(error)) => println!("ignite-rs 0.1.1 failed: {error}"),
        None => println!("ignite-rs baseline not built (feature ignite-rs-baseline)"),
    }
    println!("{}", report.summary_line());
    Ok(())
}
