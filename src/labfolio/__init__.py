"""labfolio: experiments in, lab notebook out.

    import labfolio

    run = labfolio.init(experiment="vit_digits_001", variant="mhc", seed=0, config=cfg)
    for step in range(steps):
        ...
        run.log({"train/loss": loss, "lr": lr}, step=step)
    run.finish()

Module-level ``log``, ``finish``, ``config`` and ``summary`` act on the current run.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import (
    ConfigError,
    JournalError,
    LabfolioError,
    MetricKeyError,
    MetricValueError,
    NoActiveRunError,
    RunNotFoundError,
    SchemaTooNewError,
    StoreError,
    StoreUnavailableError,
)
from .run import DisabledRun, Run, current_run, init
from .store import Batch, MetricHistory, RunRecord, SummaryEntry, open_store

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # the SDK
    "init",
    "log",
    "finish",
    "log_artifact",
    "config",
    "summary",
    "current_run",
    "Run",
    "DisabledRun",
    # reading the store
    "open_store",
    "RunRecord",
    "SummaryEntry",
    "MetricHistory",
    "Batch",
    # errors
    "LabfolioError",
    "NoActiveRunError",
    "MetricValueError",
    "MetricKeyError",
    "ConfigError",
    "StoreError",
    "StoreUnavailableError",
    "SchemaTooNewError",
    "RunNotFoundError",
    "JournalError",
]


def open(url=None, **kwargs):  # noqa: A001
    """The store at `url` (default: the project's), as ``labfolio.open(url).runs_frame()`` reads.

    The same as ``open_store``; it is left out of ``__all__`` on purpose, so that
    ``from labfolio import *`` never shadows the builtin ``open``.
    """
    return open_store(url, **kwargs)


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """``run.log`` on the current run."""
    current_run().log(data, step=step, commit=commit)


def finish(status: str = "finished", **kwargs) -> None:
    """``run.finish`` on the current run."""
    current_run().finish(status, **kwargs)


def log_artifact(path, kind: str | None = None, **kwargs):
    """``run.log_artifact`` on the current run."""
    return current_run().log_artifact(path, kind, **kwargs)


class _CurrentRunAttribute:
    """``labfolio.config`` / ``labfolio.summary``: the current run's attribute, looked up on use."""

    def __init__(self, attribute: str):
        object.__setattr__(self, "_attribute", attribute)

    def _target(self):
        return getattr(current_run(), self._attribute)

    def __getattr__(self, name):
        return getattr(self._target(), name)

    def __setattr__(self, name, value):
        setattr(self._target(), name, value)

    def __getitem__(self, key):
        return self._target()[key]

    def __setitem__(self, key, value):
        self._target()[key] = value

    def __contains__(self, key):
        return key in self._target()

    def __repr__(self) -> str:
        try:
            return repr(self._target())
        except NoActiveRunError:
            return f"<labfolio.{self._attribute}: no active run; call labfolio.init() first>"


config = _CurrentRunAttribute("config")
summary = _CurrentRunAttribute("summary")
