//! `kfcache analyze` as a user runs it: the table, the JSON contract, DOT/Mermaid, the
//! database it writes, and located errors with exit code 2 for every kind of invalid input.

use std::path::PathBuf;

mod common;

use common::{kfcache, stdout_of, workspace};
use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    workspace().join("fixtures").join(rel)
}

const FLAGSHIP: &str = "fixtures/argo/gpu-training-pipeline.yaml";

#[test]
fn flagship_table_fits_a_100_column_terminal() {
    let db = tempfile::tempdir().expect("tempdir");
    let out = stdout_of(kfcache(db.path()).args(["analyze", FLAGSHIP]));
    for line in out.lines() {
        assert!(
            line.chars().count() <= 100,
            "line wider than 100 columns: {line:?}"
        );
    }
    insta::assert_snapshot!("flagship_table", out);
}

#[test]
fn flagship_json_keeps_the_contract() {
    let db = tempfile::tempdir().expect("tempdir");
    let out = stdout_of(kfcache(db.path()).args(["analyze", "--format", "json", FLAGSHIP]));
    let v: Value = serde_json::from_str(&out).expect("valid JSON");
    let pipeline = &v["pipeline"];
    assert!(pipeline["name"].is_string());
    assert_eq!(pipeline["source"], FLAGSHIP);
    assert!([
        "Workflow",
        "WorkflowTemplate",
        "ClusterWorkflowTemplate",
        "CronWorkflow",
        "PipelineSpec"
    ]
    .contains(&pipeline["kind"].as_str().expect("kind")));
    assert!(pipeline.get("schedule").is_some());
    let tasks = v["tasks"].as_array().expect("tasks");
    assert!(!tasks.is_empty());
    let ids: Vec<&str> = tasks
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    for t in tasks {
        let id = t["id"].as_str().expect("id");
        assert_eq!(
            Some(t["name"].as_str().expect("name")),
            id.rsplit('.').next()
        );
        assert!(t["template"].is_string());
        assert!([
            "container",
            "script",
            "resource",
            "importer",
            "suspend",
            "http",
            "plugin",
            "other"
        ]
        .contains(&t["kind"].as_str().expect("kind")));
        for dep in t["depends_on"].as_array().expect("depends_on") {
            assert!(
                ids.contains(&dep.as_str().expect("dep id")),
                "{id} depends on unknown {dep}"
            );
        }
        assert!(t["gpus"].is_u64());
        let fan_out = &t["fan_out"];
        assert!(fan_out.is_null() || fan_out.is_u64() || fan_out == "dynamic");
        assert!(t["condition"].is_null() || t["condition"].is_string());
        assert!(t["retries"].is_u64());
        assert!(t["params"]
            .as_object()
            .expect("params")
            .values()
            .all(Value::is_string));
        for i in t["inputs"].as_array().expect("inputs") {
            assert!(i["name"].is_string());
            assert!(i["source"].is_null() || i["source"].is_string());
        }
        for o in t["outputs"].as_array().expect("outputs") {
            assert!(o["name"].is_string());
            assert!(o["location"].is_null() || o["location"].is_string());
        }
        let (start, end) = (
            t["predicted_start_s"].as_f64(),
            t["predicted_end_s"].as_f64(),
        );
        assert!(start.expect("start") <= end.expect("end"));
        // A task never starts before everything it depends on has ended.
        for dep in t["depends_on"].as_array().expect("depends_on") {
            let d = tasks
                .iter()
                .find(|x| x["id"] == *dep)
                .expect("dependency present");
            assert!(
                d["predicted_end_s"].as_f64() <= start,
                "{id} starts before {dep} ends"
            );
        }
    }
    assert!(
        tasks.iter().any(|t| t["gpus"].as_u64() > Some(0)),
        "the flagship has GPU tasks"
    );
    assert!(
        tasks
            .iter()
            .flat_map(|t| t["inputs"].as_array().expect("inputs"))
            .any(|i| i["source"].as_str().is_some_and(|s| s.starts_with("s3://"))),
        "the flagship reads from S3"
    );
    insta::assert_json_snapshot!("flagship_json", v);
}

#[test]
fn dot_and_mermaid_draw_every_edge_and_mark_gpu_tasks() {
    let db = tempfile::tempdir().expect("tempdir");
    let json: Value = serde_json::from_str(&stdout_of(kfcache(db.path()).args([
        "analyze",
        "--no-store",
        "-f",
        "json",
        FLAGSHIP,
    ])))
    .expect("json");
    let edges: usize = json["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["depends_on"].as_array().expect("deps").len())
        .sum();
    let dot = stdout_of(kfcache(db.path()).args(["analyze", "--no-store", "-f", "dot", FLAGSHIP]));
    assert!(dot.starts_with("digraph"));
    assert_eq!(dot.matches(" -> ").count(), edges);
    assert!(dot.contains("GPU"));
    let mermaid =
        stdout_of(kfcache(db.path()).args(["analyze", "--no-store", "-f", "mermaid", FLAGSHIP]));
    assert!(mermaid.starts_with("flowchart"));
    assert_eq!(mermaid.matches(" --> ").count(), edges);
    assert!(mermaid.contains("class ") && mermaid.contains(" gpu"));
    insta::assert_snapshot!("flagship_mermaid", mermaid);
}

#[test]
fn every_fixture_analyses() {
    let db = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    // `argo/templates/` holds template libraries; the one with an entrypoint is a pipeline too.
    files.push(fixture("argo/templates/ml-library.yaml"));
    for dir in ["argo", "kfp/v1", "kfp/v2"] {
        let dir = fixture(dir);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fixture folder {} missing: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 10, "only {} fixtures found", files.len());
    for file in &files {
        let out = kfcache(db.path())
            .args([
                "analyze",
                "--templates",
                "fixtures/argo/templates",
                "-f",
                "json",
            ])
            .arg(file)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        let pipelines = if v.is_array() {
            v.as_array().expect("array").clone()
        } else {
            vec![v]
        };
        for p in pipelines {
            assert!(
                !p["tasks"].as_array().expect("tasks").is_empty(),
                "{}",
                file.display()
            );
        }
    }
}

#[test]
fn invalid_input_is_located_exit_2_and_writes_nothing() {
    let cases = [
        ("yaml-syntax.yaml", "invalid YAML"),
        ("unknown-kind.yaml", "not a workflow"),
        ("missing-entrypoint.yaml", "entrypoint"),
        ("unknown-template.yaml", "unknown template"),
        ("unknown-dependency.yaml", "unknown task"),
        ("duplicate-task.yaml", "duplicate task"),
        ("cycle.yaml", "cycle"),
        ("empty.yaml", "empty document"),
        ("bad-depends.yaml", "depends"),
    ];
    for (file, expected) in cases {
        let db = tempfile::tempdir().expect("tempdir");
        let rel = format!("fixtures/invalid/{file}");
        let out = kfcache(db.path())
            .args(["analyze", &rel])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{file}: exit code");
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        assert!(
            stderr.contains(&rel),
            "{file}: error does not name the file: {stderr}"
        );
        assert!(
            stderr.to_lowercase().contains(&expected.to_lowercase()),
            "{file}: {stderr}"
        );
        if file != "empty.yaml" && file != "unknown-kind.yaml" {
            assert!(
                stderr.contains(&format!("{rel}:")),
                "{file}: no line in: {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{file}: printed output despite the error"
        );
        assert!(
            !db.path().join("kfcache.db").exists(),
            "{file}: database written"
        );
        insta::assert_snapshot!(
            format!("invalid_{}", file.trim_end_matches(".yaml")),
            stderr
        );
    }
}

#[test]
fn a_missing_file_is_exit_1_and_named() {
    let db = tempfile::tempdir().expect("tempdir");
    let out = kfcache(db.path())
        .args(["analyze", "fixtures/no-such-file.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fixtures/no-such-file.yaml"));
}

#[test]
fn reanalysing_the_same_file_keeps_one_version_and_a_change_makes_another() {
    let db = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let copy = work.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(workspace().join(FLAGSHIP)).expect("flagship");
    std::fs::write(&copy, &text).expect("write");
    stdout_of(kfcache(db.path()).arg("analyze").arg(&copy));
    stdout_of(kfcache(db.path()).arg("analyze").arg(&copy));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let versions = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let store = kfcache_schema::Store::open(&db.path().join("kfcache.db"))
                .await
                .expect("open");
            let pipelines = store.pipelines().await.expect("pipelines");
            assert_eq!(pipelines.len(), 1);
            store
                .versions(pipelines[0].id)
                .await
                .expect("versions")
                .len()
        })
    };
    assert_eq!(versions(&rt), 1);
    std::fs::write(&copy, text.replace("--epochs", "--epochs-changed")).expect("write");
    stdout_of(kfcache(db.path()).arg("analyze").arg(&copy));
    assert_eq!(versions(&rt), 2);
}
