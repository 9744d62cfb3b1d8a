//! `kfcache prefetch FILE|PIPELINE`: stage each GPU task's inputs into Ignite before its
//! predicted start, within a budget.
//!
//! 1. The pipeline is resolved as for `predict` (a file, analysed and stored, or a stored
//!    pipeline's name) and predicted from the history in the database, anchored at the run's
//!    start: `--run NAME` (a run in the history store), `--start-at`, `--next-run`, or now.
//! 2. What the namespace holds and what is leased is read from the cache, and the plan is made
//!    (kfcache-prefetcher's `plan`): items, deadlines, windows, evictions.
//! 3. `--dry-run` prints the plan and changes nothing. Otherwise the executor stages it, with
//!    progress bars on a terminal and JSON event lines otherwise, Prometheus metrics on
//!    `--metrics-addr`, and every transfer recorded in the database (the bandwidth of later
//!    plans).
//! 4. `--follow` keeps going: it re-plans every `--poll` seconds from the run's actual task
//!    events in the history store (a task that started early brings its inputs to the front)
//!    and stages what became needed or fits now, until every GPU task of the run has started.
//!    Each round first drains the events the sidecars published to the cache into the history,
//!    so a task that the sidecar saw start counts as started.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use kfcache_parser::{Dag, Pipeline};
use kfcache_predictor::{anchor, EstimatorConfig, Prediction};
use kfcache_prefetcher::execute::{Event, ExecuteConfig, Executor, PlanClock, RetryPolicy};
use kfcache_prefetcher::plan::{
    origin_reads, plan, CachedEntry, ItemStatus, OriginReads, Plan, PlanConfig, PlanInput,
    PlanItem, PlanTask, TaskState,
};
use kfcache_prefetcher::{lease, IgniteSink, ObjectCache, ObjectStoreSource, StageOptions};
use kfcache_schema::{Store, TaskObservation, TransferRecord};

use crate::cache::open_cache;
use crate::config::{human_size, parse_size, ConnectionArgs};
use crate::predict::{at, parse_time, predict_from_store, resolve_targets, rfc3339, tail};
use crate::prefetch_gantt::plan_svg;
use crate::prefetch_metrics::{serve, Metrics};
use crate::prefetch_view::{ReportMode, Reporter};
use crate::render::duration;
use crate::settings::GlobalArgs;

/// Bandwidth assumed before any transfer has been measured: 200 MB/s.
const DEFAULT_BANDWIDTH: f64 = 200e6;

#[derive(Debug, Args)]
pub struct PrefetchArgs {
    /// A pipeline file (as for `analyze`), or the name of a pipeline already analysed.
    #[arg(value_name = "FILE|PIPELINE")]
    pub target: String,

    /// The run to prefetch for: an Argo Workflow name in the history store (`kfcache history
    /// import`, the sidecar). Its start anchors the plan and its task events drive --follow.
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,

    /// Most bytes the cache may hold: a size (64GiB), or a fraction of the data region
    /// (0.5 or 50%) with --data-region.
    #[arg(long, value_name = "SIZE|FRACTION", default_value = "64GiB")]
    pub budget: String,

    /// Size of the Ignite data region, for a fractional --budget.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub data_region: Option<u64>,

    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Keep running: re-plan on the run's task events and stage until its GPU tasks started.
    #[arg(long)]
    pub follow: bool,

    /// Plan the inputs of every task, not only of those that use GPUs.
    #[arg(long)]
    pub all_tasks: bool,

    /// Also draw the staging windows against the predicted task starts to this SVG file.
    #[arg(long, value_name = "OUT.svg")]
    pub gantt: Option<PathBuf>,

    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9464) while running.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Staging must end this many seconds before a task's predicted start.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub margin: f64,

    /// Staging bandwidth for the plan [default: measured from recent transfers, else 200].
    #[arg(long, value_name = "MB/s")]
    pub bandwidth: Option<f64>,

    /// When the run starts (RFC 3339) [default: the --run's start, else now].
    #[arg(long, value_name = "TIME", conflicts_with = "next_run", value_parser = parse_time)]
    pub start_at: Option<DateTime<Utc>>,

    /// Start at the CronWorkflow's next fire time, in its timezone.
    #[arg(long)]
    pub next_run: bool,

    /// Stage only the inputs of tasks predicted to start before this time (RFC 3339); later
    /// readers still count when room is made. `kfcache cron` stages its window this way.
    #[arg(long, value_name = "TIME", conflicts_with = "follow", value_parser = parse_time)]
    pub starting_before: Option<DateTime<Utc>>,

    /// With --follow, hold each item back until this many seconds before its latest safe
    /// start (its deadline minus its transfer time at the plan's bandwidth) instead of staging
    /// it at once: the link stays free for the tasks already reading from the origin, and
    /// staged data takes room in the cache for less time. Later re-plans stage it when due.
    /// While tasks of the run are predicted to be reading inputs the cache does not hold from
    /// the origin, the lead is 0: only items that must start now to be in time are staged.
    /// Without history of the pipeline (predicted starts from priors only) it is ignored.
    #[arg(long, value_name = "SECONDS", requires = "follow")]
    pub lead: Option<f64>,

    /// Objects staged at once per Ignite node.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub per_node: usize,

    /// Objects staged at once per source (bucket, host, claim).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub per_source: usize,

    /// Before staging, remove what writes interrupted more than this many seconds ago left
    /// behind (a crashed prefetch); writes in flight for less stay.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub sweep_after: f64,

    /// Seconds between re-plans with --follow.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub poll: f64,

    /// Output of --dry-run.
    #[arg(long, short = 'f', value_enum, default_value_t = PlanFormat::Table)]
    pub format: PlanFormat,

    /// How progress is shown: bars on a terminal and JSON event lines otherwise (auto),
    /// always bars, always JSON lines on stdout, or nothing.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,

    /// Template directories for `templateRef`, as for `analyze`.
    #[arg(long, value_name = "DIR")]
    pub templates: Vec<PathBuf>,

    /// How many recent runs of history the prediction learns from.
    #[arg(long, value_name = "N", default_value_t = crate::predict::DEFAULT_HISTORY_RUNS)]
    pub history: u32,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Bars,
    Json,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// One row per item: task, input, bytes, deadline, window, status, evictions.
    Table,
    /// The whole plan as JSON.
    Json,
}

/// `--budget`: bytes, or a fraction of the data region.
fn budget_bytes(text: &str, data_region: Option<u64>) -> Result<u64> {
    let trimmed = text.trim();
    let fraction = if let Some(percent) = trimmed.strip_suffix('%') {
        Some(percent.trim().parse::<f64>().map(|p| p / 100.0))
    } else if trimmed.contains('.') && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        Some(trimmed.parse::<f64>())
    } else {
        None
    };
    let bytes = match fraction {
        Some(fraction) => {
            let fraction = fraction
                .ok()
                .filter(|f| *f > 0.0 && *f <= 1.0)
                .with_context(|| {
                    format!("--budget {text:?}: a fraction must be in (0, 1] or (0%, 100%]")
                })?;
            let region = data_region.with_context(|| {
                format!("--budget {text:?} is a fraction of the data region: give its size with --data-region")
            })?;
            (region as f64 * fraction) as u64
        }
        None => parse_size(trimmed).map_err(|e| anyhow::anyhow!("--budget {text:?}: {e}"))?,
    };
    if bytes == 0 {
        bail!("--budget {text:?} is 0 bytes");
    }
    Ok(bytes)
}

/// The run's task states from the history store, and when the run started.
struct RunState {
    started_at: Option<DateTime<Utc>>,
    tasks: HashMap<String, Vec<TaskObservation>>,
}

async fn run_state(store: &Store, pipeline: &Pipeline, run: &str) -> Result<Option<RunState>> {
    let runs = store
        .runs_of_pipeline(&pipeline.name, 10_000)
        .await
        .with_context(|| format!("cannot read the runs of `{}`", pipeline.name))?;
    let Some(stored) = runs.into_iter().find(|r| r.run.name == run) else {
        return Ok(None);
    };
    let mut tasks: HashMap<String, Vec<TaskObservation>> = HashMap::new();
    for task in stored.run.tasks {
        tasks.entry(task.task_key.clone()).or_default().push(task);
    }
    Ok(Some(RunState {
        started_at: stored.run.started_at,
        tasks,
    }))
}

fn task_state(observations: Option<&Vec<TaskObservation>>, anchor: DateTime<Utc>) -> TaskState {
    let Some(observations) = observations.filter(|o| !o.is_empty()) else {
        return TaskState::Pending;
    };
    if observations
        .iter()
        .all(|o| o.finished_at.is_some() || o.skipped())
    {
        return TaskState::Done;
    }
    let started = observations.iter().filter_map(|o| o.started_at).min();
    match started {
        Some(started) => TaskState::Running {
            started_s: (started - anchor).num_milliseconds() as f64 / 1000.0,
        },
        None => TaskState::Pending,
    }
}

/// The plan's view of the predicted run.
fn plan_tasks(
    pipeline: &Pipeline,
    prediction: &Prediction,
    run: Option<&RunState>,
    anchor: DateTime<Utc>,
) -> Vec<PlanTask> {
    pipeline
        .tasks
        .iter()
        .zip(&prediction.tasks)
        .map(|(task, predicted)| PlanTask {
            id: task.id.clone(),
            gpus: task.gpus,
            start_s: predicted.start_s,
            end_s: predicted.end_s,
            runs: predicted.runs,
            state: run
                .map(|r| task_state(r.tasks.get(&task.id), anchor))
                .unwrap_or(TaskState::Pending),
            inputs: predicted
                .inputs
                .iter()
                .filter_map(|i| {
                    Some(PlanInput {
                        name: i.name.clone(),
                        uri: i.uri.clone()?,
                        bytes: i.size_bytes,
                    })
                })
                .collect(),
            outputs: task
                .outputs
                .iter()
                .map(|o| {
                    o.location.clone().unwrap_or_else(|| {
                        kfcache_parser::model::task_output_uri(&task.id, &o.name)
                    })
                })
                .collect(),
        })
        .collect()
}

/// What the namespace holds, with leases.
async fn cached_entries(cache: &ObjectCache<IgniteSink>) -> Result<Vec<CachedEntry>> {
    let leased = lease::leased_uris(cache).await?;
    Ok(cache
        .list()
        .await?
        .into_iter()
        .map(|m| CachedEntry {
            leased: leased.contains(&m.uri),
            uri: m.uri,
            bytes: m.size,
        })
        .collect())
}

pub async fn run(global: &GlobalArgs, args: PrefetchArgs) -> Result<()> {
    let budget = budget_bytes(&args.budget, args.data_region)?;
    if !(args.margin >= 0.0 && args.margin.is_finite()) {
        bail!("--margin must be a non-negative number of seconds");
    }
    if !(args.sweep_after >= 0.0 && args.sweep_after.is_finite()) {
        bail!("--sweep-after must be a non-negative number of seconds");
    }
    if !(args.poll > 0.0 && args.poll.is_finite()) {
        bail!("--poll must be a positive number of seconds");
    }
    if args.per_node == 0 || args.per_source == 0 {
        bail!("--per-node and --per-source must be at least 1");
    }
    if let Some(lead) = args.lead {
        if !(lead >= 0.0 && lead.is_finite()) {
            bail!("--lead must be a non-negative number of seconds");
        }
    }
    if let Some(b) = args.bandwidth {
        if !(b > 0.0 && b.is_finite()) {
            bail!("--bandwidth must be a positive number of MB/s");
        }
    }
    let db = global.db_path()?;
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open the database {}", db.display()))?;
    let mut settings = args.connection.resolve()?;
    let targets = resolve_targets(&store, &args.target, &args.templates).await?;
    // A run's objects are staged under its Kubernetes namespace, where its sidecars look.
    if let Some(name) = &args.run {
        for (pipeline, _, _) in &targets {
            if let Some(namespace) = store.run_namespace(&pipeline.name, Some(name)).await? {
                settings.default_tenant(Some(&namespace))?;
                break;
            }
        }
    }
    let bandwidth = match args.bandwidth {
        Some(mbps) => mbps * 1e6,
        None => store
            .measured_bandwidth(50)
            .await?
            .unwrap_or(DEFAULT_BANDWIDTH),
    };

    // The cache is read even for a dry run (what is there shapes the plan); a dry run without
    // a reachable cluster plans against an empty cache and says so.
    let cache = match open_cache(&settings).await {
        Ok(cache) => Some(cache),
        Err(error) if args.dry_run => {
            eprintln!("warning: planning against an empty cache: {error:#}");
            None
        }
        Err(error) => return Err(error),
    };
    let metrics = match args.metrics_addr {
        Some(addr) if !args.dry_run => {
            let metrics = Metrics::new();
            let (bound, _server) = serve(metrics.clone(), addr).await?;
            eprintln!("metrics on http://{bound}/metrics");
            Some(metrics)
        }
        _ => None,
    };

    let mut failed = 0;
    for (pipeline, dag, version_id) in targets {
        failed += prefetch_pipeline(
            &args,
            &store,
            cache.as_ref(),
            &settings.source,
            &settings.base_namespace,
            metrics.as_ref(),
            Target {
                pipeline,
                dag,
                version_id,
            },
            budget,
            bandwidth,
        )
        .await?;
    }
    if failed > 0 {
        bail!("{failed} object(s) could not be staged (see the events above)");
    }
    Ok(())
}

struct Target {
    pipeline: Pipeline,
    dag: Dag,
    version_id: i64,
}

/// Plans (and unless --dry-run stages) one pipeline; returns how many objects failed.
#[allow(clippy::too_many_arguments)]
async fn prefetch_pipeline(
    args: &PrefetchArgs,
    store: &Store,
    cache: Option<&ObjectCache<IgniteSink>>,
    source_config: &kfcache_prefetcher::SourceConfig,
    events_namespace: &str,
    metrics: Option<&Metrics>,
    target: Target,
    budget: u64,
    bandwidth: f64,
) -> Result<u64> {
    let Target {
        pipeline,
        dag,
        version_id,
    } = target;
    let prediction = predict_from_store(
        store,
        &pipeline,
        &dag,
        &EstimatorConfig::default(),
        args.history,
    )
    .await?;
    let mut run = match &args.run {
        Some(name) => Some(run_state(store, &pipeline, name).await?.with_context(|| {
            format!(
                "run `{name}` of `{}` is not in the history store (kfcache history import)",
                pipeline.name
            )
        })?),
        None => None,
    };
    let now = Utc::now();
    let anchor = if let Some(at) = args.start_at {
        at
    } else if let Some(started) = run.as_ref().and_then(|r| r.started_at) {
        started
    } else if args.next_run {
        anchor::next_run(&pipeline, now)?
    } else {
        now
    };
    let clock = PlanClock { anchor };
    let config = PlanConfig {
        now_s: clock.now_s().max(0.0),
        margin_s: args.margin,
        bandwidth_bytes_per_s: bandwidth,
        budget_bytes: budget,
        all_tasks: args.all_tasks,
    };
    let cached = match cache {
        Some(cache) => cached_entries(cache).await?,
        None => Vec::new(),
    };
    let source = Arc::new(ObjectStoreSource::new(source_config.clone()));
    let mut tasks = plan_tasks(&pipeline, &prediction, run.as_ref(), anchor);
    let sizes = probe_unknown_sizes(store, source.as_ref(), &tasks).await;
    fill_sizes(&mut tasks, &sizes);
    let mut current = Arc::new(plan(&tasks, &cached, &config));
    if let Some(before) = args.starting_before {
        let horizon_s = (before - anchor).num_milliseconds() as f64 / 1000.0;
        current = Arc::new(starting_before(&current, horizon_s));
    }
    // Holding items back trusts the predicted starts: only those learned from history.
    let lead = args.lead.filter(|_| prediction.history_runs > 0);
    if let Some(lead) = lead {
        let reads = origin_reads(&tasks, &cached, &config);
        current = Arc::new(due_within(&current, lead, reads.as_ref(), true));
    } else if args.lead.is_some() {
        Arc::make_mut(&mut current).notes.push(
            "--lead ignored: no history yet, so the predicted starts are only priors; staging at once"
                .to_string(),
        );
    }

    if let Some(out) = &args.gantt {
        let svg = plan_svg(&pipeline.name, &current, &tasks)?;
        std::fs::write(out, svg).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if args.dry_run {
        match args.format {
            PlanFormat::Table => print!("{}", plan_table(&pipeline, &current, anchor)),
            PlanFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "pipeline": pipeline.name,
                    "version_id": version_id,
                    "anchor": rfc3339(anchor),
                    // Where the objects go: the run's namespace scopes the keys.
                    "cache_namespace": cache.map(|c| c.config().namespace.clone()),
                    "plan": &*current,
                }))?
            ),
        }
        return Ok(0);
    }
    let Some(cache) = cache else {
        bail!("no cache to stage into");
    };

    let mode = match args.progress {
        Progress::Auto => ReportMode::detect(),
        Progress::Bars => ReportMode::Tty,
        Progress::Json => ReportMode::JsonLines,
        Progress::None => ReportMode::Quiet,
    };
    let reporter = Arc::new(Reporter::new(&current, mode));
    // Resume after a crash: what interrupted writes left is removed before room is counted.
    let swept = cache
        .sweep_older_than(Duration::from_secs_f64(args.sweep_after))
        .await
        .context("cannot sweep interrupted writes")?;
    if swept.writes_removed + swept.batches_removed > 0 {
        reporter.message(&format!(
            "removed {} interrupted write(s) and {} batch(es) ({} chunks) left by an earlier run",
            swept.writes_removed, swept.batches_removed, swept.chunks_removed
        ));
    }
    for note in &current.notes {
        reporter.message(note);
    }
    let transfers: Arc<Mutex<Vec<TransferRecord>>> = Arc::default();
    let sink = {
        let reporter = reporter.clone();
        let metrics = metrics.cloned();
        let transfers = transfers.clone();
        let run_name = args.run.clone();
        Arc::new(move |event: Event| {
            reporter.event(&event);
            if let Some(metrics) = &metrics {
                metrics.observe(&event);
            }
            if let Event::Staged {
                uri,
                bytes,
                seconds,
                deadline_s,
                met_deadline,
                ..
            } = &event
            {
                transfers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(TransferRecord {
                        version_id: Some(version_id),
                        run_name: run_name.clone(),
                        uri: uri.clone(),
                        bytes: *bytes,
                        seconds: *seconds,
                        finished_at: Utc::now(),
                        deadline_at: Some(at(anchor, *deadline_s)),
                        met_deadline: Some(*met_deadline),
                    });
            }
        })
    };
    let nodes = cache.sink().client().addresses().len().max(1);
    let executor = Arc::new(
        Executor::new(
            source,
            cache.clone(),
            ExecuteConfig {
                budget_bytes: budget,
                concurrency: args.per_node * nodes,
                per_source_concurrency: args.per_source,
                stage: StageOptions::default(),
                retry: RetryPolicy::default(),
            },
            clock,
            sink,
        )
        .await?,
    );
    if let Some(metrics) = metrics {
        metrics.set_queue_depth(current.staged().count() as u64);
        metrics.set_cache_bytes(executor.used_bytes());
    }
    let mut total = executor.execute(&current).await?;
    record(store, &transfers).await?;
    if let Some(metrics) = metrics {
        metrics.set_queue_depth(0);
        metrics.set_cache_bytes(executor.used_bytes());
    }

    if args.follow {
        let mut done: HashSet<String> = HashSet::new();
        let events =
            kfcache_sidecar::EventLog::new(cache.sink().clone(), events_namespace.to_string());
        loop {
            // The sidecars' reports of tasks that started and ended become the run's state.
            match kfcache_sidecar::drain::drain(&events, store).await {
                Ok(drained) if drained.observations > 0 => reporter.message(&format!(
                    "recorded {} task run(s) the sidecars reported",
                    drained.observations
                )),
                Ok(_) => {}
                Err(error) => {
                    reporter.message(&format!("cannot drain the sidecars' events: {error}"))
                }
            }
            if let Some(name) = &args.run {
                run = run_state(store, &pipeline, name).await?;
            }
            let mut tasks = plan_tasks(&pipeline, &prediction, run.as_ref(), anchor);
            fill_sizes(&mut tasks, &sizes);
            let now_s = clock.now_s();
            let waiting = tasks.iter().any(|t| {
                t.runs
                    && (t.gpus > 0 || args.all_tasks)
                    && t.state == TaskState::Pending
                    && (run.is_some() || t.start_s > now_s)
            });
            if !waiting {
                reporter.message("every planned task has started; nothing more to stage");
                break;
            }
            tokio::time::sleep(Duration::from_secs_f64(args.poll)).await;
            executor.refresh_leases().await?;
            let cached = cached_entries(cache).await?;
            let config = PlanConfig {
                now_s: clock.now_s().max(0.0),
                ..config.clone()
            };
            let mut next = plan(&tasks, &cached, &config);
            // Cached items were checked already; only new work is executed.
            next.items.retain(|i| {
                i.status.stages() || (i.status == ItemStatus::Cached && !done.contains(&i.uri))
            });
            done.extend(next.items.iter().map(|i| i.uri.clone()));
            if let Some(lead) = lead {
                let reads = origin_reads(&tasks, &cached, &config);
                next = due_within(&next, lead, reads.as_ref(), false);
            }
            if next.staged().count() == 0 {
                continue;
            }
            reporter.message(&format!(
                "re-planned at {}: {} item(s) to stage",
                duration(config.now_s),
                next.staged().count()
            ));
            current = Arc::new(next);
            reporter.replan(&current);
            if let Some(metrics) = metrics {
                metrics.set_queue_depth(current.staged().count() as u64);
            }
            let summary = executor.execute(&current).await?;
            record(store, &transfers).await?;
            if let Some(metrics) = metrics {
                metrics.set_queue_depth(0);
                metrics.set_cache_bytes(executor.used_bytes());
            }
            total.absorb(summary);
        }
    }
    reporter.finish(&total);
    Ok(total.failed)
}

/// Asks the source for the size of every stageable input whose size is not known (an object's
/// size, or the total under a directory), stores what it learns, and returns it. Inputs that
/// do not exist yet (outputs of upstream tasks) are left unknown.
async fn probe_unknown_sizes(
    store: &Store,
    source: &ObjectStoreSource,
    tasks: &[PlanTask],
) -> HashMap<String, u64> {
    use futures::StreamExt;
    use kfcache_prefetcher::ArtifactSource;

    let mut unknown: Vec<String> = tasks
        .iter()
        .flat_map(|t| t.inputs.iter())
        .filter(|i| i.bytes.is_none() && kfcache_prefetcher::plan::stageable(&i.uri))
        .map(|i| i.uri.clone())
        .collect();
    unknown.sort();
    unknown.dedup();
    // (URI, (bytes, objects when it is a directory)) for each probe that answered.
    type Probed = (String, Option<(u64, Option<u64>)>);
    let probed: Vec<Probed> = futures::stream::iter(unknown)
        .map(|uri| async move {
            let size = if uri.ends_with('/') {
                source
                    .list(&uri)
                    .await
                    .ok()
                    .map(|l| (l.iter().map(|o| o.size).sum(), Some(l.len() as u64)))
            } else {
                match source.head(&uri).await {
                    Ok(object) => Some((object.size, None)),
                    Err(_) => source
                        .list(&format!("{uri}/"))
                        .await
                        .ok()
                        .filter(|l| !l.is_empty())
                        .map(|l| (l.iter().map(|o| o.size).sum(), Some(l.len() as u64))),
                }
            };
            (uri, size)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut sizes = HashMap::new();
    for (uri, size) in probed {
        let Some((bytes, count)) = size else {
            continue;
        };
        let stored = match count {
            Some(count) if uri.ends_with('/') => store.set_directory_size(&uri, bytes, count).await,
            _ => store.set_data_size(&uri, bytes).await,
        };
        if let Err(error) = stored {
            tracing::warn!(%uri, "cannot store the probed size: {error}");
        }
        sizes.insert(uri, bytes);
    }
    sizes
}

fn fill_sizes(tasks: &mut [PlanTask], sizes: &HashMap<String, u64>) {
    for input in tasks.iter_mut().flat_map(|t| t.inputs.iter_mut()) {
        if input.bytes.is_none() {
            input.bytes = sizes.get(&input.uri).copied();
        }
    }
}

async fn record(store: &Store, transfers: &Mutex<Vec<TransferRecord>>) -> Result<()> {
    let batch = std::mem::take(&mut *transfers.lock().unwrap_or_else(|p| p.into_inner()));
    store
        .record_transfers(&batch)
        .await
        .context("cannot record the transfers")
}

/// `--starting-before`: the plan without the items whose first reader starts after
/// `horizon_s`.
fn starting_before(plan: &Plan, horizon_s: f64) -> Plan {
    holding_back(
        plan,
        |i| i.deadline_s + plan.config.margin_s <= horizon_s,
        |later| {
            Some(format!(
                "{later} item(s) read only after {} left for a later prefetch",
                duration(horizon_s)
            ))
        },
    )
}

/// `--lead`: the plan without the items that are not due yet, those whose latest safe start
/// is more than `lead_s` after the plan's now (a later re-plan stages them). While the run's
/// tasks read from the origin (`reads`, from [`origin_reads`] at the plan's now), the lead is
/// 0: staging leaves them the link and takes only what must start now to be in time. With
/// `note`, the plan says how many were held.
fn due_within(plan: &Plan, lead_s: f64, reads: Option<&OriginReads>, note: bool) -> Plan {
    let now_s = plan.config.now_s;
    let due_by = if reads.is_some() {
        now_s
    } else {
        now_s + lead_s
    };
    holding_back(
        plan,
        |i| i.latest_start_s <= due_by,
        |held| {
            note.then(|| match reads {
                Some(reads) => format!(
                    "{held} item(s) held while the run's tasks read {:.0} MB from the origin \
                     (until about {}), then until {} before their latest safe start",
                    reads.bytes as f64 / 1e6,
                    duration(reads.until_s),
                    duration(lead_s)
                ),
                None => format!(
                    "{held} item(s) held until {} before their latest safe start",
                    duration(lead_s)
                ),
            })
        },
    )
}

/// The plan with only the items to stage now that `now` accepts (items not to stage stay);
/// those held back keep their readers in `readers`, so evictions still see them. `note` is
/// told how many were held, when any were, and may add a note to the plan.
fn holding_back(
    plan: &Plan,
    now: impl Fn(&PlanItem) -> bool,
    note: impl FnOnce(usize) -> Option<String>,
) -> Plan {
    let mut kept = plan.clone();
    kept.items.retain(|i| !i.status.stages() || now(i));
    let held = plan.items.len() - kept.items.len();
    if held > 0 {
        kept.notes.extend(note(held));
    }
    kept
}

/// The `--dry-run` table.
fn plan_table(pipeline: &Pipeline, plan: &Plan, anchor: DateTime<Utc>) -> String {
    let mut out = format!(
        "{} `{}`: run starts {}, budget {}, bandwidth {:.0} MB/s, margin {}\n",
        pipeline.kind,
        pipeline.name,
        rfc3339(anchor),
        human_size(plan.config.budget_bytes),
        plan.config.bandwidth_bytes_per_s / 1e6,
        duration(plan.config.margin_s),
    );
    let staged: Vec<_> = plan.staged().collect();
    out.push_str(&format!(
        "{} item(s) to stage, {}; peak {} in the cache\n",
        staged.len(),
        human_size(plan.staged_bytes()),
        human_size(plan.peak_bytes)
    ));
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_HORIZONTAL_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "TASK", "INPUT", "BYTES", "DEADLINE", "WINDOW", "STATUS", "EVICTS",
        ]);
    for item in &plan.items {
        let mut task = item
            .consumers
            .first()
            .map(|c| tail(c, 24))
            .unwrap_or_default();
        if item.consumers.len() > 1 {
            task.push_str(&format!(" +{}", item.consumers.len() - 1));
        }
        let bytes = if item.size_known {
            human_size(item.bytes)
        } else {
            "?".to_string()
        };
        let window = match item.window {
            Some((start, end)) => format!("{} – {}", duration(start), duration(end)),
            None => "-".to_string(),
        };
        let mut status = item.status.as_str().to_string();
        if item.restage {
            status.push_str(" (again)");
        }
        if let ItemStatus::NoRoom { short_bytes } = item.status {
            status.push_str(&format!("\n{} short", human_size(short_bytes)));
        }
        table.add_row(vec![
            Cell::new(task),
            Cell::new(tail(&item.uri, 40)),
            Cell::new(bytes).set_alignment(CellAlignment::Right),
            Cell::new(format!(
                "{}\n{}",
                duration(item.deadline_s),
                at(anchor, item.deadline_s).format("%H:%M:%S")
            ))
            .set_alignment(CellAlignment::Right),
            Cell::new(window),
            Cell::new(status),
            Cell::new(if item.evicts.is_empty() {
                "-".to_string()
            } else {
                item.evicts
                    .iter()
                    .map(|e| tail(e, 32))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        ]);
    }
    out.push_str(&format!("{table}\n"));
    for note in &plan.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn budgets_are_sizes_or_fractions_of_the_data_region() {
        assert_eq!(budget_bytes("64GiB", None).unwrap(), 64 << 30);
        assert_eq!(budget_bytes("50%", Some(8 << 30)).unwrap(), 4 << 30);
        assert_eq!(budget_bytes("0.25", Some(8 << 30)).unwrap(), 2 << 30);
        let error = budget_bytes("0.5", None).unwrap_err().to_string();
        assert!(error.contains("--data-region"), "{error}");
        assert!(budget_bytes("150%", Some(1 << 30)).is_err());
        assert!(budget_bytes("0", None).is_err());
        assert!(budget_bytes("lots", None).is_err());
    }

    fn gpu_task(id: &str, start_s: f64, uri: &str, bytes: u64) -> PlanTask {
        PlanTask {
            id: id.to_string(),
            gpus: 1,
            start_s,
            end_s: start_s + 60.0,
            runs: true,
            state: TaskState::Pending,
            inputs: vec![PlanInput {
                name: "data".to_string(),
                uri: uri.to_string(),
                bytes: Some(bytes),
            }],
            outputs: Vec::new(),
        }
    }

    /// Two GPU tasks reading 100 MB each, from 30 s and from 100 s.
    fn soon_and_later() -> Vec<PlanTask> {
        vec![
            gpu_task("soon", 30.0, "s3://b/soon", 100_000_000),
            gpu_task("later", 100.0, "s3://b/later", 100_000_000),
        ]
    }

    /// 10 MB/s with a 5 s margin, planned at `now_s`: latest safe starts of
    /// [`soon_and_later`] at 15 s and 85 s.
    fn config_at(now_s: f64) -> PlanConfig {
        PlanConfig {
            now_s,
            margin_s: 5.0,
            bandwidth_bytes_per_s: 10e6,
            budget_bytes: 1 << 30,
            all_tasks: false,
        }
    }

    #[test]
    fn lead_holds_items_until_they_are_due_and_keeps_their_readers() {
        // 100 MB at 10 MB/s with a 5 s margin: latest safe starts at 15 s and 85 s.
        let tasks = soon_and_later();
        let full = plan(&tasks, &[], &config_at(0.0));
        let latest: Vec<f64> = full.staged().map(|i| i.latest_start_s).collect();
        assert_eq!(latest, [15.0, 85.0]);

        // Due within 20 s of now: the first only; the second keeps its reader for evictions.
        let due = due_within(&full, 20.0, None, true);
        let staged: Vec<&str> = due.staged().map(|i| i.uri.as_str()).collect();
        assert_eq!(staged, ["s3://b/soon"]);
        assert_eq!(due.readers_of("s3://b/later").len(), 1);
        assert!(
            due.notes.iter().any(|n| n.contains("1 item(s) held")),
            "{:?}",
            due.notes
        );

        // A re-plan at 70 s finds the second due; an item is never held past its latest start.
        let later = plan(&tasks, &[], &config_at(70.0));
        let due = due_within(&later, 20.0, None, false);
        let staged: Vec<&str> = due.staged().map(|i| i.uri.as_str()).collect();
        assert!(staged.contains(&"s3://b/later"), "{staged:?}");
        let late = plan(&tasks, &[], &config_at(90.0));
        assert!(due_within(&late, 0.0, None, false)
            .staged()
            .any(|i| i.uri == "s3://b/later"));
    }

    #[test]
    fn while_tasks_read_from_the_origin_only_items_that_must_start_now_are_staged() {
        // Latest safe starts at 15 s and 85 s, as above; a CPU task reads 200 MB from the
        // origin from 0 s, until 20 s at 10 MB/s.
        let mut tasks = soon_and_later();
        let mut first = gpu_task("first", 0.0, "s3://b/raw", 200_000_000);
        first.gpus = 0;
        tasks.push(first);
        let staged = |now_s: f64| {
            let config = config_at(now_s);
            let full = plan(&tasks, &[], &config);
            let reads = origin_reads(&tasks, &[], &config);
            let due = due_within(&full, 80.0, reads.as_ref(), true);
            let uris: Vec<String> = due.staged().map(|i| i.uri.clone()).collect();
            (uris, due.notes)
        };
        // At 1 s a lead of 80 s would stage both; the origin reads hold both back.
        let (uris, notes) = staged(1.0);
        assert!(uris.is_empty(), "{uris:?}");
        assert!(
            notes.iter().any(|n| n.contains("2 item(s) held while")),
            "{notes:?}"
        );
        // At 15 s the first must start to be in time: it goes, the link shared or not.
        assert_eq!(staged(15.0).0, ["s3://b/soon"]);
        // At 21 s the reads are over and the lead applies again.
        assert_eq!(staged(21.0).0, ["s3://b/soon", "s3://b/later"]);
    }

    #[test]
    fn starting_before_leaves_later_readers_items_for_a_later_prefetch() {
        let within = starting_before(&plan(&soon_and_later(), &[], &config_at(0.0)), 60.0);
        let staged: Vec<&str> = within.staged().map(|i| i.uri.as_str()).collect();
        assert_eq!(staged, ["s3://b/soon"]);
        assert_eq!(within.readers_of("s3://b/later").len(), 1);
        assert!(
            within
                .notes
                .iter()
                .any(|n| n.contains("1 item(s) read only after")),
            "{:?}",
            within.notes
        );
    }
}
