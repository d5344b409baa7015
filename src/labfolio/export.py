"""Runs out of the store: DataFrames (pandas or polars) and CSV, Parquet or JSON files.

Two shapes cover what people do with exported runs:

- **history**: one row per logged point, ``run_id, key, step, value, time`` (long), or one
  column per metric by step (wide, for a single run);
- **runs**: one row per run with its metadata, ``config.<key>`` columns (nested keys joined with
  dots) and ``summary.<key>`` columns (the headline value: an explicit override, else the last
  logged value), ready for ``groupby(["experiment", "variant"])``.

The selection is the one ``labfolio runs`` uses: explicit run ids and/or filters on experiment,
variant, state, tag, project and a search string.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import ConfigError

__all__ = [
    "EXPORT_FORMATS",
    "FRAME_BACKENDS",
    "RUN_COLUMNS",
    "SUMMARY_STATS",
    "ExportResult",
    "history_frame",
    "histories_frame",
    "runs_frame",
    "run_rows",
    "select_runs",
    "export_run",
    "export_runs",
]

EXPORT_FORMATS = ("csv", "parquet", "json")
FRAME_BACKENDS = ("pandas", "polars")
# Columns of the one-row-per-run table, before the config.* and summary.* columns.
RUN_COLUMNS = ("run_id", "project", "experiment", "variant", "seed", "name", "state", "status",
               "status_reason", "tags", "evaluates", "host", "machine", "batch_size",
               "tokens_per_step", "started_at", "ended_at", "duration_s", "last_step",
               "point_count", "steps_per_s", "samples_per_s", "tokens_per_s", "git_sha")
SUMMARY_STATS = ("value", "last", "min", "max", "best", "count")
_FILTERS = ("experiment", "variant", "state", "tag", "project", "search")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    runs: int  # how many runs went into the file
    points: int  # how many metric points (0 for a runs table)


# ---------------------------------------------------------------------------------------------
# dependencies, imported only when a frame or a Parquet file is asked for
def _require_pandas():
    try:
        import pandas as pd
    except ModuleNotFoundError:
        raise ConfigError("this needs pandas: pip install 'labfolio[export]'") from None
    return pd


def _require_polars():
    try:
        import polars as pl
    except ModuleNotFoundError:
        raise ConfigError("backend='polars' needs polars: pip install 'labfolio[polars]'") from None
    return pl


def _check_backend(backend: str) -> str:
    if backend not in FRAME_BACKENDS:
        raise ConfigError(f"unknown frame backend {backend!r}: use one of {', '.join(FRAME_BACKENDS)}")
    return backend


def _frame(columns: dict[str, Any], backend: str):
    """A DataFrame of ``backend`` from equal-length columns (numpy arrays or lists)."""
    if _check_backend(backend) == "polars":
        pl = _require_polars()
        return pl.DataFrame([
            pl.Series(name, values) if isinstance(values, np.ndarray) and values.dtype != object
            else pl.Series(name, list(values), strict=False)
            for name, values in columns.items()])
    pd = _require_pandas()
    return pd.DataFrame(columns)


# ---------------------------------------------------------------------------------------------
# history
def _history_columns(store, run_ids: Sequence[str], keys=None, *, with_run_id: bool) -> dict[str, Any]:
    parts: dict[str, list] = {"run_id": [], "key": [], "step": [], "value": [], "time": []}
    for run_id in run_ids:
        for h in store.history(run_id, keys).values():
            n = len(h.steps)
            parts["run_id"].append(np.full(n, run_id, dtype=object))
            parts["key"].append(np.full(n, h.key, dtype=object))
            parts["step"].append(h.steps)
            parts["value"].append(h.values)
            parts["time"].append(h.times)
    empty = {"run_id": object, "key": object, "step": np.int64, "value": np.float64, "time": np.float64}
    columns = {name: (np.concatenate(chunks) if chunks else np.array([], dtype=empty[name]))
               for name, chunks in parts.items()}
    if not with_run_id:
        del columns["run_id"]
    return columns


def history_frame(store, run_id: str, keys=None, *, wide: bool = False, backend: str = "pandas"):
    """One run's points as a DataFrame: long (key, step, value, time) or wide (one column per key).

    ``backend="polars"`` returns a polars DataFrame. In the wide view several points of one key at
    one step collapse to the last one logged; pandas indexes it by step, polars keeps a ``step``
    column.
    """
    _check_backend(backend)
    columns = _history_columns(store, [run_id], keys, with_run_id=False)
    if backend == "polars":
        pl = _require_polars()
        long = pl.DataFrame({"key": pl.Series("key", columns["key"].tolist(), dtype=pl.String),
                             "step": columns["step"], "value": columns["value"], "time": columns["time"]})
        if not wide:
            return long
        if long.height == 0:
            return pl.DataFrame({"step": pl.Series("step", [], dtype=pl.Int64)})
        return long.pivot(on="key", index="step", values="value", aggregate_function="last").sort("step")
    pd = _require_pandas()
    long = pd.DataFrame(columns)
    if not wide:
        return long
    return long.pivot_table(index="step", columns="key", values="value", aggfunc="last").sort_index()


def histories_frame(store, run_ids: Iterable[str] | None = None, keys=None, *, backend: str = "pandas",
                    **filters):
    """The points of many runs in one long frame: ``run_id, key, step, value, time``.

    Runs are ``run_ids`` and/or those matching ``filters`` (see ``select_runs``).
    """
    records = select_runs(store, run_ids, **filters)
    columns = _history_columns(store, [r.run_id for r in records], keys, with_run_id=True)
    return _frame(columns, backend)


# ---------------------------------------------------------------------------------------------
# one row per run
def select_runs(store, run_ids: Iterable[str] | None = None, *, experiment: str | None = None,
                variant: str | None = None, state: str | None = None, tag: str | None = None,
                project: str | None = None, search: str | None = None, limit: int | None = None) -> list:
    """Run records: the named ``run_ids`` (unique prefixes accepted), narrowed by the filters, or
    every run matching the filters when no ids are given. Newest first, like ``labfolio runs``."""
    filters = {"experiment": experiment, "variant": variant, "state": state, "tag": tag,
               "project": project, "search": search}
    if run_ids is None:
        return store.list_runs(**filters, limit=limit)
    records, seen = [], set()
    for run_id in run_ids:
        record = store.get_run(run_id)
        if record.run_id not in seen and _matches(record, filters):
            seen.add(record.run_id)
            records.append(record)
    return records[:limit] if limit is not None else records


def _matches(record, filters: dict) -> bool:
    for name in ("experiment", "variant", "state", "project"):
        if filters[name] is not None and getattr(record, name) != filters[name]:
            return False
    if filters["tag"] is not None and filters["tag"] not in record.tags:
        return False
    needle = filters["search"]
    if needle and not any(needle in (value or "") for value in
                          (record.run_id, record.name, record.experiment, record.variant)):
        return False
    return True


def _flatten(mapping: dict, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _summary_cell(entry, stat: str):
    return entry.value if stat == "value" else getattr(entry, stat)


def run_rows(records, summary_stats: Sequence[str] = ("value",)) -> tuple[list[str], list[dict]]:
    """The one-row-per-run table as (columns, rows of plain Python values)."""
    unknown = [s for s in summary_stats if s not in SUMMARY_STATS]
    if unknown:
        raise ConfigError(f"unknown summary stat(s) {unknown}: use any of {', '.join(SUMMARY_STATS)}")
    rows, config_keys, summary_keys = [], {}, {}
    for r in records:
        throughput = r.throughput
        row = {
            "run_id": r.run_id, "project": r.project, "experiment": r.experiment, "variant": r.variant,
            "seed": r.seed, "name": r.name, "state": r.state, "status": r.status,
            "status_reason": r.status_reason, "tags": ",".join(r.tags), "evaluates": r.evaluates,
            "host": r.host, "machine": r.machine, "batch_size": r.batch_size,
            "tokens_per_step": r.tokens_per_step, "started_at": r.started_at, "ended_at": r.ended_at,
            "duration_s": r.duration_s, "last_step": r.last_step, "point_count": r.point_count,
            "steps_per_s": throughput.get("steps_per_s"), "samples_per_s": throughput.get("samples_per_s"),
            "tokens_per_s": throughput.get("tokens_per_s"),
            "git_sha": ((r.provenance or {}).get("git") or {}).get("sha"),
        }
        config = _flatten(r.config or {}, "config.")
        row.update(config)
        config_keys.update(dict.fromkeys(config))
        for key, entry in r.summary.items():
            for stat in summary_stats:
                column = f"summary.{key}" if stat == "value" else f"summary.{key}.{stat}"
                row[column] = _summary_cell(entry, stat)
                summary_keys[column] = None
        rows.append(row)
    columns = [*RUN_COLUMNS, *sorted(config_keys), *sorted(summary_keys)]
    for column in columns[len(RUN_COLUMNS):]:
        _make_column_uniform(rows, column)
    return columns, rows


def _make_column_uniform(rows: list[dict], column: str) -> None:
    """Give a column one type across runs, so Parquet and polars accept it.

    Numbers stay numbers (ints widen to floats when mixed with floats). Anything else, and a
    column mixing numbers with text, becomes text; lists and dicts become JSON.
    """
    values = [row.get(column) for row in rows]
    kinds = {_kind(v) for v in values if v is not None}
    if kinds <= {"bool"} or kinds <= {"int"} or kinds <= {"float"} or kinds <= {"str"}:
        return
    if kinds <= {"int", "float"}:
        for row in rows:
            if row.get(column) is not None:
                row[column] = float(row[column])
        return
    for row in rows:
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            row[column] = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "other"


def runs_frame(store, run_ids: Iterable[str] | None = None, *, backend: str = "pandas",
               summary_stats: Sequence[str] = ("value",), **filters):
    """One row per run: metadata, ``config.*`` and ``summary.*`` columns, as pandas or polars.

    ``summary_stats`` adds ``summary.<key>.<stat>`` columns (last, min, max, best, count) next
    to the headline ``summary.<key>`` value. Filters are those of ``select_runs``.
    """
    _check_backend(backend)
    columns, rows = run_rows(select_runs(store, run_ids, **filters), summary_stats)
    return _frame({c: [row.get(c) for row in rows] for c in columns}, backend)


# ---------------------------------------------------------------------------------------------
# files
def _resolve_format(path: Path, fmt: str | None) -> str:
    fmt = (fmt or path.suffix.lstrip(".") or "csv").lower()
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    return fmt


def _require_parquet():
    try:
        import pyarrow  # noqa: F401  (pandas needs it for parquet; check first for a clear message)
    except ModuleNotFoundError:
        raise ConfigError("Parquet export needs pyarrow: pip install 'labfolio[export]'") from None
    return _require_pandas()


def _json_safe(value):
    """JSON has no NaN or infinity: write them as null, as most JSON readers expect."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _run_document(store, record, *, with_history: bool) -> dict:
    provenance = record.provenance or {}
    git = provenance.get("git") or {}
    doc = {
        "run_id": record.run_id, "project": record.project, "experiment": record.experiment,
        "variant": record.variant, "seed": record.seed, "name": record.name, "state": record.state,
        "status": record.status, "tags": record.tags, "notes": record.notes,
        "evaluates": record.evaluates, "host": record.host, "machine": record.machine,
        "started_at": record.started_at, "ended_at": record.ended_at, "duration_s": record.duration_s,
        "throughput": record.throughput,
        "git": {k: git.get(k) for k in ("sha", "branch", "dirty", "describe") if k in git},
        "config": record.config,
        "summary": {key: {**entry.as_dict(), "value": entry.value} for key, entry in record.summary.items()},
    }
    if provenance.get("external"):
        doc["external"] = provenance["external"]
    if with_history:
        doc["history"] = {h.key: {"steps": h.steps.tolist(), "values": h.values.tolist(),
                                  "times": h.times.tolist()}
                          for h in store.history(record.run_id).values()}
    return _json_safe(doc)


def _write_history(store, records, path: Path, fmt: str) -> int:
    if fmt == "csv":
        points = 0
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["run_id", "key", "step", "value", "time"])
            for record in records:
                for h in store.history(record.run_id).values():
                    for step, value, when in zip(h.steps.tolist(), h.values.tolist(), h.times.tolist()):
                        # repr keeps every digit of a float, so the file round-trips exactly
                        writer.writerow([record.run_id, h.key, step, repr(value), repr(when)])
                        points += 1
        return points
    if fmt == "parquet":
        pd = _require_parquet()
        frame = pd.DataFrame(_history_columns(store, [r.run_id for r in records], with_run_id=True))
        frame.to_parquet(path, index=False)
        return len(frame)
    documents = [_run_document(store, r, with_history=True) for r in records]
    path.write_text(json.dumps(documents, indent=1, default=str, allow_nan=False))
    return sum(len(h["steps"]) for doc in documents for h in doc["history"].values())


def _write_runs_table(store, records, path: Path, fmt: str, summary_stats: Sequence[str]) -> None:
    if fmt == "json":
        documents = [_run_document(store, r, with_history=False) for r in records]
        path.write_text(json.dumps(documents, indent=1, default=str, allow_nan=False))
        return
    columns, rows = run_rows(records, summary_stats)
    if fmt == "csv":
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return
    pd = _require_parquet()
    pd.DataFrame({c: [row.get(c) for row in rows] for c in columns}).to_parquet(path, index=False)


def export_runs(store, path: str | Path, fmt: str | None = None, *, run_ids: Iterable[str] | None = None,
                table: str = "history", summary_stats: Sequence[str] = ("value",),
                **filters) -> ExportResult:
    """Write the selected runs to ``path`` as CSV, Parquet or JSON (format from ``fmt`` or the suffix).

    ``table="history"`` writes every point (``run_id, key, step, value, time``; JSON writes one
    object per run with its config, summary and history). ``table="runs"`` writes one row per run
    (see ``runs_frame``). Raises ConfigError when nothing matches.
    """
    path = Path(path)
    fmt = _resolve_format(path, fmt)
    if table not in ("history", "runs"):
        raise ConfigError(f"unknown export table {table!r}: use 'history' or 'runs'")
    unknown = set(filters) - set(_FILTERS) - {"limit"}
    if unknown:
        raise ConfigError(f"unknown run filter(s) {sorted(unknown)}: use {', '.join(_FILTERS)}")
    records = select_runs(store, run_ids, **filters)
    if not records:
        raise ConfigError(f"no runs match {_describe_selection(run_ids, filters)} in "
                          f"{store.location.describe()}; list them with `labfolio runs`")
    path.parent.mkdir(parents=True, exist_ok=True)
    if table == "runs":
        _write_runs_table(store, records, path, fmt, summary_stats)
        return ExportResult(path, len(records), 0)
    points = _write_history(store, records, path, fmt)
    return ExportResult(path, len(records), points)


def _describe_selection(run_ids, filters: dict) -> str:
    parts = [f"{name}={value!r}" for name, value in filters.items() if value is not None]
    if run_ids is not None:
        parts.insert(0, "runs " + ", ".join(run_ids))
    return " and ".join(parts) or "the selection"


def export_run(store, run_id: str, path: str | Path, fmt: str | None = None) -> Path:
    """Write one run's history (long format) to ``path`` as CSV, Parquet or JSON."""
    path = Path(path)
    fmt = _resolve_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_history(store, [store.get_run(run_id)], path, fmt)
    return path
