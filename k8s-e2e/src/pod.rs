//! One pod's life on the node: volumes, init containers one by one, then the regular
//! containers together, status after every step, and termination on deletion.
//!
//! The runner never returns an error: whatever goes wrong with this pod becomes its Failed
//! status (reason and message) and a log line, and the agent goes on with other pods.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use tokio::sync::{watch, Mutex};
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::env::container_env;
use crate::error::{Error, Result};
use crate::expand::expand;
use crate::kubelet_api::ProcessTable;
use crate::sandbox::{self, ContainerPlan, HostTools, MountPlan};
use crate::sources::Sources;
use crate::status::{now, Kind, PodStatusModel};
use crate::volumes::{self, VolumePaths};

/// Annotation with the pod's state directory; container logs are `<dir>/logs/<container>.log`.
pub const STATE_DIR_ANNOTATION: &str = "kfcache.io/node-agent-dir";

/// What the agent wants from a running pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep running.
    Run,
    /// The pod has a deletionTimestamp: SIGTERM, SIGKILL after the grace period, then delete it.
    Delete { grace_seconds: i64 },
    /// The pod object is gone: kill the processes, nothing to report.
    Gone,
    /// The agent stops: kill the processes.
    Shutdown,
}

/// Everything a pod runner needs from the agent.
#[derive(Clone)]
pub struct NodeContext {
    pub client: Client,
    pub config: Arc<AgentConfig>,
    pub tools: HostTools,
    /// Running container processes, for the kubelet stand-in endpoint.
    pub processes: ProcessTable,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("config", &self.config)
            .field("tools", &self.tools)
            .finish()
    }
}

/// The state directory of a pod.
pub fn pod_dir(config: &AgentConfig, pod: &Pod) -> PathBuf {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("unnamed");
    let uid = pod.metadata.uid.as_deref().unwrap_or("no-uid");
    config
        .state_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{uid}"))
}

/// The pod's timeline: one JSON line per container start and exit, with the time to the
/// microsecond (`{"container":"main","kind":"container","event":"started","at":"…"}`; exits add
/// `exit_code`). Kubernetes' own timestamps have whole seconds, too coarse for measuring a
/// task's input wait.
pub fn timeline_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("timeline.jsonl")
}

/// The log file of one container of a pod.
pub fn log_path(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("logs").join(format!("{container}.log"))
}

struct Runner {
    node: NodeContext,
    pod: Pod,
    name: String,
    namespace: String,
    dir: PathBuf,
    api: Api<Pod>,
    status: Mutex<PodStatusModel>,
    stop: watch::Receiver<Stop>,
}

/// How a container ended.
enum Exit {
    Code(i32),
    NotStarted,
}

/// Runs `pod` to completion, then waits for its deletion. `stale` marks a pod that was already
/// running before this agent started: it is reported Failed instead of being run again.
pub async fn run(node: NodeContext, pod: Pod, stop: watch::Receiver<Stop>, stale: bool) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let runner = Runner {
        api: Api::namespaced(node.client.clone(), &namespace),
        dir: pod_dir(&node.config, &pod),
        status: Mutex::new(PodStatusModel::new(&pod, &node.config.node_ip)),
        node,
        pod,
        name,
        namespace,
        stop,
    };
    let span = tracing::info_span!("pod", pod = %format!("{}/{}", runner.namespace, runner.name));
    let _ = tracing::Instrument::instrument(runner.run(stale), span).await;
}

impl Runner {
    async fn run(mut self, stale: bool) {
        if stale {
            self.status.lock().await.fail(
                "NodeAgentRestarted",
                "the kfcache test node agent restarted while this pod was running; its processes are gone",
            );
            self.publish().await;
        } else {
            self.execute().await;
        }
        self.linger().await;
    }

    async fn execute(&self) {
        info!(dir = %self.dir.display(), "starting pod");
        if let Err(e) = self.annotate().await {
            warn!(error = %e, "could not annotate the pod with its state directory");
        }
        self.publish().await;
        let sources = Sources::new(self.node.client.clone(), &self.namespace);
        let volumes = match volumes::prepare(
            &self.node.client,
            &self.pod,
            &self.dir,
            &sources,
            &self.node.config,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return self.fail_pod(&e).await,
        };
        let spec = self.pod.spec.clone().unwrap_or_default();
        // Held until the pod's containers are done; dropping it ends the shared namespace.
        let sandbox = if spec.share_process_namespace == Some(true) {
            match sandbox::PodSandbox::start(&self.node.tools).await {
                Ok(sandbox) => Some(sandbox),
                Err(e) => return self.fail_pod(&e).await,
            }
        } else {
            None
        };
        let pid_namespace = sandbox
            .as_ref()
            .map_or(sandbox::PidNamespace::Own, sandbox::PodSandbox::namespace);
        for (index, container) in spec.init_containers.iter().flatten().enumerate() {
            if *self.stop.borrow() != Stop::Run {
                return self.stopped().await;
            }
            match self
                .run_container(
                    Kind::Init,
                    index,
                    container,
                    &volumes,
                    &sources,
                    pid_namespace,
                )
                .await
            {
                Exit::Code(0) => {}
                Exit::Code(code) => {
                    let mut status = self.status.lock().await;
                    status.fail(
                        "InitContainerFailed",
                        &format!("init container {:?} exited with {code}", container.name),
                    );
                    drop(status);
                    self.publish().await;
                    return self.after_stop().await;
                }
                Exit::NotStarted => return self.after_stop().await,
            }
        }
        if *self.stop.borrow() != Stop::Run {
            return self.stopped().await;
        }
        let runs = spec.containers.iter().enumerate().map(|(index, c)| {
            self.run_container(Kind::Regular, index, c, &volumes, &sources, pid_namespace)
        });
        futures::future::join_all(runs).await;
        {
            let mut status = self.status.lock().await;
            if status.phase != "Failed" {
                status.finish();
            }
            info!(phase = status.phase, "pod finished");
        }
        self.publish().await;
        self.after_stop().await;
    }

    /// After the containers ended: a deletion that arrived meanwhile is finished now.
    async fn after_stop(&self) {
        let current = *self.stop.borrow();
        if let Stop::Delete { .. } = current {
            self.delete().await;
        }
    }

    async fn stopped(&self) {
        let mut status = self.status.lock().await;
        status.fail(
            "Terminated",
            "the pod was deleted before its containers ran",
        );
        drop(status);
        self.publish().await;
        self.after_stop().await;
    }

    /// Waits until the pod is deleted (then removes it) or gone.
    async fn linger(&mut self) {
        loop {
            let current = *self.stop.borrow_and_update();
            match current {
                Stop::Run => {}
                Stop::Delete { .. } => {
                    self.delete().await;
                    return;
                }
                Stop::Gone | Stop::Shutdown => return,
            }
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }

    async fn fail_pod(&self, error: &Error) {
        warn!(error = %error, reason = error.reason(), "pod failed");
        self.status
            .lock()
            .await
            .fail(error.reason(), &error.to_string());
        self.publish().await;
        self.after_stop().await;
    }

    async fn annotate(&self) -> Result<()> {
        let patch = serde_json::json!({"metadata": {"annotations": {STATE_DIR_ANNOTATION: self.dir.display().to_string()}}});
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube(format!(
                "annotate pod {}/{}",
                self.namespace, self.name
            )))?;
        Ok(())
    }

    /// Writes the current status through the status subresource.
    async fn publish(&self) {
        // Holding the lock across the call keeps the writes in order.
        let status = self.status.lock().await;
        let patch = serde_json::json!({"status": status.to_status()});
        if let Err(e) = self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            warn!(error = %e, "could not write pod status");
        }
    }

    async fn delete(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => info!("pod deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(error = %e, "could not delete pod"),
        }
    }

    async fn run_container(
        &self,
        kind: Kind,
        index: usize,
        container: &Container,
        volumes: &VolumePaths,
        sources: &Sources,
        pid_namespace: sandbox::PidNamespace,
    ) -> Exit {
        let plan = match self.plan(container, volumes, sources).await {
            Ok(plan) => plan,
            Err(e) => {
                warn!(container = %container.name, error = %e, "container cannot start");
                let mut status = self.status.lock().await;
                status.waiting(kind, index, e.reason(), &e.to_string());
                status.fail(e.reason(), &e.to_string());
                drop(status);
                self.publish().await;
                return Exit::NotStarted;
            }
        };
        let started_at = now();
        self.timeline(&container.name, kind, "started", None).await;
        let mut child = match sandbox::spawn(&plan, &self.node.tools, pid_namespace) {
            Ok(child) => child,
            Err(e) => {
                warn!(container = %container.name, error = %e, "container cannot start");
                let mut status = self.status.lock().await;
                status.terminated(
                    kind,
                    index,
                    128,
                    Some(started_at),
                    Some(e.to_string()),
                    Some("StartError"),
                );
                status.fail(e.reason(), &e.to_string());
                drop(status);
                self.publish().await;
                return Exit::NotStarted;
            }
        };
        // The container's own process, below the namespace wrapper: signals go there.
        let pid = match child.id() {
            Some(wrapper) => sandbox::container_pid(wrapper).await,
            None => None,
        };
        if let Some(pid) = pid {
            sandbox::wait_started(pid, &plan).await;
        }
        info!(container = %container.name, kind = kind.label(), pid = ?pid.map(|p| p.as_raw_nonzero()), log = %plan.log.display(), "container started");
        let key = (
            self.namespace.clone(),
            self.name.clone(),
            container.name.clone(),
        );
        if let (Some(pid), Ok(mut table)) = (pid, self.node.processes.lock()) {
            table.insert(key.clone(), pid);
        }
        self.status
            .lock()
            .await
            .running(kind, index, started_at.clone());
        self.publish().await;

        let mut stop = self.stop.clone();
        let mut deadline: Option<tokio::time::Instant> = None;
        let code = loop {
            let kill_at = deadline;
            tokio::select! {
                exit = child.wait() => break match exit {
                    Ok(status) => status.code().unwrap_or_else(|| {
                        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9)
                    }),
                    Err(e) => {
                        warn!(container = %container.name, error = %e, "waiting for container failed");
                        128
                    }
                },
                _ = async { match kill_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    info!(container = %container.name, "grace period over: SIGKILL");
                    signal(pid, Signal::KILL, true);
                    deadline = None;
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        signal(pid, Signal::KILL, true);
                        continue;
                    }
                    let current = *stop.borrow_and_update();
                    match current {
                        Stop::Run => {}
                        Stop::Delete { grace_seconds } => {
                            info!(container = %container.name, grace_seconds, "pod deleted: SIGTERM");
                            signal(pid, Signal::TERM, false);
                            let grace = Duration::from_secs(grace_seconds.max(0) as u64);
                            deadline = Some(tokio::time::Instant::now() + grace);
                        }
                        Stop::Gone | Stop::Shutdown => signal(pid, Signal::KILL, true),
                    }
                }
            }
        };
        if let Ok(mut table) = self.node.processes.lock() {
            table.remove(&key);
        }
        // Like a container runtime: when the command exits, whatever it left behind goes too.
        signal(pid, Signal::KILL, true);
        self.timeline(&container.name, kind, "exited", Some(code))
            .await;
        let message = termination_message(container, &plan, code);
        info!(container = %container.name, exit_code = code, log = %plan.log.display(), "container exited");
        self.status
            .lock()
            .await
            .terminated(kind, index, code, Some(started_at), message, None);
        self.publish().await;
        Exit::Code(code)
    }

    /// Appends one event to the pod's timeline ([`timeline_path`]); a failure costs the line
    /// only.
    async fn timeline(&self, container: &str, kind: Kind, event: &str, exit_code: Option<i32>) {
        use tokio::io::AsyncWriteExt;
        let mut line = serde_json::json!({
            "container": container,
            "kind": kind.label(),
            "event": event,
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        if let Some(code) = exit_code {
            line["exit_code"] = code.into();
        }
        let path = timeline_path(&self.dir);
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            file.write_all(format!("{line}\n").as_bytes()).await
        };
        if let Err(e) = written.await {
            warn!(path = %path.display(), error = %e, "could not write the pod's timeline");
        }
    }

    async fn plan(
        &self,
        container: &Container,
        volumes: &VolumePaths,
        sources: &Sources,
    ) -> Result<ContainerPlan> {
        let config = &self.node.config;
        let env = container_env(&self.pod, container, sources, config).await?;
        let image = container.image.clone().unwrap_or_default();
        let mapping = config.image(&image);
        let mut argv: Vec<String> = match &container.command {
            Some(command) if !command.is_empty() => command.clone(),
            _ => match mapping.and_then(|m| m.entrypoint.clone()) {
                Some(entrypoint) => entrypoint,
                None if container.args.as_ref().is_some_and(|a| !a.is_empty()) => Vec::new(),
                None => {
                    return Err(Error::NoEntrypoint {
                        container: container.name.clone(),
                        image,
                    });
                }
            },
        };
        argv.extend(container.args.iter().flatten().cloned());
        let argv: Vec<String> = argv.iter().map(|a| expand(a, env.vars())).collect();
        if argv.is_empty() {
            return Err(Error::NoEntrypoint {
                container: container.name.clone(),
                image,
            });
        }
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let base = volumes
                .get(&mount.name)
                .ok_or_else(|| Error::UnknownVolume {
                    container: container.name.clone(),
                    volume: mount.name.clone(),
                })?;
            let sub_path = match (&mount.sub_path, &mount.sub_path_expr) {
                (Some(p), _) if !p.is_empty() => Some(p.clone()),
                (_, Some(e)) if !e.is_empty() => Some(expand(e, env.vars())),
                _ => None,
            };
            let source = match sub_path {
                Some(sub) => base.join(sub.trim_start_matches('/')),
                None => base.clone(),
            };
            mounts.push(MountPlan {
                source,
                target: mount.mount_path.clone(),
                read_only: mount.read_only == Some(true),
            });
        }
        let safe = container.name.replace('/', "_");
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(Error::io("create directory", &logs))?;
        Ok(ContainerPlan {
            name: container.name.clone(),
            root: self.dir.join("roots").join(&safe),
            host_dirs: config.host_dirs.clone(),
            image_bin: mapping.and_then(|m| m.bin_dir.clone()),
            termination_message_file: self.dir.join("termination").join(&safe),
            termination_message_target: container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
            mounts,
            working_dir: container
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            argv,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            prelude: self.dir.join(format!("prelude-{safe}.sh")),
            log: log_path(&self.dir, &safe),
        })
    }
}

/// Sends `signal` to the container's process, or to its whole process group.
fn signal(pid: Option<Pid>, signal: Signal, group: bool) {
    if let Some(pid) = pid {
        let _ = if group {
            kill_process_group(pid, signal)
        } else {
            kill_process(pid, signal)
        };
    }
}

/// The kubelet's termination message: the file (at most 4 KiB), or with
/// `FallbackToLogsOnError` the end of the log of a failed container.
fn termination_message(container: &Container, plan: &ContainerPlan, code: i32) -> Option<String> {
    let read_tail = |path: &Path, limit: usize| -> Option<String> {
        let bytes = std::fs::read(path).ok()?;
        let start = bytes.len().saturating_sub(limit);
        Some(String::from_utf8_lossy(&bytes[start..]).into_owned())
    };
    let from_file = read_tail(&plan.termination_message_file, 4096).filter(|m| !m.is_empty());
    if from_file.is_some() {
        return from_file;
    }
    if code != 0 && container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        return read_tail(&plan.log, 2048);
    }
    None
}
