//! The contract between `kfcache inject`, which writes it into the pod specs of a workflow, and
//! the kfcache containers in those pods, which read it: the containers' names, the environment
//! variables, the pod annotations and the metrics port. Both sides take the names from here.

/// Name of the init container that materialises the inputs (`kfcache sidecar init`).
pub const INIT_CONTAINER: &str = "kfcache-init";
/// Name of the sidecar that watches the task (`kfcache sidecar watch`).
pub const WATCH_CONTAINER: &str = "kfcache-watch";

/// The task description, JSON ([`crate::TaskSpec`]).
pub const ENV_TASK: &str = crate::spec::TASK_ENV;
/// The run's name (the workflow's `metadata.name`).
pub const ENV_RUN: &str = "KFCACHE_RUN";
/// The Argo node name (`wf.outer(0:a).train(1)`), from the pod annotation
/// [`NODE_NAME_ANNOTATION`].
pub const ENV_NODE_NAME: &str = "KFCACHE_NODE_NAME";
/// The Kubernetes node the pod runs on (`spec.nodeName`).
pub const ENV_K8S_NODE: &str = "KFCACHE_K8S_NODE";
/// The pod's name (`metadata.name`).
pub const ENV_POD: &str = "KFCACHE_POD";
/// The run's Kubernetes namespace (`metadata.namespace`).
pub const ENV_RUN_NAMESPACE: &str = "KFCACHE_RUN_NAMESPACE";
/// The task's deadline, from the pod annotation [`DEADLINE_ANNOTATION`].
pub const ENV_DEADLINE: &str = "KFCACHE_DEADLINE";
/// Ignite addresses as seen from the pod.
pub const ENV_IGNITE: &str = "KFCACHE_IGNITE";
/// The prefix of every cache key, set only when one is named.
pub const ENV_KEY_PREFIX: &str = "KFCACHE_KEY_PREFIX";
/// How long the init container waits on the cache before it reads from the origin.
pub const ENV_CACHE_TIMEOUT: &str = "KFCACHE_CACHE_TIMEOUT";

/// The pod annotation where Argo puts the node name.
pub const NODE_NAME_ANNOTATION: &str = "workflows.argoproj.io/node-name";
/// The pod annotation (set in a template's `metadata.annotations`) holding a task's deadline.
pub const DEADLINE_ANNOTATION: &str = "kfcache.io/deadline";

/// The sidecar's `/metrics` port.
pub const METRICS_PORT: u16 = 9464;
/// Where the sidecar serves `/metrics` and `/healthz` unless told otherwise: every address,
/// [`METRICS_PORT`].
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9464";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_metrics_address_uses_the_metrics_port() {
        assert!(DEFAULT_METRICS_ADDR.ends_with(&format!(":{METRICS_PORT}")));
    }
}
