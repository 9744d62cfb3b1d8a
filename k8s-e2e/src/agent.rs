//! The agent's main loop: watch the pods bound to the managed nodes and keep one runner per pod.
//!
//! Nodes are either named (`--node`) or every node annotated `kwok.x-k8s.io/node=fake` (kwok
//! keeps those Ready; it is configured with no pod stages, so their pods belong to this agent).
//! Pods are watched with a kube-runtime watcher on `spec.nodeName!=` and filtered by node.
//! Each pod gets a runner task ([`crate::pod::run`]) which stays until the pod object is gone, so
//! a stale watch event never starts a finished pod again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::error::Result;
use crate::kubelet_api::{self, ProcessTable};
use crate::pod::{self, NodeContext, Stop};
use crate::sandbox::HostTools;

/// The annotation kwok manages nodes by.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

enum Nodes {
    Named(HashSet<String>),
    Annotated(Store<Node>),
}

impl Nodes {
    fn manages(&self, node: &str) -> bool {
        match self {
            Nodes::Named(names) => names.contains(node),
            Nodes::Annotated(store) => store.state().iter().any(|n| {
                n.metadata.name.as_deref() == Some(node)
                    && n.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(KWOK_NODE_ANNOTATION.0))
                        .is_some_and(|v| v == KWOK_NODE_ANNOTATION.1)
            }),
        }
    }
}

struct Tracked {
    stop: watch::Sender<Stop>,
    task: JoinHandle<()>,
}

/// Runs the agent until `shutdown` completes, then kills every container process it started.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let tools = HostTools::find()?;
    std::fs::create_dir_all(&config.state_dir).map_err(crate::error::Error::io(
        "create directory",
        &config.state_dir,
    ))?;
    let nodes = if config.nodes.is_empty() {
        let (reader, writer) = reflector::store();
        let stream = reflector::reflector(
            writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    warn!(error = %e, "node watch");
                }
            }
        });
        let _ = reader.wait_until_ready().await;
        info!("managing every node annotated kwok.x-k8s.io/node=fake");
        Nodes::Annotated(reader)
    } else {
        info!(nodes = ?config.nodes, "managing named nodes");
        Nodes::Named(config.nodes.iter().cloned().collect())
    };
    let processes = ProcessTable::default();
    let kubelet_port = match config.kubelet_port {
        Some(port) => Some(start_kubelet_api(&config, port, processes.clone()).await?),
        None => None,
    };
    if let Some(port) = kubelet_port {
        let client = client.clone();
        let node_ip = config.node_ip.clone();
        let named = config.nodes.clone();
        let store = match &nodes {
            Nodes::Annotated(store) => Some(store.clone()),
            Nodes::Named(_) => None,
        };
        // Like a kubelet, keep the node's address and kubelet endpoint current, so that the API
        // server sends pods/exec here.
        tokio::spawn(async move {
            loop {
                let names: Vec<String> = match &store {
                    Some(store) => store
                        .state()
                        .iter()
                        .filter(|n| {
                            n.metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(KWOK_NODE_ANNOTATION.0))
                                .is_some_and(|v| v == KWOK_NODE_ANNOTATION.1)
                                && n.status
                                    .as_ref()
                                    .and_then(|s| s.daemon_endpoints.as_ref())
                                    .and_then(|d| d.kubelet_endpoint.as_ref())
                                    .map(|e| e.port)
                                    != Some(i32::from(port))
                        })
                        .filter_map(|n| n.metadata.name.clone())
                        .collect(),
                    None => named.clone(),
                };
                for name in names {
                    publish_endpoint(&client, &name, &node_ip, port).await;
                }
                tokio::time::sleep(Duration::from_secs(if store.is_some() { 2 } else { 30 })).await;
            }
        });
    }
    info!(state_dir = %config.state_dir.display(), kubelet_port, "node agent started");
    let context = NodeContext {
        client: client.clone(),
        config: Arc::new(config),
        tools,
        processes,
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let stream =
        watcher(pods, watcher::Config::default().fields("spec.nodeName!=")).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut relisted: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => break,
            event = stream.try_next() => event,
        };
        match event {
            Ok(Some(watcher::Event::Apply(pod))) => on_pod(&context, &nodes, &mut tracked, pod),
            Ok(Some(watcher::Event::InitApply(pod))) => {
                if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.metadata.uid.as_ref()) {
                    seen.insert(uid.clone());
                }
                on_pod(&context, &nodes, &mut tracked, pod)
            }
            Ok(Some(watcher::Event::Delete(pod))) => {
                if let Some(entry) = pod
                    .metadata
                    .uid
                    .as_ref()
                    .and_then(|uid| tracked.remove(uid))
                {
                    let _ = entry.stop.send(Stop::Gone);
                }
            }
            Ok(Some(watcher::Event::Init)) => relisted = Some(HashSet::new()),
            Ok(Some(watcher::Event::InitDone)) => {
                if let Some(seen) = relisted.take() {
                    tracked.retain(|uid, entry| {
                        let keep = seen.contains(uid);
                        if !keep {
                            let _ = entry.stop.send(Stop::Gone);
                        }
                        keep
                    });
                }
            }
            Ok(None) => break,
            Err(e) => warn!(error = %e, "pod watch"),
        }
        tracked.retain(|_, entry| !entry.task.is_finished() || !entry.stop.is_closed());
    }
    info!(
        pods = tracked.len(),
        "node agent stopping: killing container processes"
    );
    for entry in tracked.values() {
        let _ = entry.stop.send(Stop::Shutdown);
    }
    for (_, entry) in tracked.drain() {
        let _ = tokio::time::timeout(Duration::from_secs(10), entry.task).await;
    }
    Ok(())
}

fn on_pod(context: &NodeContext, nodes: &Nodes, tracked: &mut HashMap<String, Tracked>, pod: Pod) {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return;
    };
    if !nodes.manages(&node) {
        return;
    }
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let grace_seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    if let Some(entry) = tracked.get(&uid) {
        if deleting {
            entry.stop.send_if_modified(|stop| {
                if *stop == Stop::Run {
                    *stop = Stop::Delete { grace_seconds };
                    true
                } else {
                    false
                }
            });
        }
        return;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    if deleting {
        // Not running here (finished, or from before this agent): no kubelet finalizes it otherwise.
        let api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        tokio::spawn(async move {
            if let Err(e) = api.delete(&name, &params).await {
                warn!(pod = %format!("{namespace}/{name}"), error = %e, "could not delete pod");
            }
        });
        return;
    }
    if phase == "Succeeded" || phase == "Failed" {
        return;
    }
    let stale = phase == "Running";
    let (stop, receiver) = watch::channel(Stop::Run);
    let task = tokio::spawn(pod::run(context.clone(), pod, receiver, stale));
    info!(pod = %format!("{namespace}/{name}"), node = %node, "pod bound to a managed node");
    tracked.insert(uid, Tracked { stop, task });
}

async fn start_kubelet_api(
    config: &AgentConfig,
    port: u16,
    processes: ProcessTable,
) -> Result<u16> {
    let (cert, key) =
        kubelet_api::self_signed(&config.state_dir.join("kubelet-pki"), &config.node_ip)?;
    let acceptor = kubelet_api::acceptor(&cert, &key)?;
    let address = format!("{}:{port}", config.node_ip);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(crate::error::Error::io("listen on", address.clone()))?;
    let port = listener
        .local_addr()
        .map_err(crate::error::Error::io("listen on", address))?
        .port();
    tokio::spawn(kubelet_api::serve(listener, acceptor, processes));
    Ok(port)
}

async fn publish_endpoint(client: &Client, node: &str, node_ip: &str, port: u16) {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": node_ip}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    }});
    match nodes
        .patch_status(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => info!(node, port, "kubelet endpoint published in the node status"),
        Err(e) => warn!(node, error = %e, "could not publish the kubelet endpoint"),
    }
}
