//! `kfcache cron [--window 30m] [--once]`: the batch prefetch, run by the Kubernetes CronJob in
//! `deploy/` (`--once`) or as a long-running loop (a cycle every `--interval`).
//!
//! One cycle:
//!
//! 1. **Lock.** The cluster-wide lock `NS/lock/cron` (kfcache-prefetcher's `lock`) is taken, so
//!    two copies started at once (an overlapping CronJob, a manual run) never stage and evict
//!    over each other: the second reports who holds it until when and does nothing (exit 0
//!    with `--once`; without, it tries again next cycle). The lock is renewed in the background
//!    while the cycle works and released at its end; a holder that crashes loses it when its
//!    time to live (`--lock-ttl`) runs out.
//! 2. **Drain.** The sidecars' events are drained into the history first, so eviction sees
//!    which tasks have finished.
//! 3. **Due pipelines.** For each stored pipeline, its next run strictly after now: a
//!    CronWorkflow's schedules evaluated in its timezone (rule `schedule`, DST included), or,
//!    for a pipeline without a schedule whose recent runs started at regular intervals (at
//!    least 3 runs, every interval within 20 % of the median, not stopped for more than 3
//!    intervals), the last start plus the median interval, stepped past now (rule
//!    `recurring`). A pipeline is due when that time is at most now + `--window`.
//! 4. **Evict.** A cached object is dead when every task that reads it (by its URI or a
//!    directory it lies under, in any analysed version) has finished in its pipeline's latest
//!    run and in every run of it still in progress, no due pipeline reads it, and no lease pins
//!    it. Dead objects are evicted and each is printed with the reason; objects no analysed
//!    task reads are kept (kfcache does not know who needs them).
//! 5. **Prefetch.** Each due pipeline is prefetched as `kfcache prefetch PIPELINE --start-at
//!    FIRE --starting-before NOW+WINDOW` would: predicted from its fire time, only the inputs
//!    of tasks predicted to start within the window are staged; later tasks wait for a later
//!    cycle.
//!
//! Output: one line per step, plain on a terminal and JSON lines otherwise
//! (`{"event":"cron-…","text":…}`, beside `prefetch`'s own event lines). `--now` (hidden)
//! pins the clock for tests.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use kfcache_predictor::anchor;
use kfcache_prefetcher::lock::{self, Acquisition, KeepAlive};
use kfcache_prefetcher::{IgniteSink, ObjectCache};
use kfcache_schema::Store;
use serde_json::{json, Map, Value};

use crate::cache::open_cache;
use crate::config::{human_size, parse_size, CacheSettings, ConnectionArgs};
use crate::prefetch::{prefetch_targets, PlanFormat, Progress, Shown};
use crate::settings::GlobalArgs;
use kfcache_ops::analysis::resolve_targets;
use kfcache_ops::evict::{covers, evict_finished, Evicted};
use kfcache_ops::prefetch::{policy::parse_budget, Request};
use kfcache_ops::units::{duration, parse_duration, parse_time, rfc3339};

/// The lock's name: key `NS/lock/cron`.
const LOCK_NAME: &str = "cron";
/// A pipeline without a schedule needs this many runs to be called recurring.
const RECURRING_MIN_RUNS: usize = 3;
/// ... and every interval between them within this fraction of their median.
const RECURRING_MAX_SPREAD: f64 = 0.2;
/// ... and it has not missed more than this many intervals since its last start.
const RECURRING_MAX_MISSED: i64 = 3;
/// Recent runs the recurrence is read from.
const RECURRING_HISTORY: u32 = 20;

#[derive(Debug, Args)]
pub struct CronArgs {
    /// Stage the inputs of tasks predicted to start within this long from now (90s, 30m, 2h,
    /// 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub window: Duration,

    /// Run one cycle and exit (what a CronJob does).
    #[arg(long)]
    pub once: bool,

    /// Time between the starts of two cycles without --once.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    pub interval: Duration,

    /// How long the cluster-wide lock holds without renewal (it is renewed every third of
    /// this while a cycle works); a crashed holder blocks others this long at most.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub lock_ttl: Duration,

    /// Show what would be evicted and each due pipeline's plan; change nothing (no lock, no
    /// drain).
    #[arg(long)]
    pub dry_run: bool,

    /// Most bytes the cache may hold, as for `prefetch`: a size, or a fraction of the data
    /// region with --data-region.
    #[arg(long, value_name = "SIZE|FRACTION", default_value = "64GiB")]
    pub budget: String,

    /// Size of the Ignite data region, for a fractional --budget.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub data_region: Option<u64>,

    /// Stage the inputs of every task, not only of those that use GPUs.
    #[arg(long)]
    pub all_tasks: bool,

    /// How progress is shown: plain lines and bars on a terminal, JSON lines otherwise (auto).
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,

    /// The cycle's "now" (RFC 3339), for tests.
    #[arg(long, hide = true, value_name = "TIME", value_parser = parse_time)]
    pub now: Option<DateTime<Utc>>,

    /// Keep the lock this long after a cycle, for tests of concurrent copies.
    #[arg(long, hide = true, value_name = "DURATION", value_parser = parse_duration)]
    pub linger: Option<Duration>,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Why a pipeline is expected to run when it is.
#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// A CronWorkflow's schedules in its timezone.
    Schedule {
        schedules: Vec<String>,
        timezone: Option<String>,
    },
    /// Regular past runs: the last start plus the median interval.
    Recurring {
        runs: usize,
        every: chrono::TimeDelta,
        /// Largest distance of an interval from the median, as a fraction of it.
        spread: f64,
        last: DateTime<Utc>,
    },
}

impl Rule {
    fn kind(&self) -> &'static str {
        match self {
            Rule::Schedule { .. } => "schedule",
            Rule::Recurring { .. } => "recurring",
        }
    }

    fn describe(&self) -> String {
        match self {
            Rule::Schedule {
                schedules,
                timezone,
            } => format!(
                "schedule {} in {}",
                schedules
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                timezone.as_deref().unwrap_or("UTC")
            ),
            Rule::Recurring {
                runs,
                every,
                spread,
                last,
            } => format!(
                "recurring: {runs} runs every {} (±{:.0}%), last started {}",
                duration(every.num_milliseconds() as f64 / 1000.0),
                spread * 100.0,
                rfc3339(*last)
            ),
        }
    }
}

/// A pipeline's next run.
#[derive(Debug, Clone, PartialEq)]
struct NextRun {
    fire_at: DateTime<Utc>,
    rule: Rule,
}

/// The next run strictly after `now`: by the schedules when there are any, else by the
/// recurrence of the past `starts`; `None` when neither rule applies.
fn next_run(
    schedules: &[String],
    timezone: Option<&str>,
    starts: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<Option<NextRun>> {
    if !schedules.is_empty() {
        let fire_at = anchor::next_fire(schedules, timezone, now)?;
        return Ok(fire_at.map(|fire_at| NextRun {
            fire_at,
            rule: Rule::Schedule {
                schedules: schedules.to_vec(),
                timezone: timezone.map(str::to_string),
            },
        }));
    }
    Ok(recurrence(starts, now))
}

/// The recurring rule: at least [`RECURRING_MIN_RUNS`] starts whose intervals all lie within
/// [`RECURRING_MAX_SPREAD`] of their median, the last one at most [`RECURRING_MAX_MISSED`]
/// intervals ago.
fn recurrence(starts: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<NextRun> {
    let mut starts = starts.to_vec();
    starts.sort();
    starts.dedup();
    if starts.len() < RECURRING_MIN_RUNS {
        return None;
    }
    let mut intervals: Vec<i64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    intervals.sort_unstable();
    let n = intervals.len();
    let median = if n % 2 == 1 {
        intervals[n / 2]
    } else {
        (intervals[n / 2 - 1] + intervals[n / 2]) / 2
    };
    if median <= 0 {
        return None;
    }
    let spread = intervals
        .iter()
        .map(|i| (i - median).abs() as f64 / median as f64)
        .fold(0.0, f64::max);
    if spread > RECURRING_MAX_SPREAD {
        return None;
    }
    let last = *starts.last()?;
    let every = chrono::TimeDelta::milliseconds(median);
    // Step past now: a run may have been missed (or its import is late).
    let elapsed = (now - last).num_milliseconds();
    let steps = if elapsed < 0 { 1 } else { elapsed / median + 1 };
    if steps > RECURRING_MAX_MISSED + 1 {
        return None; // it stopped recurring
    }
    let fire_at = last + chrono::TimeDelta::milliseconds(median.checked_mul(steps)?);
    Some(NextRun {
        fire_at,
        rule: Rule::Recurring {
            runs: starts.len(),
            every,
            spread,
            last,
        },
    })
}

/// Whether a run whose next fire time is `fire_at` falls in the window `[now, now + window]`.
fn is_due(fire_at: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> bool {
    match chrono::TimeDelta::from_std(window) {
        Ok(window) => fire_at > now && fire_at <= now + window,
        Err(_) => fire_at > now,
    }
}

/// A due pipeline.
#[derive(Debug)]
struct Due {
    name: String,
    next: NextRun,
    /// The Kubernetes namespace its latest recorded run ran in: its pods read there.
    tenant: Option<String>,
    /// Every input URI of its tasks.
    inputs: BTreeSet<String>,
}

impl Due {
    fn reads(&self, uri: &str) -> bool {
        self.inputs.iter().any(|input| covers(input, uri))
    }
}

/// How a cycle reports: plain lines on a terminal, JSON lines otherwise.
#[derive(Debug, Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn new(progress: Progress) -> Output {
        let json = match progress {
            Progress::Json => true,
            Progress::Auto => !std::io::stdout().is_terminal(),
            Progress::Bars | Progress::None => false,
        };
        Output { json }
    }

    fn emit(&self, event: &str, text: &str, fields: Value) {
        if self.json {
            let mut object = match fields {
                Value::Object(object) => object,
                _ => Map::new(),
            };
            object.insert("event".into(), event.into());
            object.insert("time".into(), rfc3339(Utc::now()).into());
            object.insert("text".into(), text.into());
            println!("{}", Value::Object(object));
        } else {
            println!("cron: {text}");
        }
    }
}

/// `HOST/PID`: the pod name in Kubernetes (HOSTNAME), so the lock says who holds it.
fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{host}/{}", std::process::id())
}

pub async fn run(global: &GlobalArgs, args: CronArgs) -> Result<()> {
    if args.window.is_zero() {
        bail!("--window must be longer than 0");
    }
    if args.interval.is_zero() {
        bail!("--interval must be longer than 0");
    }
    if args.lock_ttl < Duration::from_secs(1) {
        bail!("--lock-ttl must be at least 1s");
    }
    let out = Output::new(args.progress);
    let holder = holder_name();
    if args.once {
        return cycle(global, &args, out, &holder).await;
    }
    loop {
        let started = Instant::now();
        if let Err(error) = cycle(global, &args, out, &holder).await {
            let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
            out.emit(
                "cron-error",
                &format!("cycle failed: {}", chain.join(": ")),
                json!({ "error": chain }),
            );
        }
        let wait = args.interval.saturating_sub(started.elapsed());
        tracing::info!("next cycle in {}", duration(wait.as_secs_f64()));
        tokio::time::sleep(wait).await;
    }
}

/// One cycle: lock, drain, due pipelines, eviction, prefetch, unlock.
async fn cycle(global: &GlobalArgs, args: &CronArgs, out: Output, holder: &str) -> Result<()> {
    let now = args.now.unwrap_or_else(Utc::now);
    let window = chrono::TimeDelta::from_std(args.window).context("--window is too long")?;
    let horizon = now + window;
    let settings = args.connection.resolve()?;
    let db = global.db_path()?;
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open the database {}", db.display()))?;
    let cache = open_cache(&settings).await?;

    let keep_alive = if args.dry_run {
        None
    } else {
        match lock::acquire(&cache, LOCK_NAME, holder, args.lock_ttl).await? {
            Acquisition::Busy(record) => {
                out.emit(
                    "cron-locked",
                    &format!(
                        "another kfcache cron (holder {}) holds the lock until {}; nothing to do",
                        record.holder,
                        rfc3339(record.expires_at)
                    ),
                    json!({
                        "holder": record.holder,
                        "acquired_at": rfc3339(record.acquired_at),
                        "expires_at": rfc3339(record.expires_at),
                    }),
                );
                return Ok(());
            }
            Acquisition::Acquired(held) => {
                if let Some(previous) = held.took_over() {
                    out.emit(
                        "cron-lock-taken-over",
                        &format!(
                            "took over the lock of {}, which expired at {}",
                            previous.holder,
                            rfc3339(previous.expires_at)
                        ),
                        json!({
                            "previous_holder": previous.holder,
                            "expired_at": rfc3339(previous.expires_at),
                        }),
                    );
                }
                Some(held.keep_alive(args.lock_ttl / 3))
            }
        }
    };
    out.emit(
        "cron-cycle",
        &format!(
            "cycle at {} for runs starting until {} (window {}){}",
            rfc3339(now),
            rfc3339(horizon),
            duration(args.window.as_secs_f64()),
            if args.dry_run { ", dry run" } else { "" }
        ),
        json!({
            "now": rfc3339(now),
            "horizon": rfc3339(horizon),
            "window_s": args.window.as_secs_f64(),
            "holder": holder,
            "dry_run": args.dry_run,
        }),
    );

    let events = settings.base_namespace.as_str();
    let result = work(
        args,
        out,
        &store,
        (&cache, events),
        keep_alive.as_ref(),
        now,
    )
    .await;

    if let Some(linger) = args.linger {
        tokio::time::sleep(linger).await;
    }
    if let Some(keep_alive) = keep_alive {
        match keep_alive.release().await {
            Ok(true) => {}
            Ok(false) => out.emit(
                "cron-lock-lost",
                "the lock had been taken over by another kfcache cron before this cycle ended",
                json!({}),
            ),
            Err(error) => tracing::warn!("cannot release the lock (it expires by itself): {error}"),
        }
    }
    store.close().await;
    result
}

fn check_lock(keep_alive: Option<&KeepAlive<IgniteSink>>) -> Result<()> {
    if keep_alive.is_some_and(KeepAlive::lost) {
        bail!(
            "lost the cron lock to another kfcache cron (no renewal within its time to live); \
             stopping this cycle"
        );
    }
    Ok(())
}

async fn work(
    args: &CronArgs,
    out: Output,
    store: &Store,
    // The cache, and the namespace of the sidecars' events in it.
    (cache, events_namespace): (&ObjectCache<IgniteSink>, &str),
    keep_alive: Option<&KeepAlive<IgniteSink>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let started = Instant::now();
    if !args.dry_run {
        drain_events(out, store, cache, events_namespace).await;
    }
    check_lock(keep_alive)?;

    let due = due_pipelines(out, store, now, args.window).await?;
    check_lock(keep_alive)?;

    let kept = |uri: &str| {
        due.iter()
            .find(|d| d.reads(uri))
            .map(|d| format!("read by the due pipeline `{}`", d.name))
    };
    let mut report = |e: &Evicted| {
        out.emit(
            "cron-evicted",
            &format!(
                "{} {} ({}): {}",
                if e.dry_run { "would evict" } else { "evicted" },
                e.uri,
                human_size(e.bytes),
                e.reason
            ),
            json!({
                "uri": e.uri,
                "bytes": e.bytes,
                "reason": e.reason,
                "dry_run": e.dry_run,
            }),
        )
    };
    let (evicted, evicted_bytes) =
        evict_finished(store, cache, &kept, now, args.dry_run, &mut report)
            .await
            .context("cannot evict finished entries")?;

    let window = chrono::TimeDelta::from_std(args.window).context("--window is too long")?;
    let mut failed = Vec::new();
    for pipeline in &due {
        check_lock(keep_alive)?;
        out.emit(
            "cron-prefetch",
            &format!(
                "prefetching `{}` for its run at {}",
                pipeline.name,
                rfc3339(pipeline.next.fire_at)
            ),
            json!({
                "pipeline": pipeline.name,
                "fire_at": rfc3339(pipeline.next.fire_at),
                "starting_before": rfc3339(now + window),
            }),
        );
        if let Err(error) = prefetch_due(args, out, store, pipeline, now + window).await {
            let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
            out.emit(
                "cron-error",
                &format!(
                    "prefetch of `{}` failed: {}",
                    pipeline.name,
                    chain.join(": ")
                ),
                json!({ "pipeline": pipeline.name, "error": chain }),
            );
            failed.push(pipeline.name.clone());
        }
    }

    out.emit(
        "cron-done",
        &format!(
            "cycle done in {}: {} due pipeline(s), {} failed, {} object(s) evicted ({})",
            duration(started.elapsed().as_secs_f64()),
            due.len(),
            failed.len(),
            evicted,
            human_size(evicted_bytes)
        ),
        json!({
            "due": due.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
            "failed": failed,
            "evicted": evicted,
            "evicted_bytes": evicted_bytes,
            "seconds": started.elapsed().as_secs_f64(),
        }),
    );
    if !failed.is_empty() {
        bail!(
            "the prefetch of {} pipeline(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Records what the sidecars reported. A failure is reported and the cycle goes on: the events
/// stay in the cache for the next drain.
async fn drain_events(
    out: Output,
    store: &Store,
    cache: &ObjectCache<IgniteSink>,
    events_namespace: &str,
) {
    let log = kfcache_sidecar::EventLog::new(cache.sink().clone(), events_namespace.to_string());
    match kfcache_sidecar::drain::drain(&log, store).await {
        Ok(summary) => out.emit(
            "cron-drained",
            &format!(
                "drained {} sidecar event(s): {} task run(s) recorded, {} event(s) of running tasks left, {} unreadable removed",
                summary.events, summary.observations, summary.pending, summary.bad
            ),
            json!({
                "events": summary.events,
                "observations": summary.observations,
                "pending": summary.pending,
                "bad": summary.bad,
            }),
        ),
        Err(error) => out.emit(
            "cron-error",
            &format!("cannot drain the sidecar events (left for the next cycle): {error:#}"),
            json!({ "error": format!("{error:#}") }),
        ),
    }
}

/// Every stored pipeline's next run; those within the window, with their inputs.
async fn due_pipelines(
    out: Output,
    store: &Store,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Vec<Due>> {
    let mut due = Vec::new();
    for pipeline in store.pipelines().await? {
        if pipeline.namespace.is_some() {
            continue;
        }
        let Some(version) = store.latest_version(&pipeline.name).await? else {
            continue;
        };
        let starts: Vec<DateTime<Utc>> = if version.schedules.is_empty() {
            store
                .runs_of_pipeline(&pipeline.name, RECURRING_HISTORY)
                .await?
                .into_iter()
                .filter_map(|r| r.run.started_at)
                .collect()
        } else {
            Vec::new()
        };
        let next = match next_run(
            &version.schedules,
            version.timezone.as_deref(),
            &starts,
            now,
        ) {
            Ok(Some(next)) => next,
            Ok(None) => {
                tracing::info!(pipeline = %pipeline.name, "no schedule, no regular runs");
                continue;
            }
            Err(error) => {
                out.emit(
                    "cron-error",
                    &format!("`{}`: {error:#}", pipeline.name),
                    json!({ "pipeline": pipeline.name, "error": format!("{error:#}") }),
                );
                continue;
            }
        };
        let is_due = is_due(next.fire_at, now, window);
        let in_s = (next.fire_at - now).num_milliseconds() as f64 / 1000.0;
        out.emit(
            "cron-pipeline",
            &format!(
                "`{}`: next run {} (in {}) by {}: {}",
                pipeline.name,
                rfc3339(next.fire_at),
                duration(in_s),
                next.rule.describe(),
                if is_due { "due" } else { "not due" }
            ),
            json!({
                "pipeline": pipeline.name,
                "version_id": version.id,
                "fire_at": rfc3339(next.fire_at),
                "in_s": in_s,
                "rule": next.rule.kind(),
                "detail": next.rule.describe(),
                "due": is_due,
            }),
        );
        if is_due {
            let model = store.pipeline(version.id).await?;
            let inputs = model
                .tasks
                .iter()
                .flat_map(|t| t.inputs.iter())
                .filter_map(|i| i.source.clone())
                .collect();
            let tenant = store.run_namespace(&pipeline.name, None).await?;
            due.push(Due {
                name: pipeline.name,
                next,
                tenant,
                inputs,
            });
        }
    }
    Ok(due)
}

/// The prefetch session of a due pipeline: its run at its fire time, staging what its tasks
/// read before `horizon`, with the cron's budget and the session's defaults otherwise.
fn due_request(args: &CronArgs, due: &Due, horizon: DateTime<Utc>) -> Result<Request> {
    Ok(Request {
        budget_bytes: parse_budget(&args.budget, args.data_region).map_err(anyhow::Error::msg)?,
        all_tasks: args.all_tasks,
        start_at: Some(due.next.fire_at),
        starting_before: Some(horizon),
        ..Request::default()
    })
}

/// Where a due pipeline is staged: the namespace its runs ran in, unless the cron serves one
/// tenant (--k8s-namespace).
fn due_settings(args: &CronArgs, due: &Due) -> Result<CacheSettings> {
    let mut settings = args.connection.resolve()?;
    settings.default_tenant(due.tenant.as_deref())?;
    Ok(settings)
}

/// Prefetches a due pipeline for its run at its fire time, staging what its tasks read before
/// `horizon`, with the cron's settings and the prefetch session's defaults otherwise.
async fn prefetch_due(
    args: &CronArgs,
    out: Output,
    store: &Store,
    due: &Due,
    horizon: DateTime<Utc>,
) -> Result<()> {
    let request = due_request(args, due, horizon)?;
    let settings = due_settings(args, due)?;
    let targets = resolve_targets(store, &due.name, &[]).await?;
    let shown = Shown {
        dry_run: args.dry_run,
        format: if out.json {
            PlanFormat::Json
        } else {
            PlanFormat::Table
        },
        progress: args.progress,
        gantt: None,
        metrics: None,
    };
    let failed = prefetch_targets(store, &settings, &request, targets, &shown).await?;
    if failed > 0 {
        bail!("{failed} object(s) could not be staged (see the events above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// A due pipeline is prefetched into the namespace its runs ran in, unless the cron
    /// serves one tenant.
    #[test]
    fn a_due_pipeline_is_staged_where_its_pods_read() {
        #[derive(Debug, clap::Parser)]
        #[command(no_binary_name = true)]
        struct Cron {
            #[command(flatten)]
            args: CronArgs,
        }
        let due = Due {
            name: "nightly".to_string(),
            next: NextRun {
                fire_at: at("2031-03-10T06:00:00Z"),
                rule: Rule::Schedule {
                    schedules: vec!["0 2 * * *".to_string()],
                    timezone: None,
                },
            },
            tenant: Some("ml-training".to_string()),
            inputs: BTreeSet::new(),
        };
        let horizon = at("2031-03-10T06:30:00Z");
        use clap::Parser as _;
        let any = Cron::try_parse_from(["--once"]).unwrap().args;
        assert_eq!(
            due_settings(&any, &due).unwrap().tenant.as_deref(),
            Some("ml-training")
        );
        let request = due_request(&any, &due, horizon).unwrap();
        assert_eq!(request.start_at, Some(due.next.fire_at));
        assert_eq!(request.starting_before, Some(horizon));
        assert_eq!(request.budget_bytes, 64 << 30);
        let one = Cron::try_parse_from(["--once", "--k8s-namespace", "team-a"])
            .unwrap()
            .args;
        assert_eq!(
            due_settings(&one, &due).unwrap().tenant.as_deref(),
            Some("team-a")
        );
        // The former spellings stay for one release.
        let old = Cron::try_parse_from(["--once", "--tenant", "team-b", "--namespace", "p"])
            .unwrap()
            .args;
        let settings = due_settings(&old, &due).unwrap();
        assert_eq!(settings.tenant.as_deref(), Some("team-b"));
        assert_eq!(settings.layout.namespace, "p.team-b");
    }

    // Window selection across a timezone: New York springs forward on 2024-03-10, so the
    // 01:30 run is at 06:30 UTC before and at 05:30 UTC after. A schedule read in UTC, or with
    // the winter offset, would miss the second run.
    #[test]
    fn the_window_follows_the_schedules_timezone_across_dst() {
        let schedules = vec!["30 1 * * *".to_string()];
        let tz = Some("America/New_York");
        // 2024-03-10 00:00 EST: the next run is 01:30 EST = 06:30 UTC.
        let now = at("2024-03-10T05:00:00Z");
        let next = next_run(&schedules, tz, &[], now).unwrap().unwrap();
        assert_eq!(next.fire_at, at("2024-03-10T06:30:00Z"));
        assert_eq!(next.rule.kind(), "schedule");
        assert!(is_due(next.fire_at, now, 90 * MINUTE));
        assert!(!is_due(next.fire_at, now, 89 * MINUTE));
        // 2024-03-11 01:00 EDT: the next run is in 30 minutes, 05:30 UTC.
        let now = at("2024-03-11T05:00:00Z");
        let next = next_run(&schedules, tz, &[], now).unwrap().unwrap();
        assert_eq!(next.fire_at, at("2024-03-11T05:30:00Z"));
        assert!(is_due(next.fire_at, now, 30 * MINUTE), "the edge is inside");
        assert!(!is_due(next.fire_at, now, 29 * MINUTE));
    }

    // The UTC day differs from the local one: 23:30 in Paris is 22:30 UTC in winter, and the
    // run "tomorrow" in UTC terms may be today in Paris.
    #[test]
    fn a_run_late_in_the_local_evening_is_due_on_the_utc_day_before() {
        // Weekdays at 23:30. Friday 2024-01-05 22:10 UTC is 23:10 in Paris: the Friday run is
        // 20 minutes away.
        let schedules = vec!["30 23 * * 1-5".to_string()];
        let now = at("2024-01-05T22:10:00Z");
        let next = next_run(&schedules, Some("Europe/Paris"), &[], now)
            .unwrap()
            .unwrap();
        assert_eq!(next.fire_at, at("2024-01-05T22:30:00Z"));
        assert!(is_due(next.fire_at, now, 30 * MINUTE));
        // In UTC the same schedule would fire at 23:30 UTC, not within the window.
        let utc = next_run(&schedules, None, &[], now).unwrap().unwrap();
        assert!(!is_due(utc.fire_at, now, 30 * MINUTE));
        // After the Friday run, the next one is Monday evening.
        let next = next_run(&schedules, Some("Europe/Paris"), &[], next.fire_at)
            .unwrap()
            .unwrap();
        assert_eq!(next.fire_at, at("2024-01-08T22:30:00Z"));
        assert!(!is_due(
            next.fire_at,
            at("2024-01-05T22:31:00Z"),
            30 * MINUTE
        ));
    }

    #[test]
    fn a_fire_time_now_or_past_is_not_due() {
        let now = at("2024-01-01T00:00:00Z");
        assert!(!is_due(now, now, MINUTE));
        assert!(!is_due(at("2023-12-31T23:59:00Z"), now, MINUTE));
        assert!(is_due(at("2024-01-01T00:00:01Z"), now, MINUTE));
    }

    #[test]
    fn regular_runs_recur_at_their_median_interval() {
        let starts = [
            at("2024-01-01T06:00:00Z"),
            at("2024-01-01T12:02:00Z"),
            at("2024-01-01T17:58:00Z"),
            at("2024-01-02T00:01:00Z"),
        ];
        let next = recurrence(&starts, at("2024-01-02T05:40:00Z")).unwrap();
        let Rule::Recurring {
            runs, every, last, ..
        } = &next.rule
        else {
            panic!("{:?}", next.rule)
        };
        assert_eq!(*runs, 4);
        assert_eq!(*every, chrono::TimeDelta::minutes(362)); // median of 362, 356, 363
        assert_eq!(*last, starts[3]);
        assert_eq!(next.fire_at, at("2024-01-02T06:03:00Z"));
        assert!(next
            .rule
            .describe()
            .starts_with("recurring: 4 runs every 6h02m00s"));
        // Order does not matter; a missed run steps one interval further.
        let mut shuffled = starts.to_vec();
        shuffled.reverse();
        let later = recurrence(&shuffled, at("2024-01-02T07:00:00Z")).unwrap();
        assert_eq!(later.fire_at, at("2024-01-02T12:05:00Z"));
        // The same rule applies when there is no schedule.
        assert_eq!(
            next_run(&[], None, &starts, at("2024-01-02T05:40:00Z")).unwrap(),
            Some(next)
        );
    }

    #[test]
    fn irregular_sparse_or_stopped_runs_do_not_recur() {
        let t = |h: i64| at("2024-01-01T00:00:00Z") + chrono::TimeDelta::hours(h);
        // Two runs are not a pattern.
        assert!(recurrence(&[t(0), t(6)], t(7)).is_none());
        // One interval 50 % off the median.
        assert!(recurrence(&[t(0), t(6), t(12), t(21)], t(22)).is_none());
        // Regular, but the last run was 4 intervals ago: it stopped.
        assert!(recurrence(&[t(0), t(6), t(12)], t(12 + 24)).is_none());
        assert!(recurrence(&[t(0), t(6), t(12)], t(12 + 23)).is_some());
        // Same start twice counts once.
        assert!(recurrence(&[t(0), t(0), t(6)], t(7)).is_none());
    }
}
