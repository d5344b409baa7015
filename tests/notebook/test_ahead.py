"""Experiments rendered ahead in the writer's process: the vault written with their results, notes
and log pieces is the vault this process writes alone, byte for byte; without them (no worker, a
worker that dies) everything is computed here."""

from __future__ import annotations

import os
from concurrent.futures import Future, wait

import pytest

from labfolio.notebook import ahead as work_ahead
from labfolio.notebook import write_vault, writer
from labfolio.notebook.ahead import ExperimentsAhead
from labfolio.store import open_store

from .conftest import T0, add_run, read_vault

EXPERIMENTS = 9


@pytest.fixture(autouse=True)
def single_threaded(monkeypatch):
    """The worker starts only in a single-threaded process; a test session may have threads left
    by earlier tests, so the count is pinned here (as in test_writer.py)."""
    monkeypatch.setattr(writer.threading, "active_count", lambda: 1)


@pytest.fixture
def lineage_store():
    """A few experiments in a lineage, each a baseline and an mhc variant over three seeds."""
    store = open_store()
    for e in range(EXPERIMENTS):
        name = f"exp_{e:02d}"
        for v, variant in enumerate(("baseline", "mhc")):
            for seed in range(3):
                add_run(store, f"{name}_{variant}_s{seed}", experiment=name, variant=variant, seed=seed,
                        config={"lr": 0.1 / (e + 1), "streams": 4 if v else 1, "seed": seed},
                        start=T0 + e * 3600 + v * 600 + seed * 60, acc=0.7 + 0.01 * v + 0.001 * seed * e,
                        steps=8, previous=f"exp_{e - 1:02d}" if e else None)
    return store


def _counting_takes(monkeypatch) -> list[int]:
    """ExperimentsAhead.take made to wait for its chunk, so the worker's work is used whatever the
    machine's timing; returns [experiments taken from the worker]."""
    taken = [0]
    take = ExperimentsAhead.take

    def waiting_take(self, exp):
        future = self._chunk_of.get(exp.name)
        if future is not None:
            wait([future], timeout=60)
        found = take(self, exp)
        taken[0] += found is not None
        return found

    monkeypatch.setattr(ExperimentsAhead, "take", waiting_take)
    return taken


def test_a_vault_written_with_experiments_rendered_by_the_worker_is_the_same(lineage_store, tmp_path, monkeypatch):
    here = write_vault(lineage_store, tmp_path / "here", plots=False, root=tmp_path)
    monkeypatch.setattr(work_ahead, "MIN_EXPERIMENTS", 1)
    monkeypatch.setattr(work_ahead, "CHUNK", 2)
    monkeypatch.setattr(work_ahead, "IN_FLIGHT", 1)
    taken = _counting_takes(monkeypatch)
    there = write_vault(lineage_store, tmp_path / "there", plots=False, root=tmp_path)
    assert taken[0] > 0
    assert there.written == here.written
    assert read_vault(tmp_path / "there") == read_vault(tmp_path / "here")
    # and nothing is computed ahead when nothing changed
    again = write_vault(lineage_store, tmp_path / "there", plots=False, root=tmp_path)
    assert again.files_written == 0 and taken[0] > 0


def _dying_worker(names):
    os._exit(1)  # the worker dies mid-chunk, as under the OOM killer


def test_the_experiments_of_a_worker_that_died_are_rendered_here(lineage_store, tmp_path, monkeypatch):
    here = write_vault(lineage_store, tmp_path / "here", plots=False, root=tmp_path)
    monkeypatch.setattr(work_ahead, "MIN_EXPERIMENTS", 1)
    monkeypatch.setattr(work_ahead, "_render_in_worker", _dying_worker)
    taken = _counting_takes(monkeypatch)
    there = write_vault(lineage_store, tmp_path / "there", plots=False, root=tmp_path)
    assert taken[0] == 0
    assert there.written == here.written
    assert read_vault(tmp_path / "there") == read_vault(tmp_path / "here")


class _Exp:
    def __init__(self, name: str) -> None:
        self.name = name


class _InlineWriter:
    """A writer whose worker runs each submitted call at once, in this process."""

    forks = True

    def __init__(self) -> None:
        self.busy = False
        self.calls: list[list[str]] = []

    def submit(self, function, *args):
        self.calls.append(list(args[0]))
        future: Future = Future()
        future.set_result([(name, {"for": name}) for name in args[0]])
        return future


def test_chunks_are_taken_from_the_end_and_stop_short_of_the_renderer(monkeypatch):
    monkeypatch.setattr(work_ahead, "CHUNK", 3)
    monkeypatch.setattr(work_ahead, "IN_FLIGHT", 2)
    experiments = [_Exp(f"e{i}") for i in range(12)]
    inline = _InlineWriter()
    ahead = ExperimentsAhead(object(), inline, experiments)
    inline.busy = True
    ahead.top_up()
    assert inline.calls == []  # the notes' files first
    inline.busy = False
    ahead.top_up()
    assert inline.calls == [["e9", "e10", "e11"], ["e6", "e7", "e8"]]
    assert ahead.take(experiments[0]) is None  # computed here: no chunk holds it
    assert ahead.take(experiments[10]) == {"for": "e10"}
    ahead.top_up()  # the next chunk (e3-e5) would start within two chunks of the renderer (e10)
    assert len(inline.calls) == 2
    assert ahead.take(experiments[7]) == {"for": "e7"}
    assert ahead.take(experiments[7]) is None  # handed out once
    ahead.close()
    assert work_ahead._context is None
