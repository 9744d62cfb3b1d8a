//! Property tests of the DAG invariants users rely on: a random DAG written as Argo YAML
//! parses back to exactly the same edges (with `dependencies` lists and with `depends`
//! expressions), and the default schedule never starts a task before its dependencies end.

#[path = "support/generate.rs"]
mod generate;

use std::collections::BTreeSet;
use std::path::Path;

use kfcache_parser::schedule::default_schedule;
use kfcache_parser::{parse_str, Dag, ParseOptions};
use proptest::prelude::*;

/// Random DAGs as adjacency lists in which every task depends only on earlier tasks.
fn dags() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1usize..40).prop_flat_map(|n| {
        (0..n)
            .map(|i| proptest::collection::btree_set(0..i.max(1), 0..=i.min(4)))
            .collect::<Vec<_>>()
            .prop_map(|sets| {
                sets.into_iter()
                    .enumerate()
                    .map(|(i, s)| {
                        if i == 0 {
                            vec![]
                        } else {
                            s.into_iter().collect()
                        }
                    })
                    .collect()
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn argo_yaml_parses_back_to_the_same_edges(deps in dags(), expression in any::<bool>()) {
        let yaml = generate::argo_workflow(&deps, expression);
        let pipelines = parse_str(Path::new("generated.yaml"), &yaml, &ParseOptions::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(pipelines.len(), 1);
        let p = &pipelines[0];
        prop_assert_eq!(p.tasks.len(), deps.len());
        let expected: BTreeSet<(String, String)> = deps
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.iter().map(move |d| (format!("t{d}"), format!("t{i}"))))
            .collect();
        let dag = Dag::build(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed: BTreeSet<(String, String)> = dag
            .edges()
            .map(|(a, b)| (p.tasks[a].id.clone(), p.tasks[b].id.clone()))
            .collect();
        prop_assert_eq!(parsed, expected);

        let times = default_schedule(p, &dag);
        for (a, b) in dag.edges() {
            prop_assert!(times[b].start_s >= times[a].end_s);
        }
        for (i, task) in p.tasks.iter().enumerate() {
            prop_assert_eq!(task.gpus, if i % 4 == 0 { 1 } else { 0 });
        }
    }
}
