"""Full-range charts read chunk envelopes instead of every point, and draw the same extremes."""

from __future__ import annotations

import math

import numpy as np

from seed import append_points, start_run

from labfolio.store.envelope import BLOCK, envelope_indices
from labfolio.web import series


def test_envelope_holds_each_blocks_min_max_first_nonfinite_and_the_chunk_ends():
    rng = np.random.default_rng(3)
    values = rng.normal(size=1000)
    values[[5, 100, 101, 640]] = [np.nan, np.inf, -np.inf, np.nan]
    values[64:96] = np.nan  # a block with no finite value at all
    keep = set(envelope_indices(values).tolist())
    assert {0, len(values) - 1} <= keep
    for lo in range(0, len(values), BLOCK):
        block = values[lo: lo + BLOCK]
        finite = np.isfinite(block)
        if finite.any():
            masked_lo, masked_hi = np.where(finite, block, np.inf), np.where(finite, block, -np.inf)
            assert lo + int(np.argmin(masked_lo)) in keep and lo + int(np.argmax(masked_hi)) in keep
        if (~finite).any():
            assert lo + int(np.argmax(~finite)) in keep
    assert len(keep) <= 3 * -(-len(values) // BLOCK) + 2


def _spiky_run(store, run_id, n=200_000, chunk=30_001):
    start_run(store, run_id, experiment="exp_env")
    steps = np.arange(n)
    values = np.sin(steps / 5000.0) + np.random.default_rng(7).normal(0, 0.05, n)
    values[12_345] = 90.0
    values[150_001] = -70.0
    values[99_000:99_700] = np.nan  # a stretch of NaN wider than a chart bucket: a gap on the chart
    for lo in range(0, n, chunk):  # uneven drains, so blocks and chunks do not line up
        append_points(store, run_id, "loss", steps[lo: lo + chunk], values[lo: lo + chunk])
    return steps, values


def test_full_range_chart_from_envelopes_keeps_spikes_gaps_ends_and_only_logged_points(seeded_store):
    steps, values = _spiky_run(seeded_store, "env_run")
    logged = dict(zip(steps.tolist(), values.tolist()))
    fast = series.series_payload(seeded_store, ["env_run"], "loss", points=2000, envelopes=True)["series"][0]
    every = series.series_payload(seeded_store, ["env_run"], "loss", points=2000, envelopes=False)["series"][0]
    assert len(fast["x"]) <= 2000 and fast["total"] == len(steps)
    assert fast["x"] == sorted(fast["x"])
    assert (fast["x"][0], fast["y"][0]) == (every["x"][0], every["y"][0])
    assert (fast["x"][-1], fast["y"][-1], fast["last_step"]) == (every["x"][-1], every["y"][-1], every["last_step"])
    finite = [y for y in fast["y"] if y is not None]
    assert max(finite) == 90.0 and min(finite) == -70.0
    assert None in fast["y"] and None in every["y"]  # the NaN gap
    for x, y in zip(fast["x"], fast["y"]):
        assert (math.isnan(logged[x]) if y is None else logged[x] == y), x
    # The resolution a chart needs: within a bucket's width of what reading every point gives.
    assert len(fast["x"]) > 0.8 * len(every["x"])


def test_zoom_narrower_than_a_block_per_bucket_reads_every_point(seeded_store):
    steps, values = _spiky_run(seeded_store, "zoom_env_run")
    zoom = series.series_payload(seeded_store, ["zoom_env_run"], "loss", points=2000, x_min=12_000,
                                 x_max=13_000)["series"][0]
    inside = [(x, y) for x, y in zip(zoom["x"], zoom["y"]) if 12_000 <= x <= 13_000]
    assert inside == [(int(s), float(v)) for s, v in zip(steps[12_000:13_001], values[12_000:13_001])]
