//! `kfcache sidecar init|watch`: kfcache inside the pipeline pod.
//!
//! Both read what `kfcache inject` put in the pod: the task description (`KFCACHE_TASK`, JSON)
//! and the identity (`--run {{workflow.name}}`, the Argo node name, the pod, the Kubernetes
//! node, the `kfcache.io/deadline` annotation) from flags or the environment.
//!
//! - `init` (an init container) materialises the inputs at the paths the task expects and
//!   publishes an `inputs` event (hits, misses, bytes, seconds).
//! - `watch` (a sidecar in a pod with a shared process namespace) detects when the main
//!   container's work really starts and ends, publishes `started` and `ended` events (with the
//!   deadline slack), writes the declared outputs through to the cache when the work
//!   succeeded, updates the node's report for `kfcache nodes`, and serves `/metrics` and
//!   `/healthz` while it runs.
//!
//! Neither may break the pipeline: when the cache cannot be reached, `init` reads every input
//! from its origin and `watch` keeps watching; events that cannot be published are logged.
//! `init` waits for the cache at most `--cache-timeout` at a time and, once it has not
//! answered in time, not at all (a [`BoundedSink`]), so a hung cluster cannot hold the task.
//! Only bad input — a task description that does not parse, a path that escapes the target —
//! is an error (exit code 2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use kfcache_prefetcher::{
    BoundedSink, CacheSink, IgniteSink, MemorySink, ObjectCache, ObjectStoreSource,
};
use kfcache_sidecar::contract;
use kfcache_sidecar::fill::Fill;
use kfcache_sidecar::init::{materialise_with, Outcome};
use kfcache_sidecar::outputs::write_through;
use kfcache_sidecar::spec::parse_deadline;
use kfcache_sidecar::watch::{self, Detector, DetectorChoice, Selector, WatchConfig, WatchEvent};
use kfcache_sidecar::{Event, EventKind, EventLog, Identity, NodeReport, TaskSpec, TASK_ENV};

use crate::cache::open_cache;
use crate::config::{human_size, parse_size, CacheSettings, ConnectionArgs};
use crate::prefetch_metrics::serve;
use crate::settings::GlobalArgs;
use crate::sidecar_metrics::SidecarMetrics;

#[derive(Debug, Args)]
pub struct SidecarArgs {
    #[command(subcommand)]
    pub command: SidecarCommand,
}

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Materialise the task's inputs at the paths it expects (an init container).
    Init(InitArgs),
    /// Watch the main container's work, report its start and end, write outputs through.
    Watch(WatchArgs),
}

/// Who and what: shared by `init` and `watch`.
#[derive(Debug, Args)]
pub struct PodArgs {
    /// The run (the Argo Workflow name; inject passes `{{workflow.name}}`).
    #[arg(long, env = contract::ENV_RUN, value_name = "NAME")]
    pub run: String,

    /// The analysed task's id [default: from the task description, else the Argo node name].
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,

    /// The task description as JSON, or @FILE [env: KFCACHE_TASK].
    #[arg(long, value_name = "JSON|@FILE")]
    pub spec: Option<String>,

    /// The Argo node name (`wf.train(0)`): task, loop instance and retry attempt.
    #[arg(long, env = contract::ENV_NODE_NAME, value_name = "NAME")]
    pub node_name: Option<String>,

    /// The Kubernetes node the pod runs on.
    #[arg(long, env = contract::ENV_K8S_NODE, value_name = "NODE")]
    pub k8s_node: Option<String>,

    /// The pod's name.
    #[arg(long, env = contract::ENV_POD, value_name = "POD")]
    pub pod: Option<String>,

    /// The run's Kubernetes namespace.
    #[arg(long, env = contract::ENV_RUN_NAMESPACE, value_name = "NS")]
    pub run_namespace: Option<String>,

    /// Paths of inputs and outputs are taken inside this directory.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub target: PathBuf,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub pod: PodArgs,

    /// Output format of the report.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Fill the cache on demand: every input that misses is written into the cache as it is
    /// copied from the origin, evicting the least recently used objects of the namespace to
    /// stay within SIZE (for clusters without `kfcache prefetch`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "no_cache")]
    pub fill_budget: Option<u64>,

    /// Read every input from its origin without asking the cache.
    #[arg(long)]
    pub no_cache: bool,

    /// The longest init waits for the cache at a time: to connect, and for any one request
    /// (`500ms`, `10s`, `1m`; a bare number is seconds). A cache that does not answer in time
    /// is not asked again: the remaining inputs are read from their origins, so a hung cluster
    /// delays the task by about this much at most.
    #[arg(
        long,
        env = contract::ENV_CACHE_TIMEOUT,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = kfcache_ops::units::parse_duration
    )]
    pub cache_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub pod: PodArgs,

    /// `auto` uses NVML's GPU process list where the library loads, else the process table.
    #[arg(long, value_enum, default_value_t = DetectorArg::Auto)]
    pub detector: DetectorArg,

    /// Only processes whose command line matches this regular expression are the work
    /// [default: every process but the pause container, Argo's executor and kfcache].
    #[arg(long, value_name = "REGEX")]
    pub command: Option<String>,

    /// The deadline: an RFC 3339 time or a duration after the work's start (`30m`)
    /// [env: KFCACHE_DEADLINE, from the `kfcache.io/deadline` annotation].
    #[arg(long, env = contract::ENV_DEADLINE, value_name = "TIME|DURATION")]
    pub deadline: Option<String>,

    /// Serve `/metrics` and `/healthz` here.
    #[arg(long, value_name = "ADDR", default_value = contract::DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,

    /// Do not write the outputs through to the cache.
    #[arg(long)]
    pub no_write_through: bool,

    /// After SIGTERM, how long to wait for the end of the work before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub term_grace: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetectorArg {
    Auto,
    Proc,
    Nvml,
}

/// Bad input for the sidecar: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct InvalidSidecarInput(#[from] pub kfcache_sidecar::Error);

pub async fn run(_global: &GlobalArgs, args: SidecarArgs) -> Result<()> {
    match args.command {
        SidecarCommand::Init(args) => init(args).await,
        SidecarCommand::Watch(args) => watch(args).await,
    }
}

/// The task description: `--spec`, else `KFCACHE_TASK`.
fn task_spec(pod: &PodArgs) -> Result<TaskSpec> {
    let (origin, text) = match &pod.spec {
        Some(spec) => match spec.strip_prefix('@') {
            Some(path) => (
                path.to_string(),
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the task description {path}"))?,
            ),
            None => ("--spec".to_string(), spec.clone()),
        },
        None => match std::env::var(TASK_ENV) {
            Ok(text) => (TASK_ENV.to_string(), text),
            Err(_) => {
                return Err(InvalidSidecarInput(kfcache_sidecar::Error::Spec {
                    origin: TASK_ENV.to_string(),
                    reason: "not set (kfcache inject sets it; or pass --spec)".to_string(),
                })
                .into())
            }
        },
    };
    TaskSpec::from_json(&origin, &text)
        .map_err(InvalidSidecarInput)
        .map_err(Into::into)
}

fn identity(pod: &PodArgs, spec: &TaskSpec) -> Result<Identity> {
    let task = pod.task.as_deref().or(spec.task.as_deref());
    let mut identity = Identity::resolve(&pod.run, &spec.pipeline, task, pod.node_name.as_deref())
        .map_err(InvalidSidecarInput)?;
    identity.namespace = pod.run_namespace.clone().filter(|s| !s.is_empty());
    identity.pod = pod.pod.clone().filter(|s| !s.is_empty());
    identity.node = pod.k8s_node.clone().filter(|s| !s.is_empty());
    Ok(identity)
}

/// The cache settings of a pod: keys scoped to the run's Kubernetes namespace. A `--k8s-namespace`
/// other than the pod's own namespace is refused (exit code 2): a pipeline reads only what was
/// staged for its namespace.
fn pod_settings(pod: &PodArgs, identity: &Identity) -> Result<CacheSettings> {
    let mut settings = pod.connection.resolve()?;
    if let (Some(tenant), Some(namespace)) = (&settings.tenant, &identity.namespace) {
        if tenant != namespace {
            return Err(InvalidSidecarInput(kfcache_sidecar::Error::Spec {
                origin: "--k8s-namespace".to_string(),
                reason: format!(
                    "tenant {tenant:?} is not the run's namespace {namespace:?}: a pod reads only the objects of its own namespace"
                ),
            })
            .into());
        }
    }
    if let Some(namespace) = &identity.namespace {
        if crate::config::check_tenant(namespace).is_err() {
            return Err(InvalidSidecarInput(kfcache_sidecar::Error::Spec {
                origin: "--run-namespace".to_string(),
                reason: format!("{namespace:?} is not a Kubernetes namespace name"),
            })
            .into());
        }
    }
    settings.default_tenant(identity.namespace.as_deref())?;
    Ok(settings)
}

/// How long `watch` waits to connect to the cache before it goes on without.
const WATCH_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The cache, or `None` (with a warning) when it cannot be reached within `bound`: the pod
/// goes on without.
async fn try_cache(settings: &CacheSettings, bound: Duration) -> Option<ObjectCache<IgniteSink>> {
    match tokio::time::timeout(bound, open_cache(settings)).await {
        Ok(Ok(cache)) => Some(cache),
        Ok(Err(error)) => {
            tracing::warn!("working without the cache: {error:#}");
            eprintln!("warning: working without the cache: {error:#}");
            None
        }
        Err(_) => {
            eprintln!(
                "warning: working without the cache: no answer from {} in {bound:?}",
                settings.client.addresses.join(",")
            );
            None
        }
    }
}

async fn publish<S: CacheSink + ?Sized>(
    log: Option<&EventLog<S>>,
    metrics: Option<&SidecarMetrics>,
    event: Event,
) {
    let Some(log) = log else {
        return;
    };
    let outcome = log.publish(&event).await;
    if let Some(metrics) = metrics {
        metrics.published(outcome.is_ok());
    }
    if let Err(error) = outcome {
        eprintln!(
            "warning: the {} event of {} was not published: {error}",
            event.kind.name(),
            event.who.holder()
        );
    }
}

async fn init(args: InitArgs) -> Result<()> {
    let spec = task_spec(&args.pod)?;
    let identity = identity(&args.pod, &spec)?;
    // Refuse escaping names and paths before reaching out to anything.
    for input in &spec.inputs {
        kfcache_sidecar::init::destination(&args.pod.target, input).map_err(InvalidSidecarInput)?;
    }
    let mut settings = pod_settings(&args.pod, &identity)?;
    let origin = ObjectStoreSource::new(settings.source.clone());
    // Every wait on the cache, connecting or asking, lasts up to --cache-timeout and no
    // longer (a node slow to answer a handshake while many pods start at once is waited for).
    let bound = args.cache_timeout.max(Duration::from_millis(1));
    settings.client.connect_timeout = bound;
    settings.client.request_timeout = bound;
    let cache = if args.no_cache {
        None
    } else {
        try_cache(&settings, bound).await.and_then(|cache| {
            let sink = BoundedSink::new(cache.sink().clone(), bound);
            ObjectCache::new(Arc::new(sink), cache.config().clone()).ok()
        })
    };
    let fill = args.fill_budget.map(|budget| Fill { budget });
    let report = match &cache {
        Some(cache) => {
            materialise_with(cache, &origin, &spec, &identity, &args.pod.target, fill).await
        }
        None => {
            // An empty cache: every input is read from its origin.
            let empty = ObjectCache::new(Arc::new(MemorySink::default()), settings.layout.clone())?;
            materialise_with(&empty, &origin, &spec, &identity, &args.pod.target, None).await
        }
    };
    let report = match report {
        Ok(report) => report,
        Err(error @ kfcache_sidecar::Error::PathEscape { .. }) => {
            return Err(InvalidSidecarInput(error).into())
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!(
                "cannot materialise the inputs of {}",
                identity.holder()
            )))
        }
    };
    if let Some(cache) = &cache {
        let log = EventLog::new(cache.sink().clone(), settings.base_namespace.clone());
        let event = Event {
            who: identity.clone(),
            at: Utc::now(),
            kind: EventKind::Inputs {
                hits: report.hits,
                misses: report.misses,
                bytes_from_cache: report.bytes_from_cache,
                bytes_from_origin: report.bytes_from_origin,
                seconds: report.seconds,
            },
        };
        publish(Some(&log), None, event).await;
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            for file in &report.files {
                let what = match &file.outcome {
                    Outcome::Hit { bytes } => format!("hit      {}", human_size(*bytes)),
                    Outcome::Miss { bytes, reason } => {
                        format!("miss     {} ({reason})", human_size(*bytes))
                    }
                    Outcome::Present { reason } => format!("present  ({reason})"),
                    Outcome::Skipped { reason } => format!("skipped  ({reason})"),
                };
                println!("{:<16} {what} → {}", file.input, file.path.display());
            }
            println!(
                "init {}: {} hit{}, {} miss{}, {} from cache, {} from origin in {:.2}s",
                identity.holder(),
                report.hits,
                if report.hits == 1 { "" } else { "s" },
                report.misses,
                if report.misses == 1 { "" } else { "es" },
                human_size(report.bytes_from_cache),
                human_size(report.bytes_from_origin),
                report.seconds
            );
        }
    }
    Ok(())
}

async fn watch(args: WatchArgs) -> Result<()> {
    let spec = task_spec(&args.pod)?;
    let identity = identity(&args.pod, &spec)?;
    let settings = pod_settings(&args.pod, &identity)?;
    let mut config = WatchConfig {
        detector: match args.detector {
            DetectorArg::Auto => DetectorChoice::Auto,
            DetectorArg::Proc => DetectorChoice::Proc,
            DetectorArg::Nvml => DetectorChoice::Nvml,
        },
        ..WatchConfig::default()
    };
    if let Some(pattern) = &args.command {
        config.selector = Selector::command_regex(pattern).map_err(InvalidSidecarInput)?;
    }
    // Opening NVML may block for a moment.
    let mut watcher = tokio::task::spawn_blocking(move || watch::open(&config))
        .await
        .context("the detector could not be opened")??;
    let metrics = SidecarMetrics::new();
    metrics.detector(watcher.kind().as_str());
    if let Some(reason) = watcher.fallback_reason() {
        eprintln!("watch: using the process table ({reason})");
    }
    // A port that is taken (a pod on the host network, another watch) costs the metrics only:
    // the watch never fails its task.
    let _server = match serve(metrics.clone(), args.metrics_addr).await {
        Ok((bound, server)) => {
            eprintln!(
                "watch {}: {} detector, metrics on http://{bound}/metrics",
                identity.holder(),
                watcher.kind().as_str()
            );
            Some(server)
        }
        Err(error) => {
            eprintln!(
                "watch {}: {} detector, no metrics endpoint: {error:#}",
                identity.holder(),
                watcher.kind().as_str()
            );
            None
        }
    };
    let cache = try_cache(&settings, WATCH_CONNECT_TIMEOUT).await;
    let log = cache
        .as_ref()
        .map(|c| EventLog::new(c.sink().clone(), settings.base_namespace.clone()));

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut deadline = None;
    let mut term_by: Option<tokio::time::Instant> = None;
    loop {
        let event = tokio::select! {
            event = watcher.next() => event.context("the detector failed")?,
            _ = terminate.recv(), if term_by.is_none() => {
                // Argo stops sidecars once the main container has exited: the end is due.
                term_by = Some(tokio::time::Instant::now() + Duration::from_secs(args.term_grace));
                continue;
            }
            _ = async { match term_by {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => {
                eprintln!("watch {}: stopped before the work ended", identity.holder());
                return Ok(());
            }
        };
        match &event {
            WatchEvent::Started {
                pid, command, at, ..
            } => {
                deadline = match &args.deadline {
                    Some(text) if !text.trim().is_empty() => {
                        Some(parse_deadline(text, at.wall).map_err(InvalidSidecarInput)?)
                    }
                    _ => None,
                };
                metrics.started(at.wall.timestamp_millis() as f64 / 1000.0);
                eprintln!(
                    "watch {}: work started at {} (pid {pid}: {command})",
                    identity.holder(),
                    at.wall.to_rfc3339()
                );
                let kind = event.to_event_kind(deadline);
                publish(
                    log.as_ref(),
                    Some(&metrics),
                    Event {
                        who: identity.clone(),
                        at: at.wall,
                        kind,
                    },
                )
                .await;
            }
            WatchEvent::Ended {
                at,
                started_at,
                exit_code,
                ..
            } => {
                let kind = event.to_event_kind(deadline);
                let slack = match &kind {
                    EventKind::Ended { slack_s, .. } => *slack_s,
                    _ => None,
                };
                let work_s = (at.wall - started_at.wall).num_milliseconds() as f64 / 1000.0;
                metrics.ended(work_s, *exit_code, slack);
                eprintln!(
                    "watch {}: work ended at {} after {work_s:.3}s (exit {}){}",
                    identity.holder(),
                    at.wall.to_rfc3339(),
                    exit_code.map_or("unknown".to_string(), |c| c.to_string()),
                    slack.map_or(String::new(), |s| format!(", deadline slack {s:.1}s"))
                );
                publish(
                    log.as_ref(),
                    Some(&metrics),
                    Event {
                        who: identity.clone(),
                        at: at.wall,
                        kind,
                    },
                )
                .await;
                let succeeded = matches!(exit_code, Some(0) | None);
                if let (Some(cache), true, false) = (&cache, succeeded, args.no_write_through) {
                    match write_through(cache, &spec, &identity, &args.pod.target).await {
                        Ok(report) => {
                            metrics.outputs(report.files.len() as u64, report.bytes);
                            eprintln!(
                                "watch {}: wrote {} output file{} ({}) through in {:.2}s",
                                identity.holder(),
                                report.files.len(),
                                if report.files.len() == 1 { "" } else { "s" },
                                human_size(report.bytes),
                                report.seconds
                            );
                            publish(
                                log.as_ref(),
                                Some(&metrics),
                                Event {
                                    who: identity.clone(),
                                    at: Utc::now(),
                                    kind: EventKind::Outputs {
                                        written: report.files.len() as u32,
                                        bytes: report.bytes,
                                        seconds: report.seconds,
                                    },
                                },
                            )
                            .await;
                        }
                        Err(error) => eprintln!(
                            "warning: the outputs of {} were not written through: {:#}",
                            identity.holder(),
                            anyhow::Error::new(error)
                        ),
                    }
                }
                if let Some(log) = &log {
                    report_node(log, &identity, &watcher, slack).await;
                }
                return Ok(());
            }
        }
    }
}

/// Adds this task's outcome to its node's report (Algorithm 2, worker side).
async fn report_node<S: CacheSink + ?Sized>(
    log: &EventLog<S>,
    identity: &Identity,
    watcher: &watch::Watcher,
    slack_s: Option<f64>,
) {
    let Some(node) = identity.node.clone() else {
        return;
    };
    let previous = match log.nodes().await {
        Ok(reports) => reports.into_iter().find(|r| r.node == node),
        Err(error) => {
            eprintln!("warning: cannot read the report of node {node}: {error}");
            None
        }
    };
    // NVML answers synchronously (about a millisecond per GPU): off the async workers.
    let gpus = tokio::task::block_in_place(|| watcher.gpu_snapshot()).and_then(|s| s.ok());
    let previous = previous.unwrap_or(NodeReport {
        node: node.clone(),
        at: Utc::now(),
        provisionable: true,
        gpu_memory_total_bytes: 0,
        gpu_memory_used_bytes: 0,
        gpu_utilization_pct: 0.0,
        float_time_s: 0.0,
        deadline_misses: 0,
    });
    let mut report = NodeReport {
        at: Utc::now(),
        float_time_s: previous.float_time_s + slack_s.unwrap_or(0.0),
        deadline_misses: previous.deadline_misses + u32::from(slack_s.is_some_and(|s| s < 0.0)),
        ..previous
    };
    if let Some(gpus) = &gpus {
        report.gpu_memory_total_bytes = gpus.memory_total_bytes();
        report.gpu_memory_used_bytes = gpus.memory_used_bytes();
        report.gpu_utilization_pct = gpus.max_utilization_pct();
    }
    // Algorithm 2, worker side: a node with a missed deadline, or with GPU cores or memory
    // full, takes no new task.
    report.provisionable = kfcache_sidecar::ranking::is_provisionable(&report);
    if let Err(error) = log.report_node(&report).await {
        eprintln!("warning: cannot report node {node}: {error}");
    }
}
