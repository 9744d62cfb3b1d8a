//! `kfcache inject FILE [-o OUT] [--all-tasks] [--image IMG] [--placement]`: add kfcache's init
//! container and sidecar to the templates of a workflow's GPU tasks.
//!
//! The file is rewritten as a YAML *tree* (`serde_yaml::Value`), never through typed structs,
//! so every field kfcache does not touch survives; documents without a change are copied byte
//! for byte (comments included). The parser analyses the file first: a template is instrumented
//! when a task that runs it requests GPUs (any task with `--all-tasks`) and it runs a
//! `container` or `script`; DAG and steps templates are never touched, so analysing the output
//! gives the same DAG.
//!
//! Each instrumented template gets:
//! - an init container [`INIT_CONTAINER`] (`kfcache sidecar init --run {{workflow.name}}`) and a
//!   sidecar [`WATCH_CONTAINER`] (`kfcache sidecar watch …`, metrics on [`METRICS_PORT`]), both
//!   with `mirrorVolumeMounts` so they see the main container's volumes and artifact paths, and
//!   the environment named by the `ENV_*` constants below: the task description
//!   ([`kfcache_sidecar::TaskSpec`], JSON) and the run identity through the downward API;
//! - `shareProcessNamespace: true` through the template's `podSpecPatch` (Argo's Template has no
//!   such field; an existing patch is merged, not replaced), so the sidecar sees the main
//!   container's processes;
//! - with `--placement`, `nodeAffinity` preferences on `kubernetes.io/hostname` weighted by the
//!   node ranking ([`kfcache_sidecar::ranking`], Algorithm 2 of the GPU task monitoring paper),
//!   for GPU templates only.
//!
//! The task description prefers what Argo itself substitutes in the pod: where the template
//! declares an artifact's location or path and the analysed value derives from it, the
//! template's text (with its `{{inputs.parameters.x}}` / `{{workflow.parameters.x}}`) is used,
//! so a parameter given at submission is honoured; a value only the caller knows (`from`, a
//! location in the arguments) is used when every task running the template agrees on it and it
//! holds no placeholder that Argo would refuse in a leaf template (`{{item}}`, `{{tasks.…}}`).
//!
//! Injecting an injected file changes nothing: kfcache's containers and affinity terms are
//! replaced in place, and a patch that already shares the process namespace is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;
use kfcache_parser::argo::{artifacts, raw, substitute::Vars};
use kfcache_parser::document::{self, DocKind, Document};
use kfcache_parser::{kfp, Location, ParseOptions, Pipeline, PipelineKind, Task};
use kfcache_sidecar::ranking::{self, Ranked};
use kfcache_sidecar::{SpecInput, SpecOutput, TaskSpec};
use serde::Serialize;
use serde_yaml::{Mapping, Value};

use crate::config::ConnectionArgs;
use crate::settings::GlobalArgs;
use crate::InvalidInput;

pub use kfcache_sidecar::contract::{
    DEADLINE_ANNOTATION, ENV_DEADLINE, ENV_IGNITE, ENV_K8S_NODE,
    ENV_KEY_PREFIX as ENV_CACHE_NAMESPACE, ENV_NODE_NAME, ENV_POD, ENV_RUN_NAMESPACE, ENV_TASK,
    INIT_CONTAINER, METRICS_PORT, NODE_NAME_ANNOTATION, WATCH_CONTAINER,
};
/// Node label the placement preferences match on.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// At most this many nodes are preferred per template.
pub const MAX_PREFERRED_NODES: usize = 10;
/// The in-cluster address of the Ignite Service of `deploy/` (namespace `kfcache`), reachable
/// from pipeline pods in any namespace.
pub const DEFAULT_POD_IGNITE: &str = "kfcache-ignite.kfcache.svc:10800";
/// The image the containers run unless `--image` says otherwise.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/kfcache/kfcache:", env!("CARGO_PKG_VERSION"));

/// The `podSpecPatch` kfcache adds when a template has none.
const SHARE_PROCESS_NAMESPACE_PATCH: &str = r#"{"shareProcessNamespace":true}"#;

/// Placeholders allowed in a value only the caller knows: what Argo resolves in any template.
const GLOBAL_PLACEHOLDERS: &[&str] = &[
    "workflow.name",
    "workflow.namespace",
    "workflow.uid",
    "pod.name",
];

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Argo Workflow, WorkflowTemplate, ClusterWorkflowTemplate or CronWorkflow YAML (what the
    /// KFP v1 compiler emits); several documents per file are fine.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Write the result to this file (replaced atomically) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Instrument the template of every container and script task, not only GPU tasks.
    #[arg(long)]
    pub all_tasks: bool,

    /// Image of the init container and the sidecar (it must hold the `kfcache` binary).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// Ignite addresses the pods use, comma-separated (`KFCACHE_IGNITE` in the containers);
    /// `--ignite` is where this command itself reads node reports from.
    #[arg(long, value_name = "ADDRS", default_value = DEFAULT_POD_IGNITE)]
    pub pod_ignite: String,

    /// Prefer nodes for GPU tasks by the node ranking (free GPU memory, deadline float time),
    /// read from the cache's node reports: nodeAffinity preferences on kubernetes.io/hostname.
    #[arg(long)]
    pub placement: bool,

    /// Node reports from this JSON file (a list of reports, or what `kfcache nodes -f json`
    /// prints) instead of the cache; implies --placement.
    #[arg(long, value_name = "FILE")]
    pub nodes_file: Option<PathBuf>,

    /// Deadline of GPU tasks for placement (`30m`, `1h30m`), unless a template's
    /// `kfcache.io/deadline` annotation gives its own.
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,

    /// Directory (or file) of WorkflowTemplates that resolve `templateRef`; may be repeated.
    #[arg(long, value_name = "DIR")]
    pub templates: Vec<PathBuf>,

    /// Route the instrumented templates' S3 artifacts through kfcache's S3 gateway at this
    /// `host:port` (as pods reach it), so that Argo's own executor reads staged inputs from the
    /// cache; needs --artifact-repository. No `kfcache-init` container is added then.
    #[arg(long, value_name = "HOST:PORT", requires = "artifact_repository")]
    pub gateway: Option<String>,

    /// The S3 artifact repository the gateway serves: Argo's `workflow-controller-configmap`
    /// or `artifact-repositories` ConfigMap, or the repository YAML itself (`s3: {endpoint,
    /// bucket, keyFormat, accessKeySecret, secretKeySecret}`).
    #[arg(long, value_name = "FILE", requires = "gateway")]
    pub artifact_repository: Option<PathBuf>,

    /// Pods reach the gateway over HTTPS (Argo's `insecure: false`).
    #[arg(long, requires = "gateway")]
    pub gateway_tls: bool,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// What to add to the instrumented templates.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    pub image: String,
    /// `KFCACHE_IGNITE` of the containers.
    pub pod_ignite: String,
    /// `KFCACHE_KEY_PREFIX` of the containers, when one is named.
    pub cache_namespace: Option<String>,
    pub all_tasks: bool,
    pub placement: Option<Placement>,
    /// Route S3 artifacts through the gateway instead of adding `kfcache-init`.
    pub gateway: Option<gateway::Route>,
}

impl InjectOptions {
    pub fn new(image: impl Into<String>) -> InjectOptions {
        InjectOptions {
            image: image.into(),
            pod_ignite: DEFAULT_POD_IGNITE.to_string(),
            cache_namespace: None,
            all_tasks: false,
            placement: None,
            gateway: None,
        }
    }
}

/// The node ranking that placement preferences come from.
#[derive(Debug, Clone)]
pub struct Placement {
    pub ranked: Vec<Ranked>,
    /// Deadline of a template without its own `kfcache.io/deadline`, seconds.
    pub deadline_s: Option<f64>,
}

/// The rewritten file and what was done.
#[derive(Debug, Clone, Default)]
pub struct Injected {
    pub text: String,
    /// What the input analyses into.
    pub pipelines: Vec<Pipeline>,
    pub instrumented: Vec<Instrumented>,
    pub skipped: Vec<Skipped>,
}

/// One template that carries kfcache's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrumented {
    /// Index of the document in the file (documents without content not counted).
    pub document: usize,
    /// First line of the document in the input file.
    pub document_line: usize,
    pub template: String,
    /// Ids of the tasks that run it.
    pub tasks: Vec<String>,
    pub gpus: u32,
    /// Nodes named in its placement preferences.
    pub preferred_nodes: usize,
}

/// A task that qualified but whose template was left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub pipeline: String,
    pub task: String,
    pub template: String,
    pub gpus: u32,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A KFP v2 pipeline compiled for Argo: its tasks run KFP's generic driver/executor
    /// templates, which a per-task description cannot be attached to.
    KfpV2OnArgo,
    /// The template is not in this file (`templateRef` into another file, an inline template).
    NotInFile,
    /// The template runs no container or script (resource, suspend, http, containerSet, …).
    NotExecutable,
}

impl SkipReason {
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::KfpV2OnArgo => {
                "a KFP v2 pipeline compiled for Argo runs its tasks through KFP's generic templates"
            }
            SkipReason::NotInFile => {
                "its template is not in this file (inject the file that declares it)"
            }
            SkipReason::NotExecutable => "its template runs no container or script",
        }
    }
}

pub async fn run(_global: &GlobalArgs, args: InjectArgs) -> Result<()> {
    let text = read_input(&args.file)?;
    let parse = ParseOptions {
        template_dirs: args.templates.clone(),
    };
    let mut options = InjectOptions {
        pod_ignite: args.pod_ignite.clone(),
        cache_namespace: args
            .connection
            .key_prefix
            .clone()
            .or_else(|| std::env::var("KFCACHE_KEY_PREFIX").ok())
            .or_else(|| std::env::var("KFCACHE_NAMESPACE").ok())
            .filter(|n| !n.trim().is_empty()),
        all_tasks: args.all_tasks,
        gateway: gateway_route(&args)?,
        ..InjectOptions::new(args.image.clone())
    };
    // The input is checked before anything is read from the cluster.
    let plan = plan(&args.file, &text, &parse, options.all_tasks)?;
    if args.placement || args.nodes_file.is_some() {
        let reports =
            crate::nodes::read_reports(args.nodes_file.as_deref(), &args.connection).await?;
        let deadline_s = args
            .deadline
            .as_deref()
            .map(|d| crate::nodes::seconds_until(d, Utc::now()))
            .transpose()
            .context("--deadline")?;
        if reports.is_empty() {
            tracing::warn!("no node has reported yet: no placement preferences are added");
        }
        options.placement = Some(Placement {
            ranked: ranking::rank(&reports),
            deadline_s,
        });
    }
    let injected = apply(plan, &options)?;
    for skipped in injected.skipped.iter().filter(|s| s.gpus > 0) {
        tracing::warn!(
            "{}: GPU task `{}` of `{}` (template `{}`) is not instrumented: {}",
            args.file.display(),
            skipped.task,
            skipped.pipeline,
            skipped.template,
            skipped.reason.describe()
        );
    }
    if injected.instrumented.is_empty() && injected.skipped.is_empty() {
        tracing::warn!(
            "{}: no template to instrument (no {} task)",
            args.file.display(),
            if args.all_tasks {
                "container or script"
            } else {
                "GPU"
            }
        );
    }
    tracing::info!(
        pipelines = injected.pipelines.len(),
        templates = injected.instrumented.len(),
        "{} analysed and rewritten",
        args.file.display()
    );
    for done in &injected.instrumented {
        tracing::info!(
            template = %done.template,
            tasks = %done.tasks.join(","),
            gpus = done.gpus,
            preferred_nodes = done.preferred_nodes,
            "instrumented"
        );
    }
    match &args.output {
        Some(path) => write_atomically(path, injected.text.as_bytes())?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(injected.text.as_bytes())
                .and_then(|()| stdout.flush())
                .context("cannot write to standard output")?;
        }
    }
    Ok(())
}

/// The gateway route of `--gateway` and `--artifact-repository`.
fn gateway_route(args: &InjectArgs) -> Result<Option<gateway::Route>> {
    let (Some(endpoint), Some(file)) = (&args.gateway, &args.artifact_repository) else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let repository = gateway::Repository::from_yaml(&text)
        .with_context(|| format!("{}: not an S3 artifact repository", file.display()))?;
    Ok(Some(gateway::Route {
        endpoint: endpoint.clone(),
        insecure: !args.gateway_tls,
        repository,
    }))
}

/// Reads the input file with the parser's size limit and UTF-8 check; a file that breaks them
/// is invalid input (exit code 2).
fn read_input(path: &Path) -> Result<String> {
    let io = |source| kfcache_parser::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > document::MAX_FILE_BYTES {
        return Err(InvalidInput(kfcache_parser::Error::TooLarge {
            at: Location::file(path),
            size: meta.len(),
            limit: document::MAX_FILE_BYTES,
        })
        .into());
    }
    let bytes = std::fs::read(path).map_err(io)?;
    String::from_utf8(bytes).map_err(|e| {
        InvalidInput(kfcache_parser::Error::Yaml {
            at: Location::file(path),
            message: format!("not UTF-8 text ({e})"),
        })
        .into()
    })
}

/// Writes through a temporary file in the same directory renamed into place, so the target is
/// either the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("output {} names no file", path.display()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let temporary = dir.join(format!(
        ".{}.kfcache-{}-{:08x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Invalid input becomes [`InvalidInput`] (exit code 2); an unreadable file stays a plain
/// failure.
fn classify(error: kfcache_parser::Error) -> anyhow::Error {
    if error.is_invalid_input() {
        InvalidInput(error).into()
    } else {
        error.into()
    }
}

/// Analyses `text` (the contents of `path`) and rewrites it: [`plan`] then [`apply`].
#[cfg(test)]
pub fn inject_text(
    path: &Path,
    text: &str,
    parse: &ParseOptions,
    options: &InjectOptions,
) -> Result<Injected> {
    apply(plan(path, text, parse, options.all_tasks)?, options)
}

/// One document of the file, as a tree when it is an Argo document.
#[derive(Debug)]
struct Doc {
    first_line: usize,
    kind: DocKind,
    text: String,
    /// The document without nulls stripped (they are kept in the output).
    value: Option<Value>,
    changed: bool,
}

/// A template and every analysed task that runs it.
#[derive(Debug)]
struct Target {
    name: String,
    /// (pipeline name, task).
    uses: Vec<(String, Task)>,
    /// Some task running it qualifies (GPUs, or `--all-tasks`).
    qualifies: bool,
}

/// What to change, worked out from the analysis before anything is changed.
#[derive(Debug)]
pub struct Plan {
    path: PathBuf,
    /// The input, returned as it is when nothing changes.
    text: String,
    docs: Vec<Doc>,
    /// (document, template index) → the template's tasks.
    targets: BTreeMap<(usize, usize), Target>,
    skipped: Vec<Skipped>,
    pipelines: Vec<Pipeline>,
}

/// Parses and analyses the file and finds the templates to instrument.
pub fn plan(path: &Path, text: &str, parse: &ParseOptions, all_tasks: bool) -> Result<Plan> {
    let documents = document::split_documents(path, text).map_err(classify)?;
    if let Some(ir) = documents
        .iter()
        .find(|d| matches!(d.kind, DocKind::PipelineSpec | DocKind::PlatformSpec))
    {
        return Err(InvalidInput(kfcache_parser::Error::Invalid {
            at: Location::at(path, Some(ir.first_line)),
            what: "input for inject".to_string(),
            message: "a KFP v2 PipelineSpec is not an Argo workflow; kfcache inject rewrites Argo \
                      Workflow, WorkflowTemplate, ClusterWorkflowTemplate and CronWorkflow \
                      documents (KFP v1 output)"
                .to_string(),
        })
        .into());
    }
    let pipelines = kfcache_parser::parse_documents(path, &documents, parse).map_err(classify)?;
    // Workflows the KFP v2 backend compiled: their tasks are KFP components run by generic
    // driver / executor templates.
    let kfp_v2: Vec<usize> = documents
        .iter()
        .filter(|d| d.kind == DocKind::Workflow && kfp::parse_embedded(path, d).is_some())
        .map(|d| d.first_line)
        .collect();
    let docs = documents
        .iter()
        .map(|d| read_doc(path, d))
        .collect::<Result<Vec<_>>>()?;

    let mut targets: BTreeMap<(usize, usize), Target> = BTreeMap::new();
    let mut skipped = Vec::new();
    for pipeline in &pipelines {
        let own = docs
            .iter()
            .position(|d| d.value.is_some() && Some(d.first_line) == pipeline.line);
        for task in &pipeline.tasks {
            let qualifies = task.gpus > 0 || all_tasks;
            let skip = |reason| Skipped {
                pipeline: pipeline.name.clone(),
                task: task.id.clone(),
                template: task.template.clone(),
                gpus: task.gpus,
                reason,
            };
            if pipeline.kind == PipelineKind::PipelineSpec
                || pipeline.line.is_some_and(|line| kfp_v2.contains(&line))
            {
                if qualifies {
                    skipped.push(skip(SkipReason::KfpV2OnArgo));
                }
                continue;
            }
            let Some((d, t)) = locate(&docs, own, &task.template) else {
                if qualifies {
                    skipped.push(skip(SkipReason::NotInFile));
                }
                continue;
            };
            if !is_executable(template_at(&docs, d, t)) {
                if qualifies {
                    skipped.push(skip(SkipReason::NotExecutable));
                }
                continue;
            }
            let target = targets.entry((d, t)).or_insert_with(|| Target {
                name: task.template.clone(),
                uses: Vec::new(),
                qualifies: false,
            });
            target.qualifies |= qualifies;
            target.uses.push((pipeline.name.clone(), task.clone()));
        }
    }
    Ok(Plan {
        path: path.to_path_buf(),
        text: text.to_string(),
        docs,
        targets,
        skipped,
        pipelines,
    })
}

fn read_doc(path: &Path, document: &Document) -> Result<Doc> {
    let argo = matches!(
        document.kind,
        DocKind::Workflow
            | DocKind::WorkflowTemplate
            | DocKind::ClusterWorkflowTemplate
            | DocKind::CronWorkflow
    );
    let value = if argo {
        let value: Value = serde_yaml::from_str(&document.text).map_err(|e| {
            InvalidInput(kfcache_parser::Error::Yaml {
                at: Location::at(path, Some(document.first_line)),
                message: e.to_string(),
            })
        })?;
        Some(value)
    } else {
        None
    };
    Ok(Doc {
        first_line: document.first_line,
        kind: document.kind.clone(),
        text: document.text.to_string(),
        value,
        changed: false,
    })
}

/// The workflow spec of a document: `spec`, or a CronWorkflow's `spec.workflowSpec`.
fn workflow_spec<'a>(value: &'a Value, kind: &DocKind) -> Option<&'a Value> {
    let spec = value.get("spec")?;
    match kind {
        DocKind::CronWorkflow => spec.get("workflowSpec"),
        _ => Some(spec),
    }
}

fn workflow_spec_mut<'a>(value: &'a mut Value, kind: &DocKind) -> Option<&'a mut Value> {
    let spec = value.get_mut("spec")?;
    match kind {
        DocKind::CronWorkflow => spec.get_mut("workflowSpec"),
        _ => Some(spec),
    }
}

fn templates_of(doc: &Doc) -> &[Value] {
    doc.value
        .as_ref()
        .and_then(|v| workflow_spec(v, &doc.kind))
        .and_then(|s| s.get("templates"))
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

fn template_at(docs: &[Doc], d: usize, t: usize) -> Option<&Value> {
    docs.get(d).and_then(|doc| templates_of(doc).get(t))
}

/// Where the template named `name` is declared: in the pipeline's own document first, then in
/// the file's WorkflowTemplates (what `templateRef` / `workflowTemplateRef` reach).
fn locate(docs: &[Doc], own: Option<usize>, name: &str) -> Option<(usize, usize)> {
    let find = |d: usize| {
        templates_of(docs.get(d)?)
            .iter()
            .position(|t| t.get("name").and_then(Value::as_str) == Some(name))
            .map(|t| (d, t))
    };
    if let Some(found) = own.and_then(find) {
        return Some(found);
    }
    (0..docs.len())
        .filter(|&d| Some(d) != own)
        .filter(|&d| {
            matches!(
                docs[d].kind,
                DocKind::WorkflowTemplate | DocKind::ClusterWorkflowTemplate
            )
        })
        .find_map(find)
}

/// A template that runs one container Argo's executor waits on: `container` or `script`.
fn is_executable(template: Option<&Value>) -> bool {
    template.is_some_and(|t| {
        ["container", "script"]
            .iter()
            .any(|k| t.get(*k).is_some_and(Value::is_mapping))
    })
}

/// Rewrites the planned templates.
pub fn apply(mut plan: Plan, options: &InjectOptions) -> Result<Injected> {
    let mut instrumented = Vec::new();
    let targets = std::mem::take(&mut plan.targets);
    for ((d, t), target) in targets {
        if !target.qualifies {
            continue;
        }
        let Some(doc) = plan.docs.get_mut(d) else {
            continue;
        };
        let document_line = doc.first_line;
        let kind = doc.kind.clone();
        let Some(value) = doc.value.as_mut() else {
            continue;
        };
        // What Argo merges into every template, read before the template is borrowed.
        let (defaults, workflow_affinity) = match workflow_spec(value, &kind) {
            Some(spec) => (
                spec.get("templateDefaults").cloned(),
                spec.get("affinity").cloned(),
            ),
            None => (None, None),
        };
        let Some(template) = workflow_spec_mut(value, &kind)
            .and_then(|s| s.get_mut("templates"))
            .and_then(Value::as_sequence_mut)
            .and_then(|ts| ts.get_mut(t))
        else {
            continue;
        };
        let before = template.clone();
        let spec = task_spec(template, &target.uses);
        let Some(map) = template.as_mapping_mut() else {
            continue;
        };
        let where_ = || {
            format!(
                "{}:{document_line}: template `{}`",
                plan.path.display(),
                target.name
            )
        };
        instrument(map, &spec, options).with_context(where_)?;
        let mut preferred_nodes = 0;
        if let (Some(placement), true) = (&options.placement, spec.gpus > 0) {
            preferred_nodes = place(
                map,
                placement,
                defaults.as_ref(),
                workflow_affinity.as_ref(),
            )
            .with_context(where_)?;
        }
        if *template != before {
            doc.changed = true;
        }
        let mut tasks: Vec<String> = target.uses.iter().map(|(_, t)| t.id.clone()).collect();
        tasks.dedup();
        instrumented.push(Instrumented {
            document: d,
            document_line,
            template: target.name.clone(),
            tasks,
            gpus: spec.gpus,
            preferred_nodes,
        });
    }
    let text = render(&plan)?;
    Ok(Injected {
        text,
        pipelines: plan.pipelines,
        instrumented,
        skipped: plan.skipped,
    })
}

/// The output file: the input as it is when nothing changed, else every document, changed
/// ones re-serialised (keeping their leading comments) and the others copied verbatim.
fn render(plan: &Plan) -> Result<String> {
    if !plan.docs.iter().any(|d| d.changed) {
        return Ok(plan.text.clone());
    }
    let mut out = String::with_capacity(plan.text.len() * 2);
    for (i, doc) in plan.docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        match (&doc.value, doc.changed) {
            (Some(value), true) => {
                out.push_str(leading_comments(&doc.text));
                let yaml = to_yaml(value, &doc.text).with_context(|| {
                    format!(
                        "cannot write the document at {}:{}",
                        plan.path.display(),
                        doc.first_line
                    )
                })?;
                out.push_str(&yaml);
            }
            _ => out.push_str(&doc.text),
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Strings whose spelling a YAML 1.1 reader (Go's yaml.v2, behind `kubectl` and `argo`)
/// resolves to a boolean or a number when they stand unquoted: `yes`, `off`, `Y`, `0755`
/// (octal), `1_000`, `0b101`. serde_yaml reads YAML 1.2 and writes some of them quoted and
/// others not, whatever they were; [`to_yaml`] writes them the way the input did.
fn ambiguous_in_yaml11(text: &str) -> bool {
    const BOOLEANS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    if BOOLEANS.contains(&text) {
        return true;
    }
    let body = text.trim_start_matches(['+', '-']);
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    let leading_zero =
        digits.len() > 1 && digits.starts_with('0') && digits.chars().all(|c| c.is_ascii_digit());
    let binary = digits.len() > 2
        && digits.starts_with("0b")
        && digits[2..].chars().all(|c| c == '0' || c == '1');
    let underscored = text.contains('_')
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.');
    leading_zero || binary || underscored
}

/// How `scalar` stands in a YAML text: (somewhere unquoted, somewhere quoted). Unquoted means a
/// whole plain scalar: after `: `, `- `, `[`, `,`, `{` or at the start of a line, and before the
/// end of the line, a comment, `,`, `]`, `}` or a key's `:`.
fn scalar_styles(text: &str, scalar: &str) -> (bool, bool) {
    let (mut plain, mut quoted) = (false, false);
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices(scalar) {
        let end = at + scalar.len();
        let before = bytes.get(at.wrapping_sub(1)).copied();
        let after = bytes.get(end).copied();
        if matches!(before, Some(b'\'' | b'"')) && before == after {
            quoted = true;
            continue;
        }
        let mut i = at;
        while i > 0 && matches!(bytes[i - 1], b' ' | b'\t') {
            i -= 1;
        }
        let opens = match i.checked_sub(1).map(|p| bytes[p]) {
            None | Some(b'\n' | b'[' | b',' | b'{') => true,
            Some(b':' | b'-') => i < at,
            _ => false,
        };
        let mut j = end;
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        let closes = match bytes.get(j) {
            None | Some(b'\n' | b'\r' | b',' | b']' | b'}') => true,
            Some(b'#') => j > end,
            Some(b':') => matches!(bytes.get(j + 1), None | Some(b' ' | b'\n' | b'\r')),
            _ => false,
        };
        plain |= opens && closes;
    }
    (plain, quoted)
}

/// Replaces every [`ambiguous_in_yaml11`] string (values and keys) with a unique token and
/// records the text to put back: the string unquoted when the original document only has it
/// unquoted, else single-quoted.
fn protect_strings(value: &mut Value, token: &str, original: &str, replacements: &mut Vec<String>) {
    let mut protect = |text: &mut String| {
        if ambiguous_in_yaml11(text) {
            let (plain, quoted) = scalar_styles(original, text);
            let replacement = format!("{token}{}q", replacements.len());
            replacements.push(if plain && !quoted {
                text.clone()
            } else {
                format!("'{}'", text.replace('\'', "''"))
            });
            *text = replacement;
        }
    };
    match value {
        Value::String(text) => protect(text),
        Value::Sequence(items) => {
            for item in items {
                protect_strings(item, token, original, replacements);
            }
        }
        Value::Mapping(map) => {
            let keys_need_it = map
                .keys()
                .any(|k| k.as_str().is_some_and(ambiguous_in_yaml11));
            if keys_need_it {
                let mut rebuilt = Mapping::with_capacity(map.len());
                for (mut key, mut item) in std::mem::take(map) {
                    protect_strings(&mut key, token, original, replacements);
                    protect_strings(&mut item, token, original, replacements);
                    rebuilt.insert(key, item);
                }
                *map = rebuilt;
            } else {
                for (_, item) in map.iter_mut() {
                    protect_strings(item, token, original, replacements);
                }
            }
        }
        Value::Tagged(tagged) => protect_strings(&mut tagged.value, token, original, replacements),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A document as YAML that Go's YAML 1.1 reader reads the way it read `original` (the
/// document's text): serde_yaml's output, with the strings YAML 1.1 would take for booleans or
/// numbers written quoted or not as `original` had them. Stand-in tokens never occur in
/// `original`.
fn to_yaml(value: &Value, original: &str) -> Result<String> {
    let mut token = String::from("kfcachescalar");
    while original.contains(&token) {
        token = format!("kfcachescalar{:08x}n", rand::random::<u32>());
    }
    let mut value = value.clone();
    let mut replacements = Vec::new();
    protect_strings(&mut value, &token, original, &mut replacements);
    let mut yaml = serde_yaml::to_string(&value)?;
    for (i, text) in replacements.iter().enumerate().rev() {
        yaml = yaml.replace(&format!("{token}{i}q"), text);
    }
    Ok(yaml)
}

/// The comment and blank lines a document starts with.
fn leading_comments(text: &str) -> &str {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            end += line.len();
        } else {
            break;
        }
    }
    &text[..end]
}

// ---------------------------------------------------------------------------------------------
// The task description.

/// An artifact as the template itself declares it, with its placeholders left for Argo.
#[derive(Debug, Default)]
struct Declared {
    path: Option<String>,
    location: Option<String>,
}

/// The template's declared input (`inputs`) or output (`outputs`) artifacts by name, and its
/// input parameter names.
fn declared(template: &Value, side: &str) -> (BTreeMap<String, Declared>, BTreeSet<String>) {
    let Some(section) = template.get(side) else {
        return Default::default();
    };
    let mut section = section.clone();
    document::strip_nulls(&mut section);
    let inputs: raw::Inputs = serde_yaml::from_value(section).unwrap_or_default();
    let no_vars = Vars::new();
    let artifacts = inputs
        .artifacts
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                Declared {
                    path: a.path.clone(),
                    location: artifacts::location(a, &no_vars).ok().flatten(),
                },
            )
        })
        .collect();
    let parameters = inputs.parameters.into_iter().map(|p| p.name).collect();
    (artifacts, parameters)
}

/// The `{{...}}` placeholders of `text`, trimmed.
fn placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            break;
        };
        found.push(after[..close].trim());
        rest = &after[close + 2..];
    }
    found
}

/// Whether `value` could be `pattern` with its placeholders filled in.
fn derives_from(pattern: &str, value: &str) -> bool {
    let mut literals = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            break;
        };
        literals.push(&rest[..open]);
        rest = &after[close + 2..];
    }
    literals.push(rest);
    if literals.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (literals[0], literals[literals.len() - 1]);
    let Some(mut middle) = value.strip_prefix(first) else {
        return false;
    };
    for literal in &literals[1..literals.len() - 1] {
        match middle.find(literal) {
            Some(at) => middle = &middle[at + literal.len()..],
            None => return false,
        }
    }
    middle.ends_with(last)
}

/// One field of the artifact each task using the template has (`None` where a task lacks it).
fn field<'a, T>(
    found: &[Option<&'a T>],
    get: impl Fn(&'a T) -> Option<&'a str>,
) -> Vec<Option<&'a str>> {
    found.iter().map(|f| f.and_then(&get)).collect()
}

/// One field of the description: the template's own text when every analysed value derives
/// from it; else the analysed value when all tasks agree and Argo would resolve it inside the
/// template; else unknown.
fn choose(
    declared: Option<&str>,
    analysed: &[Option<&str>],
    parameters: &BTreeSet<String>,
) -> Option<String> {
    if let Some(declared) = declared {
        if analysed
            .iter()
            .all(|a| a.map_or(true, |a| derives_from(declared, a)))
        {
            return Some(declared.to_string());
        }
    }
    let first = (*analysed.first()?)?;
    if analysed.iter().any(|a| *a != Some(first)) {
        return None;
    }
    let resolvable = placeholders(first).into_iter().all(|p| {
        GLOBAL_PLACEHOLDERS.contains(&p)
            || p.strip_prefix("inputs.parameters.")
                .is_some_and(|name| parameters.contains(name))
    });
    resolvable.then(|| first.to_string())
}

/// The description embedded in a template run by `uses` (one task: its id is in it).
fn task_spec(template: &Value, uses: &[(String, Task)]) -> TaskSpec {
    let Some((pipeline, first)) = uses.first() else {
        return TaskSpec::default();
    };
    let mut spec = TaskSpec::of_task(pipeline, first, uses.len() == 1);
    spec.gpus = uses.iter().map(|(_, t)| t.gpus).max().unwrap_or(0);
    let (declared_inputs, parameters) = declared(template, "inputs");
    let (declared_outputs, _) = declared(template, "outputs");
    let mut input_names: Vec<&str> = Vec::new();
    let mut output_names: Vec<&str> = Vec::new();
    for (_, task) in uses {
        for input in &task.inputs {
            if !input_names.contains(&input.name.as_str()) {
                input_names.push(&input.name);
            }
        }
        for output in &task.outputs {
            if !output_names.contains(&output.name.as_str()) {
                output_names.push(&output.name);
            }
        }
    }
    spec.inputs = input_names
        .into_iter()
        .map(|name| {
            let found: Vec<_> = uses
                .iter()
                .map(|(_, t)| t.inputs.iter().find(|i| i.name == name))
                .collect();
            let declared = declared_inputs.get(name);
            SpecInput {
                name: name.to_string(),
                source: choose(
                    declared.and_then(|d| d.location.as_deref()),
                    &field(&found, |i| i.source.as_deref()),
                    &parameters,
                ),
                path: choose(
                    declared.and_then(|d| d.path.as_deref()),
                    &field(&found, |i| i.path.as_deref()),
                    &parameters,
                ),
            }
        })
        .collect();
    spec.outputs = output_names
        .into_iter()
        .map(|name| {
            let found: Vec<_> = uses
                .iter()
                .map(|(_, t)| t.outputs.iter().find(|o| o.name == name))
                .collect();
            let declared = declared_outputs.get(name);
            SpecOutput {
                name: name.to_string(),
                location: choose(
                    declared.and_then(|d| d.location.as_deref()),
                    &field(&found, |o| o.location.as_deref()),
                    &parameters,
                ),
                path: choose(
                    declared.and_then(|d| d.path.as_deref()),
                    &field(&found, |o| o.path.as_deref()),
                    &parameters,
                ),
            }
        })
        .collect();
    spec
}

// ---------------------------------------------------------------------------------------------
// The containers and the pod patch.

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserContainer {
    name: &'static str,
    image: String,
    command: [&'static str; 3],
    args: [&'static str; 2],
    env: Vec<EnvVar>,
    mirror_volume_mounts: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<ContainerPort>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_from: Option<EnvVarSource>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvVarSource {
    field_ref: FieldRef,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FieldRef {
    field_path: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    name: &'static str,
    container_port: u16,
}

fn env(spec: &TaskSpec, options: &InjectOptions) -> Vec<EnvVar> {
    let value = |name, value: String| EnvVar {
        name,
        value: Some(value),
        value_from: None,
    };
    let field = |name, path: String| EnvVar {
        name,
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: FieldRef { field_path: path },
        }),
    };
    let mut env = vec![
        value(ENV_TASK, spec.to_json()),
        field(
            ENV_NODE_NAME,
            format!("metadata.annotations['{NODE_NAME_ANNOTATION}']"),
        ),
        field(ENV_K8S_NODE, "spec.nodeName".to_string()),
        field(ENV_POD, "metadata.name".to_string()),
        field(ENV_RUN_NAMESPACE, "metadata.namespace".to_string()),
        field(
            ENV_DEADLINE,
            format!("metadata.annotations['{DEADLINE_ANNOTATION}']"),
        ),
        value(ENV_IGNITE, options.pod_ignite.clone()),
    ];
    if let Some(namespace) = &options.cache_namespace {
        env.push(value(ENV_CACHE_NAMESPACE, namespace.clone()));
    }
    env
}

/// Adds (or refreshes) the containers and the process namespace patch.
fn instrument(template: &mut Mapping, spec: &TaskSpec, options: &InjectOptions) -> Result<()> {
    let container = |name, command, ports| UserContainer {
        name,
        image: options.image.clone(),
        command: ["kfcache", "sidecar", command],
        args: ["--run", "{{workflow.name}}"],
        env: env(spec, options),
        mirror_volume_mounts: true,
        ports,
    };
    let init = serde_yaml::to_value(container(INIT_CONTAINER, "init", Vec::new()))?;
    let watch = serde_yaml::to_value(container(
        WATCH_CONTAINER,
        "watch",
        vec![ContainerPort {
            name: "metrics",
            container_port: METRICS_PORT,
        }],
    ))?;
    match &options.gateway {
        // Argo's own init container reads the inputs, through the gateway.
        Some(route) => {
            remove_container(template, "initContainers", INIT_CONTAINER);
            let routed = gateway::route(template, route)?;
            for (artifact, why) in &routed.left {
                tracing::warn!(%artifact, "input artifact not routed through the gateway: {why}");
            }
        }
        None => upsert_container(template, "initContainers", INIT_CONTAINER, init)?,
    }
    upsert_container(template, "sidecars", WATCH_CONTAINER, watch)?;

    let key = Value::from("podSpecPatch");
    let patch = match template.get(&key) {
        Some(Value::String(patch)) => Some(patch.clone()),
        None | Some(Value::Null) => None,
        Some(_) => bail!("podSpecPatch is not a string"),
    };
    let patched = share_process_namespace(patch.as_deref());
    if patch.as_deref() != Some(patched.as_str()) {
        template.insert(key, Value::String(patched));
    }
    Ok(())
}

/// Removes the container named `name` from the list under `key`, and the list when it is left
/// empty.
fn remove_container(template: &mut Mapping, key: &str, name: &str) {
    let Some(list) = template.get_mut(key).and_then(Value::as_sequence_mut) else {
        return;
    };
    list.retain(|c| c.get("name").and_then(Value::as_str) != Some(name));
    if list.is_empty() {
        template.remove(key);
    }
}

/// Replaces the container named `name` in the list under `key`, or appends it.
fn upsert_container(template: &mut Mapping, key: &str, name: &str, container: Value) -> Result<()> {
    let slot = template.entry(Value::from(key)).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Sequence(Vec::new());
    }
    let Some(list) = slot.as_sequence_mut() else {
        bail!("{key} is not a list");
    };
    match list
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(existing) => *existing = container,
        None => list.push(container),
    }
    Ok(())
}

/// `patch` (a strategic merge patch of the pod spec, JSON or YAML) with
/// `shareProcessNamespace: true`: merged into the patch's mapping, written back in the patch's
/// own style; a patch that does not parse before Argo fills in its placeholders gets the key
/// added to its text.
fn share_process_namespace(patch: Option<&str>) -> String {
    let Some(text) = patch.filter(|p| !p.trim().is_empty()) else {
        return SHARE_PROCESS_NAMESPACE_PATCH.to_string();
    };
    let trimmed = text.trim_start();
    let json = trimmed.starts_with('{');
    if let Ok(Value::Mapping(mut map)) = serde_yaml::from_str::<Value>(text) {
        if map.get("shareProcessNamespace") == Some(&Value::Bool(true)) {
            return text.to_string();
        }
        map.insert("shareProcessNamespace".into(), Value::Bool(true));
        let rewritten = if json {
            serde_json::to_string(&map).ok()
        } else {
            serde_yaml::to_string(&map).ok()
        };
        if let Some(rewritten) = rewritten {
            return rewritten;
        }
    }
    if text.contains("shareProcessNamespace") {
        return text.to_string();
    }
    match trimmed.strip_prefix('{') {
        Some(rest) => format!("{{\"shareProcessNamespace\":true,{rest}"),
        None => format!("shareProcessNamespace: true\n{text}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Placement.

#[derive(Debug, Serialize)]
struct PreferredSchedulingTerm {
    weight: i32,
    preference: NodeSelectorTerm,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeSelectorTerm {
    match_expressions: Vec<NodeSelectorRequirement>,
}

#[derive(Debug, Serialize)]
struct NodeSelectorRequirement {
    key: &'static str,
    operator: &'static str,
    values: Vec<String>,
}

/// The deadline of a template for placement: its `kfcache.io/deadline` annotation (a
/// duration or a time), else the default.
fn template_deadline(template: &Mapping, default: Option<f64>) -> Option<f64> {
    template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(DEADLINE_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|text| crate::nodes::seconds_until(text, Utc::now()).ok())
        .or(default)
}

/// Whether a preferred term is one kfcache writes: one `kubernetes.io/hostname In [node]`
/// expression and nothing else.
fn is_placement_term(term: &Value) -> bool {
    let Some(map) = term.as_mapping() else {
        return false;
    };
    let Some(preference) = map.get("preference").and_then(Value::as_mapping) else {
        return false;
    };
    let expressions = preference
        .get("matchExpressions")
        .and_then(Value::as_sequence);
    map.len() == 2
        && map.contains_key("weight")
        && preference.len() == 1
        && expressions.is_some_and(|e| {
            e.len() == 1
                && e[0].get("key").and_then(Value::as_str) == Some(HOSTNAME_LABEL)
                && e[0].get("operator").and_then(Value::as_str) == Some("In")
                && e[0]
                    .get("values")
                    .and_then(Value::as_sequence)
                    .is_some_and(|v| v.len() == 1)
        })
}

/// Adds the ranking's node preferences to a GPU template's affinity; returns how many nodes it
/// names. The template's own affinity is kept; without one, the affinity Argo would otherwise
/// use (`templateDefaults`, then the workflow's) is copied in first, because a template's
/// affinity replaces the workflow's.
fn place(
    template: &mut Mapping,
    placement: &Placement,
    defaults: Option<&Value>,
    workflow_affinity: Option<&Value>,
) -> Result<usize> {
    let deadline = template_deadline(template, placement.deadline_s);
    let weights = ranking::preference_weights(&placement.ranked, deadline, MAX_PREFERRED_NODES);
    if weights.is_empty() {
        return Ok(0);
    }
    let key = Value::from("affinity");
    let mut affinity = match template.get(&key) {
        Some(Value::Mapping(existing)) => existing.clone(),
        _ => defaults
            .and_then(|d| d.get("affinity"))
            .or(workflow_affinity)
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default(),
    };
    let node_affinity = affinity
        .entry("nodeAffinity".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let Some(node_affinity) = node_affinity.as_mapping_mut() else {
        bail!("affinity.nodeAffinity is not a mapping");
    };
    let preferred = node_affinity
        .entry("preferredDuringSchedulingIgnoredDuringExecution".into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let Some(preferred) = preferred.as_sequence_mut() else {
        bail!(
            "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution is not a list"
        );
    };
    preferred.retain(|term| !is_placement_term(term));
    for (node, weight) in &weights {
        preferred.push(serde_yaml::to_value(PreferredSchedulingTerm {
            weight: *weight,
            preference: NodeSelectorTerm {
                match_expressions: vec![NodeSelectorRequirement {
                    key: HOSTNAME_LABEL,
                    operator: "In",
                    values: vec![node.clone()],
                }],
            },
        })?);
    }
    template.insert(key, Value::Mapping(affinity));
    Ok(weights.len())
}

pub mod gateway;
#[cfg(test)]
mod tests;
