"""The hand-rolled parts of seed statistics agree bit for bit with the library code they replace.

``_welch_p_value``, ``_t_quantile``, ``_resample_means``, ``_percentiles`` and ``_numpy_sum``
(analysis/_bitexact.py) redo what scipy and numpy compute, minus per-call overhead; the
notebook's pinned numbers depend on them matching exactly.
"""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import stats as scipy_stats

from labfolio.analysis import _bitexact as exact
from labfolio.analysis import stats


def _samples(rng, size):
    kind = rng.integers(0, 5)
    if kind == 0:  # ties
        return rng.integers(0, 3, size=size).astype(float)
    if kind == 1:  # zero variance
        return np.full(size, rng.normal())
    if kind == 2:  # large offset, tiny spread (near-cancellation)
        return 1e3 + rng.normal(size=size) * 1e-9
    if kind == 3:  # metrics as logged, rounded
        return np.round(rng.uniform(0.8, 0.95, size=size), 4)
    return rng.normal(size=size) * 10 ** rng.uniform(-6, 6) + rng.normal() * 10 ** rng.uniform(-3, 3)


def _scipy_welch(a, b):
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        return 0.0 if a.mean() != b.mean() else 1.0
    with np.errstate(all="ignore"), _quiet():
        p = float(scipy_stats.ttest_ind(b, a, equal_var=False).pvalue)
    return 1.0 if math.isnan(p) else p


class _quiet:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_welch_p_value_matches_scipy_exactly():
    rng = np.random.default_rng(20240601)
    checked = 0
    for _ in range(6000):
        a = _samples(rng, int(rng.integers(2, 21)))
        b = _samples(rng, int(rng.integers(2, 21))) if rng.random() < 0.8 else a + rng.normal() * 1e-3
        ours, theirs = exact._welch_p_value(a, b), _scipy_welch(a, b)
        assert ours == theirs, (a.tolist(), b.tolist(), ours, theirs)
        checked += 1
    assert checked == 6000


def test_welch_p_value_matches_scipy_on_large_samples():
    # past numpy's 128-value pairwise block, where _numpy_sum hands the sum back to numpy
    rng = np.random.default_rng(7)
    for size_a, size_b in [(129, 2), (200, 300), (128, 129), (1000, 5)]:
        for _ in range(20):
            a, b = _samples(rng, size_a), _samples(rng, size_b)
            assert exact._welch_p_value(a, b) == _scipy_welch(a, b)


def test_welch_p_value_edge_cases():
    same = np.array([1.0, 1.0, 1.0])
    assert exact._welch_p_value(same, same.copy()) == 1.0
    assert exact._welch_p_value(same, same + 1) == 0.0
    for a, b in [([1.0, 1.0], [1.0, 2.0]), ([0.5, 0.5, 0.5], [0.1, 0.9]), ([1.0, 2.0], [1.0, 2.0]),
                 ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])]:
        a, b = np.array(a), np.array(b)
        assert exact._welch_p_value(a, b) == _scipy_welch(a, b)


def test_t_quantile_matches_scipy_t_ppf_exactly():
    exact._t_quantile.cache_clear()
    for q in (0.5 + 0.95 / 2, 0.5 + 0.9 / 2, 0.5 + 0.99 / 2, 1 - 0.05 / 2, 1 - 0.05 / 60, 0.75):
        for df in [*range(1, 200), 0.5, 2.5, 1e4, 1e7]:
            assert exact._t_quantile(q, df) == float(scipy_stats.t.ppf(q, df)), (q, df)


def test_t_distribution_functions_are_scipy_specials_without_importing_it():
    # in a fresh interpreter: _special() loads only the compiled ufuncs, which are the very objects
    # scipy.special exports once it is imported after them, and scipy.stats still works
    script = textwrap.dedent("""
        import sys
        from labfolio.analysis import _bitexact as exact
        module = exact._special()
        assert "scipy.special" not in sys.modules, "the whole package was imported"
        assert exact._t_quantile(0.975, 4) > 2.7
        from scipy import special
        from scipy import stats as scipy_stats
        assert module.stdtr is special.stdtr and module.stdtrit is special.stdtrit
        assert exact._t_quantile(0.975, 4) == float(scipy_stats.t.ppf(0.975, 4))
        assert exact._special() is module
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("size", [*range(1, 41), 63, 64, 65, 127, 128, 129, 200])
def test_resample_means_match_numpy_mean_exactly(size):
    rng = np.random.default_rng(size)
    index = rng.integers(0, size, size=(500, size))
    index_t = np.ascontiguousarray(index.T)
    for _ in range(8):
        values = _samples(rng, size)
        if rng.random() < 0.2:
            values = -np.abs(values) * 0.0  # signed zeros
        expected = values[index].mean(axis=1)
        got = exact._resample_means(values, index_t)
        assert np.array_equal(np.signbit(got), np.signbit(expected))
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("size", range(1, 8))
def test_prefix_sums_match_numpy_mean_exactly(size):
    rng = np.random.default_rng(100 + size)
    for resamples in (1, 7, 500, 10_000):
        index = rng.integers(0, size, size=(resamples, size))
        prefix_sums = exact._PrefixSums.of(index)
        for trial in range(8):
            values = _samples(rng, size)
            if trial == 0:
                values = -np.abs(values) * 0.0  # signed zeros
            expected = values[index].mean(axis=1)
            got = prefix_sums.means(values)
            assert np.array_equal(np.signbit(got), np.signbit(expected))
            assert np.array_equal(got, expected)


def test_bootstrap_ci_unchanged_from_plain_numpy():
    rng = np.random.default_rng(7)
    for _ in range(200):
        a = _samples(rng, int(rng.integers(2, 21)))
        b = _samples(rng, int(rng.integers(2, 21)))
        draws = np.random.default_rng(0)
        index_a = draws.integers(0, a.size, size=(10_000, a.size))
        index_b = draws.integers(0, b.size, size=(10_000, b.size))
        tail = (1 - 0.95) / 2 * 100  # as compare_samples computes it (2.500000000000002)
        expected = np.percentile(b[index_b].mean(axis=1) - a[index_a].mean(axis=1), [tail, 100 - tail])
        assert exact._bootstrap_delta_ci(a, b, 0.95, 10_000, 0) == (float(expected[0]), float(expected[1]))


@pytest.mark.parametrize("size", [100, 101, 1000, 9999, 10_000, 12_345])
def test_percentiles_match_numpy_percentile_exactly(size):
    rng = np.random.default_rng(size)
    for trial in range(40):
        values = _samples(rng, size)
        if trial % 4 == 0:
            values = np.round(values, 1)  # ties
        for confidence in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
            tail = (1 - confidence) / 2 * 100
            expected = np.percentile(values, [tail, 100 - tail])
            got = exact._percentiles(values.copy(), tail, 100 - tail)
            assert got == (float(expected[0]), float(expected[1])), (size, confidence)
    for edge in (0.0, 100.0, 50.0, 2.5):
        values = rng.normal(size=size)
        assert exact._percentiles(values.copy(), edge) == (float(np.percentile(values, [edge])[0]),)
    values = rng.normal(size=size)
    values[3] = np.nan
    assert math.isnan(exact._percentiles(values.copy(), 2.5)[0])


@pytest.mark.parametrize("size", [*range(0, 41), 63, 64, 65, 127, 128, 129, 300])
def test_numpy_sum_matches_numpy_exactly(size):
    rng = np.random.default_rng(1000 + size)
    for trial in range(30):
        values = _samples(rng, size) if size else np.array([])
        if trial % 6 == 0:
            values = -np.abs(values) * 0.0  # signed zeros
        got = exact._numpy_sum(values.tolist())
        expected = float(np.sum(values))
        assert got == expected and math.copysign(1, got) == math.copysign(1, expected)
        if size >= 2:  # summarize's mean and std
            summary = stats.summarize(values.tolist())
            assert summary.mean == float(values.mean())
            assert summary.std == float(values.std(ddof=1))


def _lucky_runs_reference(summary, labels, *, direction=None, others=(), min_z=3.0, alpha=0.05):
    """find_lucky_runs' arithmetic as first written, on numpy arrays: (run index, mean, noise, z)."""
    values = np.asarray(summary.values, dtype=float)
    other_groups = [np.asarray(group, dtype=float) for group in others if len(group) >= 2]
    other_squares = sum(float(((g - g.mean()) ** 2).sum()) for g in other_groups)
    other_df = sum(g.size - 1 for g in other_groups)
    tested = values.size + sum(g.size for g in other_groups if g.size >= 3)
    found = []
    for i, value in enumerate(values):
        siblings = np.delete(values, i)
        k = siblings.size
        mean = float(siblings.mean())
        df = (k - 1) + other_df
        noise = math.sqrt((float(((siblings - mean) ** 2).sum()) + other_squares) / df)
        sigma = max(noise, stats._SIGMA_FLOOR * max(1.0, abs(mean)))
        z = (float(value) - mean) / sigma
        critical = exact._t_quantile(1 - alpha / (2 * tested), df) * math.sqrt(1 + 1 / k)
        if abs(z) > max(min_z, critical):
            found.append((i, mean, noise, z))
    return found


def test_lucky_runs_unchanged_from_numpy_arithmetic():
    rng = np.random.default_rng(99)
    flagged = 0
    for _ in range(600):
        size = int(rng.integers(3, 25))
        values = _samples(rng, size)
        if rng.random() < 0.7:
            values[rng.integers(0, size)] += (np.std(values) + 1e-3) * rng.uniform(3, 30)
        summary = stats.summarize(values.tolist(), "val/loss", [f"r{i}" for i in range(size)])
        others = [_samples(rng, int(rng.integers(1, 12))).tolist() for _ in range(int(rng.integers(0, 3)))]
        labels = [f"run r{i}" for i in range(summary.n)]
        got = stats.find_lucky_runs(summary, labels, direction="lower", others=others, min_z=2.0)
        expected = _lucky_runs_reference(summary, labels, direction="lower", others=others, min_z=2.0)
        assert [(r.label, r.siblings_mean, r.noise, r.z) for r in got] == \
            [(labels[i], mean, noise, z) for i, mean, noise, z in expected]
        flagged += len(got)
    assert flagged > 100
