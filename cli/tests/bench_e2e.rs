//! `kfcache bench e2e`, short: 2 reps of each arm on tiny data against the real 3-node Ignite
//! cluster and the real S3 server. What users rely on: the three arms replay the same inputs
//! within the same budget, kfcache's GPU tasks read from the cache while the no-cache arm's
//! read everything from the origin, every file of the report is written, and the last line
//! parses. Whether the goals are met is the full benchmark's business, not a test's.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

mod common;

#[test]
fn short_replay_runs_three_arms_on_the_same_inputs_and_writes_the_report() {
    let ignite = common::env("KFCACHE_TEST_IGNITE_3");
    let s3 = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let db = tempfile::tempdir().unwrap();
    let out_dir = db.path().join("e2e");
    let out = common::stdout_of(common::kfcache(db.path()).args([
        "bench",
        "e2e",
        "--reps",
        "2",
        "--scale",
        "0.01",
        "--time-scale",
        "0.2",
        "--bandwidth",
        "20MB/s",
        "--latency",
        "5ms",
        "--ignite",
        &ignite,
        "--s3-endpoint",
        &s3,
        "--bucket",
        &common::unique("e2e").to_lowercase(),
        "--out",
        out_dir.to_str().unwrap(),
    ]));

    // The last line: every figure named and a number.
    let last = out.lines().last().unwrap();
    let fields: BTreeMap<&str, f64> = last
        .strip_prefix("e2e-bench: ")
        .unwrap_or_else(|| panic!("unexpected last line: {last}"))
        .split(' ')
        .map(|field| {
            let (name, value) = field.split_once('=').unwrap();
            (name, value.parse::<f64>().unwrap())
        })
        .collect();
    let names: Vec<&str> = fields.keys().copied().collect();
    assert_eq!(
        names,
        [
            "makespan_kfcache_s",
            "makespan_nocache_s",
            "p_vs_lru",
            "wait_kfcache_s",
            "wait_lru_s",
            "wait_nocache_s"
        ]
    );
    for (name, value) in &fields {
        assert!(value.is_finite() && *value >= 0.0, "{name}={value}");
    }

    for file in [
        "report.md",
        "results.json",
        "wait.svg",
        "makespan.svg",
        "gantt.svg",
    ] {
        assert!(out_dir.join(file).is_file(), "{file} is written");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    let reps = results["reps"].as_array().unwrap();
    let of = |arm: &str| -> Vec<&serde_json::Value> {
        reps.iter().filter(|r| r["arm"] == arm).collect()
    };
    for arm in ["nocache", "lru", "kfcache"] {
        assert_eq!(of(arm).len(), 2, "{arm} ran twice");
    }

    // The same inputs: every task of every rep of every arm read the same bytes, from wherever.
    let read_per_task = |rep: &serde_json::Value| -> BTreeMap<String, u64> {
        rep["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    format!("{}({})", t["task"].as_str().unwrap(), t["instance"]),
                    t["bytes_from_cache"].as_u64().unwrap()
                        + t["bytes_from_origin"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let reference = read_per_task(of("nocache")[0]);
    assert_eq!(reference.len(), 7, "5 tasks, one a fan-out of 3");
    assert!(reference.values().all(|b| *b > 0));
    for rep in reps {
        assert_eq!(
            read_per_task(rep),
            reference,
            "{} rep {}",
            rep["arm"],
            rep["rep"]
        );
    }
    // One budget for both caching arms, below what a run reads (so it binds).
    let budget = results["config"]["budget_bytes"].as_u64().unwrap();
    assert!(budget > 0 && budget < reference.values().sum::<u64>());

    // Without a cache everything comes from the origin; kfcache's GPU tasks read theirs from
    // the cache (prefetched, or written through by the task upstream).
    for rep in of("nocache") {
        assert_eq!(rep["hit_ratio"].as_f64().unwrap(), 0.0);
        assert_eq!(rep["deadline_misses"].as_u64().unwrap(), 3);
    }
    for rep in of("kfcache") {
        let gpu_from_cache: u64 = rep["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["gpus"].as_u64().unwrap() > 0)
            .map(|t| t["bytes_from_cache"].as_u64().unwrap())
            .sum();
        assert!(
            gpu_from_cache > 0,
            "kfcache rep {} read from the cache",
            rep["rep"]
        );
        assert!(
            !rep["staging"].as_array().unwrap().is_empty(),
            "the prefetcher staged"
        );
    }

    // The history the kfcache reps predict from: every arm's runs of the first rep (the
    // imported past), then only kfcache's (rep 2 runs lru, kfcache, nocache).
    let recorded: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = kfcache_schema::Store::open(&out_dir.join("history.db"))
            .await
            .expect("open the history");
        sqlx::query_scalar("SELECT name FROM run ORDER BY id")
            .fetch_all(store.pool())
            .await
            .expect("runs")
    });
    let arms: Vec<&str> = recorded
        .iter()
        .map(|name| {
            ["nocache", "lru", "kfcache"]
                .into_iter()
                .find(|arm| name.contains(&format!("-{arm}-")))
                .unwrap_or_else(|| panic!("run {name} names no arm"))
        })
        .collect();
    assert_eq!(
        arms,
        ["nocache", "lru", "kfcache", "kfcache"],
        "{recorded:?}"
    );

    // The report has a row per arm and the Welch comparisons; the Gantt shows staging.
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    for needle in ["nocache", "lru", "kfcache", "Welch", "95 % CI", "gantt.svg"] {
        assert!(report.contains(needle), "report.md mentions {needle}");
    }
    let gantt = std::fs::read_to_string(out_dir.join("gantt.svg")).unwrap();
    assert!(
        gantt.contains("stage "),
        "the Gantt chart shows the staging"
    );
    assert!(gantt.contains("train-resnet"));

    // The same report again from results.json, without running anything.
    let again = out_dir.join("again");
    let again_out = common::stdout_of(common::kfcache(db.path()).args([
        "bench",
        "e2e",
        "--from-results",
        out_dir.join("results.json").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]));
    assert_eq!(again_out.lines().last(), Some(last));
    for file in ["report.md", "wait.svg", "makespan.svg", "gantt.svg"] {
        assert_eq!(
            std::fs::read_to_string(again.join(file)).unwrap(),
            std::fs::read_to_string(out_dir.join(file)).unwrap(),
            "{file} written again"
        );
    }
}
