//! The parser's one error type. Every variant names the file and, where it is known, the
//! 1-based line, so that `kfcache analyze` can point the user at the offending spot.

use std::fmt;
use std::path::PathBuf;

/// A position in a source file, printed as `file:line` (or `file` when the line is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Location {
    pub fn file(file: impl Into<PathBuf>) -> Location {
        Location {
            file: file.into(),
            line: None,
            column: None,
        }
    }

    pub fn at(file: impl Into<PathBuf>, line: Option<usize>) -> Location {
        Location {
            file: file.into(),
            line,
            column: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Everything that can be wrong with an input file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{at}: file is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { at: Location, size: u64, limit: u64 },

    #[error("{at}: invalid YAML: {message}")]
    Yaml { at: Location, message: String },

    #[error("{at}: empty document: the file holds no YAML document")]
    EmptyDocument { at: Location },

    #[error("{at}: not a workflow: kind `{kind}` is not an Argo Workflow, WorkflowTemplate, ClusterWorkflowTemplate, CronWorkflow or a KFP PipelineSpec")]
    NotAWorkflow { at: Location, kind: String },

    #[error("{at}: invalid {what}: {message}")]
    Invalid {
        at: Location,
        what: String,
        message: String,
    },

    #[error("{at}: pipeline `{pipeline}` has no entrypoint")]
    MissingEntrypoint { at: Location, pipeline: String },

    #[error("{at}: unknown template `{template}` referenced by `{referenced_by}`")]
    UnknownTemplate {
        at: Location,
        template: String,
        referenced_by: String,
    },

    #[error("{at}: task `{task}` depends on unknown task `{dependency}`")]
    UnknownDependency {
        at: Location,
        task: String,
        dependency: String,
    },

    #[error("{at}: duplicate task name `{task}`")]
    DuplicateTask { at: Location, task: String },

    #[error("{at}: dependency cycle: {}", cycle.join(" -> "))]
    Cycle { at: Location, cycle: Vec<String> },

    #[error("{at}: invalid depends expression `{expression}`: {message}")]
    DependsExpression {
        at: Location,
        expression: String,
        message: String,
    },

    #[error("{at}: template nesting deeper than {limit} levels at `{template}`")]
    TooDeep {
        at: Location,
        template: String,
        limit: usize,
    },

    /// One of the limits of [`crate::limits`] that keep hostile input from exhausting memory,
    /// time or the stack. `what` says what grew too large, `limit` the bound it broke.
    #[error("{at}: over a parser limit: {what} (the limit is {limit})")]
    LimitExceeded {
        at: Location,
        what: String,
        limit: String,
    },
}

impl Error {
    /// The location the error points at, if it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Io { .. } => None,
            Error::TooLarge { at, .. }
            | Error::Yaml { at, .. }
            | Error::EmptyDocument { at }
            | Error::NotAWorkflow { at, .. }
            | Error::Invalid { at, .. }
            | Error::MissingEntrypoint { at, .. }
            | Error::UnknownTemplate { at, .. }
            | Error::UnknownDependency { at, .. }
            | Error::DuplicateTask { at, .. }
            | Error::Cycle { at, .. }
            | Error::DependsExpression { at, .. }
            | Error::TooDeep { at, .. }
            | Error::LimitExceeded { at, .. } => Some(at),
        }
    }

    /// Whether the error is the input's fault (exit code 2) rather than the system's (exit 1).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, Error::Io { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
