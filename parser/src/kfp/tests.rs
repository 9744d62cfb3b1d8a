//! Unit tests of the KFP v2 front end, on small inline IR documents.

use std::path::Path;

use crate::{parse_file, ParseOptions};

/// Print the flattened tasks of the file named by `KFP_DUMP` (a debugging aid:
/// `KFP_DUMP=file.yaml cargo test -p kfcache-parser dump -- --ignored --nocapture`).
#[test]
#[ignore]
fn dump() {
    let Some(file) = std::env::var_os("KFP_DUMP") else {
        return;
    };
    match parse_file(Path::new(&file), &ParseOptions::default()) {
        Ok(pipelines) => {
            for p in pipelines {
                println!("pipeline {} ({}) params={:?}", p.name, p.kind, p.parameters);
                for t in &p.tasks {
                    println!(
                        "- {} [{} {}] deps={:?} gpus={} fan_out={:?} par={:?} cond={:?} role={:?} retries={} line={:?}",
                        t.id, t.kind, t.template, t.depends_on, t.gpus, t.fan_out, t.parallelism,
                        t.condition, t.role, t.retries, t.line
                    );
                    println!("    params={:?}", t.params);
                    for i in &t.inputs {
                        println!("    in  {} <- {:?}", i.name, i.source);
                    }
                    for o in &t.outputs {
                        println!("    out {} -> {:?}", o.name, o.location);
                    }
                    if !t.node_selector.is_empty() {
                        println!("    nodeSelector={:?}", t.node_selector);
                    }
                }
            }
        }
        Err(e) => println!("ERROR: {e}"),
    }
}
