"""Alerts: a rule violation or a detected pathology, attached to one metric of a run at a step.

An alert is plain, immutable data so the store can persist it (``to_dict``/``from_dict``) and the
notebook, the console and the CLI can show it without knowing which detector produced it.

Severity says how alarming the alert is to a human reading the console:

- ``critical``: the run's numbers cannot be trusted (NaN loss, a confirmed divergence);
- ``warning``: something is wrong and worth a look now (schedule mismatch, collapse, bad rule);
- ``info``: worth knowing, the numbers stand (plateau, overfitting, recovery after a collapse).

Which alerts change a run's proposed status is decided in ``labfolio.analysis.status``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from labfolio.analysis.errors import AnalysisInputError

__all__ = ["Alert", "AlertKind", "Severity", "SEVERITY_ORDER", "format_number", "format_step"]


class Severity(str, Enum):
    """How alarming an alert is; compare with ``SEVERITY_ORDER``."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value


SEVERITY_ORDER = {Severity.INFO.value: 0, Severity.WARNING.value: 1, Severity.CRITICAL.value: 2}


class AlertKind(str, Enum):
    """The kinds of alert labfolio's rules and detectors produce."""

    NAN = "nan"  # NaN or Inf in a metric
    DIVERGENCE = "divergence"  # loss jumped and stayed up, or grad norm stayed far above history
    GRAD_SPIKE = "grad_spike"  # grad norm above ~10x its running median (first sign of divergence)
    COLLAPSE = "collapse"  # an accuracy-like metric rose, then dropped sharply
    RECOVERY = "recovery"  # a collapsed metric came back near its peak
    SCHEDULE_MISMATCH = "schedule_mismatch"  # the logged lr does not follow the configured schedule
    PLATEAU = "plateau"  # no improvement over many evaluations
    OVERFITTING = "overfitting"  # validation got worse while training improved
    REPRESENTATION_COLLAPSE = "representation_collapse"  # effective rank far below the width
    STREAM_COLLAPSE = "stream_collapse"  # mHC streams becoming copies of each other
    RULE = "rule"  # a health rule's bad range was reached

    def __str__(self) -> str:
        return self.value


def format_number(value: float | int | None) -> str:
    """A number as alert messages and reports print it: 4 significant digits, NaN/Inf spelled out.

    >>> format_number(946.8123), format_number(0.000015), format_number(float("nan"))
    ('946.8', '1.5e-05', 'NaN')
    """
    if value is None:
        return "n/a"
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    return f"{value:.4g}"


def format_step(step: float | int | None) -> str:
    """A step as messages print it: whole numbers in full (``12000``, not ``1.2e+04``)."""
    if step is None:
        return "n/a"
    step = float(step)
    if math.isfinite(step) and step == int(step):
        return str(int(step))
    return format_number(step)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, so alerts compare, hash and serialise predictably."""
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Alert:
    """One rule violation or detected pathology.

    ``step`` is where the evidence starts (e.g. the first step above the running median), ``value``
    the metric's value there, and ``message`` quotes the evidence in numbers.
    """

    kind: str  # an AlertKind value ("divergence", "nan", ...); other strings are kept as given
    metric: str  # the metric key the alert is about, e.g. "train/loss"
    step: int | float | None  # step where the evidence starts; None when it has no single step
    severity: str  # "info" | "warning" | "critical"
    message: str  # one line that quotes the numbers behind the alert
    value: float | None = None  # the metric's value at `step` (or the aggregate a rule judged)

    def __post_init__(self) -> None:
        kind = self.kind.value if isinstance(self.kind, AlertKind) else self.kind
        if not isinstance(kind, str) or not kind:
            raise AnalysisInputError(f"Alert.kind must be a non-empty string, got {self.kind!r}")
        severity = self.severity.value if isinstance(self.severity, Severity) else self.severity
        if severity not in SEVERITY_ORDER:
            raise AnalysisInputError(
                f"Alert.severity must be one of {', '.join(SEVERITY_ORDER)}, got {self.severity!r}"
            )
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "severity", severity)
        step = _plain(self.step)
        if isinstance(step, float) and step.is_integer():
            step = int(step)  # steps arrive as floats from numpy arrays; 1200.0 is step 1200
        object.__setattr__(self, "step", step)
        value = _plain(self.value)
        object.__setattr__(self, "value", None if value is None else float(value))

    @property
    def identity(self) -> tuple[str, str, str]:
        """What makes two alerts "the same alert": each identity is reported once per run."""
        return (self.kind, self.metric, self.severity)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (NaN/Inf values become strings, as in run configs)."""
        value = self.value
        if value is not None and not math.isfinite(value):
            value = format_number(value)
        return {
            "kind": self.kind,
            "metric": self.metric,
            "step": self.step,
            "severity": self.severity,
            "message": self.message,
            "value": value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """Inverse of ``to_dict``."""
        value = data.get("value")
        if isinstance(value, str):
            value = {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf}.get(value, math.nan)
        return cls(
            kind=data["kind"],
            metric=data["metric"],
            step=data.get("step"),
            severity=data["severity"],
            message=data["message"],
            value=value,
        )

    def __str__(self) -> str:
        where = "" if self.step is None else f" @ step {format_step(self.step)}"
        return f"[{self.severity}] {self.kind} {self.metric}{where}: {self.message}"
