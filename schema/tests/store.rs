//! Store tests against a real SQLite file in a temporary directory: migrations, connection
//! settings, recording and reading back an analysed pipeline, idempotence, versioning, and
//! all-or-nothing writes.

use std::collections::BTreeMap;

use kfcache_parser::schedule::{default_schedule, TaskTimes};
use kfcache_parser::{
    Dag, FanOut, Input, Output, Pipeline, PipelineKind, Task, TaskKind, TaskRole,
};
use kfcache_schema::{content_hash, ArtifactRole, ArtifactStorage, Error, Store};
use tempfile::TempDir;

const TABLES: &[&str] = &[
    "pipeline",
    "pipeline_version",
    "task",
    "task_edge",
    "data",
    "directory",
    "data_has_task",
    "task_has_directory",
    "task_unlinked_artifact",
];

async fn open_temp() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A nested path: open creates the parent directories.
    let store = Store::open(dir.path().join("state/kfcache/kfcache.db"))
        .await
        .expect("open");
    (dir, store)
}

async fn counts(store: &Store) -> BTreeMap<&'static str, i64> {
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(store.pool())
            .await
            .expect("count");
        counts.insert(*table, n);
    }
    counts
}

fn input(name: &str, source: Option<&str>, path: Option<&str>) -> Input {
    Input {
        item: None,
        name: name.into(),
        source: source.map(Into::into),
        path: path.map(Into::into),
    }
}

fn output(name: &str, location: Option<&str>, path: Option<&str>) -> Output {
    Output {
        name: name.into(),
        location: location.map(Into::into),
        path: path.map(Into::into),
    }
}

/// prepare → train → evaluate (evaluate also waits for prepare), plus an exit handler.
/// `s3://bucket/shared/vocab.txt` is read by train and evaluate; prepare's `dataset` has no
/// location and is read by train as `task://prepare/dataset`.
fn training_pipeline() -> Pipeline {
    let mut prepare = Task::new("prepare", "prepare-data", TaskKind::Container);
    prepare.image = Some("python:3.12".into());
    prepare.inputs = vec![
        input(
            "raw",
            Some("s3://bucket/raw/data.csv"),
            Some("/in/data.csv"),
        ),
        input(
            "images",
            Some("pvc://data-claim/mnt/images"),
            Some("/mnt/images"),
        ),
    ];
    prepare.outputs = vec![
        output("dataset", None, Some("/out/dataset")),
        output("stats", Some("s3://bucket/stats/"), None),
    ];

    let mut train = Task::new("train", "train-model", TaskKind::Container);
    train.depends_on = vec!["prepare".into()];
    train.gpus = 2;
    train.fan_out = Some(FanOut::Count(3));
    train.parallelism = Some(2);
    train.params = BTreeMap::from([
        ("epochs".to_string(), "10".to_string()),
        ("learning-rate".to_string(), "0.01".to_string()),
    ]);
    train.node_selector = BTreeMap::from([("gpu".to_string(), "a100".to_string())]);
    train.image = Some("pytorch/pytorch:2.3".into());
    train.line = Some(42);
    train.inputs = vec![
        input("dataset", Some("task://prepare/dataset"), Some("/data")),
        input("vocab", Some("s3://bucket/shared/vocab.txt"), None),
    ];
    // One input per loop item: each instance reads its own shard (an object, a prefix).
    for item in 0..2 {
        train.inputs.push(Input {
            item: Some(item),
            ..input(
                "shard",
                Some(&format!("s3://bucket/shards/shard-{item}.bin")),
                Some("/data/shard.bin"),
            )
        });
    }
    train.inputs.push(Input {
        item: Some(2),
        ..input(
            "shard",
            Some("s3://bucket/shards/part-2/"),
            Some("/data/shard.bin"),
        )
    });
    train.outputs = vec![output(
        "model",
        Some("s3://bucket/models/model.pt"),
        Some("/out/model.pt"),
    )];

    let mut evaluate = Task::new("condition-1.evaluate", "evaluate", TaskKind::Script);
    evaluate.depends_on = vec!["train".into(), "prepare".into()];
    evaluate.fan_out = Some(FanOut::Dynamic);
    evaluate.condition = Some("{{workflow.parameters.eval}} == true".into());
    evaluate.retries = 2;
    evaluate.inputs = vec![
        input(
            "model",
            Some("s3://bucket/models/model.pt"),
            Some("/in/model.pt"),
        ),
        input(
            "vocab",
            Some("s3://bucket/shared/vocab.txt"),
            Some("/in/vocab.txt"),
        ),
        input("config", Some("raw:"), Some("/in/config.yaml")),
        input("unknown", None, None),
    ];

    let mut notify = Task::new("notify", "notify", TaskKind::Http);
    notify.role = TaskRole::ExitHandler;

    Pipeline {
        name: "train-pipeline".into(),
        kind: PipelineKind::CronWorkflow,
        schedules: vec!["0 2 * * *".into(), "0 14 * * *".into()],
        timezone: Some("Asia/Seoul".into()),
        source: "fixtures/train.yaml".into(),
        line: Some(1),
        parameters: BTreeMap::from([("eval".to_string(), "true".to_string())]),
        parallelism: Some(4),
        tasks: vec![prepare, train, evaluate, notify],
    }
}

fn schedule(pipeline: &Pipeline) -> Vec<TaskTimes> {
    let dag = Dag::build(pipeline).expect("valid DAG");
    default_schedule(pipeline, &dag)
}

#[tokio::test]
async fn migrations_apply_to_a_fresh_file_in_wal_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b/kfcache.db");
    let store = Store::open(&path).await.expect("open");
    assert!(path.exists());

    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("journal_mode");
    assert_eq!(journal, "wal");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .expect("foreign_keys");
    assert_eq!(foreign_keys, 1);
    let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .expect("busy_timeout");
    assert_eq!(busy_timeout, 5000);
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .expect("synchronous");
    assert_eq!(synchronous, 1, "NORMAL");

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'
          AND name NOT LIKE 'sqlite%' ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .expect("tables");
    for table in TABLES.iter().chain(&["run", "task_run", "cache_entry"]) {
        assert!(
            tables.iter().any(|t| t == table),
            "missing table {table}: {tables:?}"
        );
    }
    assert!(counts(&store).await.values().all(|&n| n == 0));
    store.close().await;

    // Reopening an up-to-date database applies nothing and keeps working.
    let store = Store::open(&path).await.expect("reopen");
    assert!(store.pipelines().await.expect("pipelines").is_empty());
}

#[tokio::test]
async fn record_and_read_back_round_trip() {
    let (_dir, store) = open_temp().await;
    let pipeline = training_pipeline();
    let times = schedule(&pipeline);
    let hash = content_hash(b"train.yaml v1");

    let record = store
        .record_analysis(&pipeline, &hash, &times)
        .await
        .expect("record");
    assert!(record.created);

    let pipelines = store.pipelines().await.expect("pipelines");
    assert_eq!(pipelines.len(), 1);
    assert_eq!(pipelines[0].id, record.pipeline_id);
    assert_eq!(pipelines[0].name, "train-pipeline");
    assert_eq!(pipelines[0].kind, PipelineKind::CronWorkflow);

    let latest = store
        .latest_version("train-pipeline")
        .await
        .expect("latest")
        .expect("a version");
    assert_eq!(latest.id, record.version_id);
    assert_eq!(latest.content_hash, hash);
    assert_eq!(latest.schedules, pipeline.schedules);
    assert_eq!(latest.timezone.as_deref(), Some("Asia/Seoul"));
    assert_eq!(latest.parameters, pipeline.parameters);
    assert_eq!(latest.parallelism, Some(4));
    assert!(store
        .latest_version("nope")
        .await
        .expect("latest")
        .is_none());

    // The whole model reads back unchanged: edges, parameters, inputs and outputs in order.
    let read = store.pipeline(record.version_id).await.expect("pipeline");
    assert_eq!(read, pipeline);

    let tasks = store.tasks(record.version_id).await.expect("tasks");
    assert_eq!(tasks.len(), 4);
    for (task, time) in tasks.iter().zip(&times) {
        assert_eq!(task.predicted, Some(*time), "{}", task.task.id);
    }
    assert_eq!(tasks[2].task.depends_on, vec!["train", "prepare"]);

    // The shared input is one data row linked from two tasks.
    let vocab: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM data WHERE uri = ?1")
        .bind("s3://bucket/shared/vocab.txt")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(vocab, 1);
    let vocab_links: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM data_has_task l JOIN data d ON d.id = l.data_id WHERE d.uri = ?1",
    )
    .bind("s3://bucket/shared/vocab.txt")
    .fetch_one(store.pool())
    .await
    .expect("count");
    assert_eq!(vocab_links, 2);
    assert_eq!(
        store
            .consumers("s3://bucket/shared/vocab.txt")
            .await
            .expect("consumers"),
        vec![
            (record.version_id, "train".to_string()),
            (record.version_id, "condition-1.evaluate".to_string())
        ]
    );

    // The model is produced by train and read by evaluate through the same row; the dataset
    // without a location is produced under its task:// identity.
    assert_eq!(
        store
            .producers("s3://bucket/models/model.pt")
            .await
            .expect("producers"),
        vec![(record.version_id, "train".to_string())]
    );
    assert_eq!(
        store
            .producers("task://prepare/dataset")
            .await
            .expect("producers"),
        vec![(record.version_id, "prepare".to_string())]
    );
    assert_eq!(
        store
            .consumers("task://prepare/dataset")
            .await
            .expect("consumers"),
        vec![(record.version_id, "train".to_string())]
    );

    // The PVC mount and the output prefix are directories, not data.
    assert!(store
        .directory("pvc://data-claim/mnt/images")
        .await
        .expect("dir")
        .is_some());
    assert!(store
        .data("pvc://data-claim/mnt/images")
        .await
        .expect("data")
        .is_none());
    assert!(store
        .directory("s3://bucket/stats/")
        .await
        .expect("dir")
        .is_some());
    assert_eq!(
        store
            .consumers("pvc://data-claim/mnt/images")
            .await
            .expect("consumers"),
        vec![(record.version_id, "prepare".to_string())]
    );

    let prepare_inputs = store.task_inputs(tasks[0].id).await.expect("inputs");
    assert_eq!(prepare_inputs.len(), 2);
    assert!(matches!(
        prepare_inputs[0].storage,
        ArtifactStorage::Data {
            size_bytes: None,
            ..
        }
    ));
    assert!(matches!(
        prepare_inputs[1].storage,
        ArtifactStorage::Directory { .. }
    ));
    assert_eq!(prepare_inputs[1].path.as_deref(), Some("/mnt/images"));
    assert!(prepare_inputs.iter().all(|a| a.role == ArtifactRole::Input));

    // Each loop item's input keeps its item, object or prefix; the others have none.
    let train_inputs = store.task_inputs(tasks[1].id).await.expect("inputs");
    let train_items: Vec<(Option<u32>, Option<&str>)> = train_inputs
        .iter()
        .map(|a| (a.item, a.uri.as_deref()))
        .collect();
    assert_eq!(
        train_items,
        [
            (None, Some("task://prepare/dataset")),
            (None, Some("s3://bucket/shared/vocab.txt")),
            (Some(0), Some("s3://bucket/shards/shard-0.bin")),
            (Some(1), Some("s3://bucket/shards/shard-1.bin")),
            (Some(2), Some("s3://bucket/shards/part-2/")),
        ]
    );

    let evaluate_inputs = store.task_inputs(tasks[2].id).await.expect("inputs");
    let names: Vec<_> = evaluate_inputs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["model", "vocab", "config", "unknown"]);
    assert_eq!(evaluate_inputs[2].storage, ArtifactStorage::Unlinked);
    assert_eq!(evaluate_inputs[2].uri.as_deref(), Some("raw:"));
    assert_eq!(evaluate_inputs[3].uri, None);

    let prepare_outputs = store.task_outputs(tasks[0].id).await.expect("outputs");
    assert!(prepare_outputs[0].implicit);
    assert_eq!(
        prepare_outputs[0].uri.as_deref(),
        Some("task://prepare/dataset")
    );

    let counts = counts(&store).await;
    assert_eq!(counts["task"], 4);
    assert_eq!(counts["task_edge"], 3);
    // raw.csv, task://prepare/dataset, vocab, model, two shards
    assert_eq!(counts["data"], 6);
    // the PVC mount, the stats prefix, a shard prefix
    assert_eq!(counts["directory"], 3);
    assert_eq!(counts["task_unlinked_artifact"], 2);
}

#[tokio::test]
async fn sizes_are_recorded_on_shared_rows() {
    let (_dir, store) = open_temp().await;
    let pipeline = training_pipeline();
    let record = store
        .record_analysis(&pipeline, &content_hash(b"v1"), &[])
        .await
        .expect("record");
    store
        .set_data_size("s3://bucket/shared/vocab.txt", 1 << 20)
        .await
        .expect("set size");
    store
        .set_directory_size("pvc://data-claim/mnt/images", 5 << 30, 1000)
        .await
        .expect("set directory size");
    let data = store
        .data("s3://bucket/shared/vocab.txt")
        .await
        .expect("data")
        .expect("row");
    assert_eq!(data.size_bytes, Some(1 << 20));

    let tasks = store.tasks(record.version_id).await.expect("tasks");
    assert!(tasks.iter().all(|t| t.predicted.is_none()));
    let train_inputs = store.task_inputs(tasks[1].id).await.expect("inputs");
    assert_eq!(
        train_inputs[1].storage,
        ArtifactStorage::Data {
            id: data.id,
            size_bytes: Some(1 << 20)
        }
    );
    let prepare_inputs = store.task_inputs(tasks[0].id).await.expect("inputs");
    assert!(matches!(
        prepare_inputs[1].storage,
        ArtifactStorage::Directory { size_bytes: Some(s), object_count: Some(1000), .. } if s == 5 << 30
    ));

    let unknown = store.set_data_size("s3://bucket/nowhere", 1).await;
    assert!(
        matches!(unknown, Err(Error::UnknownUri { .. })),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn recording_the_same_content_twice_reuses_the_version() {
    let (_dir, store) = open_temp().await;
    let pipeline = training_pipeline();
    let times = schedule(&pipeline);
    let hash = content_hash(b"same bytes");

    let first = store
        .record_analysis(&pipeline, &hash, &times)
        .await
        .expect("first");
    let before = counts(&store).await;

    // Same content, new predictions: only the predicted times change.
    let later: Vec<TaskTimes> = times
        .iter()
        .map(|t| TaskTimes {
            start_s: t.start_s + 100.0,
            end_s: t.end_s + 100.0,
        })
        .collect();
    let second = store
        .record_analysis(&pipeline, &hash, &later)
        .await
        .expect("second");
    assert!(!second.created);
    assert_eq!(
        (second.pipeline_id, second.version_id),
        (first.pipeline_id, first.version_id)
    );
    assert_eq!(counts(&store).await, before);

    let tasks = store.tasks(first.version_id).await.expect("tasks");
    for (task, time) in tasks.iter().zip(&later) {
        assert_eq!(task.predicted, Some(*time));
    }

    // Without times, re-recording leaves the predictions alone.
    let third = store
        .record_analysis(&pipeline, &hash, &[])
        .await
        .expect("third");
    assert!(!third.created);
    let tasks = store.tasks(first.version_id).await.expect("tasks");
    assert_eq!(tasks[0].predicted, Some(later[0]));
    assert_eq!(counts(&store).await, before);
}

#[tokio::test]
async fn changed_content_makes_a_new_version() {
    let (_dir, store) = open_temp().await;
    let v1 = training_pipeline();
    let mut v2 = training_pipeline();
    v2.tasks[1].gpus = 4;
    v2.tasks[1].inputs[1].source = Some("s3://bucket/shared/vocab-v2.txt".into());

    let a = store
        .record_analysis(&v1, &content_hash(b"v1"), &schedule(&v1))
        .await
        .expect("v1");
    let b = store
        .record_analysis(&v2, &content_hash(b"v2"), &schedule(&v2))
        .await
        .expect("v2");
    assert!(b.created);
    assert_eq!(a.pipeline_id, b.pipeline_id);
    assert_ne!(a.version_id, b.version_id);

    let versions = store.versions(a.pipeline_id).await.expect("versions");
    assert_eq!(
        versions.iter().map(|v| v.id).collect::<Vec<_>>(),
        [a.version_id, b.version_id]
    );
    assert_eq!(store.pipeline(a.version_id).await.expect("v1"), v1);
    assert_eq!(store.pipeline(b.version_id).await.expect("v2"), v2);
    assert_eq!(
        store
            .latest_version("train-pipeline")
            .await
            .expect("latest")
            .map(|v| v.id),
        Some(b.version_id)
    );
    // The unchanged shared model is one data row used by both versions.
    assert_eq!(
        store
            .consumers("s3://bucket/models/model.pt")
            .await
            .expect("consumers"),
        vec![
            (a.version_id, "condition-1.evaluate".to_string()),
            (b.version_id, "condition-1.evaluate".to_string())
        ]
    );

    // Going back to the first content reuses its version and makes it the latest again.
    let again = store
        .record_analysis(&v1, &content_hash(b"v1"), &[])
        .await
        .expect("v1 again");
    assert!(!again.created);
    assert_eq!(again.version_id, a.version_id);
    assert_eq!(
        store
            .latest_version("train-pipeline")
            .await
            .expect("latest")
            .map(|v| v.id),
        Some(a.version_id)
    );
}

#[tokio::test]
async fn update_predictions_is_all_or_nothing() {
    let (_dir, store) = open_temp().await;
    let pipeline = training_pipeline();
    let record = store
        .record_analysis(&pipeline, &content_hash(b"v1"), &[])
        .await
        .expect("record");

    store
        .update_predictions(
            record.version_id,
            &[("prepare", 0.0, 60.0), ("train", 60.0, 660.0)],
        )
        .await
        .expect("update");
    let tasks = store.tasks(record.version_id).await.expect("tasks");
    assert_eq!(
        tasks[1].predicted,
        Some(TaskTimes {
            start_s: 60.0,
            end_s: 660.0
        })
    );

    let unknown = store
        .update_predictions(
            record.version_id,
            &[
                ("prepare".to_string(), 5.0, 6.0),
                ("missing".to_string(), 0.0, 1.0),
            ],
        )
        .await;
    assert!(
        matches!(unknown, Err(Error::UnknownTask { .. })),
        "{unknown:?}"
    );
    let tasks = store.tasks(record.version_id).await.expect("tasks");
    assert_eq!(
        tasks[0].predicted,
        Some(TaskTimes {
            start_s: 0.0,
            end_s: 60.0
        })
    );

    let backwards = store
        .update_predictions(record.version_id, &[("train", 10.0, 5.0)])
        .await;
    assert!(
        matches!(backwards, Err(Error::InvalidPrediction { .. })),
        "{backwards:?}"
    );
    let no_version = store
        .update_predictions(record.version_id + 100, &[("train", 1.0, 5.0)])
        .await;
    assert!(
        matches!(no_version, Err(Error::UnknownVersion { .. })),
        "{no_version:?}"
    );
}

// A task that depends on an id outside the pipeline is rejected after the pipeline, version
// and tasks were inserted; the rollback must take all of them away.
#[tokio::test]
async fn failed_analysis_leaves_nothing_behind() {
    let (_dir, store) = open_temp().await;
    let mut broken = training_pipeline();
    broken.tasks[2].depends_on.push("does-not-exist".into());

    let result = store
        .record_analysis(&broken, &content_hash(b"broken"), &[])
        .await;
    assert!(
        matches!(&result, Err(Error::UnknownDependency { task, dependency, .. })
            if task == "condition-1.evaluate" && dependency == "does-not-exist"),
        "{result:?}"
    );
    assert!(counts(&store).await.values().all(|&n| n == 0));
    assert!(store.pipelines().await.expect("pipelines").is_empty());
}

// Duplicate task ids violate UNIQUE (version_id, task_key) in the middle of the transaction;
// an existing pipeline's earlier version must survive untouched.
#[tokio::test]
async fn constraint_violation_rolls_back_a_new_version() {
    let (_dir, store) = open_temp().await;
    let good = training_pipeline();
    let first = store
        .record_analysis(&good, &content_hash(b"good"), &schedule(&good))
        .await
        .expect("good");
    let before = counts(&store).await;

    let mut duplicate = training_pipeline();
    duplicate.kind = PipelineKind::Workflow;
    let copy = duplicate.tasks[0].clone();
    duplicate.tasks.push(copy);
    let result = store
        .record_analysis(&duplicate, &content_hash(b"dup"), &[])
        .await;
    assert!(matches!(result, Err(Error::Database { .. })), "{result:?}");

    assert_eq!(counts(&store).await, before);
    let versions = store.versions(first.pipeline_id).await.expect("versions");
    assert_eq!(versions.len(), 1);
    // The pipeline's kind was not switched to the failed version's kind.
    assert_eq!(
        store.pipelines().await.expect("pipelines")[0].kind,
        PipelineKind::CronWorkflow
    );
}

#[tokio::test]
async fn times_must_match_the_tasks() {
    let (_dir, store) = open_temp().await;
    let pipeline = training_pipeline();
    let short = [TaskTimes {
        start_s: 0.0,
        end_s: 1.0,
    }];
    let result = store.record_analysis(&pipeline, "h", &short).await;
    assert!(
        matches!(
            result,
            Err(Error::TimesMismatch {
                tasks: 4,
                times: 1,
                ..
            })
        ),
        "{result:?}"
    );

    let mut nan = schedule(&pipeline);
    nan[1].end_s = f64::NAN;
    let result = store.record_analysis(&pipeline, "h", &nan).await;
    assert!(
        matches!(result, Err(Error::InvalidPrediction { .. })),
        "{result:?}"
    );
    assert!(counts(&store).await.values().all(|&n| n == 0));
}

#[tokio::test]
async fn in_memory_store_has_the_schema() {
    let store = Store::open_in_memory().await.expect("open");
    let pipeline = training_pipeline();
    let record = store
        .record_analysis(&pipeline, &content_hash(b"mem"), &schedule(&pipeline))
        .await
        .expect("record");
    assert_eq!(
        store.pipeline(record.version_id).await.expect("read"),
        pipeline
    );
}

// Two stores on one file (two processes in practice) both write; WAL plus the busy timeout
// queue the writers instead of failing with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kfcache.db");
    let a = Store::open(&path).await.expect("open a");
    let b = Store::open(&path).await.expect("open b");
    let mut handles = Vec::new();
    for (i, store) in [a.clone(), b.clone(), a, b].into_iter().enumerate() {
        handles.push(tokio::spawn(async move {
            let mut pipeline = training_pipeline();
            pipeline.name = format!("pipeline-{}", i % 2);
            let hash = content_hash(format!("content-{i}").as_bytes());
            store.record_analysis(&pipeline, &hash, &[]).await
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("record");
    }
    let store = Store::open(&path).await.expect("open");
    let pipelines = store.pipelines().await.expect("pipelines");
    assert_eq!(pipelines.len(), 2);
    for p in pipelines {
        assert_eq!(store.versions(p.id).await.expect("versions").len(), 2);
    }
}
