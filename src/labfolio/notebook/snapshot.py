"""Everything the notebook shows, read from the store once: experiments, runs, alerts, notes.

The writers never touch the store; they render a ``Snapshot``. Reading is the slow part of a
regeneration on a large store, so it is done in as few queries as the store allows: when the
store offers bulk reads (``alerts_for_runs``, ``note_fields_for_scope``) they are used, else the
per-run calls of the store's public API.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store.records import AlertRecord, ArtifactRecord, RunRecord
from .mdtext import safe_name

__all__ = [
    "PROJECT_OWNER",
    "IMPORTED_TAG",
    "ExperimentInfo",
    "Snapshot",
    "read_snapshot",
    "read_alerts",
    "read_note_fields",
    "read_artifacts",
    "dashboard_base_url",
    "is_imported",
    "imported_cells",
    "run_git",
    "run_speed",
    "config_lookup",
    "EPOCH_NAMES",
    "DATA_NAMES",
    "data_label",
    "machine_label",
    "epochs_short",
]

PROJECT_OWNER = ""  # owner of project-scope note fields: one vault per store
IMPORTED_TAG = "imported"


def is_imported(run: RunRecord) -> bool:
    """Whether the run came from an imported notebook (summary values only, no series)."""
    return IMPORTED_TAG in (run.tags or [])


def imported_cells(run: RunRecord) -> list[tuple[str, str]]:
    """The (column, cell text) pairs an imported row carried, in the order written."""
    cells = (run.provenance or {}).get("cells") or []
    return [(str(pair[0]), str(pair[1])) for pair in cells if isinstance(pair, (list, tuple)) and len(pair) == 2]


@dataclass
class ExperimentInfo:
    """One experiment with its runs and human notes."""

    name: str
    project: str
    previous: str | None
    tags: list[str]
    created_at: float
    variants: list[str]  # store order, then variants only seen on runs
    baseline: str | None
    runs: list[RunRecord] = field(default_factory=list)  # training runs, oldest first
    eval_runs: list[RunRecord] = field(default_factory=list)  # evaluation-only runs, oldest first
    notes: dict[str, str] = field(default_factory=dict)
    variant_notes: dict[str, dict[str, str]] = field(default_factory=dict)
    folder: str = ""  # folder name under experiments/

    @property
    def started_at(self) -> float | None:
        times = [r.started_at for r in (*self.runs, *self.eval_runs) if r.started_at is not None]
        return min(times) if times else None

    @property
    def ended_at(self) -> float | None:
        times = [t for r in (*self.runs, *self.eval_runs) for t in (r.ended_at, r.last_time, r.started_at)
                 if t is not None]
        return max(times) if times else None

    @property
    def sort_time(self) -> float:
        started = self.started_at
        return started if started is not None else self.created_at

    def runs_of(self, variant: str) -> list[RunRecord]:
        return [r for r in self.runs if r.variant == variant]

    def evals_of(self, variant: str) -> list[RunRecord]:
        return [r for r in self.eval_runs if r.variant == variant]


@dataclass
class Snapshot:
    """The store as the notebook needs it."""

    experiments: list[ExperimentInfo]  # oldest first
    runs: list[RunRecord]  # every run, oldest first
    alerts: dict[str, list[AlertRecord]]
    run_notes: dict[str, dict[str, str]]
    project_notes: dict[str, str]
    base_url: str | None = None
    artifacts: dict[str, list[ArtifactRecord]] = field(default_factory=dict)
    by_name: dict[str, ExperimentInfo] = field(default_factory=dict)
    run_by_id: dict[str, RunRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {exp.name: exp for exp in self.experiments}
        self.run_by_id = {run.run_id: run for run in self.runs}

    @property
    def newest_time(self) -> float | None:
        """The latest time any run reports: the vault's 'updated' date (never the clock)."""
        times = [t for r in self.runs for t in (r.ended_at, r.last_time, r.started_at) if t is not None]
        return max(times) if times else None

    def experiment_of(self, run: RunRecord) -> ExperimentInfo | None:
        return self.by_name.get(run.experiment)


def dashboard_base_url(root: str | os.PathLike | None = None) -> str | None:
    """The dashboard URL run links point at: ``LABFOLIO_UI_BASE_URL``, else ``[tool.labfolio.ui]
    base_url`` in the project's pyproject.toml; None when neither is set."""
    env = os.environ.get("LABFOLIO_UI_BASE_URL")
    if env:
        return env.rstrip("/")
    if root is None:
        return None
    pyproject = Path(root) / "pyproject.toml"
    if not pyproject.is_file():
        return None
    import tomllib

    try:
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError):
        return None
    url = document.get("tool", {}).get("labfolio", {}).get("ui", {}).get("base_url")
    return str(url).rstrip("/") if url else None


def read_alerts(store, run_ids: Iterable[str]) -> dict[str, list[AlertRecord]]:
    """Alerts of many runs (one query when the store supports it)."""
    run_ids = list(run_ids)
    bulk = getattr(store, "alerts_for_runs", None)
    if bulk is not None:
        found = bulk(run_ids)
        return {run_id: list(found.get(run_id, [])) for run_id in run_ids}
    return {run_id: store.alerts(run_id) for run_id in run_ids}


def read_artifacts(store, run_ids: Iterable[str]) -> dict[str, list[ArtifactRecord]]:
    """Artifacts of many runs (one query when the store supports it)."""
    run_ids = list(run_ids)
    bulk = getattr(store, "artifacts_for_runs", None)
    if bulk is not None:
        found = bulk(run_ids)
        return {run_id: list(found.get(run_id, [])) for run_id in run_ids}
    return {run_id: store.artifacts(run_id) for run_id in run_ids}


def read_note_fields(store, scope: str, owners: Iterable[str]) -> dict[str, dict[str, str]]:
    """Note fields of many owners in one scope (one query when the store supports it)."""
    owners = list(owners)
    bulk = getattr(store, "note_fields_for_scope", None)
    if bulk is not None:
        found = bulk(scope)  # built for this call, so its dicts are handed out without copies
        return {owner: found.get(owner) or {} for owner in owners}
    return {owner: store.note_fields(scope, owner) for owner in owners}


def read_snapshot(store, *, root: str | os.PathLike | None = None, base_url: str | None = None,
                  with_artifacts: bool = False) -> Snapshot:
    """Read everything the vault shows from `store`."""
    runs = sorted(store.list_runs(), key=lambda r: (r.started_at if r.started_at is not None else r.created_at,
                                                    r.created_at, r.run_id))
    experiment_rows = store.experiments()
    infos: dict[str, ExperimentInfo] = {}
    for row in experiment_rows:
        if row["name"] in infos:  # the same name in two projects: one notebook entry
            infos[row["name"]].variants += [v for v in row["variants"] if v not in infos[row["name"]].variants]
            continue
        infos[row["name"]] = ExperimentInfo(
            name=row["name"], project=row["project"], previous=row["previous"], tags=list(row["tags"]),
            created_at=row["created_at"], variants=list(row["variants"]), baseline=row["baseline"])
    for run in runs:
        info = infos.get(run.experiment)
        if info is None:
            continue  # a run without an experiment shows in the master log only
        if run.variant not in info.variants:
            info.variants.append(run.variant)
        (info.eval_runs if run.is_evaluation else info.runs).append(run)
    experiments = sorted(infos.values(), key=lambda e: (e.created_at, e.name))
    taken: dict[str, str] = {}
    for info in experiments:
        folder = safe_name(info.name)
        while folder.lower() in taken and taken[folder.lower()] != info.name:
            folder += "_"
        taken[folder.lower()] = info.name
        info.folder = folder
    exp_notes = read_note_fields(store, "experiment", [e.name for e in experiments])
    variant_owners = [f"{e.name}/{v}" for e in experiments for v in e.variants]
    variant_notes = read_note_fields(store, "variant", variant_owners)
    for info in experiments:
        info.notes = exp_notes.get(info.name, {})
        info.variant_notes = {v: variant_notes.get(f"{info.name}/{v}", {}) for v in info.variants}
    run_ids = [r.run_id for r in runs]
    snapshot = Snapshot(
        experiments=experiments, runs=runs, alerts=read_alerts(store, run_ids),
        run_notes=read_note_fields(store, "run", run_ids),
        project_notes=store.note_fields("project", PROJECT_OWNER),
        base_url=base_url if base_url is not None else dashboard_base_url(root),
        artifacts=read_artifacts(store, run_ids) if with_artifacts else {})
    return snapshot


# -- small readers of a run's facts ------------------------------------------------------------

# Types that are never mappings: checked by identity before the (slower) Mapping ABC test, since
# the master log looks up a dozen config keys for each of thousands of runs
_LEAF_TYPES = frozenset({str, int, float, bool, type(None), list, tuple})


def _is_mapping(node: Any) -> bool:
    kind = type(node)
    return kind is dict or (kind not in _LEAF_TYPES and isinstance(node, Mapping))


@functools.lru_cache(maxsize=1024)
def _dotted(name: str) -> tuple[str, ...]:
    return tuple(name.split("."))


def config_lookup(config: Mapping[str, Any], names: Iterable[str]) -> Any:
    """The first of `names` (dotted paths allowed) present in `config`, else None."""
    for name in names:
        node: Any = config
        for part in _dotted(name):
            if type(node) is dict:  # the common case: a missing key and a None value both end the path
                node = node.get(part)
            elif _is_mapping(node) and part in node:
                node = node[part]
            else:
                node = None
            if node is None:
                break
        if node is None:
            continue
        if not _is_mapping(node):
            return node
        if "name" in node and not _is_mapping(node["name"]):
            return node["name"]
    return None


def run_git(run: RunRecord) -> str:
    """'`a1b2c3d` v0.3' from the run's provenance, '--' when unknown."""
    git = (run.provenance or {}).get("git") or {}
    if not isinstance(git, Mapping):
        return "--"
    sha = git.get("short_sha") or (git.get("sha") or "")[:7]
    tags = git.get("tags") or []
    text = f"`{sha}`" if sha else ""
    if git.get("dirty"):
        text += " (dirty)" if text else ""
    if tags:
        text = (text + " " if text else "") + " ".join(str(t) for t in tags)
    return text or "--"


EPOCH_NAMES = ("epochs", "n_epochs", "num_epochs", "max_epochs", "train.epochs")  # config keys that plan epochs


def machine_label(run: RunRecord) -> str:
    """The machine a run trained on, with its GPUs when it had any: `vm (1× H200)`.

    Speeds are only comparable on the same accelerator, and host names rarely say which it was.
    """
    name = run.machine or run.host
    gpus = ((run.provenance or {}).get("machine") or {}).get("gpus") or []
    models = [str(g.get("name") or "").removeprefix("NVIDIA ").strip() for g in gpus if isinstance(g, dict)]
    models = [m for m in models if m]
    if not models:
        return name or "--"
    counted = ", ".join(f"{models.count(m)}× {m}" for m in dict.fromkeys(models))
    return f"{name} ({counted})" if name else counted


# config keys that name a run's data; the lm recipe's `text` is a file path
DATA_NAMES = ("data", "dataset", "data.name", "dataset_name", "text")


def data_label(config: Mapping[str, Any], names: Iterable[str] = DATA_NAMES) -> str | None:
    """The run's data as a table cell shows it: a name as given, a path by its file name
    (`.devdata/tinyshakespeare.txt` -> `tinyshakespeare.txt`), None if the config names none."""
    value = config_lookup(config, names)
    if value is None:
        return None
    text = str(value)
    # a folder path ending in "/" still names its folder
    return Path(text).name or text if ("/" in text or os.sep in text) else text


def epochs_short(run: RunRecord) -> float | None:
    """The ``epoch`` a run logged last when it is short of the epochs its config plans (a step
    cap, a killed run), else None: so that the planned number is not read as what ran."""
    planned = config_lookup(run.config, EPOCH_NAMES)
    entry = run.summary.get("epoch")
    reached = None if entry is None else entry.max if entry.max is not None else entry.value
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (planned, reached))
    return float(reached) if numbers and reached < planned - 1e-6 else None


def run_speed(run: RunRecord) -> float | None:
    """Steps per second over the logged span, or an imported/overridden 'steps_per_s' summary."""
    speed = run.throughput.get("steps_per_s")
    if speed is None:
        entry = run.summary.get("steps_per_s")
        value = entry.value if entry is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            speed = float(value)
    return speed

