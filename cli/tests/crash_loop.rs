//! kfcache processes killed at random points (SIGKILL: no destructor, no cleanup), against the
//! real 1-node Ignite cluster and moto S3 behind a throttling proxy (so that kills land in the
//! middle of transfers), all on one database and one cache namespace:
//!
//! - `kfcache prefetch` staging a pipeline's inputs,
//! - `kfcache cron --once` staging a scheduled pipeline's and draining the sidecars' events,
//! - `kfcache sidecar init --fill-budget` copying inputs that miss and filling the cache,
//! - `kfcache sidecar watch` publishing events and writing the task's output through.
//!
//! A seeded loop (the seed is printed; `KFCACHE_TEST_SEED` replays one) picks a command and a
//! delay, evicts some of the command's objects so that it has work to do, starts it and kills
//! it. After every kill the database passes `PRAGMA integrity_check` and
//! `foreign_key_check`, every migration is recorded and each table kfcache reads can be read,
//! and `kfcache cache check --verify` finds no manifest naming a missing chunk and no checksum
//! mismatch. At the end each command runs to completion, and every object reads back from the
//! cache equal to its origin (the task's output equal to the file the task wrote).

#![allow(clippy::unwrap_used)]

mod common;
use common::WithoutKfcacheEnv;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kfcache_harness::proxy::{Proxy, ProxyConfig};
use kfcache_ignite::{Client, ClientConfig};
use kfcache_prefetcher::lock::LockRecord;
use kfcache_prefetcher::{
    CacheSink, IgniteSink, IgniteSinkConfig, LayoutConfig, ObjectCache, Space,
};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Kills in the loop: under a second each, about 2 s on a loaded 2-core machine.
const ITERATIONS: usize = 36;
/// The link to S3: slow enough that a prefetch takes about a second.
const BANDWIDTH: f64 = 12e6;
const RUN: &str = "crash-run";
const TASK: &str = "train";
/// The tables kfcache's commands read and write.
const TABLES: &[&str] = &[
    "pipeline",
    "pipeline_version",
    "task",
    "task_edge",
    "data",
    "run",
    "task_run",
    "task_run_artifact",
    "prediction",
    "task_prediction",
    "prefetch_transfer",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Prefetch,
    Cron,
    SidecarInit,
    SidecarWatch,
}

const KINDS: [Kind; 4] = [
    Kind::Prefetch,
    Kind::Cron,
    Kind::SidecarInit,
    Kind::SidecarWatch,
];

fn data(seed: u64, len: usize) -> Vec<u8> {
    common::pattern(len, seed)
}

fn artifacts(bucket: &str, keys: &[String]) -> String {
    keys.iter()
        .enumerate()
        .map(|(n, key)| {
            format!(
                "        - name: in{n}\n          path: /in/in{n}\n          s3:\n            bucket: {bucket}\n            key: {key}\n"
            )
        })
        .collect()
}

/// `prep` (CPU, a minute by the prior) then `train` (GPU) reading `keys`.
fn templates(bucket: &str, keys: &[String], indent: &str) -> String {
    let text = format!(
        r#"entrypoint: main
templates:
  - name: main
    dag:
      tasks:
        - name: prep
          template: prep
        - name: train
          template: train
          depends: prep
  - name: prep
    container:
      image: busybox
  - name: train
    inputs:
      artifacts:
{artifacts}    container:
      image: trainer
      resources:
        limits:
          nvidia.com/gpu: 1
"#,
        artifacts = artifacts(bucket, keys)
    );
    text.lines().map(|l| format!("{indent}{l}\n")).collect()
}

/// A started process, the work it watches (for the watch), and the file its standard error
/// goes to.
type Started = (
    tokio::process::Child,
    Option<tokio::process::Child>,
    PathBuf,
);

struct World {
    dir: tempfile::TempDir,
    ignite: String,
    namespace: String,
    proxy: Proxy,
    cache: ObjectCache<IgniteSink>,
    /// Origin URI → bytes, per command that stages them.
    objects: BTreeMap<Kind, BTreeMap<String, Vec<u8>>>,
    prefetch_file: PathBuf,
    init_spec: String,
    watch_spec: String,
    /// What the watched task writes as its output.
    output: Vec<u8>,
}

impl World {
    async fn new() -> World {
        let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
        let ignite = common::env("KFCACHE_TEST_IGNITE_1");
        let upstream: SocketAddr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("KFCACHE_TEST_S3_ENDPOINT {endpoint:?}: {e}"));
        let bucket = common::unique("crash");
        common::create_bucket(&endpoint, &bucket).await;
        let store = common::s3_store(&endpoint, &bucket);
        let mut objects: BTreeMap<Kind, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        let mut keys: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
        for (kind, count, size) in [
            (Kind::Prefetch, 4, 1_700_000),
            (Kind::Cron, 3, 1_200_000),
            (Kind::SidecarInit, 3, 1_100_000),
        ] {
            for n in 0..count {
                let key = format!("{kind:?}/object-{n}.bin").to_lowercase();
                let bytes = data(kind as u64 * 100 + n, size + 4_099 * n as usize);
                store
                    .put(
                        &StorePath::from(key.as_str()),
                        PutPayload::from(bytes.clone()),
                    )
                    .await
                    .unwrap();
                objects
                    .entry(kind)
                    .or_default()
                    .insert(format!("s3://{bucket}/{key}"), bytes);
                keys.entry(kind).or_default().push(key);
            }
        }
        let namespace = common::unique("crash-loop");
        let client = Client::connect(ClientConfig::from_address_list(&ignite))
            .await
            .unwrap();
        let sink = IgniteSink::open(client, &IgniteSinkConfig::default())
            .await
            .unwrap();
        let cache = ObjectCache::new(
            Arc::new(sink),
            LayoutConfig {
                namespace: namespace.clone(),
                ..LayoutConfig::default()
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();

        let prefetch_file = dir.path().join("adhoc.yaml");
        std::fs::write(
            &prefetch_file,
            format!(
                "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: crash-adhoc-\nspec:\n{}",
                templates(&bucket, &keys[&Kind::Prefetch], "  ")
            ),
        )
        .unwrap();
        let cron_file = dir.path().join("nightly.yaml");
        std::fs::write(
            &cron_file,
            format!(
                "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata:\n  name: crash-nightly\nspec:\n  schedule: \"0 2 * * *\"\n  workflowSpec:\n{}",
                templates(&bucket, &keys[&Kind::Cron], "    ")
            ),
        )
        .unwrap();
        let init_spec = json!({
            "pipeline": "crash-pipeline",
            "template": TASK,
            "inputs": objects[&Kind::SidecarInit]
                .keys()
                .enumerate()
                .map(|(n, uri)| json!({"name": format!("in{n}"), "source": uri, "path": format!("/in/in{n}")}))
                .collect::<Vec<_>>(),
        })
        .to_string();
        let watch_spec = json!({
            "pipeline": "crash-pipeline",
            "template": TASK,
            "outputs": [{"name": "model", "path": "/out/model.bin"}],
        })
        .to_string();
        let world = World {
            ignite,
            namespace,
            proxy: Proxy::start(
                upstream,
                ProxyConfig {
                    bandwidth: Some(BANDWIDTH),
                    ..ProxyConfig::default()
                },
            )
            .await
            .unwrap(),
            cache,
            objects,
            prefetch_file,
            init_spec,
            watch_spec,
            output: data(999, 3_000_000),
            dir,
        };
        // The scheduled pipeline is in the database before the cron runs.
        let out = world
            .local(&["analyze", cron_file.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        world
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("kfcache.db")
    }

    fn target(&self) -> PathBuf {
        self.dir.path().join("pod")
    }

    fn output_uri(&self) -> String {
        kfcache_sidecar::spec::run_output_uri(RUN, TASK, "", "model")
    }

    /// `kfcache ARGS…` on the test's database, with the connection flags.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.local(args);
        cmd.args([
            "--ignite",
            &self.ignite,
            "--key-prefix",
            &self.namespace,
            "--s3-endpoint",
            &self.proxy.endpoint(),
            "--s3-region",
            "us-east-1",
            "--chunk-size",
            "256KiB",
        ]);
        cmd
    }

    /// `kfcache ARGS…` on the test's database.
    fn local(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("kfcache"));
        cmd.current_dir(common::workspace())
            .without_kfcache_env()
            .env("KFCACHE_DB", self.db())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .env("KFCACHE_DEADLINE", "1h")
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    /// The command line of one kind of process.
    fn args(&self, kind: Kind, marker: &str) -> Vec<String> {
        let target = self.target().display().to_string();
        let strings = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match kind {
            Kind::Prefetch => strings(&[
                "prefetch",
                self.prefetch_file.to_str().unwrap(),
                "--budget",
                "1GiB",
                "--progress",
                "json",
            ]),
            Kind::Cron => strings(&[
                "cron",
                "--once",
                "--window",
                "30m",
                "--now",
                "2031-03-10T01:55:00Z",
                "--budget",
                "1GiB",
                "--lock-ttl",
                "2s",
                "--progress",
                "json",
            ]),
            Kind::SidecarInit => strings(&[
                "sidecar",
                "init",
                "--run",
                RUN,
                "--task",
                TASK,
                "--spec",
                &self.init_spec,
                "--target",
                &target,
                "--fill-budget",
                "1GiB",
            ]),
            Kind::SidecarWatch => strings(&[
                "sidecar",
                "watch",
                "--run",
                RUN,
                "--task",
                TASK,
                "--spec",
                &self.watch_spec,
                "--target",
                &target,
                "--detector",
                "proc",
                "--command",
                marker,
                "--metrics-addr",
                "127.0.0.1:0",
            ]),
        }
    }

    /// Starts one kind of process; for the watch, also the work it watches once it watches.
    /// Returns the process, the work, and where its standard error goes.
    async fn start(&self, kind: Kind, n: usize) -> Started {
        self.start_with(kind, n, &[]).await
    }

    /// [`World::start`] with more arguments.
    async fn start_with(&self, kind: Kind, n: usize, extra: &[&str]) -> Started {
        let marker = common::unique(&format!("kfcache-crash-work-{n}"));
        let log = self.dir.path().join(format!("{n}-{kind:?}.log"));
        let mut args = self.args(kind, &marker);
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut cmd = self.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        if kind != Kind::SidecarWatch {
            return (child, None, log);
        }
        // The work starts once the watch watches (it says so with its metrics address).
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("metrics on http://")
        {
            assert!(
                Instant::now() < deadline,
                "the watch did not start in 60 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let output = self.target().join("out/model.bin");
        let source = self.dir.path().join("model.bin");
        let work = tokio::process::Command::new("sh")
            .arg("-c")
            // Long enough for the watch's process-table poll to see it start.
            .arg(format!(
                "sleep 0.3 && mkdir -p {dir} && cp {source} {output}.tmp && mv {output}.tmp {output}",
                dir = output.parent().unwrap().display(),
                source = source.display(),
                output = output.display(),
            ))
            .arg(&marker)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        (child, Some(work), log)
    }

    /// The database after a crash: intact, fully migrated, every table readable.
    async fn check_database(&self) -> BTreeMap<&'static str, i64> {
        let mut db = SqliteConnectOptions::new()
            .filename(self.db())
            .busy_timeout(Duration::from_secs(30))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot open {} after a kill: {e}", self.db().display()));
        let integrity: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
            .fetch_all(&mut db)
            .await
            .unwrap();
        assert_eq!(integrity, [("ok".to_string(),)], "integrity_check");
        let dangling: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
            .fetch_all(&mut db)
            .await
            .unwrap();
        assert!(dangling.is_empty(), "foreign_key_check: {dangling:?}");
        let (failed,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success = 0")
                .fetch_one(&mut db)
                .await
                .unwrap();
        assert_eq!(failed, 0, "a migration is recorded as failed");
        let mut counts = BTreeMap::new();
        for table in TABLES {
            let (rows,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&mut db)
                .await
                .unwrap_or_else(|e| panic!("table {table} cannot be read after a kill: {e}"));
            counts.insert(*table, rows);
        }
        db.close().await.unwrap();
        counts
    }

    /// `kfcache cache check --verify`: no manifest names a missing chunk, nothing corrupt.
    async fn check_cache(&self) -> Value {
        let out = self
            .command(&["cache", "check", "--verify", "--format", "json"])
            .output()
            .await
            .unwrap();
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
        report
    }

    /// Runs one kind of process to its end; it must succeed. Returns its standard error and
    /// how long it ran (for the watch: from the start of the work).
    async fn complete(&self, kind: Kind) -> (String, Duration) {
        self.complete_with(kind, &[]).await
    }

    /// [`World::complete`] with more arguments.
    async fn complete_with(&self, kind: Kind, extra: &[&str]) -> (String, Duration) {
        let started = Instant::now();
        let (child, work, log) = self.start_with(kind, 9999, extra).await;
        let started = if work.is_some() {
            Instant::now()
        } else {
            started
        };
        let status = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{kind:?} did not end in 120 s"))
            .unwrap()
            .status;
        let took = started.elapsed();
        if let Some(work) = work {
            assert!(work.wait_with_output().await.unwrap().status.success());
        }
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "{kind:?} failed ({status}):\n{stderr}");
        (stderr, took)
    }

    /// Waits until no cron holds the namespace's lock: one killed while holding it blocks the
    /// next for the lock's time to live, and would make it stop at once.
    async fn wait_for_cron_lock(&self) {
        let key = format!("{}/lock/cron", self.namespace);
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(bytes) = self.cache.sink().get(Space::Meta, &key).await.unwrap() {
            let record: LockRecord = serde_json::from_slice(&bytes).unwrap();
            if record.expires_at <= chrono::Utc::now() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cron lock is still held after 30 s: {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What one kind of process writes into the cache.
    fn writes(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::SidecarWatch => vec![self.output_uri()],
            other => self.objects[&other].keys().cloned().collect(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_killed_at_random_points_leave_a_consistent_database_and_cache() {
    let seed = std::env::var("KFCACHE_TEST_SEED")
        .ok()
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("KFCACHE_TEST_SEED={s:?}: {e}"))
        })
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("crash loop seed {seed} (replay with KFCACHE_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let world = World::new().await;
    std::fs::write(world.dir.path().join("model.bin"), &world.output).unwrap();

    // How long each command takes when it has everything to write: kills land within that.
    let mut durations = BTreeMap::new();
    for kind in KINDS {
        let (_, took) = world.complete(kind).await;
        durations.insert(kind, took);
        for uri in world.writes(kind) {
            world.cache.evict(&uri).await.unwrap();
        }
    }
    eprintln!("uninterrupted: {durations:?}");

    let started = Instant::now();
    let mut kills: BTreeMap<Kind, (u32, u32)> = BTreeMap::new();
    for n in 0..ITERATIONS {
        let kind = KINDS[rng.gen_range(0..KINDS.len())];
        // Take most of its objects out so that it has something to write.
        for uri in world.writes(kind) {
            if rng.gen_bool(0.8) {
                world.cache.evict(&uri).await.unwrap();
            }
        }
        if kind == Kind::Cron {
            world.wait_for_cron_lock().await;
        }
        let delay = durations[&kind].mul_f64(rng.gen_range(0.0..1.1));
        let (mut child, work, _log) = world.start(kind, n).await;
        tokio::time::sleep(delay).await;
        let running = child.try_wait().unwrap().is_none();
        child.start_kill().unwrap_or_default();
        let status = child.wait().await.unwrap();
        if let Some(mut work) = work {
            let _ = work.start_kill();
            let _ = work.wait().await;
        }
        let entry = kills.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += u32::from(running);
        eprintln!(
            "#{n}: {kind:?} killed after {delay:?} ({})",
            if running {
                "while running".to_string()
            } else {
                format!("had already ended: {status}")
            }
        );
        world.check_database().await;
        world.check_cache().await;
    }
    let looped = started.elapsed();

    // Without a kill every command completes, and what it staged reads back intact.
    let finishing = Instant::now();
    // At its start a prefetch sweeps what crashed writes left (here: however recent).
    world
        .complete_with(Kind::Prefetch, &["--sweep-after", "0"])
        .await;
    // A cron killed while holding the lock holds it for its time to live at most.
    world.wait_for_cron_lock().await;
    let (stderr, _) = world.complete(Kind::Cron).await;
    let uris: Vec<String> = world.objects[&Kind::Cron].keys().cloned().collect();
    assert_eq!(
        world.cache.stat_many(&uris).await.unwrap().len(),
        uris.len(),
        "the cron did not stage its pipeline's inputs:\n{stderr}"
    );
    world.complete(Kind::SidecarInit).await;
    for (n, bytes) in world.objects[&Kind::SidecarInit].values().enumerate() {
        let path = world.target().join(format!("in/in{n}"));
        assert!(
            std::fs::read(&path).unwrap() == *bytes,
            "{} differs from its origin",
            path.display()
        );
    }
    let (stderr, _) = world.complete(Kind::SidecarWatch).await;
    assert!(stderr.contains("wrote 1 output file"), "{stderr}");

    let mut expected: BTreeMap<String, Vec<u8>> = world
        .objects
        .values()
        .flat_map(|o| o.iter().map(|(u, b)| (u.clone(), b.clone())))
        .collect();
    expected.insert(world.output_uri(), world.output.clone());
    let cached: BTreeSet<String> = world
        .cache
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.uri)
        .collect();
    assert_eq!(
        cached,
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "what the cache holds"
    );
    for (uri, bytes) in &expected {
        let (_, read) = world.cache.read(uri).await.unwrap();
        assert!(
            read == *bytes,
            "{uri} reads back other bytes than its origin"
        );
    }
    let counts = world.check_database().await;
    let report = world.check_cache().await;
    let landed: u32 = kills.values().map(|k| k.1).sum();
    eprintln!(
        "crash loop seed {seed}: {ITERATIONS} kills ({landed} while running; per command {kills:?}) in {looped:.1?}, final runs in {:.1?}; {} objects read back equal; rows {counts:?}; cache {report}",
        finishing.elapsed(),
        expected.len(),
    );
    assert_eq!(
        report["orphan_chunks"], 0,
        "the sweep left chunks of killed writes: {report}"
    );
    assert!(
        landed as usize * 2 >= ITERATIONS,
        "most kills should land while the process runs: {kills:?}"
    );
    world.cache.clear().await.unwrap();
}
