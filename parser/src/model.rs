//! The validated pipeline model: what every front end (Argo, KFP v2 IR) produces and every
//! later stage (schedule, database, predictor, prefetcher) consumes.
//!
//! The model holds *executable* tasks only. Nested `dag`/`steps` templates and KFP component
//! DAGs are flattened away by the front ends, so `depends_on` always names other executable
//! tasks of the same pipeline by their [`Task::id`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The kind of document a pipeline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PipelineKind {
    Workflow,
    WorkflowTemplate,
    ClusterWorkflowTemplate,
    CronWorkflow,
    PipelineSpec,
}

impl PipelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::Workflow => "Workflow",
            PipelineKind::WorkflowTemplate => "WorkflowTemplate",
            PipelineKind::ClusterWorkflowTemplate => "ClusterWorkflowTemplate",
            PipelineKind::CronWorkflow => "CronWorkflow",
            PipelineKind::PipelineSpec => "PipelineSpec",
        }
    }
}

impl fmt::Display for PipelineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A whole pipeline: one Argo workflow-like document or one KFP PipelineSpec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pipeline {
    /// `metadata.name`, else `metadata.generateName` without its trailing `-`, else the KFP
    /// `pipelineInfo.name`.
    pub name: String,
    pub kind: PipelineKind,
    /// CronWorkflow schedules (`schedule` or `schedules`); empty for other kinds.
    pub schedules: Vec<String>,
    /// CronWorkflow `timezone`, when given.
    pub timezone: Option<String>,
    /// The file the pipeline was read from, as the user named it.
    pub source: String,
    /// Line (1-based) of the document's start within `source`.
    pub line: Option<usize>,
    /// Workflow-level arguments / KFP root input parameters with their default values.
    pub parameters: BTreeMap<String, String>,
    /// Workflow-level `parallelism` limit, when given.
    pub parallelism: Option<u32>,
    /// Executable tasks, in a stable order (declaration order, depth first).
    pub tasks: Vec<Task>,
}

impl Pipeline {
    /// A `Workflow` named `name` of `tasks`, read from `<name>.yaml`, with no schedule,
    /// parameters or parallelism limit: what tests and generated pipelines start from.
    pub fn workflow(name: &str, tasks: Vec<Task>) -> Pipeline {
        Pipeline {
            name: name.to_string(),
            kind: PipelineKind::Workflow,
            schedules: Vec::new(),
            timezone: None,
            source: format!("{name}.yaml"),
            line: None,
            parameters: Default::default(),
            parallelism: None,
            tasks,
        }
    }

    /// The first schedule, as the JSON contract's `schedule` field.
    pub fn schedule(&self) -> Option<&str> {
        self.schedules.first().map(String::as_str)
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }
}

/// What an executable task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Container,
    Script,
    Resource,
    Importer,
    Suspend,
    Http,
    Plugin,
    Other,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Container => "container",
            TaskKind::Script => "script",
            TaskKind::Resource => "resource",
            TaskKind::Importer => "importer",
            TaskKind::Suspend => "suspend",
            TaskKind::Http => "http",
            TaskKind::Plugin => "plugin",
            TaskKind::Other => "other",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many instances of a task a loop creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FanOut {
    /// `withItems`, `withSequence` or a KFP raw list: the count is known from the YAML.
    Count(u32),
    /// `withParam` or a KFP iterator over a runtime value: known only at run time.
    Dynamic,
}

impl Serialize for FanOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FanOut::Count(n) => s.serialize_u32(*n),
            FanOut::Dynamic => s.serialize_str("dynamic"),
        }
    }
}

/// Why a task runs: as part of the main graph, or as an exit handler / lifecycle hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskRole {
    #[default]
    Main,
    /// Argo `onExit` or a KFP exit handler task: runs after everything else it guards.
    ExitHandler,
    /// Argo lifecycle `hooks`.
    Hook,
}

/// One executable task after flattening.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    /// Unique within the pipeline: names from the entrypoint down, joined by `.`
    /// (e.g. `condition-1.deploy`).
    pub id: String,
    /// The task's own name (the last segment of `id`).
    pub name: String,
    /// The template (Argo) or component (KFP) it runs.
    pub template: String,
    pub kind: TaskKind,
    /// Ids of the executable tasks it waits for.
    pub depends_on: Vec<String>,
    /// GPUs requested (`nvidia.com/gpu`, `amd.com/gpu`, KFP accelerator count).
    pub gpus: u32,
    pub fan_out: Option<FanOut>,
    /// `when` / `triggerPolicy.condition`, joined with ` && ` through nesting.
    pub condition: Option<String>,
    /// `retryStrategy.limit` / `retryPolicy.maxRetryCount`; 0 when none.
    pub retries: u32,
    /// Resolved input parameters plus `--flag value` pairs from command and args.
    pub params: BTreeMap<String, String>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    /// Node selector labels.
    pub node_selector: BTreeMap<String, String>,
    /// The `parallelism` limit of the innermost enclosing dag/steps template or loop, if any.
    pub parallelism: Option<u32>,
    pub role: TaskRole,
    /// Container image, when the task runs one.
    pub image: Option<String>,
    /// 1-based line of the task's declaration in the source file, when known.
    pub line: Option<usize>,
}

impl Task {
    /// A task with the given id and defaults everywhere else; front ends fill in the rest.
    pub fn new(id: impl Into<String>, template: impl Into<String>, kind: TaskKind) -> Task {
        let id = id.into();
        let name = id.rsplit('.').next().unwrap_or(&id).to_string();
        Task {
            id,
            name,
            template: template.into(),
            kind,
            depends_on: Vec::new(),
            gpus: 0,
            fan_out: None,
            condition: None,
            retries: 0,
            params: BTreeMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            node_selector: BTreeMap::new(),
            parallelism: None,
            role: TaskRole::Main,
            image: None,
            line: None,
        }
    }

    /// Roughly the bytes the task takes in memory: its own size plus each of its strings
    /// with its header. What [`crate::limits::MAX_PIPELINE_BYTES`] counts.
    pub fn approximate_bytes(&self) -> usize {
        fn string(s: &str) -> usize {
            s.len() + std::mem::size_of::<String>()
        }
        fn optional(s: &Option<String>) -> usize {
            s.as_deref().map_or(0, string)
        }
        let map = |m: &BTreeMap<String, String>| -> usize {
            m.iter().map(|(k, v)| string(k) + string(v)).sum()
        };
        std::mem::size_of::<Task>()
            + string(&self.id)
            + string(&self.name)
            + string(&self.template)
            + self.depends_on.iter().map(|d| string(d)).sum::<usize>()
            + optional(&self.condition)
            + map(&self.params)
            + map(&self.node_selector)
            + optional(&self.image)
            + self
                .inputs
                .iter()
                .map(|i| string(&i.name) + optional(&i.source) + optional(&i.path))
                .sum::<usize>()
            + self
                .outputs
                .iter()
                .map(|o| string(&o.name) + optional(&o.location) + optional(&o.path))
                .sum::<usize>()
    }
}

/// An input artifact of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    pub name: String,
    /// Where it comes from, as a URI: `s3://bucket/key`, `gs://…`, `http(s)://…`,
    /// `pvc://claim/mount-path`, `file:///path`, `git://…`, `azure://…`, `hdfs://…`,
    /// `oss://…`, `artifactory://…`, `raw:` (inline), or `task://<producer id>/<artifact>`
    /// for an upstream output. `None` when it cannot be known from the YAML.
    pub source: Option<String>,
    /// Where the task expects it inside its container, when declared.
    pub path: Option<String>,
    /// For a task whose own loop's items are known (`withItems`, `withSequence`), the item
    /// (0-based) whose instance reads this input: a source that names the item
    /// (`s3://b/shard-{{item}}.bin`) becomes one input per item, each with its own URI, so
    /// that each can be sized and staged. `None` for an input that every instance reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

/// An output artifact of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    pub name: String,
    /// Where it is stored, as a URI, when the YAML says.
    pub location: Option<String>,
    /// The path inside the container it is collected from, when declared.
    pub path: Option<String>,
}

/// The URI scheme prefix used for references to upstream outputs.
pub const TASK_URI_SCHEME: &str = "task://";

/// `task://<producer>/<artifact>`.
pub fn task_output_uri(producer: &str, artifact: &str) -> String {
    format!("{TASK_URI_SCHEME}{producer}/{artifact}")
}
