//! The KFP v2 backend's Argo form: an Argo `Workflow` whose arguments carry the pipeline's IR
//! as JSON strings, and whose templates are the generic KFP driver/launcher machinery.
//!
//! The backend writes (`backend/src/v2/compiler/argocompiler`):
//! - `components-root`: the root component (its DAG and root input definitions);
//! - `components-<comp-name>`: each DAG component, by name;
//! - `components-<hash>` / `implementations-<hash>`: each executable component's spec and its
//!   executor (container or importer body), deduplicated by content hash; the same key names
//!   both halves;
//! - `kubernetes-<comp-name>`: the component's Kubernetes executor config (PlatformSpec).
//!
//! Which component a hashed key belongs to is only recorded in the driver tasks of the Argo
//! DAG templates: their `task` argument (the IR task JSON, with `componentRef.name`) sits next
//! to `component: {{workflow.parameters.components-<key>}}` and
//! `container|importer: {{workflow.parameters.implementations-<key>}}`. The root DAG driver's
//! `runtime-config` argument carries run-time values for root parameters.
//!
//! Workflows that instead carry a whole `PipelineSpec` as one JSON parameter are read too.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_yaml::Value as Yaml;

use super::flatten::{self, LineIndex, Program};
use super::spec::{ComponentSpec, ExecutorSpec, KubernetesExecutorConfig, PipelineSpec};
use crate::document::{DocKind, Document};
use crate::error::{Error, Location, Result};
use crate::model::{Pipeline, PipelineKind};

/// The parsed form of `document`, or `None` when it is not a KFP v2 backend workflow.
pub(super) fn parse(path: &Path, document: &Document) -> Option<Result<Pipeline>> {
    let kind = match document.kind {
        DocKind::Workflow => PipelineKind::Workflow,
        DocKind::WorkflowTemplate => PipelineKind::WorkflowTemplate,
        DocKind::ClusterWorkflowTemplate => PipelineKind::ClusterWorkflowTemplate,
        DocKind::CronWorkflow => PipelineKind::CronWorkflow,
        _ => return None,
    };
    let spec = document.value.get("spec")?;
    let spec = if kind == PipelineKind::CronWorkflow {
        spec.get("workflowSpec")?
    } else {
        spec
    };
    let arguments: Vec<(&str, &str)> = spec
        .get("arguments")
        .and_then(|a| a.get("parameters"))
        .and_then(Yaml::as_sequence)?
        .iter()
        .filter_map(|p| Some((p.get("name")?.as_str()?, p.get("value")?.as_str()?)))
        .collect();

    let workflow_name = workflow_name(&document.value);
    let program = if let Some((name, text)) = arguments
        .iter()
        .find(|(name, _)| *name == "components-root")
    {
        Some(split_program(path, document, spec, &arguments, name, text))
    } else {
        arguments
            .iter()
            .find_map(|(name, text)| whole_program(path, document, name, text))
    }?;
    Some(program.and_then(|mut program| {
        if let Some(name) = &workflow_name {
            program.name = name.clone();
        }
        let (parameters, tasks) = flatten::flatten(&program, path, LineIndex::Embedded(document))?;
        Ok(Pipeline {
            name: program.name.clone(),
            kind,
            schedules: Vec::new(),
            timezone: None,
            source: path.display().to_string(),
            line: Some(document.first_line),
            parameters,
            parallelism: None,
            tasks,
        })
    }))
}

/// `metadata.name`, else `metadata.generateName` without its trailing `-`.
fn workflow_name(value: &Yaml) -> Option<String> {
    let metadata = value.get("metadata")?;
    if let Some(name) = metadata
        .get("name")
        .and_then(Yaml::as_str)
        .filter(|n| !n.is_empty())
    {
        return Some(name.to_string());
    }
    metadata
        .get("generateName")
        .and_then(Yaml::as_str)
        .map(|n| n.trim_end_matches('-').to_string())
        .filter(|n| !n.is_empty())
}

/// A parameter holding a whole `PipelineSpec` as JSON.
fn whole_program(
    path: &Path,
    document: &Document,
    name: &str,
    text: &str,
) -> Option<Result<Program>> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{')
        || !trimmed.contains("\"pipelineInfo\"")
        || !trimmed.contains("\"root\"")
    {
        return None;
    }
    let value: Value = serde_json::from_str(text).ok()?;
    if value.get("pipelineInfo").is_none() || value.get("root").is_none() {
        return None;
    }
    Some((|| {
        let spec: PipelineSpec = from_json(path, document, name, text)?;
        let Some(root) = spec.root else {
            return Err(invalid(
                path,
                document,
                name,
                "the embedded pipeline has no `root`".into(),
            ));
        };
        Ok(Program {
            name: spec.pipeline_info.name.unwrap_or_else(|| "pipeline".into()),
            root,
            components: spec.components,
            executors: spec.deployment_spec.executors,
            ..Default::default()
        })
    })())
}

/// The backend's split form (`components-root` and friends).
fn split_program(
    path: &Path,
    document: &Document,
    spec: &Yaml,
    arguments: &[(&str, &str)],
    root_name: &str,
    root_text: &str,
) -> Result<Program> {
    let root: ComponentSpec = from_json(path, document, root_name, root_text)?;
    let mut by_key: BTreeMap<&str, ComponentSpec> = BTreeMap::new();
    let mut implementations: BTreeMap<&str, Value> = BTreeMap::new();
    let mut kubernetes: BTreeMap<&str, KubernetesExecutorConfig> = BTreeMap::new();
    for (name, text) in arguments {
        if let Some(key) = name.strip_prefix("components-").filter(|k| *k != "root") {
            by_key.insert(key, from_json(path, document, name, text)?);
        } else if let Some(key) = name.strip_prefix("implementations-") {
            implementations.insert(key, from_json(path, document, name, text)?);
        } else if let Some(key) = name.strip_prefix("kubernetes-") {
            kubernetes.insert(key, from_json(path, document, name, text)?);
        }
    }

    // Which component each key belongs to, from the driver tasks' arguments.
    #[derive(Default)]
    struct Binding<'a> {
        component: Option<&'a str>,
        implementation: Option<(&'a str, bool)>,
        kubernetes: Option<&'a str>,
    }
    let mut bindings: BTreeMap<String, Binding<'_>> = BTreeMap::new();
    let mut overrides: BTreeMap<String, Value> = BTreeMap::new();
    for task in driver_tasks(spec) {
        let args: BTreeMap<&str, &str> = task
            .get("arguments")
            .and_then(|a| a.get("parameters"))
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.get("name")?.as_str()?, p.get("value")?.as_str()?)))
            .collect();
        if let Some(config) = args.get("runtime-config") {
            if let Ok(Value::Object(config)) = serde_json::from_str::<Value>(config) {
                if let Some(Value::Object(values)) = config.get("parameterValues") {
                    for (name, value) in values {
                        overrides
                            .entry(name.clone())
                            .or_insert_with(|| value.clone());
                    }
                }
            }
        }
        let Some(component) = args
            .get("task")
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .and_then(|t| {
                t.get("componentRef")?
                    .get("name")?
                    .as_str()
                    .map(String::from)
            })
        else {
            continue;
        };
        let binding = bindings.entry(component).or_default();
        if let Some(key) = args
            .get("component")
            .and_then(|v| parameter_reference(v, "components-"))
        {
            binding.component = Some(key);
        }
        for (arg, is_importer) in [("container", false), ("importer", true)] {
            if let Some(key) = args
                .get(arg)
                .and_then(|v| parameter_reference(v, "implementations-"))
            {
                binding.implementation = Some((key, is_importer));
            }
        }
        if let Some(key) = args
            .get("kubernetes-config")
            .and_then(|v| parameter_reference(v, "kubernetes-"))
        {
            binding.kubernetes = Some(key);
        }
    }

    let mut program = Program {
        root,
        parameter_overrides: overrides,
        ..Default::default()
    };
    // Components named by their own key, with the implementation of the same key.
    for (key, component) in &by_key {
        program
            .components
            .insert(key.to_string(), component.clone());
    }
    let bound: Vec<&str> = bindings.values().filter_map(|b| b.component).collect();
    let mut implementation_of: BTreeMap<String, (&str, Option<bool>)> = implementations
        .keys()
        .filter(|key| by_key.contains_key(*key) && !bound.contains(*key))
        .map(|key| (key.to_string(), (*key, None)))
        .collect();
    for (component, binding) in &bindings {
        if let Some(spec) = binding.component.and_then(|key| by_key.get(key)) {
            program.components.insert(component.clone(), spec.clone());
        }
        if let Some((key, is_importer)) = binding.implementation.or_else(|| {
            binding
                .component
                .filter(|k| implementations.contains_key(k))
                .map(|k| (k, false))
        }) {
            let kind = binding.implementation.map(|_| is_importer);
            implementation_of.insert(component.clone(), (key, kind));
        }
        if let Some(config) = binding.kubernetes.and_then(|key| kubernetes.get(key)) {
            program
                .platform_by_component
                .insert(component.clone(), config.clone());
        }
    }
    for (key, config) in &kubernetes {
        program
            .platform_by_component
            .entry(key.to_string())
            .or_insert_with(|| config.clone());
    }

    // Executors, keyed by the component's executor label; two components whose (deduplicated)
    // specs share a label but not an implementation get distinct labels.
    for (component_name, (key, is_importer)) in implementation_of {
        let Some(body) = implementations.get(key) else {
            continue;
        };
        let Some(component) = program.components.get_mut(&component_name) else {
            continue;
        };
        let is_importer = is_importer.unwrap_or_else(|| body.get("artifactUri").is_some());
        let executor = if is_importer {
            ExecutorSpec {
                importer: Some(from_value(path, document, key, body)?),
                ..Default::default()
            }
        } else {
            ExecutorSpec {
                container: Some(from_value(path, document, key, body)?),
                ..Default::default()
            }
        };
        let mut label = component
            .executor_label
            .clone()
            .unwrap_or_else(|| format!("exec-{component_name}"));
        if program.executors.contains_key(&label) {
            label = format!("{label}@{component_name}");
        }
        component.executor_label = Some(label.clone());
        program.executors.insert(label, executor);
    }
    program.name = "pipeline".into();
    Ok(program)
}

/// Every task of every `dag` template (and every step of `steps` templates).
fn driver_tasks(spec: &Yaml) -> Vec<&Yaml> {
    let mut tasks = Vec::new();
    for template in spec
        .get("templates")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
    {
        if let Some(list) = template
            .get("dag")
            .and_then(|d| d.get("tasks"))
            .and_then(Yaml::as_sequence)
        {
            tasks.extend(list);
        }
        for group in template
            .get("steps")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
        {
            tasks.extend(group.as_sequence().into_iter().flatten());
        }
    }
    tasks
}

/// `{{workflow.parameters.<prefix><key>}}` → `<key>`.
fn parameter_reference<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    value
        .trim()
        .strip_prefix("{{workflow.parameters.")?
        .strip_suffix("}}")?
        .trim()
        .strip_prefix(prefix)
}

fn invalid(path: &Path, document: &Document, argument: &str, message: String) -> Error {
    Error::Invalid {
        at: Location::at(
            path,
            document.name_line(argument).or(Some(document.first_line)),
        ),
        what: format!("workflow argument `{argument}`"),
        message,
    }
}

fn from_json<T: DeserializeOwned>(
    path: &Path,
    document: &Document,
    argument: &str,
    text: &str,
) -> Result<T> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let at = e.path().to_string();
        invalid(
            path,
            document,
            argument,
            format!("embedded JSON at `{at}`: {}", e.into_inner()),
        )
    })
}

fn from_value<T: DeserializeOwned>(
    path: &Path,
    document: &Document,
    key: &str,
    value: &Value,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let argument = format!("implementations-{key}");
        invalid(
            path,
            document,
            &argument,
            format!("embedded JSON at `{at}`: {}", e.into_inner()),
        )
    })
}
