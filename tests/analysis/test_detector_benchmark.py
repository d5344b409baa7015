"""The detectors against the labelled synthetic set: they must be right both ways.

Run with ``-s`` to see the per-kind table (the same one ``benchmarks/bench_detectors.py`` prints).
"""

from __future__ import annotations

import numpy as np

from labfolio.analysis.synthetic import format_score, labelled_curves, score_detectors


def test_labelled_set_is_reproducible_and_covers_every_pathology():
    first, second = labelled_curves(seed=0), labelled_curves(seed=0)
    assert [c.name for c in first] == [c.name for c in second]
    assert all(np.array_equal(a.series[k][1], b.series[k][1], equal_nan=True)
               for a, b in zip(first, second) for k in a.series)
    labels = {c.label for c in first}
    assert labels == {None, "divergence", "grad_spike", "nan", "collapse", "schedule_mismatch", "plateau",
                      "overfitting", "representation_collapse", "stream_collapse"}
    assert sum(c.label is None for c in first) >= 150


def test_detectors_find_95_percent_of_pathologies_with_at_most_2_percent_false_alarms():
    score = score_detectors(labelled_curves(seed=0))
    print("\n" + format_score(score))
    for name in score.misses:
        print("missed:", name)
    for name, alerts in score.false_alarms:
        print("false alarm:", name, "|", "; ".join(str(a) for a in alerts))
    assert score.recall >= 0.95
    assert score.false_positive_rate <= 0.02
    assert all(score.kind_recall(kind) >= 0.85 for kind in score.labelled), format_score(score)
