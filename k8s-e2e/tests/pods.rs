//! Plain pods on the real API server, run by the node agent: init containers in order, volumes
//! (secret, configMap, downwardAPI, the projected service account volume the API server adds,
//! emptyDir with a single-file subPath), env (fieldRef, resourceFieldRef, secretKeyRef, envFrom,
//! `$(VAR)`), the status the kubelet would write, deletion, and the failures that must be
//! reported on the pod rather than crash the agent.
//!
//! Needs `scripts/k8s.sh up && eval "$(scripts/k8s.sh env)"`; no Argo, no S3.

mod common;

use std::time::Duration;

use common::{agent_logs, container_log, create, phase, start_agent, unique, wait_pod, Agent};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

struct Fixture {
    client: Client,
    namespace: String,
    node: String,
    agent: Agent,
    _work: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let client = common::client().await;
    let namespace = unique("kfcache-pods");
    let node = format!("kfcache-{namespace}");
    common::namespace(&client, &namespace).await;
    common::node(&client, &node).await;
    let work = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(&node, work.path(), &[]);
    Fixture {
        client,
        namespace,
        node,
        agent,
        _work: work,
    }
}

impl Fixture {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn submit(&self, name: &str, spec: serde_json::Value) {
        let mut spec = spec;
        spec["nodeName"] = self.node.clone().into();
        spec["restartPolicy"] = "Never".into();
        spec["tolerations"] = serde_json::json!([{"key": common::TAINT_KEY, "operator": "Exists"}]);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"app": "kfcache"}, "annotations": {"note": "say \"hi\""}},
            "spec": spec
        }))
        .expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    async fn finish(&self) {
        common::remove_node(&self.client, &self.node).await;
    }

    fn fail(&self, message: String, pod: Option<&Pod>) -> ! {
        panic!(
            "{message}\n=== pod status\n{}\n{}",
            serde_yaml::to_string(&pod.map(|p| &p.status)).unwrap_or_default(),
            agent_logs(&self.agent)
        )
    }
}

fn terminated_code(pod: &Pod, init: bool, name: &str) -> Option<i32> {
    let status = pod.status.as_ref()?;
    let list = if init {
        status.init_container_statuses.as_ref()
    } else {
        status.container_statuses.as_ref()
    };
    list?
        .iter()
        .find(|c| c.name == name)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_with_its_volumes_env_and_init_containers() {
    let f = fixture().await;
    create(
        &Api::<Secret>::namespaced(f.client.clone(), &f.namespace),
        serde_json::json!({"metadata": {"name": "creds"}, "stringData": {"user": "alice", "pass": "s3cret"}}),
    )
    .await;
    create(
        &Api::<ConfigMap>::namespaced(f.client.clone(), &f.namespace),
        serde_json::json!({"metadata": {"name": "settings"}, "data": {"mode": "fast", "level": "3"}}),
    )
    .await;
    let main = r#"set -e
echo "order=$(cat /work/order | tr '\n' ,)"
echo "secret=$(cat /creds/user)/$(cat /creds/pass)"
echo "config=$(cat /settings/mode)"
echo "annotations=$(cat /podinfo/annotations | tr '\n' ';')"
echo "labels=$(cat /podinfo/labels)"
echo "token=$(test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo yes)"
echo "ca=$(grep -c 'BEGIN CERTIFICATE' /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)"
echo "sa-namespace=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
echo "env=$POD_NAME $POD_NAMESPACE $NODE_NAME $POD_IP $SA $CPU $MEM $USER_NAME $SETTING_mode $EXPANDED"
echo "single=$(cat /single/file.txt)"
echo "args=$0 $1"
echo "api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
echo "pwd=$(pwd)"
"#;
    f.submit(
        "volumes",
        serde_json::json!({
            "initContainers": [
                {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo 1 > /work/order; echo one > /work/file.txt"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                {"name": "second", "image": "busybox", "command": ["sh", "-c", "echo 2 >> /work/order"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}]}
            ],
            "containers": [
                {"name": "main", "image": "python:3", "workingDir": "/work",
                 "command": ["sh", "-c", main, "$(POD_NAME)", "$$(NOT_EXPANDED)"],
                 "env": [
                     {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                     {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                     {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                     {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                     {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                     {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                     {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                     {"name": "USER_NAME", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                     {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
                     {"name": "EXPANDED", "value": "pod-$(POD_NAME)"}
                 ],
                 "envFrom": [{"prefix": "SETTING_", "configMapRef": {"name": "settings"}}],
                 "resources": {"limits": {"cpu": "1500m", "memory": "256Mi"}},
                 "volumeMounts": [
                     {"name": "work", "mountPath": "/work"},
                     {"name": "work", "mountPath": "/single/file.txt", "subPath": "file.txt", "readOnly": true},
                     {"name": "creds", "mountPath": "/creds", "readOnly": true},
                     {"name": "settings", "mountPath": "/settings"},
                     {"name": "podinfo", "mountPath": "/podinfo"}
                 ]},
                {"name": "side", "image": "alpine", "command": ["true"]}
            ],
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "creds", "secret": {"secretName": "creds"}},
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
                ]}}
            ]
        }),
    )
    .await;
    let pods = f.pods();
    let pod = match wait_pod(&pods, "volumes", Duration::from_secs(30), |p| {
        matches!(phase(p).as_str(), "Succeeded" | "Failed")
    })
    .await
    {
        Ok(pod) => pod.expect("pod"),
        Err(pod) => f.fail("pod did not finish in 30 s".into(), pod.as_ref()),
    };
    if phase(Some(&pod)) != "Succeeded" {
        f.fail(format!("pod ended {}", phase(Some(&pod))), Some(&pod));
    }
    let log = container_log(&f.agent, &pod, "main");
    let api = std::env::var("KFCACHE_TEST_K8S_API").unwrap_or_default();
    let namespace = &f.namespace;
    let node = &f.node;
    let mut expected = vec![
        "order=1,2,".to_string(),
        "secret=alice/s3cret".into(),
        "config=fast".into(),
        "annotations=".into(),
        "labels=app=\"kfcache\"".into(),
        "token=yes".into(),
        "ca=1".into(),
        format!("sa-namespace={namespace}"),
        format!("env=volumes {namespace} {node} 127.0.0.1 default 1500 256 alice fast pod-volumes"),
        "single=one".into(),
        "args=volumes $(NOT_EXPANDED)".into(),
        "pwd=/work".into(),
    ];
    if let Some(hostport) = api.strip_prefix("https://") {
        expected.push(format!("api={hostport}"));
    }
    for line in &expected {
        if !log.lines().any(|l| l.starts_with(line.as_str())) {
            f.fail(format!("main's log lacks {line:?}:\n{log}"), Some(&pod));
        }
    }
    assert!(
        log.contains("note=\"say \\\"hi\\\"\""),
        "annotations file in the kubelet format:\n{log}"
    );
    for (init, name) in [
        (true, "first"),
        (true, "second"),
        (false, "main"),
        (false, "side"),
    ] {
        if terminated_code(&pod, init, name) != Some(0) {
            f.fail(
                format!("container {name} is not terminated with 0"),
                Some(&pod),
            );
        }
    }
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let conditions: Vec<_> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    assert!(
        conditions.contains(&("Initialized".into(), "True".into())),
        "{conditions:?}"
    );
    assert!(
        conditions.contains(&("Ready".into(), "False".into())),
        "{conditions:?}"
    );
    let main_status = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == "main")
        .expect("main status");
    assert_eq!(
        main_status.container_id.as_deref(),
        Some(
            format!(
                "kfcache://{}/main",
                pod.metadata.uid.clone().unwrap_or_default()
            )
            .as_str()
        )
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_on_the_pod_and_deletion_terminates() {
    let f = fixture().await;
    // An init container that fails: the pod fails, later containers never run.
    f.submit(
        "init-fails",
        serde_json::json!({
            "initContainers": [{"name": "boom", "image": "busybox", "command": ["sh", "-c", "echo bad >&2; exit 3"]},
                               {"name": "never", "image": "busybox", "command": ["true"]}],
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]
        }),
    )
    .await;
    // A volume the agent does not provide.
    f.submit(
        "nfs",
        serde_json::json!({
            "containers": [{"name": "main", "image": "busybox", "command": ["true"],
                            "volumeMounts": [{"name": "remote", "mountPath": "/remote"}]}],
            "volumes": [{"name": "remote", "nfs": {"server": "nfs.invalid", "path": "/x"}}]
        }),
    )
    .await;
    // A secret that does not exist.
    f.submit(
        "no-secret",
        serde_json::json!({
            "containers": [{"name": "main", "image": "busybox", "command": ["true"],
                            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}]
        }),
    )
    .await;
    // A sidecar that only stops when Argo's controller exec-kills it through the API server.
    f.submit(
        "sidecar",
        serde_json::json!({
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]},
                           {"name": "side", "image": "busybox",
                            "command": ["sh", "-c", "trap 'echo got-TERM; exit 0' TERM; while true; do sleep 0.1; done"]}]
        }),
    )
    .await;
    // A long-running container that must get SIGTERM when the pod is deleted.
    f.submit(
        "sleeper",
        serde_json::json!({
            "terminationGracePeriodSeconds": 10,
            "containers": [{"name": "main", "image": "busybox",
                            "command": ["sh", "-c", "trap 'echo got-TERM; exit 0' TERM; echo started; while true; do sleep 0.1; done"]}]
        }),
    )
    .await;
    let pods = f.pods();
    let done = |p: Option<&Pod>| matches!(phase(p).as_str(), "Succeeded" | "Failed");
    for name in ["init-fails", "nfs", "no-secret"] {
        let pod = match wait_pod(&pods, name, Duration::from_secs(30), done).await {
            Ok(pod) => pod.expect("pod"),
            Err(pod) => f.fail(format!("pod {name} did not finish"), pod.as_ref()),
        };
        if phase(Some(&pod)) != "Failed" {
            f.fail(format!("pod {name} should have failed"), Some(&pod));
        }
        let status = pod.status.clone().unwrap_or_default();
        match name {
            "init-fails" => {
                assert_eq!(terminated_code(&pod, true, "boom"), Some(3));
                assert_eq!(terminated_code(&pod, true, "never"), None);
                assert_eq!(terminated_code(&pod, false, "main"), None);
            }
            "nfs" => {
                assert_eq!(
                    status.reason.as_deref(),
                    Some("UnsupportedVolume"),
                    "{status:?}"
                );
                assert!(
                    status.message.clone().unwrap_or_default().contains("nfs"),
                    "{status:?}"
                );
            }
            _ => {
                assert_eq!(
                    status.reason.as_deref(),
                    Some("CreateContainerConfigError"),
                    "{status:?}"
                );
                assert!(
                    status
                        .message
                        .clone()
                        .unwrap_or_default()
                        .contains("absent"),
                    "{status:?}"
                );
            }
        }
    }
    // What workflow/signal/signal.go does: POST pods/exec with Argo's kill command (SPDY upgrade).
    if let Err(pod) = wait_pod(&pods, "sidecar", Duration::from_secs(30), |p| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == "side"))
            .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
    .await
    {
        f.fail("sidecar never ran".into(), pod.as_ref());
    }
    let uri = format!(
        "/api/v1/namespaces/{}/pods/sidecar/exec?container=side&stdout=true&stderr=true&tty=false\
         &command=%2Fvar%2Frun%2Fargo%2Fargoexec&command=kill&command=15&command=1",
        f.namespace
    );
    let request = http::Request::post(uri)
        .header("Connection", "Upgrade")
        .header("Upgrade", "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
        .body(Vec::new())
        .expect("exec request");
    let answer = f.client.request_text(request).await;
    eprintln!("exec answered: {answer:?}");
    let pod = match wait_pod(&pods, "sidecar", Duration::from_secs(15), done).await {
        Ok(pod) => pod.expect("pod"),
        Err(pod) => f.fail(
            "the exec kill did not stop the sidecar".into(),
            pod.as_ref(),
        ),
    };
    assert_eq!(phase(Some(&pod)), "Succeeded");
    assert!(container_log(&f.agent, &pod, "side").contains("got-TERM"));

    let running = wait_pod(&pods, "sleeper", Duration::from_secs(30), |p| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            })
    })
    .await;
    if let Err(pod) = running {
        f.fail("sleeper never ran".into(), pod.as_ref());
    }
    assert_eq!(
        phase(running.as_ref().ok().and_then(|p| p.as_ref())),
        "Running"
    );
    let sleeper = pods.get("sleeper").await.expect("sleeper");
    pods.delete("sleeper", &DeleteParams::default())
        .await
        .expect("delete sleeper");
    if let Err(pod) = wait_pod(&pods, "sleeper", Duration::from_secs(15), |p| p.is_none()).await {
        f.fail("a deleted pod was not removed".into(), pod.as_ref());
    }
    let log = container_log(&f.agent, &sleeper, "main");
    assert!(
        log.contains("got-TERM"),
        "the container got SIGTERM on deletion:\n{log}"
    );
    f.finish().await;
}
