//! Parse + validate + DAG + schedule of a generated 10 000-task workflow (target: ≤ 100 ms and
//! ≤ 64 MiB peak heap), and of the whole shared corpus in one process.
//!
//! A bare `serde_yaml::Value` parse of the same text runs beside it, so the cost of analysis
//! can be read as a ratio to the YAML reader's own. Peak heap is measured with a counting global allocator around one un-timed run and printed
//! as `analyze-10k: peak_heap_mib=<f>`.

#[path = "../tests/support/generate.rs"]
mod generate;

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use kfcache_parser::schedule::default_schedule;
use kfcache_parser::{parse_file, parse_str, Dag, ParseOptions};
use peak_alloc::PeakAlloc;

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

fn analyse(text: &str) -> usize {
    let pipelines = parse_str(Path::new("generated.yaml"), text, &ParseOptions::default())
        .expect("generated workflow is valid");
    let mut n = 0;
    for p in &pipelines {
        let dag = Dag::build(p).expect("valid DAG");
        n += default_schedule(p, &dag).len();
    }
    n
}

fn ten_thousand_tasks(c: &mut Criterion) {
    let yaml = generate::argo_workflow(&generate::layered_deps(10_000), true);
    PEAK.reset_peak_usage();
    let before = PEAK.current_usage();
    assert_eq!(analyse(&yaml), 10_000);
    let peak = PEAK.peak_usage().saturating_sub(before);
    println!(
        "analyze-10k: yaml_mib={:.1} peak_heap_mib={:.1}",
        yaml.len() as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64
    );
    let mut group = c.benchmark_group("analyze");
    group.sample_size(20);
    group.bench_function("10k-task workflow", |b| b.iter(|| analyse(&yaml)));
    // The floor under any serde_yaml-based parser, measured side by side: reading the same
    // text into a `serde_yaml::Value` and nothing else.
    group.bench_function("10k-task workflow, YAML to Value only", |b| {
        b.iter(|| serde_yaml::from_str::<serde_yaml::Value>(&yaml).expect("valid YAML"))
    });
    // What a single-pass reader would start from: the same text read straight into the typed
    // Argo structs, with no `Value` in between (no limits, no line index, no flattening).
    group.bench_function("10k-task workflow, YAML to typed structs only", |b| {
        b.iter(|| {
            serde_yaml::from_str::<kfcache_parser::argo::raw::Document>(&yaml)
                .expect("typed document")
        })
    });
    group.finish();
}

fn corpus_dir() -> PathBuf {
    std::env::var_os("KFCACHE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"))
}

fn whole_corpus(c: &mut Criterion) {
    let dir = corpus_dir();
    let index = std::fs::read_to_string(dir.join("INDEX.tsv"))
        .unwrap_or_else(|e| panic!("corpus missing at {}: {e}", dir.display()));
    let files: Vec<PathBuf> = index
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .map(|p| dir.join(p))
        .collect();
    let options = ParseOptions {
        template_dirs: vec![dir.join("argo-examples"), dir.join("other")],
    };
    let run = || {
        let mut tasks = 0;
        for f in &files {
            if let Ok(pipelines) = parse_file(f, &options) {
                for p in &pipelines {
                    if let Ok(dag) = Dag::build(p) {
                        tasks += default_schedule(p, &dag).len();
                    }
                }
            }
        }
        tasks
    };
    let start = Instant::now();
    let tasks = run();
    println!(
        "analyze-corpus: files={} tasks={tasks} first_run_ms={:.1}",
        files.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    let mut group = c.benchmark_group("analyze");
    group.sample_size(10);
    group.bench_function("whole corpus", |b| b.iter(run));
    group.finish();
}

criterion_group!(benches, ten_thousand_tasks, whole_corpus);
criterion_main!(benches);
