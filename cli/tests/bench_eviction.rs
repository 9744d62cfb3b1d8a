//! `kfcache bench eviction` as a user reads it: the workload line, the table of hit ratios
//! per cache size and policy, the gaps against the oracle and LRU with the goals, and
//! the machine-readable last line. The simulation is seeded, so the whole output is stable:
//! a change in any figure shows up as a snapshot diff to review.

#![allow(clippy::unwrap_used)]

mod common;

#[test]
fn eviction_bench_output_is_stable_for_its_seeds() {
    let db = tempfile::tempdir().unwrap();
    let out =
        common::stdout_of(common::kfcache(db.path()).args(["bench", "eviction", "--seeds", "3"]));
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("eviction-bench: cache_frac=0.5 kfcache_hit="),
        "{last}"
    );
    // The last line repeats the table's means at 50 %.
    let field = |name: &str| -> f64 {
        last.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (kfcache, lru, belady) = (field("kfcache_hit"), field("lru_hit"), field("belady_hit"));
    assert!((0.0..=1.0).contains(&kfcache) && (0.0..=1.0).contains(&lru));
    assert!(kfcache > lru, "kfcache {kfcache} is not above LRU {lru}");
    assert!(
        belady + 1e-9 >= kfcache - 0.01,
        "the oracle {belady} is far below kfcache {kfcache}"
    );
    insta::assert_snapshot!("eviction_bench_3_seeds", out);
}
