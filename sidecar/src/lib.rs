//! kfcache inside the pipeline pod.
//!
//! - [`spec`]: what the sidecar knows about its task (`KFCACHE_TASK`, written by
//!   `kfcache inject`) and who it is (run, task, loop instance, attempt, node).
//! - [`init`]: `kfcache sidecar init` — materialises the task's inputs at the paths it expects,
//!   from Ignite when the cached copy is valid, else from the origin.
//! - [`watch`]: `kfcache sidecar watch` — detects when the main container's work really starts
//!   and ends (NVML's GPU process list when the library is present, else the process table).
//! - [`fill`]: on-demand filling of the cache by `init` (least recently used, within a budget).
//! - [`outputs`]: writes a finished task's declared outputs through to the cache.
//! - [`events`]: the event space in the cache that every pod publishes to.
//! - [`drain`]: turns drained events into task observations in the SQLite history.
//! - [`ranking`]: node list ranking (Algorithm 2 of the GPU task monitoring paper) from the
//!   nodes' reports.

pub mod contract;
pub mod drain;
pub mod error;
pub mod events;
pub mod fill;
pub mod init;
pub mod outputs;
pub mod ranking;
pub mod spec;
pub mod watch;

pub use error::{Error, Result};
pub use events::{Event, EventKind, EventLog, NodeReport};
pub use spec::{Identity, SpecInput, SpecOutput, TaskSpec, TASK_ENV};
