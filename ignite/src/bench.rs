//! Cache throughput benchmark, callable from the binary (`kfcache bench cache`) and from the
//! `cache_bench` example.
//!
//! It writes `count` values of `value_size` bytes into a fresh partitioned cache, reads them
//! back, verifies lengths, and destroys the cache; a few untimed rounds warm the node up first. This client keeps several requests in flight
//! per connection. With the `ignite-rs-baseline` feature the same workload also runs through
//! ignite-rs 0.1.1 on a plain thread (it is blocking) against the first address, for
//! comparison. Throughput is in MB/s with 1 MB = 10^6 bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::cache::CacheConfig;
use crate::client::{Client, ClientConfig};
use crate::error::{Error, Result};

/// Requests kept in flight by this client during the benchmark.
const IN_FLIGHT: usize = 8;
/// Untimed put/get/remove rounds before measuring.
const WARM_UP: usize = 8;

/// Put and get throughput of one client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    pub put_mbps: f64,
    pub get_mbps: f64,
    pub put_seconds: f64,
    pub get_seconds: f64,
    /// CPU seconds (user + system) this process spent during the put and get phases, where the
    /// platform reports it (Linux). Shows whether the client or the server limits throughput.
    pub client_cpu_seconds: Option<f64>,
}

/// CPU time of this process so far, from /proc/self/stat (Linux; USER_HZ is 100 there).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Result of [`run_cache_bench`].
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub value_size: usize,
    pub count: usize,
    pub nodes: usize,
    pub kfcache_ignite: Throughput,
    /// `None` when built without the `ignite-rs-baseline` feature; `Err` when ignite-rs could
    /// not run the workload (the text says why).
    pub ignite_rs: Option<std::result::Result<Throughput, String>>,
}

impl BenchReport {
    /// The one-line summary, e.g.
    /// `cache-bench: client=kfcache-ignite put_mbps=1234.5 get_mbps=2345.6 ignite_rs_put_mbps=12.3 ignite_rs_get_mbps=45.6`.
    pub fn summary_line(&self) -> String {
        let (rs_put, rs_get) = match &self.ignite_rs {
            Some(Ok(rs)) => (format!("{:.1}", rs.put_mbps), format!("{:.1}", rs.get_mbps)),
            _ => ("nan".to_string(), "nan".to_string()),
        };
        format!(
            "cache-bench: client=kfcache-ignite put_mbps={:.1} get_mbps={:.1} ignite_rs_put_mbps={rs_put} ignite_rs_get_mbps={rs_get}",
            self.kfcache_ignite.put_mbps, self.kfcache_ignite.get_mbps
        )
    }
}

fn mbps(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

fn bench_cache_name(client: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("kfcache-bench-{client}-{}-{nanos}", std::process::id())
}

/// Runs the benchmark against the cluster at `addresses`.
pub async fn run_cache_bench(
    addresses: &[String],
    value_size: usize,
    count: usize,
) -> Result<BenchReport> {
    let client = Client::connect(ClientConfig::new(addresses.iter().cloned())).await?;
    let kfcache_ignite = bench_kfcache_ignite(&client, value_size, count).await?;
    let ignite_rs = baseline(addresses, value_size, count).await;
    Ok(BenchReport {
        value_size,
        count,
        nodes: addresses.len(),
        kfcache_ignite,
        ignite_rs,
    })
}

async fn bench_kfcache_ignite(
    client: &Client,
    value_size: usize,
    count: usize,
) -> Result<Throughput> {
    let name = bench_cache_name("kfcache-ignite");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name))
        .await?;
    let value = Bytes::from(
        (0..value_size)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    // Untimed warm-up, so a freshly started node's JIT compilation is not measured.
    for index in 0..count.min(WARM_UP) {
        let key = format!("warm-up-{index}");
        cache.put(&key, value.clone()).await?;
        cache.get(&key).await?;
        cache.remove(&key).await?;
    }
    let cpu_before = process_cpu_seconds();

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Config {
                message: "benchmark semaphore closed".to_string(),
            })?;
        let cache = cache.clone();
        let value = value.clone();
        tasks.spawn(async move {
            let _permit = permit;
            cache.put(&format!("bench-{index}"), value).await
        });
    }
    join_all(&mut tasks).await?;
    let put_elapsed = started.elapsed();

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Config {
                message: "benchmark semaphore closed".to_string(),
            })?;
        let cache = cache.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let key = format!("bench-{index}");
            match cache.get(&key).await? {
                Some(found) if found.len() == value_size => Ok(()),
                other => Err(Error::Config {
                    message: format!(
                        "benchmark read back {:?} bytes for {key}, expected {value_size} (is the data region too small?)",
                        other.map(|v| v.len())
                    ),
                }),
            }
        });
    }
    join_all(&mut tasks).await?;
    let get_elapsed = started.elapsed();

    let client_cpu_seconds = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    client.destroy_cache(&name).await?;
    let total = value_size * count;
    Ok(Throughput {
        put_mbps: mbps(total, put_elapsed),
        get_mbps: mbps(total, get_elapsed),
        put_seconds: put_elapsed.as_secs_f64(),
        get_seconds: get_elapsed.as_secs_f64(),
        client_cpu_seconds,
    })
}

async fn join_all(tasks: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| Error::Config {
            message: format!("benchmark task failed: {error}"),
        })??;
    }
    Ok(())
}

#[cfg(not(feature = "ignite-rs-baseline"))]
async fn baseline(
    _: &[String],
    _: usize,
    _: usize,
) -> Option<std::result::Result<Throughput, String>> {
    None
}

#[cfg(feature = "ignite-rs-baseline")]
async fn baseline(
    addresses: &[String],
    value_size: usize,
    count: usize,
) -> Option<std::result::Result<Throughput, String>> {
    let address = addresses.first()?.clone();
    // ignite-rs is blocking: run it on its own thread, off the runtime.
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let outcome =
            std::panic::catch_unwind(move || bench_ignite_rs(&address, value_size, count))
                .unwrap_or_else(|_| Err("ignite-rs panicked".to_string()));
        let _ = done.send(outcome);
    });
    Some(
        result
            .await
            .unwrap_or_else(|_| Err("ignite-rs thread ended without a result".to_string())),
    )
}

#[cfg(feature = "ignite-rs-baseline")]
fn bench_ignite_rs(
    address: &str,
    value_size: usize,
    count: usize,
) -> std::result::Result<Throughput, String> {
    use ignite_rs::Ignite as _;

    let mut client = ignite_rs::new_client(ignite_rs::ClientConfig::new(address))
        .map_err(|error| format!("ignite-rs connect to {address}: {error:?}"))?;
    let name = bench_cache_name("ignite-rs");
    let cache = client
        .get_or_create_cache::<String, Vec<u8>>(&name)
        .map_err(|error| format!("ignite-rs get_or_create_cache: {error:?}"))?;
    let value: Vec<u8> = (0..value_size).map(|i| (i % 251) as u8).collect();
    let cpu_before = process_cpu_seconds();

    let started = Instant::now();
    for index in 0..count {
        cache
            .put(&format!("bench-{index}"), &value)
            .map_err(|error| format!("ignite-rs put: {error:?}"))?;
    }
    let put_elapsed = started.elapsed();

    let started = Instant::now();
    for index in 0..count {
        let found = cache
            .get(&format!("bench-{index}"))
            .map_err(|error| format!("ignite-rs get: {error:?}"))?;
        if found.as_ref().map(Vec::len) != Some(value_size) {
            return Err(format!(
                "ignite-rs read back {:?} bytes, expected {value_size}",
                found.map(|v| v.len())
            ));
        }
    }
    let get_elapsed = started.elapsed();
    // Process-wide, but the async client is idle while this runs.
    let client_cpu_seconds = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    client
        .destroy_cache(&name)
        .map_err(|error| format!("ignite-rs destroy_cache: {error:?}"))?;
    let total = value_size * count;
    Ok(Throughput {
        put_mbps: mbps(total, put_elapsed),
        get_mbps: mbps(total, get_elapsed),
        put_seconds: put_elapsed.as_secs_f64(),
        get_seconds: get_elapsed.as_secs_f64(),
        client_cpu_seconds,
    })
}
