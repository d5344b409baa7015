"""What the store's query API returns: plain, immutable records."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["RunRecord", "SummaryEntry", "MetricHistory", "AlertRecord", "ArtifactRecord",
           "lower_is_better"]

# Substrings that mark a metric where smaller is better. Everything else (accuracy, F1, reward,
# throughput…) is taken as larger-is-better; analysis can override per metric.
_LOWER_IS_BETTER = ("loss", "bpb", "perplexity", "ppl", "error", "err", "nll", "mse", "mae",
                    "rmse", "wer", "cer", "fid", "regret", "time", "latency", "grad_norm")


def lower_is_better(key: str) -> bool:
    """Whether a smaller value of this metric is better, judged from its name."""
    name = key.lower().rsplit("/", 1)[-1]
    return any(marker in name for marker in _LOWER_IS_BETTER)


@dataclass(frozen=True)
class SummaryEntry:
    key: str
    last: float | None
    last_step: int | None
    min: float | None
    max: float | None
    count: int
    nonfinite: int
    override: object = None  # an explicit run.summary[key] = value wins over the computed ones

    @property
    def best(self) -> float | None:
        return self.min if lower_is_better(self.key) else self.max

    @property
    def value(self):
        """The number a table should show: the override if there is one, else the last value."""
        return self.override if self.override is not None else self.last

    def as_dict(self) -> dict:
        out = {"last": self.last, "min": self.min, "max": self.max, "best": self.best,
               "count": self.count, "last_step": self.last_step}
        if self.nonfinite:
            out["nonfinite"] = self.nonfinite
        if self.override is not None:
            out["override"] = self.override
        return out


@dataclass(frozen=True)
class AlertRecord:
    kind: str
    metric: str | None
    step: int | None
    severity: str
    message: str
    value: float | None
    created_at: float


@dataclass(frozen=True)
class ArtifactRecord:
    name: str
    kind: str
    sha256: str | None
    size: int | None
    path: str  # absolute path on this machine
    is_reference: bool
    step: int | None
    created_at: float
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MetricHistory:
    key: str
    steps: np.ndarray  # int64
    values: np.ndarray  # float64; NaN where NaN was logged
    times: np.ndarray  # float64 unix seconds


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    project: str
    experiment: str
    variant: str
    seed: int | None
    name: str | None
    state: str
    status: str | None
    status_reason: str | None
    tags: list
    notes: str | None
    evaluates: str | None
    config: dict
    provenance: dict
    host: str | None
    machine: str | None
    batch_size: int | None
    tokens_per_step: int | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    heartbeat_at: float | None
    exit_reason: str | None
    first_step: int | None
    last_step: int | None
    first_time: float | None
    last_time: float | None
    point_count: int
    summary: dict[str, SummaryEntry] = field(default_factory=dict)
    config_history: list = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at or self.heartbeat_at or self.last_time
        return None if end is None else max(0.0, end - self.started_at)

    @property
    def throughput(self) -> dict[str, float]:
        """steps/s over the logged span, and samples/s or tokens/s when a batch size was given."""
        if (self.first_step is None or self.last_step is None or self.first_time is None
                or self.last_time is None):
            return {}
        span = self.last_time - self.first_time
        steps = self.last_step - self.first_step
        if span <= 0 or steps <= 0:
            return {}
        out = {"steps_per_s": steps / span}
        if self.batch_size:
            out["samples_per_s"] = out["steps_per_s"] * self.batch_size
        if self.tokens_per_step:
            out["tokens_per_s"] = out["steps_per_s"] * self.tokens_per_step
        return out

    def summary_values(self) -> dict[str, object]:
        """key → the headline value (override, else last), plus the throughput figures."""
        values = {key: entry.value for key, entry in self.summary.items()}
        for key, value in self.throughput.items():
            values.setdefault(key, value)
        return values

    @property
    def is_evaluation(self) -> bool:
        return self.evaluates is not None


def finite_or_none(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value
