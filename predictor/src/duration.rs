//! How long one task will take, and why we think so.
//!
//! Three sources, tried in order:
//! 1. **history** — a recency-weighted robust estimate over the task's successful runs (the
//!    last [`EstimatorConfig::window`] runs, weight `recency^age`): Huber's M-estimate of the
//!    centre of the log-durations, started at their weighted median, with the scale taken
//!    from their median absolute deviation. Far runs count only as much as a run `1.345`
//!    deviations away, so the odd slow run that a mean would chase barely moves it, while the
//!    typical runs all count (a plain median uses a few and, with the handful of runs a
//!    pipeline has, is noisier). Logs, because run-to-run noise multiplies. The weights let a
//!    lasting change win within a few runs.
//! 2. **scaled** — the same samples, each first scaled to the parameters the task will run
//!    with: for a numeric parameter (e.g. `epochs`) or the input size that differs from what a
//!    sample ran with, by `(now / then)^α`. α is learned by a log-log fit over the history
//!    when the parameter varied there (and the fit explains the durations); when it never
//!    varied, α is 1 for parameters that count work (`epochs`, `steps`, `iterations`, …) and
//!    for input bytes, and 0 for everything else (a learning rate does not make training
//!    longer).
//! 3. **prior** — input bytes / read bandwidth plus a compute prior per task kind, GPU tasks
//!    having their own; the defaults are the parser's per-kind durations, so a pipeline with
//!    no history and no known sizes keeps the schedule `kfcache analyze` always showed.
//!
//! Retries add their expected cost (`Σ p^k` failed attempts for the observed failure rate `p`,
//! up to the retry limit, each as long as a typical failed attempt); conditions carry the
//! probability that the branch runs (the share of runs where it ran; 1 without history).

use std::collections::{BTreeMap, HashMap};

use kfcache_parser::schedule::default_duration_s;
use kfcache_parser::{FanOut, Task, TaskKind};

use crate::history::{RanSample, TaskSample};

/// Where a duration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurationSource {
    History,
    Scaled,
    Prior,
}

impl DurationSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DurationSource::History => "history",
            DurationSource::Scaled => "scaled",
            DurationSource::Prior => "prior",
        }
    }
}

impl std::fmt::Display for DurationSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prior used when a task has no history.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorConfig {
    /// Bytes per second a task reads its inputs at.
    pub read_bandwidth_bytes_per_s: f64,
    /// Compute seconds per task kind for CPU tasks, overriding the parser's defaults.
    pub compute_s: HashMap<TaskKind, f64>,
    /// The same for GPU tasks.
    pub gpu_compute_s: HashMap<TaskKind, f64>,
}

impl Default for PriorConfig {
    fn default() -> Self {
        PriorConfig {
            // A single pod reading from S3 or NFS: 200 MB/s.
            read_bandwidth_bytes_per_s: 200e6,
            compute_s: HashMap::new(),
            gpu_compute_s: HashMap::new(),
        }
    }
}

impl PriorConfig {
    /// Compute seconds of `task` before reading its inputs.
    pub fn compute_s(&self, task: &Task) -> f64 {
        let table = if task.gpus > 0 {
            &self.gpu_compute_s
        } else {
            &self.compute_s
        };
        table
            .get(&task.kind)
            .copied()
            .unwrap_or_else(|| default_duration_s(task))
    }
}

/// Settings of the estimator.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorConfig {
    /// How many of the most recent runs count.
    pub window: usize,
    /// Weight of a sample `age` runs old: `recency^age`.
    pub recency: f64,
    pub prior: PriorConfig,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            window: 12,
            recency: 0.95,
            prior: PriorConfig::default(),
        }
    }
}

/// What the task will run with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskContext {
    /// Pipeline parameters overlaid with the task's own.
    pub parameters: BTreeMap<String, String>,
    /// Bytes the task reads, when known.
    pub input_bytes: Option<u64>,
}

/// The estimate for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationEstimate {
    /// Seconds one instance takes, retries left out.
    pub duration_s: f64,
    pub source: DurationSource,
    /// Runs the estimate was taken from (0 for the prior).
    pub samples: u32,
    /// Expected seconds per instance lost to failed attempts.
    pub retry_s: f64,
    /// Share of attempts that failed in history.
    pub failure_rate: f64,
    /// Probability that the task runs at all.
    pub run_probability: f64,
    /// Instances it runs (loop fan-out; 1 outside loops).
    pub instances: u32,
    /// How far one instance's duration strays from run to run: the robust standard deviation
    /// of the log-durations (0 without history or without spread).
    pub log_sigma: f64,
    /// Instance counts of a dynamic loop in the runs of the window (empty otherwise).
    pub instance_counts: Vec<u32>,
    /// Seconds a failed attempt typically takes.
    pub failed_attempt_s: f64,
    /// Failed attempts an instance may have (the retry limit, or what history saw).
    pub retry_limit: u32,
}

impl DurationEstimate {
    /// Seconds one instance is expected to occupy, retries included.
    pub fn expected_instance_s(&self) -> f64 {
        self.duration_s + self.retry_s
    }
}

/// Does the parameter name count work, so that twice the value means twice the time?
pub fn counts_work(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    [
        "epoch",
        "step",
        "iteration",
        "iters",
        "max-iter",
        "round",
        "estimators",
        "num-train",
        "trials",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Estimate one task's duration from its history (oldest first) and context.
pub fn estimate(
    task: &Task,
    context: &TaskContext,
    history: &[TaskSample],
    config: &EstimatorConfig,
) -> DurationEstimate {
    let window: Vec<&TaskSample> = history.iter().rev().take(config.window).collect();
    let ran: Vec<&RanSample> = window
        .iter()
        .filter_map(|s| match s {
            TaskSample::Ran(r) => Some(r),
            TaskSample::Skipped => None,
        })
        .collect();
    let skipped = window.len() - ran.len();
    let run_probability = if window.is_empty() {
        1.0
    } else {
        ran.len() as f64 / window.len() as f64
    };
    let _ = skipped;

    let instance_counts: Vec<u32> = match task.fan_out {
        Some(FanOut::Dynamic) => ran.iter().map(|r| r.instances).collect(),
        _ => Vec::new(),
    };
    let instances = match task.fan_out {
        None => 1,
        Some(FanOut::Count(n)) => n,
        Some(FanOut::Dynamic) => {
            let counts: Vec<f64> = instance_counts.iter().map(|c| f64::from(*c)).collect();
            crate::history::median(&counts).map_or(1, |m| m.round().max(0.0) as u32)
        }
    };

    // Most recent first, with their durations.
    let timed: Vec<(&RanSample, f64)> = ran
        .iter()
        .filter_map(|r| r.instance_duration_s().map(|d| (*r, d)))
        .collect();

    let (duration_s, log_sigma, source, samples) = if timed.is_empty() {
        let read_s = context.input_bytes.map_or(0.0, |b| {
            b as f64 / config.prior.read_bandwidth_bytes_per_s.max(1.0)
        });
        (
            config.prior.compute_s(task) + read_s,
            0.0,
            DurationSource::Prior,
            0,
        )
    } else {
        let factors = scale_factors(context, &timed);
        let mut weighted: Vec<(f64, f64)> = timed
            .iter()
            .zip(&factors)
            .enumerate()
            .map(|(age, ((_, d), f))| (d * f, config.recency.powi(age as i32)))
            .collect();
        let (value, log_sigma) = robust_centre(&mut weighted);
        let scaled = factors.iter().any(|f| (f - 1.0).abs() > 0.01);
        let source = if scaled {
            DurationSource::Scaled
        } else {
            DurationSource::History
        };
        (value, log_sigma, source, timed.len() as u32)
    };
    let duration_s = if duration_s.is_finite() {
        duration_s.max(0.0)
    } else {
        0.0
    };

    // Retries.
    let attempts: u32 = ran.iter().map(|r| r.attempts).sum();
    let failed: u32 = ran.iter().map(|r| r.failed_attempts).sum();
    let failure_rate = if attempts == 0 {
        0.0
    } else {
        f64::from(failed) / f64::from(attempts)
    };
    let observed_retries = ran
        .iter()
        .map(|r| r.failed_attempts / r.instances.max(1))
        .max()
        .unwrap_or(0);
    let limit = task.retries.max(observed_retries).min(50);
    let failed_durations: Vec<f64> = ran
        .iter()
        .flat_map(|r| r.failed_durations.iter().copied())
        .collect();
    let failed_attempt_s = crate::history::median(&failed_durations)
        .unwrap_or(duration_s)
        .max(0.0);
    let retry_s = if failed == 0 || limit == 0 {
        0.0
    } else {
        let p = failure_rate.min(0.95);
        let expected_failures: f64 = (1..=limit).map(|k| p.powi(k as i32)).sum();
        expected_failures * failed_attempt_s
    };

    DurationEstimate {
        duration_s,
        source,
        samples,
        retry_s,
        failure_rate,
        run_probability,
        instances,
        log_sigma: if log_sigma.is_finite() {
            log_sigma
        } else {
            0.0
        },
        instance_counts,
        failed_attempt_s,
        retry_limit: limit,
    }
}

/// For each sample, the factor that takes it to the task's current parameters and input size.
fn scale_factors(context: &TaskContext, timed: &[(&RanSample, f64)]) -> Vec<f64> {
    let mut factors = vec![1.0; timed.len()];
    let mut apply =
        |current: f64, observed: &dyn Fn(&RanSample) -> Option<f64>, default_alpha: f64| {
            if current <= 0.0 || !current.is_finite() {
                return;
            }
            let points: Vec<Option<f64>> = timed
                .iter()
                .map(|(r, _)| observed(r).filter(|v| *v > 0.0 && v.is_finite()))
                .collect();
            let differs = points
                .iter()
                .flatten()
                .any(|v| (v / current - 1.0).abs() > 1e-9);
            if !differs {
                return;
            }
            let alpha = learned_exponent(timed, &points).unwrap_or(default_alpha);
            if alpha == 0.0 {
                return;
            }
            for (f, p) in factors.iter_mut().zip(&points) {
                if let Some(p) = p {
                    *f *= (current / p).powf(alpha);
                }
            }
        };
    for (name, value) in &context.parameters {
        let Ok(current) = value.trim().parse::<f64>() else {
            continue;
        };
        let default_alpha = if counts_work(name) { 1.0 } else { 0.0 };
        apply(
            current,
            &|r: &RanSample| {
                r.parameters
                    .get(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            },
            default_alpha,
        );
    }
    if let Some(bytes) = context.input_bytes {
        apply(
            bytes as f64,
            &|r: &RanSample| r.input_bytes.map(|b| b as f64),
            1.0,
        );
    }
    factors
}

/// The slope of log(duration) on log(value) where the history allows a fit: at least three
/// samples over at least two distinct values. A fit that explains little of the variance says
/// the parameter does not matter (0). Clamped to [0, 1.5].
fn learned_exponent(timed: &[(&RanSample, f64)], points: &[Option<f64>]) -> Option<f64> {
    let xy: Vec<(f64, f64)> = timed
        .iter()
        .zip(points)
        .filter_map(|((_, d), p)| Some((p.as_ref()?.ln(), d.max(1e-3).ln())))
        .collect();
    if xy.len() < 3 {
        return None;
    }
    let n = xy.len() as f64;
    let mx = xy.iter().map(|p| p.0).sum::<f64>() / n;
    let my = xy.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let syy: f64 = xy.iter().map(|p| (p.1 - my).powi(2)).sum();
    let sxy: f64 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx < 1e-12 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy < 1e-12 {
        0.0
    } else {
        sxy * sxy / (sxx * syy)
    };
    Some(if r2 < 0.3 { 0.0 } else { slope.clamp(0.0, 1.5) })
}

/// Huber's M-estimate of the centre of weighted positive values, on their logarithms (see the
/// module documentation), and the robust standard deviation of the logarithms it is scaled by
/// (1.4826 × their median absolute deviation). Where the values do not spread or are not all
/// positive: their weighted median, and 0.
fn robust_centre(values: &mut [(f64, f64)]) -> (f64, f64) {
    /// Huber's tuning constant: 95 % of the mean's efficiency under normal noise.
    const K: f64 = 1.345;
    if !values.iter().all(|(v, _)| v.is_finite() && *v > 0.0) {
        return (weighted_median(values), 0.0);
    }
    let mut logs: Vec<(f64, f64)> = values.iter().map(|(v, w)| (v.ln(), *w)).collect();
    let mut centre = weighted_median(&mut logs);
    let mut deviations: Vec<(f64, f64)> =
        logs.iter().map(|(x, w)| ((x - centre).abs(), *w)).collect();
    // The median absolute deviation, scaled to estimate a normal distribution's σ.
    let sigma = 1.4826 * weighted_median(&mut deviations);
    if sigma.is_nan() || sigma <= 1e-9 {
        return (weighted_median(values), 0.0);
    }
    let bound = K * sigma;
    for _ in 0..50 {
        let (mut sum, mut total) = (0.0, 0.0);
        for (x, w) in &logs {
            let distance = (x - centre).abs();
            let h = if distance <= bound {
                1.0
            } else {
                bound / distance
            };
            sum += w * h * x;
            total += w * h;
        }
        let next = sum / total;
        let done = (next - centre).abs() < 1e-10;
        centre = next;
        if done {
            break;
        }
    }
    (centre.exp(), sigma)
}

/// The weighted median of `(value, weight)` pairs.
fn weighted_median(values: &mut [(f64, f64)]) -> f64 {
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = values.iter().map(|v| v.1).sum();
    let mut acc = 0.0;
    for (i, (v, w)) in values.iter().enumerate() {
        acc += w;
        if acc >= total / 2.0 {
            // Exactly half: average with the next value, as the plain median does.
            if (acc - total / 2.0).abs() < 1e-12 {
                if let Some((next, _)) = values.get(i + 1) {
                    return (v + next) / 2.0;
                }
            }
            return *v;
        }
    }
    values.last().map_or(0.0, |v| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(gpus: u32) -> Task {
        let mut t = Task::new("train", "train", TaskKind::Container);
        t.gpus = gpus;
        t
    }

    fn ran(d: f64, epochs: &str) -> TaskSample {
        TaskSample::Ran(RanSample {
            instance_durations: vec![d],
            instances: 1,
            attempts: 1,
            parameters: [("epochs".to_string(), epochs.to_string())].into(),
            ..RanSample::default()
        })
    }

    fn context(epochs: &str) -> TaskContext {
        TaskContext {
            parameters: [("epochs".to_string(), epochs.to_string())].into(),
            input_bytes: None,
        }
    }

    #[test]
    fn no_history_uses_the_prior_with_read_time() {
        let config = EstimatorConfig::default();
        let e = estimate(
            &task(2),
            &TaskContext {
                input_bytes: Some(2_000_000_000),
                ..TaskContext::default()
            },
            &[],
            &config,
        );
        assert_eq!(e.source, DurationSource::Prior);
        assert_eq!(e.samples, 0);
        assert!(
            (e.duration_s - (600.0 + 10.0)).abs() < 1e-9,
            "{}",
            e.duration_s
        );
        assert_eq!(e.run_probability, 1.0);
    }

    #[test]
    fn history_is_a_robust_estimate() {
        let h: Vec<TaskSample> = [100.0, 102.0, 98.0, 1000.0, 101.0]
            .iter()
            .map(|d| ran(*d, "10"))
            .collect();
        let e = estimate(&task(1), &context("10"), &h, &EstimatorConfig::default());
        assert_eq!(e.source, DurationSource::History);
        assert_eq!(e.samples, 5);
        assert!(
            (98.0..=102.0).contains(&e.duration_s),
            "one slow run does not drag it: {}",
            e.duration_s
        );
    }

    #[test]
    fn changed_epochs_scale_the_history() {
        let h: Vec<TaskSample> = (0..4).map(|_| ran(100.0, "10")).collect();
        let e = estimate(&task(1), &context("20"), &h, &EstimatorConfig::default());
        assert_eq!(e.source, DurationSource::Scaled);
        assert!((e.duration_s - 200.0).abs() < 1e-6, "{}", e.duration_s);
    }

    #[test]
    fn exponent_is_learned_when_the_parameter_varied() {
        // Durations grow with the square root of epochs in this history.
        let h: Vec<TaskSample> = [(10.0, "10"), (20.0, "40"), (10.0, "10"), (20.0, "40")]
            .iter()
            .map(|(d, e)| ran(*d * 10.0, e))
            .collect();
        let e = estimate(&task(1), &context("160"), &h, &EstimatorConfig::default());
        assert_eq!(e.source, DurationSource::Scaled);
        assert!((e.duration_s - 400.0).abs() < 1.0, "{}", e.duration_s);
    }

    #[test]
    fn unrelated_parameters_do_not_scale() {
        let mut h: Vec<TaskSample> = (0..3).map(|_| ran(100.0, "10")).collect();
        if let TaskSample::Ran(r) = &mut h[0] {
            r.parameters.insert("learning-rate".into(), "0.1".into());
        }
        let mut c = context("10");
        c.parameters.insert("learning-rate".into(), "0.001".into());
        let e = estimate(&task(1), &c, &h, &EstimatorConfig::default());
        assert_eq!(e.source, DurationSource::History);
        assert_eq!(e.duration_s, 100.0);
    }

    #[test]
    fn retries_and_branches_come_from_history() {
        let mut h: Vec<TaskSample> = (0..4).map(|_| ran(100.0, "10")).collect();
        if let TaskSample::Ran(r) = &mut h[1] {
            r.attempts = 2;
            r.failed_attempts = 1;
            r.failed_durations = vec![50.0];
        }
        h.push(TaskSample::Skipped);
        let mut t = task(0);
        t.retries = 3;
        let e = estimate(&t, &context("10"), &h, &EstimatorConfig::default());
        assert!((e.failure_rate - 0.2).abs() < 1e-9);
        let expected = (0.2 + 0.04 + 0.008) * 50.0;
        assert!((e.retry_s - expected).abs() < 1e-9, "{}", e.retry_s);
        assert!((e.run_probability - 0.8).abs() < 1e-9);
    }
}
