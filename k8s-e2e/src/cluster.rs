//! What a run on the test control plane needs from the API beside the node agent: a namespace
//! prepared the way a kubelet-less cluster lacks (default ServiceAccount, the executor's RBAC,
//! the S3 Secret, the artifact repository), a fake GPU node of the caller's own, and submitting
//! an Argo Workflow and following it to its end. The control-plane tests and
//! `kfcache-cluster-bench` share them.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};

use crate::error::{Error, Result};

/// The Secret with the S3 keys that the namespace's artifact repository names.
pub const S3_SECRET: &str = "kfcache-s3";

/// The taint that keeps other pods off a caller's own node; the caller's pods tolerate it.
pub const TAINT_KEY: &str = "kfcache.io/e2e";

/// Creates an object, tolerating one that exists.
pub async fn create<K>(api: &Api<K>, value: serde_json::Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value)
        .map_err(|e| Error::Invalid(format!("not a {}: {e}", std::any::type_name::<K>())))?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("create {object:?}"))(e)),
    }
}

/// A namespace with its `default` ServiceAccount (no controller-manager creates it).
pub async fn namespace(client: &Client, namespace: &str) -> Result<()> {
    create(
        &Api::<Namespace>::all(client.clone()),
        serde_json::json!({"metadata": {"name": namespace}}),
    )
    .await?;
    create(
        &Api::<ServiceAccount>::namespaced(client.clone(), namespace),
        serde_json::json!({"metadata": {"name": "default"}}),
    )
    .await
}

/// Deletes a namespace (its objects go with it); a missing one is fine.
pub async fn delete_namespace(client: &Client, namespace: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(namespace, &Default::default())
        .await;
}

/// A fake node of the caller's only, annotated for kwok (which keeps it Ready when it runs)
/// and tainted with [`TAINT_KEY`] so that nobody else's pod lands on it: 32 CPUs, 256 GiB and
/// 8 GPUs (`nvidia.com/gpu`).
pub async fn fake_node(client: &Client, node: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let capacity =
        serde_json::json!({"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"});
    create(
        &nodes,
        serde_json::json!({
            "metadata": {"name": node,
                         "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": node, "type": "kwok"}},
            "spec": {"taints": [{"key": TAINT_KEY, "value": node, "effect": "NoSchedule"}]},
            "status": {"capacity": capacity, "allocatable": capacity}
        }),
    )
    .await?;
    let status = serde_json::json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kfcache test node agent", "lastHeartbeatTime": null}]
    }});
    if let Err(e) = nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        tracing::info!(node, error = %e, "node status not written (kwok may own it)");
    }
    Ok(())
}

/// Removes a node; a missing one is fine.
pub async fn remove_node(client: &Client, node: &str) {
    let _ = Api::<Node>::all(client.clone())
        .delete(node, &Default::default())
        .await;
}

/// Argo's Workflow resource.
pub fn workflow_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    )
}

/// Argo's WorkflowTaskResult resource (what the `wait` container writes).
pub fn task_result_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "WorkflowTaskResult"),
        "workflowtaskresults",
    )
}

/// The namespace with what a kubelet-less cluster lacks: the default ServiceAccount, the
/// executor's RBAC, the S3 Secret (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, else moto's
/// `testing`) and the namespace's default artifact repository at `endpoint` in `bucket`.
pub async fn prepare_namespace(
    client: &Client,
    namespace: &str,
    endpoint: &str,
    bucket: &str,
) -> Result<()> {
    self::namespace(client, namespace).await?;
    create(
        &Api::<Role>::namespaced(client.clone(), namespace),
        serde_json::json!({
            "metadata": {"name": "argo-executor"},
            "rules": [
                {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"],
                 "verbs": ["create", "patch", "get", "list", "watch", "update"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "watch"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
            ]
        }),
    )
    .await?;
    create(
        &Api::<RoleBinding>::namespaced(client.clone(), namespace),
        serde_json::json!({
            "metadata": {"name": "argo-executor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "argo-executor"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]
        }),
    )
    .await?;
    let access = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".into());
    create(
        &Api::<Secret>::namespaced(client.clone(), namespace),
        serde_json::json!({"metadata": {"name": S3_SECRET}, "stringData": {"accessKey": access, "secretKey": secret}}),
    )
    .await?;
    create(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        serde_json::json!({
            "metadata": {"name": "artifact-repositories",
                         "annotations": {"workflows.argoproj.io/default-artifact-repository": "default-v1"}},
            "data": {"default-v1": repository_yaml(endpoint, bucket)}
        }),
    )
    .await
}

/// The S3 artifact repository at `endpoint` (`http://host:port`), as Argo's
/// `artifact-repositories` ConfigMap holds it, with the keys of [`S3_SECRET`].
pub fn repository_yaml(endpoint: &str, bucket: &str) -> String {
    let host = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    format!(
        "s3:\n  endpoint: {host}\n  bucket: {bucket}\n  insecure: true\n  region: us-east-1\n  \
         accessKeySecret: {{name: {S3_SECRET}, key: accessKey}}\n  secretKeySecret: {{name: {S3_SECRET}, key: secretKey}}\n"
    )
}

/// How a followed workflow ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It succeeded: the final object.
    Succeeded(serde_json::Value),
    /// It failed, errored or ran past the deadline: why, with the last object seen.
    Failed {
        message: String,
        last: Option<serde_json::Value>,
    },
}

/// Submits a workflow; returns its name (the object's `name`, or the one the API server
/// generated).
pub async fn submit_workflow(
    client: &Client,
    namespace: &str,
    workflow: serde_json::Value,
) -> Result<String> {
    let workflows: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &workflow_resource());
    let object: DynamicObject = serde_json::from_value(workflow)
        .map_err(|e| Error::Invalid(format!("not a Workflow object: {e}")))?;
    workflows
        .create(&PostParams::default(), &object)
        .await
        .map_err(Error::kube(format!("submit a workflow in {namespace}")))?
        .metadata
        .name
        .ok_or_else(|| Error::Invalid("the API server gave the workflow no name".into()))
}

/// Polls a workflow every `every` until it ends or `deadline` passes.
pub async fn follow_workflow(
    client: &Client,
    namespace: &str,
    name: &str,
    deadline: Duration,
    every: Duration,
) -> Outcome {
    let workflows: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &workflow_resource());
    let started = Instant::now();
    let mut last = None;
    loop {
        if let Ok(wf) = workflows.get(name).await {
            let value = serde_json::to_value(&wf).unwrap_or_default();
            match value["status"]["phase"].as_str().unwrap_or_default() {
                "Succeeded" => return Outcome::Succeeded(value),
                phase @ ("Failed" | "Error") => {
                    return Outcome::Failed {
                        message: format!(
                            "workflow {name} ended {phase}: {}",
                            value["status"]["message"].as_str().unwrap_or_default()
                        ),
                        last: Some(value),
                    }
                }
                _ => last = Some(value),
            }
        }
        if started.elapsed() > deadline {
            return Outcome::Failed {
                message: format!("workflow {name} did not finish within {deadline:?}"),
                last,
            };
        }
        tokio::time::sleep(every).await;
    }
}

/// The pods of a workflow.
pub async fn workflow_pods(client: &Client, namespace: &str, workflow: &str) -> Vec<Pod> {
    let selector = format!("workflows.argoproj.io/workflow={workflow}");
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}
