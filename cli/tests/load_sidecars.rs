//! 64 pods start at once and their `kfcache sidecar init` containers all read the same staged
//! dataset from the 3-node Ignite cluster: none fails, every input of every pod is a hit, and
//! every file equals the origin's bytes. The time to ready of each pod and the aggregate
//! throughput are printed (the benchmark with a bigger dataset is scripts/bench-sidecars.sh).
//!
//! The dataset is small (2 MiB per pod, 128 MiB read in all) so that the test stays within
//! about a minute on a loaded 2-core machine with a debug build.
//!
//! Each pod is given one node's address, spread over the nodes, as pods reach the cluster in
//! a deployment (one Service address, `kfcache-ignite:10800`, balanced over the nodes). Given
//! all three, each of the 64 pods would open a connection to every node at once, and the test
//! cluster's nodes (4 MiB socket buffers, so up to 8 MiB of direct memory per thin-client
//! connection, and `-XX:MaxDirectMemorySize=256m`) run out of direct memory and stop
//! answering thin clients until restarted. The cluster is required to be healthy afterwards.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/pods.rs"]
mod pods;

use std::sync::{Arc, Barrier};
use std::time::Instant;

use pods::{Dataset, InitRun};

const PODS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_pods_read_one_staged_dataset_all_hits_and_identical_bytes() {
    let ignite = common::env("KFCACHE_TEST_IGNITE_3");
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let db = tempfile::tempdir().unwrap();
    let namespace = common::unique("load-sidecars");
    let dataset = Arc::new(Dataset::upload(&endpoint, &[128 << 10; 8], &[1 << 20]).await);
    let connection = pods::connection(&ignite, &endpoint, &namespace);
    let nodes: Vec<&str> = ignite.split(',').map(str::trim).collect();

    // Staged as users stage it.
    let pipeline = dataset.pipeline(db.path());
    let mut prefetch = pods::kfcache(
        db.path(),
        &[
            "prefetch",
            pipeline.to_str().unwrap(),
            "--budget",
            "1GiB",
            "--chunk-size",
            "256KiB",
        ],
    );
    prefetch.args(&connection);
    let staged = prefetch.output().unwrap();
    assert!(
        staged.status.success(),
        "prefetch failed: {}",
        String::from_utf8_lossy(&staged.stderr)
    );

    // All pods at once.
    let spec = Arc::new(dataset.task_spec());
    let start = Arc::new(Barrier::new(PODS));
    let began = Instant::now();
    let pods: Vec<_> = (0..PODS)
        .map(|pod| {
            let (spec, start) = (spec.clone(), start.clone());
            let connection = pods::connection(nodes[pod % nodes.len()], &endpoint, &namespace);
            let db = db.path().to_path_buf();
            std::thread::spawn(move || {
                start.wait();
                InitRun::run(&db, &spec, &connection, &[])
            })
        })
        .collect();
    let runs: Vec<InitRun> = pods.into_iter().map(|p| p.join().unwrap()).collect();
    let wall = began.elapsed();

    let mut ready = Vec::with_capacity(PODS);
    let mut bytes = 0;
    let mut missed = Vec::new();
    for run in &runs {
        let outcomes = run.check(&dataset);
        if !outcomes.misses.is_empty() || outcomes.hits != dataset.bytes.len() {
            missed.push(format!("{:?}\n{}", outcomes.misses, run.stderr()));
        }
        ready.push(run.elapsed.as_secs_f64());
        bytes += outcomes.bytes;
    }
    eprintln!(
        "{PODS} pods, {} objects each, {:.1} MB read from the cache in {:.2}s: {:.1} MB/s; \
         time to ready p50 {:.2}s, p99 {:.2}s, max {:.2}s",
        dataset.bytes.len(),
        bytes as f64 / 1e6,
        wall.as_secs_f64(),
        bytes as f64 / 1e6 / wall.as_secs_f64(),
        pods::percentile(&ready, 50.0),
        pods::percentile(&ready, 99.0),
        pods::percentile(&ready, 100.0),
    );

    assert!(
        missed.is_empty(),
        "{} of {PODS} pods missed the cache; the first: {}",
        missed.len(),
        missed[0]
    );

    let cluster = common::env("KFCACHE_TEST_IGNITE_3_CLUSTER");
    let healthy = std::process::Command::new(common::workspace().join("scripts/ignite.sh"))
        .args(["healthy", &cluster])
        .status()
        .unwrap();
    assert!(healthy.success(), "the load left {cluster} unhealthy");

    let mut clear = pods::kfcache(db.path(), &["cache", "clear"]);
    clear.args(&connection);
    assert!(clear.output().unwrap().status.success());
}
