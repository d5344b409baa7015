"""Pathology detectors on hand-made series: each says what it saw, in numbers, at the right step."""

from __future__ import annotations

import numpy as np
import pytest

from labfolio.analysis import AnalysisInputError, classify_key, detect_all, schedule_from_config


def kinds(alerts) -> list[tuple[str, str]]:
    return [(a.kind, a.metric) for a in alerts]


def noisy(values, scale, seed=0):
    return np.asarray(values, dtype=float) * (1 + scale * np.random.default_rng(seed).standard_normal(len(values)))


def training_loss(n=1000, seed=0, noise=0.02):
    t = np.arange(n, dtype=float)
    return noisy(0.4 + 2.0 * np.exp(-t / 200), noise, seed)


def test_grad_norm_of_947_after_values_under_7_is_a_spike_then_a_divergence():
    epochs = np.arange(30.0)
    grad = np.array([5.0, 5.5, 6.0, 6.5, 5.2, 5.8, 6.1, 6.9, 5.1, 6.2, 5.6, 6.3, 947.0, 300.0, 120.0, 80.0,
                     60.0, 45.0, 40.0, 35.0, *([30.0] * 10)])
    alerts = detect_all({"grad_norm": (epochs, grad)})
    assert kinds(alerts) == [("grad_spike", "grad_norm"), ("divergence", "grad_norm")]
    spike, divergence = alerts
    assert (spike.step, spike.value, divergence.severity) == (12, 947.0, "critical")
    assert spike.message == ("grad_norm = 947 at step 12: 161x its running median 5.9 (the previous 12 values "
                             "were all <= 6.9)")
    assert divergence.message.startswith("grad_norm diverged at step 12: it jumped to 947 (161x its running "
                                         "median 5.9) and stayed above 17.7 for 4 of the next 4 points")


def test_loss_that_jumps_and_stays_up_diverges_at_the_jump():
    loss = training_loss()
    loss[600:] = noisy(np.full(400, 2.4), 0.02, 1)
    alerts = detect_all({"train/loss": (np.arange(1000.0), loss)})
    assert kinds(alerts) == [("divergence", "train/loss")]
    assert alerts[0].step == 600 and alerts[0].severity == "critical"
    assert alerts[0].message.startswith(f"train/loss diverged at step 600: {alerts[0].value:.4g} vs its recent level")
    assert "it stayed above" in alerts[0].message and "for 99 of the next 99 points, to step 699" in alerts[0].message


def test_loss_spike_that_recovers_is_not_a_divergence():
    loss = training_loss()
    loss[600:630] *= 2.0
    assert detect_all({"train/loss": (np.arange(1000.0), loss)}) == []


def test_early_catapult_is_not_a_divergence():
    t = np.arange(1000.0)
    loss = training_loss() * (1 + 0.7 * np.exp(-0.5 * ((t - 60) / 12) ** 2))
    assert detect_all({"train/loss": (t, loss)}) == []


def test_evaluation_loss_diverging_at_epoch_12_is_caught():
    epochs = np.arange(60.0)
    val = noisy(0.5 + 1.8 * np.exp(-epochs / 8), 0.01)
    val[12:] = noisy(np.full(48, 2.0), 0.01, 2)
    alerts = detect_all({"val/loss": (epochs, val)})
    assert ("divergence", "val/loss") in kinds(alerts)
    assert next(a for a in alerts if a.kind == "divergence").step == 12


def test_nan_reports_the_first_bad_step_and_the_last_finite_value():
    loss = np.array([2.0, 1.5, 1.2, np.nan, np.nan, 1.0])
    acc = np.array([0.1, 0.2, np.inf, 0.3, 0.4, 0.5])
    alerts = detect_all({"train/loss": (np.arange(6.0), loss), "val/acc": (np.arange(6.0), acc)})
    by_metric = {a.metric: a for a in alerts if a.kind == "nan"}
    assert by_metric["train/loss"].message == "train/loss is NaN at step 3 (last finite value 1.2 at step 2)"
    assert by_metric["train/loss"].severity == "critical"
    assert by_metric["val/acc"].message == "val/acc is Inf at step 2 (last finite value 0.2 at step 1)"
    assert by_metric["val/acc"].severity == "warning"


def collapsing_accuracy(recover_after: float | None):
    epochs = np.arange(80.0)
    acc = 0.1 + 0.75 * (1 - np.exp(-epochs / 4))
    tau = np.inf if recover_after is None else recover_after
    acc[12:] -= 0.45 * np.exp(-(epochs[12:] - 12) / tau)
    return epochs, noisy(acc, 0.005)


def test_collapse_reports_the_drop_the_step_and_that_it_has_not_recovered():
    epochs, acc = collapsing_accuracy(None)
    alerts = detect_all({"test/acc": (epochs, acc)})
    collapse = next(a for a in alerts if a.kind == "collapse")
    assert collapse.step == 12 and collapse.severity == "warning"
    assert "test/acc collapsed at step 12:" in collapse.message
    assert "had not recovered by step 15" in collapse.message
    assert "recovery" not in [a.kind for a in alerts]


def test_slow_recovery_after_a_collapse_is_reported_when_it_happens():
    epochs, acc = collapsing_accuracy(10.0)
    alerts = detect_all({"test/acc": (epochs, acc)})
    assert [a.kind for a in alerts if a.kind in ("collapse", "recovery")] == ["collapse", "recovery"]
    recovery = alerts[-1]
    assert recovery.severity == "info" and 25 < recovery.step < 45
    assert recovery.message.startswith("test/acc recovered from its collapse at step 12:")


def test_noisy_accuracy_that_keeps_rising_raises_nothing():
    epochs = np.arange(150.0)
    acc = 0.1 + 0.8 * (1 - np.exp(-epochs / 50))
    acc = acc + 0.02 * np.random.default_rng(3).standard_normal(150)
    assert detect_all({"val/acc": (epochs, acc)}) == []


def cosine(n, warmup=0, floor=0.0, total=None):
    total = total or n
    steps = np.arange(n, dtype=float)
    q = np.clip((steps - warmup) / (total - warmup), 0, 1)
    lr = 1e-3 * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * q)))
    return np.where(steps < warmup, 1e-3 * (steps + 1) / max(warmup, 1), lr)


COSINE_CONFIG = {"optim": {"lr": 1e-3, "scheduler": "cosine", "warmup_steps": 50}, "train": {"total_steps": 1000}}


def test_cosine_config_with_an_lr_that_never_decays_is_a_mismatch():
    lr = np.where(np.arange(1000) < 50, 1e-3 * (np.arange(1000) + 1) / 50, 1e-3)
    alerts = detect_all({"lr": (np.arange(1000.0), lr)}, COSINE_CONFIG)
    assert kinds(alerts) == [("schedule_mismatch", "lr")]
    assert "(it has not decreased)" in alerts[0].message
    assert alerts[0].message.startswith("lr does not follow the configured 'cosine' schedule over 1000 steps:")


def test_lr_still_at_40_percent_of_peak_when_the_schedule_says_far_lower_is_a_mismatch():
    lr = cosine(1000, warmup=50, total=2500)  # the scheduler was built for 2.5x more steps
    alerts = detect_all({"lr": (np.arange(1000.0), lr)}, COSINE_CONFIG)
    assert kinds(alerts) == [("schedule_mismatch", "lr")]
    assert "where the schedule gives" in alerts[0].message


@pytest.mark.parametrize(
    ("config", "lr"),
    [
        (COSINE_CONFIG, cosine(1000, warmup=50)),
        ({"scheduler": "cosine", "lr": 1e-3, "min_lr": 1e-4, "max_steps": 1000}, cosine(1000, floor=0.1)),
        ({"scheduler": {"name": "wsd", "warmup_steps": 20, "decay_fraction": 0.2}, "total_steps": 1000},
         np.where(np.arange(1000) < 800, 1e-3, 1e-3 * (1 - (np.arange(1000) - 799) / 200))),
        ({"scheduler": "step", "milestones": [500, 750], "gamma": 0.1, "total_steps": 1000},
         1e-3 * 0.1 ** np.searchsorted([500, 750], np.arange(1000), side="right")),
        ({"scheduler": "constant", "lr": 1e-3, "total_steps": 1000}, np.full(1000, 1e-3)),
        ({"decay_lr": True, "learning_rate": 1e-3, "warmup_iters": 50, "max_iters": 1000, "min_lr": 1e-4},
         cosine(1000, warmup=50, floor=0.1)),
    ],
)
def test_lr_that_follows_its_schedule_raises_nothing(config, lr):
    assert detect_all({"lr": (np.arange(1000.0), lr)}, config) == []


def test_no_schedule_in_the_config_means_no_schedule_check():
    assert detect_all({"lr": (np.arange(100.0), np.full(100, 0.1))}, {"lr": 0.1, "epochs": 100}) == []


def test_a_decaying_schedule_without_a_shape_only_has_to_decay():
    config = {"optim": {"lr": 0.1, "scheduler": "exponential", "gamma": 0.99}}
    flat = detect_all({"lr": (np.arange(200.0), np.full(200, 0.1))}, config)
    assert kinds(flat) == [("schedule_mismatch", "lr")]
    assert flat[0].message == ("lr never decreased: 0.1 at step 199 is 100% of its peak 0.1, but the config asks "
                               "for the decaying 'exponential' schedule")
    decaying = 0.1 * 0.99 ** np.arange(200)
    assert detect_all({"lr": (np.arange(200.0), decaying)}, config) == []


def test_a_run_stopped_before_its_decay_is_not_told_its_lr_never_decreased():
    # a cosine over epochs whose length in steps is unknown: killed after 9 steps, still near the peak
    config = {"lr": 3e-3, "schedule": "cosine_warmup", "epochs": 3}
    lr = 3e-3 * np.array([0.33, 0.67, 1.0, 1.0, 0.999, 0.996, 0.99, 0.984, 0.977, 0.97])
    assert detect_all({"lr": (np.arange(10.0), lr)}, config, complete=False) == []
    # the same series as a whole run is a schedule that never decayed
    assert kinds(detect_all({"lr": (np.arange(10.0), lr)}, config)) == [("schedule_mismatch", "lr")]


def test_epoch_logged_lr_is_checked_against_epochs_when_the_run_ends():
    config = {"optimizer": {"name": "sgd", "lr": 0.1}, "scheduler": "cosine", "epochs": 100}
    epochs = np.arange(100.0)
    good = 0.1 * 0.5 * (1 + np.cos(np.pi * epochs / 100))
    assert detect_all({"lr": (epochs, good)}, config) == []
    too_long = 0.1 * 0.5 * (1 + np.cos(np.pi * epochs / 200))
    assert kinds(detect_all({"lr": (epochs, too_long)}, config)) == [("schedule_mismatch", "lr")]


@pytest.mark.parametrize(
    ("config", "family", "total", "unit", "warmup"),
    [
        ({"scheduler": "wsd", "lr": 1e-3, "total_steps": 1000, "warmup_steps": 100}, "wsd", 1000, "steps", (0.1,)),
        ({"optim": {"lr": 0.1, "lr_schedule": "cosine_warmup", "warmup_ratio": 5}, "epochs": 10,
          "steps_per_epoch": 100}, "cosine", 1000, "steps", (0.05,)),
        ({"train": {"scheduler": {"type": "MultiStepLR", "milestones": [30, 60]}, "epochs": 90}}, "step", 90,
         "epochs", None),
        ({"decay_lr": False, "max_iters": 500}, "constant", 500, "steps", None),
        ({"scheduler": "whd", "epochs": 100, "warmup_epochs": 5}, "wsd", 100, "epochs", (0.05,)),
    ],
)
def test_schedule_is_read_from_common_config_spellings(config, family, total, unit, warmup):
    spec = schedule_from_config(config)
    assert (spec.family, spec.total, spec.unit) == (family, total, unit)
    if warmup is not None:
        assert spec.warmup == pytest.approx(warmup)


def test_configs_without_a_checkable_schedule_give_no_spec():
    assert schedule_from_config({"lr": 0.1}) is None
    assert schedule_from_config({"scheduler": "reduce_on_plateau"}) is None
    assert schedule_from_config({"eval": {"scheduler": "cosine"}}) is None  # not a training section
    assert schedule_from_config({"scheduler": "cosine"}, total_steps=100).total == 100


def test_metric_that_stops_improving_early_is_a_plateau():
    evals = np.arange(100.0)
    acc = np.minimum(0.1 + 0.02 * evals, 0.5) + 0.003 * np.random.default_rng(0).standard_normal(100)
    alerts = detect_all({"val/acc": (evals * 100, acc)})
    plateau = next(a for a in alerts if a.kind == "plateau")
    assert plateau.severity == "info" and plateau.step < 2500
    assert "has not improved for" in plateau.message and "evaluations" in plateau.message


def test_overfitting_is_validation_turning_worse_while_training_improves():
    t = np.arange(100.0)
    train = 2.0 * np.exp(-t / 20) + 0.05
    val = 0.6 + 1.5 * np.exp(-t / 8) + np.where(t > 40, 0.006 * (t - 40), 0)
    val = val + 0.005 * np.random.default_rng(0).standard_normal(100)
    alerts = detect_all({"train/loss": (t, train), "val/loss": (t, val)})
    overfitting = next(a for a in alerts if a.kind == "overfitting")
    assert overfitting.metric == "val/loss" and 30 <= overfitting.step <= 50
    assert "while train/loss went" in overfitting.message and "the gap grew" in overfitting.message


def test_a_growing_gap_while_validation_still_improves_is_not_overfitting():
    t = np.arange(100.0)
    train = 2.0 * np.exp(-t / 10) + 0.01
    val = 0.5 + 1.5 * np.exp(-t / 30) + 0.005 * np.random.default_rng(0).standard_normal(100)
    assert [a for a in detect_all({"train_loss": (t, train), "val_loss": (t, val)}) if a.kind == "overfitting"] == []


def test_representation_collapse_is_judged_against_the_configured_width():
    evals = np.arange(20.0)
    rank = np.where(evals < 10, 40.0, 5.0)
    alerts = detect_all({"test/eff_rank": (evals, rank)}, {"model": {"d_model": 128}})
    assert kinds(alerts) == [("representation_collapse", "test/eff_rank")]
    assert alerts[0].message.startswith(
        "test/eff_rank = 5 at step 11 is 3.9% of the width 128 (below 10% since step 10")
    assert detect_all({"test/eff_rank": (evals, rank)}, eff_rank_dim=32) == []  # 5/32 is above 10%


def test_without_a_width_effective_rank_is_judged_against_its_own_peak():
    rank = np.array([60.0, 55, 50, 45, 40, 6, 5, 5])
    alerts = detect_all({"test/eff_rank": (np.arange(8.0), rank)})
    assert "of its peak 60" in alerts[0].message


def test_stream_similarity_that_climbs_is_a_stream_collapse_and_one_that_falls_is_not():
    t = np.arange(200.0)
    rising = 0.1 + 0.8 / (1 + np.exp(-(t - 100) / 10))
    alerts = detect_all({"mhc/stream_similarity": (t, rising)})
    assert kinds(alerts) == [("stream_collapse", "mhc/stream_similarity")]
    assert "mHC streams are becoming copies of each other" in alerts[0].message
    falling = 0.05 + 0.95 * np.exp(-t / 20)
    assert detect_all({"mhc/stream_similarity": (t, falling)}) == []


@pytest.mark.parametrize(
    ("key", "roles"),
    [("train/loss", {"loss", "train"}), ("val_loss", {"loss", "eval"}), ("loss_scale", set()),
     ("grad_norm", {"grad_norm"}), ("optim/lr", {"lr"}), ("lr/group0", {"lr"}), ("test/knn_acc", {"accuracy", "eval"}),
     ("val/bpb", {"loss", "eval"}), ("test/eff_rank", {"eff_rank", "eval"}),
     ("mhc/layer2/stream_similarity", {"stream"}), ("throughput", set())],
)
def test_keys_are_classified_by_name(key, roles):
    assert classify_key(key) == roles


def test_series_with_mismatched_lengths_are_refused_with_the_key():
    with pytest.raises(AnalysisInputError, match="'train/loss': got 3 steps but 2 values"):
        detect_all({"train/loss": ([0, 1, 2], [1.0, 2.0])})
