//! Every pipeline the parser reads from the repository's fixtures must survive a trip through
//! the store unchanged: this catches model shapes the hand-built tests do not think of.

use std::path::{Path, PathBuf};

use kfcache_parser::schedule::default_schedule;
use kfcache_parser::{parse_file, Dag, ParseOptions};
use kfcache_schema::{content_hash, Store};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn parsed_fixtures_round_trip_through_the_store() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut files = Vec::new();
    for folder in ["argo", "kfp"] {
        yaml_files(&fixtures.join(folder), &mut files);
    }
    files.sort();
    let options = ParseOptions {
        template_dirs: vec![fixtures.join("argo/templates")],
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("kfcache.db"))
        .await
        .expect("open");
    let mut recorded = 0;
    for file in &files {
        // Files the parser rejects are the parser's tests' business.
        let Ok(pipelines) = parse_file(file, &options) else {
            continue;
        };
        let bytes = std::fs::read(file).expect("read fixture");
        for pipeline in pipelines {
            let dag = Dag::build(&pipeline).expect("parsed pipelines have a sound DAG");
            let times = default_schedule(&pipeline, &dag);
            let record = store
                .record_analysis(&pipeline, &content_hash(&bytes), &times)
                .await
                .unwrap_or_else(|e| panic!("{}: {}: {e}", file.display(), pipeline.name));
            let read = store.pipeline(record.version_id).await.expect("read back");
            assert_eq!(read, pipeline, "{}: {}", file.display(), pipeline.name);
            let tasks = store.tasks(record.version_id).await.expect("tasks");
            for (task, time) in tasks.iter().zip(&times) {
                assert_eq!(task.predicted, Some(*time), "{}", task.task.id);
            }
            recorded += 1;
        }
    }
    eprintln!("recorded {recorded} pipelines from {} files", files.len());
    assert!(recorded > 0 || files.is_empty(), "no fixture parsed");
}
