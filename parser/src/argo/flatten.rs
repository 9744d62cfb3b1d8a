//! Nested `dag` and `steps` templates flattened into executable tasks.
//!
//! Expansion walks from the entrypoint down. Each call (a DAG task, a step, the entrypoint, an
//! exit handler or a hook) is expanded with the ids of the executable tasks it must wait for
//! (`incoming`), and returns the ids of its own last tasks (`sinks`), so that:
//! - a dependency on a nested dag/steps task means a dependency on its sink tasks;
//! - the source tasks of a nested template inherit the nested task's dependencies.
//!
//! Inside a DAG, tasks are expanded in dependency order (so a task's dependencies' sinks and
//! output artifacts are known when it is expanded) and emitted in declaration order.
//! Parameters, loop fan-out, `when` conditions, parallelism and the task role flow down through
//! a [`Scope`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::artifacts::{self, ArtifactRef};
use super::depends;
use super::raw::{self, Call, Template};
use super::substitute::{item_vars, substitute, uniform_item_vars, TooLong, Vars};
use super::{parameter_values, Resolver, TemplateSet};
use crate::error::{Error, Location, Result};
use crate::limits::{self, PipelineBudget, MAX_FAN_OUT, MAX_ITEM_INPUTS, MAX_VALUE_BYTES};
use crate::model::{
    task_output_uri, FanOut, Input, Output, Pipeline, PipelineKind, Task, TaskKind, TaskRole,
};
use crate::params::flags_from_args;

/// How deep templates may nest (and recursive templates expand) before expansion stops.
pub const MAX_DEPTH: usize = limits::MAX_TEMPLATE_DEPTH;

/// How many calls one workflow may expand into, so that templates nested wide and deep (each
/// level calling the next several times) cannot grow without bound.
pub const MAX_EXPANDED_CALLS: usize = limits::MAX_EXPANDED_TASKS;

/// GPU resource names counted into [`Task::gpus`].
const GPU_RESOURCES: &[&str] = &["nvidia.com/gpu", "amd.com/gpu"];

/// Flatten the workflow spec of `set` into a pipeline.
pub(crate) fn flatten(
    path: &Path,
    set: Arc<TemplateSet>,
    kind: PipelineKind,
    resolver: &mut Resolver<'_>,
) -> Result<Pipeline> {
    let spec = &set.spec;
    let parameters = parameter_values(&spec.arguments.parameters);
    let workflow_vars: Vars = parameters
        .iter()
        .map(|(name, value)| (format!("workflow.parameters.{name}"), value.clone()))
        .collect();
    let mut claims = BTreeMap::new();
    for volume in &spec.volumes {
        if let Some(claim) = &volume.persistent_volume_claim {
            claims.insert(volume.name.clone(), claim.claim_name.clone());
        }
    }
    for template in &spec.volume_claim_templates {
        if let Some(name) = &template.metadata.name {
            claims.insert(name.clone(), name.clone());
        }
    }
    let node_selector = spec
        .node_selector
        .iter()
        .map(|(k, v)| {
            let value = substitute(v.as_str(), &workflow_vars).map_err(|_| {
                too_long(
                    path,
                    set.document.find_line("nodeSelector:"),
                    format_args!("node selector `{k}`"),
                )
            })?;
            Ok((k.clone(), value))
        })
        .collect::<Result<_>>()?;
    let parallelism = spec
        .parallelism
        .as_ref()
        .and_then(|p| parse_count(p.as_str(), &workflow_vars));

    let entrypoint = match spec.entrypoint.as_deref().filter(|e| !e.is_empty()) {
        Some(entrypoint) => entrypoint.to_string(),
        // A single-template workflow without an entrypoint (KFP v1 emits a few): Argo would
        // ask for `--entrypoint`; the only template is the only sensible choice.
        None if set.templates.len() == 1 && set.templates.iter().all(|t| !t.name.is_empty()) => set
            .templates
            .first()
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        None => {
            return Err(Error::MissingEntrypoint {
                at: Location::at(path, Some(set.document.first_line)),
                pipeline: match &spec.workflow_template_ref {
                    Some(reference) => format!(
                        "{} (with workflowTemplateRef `{}`)",
                        set.name, reference.name
                    ),
                    None => set.name.clone(),
                },
            })
        }
    };

    let budget = PipelineBudget::new();
    let mut flattener = Flattener {
        path,
        budget: &budget,
        resolver,
        workflow_vars: workflow_vars.clone(),
        claims,
        node_selector,
        expanded: 0,
        lines: HashMap::new(),
    };
    let root = Scope {
        set: Arc::clone(&set),
        vars: workflow_vars.clone(),
        input_artifacts: BTreeMap::new(),
        condition: None,
        fan_out: None,
        parallelism: None,
        role: TaskRole::Main,
        stack: Vec::new(),
        claims: flattener.claims.clone(),
        items: None,
    };

    let mut tasks = Vec::new();
    let entry_call = Call {
        name: String::new(),
        template: Some(entrypoint.clone()),
        arguments: raw::Arguments {
            parameters: spec.arguments.parameters.clone(),
            artifacts: spec.arguments.artifacts.clone(),
        },
        ..Call::default()
    };
    let line = set
        .document
        .find_line("entrypoint:")
        .or(Some(set.document.first_line));
    flattener.expand(
        &entry_call,
        "entrypoint",
        &root,
        "",
        Vec::new(),
        line,
        &Siblings::new(),
        &mut tasks,
    )?;

    // Workflow-level exit handler and hooks.
    let main = || tasks.iter().filter(|t| t.role == TaskRole::Main);
    let depended: BTreeSet<&str> = main()
        .flat_map(|t| t.depends_on.iter().map(String::as_str))
        .collect();
    let main_sinks: Vec<String> = main()
        .filter(|t| !depended.contains(t.id.as_str()))
        .map(|t| t.id.clone())
        .collect();
    let mut handlers = Vec::new();
    if let Some(on_exit) = spec.on_exit.as_deref().filter(|t| !t.is_empty()) {
        let call = Call {
            name: "onExit".into(),
            template: Some(on_exit.to_string()),
            ..Call::default()
        };
        let scope = Scope {
            role: TaskRole::ExitHandler,
            ..root.clone()
        };
        let line = set.document.find_line("onExit:");
        flattener.expand(
            &call,
            "onExit",
            &scope,
            "",
            main_sinks.clone(),
            line,
            &Siblings::new(),
            &mut handlers,
        )?;
    }
    for (hook_name, hook) in &spec.hooks {
        let call = hook_call(&format!("hooks.{hook_name}"), hook);
        let exit = hook_name == "exit";
        let line = set.document.find_line(&format!("{hook_name}:"));
        let scope = hook_scope(&root, exit, hook, &workflow_vars).map_err(|_| {
            too_long(
                path,
                line,
                format_args!("the expression of hook `{hook_name}`"),
            )
        })?;
        let incoming = if exit { main_sinks.clone() } else { Vec::new() };
        flattener.expand(
            &call,
            &call.name.clone(),
            &scope,
            "",
            incoming,
            line,
            &Siblings::new(),
            &mut handlers,
        )?;
    }
    tasks.append(&mut handlers);

    Ok(Pipeline {
        name: set.name.clone(),
        kind,
        schedules: Vec::new(),
        timezone: None,
        source: path.display().to_string(),
        line: Some(set.document.first_line),
        parameters,
        parallelism,
        tasks,
    })
}

fn hook_call(name: &str, hook: &raw::LifecycleHook) -> Call {
    Call {
        name: name.to_string(),
        template: hook.template.clone(),
        template_ref: hook.template_ref.clone(),
        arguments: hook.arguments.clone(),
        ..Call::default()
    }
}

/// The scope a lifecycle hook runs in: its caller's, as an exit handler (`exit`) or a hook
/// whose expression (placeholders substituted) is its condition.
fn hook_scope(
    base: &Scope,
    exit: bool,
    hook: &raw::LifecycleHook,
    vars: &Vars,
) -> std::result::Result<Scope, TooLong> {
    let mut scope = base.clone();
    scope.role = if exit {
        TaskRole::ExitHandler
    } else {
        TaskRole::Hook
    };
    if let Some(expression) = &hook.expression {
        scope.condition = Some(substitute(expression, vars)?);
    }
    Ok(scope)
}

/// [`substitute`], bounded: the result by [`MAX_VALUE_BYTES`], and together with every other
/// value substituted by the pipeline's budget.
fn substitute_within(
    budget: &PipelineBudget,
    path: &Path,
    line: Option<usize>,
    text: &str,
    vars: &Vars,
    what: std::fmt::Arguments<'_>,
) -> Result<String> {
    let value = substitute(text, vars).map_err(|_| too_long(path, line, what))?;
    budget.charge(value.len(), || Location::at(path, line))?;
    Ok(value)
}

/// The error for a value that placeholder substitution makes longer than [`MAX_VALUE_BYTES`].
fn too_long(path: &Path, line: Option<usize>, what: std::fmt::Arguments<'_>) -> Error {
    Error::LimitExceeded {
        at: Location::at(path, line),
        what: format!("{what} is too long after placeholder substitution"),
        limit: format!("{MAX_VALUE_BYTES} bytes per value"),
    }
}

/// What flows down from a caller into the template it calls.
#[derive(Debug, Clone)]
struct Scope {
    /// The document whose templates plain `template:` names resolve against.
    set: Arc<TemplateSet>,
    /// Placeholder values: `workflow.parameters.*`, `inputs.parameters.*`, uniform `item.*`.
    vars: Vars,
    /// Sources of the enclosing template's input artifacts (`{{inputs.artifacts.x}}`).
    input_artifacts: BTreeMap<String, Option<String>>,
    condition: Option<String>,
    fan_out: Option<FanOut>,
    parallelism: Option<u32>,
    role: TaskRole,
    /// Templates being expanded, outermost first, as `document/template`.
    stack: Vec<String>,
    /// Volume name → PVC claim name.
    claims: BTreeMap<String, String>,
    /// The `{{item…}}` values of each item of the one loop the tasks below run in, when that
    /// loop's items are known and it is not nested in another loop (whose `{{item}}` a literal
    /// `{{item}}` could equally mean): inputs that name the item are listed once per item.
    items: Option<Arc<Vec<Vars>>>,
}

/// What a DAG task / step offers its siblings: its output artifacts by name.
#[derive(Debug, Clone, Default)]
struct Produced {
    /// Output artifact name → where it comes from (`task://…` or a location).
    outputs: BTreeMap<String, Option<String>>,
    /// The executable task's id, when the call expanded to exactly one leaf.
    leaf: Option<String>,
}

type Siblings = BTreeMap<String, Produced>;

/// The result of expanding one call.
#[derive(Debug, Clone, Default)]
struct Expansion {
    /// Ids of its last executable tasks (or the call's own `incoming` when it expanded to
    /// nothing), which dependents wait for.
    sinks: Vec<String>,
    produced: Produced,
}

struct Flattener<'p, 'r, 'o> {
    path: &'p Path,
    /// What is left of [`limits::MAX_PIPELINE_BYTES`], charged with every substituted value
    /// and every task emitted.
    budget: &'p PipelineBudget,
    resolver: &'r mut Resolver<'o>,
    workflow_vars: Vars,
    claims: BTreeMap<String, String>,
    node_selector: BTreeMap<String, String>,
    /// Calls expanded so far, checked against [`MAX_EXPANDED_CALLS`].
    expanded: usize,
    /// Line look-ups by (document, search start, name): a template called many times is
    /// searched for once.
    lines: HashMap<(usize, usize, String), Option<usize>>,
}

/// A template resolved for a call, with the document its own references resolve against.
struct Resolved {
    set: Arc<TemplateSet>,
    /// The document that declares the template (`set` itself, or for a Workflow merged with
    /// its `workflowTemplateRef`, possibly the referenced WorkflowTemplate), for line look-ups.
    origin: Arc<TemplateSet>,
    template: Arc<Template>,
    /// Line of the template's `- name:` entry, when it is in the file being parsed.
    line: Option<usize>,
}

impl Flattener<'_, '_, '_> {
    fn at(&self, line: Option<usize>) -> Location {
        Location::at(self.path, line)
    }

    /// Line of the `- name:` entry of a task (at or after `after`) or, without `after`, of a
    /// template, in `set`'s document; `None` unless that document is in the file being parsed.
    fn line_of(
        &mut self,
        set: &Arc<TemplateSet>,
        name: &str,
        after: Option<usize>,
    ) -> Option<usize> {
        if set.path != self.path {
            return None;
        }
        let key = (
            Arc::as_ptr(set) as usize,
            after.map_or(usize::MAX, |a| a),
            name.to_string(),
        );
        if let Some(line) = self.lines.get(&key) {
            return *line;
        }
        let line = match after {
            Some(after) => task_line(&set.document, name, after),
            None => set.template_line(name),
        };
        self.lines.insert(key, line);
        line
    }

    /// The document declaring template `name` of `set` (following `workflowTemplateRef`
    /// bases), with the line of its `- name:` entry when that is in the file being parsed.
    fn locate_template(
        &mut self,
        set: &Arc<TemplateSet>,
        name: &str,
    ) -> (Arc<TemplateSet>, Option<usize>) {
        let mut current = Arc::clone(set);
        for _ in 0..MAX_DEPTH {
            if let Some(line) = self.line_of(&current, name, None) {
                return (current, Some(line));
            }
            match current.base.clone() {
                Some(base) => current = base,
                None => break,
            }
        }
        (Arc::clone(set), None)
    }

    /// Line in the file being parsed, or `None` for a template from the library.
    fn local_line(&self, set: &TemplateSet, line: Option<usize>) -> Option<usize> {
        (set.path == self.path).then_some(line).flatten()
    }

    fn resolve(
        &mut self,
        call: &Call,
        scope: &Scope,
        referenced_by: &str,
        line: Option<usize>,
    ) -> Result<Resolved> {
        if let Some(inline) = &call.inline {
            let mut template = (**inline).clone();
            if template.name.is_empty() {
                template.name = call.name.clone();
            }
            return Ok(Resolved {
                set: Arc::clone(&scope.set),
                origin: Arc::clone(&scope.set),
                template: Arc::new(template),
                line,
            });
        }
        if let Some(reference) = &call.template_ref {
            let cluster = reference
                .cluster_scope
                .as_ref()
                .is_some_and(|c| c.as_str() == "true");
            let too_long = |_| {
                too_long(
                    self.path,
                    line,
                    format_args!("the templateRef of `{referenced_by}`"),
                )
            };
            let name = substitute(&reference.name, &scope.vars).map_err(too_long)?;
            let template_name = substitute(&reference.template, &scope.vars).map_err(too_long)?;
            let set = self
                .resolver
                .find(&name, cluster, Some(&template_name))
                .ok_or_else(|| Error::UnknownTemplate {
                    at: self.at(line),
                    template: format!("{name}/{template_name}"),
                    referenced_by: referenced_by.to_string(),
                })?;
            let template =
                set.template(&template_name)
                    .cloned()
                    .ok_or_else(|| Error::UnknownTemplate {
                        at: self.at(line),
                        template: format!("{name}/{template_name}"),
                        referenced_by: referenced_by.to_string(),
                    })?;
            let (origin, template_line) = self.locate_template(&set, &template_name);
            return Ok(Resolved {
                set,
                origin,
                template,
                line: template_line,
            });
        }
        let name = match call.template.as_deref() {
            Some(template) => substitute(template, &scope.vars).map_err(|_| {
                too_long(
                    self.path,
                    line,
                    format_args!("the template of `{referenced_by}`"),
                )
            })?,
            None => String::new(),
        };
        if name.is_empty() {
            return Err(Error::Invalid {
                at: self.at(line),
                what: format!("task `{referenced_by}`"),
                message: "it names no `template`, `templateRef` or `inline` template".into(),
            });
        }
        let template =
            scope
                .set
                .template(&name)
                .cloned()
                .ok_or_else(|| Error::UnknownTemplate {
                    at: self.at(line),
                    template: name.clone(),
                    referenced_by: referenced_by.to_string(),
                })?;
        let (origin, template_line) = self.locate_template(&scope.set, &name);
        Ok(Resolved {
            set: Arc::clone(&scope.set),
            origin,
            template,
            line: template_line,
        })
    }

    /// Expand one call. `name` is its id segment (empty for the entrypoint), `prefix` the id of
    /// the enclosing nested task, `incoming` what its source tasks wait for.
    #[allow(clippy::too_many_arguments)]
    fn expand(
        &mut self,
        call: &Call,
        referenced_by: &str,
        scope: &Scope,
        prefix: &str,
        incoming: Vec<String>,
        line: Option<usize>,
        siblings: &Siblings,
        out: &mut Vec<Task>,
    ) -> Result<Expansion> {
        self.expanded += 1;
        if self.expanded > MAX_EXPANDED_CALLS {
            return Err(Error::Invalid {
                at: self.at(line),
                what: format!("task `{referenced_by}`"),
                message: format!("the workflow expands to more than {MAX_EXPANDED_CALLS} tasks"),
            });
        }
        let resolved = self.resolve(call, scope, referenced_by, line)?;
        let template = &resolved.template;
        let id = join(
            prefix,
            if call.name.is_empty() {
                &template.name
            } else {
                &call.name
            },
        );

        // Loop: fan-out and the item values that are the same for every item.
        let mut caller_vars = scope.vars.clone();
        // Instances of this call's own loop: `Some(None)` when known only at run time.
        let (loop_count, loop_kind) = if let Some(items) = &call.with_items {
            caller_vars.extend(uniform_item_vars(items));
            (Some(Some(items.len() as i128)), "withItems")
        } else if call.with_param.is_some() {
            (Some(None), "withParam")
        } else if let Some(sequence) = &call.with_sequence {
            (
                Some(sequence_count(sequence, &scope.vars, &mut caller_vars)),
                "withSequence",
            )
        } else {
            (None, "")
        };
        let fan_out = match (scope.fan_out, loop_count) {
            (outer, None) => outer,
            (Some(FanOut::Dynamic), Some(_)) | (_, Some(None)) => Some(FanOut::Dynamic),
            (outer, Some(Some(count))) => {
                let outer = match outer {
                    Some(FanOut::Count(n)) => i128::from(n),
                    _ => 1,
                };
                let total = count.saturating_mul(outer);
                match u32::try_from(total) {
                    Ok(n) if total <= i128::from(MAX_FAN_OUT) => Some(FanOut::Count(n)),
                    _ => {
                        let nested = if outer > 1 {
                            format!(", times {outer} of the loops it is nested in")
                        } else {
                            String::new()
                        };
                        return Err(Error::LimitExceeded {
                            at: self.at(line),
                            what: format!(
                                "`{referenced_by}` fans out to {count} instances of its \
                                 {loop_kind}{nested}"
                            ),
                            limit: format!("{MAX_FAN_OUT} known instances per task"),
                        });
                    }
                }
            }
        };

        // The loop whose `{{item}}` the tasks below mean: this call's own, when it is the only
        // one; an enclosing loop's, when this call has none.
        let items = match loop_count {
            None => scope.items.clone(),
            Some(_) if scope.fan_out.is_some() => None,
            Some(_) => known_items(call, &scope.vars).map(Arc::new),
        };

        let path = self.path;
        let budget = self.budget;
        let too_long = |what: std::fmt::Arguments<'_>| too_long(path, line, what);
        let substitute = |text: &str, vars: &Vars, what: std::fmt::Arguments<'_>| {
            substitute_within(budget, path, line, text, vars, what)
        };
        let when = match &call.when {
            Some(when) => Some(substitute(
                when.as_str(),
                &caller_vars,
                format_args!("the `when` of `{referenced_by}`"),
            )?),
            None => None,
        };
        let condition = match when {
            Some(when) if !when.trim().is_empty() => Some(match &scope.condition {
                Some(outer) => format!("{outer} && {when}"),
                None => when,
            }),
            _ => scope.condition.clone(),
        };

        // Arguments, evaluated in the caller's scope.
        let mut argument_values: BTreeMap<String, String> = BTreeMap::new();
        for parameter in &call.arguments.parameters {
            let Some(value) = parameter.value.as_ref().or(parameter.default.as_ref()) else {
                continue;
            };
            let value = substitute(
                value.as_str(),
                &caller_vars,
                format_args!("argument `{}` of `{referenced_by}`", parameter.name),
            )?;
            argument_values.insert(parameter.name.clone(), value);
        }
        let mut argument_artifacts: BTreeMap<String, Option<String>> = BTreeMap::new();
        for artifact in &call.arguments.artifacts {
            let source =
                artifact_source(artifact, &caller_vars, scope, siblings).map_err(|_| {
                    too_long(format_args!(
                        "artifact argument `{}` of `{referenced_by}`",
                        artifact.name
                    ))
                })?;
            argument_artifacts.insert(artifact.name.clone(), source);
        }

        // The callee's scope.
        let mut vars = self.workflow_vars.clone();
        let mut input_parameters = BTreeMap::new();
        for parameter in &template.inputs.parameters {
            let value = match argument_values.get(&parameter.name) {
                Some(value) => Some(value.clone()),
                None => match parameter.value.as_ref().or(parameter.default.as_ref()) {
                    Some(value) => Some(substitute(
                        value.as_str(),
                        &vars,
                        format_args!("input `{}` of template `{}`", parameter.name, template.name),
                    )?),
                    None => None,
                },
            };
            if let Some(value) = value {
                input_parameters.insert(parameter.name.clone(), value);
            }
        }
        for (name, value) in &input_parameters {
            vars.insert(format!("inputs.parameters.{name}"), value.clone());
        }
        let mut input_artifacts = BTreeMap::new();
        for artifact in &template.inputs.artifacts {
            let source = match argument_artifacts.get(&artifact.name) {
                Some(source) => source.clone(),
                None => {
                    artifact_source(artifact, &vars, scope, &Siblings::new()).map_err(|_| {
                        too_long(format_args!(
                            "input artifact `{}` of template `{}`",
                            artifact.name, template.name
                        ))
                    })?
                }
            };
            input_artifacts.insert(artifact.name.clone(), source);
        }
        let mut claims = scope.claims.clone();
        for volume in &template.volumes {
            if let Some(claim) = &volume.persistent_volume_claim {
                let claim = substitute(
                    &claim.claim_name,
                    &vars,
                    format_args!(
                        "the claim of volume `{}` of template `{}`",
                        volume.name, template.name
                    ),
                )?;
                claims.insert(volume.name.clone(), claim);
            }
        }

        // Recursion and depth guards.
        let key = format!("{}/{}", resolved.set.name, template.name);
        let recursive = scope.stack.contains(&key);
        let is_nested = template.dag.is_some() || template.steps.is_some();
        if is_nested && (recursive || scope.stack.len() >= MAX_DEPTH) {
            let guarded = call.when.is_some() || scope.condition.is_some();
            if !guarded || scope.stack.len() >= MAX_DEPTH {
                let template = match scope.stack.iter().position(|k| *k == key) {
                    Some(first) if recursive => {
                        let chain: Vec<&str> = scope
                            .stack
                            .iter()
                            .skip(first)
                            .chain(std::iter::once(&key))
                            .map(|k| k.rsplit('/').next().unwrap_or(k))
                            .collect();
                        format!(
                            "{}, which calls itself with no `when` guard: {}",
                            template.name,
                            chain.join(" -> ")
                        )
                    }
                    _ => template.name.clone(),
                };
                return Err(Error::TooDeep {
                    at: self.at(line.or(resolved.line)),
                    template,
                    limit: MAX_DEPTH,
                });
            }
            // A recursive call guarded by `when`: one opaque task stands for the recursion.
            let mut task = Task::new(id.clone(), template.name.clone(), TaskKind::Other);
            task.depends_on = incoming;
            task.fan_out = fan_out;
            task.condition = condition;
            task.params = input_parameters;
            task.parallelism = scope.parallelism;
            task.role = scope.role;
            task.line = self.local_line(&scope.set, line);
            self.budget
                .charge(task.approximate_bytes(), || Location::at(path, line))?;
            out.push(task);
            return Ok(Expansion {
                sinks: vec![id.clone()],
                produced: Produced {
                    outputs: BTreeMap::new(),
                    leaf: Some(id),
                },
            });
        }

        let mut stack = scope.stack.clone();
        stack.push(key);
        let inner = Scope {
            set: Arc::clone(&resolved.set),
            vars,
            input_artifacts,
            condition,
            fan_out,
            parallelism: template
                .parallelism
                .as_ref()
                .and_then(|p| parse_count(p.as_str(), &scope.vars))
                .or(scope.parallelism),
            role: scope.role,
            stack,
            claims,
            items,
        };
        let children_prefix = if call.name.is_empty() {
            prefix.to_string()
        } else {
            id.clone()
        };

        let start = out.len();
        let mut expansion = if let Some(dag) = &template.dag {
            self.expand_dag(
                &dag.tasks,
                &resolved,
                &inner,
                &children_prefix,
                incoming.clone(),
                out,
            )?
        } else if let Some(groups) = &template.steps {
            self.expand_steps(
                groups,
                &resolved,
                &inner,
                &children_prefix,
                incoming.clone(),
                out,
            )?
        } else {
            let task = self.leaf(
                call,
                &resolved,
                &inner,
                &id,
                incoming.clone(),
                line,
                input_parameters,
            )?;
            let outputs = task
                .outputs
                .iter()
                .map(|o| (o.name.clone(), Some(task_output_uri(&task.id, &o.name))))
                .collect();
            self.budget
                .charge(task.approximate_bytes(), || Location::at(path, line))?;
            out.push(task);
            Expansion {
                sinks: vec![id.clone()],
                produced: Produced {
                    outputs,
                    leaf: Some(id.clone()),
                },
            }
        };
        if out.len() == start {
            expansion.sinks = incoming.clone();
        }

        // Task-level exit handler and lifecycle hooks.
        if let Some(on_exit) = call.on_exit.as_deref().filter(|t| !t.is_empty()) {
            let handler = Call {
                name: "onExit".into(),
                template: Some(on_exit.to_string()),
                ..Call::default()
            };
            let handler_scope = Scope {
                role: TaskRole::ExitHandler,
                ..scope.clone()
            };
            self.expand(
                &handler,
                &format!("{id}.onExit"),
                &handler_scope,
                &id,
                expansion.sinks.clone(),
                line,
                siblings,
                out,
            )?;
        }
        for (hook_name, hook) in &call.hooks {
            let handler = hook_call(&format!("hooks.{hook_name}"), hook);
            let exit = hook_name == "exit";
            let handler_scope = hook_scope(scope, exit, hook, &caller_vars).map_err(|_| {
                too_long(format_args!(
                    "the expression of hook `{hook_name}` of `{id}`"
                ))
            })?;
            let mut hook_siblings = siblings.clone();
            if !call.name.is_empty() {
                hook_siblings.insert(call.name.clone(), expansion.produced.clone());
            }
            let hook_incoming = if exit {
                expansion.sinks.clone()
            } else {
                incoming.clone()
            };
            self.expand(
                &handler,
                &format!("{id}.hooks.{hook_name}"),
                &handler_scope,
                &id,
                hook_incoming,
                line,
                &hook_siblings,
                out,
            )?;
        }
        Ok(expansion)
    }

    fn expand_dag(
        &mut self,
        calls: &[Call],
        resolved: &Resolved,
        scope: &Scope,
        prefix: &str,
        incoming: Vec<String>,
        out: &mut Vec<Task>,
    ) -> Result<Expansion> {
        let template_line = resolved.line;
        let doc = &resolved.origin.document;
        let local = resolved.origin.path == self.path;
        let set = Arc::clone(&resolved.origin);
        let lines: Vec<Option<usize>> = calls
            .iter()
            .map(|c| self.line_of(&set, &c.name, Some(template_line.unwrap_or(0))))
            .collect();
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, call) in calls.iter().enumerate() {
            let line = lines.get(i).copied().flatten();
            if call.name.is_empty() {
                return Err(Error::Invalid {
                    at: self.at(line.or(template_line)),
                    what: format!("dag template `{}`", resolved.template.name),
                    message: "a task has no `name`".into(),
                });
            }
            if index.insert(call.name.as_str(), i).is_some() {
                let line = if local {
                    task_line(doc, &call.name, line.map_or(0, |l| l + 1))
                } else {
                    None
                };
                return Err(Error::DuplicateTask {
                    at: self.at(line.or(template_line)),
                    task: join(prefix, &call.name),
                });
            }
        }
        // Dependencies within the DAG, by index.
        let mut dependencies: Vec<Vec<usize>> = Vec::with_capacity(calls.len());
        for (i, call) in calls.iter().enumerate() {
            let line = lines.get(i).copied().flatten();
            let mut names: Vec<String> = call.dependencies.clone();
            if let Some(expression) = call.depends.as_deref().filter(|d| !d.trim().is_empty()) {
                let parsed = depends::dependencies(expression).map_err(|e| {
                    let at = if local {
                        doc.find_line_after("depends:", line.unwrap_or(0))
                    } else {
                        None
                    };
                    Error::DependsExpression {
                        at: self.at(at.or(line)),
                        expression: expression.to_string(),
                        message: e.to_string(),
                    }
                })?;
                names.extend(parsed);
            }
            // Sets, not `Vec::contains`: a task may list thousands of dependencies.
            let mut indices = Vec::new();
            let mut seen_indices = HashSet::new();
            for name in names {
                let Some(&j) = index.get(name.as_str()) else {
                    return Err(Error::UnknownDependency {
                        at: self.at(line),
                        task: join(prefix, &call.name),
                        dependency: name,
                    });
                };
                if seen_indices.insert(j) {
                    indices.push(j);
                }
            }
            dependencies.push(indices);
        }
        let order =
            crate::order::dependency_order(&dependencies).map_err(|cycle| Error::Cycle {
                at: self.at(cycle.first().and_then(|&i| lines.get(i).copied().flatten())),
                cycle: cycle
                    .iter()
                    .filter_map(|&i| calls.get(i))
                    .map(|c| join(prefix, &c.name))
                    .collect(),
            })?;

        // Tasks are expanded in dependency order but emitted in declaration order: straight
        // into `out` when the two agree (the usual case), else into `pending` and reordered.
        let in_declaration_order = order.iter().enumerate().all(|(k, &i)| k == i);
        if in_declaration_order {
            out.reserve(calls.len());
        }
        let mut sinks_of: Vec<Vec<String>> = vec![Vec::new(); calls.len()];
        let mut ranges: Vec<std::ops::Range<usize>> = vec![0..0; calls.len()];
        let mut pending: Vec<Task> = Vec::new();
        let mut siblings = Siblings::new();
        for i in order {
            let (Some(call), Some(deps)) = (calls.get(i), dependencies.get(i)) else {
                continue;
            };
            let task_incoming = if deps.is_empty() {
                incoming.clone()
            } else {
                let mut sinks = Vec::new();
                let mut seen: HashSet<&str> = HashSet::new();
                for &j in deps {
                    for sink in sinks_of.get(j).map(Vec::as_slice).unwrap_or(&[]) {
                        if seen.insert(sink) {
                            sinks.push(sink.clone());
                        }
                    }
                }
                sinks
            };
            let line = lines.get(i).copied().flatten();
            let referenced_by = join(prefix, &call.name);
            let target = if in_declaration_order {
                &mut *out
            } else {
                &mut pending
            };
            let start = target.len();
            let expansion = self.expand(
                call,
                &referenced_by,
                scope,
                prefix,
                task_incoming,
                line,
                &siblings,
                target,
            )?;
            if let Some(range) = ranges.get_mut(i) {
                *range = start..target.len();
            }
            if let Some(own) = sinks_of.get_mut(i) {
                *own = expansion.sinks;
            }
            siblings.insert(call.name.clone(), expansion.produced);
        }
        if !in_declaration_order {
            out.reserve(pending.len());
            let mut pending: Vec<Option<Task>> = pending.into_iter().map(Some).collect();
            for range in ranges {
                for task in pending.get_mut(range).into_iter().flatten() {
                    if let Some(task) = task.take() {
                        out.push(task);
                    }
                }
            }
        }
        // Sinks: the sinks of DAG tasks no other DAG task depends on.
        let depended: BTreeSet<usize> = dependencies.iter().flatten().copied().collect();
        let mut sinks = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, own) in sinks_of.iter().enumerate() {
            if depended.contains(&i) {
                continue;
            }
            for sink in own {
                if seen.insert(sink.as_str()) {
                    sinks.push(sink.clone());
                }
            }
        }
        let produced = template_outputs(&resolved.template, scope, &siblings)
            .map_err(|_| self.outputs_too_long(resolved))?;
        Ok(Expansion { sinks, produced })
    }

    fn expand_steps(
        &mut self,
        groups: &[raw::StepGroup],
        resolved: &Resolved,
        scope: &Scope,
        prefix: &str,
        incoming: Vec<String>,
        out: &mut Vec<Task>,
    ) -> Result<Expansion> {
        let template_line = resolved.line;
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut siblings = Siblings::new();
        let mut previous = incoming;
        let mut search_from = template_line.unwrap_or(0);
        let set = Arc::clone(&resolved.origin);
        for group in groups {
            let mut group_sinks: Vec<String> = Vec::new();
            let mut group_seen: HashSet<String> = HashSet::new();
            for call in &group.0 {
                let line = self.line_of(&set, &call.name, Some(search_from));
                if let Some(line) = line {
                    search_from = line + 1;
                }
                if call.name.is_empty() {
                    return Err(Error::Invalid {
                        at: self.at(line.or(template_line)),
                        what: format!("steps template `{}`", resolved.template.name),
                        message: "a step has no `name`".into(),
                    });
                }
                if !seen.insert(call.name.as_str()) {
                    return Err(Error::DuplicateTask {
                        at: self.at(line.or(template_line)),
                        task: join(prefix, &call.name),
                    });
                }
                let referenced_by = join(prefix, &call.name);
                let expansion = self.expand(
                    call,
                    &referenced_by,
                    scope,
                    prefix,
                    previous.clone(),
                    line,
                    &siblings,
                    out,
                )?;
                for sink in &expansion.sinks {
                    if group_seen.insert(sink.clone()) {
                        group_sinks.push(sink.clone());
                    }
                }
                siblings.insert(call.name.clone(), expansion.produced);
            }
            if !group.0.is_empty() {
                previous = group_sinks;
            }
        }
        let produced = template_outputs(&resolved.template, scope, &siblings)
            .map_err(|_| self.outputs_too_long(resolved))?;
        Ok(Expansion {
            sinks: previous,
            produced,
        })
    }

    fn outputs_too_long(&self, resolved: &Resolved) -> Error {
        too_long(
            self.path,
            self.local_line(&resolved.origin, resolved.line),
            format_args!(
                "an output artifact of template `{}`",
                resolved.template.name
            ),
        )
    }

    /// `inputs` with each one whose source names the loop's item (`{{item}}`, `{{item.x}}`)
    /// replaced by one input per item, its source and path substituted with that item's
    /// values (at most [`MAX_ITEM_INPUTS`], see [`known_items`]). An input is kept as it is
    /// when any item leaves a placeholder in its source.
    fn inputs_per_item(
        &self,
        inputs: Vec<Input>,
        items: &[Vars],
        line: Option<usize>,
    ) -> Result<Vec<Input>> {
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let names_item = input
                .source
                .as_deref()
                .is_some_and(|s| s.contains("{{item"));
            if !names_item {
                out.push(input);
                continue;
            }
            let mut per_item = Vec::with_capacity(items.len());
            for (index, vars) in items.iter().enumerate() {
                let item = |text: Option<&str>, what: &str| {
                    text.map(|text| {
                        let what =
                            format_args!("{what} of input `{}` of loop item {index}", input.name);
                        substitute_within(self.budget, self.path, line, text, vars, what)
                    })
                    .transpose()
                };
                per_item.push(Input {
                    name: input.name.clone(),
                    source: item(input.source.as_deref(), "the source")?,
                    path: item(input.path.as_deref(), "the path")?,
                    item: u32::try_from(index).ok(),
                });
            }
            let resolved = per_item
                .iter()
                .all(|i| i.source.as_deref().is_some_and(|s| !s.contains("{{item")));
            if resolved {
                out.extend(per_item);
            } else {
                out.push(input);
            }
        }
        Ok(out)
    }

    /// One executable task.
    #[allow(clippy::too_many_arguments)]
    fn leaf(
        &mut self,
        call: &Call,
        resolved: &Resolved,
        scope: &Scope,
        id: &str,
        incoming: Vec<String>,
        line: Option<usize>,
        input_parameters: BTreeMap<String, String>,
    ) -> Result<Task> {
        let template = &resolved.template;
        let vars = &scope.vars;
        let at_template = || self.at(resolved.line.or(line));
        let path = self.path;
        let budget = self.budget;
        let s = |text: &str, what: std::fmt::Arguments<'_>| {
            substitute_within(budget, path, resolved.line.or(line), text, vars, what)
        };
        let (kind, containers, set_mounts): (TaskKind, Vec<&raw::Container>, &[raw::VolumeMount]) =
            if let Some(container) = &template.container {
                (TaskKind::Container, vec![container], &[])
            } else if let Some(script) = &template.script {
                if script.source.is_none() {
                    return Err(Error::Invalid {
                        at: at_template(),
                        what: format!("script template `{}`", template.name),
                        message: "`script` has no `source`".into(),
                    });
                }
                (TaskKind::Script, vec![script], &[])
            } else if let Some(set) = &template.container_set {
                (
                    TaskKind::Other,
                    set.containers.iter().collect(),
                    set.volume_mounts.as_slice(),
                )
            } else if template.resource.is_some() {
                (TaskKind::Resource, Vec::new(), &[])
            } else if template.suspend.is_some() {
                (TaskKind::Suspend, Vec::new(), &[])
            } else if template.http.is_some() {
                (TaskKind::Http, Vec::new(), &[])
            } else if template.plugin.is_some() {
                (TaskKind::Plugin, Vec::new(), &[])
            } else if template.data.is_some() {
                (TaskKind::Other, Vec::new(), &[])
            } else {
                return Err(Error::Invalid {
                    at: at_template(),
                    what: format!("template `{}`", template.name),
                    message: "it has no type (container, script, resource, suspend, http, plugin, containerSet, data, dag or steps)".into(),
                });
            };

        let mut task = Task::new(id, template.name.clone(), kind);
        task.depends_on = incoming;
        task.fan_out = scope.fan_out;
        task.condition = scope.condition.clone();
        task.parallelism = scope.parallelism;
        task.role = scope.role;
        // The entrypoint's own task (a single-template workflow) is declared by its template.
        let declared = if call.name.is_empty() {
            resolved.line
        } else {
            line
        };
        task.line = self
            .local_line(&scope.set, declared)
            .or(self.local_line(&resolved.set, resolved.line));
        task.retries = call
            .retry_strategy
            .as_ref()
            .or(template.retry_strategy.as_ref())
            .and_then(|r| r.limit.as_ref())
            .and_then(|limit| parse_count(limit.as_str(), vars))
            .unwrap_or(0);
        task.image = match containers.iter().find_map(|c| c.image.as_deref()) {
            Some(image) => Some(s(
                image,
                format_args!("the image of template `{}`", template.name),
            )?),
            None => None,
        };
        task.gpus = containers
            .iter()
            .map(|c| container_gpus(c, vars))
            .fold(0u32, u32::saturating_add);

        let mut node_selector = self.node_selector.clone();
        for (key, value) in &template.node_selector {
            let value = s(
                value.as_str(),
                format_args!("node selector `{key}` of template `{}`", template.name),
            )?;
            node_selector.insert(key.clone(), value);
        }
        task.node_selector = node_selector;

        let mut params = input_parameters;
        for container in &containers {
            let words: Vec<String> = container
                .command
                .iter()
                .chain(&container.args)
                .map(|w| {
                    s(
                        w.as_str(),
                        format_args!("an argument of template `{}`", template.name),
                    )
                })
                .collect::<Result<_>>()?;
            params.extend(flags_from_args(&words));
        }
        task.params = params;

        // Inputs: declared artifacts, then PVC mounts.
        for artifact in &template.inputs.artifacts {
            let source = scope.input_artifacts.get(&artifact.name).cloned().flatten();
            let what = || format!("the path of input `{}`", artifact.name);
            task.inputs.push(Input {
                item: None,
                name: artifact.name.clone(),
                source,
                path: match artifact.path.as_deref() {
                    Some(p) => Some(s(p, format_args!("{}", what()))?),
                    None => None,
                },
            });
        }
        if let Some(items) = &scope.items {
            task.inputs = self.inputs_per_item(std::mem::take(&mut task.inputs), items, line)?;
        }
        let mut mounts: Vec<(String, String)> = Vec::new();
        for mount in containers
            .iter()
            .flat_map(|c| c.volume_mounts.iter())
            .chain(set_mounts)
        {
            if let Some(claim) = scope.claims.get(&mount.name) {
                let mount_path = s(
                    &mount.mount_path,
                    format_args!("the mount path of volume `{}`", mount.name),
                )?;
                mounts.push((claim.clone(), mount_path));
            }
        }
        let mount_names: Vec<&str> = containers
            .iter()
            .flat_map(|c| c.volume_mounts.iter())
            .chain(set_mounts)
            .filter(|m| scope.claims.contains_key(&m.name))
            .map(|m| m.name.as_str())
            .collect();
        for ((claim, mount_path), name) in mounts.iter().zip(&mount_names) {
            if task.inputs.iter().any(|i| i.name == *name) {
                continue;
            }
            task.inputs.push(Input {
                item: None,
                name: name.to_string(),
                source: Some(pvc_uri(claim, mount_path)),
                path: Some(mount_path.clone()),
            });
        }

        // Outputs: artifacts, plus output parameters written under a PVC mount (KFP v1
        // `file_outputs` on volumes).
        for artifact in &template.outputs.artifacts {
            let what = || format!("output `{}` of template `{}`", artifact.name, template.name);
            let path = match artifact.path.as_deref() {
                Some(p) => Some(s(p, format_args!("{}", what()))?),
                None => None,
            };
            let location = artifacts::location(artifact, vars)
                .map_err(|_| {
                    too_long(
                        self.path,
                        resolved.line.or(line),
                        format_args!("{}", what()),
                    )
                })?
                .or_else(|| path.as_deref().and_then(|p| pvc_location(&mounts, p)));
            task.outputs.push(Output {
                name: artifact.name.clone(),
                location,
                path,
            });
        }
        for parameter in &template.outputs.parameters {
            let Some(path) = parameter
                .value_from
                .as_ref()
                .and_then(|v| v.path.as_deref())
            else {
                continue;
            };
            let path = s(path, format_args!("output parameter `{}`", parameter.name))?;
            if let Some(location) = pvc_location(&mounts, &path) {
                if !task.outputs.iter().any(|o| o.name == parameter.name) {
                    task.outputs.push(Output {
                        name: parameter.name.clone(),
                        location: Some(location),
                        path: Some(path),
                    });
                }
            }
        }
        Ok(task)
    }
}

/// `pvc://<claim>/<path without leading slash>`.
fn pvc_uri(claim: &str, path: &str) -> String {
    format!("pvc://{claim}/{}", path.trim_start_matches('/'))
}

/// The PVC location of a file `path`, when it lies under one of the `(claim, mount path)`s.
fn pvc_location(mounts: &[(String, String)], path: &str) -> Option<String> {
    mounts
        .iter()
        .filter(|(_, mount)| {
            let mount = mount.trim_end_matches('/');
            !mount.is_empty()
                && (path == mount
                    || path
                        .strip_prefix(mount)
                        .is_some_and(|rest| rest.starts_with('/')))
        })
        .max_by_key(|(_, mount)| mount.len())
        .map(|(claim, _)| pvc_uri(claim, path))
}

/// A nested template's output artifacts, resolved through its `from` references.
fn template_outputs(
    template: &Template,
    scope: &Scope,
    siblings: &Siblings,
) -> std::result::Result<Produced, TooLong> {
    let mut outputs = BTreeMap::new();
    for artifact in &template.outputs.artifacts {
        let source = artifact_source(artifact, &scope.vars, scope, siblings)?;
        outputs.insert(artifact.name.clone(), source);
    }
    Ok(Produced {
        outputs,
        leaf: None,
    })
}

/// Where an artifact argument (or a declared input / nested output) comes from.
fn artifact_source(
    artifact: &raw::Artifact,
    vars: &Vars,
    scope: &Scope,
    siblings: &Siblings,
) -> std::result::Result<Option<String>, TooLong> {
    let reference = match (&artifact.from, &artifact.from_expression) {
        (Some(from), _) => artifacts::parse_from(from),
        (None, Some(expression)) => artifacts::parse_from_expression(expression),
        (None, None) => return artifacts::location(artifact, vars),
    };
    Ok(match reference {
        None => None,
        Some(ArtifactRef::Input { artifact }) => {
            scope.input_artifacts.get(&artifact).cloned().flatten()
        }
        Some(ArtifactRef::Sibling { task, artifact }) => match siblings.get(&task) {
            None => None,
            Some(produced) => match produced.outputs.get(&artifact) {
                Some(source) => source.clone(),
                None => produced
                    .leaf
                    .as_deref()
                    .map(|leaf| task_output_uri(leaf, &artifact)),
            },
        },
    })
}

/// GPUs one container asks for: limits, else requests, of each GPU resource.
fn container_gpus(container: &raw::Container, vars: &Vars) -> u32 {
    GPU_RESOURCES
        .iter()
        .filter_map(|resource| {
            let value = container
                .resources
                .limits
                .get(*resource)
                .or_else(|| container.resources.requests.get(*resource))?;
            parse_count(value.as_str(), vars)
        })
        .fold(0, u32::saturating_add)
}

/// A non-negative integer after substitution (`"3"`, `3`, `"{{inputs.parameters.n}}"`).
fn parse_count(text: &str, vars: &Vars) -> Option<u32> {
    let text = substitute(text, vars).ok()?;
    let text = text.trim().trim_matches(|c| c == '"' || c == '\'');
    text.parse::<u32>().ok().or_else(|| {
        let value = text.parse::<f64>().ok()?;
        (value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= f64::from(u32::MAX))
            .then_some(value as u32)
    })
}

/// `withSequence`: `count`, or `end - start + 1`; `None` (dynamic) when not known statically
/// or negative. A single item also fixes `{{item}}`. The count is not bounded here: the
/// caller refuses one over [`MAX_FAN_OUT`].
fn sequence_count(sequence: &raw::Sequence, vars: &Vars, caller_vars: &mut Vars) -> Option<i128> {
    let bounds = sequence_bounds(sequence, vars)?;
    if bounds.count == 1 {
        if let Some(start) = bounds.start {
            caller_vars.insert("item".into(), start.to_string());
        }
    }
    Some(bounds.count)
}

/// A `withSequence`'s items: the first (when it is known), how many, and the step between
/// them (-1 when `end` is below `start`).
struct SequenceBounds {
    start: Option<i128>,
    count: i128,
    step: i128,
}

fn sequence_bounds(sequence: &raw::Sequence, vars: &Vars) -> Option<SequenceBounds> {
    let start = match &sequence.start {
        Some(start) => parse_integer(start.as_str(), vars),
        None => Some(0),
    };
    let (count, step) = if let Some(count) = &sequence.count {
        (parse_integer(count.as_str(), vars)?, 1)
    } else if let Some(end) = &sequence.end {
        let end = parse_integer(end.as_str(), vars)?;
        let span = end.checked_sub(start?)?;
        (
            span.checked_abs()?.checked_add(1)?,
            if span < 0 { -1 } else { 1 },
        )
    } else {
        return None;
    };
    (count >= 0).then_some(SequenceBounds { start, count, step })
}

/// The `{{item…}}` values of each item of `call`'s own loop, when they are known from the
/// YAML and there are at most [`MAX_ITEM_INPUTS`]: a `withItems` list, or a `withSequence`
/// with literal bounds and no `format`.
fn known_items(call: &Call, vars: &Vars) -> Option<Vec<Vars>> {
    let items: Vec<Vars> = if let Some(items) = &call.with_items {
        if items.len() > MAX_ITEM_INPUTS {
            return None;
        }
        items
            .iter()
            .map(|item| item_vars(item).into_iter().collect())
            .collect()
    } else {
        let sequence = call.with_sequence.as_ref()?;
        if sequence.format.as_deref().is_some_and(|f| !f.is_empty()) {
            return None;
        }
        let bounds = sequence_bounds(sequence, vars)?;
        let start = bounds.start?;
        if bounds.count > MAX_ITEM_INPUTS as i128 {
            return None;
        }
        (0..bounds.count)
            .map(|i| {
                let item = start + i * bounds.step;
                std::iter::once(("item".to_string(), item.to_string())).collect()
            })
            .collect()
    };
    Some(items)
}

/// A loop count or bound after substitution: an integer, or a number with no fraction
/// (`1e12`, `5.0`). Wide enough that `end - start + 1` of any two such numbers is exact.
fn parse_integer(text: &str, vars: &Vars) -> Option<i128> {
    let text = substitute(text, vars).ok()?;
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(i128::from(n));
    }
    let value = text.parse::<f64>().ok()?;
    (value.is_finite() && value.fract() == 0.0 && value.abs() < 1e30).then_some(value as i128)
}

/// Line of a task's `- name: x` entry at or after `after`, also in flow style
/// (`- {name: x, template: y}`).
pub(super) fn task_line(document: &crate::Document, name: &str, after: usize) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    document.name_line_after(name, after)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
