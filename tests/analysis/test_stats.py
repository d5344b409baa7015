"""Seed statistics: summaries, verdicts against a baseline, lucky seeds, exclusions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from labfolio.analysis import (
    AnalysisInputError,
    RunView,
    Verdict,
    compare_samples,
    find_lucky_runs,
    format_mean_std,
    metric_direction,
    seed_statistics,
    summarize,
)


def runs_of(variant: str, values: list[float], experiment: str = "exp", metric: str = "test/acc",
            **extra) -> list[RunView]:
    return [RunView(f"{variant}-{i}", experiment, variant, seed=i, summary={metric: v}, **extra)
            for i, v in enumerate(values)]


def test_format_mean_std_reads_like_the_notebook():
    assert format_mean_std(0.92134, 0.00213, 3) == "0.9213 ± 0.0021 (n=3)"
    assert format_mean_std(0.9213, None, 1) == "0.9213 (n=1)"
    assert format_mean_std(math.nan, math.nan, 0) == "n/a (n=0)"
    assert format_mean_std(0.0803, 0.00074, 3) == "0.0803 ± 0.0007 (n=3)"


def test_format_mean_std_never_hides_a_real_spread_as_zero():
    assert format_mean_std(0.9213, 4e-6, 3) == "0.9213 ± 4.0e-06 (n=3)"
    assert format_mean_std(0.9213, 0.0, 3) == "0.9213 ± 0.0000 (n=3)"
    assert format_mean_std(2.5e-7, 1e-8, 2) == "2.500e-07 ± 1.000e-08 (n=2)"


def test_summary_confidence_interval_is_the_t_interval_of_the_mean():
    values = [0.91, 0.93, 0.92, 0.95]
    summary = summarize(values, "acc")
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert summary.n == 4
    assert summary.std == pytest.approx(np.std(values, ddof=1))
    assert (summary.ci_low, summary.ci_high) == pytest.approx((low, high))
    assert (summary.min, summary.max) == (0.91, 0.95)


def test_summary_drops_non_finite_values_and_names_their_runs():
    summary = summarize([0.9, math.nan, 0.92, math.inf], "acc", run_ids=["a", "b", "c", "d"])
    assert summary.n == 2
    assert summary.run_ids == ("a", "c")
    assert summary.dropped == ("b", "d")


def test_single_seed_has_no_spread_or_interval():
    summary = summarize([0.9], "acc")
    assert summary.n == 1 and math.isnan(summary.std) and math.isnan(summary.ci_low)


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("train/loss", "lower"), ("val/bpb", "lower"), ("val/perplexity", "lower"), ("test/top1_err", "lower"),
        ("nll", "lower"), ("error_rate", "lower"), ("test/acc", "higher"), ("test/knn_acc", "higher"),
        ("val/f1_macro", "higher"), ("auc", "higher"), ("accuracy@5", "higher"), ("lr", None),
        ("grad_norm", None), ("throughput", "higher"),
    ],
)
def test_metric_direction_comes_from_the_name(name, direction):
    assert metric_direction(name) == direction


def test_direction_override_wins_and_exact_names_beat_globs():
    overrides = {"val/*": "higher", "val/score": "min"}
    assert metric_direction("val/loss", overrides) == "higher"
    assert metric_direction("val/score", overrides) == "lower"
    assert metric_direction("test/loss", overrides) == "lower"
    with pytest.raises(AnalysisInputError, match="'lower' or 'higher'"):
        metric_direction("x", {"x": "up"})


def test_clear_improvement_is_better_on_both_tests():
    comparison = compare_samples(summarize([0.90, 0.901, 0.899, 0.900], "test/acc"),
                                 summarize([0.93, 0.931, 0.929, 0.930], "test/acc"), direction="higher")
    assert comparison.verdict is Verdict.BETTER
    assert comparison.delta == pytest.approx(0.03)
    assert comparison.p_value < 0.05 and comparison.delta_ci_low > 0


def test_lower_loss_is_better_and_higher_loss_worse():
    base = summarize([1.00, 1.01, 0.99], "val/loss")
    lower = summarize([0.80, 0.81, 0.79], "val/loss")
    assert compare_samples(base, lower, direction="lower").verdict is Verdict.BETTER
    assert compare_samples(lower, base, direction="lower").verdict is Verdict.WORSE


def test_difference_inside_seed_noise_is_marginal_and_says_why():
    comparison = compare_samples(summarize([0.90, 0.93, 0.91], "acc"), summarize([0.92, 0.94, 0.90], "acc"),
                                 direction="higher")
    assert comparison.verdict is Verdict.MARGINAL
    assert "inside the seed noise" in comparison.reason and "Welch p=" in comparison.reason


def test_one_seed_on_either_side_is_insufficient():
    one, three = summarize([0.9], "acc"), summarize([0.8, 0.81, 0.82], "acc")
    assert compare_samples(one, three, direction="higher").verdict is Verdict.INSUFFICIENT
    assert compare_samples(three, one, direction="higher").verdict is Verdict.INSUFFICIENT
    assert math.isnan(compare_samples(three, one).p_value)


def test_significant_difference_without_a_direction_is_different():
    comparison = compare_samples(summarize([1.0, 1.01, 0.99], "widgets"), summarize([2.0, 2.01, 1.99], "widgets"))
    assert comparison.verdict is Verdict.DIFFERENT
    assert "set a direction" in comparison.reason


def test_p_value_is_welchs_and_bootstrap_ci_is_reproducible():
    base, cand = summarize([0.90, 0.92, 0.91, 0.95], "acc"), summarize([0.93, 0.94, 0.96], "acc")
    first = compare_samples(base, cand, direction="higher")
    second = compare_samples(base, cand, direction="higher")
    assert first.p_value == pytest.approx(scipy_stats.ttest_ind([0.93, 0.94, 0.96], [0.90, 0.92, 0.91, 0.95],
                                                                equal_var=False).pvalue)
    assert (first.delta_ci_low, first.delta_ci_high) == (second.delta_ci_low, second.delta_ci_high)
    assert first.delta_ci_low <= first.delta <= first.delta_ci_high


def test_deterministic_seeds_with_zero_spread_are_compared_exactly():
    same = compare_samples(summarize([1.0, 1.0], "loss"), summarize([1.0, 1.0], "loss"), direction="lower")
    apart = compare_samples(summarize([1.0, 1.0], "loss"), summarize([0.5, 0.5], "loss"), direction="lower")
    assert same.verdict is Verdict.MARGINAL and same.p_value == 1.0
    assert apart.verdict is Verdict.BETTER and apart.p_value == 0.0


def test_lucky_seed_is_flagged_with_how_far_it_is():
    summary = summarize([0.90, 0.901, 0.899, 0.900, 0.93], "test/acc", run_ids=list("abcde"))
    lucky = find_lucky_runs(summary, [f"seed {i}" for i in range(5)], direction="higher")
    assert [run.run_id for run in lucky] == ["e"]
    assert lucky[0].side == "lucky"
    assert lucky[0].z == pytest.approx((0.93 - 0.9) / np.std([0.90, 0.901, 0.899, 0.900], ddof=1))
    assert lucky[0].message == (
        "seed 4: test/acc = 0.9300 is 36.7σ above the mean of its 4 siblings (0.9000; seed noise "
        "σ = 0.0008 from 4 other runs; flagged beyond 6.5σ): likely a lucky seed; run more seeds "
        "before believing it")


def test_seed_noise_is_pooled_over_the_experiments_other_variants():
    # two siblings alone give a threshold near 46 sigma; the other variant's seeds sharpen it
    summary = summarize([0.900, 0.901, 0.93], "acc")
    assert find_lucky_runs(summary, direction="higher") == []
    pooled = find_lucky_runs(summary, direction="higher", others=[[0.910, 0.911, 0.909]])
    assert len(pooled) == 1 and pooled[0].threshold < 8


def test_honest_normal_seeds_flag_an_experiment_about_alpha_of_the_time():
    rng = np.random.default_rng(0)
    flagged = 0
    for _ in range(300):
        groups = [rng.normal(0.9, 0.01, 5), rng.normal(0.92, 0.01, 5)]
        flagged += any(find_lucky_runs(summarize(g, "acc"), direction="higher", others=[groups[1 - i]])
                       for i, g in enumerate(groups))
    assert flagged / 300 < 0.09


def test_invalid_runs_are_excluded_and_counted_by_reason():
    runs = (runs_of("baseline", [0.90, 0.91, 0.92]) + runs_of("mhc", [0.93, 0.94])
            + [RunView("c", "exp", "mhc", 7, state="crashed", summary={"test/acc": 0.1}),
               RunView("f", "exp", "mhc", 8, state="failed", summary={"test/acc": 0.1}),
               RunView("h", "exp", "mhc", 9, summary={"test/acc": 0.99}, status_override="invalid",
                       status_reason="eval on train split"),
               RunView("p", "exp", "mhc", 10, summary={"test/acc": 0.5}, proposed_status="invalid",
                       proposed_reason="train/loss diverged at step 120"),
               RunView("k", "exp", "mhc", 11, state="crashed", summary={"test/acc": 0.95},
                       status_override="valid")])
    report = seed_statistics(runs)
    assert report.group("exp", "mhc").run_ids == ("mhc-0", "mhc-1", "k")
    assert report.excluded_summary == (
        "4 runs excluded: 1 crashed, 1 failed, 1 marked invalid: eval on train split, "
        "1 proposed invalid: train/loss diverged at step 120")
    assert len(seed_statistics(runs, include_invalid=True).excluded) == 0


def test_variant_whose_runs_are_all_excluded_still_shows_with_no_seeds():
    crashed = RunView("x", "exp", "mhc", 0, state="crashed", summary={"test/acc": 0.2})
    runs = runs_of("baseline", [0.9, 0.91]) + [crashed]
    report = seed_statistics(runs)
    assert report.group("exp", "mhc").metrics["test/acc"].n == 0
    assert report.comparison("exp", "mhc", "test/acc").verdict is Verdict.INSUFFICIENT


def test_baseline_comes_from_the_mapping_or_a_conventional_name():
    runs = runs_of("regular", [0.90, 0.91, 0.90]) + runs_of("mhc", [0.95, 0.96, 0.95])
    unnamed = seed_statistics(runs)
    assert unnamed.comparisons == () and "no baseline variant" in unnamed.notes[0]
    named = seed_statistics(runs, baselines={"exp": "regular"})
    assert named.comparison("exp", "mhc", "test/acc").verdict is Verdict.BETTER
    control = seed_statistics(runs_of("control", [0.9, 0.91]) + runs_of("x", [0.9, 0.91]))
    assert control.baselines == {"exp": "control"}
    missing = seed_statistics(runs, baselines="baseline")
    assert "baseline variant 'baseline' has no runs" in missing.notes[0]


def test_report_lookups_name_what_exists():
    report = seed_statistics(runs_of("baseline", [0.9, 0.91]))
    with pytest.raises(KeyError, match="exp/baseline"):
        report.group("exp", "nope")


def test_metrics_default_to_every_numeric_summary_key_in_first_seen_order():
    runs = [RunView("a", "e", "baseline", 0, summary={"b": 1.0, "a": 2.0, "note": "text", "flag": True}),
            RunView("b", "e", "baseline", 1, summary={"c": 3.0})]
    assert seed_statistics(runs).metrics == ("b", "a", "c")


def test_run_view_rejects_unknown_states_with_the_allowed_ones():
    with pytest.raises(AnalysisInputError, match="running, finished, crashed, killed, failed"):
        RunView("r", "e", "v", state="done")
    with pytest.raises(AnalysisInputError, match="status_override"):
        RunView("r", "e", "v", status_override="bogus")
