//! `kfcache bench monitor` with a few workers: the table and the machine-readable last line.
//! Only the format and sanity of the figures are checked (finite, non-negative): whether they
//! meet the goals depends on the machine, and a test is no benchmark.

#![allow(clippy::unwrap_used)]

mod common;

#[test]
fn monitor_bench_prints_a_row_per_worker_and_a_parsable_last_line() {
    let db = tempfile::tempdir().unwrap();
    let out = common::stdout_of(common::kfcache(db.path()).args([
        "bench",
        "monitor",
        "--workers",
        "3",
        "--idle-seconds",
        "0.5",
        "--seed",
        "7",
    ]));
    let last = out.lines().last().unwrap();
    let fields: Vec<(&str, f64)> = last
        .strip_prefix("monitor-bench: ")
        .unwrap_or_else(|| panic!("unexpected last line: {last}"))
        .split(' ')
        .map(|field| {
            let (name, value) = field.split_once('=').unwrap();
            (name, value.parse::<f64>().unwrap())
        })
        .collect();
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "start_err_ms_p50",
            "start_err_ms_p99",
            "end_err_ms_p50",
            "idle_cpu_pct"
        ]
    );
    for (name, value) in &fields {
        assert!(value.is_finite() && *value >= 0.0, "{name}={value}");
    }
    // One table row per worker, numbered 1 to 3.
    for worker in 1..=3 {
        assert!(
            out.lines().any(|line| line
                .trim_start_matches(['│', ' '])
                .starts_with(&format!("{worker} "))),
            "no row for worker {worker}:\n{out}"
        );
    }
}

#[test]
fn monitor_bench_refuses_zero_workers() {
    let db = tempfile::tempdir().unwrap();
    let out = common::kfcache(db.path())
        .args(["bench", "monitor", "--workers", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
}
