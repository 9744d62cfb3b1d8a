//! The prediction of one run: every task's duration estimate laid out by the list-scheduling
//! simulation, with each input's size and the time it is needed by (the task's start).
//!
//! A branch that history says runs less than half the time is predicted not to run: its
//! window is empty and its dependents do not wait for it (Argo treats a skipped task as
//! done). Everything else occupies its expected time, retries included.

use std::collections::HashMap;

use kfcache_parser::model::TASK_URI_SCHEME;
use kfcache_parser::schedule::TaskTimes;
use kfcache_parser::{Dag, Pipeline, Task};

use crate::duration::{estimate, DurationEstimate, EstimatorConfig, TaskContext};
use crate::history::{median, PipelineHistory, TaskSample};
use crate::simulate::{simulate, TaskLoad};

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
    let times = simulate(pipeline, dag, &loads);
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
