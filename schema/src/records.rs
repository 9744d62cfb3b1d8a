//! The typed rows the store hands out, and the text forms of the model's enums as the schema
//! spells them (the parser's `as_str` forms, read back here with a `Corrupt` error for anything
//! else).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use kfcache_parser::schedule::TaskTimes;
use kfcache_parser::{FanOut, PipelineKind, Task, TaskKind, TaskRole};

use crate::error::{Error, Result};

/// What [`Store::record_analysis`](crate::Store::record_analysis) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisRecord {
    pub pipeline_id: i64,
    pub version_id: i64,
    /// `false` when this content had been recorded before and the existing version was reused.
    pub created: bool,
}

/// A row of `pipeline`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineRecord {
    pub id: i64,
    pub name: String,
    pub namespace: Option<String>,
    /// The kind of the most recently recorded version.
    pub kind: PipelineKind,
    pub created_at: DateTime<Utc>,
}

/// A row of `pipeline_version`.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub id: i64,
    pub pipeline_id: i64,
    pub content_hash: String,
    pub kind: PipelineKind,
    pub source: String,
    pub source_line: Option<usize>,
    pub schedules: Vec<String>,
    pub timezone: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub parallelism: Option<u32>,
    /// When this content was last analysed (recording it, or re-analysing the same content).
    pub analysed_at: DateTime<Utc>,
}

/// A task of a version, read back into the parser's model, with its predicted times.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// `task.id`: the handle for [`Store::task_inputs`](crate::Store::task_inputs).
    pub id: i64,
    pub version_id: i64,
    /// The model task: `task.id` is the task key; `depends_on`, inputs and outputs are
    /// reconstructed in their recorded order.
    pub task: Task,
    /// `None` until predicted.
    pub predicted: Option<TaskTimes>,
}

/// Whether a task reads or writes an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactRole {
    Input,
    Output,
}

impl ArtifactRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactRole::Input => "input",
            ArtifactRole::Output => "output",
        }
    }
}

/// Where an artifact's URI is stored, with what is known about its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactStorage {
    /// A `data` row.
    Data { id: i64, size_bytes: Option<u64> },
    /// A `directory` row.
    Directory {
        id: i64,
        size_bytes: Option<u64>,
        object_count: Option<u64>,
    },
    /// Inline content or an unknown source: nothing to fetch.
    Unlinked,
}

/// One input or output of a task, with the row it links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub task_id: i64,
    pub role: ArtifactRole,
    /// Index in the task's inputs or outputs.
    pub position: u32,
    pub name: String,
    /// Path inside the container, when declared.
    pub path: Option<String>,
    /// The URI as stored. For an output the YAML gave no location for, this is its
    /// `task://producer/artifact` identity and `implicit` is set.
    pub uri: Option<String>,
    pub implicit: bool,
    /// The loop item whose instance reads this input ([`kfcache_parser::Input::item`]).
    pub item: Option<u32>,
    pub storage: ArtifactStorage,
}

/// A row of `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    pub id: i64,
    pub uri: String,
    pub size_bytes: Option<u64>,
    pub checksum: Option<String>,
    pub etag: Option<String>,
    pub last_seen: DateTime<Utc>,
}

/// A row of `directory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRecord {
    pub id: i64,
    pub uri: String,
    pub size_bytes: Option<u64>,
    pub object_count: Option<u64>,
    pub last_seen: DateTime<Utc>,
}

fn corrupt(table: &'static str, column: &'static str, value: impl Into<String>) -> Error {
    Error::Corrupt {
        table,
        column,
        value: value.into(),
    }
}

/// Timestamps are written in one fixed-width form so that text order is time order.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn now() -> String {
    timestamp(Utc::now())
}

pub(crate) fn parse_timestamp(
    table: &'static str,
    column: &'static str,
    text: &str,
) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| corrupt(table, column, text))
}

pub(crate) fn parse_pipeline_kind(table: &'static str, text: &str) -> Result<PipelineKind> {
    Ok(match text {
        "Workflow" => PipelineKind::Workflow,
        "WorkflowTemplate" => PipelineKind::WorkflowTemplate,
        "ClusterWorkflowTemplate" => PipelineKind::ClusterWorkflowTemplate,
        "CronWorkflow" => PipelineKind::CronWorkflow,
        "PipelineSpec" => PipelineKind::PipelineSpec,
        other => return Err(corrupt(table, "kind", other)),
    })
}

pub(crate) fn parse_task_kind(text: &str) -> Result<TaskKind> {
    Ok(match text {
        "container" => TaskKind::Container,
        "script" => TaskKind::Script,
        "resource" => TaskKind::Resource,
        "importer" => TaskKind::Importer,
        "suspend" => TaskKind::Suspend,
        "http" => TaskKind::Http,
        "plugin" => TaskKind::Plugin,
        "other" => TaskKind::Other,
        other => return Err(corrupt("task", "kind", other)),
    })
}

pub(crate) fn task_role_str(role: TaskRole) -> &'static str {
    match role {
        TaskRole::Main => "main",
        TaskRole::ExitHandler => "exit_handler",
        TaskRole::Hook => "hook",
    }
}

pub(crate) fn parse_task_role(text: &str) -> Result<TaskRole> {
    Ok(match text {
        "main" => TaskRole::Main,
        "exit_handler" => TaskRole::ExitHandler,
        "hook" => TaskRole::Hook,
        other => return Err(corrupt("task", "role", other)),
    })
}

pub(crate) fn fan_out_str(fan_out: Option<FanOut>) -> Option<String> {
    fan_out.map(|f| match f {
        FanOut::Count(n) => n.to_string(),
        FanOut::Dynamic => "dynamic".to_string(),
    })
}

pub(crate) fn parse_fan_out(text: Option<&str>) -> Result<Option<FanOut>> {
    match text {
        None => Ok(None),
        Some("dynamic") => Ok(Some(FanOut::Dynamic)),
        Some(n) => n
            .parse()
            .map(|n| Some(FanOut::Count(n)))
            .map_err(|_| corrupt("task", "fan_out", n)),
    }
}

pub(crate) fn parse_artifact_role(table: &'static str, text: &str) -> Result<ArtifactRole> {
    match text {
        "input" => Ok(ArtifactRole::Input),
        "output" => Ok(ArtifactRole::Output),
        other => Err(corrupt(table, "role", other)),
    }
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Json { what, source })
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    column: &'static str,
    text: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|_| corrupt(table, column, text))
}

/// A non-negative database integer as the unsigned count the model uses.
pub(crate) fn unsigned<T: TryFrom<i64>>(
    table: &'static str,
    column: &'static str,
    value: i64,
) -> Result<T> {
    T::try_from(value).map_err(|_| corrupt(table, column, value.to_string()))
}

pub(crate) fn unsigned_opt<T: TryFrom<i64>>(
    table: &'static str,
    column: &'static str,
    value: Option<i64>,
) -> Result<Option<T>> {
    value.map(|v| unsigned(table, column, v)).transpose()
}

/// Sizes and counts are `u64` in the API and `INTEGER` (i64) in SQLite.
pub(crate) fn signed(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

/// Both predicted times, or neither.
pub(crate) fn predicted(start_s: Option<f64>, end_s: Option<f64>) -> Option<TaskTimes> {
    match (start_s, end_s) {
        (Some(start_s), Some(end_s)) => Some(TaskTimes { start_s, end_s }),
        _ => None,
    }
}

/// Checks a prediction before it is written.
pub(crate) fn check_prediction(task: &str, start_s: f64, end_s: f64) -> Result<()> {
    if start_s.is_finite() && end_s.is_finite() && start_s >= 0.0 && end_s >= start_s {
        Ok(())
    } else {
        Err(Error::InvalidPrediction {
            task: task.to_string(),
            start_s,
            end_s,
        })
    }
}
