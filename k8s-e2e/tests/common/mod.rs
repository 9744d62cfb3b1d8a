//! Helpers of the tests against the real control plane: required environment, a namespace and
//! a fake node of the test's own, the node agent as a child process, and diagnostics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kfcache_k8s_e2e::cluster;
use kube::api::ApiResource;
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
    cluster::create(api, value).await.expect("create object");
}

/// A namespace with its `default` ServiceAccount (no controller-manager creates it).
pub async fn namespace(client: &Client, namespace: &str) {
    cluster::namespace(client, namespace)
        .await
        .expect("namespace");
}

#[allow(unused_imports)]
pub use cluster::{S3_SECRET, TAINT_KEY};

/// A fake node of this test only, annotated for kwok (which keeps it Ready when it runs) and
/// tainted so that no other test's pod lands on it.
pub async fn node(client: &Client, node: &str) {
    cluster::fake_node(client, node).await.expect("node");
}

/// Removes the test's node.
pub async fn remove_node(client: &Client, node: &str) {
    cluster::remove_node(client, node).await;
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
    cluster::workflow_resource()
}

pub fn task_result_resource() -> ApiResource {
    cluster::task_result_resource()
}

/// The namespace with what a kubelet-less cluster lacks: the default ServiceAccount, the
/// executor's RBAC, the S3 secret and the namespace's artifact repository.
pub async fn prepare_namespace(client: &Client, namespace: &str, endpoint: &str, bucket: &str) {
    cluster::prepare_namespace(client, namespace, endpoint, bucket)
        .await
        .expect("prepare namespace");
}

/// The S3 artifact repository at `endpoint` (`http://host:port`), as Argo's
/// `artifact-repositories` ConfigMap holds it, with the keys of [`S3_SECRET`].
pub fn repository_yaml(endpoint: &str, bucket: &str) -> String {
    cluster::repository_yaml(endpoint, bucket)
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
    let name = cluster::submit_workflow(client, namespace, workflow)
        .await
        .expect("submit workflow");
    let outcome = cluster::follow_workflow(
        client,
        namespace,
        &name,
        deadline,
        Duration::from_millis(250),
    )
    .await;
    match outcome {
        cluster::Outcome::Succeeded(wf) => (name, Ok(wf)),
        cluster::Outcome::Failed { message, last } => (name, Err((message, last))),
    }
}

/// The pods of a workflow.
pub async fn workflow_pods(client: &Client, namespace: &str, workflow: &str) -> Vec<Pod> {
    cluster::workflow_pods(client, namespace, workflow).await
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
