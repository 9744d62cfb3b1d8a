//! Throughput of a cached 256 MiB object read through the gateway against the same object read
//! directly from the cache (`ObjectCache::download`, what `kfcache cache get` does), with the
//! production layout (4 MiB chunks, 32 MiB per request). Not a correctness test, so ignored
//! by default; run it in release:
//!
//! `cargo test --release -p kfcache-gateway --test throughput -- --ignored --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{pattern, Setup};
use futures::StreamExt;
use hyper::Method;
use kfcache_prefetcher::LayoutConfig;
use object_store::path::Path;
use object_store::ObjectStore;
use tokio::io::AsyncWriteExt;

const SIZE: usize = 256 << 20;

fn production_layout(namespace: &str) -> LayoutConfig {
    LayoutConfig {
        namespace: namespace.to_string(),
        ..LayoutConfig::default()
    }
}

fn rate(took: Duration) -> String {
    format!(
        "{:.2} s, {:.0} MiB/s",
        took.as_secs_f64(),
        SIZE as f64 / (1 << 20) as f64 / took.as_secs_f64()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run it in release with --ignored --nocapture"]
async fn cached_256_mib_through_the_gateway_and_directly() {
    let setup = Setup::start_with_layout(
        "throughput",
        |config| config.cache_timeout = Duration::from_secs(30),
        production_layout,
    )
    .await;
    let key = setup.key("big.bin");
    let data = pattern(SIZE, 42);
    setup.put_origin(&key, data.clone()).await;
    setup.stage(&key).await;
    let uri = setup.uri(&key);
    let dir = tempfile::tempdir().unwrap();
    let client = setup.client();
    let path = Path::from(key.as_str());
    for round in 1..=3 {
        // Directly from the cache to a file (`kfcache cache get`).
        let file = dir.path().join("direct.bin");
        let started = Instant::now();
        setup.cache.download(&uri, &file).await.unwrap();
        println!(
            "round {round}: direct ObjectCache::download to a file: {}",
            rate(started.elapsed())
        );

        // Through the gateway, to a file.
        let started = Instant::now();
        let mut out = tokio::fs::File::create(dir.path().join("gateway.bin"))
            .await
            .unwrap();
        let mut stream = client.get(&path).await.unwrap().into_stream();
        while let Some(bytes) = stream.next().await {
            out.write_all(&bytes.unwrap()).await.unwrap();
        }
        out.sync_all().await.unwrap();
        println!(
            "round {round}: gateway GET to a file:                 {}",
            rate(started.elapsed())
        );

        // Through the gateway, discarded.
        let started = Instant::now();
        let mut stream = client.get(&path).await.unwrap().into_stream();
        let mut total = 0;
        while let Some(bytes) = stream.next().await {
            total += bytes.unwrap().len();
        }
        assert_eq!(total, SIZE);
        println!(
            "round {round}: gateway GET, discarded:                {}",
            rate(started.elapsed())
        );
    }
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 0);
    assert!(
        tokio::fs::read(dir.path().join("gateway.bin"))
            .await
            .unwrap()
            == data
    );
    setup.stop().await;
}
