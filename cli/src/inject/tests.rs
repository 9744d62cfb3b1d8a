//! Tests of `kfcache inject` that run in-process: the rules of the rewrite on small inputs, and
//! the round trip over every fixture and every Argo workflow of the shared corpus:
//! (a) analysing the output gives the same pipelines (tasks, dependencies, GPUs, inputs,
//! outputs; lines aside), (b) every qualifying task's template carries `kfcache-init`,
//! `kfcache-watch` and the shared process namespace, or is reported skipped for a named reason,
//! (c) the output validates against Argo's JSON schema — a document that did not validate
//! before may keep its errors but gains none, (d) injecting the output again changes nothing.
//!
//! The corpus loop is here rather than in `tests/inject.rs` because the binary crate's
//! functions are only reachable from its own unit tests, and one process per corpus file would
//! be slow; `tests/inject.rs` drives the binary itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kfcache_parser::{ParseOptions, Pipeline};
use kfcache_sidecar::ranking;
use kfcache_sidecar::{NodeReport, TaskSpec};
use serde_yaml::Value;

use super::*;

#[path = "../../tests/argo_schema/mod.rs"]
mod argo_schema;

use argo_schema::ArgoSchema;

fn schema() -> &'static ArgoSchema {
    static SCHEMA: OnceLock<ArgoSchema> = OnceLock::new();
    SCHEMA.get_or_init(ArgoSchema::load)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn options() -> InjectOptions {
    InjectOptions::new("kfcache:test")
}

fn all_tasks() -> InjectOptions {
    InjectOptions {
        all_tasks: true,
        ..options()
    }
}

fn inject(text: &str, options: &InjectOptions) -> Injected {
    inject_text(
        Path::new("test.yaml"),
        text,
        &ParseOptions::default(),
        options,
    )
    .unwrap_or_else(|e| panic!("inject: {e:#}"))
}

/// The template named `name` of the `index`th document of `text`.
fn template(text: &str, index: usize, name: &str) -> Value {
    let docs = argo_schema::documents(text);
    let doc = &docs[index];
    let spec = match doc.get("kind").and_then(Value::as_str) {
        Some("CronWorkflow") => &doc["spec"]["workflowSpec"],
        _ => &doc["spec"],
    };
    spec["templates"]
        .as_sequence()
        .expect("templates")
        .iter()
        .find(|t| t["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("template {name}"))
        .clone()
}

fn container<'a>(template: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    template
        .get(list)?
        .as_sequence()?
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

fn spec_of(template: &Value) -> TaskSpec {
    let init = container(template, "initContainers", INIT_CONTAINER).expect("kfcache-init");
    let json = env(init, ENV_TASK).expect("KFCACHE_TASK")["value"]
        .as_str()
        .expect("a value");
    TaskSpec::from_json("KFCACHE_TASK", json).expect("a task description")
}

/// Whether the template is instrumented the way (b) asks.
fn instrumented(template: &Value) -> Result<(), String> {
    let init = container(template, "initContainers", INIT_CONTAINER)
        .ok_or("no kfcache-init init container")?;
    let watch = container(template, "sidecars", WATCH_CONTAINER).ok_or("no kfcache-watch")?;
    for c in [init, watch] {
        if c["mirrorVolumeMounts"] != Value::Bool(true) {
            return Err("mirrorVolumeMounts is not set".into());
        }
        for name in [
            ENV_TASK,
            ENV_NODE_NAME,
            ENV_K8S_NODE,
            ENV_POD,
            ENV_RUN_NAMESPACE,
            ENV_DEADLINE,
            ENV_IGNITE,
        ] {
            if env(c, name).is_none() {
                return Err(format!(
                    "{} has no {name}",
                    c["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    let json = env(init, ENV_TASK)
        .and_then(|e| e["value"].as_str())
        .unwrap_or("");
    TaskSpec::from_json("KFCACHE_TASK", json).map_err(|e| e.to_string())?;
    let patch = template["podSpecPatch"]
        .as_str()
        .ok_or("no podSpecPatch string")?;
    let shared = match serde_yaml::from_str::<Value>(patch) {
        Ok(v) => v["shareProcessNamespace"] == Value::Bool(true),
        // A patch with unquoted placeholders only parses once Argo fills them in.
        Err(_) => patch.contains("shareProcessNamespace"),
    };
    if !shared {
        return Err(format!(
            "podSpecPatch does not share the process namespace: {patch}"
        ));
    }
    Ok(())
}

fn without_lines(mut pipelines: Vec<Pipeline>) -> Vec<Pipeline> {
    for p in &mut pipelines {
        p.line = None;
        for t in &mut p.tasks {
            t.line = None;
        }
    }
    pipelines
}

#[derive(Debug, Default)]
struct Tally {
    files: usize,
    templates: usize,
    skipped: BTreeMap<String, usize>,
    invalid_before: usize,
    gpu_instrumented: Vec<String>,
    gpu_skipped: Vec<String>,
    invalid_documents: Vec<String>,
}

/// What the input analyses into and its schema errors, computed once per file.
struct Original {
    pipelines: Vec<Pipeline>,
    errors: Vec<Option<BTreeMap<String, String>>>,
}

impl Original {
    fn read(path: &Path, text: &str, parse: &ParseOptions) -> Result<Original, String> {
        let pipelines = kfcache_parser::parse_str(path, text, parse).map_err(|e| e.to_string())?;
        Ok(Original {
            pipelines: without_lines(pipelines),
            errors: schema().file_errors(text),
        })
    }
}

/// Checks (a)–(d) for one file; `Err` says what broke.
fn round_trip(
    path: &Path,
    text: &str,
    parse: &ParseOptions,
    options: &InjectOptions,
    tally: &mut Tally,
) -> Result<(), String> {
    let original = Original::read(path, text, parse)?;
    check_round_trip(path, text, &original, parse, options, tally)
}

fn check_round_trip(
    path: &Path,
    text: &str,
    original: &Original,
    parse: &ParseOptions,
    options: &InjectOptions,
    tally: &mut Tally,
) -> Result<(), String> {
    let injected = inject_text(path, text, parse, options).map_err(|e| format!("{e:#}"))?;
    // Injecting the output analyses it, for (a), and must change nothing, for (d).
    let again = inject_text(path, &injected.text, parse, options)
        .map_err(|e| format!("the output does not inject (or analyse): {e:#}"))?;
    if again.text != injected.text {
        return Err("(d) injecting the output changes it again".into());
    }
    // (a) the same DAG.
    let (before, after) = (&original.pipelines, without_lines(again.pipelines));
    if *before != after {
        for (b, a) in before.iter().zip(&after) {
            for (tb, ta) in b.tasks.iter().zip(&a.tasks) {
                if tb != ta {
                    return Err(format!(
                        "(a) task {} analyses differently:\n{tb:?}\n{ta:?}",
                        tb.id
                    ));
                }
            }
        }
        return Err("(a) the output analyses into other pipelines".into());
    }
    // (b) every qualifying task is instrumented or skipped for a reason.
    let output_docs = argo_schema::documents(&injected.text);
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    for done in &injected.instrumented {
        let doc = output_docs
            .get(done.document)
            .ok_or("(b) a document went missing")?;
        let spec = match doc.get("kind").and_then(Value::as_str) {
            Some("CronWorkflow") => &doc["spec"]["workflowSpec"],
            _ => &doc["spec"],
        };
        let found = spec["templates"]
            .as_sequence()
            .and_then(|ts| {
                ts.iter()
                    .find(|t| t["name"].as_str() == Some(done.template.as_str()))
            })
            .ok_or_else(|| format!("(b) template {} is gone", done.template))?;
        instrumented(found).map_err(|e| format!("(b) template {}: {e}", done.template))?;
        covered.extend(done.tasks.iter().map(String::as_str));
        tally.templates += 1;
    }
    for skip in &injected.skipped {
        *tally
            .skipped
            .entry(format!("{:?}", skip.reason))
            .or_default() += 1;
        if skip.gpus > 0 {
            tally.gpu_skipped.push(format!(
                "{}: {} ({:?})",
                path.file_name().unwrap_or_default().to_string_lossy(),
                skip.task,
                skip.reason
            ));
        }
    }
    for done in injected.instrumented.iter().filter(|i| i.gpus > 0) {
        tally.gpu_instrumented.push(format!(
            "{}: {}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            done.template
        ));
    }
    for pipeline in &after {
        for task in &pipeline.tasks {
            let qualifies = task.gpus > 0 || options.all_tasks;
            let skipped = injected
                .skipped
                .iter()
                .any(|s| s.pipeline == pipeline.name && s.task == task.id);
            let done = covered.contains(task.id.as_str());
            if qualifies && !skipped && !done {
                return Err(format!(
                    "(b) task {} of {} is neither instrumented nor skipped",
                    task.id, pipeline.name
                ));
            }
        }
    }
    // (c) no new schema errors.
    let errors_before = &original.errors;
    let errors_after = schema().file_errors(&injected.text);
    if errors_before.len() != errors_after.len() {
        return Err("(c) the number of documents changed".into());
    }
    for (before, after) in errors_before.iter().zip(&errors_after) {
        let (Some(before), Some(after)) = (before, after) else {
            continue;
        };
        if !before.is_empty() {
            tally.invalid_before += 1;
            tally.invalid_documents.push(format!(
                "{}: {:?}",
                path.display(),
                before.values().next()
            ));
        }
        let new: Vec<_> = after
            .iter()
            .filter(|(key, _)| !before.contains_key(*key))
            .collect();
        if !new.is_empty() {
            return Err(format!("(c) new schema errors: {new:#?}"));
        }
    }
    tally.files += 1;
    Ok(())
}

const GPU_PIPELINE: &str = "fixtures/argo/gpu-training-pipeline.yaml";

fn fixture(relative: &str) -> String {
    std::fs::read_to_string(workspace().join(relative)).expect("fixture")
}

#[test]
fn gpu_templates_get_the_containers_and_the_shared_process_namespace() {
    let injected = inject(&fixture(GPU_PIPELINE), &options());
    let names: Vec<(&str, Vec<String>, u32)> = injected
        .instrumented
        .iter()
        .map(|i| (i.template.as_str(), i.tasks.clone(), i.gpus))
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "train-classifier",
                vec!["train-resnet50".to_string(), "train-vit".to_string()],
                4
            ),
            ("evaluate", vec!["evaluate".to_string()], 1),
        ]
    );
    assert!(injected.skipped.is_empty());
    for name in ["train-classifier", "evaluate"] {
        instrumented(&template(&injected.text, 0, name)).expect(name);
    }
    for name in [
        "validate-dataset",
        "preprocess-shard",
        "train-and-deploy",
        "notify",
    ] {
        let t = template(&injected.text, 0, name);
        assert!(t.get("initContainers").is_none(), "{name}");
        assert!(t.get("podSpecPatch").is_none(), "{name}");
    }
    let watch = template(&injected.text, 0, "evaluate");
    let watch = container(&watch, "sidecars", WATCH_CONTAINER).expect("watch");
    assert_eq!(
        watch["command"],
        serde_yaml::from_str::<Value>("[kfcache, sidecar, watch]").expect("yaml")
    );
    assert_eq!(
        watch["args"],
        serde_yaml::from_str::<Value>("[--run, '{{workflow.name}}']").expect("yaml")
    );
    assert_eq!(
        watch["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(METRICS_PORT))
    );
    assert_eq!(
        env(watch, ENV_NODE_NAME).expect("node name")["valueFrom"]["fieldRef"]["fieldPath"],
        Value::from("metadata.annotations['workflows.argoproj.io/node-name']")
    );
    assert_eq!(
        env(watch, ENV_IGNITE).expect("ignite")["value"],
        Value::from(DEFAULT_POD_IGNITE)
    );
    assert!(env(watch, ENV_CACHE_NAMESPACE).is_none());
}

/// A template run by two tasks carries no task id; what the tasks' callers give differently is
/// left out, and what the template declares is kept with its placeholders for Argo.
#[test]
fn task_descriptions_keep_what_argo_resolves_and_drop_what_tasks_disagree_on() {
    let injected = inject(&fixture(GPU_PIPELINE), &options());
    let shared = spec_of(&template(&injected.text, 0, "train-classifier"));
    assert_eq!(shared.task, None);
    assert_eq!(shared.pipeline, "gpu-training-pipeline");
    assert_eq!(shared.gpus, 4);
    let input = |spec: &TaskSpec, name: &str| {
        spec.inputs
            .iter()
            .find(|i| i.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("input {name}"))
    };
    assert_eq!(
        input(&shared, "preprocessed").source.as_deref(),
        Some(
            "s3://{{workflow.parameters.dataset-bucket}}/imagenet-subset/\
             {{workflow.parameters.dataset-version}}/preprocessed"
        )
    );
    assert_eq!(
        input(&shared, "statistics").source.as_deref(),
        Some("task://compute-statistics/statistics")
    );
    // resnet50 and vit weights: each caller passes its own.
    assert_eq!(input(&shared, "pretrained").source, None);
    assert_eq!(
        input(&shared, "pretrained").path.as_deref(),
        Some("/models/pretrained.pth")
    );
    let unique = spec_of(&template(&injected.text, 0, "evaluate"));
    assert_eq!(unique.task.as_deref(), Some("evaluate"));
    assert_eq!(
        input(&unique, "resnet50-model").source.as_deref(),
        Some("task://train-resnet50/model")
    );

    // A loop's `{{item}}` is meaningless inside the template: its own parameter stands in.
    let all = inject(&fixture(GPU_PIPELINE), &all_tasks());
    let preprocess = spec_of(&template(&all.text, 0, "preprocess-shard"));
    let raw = input(&preprocess, "raw").source.expect("raw source");
    assert!(raw.contains("{{inputs.parameters.shard}}"), "{raw}");
    assert!(!all.text.contains("{{item}}.tar"), "{{{{item}}}} leaked");
}

#[test]
fn placeholders_and_derivation() {
    assert_eq!(
        placeholders("s3://{{ a }}/x/{{b.c}}/{{oops"),
        vec!["a", "b.c"]
    );
    assert!(derives_from(
        "s3://{{b}}/k/{{p}}.tar",
        "s3://bucket/k/train-00.tar"
    ));
    assert!(derives_from("s3://{{b}}/k", "s3://b/k"));
    assert!(!derives_from("s3://{{b}}/k", "s3://b/other"));
    assert!(!derives_from("gs://{{b}}/k", "s3://b/k"));
    assert!(derives_from("/data/x", "/data/x"));
    assert!(!derives_from("/data/x", "/data/y"));
    let params = ["shard".to_string()].into_iter().collect();
    assert_eq!(
        choose(None, &[Some("s3://b/{{item}}")], &params),
        None,
        "{{{{item}}}} cannot be resolved in a leaf template"
    );
    assert_eq!(
        choose(None, &[Some("s3://b/{{inputs.parameters.shard}}")], &params).as_deref(),
        Some("s3://b/{{inputs.parameters.shard}}")
    );
    assert_eq!(
        choose(None, &[Some("pvc://{{workflow.name}}-data/x")], &params).as_deref(),
        Some("pvc://{{workflow.name}}-data/x")
    );
    assert_eq!(choose(None, &[Some("a"), Some("b")], &params), None);
    assert_eq!(
        choose(Some("s3://{{x}}/k"), &[Some("s3://v/k"), None], &params).as_deref(),
        Some("s3://{{x}}/k")
    );
}

const SMALL: &str = r#"# A small workflow.
# Two comment lines.
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: small-
spec:
  entrypoint: main
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
  templates:
    - name: main
      dag:
        tasks:
          - name: train
            template: train
          - name: other
            template: plain
            depends: train
    - name: train
      podSpecPatch: '{"containers":[{"name":"main","resources":{"limits":{"cpu":"2"}}}]}'
      inputs:
        artifacts:
          - name: data
            path: /data
            mode: 0755
            http: {url: "https://example.com/data"}
      archiveLocation:
        archiveLogs: on
      initContainers:
        - name: fetch
          image: alpine
          command: [sh, -c, "true"]
      sidecars:
        - name: logger
          image: fluent-bit
      container:
        image: trainer
        args: ["--flag", "off", "yes"]
        env:
          - name: MODE
            value: "off"
          - name: EMPTY
            value: null
        resources:
          limits:
            nvidia.com/gpu: 1
    - name: plain
      inputs:
        parameters:
          - name: choice
            enum: ['YES', 'NO']
            default: 'NO'
      container:
        image: alpine
"#;

#[test]
fn existing_containers_patches_comments_and_quoting_survive() {
    let injected = inject(SMALL, &options());
    let text = &injected.text;
    assert!(
        text.starts_with("# A small workflow.\n# Two comment lines.\n"),
        "{text}"
    );
    let train = template(text, 0, "train");
    let names = |list: &str| -> Vec<String> {
        train[list]
            .as_sequence()
            .expect("list")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names("initContainers"), vec!["fetch", INIT_CONTAINER]);
    assert_eq!(names("sidecars"), vec!["logger", WATCH_CONTAINER]);
    let patch: serde_json::Value =
        serde_json::from_str(train["podSpecPatch"].as_str().expect("patch")).expect("JSON");
    assert_eq!(patch["shareProcessNamespace"], serde_json::json!(true));
    assert_eq!(
        patch["containers"][0]["resources"]["limits"]["cpu"],
        serde_json::json!("2")
    );
    // Strings a YAML 1.1 reader would take for booleans keep their quotes; nulls stay.
    assert!(text.contains("- 'off'\n"), "{text}");
    assert!(text.contains("value: 'off'\n"), "{text}");
    assert!(
        text.contains("- 'YES'\n") && text.contains("default: 'NO'\n"),
        "{text}"
    );
    assert!(text.contains("value: null\n"), "{text}");
    // ... and unquoted ones stay unquoted: Go reads an octal mode and a boolean there.
    assert!(text.contains("mode: 0755\n"), "{text}");
    assert!(text.contains("archiveLogs: on\n"), "{text}");
    assert!(
        template(text, 0, "plain").get("initContainers").is_none(),
        "a CPU task is left alone"
    );
    // Injecting again changes nothing.
    assert_eq!(&inject(text, &options()).text, text);
    let mut tally = Tally::default();
    for options in [options(), all_tasks()] {
        round_trip(
            Path::new("small.yaml"),
            SMALL,
            &ParseOptions::default(),
            &options,
            &mut tally,
        )
        .expect("round trip");
    }
}

#[test]
fn scalar_styles_are_read_from_the_original_text() {
    let text =
        "a: yes\nb: 'no'\nc: [on, \"off\"]\nd:\n  - 0755\n  - echo yes\non: 1\ne: \"Y\" # c\n";
    assert_eq!(scalar_styles(text, "yes"), (true, false));
    assert_eq!(scalar_styles(text, "no"), (false, true));
    assert_eq!(scalar_styles(text, "on"), (true, false));
    assert_eq!(scalar_styles(text, "off"), (false, true));
    assert_eq!(scalar_styles(text, "0755"), (true, false));
    assert_eq!(scalar_styles(text, "Y"), (false, true));
    assert_eq!(scalar_styles(text, "n"), (false, false));
    for ambiguous in ["yes", "OFF", "0755", "-012", "1_000", "0b101", "+1_0.5"] {
        assert!(ambiguous_in_yaml11(ambiguous), "{ambiguous}");
    }
    for plain in [
        "yesterday",
        "0",
        "10",
        "0x1F",
        "v1_2",
        "abc_def",
        "",
        "0b12",
    ] {
        assert!(!ambiguous_in_yaml11(plain), "{plain}");
    }
}

#[test]
fn pod_spec_patches_are_merged_in_their_own_style() {
    assert_eq!(share_process_namespace(None), SHARE_PROCESS_NAMESPACE_PATCH);
    assert_eq!(
        share_process_namespace(Some("  ")),
        SHARE_PROCESS_NAMESPACE_PATCH
    );
    assert_eq!(
        share_process_namespace(Some(r#"{"hostIPC": true}"#)),
        r#"{"hostIPC":true,"shareProcessNamespace":true}"#
    );
    let yaml = share_process_namespace(Some("containers:\n- name: main\n"));
    assert_eq!(
        serde_yaml::from_str::<Value>(&yaml).expect("yaml")["shareProcessNamespace"],
        Value::Bool(true)
    );
    assert!(!yaml.trim_start().starts_with('{'));
    let kept = r#"{"shareProcessNamespace": true, "x": 1}"#;
    assert_eq!(share_process_namespace(Some(kept)), kept);
    // Unquoted placeholders: not JSON until Argo fills them in.
    let templated = r#"{"containers":[{"name":"main","resources":{"limits":{"cpu": {{inputs.parameters.cpu}} }}}]}"#;
    let patched = share_process_namespace(Some(templated));
    assert_eq!(
        patched,
        format!("{{\"shareProcessNamespace\":true,{}", &templated[1..])
    );
    assert_eq!(share_process_namespace(Some(&patched)), patched);
}

fn node(name: &str, free_gib: u64, float_time_s: f64) -> NodeReport {
    let gib = 1u64 << 30;
    ranking::node_report(
        name,
        "2026-01-01T00:00:00Z".parse().expect("time"),
        &[ranking::GpuSample {
            memory_total_bytes: 80 * gib,
            memory_used_bytes: (80 - free_gib) * gib,
            utilization_pct: 40.0,
        }],
        &[float_time_s],
    )
}

fn preferred(template: &Value) -> Vec<(String, i64)> {
    template["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_sequence()
        .map(|terms| {
            terms
                .iter()
                .map(|t| {
                    let node = match is_placement_term(t) {
                        true => t["preference"]["matchExpressions"][0]["values"][0]
                            .as_str()
                            .unwrap_or_default(),
                        false => "(not ours)",
                    };
                    (node.to_string(), t["weight"].as_i64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn placement_prefers_ranked_nodes_and_keeps_other_affinity() {
    let ranked = ranking::rank(&[
        node("gpu-a", 60, 100.0),
        node("gpu-b", 30, 4_000.0),
        node("gpu-c", 10, 9_000.0),
    ]);
    let placed = InjectOptions {
        placement: Some(Placement {
            ranked: ranked.clone(),
            deadline_s: None,
        }),
        ..all_tasks()
    };
    let injected = inject(SMALL, &placed);
    let train = template(&injected.text, 0, "train");
    assert_eq!(
        preferred(&train),
        vec![
            ("gpu-a".to_string(), 100),
            ("gpu-b".to_string(), 67),
            ("gpu-c".to_string(), 34)
        ]
    );
    // The workflow's affinity, which a template affinity would replace, is carried over.
    assert_eq!(
        train["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            ["topologyKey"],
        Value::from("kubernetes.io/hostname")
    );
    // CPU tasks get the containers with --all-tasks, but no GPU placement.
    let plain = template(&injected.text, 0, "plain");
    assert!(plain.get("affinity").is_none());
    instrumented(&plain).expect("all tasks");
    assert_eq!(
        injected
            .instrumented
            .iter()
            .map(|i| (i.template.as_str(), i.preferred_nodes))
            .collect::<Vec<_>>(),
        vec![("train", 3), ("plain", 0)]
    );

    // A deadline puts the nodes with enough float time first; re-placing replaces kfcache's
    // terms and keeps the user's.
    let user_term = "
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 5
              preference:
                matchExpressions:
                  - {key: nvidia.com/gpu.product, operator: In, values: [H100]}
      metadata:
        annotations:
          kfcache.io/deadline: 30m
      container:
        image: trainer";
    let with_user_term = SMALL.replacen("\n      container:\n        image: trainer", user_term, 1);
    let first = inject(&with_user_term, &placed);
    assert_eq!(
        preferred(&template(&first.text, 0, "train")),
        vec![
            ("(not ours)".to_string(), 5),
            ("gpu-b".to_string(), 100),
            ("gpu-c".to_string(), 67),
            ("gpu-a".to_string(), 34)
        ],
        "the 30m annotation needs 1800 s of float time"
    );
    let fewer = InjectOptions {
        placement: Some(Placement {
            ranked: ranking::rank(&[node("gpu-z", 70, 10.0)]),
            deadline_s: None,
        }),
        ..all_tasks()
    };
    let again = inject(&first.text, &fewer);
    assert_eq!(
        preferred(&template(&again.text, 0, "train")),
        vec![("(not ours)".to_string(), 5), ("gpu-z".to_string(), 100)]
    );
    assert_eq!(inject(&again.text, &fewer).text, again.text);
}

#[test]
fn cron_workflows_and_templates_in_the_same_file_are_instrumented() {
    let text = r#"apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: library
spec:
  templates:
    - name: fit
      container:
        image: trainer
        resources:
          limits: {nvidia.com/gpu: 2}
---
# unchanged: no GPU here
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  a: "1"
---
apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata:
  name: nightly
spec:
  schedule: "0 2 * * *"
  workflowSpec:
    entrypoint: main
    templates:
      - name: main
        steps:
          - - name: fit
              templateRef: {name: library, template: fit}
          - - name: local
              template: local-gpu
      - name: local-gpu
        script:
          image: python
          source: print(1)
          resources:
            limits:
              nvidia.com/gpu: 1
"#;
    // The ConfigMap is no workflow: it is copied as it is, comment included.
    let injected = inject(text, &options());
    assert!(
        injected
            .text
            .contains("---\n# unchanged: no GPU here\napiVersion: v1\nkind: ConfigMap\n"),
        "{}",
        injected.text
    );
    let done: Vec<(usize, &str)> = injected
        .instrumented
        .iter()
        .map(|i| (i.document, i.template.as_str()))
        .collect();
    assert_eq!(done, vec![(0, "fit"), (2, "local-gpu")]);
    instrumented(&template(&injected.text, 0, "fit")).expect("library template");
    instrumented(&template(&injected.text, 2, "local-gpu")).expect("cron template");
    let mut tally = Tally::default();
    round_trip(
        Path::new("cron.yaml"),
        text,
        &ParseOptions::default(),
        &options(),
        &mut tally,
    )
    .expect("round trip");
}

#[test]
fn kfp_v2_pipeline_specs_are_refused_as_invalid_input() {
    let text = fixture("fixtures/kfp/v2/gpu-training.yaml");
    let err = inject_text(
        Path::new("fixtures/kfp/v2/gpu-training.yaml"),
        &text,
        &ParseOptions::default(),
        &options(),
    )
    .expect_err("not Argo");
    assert!(err.downcast_ref::<InvalidInput>().is_some(), "{err:#}");
    assert!(err.to_string().contains("gpu-training.yaml:"), "{err}");
    assert!(err.to_string().contains("not an Argo workflow"), "{err}");
}

#[test]
fn a_file_without_gpu_tasks_is_returned_byte_for_byte() {
    let text = "# CPU only\napiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: cpu-}\nspec:\n  entrypoint: main   # trailing comment\n  templates:\n  - name: main\n    container: {image: \"alpine\", args: [\"yes\"]}\n";
    let injected = inject(text, &options());
    assert!(injected.instrumented.is_empty());
    assert_eq!(injected.text, text);
    // With --all-tasks the template changes, and the document is written anew.
    let all = inject(text, &all_tasks());
    assert_eq!(all.instrumented.len(), 1);
    assert!(all.text.starts_with("# CPU only\n"), "{}", all.text);
}

/// Every fixture of an Argo kind round trips, GPU tasks only and with --all-tasks.
#[test]
fn every_fixture_round_trips() {
    let root = workspace();
    let parse = ParseOptions {
        template_dirs: vec![root.join("fixtures/argo/templates")],
    };
    let mut files = Vec::new();
    for dir in [
        "fixtures/argo",
        "fixtures/argo/templates",
        "fixtures/kfp/v1",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).expect("fixture dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 15, "{files:?}");
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut library_files = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("fixture");
        let relative = path.strip_prefix(&root).unwrap_or(path).to_path_buf();
        let Ok(original) = Original::read(&relative, &text, &parse) else {
            // Template libraries without an entrypoint are no pipeline of their own.
            assert!(
                relative.starts_with("fixtures/argo/templates"),
                "{} does not analyse",
                relative.display()
            );
            library_files += 1;
            continue;
        };
        for options in [options(), all_tasks()] {
            if let Err(e) =
                check_round_trip(&relative, &text, &original, &parse, &options, &mut tally)
            {
                failures.push(format!(
                    "{} (all tasks: {}): {e}",
                    relative.display(),
                    options.all_tasks
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    println!("fixtures: {tally:?}, {library_files} template libraries");
    assert!(tally.templates > 40, "{tally:?}");
}

const ARGO_KINDS: &[&str] = &[
    "Workflow",
    "WorkflowTemplate",
    "ClusterWorkflowTemplate",
    "CronWorkflow",
];

/// Every Argo workflow of the shared corpus the parser accepts round trips.
#[test]
fn every_corpus_workflow_round_trips() {
    let dir = argo_schema::corpus_dir();
    let index = argo_schema::read_corpus_file("INDEX.tsv");
    let mut lines = index.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("INDEX.tsv has no {name} column"))
    };
    let (path_at, kind_at, doc_kinds_at, lenient_at) = (
        column("path"),
        column("kind"),
        column("doc_kinds"),
        column("argo_schema_lenient"),
    );
    let parse = ParseOptions {
        template_dirs: vec![dir.join("argo-examples"), dir.join("other")],
    };
    let mut gpu = Tally::default();
    let mut all = Tally::default();
    let mut refused_by_parser = 0;
    let mut invalid_per_index = 0;
    let mut failures = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let row: Vec<&str> = line.split('\t').collect();
        let (rel, kind, doc_kinds) = (row[path_at], row[kind_at], row[doc_kinds_at]);
        let argo = ARGO_KINDS.contains(&kind)
            || (kind == "multi-document" && doc_kinds.split('+').all(|k| ARGO_KINDS.contains(&k)));
        if !argo {
            continue;
        }
        let relative = PathBuf::from(rel);
        let text = argo_schema::read_corpus_file(rel);
        let path = dir.join(&relative);
        let Ok(original) = Original::read(&path, &text, &parse) else {
            refused_by_parser += 1;
            continue;
        };
        if row.get(lenient_at) == Some(&"invalid") {
            invalid_per_index += 1;
        }
        for (options, tally) in [(options(), &mut gpu), (all_tasks(), &mut all)] {
            if let Err(e) = check_round_trip(&path, &text, &original, &parse, &options, tally) {
                failures.push(format!("{rel} (all tasks: {}): {e}", options.all_tasks));
            }
        }
    }
    println!(
        "corpus: {} files round trip; GPU tasks: {} templates instrumented, skipped {:?}; \
         --all-tasks: {} templates, skipped {:?}; {} documents invalid before injection \
         ({invalid_per_index} files by INDEX.tsv); {refused_by_parser} refused by the parser\n\
         GPU templates instrumented: {:#?}\nGPU tasks skipped: {:#?}\ninvalid before: {:#?}",
        all.files,
        gpu.templates,
        gpu.skipped,
        all.templates,
        all.skipped,
        all.invalid_before,
        gpu.gpu_instrumented,
        gpu.gpu_skipped,
        all.invalid_documents
    );
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        all.files > 400,
        "only {} corpus files round trip",
        all.files
    );
    assert!(gpu.templates >= 4, "{gpu:?}");
    assert!(all.templates > 500, "{all:?}");
}
