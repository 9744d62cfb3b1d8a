//! Flattening a KFP v2 pipeline (root DAG plus component DAGs) into executable tasks.
//!
//! The IR nests: a task whose component has a `dag` (a sub-pipeline, a `dsl.ParallelFor` loop,
//! a `dsl.Condition` branch or a `dsl.ExitHandler` body) stands for the tasks inside it. The
//! flattener walks the root DAG depth first and emits one [`Task`] per task whose component
//! has an `executorLabel`, with ids joined by `.` from the root down (`for-loop-2.train`).
//!
//! Within one DAG the sibling tasks are visited in dependency order, so that when a task is
//! reached everything it depends on has already been flattened and can be described by a
//! [`Sibling`]: its *exit set* (the executable tasks a dependant must wait for: the task
//! itself, or the sinks of a nested DAG) and the outputs it exposes (for a nested DAG, its
//! `outputs` selectors resolved to the inner producing tasks). The tasks are still emitted in
//! declaration order. A nested DAG's source tasks inherit the dependencies of the DAG task.
//!
//! Values are resolved on the way down: a [`Scope`] holds a component's input parameters and
//! artifacts as seen from the root, so that a task deep inside sub-pipelines that reads an
//! imported dataset reports the dataset's URI, and parameters resolve to pipeline defaults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use super::spec::{
    ArtifactInput, ComponentSpec, DagSpec, ExecutorSpec, KubernetesExecutorConfig, ParameterInput,
    TaskSpec,
};
use super::values::{
    as_count, is_gpu_type, normalize_uri, render_json, rewrite_condition, substitute_placeholders,
    ArtifactValue, ParamValue,
};
use crate::document::Document;
use crate::error::{Error, Location, Result};
use crate::limits::{self, PipelineBudget, MAX_FAN_OUT, MAX_VALUE_BYTES};
use crate::model::{FanOut, Input, Output, Task, TaskKind, TaskRole};
use crate::params::flags_from_args;

/// Component DAGs nested deeper than this are refused (a component that contains itself would
/// otherwise recurse forever).
pub(crate) const MAX_DEPTH: usize = limits::MAX_TEMPLATE_DEPTH;

/// Flattening that would visit more tasks than this is refused: a DAG component used many
/// times at each of several levels multiplies out.
pub(crate) const MAX_TASKS: usize = limits::MAX_EXPANDED_TASKS;

/// The KFP `triggerPolicy.strategy` of exit handlers and `ignore_upstream_failure` tasks.
const ALL_UPSTREAM_TASKS_COMPLETED: &str = "ALL_UPSTREAM_TASKS_COMPLETED";

/// The prefix of the inputs the KFP compiler adds to pass values into DAGs and placeholders.
const PIPELINE_CHANNEL: &str = "pipelinechannel--";

/// Launcher flags the KFP SDK puts on every Python component; they are not training
/// parameters.
const KFP_LAUNCHER_FLAGS: &[&str] = &[
    "executor_input",
    "function_to_execute",
    "component_module_path",
    "executor-input",
    "function-to-execute",
];

/// A pipeline ready to flatten: the IR's components and executors, whichever form (stand-alone
/// IR or embedded in an Argo workflow) they were read from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    pub name: String,
    pub root: ComponentSpec,
    pub components: BTreeMap<String, ComponentSpec>,
    /// Keyed by executor label.
    pub executors: BTreeMap<String, ExecutorSpec>,
    /// Kubernetes executor config (PlatformSpec), keyed by executor label.
    pub platform_by_executor: BTreeMap<String, KubernetesExecutorConfig>,
    /// Kubernetes executor config keyed by component name (the backend's embedded form).
    pub platform_by_component: BTreeMap<String, KubernetesExecutorConfig>,
    /// Run-time values of root parameters that override their defaults.
    pub parameter_overrides: BTreeMap<String, Value>,
}

/// How to find the line of a component or task for error messages and `Task::line`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LineIndex<'a> {
    /// A YAML IR document: components and tasks are map keys.
    Ir(&'a Document),
    /// An Argo workflow with the IR as JSON strings in `components-<name>` parameters.
    Embedded(&'a Document),
}

impl LineIndex<'_> {
    /// The line of a component (`None`: the root).
    pub fn component(&self, component: Option<&str>) -> Option<usize> {
        match (self, component) {
            (LineIndex::Ir(doc), None) => doc.find_line("root:"),
            (LineIndex::Ir(doc), Some(c)) => doc.find_line(&format!("{c}:")),
            (LineIndex::Embedded(doc), None) => doc.name_line("components-root"),
            (LineIndex::Embedded(doc), Some(c)) => doc
                .name_line(&format!("components-{c}"))
                .or_else(|| doc.name_line("components-root")),
        }
    }

    /// The line of task `task` in the DAG of `component`.
    pub fn task(&self, component: Option<&str>, task: &str) -> Option<usize> {
        let start = self.component(component);
        match self {
            LineIndex::Ir(doc) => {
                let start = start.unwrap_or(doc.first_line);
                doc.find_line_after("tasks:", start)
                    .and_then(|tasks| doc.find_line_after(&format!("{task}:"), tasks))
                    .or(Some(start))
            }
            LineIndex::Embedded(_) => start,
        }
    }

    fn first_line(&self) -> usize {
        match self {
            LineIndex::Ir(doc) | LineIndex::Embedded(doc) => doc.first_line,
        }
    }
}

/// The pipeline's parameters (root inputs with their defaults) and its executable tasks.
pub(crate) fn flatten(
    program: &Program,
    path: &Path,
    lines: LineIndex<'_>,
) -> Result<(BTreeMap<String, String>, Vec<Task>)> {
    let mut root_scope = Scope::default();
    let mut parameters = BTreeMap::new();
    for (name, definition) in program.root.input_definitions.parameters.iter() {
        let value = program
            .parameter_overrides
            .get(name)
            .or(definition.default_value.as_ref())
            .filter(|v| !v.is_null());
        match value {
            Some(value) => {
                let value = &typed(value, definition);
                parameters.insert(name.clone(), render_json(value));
                root_scope
                    .params
                    .insert(name.clone(), ParamValue::Known(value.clone()));
            }
            None => {
                parameters.insert(name.clone(), String::new());
                root_scope.params.insert(
                    name.clone(),
                    ParamValue::Runtime(format!("{{{{pipeline.parameters.{name}}}}}")),
                );
            }
        }
    }
    for name in program.root.input_definitions.artifacts.keys() {
        root_scope
            .artifacts
            .insert(name.clone(), ArtifactValue::Unknown);
    }

    let budget = PipelineBudget::new();
    let mut flattener = Flattener {
        program,
        path,
        budget: &budget,
        lines,
        stack: Vec::new(),
        visited: 0,
        line_cache: HashMap::new(),
        extra: None,
    };
    let frame = Frame::default();
    let tasks = if let Some(dag) = &program.root.dag {
        flattener.flatten_dag(None, dag, &root_scope, &frame)?.tasks
    } else if program.root.executor_label.is_some() {
        // A compiled single component: the root is itself the one executable task.
        let name = program.name.clone();
        let mut task = TaskSpec {
            component_ref: Some(super::spec::ComponentRef {
                name: Some(name.clone()),
            }),
            ..Default::default()
        };
        for input in program.root.input_definitions.parameters.keys() {
            task.inputs.parameters.0.push((
                input.clone(),
                ParameterInput {
                    component_input_parameter: Some(input.clone()),
                    ..Default::default()
                },
            ));
        }
        for input in program.root.input_definitions.artifacts.keys() {
            task.inputs.artifacts.0.push((
                input.clone(),
                ArtifactInput {
                    component_input_artifact: Some(input.clone()),
                    ..Default::default()
                },
            ));
        }
        flattener.extra = Some((name.clone(), &program.root));
        let dag = DagSpec {
            tasks: super::spec::Ordered(vec![(name, task)]),
            ..Default::default()
        };
        flattener
            .flatten_dag(None, &dag, &root_scope, &frame)?
            .tasks
    } else {
        return Err(Error::Invalid {
            at: Location::at(path, lines.component(None).or(Some(lines.first_line()))),
            what: "root".into(),
            message: "the root component has neither a `dag` nor an `executorLabel`".into(),
        });
    };
    Ok((parameters, tasks))
}

/// A component's inputs as seen from the root.
#[derive(Debug, Clone, Default)]
struct Scope {
    params: BTreeMap<String, ParamValue>,
    artifacts: BTreeMap<String, ArtifactValue>,
}

/// What enclosing DAG tasks impose on the tasks inside them.
#[derive(Debug, Clone, Default)]
struct Frame {
    /// Id prefix: `""` at the root, `condition-1.` inside `condition-1`.
    prefix: String,
    condition: Option<String>,
    fan_out: Option<FanOut>,
    parallelism: Option<u32>,
    role: TaskRole,
    retries: Option<u32>,
    /// Dependencies of the enclosing DAG task, inherited by the DAG's source tasks.
    inherited: Vec<String>,
}

/// A flattened sibling, as later siblings of the same DAG see it.
#[derive(Debug, Clone)]
enum Sibling {
    Executable {
        id: String,
        importer_uri: Option<String>,
    },
    Dag {
        id: String,
        exit: Vec<String>,
        params: BTreeMap<String, ParamValue>,
        artifacts: BTreeMap<String, ArtifactValue>,
    },
}

impl Sibling {
    fn exit(&self) -> &[String] {
        match self {
            Sibling::Executable { id, .. } => std::slice::from_ref(id),
            Sibling::Dag { exit, .. } => exit,
        }
    }

    fn output_parameter(&self, key: &str) -> ParamValue {
        match self {
            Sibling::Executable { id, .. } => task_output_placeholder(id, key),
            Sibling::Dag { id, params, .. } => params
                .get(key)
                .cloned()
                .unwrap_or_else(|| task_output_placeholder(id, key)),
        }
    }

    fn output_artifact(&self, key: &str) -> ArtifactValue {
        match self {
            // An importer has one output, the imported artifact: its readers read the URI.
            Sibling::Executable {
                importer_uri: Some(uri),
                ..
            } => ArtifactValue::Uri(uri.clone()),
            Sibling::Executable { id, .. } => ArtifactValue::Task {
                producer: id.clone(),
                key: key.to_string(),
            },
            Sibling::Dag { artifacts, .. } => artifacts
                .get(key)
                .cloned()
                .unwrap_or(ArtifactValue::Unknown),
        }
    }
}

fn task_output_placeholder(id: &str, key: &str) -> ParamValue {
    ParamValue::Runtime(format!("{{{{tasks.{id}.outputs.{key}}}}}"))
}

/// The flattened contents of one DAG and the outputs it exposes.
#[derive(Debug, Default)]
struct DagOutcome {
    tasks: Vec<Task>,
    params: BTreeMap<String, ParamValue>,
    artifacts: BTreeMap<String, ArtifactValue>,
}

/// The siblings of one DAG, by name, as flattened so far.
struct Siblings<'s> {
    prefix: &'s str,
    index: &'s HashMap<&'s str, usize>,
    results: &'s [Option<Sibling>],
}

impl Siblings<'_> {
    fn get(&self, name: &str) -> Option<&Sibling> {
        self.index
            .get(name)
            .and_then(|&i| self.results.get(i))
            .and_then(Option::as_ref)
    }

    fn output_parameter(&self, producer: &str, key: &str) -> ParamValue {
        match self.get(producer) {
            Some(sibling) => sibling.output_parameter(key),
            None => task_output_placeholder(&format!("{}{producer}", self.prefix), key),
        }
    }

    fn output_artifact(&self, producer: &str, key: &str) -> ArtifactValue {
        self.get(producer)
            .map_or(ArtifactValue::Unknown, |s| s.output_artifact(key))
    }
}

struct Flattener<'a> {
    program: &'a Program,
    path: &'a Path,
    /// What is left of [`limits::MAX_PIPELINE_BYTES`], charged with every substituted value
    /// and every task emitted.
    budget: &'a PipelineBudget,
    lines: LineIndex<'a>,
    /// Components being flattened, outermost first.
    stack: Vec<String>,
    /// Tasks visited so far, nested DAG tasks included.
    visited: usize,
    /// Lines of tasks already looked up, by component and task name: a component used many
    /// times is searched for once.
    line_cache: HashMap<(Option<String>, String), Option<usize>>,
    /// A component known under a synthetic name (the root of a compiled single component).
    extra: Option<(String, &'a ComponentSpec)>,
}

impl<'a> Flattener<'a> {
    fn at(&self, line: Option<usize>) -> Location {
        Location::at(self.path, line.or(Some(self.lines.first_line())))
    }

    /// The error for a value that placeholder substitution makes longer than
    /// [`MAX_VALUE_BYTES`].
    fn too_long(&self, line: Option<usize>, what: std::fmt::Arguments<'_>) -> Error {
        Error::LimitExceeded {
            at: self.at(line),
            what: format!("{what} is too long after placeholder substitution"),
            limit: format!("{MAX_VALUE_BYTES} bytes per value"),
        }
    }

    fn task_line(&mut self, component: Option<&str>, task: &str) -> Option<usize> {
        let key = (component.map(String::from), task.to_string());
        if let Some(line) = self.line_cache.get(&key) {
            return *line;
        }
        let line = self.lines.task(component, task);
        self.line_cache.insert(key, line);
        line
    }

    fn component(&self, name: &str) -> Option<&'a ComponentSpec> {
        match self.extra {
            Some((ref extra, spec)) if extra == name => Some(spec),
            _ => self.program.components.get(name),
        }
    }

    fn platform_config(
        &self,
        component: &ComponentSpec,
        name: &str,
    ) -> Option<&KubernetesExecutorConfig> {
        component
            .executor_label
            .as_ref()
            .and_then(|label| self.program.platform_by_executor.get(label))
            .or_else(|| self.program.platform_by_component.get(name))
    }

    /// Flatten the DAG of `component` (`None`: the root).
    fn flatten_dag(
        &mut self,
        component: Option<&str>,
        dag: &DagSpec,
        scope: &Scope,
        frame: &Frame,
    ) -> Result<DagOutcome> {
        let names: Vec<&str> = dag.tasks.keys().map(String::as_str).collect();
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();

        // Sibling dependencies: `dependentTasks`, plus the producers of the task's inputs in case
        // the compiler left one out.
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(names.len());
        for (name, spec) in dag.tasks.iter() {
            let id = format!("{}{name}", frame.prefix);
            let mut mine: Vec<usize> = Vec::new();
            let mut seen: HashSet<usize> = HashSet::new();
            for dependency in &spec.dependent_tasks {
                let Some(&j) = index.get(dependency.as_str()) else {
                    return Err(Error::UnknownDependency {
                        at: self.at(self.lines.task(component, name)),
                        task: id,
                        dependency: format!("{}{dependency}", frame.prefix),
                    });
                };
                if seen.insert(j) {
                    mine.push(j);
                }
            }
            for producer in self.implicit_producers(spec) {
                if let Some(&j) = index.get(producer) {
                    if names.get(j) != Some(&name.as_str()) && seen.insert(j) {
                        mine.push(j);
                    }
                }
            }
            deps.push(mine);
        }
        let order = crate::order::dependency_order(&deps).map_err(|cycle| Error::Cycle {
            at: self.at(cycle
                .first()
                .and_then(|&i| names.get(i))
                .and_then(|n| self.lines.task(component, n))),
            cycle: cycle
                .iter()
                .filter_map(|&i| names.get(i))
                .map(|n| format!("{}{n}", frame.prefix))
                .collect(),
        })?;

        let mut results: Vec<Option<Sibling>> = vec![None; names.len()];
        let mut buffers: Vec<Vec<Task>> = vec![Vec::new(); names.len()];
        for i in order {
            let Some((name, spec)) = dag.tasks.0.get(i) else {
                continue;
            };
            let siblings = Siblings {
                prefix: &frame.prefix,
                index: &index,
                results: &results,
            };
            let sibling_deps = deps.get(i).map(Vec::as_slice).unwrap_or_default();
            let (tasks, sibling) =
                self.flatten_task(component, name, spec, scope, frame, sibling_deps, &siblings)?;
            if let Some(slot) = buffers.get_mut(i) {
                *slot = tasks;
            }
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(sibling);
            }
        }

        let siblings = Siblings {
            prefix: &frame.prefix,
            index: &index,
            results: &results,
        };
        let mut outcome = DagOutcome {
            tasks: buffers.into_iter().flatten().collect(),
            ..Default::default()
        };
        for (key, output) in dag.outputs.parameters.iter() {
            let selector = output.value_from_parameter.as_ref().or_else(|| {
                output
                    .value_from_oneof
                    .as_ref()
                    .and_then(|o| o.parameter_selectors.first())
            });
            if let Some(selector) = selector {
                if let (Some(producer), Some(inner_key)) =
                    (&selector.producer_subtask, &selector.output_parameter_key)
                {
                    outcome
                        .params
                        .insert(key.clone(), siblings.output_parameter(producer, inner_key));
                }
            }
        }
        for (key, output) in dag.outputs.artifacts.iter() {
            // With several selectors (`dsl.OneOf` over condition branches, or a collected loop
            // output) the first producer stands for the output.
            if let Some(selector) = output.artifact_selectors.first() {
                if let (Some(producer), Some(inner_key)) =
                    (&selector.producer_subtask, &selector.output_artifact_key)
                {
                    outcome
                        .artifacts
                        .insert(key.clone(), siblings.output_artifact(producer, inner_key));
                }
            }
        }
        Ok(outcome)
    }

    /// Sibling names a task reads outputs of.
    fn implicit_producers<'t>(&'t self, spec: &'t TaskSpec) -> Vec<&'t str> {
        let mut producers = Vec::new();
        for (_, input) in spec.inputs.parameters.iter() {
            if let Some(p) = input
                .task_output_parameter
                .as_ref()
                .and_then(|t| t.producer_task.as_deref())
            {
                producers.push(p);
            }
            if let Some(p) = input
                .task_final_status
                .as_ref()
                .and_then(|t| t.producer_task.as_deref())
            {
                producers.push(p);
            }
        }
        for (_, input) in spec.inputs.artifacts.iter() {
            if let Some(p) = input
                .task_output_artifact
                .as_ref()
                .and_then(|t| t.producer_task.as_deref())
            {
                producers.push(p);
            }
        }
        let component = spec
            .component_ref
            .as_ref()
            .and_then(|r| r.name.as_deref())
            .and_then(|name| self.component(name).map(|c| (name, c)));
        if let Some(config) = component.and_then(|(name, c)| self.platform_config(c, name)) {
            for mount in &config.pvc_mount {
                let from_task = mount
                    .pvc_name_parameter
                    .as_ref()
                    .and_then(|p| p.task_output_parameter.as_ref())
                    .or(mount.task_output_parameter.as_ref());
                if let Some(p) = from_task.and_then(|t| t.producer_task.as_deref()) {
                    producers.push(p);
                }
            }
        }
        producers
    }

    #[allow(clippy::too_many_arguments)]
    fn flatten_task(
        &mut self,
        component: Option<&str>,
        name: &str,
        spec: &TaskSpec,
        scope: &Scope,
        frame: &Frame,
        sibling_deps: &[usize],
        siblings: &Siblings<'_>,
    ) -> Result<(Vec<Task>, Sibling)> {
        let id = format!("{}{name}", frame.prefix);
        let line = self.task_line(component, name);
        let Some(component_name) = spec.component_ref.as_ref().and_then(|r| r.name.clone()) else {
            return Err(Error::Invalid {
                at: self.at(line),
                what: "componentRef".into(),
                message: format!("task `{id}` has no `componentRef.name`"),
            });
        };
        self.visited += 1;
        if self.visited > MAX_TASKS {
            return Err(Error::Invalid {
                at: self.at(line),
                what: "pipeline".into(),
                message: format!("flattening visits more than {MAX_TASKS} tasks"),
            });
        }
        let Some(task_component) = self.component(&component_name) else {
            return Err(Error::UnknownTemplate {
                at: self.at(line),
                template: component_name,
                referenced_by: id,
            });
        };

        let mut depends_on: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for &j in sibling_deps {
            if let Some(sibling) = siblings.results.get(j).and_then(Option::as_ref) {
                for exit in sibling.exit() {
                    if seen.insert(exit) {
                        depends_on.push(exit.clone());
                    }
                }
            }
        }
        if sibling_deps.is_empty() {
            depends_on = frame.inherited.clone();
        }

        // Inputs, resolved in the enclosing scope, then the component's own defaults.
        let mut params: BTreeMap<String, ParamValue> = BTreeMap::new();
        for (input, source) in spec.inputs.parameters.iter() {
            params.insert(input.clone(), resolve_parameter(source, scope, siblings));
        }
        for (input, definition) in task_component.input_definitions.parameters.iter() {
            if !params.contains_key(input) {
                if let Some(default) = definition.default_value.as_ref().filter(|v| !v.is_null()) {
                    params.insert(input.clone(), ParamValue::Known(default.clone()));
                }
            }
        }
        for (input, value) in params.iter_mut() {
            if let (ParamValue::Known(known), Some(definition)) = (
                &*value,
                task_component.input_definitions.parameters.get(input),
            ) {
                *value = ParamValue::Known(typed(known, definition));
            }
        }
        // Constants may refer to the task's other inputs (`accelerator_count:
        // '{{$.inputs.parameters['pipelinechannel--limit']}}'`).
        let snapshot = params.clone();
        for (input, value) in params.iter_mut() {
            if let ParamValue::Known(Value::String(text)) = value {
                if text.contains("{{$.inputs.parameters[") {
                    *text = substitute_placeholders(text, &snapshot).map_err(|_| {
                        self.too_long(line, format_args!("input `{input}` of task `{id}`"))
                    })?;
                    self.budget.charge(text.len(), || self.at(line))?;
                }
            }
        }
        let mut artifacts: BTreeMap<String, ArtifactValue> = BTreeMap::new();
        let mut artifact_order: Vec<String> = Vec::new();
        for (input, source) in spec.inputs.artifacts.iter() {
            artifacts.insert(input.clone(), resolve_artifact(source, scope, siblings));
            artifact_order.push(input.clone());
        }

        // What this task adds to the frame: condition, exit-handler role, retries, loop.
        let mut here = frame.clone();
        if let Some(condition) = spec
            .trigger_policy
            .as_ref()
            .and_then(|t| t.condition.as_deref())
        {
            let condition = rewrite_condition(condition.trim(), &params)
                .map_err(|_| self.too_long(line, format_args!("the condition of task `{id}`")))?;
            if !condition.is_empty() {
                here.condition = Some(match &frame.condition {
                    Some(outer) => format!("{outer} && {condition}"),
                    None => condition,
                });
            }
        }
        if spec
            .trigger_policy
            .as_ref()
            .and_then(|t| t.strategy.as_deref())
            == Some(ALL_UPSTREAM_TASKS_COMPLETED)
        {
            here.role = TaskRole::ExitHandler;
        }
        if let Some(retries) = spec
            .retry_policy
            .as_ref()
            .and_then(|r| r.max_retry_count.as_ref())
            .and_then(as_count)
        {
            here.retries = Some(retries);
        }
        let mut loop_fan_out = None;
        if let Some(iterator) = &spec.parameter_iterator {
            let count = match (&iterator.items.raw, &iterator.items.input_parameter) {
                (Some(raw), _) => ParamValue::Known(raw.clone()).as_known_list_len(),
                (None, Some(input)) => params
                    .get(input)
                    .or_else(|| scope.params.get(input))
                    .and_then(ParamValue::as_known_list_len),
                (None, None) => None,
            };
            loop_fan_out = Some(count);
        } else if spec.artifact_iterator.is_some() {
            loop_fan_out = Some(None);
        }
        if let Some(count) = loop_fan_out {
            here.fan_out = Some(match (frame.fan_out, count) {
                (Some(FanOut::Dynamic), _) | (_, None) => FanOut::Dynamic,
                (outer, Some(count)) => {
                    let outer = match outer {
                        Some(FanOut::Count(n)) => n as usize,
                        _ => 1,
                    };
                    let total = count.saturating_mul(outer);
                    match u32::try_from(total) {
                        Ok(n) if total as u64 <= MAX_FAN_OUT => FanOut::Count(n),
                        _ => {
                            let nested = if outer > 1 {
                                format!(", times {outer} of the loops it is nested in")
                            } else {
                                String::new()
                            };
                            return Err(Error::LimitExceeded {
                                at: self.at(line),
                                what: format!("task `{id}` loops over {count} known items{nested}"),
                                limit: format!("{MAX_FAN_OUT} known instances per task"),
                            });
                        }
                    }
                }
            });
            if let Some(limit) = spec
                .iterator_policy
                .as_ref()
                .and_then(|p| p.parallelism_limit.as_ref())
                .and_then(as_count)
                .filter(|&n| n > 0)
            {
                here.parallelism = Some(limit);
            }
        }

        if let Some(dag) = &task_component.dag {
            if self.stack.len() >= MAX_DEPTH || self.stack.contains(&component_name) {
                return Err(Error::TooDeep {
                    at: self.at(line),
                    template: component_name,
                    limit: MAX_DEPTH,
                });
            }
            let mut child = Scope { params, artifacts };
            if let Some(iterator) = &spec.parameter_iterator {
                if let Some(item) = &iterator.item_input {
                    child
                        .params
                        .insert(item.clone(), ParamValue::Runtime("{{item}}".into()));
                }
            }
            if let Some(iterator) = &spec.artifact_iterator {
                if let Some(item) = &iterator.item_input {
                    // Each iteration reads one element of the collection's producer output.
                    let source = iterator
                        .items
                        .input_artifact
                        .as_ref()
                        .and_then(|a| child.artifacts.get(a).or_else(|| scope.artifacts.get(a)))
                        .cloned()
                        .unwrap_or(ArtifactValue::Unknown);
                    child.artifacts.insert(item.clone(), source);
                }
            }
            here.prefix = format!("{id}.");
            here.inherited = depends_on.clone();
            self.stack.push(component_name.clone());
            let outcome = self.flatten_dag(Some(&component_name), dag, &child, &here);
            self.stack.pop();
            let outcome = outcome?;
            let exit = match sinks(&outcome.tasks) {
                s if s.is_empty() => depends_on,
                s => s,
            };
            let sibling = Sibling::Dag {
                id,
                exit,
                params: outcome.params,
                artifacts: outcome.artifacts,
            };
            return Ok((outcome.tasks, sibling));
        }

        let Some(label) = task_component.executor_label.clone() else {
            return Err(Error::Invalid {
                at: self.at(self.lines.component(Some(&component_name)).or(line)),
                what: format!("component `{component_name}`"),
                message: format!(
                    "used by task `{id}`, it has neither a `dag` nor an `executorLabel`"
                ),
            });
        };
        let Some(executor) = self.program.executors.get(&label) else {
            return Err(Error::UnknownTemplate {
                at: self.at(line),
                template: label,
                referenced_by: id,
            });
        };

        let kind = if executor.container.is_some() {
            TaskKind::Container
        } else if executor.importer.is_some() {
            TaskKind::Importer
        } else {
            TaskKind::Other
        };
        let mut task = Task::new(id.clone(), component_name.clone(), kind);
        task.name = name.to_string();
        task.depends_on = depends_on;
        task.condition = here.condition.clone();
        task.role = here.role;
        task.retries = here.retries.unwrap_or(0);
        task.fan_out = here.fan_out;
        task.parallelism = here.parallelism;
        task.line = line;

        let importer_uri = executor.importer.as_ref().and_then(|importer| {
            let uri = importer.artifact_uri.as_ref()?;
            let value = if let Some(constant) = &uri.constant {
                ParamValue::Known(constant.clone())
            } else if let Some(constant) = &uri.constant_value {
                ParamValue::Known(legacy_constant(constant))
            } else {
                params.get(uri.runtime_parameter.as_ref()?)?.clone()
            };
            match value {
                ParamValue::Known(Value::String(s)) => normalize_uri(&s),
                _ => None,
            }
        });

        if let Some(container) = &executor.container {
            task.image = container.image.clone();
            task.gpus = gpus(container, &params);
            let argv: Vec<String> = container
                .command
                .iter()
                .chain(&container.args)
                .map(|v| {
                    let word = substitute_placeholders(&render_json(v), &params).map_err(|_| {
                        self.too_long(line, format_args!("an argument of task `{id}`"))
                    })?;
                    self.budget.charge(word.len(), || self.at(line))?;
                    Ok(word)
                })
                .collect::<Result<_>>()?;
            for (flag, value) in flags_from_args(&argv) {
                // Values still holding a KFP placeholder are artifact paths and URIs, not
                // training parameters.
                if !KFP_LAUNCHER_FLAGS.contains(&flag.as_str()) && !value.contains("{{$") {
                    task.params.entry(flag).or_insert(value);
                }
            }
        }
        for (input, value) in &params {
            // `pipelinechannel--…` inputs only carry values into placeholders.
            if !input.starts_with(PIPELINE_CHANNEL) {
                task.params.insert(input.clone(), value.render());
            }
        }

        for input in artifact_order {
            let source = artifacts.get(&input).and_then(ArtifactValue::source);
            task.inputs.push(Input {
                item: None,
                name: input,
                source,
                path: None,
            });
        }
        for output in task_component.output_definitions.artifacts.keys() {
            task.outputs.push(Output {
                name: output.clone(),
                location: importer_uri.clone(),
                path: None,
            });
        }
        if let Some(config) = self.platform_config(task_component, &component_name) {
            for mount in &config.pvc_mount {
                let Some(mount_path) = mount.mount_path.as_deref() else {
                    continue;
                };
                let claim = pvc_claim(mount, scope, siblings);
                let Some(claim) = claim.filter(|c| !c.is_empty()) else {
                    continue;
                };
                task.inputs.push(Input {
                    item: None,
                    name: mount_path.to_string(),
                    source: Some(format!(
                        "pvc://{claim}/{}",
                        mount_path.trim_start_matches('/')
                    )),
                    path: Some(mount_path.to_string()),
                });
            }
            if let Some(selector) = &config.node_selector {
                for (key, value) in &selector.labels {
                    task.node_selector.insert(key.clone(), render_json(value));
                }
                if let Some(source) = &selector.node_selector_json {
                    if let ParamValue::Known(value) = resolve_parameter(source, scope, siblings) {
                        let value = match value {
                            Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::Null),
                            other => other,
                        };
                        if let Value::Object(labels) = value {
                            for (key, value) in labels {
                                task.node_selector.insert(key, render_json(&value));
                            }
                        }
                    }
                }
            }
        }

        self.budget
            .charge(task.approximate_bytes(), || self.at(line))?;
        let sibling = Sibling::Executable { id, importer_uri };
        Ok((vec![task], sibling))
    }
}

/// Resolve an input parameter of a task in the scope of the DAG that holds it.
fn resolve_parameter(input: &ParameterInput, scope: &Scope, siblings: &Siblings<'_>) -> ParamValue {
    let value = if let Some(constant) = input
        .runtime_value
        .as_ref()
        .and_then(|r| r.constant.as_ref())
    {
        ParamValue::Known(constant.clone())
    } else if let Some(constant) = input
        .runtime_value
        .as_ref()
        .and_then(|r| r.constant_value.as_ref())
    {
        ParamValue::Known(legacy_constant(constant))
    } else if let Some(name) = &input.component_input_parameter {
        scope
            .params
            .get(name)
            .cloned()
            .unwrap_or_else(|| ParamValue::Runtime(format!("{{{{inputs.parameters.{name}}}}}")))
    } else if let Some(output) = &input.task_output_parameter {
        match (&output.producer_task, &output.output_parameter_key) {
            (Some(producer), Some(key)) => siblings.output_parameter(producer, key),
            _ => ParamValue::Runtime("{{tasks.outputs}}".into()),
        }
    } else if let Some(status) = &input.task_final_status {
        let producer = status.producer_task.as_deref().unwrap_or_default();
        ParamValue::Runtime(format!(
            "{{{{tasks.{}{producer}.status}}}}",
            siblings.prefix
        ))
    } else {
        ParamValue::Known(Value::Null)
    };
    match &input.parameter_expression_selector {
        Some(selector) if !selector.trim().is_empty() => value.select(selector),
        _ => value,
    }
}

/// Protobuf renders every number as a double, so integer parameters arrive as `200.0`; give
/// them back their integer form (`200`) where the definition says `NUMBER_INTEGER`.
fn typed(value: &Value, definition: &super::spec::ParameterDefinition) -> Value {
    match (value, definition.parameter_type.as_deref()) {
        (Value::Number(n), Some("NUMBER_INTEGER"))
            if n.as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) =>
        {
            n.as_f64()
                .map_or_else(|| value.clone(), |f| Value::from(f as i64))
        }
        _ => value.clone(),
    }
}

/// The value inside a pre-2.0 `constantValue` (`{stringValue: …}`, `{intValue: …}`, …).
fn legacy_constant(constant: &Value) -> Value {
    match constant {
        Value::Object(map) => ["stringValue", "intValue", "doubleValue", "boolValue"]
            .iter()
            .find_map(|k| map.get(*k))
            .cloned()
            .unwrap_or_else(|| constant.clone()),
        other => other.clone(),
    }
}

fn resolve_artifact(
    input: &ArtifactInput,
    scope: &Scope,
    siblings: &Siblings<'_>,
) -> ArtifactValue {
    if let Some(output) = &input.task_output_artifact {
        return match (&output.producer_task, &output.output_artifact_key) {
            (Some(producer), Some(key)) => siblings.output_artifact(producer, key),
            _ => ArtifactValue::Unknown,
        };
    }
    if let Some(name) = &input.component_input_artifact {
        return scope
            .artifacts
            .get(name)
            .cloned()
            .unwrap_or(ArtifactValue::Unknown);
    }
    ArtifactValue::Unknown
}

/// The claim name of a PVC mount, resolved in the scope of the DAG holding the task.
fn pvc_claim(
    mount: &super::spec::PvcMount,
    scope: &Scope,
    siblings: &Siblings<'_>,
) -> Option<String> {
    let value = if let Some(parameter) = &mount.pvc_name_parameter {
        resolve_parameter(parameter, scope, siblings)
    } else if let Some(constant) = &mount.constant {
        ParamValue::Known(constant.clone())
    } else if let Some(output) = &mount.task_output_parameter {
        siblings.output_parameter(
            output.producer_task.as_deref()?,
            output.output_parameter_key.as_deref()?,
        )
    } else if let Some(name) = &mount.component_input_parameter {
        scope.params.get(name).cloned()?
    } else {
        return None;
    };
    match value {
        ParamValue::Known(Value::Null) => None,
        other => Some(other.render()),
    }
}

/// GPUs a container asks for. The count is `resourceCount` (or the older `count`), the type
/// `resourceType` (or `type`), either possibly a placeholder for an input parameter. Only GPU
/// types count (see [`is_gpu_type`]); a count without a type counts, because the KFP backend
/// then requests `nvidia.com/gpu`. A GPU type whose count is known only at run time counts as
/// one GPU: the task is a GPU task even if the number is not known.
fn gpus(container: &super::spec::ContainerSpec, params: &BTreeMap<String, ParamValue>) -> u32 {
    let Some(accelerator) = &container.resources.accelerator else {
        return 0;
    };
    let text = |v: &Option<Value>| {
        v.as_ref()
            // Too long to substitute is not a count or a type: unknown.
            .and_then(|v| substitute_placeholders(&render_json(v), params).ok())
            .filter(|s| !s.trim().is_empty() && s != "null")
    };
    let kind = text(&accelerator.resource_type).or_else(|| text(&accelerator.kind));
    let count_text = text(&accelerator.resource_count).or_else(|| text(&accelerator.count));
    let count = count_text
        .as_ref()
        .map(|c| as_count(&Value::String(c.clone())));
    let is_gpu = kind.as_deref().map_or(true, is_gpu_type);
    match (is_gpu, count) {
        (false, _) | (true, None) => 0,
        (true, Some(Some(n))) => n,
        (true, Some(None)) if kind.is_some() => 1,
        (true, Some(None)) => 0,
    }
}

/// Ids of the tasks no other task of `tasks` depends on, in order.
fn sinks(tasks: &[Task]) -> Vec<String> {
    let depended: HashSet<&str> = tasks
        .iter()
        .flat_map(|t| t.depends_on.iter().map(String::as_str))
        .collect();
    tasks
        .iter()
        .filter(|t| !depended.contains(t.id.as_str()))
        .map(|t| t.id.clone())
        .collect()
}
