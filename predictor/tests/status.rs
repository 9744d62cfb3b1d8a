//! Reading real-format Argo status: the fixtures written for the flagship pipeline (a retried
//! GPU task, a loop, a skipped branch, `kubectl -o yaml` and a JSON `WorkflowList`), every
//! status file of the shared corpus (Argo's own test data and KFP v1 runs), and located errors
//! for status files that cannot be imported.

use std::path::{Path, PathBuf};

use kfcache_parser::{parse_file, Dag, ParseOptions};
use kfcache_predictor::history::{PipelineHistory, TaskSample};
use kfcache_predictor::status::read_status_file;
use kfcache_predictor::{predict, DurationSource, Error, EstimatorConfig, InputSizes};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus() -> PathBuf {
    let dir = workspace().join("../shared/corpus/argo-status");
    assert!(
        dir.is_dir(),
        "the shared corpus is missing: expected {} (the tests read real Argo status files from it)",
        dir.display()
    );
    dir
}

#[test]
fn flagship_run_with_retry_loop_and_exit_handler() {
    let runs =
        read_status_file(&workspace().join("fixtures/status/gpu-training-pipeline-x7k2p.yaml"))
            .expect("imports");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.pipeline_name, "gpu-training-pipeline");
    assert_eq!(run.namespace.as_deref(), Some("ml-training"));
    assert_eq!(run.parameters.get("epochs").map(String::as_str), Some("50"));
    let attempts: Vec<(u32, &str)> = run
        .tasks
        .iter()
        .filter(|t| t.task_key == "train-resnet50")
        .map(|t| (t.attempt, t.phase.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(attempts, [(0, "Failed"), (1, "Succeeded")]);
    let instances: Vec<&str> = run
        .tasks
        .iter()
        .filter(|t| t.task_key == "preprocess")
        .map(|t| t.instance.as_str())
        .collect();
    assert_eq!(
        instances,
        [
            "0:train-00",
            "1:train-01",
            "2:train-02",
            "3:train-03",
            "4:validation"
        ]
    );
    assert!(run
        .tasks
        .iter()
        .any(|t| t.task_key == "onExit" && t.succeeded()));
    let model = run
        .tasks
        .iter()
        .find(|t| t.task_key == "train-resnet50" && t.attempt == 1)
        .expect("attempt 1");
    assert_eq!(
        model.parameters.get("epochs").map(String::as_str),
        Some("50")
    );
    assert_eq!(
        model.artifacts[0].uri.as_deref(),
        Some("s3://ml-artifacts/gpu-training-pipeline-x7k2p/resnet50/model.tgz")
    );
}

#[test]
fn history_matches_every_task_of_the_analysed_pipeline() {
    let dir = workspace().join("fixtures/status");
    let mut runs = read_status_file(&dir.join("gpu-training-pipeline-x7k2p.yaml")).expect("yaml");
    runs.extend(read_status_file(&dir.join("gpu-training-pipeline-list.json")).expect("json list"));
    assert_eq!(runs.len(), 3);
    let pipeline = parse_file(
        &workspace().join("fixtures/argo/gpu-training-pipeline.yaml"),
        &ParseOptions::default(),
    )
    .expect("parses")
    .remove(0);
    let history = PipelineHistory::build(&pipeline, &runs);
    for (task, samples) in pipeline.tasks.iter().zip(&history.tasks) {
        assert_eq!(samples.len(), 3, "task {} seen in every run", task.id);
    }
    let deploy = pipeline
        .tasks
        .iter()
        .position(|t| t.id == "deploy")
        .expect("deploy");
    assert_eq!(
        history.tasks[deploy]
            .iter()
            .filter(|s| **s == TaskSample::Skipped)
            .count(),
        1
    );
    let preprocess = pipeline
        .tasks
        .iter()
        .position(|t| t.id == "preprocess")
        .expect("preprocess");
    let TaskSample::Ran(sample) = &history.tasks[preprocess][0] else {
        panic!("preprocess ran")
    };
    assert_eq!(sample.instances, 5);

    let dag = Dag::build(&pipeline).expect("dag");
    let prediction = predict(
        &pipeline,
        &dag,
        &history,
        &InputSizes::new(),
        &EstimatorConfig::default(),
    );
    for t in &prediction.tasks {
        assert_eq!(t.estimate.source, DurationSource::History, "{}", t.task);
        assert_eq!(
            t.estimate.samples,
            if t.task == "deploy" { 2 } else { 3 },
            "{}",
            t.task
        );
    }
    let resnet = prediction
        .tasks
        .iter()
        .find(|t| t.task == "train-resnet50")
        .expect("resnet");
    assert!(
        resnet.estimate.retry_s > 0.0,
        "the failed attempt adds expected retry time"
    );
    let deploy = &prediction.tasks[deploy];
    assert!((deploy.estimate.run_probability - 2.0 / 3.0).abs() < 1e-9);
}

#[test]
fn every_corpus_status_file_imports() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for file in &files {
        let runs = read_status_file(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!runs.is_empty());
        for run in &runs {
            assert!(!run.pipeline_name.is_empty(), "{}", file.display());
            assert!(!run.tasks.is_empty(), "{}: no pod nodes", file.display());
            for task in &run.tasks {
                assert!(
                    !task.task_key.is_empty() || task.display_name.is_some(),
                    "{}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn corpus_retries_are_attempts_of_one_task() {
    let runs = read_status_file(&corpus().join("dag_retry_succeeded.yaml")).expect("imports");
    let run = &runs[0];
    assert_eq!(run.pipeline_name, "dag-with-retries");
    let attempts: Vec<(&str, u32, bool)> = run
        .tasks
        .iter()
        .map(|t| (t.task_key.as_str(), t.attempt, t.succeeded()))
        .collect();
    assert_eq!(
        attempts,
        [("step1", 0, false), ("step1", 1, false), ("step1", 2, true)]
    );
    let steps = read_status_file(&corpus().join("steps-failed-retries.yaml")).expect("imports");
    let keys: Vec<(&str, u32)> = steps[0]
        .tasks
        .iter()
        .map(|t| (t.task_key.as_str(), t.attempt))
        .collect();
    assert_eq!(
        keys,
        [
            ("delayed-fail", 0),
            ("delayed-fail", 1),
            ("fail", 0),
            ("fail", 1)
        ]
    );
}

fn located(file: &str) -> (Error, String) {
    let path = workspace().join("fixtures/status/invalid").join(file);
    let err = read_status_file(&path).expect_err("invalid status");
    let text = err.to_string();
    (err, text)
}

#[test]
fn bad_status_files_get_located_errors() {
    let (err, text) = located("bad-timestamp.yaml");
    assert!(
        matches!(err, Error::Status { line: Some(21), .. }),
        "{text}"
    );
    assert!(
        text.contains("bad-timestamp.yaml:21") && text.contains("finishedAt"),
        "{text}"
    );

    let (err, text) = located("no-status.yaml");
    assert!(matches!(err, Error::Status { line: Some(_), .. }), "{text}");
    assert!(text.contains("no `status`"), "{text}");

    let (err, text) = located("truncated.json");
    assert!(matches!(err, Error::Syntax { line: Some(_), .. }), "{text}");
    assert!(text.contains("truncated.json:"), "{text}");
}

#[test]
fn argo_pod_times_stay_when_the_sidecar_reports_the_same_attempt() {
    use kfcache_schema::ObservationSource;
    let dir = workspace().join("fixtures/status");
    let mut runs = read_status_file(&dir.join("gpu-training-pipeline-x7k2p.yaml")).expect("yaml");
    let pipeline = parse_file(
        &workspace().join("fixtures/argo/gpu-training-pipeline.yaml"),
        &ParseOptions::default(),
    )
    .expect("parses")
    .remove(0);
    let index = |id: &str| {
        pipeline
            .tasks
            .iter()
            .position(|t| t.id == id)
            .expect("task")
    };
    let stats = index("compute-statistics");
    let sample = |history: &PipelineHistory| match &history.tasks[stats][0] {
        TaskSample::Ran(sample) => sample.clone(),
        TaskSample::Skipped => panic!("compute-statistics ran"),
    };
    let argo_only = sample(&PipelineHistory::build(&pipeline, &runs));

    // The sidecar saw the work start 10 s after the pod and end 5 s before Argo marked it done.
    let pod = runs[0]
        .tasks
        .iter()
        .find(|t| t.task_key == "compute-statistics")
        .expect("observed")
        .clone();
    let mut seen = pod.clone();
    seen.source = ObservationSource::Sidecar;
    seen.started_at = pod.started_at.map(|t| t + chrono::Duration::seconds(10));
    seen.finished_at = pod.finished_at.map(|t| t - chrono::Duration::seconds(5));
    seen.artifacts.clear();
    runs[0].tasks.push(seen);
    let with_sidecar = sample(&PipelineHistory::build(&pipeline, &runs));

    assert_eq!(
        with_sidecar.attempts, argo_only.attempts,
        "one attempt, not two"
    );
    assert_eq!(
        with_sidecar.instance_durations, argo_only.instance_durations,
        "the pod's window stays: the tasks after it wait for all of it"
    );
    assert_eq!(
        with_sidecar.output_bytes, argo_only.output_bytes,
        "Argo's artifact sizes stay"
    );
    assert_eq!(with_sidecar.start_offset_s, argo_only.start_offset_s);
}
