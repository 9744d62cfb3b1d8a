//! What kfcache's end-to-end benchmark and fault tests are made of.
//!
//! - [`proxy`]: a TCP proxy in front of the S3 server that emulates remote storage (a
//!   token-bucket bandwidth cap, latency per request) and injects faults (slow, 5xx, stopped).
//! - [`stats`]: mean, standard deviation, 95 % confidence intervals and Welch's t-test.
//! - [`plots`]: box plots per arm and the Gantt chart of one replay.

pub mod plots;
pub mod proxy;
pub mod stats;
