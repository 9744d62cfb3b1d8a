//! `kfcache sidecar init|watch` as a pod runs them, against the real Ignite and moto S3
//! servers started by scripts/services.sh, on the GPU training fixture:
//!
//! - init serves a staged input from Ignite (a hit) and an unstaged one from S3 (a miss);
//! - watch sees a real process start and end, serves `/metrics` and `/healthz` meanwhile, and
//!   writes the task's output through; the next task's init reads it from the cache;
//! - `kfcache history drain` records the task run the sidecar saw (a run whose Argo status was
//!   never imported), and the next prediction of that task learns from it;
//! - a task description whose path escapes the target is refused with exit code 2.

#![allow(clippy::unwrap_used)]

mod common;
use common::WithoutKfcacheEnv;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use serde_json::{json, Value};

const FIXTURE: &str = "fixtures/argo/gpu-training-pipeline.yaml";
const STATUS: &str = "fixtures/status/gpu-training-pipeline-x7k2p.yaml";
/// The run the sidecar serves: the one after the imported run, whose status is not imported.
const RUN: &str = "gpu-training-pipeline-q4w8z";

struct Setup {
    db: tempfile::TempDir,
    ignite: String,
    endpoint: String,
    bucket: String,
    namespace: String,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            db: tempfile::tempdir().unwrap(),
            ignite: common::env("KFCACHE_TEST_IGNITE_1"),
            endpoint: common::env("KFCACHE_TEST_S3_ENDPOINT"),
            bucket: common::env("KFCACHE_TEST_S3_BUCKET"),
            namespace: common::unique("sidecar-cli"),
        }
    }

    fn connection(&self) -> Vec<String> {
        [
            "--ignite",
            &self.ignite,
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            "us-east-1",
            "--key-prefix",
            &self.namespace,
        ]
        .map(str::to_string)
        .to_vec()
    }

    fn kfcache(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = common::kfcache(self.db.path());
        cmd.env("XDG_CONFIG_HOME", self.db.path()).args(args);
        cmd
    }

    /// `kfcache ARGS… <connection flags>`.
    fn connected(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.kfcache(args);
        cmd.args(self.connection());
        cmd
    }

    async fn upload(&self, key: &str, data: &[u8]) -> String {
        let store = common::s3_store(&self.endpoint, &self.bucket);
        store
            .put(&StorePath::from(key), PutPayload::from(data.to_vec()))
            .await
            .unwrap();
        format!("s3://{}/{key}", self.bucket)
    }

    fn duration_of(&self, task: &str) -> (f64, String) {
        let out = common::stdout_of(&mut self.kfcache(&[
            "predict",
            "gpu-training-pipeline",
            "-f",
            "json",
        ]));
        let predicted: Value = serde_json::from_str(&out).unwrap();
        let t = predicted["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == task)
            .unwrap_or_else(|| panic!("{task} predicted: {out}"));
        (
            t["duration_s"].as_f64().unwrap(),
            t["duration_source"].as_str().unwrap().to_string(),
        )
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecar_serves_inputs_and_reports_real_times_that_improve_the_next_prediction() {
    let s = Setup::new();
    common::stdout_of(&mut s.kfcache(&["analyze", FIXTURE]));
    common::stdout_of(&mut s.kfcache(&["history", "import", STATUS]));
    let (before, source) = s.duration_of("compute-statistics");
    assert_eq!(source, "history");

    // Inputs: one staged into Ignite, one only in S3.
    let prefix = common::unique("sidecar-cli");
    let staged_data: Vec<u8> = (0..300_000u32).map(|i| (i * 13) as u8).collect();
    let origin_data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 + 1) as u8).collect();
    let staged = s.upload(&format!("{prefix}/train.tar"), &staged_data).await;
    let origin_only = s
        .upload(&format!("{prefix}/labels.csv"), &origin_data)
        .await;
    common::stdout_of(&mut s.connected(&["cache", "put", &staged]));

    let pod = tempfile::tempdir().unwrap();
    let target = pod.path().to_str().unwrap();
    let stats_spec = json!({
        "pipeline": "gpu-training-pipeline",
        "template": "compute-statistics",
        "inputs": [
            {"name": "train", "source": staged, "path": "/data/train.tar"},
            {"name": "labels", "source": origin_only},
        ],
        "outputs": [{"name": "statistics", "path": "/tmp/outputs/statistics/data"}],
    })
    .to_string();
    let out = common::stdout_of(&mut s.connected(&[
        "sidecar",
        "init",
        "--run",
        RUN,
        "--task",
        "compute-statistics",
        "--spec",
        &stats_spec,
        "--target",
        target,
    ]));
    assert!(out.contains("1 hit, 1 miss"), "{out}");
    assert_eq!(
        std::fs::read(pod.path().join("data/train.tar")).unwrap(),
        staged_data
    );
    assert_eq!(
        std::fs::read(pod.path().join("tmp/inputs/labels/data")).unwrap(),
        origin_data
    );

    // The watch, then the work: a process whose command line carries a marker.
    let marker = common::unique("kfcache-work");
    let binary = assert_cmd::cargo::cargo_bin("kfcache");
    let mut watch = Command::new(&binary);
    watch
        .current_dir(common::workspace())
        .without_kfcache_env()
        .env("KFCACHE_DB", s.db.path().join("kfcache.db"))
        .env("XDG_CONFIG_HOME", s.db.path())
        .env("KFCACHE_DEADLINE", "1h")
        .args([
            "sidecar",
            "watch",
            "--run",
            RUN,
            "--task",
            "compute-statistics",
            "--spec",
            &stats_spec,
            "--target",
            target,
            "--detector",
            "proc",
            "--command",
            &marker,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(s.connection())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut watch = watch.spawn().unwrap();
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut metrics_addr = None;
    let mut lines = Vec::new();
    while metrics_addr.is_none() {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "watch exited early: {lines:?}"
        );
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            metrics_addr = Some(rest.trim().trim_end_matches("/metrics").to_string());
        }
        lines.push(line);
    }
    let metrics_addr = metrics_addr.unwrap();
    assert!(http_get(&metrics_addr, "/healthz").contains("ok"));

    let output = pod.path().join("tmp/outputs/statistics/data");
    let work_started = Instant::now();
    let mut work = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sleep 1.5; mkdir -p {dir}; printf 'mean=0.5' > {file}",
            dir = output.parent().unwrap().display(),
            file = output.display()
        ))
        .arg(&marker)
        .spawn()
        .unwrap();
    // While the work runs, the metrics say so.
    let mut running = false;
    while work_started.elapsed() < Duration::from_millis(1200) && !running {
        tokio::time::sleep(Duration::from_millis(100)).await;
        running = http_get(&metrics_addr, "/metrics").contains("kfcache_sidecar_work_running 1");
    }
    assert!(running, "the metrics show the work running");
    work.wait().unwrap();

    let status = watch.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "watch failed: {lines:?}{rest}");
    assert!(rest.contains("work ended"), "{rest}");
    assert!(rest.contains("wrote 1 output file"), "{rest}");

    // The next task reads the output from the cache.
    let next = tempfile::tempdir().unwrap();
    let report_spec = json!({
        "pipeline": "gpu-training-pipeline",
        "template": "report",
        "inputs": [{"name": "statistics", "source": "task://compute-statistics/statistics", "path": "/in/stats"}],
    })
    .to_string();
    let out = common::stdout_of(&mut s.connected(&[
        "sidecar",
        "init",
        "--run",
        RUN,
        "--task",
        "report",
        "--spec",
        &report_spec,
        "--target",
        next.path().to_str().unwrap(),
    ]));
    assert!(out.contains("1 hit, 0 misses"), "{out}");
    assert_eq!(
        std::fs::read(next.path().join("in/stats")).unwrap(),
        b"mean=0.5"
    );

    // Drained into the history, the sidecar's run counts beside the imported one: its task
    // took the 1.5 s of work plus reading its inputs, far less than the imported pod did.
    let out = common::stdout_of(&mut s.connected(&["history", "drain"]));
    assert!(out.contains("1 task runs recorded"), "{out}");
    let (after, source) = s.duration_of("compute-statistics");
    assert_eq!(source, "history");
    assert!(
        after > 1.4 && after < before,
        "the prediction learns the watched run's ~1.5 s: {after:.2}s (the imported pod took {before:.1}s)"
    );
}

#[test]
fn an_escaping_path_is_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let spec = json!({
        "pipeline": "p",
        "template": "t",
        "inputs": [{"name": "x", "source": "s3://b/k", "path": "/../../etc/passwd"}],
    })
    .to_string();
    let out = common::kfcache(dir.path())
        .env("KFCACHE_IGNITE", "127.0.0.1:1")
        .args([
            "sidecar",
            "init",
            "--run",
            "wf-1",
            "--task",
            "t",
            "--spec",
            &spec,
            "--target",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("escapes the target directory"), "{stderr}");
    assert!(stderr.contains("\"x\""), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
