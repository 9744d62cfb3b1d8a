//! The pod status the agent reports, built like the kubelet's: phase, conditions with
//! transition times, and one status per (init) container in spec order.
//!
//! The Argo workflow-controller moves the DAG on from exactly these fields: the pod phase, and
//! `state.terminated` of `main` and `wait` (see `podHasContainerNeedingTermination` and
//! `assessNodeStatus` in `workflow/controller/operator.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Which list a container belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    Regular,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Init => "init",
            Kind::Regular => "container",
        }
    }
}

/// The current time as a Kubernetes timestamp (second precision, like the kubelet's).
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The status of one pod as it progresses.
#[derive(Debug, Clone)]
pub struct PodStatusModel {
    pub phase: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
    start_time: Time,
    node_ip: String,
    init: Vec<ContainerStatus>,
    containers: Vec<ContainerStatus>,
    conditions: BTreeMap<&'static str, (bool, Time)>,
}

fn container_status(pod_uid: &str, name: &str, image: &str, reason: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        image_id: format!("kfcache-image://{image}"),
        container_id: None,
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_string()),
                message: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
    .with_id(pod_uid)
}

trait WithId {
    fn with_id(self, pod_uid: &str) -> Self;
}

impl WithId for ContainerStatus {
    fn with_id(mut self, pod_uid: &str) -> Self {
        self.container_id = Some(format!("kfcache://{pod_uid}/{}", self.name));
        self
    }
}

impl PodStatusModel {
    /// Every container waiting: init containers and regular ones in `PodInitializing` when there
    /// are init containers, `ContainerCreating` otherwise.
    pub fn new(pod: &Pod, node_ip: &str) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let has_init = spec.init_containers.as_ref().is_some_and(|i| !i.is_empty());
        let waiting = if has_init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                container_status(
                    &uid,
                    &c.name,
                    c.image.as_deref().unwrap_or_default(),
                    "PodInitializing",
                )
            })
            .collect();
        let containers = spec
            .containers
            .iter()
            .map(|c| {
                container_status(
                    &uid,
                    &c.name,
                    c.image.as_deref().unwrap_or_default(),
                    waiting,
                )
            })
            .collect();
        let start = now();
        let mut model = PodStatusModel {
            phase: "Pending",
            reason: None,
            message: None,
            start_time: start.clone(),
            node_ip: node_ip.to_string(),
            init,
            containers,
            conditions: BTreeMap::new(),
        };
        model.update_conditions();
        model
    }

    fn list(&mut self, kind: Kind) -> &mut Vec<ContainerStatus> {
        match kind {
            Kind::Init => &mut self.init,
            Kind::Regular => &mut self.containers,
        }
    }

    /// The container started.
    pub fn running(&mut self, kind: Kind, index: usize, started_at: Time) {
        if let Some(status) = self.list(kind).get_mut(index) {
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started_at),
                }),
                ..Default::default()
            });
            status.started = Some(true);
            status.ready = kind == Kind::Regular;
        }
        if kind == Kind::Regular && self.phase == "Pending" {
            self.phase = "Running";
        }
        self.update_conditions();
    }

    /// The container could not start.
    pub fn waiting(&mut self, kind: Kind, index: usize, reason: &str, message: &str) {
        if let Some(status) = self.list(kind).get_mut(index) {
            status.state = Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                }),
                ..Default::default()
            });
        }
        self.update_conditions();
    }

    /// The container exited.
    pub fn terminated(
        &mut self,
        kind: Kind,
        index: usize,
        exit_code: i32,
        started_at: Option<Time>,
        message: Option<String>,
        reason: Option<&str>,
    ) {
        if let Some(status) = self.list(kind).get_mut(index) {
            let reason = reason.unwrap_or(if exit_code == 0 { "Completed" } else { "Error" });
            status.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    reason: Some(reason.to_string()),
                    message: message.filter(|m| !m.is_empty()),
                    started_at,
                    finished_at: Some(now()),
                    container_id: status.container_id.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            status.ready = false;
            status.started = Some(false);
        }
        self.update_conditions();
    }

    /// Sets the terminal phase from the containers' exits (restartPolicy Never semantics).
    pub fn finish(&mut self) {
        let all_zero = self.containers.iter().all(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        });
        self.phase = if all_zero && self.reason.is_none() {
            "Succeeded"
        } else {
            "Failed"
        };
        self.update_conditions();
    }

    /// The pod failed as a whole (a volume, an init container, the agent).
    pub fn fail(&mut self, reason: &str, message: &str) {
        self.phase = "Failed";
        self.reason = Some(reason.to_string());
        self.message = Some(message.to_string());
        self.update_conditions();
    }

    fn terminated_ok(status: &ContainerStatus) -> bool {
        status
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    }

    fn update_conditions(&mut self) {
        let initialized = self.init.iter().all(Self::terminated_ok);
        let ready = !self.containers.is_empty() && self.containers.iter().all(|c| c.ready);
        for (kind, value) in [
            ("PodScheduled", true),
            ("PodReadyToStartContainers", true),
            ("Initialized", initialized),
            ("ContainersReady", ready),
            ("Ready", ready),
        ] {
            let entry = self
                .conditions
                .entry(kind)
                .or_insert_with(|| (value, now()));
            if entry.0 != value {
                *entry = (value, now());
            }
        }
    }

    /// The status to write through the status subresource.
    pub fn to_status(&self) -> PodStatus {
        let conditions = self
            .conditions
            .iter()
            .map(|(kind, (value, at))| PodCondition {
                type_: kind.to_string(),
                status: if *value { "True" } else { "False" }.to_string(),
                last_transition_time: Some(at.clone()),
                reason: match (*kind, *value) {
                    ("Initialized", false) => Some("ContainersNotInitialized".into()),
                    ("ContainersReady" | "Ready", false) => Some(
                        if self.phase == "Succeeded" || self.phase == "Failed" {
                            "PodCompleted"
                        } else {
                            "ContainersNotReady"
                        }
                        .into(),
                    ),
                    _ => None,
                },
                ..Default::default()
            })
            .collect();
        PodStatus {
            phase: Some(self.phase.to_string()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            start_time: Some(self.start_time.clone()),
            host_ip: Some(self.node_ip.clone()),
            host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
                ip: self.node_ip.clone(),
            }]),
            pod_ip: Some(self.node_ip.clone()),
            pod_ips: Some(vec![PodIP {
                ip: self.node_ip.clone(),
            }]),
            qos_class: None,
            conditions: Some(conditions),
            init_container_statuses: Some(self.init.clone()),
            container_statuses: Some(self.containers.clone()),
            ..Default::default()
        }
    }

    /// Names of the regular containers that are running now.
    pub fn running_containers(&self) -> Vec<String> {
        self.containers
            .iter()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            .map(|c| c.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"initContainers": [{"name": "init", "image": "argoexec"}],
                     "containers": [{"name": "wait", "image": "argoexec"}, {"name": "main", "image": "alpine"}]}
        }))
        .expect("pod")
    }

    #[test]
    fn phases_follow_the_containers() {
        let mut model = PodStatusModel::new(&pod(), "127.0.0.1");
        assert_eq!(model.to_status().phase.as_deref(), Some("Pending"));
        model.running(Kind::Init, 0, now());
        model.terminated(Kind::Init, 0, 0, Some(now()), None, None);
        model.running(Kind::Regular, 0, now());
        model.running(Kind::Regular, 1, now());
        let status = model.to_status();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(ready.status, "True");
        model.terminated(Kind::Regular, 1, 0, Some(now()), None, None);
        model.terminated(Kind::Regular, 0, 1, Some(now()), None, None);
        model.finish();
        let status = model.to_status();
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let main = &status.container_statuses.expect("statuses")[1];
        assert_eq!(main.container_id.as_deref(), Some("kfcache://u/main"));
        let terminated = main
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    }
}
