"""Seeding stores for the web tests through the store's one write path (no SDK threads)."""

from __future__ import annotations

import time

import numpy as np

from labfolio.store.batch import Batch

__all__ = ["start_run", "append_points", "finish_run", "seed_study"]


def start_run(store, run_id, *, experiment="exp_a", variant="baseline", seed=0, config=None, machine="gpu-a",
              provenance=None, previous=None, hypothesis=None, state="running", tags=None):
    store.write_batch(Batch(run_id=run_id, events=[{
        "type": "start", "run_id": run_id, "project": "study", "experiment": experiment, "variant": variant,
        "seed": seed, "config": config or {"lr": 0.001, "model": {"width": 64}}, "machine": machine,
        "host": machine + ".lab", "provenance": provenance or {"env": {"CUDA_VISIBLE_DEVICES": "0"}},
        "previous": previous, "hypothesis": hypothesis, "state": state, "tags": tags or [],
        "started_at": time.time() - 100}], journal_from=0, journal_to=0))


def append_points(store, run_id, key, steps, values, *, seq_start=None):
    """Points as a journal drain would write them (journal positions advance with each call)."""
    pos = store.run_journal_position(run_id) or 0
    steps = np.asarray(steps, dtype=np.int64)
    n = len(steps)
    seq0 = pos if seq_start is None else seq_start
    result = store.write_batch(Batch(
        run_id=run_id, keys=[key] * n, steps=steps, values=np.asarray(values, dtype=np.float64),
        times=time.time() - 50 + steps * 0.01, seqs=np.arange(seq0, seq0 + n), journal_from=pos,
        journal_to=pos + n))
    assert result.applied
    return result


def finish_run(store, run_id, state="finished"):
    store.write_batch(Batch(run_id=run_id, events=[{"type": "finish", "state": state}]))


def seed_study(store, *, steps=300, seeds=3):
    """exp_a (baseline vs mhc, `seeds` seeds each, a loss curve with a spike) and exp_b following it."""
    rng = np.random.default_rng(0)
    ids = []
    for variant, offset in (("baseline", 0.0), ("mhc", -0.1)):
        for seed in range(seeds):
            rid = f"exp_a_{variant}_s{seed}"
            start_run(store, rid, variant=variant, seed=seed, config={"lr": 0.001, "model": {"width": 64},
                                                                        "mhc": variant == "mhc", "seed": seed},
                      hypothesis="mHC lowers the loss")
            s = np.arange(steps)
            loss = 2.0 * np.exp(-s / 80) + 0.5 + offset + rng.normal(0, 0.01, steps)
            append_points(store, rid, "train/loss", s, loss)
            append_points(store, rid, "test/acc", s[::10], 0.5 + s[::10] / (steps * 4) - offset + rng.normal(0, 0.005, len(s[::10])))
            finish_run(store, rid)
            ids.append(rid)
    start_run(store, "exp_b_baseline_s0", experiment="exp_b", previous="exp_a", config={"lr": 0.01, "model": {"width": 64}})
    append_points(store, "exp_b_baseline_s0", "train/loss", np.arange(50), np.linspace(2, 1, 50))
    ids.append("exp_b_baseline_s0")
    return ids
