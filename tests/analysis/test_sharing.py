"""shared_throughput: the steps per second of runs that shared a device, while they all ran."""

from __future__ import annotations

import pytest

from labfolio.analysis.sharing import shared_throughput


def steady(start: float, end: float, rate: float, first_step: int = 0, every: float = 1.0):
    """(time, step) points of a run making `rate` steps/s from `start` to `end`."""
    points, t = [], start
    while t <= end + 1e-9:
        points.append((t, first_step + rate * (t - start)))
        t += every
    return points


def test_runs_that_overlap_make_the_sum_of_their_rates_inside_the_overlap():
    shared = shared_throughput({"a": steady(0, 100, 10), "b": steady(20, 120, 20)})
    assert (shared.start, shared.end, shared.runs) == (20, 100, 2)
    assert shared.steps_per_s == pytest.approx({"a": 10.0, "b": 20.0})
    assert shared.total_steps_per_s == pytest.approx(30.0)


def test_the_window_with_the_most_runs_wins_over_a_longer_one_with_fewer():
    shared = shared_throughput({"a": steady(0, 100, 10), "b": steady(0, 100, 10), "c": steady(40, 50, 5)})
    assert shared.runs == 3 and (shared.start, shared.end) == (40, 50)
    assert shared.total_steps_per_s == pytest.approx(25.0)


def test_a_run_that_speeds_up_after_the_others_end_counts_only_its_shared_rate():
    # b makes 10 steps/s while a runs, then 40 alone: its own average would overstate the sharing
    b = steady(0, 50, 10) + steady(51, 100, 40, first_step=510)
    shared = shared_throughput({"a": steady(0, 50, 10), "b": b})
    assert (shared.start, shared.end) == (0, 50)
    assert shared.steps_per_s["b"] == pytest.approx(10.0)


def test_nothing_is_shared_without_two_runs_in_progress_at_once():
    assert shared_throughput({"a": steady(0, 10, 5), "b": steady(20, 30, 5)}) is None
    assert shared_throughput({"a": steady(0, 10, 5)}) is None
    assert shared_throughput({"a": [(0.0, 0.0)], "b": steady(0, 10, 5)}) is None  # one point: no span
    assert shared_throughput({}) is None


def test_an_overlap_shorter_than_the_minimum_window_is_not_measured():
    assert shared_throughput({"a": steady(0, 10, 5), "b": steady(9.5, 20, 5, every=0.5)}, min_window_s=1.0) is None
