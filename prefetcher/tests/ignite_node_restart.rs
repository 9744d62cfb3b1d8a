//! A node of the 3-node cluster (backups = 1) restarts while objects are read through the
//! cache layout: reads fail over, the client reconnects, and every object is still whole and
//! verified afterwards; a new write succeeds.
//!
//! Restarting a node disturbs the cluster, so this is its own test binary (cargo runs test
//! binaries one after another) with a single test. It drives `scripts/ignite.sh restart-node`
//! on the cluster named by KFCACHE_TEST_IGNITE_3_CLUSTER, as kfcache-ignite's own restart test
//! does.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kfcache_prefetcher::{LayoutConfig, ObjectCache, SourceVersion};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_layout_survives_a_node_restart() {
    let cluster = common::env("KFCACHE_TEST_IGNITE_3_CLUSTER");
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_3", 1).await);
    let cache = ObjectCache::new(
        sink.clone(),
        LayoutConfig {
            namespace: common::unique("restart"),
            chunk_size: 64 * 1024,
            ..LayoutConfig::default()
        },
    )
    .unwrap();
    let mut objects = Vec::new();
    for i in 0..8u8 {
        let uri = format!("s3://bucket/restart/object-{i}");
        let data = Bytes::from(common::pattern(200_000 + i as usize * 1000, i));
        let version = SourceVersion {
            etag: Some(format!("e{i}")),
            size: data.len() as u64,
            last_modified: None,
        };
        cache.put_bytes(&uri, version, data.clone()).await.unwrap();
        objects.push((uri, data));
    }
    let opened_before = sink.client().stats().connections_opened;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = tokio::spawn({
        let (cache, objects, stop, ok, failed) = (
            cache.clone(),
            objects.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (uri, data) = &objects[i % objects.len()];
                match cache.read(uri).await {
                    Ok((_, bytes)) if bytes == *data => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => panic!("{uri} read back different bytes during the restart"),
                    Err(error) => {
                        eprintln!("read during restart failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();

    // Every object is whole and verified, and the client reconnected.
    for (uri, data) in &objects {
        let (_, bytes) = cache.read(uri).await.unwrap();
        assert!(bytes == *data, "{uri} damaged by the restart");
    }
    let version = SourceVersion {
        etag: Some("after".to_string()),
        size: 3,
        last_modified: None,
    };
    cache
        .put_bytes(
            "s3://bucket/restart/after",
            version,
            Bytes::from_static(b"new"),
        )
        .await
        .unwrap();
    assert!(sink.client().stats().connections_opened > opened_before);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("object reads during restart: {ok} ok, {failed} failed");
    assert!(ok > 0);
    assert!(
        failed <= 20,
        "{failed} object reads failed during the restart"
    );
    sink.destroy().await.unwrap();
}
