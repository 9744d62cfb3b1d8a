//! The benchmark statistics against reference values computed independently with scipy 1.17
//! and numpy (the calls are named next to each literal), so that the tests need neither.

use kfcache_harness::stats::{percentile, summarize, welch, welch_from_stats, Summary};

fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not within {tolerance} of {expected}"
    );
}

fn assert_relative(actual: f64, expected: f64, relative: f64, what: &str) {
    assert!(
        ((actual - expected) / expected).abs() <= relative,
        "{what}: {actual} is not within {relative} (relative) of {expected}"
    );
}

/// The reference case: two arms of 10 reps whose means differ by about ten standard deviations.
#[test]
fn welch_reference_case_matches_scipy() {
    let result = welch_from_stats(133.16, 10.25, 10, 258.74, 12.87, 10);
    // scipy.stats.ttest_ind_from_stats(133.16, 10.25, 10, 258.74, 12.87, 10, equal_var=False)
    //   -> statistic = -24.136641066833608, pvalue = 1.126549859598953e-14
    assert_close(result.t, -24.136641066833608, 0.01, "t");
    assert_close(result.t, -24.136641066833608, 1e-9, "t (tight)");
    assert_relative(result.p, 1.126549859598953e-14, 0.05, "p");
    assert_relative(result.p, 1.126549859598953e-14, 1e-6, "p (tight)");
    // Regression: p came out as 0 when computed as 2·(1 - cdf(|t|)).
    assert!(result.p > 0.0, "p must not be lost to cancellation");
    // scipy.stats.ttest_ind(a, b, equal_var=False) on samples with exactly these means and
    // standard deviations -> df = 17.141665306266063,
    //   .confidence_interval(0.95) = (-136.55020658896814, -114.60979341103187)
    assert_close(result.df, 17.141665306266063, 0.01, "df");
    assert_close(result.diff, 133.16 - 258.74, 1e-12, "diff");
    assert_close(result.ci95_diff.0, -136.55020658896814, 0.01, "CI low");
    assert_close(result.ci95_diff.1, -114.60979341103187, 0.01, "CI high");
}

/// Welch on summaries of raw reps, with unequal group sizes.
#[test]
fn welch_of_summaries_matches_scipy() {
    let a = summarize(&[12.1, 11.8, 12.5, 12.0, 11.9]);
    let b = summarize(&[13.0, 13.4, 12.8, 13.1, 13.6, 12.9]);
    let result = welch(&a, &b);
    // scipy.stats.ttest_ind(a, b, equal_var=False)
    //   -> statistic = -6.158240089090352, pvalue = 0.00017077554840469364,
    //      df = 8.952564828865688,
    //      confidence_interval(0.95) = (-1.4679284050084824, -0.6787382616581894)
    assert_close(result.t, -6.158240089090352, 1e-9, "t");
    assert_relative(result.p, 0.00017077554840469364, 1e-6, "p");
    assert_close(result.df, 8.952564828865688, 1e-9, "df");
    assert_close(result.ci95_diff.0, -1.4679284050084824, 1e-6, "CI low");
    assert_close(result.ci95_diff.1, -0.6787382616581894, 1e-6, "CI high");
    // The test is antisymmetric in its arguments.
    let reverse = welch(&b, &a);
    assert_close(reverse.t, 6.158240089090352, 1e-9, "reverse t");
    assert_close(reverse.p, result.p, 1e-15, "reverse p");
}

#[test]
fn summarize_one_to_five_by_hand() {
    let summary = summarize(&[3.0, 1.0, 5.0, 2.0, 4.0]);
    // mean = 15 / 5 = 3; sd = sqrt((4 + 1 + 0 + 1 + 4) / 4) = sqrt(2.5) = 1.5811388300841898
    // t(0.975, 4) = 2.7764451051977934 (scipy.stats.t.ppf(0.975, 4)); sd / sqrt(5) = 0.70711
    // CI = 3 ± 2.776445 · 0.707107 = [1.0367568385224428, 4.963243161477557]
    //   (scipy.stats.t.interval(0.95, 4, loc=3, scale=scipy.stats.sem([1, 2, 3, 4, 5])))
    assert_eq!(summary.n, 5);
    assert_close(summary.mean, 3.0, 1e-12, "mean");
    assert_close(summary.sd, 1.5811388300841898, 1e-12, "sd");
    assert_close(summary.ci95.0, 1.0367568385224428, 1e-6, "CI low");
    assert_close(summary.ci95.1, 4.963243161477557, 1e-6, "CI high");
    assert_eq!(summary.min, 1.0);
    assert_eq!(summary.max, 5.0);
    assert_eq!(summary.median, 3.0);
}

#[test]
fn summarize_uneven_sample_matches_numpy() {
    let summary = summarize(&[13.0, 13.4, 12.8, 13.1, 13.6, 12.9]);
    // numpy.mean -> 13.133333333333335; numpy.std(ddof=1) -> 0.3076794869123818;
    // scipy.stats.t.interval(0.95, 5, loc=mean, scale=scipy.stats.sem(b))
    //   -> (12.810443514102571, 13.456223152564098); numpy.median -> 13.05
    assert_close(summary.mean, 13.133333333333335, 1e-12, "mean");
    assert_close(summary.sd, 0.3076794869123818, 1e-12, "sd");
    assert_close(summary.ci95.0, 12.810443514102571, 1e-6, "CI low");
    assert_close(summary.ci95.1, 13.456223152564098, 1e-6, "CI high");
    assert_close(summary.median, 13.05, 1e-12, "median");
}

#[test]
fn equal_samples_give_p_one() {
    let a = summarize(&[12.1, 11.8, 12.5, 12.0, 11.9]);
    let result = welch(&a, &a);
    // scipy.stats.ttest_ind(a, a, equal_var=False) -> statistic = 0.0, pvalue = 1.0, df = 8.0
    assert_eq!(result.t, 0.0);
    assert_close(result.p, 1.0, 1e-12, "p");
    assert_close(result.df, 8.0, 1e-9, "df");
    assert_eq!(result.diff, 0.0);
    assert!(result.ci95_diff.0 < 0.0 && result.ci95_diff.1 > 0.0);
}

#[test]
fn zero_variance_with_different_means_is_infinitely_significant() {
    let result = welch_from_stats(10.0, 0.0, 5, 12.0, 0.0, 5);
    assert_eq!(result.t, f64::NEG_INFINITY);
    assert_eq!(result.p, 0.0);
    assert_eq!(result.diff, -2.0);
    assert_eq!(result.ci95_diff, (-2.0, -2.0));
    assert!(result.df.is_nan());

    let reverse = welch_from_stats(12.0, 0.0, 5, 10.0, 0.0, 5);
    assert_eq!(reverse.t, f64::INFINITY);
    assert_eq!(reverse.p, 0.0);
}

#[test]
fn zero_variance_with_equal_means_gives_p_one() {
    let reps = summarize(&[7.0; 4]);
    assert_eq!(reps.sd, 0.0);
    assert_eq!(reps.ci95, (7.0, 7.0));
    let result = welch(&reps, &reps);
    assert_eq!(result.t, 0.0);
    assert_eq!(result.p, 1.0);
    assert_eq!(result.diff, 0.0);
    assert_eq!(result.ci95_diff, (0.0, 0.0));
}

#[test]
fn one_zero_variance_uses_the_other_sample() {
    let result = welch_from_stats(10.0, 0.0, 5, 12.0, 1.0, 4);
    // Welch–Satterthwaite reduces to n2 - 1 = 3; t = -2 / (1 / 2) = -4.
    // scipy.stats.ttest_ind_from_stats(10, 0, 5, 12, 1, 4, equal_var=False)
    //   -> statistic = -4.0, pvalue = 0.028008456010146152
    assert_close(result.df, 3.0, 1e-12, "df");
    assert_close(result.t, -4.0, 1e-12, "t");
    assert_relative(result.p, 0.028008456010146152, 1e-6, "p");
}

#[test]
fn empty_and_single_samples_are_nan_not_panics() {
    let empty = summarize(&[]);
    assert_eq!(empty.n, 0);
    assert!(empty.mean.is_nan() && empty.sd.is_nan() && empty.median.is_nan());
    assert!(empty.ci95.0.is_nan() && empty.ci95.1.is_nan());
    assert!(empty.min.is_nan() && empty.max.is_nan());

    let single = summarize(&[4.5]);
    assert_eq!(single.n, 1);
    assert_eq!(single.mean, 4.5);
    assert_eq!(single.min, 4.5);
    assert_eq!(single.max, 4.5);
    assert_eq!(single.median, 4.5);
    assert!(single.sd.is_nan());
    assert!(single.ci95.0.is_nan() && single.ci95.1.is_nan());

    let result = welch(&single, &summarize(&[1.0, 2.0, 3.0]));
    assert!(result.t.is_nan() && result.p.is_nan() && result.df.is_nan());
    assert_eq!(result.diff, 2.5);
    let result = welch(&empty, &empty);
    assert!(result.t.is_nan() && result.p.is_nan());
}

#[test]
fn nan_rep_poisons_the_summary() {
    let summary = summarize(&[1.0, f64::NAN, 3.0]);
    assert_eq!(summary.n, 3);
    assert!(summary.mean.is_nan() && summary.median.is_nan() && summary.min.is_nan());
    assert!(percentile(&[1.0, f64::NAN], 50.0).is_nan());
}

#[test]
fn percentile_interpolates_like_numpy() {
    let one_to_ten: Vec<f64> = (1..=10).map(f64::from).collect();
    // numpy.percentile(range(1, 11), 99) -> 9.91
    assert_close(percentile(&one_to_ten, 99.0), 9.91, 1e-12, "p99");
    // numpy.percentile([3, 1, 2], 25) -> 1.5
    assert_close(percentile(&[3.0, 1.0, 2.0], 25.0), 1.5, 1e-12, "p25");
    // numpy.percentile([15, 20, 35, 40, 50], 40) -> 29.0
    assert_close(
        percentile(&[15.0, 20.0, 35.0, 40.0, 50.0], 40.0),
        29.0,
        1e-12,
        "p40",
    );
    assert_eq!(percentile(&one_to_ten, 0.0), 1.0);
    assert_eq!(percentile(&one_to_ten, 100.0), 10.0);
    assert_eq!(percentile(&[42.0], 99.0), 42.0);
    assert!(percentile(&[], 50.0).is_nan());
    assert!(percentile(&one_to_ten, 101.0).is_nan());
    assert!(percentile(&one_to_ten, -1.0).is_nan());
    assert!(percentile(&one_to_ten, f64::NAN).is_nan());
}

#[test]
fn summary_serializes_nan_fields() {
    // The report writes summaries as JSON; an undefined statistic must not stop that.
    let summary: Summary = summarize(&[1.0]);
    let json = serde_json::to_value(&summary).expect("a summary serializes");
    assert_eq!(json["n"], 1);
    assert_eq!(json["mean"], 1.0);
    assert!(json["sd"].is_null());
    assert!(json["ci95"][0].is_null());
}
