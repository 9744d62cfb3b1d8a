//! The crate's one error type. Every variant says what the store was doing (`context`) or
//! which pipeline, task or URI it was about, and keeps the underlying error as its source.

use std::path::PathBuf;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the directory `{path}` for the database")]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot open the database `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },

    #[error("cannot apply the schema migrations")]
    Migrate {
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error("database error while {context}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("cannot encode {what} as JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("pipeline `{pipeline}`: task `{task}` depends on `{dependency}`, which is not one of its tasks")]
    UnknownDependency {
        pipeline: String,
        task: String,
        dependency: String,
    },

    #[error("pipeline `{pipeline}` has {tasks} tasks but {times} predicted times were given")]
    TimesMismatch {
        pipeline: String,
        tasks: usize,
        times: usize,
    },

    #[error(
        "task `{task}`: predicted start {start_s} s and end {end_s} s are not a valid interval"
    )]
    InvalidPrediction {
        task: String,
        start_s: f64,
        end_s: f64,
    },

    #[error("no pipeline version with id {version_id}")]
    UnknownVersion { version_id: i64 },

    #[error("pipeline version {version_id} has no task `{task}`")]
    UnknownTask { version_id: i64, task: String },

    #[error("no data or directory with URI `{uri}`")]
    UnknownUri { uri: String },

    #[error("{what} {value} does not fit in a database integer")]
    OutOfRange { what: &'static str, value: u64 },

    #[error("unexpected value in {table}.{column}: {value:?}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        value: String,
    },
}

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach "while …" context to a `sqlx` result.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T> {
        self.map_err(|source| Error::Database { context, source })
    }
}
