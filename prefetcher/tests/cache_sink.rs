//! The `CacheSink` conformance suite (`kfcache_prefetcher::testing`) against every sink: in
//! memory, a real 1-node Ignite cluster, a real 3-node cluster with one backup, and
//! `BoundedSink` around the first two; plus a cluster that is not there.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kfcache_ignite::{Client, ClientConfig};
use kfcache_prefetcher::BoundedSink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sink_conforms() {
    common::cache_sink_suite(common::memory_sink()).await;
}

/// The bound every pod and the gateway put around the cache changes nothing that the suite
/// checks, compare-and-set and the lock included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_memory_sink_conforms() {
    let sink = BoundedSink::new(common::memory_sink(), Duration::from_secs(10));
    common::cache_sink_suite(Arc::new(sink)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_ignite_conforms() {
    let inner = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_1", 1).await);
    let sink = BoundedSink::new(inner.clone(), Duration::from_secs(30));
    common::cache_sink_suite(Arc::new(sink)).await;
    inner.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignite_one_node_conforms() {
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_1", 1).await);
    common::cache_sink_suite(sink.clone()).await;
    sink.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignite_three_nodes_with_backups_conform() {
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_3", 1).await);
    common::cache_sink_suite(sink.clone()).await;
    sink.destroy().await.unwrap();
}

/// No node listens at the address: the error names it and comes within the connect timeout.
#[tokio::test]
async fn unreachable_ignite_fails_clearly_within_the_timeout() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let started = Instant::now();
    let error = Client::connect(
        ClientConfig::new([address.clone()]).with_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains(&address), "{error}");
}
