//! The crate's one error type.
//!
//! Every variant names what it concerns — the artifact URI, the cache key, the chunk index —
//! so that an error printed at the top of the binary says where it happened without a
//! backtrace. Errors from the Ignite client and from object_store are kept as `#[source]`.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong staging and reading cached artifacts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An artifact URI that kfcache cannot read from.
    #[error("invalid artifact URI {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },

    /// A source could not be configured (missing endpoint, unknown PVC claim, ...).
    #[error("cannot read {uri}: {reason}")]
    SourceConfig { uri: String, reason: String },

    /// The artifact source failed.
    #[error("{op} {uri} failed")]
    Source {
        op: &'static str,
        uri: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// The artifact does not exist at its source.
    #[error("{uri} does not exist")]
    SourceNotFound {
        uri: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// The artifact changed at its source while it was being staged.
    #[error("{uri} changed while it was being staged (version {version} no longer current)")]
    SourceChanged { uri: String, version: String },

    /// A ranged read returned another number of bytes than asked for.
    #[error("reading bytes {start}..{end} of {uri} returned {got} bytes")]
    ShortRead {
        uri: String,
        start: u64,
        end: u64,
        got: usize,
    },

    /// The cache sink (the Ignite cluster) failed.
    #[error("cache {op} failed{}", key_suffix(.key))]
    Sink {
        op: &'static str,
        key: Option<String>,
        #[source]
        source: Box<kfcache_ignite::Error>,
    },

    /// An object is not in the cache.
    #[error("{uri} is not in the cache")]
    NotCached { uri: String },

    /// The cache did not answer within a caller's bound, now or at an earlier operation
    /// (see [`BoundedSink`](crate::BoundedSink)).
    #[error("cache {op} {}", unresponsive_detail(*.timeout, *.earlier))]
    Unresponsive {
        op: &'static str,
        timeout: std::time::Duration,
        /// The cache went silent at an earlier operation and this one was not tried.
        earlier: bool,
    },

    /// A chunk named by the manifest is gone (evicted, or replaced by a newer write and retried
    /// without success).
    #[error("chunk {chunk} of cached {uri} is missing (key {key:?})")]
    ChunkMissing {
        uri: String,
        chunk: u64,
        key: String,
    },

    /// A chunk's bytes do not match the checksum its manifest records.
    #[error("chunk {chunk} of cached {uri} is corrupted: checksum {actual}, manifest says {expected} (key {key:?})")]
    ChunkCorrupted {
        uri: String,
        chunk: u64,
        key: String,
        expected: String,
        actual: String,
    },

    /// The whole object does not match its checksum although every chunk did.
    #[error("cached {uri} is corrupted: object checksum {actual}, manifest says {expected}")]
    ObjectCorrupted {
        uri: String,
        expected: String,
        actual: String,
    },

    /// A manifest or write record in the cache cannot be decoded.
    #[error("cache entry {key:?} is not a valid {what}")]
    BadMetadata {
        key: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A manifest that contradicts itself (chunk count does not match the size).
    #[error("manifest of cached {uri} is inconsistent: {reason}")]
    BadManifest { uri: String, reason: String },

    /// Local file I/O (writing a downloaded object).
    #[error("{op} {path} failed")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Invalid settings handed to the library.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A background task of this crate failed to complete.
    #[error("internal task failed while {what}: {message}")]
    Task { what: &'static str, message: String },
}

fn unresponsive_detail(timeout: std::time::Duration, earlier: bool) -> String {
    if earlier {
        format!("not tried: the cache gave no answer within {timeout:?} before (not asked again)")
    } else {
        format!("gave no answer within {timeout:?}")
    }
}

fn key_suffix(key: &Option<String>) -> String {
    match key {
        Some(key) => format!(" for key {key:?}"),
        None => String::new(),
    }
}

impl Error {
    /// Whether trying again may succeed: a source failure other than "not found", "denied"
    /// or a failed precondition (5xx answers and timeouts after object_store's own retries),
    /// a lost connection to the cache, a short read, a failed background task.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Source { source, .. } => !matches!(
                **source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            Error::Sink { .. } | Error::ShortRead { .. } | Error::Task { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn sink(op: &'static str, key: Option<&str>, source: kfcache_ignite::Error) -> Self {
        Error::Sink {
            op,
            key: key.map(str::to_string),
            source: Box::new(source),
        }
    }

    pub(crate) fn source(op: &'static str, uri: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Error::SourceNotFound {
                uri: uri.to_string(),
                source: Box::new(source),
            },
            other => Error::Source {
                op,
                uri: uri.to_string(),
                source: Box::new(other),
            },
        }
    }
}
