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
//!
//! **The floor.** The model's own randomness (the noise, retries, skipped branches, loop
//! counts) puts a floor under any predictor's error: a task whose only predecessor has
//! log-normal noise of `J = 0.15` is off by `E|e^{0.15 z} − 1| ≈ 0.12` on average even when
//! predicted perfectly. The backtest measures that floor beside the two predictors: an
//! *oracle* that knows the model (base durations, branch probabilities, failure rate, loop
//! counts and the run's parameters) but not the run's own draws predicts each task's start as
//! the value that minimises its expected absolute percentage error over 400 runs drawn from
//! the model. No predictor that learns from history can beat it on average.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use kfcache_parser::{Dag, FanOut, Pipeline};
use kfcache_schema::{ObservationSource, RunObservation, TaskObservation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::duration::{counts_work, EstimatorConfig, PriorConfig};
use crate::history::{median, PipelineHistory};
use crate::predict::{predict, standard_normal, task_parameters, InputSizes};
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
    /// Runs the oracle draws from the model per backtested run.
    pub oracle_samples: usize,
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
            oracle_samples: 400,
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
    /// The same for a predictor that knows the history model itself (see `oracle_starts`):
    /// the floor that the model's own randomness puts under any predictor's error.
    pub oracle_mape: f64,
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
    /// Per task: how much the run's work parameters scale its duration.
    pub scale: Vec<f64>,
}

/// What happens to one run's tasks: per task, per instance, the failed attempts' durations
/// and the successful one's; `None` for a task whose branch was skipped.
type RunDraw = Vec<Option<Vec<(Vec<f64>, f64)>>>;

/// The history model of one pipeline (see the module documentation): everything drawn once
/// per pipeline, from which runs are then drawn.
#[derive(Debug, Clone)]
struct HistoryModel {
    /// Per task: base duration in seconds.
    base: Vec<f64>,
    /// Per task: the probability that its branch runs.
    run_probability: Vec<f64>,
    /// Per task: the base instance count of a dynamic loop.
    dynamic_count: Vec<u32>,
    /// Work-counting numeric parameters: (task index, parameter, original value).
    work: Vec<(usize, String, f64)>,
}

impl HistoryModel {
    fn draw(pipeline: &Pipeline, rng: &mut StdRng) -> HistoryModel {
        let prior = PriorConfig::default();
        let n = pipeline.tasks.len();
        let base = pipeline
            .tasks
            .iter()
            .map(|t| prior.compute_s(t).max(5.0) * rng.gen_range(0.5..2.0))
            .collect();
        let run_probability = pipeline
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
        let dynamic_count = (0..n).map(|_| rng.gen_range(2..=8)).collect();
        let work = pipeline
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
        HistoryModel {
            base,
            run_probability,
            dynamic_count,
            work,
        }
    }

    /// Draw what happens to every task of one run whose durations scale by `scale`.
    fn draw_run(
        &self,
        pipeline: &Pipeline,
        scale: &[f64],
        config: &BacktestConfig,
        rng: &mut StdRng,
    ) -> RunDraw {
        pipeline
            .tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                if !rng.gen_bool(self.run_probability[i].clamp(0.0, 1.0)) {
                    return None;
                }
                let instances = match task.fan_out {
                    None => 1,
                    Some(FanOut::Count(c)) => c,
                    Some(FanOut::Dynamic) => self.dynamic_count[i] + rng.gen_range(0..=2),
                };
                let per_instance = (0..instances)
                    .map(|_| {
                        let d =
                            self.base[i] * scale[i] * (config.jitter * standard_normal(rng)).exp()
                                + 2.0;
                        let mut failed = Vec::new();
                        while (failed.len() as u32) < task.retries
                            && rng.gen_bool(config.failure_rate)
                        {
                            failed.push(d * rng.gen_range(0.1..0.9));
                        }
                        (failed, d)
                    })
                    .collect();
                Some(per_instance)
            })
            .collect()
    }
}

/// Each instance's total time (failed attempts included), as the simulation takes it.
fn instance_durations(draw: &RunDraw) -> Vec<Vec<f64>> {
    draw.iter()
        .map(|task| {
            task.iter()
                .flatten()
                .map(|(failed, ok)| failed.iter().sum::<f64>() + ok)
                .collect()
        })
        .collect()
}

/// Generate `config.runs` runs of `pipeline` following the model above.
pub fn synthetic_history(
    pipeline: &Pipeline,
    dag: &Dag,
    config: &BacktestConfig,
) -> Vec<SyntheticRun> {
    synthetic(pipeline, dag, config).1
}

/// The model drawn for `pipeline` and the runs drawn from it.
fn synthetic(
    pipeline: &Pipeline,
    dag: &Dag,
    config: &BacktestConfig,
) -> (HistoryModel, Vec<SyntheticRun>) {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let model = HistoryModel::draw(pipeline, &mut rng);
    let n = pipeline.tasks.len();
    let mut current: Vec<f64> = model.work.iter().map(|w| w.2).collect();
    let start: DateTime<Utc> = DateTime::from_timestamp(1_714_960_800, 0).unwrap_or_default();

    let mut runs = Vec::with_capacity(config.runs);
    for r in 0..config.runs {
        if r > 0 && !model.work.is_empty() && rng.gen_bool(config.parameter_change_rate) {
            let w = rng.gen_range(0..model.work.len());
            let factor = [0.5, 2.0 / 3.0, 1.5, 2.0][rng.gen_range(0..4)];
            current[w] = (current[w] * factor).round().max(1.0);
        }
        let mut run_pipeline = pipeline.clone();
        let mut scale = vec![1.0; n];
        for (w, (i, key, original)) in model.work.iter().enumerate() {
            run_pipeline.tasks[*i]
                .params
                .insert(key.clone(), format_number(current[w]));
            scale[*i] *= current[w] / original;
        }

        let run_start = start + Duration::days(r as i64);
        let draw = model.draw_run(pipeline, &scale, config, &mut rng);
        let times = simulate_instances(&run_pipeline, dag, &instance_durations(&draw));
        let at = |s: f64| run_start + Duration::milliseconds((s * 1000.0).round() as i64);
        let mut tasks = Vec::new();
        for (i, task) in run_pipeline.tasks.iter().enumerate() {
            let parameters = task.params.clone();
            let Some(attempts) = &draw[i] else {
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
            };
            let looped = task.fan_out.is_some();
            for (k, (failed, ok)) in attempts.iter().enumerate() {
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
                .zip(&draw)
                .map(|(t, d)| d.as_ref().map(|_| t.start_s))
                .collect(),
            pipeline: run_pipeline,
            scale,
        });
    }
    (model, runs)
}

/// The best start offsets any predictor could give for one run, knowing the history model
/// itself (every base duration, branch probability, failure rate and the run's parameters)
/// but not the run's own noise: per task, the value that minimises the expected absolute
/// percentage error over `samples` runs drawn from the model, which is the median of the
/// task's start offsets weighted by their inverses. Tasks that never started after 0 get
/// `None`.
fn oracle_starts(
    model: &HistoryModel,
    run: &SyntheticRun,
    dag: &Dag,
    config: &BacktestConfig,
    samples: usize,
    rng: &mut StdRng,
) -> Vec<Option<f64>> {
    let n = run.pipeline.tasks.len();
    let mut offsets: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); n];
    for _ in 0..samples {
        let draw = model.draw_run(&run.pipeline, &run.scale, config, rng);
        let times = simulate_instances(&run.pipeline, dag, &instance_durations(&draw));
        for (i, (t, d)) in times.iter().zip(&draw).enumerate() {
            if d.is_some() && t.start_s > 0.0 {
                offsets[i].push(t.start_s);
            }
        }
    }
    offsets
        .into_iter()
        .map(|mut xs| {
            xs.sort_by(f64::total_cmp);
            let half = xs.iter().map(|x| 1.0 / x).sum::<f64>() / 2.0;
            let mut acc = 0.0;
            xs.iter().copied().find(|x| {
                acc += 1.0 / x;
                acc >= half
            })
        })
        .collect()
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
    let (model, runs) = synthetic(pipeline, dag, config);
    let estimator = EstimatorConfig::default();
    let observations: Vec<RunObservation> = runs.iter().map(|r| r.observation.clone()).collect();
    // The oracle's own draws, apart from the history's so that the history stays as it is.
    let mut oracle_rng = StdRng::seed_from_u64(config.seed ^ 0x6f72_6163_6c65);
    let (mut ours, mut theirs, mut floor, mut count, mut backtested) =
        (0.0, 0.0, 0.0, 0usize, 0usize);
    for (k, run) in runs.iter().enumerate().skip(config.min_history.max(1)) {
        let earlier = &observations[..k];
        let history = PipelineHistory::build(&run.pipeline, earlier);
        let prediction = predict(&run.pipeline, dag, &history, &InputSizes::new(), &estimator);
        let baseline = simulate_instances(
            &run.pipeline,
            dag,
            &last_run_durations(&run.pipeline, earlier),
        );
        let oracle = oracle_starts(
            &model,
            run,
            dag,
            config,
            config.oracle_samples,
            &mut oracle_rng,
        );
        let mut compared = 0;
        for (i, actual) in run.starts.iter().enumerate() {
            let Some(actual) = *actual else { continue };
            if actual <= 0.0 {
                continue;
            }
            ours += (prediction.tasks[i].start_s - actual).abs() / actual;
            theirs += (baseline[i].start_s - actual).abs() / actual;
            // A task that started after 0 in this run did in some of the oracle's draws,
            // unless the draws missed a rare case; the oracle then predicts 0 (error 1).
            floor += oracle[i].map_or(1.0, |o| (o - actual).abs() / actual);
            compared += 1;
        }
        count += compared;
        backtested += 1;
    }
    let mape = |sum: f64| if count == 0 { 0.0 } else { sum / count as f64 };
    BacktestReport {
        kfcache_mape: mape(ours),
        last_run_mape: mape(theirs),
        oracle_mape: mape(floor),
        runs: backtested,
        tasks: count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfcache_parser::{Task, TaskKind};

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
        Pipeline::workflow("chain", tasks)
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
        // The oracle knows the model, so no predictor learning from history does better.
        assert!(report.oracle_mape > 0.0, "{report:?}");
        assert!(report.oracle_mape <= report.kfcache_mape, "{report:?}");
    }

    #[test]
    fn without_randomness_the_floor_and_the_predictor_are_exact() {
        let mut p = chain();
        p.tasks[0].fan_out = None;
        p.tasks[2].condition = None;
        let dag = Dag::build(&p).expect("dag");
        let report = backtest(
            &p,
            &dag,
            &BacktestConfig {
                runs: 8,
                jitter: 0.0,
                parameter_change_rate: 0.0,
                failure_rate: 0.0,
                oracle_samples: 20,
                ..BacktestConfig::default()
            },
        );
        assert_eq!(report.runs, 5);
        assert_eq!(
            report.tasks,
            5 * 3,
            "train, deploy and notify start after 0"
        );
        assert!(report.oracle_mape < 1e-9, "{report:?}");
        assert!(report.kfcache_mape < 1e-3, "{report:?}");
    }
}
