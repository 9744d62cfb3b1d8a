//! The errors of kfcache's operations: which step failed, on what, and the library error
//! underneath.

/// What an operation reports when it fails.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline file could not be read or is not a valid pipeline
    /// ([`kfcache_parser::Error::is_invalid_input`] tells which).
    #[error(transparent)]
    Parse(Box<kfcache_parser::Error>),
    /// The history and analysis store failed.
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: Box<kfcache_schema::Error>,
    },
    /// The cache, the origin or the staging failed.
    #[error("{context}: {source}")]
    Prefetch {
        context: String,
        #[source]
        source: Box<kfcache_prefetcher::Error>,
    },
    /// The prediction could not be made (no schedule to anchor it, …).
    #[error(transparent)]
    Predict(Box<kfcache_predictor::Error>),
    /// A pipeline could not be encoded as JSON (for its content hash).
    #[error("cannot encode the pipeline: {0}")]
    Encode(#[from] serde_json::Error),
    /// A request the operation cannot carry out: an option out of range, a pipeline or run
    /// that is not stored.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether a pipeline file is not a valid pipeline (as opposed to unreadable).
    pub fn is_invalid_pipeline(&self) -> bool {
        matches!(self, Error::Parse(error) if error.is_invalid_input())
    }

    /// Whether the failure is bad input (a pipeline file, an option) rather than a failure of
    /// the store, the cache or the origin.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Error::Parse(error) => error.is_invalid_input(),
            Error::Invalid(_) => true,
            _ => false,
        }
    }
}

/// `Result` of kfcache's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to a store or cache error.
pub(crate) trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, kfcache_schema::Error> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Store {
            context: context(),
            source: Box::new(source),
        })
    }
}

impl<T> Context<T> for std::result::Result<T, kfcache_prefetcher::Error> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Prefetch {
            context: context(),
            source: Box::new(source),
        })
    }
}

impl From<kfcache_parser::Error> for Error {
    fn from(error: kfcache_parser::Error) -> Self {
        Error::Parse(Box::new(error))
    }
}

impl From<kfcache_predictor::Error> for Error {
    fn from(error: kfcache_predictor::Error) -> Self {
        Error::Predict(Box::new(error))
    }
}
