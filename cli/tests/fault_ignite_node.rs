//! A node of the 3-node Ignite cluster (backups = 1) is SIGKILLed while `kfcache prefetch`
//! stages a pipeline's inputs into it and several `kfcache sidecar init` pods read them in a
//! loop:
//!
//! - no read is corrupted: every init exits 0 and every file it wrote equals the origin's
//!   bytes, whether the init reports it as a hit or a miss;
//! - what is not (yet) in the cache comes from the origin (misses in the init reports);
//! - staging completes on the two surviving nodes (the prefetch exits 0, or a re-run of it
//!   does), after which every input is a hit;
//! - `kfcache cache check` finds no manifest that names a missing chunk, and an init reads every
//!   object as a verified hit, with the node down and again after it rejoined.
//!
//! Killing a node disturbs the cluster, so this is its own test binary with a single test. It
//! drives `scripts/ignite.sh kill-node` on the cluster named by KFCACHE_TEST_IGNITE_3_CLUSTER
//! and always starts the node again (a guard does it if the test fails), waiting until the
//! cluster is healthy. The prefetch reads S3 through a throttling proxy, so that the kill
//! lands mid-staging on any machine; the pods read the origin directly.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/pods.rs"]
mod pods;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kfcache_harness::proxy::{Proxy, ProxyConfig};
use pods::{Dataset, InitRun, Outcomes};
use serde_json::Value;

/// The node killed: the oldest one, Ignite's coordinator.
const KILLED: u32 = 0;

/// Pods reading in a loop.
const PODS: usize = 3;

fn script() -> PathBuf {
    common::workspace().join("scripts/ignite.sh")
}

fn healthy(cluster: &str) -> bool {
    Command::new(script())
        .args(["healthy", cluster])
        .status()
        .is_ok_and(|s| s.success())
}

/// A killed node, started again when this is restored or dropped (also when the test fails).
struct KilledNode {
    cluster: String,
    index: u32,
    restored: bool,
}

impl KilledNode {
    fn kill(cluster: &str, index: u32) -> KilledNode {
        let node = KilledNode {
            cluster: cluster.to_string(),
            index,
            restored: false,
        };
        let status = Command::new(script())
            .args(["kill-node", cluster, &index.to_string()])
            .status()
            .expect("run scripts/ignite.sh");
        assert!(
            status.success(),
            "kill-node {cluster} {index} failed: {status}"
        );
        node
    }

    /// Starts the node and waits until every node of the cluster runs and answers.
    fn start_again(&mut self) -> Result<Duration, String> {
        self.restored = true;
        let started = Instant::now();
        let status = Command::new(script())
            .args(["start-node", &self.cluster, &self.index.to_string()])
            .status()
            .map_err(|e| format!("cannot run scripts/ignite.sh: {e}"))?;
        if !status.success() {
            return Err(format!(
                "start-node {} {} failed: {status}",
                self.cluster, self.index
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(240);
        while !healthy(&self.cluster) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not healthy 240s after start-node",
                    self.cluster
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(started.elapsed())
    }
}

impl Drop for KilledNode {
    fn drop(&mut self) {
        if !self.restored {
            eprintln!(
                "starting node {}-{} again after a failure",
                self.cluster, self.index
            );
            if let Err(error) = self.start_again() {
                eprintln!("could not restore the cluster: {error}");
            }
        }
    }
}

/// What one pod saw in one round.
struct Round {
    outcomes: Outcomes,
    started: Instant,
    ended: Instant,
}

/// `kfcache prefetch` running, its JSON event lines read on a thread.
struct Staging {
    child: std::process::Child,
    events: mpsc::Receiver<Value>,
    reader: std::thread::JoinHandle<()>,
    stderr: std::thread::JoinHandle<String>,
}

impl Staging {
    fn start(db: &Path, pipeline: &Path, connection: &[String]) -> Staging {
        let mut cmd = pods::kfcache(
            db,
            &[
                "prefetch",
                pipeline.to_str().unwrap(),
                "--budget",
                "1GiB",
                "--chunk-size",
                "256KiB",
                "--progress",
                "json",
            ],
        );
        cmd.args(connection);
        let mut child = cmd.spawn().expect("kfcache prefetch starts");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut text);
            text
        });
        let (send, events) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    let _ = send.send(event);
                }
            }
        });
        Staging {
            child,
            events,
            reader,
            stderr,
        }
    }

    /// Waits for the end; the exit status and every event.
    fn finish(self) -> (std::process::ExitStatus, Vec<Value>, String) {
        let Staging {
            mut child,
            events,
            reader,
            stderr,
        } = self;
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let stderr = stderr.join().unwrap();
        (status, events.try_iter().collect(), stderr)
    }
}

fn summary(events: &[Value]) -> Value {
    events
        .iter()
        .rev()
        .find(|e| e["event"] == "summary")
        .cloned()
        .unwrap_or(Value::Null)
}

/// `kfcache cache check --format json`: exit status and report. (Not `--verify`: that scans
/// the whole chunk space of the shared cluster, every tenant's values; the all-hit init after
/// it reads every object with its checksums instead.)
fn check(db: &Path, connection: &[String]) -> (Option<i32>, Value, String) {
    let mut cmd = pods::kfcache(db, &["cache", "check", "--format", "json"]);
    cmd.args(connection);
    let out = cmd.output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cache check printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_consistent(db: &Path, connection: &[String], dataset: &Dataset, when: &str) {
    let (code, report, stderr) = check(db, connection);
    assert_eq!(code, Some(0), "{when}: cache check: {report}\n{stderr}");
    assert_eq!(report["ok"], true, "{when}: {report}");
    assert_eq!(report["missing_chunks"], serde_json::json!([]), "{when}");
    assert_eq!(report["corrupt"], serde_json::json!([]), "{when}");
    assert_eq!(
        report["manifests"].as_u64(),
        Some(dataset.bytes.len() as u64),
        "{when}: every object has a manifest: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_staging_loses_nothing_and_corrupts_no_read() {
    let cluster = common::env("KFCACHE_TEST_IGNITE_3_CLUSTER");
    let ignite = common::env("KFCACHE_TEST_IGNITE_3");
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    assert!(
        healthy(&cluster),
        "cluster {cluster} is not healthy before the test: `scripts/services.sh up`"
    );
    let db = tempfile::tempdir().unwrap();
    let namespace = common::unique("node-kill");
    // Many small objects (batched puts) and a few of many chunks each: about 19 MB.
    let shards: Vec<usize> = (0..24).map(|i| 200_000 + i * 17_003).collect();
    let dataset =
        Arc::new(Dataset::upload(&endpoint, &shards, &[3_000_001, 3_145_728, 3_300_007]).await);
    let spec = Arc::new(dataset.task_spec());
    let pipeline = dataset.pipeline(db.path());
    let direct = pods::connection(&ignite, &endpoint, &namespace);

    // The prefetch reads S3 at 2 MB/s: staging takes about ten seconds.
    let moto: SocketAddr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("KFCACHE_TEST_S3_ENDPOINT is http://host:port");
    let proxy = Proxy::start(
        moto,
        ProxyConfig {
            bandwidth: Some(2_000_000.0),
            ..ProxyConfig::default()
        },
    )
    .await
    .unwrap();
    let throttled = pods::connection(&ignite, &proxy.endpoint(), &namespace);

    // The pods, reading in a loop until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..PODS)
        .map(|_| {
            let (dataset, spec, stop, direct) =
                (dataset.clone(), spec.clone(), stop.clone(), direct.clone());
            let db = db.path().to_path_buf();
            std::thread::spawn(move || {
                let mut rounds = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let run = InitRun::run(&db, &spec, &direct, &[]);
                    let outcomes = run.check(&dataset);
                    rounds.push(Round {
                        outcomes,
                        started,
                        ended: Instant::now(),
                    });
                }
                rounds
            })
        })
        .collect();

    // The kill comes once the prefetch has read 3 MB of the 19 from S3.
    let staging = Staging::start(db.path(), &pipeline, &throttled);
    let deadline = Instant::now() + Duration::from_secs(120);
    while proxy.stats().bytes_down < 3_000_000 {
        assert!(
            Instant::now() < deadline,
            "the prefetch read less than 3 MB in 120s: {:?}",
            proxy.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let killed_at = Instant::now();
    let mut node = KilledNode::kill(&cluster, KILLED);
    let mut staging = staging;
    assert!(
        staging.child.try_wait().unwrap().is_none(),
        "the prefetch ended before the node was killed; the test did not kill mid-staging"
    );
    let (status, events, stderr) = staging.finish();
    let first = summary(&events);
    eprintln!(
        "prefetch with the node killed {:.1?} in: {status}, summary {first}",
        killed_at.elapsed()
    );
    let mut rounds_of_staging = 1;
    let mut last = (status, first, stderr);
    // Staging completes on the surviving nodes: the prefetch did, or a re-run of it does.
    while !(last.0.success() && last.1["failed"] == 0) {
        assert!(
            rounds_of_staging < 3,
            "staging did not complete on the surviving nodes after {rounds_of_staging} \
             prefetches: {} {}\n{}",
            last.0,
            last.1,
            last.2
        );
        let (status, events, stderr) = Staging::start(db.path(), &pipeline, &direct).finish();
        last = (status, summary(&events), stderr);
        rounds_of_staging += 1;
        eprintln!("prefetch re-run: {}, summary {}", last.0, last.1);
    }
    stop.store(true, Ordering::Relaxed);
    let rounds: Vec<Round> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect();
    let overlapping = rounds
        .iter()
        .filter(|r| r.started <= killed_at + Duration::from_secs(15) && r.ended >= killed_at)
        .count();
    let misses: Vec<&String> = rounds.iter().flat_map(|r| &r.outcomes.misses).collect();
    let hits: usize = rounds.iter().map(|r| r.outcomes.hits).sum();
    eprintln!(
        "{} init rounds by {PODS} pods, all exit 0 and byte-identical: {hits} hits, {} misses; \
         {overlapping} rounds ran during the kill and the 15s after it",
        rounds.len(),
        misses.len()
    );
    assert!(overlapping > 0, "no pod read while the node was lost");
    // What was not staged yet came from the origin.
    assert!(
        misses.iter().any(|reason| reason.contains("not cached")),
        "no read fell back to the origin: {misses:?}"
    );

    // With the node still down: nothing points at a missing chunk, and every input is a hit.
    assert_consistent(db.path(), &direct, &dataset, "with the node down");
    let run = InitRun::run(db.path(), &spec, &direct, &[]);
    let outcomes = run.check(&dataset);
    assert_eq!(
        outcomes.hits,
        dataset.bytes.len(),
        "after staging completed, every input is a hit: {:?}\n{}",
        outcomes.misses,
        run.stderr()
    );

    // The node rejoins (empty: nodes keep data in memory only); still whole, still all hits.
    let took = node.start_again().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("node {cluster}-{KILLED} back and the cluster healthy in {took:.1?}");
    assert_consistent(db.path(), &direct, &dataset, "after the node rejoined");
    let run = InitRun::run(db.path(), &spec, &direct, &[]);
    let outcomes = run.check(&dataset);
    assert_eq!(
        outcomes.hits,
        dataset.bytes.len(),
        "after the node rejoined, every input is a hit: {:?}\n{}",
        outcomes.misses,
        run.stderr()
    );

    let mut clear = pods::kfcache(db.path(), &["cache", "clear"]);
    clear.args(&direct);
    assert!(clear.output().unwrap().status.success());
}
