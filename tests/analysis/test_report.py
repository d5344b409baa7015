"""The text the CLI prints for `compare` and `check`, asserted exactly."""

from __future__ import annotations

import numpy as np
import pytest

from labfolio.analysis import RunView, Rule, check_run, format_check, format_comparison_table, seed_statistics
from labfolio.analysis.report import format_delta, format_p_value, format_table


def cifar_runs() -> list[RunView]:
    runs = []
    for variant, accs, losses in [("baseline", [0.90, 0.91, 0.92], [0.40, 0.38, 0.36]),
                                  ("mhc", [0.93, 0.935, 0.94], [0.35, 0.37, 0.36]), ("hc", [0.95], [0.30])]:
        for seed, (acc, loss) in enumerate(zip(accs, losses)):
            runs.append(RunView(f"{variant}{seed}", "cifar_004", variant, seed=seed,
                                summary={"test/acc": acc, "test/loss": loss}))
    runs.append(RunView("x", "cifar_004", "mhc", seed=9, state="crashed", summary={"test/acc": 0.1}))
    return runs


def test_compare_prints_mean_std_delta_p_value_and_verdict_per_variant():
    text = format_comparison_table(seed_statistics(cifar_runs()))
    assert text == """\
cifar_004 (baseline: baseline)

test/acc (higher is better)
variant   mean ± std (n)         95% CI            Δ vs baseline  95% CI of Δ         p      verdict
baseline  0.9100 ± 0.0100 (n=3)  [0.8852, 0.9348]  baseline
mhc       0.9350 ± 0.0050 (n=3)  [0.9226, 0.9474]  +0.0250        [+0.0150, +0.0350]  0.032  better
hc        0.9500 (n=1)           —                 +0.0400        —                   —      insufficient seeds

test/loss (lower is better)
variant   mean ± std (n)         95% CI            Δ vs baseline  95% CI of Δ         p      verdict
baseline  0.3800 ± 0.0200 (n=3)  [0.3303, 0.4297]  baseline
mhc       0.3600 ± 0.0100 (n=3)  [0.3352, 0.3848]  -0.0200        [-0.0400, +0.0000]  0.221  marginal
hc        0.3000 (n=1)           —                 -0.0800        —                   —      insufficient seeds

1 run excluded: 1 crashed.
"""


def test_compare_can_pick_metrics_and_refuses_unknown_ones():
    report = seed_statistics(cifar_runs())
    assert "test/loss" not in format_comparison_table(report, ["test/acc"])
    with pytest.raises(KeyError, match="metrics: test/acc, test/loss"):
        format_comparison_table(report, ["val/acc"])


def test_compare_lists_outlier_seeds_and_notes():
    runs = [RunView(f"r{i}", "e", "regular", seed=i, summary={"acc": v})
            for i, v in enumerate([0.900, 0.901, 0.899, 0.900, 0.93])]
    text = format_comparison_table(seed_statistics(runs))
    assert "outlier seeds:\n  - e/regular seed 4 (run r4): acc = 0.9300 is 36.7σ above" in text
    assert text.endswith("\n") and "(no baseline)" in text


def test_number_formats_are_fixed():
    assert [format_p_value(p) for p in (0.0312, 0.0004, float("nan"))] == ["0.031", "<0.001", "—"]
    assert [format_delta(d) for d in (0.025, -0.02, 3e-7)] == ["+0.0250", "-0.0200", "+3.000e-07"]
    assert format_table(["a", "bb"], [["xyz", "1"]]) == "a    bb\nxyz  1"


def nan_run_series():
    steps = np.arange(0, 200, 10.0)
    loss = np.linspace(2.0, 1.0, 20)
    loss[15:] = np.nan
    return {"train/loss": (steps, loss), "mhc/gate_value": (steps, np.full(20, 0.5)),
            "mhc/stream_similarity": (steps, np.full(20, 0.1))}


def test_check_prints_rules_alerts_and_the_proposed_status():
    report = check_run(nan_run_series(), {"scheduler": "constant"}, run="run r1 (cifar_004/mhc, seed 0)")
    assert format_check(report) == """\
run r1 (cifar_004/mhc, seed 0): finished

rules
  health   metric                 value  aggregate  good     bad
  bad      train/loss             NaN    max        —        NaN
  no data  *grad_norm             —      max        —        > 10x median
  good     mhc/stream_similarity  0.1    last       < 0.2    > 0.4
  good     mhc/gate_value         0.5    last       0.3-0.7  >= 1.0
  no data  sinkhorn_col_err_raw   —      last       < 1e-6   > 0.01
  no data  H_res_diag_mean        —      last       0.4-0.8  1.0 or 0.25
  no data  val/bpb                —      last       < 1.0    > 1.2

alerts
  severity  kind  metric      step  evidence
  critical  nan   train/loss  150   train/loss is NaN at step 150 (last finite value 1.263 at step 140)

proposed status: ❌ Invalid (discard for comparison): train/loss is NaN at step 150
"""


def test_check_of_a_killed_run_and_of_a_human_override():
    series = {"val/acc": (np.arange(5.0), [0.1, 0.2, 0.3, 0.4, 0.5])}
    killed = check_run(series, run="run r2", state="killed", rules=[Rule("val/acc", good="> 0.9", bad="< 0.2")])
    assert format_check(killed) == """\
run r2: killed

rules
  health  metric   value  aggregate  good   bad
  watch   val/acc  0.5    last       > 0.9  < 0.2

alerts
  (none)

proposed status: ⚠️ Partially invalid (killed before finishing)
"""
    kept = check_run(series, run="run r2", state="crashed", rules=[], override="valid",
                     override_reason="crashed after the final eval")
    assert format_check(kept).endswith("rules\n  (no rules)\n\nalerts\n  (none)\n\n"
                                       "status (human override): ✅ Valid: crashed after the final eval\n")


def test_diff_prints_changes_the_confound_and_what_was_ignored():
    from labfolio.analysis import diff_configs, format_config_diff

    diff = diff_configs({"amp": False, "batch_size": 128, "seed": 0},
                        {"amp": True, "batch_size": 256, "seed": 1})
    assert format_config_diff(diff, "exp_003", "exp_004") == (
        "exp_003 → exp_004\n"
        "  amp: false → true\n"
        "  batch_size: 128 → 256\n"
        "warning: confounded: 2 keys differ (amp, batch_size); a difference in results cannot be "
        "attributed to any one of them\n"
        "ignored: seed\n")
    assert format_config_diff(diff_configs({"a": 1}, {"a": 1}), "r1", "r2") == "r1 → r2\n  no config differences\n"
