"""Skipping work whose inputs did not change: per-experiment fingerprints and cached fragments.

An experiment's notes (``experiment.md``, its variant notes), its entry of the chronological log,
its rows of the master log and its baseline table are pure functions of a small part of the
snapshot. ``Fingerprints.experiment`` hashes exactly that part:

- the experiment's own fields, human notes and variant notes, and its folder;
- every field of each of its runs (summaries included), their alerts and run notes;
- the previous experiment (its name, folder and runs: the config diff and the link), and the
  experiments that name this one as previous (the "Next" links);
- evaluation-only runs elsewhere that evaluate its runs, and the runs its own evaluations point at
  (their link targets);
- its plots, the project rules, the dashboard base URL, and the version and source code of
  labfolio's notebook and analysis packages (so a new labfolio re-renders everything).

A note whose fingerprint matches the one recorded when it was written, and whose file still holds
exactly what was written then, is left alone without being rendered. The pieces of the two
vault-wide logs are kept in ``.labfolio/fragments.json`` under the same fingerprint, so a changed
experiment costs its own entry and rows, not a re-render of every other one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import marshal
import operator
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..store.records import AlertRecord, RunRecord, SummaryEntry

__all__ = ["RENDER_FORMAT_VERSION", "FRAGMENTS_FILE", "code_fingerprint", "Fingerprints", "FragmentCache"]

RENDER_FORMAT_VERSION = 1  # bump to force every note to re-render (the code hash usually does it)
FRAGMENTS_FILE = "fragments.json"

# Taken from the record types themselves, so a field added to a run later is fingerprinted too.
_run_fields = operator.attrgetter(*(f.name for f in fields(RunRecord) if f.name != "summary"))
_summary_fields = operator.attrgetter(*(f.name for f in fields(SummaryEntry)))
_alert_fields = operator.attrgetter(*(f.name for f in fields(AlertRecord)))
_CODE_PACKAGES = ("notebook", "analysis")
_CODE_FILES = ("store/records.py",)


def _digest(value: Any) -> str:
    """A stable hash of plain data. marshal version 2 writes no back-references, so equal values
    give equal bytes whatever objects they share; anything marshal refuses is hashed by repr."""
    try:
        data = marshal.dumps(value, 2)
    except ValueError:
        data = repr(value).encode("utf-8")
    return hashlib.sha1(data).hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """labfolio's version and the source of the code that computes every note."""
    from .. import __version__

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha1(f"{RENDER_FORMAT_VERSION}|{__version__}".encode())
    paths = [path for package in _CODE_PACKAGES for path in sorted((root / package).glob("*.py"))]
    paths += [root / name for name in _CODE_FILES]
    for path in paths:
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        except OSError:  # an install without sources: the version alone has to do
            continue
    return digest.hexdigest()


class Fingerprints:
    """Fingerprints of the experiments of one rendering context (see the module doc)."""

    def __init__(self, ctx) -> None:
        snapshot = ctx.snapshot
        self._ctx = ctx
        self._global = _digest((code_fingerprint(), snapshot.base_url, repr(list(ctx.rules))))
        self._runs: dict[str, str] = {}
        self._experiments: dict[str, str] = {}
        self._followers: dict[str, list] = {}
        for exp in snapshot.experiments:
            if exp.previous:
                self._followers.setdefault(exp.previous, []).append(exp)

    def run(self, run: RunRecord) -> str:
        """A run's fields, summaries, alerts and notes."""
        digest = self._runs.get(run.run_id)
        if digest is None:
            snapshot = self._ctx.snapshot
            summary = tuple((key, _summary_fields(entry)) for key, entry in run.summary.items())
            alerts = tuple(_alert_fields(alert) for alert in snapshot.alerts.get(run.run_id, ()))
            notes = tuple(sorted(snapshot.run_notes.get(run.run_id, {}).items()))
            digest = _digest((_run_fields(run), summary, alerts, notes))
            self._runs[run.run_id] = digest
        return digest

    def _target(self, run_id: str | None) -> tuple:
        """What a link to `run_id` is made of: whether it exists, and its experiment's folder."""
        snapshot = self._ctx.snapshot
        run = snapshot.run_by_id.get(run_id or "")
        if run is None:
            return (run_id,)
        owner = snapshot.by_name.get(run.experiment)
        return run_id, run.experiment, run.variant, owner.folder if owner is not None else None

    def experiment(self, exp) -> str:
        digest = self._experiments.get(exp.name)
        if digest is not None:
            return digest
        ctx = self._ctx
        previous = ctx.snapshot.by_name.get(exp.previous) if exp.previous else None
        evaluations = []
        for variant in exp.variants:
            for run in ctx.evaluations_of(exp, variant):
                evaluations.append((variant, self.run(run), self._target(run.evaluates)))
        parts = (
            self._global,
            (exp.name, exp.project, exp.previous, exp.tags, exp.created_at, exp.variants, exp.baseline, exp.folder),
            tuple(sorted(exp.notes.items())),
            tuple((variant, tuple(sorted(notes.items()))) for variant, notes in sorted(exp.variant_notes.items())),
            tuple(self.run(run) for run in exp.runs),
            tuple((self.run(run), self._target(run.evaluates)) for run in exp.eval_runs),
            None if previous is None else (previous.name, previous.folder, tuple(self.run(r) for r in previous.runs)),
            tuple((follower.name, follower.folder) for follower in self._followers.get(exp.name, ())),
            tuple(evaluations),
            tuple(tuple(plot) for plot in ctx.plots.get(exp.name, ())),
        )
        digest = self._experiments[exp.name] = _digest(parts)
        return digest


class FragmentCache:
    """Rendered pieces per experiment, valid while the experiment's fingerprint is unchanged.

    ``{"version": 1, "experiments": {name: {"fp": ..., "parts": {part: JSON value}}}}``; entries of
    experiments not asked for in a regeneration are dropped when it is saved.
    """

    _VERSION = 1

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, dict] = {}
        self._used: set[str] = set()
        self._dirty = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = None
            if isinstance(loaded, dict) and loaded.get("version") == self._VERSION \
                    and isinstance(loaded.get("experiments"), dict):
                self._entries = loaded["experiments"]

    def get(self, owner: str, fingerprint: str, part: str, compute: Callable[[], Any]) -> Any:
        """The cached `part` of `owner` when its fingerprint matches, else compute() (and keep it).
        Values go through JSON, so compute() must return JSON data (lists of strings here)."""
        self._used.add(owner)
        entry = self._entries.get(owner)
        if not isinstance(entry, dict) or entry.get("fp") != fingerprint or not isinstance(entry.get("parts"), dict):
            entry = self._entries[owner] = {"fp": fingerprint, "parts": {}}
            self._dirty = True
        parts = entry["parts"]
        if part in parts:
            return parts[part]
        value = parts[part] = compute()
        self._dirty = True
        return value

    def save(self) -> bool:
        if self.path is None:
            return False
        stale = set(self._entries) - self._used
        if not self._dirty and not stale:
            return False
        for owner in stale:
            del self._entries[owner]
        from .state import write_if_changed

        text = json.dumps({"version": self._VERSION, "experiments": self._entries}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)
        return write_if_changed(self.path, text)
