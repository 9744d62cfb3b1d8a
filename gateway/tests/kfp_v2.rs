//! The gateway with the object-store calls of Kubeflow Pipelines v2's launcher
//! (`tests/kfp-v2-client`, built here with `go build`): gocloud.dev's s3blob over
//! aws-sdk-go-v2, path-style, at the endpoint the namespace's `kfp-launcher` ConfigMap names.
//! The launcher lists an input artifact's prefix and reads each object under it inside
//! `main`; a staged directory artifact is read from the cache with no GET at the origin, an
//! output it writes lands at the origin and is written through, and the next task's read of
//! that output is a hit. KFP's own module cannot be built here (the Go module proxy does not
//! serve it), so the client makes the launcher's calls itself; its metadata-service side
//! (MLMD) is not exercised.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{pattern, Setup, CHUNK};
use hyper::Method;
use kfcache_gateway::{WriteKind, WriteOutcome};

/// Runs the client against the gateway; returns its stdout (one `KEY BYTES` line per object).
async fn run(client: &PathBuf, setup: &Setup, args: &[String]) -> String {
    let mut command = Command::new(client);
    command
        .arg(args[0].as_str())
        .arg(setup.endpoint())
        .arg(&setup.bucket)
        .args(&args[1..]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "kfp-v2-client {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kfp_v2_launcher_calls_read_staged_inputs_from_the_cache_and_write_outputs_through() {
    let client = tokio::task::spawn_blocking(|| common::go_client("kfp-v2-client"))
        .await
        .unwrap();
    let setup = Setup::start("kfp-v2").await;
    let dir = tempfile::tempdir().unwrap();

    // A directory artifact (a dataset split into files) under the pipeline root, staged.
    let artifact = setup.key("pipeline-root/run-1/prepare/dataset");
    let files: Vec<(String, Vec<u8>)> = [
        ("train/part-0.bin", 5 * CHUNK as usize + 3),
        ("train/part-1.bin", 2 * CHUNK as usize),
        ("schema.json", 917),
    ]
    .iter()
    .enumerate()
    .map(|(seed, (name, len))| (format!("{artifact}/{name}"), pattern(*len, seed as u8)))
    .collect();
    for (key, data) in &files {
        setup.put_origin(key, data.clone()).await;
        setup.stage(key).await;
    }
    setup.origin.clear();

    // The launcher's download of the input artifact into `main`'s local path.
    let local = dir.path().join("inputs/dataset");
    let listed = run(
        &client,
        &setup,
        &[
            "download".into(),
            artifact.clone(),
            local.display().to_string(),
        ],
    )
    .await;
    assert_eq!(listed.lines().count(), files.len(), "{listed}");
    for (key, data) in &files {
        let relative = key.strip_prefix(&format!("{artifact}/")).unwrap();
        let got = std::fs::read(local.join(relative)).unwrap();
        assert!(got == *data, "{relative}: other bytes than the origin's");
        assert_eq!(
            setup.origin.count(&Method::GET, &setup.bucket, key),
            0,
            "{key} was read from the origin: {:?}",
            setup.origin.seen()
        );
    }
    let metrics = setup.gateway.metrics();
    assert_eq!(metrics.hits("GetObject"), files.len() as u64);
    assert!(metrics.requests("ListObjectsV2") >= 1);

    // The launcher's upload of an output artifact (a single file).
    let model = dir.path().join("model.bin");
    let model_data = pattern(3 * CHUNK as usize + 11, 9);
    std::fs::write(&model, &model_data).unwrap();
    let model_key = setup.key("pipeline-root/run-1/train/model");
    run(
        &client,
        &setup,
        &[
            "upload".into(),
            model_key.clone(),
            model.display().to_string(),
        ],
    )
    .await;
    assert!(
        setup.at_origin(&model_key).await.as_ref() == model_data.as_slice(),
        "the output differs at the origin"
    );
    let until = Instant::now() + Duration::from_secs(30);
    while metrics.writes(WriteKind::WriteThrough, WriteOutcome::Written) < 1 {
        assert!(
            Instant::now() < until,
            "the launcher's upload was not written through: {}",
            metrics.render().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The next task's launcher reads that output (a single-file artifact: the prefix is the
    // object's own key) from the cache.
    let hits = metrics.hits("GetObject");
    let next = dir.path().join("next/model");
    run(
        &client,
        &setup,
        &[
            "download".into(),
            model_key.clone(),
            next.display().to_string(),
        ],
    )
    .await;
    assert!(
        std::fs::read(&next).unwrap() == model_data,
        "the output read back differs"
    );
    assert_eq!(
        setup.origin.count(&Method::GET, &setup.bucket, &model_key),
        0
    );
    assert_eq!(metrics.hits("GetObject"), hits + 1);
    setup.stop().await;
}
