//! The S3 origin misbehaving, against the real moto S3 server and the real 1-node Ignite
//! cluster started by scripts/services.sh, with the harness's fault proxy between kfcache and
//! moto (`--s3-endpoint` points at the proxy; moto itself is never stopped):
//!
//! - a slow link (bandwidth cap and latency): `kfcache cache put` and `kfcache sidecar init`
//!   on a cache miss still finish, with the origin's exact bytes;
//! - intermittent 5xx answers: retried, and `cache put`, `sidecar init --fill-budget` and
//!   `kfcache prefetch` succeed with the exact bytes;
//! - a server that answers 5xx to everything, refuses connections or hangs, from the first
//!   request or in the middle of a transfer: each request is tried at most
//!   `1 + --source-max-retries` times (counted by the proxy), a hung request is given up after
//!   `--source-request-timeout`, the command exits non-zero with an error that names the URI
//!   and the cause, and nothing partial is left: no manifest for the object, `kfcache cache
//!   check --verify` consistent with no stray chunks, no file (finished or temporary) at the
//!   sidecar's target.

#![allow(clippy::unwrap_used)]

mod common;
use common::WithoutKfcacheEnv;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use kfcache_harness::proxy::{Fault, Proxy, ProxyConfig, ProxyStats};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use serde_json::{json, Value};

/// Retries of one source request that every command here is given (`--source-max-retries`).
const MAX_RETRIES: u64 = 2;
/// Tries of one request: the first and its retries.
const TRIES: u64 = 1 + MAX_RETRIES;
/// `--source-request-timeout`: a hung request is given up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// object_store's longest pause between two tries of a request (its `BackoffConfig`).
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Deterministic bytes that differ from object to object and from chunk to chunk.
fn data(seed: u64, len: usize) -> Vec<u8> {
    common::pattern(len, seed)
}

/// One test's world: a bucket of its own on moto, a cache namespace of its own, a database,
/// and a fault proxy in front of moto.
struct Faulty {
    dir: tempfile::TempDir,
    ignite: String,
    bucket: String,
    namespace: String,
    store: object_store::aws::AmazonS3,
    proxy: Proxy,
}

impl Faulty {
    async fn start(name: &str, config: ProxyConfig) -> Faulty {
        let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
        let ignite = common::env("KFCACHE_TEST_IGNITE_1");
        let upstream: SocketAddr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("KFCACHE_TEST_S3_ENDPOINT {endpoint:?}: {e}"));
        let bucket = common::unique(&format!("fault-{name}"));
        common::create_bucket(&endpoint, &bucket).await;
        let store = common::s3_store(&endpoint, &bucket);
        Faulty {
            dir: tempfile::tempdir().unwrap(),
            ignite,
            namespace: common::unique(&format!("fault-s3-{name}")),
            bucket,
            store,
            proxy: Proxy::start(upstream, config).await.unwrap(),
        }
    }

    /// Puts `bytes` at `key` on moto directly (not through the proxy); returns its URI.
    async fn upload(&self, key: &str, bytes: &[u8]) -> String {
        self.store
            .put(&StorePath::from(key), PutPayload::from(bytes.to_vec()))
            .await
            .unwrap();
        format!("s3://{}/{key}", self.bucket)
    }

    /// `kfcache ARGS…` against Ignite and the proxy, with the test's retry budget.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("kfcache"));
        cmd.current_dir(common::workspace())
            .without_kfcache_env()
            .env("KFCACHE_DB", self.dir.path().join("kfcache.db"))
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .args(args)
            .args([
                "--ignite",
                &self.ignite,
                "--key-prefix",
                &self.namespace,
                "--s3-endpoint",
                &self.proxy.endpoint(),
                "--s3-region",
                "us-east-1",
                "--source-max-retries",
                &MAX_RETRIES.to_string(),
                "--source-request-timeout",
                &format!("{}s", REQUEST_TIMEOUT.as_secs_f64()),
                "--source-retry-timeout",
                "60s",
                "--source-connect-timeout",
                "1s",
                "--chunk-size",
                "256KiB",
            ]);
        cmd
    }

    /// Runs `kfcache ARGS…` off the runtime that drives the proxy.
    async fn run(&self, args: &[&str]) -> Output {
        self.spawn(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .await
            .unwrap()
    }

    /// Runs `kfcache ARGS…`, requires success, returns its standard output.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kfcache {args:?} failed ({:?}):\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The cached object's bytes, through `kfcache cache get` (which checks every checksum).
    async fn cached_bytes(&self, uri: &str) -> Vec<u8> {
        let file = self.dir.path().join("got.bin");
        self.ok(&["cache", "get", uri, "-o", file.to_str().unwrap()])
            .await;
        std::fs::read(file).unwrap()
    }

    async fn is_cached(&self, uri: &str) -> bool {
        let out = self.run(&["cache", "stat", uri]).await;
        match out.status.code() {
            Some(0) => true,
            Some(1) if String::from_utf8_lossy(&out.stderr).contains("is not in the cache") => {
                false
            }
            code => panic!(
                "cache stat {uri} ended with {code:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// `kfcache cache check --verify`: consistent, and every chunk belongs to a manifest.
    async fn assert_consistent(&self, manifests: u64) {
        let out = self
            .run(&["cache", "check", "--verify", "--format", "json"])
            .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "cache check printed no JSON ({e}):\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(out.status.code(), Some(0), "cache check: {report}");
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["missing_chunks"], json!([]), "{report}");
        assert_eq!(report["corrupt"], json!([]), "{report}");
        assert_eq!(report["manifests"], manifests, "{report}");
        assert_eq!(
            report["orphan_chunks"], 0,
            "a failed write left chunks behind: {report}"
        );
    }

    /// Starts `kfcache ARGS…` off the runtime that drives the proxy; join for its output.
    fn spawn(&self, args: &[String]) -> tokio::task::JoinHandle<Output> {
        let mut cmd = self.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || cmd.output().expect("kfcache runs"))
    }

    /// The arguments of `kfcache sidecar init` of one input `uri` to `/in/NAME` under a fresh
    /// target directory, and the input's destination.
    fn sidecar_args(&self, uri: &str, name: &str, extra: &[&str]) -> (Vec<String>, PathBuf) {
        let target = self.dir.path().join(format!("pod-{name}"));
        std::fs::create_dir_all(&target).unwrap();
        let spec = json!({
            "pipeline": "fault-pipeline",
            "template": "train",
            "inputs": [{"name": name, "source": uri, "path": format!("/in/{name}")}],
        })
        .to_string();
        let mut args: Vec<String> = [
            "sidecar",
            "init",
            "--run",
            "fault-run-1",
            "--task",
            "train",
            "--spec",
            &spec,
            "--target",
            target.to_str().unwrap(),
        ]
        .map(str::to_string)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        (args, target.join("in").join(name))
    }

    /// Runs `kfcache sidecar init` (see [`Faulty::sidecar_args`]).
    async fn sidecar_init(&self, uri: &str, name: &str, extra: &[&str]) -> (Output, PathBuf) {
        let (args, path) = self.sidecar_args(uri, name, extra);
        (self.spawn(&args).await.unwrap(), path)
    }

    async fn finish(self) {
        let _ = self.run(&["cache", "clear"]).await;
        self.proxy.shutdown().await;
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// What the proxy saw between two snapshots.
fn delta(before: &ProxyStats, after: &ProxyStats) -> ProxyStats {
    ProxyStats {
        connections: after.connections - before.connections,
        requests: after.requests - before.requests,
        bytes_down: after.bytes_down - before.bytes_down,
        bytes_up: after.bytes_up - before.bytes_up,
        faults_injected: after.faults_injected - before.faults_injected,
    }
}

/// Waits until the proxy has forwarded `bytes` more bytes to clients than in `since`.
async fn wait_for_download(proxy: &Proxy, since: &ProxyStats, bytes: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.stats().bytes_down < since.bytes_down + bytes {
        assert!(
            Instant::now() < deadline,
            "{what}: fewer than {bytes} bytes came through the proxy in 60 s ({:?})",
            delta(since, &proxy.stats())
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The error names the object and the cause.
fn assert_clear_error(out: &Output, uri: &str, cause: &[&str]) {
    let text = stderr(out);
    assert!(
        !out.status.success(),
        "succeeded against a failing origin:\n{text}"
    );
    assert!(text.contains(uri), "the error does not name {uri}:\n{text}");
    assert!(
        cause.iter().any(|c| text.contains(c)),
        "the error does not give the cause (one of {cause:?}):\n{text}"
    );
}

/// A workflow whose GPU task reads `inputs` (name, URI).
fn pipeline(bucket: &str, inputs: &[(&str, &str)]) -> String {
    let artifacts: String = inputs
        .iter()
        .map(|(name, key)| {
            format!(
                "          - name: {name}\n            path: /in/{name}\n            s3:\n              bucket: {bucket}\n              key: {key}\n"
            )
        })
        .collect();
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: fault-train-
spec:
  entrypoint: main
  templates:
    - name: main
      dag:
        tasks:
          - name: train
            template: train
    - name: train
      inputs:
        artifacts:
{artifacts}      container:
        image: trainer
        resources:
          limits:
            nvidia.com/gpu: 1
"#
    )
}

// A slow origin (a capped, distant link) delays staging but never changes a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_still_delivers_the_exact_bytes() {
    let t = Faulty::start(
        "slow",
        ProxyConfig {
            bandwidth: Some(8e6),
            latency: Duration::from_millis(40),
            ..ProxyConfig::default()
        },
    )
    .await;
    let staged = data(1, (3 << 20) + 4_321);
    let missed = data(2, (2 << 20) + 77);
    let staged_uri = t.upload("slow/staged.bin", &staged).await;
    let missed_uri = t.upload("slow/missed.bin", &missed).await;

    let before = t.proxy.stats();
    t.ok(&["cache", "put", &staged_uri]).await;
    assert!(t.cached_bytes(&staged_uri).await == staged, "cache get");

    let (out, path) = t.sidecar_init(&missed_uri, "missed", &[]).await;
    assert!(out.status.success(), "sidecar init: {}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 hits, 1 miss"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(std::fs::read(&path).unwrap() == missed, "sidecar init");
    // Both objects came over the slow link.
    let seen = delta(&before, &t.proxy.stats());
    eprintln!("slow link, cache put + sidecar init: {seen:?}");
    assert!(
        seen.bytes_down >= (staged.len() + missed.len()) as u64,
        "{seen:?}"
    );
    t.assert_consistent(1).await;
    t.finish().await;
}

// Every third request answered 503 (S3's SlowDown / a failing front end): the retries hide it
// from the user of every command that reads the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermittent_5xx_answers_are_retried_until_the_bytes_arrive() {
    let t = Faulty::start("flaky", ProxyConfig::default()).await;
    let objects: Vec<(String, Vec<u8>)> = (0..4u64)
        .map(|n| {
            (
                format!("flaky/{n}.bin"),
                data(10 + n, (1 << 20) + 1_000 * n as usize),
            )
        })
        .collect();
    let mut uris = Vec::new();
    for (key, bytes) in &objects {
        uris.push(t.upload(key, bytes).await);
    }
    t.proxy
        .set_fault(Fault::StatusFraction {
            status: 503,
            fraction: 1.0 / 3.0,
        })
        .unwrap();

    // cache put.
    let before = t.proxy.stats();
    t.ok(&["cache", "put", &uris[0]]).await;
    let put = delta(&before, &t.proxy.stats());
    assert!(put.faults_injected > 0, "no fault was injected: {put:?}");
    // sidecar init on a miss, filling the cache as it copies.
    let before = t.proxy.stats();
    let (out, path) = t
        .sidecar_init(&uris[1], "flaky", &["--fill-budget", "64MiB"])
        .await;
    assert!(out.status.success(), "sidecar init: {}", stderr(&out));
    assert!(
        std::fs::read(&path).unwrap() == objects[1].1,
        "sidecar init"
    );
    let init = delta(&before, &t.proxy.stats());
    assert!(init.faults_injected > 0, "no fault was injected: {init:?}");
    // prefetch of a pipeline that reads the other two.
    let workflow = t.dir.path().join("flaky.yaml");
    std::fs::write(
        &workflow,
        pipeline(&t.bucket, &[("a", &objects[2].0), ("b", &objects[3].0)]),
    )
    .unwrap();
    let before = t.proxy.stats();
    let out = t
        .ok(&["prefetch", workflow.to_str().unwrap(), "--budget", "1GiB"])
        .await;
    let prefetch = delta(&before, &t.proxy.stats());
    assert!(
        prefetch.faults_injected > 0,
        "no fault was injected: {prefetch:?}"
    );
    let summary = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in:\n{out}"));
    assert_eq!(summary["objects_staged"], 2, "{out}");
    assert_eq!(summary["failed"], 0, "{out}");

    // Every object is in the cache with the origin's bytes.
    t.proxy.set_fault(Fault::None).unwrap();
    for (uri, (_, bytes)) in uris.iter().zip(&objects) {
        assert!(t.cached_bytes(uri).await == *bytes, "{uri}");
    }
    eprintln!(
        "faults injected: cache put {}, sidecar init {}, prefetch {}",
        put.faults_injected, init.faults_injected, prefetch.faults_injected
    );
    t.assert_consistent(4).await;
    t.finish().await;
}

// An origin that answers 503 to everything: a bounded number of tries, a clear error, and
// nothing half-done — whether the fault starts before the first request or in the middle of a
// transfer, when chunks (put) and part of the file (init) are already written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_5xx_fails_within_the_retry_budget_leaving_nothing_partial() {
    let t = Faulty::start(
        "down",
        ProxyConfig {
            bandwidth: Some(4e6),
            ..ProxyConfig::default()
        },
    )
    .await;
    let small = data(20, 300_000);
    // 48 chunks of 256 KiB: most reads start after the fault, whatever the timing.
    let large = data(21, 12 << 20);
    let larger = data(22, 12 << 20);
    let small_uri = t.upload("down/small.bin", &small).await;
    let large_uri = t.upload("down/large.bin", &large).await;
    let larger_uri = t.upload("down/larger.bin", &larger).await;
    let cause = ["503", "Service Unavailable"];

    // From the first request: `cache put` heads the object, tried TRIES times.
    t.proxy.set_fault(Fault::Status(503)).unwrap();
    let before = t.proxy.stats();
    let out = t.run(&["cache", "put", &small_uri]).await;
    let seen = delta(&before, &t.proxy.stats());
    eprintln!("503 from the start, cache put: {seen:?}");
    assert_clear_error(&out, &small_uri, &cause);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        (2..=TRIES).contains(&seen.requests),
        "one request tried {} times, budget {TRIES}: {seen:?}",
        seen.requests
    );
    assert!(!t.is_cached(&small_uri).await);

    // `sidecar init`: the object is headed, then listed as a directory; each tried TRIES times.
    let before = t.proxy.stats();
    let (out, path) = t
        .sidecar_init(&small_uri, "small", &["--fill-budget", "64MiB"])
        .await;
    let seen = delta(&before, &t.proxy.stats());
    eprintln!("503 from the start, sidecar init: {seen:?}");
    assert_clear_error(&out, &small_uri, &cause);
    assert!(
        (2..=2 * TRIES).contains(&seen.requests),
        "two requests tried {} times in all, budget {}: {seen:?}",
        seen.requests,
        2 * TRIES
    );
    assert!(!path.exists());
    assert_eq!(files_under(path.parent().unwrap()), Vec::<PathBuf>::new());
    assert!(!t.is_cached(&small_uri).await);

    // In the middle of `cache put`: the first chunks are in Ignite when the origin fails.
    t.proxy.set_fault(Fault::None).unwrap();
    let before = t.proxy.stats();
    let put = t.spawn(&["cache".to_string(), "put".to_string(), large_uri.clone()]);
    wait_for_download(&t.proxy, &before, 5 << 19, "cache put").await;
    t.proxy.set_fault(Fault::Status(503)).unwrap();
    let at_fault = t.proxy.stats();
    let out = put.await.unwrap();
    let after_fault = delta(&at_fault, &t.proxy.stats());
    assert_clear_error(&out, &large_uri, &cause);
    let chunks = (large.len() as u64).div_ceil(256 << 10);
    assert!(
        after_fault.requests <= chunks * TRIES,
        "{} requests after the fault for {chunks} chunks, budget {TRIES} each: {after_fault:?}",
        after_fault.requests
    );
    assert!(!t.is_cached(&large_uri).await);
    eprintln!("503 mid-transfer of cache put: {after_fault:?}");

    // In the middle of `sidecar init --fill-budget`: the first 8 MiB read is in the file
    // being written and in the cache when the second read fails.
    t.proxy.set_fault(Fault::None).unwrap();
    let before = t.proxy.stats();
    let (args, path) = t.sidecar_args(&larger_uri, "larger", &["--fill-budget", "64MiB"]);
    let init = t.spawn(&args);
    // Fail the requests that start once 6 MiB have arrived: the fault lands mid-transfer,
    // with part of the object already in the file being written and in the cache (whether
    // the read under way then completes or is cancelled with the failing one is a race).
    wait_for_download(&t.proxy, &before, 6 << 20, "sidecar init").await;
    t.proxy.set_fault(Fault::Status(503)).unwrap();
    let at_fault = delta(&before, &t.proxy.stats());
    let out = init.await.unwrap();
    assert!(
        at_fault.bytes_down >= 6 << 20 && (at_fault.bytes_down as usize) < larger.len(),
        "the fault did not come mid-transfer: {at_fault:?}"
    );
    assert_clear_error(&out, &larger_uri, &cause);
    assert_eq!(files_under(path.parent().unwrap()), Vec::<PathBuf>::new());
    assert!(!t.is_cached(&larger_uri).await);

    t.proxy.set_fault(Fault::None).unwrap();
    t.assert_consistent(0).await;
    t.finish().await;
}

// A stopped server (connections refused or reset at once): retried within the budget, then a
// clear error; nothing staged, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_fail_within_the_retry_budget() {
    let t = Faulty::start("refused", ProxyConfig::default()).await;
    let bytes = data(30, 500_000);
    let uri = t.upload("refused/object.bin", &bytes).await;
    t.proxy.set_fault(Fault::Refuse).unwrap();
    let cause = ["connection", "Connection", "connect"];

    let before = t.proxy.stats();
    let out = t.run(&["cache", "put", &uri]).await;
    let seen = delta(&before, &t.proxy.stats());
    eprintln!("refused, cache put: {seen:?}");
    assert_clear_error(&out, &uri, &cause);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        (2..=TRIES).contains(&seen.connections),
        "one request tried {} times, budget {TRIES}: {seen:?}",
        seen.connections
    );
    assert!(!t.is_cached(&uri).await);

    let before = t.proxy.stats();
    let (out, path) = t
        .sidecar_init(&uri, "object", &["--fill-budget", "64MiB"])
        .await;
    let seen = delta(&before, &t.proxy.stats());
    eprintln!("refused, sidecar init: {seen:?}");
    assert_clear_error(&out, &uri, &cause);
    assert!(
        (2..=2 * TRIES).contains(&seen.connections),
        "two requests tried {} times in all, budget {}: {seen:?}",
        seen.connections,
        2 * TRIES
    );
    assert_eq!(files_under(path.parent().unwrap()), Vec::<PathBuf>::new());
    assert!(!t.is_cached(&uri).await);

    // Back up: the same commands succeed.
    t.proxy.set_fault(Fault::None).unwrap();
    t.ok(&["cache", "put", &uri]).await;
    assert!(t.cached_bytes(&uri).await == bytes);
    t.assert_consistent(1).await;
    t.finish().await;
}

// A hung server (accepts, then sends nothing): each try is given up after the request timeout,
// so the command fails within the budget instead of hanging — also when the server hangs in
// the middle of a response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_origin_times_out_within_the_retry_budget() {
    let t = Faulty::start(
        "stalled",
        ProxyConfig {
            bandwidth: Some(4e6),
            ..ProxyConfig::default()
        },
    )
    .await;
    let small = data(40, 200_000);
    let large = data(41, 4 << 20);
    let small_uri = t.upload("stalled/small.bin", &small).await;
    let large_uri = t.upload("stalled/large.bin", &large).await;
    let cause = ["timed out", "timeout", "Timeout"];
    // At most TRIES tries of REQUEST_TIMEOUT each with a backoff between them, plus the
    // process's own start and the cache's answers.
    let budget = REQUEST_TIMEOUT * TRIES as u32 + MAX_BACKOFF.min(Duration::from_secs(2)) * 2;
    let slack = Duration::from_secs(20);

    t.proxy.set_fault(Fault::Stall).unwrap();
    let before = t.proxy.stats();
    let started = Instant::now();
    let out = t.run(&["cache", "put", &small_uri]).await;
    let took = started.elapsed();
    let seen = delta(&before, &t.proxy.stats());
    eprintln!("stalled, cache put: {seen:?}");
    assert_clear_error(&out, &small_uri, &cause);
    assert!(
        (2..=TRIES).contains(&seen.requests),
        "one request tried {} times, budget {TRIES}: {seen:?}",
        seen.requests
    );
    assert!(
        took >= REQUEST_TIMEOUT * 2 && took < budget + slack,
        "a stalled origin took {took:?} to fail (budget {budget:?})"
    );
    assert!(!t.is_cached(&small_uri).await);

    let before = t.proxy.stats();
    let started = Instant::now();
    let (out, path) = t.sidecar_init(&small_uri, "small", &[]).await;
    let took = started.elapsed();
    let seen = delta(&before, &t.proxy.stats());
    eprintln!("stalled, sidecar init: {seen:?}");
    assert_clear_error(&out, &small_uri, &cause);
    assert!(
        seen.requests <= 2 * TRIES,
        "two requests tried {} times in all, budget {}: {seen:?}",
        seen.requests,
        2 * TRIES
    );
    assert!(
        took < budget * 2 + slack,
        "a stalled origin took {took:?} to fail"
    );
    assert_eq!(files_under(path.parent().unwrap()), Vec::<PathBuf>::new());

    // Hung in the middle of `cache put`, with chunks already in Ignite.
    t.proxy.set_fault(Fault::None).unwrap();
    let before = t.proxy.stats();
    let put = t.spawn(&["cache".to_string(), "put".to_string(), large_uri.clone()]);
    wait_for_download(&t.proxy, &before, 5 << 19, "cache put").await;
    t.proxy.set_fault(Fault::Stall).unwrap();
    let stalled_at = Instant::now();
    let out = put.await.unwrap();
    let took = stalled_at.elapsed();
    assert_clear_error(&out, &large_uri, &cause);
    assert!(
        took < budget + slack,
        "a transfer hung mid-way took {took:?} to fail (budget {budget:?})"
    );
    assert!(!t.is_cached(&large_uri).await);

    t.proxy.set_fault(Fault::None).unwrap();
    t.assert_consistent(0).await;
    t.finish().await;
}
