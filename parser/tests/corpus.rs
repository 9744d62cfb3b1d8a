//! Every pipeline in the shared corpus of real Argo and KFP YAML analyses, driven by the
//! corpus's `INDEX.tsv`:
//! - Workflow / WorkflowTemplate / ClusterWorkflowTemplate / CronWorkflow / PipelineSpec files
//!   (and multi-document files of those) parse into a valid DAG, unless `BAD_INPUTS.tsv` lists
//!   them, in which case they must be refused with a located error;
//! - other documents are refused as "not a workflow";
//! - nothing panics.
//!
//! The corpus lives outside the repository (`../shared/corpus` beside the checkout, or
//! `$KFCACHE_CORPUS`). Without it the test fails and says where it looked.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use kfcache_parser::{parse_file, Error, ParseOptions};

fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KFCACHE_CORPUS") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

fn read_tsv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "the shared corpus is missing: cannot read {} ({e}); put ../shared beside the \
             checkout or set KFCACHE_CORPUS",
            path.display()
        )
    });
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header row").split('\t').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split('\t').map(String::from))
                .collect()
        })
        .collect()
}

/// Workflow files of the corpus that are not in `BAD_INPUTS.tsv` but that Argo itself would
/// refuse to run as written. Each must be refused with the named error.
const REFUSED_FOR_A_NAMED_REASON: &[(&str, &str, &str)] = &[
    (
        "kfp-v1/frontend__mock-backend__data__v1__template__mock-recursive-template.yaml",
        "template nesting deeper",
        "a UI mock whose templates call each other forever with no `when` guard",
    ),
    (
        "other/argo-workflows__test__e2e__expectedfailures__misreference-template-name.yaml",
        "unknown template `hell0`",
        "Argo's expected-failure test of a misspelt template name",
    ),
    (
        "other/argo-workflows__test__e2e__testdata__wellformed__wellformed-workflow-with-malformed-workflow-template-ref.yaml",
        "has no entrypoint",
        "references the malformed WorkflowTemplate, which has no entrypoint",
    ),
    (
        "other/argo-workflows__test__e2e__testdata__wellformed__wellformed-workflow-with-malformed-cluster-workflow-template-ref.yaml",
        "has no entrypoint",
        "references the malformed ClusterWorkflowTemplate, which has no entrypoint",
    ),
    (
        "other/kfp-1.8.24__test__e2e_test_gke_v2.yaml",
        "has no entrypoint",
        "twelve templates and no entrypoint: it is submitted with `argo submit --entrypoint`",
    ),
];

const WORKFLOW_KINDS: &[&str] = &[
    "Workflow",
    "WorkflowTemplate",
    "ClusterWorkflowTemplate",
    "CronWorkflow",
    "KFP-v2 PipelineSpec",
    "multi-document",
];

#[test]
fn every_corpus_file_analyses_or_is_refused_for_a_named_reason() {
    let dir = corpus_dir();
    let index = read_tsv(&dir.join("INDEX.tsv"));
    let bad: HashSet<String> = read_tsv(&dir.join("BAD_INPUTS.tsv"))
        .into_iter()
        .map(|r| r["path"].clone())
        .collect();
    assert!(
        index.len() > 700,
        "INDEX.tsv lists only {} files",
        index.len()
    );

    // templateRef / workflowTemplateRef resolve against the templates of the corpus folders,
    // the way `kfcache analyze --templates DIR` is used.
    let options = ParseOptions {
        template_dirs: vec![dir.join("argo-examples"), dir.join("other")],
    };

    let mut analysed = 0;
    let mut tasks = 0;
    let mut refused_not_workflow = 0;
    let mut refused_bad = 0;
    let mut refused_named = 0;
    let mut failures = Vec::new();
    for row in &index {
        let rel = &row["path"];
        let kind = row["kind"].as_str();
        let path = dir.join(rel);
        let result = std::panic::catch_unwind(|| parse_file(&path, &options));
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                failures.push(format!("{rel}: PANIC"));
                continue;
            }
        };
        if let Some((_, expected, why)) = REFUSED_FOR_A_NAMED_REASON
            .iter()
            .find(|(path, _, _)| path == rel)
        {
            match result {
                Err(e) if e.to_string().contains(expected) && e.location().is_some() => {
                    refused_named += 1;
                }
                Err(e) => failures.push(format!("{rel}: refused ({why}) but with: {e}")),
                Ok(_) => failures.push(format!("{rel}: accepted, but {why}")),
            }
            continue;
        }
        let expect_workflow = WORKFLOW_KINDS.contains(&kind) && !bad.contains(rel);
        match (expect_workflow, result) {
            (true, Ok(pipelines)) => {
                if pipelines.is_empty() {
                    failures.push(format!("{rel}: no pipeline found"));
                } else {
                    analysed += 1;
                    tasks += pipelines.iter().map(|p| p.tasks.len()).sum::<usize>();
                }
            }
            (true, Err(e)) => failures.push(format!("{rel}: {e}")),
            (false, Ok(_)) if bad.contains(rel) => {
                failures.push(format!("{rel}: listed in BAD_INPUTS.tsv but accepted"))
            }
            (false, Ok(_)) => failures.push(format!("{rel}: kind {kind} accepted as a workflow")),
            (false, Err(e)) => {
                let text = e.to_string();
                if !text.contains(rel.rsplit('/').next().unwrap_or(rel)) {
                    failures.push(format!("{rel}: error does not name the file: {text}"));
                }
                if bad.contains(rel) {
                    refused_bad += 1;
                } else if matches!(
                    e,
                    Error::NotAWorkflow { .. } | Error::EmptyDocument { .. } | Error::Yaml { .. }
                ) {
                    refused_not_workflow += 1;
                } else {
                    failures.push(format!(
                        "{rel}: kind {kind} refused for another reason: {text}"
                    ));
                }
            }
        }
    }
    assert_eq!(
        refused_named,
        REFUSED_FOR_A_NAMED_REASON.len(),
        "{failures:?}"
    );
    println!(
        "corpus: {} files, {analysed} analysed ({tasks} tasks), {refused_not_workflow} refused \
         as not a workflow, {refused_bad} bad inputs refused, {refused_named} refused for a named \
         reason, {} failures",
        index.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
