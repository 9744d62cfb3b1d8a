//! kfcache's operations as a typed library: what the `kfcache` commands do, for any caller
//! (the command line, a controller, a test) to call with plain structs.
//!
//! - [`analysis`]: parse and validate pipeline files, store their analyses, and resolve a
//!   pipeline named by file or by stored name;
//! - [`evict`]: eviction of cached objects whose readers have all finished;
//! - [`predict`]: a stored pipeline's prediction from the history and sizes in the store;
//! - [`prefetch`]: a prefetch session — plan a pipeline's staging, then stage it once or
//!   follow a run until its GPU tasks have started — reporting through an [`prefetch::Observer`];
//! - [`units`]: sizes, durations and times as people write and read them.
//!
//! Nothing here parses flags or prints: operations return values and report progress as
//! events, which a caller renders (bars, JSON lines), counts (metrics) or forwards
//! (Kubernetes Events).

pub mod analysis;
pub mod error;
pub mod evict;
pub mod predict;
pub mod prefetch;
pub mod units;

pub use error::{Error, Result};
