//! Fuzz target for `kfcache analyze`: arbitrary bytes as the content of one pipeline file,
//! through the same entry point the command uses once it has read a file
//! ([`kfcache_parser::parse_bytes`]: size and UTF-8 checks, YAML documents, both front ends,
//! flattening, validation), then the DAG of every pipeline it accepts, as the command builds
//! it. No database and no template library: nothing but the bytes decides the outcome.
//!
//! Any input may be refused with an error; none may panic, overflow the stack, run past
//! libFuzzer's `-timeout` or grow past its `-rss_limit_mb`.

#![no_main]

use std::path::Path;

use kfcache_parser::{parse_bytes, Dag, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pipelines) = parse_bytes(Path::new("fuzz.yaml"), data, &ParseOptions::default()) else {
        return;
    };
    for pipeline in &pipelines {
        if let Ok(dag) = Dag::build(pipeline) {
            // Walk the order the scheduler walks, so that the DAG is used and not just built.
            let order = dag.topological_order();
            assert_eq!(order.len(), pipeline.tasks.len());
        }
    }
});
