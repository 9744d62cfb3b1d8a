//! Helpers of the tests against the real control plane: required environment, a namespace and
//! a fake node of the test's own, the node agent as a child process, and diagnostics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ApiResource, GroupVersionKind};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rand::{Rng, SeedableRng};

/// A required variable; the test fails with a clear message when it is missing.
pub fn env(variable: &str, what: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{variable} is not set. This test needs {what}: run `scripts/k8s.sh up && eval \"$(scripts/k8s.sh env)\"` \
             and `scripts/services.sh up && eval \"$(scripts/services.sh env)\"` before `cargo test -p kfcache-k8s-e2e`."
        ),
    }
}

/// A client of the test cluster (KUBECONFIG from `scripts/k8s.sh env`).
pub async fn client() -> Client {
    let _ = env("KUBECONFIG", "the real control plane");
    kfcache_k8s_e2e::install_crypto_provider();
    Client::try_default()
        .await
        .expect("Kubernetes client from KUBECONFIG")
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let mut rng = rand::rngs::StdRng::from_entropy();
    format!("{prefix}-{:08x}", rng.gen::<u32>())
}

/// Creates an object, tolerating one that exists.
pub async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("object");
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating {object:?}: {e}"),
    }
}

/// A namespace with its `default` ServiceAccount (no controller-manager creates it).
pub async fn namespace(client: &Client, namespace: &str) {
    create(
        &Api::<Namespace>::all(client.clone()),
        serde_json::json!({"metadata": {"name": namespace}}),
    )
    .await;
    create(
        &Api::<ServiceAccount>::namespaced(client.clone(), namespace),
        serde_json::json!({"metadata": {"name": "default"}}),
    )
    .await;
}

/// The Secret with the S3 keys that the namespace's artifact repository names.
pub const S3_SECRET: &str = "kfcache-s3";

/// The taint that keeps other pods off a test's own node; pods of the test tolerate it.
pub const TAINT_KEY: &str = "kfcache.io/e2e";

/// A fake node of this test only, annotated for kwok (which keeps it Ready when it runs) and
/// tainted so that no other test's pod lands on it.
pub async fn node(client: &Client, node: &str) {
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
    .await;
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
        eprintln!("node {node} status: {e} (kwok may own it)");
    }
}

/// Removes the test's node.
pub async fn remove_node(client: &Client, node: &str) {
    let _ = Api::<Node>::all(client.clone())
        .delete(node, &Default::default())
        .await;
}

/// The agent flags that map Argo's executor image to the locally built `argoexec`
/// (`KFCACHE_TEST_K8S_BIN` from `scripts/k8s.sh env`).
pub fn argoexec_image_bin() -> [String; 2] {
    let bin = PathBuf::from(env("KFCACHE_TEST_K8S_BIN", "the locally built argoexec"));
    assert!(
        bin.join("argoexec").is_file(),
        "{}/argoexec does not exist: KFCACHE_TEST_K8S_BIN must be the directory of the built Argo binaries",
        bin.display()
    );
    [
        "--image-bin".to_string(),
        format!("quay.io/argoproj/argoexec={}", bin.display()),
    ]
}

/// The agent process; SIGTERM, then SIGKILL, when dropped.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
    pub state_dir: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kfcache-node-agent` for `node`, with extra flags.
pub fn start_agent(node: &str, work: &Path, extra: &[String]) -> Agent {
    let state_dir = work.join("state");
    let log = work.join("agent.log");
    let log_file = std::fs::File::create(&log).expect("agent log file");
    let child = Command::new(env!("CARGO_BIN_EXE_kfcache-node-agent"))
        .args(["--node", node, "--state-dir"])
        .arg(&state_dir)
        .args(extra)
        .env("KFCACHE_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone().expect("log clone")))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start kfcache-node-agent");
    Agent {
        child,
        log,
        state_dir,
    }
}

/// The agent's log and every container log it wrote.
pub fn agent_logs(agent: &Agent) -> String {
    let mut out = format!("=== agent log {}\n", agent.log.display());
    out.push_str(&std::fs::read_to_string(&agent.log).unwrap_or_default());
    if let Ok(entries) = std::fs::read_dir(agent.state_dir.join("pods")) {
        for pod in entries.flatten() {
            if let Ok(logs) = std::fs::read_dir(pod.path().join("logs")) {
                for log in logs.flatten() {
                    out.push_str(&format!("=== {}\n", log.path().display()));
                    out.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
                }
            }
        }
    }
    out
}

/// The log of one container of a pod run by `agent`.
pub fn container_log(agent: &Agent, pod: &Pod, container: &str) -> String {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let path = agent
        .state_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{uid}"))
        .join("logs")
        .join(format!("{container}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls the pod until `done` says so or `timeout` passes.
pub async fn wait_pod(
    api: &Api<Pod>,
    name: &str,
    timeout: Duration,
    done: impl Fn(Option<&Pod>) -> bool,
) -> Result<Option<Pod>, Option<Pod>> {
    let started = Instant::now();
    loop {
        let pod = api.get_opt(name).await.ok().flatten();
        if done(pod.as_ref()) {
            return Ok(pod);
        }
        if started.elapsed() > timeout {
            return Err(pod);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The phase of a pod.
pub fn phase(pod: Option<&Pod>) -> String {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

pub fn workflow_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    )
}

pub fn task_result_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "WorkflowTaskResult"),
        "workflowtaskresults",
    )
}

/// The namespace with what a kubelet-less cluster lacks: the default ServiceAccount, the
/// executor's RBAC, the S3 secret and the namespace's artifact repository.
pub async fn prepare_namespace(client: &Client, namespace: &str, endpoint: &str, bucket: &str) {
    self::namespace(client, namespace).await;
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
    .await;
    create(
        &Api::<RoleBinding>::namespaced(client.clone(), namespace),
        serde_json::json!({
            "metadata": {"name": "argo-executor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "argo-executor"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]
        }),
    )
    .await;
    let access = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".into());
    create(
        &Api::<Secret>::namespaced(client.clone(), namespace),
        serde_json::json!({"metadata": {"name": S3_SECRET}, "stringData": {"accessKey": access, "secretKey": secret}}),
    )
    .await;
    let repository = repository_yaml(endpoint, bucket);
    create(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        serde_json::json!({
            "metadata": {"name": "artifact-repositories",
                         "annotations": {"workflows.argoproj.io/default-artifact-repository": "default-v1"}},
            "data": {"default-v1": repository}
        }),
    )
    .await;
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

/// Submits a workflow and polls it until it ends or `deadline` passes: the final object when it
/// succeeded, else what went wrong with the last object seen.
pub async fn run_workflow(
    client: &Client,
    namespace: &str,
    workflow: serde_json::Value,
    deadline: Duration,
) -> (
    String,
    Result<serde_json::Value, (String, Option<serde_json::Value>)>,
) {
    let workflows: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &workflow_resource());
    let object: kube::api::DynamicObject =
        serde_json::from_value(workflow).expect("workflow object");
    let name = workflows
        .create(&PostParams::default(), &object)
        .await
        .expect("submit workflow")
        .metadata
        .name
        .expect("workflow name");
    let started = Instant::now();
    let mut last = None;
    loop {
        if let Ok(wf) = workflows.get(&name).await {
            let value = serde_json::to_value(&wf).unwrap_or_default();
            match value["status"]["phase"].as_str().unwrap_or_default() {
                "Succeeded" => return (name, Ok(value)),
                phase @ ("Failed" | "Error") => {
                    let message = format!("workflow {name} ended {phase}");
                    return (name, Err((message, Some(value))));
                }
                _ => last = Some(value),
            }
        }
        if started.elapsed() > deadline {
            let message = format!("workflow {name} did not finish within {deadline:?}");
            return (name, Err((message, last)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pods of a workflow.
pub async fn workflow_pods(client: &Client, namespace: &str, workflow: &str) -> Vec<Pod> {
    let selector = format!("workflows.argoproj.io/workflow={workflow}");
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Everything a reader needs when the test fails.
pub fn diagnostics(agent: &Agent, workflow: Option<&serde_json::Value>, pods: &[Pod]) -> String {
    let mut out = agent_logs(agent);
    if let Some(workflow) = workflow {
        out.push_str(&format!(
            "=== workflow status\n{}\n",
            serde_yaml::to_string(&workflow["status"]).unwrap_or_default()
        ));
    }
    for pod in pods {
        out.push_str(&format!(
            "=== pod {} status\n{}\n",
            pod.metadata.name.as_deref().unwrap_or_default(),
            serde_yaml::to_string(&pod.status).unwrap_or_default()
        ));
    }
    out
}
