"""A run's history as a DataFrame, CSV or Parquet."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .errors import ConfigError

__all__ = ["history_frame", "export_run", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("csv", "parquet")


def _require_pandas():
    try:
        import pandas as pd
    except ModuleNotFoundError:
        raise ConfigError("this needs pandas: pip install 'labfolio[export]'") from None
    return pd


def history_frame(store, run_id: str, keys=None, *, wide: bool = False):
    """A pandas DataFrame of the run's points: long (key, step, value, time) or wide (by step)."""
    pd = _require_pandas()
    history = store.history(run_id, keys)
    frames = [pd.DataFrame({"key": h.key, "step": h.steps, "value": h.values, "time": h.times})
              for h in history.values()]
    long = (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame({"key": [], "step": np.array([], dtype=np.int64), "value": [], "time": []}))
    if not wide:
        return long
    # Several points of one key at one step: the last logged wins in the wide view.
    return long.pivot_table(index="step", columns="key", values="value", aggfunc="last").sort_index()


def export_run(store, run_id: str, path: str | Path, fmt: str | None = None) -> Path:
    """Write the run's history (long format) to ``path`` as CSV or Parquet."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "csv").lower()
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        history = store.history(run_id)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["run_id", "key", "step", "value", "time"])
            for h in history.values():
                for step, value, when in zip(h.steps.tolist(), h.values.tolist(), h.times.tolist()):
                    writer.writerow([run_id, h.key, step, repr(value), repr(when)])
        return path
    try:
        import pyarrow  # noqa: F401  (pandas needs it for parquet; check first for a clear message)
    except ModuleNotFoundError:
        raise ConfigError("Parquet export needs pyarrow: pip install 'labfolio[export]'") from None
    frame = history_frame(store, run_id)
    frame.insert(0, "run_id", run_id)
    frame.to_parquet(path, index=False)
    return path
