//! The gateway with minio-go, the S3 client of Argo's executor (`tests/minio-client`, built
//! here with `go build`): what Argo's `init` does to load an input artifact (StatObject, then
//! GET, after `GET ?location` since no region is set) is answered from the cache with no GET at
//! the origin, and what its `wait` does to save outputs (PUT with aws-chunked streaming
//! signatures over plain HTTP, multipart above 16 MiB) lands at the origin and is written
//! through into the cache, so that the next task's `init` reads it with no GET at the origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{pattern, Setup, CHUNK};
use hyper::Method;
use kfcache_gateway::{WriteKind, WriteOutcome};
use object_store::path::Path;
use object_store::ObjectStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minio_go_reads_from_the_cache_and_writes_to_the_origin() {
    let client = tokio::task::spawn_blocking(|| common::go_client("minio-client"))
        .await
        .unwrap();
    let setup = Setup::start("minio-go").await;
    let dir = tempfile::tempdir().unwrap();

    // Argo's init: an input artifact that was staged.
    let key = setup.key("inputs/dataset.bin");
    let data = pattern(9 * CHUNK as usize + 17, 21);
    setup.put_origin(&key, data.clone()).await;
    let manifest = setup.stage(&key).await;
    setup.origin.clear();
    let run_blocking = |args: Vec<String>| {
        let client = client.clone();
        let endpoint_setup = (setup.gateway_addr, setup.bucket.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let output = Command::new(&client)
                    .arg(endpoint_setup.0.to_string())
                    .arg(&endpoint_setup.1)
                    .args(&args)
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "minio-client {args:?} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8_lossy(&output.stdout).into_owned()
            })
            .await
            .unwrap()
        }
    };
    let file = dir.path().join("dataset.bin");
    run_blocking(vec!["get".into(), key.clone(), file.display().to_string()]).await;
    assert!(
        std::fs::read(&file).unwrap() == data,
        "minio-go got other bytes"
    );
    let ranged = dir.path().join("ranged.bin");
    run_blocking(vec![
        "range".into(),
        key.clone(),
        "3000000".into(),
        "2500000".into(),
        ranged.display().to_string(),
    ])
    .await;
    assert!(
        std::fs::read(&ranged).unwrap() == data[3_000_000..5_500_000],
        "ranged read differs"
    );
    let stat = run_blocking(vec!["stat".into(), key.clone()]).await;
    let etag = manifest.version.etag.clone().unwrap();
    assert_eq!(
        stat.trim(),
        format!("{} {}", data.len(), etag.trim_matches('"')),
        "StatObject"
    );
    assert_eq!(
        setup.origin.count(&Method::GET, &setup.bucket, &key),
        0,
        "GETs reached the origin: {:?}",
        setup.origin.seen()
    );
    assert!(setup.gateway.metrics().hits("GetObject") >= 2);
    let location = run_blocking(vec!["location".into()]).await;
    assert!(
        location.trim().is_empty() || location.trim() == "us-east-1",
        "{location}"
    );

    // Argo's wait: outputs, one small (one PUT) and one above 16 MiB (multipart).
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"metrics: 0.93\n").unwrap();
    let small_key = setup.key("outputs/small.txt");
    run_blocking(vec![
        "put".into(),
        small_key.clone(),
        small.display().to_string(),
    ])
    .await;
    let big = dir.path().join("big.bin");
    let big_data = pattern(20 << 20, 4);
    std::fs::write(&big, &big_data).unwrap();
    let big_key = setup.key("outputs/big.bin");
    run_blocking(vec![
        "put".into(),
        big_key.clone(),
        big.display().to_string(),
    ])
    .await;
    let at_origin = setup.at_origin(&small_key).await;
    assert_eq!(at_origin.as_ref(), b"metrics: 0.93\n");
    let at_origin = setup.at_origin(&big_key).await;
    assert!(
        at_origin.as_ref() == big_data.as_slice(),
        "the multipart upload differs at the origin"
    );
    let metrics = setup.gateway.metrics();
    assert_eq!(metrics.requests("PutObject"), 1);
    assert!(metrics.requests("UploadPart") >= 2);
    assert_eq!(metrics.requests("CompleteMultipartUpload"), 1);

    // The next task's init reads both outputs from the cache: they were written through.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while metrics.writes(WriteKind::WriteThrough, WriteOutcome::Written) < 2 {
        assert!(
            std::time::Instant::now() < until,
            "minio-go's uploads were not written through: {}",
            metrics.render().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let hits = metrics.hits("GetObject");
    for (output, want) in [
        (&small_key, &b"metrics: 0.93\n"[..]),
        (&big_key, &big_data[..]),
    ] {
        let file = dir.path().join("output.bin");
        run_blocking(vec![
            "get".into(),
            output.clone(),
            file.display().to_string(),
        ])
        .await;
        assert!(std::fs::read(&file).unwrap() == want, "{output} differs");
        assert_eq!(
            setup.origin.count(&Method::GET, &setup.bucket, output),
            0,
            "{output}"
        );
    }
    assert_eq!(metrics.hits("GetObject"), hits + 2);

    let listed = run_blocking(vec!["list".into(), format!("{}/", setup.prefix)]).await;
    let mut keys: Vec<&str> = listed.lines().collect();
    keys.sort_unstable();
    let mut want = vec![key.as_str(), big_key.as_str(), small_key.as_str()];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert!(metrics.requests("ListObjectsV2") >= 1);

    run_blocking(vec!["remove".into(), small_key.clone()]).await;
    assert!(setup
        .moto
        .head(&Path::from(small_key.as_str()))
        .await
        .is_err());
    setup.stop().await;
}
