"""A run's proposed status (valid / partially invalid / invalid) from its state and alerts.

Valid, partially valid and invalid runs used to end up mixed in one comparison. The rules:

1. A human override wins, always (with the human's reason).
2. ❌ invalid: the run crashed or failed, or an alert is critical (a NaN loss, grad norm or lr;
   a confirmed divergence).
3. ⚠️ partially invalid: the run was killed before finishing, or an alert says the run did not
   do what its config claims or broke along the way: a schedule mismatch, a collapse, a NaN in
   a metric other than a loss.
4. ✅ valid otherwise. Plateaus, overfitting, grad spikes that did not turn into a divergence,
   recoveries, representation or stream collapse and bad rule values are findings about the
   model, not about the run's validity: they are reported, and leave the status alone.

A running run gets a provisional status from the alerts so far.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from labfolio.analysis.alerts import Alert, AlertKind, Severity, format_number, format_step
from labfolio.analysis.errors import AnalysisInputError
from labfolio.analysis.runs import RUN_STATES

__all__ = ["RunStatus", "StatusProposal", "PARTIALLY_INVALIDATING_KINDS", "propose_status", "alert_reason"]

# Kinds that make a run partially invalid at warning severity (critical always invalidates).
PARTIALLY_INVALIDATING_KINDS = frozenset({AlertKind.SCHEDULE_MISMATCH.value, AlertKind.COLLAPSE.value,
                                          AlertKind.NAN.value})


class RunStatus(str, Enum):
    """A run's validity for comparisons, with the notebook's labels."""

    VALID = "valid"
    PARTIALLY_INVALID = "partially_invalid"
    INVALID = "invalid"

    def __str__(self) -> str:
        return self.value

    def label(self, reason: str | None = None) -> str:
        """The notebook string: '✅ Valid', '⚠️ Partially invalid (reason)' or
        '❌ Invalid (discard for comparison)'."""
        if self is RunStatus.VALID:
            return "✅ Valid"
        if self is RunStatus.PARTIALLY_INVALID:
            return f"⚠️ Partially invalid ({reason})" if reason else "⚠️ Partially invalid"
        return "❌ Invalid (discard for comparison)"

    @classmethod
    def parse_label(cls, text: str) -> tuple[RunStatus, str | None]:
        """(status, reason) from a label as people write it: emoji optional, any case, 'partially_invalid'.

        >>> RunStatus.parse_label("⚠️ Partially invalid (eval used EMA weights)")
        (<RunStatus.PARTIALLY_INVALID: 'partially_invalid'>, 'eval used EMA weights')
        """
        cleaned = re.sub(r"[✅⚠❌️]", "", text).strip()
        match = re.match(r"(?i)^(partially[\s_-]*(?:in)?valid|invalid|valid)\b\s*(.*)$", cleaned)
        if not match:
            raise AnalysisInputError(
                f"cannot read the run status {text!r}; write '✅ Valid', '⚠️ Partially invalid (reason)' "
                "or '❌ Invalid (discard for comparison)'"
            )
        word = re.sub(r"[\s_-]+", " ", match.group(1).lower())
        status = {"valid": cls.VALID, "invalid": cls.INVALID}.get(word, cls.PARTIALLY_INVALID)
        rest = match.group(2).strip()
        reason_match = re.fullmatch(r"\((.*)\)", rest) or re.fullmatch(r"[:\-–—]\s*(.*)", rest)
        reason = (reason_match.group(1) if reason_match else rest).strip() or None
        if status is cls.INVALID and reason and reason.lower() == "discard for comparison":
            reason = None
        return status, reason


def alert_reason(alert: Alert) -> str:
    """A short reason for a status line: 'train/loss diverged at step 1200'."""
    at = f" at step {format_step(alert.step)}" if alert.step is not None else ""
    if alert.kind == AlertKind.NAN:
        what = format_number(alert.value) if alert.value is not None and not math.isfinite(alert.value) else "NaN/Inf"
        return f"{alert.metric} is {what}{at}"
    if alert.kind == AlertKind.DIVERGENCE:
        return f"{alert.metric} diverged{at}"
    if alert.kind == AlertKind.SCHEDULE_MISMATCH:
        return f"LR schedule mismatch on {alert.metric}{at}"
    if alert.kind == AlertKind.COLLAPSE:
        return f"{alert.metric} collapsed{at}"
    return f"{alert.kind} on {alert.metric}{at}"


@dataclass(frozen=True)
class StatusProposal:
    """The status a run should have, why, and the alerts behind it."""

    status: RunStatus
    reason: str | None  # None for a valid run
    overridden: bool  # True when a human override decided it
    evidence: tuple[Alert, ...] = ()  # the alerts that set the status

    @property
    def label(self) -> str:
        """The notebook label (the reason shows in the partially invalid one)."""
        return self.status.label(self.reason)

    @property
    def summary(self) -> str:
        """The label, plus the reason when the label itself does not carry it."""
        if self.status is not RunStatus.PARTIALLY_INVALID and self.reason:
            return f"{self.label}: {self.reason}"
        return self.label


def _join(reasons: list[str]) -> str:
    unique = list(dict.fromkeys(reasons))
    return "; ".join(unique[:3]) + (f"; and {len(unique) - 3} more" if len(unique) > 3 else "")


def propose_status(
    state: str,
    alerts: Iterable[Alert],
    *,
    override: str | RunStatus | None = None,
    override_reason: str | None = None,
) -> StatusProposal:
    """The proposed status of a run in `state` with `alerts` (rules in the module doc)."""
    if state not in RUN_STATES:
        raise AnalysisInputError(f"state must be one of {', '.join(RUN_STATES)}, got {state!r}")
    if override is not None:
        try:
            status = RunStatus(override)
        except ValueError:
            raise AnalysisInputError(
                f"override must be one of {', '.join(s.value for s in RunStatus)}, got {override!r}"
            ) from None
        return StatusProposal(status, override_reason, True)
    alerts = list(alerts)
    critical = [a for a in alerts if a.severity == Severity.CRITICAL]
    partial = [a for a in alerts if a.severity == Severity.WARNING and a.kind in PARTIALLY_INVALIDATING_KINDS]
    if state in ("crashed", "failed") or critical:
        reasons = ([f"run {state}"] if state in ("crashed", "failed") else []) + [alert_reason(a) for a in critical]
        return StatusProposal(RunStatus.INVALID, _join(reasons), False, tuple(critical))
    if state == "killed" or partial:
        reasons = (["killed before finishing"] if state == "killed" else []) + [alert_reason(a) for a in partial]
        return StatusProposal(RunStatus.PARTIALLY_INVALID, _join(reasons), False, tuple(partial))
    return StatusProposal(RunStatus.VALID, None, False)
