//! What kfcache's end-to-end benchmarks and fault tests are made of.
//!
//! - [`proxy`]: a TCP proxy in front of the S3 server that emulates remote storage (a
//!   token-bucket bandwidth cap, latency per request) and injects faults (slow, 5xx, stopped).
//! - [`stats`]: mean, standard deviation, 95 % confidence intervals and Welch's t-test.
//! - [`plots`]: box plots per arm and the Gantt chart of one run.
//! - [`replay`]: the benchmark's profile (sizes and compute times) and its objects' bytes.
//! - [`e2e_report`]: the end-to-end report (statistics, plots, the last line) shared by the
//!   replay (`kfcache bench e2e`) and the benchmark on the real control plane.
//! - [`units`]: sizes as flags and reports spell them (kfcache-ops' units).

pub mod e2e_report;
pub mod plots;
pub mod proxy;
pub mod replay;
pub mod stats;
pub use kfcache_ops::units;
