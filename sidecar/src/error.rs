//! The crate's one error type.
//!
//! Variants name what they concern (the artifact, the path, the event key) so a message printed
//! by the binary says where it happened. Errors from the cache layout and the history store are
//! kept as `#[source]`.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the sidecar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task description handed to the sidecar (`KFCACHE_TASK`, `--spec`) is invalid.
    #[error("invalid task description from {origin}: {reason}")]
    Spec { origin: String, reason: String },

    /// An artifact name or path that would leave the target directory.
    #[error("artifact {name:?}: path {path:?} escapes the target directory {target}")]
    PathEscape {
        name: String,
        path: String,
        target: PathBuf,
    },

    /// A symbolic link on the way to an artifact's path: following it could leave the target
    /// directory.
    #[error("artifact {name:?}: {link} on the way to {path:?} is a symbolic link; kfcache does not follow links inside the target directory {target}")]
    SymlinkEscape {
        name: String,
        path: String,
        link: PathBuf,
        target: PathBuf,
    },

    /// A local file operation failed.
    #[error("{op} {path} failed")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The cache or an artifact source failed.
    #[error("{context}")]
    Cache {
        context: String,
        #[source]
        source: Box<kfcache_prefetcher::Error>,
    },

    /// An event in the shared event space could not be read.
    #[error("event {key}: {reason}")]
    Event { key: String, reason: String },

    /// The history store failed.
    #[error("{context}")]
    Store {
        context: String,
        #[source]
        source: Box<kfcache_schema::Error>,
    },

    /// The process or GPU monitor failed.
    #[error("monitor: {0}")]
    Monitor(String),
}

impl Error {
    pub(crate) fn cache(
        context: impl Into<String>,
    ) -> impl FnOnce(kfcache_prefetcher::Error) -> Error {
        let context = context.into();
        move |source| Error::Cache {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
