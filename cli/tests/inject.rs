//! `kfcache inject` through the binary: output to stdout and to a file (written atomically),
//! invalid input (exit code 2, nothing written), idempotence, placement from a nodes file, and
//! the flags that end up in the pods. Every output is analysed again (same DAG) and validated
//! against Argo's JSON schema. The round trip over every fixture and the whole corpus runs
//! in-process in `src/inject/tests.rs`.

mod argo_schema;
mod common;

use std::path::Path;

use kfcache_parser::{ParseOptions, Pipeline};
use serde_yaml::Value;

use argo_schema::ArgoSchema;
use common::{kfcache, stdout_of};

const GPU_PIPELINE: &str = "fixtures/argo/gpu-training-pipeline.yaml";

fn analyse(path: &str, text: &str) -> Vec<Pipeline> {
    let parse = ParseOptions {
        template_dirs: vec![common::workspace().join("fixtures/argo/templates")],
    };
    let mut pipelines =
        kfcache_parser::parse_str(Path::new(path), text, &parse).expect("the output analyses");
    for p in &mut pipelines {
        p.line = None;
        for t in &mut p.tasks {
            t.line = None;
        }
    }
    pipelines
}

fn original(path: &str) -> String {
    std::fs::read_to_string(common::workspace().join(path)).expect("fixture")
}

/// The output analyses into the same pipelines and gains no schema error.
fn assert_faithful(path: &str, output: &str, schema: &ArgoSchema) {
    let input = original(path);
    assert_eq!(analyse(path, output), analyse(path, &input), "{path}");
    let before = schema.file_errors(&input);
    let after = schema.file_errors(output);
    assert_eq!(before.len(), after.len(), "{path}: documents");
    for (before, after) in before.iter().zip(&after) {
        if let (Some(before), Some(after)) = (before, after) {
            let new: Vec<_> = after
                .iter()
                .filter(|(k, _)| !before.contains_key(*k))
                .collect();
            assert!(new.is_empty(), "{path}: new schema errors {new:#?}");
        }
    }
}

fn templates(doc: &Value) -> Vec<Value> {
    let spec = match doc["kind"].as_str() {
        Some("CronWorkflow") => &doc["spec"]["workflowSpec"],
        _ => &doc["spec"],
    };
    spec["templates"].as_sequence().cloned().unwrap_or_default()
}

fn template(text: &str, name: &str) -> Value {
    argo_schema::documents(text)
        .iter()
        .flat_map(templates)
        .find(|t| t["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("template {name}"))
}

fn has_container(template: &Value, list: &str, name: &str) -> bool {
    template[list]
        .as_sequence()
        .is_some_and(|l| l.iter().any(|c| c["name"].as_str() == Some(name)))
}

fn env_value(template: &Value, variable: &str) -> Option<String> {
    template["initContainers"]
        .as_sequence()?
        .iter()
        .find(|c| c["name"].as_str() == Some("kfcache-init"))?["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(variable))?["value"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn fixtures_are_injected_faithfully_through_the_binary() {
    let db = tempfile::tempdir().expect("tempdir");
    let schema = ArgoSchema::load();
    for (path, gpu_templates) in [
        (GPU_PIPELINE, &["train-classifier", "evaluate"][..]),
        (
            "fixtures/kfp/v1/gpu-training.yaml",
            &["train", "evaluate"][..],
        ),
        (
            "fixtures/argo/cron-nightly-retrain.yaml",
            &["train-gbdt", "train-tabnet"][..],
        ),
        ("fixtures/argo/multi-document.yaml", &["embed"][..]),
    ] {
        let out = stdout_of(kfcache(db.path()).args(["inject", path]));
        assert_faithful(path, &out, &schema);
        for name in gpu_templates {
            let t = template(&out, name);
            assert!(
                has_container(&t, "initContainers", "kfcache-init"),
                "{path} {name}"
            );
            assert!(
                has_container(&t, "sidecars", "kfcache-watch"),
                "{path} {name}"
            );
            assert!(
                t["podSpecPatch"]
                    .as_str()
                    .is_some_and(|p| p.contains("\"shareProcessNamespace\":true")),
                "{path} {name}"
            );
        }
    }
}

#[test]
fn output_file_is_written_whole_and_injecting_it_again_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("injected.yaml");
    let printed = stdout_of(
        kfcache(dir.path())
            .args(["inject", GPU_PIPELINE, "-o"])
            .arg(&out),
    );
    assert!(printed.is_empty(), "nothing on stdout with -o: {printed}");
    let first = std::fs::read_to_string(&out).expect("written");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The comment block at the top of the fixture stays.
    assert!(first.starts_with("# GPU training pipeline"), "{first}");

    let again = dir.path().join("again.yaml");
    stdout_of(
        kfcache(dir.path())
            .arg("inject")
            .arg(&out)
            .arg("-o")
            .arg(&again),
    );
    assert_eq!(
        std::fs::read_to_string(&again).expect("written"),
        first,
        "injecting an injected file changes nothing"
    );
}

#[test]
fn invalid_input_exits_2_names_the_line_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (input, expected) in [
        (
            "fixtures/invalid/cycle.yaml",
            "fixtures/invalid/cycle.yaml:",
        ),
        (
            "fixtures/invalid/yaml-syntax.yaml",
            "fixtures/invalid/yaml-syntax.yaml:",
        ),
        ("fixtures/kfp/v2/gpu-training.yaml", "not an Argo workflow"),
    ] {
        let out = dir.path().join("out.yaml");
        let output = kfcache(dir.path())
            .args(["inject", input, "-o"])
            .arg(&out)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{input}: {stderr}");
        assert!(stderr.contains(expected), "{input}: {stderr}");
        assert!(!out.exists(), "{input}: an output file was written");
        assert!(output.stdout.is_empty());
    }
    // An existing output file is left as it was.
    let out = dir.path().join("kept.yaml");
    std::fs::write(&out, "keep me\n").expect("write");
    let status = kfcache(dir.path())
        .args(["inject", "fixtures/invalid/cycle.yaml", "-o"])
        .arg(&out)
        .output()
        .expect("runs")
        .status;
    assert_eq!(status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "keep me\n");
    // A file that cannot be read is a plain failure.
    let missing = kfcache(dir.path())
        .args(["inject", "fixtures/argo/no-such-file.yaml"])
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn flags_reach_the_pods() {
    let db = tempfile::tempdir().expect("tempdir");
    let out = stdout_of(kfcache(db.path()).args([
        "inject",
        GPU_PIPELINE,
        "--image",
        "registry.example/kfcache:1.2.3",
        "--pod-ignite",
        "ignite-0.ignite:10800,ignite-1.ignite:10800",
        "--key-prefix",
        "team-a",
        "--all-tasks",
    ]));
    let t = template(&out, "preprocess-shard");
    assert_eq!(
        t["initContainers"][0]["image"].as_str(),
        Some("registry.example/kfcache:1.2.3")
    );
    assert_eq!(
        env_value(&t, "KFCACHE_IGNITE").as_deref(),
        Some("ignite-0.ignite:10800,ignite-1.ignite:10800")
    );
    assert_eq!(
        env_value(&t, "KFCACHE_KEY_PREFIX").as_deref(),
        Some("team-a")
    );
    let spec: serde_json::Value =
        serde_json::from_str(&env_value(&t, "KFCACHE_TASK").expect("task")).expect("JSON");
    assert_eq!(spec["task"], serde_json::json!("preprocess"));
    assert_eq!(spec["template"], serde_json::json!("preprocess-shard"));
    // The exit handler and the DAG template: the handler runs a container, the DAG does not.
    assert!(has_container(
        &template(&out, "notify"),
        "sidecars",
        "kfcache-watch"
    ));
    assert!(template(&out, "train-and-deploy").get("sidecars").is_none());
    assert_faithful(GPU_PIPELINE, &out, &ArgoSchema::load());
}

fn nodes_file(dir: &Path) -> std::path::PathBuf {
    let gib: u64 = 1 << 30;
    let node = |name: &str, free: u64, float_time: f64, util: f64| {
        serde_json::json!({
            "node": name,
            "at": "2026-01-01T00:00:00Z",
            "provisionable": util < 100.0,
            "gpu_memory_total_bytes": 80 * gib,
            "gpu_memory_used_bytes": (80 - free) * gib,
            "gpu_utilization_pct": util,
            "float_time_s": float_time,
            "deadline_misses": 0,
        })
    };
    let reports = serde_json::json!([
        node("gpu-a", 60, 100.0, 40.0),
        node("gpu-b", 30, 4000.0, 40.0),
        node("gpu-full", 70, 9000.0, 100.0),
        node("gpu-c", 10, 9000.0, 40.0),
    ]);
    let path = dir.join("nodes.json");
    std::fs::write(&path, serde_json::to_string_pretty(&reports).expect("json")).expect("write");
    path
}

fn preferences(template: &Value) -> Vec<(String, i64)> {
    template["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_sequence()
        .map(|terms| {
            terms
                .iter()
                .map(|t| {
                    (
                        t["preference"]["matchExpressions"][0]["values"][0]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        t["weight"].as_i64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn placement_turns_the_ranking_into_node_preferences_for_gpu_templates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = nodes_file(dir.path());
    let out = stdout_of(
        kfcache(dir.path())
            .args(["inject", GPU_PIPELINE, "--nodes-file"])
            .arg(&nodes)
            .args(["--deadline", "30m"]),
    );
    let expected = vec![
        ("gpu-b".to_string(), 100),
        ("gpu-c".to_string(), 67),
        ("gpu-a".to_string(), 34),
    ];
    assert_eq!(preferences(&template(&out, "train-classifier")), expected);
    assert_eq!(preferences(&template(&out, "evaluate")), expected);
    assert!(template(&out, "validate-dataset").get("affinity").is_none());
    assert_faithful(GPU_PIPELINE, &out, &ArgoSchema::load());

    // What `kfcache nodes -f json` prints is a nodes file too.
    let ranking = stdout_of(
        kfcache(dir.path())
            .args(["nodes", "-f", "json", "--nodes-file"])
            .arg(&nodes),
    );
    let saved = dir.path().join("ranking.json");
    std::fs::write(&saved, ranking).expect("write");
    let from_ranking = stdout_of(
        kfcache(dir.path())
            .args(["inject", GPU_PIPELINE, "--nodes-file"])
            .arg(&saved)
            .args(["--deadline", "30m"]),
    );
    assert_eq!(from_ranking, out);
    // Without a deadline the ranking order itself: most free GPU memory first.
    let plain = stdout_of(
        kfcache(dir.path())
            .args(["inject", GPU_PIPELINE, "--nodes-file"])
            .arg(&nodes),
    );
    assert_eq!(
        preferences(&template(&plain, "evaluate"))
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        vec!["gpu-a", "gpu-b", "gpu-c"]
    );
}
