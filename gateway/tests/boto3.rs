//! The gateway with boto3 (user code, KFP components): reads of a staged object come from
//! the cache with no GET at the origin; uploads (with boto3's default CRC32 checksum) and
//! multipart uploads land at the origin. boto3 is the one installed with moto by
//! `scripts/services.sh` (`.cache/venv-moto`), or `KFCACHE_TEST_PYTHON`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{pattern, Setup, CHUNK};
use hyper::Method;
use object_store::path::Path;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};

fn python() -> PathBuf {
    if let Ok(python) = std::env::var("KFCACHE_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/venv-moto/bin/python");
    assert!(
        venv.exists(),
        "no Python with boto3: run `scripts/services.sh up` (it installs moto and boto3 into \
         .cache/venv-moto) or set KFCACHE_TEST_PYTHON"
    );
    venv
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boto3_reads_from_the_cache_and_writes_to_the_origin() {
    let setup = Setup::start("boto3").await;
    let dir = tempfile::tempdir().unwrap();
    let key = setup.key("inputs/features.npy");
    let data = pattern(4 * CHUNK as usize + 99, 13);
    setup.put_origin(&key, data.clone()).await;
    let manifest = setup.stage(&key).await;
    setup.origin.clear();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"accuracy 0.91\n").unwrap();
    let big = dir.path().join("big.bin");
    let big_data = pattern(17 << 20, 6);
    std::fs::write(&big, &big_data).unwrap();
    let prefix = setup.key("outputs/");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/boto3_client.py");
    let mut command = Command::new(python());
    command
        .arg(script)
        .arg(setup.endpoint())
        .arg(&setup.bucket)
        .arg(&key)
        .arg(&prefix)
        .arg(&small)
        .arg(&big);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["full_len"], data.len());
    assert_eq!(report["full_sha256"], sha256(&data));
    assert_eq!(report["range_sha256"], sha256(&data[1000..2_001_000]));
    assert_eq!(report["etag"].as_str(), manifest.version.etag.as_deref());
    assert_eq!(report["head_len"], data.len());
    assert_eq!(
        report["listed"],
        serde_json::json!([format!("{prefix}big.bin"), format!("{prefix}small.txt")])
    );
    assert_eq!(
        setup.origin.count(&Method::GET, &setup.bucket, &key),
        0,
        "GETs reached the origin: {:?}",
        setup.origin.seen()
    );
    assert_eq!(setup.gateway.metrics().hits("GetObject"), 2);
    let at_origin = setup.at_origin(&format!("{prefix}big.bin")).await;
    assert!(
        at_origin.as_ref() == big_data.as_slice(),
        "the multipart upload differs at the origin"
    );
    assert!(setup
        .moto
        .head(&Path::from(format!("{prefix}small.txt")))
        .await
        .is_err());
    setup.stop().await;
}
