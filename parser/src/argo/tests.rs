//! Tests of the Argo front end on small hand-written workflows. Each asserts the values the
//! later stages rely on: task ids, edges, fan-out, conditions, artifacts and parameters.

use std::path::Path;

use crate::model::{FanOut, Pipeline, PipelineKind, Task, TaskKind, TaskRole};
use crate::{parse_str, Error, ParseOptions};

fn parse(yaml: &str) -> Vec<Pipeline> {
    parse_str(Path::new("test.yaml"), yaml, &ParseOptions::default())
        .unwrap_or_else(|e| panic!("parse failed: {e}"))
}

fn one(yaml: &str) -> Pipeline {
    let mut pipelines = parse(yaml);
    assert_eq!(pipelines.len(), 1, "expected one pipeline");
    pipelines.remove(0)
}

fn fail(yaml: &str) -> Error {
    match parse_str(Path::new("test.yaml"), yaml, &ParseOptions::default()) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

fn task<'a>(pipeline: &'a Pipeline, id: &str) -> &'a Task {
    pipeline.task(id).unwrap_or_else(|| {
        let ids: Vec<&str> = pipeline.tasks.iter().map(|t| t.id.as_str()).collect();
        panic!("no task `{id}` in {ids:?}")
    })
}

fn ids(pipeline: &Pipeline) -> Vec<&str> {
    pipeline.tasks.iter().map(|t| t.id.as_str()).collect()
}

fn deps(pipeline: &Pipeline, id: &str) -> Vec<String> {
    let mut deps = task(pipeline, id).depends_on.clone();
    deps.sort();
    deps
}

const ECHO: &str = r#"
  - name: echo
    inputs:
      parameters:
      - name: message
        default: hi
    container:
      image: alpine:3
      command: [echo]
      args: ["{{inputs.parameters.message}}"]
"#;

fn workflow(templates: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: test-\nspec:\n  entrypoint: main\n  templates:\n{templates}{ECHO}"
    )
}

#[test]
fn depends_expressions_make_every_named_task_a_dependency() {
    let p = one(&workflow(
        r#"
  - name: main
    dag:
      tasks:
      - {name: a, template: echo}
      - {name: b, template: echo}
      - {name: c, template: echo, depends: "a && (b.Failed || !b.Skipped)"}
      - {name: d, template: echo, dependencies: [a]}
"#,
    ));
    assert_eq!(p.name, "test");
    assert_eq!(p.kind, PipelineKind::Workflow);
    assert_eq!(p.line, Some(1));
    assert_eq!(ids(&p), ["a", "b", "c", "d"]);
    assert_eq!(deps(&p, "c"), ["a", "b"]);
    assert_eq!(deps(&p, "d"), ["a"]);
    assert!(deps(&p, "a").is_empty());
    assert_eq!(task(&p, "c").line, Some(14));
}

#[test]
fn invalid_depends_expression_is_located() {
    let err = fail(&workflow(
        r#"
  - name: main
    dag:
      tasks:
      - name: a
        template: echo
      - name: b
        template: echo
        depends: "a &&"
"#,
    ));
    let Error::DependsExpression { at, expression, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(expression, "a &&");
    assert_eq!(at.line, Some(16), "{err}");
}

#[test]
fn steps_groups_run_after_the_previous_group() {
    let p = one(&workflow(
        r#"
  - name: main
    steps:
    - - {name: one, template: echo}
    - - {name: two-a, template: echo}
      - {name: two-b, template: echo}
    - - {name: three, template: echo}
"#,
    ));
    assert_eq!(ids(&p), ["one", "two-a", "two-b", "three"]);
    assert!(deps(&p, "one").is_empty());
    assert_eq!(deps(&p, "two-a"), ["one"]);
    assert_eq!(deps(&p, "two-b"), ["one"]);
    assert_eq!(deps(&p, "three"), ["two-a", "two-b"]);
}

#[test]
fn nested_dag_dependencies_mean_its_sinks_and_its_sources_inherit() {
    let p = one(&workflow(
        r#"
  - name: main
    dag:
      tasks:
      - {name: prepare, template: echo}
      - {name: inner, template: pair, dependencies: [prepare]}
      - {name: after, template: echo, dependencies: [inner]}
  - name: pair
    dag:
      tasks:
      - {name: x, template: echo}
      - {name: y, template: echo}
      - {name: z, template: echo, dependencies: [x]}
"#,
    ));
    assert_eq!(
        ids(&p),
        ["prepare", "inner.x", "inner.y", "inner.z", "after"]
    );
    assert_eq!(deps(&p, "inner.x"), ["prepare"]);
    assert_eq!(deps(&p, "inner.y"), ["prepare"]);
    assert_eq!(deps(&p, "inner.z"), ["inner.x"]);
    assert_eq!(deps(&p, "after"), ["inner.y", "inner.z"]);
}

#[test]
fn nested_steps_inside_dag_are_flattened() {
    let p = one(&workflow(
        r#"
  - name: main
    dag:
      tasks:
      - {name: s, template: seq}
      - {name: t, template: echo, depends: s}
  - name: seq
    steps:
    - - {name: first, template: echo}
    - - {name: second, template: echo}
"#,
    ));
    assert_eq!(ids(&p), ["s.first", "s.second", "t"]);
    assert_eq!(deps(&p, "s.second"), ["s.first"]);
    assert_eq!(deps(&p, "t"), ["s.second"]);
}

#[test]
fn single_template_workflow_is_one_task_named_after_the_template() {
    let p = one(
        "kind: Workflow\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: solo}\nspec:\n  entrypoint: train\n  templates:\n  - name: train\n    container:\n      image: trainer:1\n      command: [python, train.py]\n      args: [--epochs, 50, --lr=0.01]\n      resources:\n        limits: {nvidia.com/gpu: 2}\n",
    );
    assert_eq!(ids(&p), ["train"]);
    let t = task(&p, "train");
    assert_eq!(t.kind, TaskKind::Container);
    assert_eq!(t.gpus, 2);
    assert_eq!(t.image.as_deref(), Some("trainer:1"));
    assert_eq!(t.params.get("epochs").map(String::as_str), Some("50"));
    assert_eq!(t.params.get("lr").map(String::as_str), Some("0.01"));
    assert_eq!(t.line, Some(7));
}

#[test]
fn loops_set_fan_out_and_nested_tasks_inherit_it() {
    let p = one(&workflow(
        r#"
  - name: main
    inputs:
      parameters:
      - {name: n, value: "4"}
    dag:
      tasks:
      - name: items
        template: echo
        arguments: {parameters: [{name: message, value: "{{item}}"}]}
        withItems: [a, b, c]
      - name: same
        template: echo
        arguments: {parameters: [{name: message, value: "{{item.image}}-{{item.tag}}"}]}
        withItems: [{image: debian, tag: "1"}, {image: debian, tag: "2"}]
      - name: seq
        template: echo
        withSequence: {count: "{{inputs.parameters.n}}"}
      - name: range
        template: echo
        withSequence: {start: "2", end: "6"}
      - name: unknown
        template: echo
        withSequence: {count: "{{tasks.items.outputs.result}}"}
      - name: param
        template: echo
        withParam: "{{tasks.items.outputs.result}}"
      - name: outer
        template: inner
        withItems: [1, 2]
  - name: inner
    dag:
      tasks:
      - {name: leaf, template: echo, withItems: [x, y, z]}
      - {name: plain, template: echo}
"#,
    ));
    assert_eq!(task(&p, "items").fan_out, Some(FanOut::Count(3)));
    assert_eq!(task(&p, "items").params["message"], "{{item}}");
    assert_eq!(task(&p, "same").params["message"], "debian-{{item.tag}}");
    assert_eq!(task(&p, "seq").fan_out, Some(FanOut::Count(4)));
    assert_eq!(task(&p, "range").fan_out, Some(FanOut::Count(5)));
    assert_eq!(task(&p, "unknown").fan_out, Some(FanOut::Dynamic));
    assert_eq!(task(&p, "param").fan_out, Some(FanOut::Dynamic));
    assert_eq!(task(&p, "outer.plain").fan_out, Some(FanOut::Count(2)));
    assert_eq!(task(&p, "outer.leaf").fan_out, Some(FanOut::Count(6)));
}

/// `(item, source)` of each input of `id` named `name`.
fn item_sources(p: &Pipeline, id: &str, name: &str) -> Vec<(Option<u32>, String)> {
    task(p, id)
        .inputs
        .iter()
        .filter(|i| i.name == name)
        .map(|i| (i.item, i.source.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn inputs_that_name_a_known_loop_item_are_listed_once_per_item() {
    let p = one(&workflow(
        r#"
  - name: main
    dag:
      tasks:
      - name: items
        template: read
        arguments: {parameters: [{name: shard, value: "{{item}}"}]}
        withItems: ["0", "1", "2"]
      - name: maps
        template: read
        arguments: {parameters: [{name: shard, value: "{{item.part}}"}]}
        withItems: [{part: a}, {part: b}]
      - name: seq
        template: read
        arguments: {parameters: [{name: shard, value: "{{item}}"}]}
        withSequence: {start: "5", count: "2"}
      - name: down
        template: read
        arguments: {parameters: [{name: shard, value: "{{item}}"}]}
        withSequence: {start: "3", end: "1"}
      - name: formatted
        template: read
        arguments: {parameters: [{name: shard, value: "{{item}}"}]}
        withSequence: {count: "2", format: "%02d"}
      - name: dynamic
        template: read
        arguments: {parameters: [{name: shard, value: "{{item}}"}]}
        withParam: "{{tasks.items.outputs.result}}"
      - name: outer
        template: inner
        arguments: {parameters: [{name: shard, value: "{{item}}"}]}
        withItems: [x, y]
  - name: inner
    inputs:
      parameters: [{name: shard}]
    dag:
      tasks:
      - name: leaf
        template: read
        arguments: {parameters: [{name: shard, value: "{{inputs.parameters.shard}}"}]}
      - name: looped
        template: read
        arguments: {parameters: [{name: shard, value: "{{item}}"}]}
        withItems: [p, q]
  - name: read
    inputs:
      parameters: [{name: shard}]
      artifacts:
      - name: shard
        path: /data/shard-{{inputs.parameters.shard}}.bin
        s3: {bucket: b, key: "shards/shard-{{inputs.parameters.shard}}.bin"}
      - name: labels
        path: /data/labels.csv
        s3: {bucket: b, key: labels.csv}
    container: {image: alpine:3}
"#,
    ));
    let shards = |id: &str| item_sources(&p, id, "shard");
    let some = |pairs: &[(u32, &str)]| -> Vec<(Option<u32>, String)> {
        pairs
            .iter()
            .map(|(i, s)| (Some(*i), s.to_string()))
            .collect()
    };
    assert_eq!(
        shards("items"),
        some(&[
            (0, "s3://b/shards/shard-0.bin"),
            (1, "s3://b/shards/shard-1.bin"),
            (2, "s3://b/shards/shard-2.bin")
        ])
    );
    let paths: Vec<Option<&str>> = task(&p, "items")
        .inputs
        .iter()
        .filter(|i| i.name == "shard")
        .map(|i| i.path.as_deref())
        .collect();
    assert_eq!(
        paths,
        [
            Some("/data/shard-0.bin"),
            Some("/data/shard-1.bin"),
            Some("/data/shard-2.bin")
        ]
    );
    // An input every instance reads stays one input, for no item in particular.
    assert_eq!(
        item_sources(&p, "items", "labels"),
        [(None, "s3://b/labels.csv".to_string())]
    );
    assert_eq!(
        shards("maps"),
        some(&[
            (0, "s3://b/shards/shard-a.bin"),
            (1, "s3://b/shards/shard-b.bin")
        ])
    );
    assert_eq!(
        shards("seq"),
        some(&[
            (0, "s3://b/shards/shard-5.bin"),
            (1, "s3://b/shards/shard-6.bin")
        ])
    );
    assert_eq!(
        shards("down"),
        some(&[
            (0, "s3://b/shards/shard-3.bin"),
            (1, "s3://b/shards/shard-2.bin"),
            (2, "s3://b/shards/shard-1.bin")
        ])
    );
    // A loop inside a loop: the outer items reach the leaf without a loop of its own; a leaf
    // with its own loop inside the outer one keeps the placeholder (which item is meant is
    // not known), as do items that are not known exactly.
    assert_eq!(
        shards("outer.leaf"),
        some(&[
            (0, "s3://b/shards/shard-x.bin"),
            (1, "s3://b/shards/shard-y.bin")
        ])
    );
    let templated = [(None, "s3://b/shards/shard-{{item}}.bin".to_string())];
    assert_eq!(shards("outer.looped"), templated);
    assert_eq!(shards("formatted"), templated);
    assert_eq!(shards("dynamic"), templated);
}

#[test]
fn when_conditions_are_substituted_and_joined_through_nesting() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: cond}
spec:
  entrypoint: main
  arguments:
    parameters: [{name: mode, value: full}]
  templates:
  - name: main
    dag:
      tasks:
      - name: gate
        template: inner
        when: "{{workflow.parameters.mode}} == full"
  - name: inner
    dag:
      tasks:
      - {name: run, template: leaf, when: "{{tasks.x.outputs.result}} == ok"}
  - name: leaf
    suspend: {}
"#);
    assert_eq!(p.parameters["mode"], "full");
    let t = task(&p, "gate.run");
    assert_eq!(t.kind, TaskKind::Suspend);
    assert_eq!(
        t.condition.as_deref(),
        Some("full == full && {{tasks.x.outputs.result}} == ok")
    );
}

#[test]
fn retries_come_from_the_template_or_the_task() {
    let p = one(&workflow(
        r#"
  - name: main
    dag:
      tasks:
      - {name: int, template: r-int}
      - {name: str, template: r-str}
      - {name: expr, template: r-expr}
      - {name: task-level, template: echo, retryStrategy: {limit: 7}}
      - {name: none, template: echo}
  - name: r-int
    retryStrategy: {limit: 3}
    script: {image: python, source: "print(1)"}
  - name: r-str
    retryStrategy: {limit: "5"}
    container: {image: alpine}
  - name: r-expr
    retryStrategy: {limit: "{{=asInt(workflow.parameters.n) + 1}}"}
    container: {image: alpine}
"#,
    ));
    assert_eq!(task(&p, "int").retries, 3);
    assert_eq!(task(&p, "int").kind, TaskKind::Script);
    assert_eq!(task(&p, "str").retries, 5);
    assert_eq!(task(&p, "expr").retries, 0);
    assert_eq!(task(&p, "task-level").retries, 7);
    assert_eq!(task(&p, "none").retries, 0);
}

#[test]
fn exit_handlers_and_hooks_become_tasks_with_their_role() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: exits}
spec:
  entrypoint: main
  onExit: cleanup
  hooks:
    running:
      expression: workflow.status == "Running"
      template: notify
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: notify}
      - name: b
        template: notify
        dependencies: [a]
        onExit: notify
        hooks:
          exit: {template: notify}
          started: {template: notify, expression: 'tasks.b.status == "Running"'}
      - {name: c, template: notify, dependencies: [a]}
  - name: cleanup
    steps:
    - - {name: one, template: notify}
    - - {name: two, template: notify}
  - name: notify
    container: {image: curl}
"#);
    assert_eq!(task(&p, "a").role, TaskRole::Main);
    let on_exit = task(&p, "b.onExit");
    assert_eq!(on_exit.role, TaskRole::ExitHandler);
    assert_eq!(on_exit.depends_on, ["b"]);
    let exit_hook = task(&p, "b.hooks.exit");
    assert_eq!(exit_hook.role, TaskRole::ExitHandler);
    assert_eq!(exit_hook.depends_on, ["b"]);
    let started = task(&p, "b.hooks.started");
    assert_eq!(started.role, TaskRole::Hook);
    assert_eq!(started.depends_on, ["a"]);
    assert_eq!(
        started.condition.as_deref(),
        Some(r#"tasks.b.status == "Running""#)
    );
    // The workflow's exit handler waits for every sink of the main graph.
    assert_eq!(deps(&p, "onExit.one"), ["b", "c"]);
    assert_eq!(task(&p, "onExit.one").role, TaskRole::ExitHandler);
    assert_eq!(deps(&p, "onExit.two"), ["onExit.one"]);
    let running = task(&p, "hooks.running");
    assert_eq!(running.role, TaskRole::Hook);
    assert!(running.depends_on.is_empty());
}

#[test]
fn artifacts_flow_through_nesting_to_their_producer() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: arts}
spec:
  entrypoint: main
  arguments:
    artifacts:
    - name: dataset
      s3: {bucket: data, key: /sets/train.csv}
    parameters:
    - {name: bucket, value: models}
  templates:
  - name: main
    inputs:
      artifacts: [{name: dataset}]
    dag:
      tasks:
      - name: build
        template: build-dag
        arguments:
          artifacts: [{name: raw, from: "{{inputs.artifacts.dataset}}"}]
      - name: use
        template: consume
        dependencies: [build]
        arguments:
          artifacts:
          - {name: model, from: "{{tasks.build.outputs.artifacts.model}}"}
          - {name: code, git: {repo: "https://github.com/org/repo.git"}}
  - name: build-dag
    inputs:
      artifacts: [{name: raw}]
    outputs:
      artifacts:
      - {name: model, from: "{{tasks.train.outputs.artifacts.weights}}"}
    dag:
      tasks:
      - name: train
        template: train
        arguments:
          artifacts: [{name: data, from: "{{inputs.artifacts.raw}}"}]
  - name: train
    inputs:
      artifacts: [{name: data, path: /in/data.csv}]
    outputs:
      artifacts:
      - name: weights
        path: /out/w.bin
        s3: {bucket: "{{workflow.parameters.bucket}}", key: w.bin}
      - {name: log, path: /out/log.txt}
    container: {image: trainer}
  - name: consume
    inputs:
      artifacts:
      - {name: model, path: /in/model}
      - {name: code, path: /src}
      - name: vocab
        path: /in/vocab
        http: {url: "https://example.com/vocab.txt"}
    container: {image: server}
"#);
    let train = task(&p, "build.train");
    assert_eq!(train.inputs.len(), 1);
    assert_eq!(
        train.inputs[0].source.as_deref(),
        Some("s3://data/sets/train.csv")
    );
    assert_eq!(train.inputs[0].path.as_deref(), Some("/in/data.csv"));
    assert_eq!(
        train.outputs[0].location.as_deref(),
        Some("s3://models/w.bin")
    );
    assert_eq!(train.outputs[1].location, None);
    assert_eq!(train.outputs[1].path.as_deref(), Some("/out/log.txt"));
    let consume = task(&p, "use");
    assert_eq!(consume.depends_on, ["build.train"]);
    let sources: Vec<(&str, Option<&str>)> = consume
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), i.source.as_deref()))
        .collect();
    assert_eq!(
        sources,
        [
            ("model", Some("task://build.train/weights")),
            ("code", Some("git+https://github.com/org/repo.git")),
            ("vocab", Some("https://example.com/vocab.txt")),
        ]
    );
}

#[test]
fn steps_artifacts_reference_earlier_steps() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: steps-arts}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: gen, template: gen}
    - - name: use
        template: use
        arguments:
          artifacts: [{name: in, fromExpression: "steps['gen'].outputs.artifacts['out']"}]
  - name: gen
    outputs: {artifacts: [{name: out, path: /tmp/out}]}
    container: {image: a}
  - name: use
    inputs: {artifacts: [{name: in, path: /tmp/in}]}
    container: {image: b}
"#);
    assert_eq!(
        task(&p, "use").inputs[0].source.as_deref(),
        Some("task://gen/out")
    );
}

#[test]
fn pvc_mounts_become_inputs_and_outputs_under_them_get_pvc_locations() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: pvc}
spec:
  entrypoint: main
  volumes:
  - name: shared
    persistentVolumeClaim: {claimName: team-data}
  - name: scratch
    emptyDir: {}
  volumeClaimTemplates:
  - metadata: {name: workdir}
    spec: {accessModes: [ReadWriteOnce]}
  templates:
  - name: main
    steps:
    - - {name: write, template: write}
  - name: write
    outputs:
      parameters:
      - name: count
        valueFrom: {path: /mnt/work/count.txt}
      - name: elsewhere
        valueFrom: {path: /tmp/x}
      artifacts:
      - {name: table, path: /data/out/table.parquet}
    container:
      image: writer
      volumeMounts:
      - {name: shared, mountPath: /data}
      - {name: workdir, mountPath: /mnt/work}
      - {name: scratch, mountPath: /scratch}
"#);
    let t = task(&p, "write");
    let inputs: Vec<(&str, Option<&str>)> = t
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), i.source.as_deref()))
        .collect();
    assert_eq!(
        inputs,
        [
            ("shared", Some("pvc://team-data/data")),
            ("workdir", Some("pvc://workdir/mnt/work"))
        ]
    );
    let outputs: Vec<(&str, Option<&str>)> = t
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.location.as_deref()))
        .collect();
    assert_eq!(
        outputs,
        [
            ("table", Some("pvc://team-data/data/out/table.parquet")),
            ("count", Some("pvc://workdir/mnt/work/count.txt"))
        ]
    );
}

#[test]
fn parameters_resolve_from_arguments_defaults_and_workflow() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: params}
spec:
  entrypoint: main
  arguments:
    parameters:
    - {name: epochs, value: 10}
    - {name: debug, value: true}
    - {name: unset}
  templates:
  - name: main
    dag:
      tasks:
      - name: train
        template: train
        arguments:
          parameters:
          - {name: epochs, value: "{{workflow.parameters.epochs}}"}
          - {name: out, value: "s3://b/{{workflow.name}}"}
  - name: train
    inputs:
      parameters:
      - {name: epochs}
      - {name: lr, default: "0.001"}
      - {name: out}
      - {name: missing}
    container:
      image: "trainer:{{workflow.parameters.debug}}"
      command: [python, train.py]
      args: ["--epochs", "{{inputs.parameters.epochs}}", "--lr={{inputs.parameters.lr}}", "--out", "{{inputs.parameters.out}}", "--x", "{{workflow.parameters.unset}}"]
"#);
    assert_eq!(p.parameters.get("epochs").map(String::as_str), Some("10"));
    assert_eq!(p.parameters.get("debug").map(String::as_str), Some("true"));
    assert!(!p.parameters.contains_key("unset"));
    let t = task(&p, "train");
    assert_eq!(t.image.as_deref(), Some("trainer:true"));
    assert_eq!(t.params["epochs"], "10");
    assert_eq!(t.params["lr"], "0.001");
    assert_eq!(t.params["out"], "s3://b/{{workflow.name}}");
    assert_eq!(t.params["x"], "{{workflow.parameters.unset}}");
    assert!(!t.params.contains_key("missing"));
}

#[test]
fn entrypoint_inputs_take_workflow_arguments() {
    let p = one(
        "kind: Workflow\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: w}\nspec:\n  entrypoint: say\n  arguments:\n    parameters: [{name: message, value: hello}]\n  templates:\n  - name: say\n    inputs: {parameters: [{name: message}]}\n    container: {image: alpine, args: ['--msg', '{{inputs.parameters.message}}']}\n",
    );
    assert_eq!(task(&p, "say").params["message"], "hello");
    assert_eq!(task(&p, "say").params["msg"], "hello");
}

#[test]
fn gpus_and_node_selectors() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: gpus}
spec:
  entrypoint: main
  nodeSelector: {pool: default, zone: a}
  templates:
  - name: main
    dag:
      tasks:
      - {name: nvidia, template: nvidia}
      - {name: amd, template: amd}
      - {name: set, template: set}
  - name: nvidia
    nodeSelector: {pool: gpu}
    container:
      image: cuda
      resources: {limits: {nvidia.com/gpu: "4"}, requests: {nvidia.com/gpu: 1}}
  - name: amd
    script:
      image: rocm
      source: echo
      resources: {requests: {amd.com/gpu: 2}}
  - name: set
    containerSet:
      containers:
      - {name: a, image: x, resources: {limits: {nvidia.com/gpu: 1}}}
      - {name: b, image: y, resources: {limits: {nvidia.com/gpu: 2}}}
"#);
    let nvidia = task(&p, "nvidia");
    assert_eq!(nvidia.gpus, 4);
    assert_eq!(nvidia.node_selector["pool"], "gpu");
    assert_eq!(nvidia.node_selector["zone"], "a");
    assert_eq!(task(&p, "amd").gpus, 2);
    assert_eq!(task(&p, "amd").node_selector["pool"], "default");
    assert_eq!(task(&p, "set").gpus, 3);
    assert_eq!(task(&p, "set").kind, TaskKind::Other);
    assert_eq!(task(&p, "set").image.as_deref(), Some("x"));
}

#[test]
fn parallelism_of_workflow_and_templates() {
    let p = one(&format!(
        "{}  parallelism: 3\n",
        workflow(
            r#"
  - name: main
    parallelism: 2
    dag:
      tasks:
      - {name: a, template: echo}
      - {name: n, template: inner}
  - name: inner
    steps:
    - - {name: s, template: echo}
"#
        )
    ));
    assert_eq!(p.parallelism, Some(3));
    assert_eq!(task(&p, "a").parallelism, Some(2));
    assert_eq!(task(&p, "n.s").parallelism, Some(2));
}

const LIBRARY: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: lib}
spec:
  entrypoint: pipeline
  arguments:
    parameters: [{name: size, value: small}]
  templates:
  - name: pipeline
    dag:
      tasks:
      - {name: step, template: work}
  - name: work
    inputs: {parameters: [{name: size, default: "{{workflow.parameters.size}}"}]}
    container: {image: "worker:{{inputs.parameters.size}}"}
"#;

#[test]
fn template_ref_resolves_within_the_file_and_keeps_the_referenced_document_scope() {
    let text = format!(
        "{LIBRARY}---\napiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: user}}\nspec:\n  entrypoint: main\n  arguments:\n    parameters: [{{name: size, value: large}}]\n  templates:\n  - name: main\n    steps:\n    - - name: call\n        templateRef: {{name: lib, template: pipeline}}\n"
    );
    let pipelines = parse(&text);
    // Only the Workflow becomes a pipeline when the file has one.
    assert_eq!(pipelines.len(), 1);
    let p = &pipelines[0];
    assert_eq!(ids(p), ["call.step"]);
    assert_eq!(task(p, "call.step").image.as_deref(), Some("worker:large"));
}

#[test]
fn workflow_template_ref_merges_the_referenced_spec_under_the_workflow() {
    let text = format!(
        "{LIBRARY}---\napiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{generateName: from-ref-}}\nspec:\n  arguments:\n    parameters: [{{name: size, value: medium}}]\n  workflowTemplateRef: {{name: lib}}\n"
    );
    let p = one(&text);
    assert_eq!(p.name, "from-ref");
    assert_eq!(p.parameters["size"], "medium");
    assert_eq!(ids(&p), ["step"]);
    assert_eq!(task(&p, "step").image.as_deref(), Some("worker:medium"));
    // The task is declared in the referenced WorkflowTemplate, earlier in the same file.
    assert_eq!(task(&p, "step").line, Some(13));
}

#[test]
fn template_refs_resolve_against_the_template_dirs() {
    let dir = std::env::temp_dir().join(format!("kfcache-argo-lib-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("nested")).expect("temp dir");
    std::fs::write(dir.join("nested/lib.yaml"), LIBRARY).expect("write library");
    std::fs::write(dir.join("broken.yaml"), "kind: WorkflowTemplate\nspec: [").expect("write");
    let options = ParseOptions {
        template_dirs: vec![dir.clone()],
    };
    let text = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - name: remote\n        templateRef: {name: lib, template: work}\n";
    let p = parse_str(Path::new("w.yaml"), text, &options).expect("parses");
    assert_eq!(ids(&p[0]), ["remote"]);
    assert_eq!(
        p[0].tasks[0].image.as_deref(),
        Some("worker:{{workflow.parameters.size}}")
    );
    let missing = text.replace("template: work", "template: nope");
    let err = parse_str(Path::new("w.yaml"), &missing, &options).expect_err("unknown");
    assert!(
        matches!(&err, Error::UnknownTemplate { template, referenced_by, .. }
        if template == "lib/nope" && referenced_by == "remote"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn templates_become_pipelines_only_without_workflows_and_with_an_entrypoint() {
    let text = format!(
        "{LIBRARY}---\n{}",
        LIBRARY
            .replace("name: lib}", "name: other}")
            .replace("  entrypoint: pipeline\n", "")
    );
    let pipelines = parse(&text);
    assert_eq!(pipelines.len(), 1);
    assert_eq!(pipelines[0].name, "lib");
    assert_eq!(pipelines[0].kind, PipelineKind::WorkflowTemplate);
    let none = LIBRARY.replace("  entrypoint: pipeline\n", "");
    assert!(matches!(fail(&none), Error::MissingEntrypoint { .. }));
}

#[test]
fn cron_workflows_keep_schedules_and_timezone() {
    let p = one(
        "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata: {name: nightly}\nspec:\n  schedules: ['0 2 * * *', '0 14 * * *']\n  timezone: Europe/Paris\n  workflowSpec:\n    entrypoint: job\n    templates:\n    - name: job\n      container: {image: alpine}\n",
    );
    assert_eq!(p.kind, PipelineKind::CronWorkflow);
    assert_eq!(p.schedules, ["0 2 * * *", "0 14 * * *"]);
    assert_eq!(p.schedule(), Some("0 2 * * *"));
    assert_eq!(p.timezone.as_deref(), Some("Europe/Paris"));
    assert_eq!(ids(&p), ["job"]);
    let single = one("kind: CronWorkflow\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: c}\nspec:\n  schedule: '*/5 * * * *'\n  workflowSpec:\n    entrypoint: job\n    templates:\n    - {name: job, container: {image: alpine}}\n");
    assert_eq!(single.schedules, ["*/5 * * * *"]);
}

#[test]
fn recursion_guarded_by_when_is_one_opaque_task() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: rec}
spec:
  entrypoint: loop
  templates:
  - name: loop
    steps:
    - - {name: flip, template: flip}
    - - {name: again, template: loop, when: "{{steps.flip.outputs.result}} == tails"}
  - name: flip
    script: {image: python, source: "print('heads')"}
"#);
    assert_eq!(ids(&p), ["flip", "again"]);
    assert_eq!(task(&p, "again").kind, TaskKind::Other);
    assert_eq!(task(&p, "again").depends_on, ["flip"]);
}

#[test]
fn unguarded_recursion_is_too_deep() {
    let err = fail(&workflow(
        "  - name: main\n    dag:\n      tasks:\n      - {name: again, template: main}\n",
    ));
    let Error::TooDeep { template, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        template,
        "main, which calls itself with no `when` guard: main -> main"
    );
}

#[test]
fn invalid_workflows_are_refused_with_a_location() {
    let unknown = fail(&workflow(
        "  - name: main\n    dag:\n      tasks:\n      - {name: a, template: nowhere}\n",
    ));
    let Error::UnknownTemplate {
        at,
        template,
        referenced_by,
    } = &unknown
    else {
        panic!("{unknown}")
    };
    assert_eq!(
        (template.as_str(), referenced_by.as_str(), at.line),
        ("nowhere", "a", Some(11))
    );

    let dependency = fail(&workflow("  - name: main\n    dag:\n      tasks:\n      - {name: a, template: echo, dependencies: [ghost]}\n"));
    assert!(
        matches!(&dependency, Error::UnknownDependency { dependency, at, .. }
        if dependency == "ghost" && at.line == Some(11)),
        "{dependency}"
    );

    let duplicate = fail(&workflow("  - name: main\n    dag:\n      tasks:\n      - name: a\n        template: echo\n      - name: a\n        template: echo\n"));
    assert!(
        matches!(&duplicate, Error::DuplicateTask { task, at } if task == "a" && at.line == Some(13)),
        "{duplicate}"
    );

    let cycle = fail(&workflow("  - name: main\n    dag:\n      tasks:\n      - {name: a, template: echo, depends: b}\n      - {name: b, template: echo, depends: a}\n"));
    assert!(
        matches!(&cycle, Error::Cycle { cycle, .. } if cycle.len() == 3),
        "{cycle}"
    );

    let missing = fail("kind: Workflow\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: m}\nspec:\n  templates:\n  - {name: a, container: {image: x}}\n  - {name: b, container: {image: x}}\n");
    assert!(
        matches!(missing, Error::MissingEntrypoint { .. }),
        "{missing}"
    );

    let script = fail("kind: Workflow\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: s}\nspec:\n  entrypoint: s\n  templates:\n  - name: s\n    script: {image: python}\n");
    assert!(
        matches!(&script, Error::Invalid { at, .. } if at.line == Some(7)),
        "{script}"
    );

    let typed = fail("kind: Workflow\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: t}\nspec:\n  entrypoint: s\n  arguments:\n    parameters:\n      someParam: hello\n  templates:\n  - {name: s, container: {image: x}}\n");
    let Error::Invalid { at, what, .. } = &typed else {
        panic!("{typed}")
    };
    assert_eq!(at.line, Some(7), "{typed}");
    assert!(what.contains("spec.arguments.parameters"), "{what}");
}

#[test]
fn nulls_numbers_and_unknown_fields_are_read_leniently() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: lenient, labels: null}
spec:
  entrypoint: main
  arguments: {parameters: null}
  someFutureField: {x: 1}
  templates:
  - name: main
    inputs: null
    dag:
      tasks:
      - name: a
        template: leaf
        arguments: {parameters: [{name: n, value: 3}, {name: f, value: 1.5}]}
  - name: leaf
    inputs: {parameters: [{name: n}, {name: f}]}
    retryStrategy: {limit: null}
    container: {image: x, args: [--n, 7], resources: null}
"#);
    let t = task(&p, "a");
    assert_eq!(t.params["n"], "7");
    assert_eq!(t.params["f"], "1.5");
    assert_eq!(t.retries, 0);
}

#[test]
fn inline_templates_and_other_kinds() {
    let p = one(r#"
kind: Workflow
apiVersion: argoproj.io/v1alpha1
metadata: {name: kinds}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: inl, inline: {container: {image: inline-image}}}
      - {name: res, template: res}
      - {name: web, template: web}
      - {name: plug, template: plug}
      - {name: dat, template: dat}
  - {name: res, resource: {action: create, manifest: "kind: Job"}}
  - {name: web, http: {url: "https://x"}}
  - {name: plug, plugin: {hello: {}}}
  - {name: dat, data: {source: {artifactPaths: {}}, transformation: []}}
"#);
    let kinds: Vec<TaskKind> = p.tasks.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            TaskKind::Container,
            TaskKind::Resource,
            TaskKind::Http,
            TaskKind::Plugin,
            TaskKind::Other
        ]
    );
    assert_eq!(task(&p, "inl").image.as_deref(), Some("inline-image"));
}

#[test]
fn templates_nested_wide_and_deep_stop_expanding() {
    // Each level calls the next one ten times: 10^8 tasks if expanded fully.
    let mut templates = String::new();
    for level in 0..8 {
        let next = if level == 7 {
            "echo".to_string()
        } else {
            format!("l{}", level + 1)
        };
        let name = if level == 0 {
            "main".to_string()
        } else {
            format!("l{level}")
        };
        templates.push_str(&format!("  - name: {name}\n    dag:\n      tasks:\n"));
        for i in 0..10 {
            templates.push_str(&format!("      - {{name: t{i}, template: {next}}}\n"));
        }
    }
    let err = fail(&workflow(&templates));
    assert!(err.to_string().contains("expands to more than"), "{err}");
}

// The front end lets go of the YAML values of documents handed over to it; documents only lent
// to it (`parse_documents`) must keep theirs, and both paths must build the same pipelines.
#[test]
fn lent_documents_keep_their_values_and_parse_like_owned_ones() {
    let text = format!(
        "{LIBRARY}---\n{}",
        workflow("  - name: main\n    steps:\n    - - name: say\n        template: echo\n")
    );
    let path = Path::new("test.yaml");
    let documents = crate::document::split_documents(path, &text).expect("valid YAML");
    let lent = crate::parse_documents(path, &documents, &ParseOptions::default()).expect("valid");
    assert!(documents.iter().all(|d| !d.value.is_null()));
    assert_eq!(lent, parse(&text));
}

// A template-only file whose templates have no entrypoint names the first template, read
// before the values were let go.
#[test]
fn a_template_file_without_entrypoint_names_its_first_template() {
    let none = LIBRARY.replace("  entrypoint: pipeline\n", "");
    let Error::MissingEntrypoint { pipeline, at } = fail(&none) else {
        panic!("expected a missing entrypoint")
    };
    assert_eq!(pipeline, "lib");
    assert_eq!(at.line, Some(1));
}
