//! Generated Argo workflows for property tests and benchmarks: a single `dag` template whose
//! tasks depend on earlier tasks, so the graph is acyclic by construction.

use std::fmt::Write as _;

/// Render a Workflow whose entrypoint DAG has one task per entry of `deps`; task `i` depends
/// on the tasks listed in `deps[i]` (all `< i`). Every fourth task asks for a GPU and every
/// task reads an S3 object, so the parser does all of its per-task work.
pub fn argo_workflow(deps: &[Vec<usize>], use_depends_expression: bool) -> String {
    let mut y = String::with_capacity(deps.len() * 160);
    y.push_str(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: generated-\n\
         spec:\n  entrypoint: main\n  arguments:\n    parameters:\n    - name: epochs\n      value: \"3\"\n\
         \x20 templates:\n  - name: main\n    dag:\n      tasks:\n",
    );
    for (i, task_deps) in deps.iter().enumerate() {
        let template = if i % 4 == 0 { "train" } else { "prep" };
        let _ = writeln!(y, "      - name: t{i}\n        template: {template}");
        if !task_deps.is_empty() {
            let names: Vec<String> = task_deps.iter().map(|d| format!("t{d}")).collect();
            if use_depends_expression {
                let _ = writeln!(y, "        depends: \"{}\"", names.join(" && "));
            } else {
                let _ = writeln!(y, "        dependencies: [{}]", names.join(", "));
            }
        }
        let _ = writeln!(
            y,
            "        arguments:\n          artifacts:\n          - name: data\n            s3:\n              bucket: datasets\n              key: shard-{i}.tar"
        );
    }
    y.push_str(
        "  - name: prep\n    inputs:\n      artifacts:\n      - name: data\n        path: /data\n\
         \x20   container:\n      image: python:3.11\n      command: [python, prep.py, --shards, \"4\"]\n\
         \x20 - name: train\n    inputs:\n      artifacts:\n      - name: data\n        path: /data\n\
         \x20   container:\n      image: pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime\n\
         \x20     command: [python, train.py, --epochs, \"{{workflow.parameters.epochs}}\"]\n\
         \x20     resources:\n        limits:\n          nvidia.com/gpu: 1\n",
    );
    y
}

/// A layered random-looking DAG of `n` tasks: each task depends on up to three of the 16
/// tasks before it, chosen by a fixed linear congruential sequence (reproducible, no rng).
#[allow(dead_code)] // used by the benchmark, not by every test binary
pub fn layered_deps(n: usize) -> Vec<Vec<usize>> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|i| {
            let mut d = Vec::new();
            if i == 0 {
                return d;
            }
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let count = (state >> 33) as usize % 4;
            for k in 0..count {
                let back = 1 + ((state >> (10 + 7 * k)) as usize % 16).min(i - 1);
                let dep = i - back;
                if !d.contains(&dep) {
                    d.push(dep);
                }
            }
            d
        })
        .collect()
}
