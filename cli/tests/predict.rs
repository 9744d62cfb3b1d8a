//! `kfcache history import` and `kfcache predict` as a user runs them: imported runs make
//! the durations come from history and land in the database; a bad status file exits with
//! code 2, names its line and imports nothing, not even the good files beside it; `--next-run`
//! anchors a CronWorkflow at its next fire time; the Gantt chart is an SVG with GPU tasks
//! highlighted.

use std::path::Path;

mod common;

use common::{kfcache, stdout_of};
use serde_json::Value;

const FLAGSHIP: &str = "fixtures/argo/gpu-training-pipeline.yaml";
const RUNS: [&str; 2] = [
    "fixtures/status/gpu-training-pipeline-x7k2p.yaml",
    "fixtures/status/gpu-training-pipeline-list.json",
];

fn predict_json(db: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["predict", FLAGSHIP, "--format", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&stdout_of(kfcache(db).args(&args))).expect("JSON")
}

#[test]
fn imported_history_drives_the_prediction() {
    let db = tempfile::tempdir().expect("tempdir");
    let fresh = predict_json(db.path(), &["--start-at", "2024-06-01T02:00:00+02:00"]);
    assert_eq!(fresh["anchor"], "2024-06-01T00:00:00Z");
    assert!(fresh["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .all(|t| t["duration_source"] == "prior"));

    let out = stdout_of(kfcache(db.path()).arg("history").arg("import").args(RUNS));
    assert!(out.contains("imported 3 runs"), "{out}");
    let v = predict_json(db.path(), &["--start-at", "2024-06-01T00:00:00Z"]);
    assert_eq!(v["history_runs"], 3);
    let tasks = v["tasks"].as_array().expect("tasks");
    let task = |id: &str| tasks.iter().find(|t| t["id"] == id).expect(id);
    assert_eq!(task("train-resnet50")["duration_source"], "history");
    assert_eq!(task("train-resnet50")["samples"], 3);
    assert!(task("train-resnet50")["retry_s"].as_f64().expect("retry") > 0.0);
    let deploy = task("deploy");
    assert!((deploy["run_probability"].as_f64().expect("p") - 2.0 / 3.0).abs() < 1e-9);
    // Inputs are needed when their task starts.
    let evaluate = task("evaluate");
    assert_eq!(evaluate["inputs"][0]["needed_by"], evaluate["start_at"]);
    for t in tasks {
        for dep in t["depends_on"].as_array().into_iter().flatten() {
            let dep = task(dep.as_str().expect("id"));
            assert!(t["start_s"].as_f64() >= dep["end_s"].as_f64());
        }
    }

    // analyze now shows the same history-based times.
    let analysed: Value = serde_json::from_str(&stdout_of(
        kfcache(db.path()).args(["analyze", "-f", "json", FLAGSHIP]),
    ))
    .expect("JSON");
    let resnet = analysed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["id"] == "train-resnet50")
        .expect("task");
    assert_eq!(
        resnet["predicted_start_s"],
        task("train-resnet50")["start_s"]
    );
}

#[test]
fn a_bad_status_file_imports_nothing() {
    let db = tempfile::tempdir().expect("tempdir");
    let out = kfcache(db.path())
        .args([
            "history",
            "import",
            RUNS[0],
            "fixtures/status/invalid/bad-timestamp.yaml",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fixtures/status/invalid/bad-timestamp.yaml:21"),
        "{stderr}"
    );
    let v = predict_json(db.path(), &["--start-at", "2024-06-01T00:00:00Z"]);
    assert_eq!(
        v["history_runs"], 0,
        "the good file beside it was not imported either"
    );
}

#[test]
fn next_run_anchors_a_cron_workflow_and_gantt_is_svg() {
    let db = tempfile::tempdir().expect("tempdir");
    let gantt = db.path().join("gantt.svg");
    let out = stdout_of(kfcache(db.path()).args([
        "predict",
        "fixtures/argo/cron-nightly-retrain.yaml",
        "--next-run",
        "--format",
        "json",
        "--gantt",
        gantt.to_str().expect("utf-8 path"),
    ]));
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["anchor_kind"], "next-run");
    let anchor =
        chrono::DateTime::parse_from_rfc3339(v["anchor"].as_str().expect("anchor")).expect("time");
    assert!(anchor > chrono::Utc::now(), "the next run is in the future");
    let svg = std::fs::read_to_string(&gantt).expect("gantt written");
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("#76B900"), "GPU tasks drawn in green");

    let err = kfcache(db.path())
        .args(["predict", FLAGSHIP, "--next-run"])
        .output()
        .expect("runs");
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no cron schedule"));
}

/// `key=value` pairs of a summary line.
fn fields(line: &str) -> std::collections::HashMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("number")))
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "bench"),
    ignore = "`kfcache bench` is built with the `bench` feature"
)]
fn the_backtest_prints_the_floor_and_its_summary_line_last() {
    let db = tempfile::tempdir().expect("tempdir");
    let out = stdout_of(kfcache(db.path()).args([
        "bench",
        "predict",
        "--pipeline",
        FLAGSHIP,
        "--runs",
        "10",
        "--seed",
        "3",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    let last = lines.last().expect("output");
    assert!(last.starts_with("predict-backtest: kfcache_mape="), "{out}");
    let summary = fields(last);
    assert_eq!(summary["runs"], 7.0, "runs 4..10 have 3 earlier runs each");
    assert!(summary["tasks"] > 0.0);
    assert!(summary["kfcache_mape"] < summary["last_run_mape"], "{out}");
    let floor = lines
        .iter()
        .find(|l| l.starts_with("predict-floor: "))
        .map(|l| fields(l))
        .expect("a predict-floor line");
    assert!(
        floor["oracle_mape"] > 0.0 && floor["oracle_mape"] <= summary["kfcache_mape"],
        "the oracle knows the model, so it is the floor: {out}"
    );
}
