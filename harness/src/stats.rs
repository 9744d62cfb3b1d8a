//! The statistics of the end-to-end benchmark: per-arm summaries and Welch's t-test.
//!
//! `kfcache bench e2e` replays a pipeline in three arms (no cache, on-demand LRU cache, kfcache
//! prefetch), N reps each. Per arm and metric it reports the mean, the sample standard deviation,
//! the t-based 95 % confidence interval of the mean ([`summarize`]), and the two-sided p-value of
//! Welch's unequal-variances t-test of kfcache against each other arm ([`welch`]). Reps of
//! different arms are independent samples whose variances need not be equal, hence Welch rather
//! than Student's pooled test.
//!
//! Everything here is pure and total: no function panics or returns an error. Where a statistic
//! is undefined (no sample, one sample, a NaN in the input) it is `NaN`, and each function says
//! when. `serde_json` writes such a `NaN` as `null`.
//!
//! Quantiles and distribution functions come from statrs's [`StudentsT`]. The two-sided p-value
//! is `2·sf(|t|)` with the survival function, which statrs computes as a regularized incomplete
//! beta function of `df / (df + t²)`, so a p-value of 1e-14 keeps its digits instead of being
//! lost to the cancellation in `1 - cdf(|t|)`.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Descriptive statistics of one arm's reps for one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Arithmetic mean; `NaN` when `n == 0`.
    pub mean: f64,
    /// Sample standard deviation (divisor `n - 1`); `NaN` when `n < 2`.
    pub sd: f64,
    /// 95 % confidence interval of the mean, `mean ± t(0.975, n-1) · sd / √n`;
    /// `(NaN, NaN)` when `n < 2`.
    pub ci95: (f64, f64),
    /// Smallest value; `NaN` when `n == 0`.
    pub min: f64,
    /// Largest value; `NaN` when `n == 0`.
    pub max: f64,
    /// Median (the 50th [`percentile`]); `NaN` when `n == 0`.
    pub median: f64,
}

/// Summarizes a sample.
///
/// - `n == 0`: every statistic is `NaN`.
/// - `n == 1`: `mean`, `min`, `max` and `median` are the value; `sd` and both ends of `ci95` are
///   `NaN`, since one rep says nothing about the spread.
/// - A `NaN` anywhere in `values` makes every statistic `NaN` (`n` still counts it), so a failed
///   rep recorded as `NaN` cannot pass unnoticed. Filter such reps out first to summarize the
///   rest. Infinite values propagate by the usual float rules.
pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 || values.iter().any(|value| value.is_nan()) {
        return Summary {
            n,
            mean: f64::NAN,
            sd: f64::NAN,
            ci95: (f64::NAN, f64::NAN),
            min: f64::NAN,
            max: f64::NAN,
            median: f64::NAN,
        };
    }
    let count = n as f64;
    let mean = values.iter().sum::<f64>() / count;
    let sd = if n < 2 {
        f64::NAN
    } else {
        let squares: f64 = values.iter().map(|value| (value - mean).powi(2)).sum();
        (squares / (count - 1.0)).sqrt()
    };
    let ci95 = if n < 2 {
        (f64::NAN, f64::NAN)
    } else {
        let half_width = t_quantile_975(count - 1.0) * sd / count.sqrt();
        (mean - half_width, mean + half_width)
    };
    let sorted = sorted(values);
    Summary {
        n,
        mean,
        sd,
        ci95,
        min: sorted[0],
        max: sorted[n - 1],
        median: percentile_of_sorted(&sorted, 50.0),
    }
}

/// The `q`-th percentile of `values`, `q` in percent (`0.0..=100.0`, so `99.0` is p99).
///
/// Linear interpolation between the two closest ranks: the value at rank `q/100 · (n - 1)` of the
/// sorted sample, as numpy's default `numpy.percentile(values, q)` (Hyndman and Fan's type 7).
/// `NaN` when `values` is empty, when it holds a `NaN`, or when `q` is `NaN` or outside
/// `0..=100`.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() || values.iter().any(|value| value.is_nan()) {
        return f64::NAN;
    }
    percentile_of_sorted(&sorted(values), q)
}

/// [`percentile`] of a slice already sorted ascending and free of `NaN`.
fn percentile_of_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() || !(0.0..=100.0).contains(&q) {
        return f64::NAN;
    }
    let rank = q / 100.0 * (sorted.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = rank.ceil() as usize;
    match (sorted.get(lower), sorted.get(upper)) {
        (Some(&low), Some(&high)) if lower != upper => low + (high - low) * (rank - lower as f64),
        (Some(&low), _) => low,
        _ => f64::NAN,
    }
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Welch's unequal-variances t-test of two independent samples, sample 1 against sample 2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Welch {
    /// The t statistic, `(mean1 - mean2) / √(sd1²/n1 + sd2²/n2)`.
    pub t: f64,
    /// Degrees of freedom by the Welch–Satterthwaite equation (usually not an integer).
    pub df: f64,
    /// Two-sided p-value: the probability, if both means were equal, of a `|t|` at least this
    /// large.
    pub p: f64,
    /// Difference of the means, `mean1 - mean2`.
    pub diff: f64,
    /// 95 % confidence interval of `diff`, `diff ± t(0.975, df) · √(sd1²/n1 + sd2²/n2)`.
    pub ci95_diff: (f64, f64),
}

/// Welch's t-test of two summaries, `a` against `b`; see [`welch_from_stats`].
pub fn welch(a: &Summary, b: &Summary) -> Welch {
    welch_from_stats(a.mean, a.sd, a.n, b.mean, b.sd, b.n)
}

/// Welch's t-test from the means, sample standard deviations and sizes of two samples.
///
/// Matches `scipy.stats.ttest_ind_from_stats(mean1, sd1, n1, mean2, sd2, n2, equal_var=False)`
/// for `t` and `p`.
///
/// Edge cases, none of which panics:
/// - Either `n < 2`, or a standard deviation `NaN`, infinite or negative, or a mean not finite:
///   `t`, `df`, `p` and `ci95_diff` are `NaN` (`diff` is still `mean1 - mean2`).
/// - Both standard deviations zero (every rep of each arm took exactly as long): the standard
///   error is zero and the Welch–Satterthwaite `df` is `0/0`, so `df` is `NaN` and `ci95_diff`
///   is the single point `(diff, diff)`. When the means differ, `t` is `±∞` with the sign of
///   `diff` and `p = 0`; when they are equal, `t = 0` and `p = 1`.
/// - Only one standard deviation zero: the ordinary formulas apply, `df` is then `n - 1` of the
///   other sample.
pub fn welch_from_stats(mean1: f64, sd1: f64, n1: usize, mean2: f64, sd2: f64, n2: usize) -> Welch {
    let diff = mean1 - mean2;
    let undefined = Welch {
        t: f64::NAN,
        df: f64::NAN,
        p: f64::NAN,
        diff,
        ci95_diff: (f64::NAN, f64::NAN),
    };
    let valid_sd = |sd: f64| sd.is_finite() && sd >= 0.0;
    if n1 < 2 || n2 < 2 || !valid_sd(sd1) || !valid_sd(sd2) || !diff.is_finite() {
        return undefined;
    }
    let (count1, count2) = (n1 as f64, n2 as f64);
    let variance_of_mean1 = sd1 * sd1 / count1;
    let variance_of_mean2 = sd2 * sd2 / count2;
    let variance_of_diff = variance_of_mean1 + variance_of_mean2;
    if variance_of_diff == 0.0 {
        let (t, p) = if diff == 0.0 {
            (0.0, 1.0)
        } else {
            (f64::INFINITY.copysign(diff), 0.0)
        };
        return Welch {
            t,
            df: f64::NAN,
            p,
            diff,
            ci95_diff: (diff, diff),
        };
    }
    let standard_error = variance_of_diff.sqrt();
    let t = diff / standard_error;
    let df = variance_of_diff * variance_of_diff
        / (variance_of_mean1 * variance_of_mean1 / (count1 - 1.0)
            + variance_of_mean2 * variance_of_mean2 / (count2 - 1.0));
    let half_width = t_quantile_975(df) * standard_error;
    Welch {
        t,
        df,
        p: two_sided_p(t, df),
        diff,
        ci95_diff: (diff - half_width, diff + half_width),
    }
}

/// The standard Student's t distribution with `df` degrees of freedom, `None` unless `df > 0`.
fn students_t(df: f64) -> Option<StudentsT> {
    StudentsT::new(0.0, 1.0, df).ok()
}

/// `t(0.975, df)`, the quantile that bounds a two-sided 95 % interval; `NaN` unless `df > 0`.
fn t_quantile_975(df: f64) -> f64 {
    students_t(df).map_or(f64::NAN, |distribution| distribution.inverse_cdf(0.975))
}

/// `P(|T| ≥ |t|)` for `T ~ t(df)`, from the survival function so that tiny values stay accurate.
fn two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    students_t(df).map_or(f64::NAN, |distribution| {
        (2.0 * distribution.sf(t.abs())).min(1.0)
    })
}
