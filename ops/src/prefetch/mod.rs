//! A prefetch session: stage each GPU task's inputs into the cache before its predicted
//! start, within a budget.
//!
//! 1. [`plan`]: the pipeline is predicted from the history in the store and anchored at the
//!    run's start (the run's recorded start, [`Request::start_at`], the CronWorkflow's next
//!    fire time, or now). What the cache holds and what is leased shapes the plan
//!    (kfcache-prefetcher's `plan`: items, deadlines, windows, evictions); inputs of unknown
//!    size are probed first. [`Request::starting_before`] and [`Request::lead_s`] hold back
//!    what is not due yet ([`policy`]).
//! 2. [`stage`]: the executor stages the plan, every transfer is recorded in the store (the
//!    bandwidth of later plans), and progress goes to an [`Observer`]. With
//!    [`Request::follow`] it keeps going: every [`Request::poll`] it drains the sidecars'
//!    events into the history, re-plans from the run's actual task states (a task that
//!    started early brings its inputs to the front) and stages what became due, until every
//!    planned task of the run has started.
//!
//! A caller that only wants the plan (a dry run) calls [`plan`] alone; nothing is changed.

pub mod policy;
mod sizes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kfcache_predictor::{anchor, EstimatorConfig, Prediction};
use kfcache_prefetcher::execute::{
    Event, ExecuteConfig, Executor, PlanClock, RetryPolicy, Summary,
};
use kfcache_prefetcher::plan::{
    origin_reads, plan as make_plan, CachedEntry, ItemStatus, Plan, PlanConfig, PlanTask, TaskState,
};
use kfcache_prefetcher::{
    lease, IgniteSink, ObjectCache, ObjectStoreSource, SourceConfig, StageOptions,
};
use kfcache_schema::{Store, TransferRecord};

use crate::analysis::Target;
use crate::error::{Context as _, Error, Result};
use crate::predict::{predict_from_store, DEFAULT_HISTORY_RUNS};
use crate::units::{at, duration};
use policy::{due_within, plan_tasks, run_state, starting_before, RunState};

/// Bandwidth assumed before any transfer has been measured: 200 MB/s.
pub const DEFAULT_BANDWIDTH: f64 = 200e6;

/// Transfers a measured bandwidth is taken from.
const BANDWIDTH_TRANSFERS: u32 = 50;

/// What a prefetch session is asked to do. [`Request::default`] holds the command line's
/// defaults.
#[derive(Debug, Clone)]
pub struct Request {
    /// The run to prefetch for (an Argo Workflow name in the history store): its start
    /// anchors the plan and its task events drive [`Request::follow`].
    pub run: Option<String>,
    /// Most bytes the cache may hold.
    pub budget_bytes: u64,
    /// Plan the inputs of every task, not only of those that use GPUs.
    pub all_tasks: bool,
    /// Staging must end this many seconds before a task's predicted start.
    pub margin_s: f64,
    /// Staging bandwidth for the plan, bytes per second; measured from the recorded
    /// transfers when `None` ([`bandwidth`]).
    pub bandwidth_bytes_per_s: Option<f64>,
    /// When the run starts; else the run's recorded start, else (with `next_run`) the
    /// CronWorkflow's next fire time, else now.
    pub start_at: Option<DateTime<Utc>>,
    /// Anchor at the pipeline's next scheduled run.
    pub next_run: bool,
    /// Stage only the inputs of tasks predicted to start before this time; later readers
    /// still count when room is made.
    pub starting_before: Option<DateTime<Utc>>,
    /// Hold each item back until this many seconds before its latest safe start (only with
    /// history: predicted starts from priors are not trusted to wait for).
    pub lead_s: Option<f64>,
    /// Keep re-planning on the run's task events until its planned tasks have started.
    pub follow: bool,
    /// Objects staged at once per Ignite node.
    pub per_node: usize,
    /// Objects staged at once per source (bucket, host, claim).
    pub per_source: usize,
    /// Before staging, remove what writes interrupted longer ago than this left behind.
    pub sweep_after: Duration,
    /// Time between re-plans when following.
    pub poll: Duration,
    /// Recent runs of history the prediction learns from.
    pub history_runs: u32,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            run: None,
            budget_bytes: 64 << 30,
            all_tasks: false,
            margin_s: 30.0,
            bandwidth_bytes_per_s: None,
            start_at: None,
            next_run: false,
            starting_before: None,
            lead_s: None,
            follow: false,
            per_node: 4,
            per_source: 8,
            sweep_after: Duration::from_secs(600),
            poll: Duration::from_secs(5),
            history_runs: DEFAULT_HISTORY_RUNS,
        }
    }
}

impl Request {
    /// Refuses values no session can run with, naming the option.
    pub fn check(&self) -> Result<()> {
        let invalid = |text: &str| Err(Error::Invalid(text.to_string()));
        if self.budget_bytes == 0 {
            return invalid("the budget is 0 bytes");
        }
        if !(self.margin_s >= 0.0 && self.margin_s.is_finite()) {
            return invalid("--margin must be a non-negative number of seconds");
        }
        if self.poll.is_zero() {
            return invalid("--poll must be a positive number of seconds");
        }
        if self.per_node == 0 || self.per_source == 0 {
            return invalid("--per-node and --per-source must be at least 1");
        }
        if let Some(lead) = self.lead_s {
            if !(lead >= 0.0 && lead.is_finite()) {
                return invalid("--lead must be a non-negative number of seconds");
            }
        }
        if let Some(b) = self.bandwidth_bytes_per_s {
            if !(b > 0.0 && b.is_finite()) {
                return invalid("--bandwidth must be a positive number of MB/s");
            }
        }
        Ok(())
    }
}

/// What a session reports while it stages. Every method has a default that ignores it.
pub trait Observer: Send + Sync {
    /// An event of the executor (an item started, staged, failed, an eviction, …).
    fn event(&self, _event: &Event) {}
    /// A line for people: what the session noticed or decided.
    fn message(&self, _text: &str) {}
    /// Following a run, a re-plan with new items to stage.
    fn replanned(&self, _plan: &Plan) {}
    /// Items queued for staging now, and the bytes the session's ledger counts in the cache.
    fn queue(&self, _items: u64, _cache_bytes: u64) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {}

/// The staging bandwidth a plan assumes: the request's, else measured from the last
/// transfers recorded in the store, else [`DEFAULT_BANDWIDTH`].
pub async fn bandwidth(store: &Store, request: &Request) -> Result<f64> {
    if let Some(bandwidth) = request.bandwidth_bytes_per_s {
        return Ok(bandwidth);
    }
    Ok(store
        .measured_bandwidth(BANDWIDTH_TRANSFERS)
        .await
        .context(|| "cannot read the recorded transfers".to_string())?
        .unwrap_or(DEFAULT_BANDWIDTH))
}

/// The Kubernetes namespace that the request's run ran in, if the history knows it: its
/// objects are staged under it, where its pods' sidecars and gateway look.
pub async fn run_namespace(
    store: &Store,
    request: &Request,
    targets: &[Target],
) -> Result<Option<String>> {
    let Some(name) = &request.run else {
        return Ok(None);
    };
    for target in targets {
        let namespace = store
            .run_namespace(&target.pipeline.name, Some(name))
            .await
            .context(|| format!("cannot read the namespace of run `{name}`"))?;
        if namespace.is_some() {
            return Ok(namespace);
        }
    }
    Ok(None)
}

/// A pipeline's plan, and what staging it needs.
#[derive(Debug)]
pub struct Planned {
    pub target: Target,
    /// The run's start: the plan's seconds count from it.
    pub anchor: DateTime<Utc>,
    /// What is staged now.
    pub plan: Arc<Plan>,
    /// The plan's view of the run's tasks (predicted windows, inputs with their sizes).
    pub tasks: Vec<PlanTask>,
    prediction: Prediction,
    run: Option<RunState>,
    sizes: HashMap<String, u64>,
    config: PlanConfig,
    lead_s: Option<f64>,
    source: Arc<ObjectStoreSource>,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("started_at", &self.started_at)
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// What the cache's namespace holds, with leases.
async fn cached_entries(cache: &ObjectCache<IgniteSink>) -> Result<Vec<CachedEntry>> {
    let leased = lease::leased_uris(cache)
        .await
        .context(|| "cannot read the leases".to_string())?;
    Ok(cache
        .list()
        .await
        .context(|| "cannot list the cache".to_string())?
        .into_iter()
        .map(|m| CachedEntry {
            leased: leased.contains(&m.uri),
            uri: m.uri,
            bytes: m.size,
        })
        .collect())
}

/// Plans the staging of `target`'s inputs; changes nothing but the store's probed sizes.
/// Without a cache (a dry run with no cluster) the plan assumes an empty one.
pub async fn plan(
    store: &Store,
    cache: Option<&ObjectCache<IgniteSink>>,
    source: &SourceConfig,
    request: &Request,
    bandwidth_bytes_per_s: f64,
    target: Target,
) -> Result<Planned> {
    request.check()?;
    let prediction = predict_from_store(
        store,
        &target.pipeline,
        &target.dag,
        &EstimatorConfig::default(),
        request.history_runs,
    )
    .await?;
    let run =
        match &request.run {
            Some(name) => Some(run_state(store, &target.pipeline, name).await?.ok_or_else(
                || {
                    Error::Invalid(format!(
                        "run `{name}` of `{}` is not in the history store (kfcache history import)",
                        target.pipeline.name
                    ))
                },
            )?),
            None => None,
        };
    let now = Utc::now();
    let anchor = if let Some(at) = request.start_at {
        at
    } else if let Some(started) = run.as_ref().and_then(|r| r.started_at) {
        started
    } else if request.next_run {
        anchor::next_run(&target.pipeline, now)?
    } else {
        now
    };
    let clock = PlanClock { anchor };
    let config = PlanConfig {
        now_s: clock.now_s().max(0.0),
        margin_s: request.margin_s,
        bandwidth_bytes_per_s,
        budget_bytes: request.budget_bytes,
        all_tasks: request.all_tasks,
    };
    let cached = match cache {
        Some(cache) => cached_entries(cache).await?,
        None => Vec::new(),
    };
    let source = Arc::new(ObjectStoreSource::new(source.clone()));
    let mut tasks = plan_tasks(&target.pipeline, &prediction, run.as_ref(), anchor);
    let sizes = sizes::probe_unknown_sizes(store, source.as_ref(), &tasks).await;
    sizes::fill_sizes(&mut tasks, &sizes);
    let mut current = make_plan(&tasks, &cached, &config);
    if let Some(before) = request.starting_before {
        let horizon_s = (before - anchor).num_milliseconds() as f64 / 1000.0;
        current = starting_before(&current, horizon_s);
    }
    // Holding items back trusts the predicted starts: only those learned from history.
    let lead_s = request.lead_s.filter(|_| prediction.history_runs > 0);
    if let Some(lead) = lead_s {
        let reads = origin_reads(&tasks, &cached, &config);
        current = due_within(&current, lead, reads.as_ref(), true);
    } else if request.lead_s.is_some() {
        current.notes.push(
            "--lead ignored: no history yet, so the predicted starts are only priors; staging at once"
                .to_string(),
        );
    }
    Ok(Planned {
        target,
        anchor,
        plan: Arc::new(current),
        tasks,
        prediction,
        run,
        sizes,
        config,
        lead_s,
        source,
    })
}

/// Stages `planned` into `cache`, recording every transfer in `store`; following the run
/// with [`Request::follow`]. `events_namespace` is where the sidecars publish their events.
/// Returns what was staged; objects that failed are counted in [`Summary::failed`], not
/// returned as an error.
pub async fn stage(
    store: &Store,
    cache: &ObjectCache<IgniteSink>,
    events_namespace: &str,
    request: &Request,
    planned: Planned,
    observer: Arc<dyn Observer>,
) -> Result<Summary> {
    let Planned {
        target,
        anchor,
        plan: mut current,
        prediction,
        mut run,
        sizes,
        config,
        lead_s,
        source,
        ..
    } = planned;
    let clock = PlanClock { anchor };
    // Resume after a crash: what interrupted writes left is removed before room is counted.
    let swept = cache
        .sweep_older_than(request.sweep_after)
        .await
        .context(|| "cannot sweep interrupted writes".to_string())?;
    if swept.writes_removed + swept.batches_removed > 0 {
        observer.message(&format!(
            "removed {} interrupted write(s) and {} batch(es) ({} chunks) left by an earlier run",
            swept.writes_removed, swept.batches_removed, swept.chunks_removed
        ));
    }
    for note in &current.notes {
        observer.message(note);
    }
    let transfers: Arc<Mutex<Vec<TransferRecord>>> = Arc::default();
    let sink = {
        let observer = observer.clone();
        let transfers = transfers.clone();
        let run_name = request.run.clone();
        let version_id = target.version_id;
        Arc::new(move |event: Event| {
            observer.event(&event);
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
                budget_bytes: request.budget_bytes,
                concurrency: request.per_node * nodes,
                per_source_concurrency: request.per_source,
                stage: StageOptions::default(),
                retry: RetryPolicy::default(),
            },
            clock,
            sink,
        )
        .await
        .context(|| "cannot start staging".to_string())?,
    );
    observer.queue(current.staged().count() as u64, executor.used_bytes());
    let mut total = executor
        .execute(&current)
        .await
        .context(|| "staging failed".to_string())?;
    record(store, &transfers).await?;
    observer.queue(0, executor.used_bytes());
    if !request.follow {
        return Ok(total);
    }

    let mut done: HashSet<String> = HashSet::new();
    let events = kfcache_sidecar::EventLog::new(cache.sink().clone(), events_namespace.to_string());
    loop {
        // The sidecars' reports of tasks that started and ended become the run's state.
        match kfcache_sidecar::drain::drain(&events, store).await {
            Ok(drained) if drained.observations > 0 => observer.message(&format!(
                "recorded {} task run(s) the sidecars reported",
                drained.observations
            )),
            Ok(_) => {}
            Err(error) => observer.message(&format!("cannot drain the sidecars' events: {error}")),
        }
        if let Some(name) = &request.run {
            run = run_state(store, &target.pipeline, name).await?;
        }
        let mut tasks = plan_tasks(&target.pipeline, &prediction, run.as_ref(), anchor);
        sizes::fill_sizes(&mut tasks, &sizes);
        let now_s = clock.now_s();
        let waiting = tasks.iter().any(|t| {
            t.runs
                && (t.gpus > 0 || request.all_tasks)
                && t.state == TaskState::Pending
                && (run.is_some() || t.start_s > now_s)
        });
        if !waiting {
            observer.message("every planned task has started; nothing more to stage");
            break;
        }
        tokio::time::sleep(request.poll).await;
        executor
            .refresh_leases()
            .await
            .context(|| "cannot refresh the leases".to_string())?;
        let cached = cached_entries(cache).await?;
        let config = PlanConfig {
            now_s: clock.now_s().max(0.0),
            ..config.clone()
        };
        let mut next = make_plan(&tasks, &cached, &config);
        // Cached items were checked already; only new work is executed.
        next.items.retain(|i| {
            i.status.stages() || (i.status == ItemStatus::Cached && !done.contains(&i.uri))
        });
        done.extend(next.items.iter().map(|i| i.uri.clone()));
        if let Some(lead) = lead_s {
            let reads = origin_reads(&tasks, &cached, &config);
            next = due_within(&next, lead, reads.as_ref(), false);
        }
        if next.staged().count() == 0 {
            continue;
        }
        observer.message(&format!(
            "re-planned at {}: {} item(s) to stage",
            duration(config.now_s),
            next.staged().count()
        ));
        current = Arc::new(next);
        observer.replanned(&current);
        observer.queue(current.staged().count() as u64, executor.used_bytes());
        let summary = executor
            .execute(&current)
            .await
            .context(|| "staging failed".to_string())?;
        record(store, &transfers).await?;
        observer.queue(0, executor.used_bytes());
        total.absorb(summary);
    }
    Ok(total)
}

/// Records the transfers staged since the last call.
async fn record(store: &Store, transfers: &Mutex<Vec<TransferRecord>>) -> Result<()> {
    let batch = std::mem::take(&mut *transfers.lock().unwrap_or_else(|p| p.into_inner()));
    store
        .record_transfers(&batch)
        .await
        .context(|| "cannot record the transfers".to_string())
}
