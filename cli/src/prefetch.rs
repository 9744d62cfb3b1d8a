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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use kfcache_ops::analysis::Target;
use kfcache_ops::prefetch::{self, policy::parse_budget, Request};
use kfcache_ops::units::{at, duration, human_size, parse_size, parse_time, rfc3339, tail};
use kfcache_parser::Pipeline;
use kfcache_prefetcher::execute::Event;
use kfcache_prefetcher::plan::{ItemStatus, Plan};
use kfcache_schema::Store;

use crate::cache::open_cache;
use crate::config::{CacheSettings, ConnectionArgs};
use crate::predict::resolve_targets;
use crate::prefetch_gantt::plan_svg;
use crate::prefetch_metrics::{serve, Metrics};
use crate::prefetch_view::{ReportMode, Reporter};
use crate::settings::GlobalArgs;

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
    #[arg(long, value_name = "N", default_value_t = kfcache_ops::predict::DEFAULT_HISTORY_RUNS)]
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

impl PrefetchArgs {
    /// The session these flags ask for.
    fn request(&self) -> Result<Request> {
        let seconds = |value: f64, flag: &str| {
            Duration::try_from_secs_f64(value)
                .map_err(|_| anyhow::anyhow!("{flag} must be a non-negative number of seconds"))
        };
        let poll = seconds(self.poll, "--poll")?;
        if poll.is_zero() {
            bail!("--poll must be a positive number of seconds");
        }
        let request = Request {
            run: self.run.clone(),
            budget_bytes: parse_budget(&self.budget, self.data_region)
                .map_err(anyhow::Error::msg)?,
            all_tasks: self.all_tasks,
            margin_s: self.margin,
            bandwidth_bytes_per_s: self.bandwidth.map(|mbps| mbps * 1e6),
            start_at: self.start_at,
            next_run: self.next_run,
            starting_before: self.starting_before,
            lead_s: self.lead,
            follow: self.follow,
            per_node: self.per_node,
            per_source: self.per_source,
            sweep_after: seconds(self.sweep_after, "--sweep-after")?,
            poll,
            history_runs: self.history,
        };
        request.check()?;
        Ok(request)
    }
}

pub async fn run(global: &GlobalArgs, args: PrefetchArgs) -> Result<()> {
    let request = args.request()?;
    let db = global.db_path()?;
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open the database {}", db.display()))?;
    let mut settings = args.connection.resolve()?;
    let targets = resolve_targets(&store, &args.target, &args.templates).await?;
    // A run's objects are staged under its Kubernetes namespace, where its pods look.
    let namespace = prefetch::run_namespace(&store, &request, &targets).await?;
    settings.default_tenant(namespace.as_deref())?;
    let metrics = match args.metrics_addr {
        Some(addr) if !args.dry_run => {
            let metrics = Metrics::new();
            let (bound, _server) = serve(metrics.clone(), addr).await?;
            eprintln!("metrics on http://{bound}/metrics");
            Some(metrics)
        }
        _ => None,
    };
    let shown = Shown {
        dry_run: args.dry_run,
        format: args.format,
        progress: args.progress,
        gantt: args.gantt.clone(),
        metrics,
    };
    let failed = prefetch_targets(&store, &settings, &request, targets, &shown).await?;
    if failed > 0 {
        bail!("{failed} object(s) could not be staged (see the events above)");
    }
    Ok(())
}

/// How a prefetch shows its plan and its progress.
#[derive(Debug)]
pub(crate) struct Shown {
    /// Print the plan and stage nothing.
    pub dry_run: bool,
    pub format: PlanFormat,
    pub progress: Progress,
    /// Draw the plan to this SVG file.
    pub gantt: Option<PathBuf>,
    pub metrics: Option<Metrics>,
}

/// Plans (and unless a dry run stages) each of `targets` with `request` in the cache that
/// `settings` name, showing it as `shown` says; returns how many objects failed to stage.
/// `kfcache prefetch` and `kfcache cron` both prefetch this way.
pub(crate) async fn prefetch_targets(
    store: &Store,
    settings: &CacheSettings,
    request: &Request,
    targets: Vec<Target>,
    shown: &Shown,
) -> Result<u64> {
    let bandwidth = prefetch::bandwidth(store, request).await?;
    // The cache is read even for a dry run (what is there shapes the plan); a dry run without
    // a reachable cluster plans against an empty cache and says so.
    let cache = match open_cache(settings).await {
        Ok(cache) => Some(cache),
        Err(error) if shown.dry_run => {
            eprintln!("warning: planning against an empty cache: {error:#}");
            None
        }
        Err(error) => return Err(error),
    };
    let mut failed = 0;
    for target in targets {
        let planned = prefetch::plan(
            store,
            cache.as_ref(),
            &settings.source,
            request,
            bandwidth,
            target,
        )
        .await?;
        if let Some(out) = &shown.gantt {
            let svg = plan_svg(&planned.target.pipeline.name, &planned.plan, &planned.tasks)?;
            std::fs::write(out, svg).with_context(|| format!("cannot write {}", out.display()))?;
        }
        if shown.dry_run {
            let pipeline = &planned.target.pipeline;
            match shown.format {
                PlanFormat::Table => {
                    print!("{}", plan_table(pipeline, &planned.plan, planned.anchor))
                }
                PlanFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "pipeline": pipeline.name,
                        "version_id": planned.target.version_id,
                        "anchor": rfc3339(planned.anchor),
                        // Where the objects go: the run's namespace scopes the keys.
                        "cache_namespace": cache.as_ref().map(|c| c.config().namespace.clone()),
                        "plan": &*planned.plan,
                    }))?
                ),
            }
            continue;
        }
        let Some(cache) = &cache else {
            bail!("no cache to stage into");
        };
        let mode = match shown.progress {
            Progress::Auto => ReportMode::detect(),
            Progress::Bars => ReportMode::Tty,
            Progress::Json => ReportMode::JsonLines,
            Progress::None => ReportMode::Quiet,
        };
        let observer = Arc::new(Shows {
            reporter: Reporter::new(&planned.plan, mode),
            metrics: shown.metrics.clone(),
        });
        let summary = prefetch::stage(
            store,
            cache,
            &settings.base_namespace,
            request,
            planned,
            observer.clone(),
        )
        .await?;
        observer.reporter.finish(&summary);
        failed += summary.failed;
    }
    Ok(failed)
}

/// A session's progress as bars or JSON lines, and in the metrics.
struct Shows {
    reporter: Reporter,
    metrics: Option<Metrics>,
}

impl prefetch::Observer for Shows {
    fn event(&self, event: &Event) {
        self.reporter.event(event);
        if let Some(metrics) = &self.metrics {
            metrics.observe(event);
        }
    }

    fn message(&self, text: &str) {
        self.reporter.message(text);
    }

    fn replanned(&self, plan: &Plan) {
        self.reporter.replan(plan);
    }

    fn queue(&self, items: u64, cache_bytes: u64) {
        if let Some(metrics) = &self.metrics {
            metrics.set_queue_depth(items);
            metrics.set_cache_bytes(cache_bytes);
        }
    }
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
