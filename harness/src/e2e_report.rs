//! What an end-to-end benchmark measured (`kfcache bench e2e`'s replay, or
//! `kfcache-cluster-bench` on the real control plane), summarised: `results.json` (every rep and every task),
//! `report.md` (per arm: mean, standard deviation and 95 % confidence interval of each
//! metric; Welch's t-test of kfcache against each other arm), `wait.svg` and `makespan.svg`
//! (box plots per arm) and `gantt.svg` (one kfcache rep: the prefetcher's staging of each
//! object against the tasks' input wait, compute and output), and the last line printed:
//! `e2e-bench: wait_nocache_s=… wait_lru_s=… wait_kfcache_s=… makespan_nocache_s=…
//! makespan_kfcache_s=… p_vs_lru=…` (on the control plane `e2e-cluster: …` with
//! `origin_gets_cached=…` before `p_vs_lru`).
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
//!
//! Beside them, `kfcache_all_hits` takes the kfcache runs in which every GPU task found all
//! its inputs in the cache: their wait is the cache's read time alone, the floor under
//! kfcache's wait on the machine that ran the benchmark.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::plots::{box_plot_svg, gantt_svg, BarKind, BoxSeries, GanttBar};
use crate::stats::{summarize, welch, Summary, Welch};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// The three ways of running the pipeline.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize, Deserialize,
)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Why writing the outputs through to the cache failed, as the sidecar would log it; the
    /// task still succeeds, since its outputs are at the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_through_error: Option<String>,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staging {
    pub uri: String,
    pub start_s: f64,
    pub end_s: f64,
    pub bytes: u64,
    pub met_deadline: bool,
}

/// One rep of one arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Task instances whose outputs could not be written through to the cache.
    pub write_through_failures: u32,
    /// Input wait of each GPU task (instances summed).
    pub gpu_task_wait_s: BTreeMap<String, f64>,
    /// On the control plane: GETs the origin answered for objects that were in the cache
    /// when they were read (goal 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_gets_cached: Option<u64>,
    pub tasks: Vec<TaskResult>,
    pub staging: Vec<Staging>,
}

impl RepResult {
    /// The instances of the tasks that hold GPUs.
    pub fn gpu_tasks(&self) -> impl Iterator<Item = &TaskResult> {
        gpu_tasks(&self.tasks)
    }

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
        let gpu = || gpu_tasks(&tasks);
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
            write_through_failures: tasks
                .iter()
                .filter(|t| t.write_through_error.is_some())
                .count() as u32,
            gpu_task_wait_s,
            origin_gets_cached: None,
            tasks,
            staging,
        }
    }
}

fn gpu_tasks(tasks: &[TaskResult]) -> impl Iterator<Item = &TaskResult> {
    tasks.iter().filter(|t| t.gpus > 0)
}

/// How the benchmark was run.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Where the pods' volumes were.
    pub scratch: String,
    /// Set when the runs were real Workflows on a control plane (what it was), not the
    /// replay: the last line is then `e2e-cluster: …` with `origin_gets_cached`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A rep that did not complete: the report covers the others and says which failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedRep {
    pub arm: ArmName,
    pub rep: usize,
    pub error: String,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    kfcache_all_hits: Option<AllHits>,
    reps: &'a [RepResult],
    failed_reps: &'a [FailedRep],
}

/// What a `results.json` holds that the report is computed from.
#[derive(Debug, Deserialize)]
struct Recorded {
    config: Config,
    reps: Vec<RepResult>,
    #[serde(default)]
    failed_reps: Vec<FailedRep>,
}

/// kfcache's runs in which every GPU task found all its inputs in the cache. Their wait is
/// what reading the inputs out of Ignite into the pods' volumes costs: the floor that the
/// cache's read rate puts under kfcache's wait, whatever the prediction and the staging do.
#[derive(Debug, Serialize)]
struct AllHits {
    runs: usize,
    of_runs: usize,
    gpu_wait_s: Summary,
    /// MB the GPU tasks read from the cache in one such run, mean.
    gpu_mb_from_cache: f64,
    /// Those MB over the GPU tasks' summed waits: how fast the cache filled a GPU task's
    /// volume while it waited.
    mb_per_s_of_wait: f64,
}

fn all_hits(reps: &[RepResult]) -> Option<AllHits> {
    let kfcache: Vec<&RepResult> = reps.iter().filter(|r| r.arm == ArmName::Kfcache).collect();
    let hits: Vec<&RepResult> = kfcache
        .iter()
        .copied()
        .filter(|r| r.gpu_tasks().all(|t| t.bytes_from_origin == 0))
        .collect();
    if hits.is_empty() {
        return None;
    }
    let waits: Vec<f64> = hits.iter().map(|r| r.gpu_wait_s).collect();
    let mb: f64 = hits
        .iter()
        .flat_map(|r| r.gpu_tasks())
        .map(|t| t.bytes_from_cache as f64 / 1e6)
        .sum();
    let waited: f64 = waits.iter().sum();
    Some(AllHits {
        runs: hits.len(),
        of_runs: kfcache.len(),
        gpu_wait_s: summarize(&waits),
        gpu_mb_from_cache: mb / hits.len() as f64,
        mb_per_s_of_wait: if waited > 0.0 { mb / waited } else { f64::NAN },
    })
}

/// Writes the report, results and plots of an earlier run into `out` again, from the
/// `results.json` it wrote: what [`write`] makes of the same reps, without running them.
pub fn rewrite(results_file: &Path, out: &Path) -> Result<String> {
    let text = std::fs::read_to_string(results_file)
        .with_context(|| format!("cannot read {}", results_file.display()))?;
    let recorded: Recorded = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the results.json of `kfcache bench e2e`",
            results_file.display()
        )
    })?;
    if recorded.reps.is_empty() {
        anyhow::bail!("{} holds no completed run", results_file.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write(out, &recorded.config, &recorded.reps, &recorded.failed_reps)
}

/// Writes `results.json`, `report.md` and the plots into `out`; returns the last line.
/// `failed` lists the reps that did not complete; the statistics cover the others.
pub fn write(
    out: &Path,
    config: &Config,
    reps: &[RepResult],
    failed: &[FailedRep],
) -> Result<String> {
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
        kfcache_all_hits: all_hits(reps),
        reps,
        failed_reps: failed,
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
        "Pipeline `{}`, {} reps per arm (interleaved, cold cache each rep), remote storage emulated at {:.0} MB/s with {:.0} ms per request, cache budget {:.0} MB, Ignite `{}` ({} nodes), inputs {:.0} MB (scale {}, time scale {}, seed {}), pods' volumes in `{}`.\n",
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
        config.seed,
        config.scratch
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
        let mut constant = false;
        for c in &results.kfcache_against {
            let w = &c.welch;
            // Both arms constant (e.g. no deadline miss in any rep): no spread, so no test.
            let no_spread = w.df.is_nan() && !w.t.is_nan();
            constant |= no_spread;
            let (t, df, p) = if no_spread || w.t.is_nan() {
                ("n/a".to_string(), "n/a".to_string(), "n/a".to_string())
            } else {
                (
                    format!("{:.2}", w.t),
                    format!("{:.1}", w.df),
                    format!("{:.3e}", w.p),
                )
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | [{:.3}, {:.3}] | {t} | {df} | {p} |",
                c.metric, c.against, w.diff, w.ci95_diff.0, w.ci95_diff.1,
            );
        }
        if constant {
            let _ = writeln!(
                md,
                "\nn/a: the metric took the same value in every rep of both arms, so there is no \
                 spread to test against."
            );
        }
    }
    if !failed.is_empty() {
        let _ = writeln!(
            md,
            "\n## Failed runs\n\n{} of {} runs did not complete; the figures above cover the others.\n\n| arm | rep | error |\n|---|---|---|",
            failed.len(),
            failed.len() + reps.len()
        );
        for f in failed {
            let error = f.error.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(md, "| {} | {} | {error} |", f.arm, f.rep + 1);
        }
    }
    let write_through_failures: u32 = reps.iter().map(|r| r.write_through_failures).sum();
    if write_through_failures > 0 {
        let _ = writeln!(
            md,
            "\n{write_through_failures} task instance(s) could not write their outputs through to the cache; their outputs were at the origin and their readers read them there, as with the sidecar."
        );
    }
    let wait = |arm| mean(arm, "gpu_wait_s");
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    // The replay's goals, and those of the real control plane, where Argo's own pod start,
    // executor and reconciliation add a fixed time to every task of every arm.
    let (wait_goal, makespan_goal) = if config.cluster.is_some() {
        (25, 1.4)
    } else {
        (5, 1.5)
    };
    let origin_gets_cached: u64 = of(ArmName::Kfcache)
        .filter_map(|r| r.origin_gets_cached)
        .sum();
    let _ = writeln!(
        md,
        "\n## Goals\n\n- kfcache's mean GPU-task input wait is {:.1} % of no-cache (goal ≤ {wait_goal} %) and {:.1} % of on-demand (goal ≤ 50 %), p = {:.2e} against on-demand (goal < 0.05).\n- Makespan: no cache {:.2} s, kfcache {:.2} s: {:.2}× (goal ≥ {makespan_goal}×).\n",
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
    if config.cluster.is_some() {
        let _ = writeln!(
            md,
            "- In the kfcache runs the origin answered {origin_gets_cached} GET(s) for objects that were in the cache when they were read (goal 0).\n"
        );
    }
    if let Some(hits) = &results.kfcache_all_hits {
        let nocache = wait(ArmName::Nocache);
        let _ = writeln!(
            md,
            "In {} of {} kfcache runs every GPU task found all its inputs in the cache. Their GPU-task input wait was {:.2} ± {:.2} s ({:.1} % of no-cache): reading {:.0} MB out of Ignite into the pods' volumes at {:.0} MB/s per waiting task. That wait is the floor that this machine's cache read rate puts under kfcache's, whatever the prediction and the staging do; ≤ 5 % of no-cache would need that rate {:.1}× higher.\n",
            hits.runs,
            hits.of_runs,
            hits.gpu_wait_s.mean,
            hits.gpu_wait_s.sd,
            100.0 * ratio(hits.gpu_wait_s.mean, nocache),
            hits.gpu_mb_from_cache,
            hits.mb_per_s_of_wait,
            ratio(hits.gpu_wait_s.mean, 0.05 * nocache),
        );
    }
    let _ = writeln!(
        md,
        "## Plots\n\n![GPU-task input wait](wait.svg)\n\n![Makespan](makespan.svg)\n\n![One {} run: staging against task windows](gantt.svg)",
        gantt_rep.arm
    );
    std::fs::write(out.join("report.md"), md)?;

    let figures = format!(
        "wait_nocache_s={:.3} wait_lru_s={:.3} wait_kfcache_s={:.3} makespan_nocache_s={:.3} makespan_kfcache_s={:.3}",
        wait(ArmName::Nocache),
        wait(ArmName::Lru),
        wait(ArmName::Kfcache),
        mean(ArmName::Nocache, "makespan_s"),
        mean(ArmName::Kfcache, "makespan_s"),
    );
    let p = p_vs(ArmName::Lru, "gpu_wait_s");
    Ok(match config.cluster {
        Some(_) => format!(
            "e2e-cluster: {figures} origin_gets_cached={origin_gets_cached} p_vs_lru={p:.3e}"
        ),
        None => format!("e2e-bench: {figures} p_vs_lru={p:.3e}"),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn task(gpus: u32, wait_s: f64, misses: u32, write_through_error: Option<&str>) -> TaskResult {
        TaskResult {
            index: 0,
            task: if gpus > 0 { "train" } else { "prep" }.to_string(),
            instance: String::new(),
            gpus,
            start_s: 1.0,
            ready_s: 1.0 + wait_s,
            compute_end_s: 5.0 + wait_s,
            end_s: 6.0 + wait_s,
            compute_s: 4.0,
            bytes_from_cache: if misses == 0 { 100 } else { 0 },
            bytes_from_origin: if misses == 0 { 0 } else { 100 },
            misses,
            output_bytes: 10,
            write_through_error: write_through_error.map(str::to_string),
        }
    }

    fn rep(arm: ArmName, rep: usize, wait_s: f64, write_through_error: Option<&str>) -> RepResult {
        let misses = u32::from(arm == ArmName::Nocache);
        RepResult::new(
            arm,
            rep,
            format!("run-{arm}-{rep}"),
            10.0 + wait_s,
            vec![
                task(0, 0.5, misses, write_through_error),
                task(1, wait_s, misses, None),
            ],
            Vec::new(),
            100,
            10,
            4,
        )
    }

    fn config() -> Config {
        Config {
            pipeline: "replay.yaml".into(),
            profile: None,
            reps: 3,
            bandwidth_bytes_per_s: 1e8,
            latency_ms: 20.0,
            budget_bytes: 1 << 30,
            scale: 1.0,
            time_scale: 1.0,
            seed: 1,
            ignite: "127.0.0.1:10800".into(),
            ignite_nodes: 1,
            input_bytes: 200,
            scratch: "/dev/shm/kfcache-e2e".into(),
            cluster: None,
        }
    }

    #[test]
    fn failed_runs_and_constant_metrics_are_reported_not_hidden() {
        let out = tempfile::tempdir().expect("tempdir");
        let reps = vec![
            rep(ArmName::Nocache, 0, 8.0, None),
            rep(ArmName::Kfcache, 0, 1.0, Some("put-all timed out")),
            rep(ArmName::Nocache, 1, 9.0, None),
            rep(ArmName::Kfcache, 1, 1.5, None),
            rep(ArmName::Nocache, 2, 7.0, None),
        ];
        let failed = vec![FailedRep {
            arm: ArmName::Kfcache,
            rep: 2,
            error: "a replayed task stopped: init | timed out\nafter 60 s".into(),
        }];
        let line = write(out.path(), &config(), &reps, &failed).expect("report written");
        assert!(
            line.starts_with("e2e-bench: wait_nocache_s=8.000 "),
            "{line}"
        );
        assert!(line.contains("wait_kfcache_s=1.250 "), "{line}");

        let md = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
        assert!(md.contains("## Failed runs"), "{md}");
        assert!(md.contains("1 of 6 runs did not complete"), "{md}");
        assert!(
            md.contains("| kfcache | 3 | a replayed task stopped: init \\| timed out after 60 s |"),
            "the error stays in its table cell: {md}"
        );
        assert!(md.contains("1 task instance(s) could not write their outputs through"));
        // Deadline misses: 1 in every no-cache rep, 0 in every kfcache rep. No spread, no test.
        let misses_row = md
            .lines()
            .find(|l| l.starts_with("| deadline_misses | nocache |"))
            .expect("a t-test row for deadline misses");
        assert!(misses_row.ends_with("| n/a | n/a | n/a |"), "{misses_row}");
        assert!(!md.contains("inf"), "no infinite t printed: {md}");

        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
        )
        .expect("JSON");
        assert_eq!(json["failed_reps"][0]["arm"], "kfcache");
        assert_eq!(json["failed_reps"][0]["rep"], 2);
        assert_eq!(json["reps"][1]["write_through_failures"], 1);
        assert_eq!(
            json["reps"][1]["tasks"][0]["write_through_error"],
            "put-all timed out"
        );
    }

    #[test]
    fn the_runs_with_every_gpu_input_in_the_cache_show_the_cache_read_floor() {
        let out = tempfile::tempdir().expect("tempdir");
        // Two kfcache runs in which the GPU task read its 100 bytes from the cache (waits 1.0
        // and 2.0 s), one in which it read them from the origin.
        let mut missed = rep(ArmName::Kfcache, 2, 6.0, None);
        missed.tasks[1].bytes_from_cache = 0;
        missed.tasks[1].bytes_from_origin = 100;
        let reps = vec![
            rep(ArmName::Nocache, 0, 10.0, None),
            rep(ArmName::Kfcache, 0, 1.0, None),
            rep(ArmName::Nocache, 1, 10.0, None),
            rep(ArmName::Kfcache, 1, 2.0, None),
            missed,
        ];
        write(out.path(), &config(), &reps, &[]).expect("report written");

        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
        )
        .expect("JSON");
        let hits = &json["kfcache_all_hits"];
        assert_eq!(hits["runs"], 2);
        assert_eq!(hits["of_runs"], 3);
        assert_eq!(hits["gpu_wait_s"]["mean"], 1.5);
        assert_eq!(hits["gpu_mb_from_cache"], 100e-6);
        // 200 bytes over 3 s of waiting.
        let rate = hits["mb_per_s_of_wait"].as_f64().expect("a rate");
        assert!((rate - 200e-6 / 3.0).abs() < 1e-12, "{rate}");

        let md = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
        // 1.5 s is 15 % of the no-cache 10 s; 5 % would be 0.5 s, 3× less.
        assert!(
            md.contains("In 2 of 3 kfcache runs every GPU task found all its inputs in the cache. Their GPU-task input wait was 1.50 ± 0.71 s (15.0 % of no-cache)"),
            "{md}"
        );
        assert!(md.contains("would need that rate 3.0× higher"), "{md}");
    }

    #[test]
    fn a_report_is_written_again_from_its_results_without_running_anything() {
        let first = tempfile::tempdir().expect("tempdir");
        let again = tempfile::tempdir().expect("tempdir");
        let reps = vec![
            rep(ArmName::Nocache, 0, 8.0, None),
            rep(ArmName::Lru, 0, 6.0, None),
            rep(ArmName::Kfcache, 0, 1.0, Some("put-all timed out")),
            rep(ArmName::Nocache, 1, 9.0, None),
            rep(ArmName::Lru, 1, 5.0, None),
            rep(ArmName::Kfcache, 1, 1.5, None),
        ];
        let failed = vec![FailedRep {
            arm: ArmName::Lru,
            rep: 2,
            error: "timed out".into(),
        }];
        let line = write(first.path(), &config(), &reps, &failed).expect("report written");
        let results = first.path().join("results.json");
        let again_line = rewrite(&results, again.path()).expect("written again");
        assert_eq!(again_line, line);
        for file in [
            "results.json",
            "report.md",
            "wait.svg",
            "makespan.svg",
            "gantt.svg",
        ] {
            let read = |dir: &Path| std::fs::read_to_string(dir.join(file)).expect(file);
            assert_eq!(read(again.path()), read(first.path()), "{file} differs");
        }
        // Over itself: the file is read before anything is written.
        assert_eq!(rewrite(&results, first.path()).expect("in place"), line);

        std::fs::write(again.path().join("other.json"), r#"{"tasks": []}"#).expect("write");
        let error = rewrite(&again.path().join("other.json"), again.path())
            .expect_err("not a results.json")
            .to_string();
        assert!(
            error.contains("other.json is not the results.json of `kfcache bench e2e`"),
            "{error}"
        );
    }
}
