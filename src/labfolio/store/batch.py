"""The store's single write primitive: a batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["Batch", "BatchResult", "finite_json"]


def finite_json(value):
    """``value`` with every NaN/Inf float replaced by its string ('nan', 'inf', '-inf').

    Configs are stored as JSON text; a bare NaN in it is not JSON, and PostgreSQL's JSON parser
    (which the runs table's config sorting and filtering go through) rejects the whole document.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


@dataclass
class Batch:
    """Everything one transaction writes.

    ``events`` are dicts with a ``type`` (run start, config, summary, artifact, alert, finish,
    experiment, note, status); points are column lists of equal length. When ``journal_from`` and
    ``journal_to`` are set, the store applies the batch only if the run's drained position still
    equals ``journal_from``, which makes draining exactly-once even when two drainers race.
    """

    run_id: str | None = None
    events: list[dict] = field(default_factory=list)
    keys: Sequence[str] = field(default_factory=list)
    steps: Sequence[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    journal_from: int | None = None
    journal_to: int | None = None
    heartbeat: float | None = None
    # Instead of one key string per point, a batch may carry key codes into ``key_names``
    # (what the journal reader produces: cheap for millions of points).
    key_names: list[str] | None = None
    codes: Sequence[int] | None = None

    @property
    def point_count(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class BatchResult:
    applied: bool  # False when the journal position had moved on (someone else drained it)
    points: int
    journal_pos: int | None  # the run's drained position after the call
