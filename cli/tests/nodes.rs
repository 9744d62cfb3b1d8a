//! `kfcache nodes`: the ranked node table and the pick for a deadline (Algorithm 2 of the GPU
//! task monitoring and node ranking paper), from a nodes file.

mod common;

use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};
use common::{kfcache, stdout_of};
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;

fn report(name: &str, free_gib: u64, float_time_s: f64, util: f64, misses: u32) -> Value {
    json!({
        "node": name,
        "at": "2026-01-01T12:00:00Z",
        "provisionable": misses == 0 && util < 100.0 && free_gib > 0,
        "gpu_memory_total_bytes": 80 * GIB,
        "gpu_memory_used_bytes": (80 - free_gib) * GIB,
        "gpu_utilization_pct": util,
        "float_time_s": float_time_s,
        "deadline_misses": misses,
    })
}

fn write(dir: &Path, name: &str, reports: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(reports).expect("json")).expect("write");
    path
}

fn cluster(dir: &Path) -> PathBuf {
    write(
        dir,
        "nodes.json",
        &json!([
            report("gpu-small", 8, 12_000.0, 35.0, 0),
            report("gpu-missed", 72, 600.0, 20.0, 1),
            report("gpu-large", 64, 90.0, 50.0, 0),
            report("gpu-busy", 70, 5_000.0, 100.0, 0),
            report("gpu-medium", 40, 2_400.0, 60.0, 0),
            report("gpu-oom", 0, 3_000.0, 80.0, 0),
        ]),
    )
}

#[test]
fn the_table_ranks_by_free_gpu_memory_and_picks_by_float_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster(dir.path());
    let out = stdout_of(
        kfcache(dir.path())
            .args(["nodes", "--deadline", "30m", "--nodes-file"])
            .arg(&nodes),
    );
    insta::assert_snapshot!("nodes_table_deadline_30m", out);
    let last = out.lines().last().expect("a pick line");
    assert!(
        last.starts_with("pick for a deadline of 30m 00s: gpu-medium"),
        "{last}"
    );
}

#[test]
fn json_lists_the_ranking_and_the_pick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster(dir.path());
    let ranked: Value = serde_json::from_str(&stdout_of(
        kfcache(dir.path())
            .args(["nodes", "-f", "json", "--deadline", "1m", "--nodes-file"])
            .arg(&nodes),
    ))
    .expect("JSON");
    let order: Vec<(&str, bool)> = ranked["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["report"]["node"].as_str().unwrap_or_default(),
                n["provisionable"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("gpu-large", true),
            ("gpu-medium", true),
            ("gpu-small", true),
            ("gpu-missed", false),
            ("gpu-busy", false),
            ("gpu-oom", false),
        ]
    );
    assert_eq!(ranked["deadline_s"], json!(60.0));
    // 90 s of float time is more than a 60 s deadline: the node with most memory wins.
    assert_eq!(ranked["pick"], json!("gpu-large"));
    assert_eq!(ranked["nodes"][3]["reason"], json!("deadline missed"));

    // A deadline no node has the float time for: no pick.
    let none: Value = serde_json::from_str(&stdout_of(
        kfcache(dir.path())
            .args(["nodes", "-f", "json", "--deadline", "5h", "--nodes-file"])
            .arg(&nodes),
    ))
    .expect("JSON");
    assert_eq!(none["pick"], Value::Null);
}

#[test]
fn stale_reports_can_be_left_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fresh = report("gpu-fresh", 10, 100.0, 10.0, 0);
    fresh["at"] = json!((Utc::now() - Duration::minutes(1)).to_rfc3339());
    let mut stale = report("gpu-stale", 70, 100.0, 10.0, 0);
    stale["at"] = json!((Utc::now() - Duration::hours(2)).to_rfc3339());
    let nodes = write(dir.path(), "mixed.json", &json!([fresh, stale]));
    let ranked: Value = serde_json::from_str(&stdout_of(
        kfcache(dir.path())
            .args(["nodes", "-f", "json", "--max-age", "10m", "--nodes-file"])
            .arg(&nodes),
    ))
    .expect("JSON");
    let names: Vec<&str> = ranked["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["report"]["node"].as_str())
        .collect();
    assert_eq!(names, vec!["gpu-fresh"]);
}

#[test]
fn no_reports_and_bad_files_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = write(dir.path(), "empty.json", &json!([]));
    let out = stdout_of(
        kfcache(dir.path())
            .args(["nodes", "--nodes-file"])
            .arg(&empty),
    );
    assert!(out.starts_with("no node has reported yet"), "{out}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "[{\"node\": \"x\",\n \"at\": 5}]").expect("write");
    let output = kfcache(dir.path())
        .args(["nodes", "--nodes-file"])
        .arg(&bad)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.json:"), "{stderr}");

    let output = kfcache(dir.path())
        .args(["nodes", "--deadline", "soon", "--nodes-file"])
        .arg(&empty)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--deadline") && stderr.contains("soon"),
        "{stderr}"
    );
}
