//! The pipeline as a Workflow that really runs on the test control plane.
//!
//! The benchmark submits the pipeline's own DAG, artifacts and GPU requests; only what each
//! container does is replaced, since the images do not exist on the node agent: `main` checks
//! that every input arrived whole (its bytes, summed under the declared path), computes for the
//! rep's drawn time (`sleep`), and writes its outputs at the profile's sizes. The values come in
//! as input parameters of each DAG task, so that one template shared by several tasks (`train`
//! for two models) gets each task's own compute time and sizes.
//!
//! Outputs are stored unarchived (`archive: none`), as large binary checkpoints usually are:
//! Argo's default gzip would add the same CPU time to every arm and tell nothing about loading.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

/// Parameter with the compute time in seconds.
pub const COMPUTE_PARAM: &str = "kfcache-compute";
/// Parameter with `PATH:BYTES` words, one per input: what `main` checks before computing.
pub const EXPECT_PARAM: &str = "kfcache-expect";
/// Parameter with `PATH:BYTES` words, one per output: what `main` writes after computing.
pub const OUTPUTS_PARAM: &str = "kfcache-outputs";

/// What one DAG task of one rep does.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    pub compute_s: f64,
    /// Declared input path and the bytes that must be there.
    pub expect: Vec<(String, u64)>,
    /// Declared output path and the bytes to write.
    pub outputs: Vec<(String, u64)>,
}

/// `main`'s script: check the inputs, compute, write the outputs.
const SCRIPT: &str = r#"set -eu
for e in {{inputs.parameters.kfcache-expect}}; do
  p="${e%:*}"; n="${e##*:}"
  got=$(find "$p" -type f -exec stat -c %s {} + | awk '{s += $1} END {print s + 0}')
  if [ "$got" != "$n" ]; then echo "input $p holds $got bytes, $n expected" >&2; exit 3; fi
done
sleep {{inputs.parameters.kfcache-compute}}
for o in {{inputs.parameters.kfcache-outputs}}; do
  p="${o%:*}"; n="${o##*:}"
  mkdir -p "$(dirname "$p")"
  head -c "$n" /dev/urandom > "$p"
done
"#;

fn words(pairs: &[(String, u64)]) -> String {
    pairs
        .iter()
        .map(|(path, bytes)| format!("{path}:{bytes}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn param(name: &str, value: String) -> Value {
    let mut map = Mapping::new();
    map.insert("name".into(), name.into());
    map.insert("value".into(), value.into());
    Value::Mapping(map)
}

fn seq_at<'a>(map: &'a mut Mapping, key: &str) -> &'a mut Vec<Value> {
    let entry = map
        .entry(key.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !entry.is_sequence() {
        *entry = Value::Sequence(Vec::new());
    }
    match entry {
        Value::Sequence(seq) => seq,
        _ => unreachable!("made a sequence above"),
    }
}

fn map_at<'a>(map: &'a mut Mapping, key: &str) -> &'a mut Mapping {
    let entry = map
        .entry(key.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !entry.is_mapping() {
        *entry = Value::Mapping(Mapping::new());
    }
    match entry {
        Value::Mapping(m) => m,
        _ => unreachable!("made a mapping above"),
    }
}

/// The runnable Workflow: `workflow` (an Argo Workflow with a DAG entrypoint) whose DAG tasks
/// get `plans` (by task name) as parameters and whose container templates run [`SCRIPT`].
/// Every DAG task needs a plan.
pub fn runnable(workflow: &Value, plans: &BTreeMap<String, TaskPlan>) -> Result<Value> {
    let mut workflow = workflow.clone();
    let invalid = |message: String| Error::Invalid(format!("the benchmark's pipeline: {message}"));
    let templates = workflow
        .get_mut("spec")
        .and_then(|s| s.get_mut("templates"))
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| invalid("no spec.templates".into()))?;
    let mut used: BTreeMap<String, ()> = BTreeMap::new();
    let mut seen = 0;
    for template in templates.iter_mut() {
        let Some(tasks) = template
            .get_mut("dag")
            .and_then(|d| d.get_mut("tasks"))
            .and_then(Value::as_sequence_mut)
        else {
            continue;
        };
        for task in tasks.iter_mut() {
            let name = task
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let plan = plans
                .get(&name)
                .ok_or_else(|| invalid(format!("no plan for DAG task {name:?}")))?;
            if let Some(t) = task.get("template").and_then(Value::as_str) {
                used.insert(t.to_string(), ());
            }
            let task = task
                .as_mapping_mut()
                .ok_or_else(|| invalid(format!("DAG task {name:?} is not a mapping")))?;
            let params = seq_at(map_at(task, "arguments"), "parameters");
            params.push(param(COMPUTE_PARAM, format!("{:.3}", plan.compute_s)));
            params.push(param(EXPECT_PARAM, words(&plan.expect)));
            params.push(param(OUTPUTS_PARAM, words(&plan.outputs)));
            seen += 1;
        }
    }
    if seen == 0 {
        return Err(invalid(
            "no DAG task (the benchmark runs DAG workflows)".into(),
        ));
    }
    for template in templates.iter_mut() {
        let name = template
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !used.contains_key(&name) || template.get("container").is_none() {
            continue;
        }
        let template = template
            .as_mapping_mut()
            .ok_or_else(|| invalid(format!("template {name:?} is not a mapping")))?;
        let params = seq_at(map_at(template, "inputs"), "parameters");
        for declared in [COMPUTE_PARAM, EXPECT_PARAM, OUTPUTS_PARAM] {
            let mut map = Mapping::new();
            map.insert("name".into(), declared.into());
            params.push(Value::Mapping(map));
        }
        let container = map_at(template, "container");
        container.insert(
            "command".into(),
            Value::Sequence(vec!["sh".into(), "-c".into()]),
        );
        container.insert("args".into(), Value::Sequence(vec![SCRIPT.into()]));
        if let Some(artifacts) = template
            .get_mut("outputs")
            .and_then(|o| o.get_mut("artifacts"))
            .and_then(Value::as_sequence_mut)
        {
            for artifact in artifacts.iter_mut().filter_map(Value::as_mapping_mut) {
                let mut none = Mapping::new();
                none.insert("none".into(), Value::Mapping(Mapping::new()));
                artifact.insert("archive".into(), Value::Mapping(none));
            }
        }
    }
    Ok(workflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: p-}
spec:
  entrypoint: main
  templates:
    - name: main
      dag:
        tasks:
          - {name: a, template: t}
          - {name: b, template: t, depends: a}
    - name: t
      outputs:
        artifacts: [{name: model, path: /out/model.pt}]
      container: {image: python:3.11, command: [python, train.py], args: [--x]}
"#;

    fn plan(compute_s: f64, out: u64) -> TaskPlan {
        TaskPlan {
            compute_s,
            expect: vec![("/data/x".into(), 10)],
            outputs: vec![("/out/model.pt".into(), out)],
        }
    }

    #[test]
    fn each_dag_task_carries_its_own_plan_into_a_shared_template() {
        let workflow: Value = serde_yaml::from_str(PIPELINE).expect("yaml");
        let plans = BTreeMap::from([
            ("a".to_string(), plan(1.5, 7)),
            ("b".to_string(), plan(2.0, 9)),
        ]);
        let out = runnable(&workflow, &plans).expect("runnable");
        let tasks = &out["spec"]["templates"][0]["dag"]["tasks"];
        let value = |task: usize, index: usize| {
            tasks[task]["arguments"]["parameters"][index]["value"]
                .as_str()
                .expect("value")
                .to_string()
        };
        assert_eq!(value(0, 0), "1.500");
        assert_eq!(value(1, 0), "2.000");
        assert_eq!(value(0, 1), "/data/x:10");
        assert_eq!(value(1, 2), "/out/model.pt:9");
        let template = &out["spec"]["templates"][1];
        assert_eq!(template["container"]["command"][0], "sh");
        assert!(template["container"]["args"][0]
            .as_str()
            .expect("script")
            .contains("sleep {{inputs.parameters.kfcache-compute}}"));
        assert_eq!(
            template["inputs"]["parameters"].as_sequence().map(Vec::len),
            Some(3)
        );
        assert!(template["outputs"]["artifacts"][0]["archive"]["none"].is_mapping());
    }

    #[test]
    fn a_task_without_a_plan_is_refused() {
        let workflow: Value = serde_yaml::from_str(PIPELINE).expect("yaml");
        let plans = BTreeMap::from([("a".to_string(), plan(1.0, 1))]);
        let error = runnable(&workflow, &plans).expect_err("b has no plan");
        assert!(error.to_string().contains("\"b\""), "{error}");
    }

    #[test]
    fn the_script_checks_computes_and_writes_in_a_shell() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in");
        std::fs::create_dir_all(input.join("d")).expect("dir");
        std::fs::write(input.join("d/a"), [0u8; 5]).expect("a");
        std::fs::write(input.join("b"), [0u8; 7]).expect("b");
        let output = dir.path().join("out/model.pt");
        let script = SCRIPT
            .replace(
                "{{inputs.parameters.kfcache-expect}}",
                &format!("{}:12", input.display()),
            )
            .replace("{{inputs.parameters.kfcache-compute}}", "0.01")
            .replace(
                "{{inputs.parameters.kfcache-outputs}}",
                &format!("{}:1000", output.display()),
            );
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("sh");
        assert!(status.success());
        assert_eq!(std::fs::metadata(&output).expect("output").len(), 1000);
        let wrong = script.replace(":12 ", ":13 ").replace(":12\n", ":13\n");
        let wrong = wrong.replacen(
            &format!("{}:12", input.display()),
            &format!("{}:13", input.display()),
            1,
        );
        let output = std::process::Command::new("sh")
            .args(["-c", &wrong])
            .output()
            .expect("sh");
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("holds 12 bytes, 13 expected"));
    }
}
