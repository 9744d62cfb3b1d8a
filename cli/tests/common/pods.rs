//! Pipeline pods for the Ignite fault and load tests: a dataset in moto S3, a one-task GPU
//! pipeline that reads it (staged by `kfcache prefetch`, the path users run), and
//! `kfcache sidecar init` run the way an init container runs it, its files checked against
//! the origin's bytes.
//!
//! Included by the test binaries that use it as `#[path = "common/pods.rs"] mod pods;` next
//! to `mod common;`, so the other test binaries do not compile it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::WithoutKfcacheEnv;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use serde_json::{json, Value};

pub use crate::common::pattern;

/// The objects a task reads, as uploaded to the origin.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub bucket: String,
    /// A directory input: every object under `s3://BUCKET/shards/`.
    pub shards: Vec<String>,
    /// Single-object inputs.
    pub models: Vec<String>,
    /// URI → the origin's bytes.
    pub bytes: BTreeMap<String, Vec<u8>>,
}

impl Dataset {
    /// Uploads `shards` objects of the given sizes under `shards/` and `models` large ones,
    /// to a new bucket of its own.
    pub async fn upload(endpoint: &str, shards: &[usize], models: &[usize]) -> Dataset {
        let bucket = crate::common::unique("kfcache-pods").to_lowercase();
        crate::common::create_bucket(endpoint, &bucket).await;
        let store = crate::common::s3_store(endpoint, &bucket);
        let mut dataset = Dataset {
            bucket: bucket.clone(),
            shards: Vec::new(),
            models: Vec::new(),
            bytes: BTreeMap::new(),
        };
        let named = shards
            .iter()
            .enumerate()
            .map(|(i, size)| (format!("shards/shard-{i:03}.bin"), *size, true))
            .chain(
                models
                    .iter()
                    .enumerate()
                    .map(|(i, size)| (format!("models/model-{i}.bin"), *size, false)),
            );
        for (seed, (key, size, shard)) in named.enumerate() {
            let data = pattern(size, seed as u64 + 1);
            store
                .put(
                    &StorePath::from(key.as_str()),
                    PutPayload::from(data.clone()),
                )
                .await
                .unwrap_or_else(|e| panic!("upload {key} to {bucket}: {e}"));
            let uri = format!("s3://{bucket}/{key}");
            if shard {
                dataset.shards.push(uri.clone());
            } else {
                dataset.models.push(uri.clone());
            }
            dataset.bytes.insert(uri, data);
        }
        dataset
    }

    pub fn total_bytes(&self) -> u64 {
        self.bytes.values().map(|b| b.len() as u64).sum()
    }

    /// A one-task Argo Workflow whose GPU task reads the dataset, written into `dir`.
    pub fn pipeline(&self, dir: &Path) -> PathBuf {
        let mut artifacts = format!(
            "          - name: shards\n            path: /data/shards\n            s3:\n              bucket: {}\n              key: shards\n",
            self.bucket
        );
        for (i, _) in self.models.iter().enumerate() {
            artifacts.push_str(&format!(
                "          - name: model-{i}\n            path: /data/model-{i}.bin\n            s3:\n              bucket: {}\n              key: models/model-{i}.bin\n",
                self.bucket
            ));
        }
        let yaml = format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: pods-\nspec:\n  entrypoint: main\n  templates:\n    - name: main\n      dag:\n        tasks:\n          - name: train\n            template: train\n    - name: train\n      inputs:\n        artifacts:\n{artifacts}      container:\n        image: trainer:1\n        command: [python, train.py]\n        resources:\n          limits:\n            nvidia.com/gpu: 1\n"
        );
        let path = dir.join("pipeline.yaml");
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// The task description `kfcache inject` would hand the init container.
    pub fn task_spec(&self) -> String {
        let mut inputs = vec![json!({
            "name": "shards",
            "source": format!("s3://{}/shards", self.bucket),
            "path": "/data/shards",
        })];
        for (i, uri) in self.models.iter().enumerate() {
            inputs.push(json!({"name": format!("model-{i}"), "source": uri, "path": format!("/data/model-{i}.bin")}));
        }
        json!({"pipeline": "pods", "template": "train", "inputs": inputs}).to_string()
    }
}

/// `kfcache ARGS…` as the tests run it: no config file, no inherited settings, its own
/// database, stdout and stderr captured.
pub fn kfcache(db_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("kfcache"));
    cmd.current_dir(crate::common::workspace())
        .without_kfcache_env()
        .env("KFCACHE_DB", db_dir.join("kfcache.db"))
        .env("XDG_CONFIG_HOME", db_dir)
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Connection flags: Ignite at `ignite`, S3 at `endpoint`, keys under `namespace`.
pub fn connection(ignite: &str, endpoint: &str, namespace: &str) -> Vec<String> {
    [
        "--ignite",
        ignite,
        "--s3-endpoint",
        endpoint,
        "--s3-region",
        "us-east-1",
        "--namespace",
        namespace,
    ]
    .map(str::to_string)
    .to_vec()
}

/// `kfcache sidecar init -f json` for `spec` into `target`, with `connection` and `extra`.
pub fn init_command(
    db_dir: &Path,
    spec: &str,
    target: &Path,
    connection: &[String],
    extra: &[&str],
) -> Command {
    let target = target.to_str().expect("UTF-8 temporary directory");
    let mut cmd = kfcache(
        db_dir,
        &[
            "sidecar", "init", "--run", "pods-run", "--task", "train", "--spec", spec, "--target",
            target, "-f", "json",
        ],
    );
    cmd.args(connection).args(extra);
    cmd
}

/// One finished `sidecar init`.
#[derive(Debug)]
pub struct InitRun {
    pub output: Output,
    /// From spawn to exit: the task's time to ready.
    pub elapsed: Duration,
    pub target: tempfile::TempDir,
}

impl InitRun {
    /// Runs `init_command` into a fresh target directory and waits for it.
    pub fn run(db_dir: &Path, spec: &str, connection: &[String], extra: &[&str]) -> InitRun {
        let target = tempfile::tempdir().expect("temporary directory");
        let started = Instant::now();
        let output = init_command(db_dir, spec, target.path(), connection, extra)
            .output()
            .expect("kfcache runs");
        InitRun {
            output,
            elapsed: started.elapsed(),
            target,
        }
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Requires success and checks every file against the origin: see [`check_report`].
    pub fn check(&self, dataset: &Dataset) -> Outcomes {
        assert!(
            self.output.status.success(),
            "sidecar init failed ({:?}) after {:.1?}:\n{}",
            self.output.status.code(),
            self.elapsed,
            self.stderr()
        );
        let report: Value = serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            panic!(
                "sidecar init printed no JSON report ({e}):\n{}\n{}",
                String::from_utf8_lossy(&self.output.stdout),
                self.stderr()
            )
        });
        check_report(&report, dataset, self.target.path())
    }
}

/// Hits and misses of one init, with the misses' reasons.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    pub hits: usize,
    pub misses: Vec<String>,
    pub bytes: u64,
}

/// Every object of `dataset` was materialised exactly once under `target`, as a hit or a miss,
/// and every file equals the origin's bytes.
pub fn check_report(report: &Value, dataset: &Dataset, target: &Path) -> Outcomes {
    let files = report["files"].as_array().expect("report has files");
    let mut seen = BTreeMap::new();
    let mut outcomes = Outcomes::default();
    for file in files {
        let uri = file["uri"].as_str().expect("file has a uri").to_string();
        let path = PathBuf::from(file["path"].as_str().expect("file has a path"));
        assert!(
            path.starts_with(target),
            "{uri} written outside the target: {}",
            path.display()
        );
        match file["outcome"].as_str() {
            Some("hit") => outcomes.hits += 1,
            Some("miss") => outcomes
                .misses
                .push(file["reason"].as_str().unwrap_or_default().to_string()),
            other => panic!("{uri}: outcome {other:?} is neither a hit nor a miss: {file}"),
        }
        let expected = dataset
            .bytes
            .get(&uri)
            .unwrap_or_else(|| panic!("the report names {uri}, which the dataset lacks"));
        let written =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{uri}: {}: {e}", path.display()));
        assert!(
            written == *expected,
            "{uri} at {} differs from the origin ({} bytes written, {} expected; outcome {})",
            path.display(),
            written.len(),
            expected.len(),
            file["outcome"]
        );
        outcomes.bytes += written.len() as u64;
        *seen.entry(uri).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> = dataset.bytes.keys().map(|u| (u.clone(), 1)).collect();
    assert_eq!(seen, expected, "every input materialised exactly once");
    outcomes
}

/// Percentile `p` (0..=100) of `values`, as the benchmarks compute it; `NaN` for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    kfcache_harness::stats::percentile(values, p)
}
