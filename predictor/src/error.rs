//! The predictor's one error type. Status files are the only input it parses, so their errors
//! carry the file and, where it is known, the line; the rest say which schedule, timezone or
//! URI they were about.

use std::path::PathBuf;

/// Errors of the predictor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read the status file", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Status {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },

    #[error("{}{}: not valid YAML or JSON", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("invalid cron schedule `{schedule}`")]
    Cron {
        schedule: String,
        #[source]
        source: cron::error::Error,
    },

    #[error("unknown timezone `{timezone}`")]
    Timezone { timezone: String },

    #[error("pipeline `{pipeline}` has no cron schedule, so it has no next run")]
    NoSchedule { pipeline: String },

    #[error("cannot probe the size of `{uri}`")]
    Probe {
        uri: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("cannot draw the Gantt chart: {message}")]
    Chart { message: String },
}

/// `Result` with the predictor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
