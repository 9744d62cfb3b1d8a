//! Eviction quality in a simulated clock: the model behind `kfcache bench eviction`.
//!
//! Generated pipelines are replayed against a cache of a fixed byte budget under three
//! policies, and the share of the bytes that GPU tasks read which the cache serves is
//! measured. Everything here is synchronous and deterministic for a given seed.
//!
//! **The workload** ([`generate`]). A pool of datasets of heavy-tailed sizes (log-normal)
//! with Zipf popularity over a random ranking, so that popularity and size are independent.
//! A few pipelines, each a DAG of 3 to [`WorkloadConfig::max_pipeline_tasks`] GPU tasks of
//! one of three shapes: a chain, a fan-out/fan-in (prepare → parallel tasks → merge), or a
//! random layered DAG. Each task reads 1 to [`WorkloadConfig::max_inputs`] datasets drawn by
//! popularity and the output of every task it depends on. Runs start every
//! [`WorkloadConfig::run_interval_s`], cycling through the pipelines as CronWorkflows would,
//! until there are [`WorkloadConfig::tasks`] tasks; in each run a dataset read is replaced by
//! another draw with probability [`WorkloadConfig::input_drift`] (new data, which the run's
//! parameters name only when it is submitted: [`Task::unforeseen`]), and every task writes a
//! new output, readable only once the task has ended. A task's *predicted* duration
//! is its pipeline's typical duration (what the predictor learns from history); its *actual*
//! duration is that times `exp(σ·z)`, `z` standard normal, `σ` =
//! [`WorkloadConfig::noise_sigma`]. So the actual start order can differ from the predicted
//! one.
//!
//! **The clock** ([`simulate`]). Tasks start when their dependencies have ended (a run's
//! first tasks at the run's start) and one of [`Workload::gpu_slots`] GPU slots is free,
//! first come first served — the same list scheduling for the actual timeline and for every
//! prediction. Every input is read at the task's actual start: the read is a hit when the
//! artifact is fully in the cache then. The timeline does not depend on the policy (a miss
//! would make a task slower in reality; here it is only counted), so the three policies see
//! the same reads at the same moments. The cache starts empty when the first run starts, at
//! 0. One staging pipe copies one artifact at a time at
//! [`CacheConfig::bandwidth_bytes_per_s`]; the copy holds its whole size in the budget from
//! its first byte. Reads from the origin on a miss do not use the pipe. The cache never holds
//! more than [`CacheConfig::budget_bytes`], copies in flight included; the simulation asserts
//! it after every change and reports the peak.
//!
//! **The policies** ([`Policy`]).
//! - *kfcache*: knows the DAGs, the run schedule, each pipeline's usual inputs and the
//!   predicted durations; a run's unforeseen inputs once the run starts. At every event (a task starts or
//!   ends, a copy completes) it predicts the start of every task that has not started by
//!   laying out the rest of the workload from the actual state: finished tasks at their
//!   actual times, running tasks ending at their actual start plus their predicted duration
//!   (or now, when that is past), the rest at their predicted durations. The artifacts with a
//!   remaining reader go through the pipe earliest predicted read first, upstream outputs once
//!   produced, skipping a copy that could not complete before its last predicted reader
//!   starts. Room is made by [`choose_victims`](crate::policy::choose_victims) with these
//!   predicted next reads: an artifact with no remaining reader is dead, inputs of running
//!   tasks are pinned, and an artifact that would evict something needed sooner is not taken
//!   (`Refused`; the next candidate is tried). A miss reads the origin; the read fills the
//!   cache when the artifact has a later reader and the rule finds room for it.
//! - *LRU with fill on first read*: what an on-demand cache does. Nothing is prefetched; a
//!   miss fills the cache with the artifact it read, evicting the least recently read entries
//!   that no running task reads (when there is not enough of those, the fill is skipped). The
//!   first read of every artifact is a miss.
//! - *Belady*: the same prefetching engine as kfcache, given the actual start times instead
//!   of predictions and every read from the start — it evicts the furthest *actual* next
//!   read. It is the reference because
//!   this setting allows prefetching: classic Belady (MIN) is the optimum of demand paging
//!   only, where an artifact enters the cache when it is read, so every first read is a miss
//!   that a prefetcher avoids; MIN is therefore not an upper bound here. The oracle
//!   prefetcher bounds what better predictions can buy kfcache; with exact predictions
//!   (noise 0, no unforeseen inputs) kfcache and Belady make the same decisions and score the
//!   same. It is not a
//!   proven optimum of joint prefetch scheduling and eviction (a hard problem): under noise,
//!   kfcache may now and then beat it by luck.
//!
//! **What is generous to whom.** A fill on a read completes at the moment of the read, so a
//! task that starts at the same instant and reads the same artifact hits (generous to LRU
//! and to kfcache's fill on read alike). Outputs are not written through the cache by the
//! task that writes them; they are staged from the origin like any artifact (kfcache) or
//! filled on their first read (LRU). kfcache knows run start times in advance (scheduled
//! runs, as `kfcache predict --next-run` does); runs submitted by hand would reach it only
//! when submitted.
//!
//! **Hit ratios.** [`SimReport::byte_hit_ratio`] is hit bytes over read bytes;
//! [`SimReport::access_hit_ratio`] counts reads. The working set
//! ([`Workload::working_set_bytes`]) is the total size of the distinct artifacts read.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::policy::{choose_victims, Resident, Victims};

const GIB: u64 = 1 << 30;

/// Settings of the workload generator.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// GPU tasks in all: runs are added until there are at least this many.
    pub tasks: usize,
    /// Distinct pipelines (DAGs) the runs cycle through.
    pub pipelines: usize,
    /// Most tasks in one pipeline (at least 3).
    pub max_pipeline_tasks: usize,
    /// Datasets in the pool.
    pub datasets: usize,
    /// Most datasets one task reads (at least 1).
    pub max_inputs: usize,
    /// Exponent of the Zipf popularity of datasets (0: uniform).
    pub zipf_exponent: f64,
    /// Median dataset size.
    pub dataset_median_bytes: u64,
    /// σ of the log-normal dataset sizes.
    pub dataset_size_sigma: f64,
    /// Median size of a task's output.
    pub output_median_bytes: u64,
    /// Median predicted duration of a task.
    pub duration_median_s: f64,
    /// σ of the log-normal spread of task durations across tasks.
    pub duration_spread_sigma: f64,
    /// σ of the log-normal factor between a task's predicted and actual duration.
    pub noise_sigma: f64,
    /// Time between the starts of consecutive runs.
    pub run_interval_s: f64,
    /// Tasks that can run at once.
    pub gpu_slots: usize,
    /// Probability that a run's task reads another dataset than its pipeline's usual one.
    pub input_drift: f64,
}

/// The defaults: four pipelines of 3–10 tasks, run hourly in turn, keep four GPU slots about
/// 60 % busy (an overloaded queue would give a prefetcher hours of slack that a cluster does
/// not); 40 datasets of median 8 GiB, read 1–3 per task with Zipf popularity (exponent 1),
/// 20 % of the reads replaced per run; tasks of median 20 min, mispredicted by σ = 0.2.
impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            tasks: 120,
            pipelines: 4,
            max_pipeline_tasks: 10,
            datasets: 40,
            max_inputs: 3,
            zipf_exponent: 1.0,
            dataset_median_bytes: 8 * GIB,
            dataset_size_sigma: 1.0,
            output_median_bytes: 2 * GIB,
            duration_median_s: 1200.0,
            duration_spread_sigma: 0.6,
            noise_sigma: 0.2,
            run_interval_s: 3600.0,
            gpu_slots: 4,
            input_drift: 0.2,
        }
    }
}

/// An artifact a task reads: a dataset, or a task's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub bytes: u64,
    /// The task whose output it is, readable once that task has ended; `None` for a dataset
    /// (readable from the start).
    pub produced_by: Option<usize>,
}

/// One GPU task of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub run: usize,
    /// When the run starts: a task without dependencies cannot start before.
    pub release_s: f64,
    /// Tasks (indices) that must end before this one starts.
    pub deps: Vec<usize>,
    /// Artifacts (indices) read when it starts.
    pub inputs: Vec<usize>,
    /// Inputs (a subset of `inputs`) that kfcache learns of only when the run starts: the
    /// datasets a run reads in place of its pipeline's usual ones. The other inputs are in
    /// the pipeline's YAML, known ahead.
    pub unforeseen: Vec<usize>,
    /// Duration kfcache's prediction uses.
    pub predicted_s: f64,
    /// Duration it really takes.
    pub actual_s: f64,
}

/// Generated pipelines: artifacts, tasks and the GPU slots they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub artifacts: Vec<Artifact>,
    pub tasks: Vec<Task>,
    pub gpu_slots: usize,
}

/// When a task starts and ends; both infinite when it never starts (a dependency never ends).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskTimes {
    pub start_s: f64,
    pub end_s: f64,
}

impl TaskTimes {
    const NEVER: TaskTimes = TaskTimes {
        start_s: f64::INFINITY,
        end_s: f64::INFINITY,
    };
}

impl Workload {
    /// Total size of the distinct artifacts some task reads.
    pub fn working_set_bytes(&self) -> u64 {
        let mut read = vec![false; self.artifacts.len()];
        for task in &self.tasks {
            for &a in &task.inputs {
                read[a] = true;
            }
        }
        self.artifacts
            .iter()
            .zip(read)
            .filter(|(_, r)| *r)
            .map(|(a, _)| a.bytes)
            .sum()
    }

    /// Total bytes read, every read counted.
    pub fn read_bytes(&self) -> u64 {
        self.tasks
            .iter()
            .flat_map(|t| &t.inputs)
            .map(|&a| self.artifacts[a].bytes)
            .sum()
    }

    /// The actual timeline: every task laid out with its actual duration.
    pub fn actual_times(&self) -> Vec<TaskTimes> {
        let durations: Vec<f64> = self.tasks.iter().map(|t| t.actual_s).collect();
        lay_out(
            self,
            &children(self),
            &durations,
            &vec![None; self.tasks.len()],
            0.0,
        )
    }

    /// When the last task ends.
    pub fn makespan_s(&self) -> f64 {
        makespan_s(&self.actual_times())
    }

    /// The figures that say what kind of workload this is.
    pub fn stats(&self) -> WorkloadStats {
        let times = self.actual_times();
        let makespan_s = makespan_s(&times);
        let reads = self.tasks.iter().map(|t| t.inputs.len()).sum();
        let output_read_bytes = self
            .tasks
            .iter()
            .flat_map(|t| &t.inputs)
            .filter(|&&a| self.artifacts[a].produced_by.is_some())
            .map(|&a| self.artifacts[a].bytes)
            .sum();
        let started: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| times[i].start_s.is_finite())
            .collect();
        let busy_s: f64 = started
            .iter()
            .map(|&i| times[i].end_s - times[i].start_s)
            .sum();
        let wait_s: f64 = started
            .iter()
            .map(|&i| {
                let task = &self.tasks[i];
                let ready_s = task
                    .deps
                    .iter()
                    .map(|&d| times[d].end_s)
                    .fold(task.release_s, f64::max);
                times[i].start_s - ready_s
            })
            .sum();
        WorkloadStats {
            tasks: self.tasks.len(),
            runs: self.tasks.iter().map(|t| t.run + 1).max().unwrap_or(0),
            reads,
            unforeseen_reads: self.tasks.iter().map(|t| t.unforeseen.len()).sum(),
            working_set_bytes: self.working_set_bytes(),
            read_bytes: self.read_bytes(),
            output_read_bytes,
            makespan_s,
            gpu_busy_share: if makespan_s > 0.0 {
                busy_s / (self.gpu_slots.max(1) as f64 * makespan_s)
            } else {
                0.0
            },
            mean_slot_wait_s: if started.is_empty() {
                0.0
            } else {
                wait_s / started.len() as f64
            },
        }
    }
}

fn makespan_s(times: &[TaskTimes]) -> f64 {
    times
        .iter()
        .map(|t| t.end_s)
        .filter(|e| e.is_finite())
        .fold(0.0, f64::max)
}

/// What kind of workload a [`Workload`] is, on its actual timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadStats {
    pub tasks: usize,
    pub runs: usize,
    /// Reads in all, and those kfcache learns of only when their run starts.
    pub reads: usize,
    pub unforeseen_reads: usize,
    pub working_set_bytes: u64,
    pub read_bytes: u64,
    /// Bytes read from upstream outputs.
    pub output_read_bytes: u64,
    pub makespan_s: f64,
    /// Share of the GPU slots' time over the makespan that tasks run.
    pub gpu_busy_share: f64,
    /// How long a ready task waits for a free GPU slot, on average: slack for prefetching.
    pub mean_slot_wait_s: f64,
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn log_normal_bytes(rng: &mut StdRng, median: u64, sigma: f64) -> u64 {
    let median = median.max(1) as f64;
    let bytes = median * (sigma * normal(rng)).exp();
    bytes.clamp(median / 32.0, median * 32.0).round().max(1.0) as u64
}

/// Draws datasets by Zipf popularity over a random ranking.
struct Popularity {
    cumulative: Vec<f64>,
}

impl Popularity {
    fn new(rng: &mut StdRng, datasets: usize, exponent: f64) -> Popularity {
        let mut rank: Vec<usize> = (0..datasets).collect();
        rank.shuffle(rng);
        let mut total = 0.0;
        let cumulative = rank
            .iter()
            .map(|&r| {
                total += 1.0 / ((r + 1) as f64).powf(exponent);
                total
            })
            .collect();
        Popularity { cumulative }
    }

    fn draw(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.gen::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len() - 1)
    }

    /// A draw not in `taken` (a few tries; `None` when they all collide).
    fn draw_new(&self, rng: &mut StdRng, taken: &[usize]) -> Option<usize> {
        (0..32).map(|_| self.draw(rng)).find(|d| !taken.contains(d))
    }
}

/// One pipeline: its DAG, usual datasets, predicted durations and output sizes.
struct Pipeline {
    deps: Vec<Vec<usize>>,
    datasets: Vec<Vec<usize>>,
    predicted_s: Vec<f64>,
    output_bytes: Vec<u64>,
    has_readers: Vec<bool>,
}

fn generate_pipeline(
    rng: &mut StdRng,
    config: &WorkloadConfig,
    popularity: &Popularity,
) -> Pipeline {
    let n = rng.gen_range(3..=config.max_pipeline_tasks.max(3));
    let deps: Vec<Vec<usize>> = match rng.gen_range(0..3) {
        // A chain.
        0 => (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect(),
        // Fan-out/fan-in: prepare, parallel tasks, merge.
        1 => (0..n)
            .map(|i| match i {
                0 => vec![],
                i if i == n - 1 => (1..n - 1).collect(),
                _ => vec![0],
            })
            .collect(),
        // Random layered DAG: one or two earlier tasks.
        _ => (0..n)
            .map(|i| {
                if i == 0 {
                    return vec![];
                }
                let mut d = vec![rng.gen_range(0..i)];
                if i > 1 && rng.gen_bool(0.5) {
                    let other = rng.gen_range(0..i);
                    if !d.contains(&other) {
                        d.push(other);
                    }
                }
                d
            })
            .collect(),
    };
    let mut has_readers = vec![false; n];
    for d in deps.iter().flatten() {
        has_readers[*d] = true;
    }
    let median = config.duration_median_s.max(1.0);
    let predicted_s = (0..n)
        .map(|_| {
            (median * (config.duration_spread_sigma * normal(rng)).exp())
                .clamp(median / 8.0, median * 8.0)
        })
        .collect();
    let datasets = (0..n)
        .map(|_| {
            let count = rng.gen_range(1..=config.max_inputs.max(1));
            let mut chosen = Vec::with_capacity(count);
            for _ in 0..count {
                if let Some(d) = popularity.draw_new(rng, &chosen) {
                    chosen.push(d);
                }
            }
            chosen
        })
        .collect();
    let output_bytes = (0..n)
        .map(|_| log_normal_bytes(rng, config.output_median_bytes, 0.5))
        .collect();
    Pipeline {
        deps,
        datasets,
        predicted_s,
        output_bytes,
        has_readers,
    }
}

/// Generates a workload following the model in the module documentation. The same
/// configuration and seed give the same workload; configurations that differ only in
/// `noise_sigma` give the same pipelines, sizes and reads, with the same noise draws scaled.
pub fn generate(config: &WorkloadConfig, seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let datasets = config.datasets.max(1);
    let mut artifacts: Vec<Artifact> = (0..datasets)
        .map(|_| Artifact {
            bytes: log_normal_bytes(
                &mut rng,
                config.dataset_median_bytes,
                config.dataset_size_sigma,
            ),
            produced_by: None,
        })
        .collect();
    let popularity = Popularity::new(&mut rng, datasets, config.zipf_exponent);
    let pipelines: Vec<Pipeline> = (0..config.pipelines.max(1))
        .map(|_| generate_pipeline(&mut rng, config, &popularity))
        .collect();
    let drift = config.input_drift.clamp(0.0, 1.0);
    let mut tasks: Vec<Task> = Vec::new();
    let mut run = 0;
    while tasks.len() < config.tasks.max(1) {
        let pipeline = &pipelines[run % pipelines.len()];
        let release_s = run as f64 * config.run_interval_s.max(0.0);
        let first = tasks.len();
        let mut outputs: Vec<Option<usize>> = Vec::with_capacity(pipeline.deps.len());
        for (j, deps) in pipeline.deps.iter().enumerate() {
            let mut inputs: Vec<usize> = Vec::new();
            let mut unforeseen: Vec<usize> = Vec::new();
            for &d in &pipeline.datasets[j] {
                let drifted = rng.gen_bool(drift);
                let replacement = popularity.draw_new(&mut rng, &pipeline.datasets[j]);
                match replacement {
                    Some(r) if drifted && !inputs.contains(&r) => {
                        inputs.push(r);
                        unforeseen.push(r);
                    }
                    _ => inputs.push(d),
                }
            }
            inputs.extend(deps.iter().filter_map(|&d| outputs[d]));
            let noise = normal(&mut rng);
            let size_noise = normal(&mut rng);
            let index = first + j;
            outputs.push(pipeline.has_readers[j].then(|| {
                artifacts.push(Artifact {
                    bytes: ((pipeline.output_bytes[j] as f64) * (0.25 * size_noise).exp())
                        .round()
                        .max(1.0) as u64,
                    produced_by: Some(index),
                });
                artifacts.len() - 1
            }));
            tasks.push(Task {
                run,
                release_s,
                deps: deps.iter().map(|&d| first + d).collect(),
                inputs,
                unforeseen,
                predicted_s: pipeline.predicted_s[j],
                actual_s: pipeline.predicted_s[j] * (config.noise_sigma.max(0.0) * noise).exp(),
            });
        }
        run += 1;
    }
    Workload {
        artifacts,
        tasks,
        gpu_slots: config.gpu_slots.max(1),
    }
}

/// A time as a totally ordered heap key.
#[derive(Debug, Clone, Copy)]
struct At(f64);

impl PartialEq for At {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for At {}
impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for At {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn children(workload: &Workload) -> Vec<Vec<usize>> {
    let mut children = vec![Vec::new(); workload.tasks.len()];
    for (i, task) in workload.tasks.iter().enumerate() {
        for &d in &task.deps {
            children[d].push(i);
        }
    }
    children
}

/// List scheduling on the GPU slots, from `now`: a task becomes ready when its last
/// dependency ends (a task without dependencies at its run's start) and ready tasks take free
/// slots in the order they became ready, then by index. `started[i]` fixes the times of a task
/// that has already started (its end may be a prediction); the others take `durations[i]`.
/// Decisions depend only on ends already passed, so laying out from the actual state with
/// the actual durations reproduces the actual timeline exactly.
fn lay_out(
    workload: &Workload,
    children: &[Vec<usize>],
    durations: &[f64],
    started: &[Option<(f64, f64)>],
    now: f64,
) -> Vec<TaskTimes> {
    let tasks = &workload.tasks;
    let mut times = vec![TaskTimes::NEVER; tasks.len()];
    let mut waiting: Vec<usize> = tasks.iter().map(|t| t.deps.len()).collect();
    let mut ending: BinaryHeap<Reverse<(At, usize)>> = BinaryHeap::new();
    let mut ready: BinaryHeap<Reverse<(At, usize)>> = BinaryHeap::new();
    let mut roots: Vec<usize> = Vec::new();
    let mut free = workload.gpu_slots.max(1) as i64;
    for (i, task) in tasks.iter().enumerate() {
        if let Some((start_s, end_s)) = started[i] {
            times[i] = TaskTimes { start_s, end_s };
            ending.push(Reverse((At(end_s), i)));
            free -= 1;
        } else if task.deps.is_empty() {
            roots.push(i);
        }
    }
    roots.sort_by_key(|&i| (At(tasks[i].release_s), i));
    let mut next_root = 0;
    let mut t = now;
    loop {
        while let Some(&Reverse((At(end_s), i))) = ending.peek() {
            if end_s > t {
                break;
            }
            ending.pop();
            free += 1;
            for &c in &children[i] {
                waiting[c] -= 1;
                if waiting[c] == 0 && started[c].is_none() {
                    ready.push(Reverse((At(end_s), c)));
                }
            }
        }
        while let Some(&i) = roots.get(next_root) {
            if tasks[i].release_s > t {
                break;
            }
            ready.push(Reverse((At(tasks[i].release_s), i)));
            next_root += 1;
        }
        while free > 0 {
            let Some(Reverse((_, i))) = ready.pop() else {
                break;
            };
            let end_s = t + durations[i].max(0.0);
            times[i] = TaskTimes { start_s: t, end_s };
            ending.push(Reverse((At(end_s), i)));
            free -= 1;
        }
        let next_end = ending.peek().map(|Reverse((At(e), _))| *e);
        let next_release = roots.get(next_root).map(|&i| tasks[i].release_s);
        t = match (next_end, next_release) {
            (None, None) => break,
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) => a.min(b),
        };
    }
    times
}

/// Which policy runs the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// kfcache's DAG-aware prefetching and eviction on predicted start times.
    Kfcache,
    /// Least recently used, filled on the first read, no prefetching.
    Lru,
    /// kfcache's engine with the actual start times: the oracle prefetcher.
    Belady,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Kfcache, Policy::Lru, Policy::Belady];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Kfcache => "kfcache",
            Policy::Lru => "lru",
            Policy::Belady => "belady",
        }
    }
}

/// The cache being simulated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheConfig {
    /// Most bytes in the cache at any moment, copies in flight included.
    pub budget_bytes: u64,
    /// Bytes per second the staging pipe copies.
    pub bandwidth_bytes_per_s: f64,
}

/// One read of an artifact by a task, at the task's actual start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Read {
    pub time_s: f64,
    pub task: usize,
    pub artifact: usize,
    pub bytes: u64,
    pub hit: bool,
}

/// What one simulation measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    pub policy: Policy,
    pub budget_bytes: u64,
    pub reads: usize,
    pub hits: usize,
    pub read_bytes: u64,
    pub hit_bytes: u64,
    /// Copies the staging pipe started, and their bytes.
    pub stagings: usize,
    pub staged_bytes: u64,
    /// Copies started per artifact.
    pub stagings_per_artifact: Vec<u32>,
    /// Artifacts put in the cache by a read that missed, and their bytes.
    pub fills: usize,
    pub filled_bytes: u64,
    /// Most bytes the cache held at any moment.
    pub peak_used_bytes: u64,
    /// Every read, in the order the simulation served them.
    pub trace: Vec<Read>,
}

impl SimReport {
    /// Hit bytes over read bytes (0 when nothing was read).
    pub fn byte_hit_ratio(&self) -> f64 {
        if self.read_bytes == 0 {
            0.0
        } else {
            self.hit_bytes as f64 / self.read_bytes as f64
        }
    }

    /// Hits over reads (0 when nothing was read).
    pub fn access_hit_ratio(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            self.hits as f64 / self.reads as f64
        }
    }
}

/// When each task starts, as a policy sees it at `now`.
#[derive(Debug)]
struct Forecast {
    now: f64,
    starts: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Done,
}

/// A copy through the staging pipe.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    artifact: usize,
    done_s: f64,
}

struct Sim<'w> {
    workload: &'w Workload,
    policy: Policy,
    cache: CacheConfig,
    children: Vec<Vec<usize>>,
    /// Tasks reading each artifact, with when kfcache learns of the read.
    readers: Vec<Vec<(usize, f64)>>,
    actual: Vec<TaskTimes>,
    status: Vec<Status>,
    resident: Vec<bool>,
    /// Running tasks reading each artifact.
    pins: Vec<u32>,
    /// LRU: the sequence number of the last read of each artifact.
    last_read: Vec<u64>,
    sequence: u64,
    used_bytes: u64,
    copy: Option<InFlight>,
    report: SimReport,
}

/// Replays `workload` against a cache run by `policy`. Deterministic.
///
/// # Panics
///
/// If the cache ever held more than its budget (a bug in the simulation or the policy).
pub fn simulate(workload: &Workload, policy: Policy, cache: &CacheConfig) -> SimReport {
    let children = children(workload);
    let mut readers = vec![Vec::new(); workload.artifacts.len()];
    for (i, task) in workload.tasks.iter().enumerate() {
        for &a in &task.inputs {
            let known_s = if task.unforeseen.contains(&a) {
                task.release_s
            } else {
                f64::NEG_INFINITY
            };
            readers[a].push((i, known_s));
        }
    }
    let durations: Vec<f64> = workload.tasks.iter().map(|t| t.actual_s).collect();
    let actual = lay_out(
        workload,
        &children,
        &durations,
        &vec![None; workload.tasks.len()],
        0.0,
    );
    let n = workload.artifacts.len();
    let sim = Sim {
        workload,
        policy,
        cache: *cache,
        children,
        readers,
        actual,
        status: vec![Status::Waiting; workload.tasks.len()],
        resident: vec![false; n],
        pins: vec![0; n],
        last_read: vec![0; n],
        sequence: 0,
        used_bytes: 0,
        copy: None,
        report: SimReport {
            policy,
            budget_bytes: cache.budget_bytes,
            reads: 0,
            hits: 0,
            read_bytes: 0,
            hit_bytes: 0,
            stagings: 0,
            staged_bytes: 0,
            stagings_per_artifact: vec![0; n],
            fills: 0,
            filled_bytes: 0,
            peak_used_bytes: 0,
            trace: Vec::new(),
        },
    };
    sim.run()
}

impl Sim<'_> {
    fn run(mut self) -> SimReport {
        // (time, starts after ends, task)
        let mut events: Vec<(f64, bool, usize)> = Vec::new();
        for (i, t) in self.actual.iter().enumerate() {
            if t.start_s.is_finite() {
                events.push((t.start_s, true, i));
                events.push((t.end_s, false, i));
            }
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let prefetching = self.policy != Policy::Lru;
        if prefetching {
            let forecast = self.forecast(0.0);
            self.stage_next(&forecast);
        }
        let mut next = 0;
        while let Some(&(now, _, _)) = events.get(next) {
            if let Some(copy) = self.copy.filter(|c| c.done_s <= now) {
                self.copy = None;
                self.resident[copy.artifact] = true;
                let forecast = self.forecast(copy.done_s);
                self.stage_next(&forecast);
                continue;
            }
            let batch_end = events[next..]
                .iter()
                .position(|e| e.0 != now)
                .map_or(events.len(), |p| next + p);
            let batch = &events[next..batch_end];
            // Ends first: they free what starts at the same moment may need. A task of no
            // duration ends after its own start.
            let mut ending_later = Vec::new();
            for &(_, _, task) in batch.iter().filter(|e| !e.1) {
                if self.status[task] == Status::Running {
                    self.finish(task);
                } else {
                    ending_later.push(task);
                }
            }
            for &(_, _, task) in batch.iter().filter(|e| e.1) {
                self.status[task] = Status::Running;
                for &a in &self.workload.tasks[task].inputs {
                    self.pins[a] += 1;
                }
            }
            let forecast = if prefetching {
                self.forecast(now)
            } else {
                Forecast {
                    now,
                    starts: Vec::new(),
                }
            };
            for &(_, _, task) in batch.iter().filter(|e| e.1) {
                for &a in &self.workload.tasks[task].inputs {
                    self.read(task, a, &forecast);
                }
            }
            for task in ending_later {
                self.finish(task);
            }
            if prefetching {
                self.stage_next(&forecast);
            }
            next = batch_end;
        }
        self.report
    }

    fn finish(&mut self, task: usize) {
        self.status[task] = Status::Done;
        for &a in &self.workload.tasks[task].inputs {
            self.pins[a] -= 1;
        }
    }

    /// The start of every task as the policy sees it at `now` (only tasks still waiting
    /// matter).
    fn forecast(&self, now: f64) -> Forecast {
        let starts = match self.policy {
            Policy::Belady => self.actual.iter().map(|t| t.start_s).collect(),
            Policy::Kfcache | Policy::Lru => {
                let tasks = &self.workload.tasks;
                let started: Vec<Option<(f64, f64)>> = (0..tasks.len())
                    .map(|i| {
                        let start = self.actual[i].start_s;
                        match self.status[i] {
                            Status::Waiting => None,
                            Status::Running => {
                                Some((start, (start + tasks[i].predicted_s).max(now)))
                            }
                            Status::Done => Some((start, self.actual[i].end_s)),
                        }
                    })
                    .collect();
                let durations: Vec<f64> = tasks.iter().map(|t| t.predicted_s).collect();
                lay_out(self.workload, &self.children, &durations, &started, now)
                    .iter()
                    .map(|t| t.start_s)
                    .collect()
            }
        };
        Forecast { now, starts }
    }

    /// Earliest and latest predicted start of the artifact's readers still waiting that the
    /// policy knows of (the oracle knows every read).
    fn next_reads(&self, artifact: usize, forecast: &Forecast) -> Option<(f64, f64)> {
        self.readers[artifact]
            .iter()
            .filter(|&&(t, known_s)| {
                self.status[t] == Status::Waiting
                    && (self.policy == Policy::Belady || known_s <= forecast.now)
            })
            .map(|&(t, _)| forecast.starts[t])
            .filter(|s| s.is_finite())
            .fold(None, |acc, s| match acc {
                None => Some((s, s)),
                Some((lo, hi)) => Some((f64::min(lo, s), f64::max(hi, s))),
            })
    }

    fn readable(&self, artifact: usize) -> bool {
        match self.workload.artifacts[artifact].produced_by {
            None => true,
            Some(t) => self.status[t] == Status::Done,
        }
    }

    fn take_room(&mut self, bytes: u64) {
        self.used_bytes += bytes;
        assert!(
            self.used_bytes <= self.cache.budget_bytes,
            "the cache holds {} bytes, over its budget of {}",
            self.used_bytes,
            self.cache.budget_bytes
        );
        self.report.peak_used_bytes = self.report.peak_used_bytes.max(self.used_bytes);
    }

    fn evict(&mut self, artifact: usize) {
        debug_assert!(self.resident[artifact]);
        self.resident[artifact] = false;
        self.used_bytes -= self.workload.artifacts[artifact].bytes;
    }

    /// The cache's entries as the eviction rule sees them (the copy in flight is pinned), and
    /// the artifact of each.
    fn residents(&self, forecast: &Forecast) -> (Vec<Resident>, Vec<usize>) {
        let mut residents = Vec::new();
        let mut artifacts = Vec::new();
        for (a, _) in self.resident.iter().enumerate().filter(|(_, r)| **r) {
            residents.push(Resident {
                bytes: self.workload.artifacts[a].bytes,
                next_use_s: self.next_reads(a, forecast).map(|(first, _)| first),
                pinned: self.pins[a] > 0,
            });
            artifacts.push(a);
        }
        if let Some(copy) = self.copy {
            residents.push(Resident {
                bytes: self.workload.artifacts[copy.artifact].bytes,
                next_use_s: None,
                pinned: true,
            });
            artifacts.push(copy.artifact);
        }
        (residents, artifacts)
    }

    /// Makes room for `artifact` by the DAG-aware rule; false when it refuses.
    fn make_room(&mut self, artifact: usize, first_read_s: f64, forecast: &Forecast) -> bool {
        let (residents, artifacts) = self.residents(forecast);
        debug_assert_eq!(
            residents.iter().map(|r| r.bytes).sum::<u64>(),
            self.used_bytes
        );
        let bytes = self.workload.artifacts[artifact].bytes;
        match choose_victims(&residents, self.cache.budget_bytes, bytes, first_read_s) {
            Victims::Evict(victims) => {
                for v in victims {
                    self.evict(artifacts[v]);
                }
                true
            }
            Victims::Refused { .. } => false,
        }
    }

    /// Starts the next copy when the pipe is idle: the readable artifact with the earliest
    /// predicted read that can arrive before its last predicted reader and that the eviction
    /// rule admits.
    fn stage_next(&mut self, forecast: &Forecast) {
        if self.copy.is_some() {
            return;
        }
        let now = forecast.now;
        let bandwidth = self.cache.bandwidth_bytes_per_s;
        let mut candidates: Vec<(f64, usize)> = (0..self.workload.artifacts.len())
            .filter(|&a| !self.resident[a] && self.readable(a))
            .filter_map(|a| {
                let bytes = self.workload.artifacts[a].bytes;
                if bytes > self.cache.budget_bytes {
                    return None;
                }
                let (first, last) = self.next_reads(a, forecast)?;
                (now + bytes as f64 / bandwidth <= last).then_some((first, a))
            })
            .collect();
        candidates.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        for (first_read_s, artifact) in candidates {
            if self.make_room(artifact, first_read_s, forecast) {
                let bytes = self.workload.artifacts[artifact].bytes;
                self.take_room(bytes);
                self.copy = Some(InFlight {
                    artifact,
                    done_s: now + bytes as f64 / bandwidth,
                });
                self.report.stagings += 1;
                self.report.staged_bytes += bytes;
                self.report.stagings_per_artifact[artifact] += 1;
                return;
            }
        }
    }

    fn read(&mut self, task: usize, artifact: usize, forecast: &Forecast) {
        let now = forecast.now;
        let bytes = self.workload.artifacts[artifact].bytes;
        let hit = self.resident[artifact];
        self.report.reads += 1;
        self.report.read_bytes += bytes;
        if hit {
            self.report.hits += 1;
            self.report.hit_bytes += bytes;
        }
        self.report.trace.push(Read {
            time_s: now,
            task,
            artifact,
            bytes,
            hit,
        });
        self.sequence += 1;
        if hit {
            self.last_read[artifact] = self.sequence;
            return;
        }
        if !self.readable(artifact) {
            return;
        }
        match self.policy {
            Policy::Lru => self.fill_least_recently_used(artifact),
            Policy::Kfcache | Policy::Belady => {
                if self.copy.is_some_and(|c| c.artifact == artifact) {
                    // The read brings the bytes the copy was fetching; its room is held.
                    self.copy = None;
                    self.resident[artifact] = true;
                } else if let Some((first, _)) = self.next_reads(artifact, forecast) {
                    if self.make_room(artifact, first, forecast) {
                        self.take_room(bytes);
                        self.resident[artifact] = true;
                        self.report.fills += 1;
                        self.report.filled_bytes += bytes;
                    }
                }
            }
        }
    }

    fn fill_least_recently_used(&mut self, artifact: usize) {
        let bytes = self.workload.artifacts[artifact].bytes;
        if bytes > self.cache.budget_bytes {
            return;
        }
        let needed = (self.used_bytes + bytes).saturating_sub(self.cache.budget_bytes);
        let mut victims: Vec<usize> = (0..self.resident.len())
            .filter(|&a| self.resident[a] && self.pins[a] == 0)
            .collect();
        victims.sort_by_key(|&a| (self.last_read[a], a));
        let mut freed = 0;
        let mut count = 0;
        while freed < needed && count < victims.len() {
            freed += self.workload.artifacts[victims[count]].bytes;
            count += 1;
        }
        if freed < needed {
            return;
        }
        for &a in &victims[..count] {
            self.evict(a);
        }
        self.take_room(bytes);
        self.resident[artifact] = true;
        self.last_read[artifact] = self.sequence;
        self.report.fills += 1;
        self.report.filled_bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn task(release_s: f64, deps: &[usize], inputs: &[usize], duration_s: f64) -> Task {
        Task {
            run: 0,
            release_s,
            deps: deps.to_vec(),
            inputs: inputs.to_vec(),
            unforeseen: Vec::new(),
            predicted_s: duration_s,
            actual_s: duration_s,
        }
    }

    fn dataset(bytes: u64) -> Artifact {
        Artifact {
            bytes,
            produced_by: None,
        }
    }

    fn small_config(noise_sigma: f64) -> WorkloadConfig {
        WorkloadConfig {
            tasks: 40,
            datasets: 15,
            noise_sigma,
            ..WorkloadConfig::default()
        }
    }

    /// Every read known ahead: only the durations can be mispredicted.
    fn foreseen_config(noise_sigma: f64) -> WorkloadConfig {
        WorkloadConfig {
            input_drift: 0.0,
            ..small_config(noise_sigma)
        }
    }

    fn cache(workload: &Workload, fraction: f64, staging_s: f64) -> CacheConfig {
        let working_set = workload.working_set_bytes();
        CacheConfig {
            budget_bytes: (working_set as f64 * fraction) as u64,
            bandwidth_bytes_per_s: working_set as f64 / staging_s,
        }
    }

    #[test]
    fn the_timeline_respects_dependencies_run_starts_and_gpu_slots() {
        for seed in 0..10 {
            let workload = generate(&WorkloadConfig::default(), seed);
            let times = workload.actual_times();
            for (i, task) in workload.tasks.iter().enumerate() {
                let t = times[i];
                assert!(t.start_s.is_finite(), "task {i} never started");
                assert!(t.start_s >= task.release_s);
                assert_eq!(t.end_s, t.start_s + task.actual_s);
                for &d in &task.deps {
                    assert!(t.start_s >= times[d].end_s, "task {i} before {d} ended");
                }
                let running = times
                    .iter()
                    .filter(|o| o.start_s <= t.start_s && t.start_s < o.end_s)
                    .count();
                assert!(running <= workload.gpu_slots, "{running} tasks at once");
            }
        }
    }

    #[test]
    fn generation_is_deterministic_and_noise_changes_only_durations() {
        let a = generate(&small_config(0.2), 7);
        assert_eq!(a, generate(&small_config(0.2), 7));
        assert_ne!(a, generate(&small_config(0.2), 8));
        let exact = generate(&small_config(0.0), 7);
        assert_eq!(a.artifacts, exact.artifacts);
        for (noisy, exact) in a.tasks.iter().zip(&exact.tasks) {
            assert_eq!(noisy.inputs, exact.inputs);
            assert_eq!(noisy.deps, exact.deps);
            assert_eq!(exact.actual_s, exact.predicted_s);
        }
        assert!(a.tasks.iter().any(|t| t.actual_s != t.predicted_s));
        let config = cache(&a, 0.5, 3600.0);
        assert_eq!(
            simulate(&a, Policy::Kfcache, &config),
            simulate(&a, Policy::Kfcache, &config)
        );
    }

    #[test]
    fn generated_pipelines_share_and_reuse_datasets_and_read_upstream_outputs() {
        let workload = generate(&WorkloadConfig::default(), 3);
        let mut readers = vec![0usize; workload.artifacts.len()];
        for task in &workload.tasks {
            for &a in &task.inputs {
                readers[a] += 1;
            }
        }
        let datasets = |a: &usize| workload.artifacts[*a].produced_by.is_none();
        let shared = (0..readers.len())
            .filter(datasets)
            .filter(|&a| readers[a] > 1)
            .count();
        assert!(shared > 1, "{shared} datasets read more than once");
        for (i, task) in workload.tasks.iter().enumerate() {
            for &a in &task.inputs {
                if let Some(producer) = workload.artifacts[a].produced_by {
                    assert!(
                        task.deps.contains(&producer),
                        "task {i} reads {a} unordered"
                    );
                }
            }
        }
        assert!(workload.artifacts.iter().any(|a| a.produced_by.is_some()));
        assert!(workload.read_bytes() > workload.working_set_bytes());
        // Some runs read new datasets, which only the run's start reveals.
        assert!(workload.tasks.iter().any(|t| !t.unforeseen.is_empty()));
        for task in &workload.tasks {
            assert!(task.unforeseen.iter().all(|a| task.inputs.contains(a)));
        }
    }

    #[test]
    fn an_unforeseen_input_is_staged_only_once_its_run_starts() {
        // Task 1 runs an hour after task 0 and reads a dataset its pipeline does not usually
        // read: kfcache learns of it when the run starts, the oracle knows it all along.
        let mut later = task(3600.0, &[], &[0, 1], 600.0);
        later.unforeseen = vec![1];
        let workload = Workload {
            artifacts: vec![dataset(GIB), dataset(GIB)],
            tasks: vec![task(0.0, &[], &[], 600.0), later],
            gpu_slots: 1,
        };
        let config = CacheConfig {
            budget_bytes: 2 * GIB,
            bandwidth_bytes_per_s: (GIB / 10) as f64,
        };
        let hits = |policy| {
            simulate(&workload, policy, &config)
                .trace
                .iter()
                .map(|r| r.hit)
                .collect::<Vec<_>>()
        };
        assert_eq!(hits(Policy::Kfcache), [true, false]);
        assert_eq!(hits(Policy::Belady), [true, true]);
    }

    #[test]
    fn with_exact_predictions_kfcache_and_belady_decide_alike() {
        let mut differed_under_noise = false;
        for seed in 0..6 {
            for fraction in [0.25, 0.5, 1.0] {
                let exact = generate(&foreseen_config(0.0), seed);
                let config = cache(&exact, fraction, 3600.0);
                let kfcache = simulate(&exact, Policy::Kfcache, &config);
                let belady = simulate(&exact, Policy::Belady, &config);
                assert!(kfcache.stagings > 0);
                assert_eq!(
                    SimReport {
                        policy: Policy::Belady,
                        ..kfcache
                    },
                    belady,
                    "seed {seed}, fraction {fraction}"
                );
                let noisy = generate(&foreseen_config(0.3), seed);
                let config = cache(&noisy, fraction, 3600.0);
                let kfcache = simulate(&noisy, Policy::Kfcache, &config);
                let belady = simulate(&noisy, Policy::Belady, &config);
                differed_under_noise |= kfcache.trace != belady.trace
                    || kfcache.stagings_per_artifact != belady.stagings_per_artifact;
            }
        }
        // Otherwise the equality above would say nothing about predictions.
        assert!(differed_under_noise);
    }

    #[test]
    fn lru_misses_the_first_read_of_every_artifact() {
        for seed in 0..5 {
            let workload = generate(&small_config(0.2), seed);
            let report = simulate(&workload, Policy::Lru, &cache(&workload, 1.0, 3600.0));
            let mut seen = vec![false; workload.artifacts.len()];
            for read in &report.trace {
                if !seen[read.artifact] {
                    assert!(!read.hit, "first read of {} hit", read.artifact);
                    seen[read.artifact] = true;
                }
            }
            assert_eq!(report.stagings, 0);
            // It does fill: later reads hit with the whole working set in the budget.
            assert!(report.hits > 0);
        }
    }

    #[test]
    fn a_dataset_shared_by_two_tasks_is_staged_once() {
        // Two runs an hour apart read the same dataset; one task in between reads another.
        let workload = Workload {
            artifacts: vec![dataset(10 * GIB), dataset(GIB)],
            tasks: vec![
                task(600.0, &[], &[0], 1200.0),
                task(1800.0, &[], &[1], 600.0),
                task(4200.0, &[], &[0], 1200.0),
            ],
            gpu_slots: 1,
        };
        let config = CacheConfig {
            budget_bytes: 11 * GIB,
            bandwidth_bytes_per_s: (GIB / 10) as f64,
        };
        for policy in [Policy::Kfcache, Policy::Belady] {
            let report = simulate(&workload, policy, &config);
            assert_eq!(report.stagings_per_artifact, [1, 1], "{policy:?}");
            assert_eq!(report.staged_bytes, 11 * GIB);
            assert_eq!(report.hits, 3, "{policy:?}");
        }
        // LRU fills the dataset on the first read and keeps it: one miss per artifact.
        let lru = simulate(&workload, Policy::Lru, &config);
        assert_eq!(lru.hits, 1);
        assert!(lru.trace[2].hit);
    }

    #[test]
    fn workload_stats_count_reads_waits_and_busy_time() {
        let mut second = task(0.0, &[], &[0, 1], 300.0);
        second.unforeseen = vec![1];
        let workload = Workload {
            artifacts: vec![
                dataset(GIB),
                dataset(2 * GIB),
                Artifact {
                    bytes: 3 * GIB,
                    produced_by: Some(0),
                },
            ],
            tasks: vec![
                task(0.0, &[], &[0], 100.0),
                second,
                task(0.0, &[0], &[2, 0], 100.0),
            ],
            gpu_slots: 1,
        };
        let stats = workload.stats();
        // One slot: 0 runs 0..100, 1 waits 100 s and runs to 400, 2 waits 300 s, ends at 500.
        assert_eq!(stats.makespan_s, 500.0);
        assert_eq!(stats.mean_slot_wait_s, 400.0 / 3.0);
        assert_eq!(stats.gpu_busy_share, 1.0);
        assert_eq!((stats.reads, stats.unforeseen_reads, stats.runs), (5, 1, 1));
        assert_eq!(stats.working_set_bytes, 6 * GIB);
        assert_eq!(stats.read_bytes, 8 * GIB);
        assert_eq!(stats.output_read_bytes, 3 * GIB);
    }

    #[test]
    fn a_task_of_no_duration_reads_and_releases_its_inputs() {
        // Its end falls in the same instant as its start: the inputs are read, then released.
        let workload = Workload {
            artifacts: vec![dataset(GIB), dataset(GIB)],
            tasks: vec![task(60.0, &[], &[0], 0.0), task(60.0, &[0], &[1], 100.0)],
            gpu_slots: 1,
        };
        let config = CacheConfig {
            budget_bytes: GIB,
            bandwidth_bytes_per_s: GIB as f64,
        };
        for policy in Policy::ALL {
            let report = simulate(&workload, policy, &config);
            assert_eq!(report.reads, 2, "{policy:?}");
            assert_eq!(report.peak_used_bytes, GIB);
        }
    }

    #[test]
    fn two_tasks_starting_together_share_one_copy() {
        let workload = Workload {
            artifacts: vec![dataset(4 * GIB)],
            tasks: vec![task(600.0, &[], &[0], 100.0), task(600.0, &[], &[0], 100.0)],
            gpu_slots: 2,
        };
        let config = CacheConfig {
            budget_bytes: 4 * GIB,
            bandwidth_bytes_per_s: GIB as f64,
        };
        let report = simulate(&workload, Policy::Kfcache, &config);
        assert_eq!(report.stagings_per_artifact, [1]);
        assert_eq!(report.hits, 2);
    }

    #[test]
    fn an_upstream_output_is_staged_only_once_produced() {
        // Task 0 writes artifact 1, read by task 2. Task 2 also waits for task 1, which ends
        // `gap_s` after task 0: with no gap the output cannot be in the cache in time.
        for (gap_s, hit) in [(0.0, false), (600.0, true)] {
            let workload = Workload {
                artifacts: vec![
                    dataset(GIB),
                    Artifact {
                        bytes: 2 * GIB,
                        produced_by: Some(0),
                    },
                ],
                tasks: vec![
                    task(0.0, &[], &[0], 1000.0),
                    task(0.0, &[], &[], 1000.0 + gap_s),
                    task(0.0, &[0, 1], &[1], 100.0),
                ],
                gpu_slots: 2,
            };
            let config = CacheConfig {
                budget_bytes: 3 * GIB,
                bandwidth_bytes_per_s: (GIB / 10) as f64,
            };
            let report = simulate(&workload, Policy::Kfcache, &config);
            let output_read = report.trace.iter().find(|r| r.artifact == 1);
            assert_eq!(output_read.map(|r| r.hit), Some(hit), "gap {gap_s}");
        }
    }

    #[test]
    fn prefetching_hits_first_reads_that_lru_misses() {
        let workload = generate(&foreseen_config(0.2), 11);
        let config = CacheConfig {
            budget_bytes: workload.working_set_bytes(),
            bandwidth_bytes_per_s: f64::INFINITY,
        };
        let kfcache = simulate(&workload, Policy::Kfcache, &config);
        let lru = simulate(&workload, Policy::Lru, &config);
        // With room for everything and an instant pipe, only outputs read the moment they
        // are written can miss.
        for read in &kfcache.trace {
            if workload.artifacts[read.artifact].produced_by.is_none() {
                assert!(read.hit, "dataset read {read:?} missed");
            }
        }
        assert!(kfcache.hit_bytes > lru.hit_bytes);
    }

    #[test]
    fn nothing_hits_in_a_cache_of_zero_bytes() {
        let workload = generate(&small_config(0.2), 5);
        for policy in Policy::ALL {
            let report = simulate(&workload, policy, &cache(&workload, 0.0, 3600.0));
            assert_eq!(report.hits, 0, "{policy:?}");
            assert_eq!(report.peak_used_bytes, 0);
            assert_eq!(report.reads, report.trace.len());
            assert!(report.reads > 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn the_cache_never_exceeds_its_budget(
            seed in 0u64..1000,
            tasks in 3usize..50,
            datasets in 1usize..30,
            max_inputs in 1usize..5,
            gpu_slots in 1usize..6,
            noise_sigma in 0.0f64..0.6,
            zipf_exponent in 0.0f64..1.5,
            fraction in 0.0f64..1.2,
            staging_s in 10.0f64..100_000.0,
        ) {
            let workload = generate(
                &WorkloadConfig {
                    tasks,
                    datasets,
                    max_inputs,
                    gpu_slots,
                    noise_sigma,
                    zipf_exponent,
                    ..WorkloadConfig::default()
                },
                seed,
            );
            let config = cache(&workload, fraction, staging_s);
            for policy in Policy::ALL {
                let report = simulate(&workload, policy, &config);
                prop_assert!(report.peak_used_bytes <= config.budget_bytes);
                prop_assert!(report.hit_bytes <= report.read_bytes);
                prop_assert_eq!(report.read_bytes, workload.read_bytes());
            }
        }
    }
}
