//! The prediction of one run: every task's duration estimate laid out by the list-scheduling
//! simulation, with each input's size and the time it is needed by (the task's start).
//!
//! Without history, every task occupies its estimated time, laid out once. With history, a
//! run's times are not a sum of typical durations: a retry happens in some runs and not in
//! others, a branch is taken or skipped, a dynamic loop's count varies, and with a
//! `parallelism` limit one slower task can push another into the next wave. So the run is
//! drawn [`draws`] times from what history says (each instance's duration log-normal around
//! its estimate with its observed spread, each attempt failing at the observed rate up to the
//! retry limit, each branch taken with its observed probability, each dynamic loop running
//! one of its observed counts), every draw is laid out by the simulation, and each task's
//! predicted start and end are the medians of its starts and ends over the draws. Medians of
//! the same draws keep the order of the schedule: in every draw a task starts after its
//! dependencies end, so its median start is at least their median end. The draws come from
//! a fixed seed, so a prediction is reproducible.
//!
//! A branch that history says runs less than half the time is marked as not running
//! ([`TaskPrediction::runs`]); the prefetcher does not stage its inputs.

use std::collections::HashMap;

use kfcache_parser::model::TASK_URI_SCHEME;
use kfcache_parser::schedule::TaskTimes;
use kfcache_parser::{Dag, Pipeline, Task};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::duration::{estimate, DurationEstimate, EstimatorConfig, TaskContext};
use crate::history::{median, PipelineHistory, TaskSample};
use crate::simulate::{simulate, simulate_instances, TaskLoad};

/// One input of a predicted task.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPrediction {
    pub name: String,
    pub uri: Option<String>,
    /// Bytes, from a probe (stored sizes) or, for upstream outputs, from history.
    pub size_bytes: Option<u64>,
    /// Seconds after the run's start by which it must be readable: the task's start.
    pub needed_by_s: f64,
}

/// One task of a prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPrediction {
    pub task: String,
    pub gpus: u32,
    pub start_s: f64,
    pub end_s: f64,
    pub estimate: DurationEstimate,
    /// Whether the task is predicted to run (its branch is taken at least half the time).
    pub runs: bool,
    pub inputs: Vec<InputPrediction>,
}

/// The prediction of a whole run, tasks in model order.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub tasks: Vec<TaskPrediction>,
    /// Runs of history the prediction was made from.
    pub history_runs: usize,
}

impl Prediction {
    /// The times in the form the store and `analyze` use.
    pub fn times(&self) -> Vec<TaskTimes> {
        self.tasks
            .iter()
            .map(|t| TaskTimes {
                start_s: t.start_s,
                end_s: t.end_s,
            })
            .collect()
    }

    pub fn makespan_s(&self) -> f64 {
        self.tasks.iter().map(|t| t.end_s).fold(0.0, f64::max)
    }
}

/// Known sizes of external inputs, by URI (what `--probe-sizes` stored).
pub type InputSizes = HashMap<String, u64>;

/// The parameters `task` will run with: the pipeline's, overlaid with its own.
pub fn task_parameters(
    pipeline: &Pipeline,
    task: &Task,
) -> std::collections::BTreeMap<String, String> {
    let mut p = pipeline.parameters.clone();
    p.extend(task.params.iter().map(|(k, v)| (k.clone(), v.clone())));
    p
}

/// Predict a run of `pipeline` from `history` and the known input sizes.
pub fn predict(
    pipeline: &Pipeline,
    dag: &Dag,
    history: &PipelineHistory,
    sizes: &InputSizes,
    config: &EstimatorConfig,
) -> Prediction {
    let empty: Vec<TaskSample> = Vec::new();
    let index: HashMap<&str, usize> = pipeline
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut input_sizes: Vec<Vec<Option<u64>>> = Vec::with_capacity(pipeline.tasks.len());
    let mut estimates = Vec::with_capacity(pipeline.tasks.len());
    for (i, task) in pipeline.tasks.iter().enumerate() {
        let task_sizes: Vec<Option<u64>> = task
            .inputs
            .iter()
            .map(|input| input_size(input.source.as_deref(), sizes, &index, history))
            .collect();
        let known: Vec<u64> = task_sizes.iter().flatten().copied().collect();
        let context = TaskContext {
            parameters: task_parameters(pipeline, task),
            input_bytes: (!known.is_empty())
                .then(|| known.iter().fold(0u64, |a, b| a.saturating_add(*b))),
        };
        let samples = history.tasks.get(i).unwrap_or(&empty);
        estimates.push(estimate(task, &context, samples, config));
        input_sizes.push(task_sizes);
    }
    let times = drawn_times(pipeline, dag, &estimates).unwrap_or_else(|| {
        // Nothing varies: one layout of the estimates.
        let loads: Vec<TaskLoad> = estimates
            .iter()
            .map(|e| TaskLoad {
                instance_s: if runs(e) {
                    e.expected_instance_s()
                } else {
                    0.0
                },
                instances: e.instances,
            })
            .collect();
        simulate(pipeline, dag, &loads)
    });
    let tasks = pipeline
        .tasks
        .iter()
        .zip(estimates)
        .zip(times)
        .zip(input_sizes)
        .map(|(((task, estimate), t), sizes)| TaskPrediction {
            task: task.id.clone(),
            gpus: task.gpus,
            start_s: t.start_s,
            end_s: t.end_s,
            runs: runs(&estimate),
            estimate,
            inputs: task
                .inputs
                .iter()
                .zip(sizes)
                .map(|(input, size_bytes)| InputPrediction {
                    name: input.name.clone(),
                    uri: input.source.clone(),
                    size_bytes,
                    needed_by_s: t.start_s,
                })
                .collect(),
        })
        .collect();
    Prediction {
        tasks,
        history_runs: history.runs,
    }
}

fn runs(e: &DurationEstimate) -> bool {
    e.run_probability >= 0.5
}

/// How many runs a prediction draws for a pipeline of `tasks` tasks: 101 up to about 2 000
/// tasks, then fewer (at least 11) so that a prediction stays within some 200 000 simulated
/// tasks. Always odd, so that the median is one of the draws.
pub fn draws(tasks: usize) -> usize {
    (200_000 / tasks.max(1)).clamp(11, 101) | 1
}

/// A standard normal deviate (Box–Muller).
pub(crate) fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Each task's median start and end over runs drawn from the estimates (see the module
/// documentation); `None` when nothing in them varies, and the single layout is the answer.
fn drawn_times(
    pipeline: &Pipeline,
    dag: &Dag,
    estimates: &[DurationEstimate],
) -> Option<Vec<TaskTimes>> {
    let varies = estimates.iter().any(|e| {
        e.log_sigma > 0.0
            || (e.failure_rate > 0.0 && e.retry_limit > 0)
            || (e.run_probability > 0.0 && e.run_probability < 1.0)
            || e.instance_counts.windows(2).any(|w| w[0] != w[1])
    });
    if !varies {
        return None;
    }
    let n = pipeline.tasks.len();
    let count = draws(n);
    let mut rng = StdRng::seed_from_u64(0x006b_6663_6163_6865);
    let mut starts: Vec<Vec<f64>> = (0..n).map(|_| Vec::with_capacity(count)).collect();
    let mut ends: Vec<Vec<f64>> = (0..n).map(|_| Vec::with_capacity(count)).collect();
    for _ in 0..count {
        let durations: Vec<Vec<f64>> = estimates.iter().map(|e| draw(e, &mut rng)).collect();
        for (i, t) in simulate_instances(pipeline, dag, &durations)
            .into_iter()
            .enumerate()
        {
            starts[i].push(t.start_s);
            ends[i].push(t.end_s);
        }
    }
    let middle = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    Some(
        starts
            .iter_mut()
            .zip(ends.iter_mut())
            .map(|(s, e)| TaskTimes {
                start_s: middle(s),
                end_s: middle(e),
            })
            .collect(),
    )
}

/// One draw of one task: the seconds each of its instances occupies (none when its branch
/// is skipped).
fn draw(e: &DurationEstimate, rng: &mut StdRng) -> Vec<f64> {
    if !rng.gen_bool(e.run_probability.clamp(0.0, 1.0)) {
        return Vec::new();
    }
    let instances = if e.instance_counts.is_empty() {
        e.instances
    } else {
        e.instance_counts[rng.gen_range(0..e.instance_counts.len())]
    };
    let failure_rate = e.failure_rate.clamp(0.0, 0.95);
    (0..instances)
        .map(|_| {
            let mut seconds = e.duration_s * (e.log_sigma * standard_normal(rng)).exp();
            let mut failures = 0;
            while failures < e.retry_limit && rng.gen_bool(failure_rate) {
                seconds += e.failed_attempt_s;
                failures += 1;
            }
            seconds.max(0.0)
        })
        .collect()
}

/// The size of one input: a stored size, or for `task://producer/artifact` the median size
/// the producer wrote in recent runs.
fn input_size(
    uri: Option<&str>,
    sizes: &InputSizes,
    index: &HashMap<&str, usize>,
    history: &PipelineHistory,
) -> Option<u64> {
    let uri = uri?;
    if let Some(size) = sizes.get(uri) {
        return Some(*size);
    }
    let (producer, artifact) = uri.strip_prefix(TASK_URI_SCHEME)?.rsplit_once('/')?;
    let samples = history.tasks.get(*index.get(producer)?)?;
    let seen: Vec<f64> = samples
        .iter()
        .rev()
        .take(12)
        .filter_map(|s| match s {
            TaskSample::Ran(r) => r.output_bytes.get(artifact).map(|b| *b as f64),
            TaskSample::Skipped => None,
        })
        .collect();
    median(&seen).map(|m| m.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::RanSample;
    use kfcache_parser::TaskKind;

    /// `train` (retries 2) then `deploy`.
    fn pipeline() -> Pipeline {
        let mut train = Task::new("train", "train", TaskKind::Container);
        train.retries = 2;
        let mut deploy = Task::new("deploy", "deploy", TaskKind::Container);
        deploy.depends_on = vec!["train".into()];
        Pipeline::workflow("p", vec![train, deploy])
    }

    fn ran(seconds: f64, failed: &[f64]) -> TaskSample {
        TaskSample::Ran(RanSample {
            instance_durations: vec![seconds],
            instances: 1,
            attempts: 1 + failed.len() as u32,
            failed_attempts: failed.len() as u32,
            failed_durations: failed.to_vec(),
            ..RanSample::default()
        })
    }

    #[test]
    fn a_rare_retry_does_not_delay_the_typical_run() {
        let p = pipeline();
        let dag = Dag::build(&p).expect("dag");
        // Ten runs of about 100 s; one of them had a failed attempt of 80 s first.
        let train: Vec<TaskSample> = (0..10)
            .map(|k| {
                let failed: &[f64] = if k == 4 { &[80.0] } else { &[] };
                ran(95.0 + k as f64, failed)
            })
            .collect();
        let history = PipelineHistory {
            tasks: vec![train, (0..10).map(|_| ran(10.0, &[])).collect()],
            runs: 10,
        };
        let config = EstimatorConfig::default();
        let prediction = predict(&p, &dag, &history, &InputSizes::new(), &config);
        let train = &prediction.tasks[0];
        assert!(
            train.estimate.retry_s > 0.0,
            "the expected cost is reported"
        );
        assert!(train.estimate.log_sigma > 0.0);
        let deploy = &prediction.tasks[1];
        // Most runs have no retry: deploy typically starts when one ~100 s attempt ends,
        // not 100 s + the expected retry cost, and never before train ends.
        assert!(
            (90.0..=110.0).contains(&deploy.start_s),
            "deploy starts at {}",
            deploy.start_s
        );
        assert!(deploy.start_s >= train.end_s);
        // The draws come from a fixed seed: the same history predicts the same times.
        let again = predict(&p, &dag, &history, &InputSizes::new(), &config);
        assert_eq!(prediction, again);
    }

    #[test]
    fn without_spread_the_single_layout_is_the_prediction() {
        let p = pipeline();
        let dag = Dag::build(&p).expect("dag");
        let history = PipelineHistory {
            tasks: vec![
                (0..3).map(|_| ran(100.0, &[])).collect(),
                (0..3).map(|_| ran(10.0, &[])).collect(),
            ],
            runs: 3,
        };
        let prediction = predict(
            &p,
            &dag,
            &history,
            &InputSizes::new(),
            &EstimatorConfig::default(),
        );
        assert_eq!(prediction.tasks[1].start_s, 100.0);
        assert_eq!(prediction.tasks[1].end_s, 110.0);
    }

    #[test]
    fn draws_stay_odd_and_bounded() {
        assert_eq!(draws(10), 101);
        assert_eq!(draws(10_000), 21);
        assert_eq!(draws(1_000_000), 11);
        assert!((1..50_000).step_by(997).all(|n| draws(n) % 2 == 1));
    }
}
