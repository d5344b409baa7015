"""LiveMonitor: incremental, once-only, cheap per point, and in agreement with post-hoc detection."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from labfolio.analysis import Health, LiveMonitor, Rule, detect_all
from labfolio.analysis.synthetic import labelled_curves


def feed_live(series, config, seed: int, rules=()) -> list:
    """Feed every key up to a random step horizon at a time, as a writer thread flushing every few
    seconds would: batches of random size, keys in random order, each key in step order."""
    rng = np.random.default_rng(seed)
    monitor = LiveMonitor(config, rules)
    first = min(float(np.min(steps)) for steps, _ in series.values())
    last = max(float(np.max(steps)) for steps, _ in series.values())
    fed_up_to = first - 1
    while fed_up_to < last:
        horizon = fed_up_to + float(rng.uniform(0.001, 0.05)) * (last - first + 1)
        for key in rng.permutation(list(series)):
            steps, values = series[key]
            window = (steps > fed_up_to) & (steps <= horizon)
            if window.any():
                monitor.feed(key, steps[window], values[window])
        fed_up_to = horizon
    monitor.finish()
    return list(monitor.alerts)


def test_live_batches_raise_the_same_alerts_as_post_hoc_detection():
    curves = labelled_curves(seed=5, repeats=1)[::6]
    assert len(curves) > 30
    for i, curve in enumerate(curves):
        live = feed_live(curve.series, curve.config, seed=i)
        post_hoc = detect_all(curve.series, curve.config)
        assert sorted((a.kind, a.metric, a.step, a.message) for a in live) == sorted(
            (a.kind, a.metric, a.step, a.message) for a in post_hoc), curve.name


def test_each_alert_is_reported_once_however_long_the_problem_lasts():
    monitor = LiveMonitor(rules=())
    reported = []
    for start in range(0, 1000, 50):
        steps = np.arange(start, start + 50.0)
        reported += monitor.feed("train/loss", steps, np.full(50, np.nan) if start >= 300 else np.ones(50))
    reported += monitor.finish()
    assert [a.kind for a in reported] == ["nan"]
    assert monitor.finish() == []  # idempotent


def test_rules_alert_live_unless_a_detector_already_spoke_for_that_metric():
    monitor = LiveMonitor(rules=None)  # the built-in packs
    steps = np.arange(100.0)
    grad = 5 + np.random.default_rng(0).random(100)
    grad[60] = 947.0
    alerts = monitor.feed("grad_norm", steps, grad)
    assert [a.kind for a in alerts] == ["grad_spike"]  # the '> 10x median' rule would repeat it
    similarity = monitor.feed("mhc/stream_similarity", steps, np.full(100, 0.45))
    assert [(a.kind, a.severity) for a in similarity] == [("rule", "warning")]
    assert similarity[0].message.startswith("mhc/stream_similarity = 0.45 (last) is bad (> 0.4) at step 99")


def test_final_quality_rules_are_judged_only_when_the_run_ends():
    monitor = LiveMonitor(rules=None)
    assert monitor.feed("val/bpb", np.arange(50.0), np.linspace(8.0, 1.3, 50)) == []
    final = monitor.finish()
    assert [(a.kind, a.metric) for a in final] == [("rule", "val/bpb")]
    assert final[0].message.startswith("val/bpb = 1.3 (last) is bad (> 1.2)")


def test_rule_results_show_every_rule_including_unlogged_ones():
    monitor = LiveMonitor(rules=[Rule("gate_value", good="0.3-0.7", bad=">= 1.0"), Rule("absent", bad="> 1")])
    monitor.feed("mhc/gate_value", [0, 1], [0.5, 0.6])
    results = {(r.rule.metric, r.metric): r.health for r in monitor.rule_results()}
    assert results == {("gate_value", "mhc/gate_value"): Health.GOOD, ("absent", "absent"): Health.NO_DATA}


def test_monitor_can_be_fed_from_a_background_thread_while_alerts_are_read():
    monitor = LiveMonitor(rules=())
    values = np.ones(5000)
    values[4000] = np.nan

    def writer():
        for start in range(0, 5000, 100):
            monitor.feed("train/loss", np.arange(start, start + 100.0), values[start:start + 100])

    thread = threading.Thread(target=writer)
    thread.start()
    while thread.is_alive():
        monitor.alerts  # reading concurrently must not break the writer
    thread.join()
    assert [a.step for a in monitor.alerts] == [4000]


def _feed_seconds(monitor: LiveMonitor, key: str, values: np.ndarray, start: int, batch: int) -> float:
    began = time.perf_counter()
    for offset in range(0, values.size, batch):
        steps = np.arange(start + offset, start + offset + batch, dtype=float)
        monitor.feed(key, steps, values[offset:offset + batch])
    return time.perf_counter() - began


@pytest.mark.parametrize("key", ["train/loss", "grad_norm", "val/acc"])
def test_cost_per_point_does_not_grow_with_history(key):
    rng = np.random.default_rng(0)
    chunk = 20_000
    values = 1.0 + 0.05 * rng.standard_normal(12 * chunk)
    monitor = LiveMonitor({"scheduler": "cosine", "total_steps": 10**7}, rules=None)
    early = min(_feed_seconds(monitor, key, values[i * chunk:(i + 1) * chunk], i * chunk, 50) for i in range(2))
    for i in range(2, 10):
        _feed_seconds(monitor, key, values[i * chunk:(i + 1) * chunk], i * chunk, 50)
    late = min(_feed_seconds(monitor, key, values[i * chunk:(i + 1) * chunk], i * chunk, 50) for i in range(10, 12))
    assert late < 3 * early, f"{key}: {early:.3f}s for the first 20k points, {late:.3f}s after 200k"
