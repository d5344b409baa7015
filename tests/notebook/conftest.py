"""Stores with known content for the notebook tests, built through ``store.write_batch``.

Every time, id and provenance is fixed, so the notes written from these stores are the same on
every machine and can be compared with golden files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from labfolio.store import Batch, open_store

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
T0 = 1_767_261_600.0  # 2026-01-01 10:00:00 UTC

PROVENANCE = {"git": {"sha": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678", "short_sha": "a1b2c3d", "tags": ["v0.3"],
                      "dirty": False}}


def add_run(store, run_id: str, *, experiment: str, variant: str, seed: int | None, config: dict, start: float,
            acc: float | None = None, steps: int = 40, lr_decays: bool = True, previous: str | None = None,
            hypothesis: str | None = None, state: str = "finished", evaluates: str | None = None,
            machine: str = "gpu-a", extra_summary: dict | None = None) -> None:
    """One run with a train/loss and lr series (1 step per second) and a final test/acc."""
    rng = np.random.default_rng(sum(map(ord, run_id)))  # the same noise for the same run, everywhere
    step_values = np.arange(steps)
    loss = 2.0 * np.exp(-step_values / 15) + 0.05 * rng.random(steps) + 0.3
    lr = 0.1 * (1 - step_values / steps) if lr_decays else np.full(steps, 0.1)
    keys, values, point_steps, times, seqs = [], [], [], [], []
    seq = 0
    for step in range(steps):
        for key, value in (("train/loss", loss[step]), ("lr", lr[step])):
            seq += 1
            keys.append(key)
            values.append(float(value))
            point_steps.append(step)
            times.append(start + step)
            seqs.append(seq)
    events = [{"type": "start", "run_id": run_id, "project": "", "experiment": experiment, "variant": variant,
               "seed": seed, "config": config, "provenance": PROVENANCE, "machine": machine, "host": "node1",
               "started_at": start, "previous": previous, "hypothesis": hypothesis, "evaluates": evaluates,
               "tags": ["study"]}]
    summary = dict(extra_summary or {})
    if acc is not None:
        summary["test/acc"] = acc
    if summary:
        events.append({"type": "summary", "values": summary})
    if state != "running":
        events.append({"type": "finish", "state": state, "time": start + steps})
    store.write_batch(Batch(run_id=run_id, events=events, keys=keys, steps=point_steps, values=values,
                            times=times, seqs=seqs))


def build_study_store(store) -> None:
    """Two experiments in a lineage: a baseline vs mhc comparison, then a follow-up that changes
    two things at once (a confound), has an evaluation-only run, a schedule alert and an override."""
    base = {"model": {"name": "vit", "n_layer": 4, "d_model": 128}, "lr": 0.1, "epochs": 3, "data": "cifar10",
            "streams": 1, "seed": 0}
    for seed, (acc_base, acc_mhc) in enumerate(((0.701, 0.722), (0.706, 0.725), (0.699, 0.728))):
        add_run(store, f"vit_001_baseline_s{seed}", experiment="vit_001", variant="baseline", seed=seed,
                config={**base, "seed": seed}, start=T0 + seed * 100, acc=acc_base,
                hypothesis="mHC with 4 streams beats the residual at equal steps")
        add_run(store, f"vit_001_mhc_s{seed}", experiment="vit_001", variant="mhc", seed=seed,
                config={**base, "streams": 4, "seed": seed}, start=T0 + 1000 + seed * 100, acc=acc_mhc)
    follow = {**base, "lr": 0.05, "epochs": 5}
    for seed in range(2):
        add_run(store, f"vit_002_baseline_s{seed}", experiment="vit_002", variant="baseline", seed=seed,
                config={**follow, "seed": seed}, start=T0 + 86_400 + seed * 100, acc=0.71 + seed * 0.004,
                previous="vit_001", lr_decays=seed == 0)
    add_run(store, "vit_002_baseline_eval_knn", experiment="vit_002", variant="baseline", seed=None,
            config={"eval_type": "knn", "tasks": ["cifar10"]}, start=T0 + 90_000, steps=2,
            evaluates="vit_002_baseline_s0", extra_summary={"test/knn_acc": 0.655})
    add_run(store, "vit_002_baseline_s2", experiment="vit_002", variant="baseline", seed=2,
            config={**follow, "seed": 2}, start=T0 + 91_000, state="running", steps=5)
    store.write_batch(Batch(run_id="vit_002_baseline_s1", events=[
        {"type": "alert", "kind": "schedule_mismatch", "metric": "lr", "step": 20, "severity": "warning",
         "message": "lr stayed at 0.1 while the config says linear decay", "value": 0.1, "time": T0 + 86_520}]))
    store.write_batch(Batch(run_id="vit_001_mhc_s2", events=[
        {"type": "status", "status": "valid", "reason": "checked the curves by hand"}]))
    store.write_batch(Batch(events=[
        {"type": "note", "scope": "experiment", "owner": "vit_002", "field": "observations",
         "value": "- the lr never decayed in seed 1\n- TBD: rerun seed 1 with the fixed scheduler"},
        {"type": "note", "scope": "run", "owner": "vit_001_mhc_s0", "field": "conclusion",
         "value": "Best run so far."},
    ]))


@pytest.fixture
def study_store():
    store = open_store()
    build_study_store(store)
    return store


@pytest.fixture
def fixtures_copy(tmp_path, monkeypatch):
    """The fixture notebooks copied under tmp_path/notes, with the working directory at tmp_path,
    so the paths imports record ('notes/log_basic.md') are the same on every machine."""
    target = tmp_path / "notes"
    shutil.copytree(FIXTURES, target)
    monkeypatch.chdir(tmp_path)
    return target


def read_vault(vault: Path) -> dict[str, bytes]:
    """Every file of a vault (state and cache included) by relative path."""
    return {p.relative_to(vault).as_posix(): p.read_bytes() for p in sorted(vault.rglob("*")) if p.is_file()}

