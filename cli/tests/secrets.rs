//! S3 credentials come from the standard environment chain and go nowhere else: not into
//! logs (even at `-vv`), error messages, `--format json`, or the database. Each case runs a
//! command that talks to the real S3 server with a recognisable key pair, then greps
//! everything the command left behind for it.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};

mod common;

/// A key pair nobody else uses; the S3 server for tests accepts any.
const ACCESS_KEY_ID: &str = "AKIAKFCACHELEAKCHECK7";
const SECRET_ACCESS_KEY: &str = "kfcacheLeakCheckSecret0123456789abcdefXYZ";

fn with_credentials(cmd: &mut assert_cmd::Command) -> &mut assert_cmd::Command {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
}

/// Fails if `text` (named `what`) holds either half of the key pair.
fn assert_clean(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for secret in [ACCESS_KEY_ID, SECRET_ACCESS_KEY] {
        assert!(
            !text.contains(secret),
            "{what} contains the credential {secret}:\n{text}"
        );
    }
}

fn assert_database_clean(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_clean(&path.display().to_string(), &std::fs::read(&path).unwrap());
        }
    }
}

/// Every `size_bytes` in a prediction's JSON, wherever it is nested.
fn size_bytes_of(json: &serde_json::Value) -> Vec<u64> {
    match json {
        serde_json::Value::Object(map) => map
            .iter()
            .flat_map(|(key, value)| match (key.as_str(), value.as_u64()) {
                ("size_bytes", Some(size)) => vec![size],
                _ => size_bytes_of(value),
            })
            .collect(),
        serde_json::Value::Array(items) => items.iter().flat_map(size_bytes_of).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_stay_out_of_logs_errors_json_and_the_database() {
    let s3 = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let ignite = common::env("KFCACHE_TEST_IGNITE_1");
    let bucket = common::unique("leak").to_lowercase();
    common::create_bucket(&s3, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;

    // The one input that exists, so that the size probe has something to find.
    const INPUT_BYTES: usize = 12_345;
    common::s3_store(&s3, &bucket)
        .put(
            &StorePath::from("data/train.bin"),
            PutPayload::from(vec![7u8; INPUT_BYTES]),
        )
        .await
        .unwrap();

    // A pipeline reading from the bucket, analysed and predicted with sizes probed from S3.
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{generateName: leak-check-}}
spec:
  entrypoint: train
  templates:
    - name: train
      inputs:
        artifacts:
          - name: data
            path: /data/train.bin
            s3: {{bucket: {bucket}, key: data/train.bin}}
      container:
        image: trainer
        resources: {{limits: {{nvidia.com/gpu: 1}}}}
"
        ),
    )
    .unwrap();
    let db_dir = dir.path().join("db");
    std::fs::create_dir_all(&db_dir).unwrap();
    // (arguments, whether the command succeeds)
    for (args, succeeds) in [
        (
            vec![
                "-vv",
                "analyze",
                pipeline.to_str().unwrap(),
                "--format",
                "json",
            ],
            true,
        ),
        (
            vec![
                "-vv",
                "predict",
                pipeline.to_str().unwrap(),
                "--probe-sizes",
                "--format",
                "json",
                "--s3-endpoint",
                &s3,
            ],
            true,
        ),
        // Errors: an object that is not there, and a server that is not there.
        (
            vec![
                "-vv",
                "cache",
                "put",
                &format!("s3://{bucket}/missing/train.bin"),
                "--ignite",
                &ignite,
                "--s3-endpoint",
                &s3,
            ],
            false,
        ),
        (
            vec![
                "-vv",
                "cache",
                "put",
                &format!("s3://{bucket}/missing/train.bin"),
                "--ignite",
                &ignite,
                "--s3-endpoint",
                "http://127.0.0.1:9",
            ],
            false,
        ),
    ] {
        let mut cmd = common::kfcache(&db_dir);
        let out = with_credentials(&mut cmd).args(&args).output().unwrap();
        assert_eq!(
            out.status.success(),
            succeeds,
            "{args:?} exited with {:?}:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_clean(&format!("stdout of {args:?}"), &out.stdout);
        assert_clean(&format!("stderr of {args:?}"), &out.stderr);
        if args[1] == "predict" {
            // The probe really asked the S3 server, with the credentials, for the size.
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                size_bytes_of(&json),
                vec![INPUT_BYTES as u64],
                "the probed size of the input:\n{json:#}"
            );
        }
        ran += 1;
    }

    // The sidecar reading an input that is not cached (from the origin) and one that is not
    // anywhere (an error), with its JSON report.
    let spec = format!(
        r#"{{"pipeline":"leak-check","task":"train","inputs":[{{"name":"data","source":"s3://{bucket}/missing/train.bin","path":"/data/train.bin"}}]}}"#
    );
    let target = dir.path().join("pod");
    let mut cmd = common::kfcache(&db_dir);
    let out = with_credentials(&mut cmd)
        .args([
            "-vv", "sidecar", "init", "--format", "json", "--run", "leak-1",
        ])
        .args(["--spec", &spec, "--target", target.to_str().unwrap()])
        .args(["--ignite", &ignite, "--s3-endpoint", &s3])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a missing input is an error");
    assert_clean("stdout of sidecar init", &out.stdout);
    assert_clean("stderr of sidecar init", &out.stderr);
    ran += 1;

    assert_eq!(ran, 5);
    assert!(
        db_dir.join("kfcache.db").is_file(),
        "the commands wrote the database"
    );
    assert_database_clean(&db_dir);
}
