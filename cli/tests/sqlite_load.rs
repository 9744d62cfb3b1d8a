//! SQLite under load: many kfcache processes at once on ONE fresh database file, as a
//! CronJob, a drain, analyses and predictions started together on a shared volume would be:
//!
//! - `kfcache history import` of the shared corpus's Argo status files
//!   (`../shared/corpus/argo-status`), each copied under new run names so that every import
//!   adds rows (thousands of task observations in all);
//! - `kfcache analyze` and `kfcache predict --start-at T` of the fixtures;
//! - `kfcache history drain` of sidecar events published to the real Ignite cluster;
//! - `kfcache cron --once`, which drains too.
//!
//! No process may fail (in particular not with "database is locked", nor while several of
//! them create the schema at once), and no row may be lost: the row counts are what the
//! inputs imply — the runs and task observations of the status files (read with kfcache's own
//! status reader), one prediction per `predict` with as many task rows as it printed, one run
//! and task observation per published task run, and the same analysis tables as the same
//! fixtures analysed one after another into a database of their own.

#![allow(clippy::unwrap_used)]

mod common;
use common::WithoutKfcacheEnv;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use kfcache_ignite::{Client, ClientConfig};
use kfcache_predictor::status::read_status_file;
use kfcache_prefetcher::{IgniteSink, IgniteSinkConfig};
use kfcache_sidecar::events::{Event, EventKind, EventLog};
use kfcache_sidecar::spec::Identity;
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Copies of each corpus status file, each under new run names.
const COPIES: usize = 40;
/// `history import` processes running at once, and the files each imports per invocation.
const IMPORTERS: usize = 4;
const FILES_PER_IMPORT: usize = 4;
/// Analyse and predict processes running at once, and rounds of each.
const ANALYZERS: usize = 2;
const PREDICTORS: usize = 2;
const ROUNDS: usize = 4;
/// Drains and crons running at once, and the invocations of each.
const DRAINERS: usize = 2;
const DRAINS: usize = 3;
const CRONS: usize = 3;
/// Task runs the sidecars report: runs × tasks.
const SIDECAR_RUNS: usize = 10;
const SIDECAR_TASKS: usize = 8;

/// Pipelines the analyses and predictions read: every kind of front end, no CronWorkflow
/// (the crons must find nothing due and stage nothing).
const FIXTURES: &[&str] = &[
    "fixtures/argo/gpu-training-pipeline.yaml",
    "fixtures/argo/dag-dependencies-list.yaml",
    "fixtures/argo/dag-depends-expressions.yaml",
    "fixtures/argo/nested-dag-artifacts.yaml",
    "fixtures/argo/steps-hyperparameter-search.yaml",
    "fixtures/kfp/v1/gpu-training.yaml",
    "fixtures/kfp/v1/parallel-for.yaml",
    "fixtures/kfp/v2/conditions.yaml",
];

fn corpus() -> PathBuf {
    let dir = common::workspace().join("../shared/corpus/argo-status");
    assert!(
        dir.is_dir(),
        "the shared corpus is missing: expected {} (this test imports real Argo status files from it)",
        dir.display()
    );
    dir
}

/// `kfcache ARGS…` on `db`.
fn kfcache(db: &Path, args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("kfcache"));
    cmd.current_dir(common::workspace())
        .without_kfcache_env()
        .env("KFCACHE_DB", db)
        .env("XDG_CONFIG_HOME", db.parent().unwrap())
        .env("NO_COLOR", "1")
        .args(args)
        .kill_on_drop(true);
    cmd
}

/// What one process did.
struct Ran {
    args: Vec<String>,
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs each command line of `invocations` in turn, on `db`.
async fn worker(db: PathBuf, invocations: Vec<Vec<String>>) -> Vec<Ran> {
    let mut ran = Vec::new();
    for args in invocations {
        let out = kfcache(&db, &args).output().await.unwrap();
        ran.push(Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args,
        });
    }
    ran
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Copies of every corpus status file under `dir`, each with its runs renamed (`NAME-lK`), so
/// that each copy adds runs instead of replacing them.
fn status_copies(dir: &Path) -> Vec<PathBuf> {
    let mut originals: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            )
        })
        .collect();
    originals.sort();
    assert!(
        !originals.is_empty(),
        "no status files in {}",
        corpus().display()
    );
    let mut copies = Vec::new();
    for original in &originals {
        let text = std::fs::read_to_string(original).unwrap();
        let runs = read_status_file(original)
            .unwrap_or_else(|e| panic!("{} does not import: {e}", original.display()));
        for k in 0..COPIES {
            // Longest names first, so that a name inside another is not renamed twice.
            let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
            names.sort_by_key(|n| std::cmp::Reverse(n.len()));
            let mut renamed = text.clone();
            for (n, name) in names.iter().enumerate() {
                renamed = renamed.replace(name, &format!("\u{1}{n}\u{1}"));
            }
            for (n, name) in names.iter().enumerate() {
                renamed = renamed.replace(&format!("\u{1}{n}\u{1}"), &format!("{name}-l{k}"));
            }
            let path = dir.join(format!(
                "{k}-{}",
                original.file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(&path, renamed).unwrap();
            copies.push(path);
        }
    }
    copies
}

/// Sidecar events of `SIDECAR_RUNS` × `SIDECAR_TASKS` finished task runs, published to the
/// namespace's event space.
async fn publish_events(ignite: &str, namespace: &str) {
    let client = Client::connect(ClientConfig::from_address_list(ignite))
        .await
        .unwrap();
    let sink = IgniteSink::open(client, &IgniteSinkConfig::default())
        .await
        .unwrap();
    let log = EventLog::new(Arc::new(sink), namespace);
    let start = Utc.with_ymd_and_hms(2031, 5, 1, 12, 0, 0).unwrap();
    for run in 0..SIDECAR_RUNS {
        for task in 0..SIDECAR_TASKS {
            let who = Identity {
                run: format!("load-sidecar-run-{run}"),
                namespace: None,
                pipeline: "load-sidecar-pipeline".to_string(),
                task: format!("task-{task}"),
                instance: String::new(),
                attempt: 0,
                pod: Some(format!("pod-{run}-{task}")),
                node: Some("node-a".to_string()),
            };
            let started_at = start + chrono::TimeDelta::seconds((run * 100 + task) as i64);
            for (at, kind) in [
                (
                    started_at,
                    EventKind::Started {
                        detector: "proc".to_string(),
                        pid: 100,
                    },
                ),
                (
                    started_at,
                    EventKind::Inputs {
                        hits: 1,
                        misses: 1,
                        bytes_from_cache: 1_000,
                        bytes_from_origin: 2_000,
                        seconds: 0.5,
                    },
                ),
                (
                    started_at + chrono::TimeDelta::seconds(30),
                    EventKind::Ended {
                        started_at,
                        detector: "proc".to_string(),
                        exit_code: Some(0),
                        gpu_memory_bytes: None,
                        deadline: None,
                        slack_s: None,
                    },
                ),
            ] {
                log.publish(&Event {
                    who: who.clone(),
                    at,
                    kind,
                })
                .await
                .unwrap();
            }
        }
    }
}

async fn open(db: &Path) -> sqlx::SqliteConnection {
    SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()))
}

async fn count(db: &mut sqlx::SqliteConnection, query: &str) -> i64 {
    let (rows,): (i64,) = sqlx::query_as(query)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_processes_on_one_database_lose_no_row_and_never_fail() {
    let ignite = common::env("KFCACHE_TEST_IGNITE_1");
    let dir = tempfile::tempdir().unwrap();
    let namespace = common::unique("sqlite-load");
    let connection = strings(&["--ignite", &ignite, "--key-prefix", &namespace]);
    publish_events(&ignite, &namespace).await;

    // What the status files imply.
    let copies_dir = dir.path().join("status");
    std::fs::create_dir_all(&copies_dir).unwrap();
    let copies = status_copies(&copies_dir);
    let mut runs = BTreeSet::new();
    let mut task_runs = 0;
    let mut artifacts = 0;
    for copy in &copies {
        for run in read_status_file(copy).unwrap() {
            assert!(
                runs.insert((run.name.clone(), run.namespace.clone())),
                "run {} appears twice",
                run.name
            );
            let keys: BTreeSet<_> = run
                .tasks
                .iter()
                .map(|t| (t.task_key.clone(), t.instance.clone(), t.attempt))
                .collect();
            assert_eq!(keys.len(), run.tasks.len(), "{}", copy.display());
            task_runs += run.tasks.len();
            artifacts += run
                .tasks
                .iter()
                .map(|t| {
                    t.artifacts
                        .iter()
                        .map(|a| &a.name)
                        .collect::<BTreeSet<_>>()
                        .len()
                })
                .sum::<usize>();
        }
    }

    // The workers, all started at once on a database that does not exist yet.
    let db = dir.path().join("shared/kfcache.db");
    let mut plans: Vec<(&str, Vec<Vec<String>>)> = Vec::new();
    for importer in 0..IMPORTERS {
        let mine: Vec<&PathBuf> = copies.iter().skip(importer).step_by(IMPORTERS).collect();
        let invocations = mine
            .chunks(FILES_PER_IMPORT)
            .map(|files| {
                let mut args = strings(&["history", "import"]);
                args.extend(files.iter().map(|f| f.display().to_string()));
                args
            })
            .collect();
        plans.push(("import", invocations));
    }
    for analyzer in 0..ANALYZERS {
        let invocations = (0..ROUNDS)
            .map(|round| {
                // Each round in another order, so that the same pipeline is written at once.
                let mut files: Vec<String> = FIXTURES.iter().map(|f| f.to_string()).collect();
                files.rotate_left((analyzer + round) % FIXTURES.len());
                let mut args = strings(&["analyze", "-f", "json"]);
                args.extend(files);
                args
            })
            .collect();
        plans.push(("analyze", invocations));
    }
    for predictor in 0..PREDICTORS {
        let invocations = (0..ROUNDS)
            .flat_map(|round| {
                FIXTURES.iter().enumerate().map(move |(n, fixture)| {
                    // A distinct anchor per invocation: each is a prediction of its own.
                    let anchor = Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap()
                        + chrono::TimeDelta::minutes(
                            ((predictor * ROUNDS + round) * FIXTURES.len() + n) as i64,
                        );
                    strings(&[
                        "predict",
                        fixture,
                        "--start-at",
                        &anchor.to_rfc3339(),
                        "-f",
                        "json",
                    ])
                })
            })
            .collect();
        plans.push(("predict", invocations));
    }
    for _ in 0..DRAINERS {
        let mut args = strings(&["history", "drain"]);
        args.extend(connection.clone());
        plans.push(("drain", vec![args; DRAINS]));
    }
    let mut cron = strings(&["cron", "--once", "--window", "1m", "--progress", "json"]);
    cron.extend(connection.clone());
    plans.push(("cron", vec![cron; CRONS]));

    let started = Instant::now();
    let handles: Vec<_> = plans
        .into_iter()
        .map(|(what, invocations)| (what, tokio::spawn(worker(db.clone(), invocations))))
        .collect();
    let mut ran: Vec<(&str, Ran)> = Vec::new();
    for (what, handle) in handles {
        ran.extend(handle.await.unwrap().into_iter().map(|r| (what, r)));
    }
    let took = started.elapsed();

    let failures: Vec<String> = ran
        .iter()
        .filter(|(_, r)| !r.ok || r.stderr.contains("database is locked"))
        .map(|(what, r)| format!("{what} {:?}:\n{}", r.args, r.stderr))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} processes failed:\n{}",
        failures.len(),
        ran.len(),
        failures.join("\n")
    );

    // Predictions: one per invocation, with a row per task it printed.
    let predictions: Vec<Value> = ran
        .iter()
        .filter(|(what, _)| *what == "predict")
        .map(|(_, r)| serde_json::from_str(&r.stdout).unwrap())
        .collect();
    let task_predictions: usize = predictions
        .iter()
        .map(|p| p["tasks"].as_array().unwrap().len())
        .sum();

    // The analysis tables: the same fixtures analysed once, alone, in a database of their own.
    let reference = dir.path().join("reference/kfcache.db");
    let out = kfcache(&reference, &{
        let mut args = strings(&["analyze"]);
        args.extend(FIXTURES.iter().map(|f| f.to_string()));
        args
    })
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut alone = open(&reference).await;
    let mut shared = open(&db).await;
    let integrity: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
        .fetch_all(&mut shared)
        .await
        .unwrap();
    assert_eq!(integrity, [("ok".to_string(),)]);
    for table in ["pipeline", "pipeline_version", "task", "task_edge", "data"] {
        let query = format!("SELECT count(*) FROM {table}");
        assert_eq!(
            count(&mut shared, &query).await,
            count(&mut alone, &query).await,
            "rows of {table}: concurrent analyses against the same analyses alone"
        );
    }
    let sidecar_task_runs = SIDECAR_RUNS * SIDECAR_TASKS;
    let expected: [(&str, usize); 7] = [
        ("SELECT count(*) FROM run WHERE source = 'argo'", runs.len()),
        (
            "SELECT count(*) FROM run WHERE source = 'sidecar'",
            SIDECAR_RUNS,
        ),
        (
            "SELECT count(*) FROM task_run WHERE source = 'argo'",
            task_runs,
        ),
        (
            "SELECT count(*) FROM task_run WHERE source = 'sidecar'",
            sidecar_task_runs,
        ),
        ("SELECT count(*) FROM task_run_artifact", artifacts),
        ("SELECT count(*) FROM prediction", predictions.len()),
        ("SELECT count(*) FROM task_prediction", task_predictions),
    ];
    let mut rows = 0;
    for (query, want) in expected {
        assert_eq!(count(&mut shared, query).await, want as i64, "{query}");
        rows += want;
    }
    shared.close().await.unwrap();
    alone.close().await.unwrap();

    // Every event was drained: nothing is left for the next drain.
    let client = Client::connect(ClientConfig::from_address_list(&ignite))
        .await
        .unwrap();
    let sink = IgniteSink::open(client, &IgniteSinkConfig::default())
        .await
        .unwrap();
    let log = EventLog::new(Arc::new(sink), namespace.as_str());
    let (pending, bad) = log.pending().await.unwrap();
    assert!(
        pending.is_empty() && bad.is_empty(),
        "{} events left",
        pending.len()
    );

    let per_kind: BTreeMap<&str, usize> = ran.iter().fold(BTreeMap::new(), |mut m, (w, _)| {
        *m.entry(*w).or_default() += 1;
        m
    });
    eprintln!(
        "{} processes ({per_kind:?}) on one database in {took:.1?}: {rows} rows checked ({} runs, {task_runs} argo task runs, {sidecar_task_runs} sidecar task runs, {} predictions with {task_predictions} task rows, {artifacts} artifacts)",
        ran.len(),
        runs.len(),
        predictions.len(),
    );
}
