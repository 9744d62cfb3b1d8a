//! Unit tests of the KFP v2 front end, on small inline IR documents.

use std::path::Path;

use crate::ParseOptions;

use crate::document::split_documents;
use crate::{parse_str, Error, FanOut, Pipeline, TaskKind, TaskRole};

fn parse(text: &str) -> Pipeline {
    let mut pipelines = parse_str(Path::new("p.yaml"), text, &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pipelines.len(), 1);
    pipelines.remove(0)
}

fn parse_err(text: &str) -> Error {
    match parse_str(Path::new("p.yaml"), text, &ParseOptions::default()) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e,
    }
}

fn ids(p: &Pipeline) -> Vec<&str> {
    p.tasks.iter().map(|t| t.id.as_str()).collect()
}

fn task<'p>(p: &'p Pipeline, id: &str) -> &'p crate::Task {
    p.task(id)
        .unwrap_or_else(|| panic!("no task {id} in {:?}", ids(p)))
}

/// Two executors, `exec-a` (python) and `exec-b`, shared by the tests below.
const EXECUTORS: &str = r#"
deploymentSpec:
  executors:
    exec-a:
      container:
        image: python:3.11
        command: [python, train.py]
        args: [--executor_input, '{{$}}', --function_to_execute, train,
               --epochs, "{{$.inputs.parameters['epochs']}}", --out, "{{$.outputs.artifacts['model'].uri}}"]
    exec-b:
      container:
        image: busybox
"#;

#[test]
fn nested_dags_flatten_with_dotted_ids_and_sink_dependencies() {
    let p = parse(&format!(
        r#"
pipelineInfo:
  name: nested
components:
  comp-a:
    executorLabel: exec-a
  comp-b:
    executorLabel: exec-b
  comp-condition-1:
    dag:
      tasks:
        first:
          componentRef: {{name: comp-a}}
        second:
          componentRef: {{name: comp-b}}
          dependentTasks: [first]
        side:
          componentRef: {{name: comp-b}}
    inputDefinitions:
      parameters:
        pipelinechannel--producer-Output: {{parameterType: STRING}}
{EXECUTORS}
root:
  dag:
    tasks:
      producer:
        componentRef: {{name: comp-a}}
      condition-1:
        componentRef: {{name: comp-condition-1}}
        dependentTasks: [producer]
        inputs:
          parameters:
            pipelinechannel--producer-Output:
              taskOutputParameter: {{producerTask: producer, outputParameterKey: Output}}
        triggerPolicy:
          condition: inputs.parameter_values['pipelinechannel--producer-Output'] == 'heads'
      consumer:
        componentRef: {{name: comp-b}}
        dependentTasks: [condition-1]
"#
    ));
    assert_eq!(p.name, "nested");
    assert_eq!(
        ids(&p),
        [
            "producer",
            "condition-1.first",
            "condition-1.second",
            "condition-1.side",
            "consumer"
        ]
    );
    assert_eq!(task(&p, "condition-1.first").depends_on, ["producer"]);
    assert_eq!(task(&p, "condition-1.side").depends_on, ["producer"]);
    assert_eq!(
        task(&p, "condition-1.second").depends_on,
        ["condition-1.first"]
    );
    assert_eq!(
        task(&p, "consumer").depends_on,
        ["condition-1.second", "condition-1.side"]
    );
    assert_eq!(
        task(&p, "condition-1.second").condition.as_deref(),
        Some("{{tasks.producer.outputs.Output}} == 'heads'")
    );
    assert_eq!(task(&p, "consumer").condition, None);
    assert_eq!(task(&p, "condition-1.first").name, "first");
    assert_eq!(task(&p, "condition-1.first").template, "comp-a");
    assert_eq!(
        task(&p, "condition-1.first").image.as_deref(),
        Some("python:3.11")
    );
    // Lines point at the task's key inside its component.
    assert_eq!(task(&p, "condition-1.first").line, Some(12));
}

#[test]
fn imported_dataset_uri_reaches_a_task_deep_inside_sub_pipelines() {
    let p = parse(
        r#"
pipelineInfo:
  name: imports
components:
  comp-importer:
    executorLabel: exec-importer
    outputDefinitions:
      artifacts:
        artifact: {artifactType: {schemaTitle: system.Dataset}}
  comp-importer-2:
    executorLabel: exec-importer-2
    inputDefinitions:
      parameters:
        uri: {parameterType: STRING}
    outputDefinitions:
      artifacts:
        artifact: {artifactType: {schemaTitle: system.Dataset}}
  comp-a:
    executorLabel: exec-a
    inputDefinitions:
      artifacts:
        data: {artifactType: {schemaTitle: system.Dataset}}
    outputDefinitions:
      artifacts:
        model: {artifactType: {schemaTitle: system.Model}}
  comp-inner:
    dag:
      tasks:
        train:
          componentRef: {name: comp-a}
          inputs:
            artifacts:
              data: {componentInputArtifact: dataset}
      outputs:
        artifacts:
          model:
            artifactSelectors:
            - {producerSubtask: train, outputArtifactKey: model}
  comp-outer:
    dag:
      tasks:
        inner:
          componentRef: {name: comp-inner}
          inputs:
            artifacts:
              dataset: {componentInputArtifact: outer-data}
      outputs:
        artifacts:
          trained:
            artifactSelectors:
            - {producerSubtask: inner, outputArtifactKey: model}
deploymentSpec:
  executors:
    exec-importer:
      importer:
        artifactUri: {constant: 'minio://bucket/train.csv'}
    exec-importer-2:
      importer:
        artifactUri: {runtimeParameter: uri}
    exec-a:
      container: {image: trainer}
root:
  dag:
    tasks:
      importer:
        componentRef: {name: comp-importer}
      importer-2:
        componentRef: {name: comp-importer-2}
        inputs:
          parameters:
            uri: {componentInputParameter: local_path}
      outer:
        componentRef: {name: comp-outer}
        dependentTasks: [importer]
        inputs:
          artifacts:
            outer-data:
              taskOutputArtifact: {producerTask: importer, outputArtifactKey: artifact}
      evaluate:
        componentRef: {name: comp-a}
        inputs:
          artifacts:
            data:
              taskOutputArtifact: {producerTask: outer, outputArtifactKey: trained}
      local:
        componentRef: {name: comp-a}
        inputs:
          artifacts:
            data:
              taskOutputArtifact: {producerTask: importer-2, outputArtifactKey: artifact}
  inputDefinitions:
    parameters:
      local_path: {parameterType: STRING, defaultValue: /data/local.csv}
"#,
    );
    let importer = task(&p, "importer");
    assert_eq!(importer.kind, TaskKind::Importer);
    assert_eq!(
        importer.outputs[0].location.as_deref(),
        Some("s3://bucket/train.csv")
    );
    let train = task(&p, "outer.inner.train");
    assert_eq!(train.inputs[0].name, "data");
    assert_eq!(
        train.inputs[0].source.as_deref(),
        Some("s3://bucket/train.csv")
    );
    assert_eq!(train.depends_on, ["importer"]);
    // A nested DAG's output resolves to the inner producing task; the dependency added from
    // the artifact reference waits for the DAG's sink.
    let evaluate = task(&p, "evaluate");
    assert_eq!(
        evaluate.inputs[0].source.as_deref(),
        Some("task://outer.inner.train/model")
    );
    assert_eq!(evaluate.depends_on, ["outer.inner.train"]);
    // An importer URI taken from a pipeline parameter's default.
    assert_eq!(
        task(&p, "importer-2").outputs[0].location.as_deref(),
        Some("file:///data/local.csv")
    );
    assert_eq!(
        task(&p, "local").inputs[0].source.as_deref(),
        Some("file:///data/local.csv")
    );
    assert_eq!(task(&p, "local").depends_on, ["importer-2"]);
}

#[test]
fn loops_fan_out_and_limit_parallelism() {
    let p = parse(&format!(
        r#"
pipelineInfo:
  name: loops
components:
  comp-a:
    executorLabel: exec-a
  comp-b:
    executorLabel: exec-b
  comp-for-loop-1:
    dag:
      tasks:
        body:
          componentRef: {{name: comp-b}}
          inputs:
            parameters:
              msg: {{componentInputParameter: pipelinechannel--loop-item-param-1}}
              field:
                componentInputParameter: pipelinechannel--loop-item-param-1
                parameterExpressionSelector: parseJson(string_value)["a"]
        for-loop-2:
          componentRef: {{name: comp-for-loop-2}}
          parameterIterator:
            itemInput: pipelinechannel--items-loop-item
            items: {{inputParameter: pipelinechannel--items}}
          inputs:
            parameters:
              pipelinechannel--items: {{componentInputParameter: pipelinechannel--items}}
  comp-for-loop-2:
    dag:
      tasks:
        inner:
          componentRef: {{name: comp-b}}
  comp-for-loop-3:
    dag:
      tasks:
        dynamic:
          componentRef: {{name: comp-b}}
{EXECUTORS}
root:
  dag:
    tasks:
      for-loop-1:
        componentRef: {{name: comp-for-loop-1}}
        parameterIterator:
          itemInput: pipelinechannel--loop-item-param-1
          items:
            raw: '[{{"a": 1}}, {{"a": 2}}, {{"a": 3}}]'
        iteratorPolicy: {{parallelismLimit: 2}}
        inputs:
          parameters:
            pipelinechannel--items: {{componentInputParameter: items}}
      producer:
        componentRef: {{name: comp-a}}
      for-loop-3:
        componentRef: {{name: comp-for-loop-3}}
        dependentTasks: [producer]
        parameterIterator:
          itemInput: pipelinechannel--producer-Output-loop-item
          items: {{inputParameter: pipelinechannel--producer-Output}}
        inputs:
          parameters:
            pipelinechannel--producer-Output:
              taskOutputParameter: {{producerTask: producer, outputParameterKey: Output}}
  inputDefinitions:
    parameters:
      items: {{parameterType: LIST, defaultValue: [x, y]}}
"#
    ));
    let body = task(&p, "for-loop-1.body");
    assert_eq!(body.fan_out, Some(FanOut::Count(3)));
    assert_eq!(body.parallelism, Some(2));
    assert_eq!(body.params["msg"], "{{item}}");
    assert_eq!(body.params["field"], "{{item.a}}");
    // Nested loops multiply; the inner list is the pipeline's default.
    let inner = task(&p, "for-loop-1.for-loop-2.inner");
    assert_eq!(inner.fan_out, Some(FanOut::Count(6)));
    assert_eq!(inner.parallelism, Some(2));
    let dynamic = task(&p, "for-loop-3.dynamic");
    assert_eq!(dynamic.fan_out, Some(FanOut::Dynamic));
    assert_eq!(dynamic.depends_on, ["producer"]);
    assert_eq!(task(&p, "producer").fan_out, None);
    assert_eq!(p.parameters["items"], r#"["x","y"]"#);
}

#[test]
fn exit_handlers_wait_for_the_sinks_of_the_guarded_dag() {
    let p = parse(&format!(
        r#"
pipelineInfo:
  name: exit
components:
  comp-a:
    executorLabel: exec-a
  comp-b:
    executorLabel: exec-b
  comp-exit-handler-1:
    dag:
      tasks:
        step-1:
          componentRef: {{name: comp-a}}
        step-2:
          componentRef: {{name: comp-b}}
          dependentTasks: [step-1]
{EXECUTORS}
root:
  dag:
    tasks:
      exit-handler-1:
        componentRef: {{name: comp-exit-handler-1}}
      cleanup:
        componentRef: {{name: comp-b}}
        dependentTasks: [exit-handler-1]
        inputs:
          parameters:
            status:
              taskFinalStatus: {{producerTask: exit-handler-1}}
        triggerPolicy:
          strategy: ALL_UPSTREAM_TASKS_COMPLETED
"#
    ));
    let cleanup = task(&p, "cleanup");
    assert_eq!(cleanup.role, TaskRole::ExitHandler);
    assert_eq!(cleanup.depends_on, ["exit-handler-1.step-2"]);
    assert_eq!(cleanup.params["status"], "{{tasks.exit-handler-1.status}}");
    assert_eq!(task(&p, "exit-handler-1.step-1").role, TaskRole::Main);
}

#[test]
fn parameters_resolve_and_flags_come_from_the_command_line() {
    let p = parse(&format!(
        r#"
pipelineInfo:
  name: params
components:
  comp-a:
    executorLabel: exec-a
    inputDefinitions:
      parameters:
        epochs: {{parameterType: NUMBER_INTEGER}}
        lr: {{parameterType: NUMBER_DOUBLE, defaultValue: 0.01}}
        upstream: {{parameterType: STRING}}
        legacy: {{parameterType: NUMBER_INTEGER}}
        config: {{parameterType: STRUCT}}
  comp-b:
    executorLabel: exec-b
  comp-sub:
    dag:
      tasks:
        train:
          componentRef: {{name: comp-a}}
          retryPolicy: {{maxRetryCount: 3}}
          inputs:
            parameters:
              epochs: {{componentInputParameter: pipelinechannel--epochs}}
              upstream: {{componentInputParameter: pipelinechannel--prep-Output}}
              legacy: {{runtimeValue: {{constantValue: {{intValue: 7}}}}}}
              config: {{runtimeValue: {{constant: {{layers: [64, 32]}}}}}}
{EXECUTORS}
root:
  dag:
    tasks:
      prep:
        componentRef: {{name: comp-b}}
      sub:
        componentRef: {{name: comp-sub}}
        inputs:
          parameters:
            pipelinechannel--epochs: {{componentInputParameter: epochs}}
            pipelinechannel--prep-Output:
              taskOutputParameter: {{producerTask: prep, outputParameterKey: Output}}
  inputDefinitions:
    parameters:
      epochs: {{parameterType: NUMBER_INTEGER, defaultValue: 50}}
"#
    ));
    let train = task(&p, "sub.train");
    assert_eq!(train.params["epochs"], "50");
    assert_eq!(train.params["lr"], "0.01");
    assert_eq!(train.params["upstream"], "{{tasks.prep.outputs.Output}}");
    assert_eq!(train.params["legacy"], "7");
    assert_eq!(train.params["config"], r#"{"layers":[64,32]}"#);
    // `--epochs {{$.inputs.parameters['epochs']}}` is substituted; KFP's launcher flags and
    // flags whose value is an artifact placeholder are not training parameters.
    assert!(
        !train.params.contains_key("executor_input"),
        "{:?}",
        train.params
    );
    assert!(
        !train.params.contains_key("function_to_execute"),
        "{:?}",
        train.params
    );
    assert!(!train.params.contains_key("out"), "{:?}", train.params);
    assert_eq!(train.retries, 3);
    assert_eq!(train.depends_on, ["prep"]);
    assert_eq!(p.parameters["epochs"], "50");
}

#[test]
fn accelerators_count_as_gpus_only_when_they_are_gpus() {
    let p = parse(
        r#"
pipelineInfo:
  name: gpus
components:
  comp-gpu: {executorLabel: exec-gpu}
  comp-tpu: {executorLabel: exec-tpu}
  comp-vertex: {executorLabel: exec-vertex}
  comp-from-param:
    executorLabel: exec-from-param
    inputDefinitions:
      parameters:
        pipelinechannel--count: {parameterType: STRING}
  comp-untyped: {executorLabel: exec-untyped}
deploymentSpec:
  executors:
    exec-gpu:
      container:
        image: trainer
        resources:
          accelerator: {count: '2', resourceCount: '2', type: nvidia.com/gpu, resourceType: nvidia.com/gpu}
    exec-tpu:
      container:
        image: trainer
        resources:
          accelerator: {count: '8', type: tpu-v3}
    exec-vertex:
      container:
        image: trainer
        resources:
          accelerator: {count: 4, type: NVIDIA_TESLA_T4}
    exec-from-param:
      container:
        image: trainer
        resources:
          accelerator:
            resourceCount: "{{$.inputs.parameters['pipelinechannel--count']}}"
            resourceType: nvidia.com/gpu
    exec-untyped:
      container:
        image: trainer
        resources:
          accelerator: {resourceCount: '1'}
root:
  dag:
    tasks:
      gpu: {componentRef: {name: comp-gpu}}
      tpu: {componentRef: {name: comp-tpu}}
      vertex: {componentRef: {name: comp-vertex}}
      from-param:
        componentRef: {name: comp-from-param}
        inputs:
          parameters:
            pipelinechannel--count: {componentInputParameter: count}
      untyped: {componentRef: {name: comp-untyped}}
  inputDefinitions:
    parameters:
      count: {parameterType: STRING, defaultValue: '3'}
"#,
    );
    assert_eq!(task(&p, "gpu").gpus, 2);
    assert_eq!(task(&p, "tpu").gpus, 0);
    assert_eq!(task(&p, "vertex").gpus, 4);
    assert_eq!(task(&p, "from-param").gpus, 3);
    assert_eq!(task(&p, "untyped").gpus, 1);
}

#[test]
fn platform_spec_adds_pvc_mounts_and_node_selectors() {
    let p = parse(
        r#"
pipelineInfo:
  name: volumes
components:
  comp-a: {executorLabel: exec-a}
  comp-b: {executorLabel: exec-b}
  comp-make-pvc:
    executorLabel: exec-make-pvc
deploymentSpec:
  executors:
    exec-a: {container: {image: a}}
    exec-b: {container: {image: b}}
    exec-make-pvc: {container: {image: c}}
root:
  dag:
    tasks:
      make-pvc: {componentRef: {name: comp-make-pvc}}
      a: {componentRef: {name: comp-a}}
      b:
        componentRef: {name: comp-b}
        dependentTasks: [make-pvc]
  inputDefinitions:
    parameters:
      claim: {parameterType: STRING, defaultValue: shared-data}
---
platforms:
  kubernetes:
    deploymentSpec:
      executors:
        exec-a:
          pvcMount:
          - mountPath: /data
            constant: datasets
          - mountPath: /cache
            pvcNameParameter: {componentInputParameter: claim}
          nodeSelector:
            labels: {cloud.google.com/gke-accelerator: nvidia-tesla-a100}
        exec-b:
          pvcMount:
          - mountPath: /scratch
            taskOutputParameter: {producerTask: make-pvc, outputParameterKey: name}
"#,
    );
    let a = task(&p, "a");
    let sources: Vec<(&str, Option<&str>)> = a
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), i.source.as_deref()))
        .collect();
    assert_eq!(
        sources,
        [
            ("/data", Some("pvc://datasets/data")),
            ("/cache", Some("pvc://shared-data/cache"))
        ]
    );
    assert_eq!(a.inputs[0].path.as_deref(), Some("/data"));
    assert_eq!(
        a.node_selector["cloud.google.com/gke-accelerator"],
        "nvidia-tesla-a100"
    );
    let b = task(&p, "b");
    assert_eq!(
        b.inputs[0].source.as_deref(),
        Some("pvc://{{tasks.make-pvc.outputs.name}}/scratch")
    );
    assert_eq!(b.depends_on, ["make-pvc"]);
}

#[test]
fn an_empty_nested_dag_passes_its_dependencies_through() {
    let p = parse(&format!(
        r#"
pipelineInfo:
  name: empty
components:
  comp-a: {{executorLabel: exec-a}}
  comp-empty:
    dag:
      tasks: {{}}
{EXECUTORS}
root:
  dag:
    tasks:
      first: {{componentRef: {{name: comp-a}}}}
      nothing:
        componentRef: {{name: comp-empty}}
        dependentTasks: [first]
      last:
        componentRef: {{name: comp-a}}
        dependentTasks: [nothing]
"#
    ));
    assert_eq!(ids(&p), ["first", "last"]);
    assert_eq!(task(&p, "last").depends_on, ["first"]);
}

#[test]
fn a_compiled_single_component_is_one_task() {
    let p = parse(
        r#"
pipelineInfo:
  name: lone
components: {}
deploymentSpec:
  executors:
    exec-lone:
      container: {image: python, args: [--rate, "{{$.inputs.parameters['rate']}}"]}
root:
  executorLabel: exec-lone
  inputDefinitions:
    parameters:
      rate: {parameterType: NUMBER_DOUBLE, defaultValue: 0.5}
"#,
    );
    assert_eq!(ids(&p), ["lone"]);
    assert_eq!(task(&p, "lone").params["rate"], "0.5");
}

// The SDK's own invalid sample: `pipelineInfo.name` is null.
#[test]
fn a_pipeline_without_a_name_is_refused_at_the_name() {
    let err = parse_err(
        "# c\npipelineInfo:\n  name:\nroot:\n  dag:\n    tasks: {}\nschemaVersion: 2.1.0\n",
    );
    let Error::Invalid { what, at, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(what, "pipelineInfo.name");
    assert_eq!(at.line, Some(3), "{err}");
    assert!(err.to_string().starts_with("p.yaml:3:"), "{err}");
}

// The SDK's own invalid sample: `components` renamed `components_1` leaves every
// componentRef dangling.
#[test]
fn a_dangling_component_reference_names_the_component_and_the_task() {
    let err = parse_err(
        r#"
components_1:
  comp-a: {executorLabel: exec-a}
pipelineInfo:
  name: broken
root:
  dag:
    tasks:
      hello:
        componentRef: {name: comp-a}
"#,
    );
    let Error::UnknownTemplate {
        template,
        referenced_by,
        at,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(template, "comp-a");
    assert_eq!(referenced_by, "hello");
    assert_eq!(at.line, Some(9), "{err}");
}

#[test]
fn structural_errors_are_located() {
    let missing_root = parse_err("pipelineInfo:\n  name: x\ncomponents: {}\n");
    assert!(
        matches!(&missing_root, Error::Invalid { what, .. } if what == "root"),
        "{missing_root}"
    );

    let missing_executor = parse_err(
        "pipelineInfo: {name: x}\ncomponents:\n  comp-a: {executorLabel: exec-a}\nroot:\n  dag:\n    tasks:\n      t: {componentRef: {name: comp-a}}\n",
    );
    assert!(
        matches!(&missing_executor, Error::UnknownTemplate { template, .. } if template == "exec-a"),
        "{missing_executor}"
    );

    let unknown_dependency = parse_err(&format!(
        "pipelineInfo: {{name: x}}\ncomponents:\n  comp-a: {{executorLabel: exec-a}}\n{EXECUTORS}root:\n  dag:\n    tasks:\n      t:\n        componentRef: {{name: comp-a}}\n        dependentTasks: [ghost]\n"
    ));
    assert!(
        matches!(&unknown_dependency, Error::UnknownDependency { dependency, .. } if dependency == "ghost"),
        "{unknown_dependency}"
    );

    let cycle = parse_err(&format!(
        "pipelineInfo: {{name: x}}\ncomponents:\n  comp-a: {{executorLabel: exec-a}}\n{EXECUTORS}root:\n  dag:\n    tasks:\n      t:\n        componentRef: {{name: comp-a}}\n        dependentTasks: [u]\n      u:\n        componentRef: {{name: comp-a}}\n        dependentTasks: [t]\n"
    ));
    let Error::Cycle { cycle: names, .. } = &cycle else {
        panic!("{cycle}")
    };
    assert_eq!(names.first(), names.last());
    assert_eq!(names.len(), 3, "{names:?}");

    let wrong_shape = parse_err("pipelineInfo: {name: x}\nroot:\n  dag:\n    tasks: [1, 2]\n");
    assert!(
        matches!(&wrong_shape, Error::Invalid { .. }),
        "{wrong_shape}"
    );
    assert!(
        wrong_shape.location().and_then(|l| l.line).is_some(),
        "{wrong_shape}"
    );
}

// A component whose DAG runs itself would recurse forever.
#[test]
fn a_component_that_contains_itself_is_too_deep() {
    let err = parse_err(
        r#"
pipelineInfo: {name: loop}
components:
  comp-self:
    dag:
      tasks:
        again: {componentRef: {name: comp-self}}
root:
  dag:
    tasks:
      start: {componentRef: {name: comp-self}}
"#,
    );
    let Error::TooDeep { template, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(template, "comp-self");
}

// Ten uses of a DAG component at each of six levels would flatten to a million tasks.
#[test]
fn a_pipeline_that_multiplies_out_is_refused() {
    let mut text = String::from(
        "pipelineInfo: {name: bomb}\ncomponents:\n  comp-leaf: {executorLabel: exec-leaf}\n",
    );
    for level in 0..6 {
        let child = if level == 0 {
            "comp-leaf".to_string()
        } else {
            format!("comp-l{}", level - 1)
        };
        text.push_str(&format!("  comp-l{level}:\n    dag:\n      tasks:\n"));
        for i in 0..10 {
            text.push_str(&format!(
                "        t{i}: {{componentRef: {{name: {child}}}}}\n"
            ));
        }
    }
    text.push_str("deploymentSpec:\n  executors:\n    exec-leaf: {container: {image: x}}\n");
    text.push_str("root:\n  dag:\n    tasks:\n      top: {componentRef: {name: comp-l5}}\n");
    let err = parse_err(&text);
    assert!(
        matches!(&err, Error::Invalid { what, .. } if what == "pipeline"),
        "{err}"
    );
}

/// A minimal workflow in the KFP backend's form: the IR split over `components-…` /
/// `implementations-…` arguments, with a hashed executable component bound to its name by a
/// driver task.
const EMBEDDED: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: embedded-
spec:
  arguments:
    parameters:
    - name: components-abc123
      value: '{"executorLabel":"exec-train","inputDefinitions":{"parameters":{"epochs":{"parameterType":"NUMBER_INTEGER"}}},"outputDefinitions":{"artifacts":{"model":{"artifactType":{"schemaTitle":"system.Model"}}}}}'
    - name: implementations-abc123
      value: '{"image":"trainer:1","args":["--epochs","{{$.inputs.parameters[''epochs'']}}"],"resources":{"accelerator":{"resourceCount":"1","resourceType":"nvidia.com/gpu"}}}'
    - name: components-comp-importer
      value: '{"executorLabel":"exec-importer","outputDefinitions":{"artifacts":{"artifact":{"artifactType":{"schemaTitle":"system.Dataset"}}}}}'
    - name: implementations-comp-importer
      value: '{"artifactUri":{"constant":"gs://bucket/data"}}'
    - name: components-root
      value: '{"dag":{"tasks":{"importer":{"componentRef":{"name":"comp-importer"}},"train":{"componentRef":{"name":"comp-train"},"dependentTasks":["importer"],"inputs":{"artifacts":{"data":{"taskOutputArtifact":{"producerTask":"importer","outputArtifactKey":"artifact"}}},"parameters":{"epochs":{"componentInputParameter":"epochs"}}}}}},"inputDefinitions":{"parameters":{"epochs":{"parameterType":"NUMBER_INTEGER","defaultValue":5}}}}'
  entrypoint: entrypoint
  templates:
  - name: root
    dag:
      tasks:
      - name: train-driver
        template: system-container-driver
        arguments:
          parameters:
          - name: component
            value: '{{workflow.parameters.components-abc123}}'
          - name: task
            value: '{"componentRef":{"name":"comp-train"},"taskInfo":{"name":"train"}}'
          - name: container
            value: '{{workflow.parameters.implementations-abc123}}'
  - name: entrypoint
    dag:
      tasks:
      - name: root-driver
        template: system-dag-driver
        arguments:
          parameters:
          - name: runtime-config
            value: '{"parameterValues":{"epochs":20}}'
"#;

#[test]
fn backend_workflows_are_read_from_their_embedded_ir() {
    let path = Path::new("wf.yaml");
    let documents = split_documents(path, EMBEDDED).unwrap_or_else(|e| panic!("{e}"));
    let p = match super::parse_embedded(path, &documents[0]) {
        Some(Ok(p)) => p,
        Some(Err(e)) => panic!("{e}"),
        None => panic!("not recognised as a KFP backend workflow"),
    };
    assert_eq!(p.name, "embedded");
    assert_eq!(p.kind, crate::PipelineKind::Workflow);
    assert_eq!(ids(&p), ["importer", "train"]);
    let train = task(&p, "train");
    assert_eq!(train.template, "comp-train");
    assert_eq!(train.gpus, 1);
    assert_eq!(train.image.as_deref(), Some("trainer:1"));
    // The run-time config overrides the pipeline default.
    assert_eq!(train.params["epochs"], "20");
    assert_eq!(train.inputs[0].source.as_deref(), Some("gs://bucket/data"));
    assert_eq!(train.depends_on, ["importer"]);
    assert_eq!(task(&p, "importer").kind, TaskKind::Importer);
    assert!(train.line.is_some());
}

#[test]
fn plain_argo_workflows_are_not_embedded_pipelines() {
    let path = Path::new("wf.yaml");
    let text = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  entrypoint: main\n  arguments:\n    parameters:\n    - {name: message, value: hi}\n  templates:\n  - name: main\n    container: {image: busybox}\n";
    let documents = split_documents(path, text).unwrap_or_else(|e| panic!("{e}"));
    assert!(super::parse_embedded(path, &documents[0]).is_none());
}

#[test]
fn broken_embedded_json_is_a_located_error() {
    let path = Path::new("wf.yaml");
    let text = EMBEDDED.replace(r#"value: '{"dag":{"tasks""#, r#"value: '{"dag":{"tasks"::"#);
    let documents = split_documents(path, &text).unwrap_or_else(|e| panic!("{e}"));
    let Some(Err(err)) = super::parse_embedded(path, &documents[0]) else {
        panic!("expected an error")
    };
    assert!(err.to_string().contains("components-root"), "{err}");
    assert_eq!(err.location().and_then(|l| l.line), Some(16), "{err}");
}
