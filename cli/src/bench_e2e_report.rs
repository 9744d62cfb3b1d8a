//! What `kfcache bench e2e` measured, summarised: `results.json` (every rep and every task),
//! `report.md` (per arm: mean, standard deviation and 95 % confidence interval of each
//! metric; Welch's t-test of kfcache against each other arm), `wait.svg` and `makespan.svg`
//! (box plots per arm) and `gantt.svg` (one kfcache rep: the prefetcher's staging of each
//! object against the tasks' input wait, compute and output), and the last line printed:
//! `e2e-bench: wait_nocache_s=… wait_lru_s=… wait_kfcache_s=… makespan_nocache_s=…
//! makespan_kfcache_s=… p_vs_lru=…`.
//!
//! Metrics of one rep:
//! - `gpu_wait_s`: the input wait (task start to inputs ready) summed over the GPU tasks;
//! - `wait_s`: the same over every task;
//! - `makespan_s`: first task start to last task end;
//! - `hit_ratio`: bytes read from the cache over bytes of every input read;
//! - `origin_bytes`: bytes that crossed the emulated remote link (both directions: the
//!   inputs, the prefetcher's staging, the outputs' uploads);
//! - `deadline_misses`: GPU task instances that read any input from the origin (their data was
//!   not in the cache when they started).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use kfcache_harness::plots::{box_plot_svg, gantt_svg, BarKind, BoxSeries, GanttBar};
use kfcache_harness::stats::{summarize, welch, Summary, Welch};
use serde::Serialize;

/// The three ways of running the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArmName {
    /// Every input from the origin.
    Nocache,
    /// An on-demand cache: filled on first read, least recently used evicted.
    Lru,
    /// kfcache: predict, prefetch ahead, write outputs through.
    Kfcache,
}

impl std::fmt::Display for ArmName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArmName::Nocache => "nocache",
            ArmName::Lru => "lru",
            ArmName::Kfcache => "kfcache",
        })
    }
}

/// One task instance of one rep; times in seconds from the run's start.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    #[serde(skip)]
    pub index: usize,
    pub task: String,
    pub instance: String,
    pub gpus: u32,
    pub start_s: f64,
    pub ready_s: f64,
    pub compute_end_s: f64,
    pub end_s: f64,
    pub compute_s: f64,
    pub bytes_from_cache: u64,
    pub bytes_from_origin: u64,
    pub misses: u32,
    pub output_bytes: u64,
}

impl TaskResult {
    pub fn wait_s(&self) -> f64 {
        self.ready_s - self.start_s
    }

    fn label(&self) -> String {
        if self.instance.is_empty() {
            self.task.clone()
        } else {
            format!("{}({})", self.task, self.instance)
        }
    }
}

/// One object the prefetcher staged; seconds from the run's start.
#[derive(Debug, Clone, Serialize)]
pub struct Staging {
    pub uri: String,
    pub start_s: f64,
    pub end_s: f64,
    pub bytes: u64,
    pub met_deadline: bool,
}

/// One rep of one arm.
#[derive(Debug, Clone, Serialize)]
pub struct RepResult {
    pub arm: ArmName,
    pub rep: usize,
    pub run: String,
    pub gpu_wait_s: f64,
    pub wait_s: f64,
    pub makespan_s: f64,
    pub hit_ratio: f64,
    pub origin_bytes: u64,
    pub origin_requests: u64,
    pub deadline_misses: u32,
    /// Input wait of each GPU task (instances summed).
    pub gpu_task_wait_s: BTreeMap<String, f64>,
    pub tasks: Vec<TaskResult>,
    pub staging: Vec<Staging>,
}

impl RepResult {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        arm: ArmName,
        rep: usize,
        run: String,
        makespan_s: f64,
        tasks: Vec<TaskResult>,
        staging: Vec<Staging>,
        bytes_down: u64,
        bytes_up: u64,
        requests: u64,
    ) -> RepResult {
        let gpu = || tasks.iter().filter(|t| t.gpus > 0);
        let mut gpu_task_wait_s = BTreeMap::new();
        for task in gpu() {
            *gpu_task_wait_s.entry(task.task.clone()).or_insert(0.0) += task.wait_s();
        }
        let from_cache: u64 = tasks.iter().map(|t| t.bytes_from_cache).sum();
        let from_origin: u64 = tasks.iter().map(|t| t.bytes_from_origin).sum();
        RepResult {
            arm,
            rep,
            run,
            gpu_wait_s: gpu().map(TaskResult::wait_s).sum(),
            wait_s: tasks.iter().map(TaskResult::wait_s).sum(),
            makespan_s,
            hit_ratio: if from_cache + from_origin == 0 {
                0.0
            } else {
                from_cache as f64 / (from_cache + from_origin) as f64
            },
            origin_bytes: bytes_down + bytes_up,
            origin_requests: requests,
            deadline_misses: gpu().filter(|t| t.misses > 0).count() as u32,
            gpu_task_wait_s,
            tasks,
            staging,
        }
    }
}

/// How the benchmark was run.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub pipeline: String,
    pub profile: Option<String>,
    pub reps: usize,
    pub bandwidth_bytes_per_s: f64,
    pub latency_ms: f64,
    pub budget_bytes: u64,
    pub scale: f64,
    pub time_scale: f64,
    pub seed: u64,
    pub ignite: String,
    pub ignite_nodes: usize,
    pub input_bytes: u64,
}

/// The prefetcher's staging, from its JSON event lines (`start` and `staged` with `time`).
pub fn staging_from_log(log: &Path, run_start: DateTime<Utc>) -> Result<Vec<Staging>> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("cannot read the prefetcher's log {}", log.display()))?;
    let seconds = |line: &serde_json::Value| -> Option<f64> {
        let at: DateTime<Utc> = line.get("time")?.as_str()?.parse().ok()?;
        Some((at - run_start).num_milliseconds() as f64 / 1000.0)
    };
    let mut started: BTreeMap<String, f64> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let uri = value
            .get("uri")
            .and_then(|u| u.as_str())
            .unwrap_or_default()
            .to_string();
        match value.get("event").and_then(|e| e.as_str()) {
            Some("start") => {
                if let Some(at) = seconds(&value) {
                    started.insert(uri, at);
                }
            }
            Some("staged") => {
                let Some(end) = seconds(&value) else { continue };
                let start = started.remove(&uri).unwrap_or(end);
                out.push(Staging {
                    start_s: start,
                    end_s: end,
                    bytes: value.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0),
                    met_deadline: value
                        .get("met_deadline")
                        .and_then(|m| m.as_bool())
                        .unwrap_or(false),
                    uri,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Every metric of a rep the report summarises: (key, title, unit, value).
fn metrics(rep: &RepResult) -> [(&'static str, &'static str, f64); 6] {
    [
        ("gpu_wait_s", "GPU-task input wait (s)", rep.gpu_wait_s),
        ("wait_s", "input wait, all tasks (s)", rep.wait_s),
        ("makespan_s", "makespan (s)", rep.makespan_s),
        ("hit_ratio", "hit ratio", rep.hit_ratio),
        (
            "origin_mb",
            "MB over the remote link",
            rep.origin_bytes as f64 / 1e6,
        ),
        (
            "deadline_misses",
            "GPU tasks that read from the origin",
            f64::from(rep.deadline_misses),
        ),
    ]
}

#[derive(Debug, Serialize)]
struct ArmSummary {
    arm: ArmName,
    metrics: BTreeMap<&'static str, Summary>,
    gpu_task_wait_s: BTreeMap<String, Summary>,
}

#[derive(Debug, Serialize)]
struct Comparison {
    metric: &'static str,
    against: ArmName,
    welch: Welch,
}

#[derive(Debug, Serialize)]
struct Results<'a> {
    config: &'a Config,
    arms: Vec<ArmSummary>,
    kfcache_against: Vec<Comparison>,
    reps: &'a [RepResult],
}

/// Writes `results.json`, `report.md` and the plots into `out`; returns the last line.
pub fn write(out: &Path, config: &Config, reps: &[RepResult]) -> Result<String> {
    let mut arms: Vec<ArmName> = reps.iter().map(|r| r.arm).collect();
    arms.sort();
    arms.dedup();
    let of = |arm: ArmName| reps.iter().filter(move |r| r.arm == arm);
    let summaries: Vec<ArmSummary> = arms
        .iter()
        .map(|&arm| {
            let mut by_metric: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
            let mut by_task: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for rep in of(arm) {
                for (key, _, value) in metrics(rep) {
                    by_metric.entry(key).or_default().push(value);
                }
                for (task, wait) in &rep.gpu_task_wait_s {
                    by_task.entry(task.clone()).or_default().push(*wait);
                }
            }
            ArmSummary {
                arm,
                metrics: by_metric
                    .into_iter()
                    .map(|(k, v)| (k, summarize(&v)))
                    .collect(),
                gpu_task_wait_s: by_task
                    .into_iter()
                    .map(|(k, v)| (k, summarize(&v)))
                    .collect(),
            }
        })
        .collect();
    let summary_of = |arm: ArmName| summaries.iter().find(|s| s.arm == arm);
    let mut comparisons = Vec::new();
    if let Some(kfcache) = summary_of(ArmName::Kfcache) {
        for other in summaries.iter().filter(|s| s.arm != ArmName::Kfcache) {
            for (key, summary) in &kfcache.metrics {
                if let Some(theirs) = other.metrics.get(key) {
                    comparisons.push(Comparison {
                        metric: key,
                        against: other.arm,
                        welch: welch(summary, theirs),
                    });
                }
            }
        }
    }

    let results = Results {
        config,
        arms: summaries,
        kfcache_against: comparisons,
        reps,
    };
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(out.join("results.json"), json)
        .with_context(|| format!("cannot write {}", out.join("results.json").display()))?;

    // Plots.
    let series = |pick: &dyn Fn(&RepResult) -> f64| -> Vec<BoxSeries> {
        arms.iter()
            .map(|&arm| BoxSeries {
                label: arm.to_string(),
                values: of(arm).map(pick).collect(),
            })
            .collect()
    };
    let wait_svg = box_plot_svg(
        "GPU-task input wait per run",
        "seconds",
        &series(&|r| r.gpu_wait_s),
    )?;
    std::fs::write(out.join("wait.svg"), wait_svg)?;
    let makespan_svg = box_plot_svg("Pipeline makespan", "seconds", &series(&|r| r.makespan_s))?;
    std::fs::write(out.join("makespan.svg"), makespan_svg)?;
    let gantt_rep = reps
        .iter()
        .rfind(|r| r.arm == ArmName::Kfcache)
        .or_else(|| reps.last())
        .context("no rep to draw")?;
    std::fs::write(out.join("gantt.svg"), gantt(gantt_rep)?)?;

    // The report.
    let mean = |arm: ArmName, key: &str| -> f64 {
        results
            .arms
            .iter()
            .find(|s| s.arm == arm)
            .and_then(|s| s.metrics.get(key))
            .map(|s| s.mean)
            .unwrap_or(f64::NAN)
    };
    let p_vs = |arm: ArmName, key: &str| -> f64 {
        results
            .kfcache_against
            .iter()
            .find(|c| c.against == arm && c.metric == key)
            .map(|c| c.welch.p)
            .unwrap_or(f64::NAN)
    };
    let mut md = String::new();
    let _ = writeln!(md, "# kfcache bench e2e\n");
    let _ = writeln!(
        md,
        "Pipeline `{}`, {} reps per arm (interleaved, cold cache each rep), remote storage emulated at {:.0} MB/s with {:.0} ms per request, cache budget {:.0} MB, Ignite `{}` ({} nodes), inputs {:.0} MB (scale {}, time scale {}, seed {}).\n",
        config.pipeline,
        config.reps,
        config.bandwidth_bytes_per_s / 1e6,
        config.latency_ms,
        config.budget_bytes as f64 / 1e6,
        config.ignite,
        config.ignite_nodes,
        config.input_bytes as f64 / 1e6,
        config.scale,
        config.time_scale,
        config.seed
    );
    let _ = writeln!(md, "## Per arm: mean ± sd [95 % CI]\n");
    let _ = write!(md, "| metric |");
    for arm in &arms {
        let _ = write!(md, " {arm} |");
    }
    let _ = write!(md, "\n|---|");
    for _ in &arms {
        let _ = write!(md, "---|");
    }
    md.push('\n');
    if let Some(first) = reps.first() {
        for (key, title, _) in metrics(first) {
            let _ = write!(md, "| {title} |");
            for arm in &arms {
                let cell = results
                    .arms
                    .iter()
                    .find(|s| s.arm == *arm)
                    .and_then(|s| s.metrics.get(key))
                    .map(cell)
                    .unwrap_or_default();
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
    }
    let _ = writeln!(md, "\n## GPU tasks' input wait (s), per task\n");
    let _ = write!(md, "| task |");
    for arm in &arms {
        let _ = write!(md, " {arm} |");
    }
    md.push_str("\n|---|");
    for _ in &arms {
        md.push_str("---|");
    }
    md.push('\n');
    let tasks: std::collections::BTreeSet<&String> = results
        .arms
        .iter()
        .flat_map(|s| s.gpu_task_wait_s.keys())
        .collect();
    for task in tasks {
        let _ = write!(md, "| {task} |");
        for arm in &arms {
            let value = results
                .arms
                .iter()
                .find(|s| s.arm == *arm)
                .and_then(|s| s.gpu_task_wait_s.get(task))
                .map(cell)
                .unwrap_or_default();
            let _ = write!(md, " {value} |");
        }
        md.push('\n');
    }
    if !results.kfcache_against.is_empty() {
        let _ = writeln!(
            md,
            "\n## kfcache against each arm: Welch's t-test\n\n| metric | against | difference (kfcache − other) | 95 % CI of the difference | t | df | p |\n|---|---|---|---|---|---|---|"
        );
        for c in &results.kfcache_against {
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | [{:.3}, {:.3}] | {:.2} | {:.1} | {:.3e} |",
                c.metric,
                c.against,
                c.welch.diff,
                c.welch.ci95_diff.0,
                c.welch.ci95_diff.1,
                c.welch.t,
                c.welch.df,
                c.welch.p
            );
        }
    }
    let wait = |arm| mean(arm, "gpu_wait_s");
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let _ = writeln!(
        md,
        "\n## Goals\n\n- kfcache's mean GPU-task input wait is {:.1} % of no-cache (goal ≤ 5 %) and {:.1} % of on-demand (goal ≤ 50 %), p = {:.2e} against on-demand (goal < 0.05).\n- Makespan: no cache {:.2} s, kfcache {:.2} s: {:.2}× (goal ≥ 1.5×).\n",
        100.0 * ratio(wait(ArmName::Kfcache), wait(ArmName::Nocache)),
        100.0 * ratio(wait(ArmName::Kfcache), wait(ArmName::Lru)),
        p_vs(ArmName::Lru, "gpu_wait_s"),
        mean(ArmName::Nocache, "makespan_s"),
        mean(ArmName::Kfcache, "makespan_s"),
        ratio(
            mean(ArmName::Nocache, "makespan_s"),
            mean(ArmName::Kfcache, "makespan_s")
        ),
    );
    let _ = writeln!(
        md,
        "## Plots\n\n![GPU-task input wait](wait.svg)\n\n![Makespan](makespan.svg)\n\n![One {} run: staging against task windows](gantt.svg)",
        gantt_rep.arm
    );
    std::fs::write(out.join("report.md"), md)?;

    Ok(format!(
        "e2e-bench: wait_nocache_s={:.3} wait_lru_s={:.3} wait_kfcache_s={:.3} makespan_nocache_s={:.3} makespan_kfcache_s={:.3} p_vs_lru={:.3e}",
        wait(ArmName::Nocache),
        wait(ArmName::Lru),
        wait(ArmName::Kfcache),
        mean(ArmName::Nocache, "makespan_s"),
        mean(ArmName::Kfcache, "makespan_s"),
        p_vs(ArmName::Lru, "gpu_wait_s"),
    ))
}

fn cell(summary: &Summary) -> String {
    format!(
        "{:.3} ± {:.3} [{:.3}, {:.3}]",
        summary.mean, summary.sd, summary.ci95.0, summary.ci95.1
    )
}

fn gantt(rep: &RepResult) -> Result<String> {
    let mut bars = Vec::new();
    let mut staging = rep.staging.clone();
    staging.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    for s in &staging {
        let name = s.uri.rsplit('/').next().unwrap_or(&s.uri);
        bars.push(GanttBar {
            row: format!("stage {name}"),
            start_s: s.start_s,
            end_s: s.end_s.max(s.start_s),
            kind: BarKind::Staging,
        });
    }
    let mut tasks = rep.tasks.clone();
    tasks.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    for t in &tasks {
        let row = if t.gpus > 0 {
            format!("{} [GPU]", t.label())
        } else {
            t.label()
        };
        for (start, end, kind) in [
            (t.start_s, t.ready_s, BarKind::InputWait),
            (t.ready_s, t.compute_end_s, BarKind::Compute),
            (t.compute_end_s, t.end_s, BarKind::Output),
        ] {
            bars.push(GanttBar {
                row: row.clone(),
                start_s: start,
                end_s: end.max(start),
                kind,
            });
        }
    }
    Ok(gantt_svg(
        &format!(
            "{} rep {}: staging against task windows",
            rep.arm,
            rep.rep + 1
        ),
        &bars,
    )?)
}
