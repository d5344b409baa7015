"""``labfolio compare / diff / check``: exact output over a store seeded with known runs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import labfolio
from labfolio.cli import app

runner = CliRunner()

ACCURACIES = {("residual", 0): 0.90, ("residual", 1): 0.92, ("mhc", 0): 0.93, ("mhc", 1): 0.95}


@pytest.fixture
def study():
    for (variant, seed), acc in ACCURACIES.items():
        config = {"lr": 0.001, "schedule": "cosine", "connection": variant,
                  "streams": 1 if variant == "residual" else 4, "seed": seed, "out_dir": f"/tmp/{variant}{seed}"}
        with labfolio.init(experiment="cmp_001", variant=variant, seed=seed, config=config,
                           run_id=f"cmp_001_{variant}_s{seed}") as run:
            for step in range(10):
                run.log({"train/loss": 2.0 - step * 0.1}, step=step)
            run.log({"test/acc": acc}, step=9)
    with labfolio.init(experiment="cmp_002", variant="residual", seed=0, run_id="cmp_002_residual_s0",
                       config={"lr": 0.002, "schedule": "cosine_warmup", "connection": "residual", "streams": 1,
                               "seed": 0}) as run:
        run.log({"test/acc": 0.91}, step=0)


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_compare_prints_mean_std_ci_delta_p_and_verdict_per_variant(study):
    code, output = _invoke("compare", "cmp_001")
    assert code == 0, output
    assert output.splitlines() == [
        "cmp_001 (baseline: residual)",
        "",
        "test/acc (higher is better)",
        "variant   mean ± std (n)         95% CI            Δ vs baseline  95% CI of Δ         p      verdict",
        "residual  0.9100 ± 0.0141 (n=2)  [0.7829, 1.0371]  baseline",
        "mhc       0.9400 ± 0.0141 (n=2)  [0.8129, 1.0671]  +0.0300        [+0.0100, +0.0500]  0.168  marginal",
    ]


def test_compare_takes_metrics_and_another_baseline(study):
    code, output = _invoke("compare", "cmp_001", "-m", "test/acc", "--baseline", "mhc")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "cmp_001 (baseline: mhc)"
    assert lines[4].startswith("mhc       0.9400 ± 0.0141 (n=2)") and lines[4].endswith("baseline")  # baseline row first
    assert lines[5].startswith("residual  0.9100 ± 0.0141 (n=2)") and lines[5].endswith("-0.0300        [-0.0500, -0.0100]  0.168  marginal")


def test_compare_of_an_unknown_experiment_suggests_the_close_name(study):
    code, output = _invoke("compare", "cmp_01")
    assert code == 1
    assert "no runs of experiment 'cmp_01'" in output and "did you mean 'cmp_001'?" in output


def test_compare_of_an_unknown_metric_lists_the_known_ones(study):
    code, output = _invoke("compare", "cmp_001", "-m", "test/acc_typo")
    assert code == 1 and "test/acc_typo" in output and "test/acc" in output


def test_diff_of_two_runs_lists_changes_warns_of_confounds_and_ignores_seeds_and_paths(study):
    code, output = _invoke("diff", "cmp_001_residual_s0", "cmp_001_mhc_s1")
    assert code == 0, output
    assert output.splitlines() == [
        "cmp_001_residual_s0 → cmp_001_mhc_s1",
        "  connection: residual → mhc",
        "  streams: 1 → 4",
        "warning: confounded: 2 keys differ (connection, streams); a difference in results cannot be "
        "attributed to any one of them",
        "ignored: seed, out_dir",
    ]


def test_diff_of_two_experiments_compares_what_their_runs_share(study):
    code, output = _invoke("diff", "cmp_001", "cmp_002")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "cmp_001 → cmp_002"
    assert "  lr: 0.001 → 0.002" in lines
    assert "  schedule: cosine → cosine_warmup" in lines
    assert any(line.startswith("warning: confounded") for line in lines)


def test_diff_of_something_unknown_says_what_it_is_not(study):
    code, output = _invoke("diff", "cmp_001", "nothing_here")
    assert code == 1 and "'nothing_here' is neither a run nor an experiment" in output


def test_check_of_a_run_prints_rules_alerts_and_the_proposed_status(study):
    code, output = _invoke("check", "cmp_001_mhc_s0")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "run cmp_001_mhc_s0 (cmp_001/mhc, seed 0): finished"
    assert lines[2] == "rules"
    assert lines[-1] == "proposed status: ✅ Valid"
    assert "alerts" in lines and lines[lines.index("alerts") + 1] == "  (none)"


def test_check_shows_stored_alerts_and_a_human_override_wins(study):
    with labfolio.init(experiment="cmp_003", variant="a", run_id="cmp_003_a") as run:
        for step, value in enumerate([1.0, float("nan"), 0.5]):
            run.log({"train/loss": value}, step=step)
        run.alert("eval used the EMA weights", kind="user", severity="warning")
    code, output = _invoke("check", "cmp_003_a")
    assert code == 0, output
    assert "critical  nan" in output and "eval used the EMA weights" in output
    assert output.splitlines()[-1].startswith("proposed status: ❌ Invalid")


def test_check_of_an_experiment_ends_with_its_status(study):
    code, output = _invoke("check", "cmp_001")
    assert code == 0, output
    assert output.count("proposed status: ✅ Valid") == 4
    assert output.splitlines()[-1] == "experiment cmp_001: ✅ Valid"
