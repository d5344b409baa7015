"""``RunView``: the plain-data picture of one run that every analysis function takes.

The store (or a test) builds these; analysis never reads the store itself. A view carries only
what seed statistics, config diffs and status need: identity, state, config, a summary, and the
run's status (a human override, and the status proposed from its alerts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labfolio.analysis.errors import AnalysisInputError

__all__ = [
    "RunView",
    "RUN_STATES",
    "STATUS_VALUES",
    "DEFAULT_EXCLUDED_STATES",
    "exclusion_reason",
    "SUPERSEDED",
    "superseded_runs",
    "exclusion_reasons",
    "described_runs",
]

RUN_STATES = ("running", "finished", "crashed", "killed", "failed")
STATUS_VALUES = ("valid", "partially_invalid", "invalid")
# A crashed, failed or killed run's summary is whatever it had reached when it stopped: not a
# final result, and mixing such runs with finished ones is how comparisons go wrong.
DEFAULT_EXCLUDED_STATES = ("crashed", "failed", "killed")
_STATE_SET = frozenset(RUN_STATES)
_STATUS_SET = frozenset(STATUS_VALUES)


@dataclass(frozen=True)
class RunView:
    """One run as analysis sees it.

    ``summary`` maps a metric to one number per run: the final value, or whichever aggregate the
    caller picked (best, mean of the last N). ``status_override`` is a human's verdict and wins
    over ``proposed_status``, the status derived from the run's alerts.
    """

    run_id: str  # unique id of the run in its store
    experiment: str  # the question this run belongs to, e.g. "baseline_cifar10_004"
    variant: str  # the configuration inside the experiment, e.g. "mhc"
    seed: int | None = None  # the run's seed; None when unknown
    state: str = "finished"  # running | finished | crashed | killed | failed
    config: Mapping[str, Any] = field(default_factory=dict)  # full nested config, with defaults
    summary: Mapping[str, float] = field(default_factory=dict)  # metric -> one value per run
    status_override: str | None = None  # a human's verdict: valid | partially_invalid | invalid
    status_reason: str | None = None  # why the human set the override
    proposed_status: str | None = None  # status proposed from alerts (same values), if computed
    proposed_reason: str | None = None  # the reason that came with proposed_status
    started_at: float | None = None  # start time (epoch seconds): the newest of same-seed runs counts

    def __post_init__(self) -> None:
        # A notebook builds tens of thousands of views from store records: the common, valid case
        # is decided with identity checks first, the rules below being what it must satisfy.
        if (type(self.run_id) is str and self.run_id and type(self.experiment) is str
                and type(self.variant) is str and type(self.state) is str and self.state in _STATE_SET
                and (self.status_override is None or (type(self.status_override) is str
                                                      and self.status_override in _STATUS_SET))
                and (self.proposed_status is None or (type(self.proposed_status) is str
                                                      and self.proposed_status in _STATUS_SET))
                and type(self.config) is dict and type(self.summary) is dict):
            return
        if not isinstance(self.run_id, str) or not self.run_id:
            raise AnalysisInputError(f"RunView.run_id must be a non-empty string, got {self.run_id!r}")
        for name in ("experiment", "variant"):
            if not isinstance(getattr(self, name), str):
                raise AnalysisInputError(
                    f"RunView.{name} of run {self.run_id} must be a string, got {getattr(self, name)!r}"
                )
        if self.state not in RUN_STATES:
            raise AnalysisInputError(
                f"run {self.run_id}: state must be one of {', '.join(RUN_STATES)}, got {self.state!r}"
            )
        for name in ("status_override", "proposed_status"):
            value = getattr(self, name)
            if value is not None and value not in STATUS_VALUES:
                raise AnalysisInputError(
                    f"run {self.run_id}: {name} must be None or one of {', '.join(STATUS_VALUES)}, "
                    f"got {value!r}"
                )
        if not isinstance(self.config, Mapping):
            raise AnalysisInputError(f"run {self.run_id}: config must be a mapping, got {type(self.config).__name__}")
        if not isinstance(self.summary, Mapping):
            raise AnalysisInputError(
                f"run {self.run_id}: summary must be a mapping of metric -> number, "
                f"got {type(self.summary).__name__}"
            )

    @property
    def effective_status(self) -> str | None:
        """The human override when there is one, else the proposed status (None if neither)."""
        return self.status_override if self.status_override is not None else self.proposed_status

    @property
    def effective_reason(self) -> str | None:
        """The reason that goes with ``effective_status``."""
        return self.status_reason if self.status_override is not None else self.proposed_reason

    def metric(self, name: str) -> float | None:
        """The summary value of `name` as a float, or None when it is missing or not a number."""
        value = self.summary.get(name)
        if value is None or isinstance(value, bool):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    @property
    def label(self) -> str:
        """How reports name this run: 'seed 3 (run abc123)', or the run id alone."""
        return f"seed {self.seed} (run {self.run_id})" if self.seed is not None else f"run {self.run_id}"


def exclusion_reason(
    run: RunView,
    *,
    include_invalid: bool = False,
    excluded_states: Iterable[str] = DEFAULT_EXCLUDED_STATES,
) -> str | None:
    """Why `run` is left out of comparisons, or None when it is kept.

    A human override always wins: a run marked valid is kept even if it crashed (the human has
    looked at it), and a run marked invalid is dropped whatever its state. Without an override, a
    crashed/failed state or a proposed status of invalid drops it.
    """
    if include_invalid:
        return None
    if run.status_override == "invalid":
        return "marked invalid" + (f": {run.status_reason}" if run.status_reason else "")
    if run.status_override is not None:
        return None
    excluded_states = tuple(excluded_states)
    if run.state in excluded_states:
        return run.state
    if run.proposed_status == "invalid":
        return "proposed invalid" + (f": {run.proposed_reason}" if run.proposed_reason else "")
    return None


# The reason `superseded_runs` gives, before the run that counts instead; summaries count these
# runs under this phrase alone, since each one names a different newer run.
SUPERSEDED = "superseded by a newer run of the same seed"


def superseded_runs(runs: Iterable[RunView]) -> dict[str, str]:
    """Run id -> reason, for every run that another run of the same variant and seed supersedes.

    Two runs of one seed are not two samples (a rerun, a retry after a crash): counting both
    would shrink the seed spread and inflate significance. The newest run counts (by
    ``started_at``; the later one given when times are missing or equal). Runs without a seed
    are all kept: nothing says they repeat each other.
    """
    runs = list(runs)
    newest: dict[tuple[str, str, int], RunView] = {}
    for run in runs:
        if run.seed is None:
            continue
        key = (run.experiment, run.variant, run.seed)
        held = newest.get(key)
        if held is None or (run.started_at or 0.0) >= (held.started_at or 0.0):
            newest[key] = run
    reasons: dict[str, str] = {}
    for run in runs:
        if run.seed is None:
            continue
        winner = newest[(run.experiment, run.variant, run.seed)]
        if winner is not run:
            reasons[run.run_id] = f"{SUPERSEDED}: run {winner.run_id} counts instead"
    return reasons


def exclusion_reasons(
    runs: Iterable[RunView],
    *,
    include_invalid: bool = False,
    excluded_states: Iterable[str] = DEFAULT_EXCLUDED_STATES,
) -> dict[str, str | None]:
    """Run id -> why the run is left out of comparisons (None: it counts), for every run.

    ``exclusion_reason`` first, then one run per seed among those still kept: a newer crashed
    retry must not push out the older finished run of that seed.
    """
    runs = list(runs)
    excluded_states = tuple(excluded_states)
    reasons = {run.run_id: exclusion_reason(run, include_invalid=include_invalid, excluded_states=excluded_states)
               for run in runs}
    reasons.update(superseded_runs(run for run in runs if reasons[run.run_id] is None))
    return reasons


def described_runs(runs: Iterable[RunView]) -> list[RunView]:
    """The runs that describe an experiment in its setup, its diffs and its curves, in order.

    Per (experiment, variant, seed): the run the results count, or, when none of that seed's runs
    counts, its newest attempt (a killed run still shows what its variant ran and how far it got).
    Older attempts of a seed are left out: a rerun at a new length replaces them. Runs without a
    seed are all kept, as nothing says they repeat each other.
    """
    runs = list(runs)
    reasons = exclusion_reasons(runs)

    def seed_of(run: RunView) -> tuple:
        return run.experiment, run.variant, run.seed

    counted = {seed_of(run) for run in runs if reasons[run.run_id] is None and run.seed is not None}
    # seeds none of whose runs counts: their newest attempt stands for them
    older = superseded_runs(run for run in runs if seed_of(run) not in counted)
    return [run for run in runs if run.seed is None
            or (reasons[run.run_id] is None if seed_of(run) in counted else run.run_id not in older)]
