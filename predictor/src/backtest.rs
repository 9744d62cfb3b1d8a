//! Measuring the predictor on synthetic history (`kfcache bench predict`).
//!
//! **The history model.** Each task gets a base duration: its prior (the per-kind default)
//! times a factor drawn once from [0.5, 2]. Run after run:
//! - *Noise*: every instance's duration is multiplied by `exp(J·z)`, `z` standard normal —
//!   log-normal noise of relative size `J` (`--jitter`), plus 2 s of pod start-up.
//! - *Parameter changes*: with probability 0.15 per run, one work-counting parameter of one
//!   task (`epochs`, `steps`, … — see [`counts_work`]) is scaled by ½, ⅔, 1.5 or 2 and keeps
//!   its new value in later runs; the task's duration scales with it (linearly). The run's
//!   pipeline carries the new value, as the YAML submitted for it would.
//! - *Retries*: an attempt of a task with a retry limit fails with probability 0.08, after
//!   10–90 % of its duration, and is retried (up to the limit) in the same slot.
//! - *Branches*: a task with a `when` condition runs with a per-task probability drawn once
//!   from [0.7, 0.95]; when it is skipped it takes no time and its dependents go ahead (as for
//!   `depends` on `.Succeeded || .Skipped`).
//! - *Dynamic loops*: a `withParam` loop runs a per-task base count (2–8) plus 0–2 instances.
//!
//! What really happened in a run is the list-scheduling simulation of those durations (with
//! the pipeline's parallelism limits). The observations handed to the predictor are exactly
//! what an Argo import yields: per instance and attempt, start, finish, phase and parameters.
//!
//! **The backtest.** For each run with at least [`BacktestConfig::min_history`] earlier runs,
//! predict its task start offsets from the earlier runs only and take the absolute percentage
//! error against the simulated truth, over the tasks that ran and did not start at 0. The
//! baseline is Argo's own rule: every task takes what it took in the most recent run where it
//! ran (retries included), laid out by the same simulation.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use kfcache_parser::{Dag, FanOut, Pipeline};
use kfcache_schema::{ObservationSource, RunObservation, TaskObservation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::duration::{counts_work, EstimatorConfig, PriorConfig};
use crate::history::{median, PipelineHistory};
use crate::predict::{predict, task_parameters, InputSizes};
use crate::simulate::simulate_instances;

/// Settings of a backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestConfig {
    pub runs: usize,
    /// Relative size `J` of the log-normal noise.
    pub jitter: f64,
    pub seed: u64,
    /// Earlier runs a run needs to be backtested.
    pub min_history: usize,
    pub parameter_change_rate: f64,
    pub failure_rate: f64,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        BacktestConfig {
            runs: 20,
            jitter: 0.15,
            seed: 1,
            min_history: 3,
            parameter_change_rate: 0.15,
            failure_rate: 0.08,
        }
    }
}

/// What the backtest measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestReport {
    /// Mean absolute percentage error of kfcache's predicted start offsets.
    pub kfcache_mape: f64,
    /// The same for Argo's last-run rule.
    pub last_run_mape: f64,
    /// Runs backtested.
    pub runs: usize,
    /// Task starts compared.
    pub tasks: usize,
}

impl BacktestReport {
    /// The machine-readable summary line.
    pub fn line(&self) -> String {
        format!(
            "predict-backtest: kfcache_mape={:.4} last_run_mape={:.4} runs={} tasks={}",
            self.kfcache_mape, self.last_run_mape, self.runs, self.tasks
        )
    }
}

/// One synthetic run: the pipeline as submitted, what was observed, and the true start
/// offsets (`None` for tasks that were skipped).
#[derive(Debug, Clone)]
pub struct SyntheticRun {
    pub pipeline: Pipeline,
    pub observation: RunObservation,
    pub starts: Vec<Option<f64>>,
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Generate `config.runs` runs of `pipeline` following the model above.
pub fn synthetic_history(
    pipeline: &Pipeline,
    dag: &Dag,
    config: &BacktestConfig,
) -> Vec<SyntheticRun> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let prior = PriorConfig::default();
    let n = pipeline.tasks.len();
    let base: Vec<f64> = pipeline
        .tasks
        .iter()
        .map(|t| prior.compute_s(t).max(5.0) * rng.gen_range(0.5..2.0))
        .collect();
    let run_probability: Vec<f64> = pipeline
        .tasks
        .iter()
        .map(|t| {
            if t.condition.is_some() {
                rng.gen_range(0.7..0.95)
            } else {
                1.0
            }
        })
        .collect();
    let dynamic_count: Vec<u32> = (0..n).map(|_| rng.gen_range(2..=8)).collect();
    // Work-counting numeric parameters of each task, with their original values.
    let work: Vec<(usize, String, f64)> = pipeline
        .tasks
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            task_parameters(pipeline, t)
                .into_iter()
                .filter(|(k, _)| counts_work(k))
                .filter_map(move |(k, v)| {
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| *v > 0.0)
                        .map(|v| (i, k, v))
                })
        })
        .collect();
    let mut current: Vec<f64> = work.iter().map(|w| w.2).collect();
    let start: DateTime<Utc> = DateTime::from_timestamp(1_714_960_800, 0).unwrap_or_default();

    let mut runs = Vec::with_capacity(config.runs);
    for r in 0..config.runs {
        if r > 0 && !work.is_empty() && rng.gen_bool(config.parameter_change_rate) {
            let w = rng.gen_range(0..work.len());
            let factor = [0.5, 2.0 / 3.0, 1.5, 2.0][rng.gen_range(0..4)];
            current[w] = (current[w] * factor).round().max(1.0);
        }
        let mut run_pipeline = pipeline.clone();
        let mut scale = vec![1.0; n];
        for (w, (i, key, original)) in work.iter().enumerate() {
            run_pipeline.tasks[*i]
                .params
                .insert(key.clone(), format_number(current[w]));
            scale[*i] *= current[w] / original;
        }

        let run_start = start + Duration::days(r as i64);
        let mut durations: Vec<Vec<f64>> = Vec::with_capacity(n);
        // Per task, per instance: (failed attempt durations, successful duration).
        let mut attempts: Vec<Vec<(Vec<f64>, f64)>> = Vec::with_capacity(n);
        let mut skipped = vec![false; n];
        for (i, task) in pipeline.tasks.iter().enumerate() {
            if rng.gen_bool(run_probability[i].clamp(0.0, 1.0)) {
                let instances = match task.fan_out {
                    None => 1,
                    Some(FanOut::Count(c)) => c,
                    Some(FanOut::Dynamic) => dynamic_count[i] + rng.gen_range(0..=2),
                };
                let mut total = Vec::with_capacity(instances as usize);
                let mut per_instance = Vec::with_capacity(instances as usize);
                for _ in 0..instances {
                    let d = base[i] * scale[i] * (config.jitter * normal(&mut rng)).exp() + 2.0;
                    let mut failed = Vec::new();
                    while (failed.len() as u32) < task.retries && rng.gen_bool(config.failure_rate)
                    {
                        failed.push(d * rng.gen_range(0.1..0.9));
                    }
                    total.push(failed.iter().sum::<f64>() + d);
                    per_instance.push((failed, d));
                }
                durations.push(total);
                attempts.push(per_instance);
            } else {
                skipped[i] = true;
                durations.push(Vec::new());
                attempts.push(Vec::new());
            }
        }
        let times = simulate_instances(&run_pipeline, dag, &durations);
        let at = |s: f64| run_start + Duration::milliseconds((s * 1000.0).round() as i64);
        let mut tasks = Vec::new();
        for (i, task) in run_pipeline.tasks.iter().enumerate() {
            let parameters = task.params.clone();
            if skipped[i] {
                tasks.push(TaskObservation {
                    task_key: task.id.clone(),
                    started_at: Some(at(times[i].start_s)),
                    finished_at: Some(at(times[i].start_s)),
                    phase: Some("Skipped".into()),
                    template: Some(task.template.clone()),
                    source: ObservationSource::Argo,
                    ..TaskObservation::default()
                });
                continue;
            }
            let looped = task.fan_out.is_some();
            for (k, (failed, ok)) in attempts[i].iter().enumerate() {
                let instance = if looped {
                    format!("{k}:item-{k}")
                } else {
                    String::new()
                };
                let mut t = times[i].start_s;
                for (attempt, f) in failed.iter().chain(std::iter::once(ok)).enumerate() {
                    let succeeded = attempt == failed.len();
                    tasks.push(TaskObservation {
                        task_key: task.id.clone(),
                        instance: instance.clone(),
                        attempt: attempt as u32,
                        started_at: Some(at(t)),
                        finished_at: Some(at(t + f)),
                        phase: Some(if succeeded { "Succeeded" } else { "Failed" }.into()),
                        template: Some(task.template.clone()),
                        parameters: parameters.clone(),
                        source: ObservationSource::Argo,
                        ..TaskObservation::default()
                    });
                    t += f;
                }
            }
        }
        let end = times.iter().map(|t| t.end_s).fold(0.0, f64::max);
        runs.push(SyntheticRun {
            observation: RunObservation {
                name: format!("{}-{:05}", pipeline.name, r),
                pipeline_name: pipeline.name.clone(),
                started_at: Some(run_start),
                finished_at: Some(at(end)),
                phase: Some("Succeeded".into()),
                parameters: run_pipeline.parameters.clone(),
                source: ObservationSource::Argo,
                tasks,
                ..RunObservation::default()
            },
            starts: times
                .iter()
                .zip(&skipped)
                .map(|(t, s)| (!s).then_some(t.start_s))
                .collect(),
            pipeline: run_pipeline,
        });
    }
    runs
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Argo's rule: each task's time in the most recent run where it ran (retries included),
/// each instance as long as that run's median instance; the prior where it never ran.
fn last_run_durations(pipeline: &Pipeline, history: &[RunObservation]) -> Vec<Vec<f64>> {
    let prior = PriorConfig::default();
    pipeline
        .tasks
        .iter()
        .map(|task| {
            for run in history.iter().rev() {
                let mut per_instance: BTreeMap<&str, f64> = BTreeMap::new();
                for obs in run
                    .tasks
                    .iter()
                    .filter(|o| o.task_key == task.id && !o.skipped())
                {
                    *per_instance.entry(obs.instance.as_str()).or_default() +=
                        obs.duration_s().unwrap_or(0.0);
                }
                if !per_instance.is_empty() {
                    let values: Vec<f64> = per_instance.values().copied().collect();
                    let d = median(&values).unwrap_or(0.0);
                    let count = match task.fan_out {
                        Some(FanOut::Count(c)) => c as usize,
                        _ => values.len(),
                    };
                    return vec![d; count];
                }
            }
            vec![prior.compute_s(task)]
        })
        .collect()
}

/// Backtest the predictor on synthetic history of `pipeline`.
pub fn backtest(pipeline: &Pipeline, dag: &Dag, config: &BacktestConfig) -> BacktestReport {
    let runs = synthetic_history(pipeline, dag, config);
    let estimator = EstimatorConfig::default();
    let observations: Vec<RunObservation> = runs.iter().map(|r| r.observation.clone()).collect();
    let (mut ours, mut theirs, mut count, mut backtested) = (0.0, 0.0, 0usize, 0usize);
    for (k, run) in runs.iter().enumerate().skip(config.min_history.max(1)) {
        let earlier = &observations[..k];
        let history = PipelineHistory::build(&run.pipeline, earlier);
        let prediction = predict(&run.pipeline, dag, &history, &InputSizes::new(), &estimator);
        let baseline = simulate_instances(
            &run.pipeline,
            dag,
            &last_run_durations(&run.pipeline, earlier),
        );
        let mut compared = 0;
        for (i, actual) in run.starts.iter().enumerate() {
            let Some(actual) = *actual else { continue };
            if actual <= 0.0 {
                continue;
            }
            ours += (prediction.tasks[i].start_s - actual).abs() / actual;
            theirs += (baseline[i].start_s - actual).abs() / actual;
            compared += 1;
        }
        count += compared;
        backtested += 1;
    }
    let mape = |sum: f64| if count == 0 { 0.0 } else { sum / count as f64 };
    BacktestReport {
        kfcache_mape: mape(ours),
        last_run_mape: mape(theirs),
        runs: backtested,
        tasks: count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfcache_parser::{PipelineKind, Task, TaskKind};

    fn chain() -> Pipeline {
        let mut tasks = Vec::new();
        let mut prep = Task::new("prep", "prep", TaskKind::Container);
        prep.fan_out = Some(FanOut::Dynamic);
        tasks.push(prep);
        let mut train = Task::new("train", "train", TaskKind::Container);
        train.gpus = 1;
        train.retries = 2;
        train.depends_on = vec!["prep".into()];
        train.params.insert("epochs".into(), "10".into());
        tasks.push(train);
        let mut deploy = Task::new("deploy", "deploy", TaskKind::Container);
        deploy.depends_on = vec!["train".into()];
        deploy.condition = Some("x == y".into());
        tasks.push(deploy);
        let mut notify = Task::new("notify", "notify", TaskKind::Container);
        notify.depends_on = vec!["deploy".into()];
        tasks.push(notify);
        Pipeline {
            name: "chain".into(),
            kind: PipelineKind::Workflow,
            schedules: vec![],
            timezone: None,
            source: "chain.yaml".into(),
            line: None,
            parameters: Default::default(),
            parallelism: None,
            tasks,
        }
    }

    #[test]
    fn synthetic_history_is_reproducible_and_observed_like_argo() {
        let p = chain();
        let dag = Dag::build(&p).expect("dag");
        let config = BacktestConfig {
            runs: 6,
            ..BacktestConfig::default()
        };
        let a = synthetic_history(&p, &dag, &config);
        let b = synthetic_history(&p, &dag, &config);
        assert_eq!(a.len(), 6);
        assert_eq!(
            a[5].observation, b[5].observation,
            "same seed, same history"
        );
        let history = PipelineHistory::build(
            &p,
            &a.iter().map(|r| r.observation.clone()).collect::<Vec<_>>(),
        );
        assert!(
            history.tasks.iter().all(|samples| samples.len() == 6),
            "every task observed in every run"
        );
    }

    #[test]
    fn kfcache_beats_the_last_run_rule() {
        let p = chain();
        let dag = Dag::build(&p).expect("dag");
        let report = backtest(
            &p,
            &dag,
            &BacktestConfig {
                runs: 20,
                seed: 7,
                ..BacktestConfig::default()
            },
        );
        assert_eq!(report.runs, 17);
        assert!(report.tasks > 0);
        assert!(report.kfcache_mape < report.last_run_mape, "{report:?}");
        assert!(report.line().starts_with("predict-backtest: kfcache_mape="));
    }
}
