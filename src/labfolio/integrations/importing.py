"""What every importer shares: stable run ids, the exactly-once write, and the import report.

An imported run enters the store in one batch (one transaction): its start event, config,
summary, notes, every point and its final state. The batch carries a journal guard, so that two
imports of the same source racing each other, or one repeated later, write the run once: the
store applies a guarded batch only while the run's drained position still equals the guard's
start, and the first import moves it on.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..store import Batch

__all__ = ["ImportedRun", "Series", "stable_run_id", "slug", "open_target_store", "already_imported",
           "write_imported_run", "number_or_none", "finite_time", "source_label"]

# The guard's positions: a run written by an importer is "drained" up to 1 and no journal exists.
_IMPORT_GUARD_FROM, _IMPORT_GUARD_TO = 0, 1
_SLUG_LENGTH = 40


@dataclass
class Series:
    """One metric's points in logging order."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def add(self, step: int, value: float, when: float) -> None:
        self.steps.append(int(step))
        self.values.append(float(value))
        self.times.append(float(when))


@dataclass(frozen=True)
class ImportedRun:
    """What happened to one source: imported now, or already in the store."""

    run_id: str
    source: str  # the folder or file it came from
    imported: bool  # False: the store already had it, nothing was written
    points: int = 0
    skipped: dict = field(default_factory=dict)  # what was not imported: reason -> count

    def describe(self) -> str:
        if not self.imported:
            return f"already imported: {self.run_id} (from {self.source})"
        extra = "".join(f", skipped {n} {reason}" for reason, n in sorted(self.skipped.items()) if n)
        return f"imported {self.run_id}: {self.points} point(s) from {self.source}{extra}"


def slug(text: str) -> str:
    """A run-id-safe rendering of ``text``: letters, digits, ``-``, ``_`` and ``.``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")
    return cleaned[:_SLUG_LENGTH].rstrip("_.") or "run"


def stable_run_id(prefix: str, readable: str, identity: str | None = None) -> str:
    """``prefix_readable`` plus, when ``identity`` is given, a short hash of it.

    The same source always yields the same id, which is what makes re-imports find their run.
    """
    parts = [prefix, slug(readable)]
    if identity is not None:
        parts.append(hashlib.sha256(identity.encode("utf-8")).hexdigest()[:10])
    return "_".join(parts)


def open_target_store(store):
    """``store`` if it is an open store, else the store it names (None: the project's store)."""
    if hasattr(store, "write_batch"):
        return store
    from ..store import open_store

    return open_store(store)


def already_imported(store, run_id: str) -> bool:
    # An exact lookup: get_run() would also accept a unique prefix of a longer id.
    return store.run_journal_position(run_id) is not None


def number_or_none(value: Any) -> float | None:
    """The value as a float when it is a real number (bools count as 0/1), else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        import numpy as np

        if isinstance(value, np.generic) and np.issubdtype(type(value), np.number):
            return float(value)
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    return None


def write_imported_run(store, *, run_id: str, start: dict, series: dict[str, Series],
                       summary: dict | None = None, notes: Iterable[tuple[str, str]] = (),
                       state: str = "finished", ended_at: float | None = None,
                       exit_reason: str | None = None, extra_events: Iterable[dict] = ()) -> tuple[bool, int]:
    """Write one imported run in a single guarded batch; (written, points).

    ``start`` holds the start event's fields (project, experiment, variant, seed, name, tags,
    notes, config, provenance, host, started_at, ...). ``notes`` are (field, text) pairs stored as
    the run's note fields.
    """
    keys, steps, values, times, seqs = [], [], [], [], []
    last_time = start.get("started_at")
    for key, points in series.items():
        n = len(points.steps)
        keys.extend([key] * n)
        steps.extend(points.steps)
        values.extend(points.values)
        times.extend(points.times)
        seqs.extend(range(1, n + 1))  # a chunk's identity is (run, key, first seq)
        if points.times:
            newest = max(points.times)
            last_time = newest if last_time is None else max(last_time, newest)
    events: list[dict] = [{"type": "start", "run_id": run_id, "state": "running", **start}]
    if summary:
        events.append({"type": "summary", "values": summary})
    for note_field, text in notes:
        events.append({"type": "note", "scope": "run", "owner": run_id, "field": note_field, "value": text})
    events.extend(extra_events)
    finish_time = ended_at if ended_at is not None else (last_time if last_time is not None else time.time())
    events.append({"type": "finish", "state": state, "time": finish_time, "exit_reason": exit_reason})
    batch = Batch(run_id=run_id, events=events, keys=keys, steps=steps, values=values, times=times,
                  seqs=seqs, journal_from=_IMPORT_GUARD_FROM, journal_to=_IMPORT_GUARD_TO)
    result = store.write_batch(batch)
    return result.applied, (result.points if result.applied else 0)


def finite_time(value: Any) -> float | None:
    """A usable unix time, or None for a missing, zero or non-finite one."""
    number = number_or_none(value)
    if number is None or not math.isfinite(number) or number <= 0:
        return None
    return number


def source_label(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))

