//! `kfcache cron` against the real Ignite and moto S3 servers started by scripts/services.sh:
//!
//! - the cron stages scheduled pipelines ahead of time: a CronWorkflow in New York due within
//!   the window gets the inputs of its tasks that start within the window staged, a later
//!   task's and a later pipeline's are not; what a finished run read is evicted unless a lease
//!   pins it;
//! - two crons at once: one stages, the other reports the lock and exits 0;
//! - the compare-and-set operations and the lock they carry, on a real cluster.

#![allow(clippy::unwrap_used)]

mod common;
use common::WithoutKfcacheEnv;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kfcache_ignite::{Client, ClientConfig};
use kfcache_prefetcher::lock::{self, Acquisition, Renewal};
use kfcache_prefetcher::{
    lease, CacheSink, IgniteSink, IgniteSinkConfig, LayoutConfig, ObjectCache, Space,
};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use serde_json::Value;

async fn upload(endpoint: &str, bucket: &str, objects: &[(&str, usize)]) {
    common::create_bucket(endpoint, bucket).await;
    let store = common::s3_store(endpoint, bucket);
    for (n, (key, bytes)) in objects.iter().enumerate() {
        let data: Vec<u8> = (0..*bytes).map(|i| (i * 13 + n) as u8).collect();
        store
            .put(&StorePath::from(*key), PutPayload::from(data))
            .await
            .unwrap();
    }
}

/// An S3 input artifact of a template.
fn s3_input(bucket: &str, name: &str, key: &str) -> String {
    format!(
        "          - name: {name}\n            path: /in/{name}\n            s3:\n              bucket: {bucket}\n              key: {key}\n"
    )
}

/// A CronWorkflow: `prep` (CPU, 60 s by the prior) then `train` (GPU, reads `train_key`) then
/// `evaluate` (GPU, reads `eval_key`, starts about 11 minutes after the run).
fn nightly(bucket: &str, schedule: &str, timezone: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata:
  name: nightly-train
spec:
  schedule: "{schedule}"
  timezone: {timezone}
  workflowSpec:
    entrypoint: main
    templates:
      - name: main
        dag:
          tasks:
            - name: prep
              template: prep
            - name: train
              template: train
              depends: prep
            - name: evaluate
              template: evaluate
              depends: train
      - name: prep
        container:
          image: busybox
      - name: train
        inputs:
          artifacts:
{train}        container:
          image: trainer
          resources:
            limits:
              nvidia.com/gpu: 1
      - name: evaluate
        inputs:
          artifacts:
{eval}        container:
          image: trainer
          resources:
            limits:
              nvidia.com/gpu: 1
"#,
        train = s3_input(bucket, "weights", "nightly/train.bin"),
        eval = s3_input(bucket, "holdout", "nightly/eval.bin"),
    )
}

/// A weekly CronWorkflow (Sundays 03:00 UTC) with one GPU task.
fn weekly(bucket: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata:
  name: weekly-report
spec:
  schedule: "0 3 * * 0"
  workflowSpec:
    entrypoint: main
    templates:
      - name: main
        dag:
          tasks:
            - name: fit
              template: fit
      - name: fit
        inputs:
          artifacts:
{data}        container:
          image: trainer
          resources:
            limits:
              nvidia.com/gpu: 1
"#,
        data = s3_input(bucket, "data", "weekly/data.bin"),
    )
}

/// A one-off Workflow whose GPU task read two objects, and the status of its finished run.
fn batch(bucket: &str) -> (String, String) {
    let workflow = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: old-batch-
spec:
  entrypoint: main
  templates:
    - name: main
      dag:
        tasks:
          - name: score
            template: score
    - name: score
      inputs:
        artifacts:
{a}{b}      container:
        image: scorer
        resources:
          limits:
            nvidia.com/gpu: 1
"#,
        a = s3_input(bucket, "finished", "old/finished.bin"),
        b = s3_input(bucket, "leased", "old/leased.bin"),
    );
    let status = r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: old-batch-x1y2z
  generateName: old-batch-
spec:
  entrypoint: main
status:
  phase: Succeeded
  startedAt: '2031-03-01T00:00:00Z'
  finishedAt: '2031-03-01T01:00:00Z'
  nodes:
    old-batch-x1y2z:
      id: old-batch-x1y2z
      name: old-batch-x1y2z
      displayName: old-batch-x1y2z
      type: DAG
      templateName: main
      phase: Succeeded
      startedAt: '2031-03-01T00:00:00Z'
      finishedAt: '2031-03-01T01:00:00Z'
      children:
      - old-batch-x1y2z-1
    old-batch-x1y2z-1:
      id: old-batch-x1y2z-1
      name: old-batch-x1y2z.score
      displayName: score
      type: Pod
      templateName: score
      phase: Succeeded
      boundaryID: old-batch-x1y2z
      startedAt: '2031-03-01T00:00:05Z'
      finishedAt: '2031-03-01T00:59:00Z'
"#
    .to_string();
    (workflow, status)
}

struct Setup {
    db: tempfile::TempDir,
    ignite: String,
    endpoint: String,
    namespace: String,
}

impl Setup {
    fn new(namespace: &str) -> Setup {
        Setup {
            db: tempfile::tempdir().unwrap(),
            ignite: common::env("KFCACHE_TEST_IGNITE_1"),
            endpoint: common::env("KFCACHE_TEST_S3_ENDPOINT"),
            namespace: format!("{namespace}-{}", std::process::id()),
        }
    }

    /// A pipeline file in the setup's directory.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.db.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
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
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `kfcache ARGS… CONNECTION` with the setup's database.
    fn kfcache(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = common::kfcache(self.db.path());
        cmd.env("XDG_CONFIG_HOME", self.db.path())
            .args(args)
            .args(self.connection());
        cmd
    }

    /// `kfcache ARGS…` for the commands that do not reach the cache (analyze, history).
    fn local(&self, db: &Path, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = common::kfcache(db);
        cmd.args(args);
        cmd
    }

    fn cached(&self) -> BTreeSet<String> {
        let out = common::stdout_of(&mut self.kfcache(&["cache", "ls", "-o", "json"]));
        let listed: Value = serde_json::from_str(&out).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["uri"].as_str().unwrap().to_string())
            .collect()
    }

    async fn object_cache(&self) -> ObjectCache<IgniteSink> {
        let client = Client::connect(ClientConfig::from_address_list(&self.ignite))
            .await
            .unwrap();
        let sink = IgniteSink::open(client, &IgniteSinkConfig::default())
            .await
            .unwrap();
        ObjectCache::new(
            Arc::new(sink),
            LayoutConfig {
                namespace: self.namespace.clone(),
                ..LayoutConfig::default()
            },
        )
        .unwrap()
    }
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn uris(events: &[&Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["uri"].as_str().unwrap().to_string())
        .collect()
}

// The done-when of `kfcache cron`: scheduled pipelines are staged ahead of time, by their
// schedule in their own timezone, and only what is needed within the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_stages_scheduled_pipelines_ahead_of_time() {
    let setup = Setup::new("cron-ahead");
    let bucket = format!("kfcache-cron-{}", std::process::id());
    upload(
        &setup.endpoint,
        &bucket,
        &[
            ("nightly/train.bin", 300_000),
            ("nightly/eval.bin", 200_000),
            ("weekly/data.bin", 100_000),
            ("old/finished.bin", 50_000),
            ("old/leased.bin", 60_000),
            ("adhoc/unknown.bin", 10_000),
        ],
    )
    .await;
    let uri = |key: &str| format!("s3://{bucket}/{key}");
    // 02:00 in New York, the day after clocks sprang forward (2031-03-09): 06:00 UTC, not
    // 07:00 as the winter offset would say.
    let nightly = setup.file(
        "nightly.yaml",
        &nightly(&bucket, "0 2 * * *", "America/New_York"),
    );
    let weekly = setup.file("weekly.yaml", &weekly(&bucket));
    let (batch, status) = batch(&bucket);
    let batch = setup.file("batch.yaml", &batch);
    let status = setup.file("batch-status.yaml", &status);
    let db = setup.db.path();
    common::stdout_of(&mut setup.local(db, &["analyze", &nightly, &weekly, &batch]));
    common::stdout_of(&mut setup.local(db, &["history", "import", &status]));

    // What is in the cache before: the finished run's inputs (one leased by a running
    // reader) and an object no analysed task reads.
    for key in ["old/finished.bin", "old/leased.bin", "adhoc/unknown.bin"] {
        common::stdout_of(&mut setup.kfcache(&["cache", "put", &uri(key)]));
    }
    let cache = setup.object_cache().await;
    lease::acquire(
        &cache,
        &uri("old/leased.bin"),
        "other-run/reader",
        Duration::from_secs(600),
    )
    .await
    .unwrap();

    // 01:50 in New York: the nightly run is 10 minutes away; in a 15-minute window, `train`
    // starts (after prep's 60 s) but `evaluate` (after train's 600 s) does not.
    let out = common::stdout_of(&mut setup.kfcache(&[
        "cron",
        "--once",
        "--window",
        "15m",
        "--now",
        "2031-03-10T05:50:00Z",
        "--budget",
        "1GiB",
    ]));
    let events = lines(&out);
    let pipelines = of_kind(&events, "cron-pipeline");
    let nightly = pipelines
        .iter()
        .find(|e| e["pipeline"] == "nightly-train")
        .unwrap_or_else(|| panic!("no line for nightly-train in:\n{out}"));
    assert_eq!(nightly["fire_at"], "2031-03-10T06:00:00Z", "{nightly}");
    assert_eq!(nightly["rule"], "schedule");
    assert_eq!(nightly["due"], true);
    assert!(
        nightly["detail"]
            .as_str()
            .unwrap()
            .contains("`0 2 * * *` in America/New_York"),
        "{nightly}"
    );
    let weekly = pipelines
        .iter()
        .find(|e| e["pipeline"] == "weekly-report")
        .unwrap();
    assert_eq!(weekly["fire_at"], "2031-03-16T03:00:00Z");
    assert_eq!(weekly["due"], false);
    // A one-off workflow with a single run has no next run.
    assert!(pipelines.iter().all(|e| e["pipeline"] != "old-batch"));

    // Staged: only train's input, before its deadline.
    let staged = of_kind(&events, "staged");
    assert_eq!(
        uris(&staged),
        BTreeSet::from([uri("nightly/train.bin")]),
        "{out}"
    );
    assert!(staged.iter().all(|e| e["met_deadline"] == true));
    // Evicted: the finished run's unleased input, with why.
    let evicted = of_kind(&events, "cron-evicted");
    assert_eq!(
        uris(&evicted),
        BTreeSet::from([uri("old/finished.bin")]),
        "{out}"
    );
    let reason = evicted[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("every reader finished") && reason.contains("old-batch-x1y2z"),
        "{reason}"
    );
    let done = of_kind(&events, "cron-done");
    assert_eq!(done.len(), 1, "{out}");
    assert_eq!(done[0]["due"], serde_json::json!(["nightly-train"]));
    assert_eq!(done[0]["evicted"], 1);
    assert_eq!(of_kind(&events, "cron-drained").len(), 1, "{out}");
    assert_eq!(
        setup.cached(),
        BTreeSet::from([
            uri("nightly/train.bin"),
            uri("old/leased.bin"),
            uri("adhoc/unknown.bin"),
        ])
    );

    // Ten minutes later the window reaches `evaluate`: its input comes in, train's is a hit
    // (the run is due, so nothing it reads is evicted).
    let out = common::stdout_of(&mut setup.kfcache(&[
        "cron",
        "--once",
        "--window",
        "15m",
        "--now",
        "2031-03-10T05:59:00Z",
        "--budget",
        "1GiB",
    ]));
    let events = lines(&out);
    assert_eq!(
        uris(&of_kind(&events, "staged")),
        BTreeSet::from([uri("nightly/eval.bin")]),
        "{out}"
    );
    assert!(of_kind(&events, "cron-evicted").is_empty(), "{out}");

    // The lock was released: nothing is left under the namespace's lock key.
    let key = format!("{}/lock/cron", setup.namespace);
    assert_eq!(cache.sink().get(Space::Meta, &key).await.unwrap(), None);
    common::stdout_of(&mut setup.kfcache(&["cache", "clear"]));
}

// Two copies of the cron started at once (an overlapping CronJob, a manual run): exactly one
// stages, the other says who holds the lock until when and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_crons_at_once_stage_once() {
    let setup = Setup::new("cron-twice");
    let bucket = format!("kfcache-cron-twice-{}", std::process::id());
    upload(
        &setup.endpoint,
        &bucket,
        &[("nightly/train.bin", 400_000), ("nightly/eval.bin", 10)],
    )
    .await;
    let nightly = setup.file(
        "nightly.yaml",
        &nightly(&bucket, "0 2 * * *", "Europe/Paris"),
    );
    // Each copy has its own database, as two pods would.
    let dbs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for db in &dbs {
        common::stdout_of(&mut setup.local(db.path(), &["analyze", &nightly]));
    }
    // 02:00 in Paris is 01:00 UTC in winter: due in 5 minutes.
    let args = [
        "cron",
        "--once",
        "--window",
        "15m",
        "--now",
        "2031-01-15T00:55:00Z",
        "--budget",
        "1GiB",
        // The winner keeps the lock a while after its cycle, so the other copy is sure to
        // meet it however the two are scheduled.
        "--linger",
        "3s",
    ];
    let children: Vec<_> = dbs
        .iter()
        .map(|db| {
            let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("kfcache"));
            cmd.current_dir(common::workspace())
                .without_kfcache_env()
                .env("KFCACHE_DB", db.path().join("kfcache.db"))
                .env("XDG_CONFIG_HOME", setup.db.path())
                .args(args)
                .args(setup.connection())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect();
    let mut staged = 0;
    let mut locked = Vec::new();
    for out in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "a cron copy failed ({:?}):\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        let events = lines(&stdout);
        staged += of_kind(&events, "staged").len();
        locked.extend(of_kind(&events, "cron-locked").into_iter().cloned());
        if of_kind(&events, "cron-locked").is_empty() {
            assert_eq!(of_kind(&events, "cron-done").len(), 1, "{stdout}");
        } else {
            assert!(of_kind(&events, "cron-done").is_empty(), "{stdout}");
            assert!(of_kind(&events, "summary").is_empty(), "{stdout}");
        }
    }
    assert_eq!(staged, 1, "exactly one copy stages train's input");
    assert_eq!(locked.len(), 1, "exactly one copy meets the lock");
    let text = locked[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("another kfcache cron (holder ")
            && text.contains(") holds the lock until "),
        "{text}"
    );
    assert!(locked[0]["expires_at"].is_string());
    common::stdout_of(&mut setup.kfcache(&["cache", "clear"]));
}

// The conditional writes the lock is built on, and the lock itself, on the 1-node and the
// 3-node cluster (where keys live on different primaries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_and_the_lock_on_real_ignite() {
    for variable in ["KFCACHE_TEST_IGNITE_1", "KFCACHE_TEST_IGNITE_3"] {
        let client = Client::connect(ClientConfig::from_address_list(&common::env(variable)))
            .await
            .unwrap();
        let name = format!("kfcache-cron-cas-{}", std::process::id());
        let sink = IgniteSink::open(
            client,
            &IgniteSinkConfig {
                cache_name: name,
                backups: 1,
            },
        )
        .await
        .unwrap();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let meta = Space::Meta;

        assert!(sink.put_if_absent(meta, "k", b("alpha")).await.unwrap());
        assert!(!sink.put_if_absent(meta, "k", b("beta")).await.unwrap());
        assert!(!sink
            .replace_if_equals(meta, "k", b("other"), b("gamma"))
            .await
            .unwrap());
        assert!(sink
            .replace_if_equals(meta, "k", b("alpha"), b("gamma"))
            .await
            .unwrap());
        assert_eq!(sink.get(meta, "k").await.unwrap(), Some(b("gamma")));
        assert!(!sink
            .replace_if_equals(meta, "absent", b("x"), b("y"))
            .await
            .unwrap());
        assert_eq!(sink.get(meta, "absent").await.unwrap(), None);
        assert!(!sink.remove_if_equals(meta, "k", b("alpha")).await.unwrap());
        assert!(sink.remove_if_equals(meta, "k", b("gamma")).await.unwrap());
        assert_eq!(sink.get(meta, "k").await.unwrap(), None);

        // Sixteen writers compare against the same value: one wins.
        sink.put(meta, "contended", b("v0")).await.unwrap();
        let mut writers = tokio::task::JoinSet::new();
        for i in 0..16 {
            let sink = sink.clone();
            writers.spawn(async move {
                sink.replace_if_equals(
                    Space::Meta,
                    "contended",
                    Bytes::from_static(b"v0"),
                    Bytes::from(format!("v{}", i + 1)),
                )
                .await
                .unwrap()
            });
        }
        let mut winners = 0;
        while let Some(won) = writers.join_next().await {
            winners += usize::from(won.unwrap());
        }
        assert_eq!(winners, 1, "{variable}");

        // The lock: busy while held, an expired one taken over once, released by its holder.
        let cache = ObjectCache::new(
            Arc::new(sink.clone()),
            LayoutConfig {
                namespace: format!("lock-{}", std::process::id()),
                ..LayoutConfig::default()
            },
        )
        .unwrap();
        let Acquisition::Acquired(stale) = lock::acquire(&cache, "cron", "a/1", Duration::ZERO)
            .await
            .unwrap()
        else {
            panic!("the first acquisition must win")
        };
        let (x, y) = tokio::join!(
            lock::acquire(&cache, "cron", "b/1", Duration::from_secs(60)),
            lock::acquire(&cache, "cron", "c/1", Duration::from_secs(60)),
        );
        let mut held: Vec<_> = [x.unwrap(), y.unwrap()]
            .into_iter()
            .filter_map(|a| match a {
                Acquisition::Acquired(held) => Some(held),
                Acquisition::Busy(_) => None,
            })
            .collect();
        assert_eq!(
            held.len(),
            1,
            "{variable}: exactly one takes the expired lock over"
        );
        let mut winner = held.remove(0);
        assert_eq!(winner.took_over().unwrap().holder, "a/1");
        let mut stale = stale;
        assert!(matches!(
            stale.renew().await.unwrap(),
            Renewal::Lost(Some(_))
        ));
        assert!(!stale.release().await.unwrap());
        assert_eq!(winner.renew().await.unwrap(), Renewal::Renewed);
        assert!(matches!(
            lock::acquire(&cache, "cron", "d/1", Duration::from_secs(60))
                .await
                .unwrap(),
            Acquisition::Busy(record) if record == *winner.record()
        ));
        assert!(winner.release().await.unwrap());

        sink.destroy().await.unwrap();
    }
}
