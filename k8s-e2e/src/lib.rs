//! A test node agent that stands in for the kubelet, so that the pods a real control plane
//! schedules onto fake (kwok) nodes really run.
//!
//! kfcache's end-to-end tests run a real kube-apiserver, kube-scheduler and Argo
//! workflow-controller, but no kubelet and no container runtime. This crate fills that gap
//! for tests only: [`agent::run`] watches the pods bound to the nodes it manages, prepares their
//! volumes under a state directory, runs every container as a local process in its own mount
//! and PID namespaces (a tmpfs root with the host's read-only system directories bound in, then
//! the pod's volume mounts, then `chroot`), and writes the pod status back through the status subresource,
//! the way the kubelet does. Images do not exist: an image maps to a directory of host binaries
//! (see [`config::ImageMapping`]).
//!
//! The mount work is done by util-linux tools (`unshare`, `mount`, `chroot`) driven by a small
//! generated shell prelude ([`sandbox`]), because the workspace forbids `unsafe` code.

pub mod agent;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod env;
pub mod error;
pub mod expand;
pub mod kubelet_api;
pub mod pod;
pub mod quantity;
pub mod sandbox;
pub mod sources;
pub mod status;
pub mod volumes;

pub use config::{AgentConfig, ImageMapping};
pub use error::{Error, Result};

/// Makes `ring` the process's TLS provider before any Kubernetes client is built. In a
/// workspace build rustls has both `ring` and `aws-lc-rs` (which the S3 gateway's AWS SDK
/// brings), and then it cannot choose one by itself: kube's client would panic. Calling it
/// again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
