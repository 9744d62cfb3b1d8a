//! A node of the 3-node cluster restarts while a client is busy: requests fail over, the client
//! reconnects to the restarted node, and data kept with backups=1 survives.
//!
//! Restarting a node disturbs the cluster, so this is its own test binary (cargo runs test
//! binaries one after another) with a single test. It drives `scripts/ignite.sh restart-node`
//! on the cluster named by KFCACHE_TEST_IGNITE_3_CLUSTER.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kfcache_ignite::{Bytes, CacheConfig, Client, ClientConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_recovers_when_a_node_restarts() {
    let addresses = common::addresses("KFCACHE_TEST_IGNITE_3");
    let cluster = common::env("KFCACHE_TEST_IGNITE_3_CLUSTER");
    let client = Client::connect(
        ClientConfig::new(addresses.clone())
            .with_connect_timeout(Duration::from_secs(2))
            .with_request_timeout(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    let name = common::unique("restart");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name).with_backups(1))
        .await
        .unwrap();
    for i in 0..100 {
        cache
            .put(&format!("k{i}"), Bytes::from(vec![i as u8; 64]))
            .await
            .unwrap();
    }
    let opened_before = client.stats().connections_opened;

    // Keep reading while the node goes down and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = tokio::spawn({
        let (cache, stop, ok, failed) = (cache.clone(), stop.clone(), ok.clone(), failed.clone());
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", i % 100);
                match cache.get(&key).await {
                    Ok(Some(value)) if value.len() == 64 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ignite.sh");
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script)
            .args(["restart-node", &cluster, "1"])
            .status()
    })
    .await
    .unwrap()
    .expect("run scripts/ignite.sh");
    assert!(status.success(), "restart-node failed: {status}");
    // Let rebalancing settle and the reader run against the full cluster again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();

    // Every key is still there, read through whichever node is primary now.
    for i in 0..100 {
        let value = cache.get(&format!("k{i}")).await.unwrap();
        assert_eq!(value.map(|v| v.len()), Some(64), "key k{i} lost");
    }
    // The client talks to the restarted node again over a new connection.
    cache.peek_on_node(&addresses[1], "k0").await.unwrap();
    assert!(client.stats().connections_opened > opened_before);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("reads during restart: {ok} ok, {failed} failed");
    assert!(ok > 0);
    // Reads fail over to the surviving nodes; at most a handful may fail at the moment the
    // node leaves (requests in flight on its connection).
    assert!(failed <= 20, "{failed} reads failed during the restart");
    client.destroy_cache(&name).await.unwrap();
}
