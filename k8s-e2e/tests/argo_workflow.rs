//! A real Argo Workflow, run end to end on the real control plane with the test node agent as
//! the kubelet: task A reads an S3 input artifact and writes its sha256 as an output artifact,
//! task B consumes it with `from:` plus a directory input artifact and writes an output
//! parameter while a sidecar runs until Argo's controller stops it with `pods/exec`. Argo's own
//! `argoexec` (init, wait, emissary) does Argo's part in the pods.
//!
//! Needs `scripts/k8s.sh up && eval "$(scripts/k8s.sh env)"` (KUBECONFIG, KFCACHE_TEST_K8S_BIN)
//! and `scripts/services.sh up && eval "$(scripts/services.sh env)"` (S3); fails with a clear
//! message when either is missing.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    diagnostics, env, prepare_namespace, start_agent, task_result_resource, unique,
    workflow_resource,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::Api;
use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

fn workflow(node: &str, input_key: &str, dir_key: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "kfcache-e2e-"},
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": "default",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": common::TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
            "templates": [
                {"name": "main", "dag": {"tasks": [
                    {"name": "a", "template": "digest"},
                    {"name": "b", "template": "consume", "dependencies": ["a"],
                     "arguments": {"artifacts": [{"name": "digest", "from": "{{tasks.a.outputs.artifacts.digest}}"}]}}
                ]}},
                {"name": "digest",
                 "inputs": {"artifacts": [{"name": "data", "path": "/tmp/inputs/data", "s3": {"key": input_key}}]},
                 "outputs": {"artifacts": [{"name": "digest", "path": "/tmp/outputs/digest"}]},
                 "container": {"image": "alpine:3", "command": ["sh", "-c"],
                               "args": ["mkdir -p /tmp/outputs && sha256sum /tmp/inputs/data | cut -d' ' -f1 > /tmp/outputs/digest && cat /tmp/outputs/digest"]}},
                {"name": "consume",
                 "inputs": {"artifacts": [
                     {"name": "digest", "path": "/tmp/inputs/digest"},
                     {"name": "dir", "path": "/tmp/inputs/dir", "s3": {"key": dir_key}}
                 ]},
                 "outputs": {"parameters": [{"name": "result", "valueFrom": {"path": "/tmp/outputs/result"}}]},
                 // Runs until Argo's controller stops it through pods/exec (`argoexec kill 15 1`),
                 // which the agent's kubelet endpoint serves.
                 "sidecars": [{"name": "side", "image": "busybox", "command": ["sh", "-c"],
                               "args": ["trap 'echo side-got-TERM; exit 0' TERM; while true; do sleep 0.1; done"]}],
                 "container": {"image": "alpine:3", "command": ["sh", "-c"],
                               "args": ["mkdir -p /tmp/outputs && echo \"$(cat /tmp/inputs/digest) $(ls /tmp/inputs/dir | wc -l) $(cat /tmp/inputs/dir/a.txt)\" > /tmp/outputs/result && cat /tmp/outputs/result"]}}
            ]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_workflow_with_s3_artifacts_runs_on_the_node_agent() {
    let client = common::client().await;
    let argo = common::argoexec_image_bin();
    let endpoint = env("KFCACHE_TEST_S3_ENDPOINT", "the S3 server");
    let bucket = env("KFCACHE_TEST_S3_BUCKET", "the S3 server");

    // Input data in S3 under a key no other run uses.
    let run = unique("e2e");
    let store = AmazonS3Builder::from_env()
        .with_endpoint(&endpoint)
        .with_bucket_name(&bucket)
        .with_allow_http(true)
        .with_region("us-east-1")
        .build()
        .expect("S3 client");
    let mut data = vec![0u8; 256 * 1024];
    rand::rngs::StdRng::from_entropy().fill(&mut data[..]);
    let expected = hex::encode(Sha256::digest(&data));
    let input_key = format!("kfcache-k8s-e2e/{run}/input.bin");
    let dir_key = format!("kfcache-k8s-e2e/{run}/dir");
    store
        .put(&input_key.as_str().into(), data.clone().into())
        .await
        .expect("put input");
    store
        .put(
            &format!("{dir_key}/a.txt").as_str().into(),
            b"hello".to_vec().into(),
        )
        .await
        .expect("put a.txt");
    store
        .put(
            &format!("{dir_key}/b.txt").as_str().into(),
            b"world".to_vec().into(),
        )
        .await
        .expect("put b.txt");

    let namespace = run.clone();
    let node = format!("kfcache-{run}");
    prepare_namespace(&client, &namespace, &endpoint, &bucket).await;
    common::node(&client, &node).await;
    let work = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(&node, work.path(), &argo);

    // Argo deletes a workflow's WorkflowTaskResults once it completes (operator.go, `deleteTaskResults`
    // after `Status.Fulfilled()`), so they are recorded while it runs.
    let seen_results: Arc<Mutex<BTreeMap<String, DynamicObject>>> = Arc::default();
    let recorder = {
        let seen = seen_results.clone();
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &namespace,
            &task_result_resource(),
        );
        tokio::spawn(async move {
            let stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default());
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(
                    kube::runtime::watcher::Event::Apply(o)
                    | kube::runtime::watcher::Event::InitApply(o),
                ) = event
                {
                    if let (Some(name), Ok(mut seen)) = (o.metadata.name.clone(), seen.lock()) {
                        seen.insert(name, o);
                    }
                }
            }
        })
    };
    let workflows: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &workflow_resource());
    let object: DynamicObject =
        serde_json::from_value(workflow(&node, &input_key, &dir_key)).expect("workflow");
    let created = workflows
        .create(&PostParams::default(), &object)
        .await
        .expect("submit workflow");
    let name = created.metadata.name.clone().expect("workflow name");
    let selector = format!("workflows.argoproj.io/workflow={name}");

    let started = Instant::now();
    let deadline = Duration::from_secs(120);
    let mut last: Option<serde_json::Value> = None;
    let outcome: Result<serde_json::Value, String> = loop {
        match workflows.get(&name).await {
            Ok(wf) => {
                let value = serde_json::to_value(&wf).unwrap_or_default();
                let phase = value["status"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                last = Some(value.clone());
                match phase.as_str() {
                    "Succeeded" => break Ok(value),
                    "Failed" | "Error" => break Err(format!("workflow {name} ended {phase}")),
                    _ => {}
                }
            }
            Err(e) => eprintln!("get workflow: {e}"),
        }
        if started.elapsed() > deadline {
            break Err(format!(
                "workflow {name} did not finish within {deadline:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let checked = outcome.and_then(|wf| check(&wf, &pods, &expected));
    recorder.abort();
    let results: Vec<DynamicObject> = seen_results
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let checked = checked.and_then(|()| {
        let mine: Vec<&DynamicObject> = results
            .iter()
            .filter(|r| {
                r.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("workflows.argoproj.io/workflow"))
                    == Some(&name)
            })
            .collect();
        if mine.len() != 2 {
            return Err(format!(
                "expected 2 WorkflowTaskResults written by the wait containers, saw {}",
                mine.len()
            ));
        }
        for result in &mine {
            let labels = result.metadata.labels.clone().unwrap_or_default();
            if labels
                .get("workflows.argoproj.io/report-outputs-completed")
                .map(String::as_str)
                != Some("true")
            {
                return Err(format!(
                    "WorkflowTaskResult {:?} never completed: {labels:?}",
                    result.metadata.name
                ));
            }
        }
        let with_result = mine.iter().any(|r| {
            r.data["outputs"]["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "result"))
        });
        if !with_result {
            return Err("no WorkflowTaskResult carries task b's output parameter".into());
        }
        Ok(())
    });
    if let Err(message) = checked {
        common::remove_node(&client, &node).await;
        panic!(
            "{message} (after {:?})\n{}",
            started.elapsed(),
            diagnostics(&agent, last.as_ref(), &pods)
        );
    }
    eprintln!("workflow {name} succeeded in {:?}", started.elapsed());
    // The namespace stays (no namespace controller runs); the node goes.
    common::remove_node(&client, &node).await;
}

/// Checks the output parameter (digest seen by main, directory listing) and the pods' statuses.
fn check(workflow: &serde_json::Value, pods: &[Pod], expected: &str) -> Result<(), String> {
    let nodes = workflow["status"]["nodes"]
        .as_object()
        .ok_or("workflow has no nodes")?;
    let b = nodes
        .values()
        .find(|n| n["displayName"] == "b")
        .ok_or("workflow has no node b")?;
    let result = b["outputs"]["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "result"))
        .and_then(|p| p["value"].as_str())
        .ok_or("task b has no output parameter result")?;
    let want = format!("{expected} 2 hello");
    if result.trim() != want {
        return Err(format!("task b's result is {result:?}, expected {want:?}"));
    }
    if pods.len() != 2 {
        return Err(format!("expected 2 pods, found {}", pods.len()));
    }
    for pod in pods {
        let status = pod.status.as_ref().ok_or("pod without status")?;
        for container in status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
        {
            let code = container
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code);
            // A sidecar ends by the signal Argo sends it; main, wait and init must exit 0.
            let ok = if container.name == "side" {
                code.is_some()
            } else {
                code == Some(0)
            };
            if !ok {
                return Err(format!(
                    "pod {:?} container {:?} is not terminated with exit 0: {:?}",
                    pod.metadata.name, container.name, container.state
                ));
            }
        }
    }
    Ok(())
}

/// `spec.shutdown: Terminate` makes Argo's controller stop the running pod with
/// `pods/exec … argoexec kill 15 1` (exec_control.go → pod/queue.go `signalContainers` →
/// signal.go `SignalContainer`); the agent's kubelet endpoint delivers the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_workflow_stops_its_pod_through_pods_exec() {
    let client = common::client().await;
    let argo = common::argoexec_image_bin();
    let endpoint = env("KFCACHE_TEST_S3_ENDPOINT", "the S3 server");
    let bucket = env("KFCACHE_TEST_S3_BUCKET", "the S3 server");
    let namespace = unique("e2e-stop");
    let node = format!("kfcache-{namespace}");
    prepare_namespace(&client, &namespace, &endpoint, &bucket).await;
    common::node(&client, &node).await;
    let work = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(&node, work.path(), &argo);
    let workflows: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &workflow_resource());
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "kfcache-stop-"},
        "spec": {
            "entrypoint": "forever",
            "serviceAccountName": "default",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": common::TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
            "templates": [{"name": "forever", "container": {"image": "busybox", "command": ["sh", "-c"],
                "args": ["trap 'echo main-got-TERM; exit 143' TERM; echo main-started; while true; do sleep 0.1; done"]}}]
        }
    }))
    .expect("workflow");
    let name = workflows
        .create(&PostParams::default(), &object)
        .await
        .expect("submit workflow")
        .metadata
        .name
        .expect("name");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("workflows.argoproj.io/workflow={name}");
    let started = Instant::now();
    let mut failure: Option<String> = None;
    // Wait until main's command runs (it says so once its TERM trap is set; before that a
    // signal would find Argo's emissary still starting), then terminate the workflow.
    loop {
        let running = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .any(|p| common::container_log(&agent, p, "main").contains("main-started"))
            })
            .unwrap_or(false);
        if running {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            failure = Some("main never ran".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut last = None;
    if failure.is_none() {
        let patch = serde_json::json!({"spec": {"shutdown": "Terminate"}});
        workflows
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("terminate workflow");
        failure = loop {
            let wf = workflows
                .get(&name)
                .await
                .ok()
                .and_then(|w| serde_json::to_value(w).ok());
            let phase = wf
                .as_ref()
                .and_then(|w| w["status"]["phase"].as_str().map(str::to_string));
            last = wf;
            let pod_done = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map(|l| {
                    !l.items.is_empty()
                        && l.items.iter().all(|p| {
                            common::phase(Some(p)) == "Failed"
                                && p.status
                                    .as_ref()
                                    .and_then(|s| s.container_statuses.as_ref())
                                    .and_then(|c| c.iter().find(|c| c.name == "main"))
                                    .and_then(|c| c.state.as_ref()?.terminated.as_ref())
                                    .is_some_and(|t| t.exit_code == 143)
                        })
                })
                .unwrap_or(false);
            if phase.as_deref() == Some("Failed") && pod_done {
                break None;
            }
            if started.elapsed() > Duration::from_secs(120) {
                break Some(format!(
                    "workflow {name} was not stopped within 120 s (phase {phase:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
    }
    let agent_log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    if failure.is_none() && !agent_log.contains("exec kill from the API server") {
        failure = Some("the pod stopped, but not through the agent's exec endpoint".into());
    }
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    common::remove_node(&client, &node).await;
    if let Some(message) = failure {
        panic!(
            "{message} (after {:?})\n{}",
            started.elapsed(),
            diagnostics(&agent, last.as_ref(), &listed)
        );
    }
    eprintln!(
        "workflow {name} terminated through pods/exec in {:?}",
        started.elapsed()
    );
}
