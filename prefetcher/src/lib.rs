//! kfcache-prefetcher: stages pipeline inputs into the cache before the GPU tasks that read
//! them start.
//!
//! Two seams, each a trait with an in-memory implementation for unit tests and a real one:
//!
//! - [`ArtifactSource`] — where bytes come from: [`ObjectStoreSource`] reads `s3://`, `gs://`,
//!   `az://`, `http(s)://`, `file://` and `pvc://` URIs through object_store.
//! - [`CacheSink`] — where bytes go: [`IgniteSink`] (Apache Ignite through kfcache-ignite) or
//!   [`MemorySink`].
//!
//! Between them, [`ObjectCache`] owns the cache layout (chunks, manifests written last,
//! checksums verified on every read, namespaced keys, cleanup of replaced and interrupted
//! writes) and [`stage_object`] copies one object with concurrent ranged reads overlapping
//! the chunk writes. One conformance suite per trait (in `tests/`) runs against every
//! implementation, including a real Ignite cluster and a real S3 server.

mod batch;
mod bounded;
mod error;
#[cfg(feature = "eviction-sim")]
pub mod evict_sim;
pub mod execute;
pub mod fill;
mod ignite;
mod layout;
pub mod lease;
pub mod lock;
mod manifest;
mod memory;
pub mod plan;
pub mod policy;
mod sink;
mod source;
mod stage;
#[cfg(feature = "testing")]
pub mod testing;

pub use batch::{
    stage_objects, stage_prefix, ObjectOutcome, ObjectStatus, PrefixOptions, StageObserver,
    StageSummary,
};
pub use bounded::BoundedSink;
pub use error::{Error, Result};
pub use ignite::{IgniteSink, IgniteSinkConfig};
pub use layout::{
    BatchObject, CheckReport, ChunkPutter, LayoutConfig, MissingChunk, ObjectCache, ObjectWriter,
    SweepReport, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE,
};
pub use manifest::{
    checksum, BatchEntry, BatchRecord, Manifest, PendingWrites, SourceVersion, WriteRecord,
    WriteState, CHECKSUM_ALGORITHM, MAX_PENDING_WRITES, MAX_RECORD_CHUNKS,
};
pub use memory::MemorySink;
pub use sink::{CacheSink, Space};
pub use source::{ArtifactSource, ObjectAttributes, ObjectStoreSource, SourceConfig, SourceObject};
pub use stage::{stage_listed_object, stage_object, stage_object_observed, StageOptions};
