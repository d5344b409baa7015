"""Health rules ("metrics to watch"): a metric, a good range, a bad range, and how to aggregate it.

A rule evaluates to **good** (in the good range), **bad** (in the bad range, or NaN/Inf) or
**watch** (neither), with the value it judged. Bad wins when the two ranges overlap. A rule
without a good range calls anything that is not bad good.

Aggregations, over the points at or after ``start_step``:

- ``last``: the last value;
- ``mean_last_N``: the mean of the last ``last_n`` values;
- ``min`` / ``max``: the extreme value; a NaN anywhere makes them NaN, so ``bad: NaN`` with
  ``max`` catches a NaN at any step.

A relative range (``> 10x median``) compares the aggregate with the median of the same points.

A rule's ``metric`` matches a logged key equal to it, a key ending in ``/<metric>`` (so
``stream_similarity`` matches ``mhc/stream_similarity``), or, if it has glob characters, a key the
glob matches (``*loss`` matches ``train/loss`` and ``val_loss``).

Built-in packs: ``mhc`` (the mHC study's table) and ``general`` (NaN loss, grad-norm explosion
relative to its own history). Project files and the Markdown table live in ``rulefiles``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fnmatch import fnmatchcase

import numpy as np

from labfolio.analysis._online import Reservoir, RingBuffer, as_series_arrays
from labfolio.analysis.alerts import Alert, AlertKind, Severity, format_number, format_step
from labfolio.analysis.errors import RulesFileError
from labfolio.analysis.ranges import Range, parse_range

__all__ = [
    "Health",
    "Rule",
    "RuleResult",
    "RuleTracker",
    "AGGREGATIONS",
    "MHC_RULES",
    "GENERAL_RULES",
    "RULE_PACKS",
    "builtin_rules",
    "merge_rules",
    "evaluate_rule",
    "evaluate_rules",
    "rule_alert",
]

AGGREGATIONS = ("last", "mean_last_N", "min", "max")
_GLOB_CHARS = re.compile(r"[*?\[]")


class Health(str, Enum):
    """The outcome of one rule on one metric."""

    GOOD = "good"
    WATCH = "watch"  # neither good nor bad
    BAD = "bad"
    NO_DATA = "no data"  # the metric was not logged (at or after start_step)

    def __str__(self) -> str:
        return self.value


def _normalise_aggregation(aggregation: str, last_n: int) -> tuple[str, int]:
    text = str(aggregation).strip()
    lowered = text.lower()
    if lowered in ("last", "min", "max"):
        return lowered, last_n
    if lowered in ("mean_last_n", "mean_last", "mean"):
        return "mean_last_N", last_n
    match = re.fullmatch(r"mean_last_(\d+)", lowered)
    if match:
        return "mean_last_N", int(match.group(1))
    raise RulesFileError(
        f"unknown aggregation {aggregation!r}; use one of last, mean_last_N (with last_n), "
        "mean_last_20, min, max"
    )


@dataclass(frozen=True)
class Rule:
    """A health rule on one metric (or on every metric a glob matches)."""

    metric: str  # metric key, key suffix after '/', or a glob such as '*loss'
    good: str | None = None  # good range, e.g. '< 0.2' (None: anything not bad is good)
    bad: str | None = None  # bad range, e.g. '> 0.4' (None: nothing is bad but NaN/Inf)
    aggregation: str = "last"  # last | mean_last_N | min | max
    last_n: int = 10  # window of mean_last_N
    start_step: float | None = None  # ignore points before this step (e.g. the warmup)
    note: str = ""  # why the rule exists, shown with its results
    live: bool = True  # False: judge only when the run ends (final-quality metrics)
    good_range: Range | None = field(init=False, repr=False, compare=False, default=None)
    bad_range: Range | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise RulesFileError(f"a rule needs a metric name, got {self.metric!r}")
        aggregation, last_n = _normalise_aggregation(self.aggregation, self.last_n)
        if isinstance(last_n, bool) or not isinstance(last_n, int) or last_n < 1:
            raise RulesFileError(f"rule {self.metric!r}: last_n must be an int >= 1, got {self.last_n!r}")
        object.__setattr__(self, "aggregation", aggregation)
        object.__setattr__(self, "last_n", last_n)
        start = self.start_step
        if start is not None and (isinstance(start, bool) or not isinstance(start, (int, float))):
            raise RulesFileError(f"rule {self.metric!r}: start_step must be a number, got {start!r}")
        if not isinstance(self.live, bool):
            raise RulesFileError(f"rule {self.metric!r}: live must be true or false, got {self.live!r}")
        object.__setattr__(self, "note", "" if self.note is None else str(self.note))
        for name in ("good", "bad"):
            text = getattr(self, name)
            if text is not None and not str(text).strip():
                text = None
                object.__setattr__(self, name, None)
            parsed = parse_range(str(text)) if text is not None else None
            object.__setattr__(self, f"{name}_range", parsed)
        if self.good_range is None and self.bad_range is None:
            raise RulesFileError(f"rule {self.metric!r} has neither a good nor a bad range; give at least one")

    def matches(self, key: str) -> bool:
        """Whether this rule applies to the logged metric `key` (matching rules in the module doc)."""
        if key == self.metric or key.endswith("/" + self.metric):
            return True
        return bool(_GLOB_CHARS.search(self.metric)) and fnmatchcase(key, self.metric)

    @property
    def relative(self) -> bool:
        """True when a range compares with the metric's own median ('> 10x median')."""
        return any(r is not None and r.relative for r in (self.good_range, self.bad_range))

    @property
    def aggregation_label(self) -> str:
        """'last', 'mean of last 20', 'min' or 'max'."""
        return f"mean of last {self.last_n}" if self.aggregation == "mean_last_N" else self.aggregation

    def judge(self, value: float, median: float | None = None) -> Health:
        """good / watch / bad for an already aggregated `value` (NaN/Inf is bad unless good says so)."""
        bad = self.bad_range is not None and self.bad_range.contains(value, median)
        good_by_range = self.good_range is not None and self.good_range.contains(value, median)
        if not math.isfinite(value) and not good_by_range:
            bad = True
        if bad:
            return Health.BAD
        if self.good_range is None or good_by_range:
            return Health.GOOD
        return Health.WATCH


@dataclass(frozen=True)
class RuleResult:
    """One rule judged on one logged metric."""

    rule: Rule
    metric: str  # the logged key the rule was applied to
    health: Health
    value: float | None  # the aggregate judged (None when there was no data)
    step: float | None  # step of the last point considered
    n_points: int  # points considered (at or after start_step)
    median: float | None = None  # the reference of a relative range, when the rule has one

    @property
    def message(self) -> str:
        """'stream_similarity = 0.45 (last) is bad (> 0.4)'."""
        rule = self.rule
        if self.health is Health.NO_DATA:
            after = f" at or after step {format_step(rule.start_step)}" if rule.start_step is not None else ""
            return f"{self.metric}: no data{after}"
        head = f"{self.metric} = {format_number(self.value)} ({rule.aggregation_label})"
        if self.median is not None:
            head += f", median {format_number(self.median)}"
        if self.health is Health.BAD:
            reason = f"bad ({rule.bad})" if rule.bad_range is not None and rule.bad_range.contains(
                self.value, self.median) else "bad (not a finite number)"
        elif self.health is Health.GOOD:
            reason = f"good ({rule.good})" if rule.good is not None else f"good (not {rule.bad})"
        else:
            ranges = [f"good {rule.good}" if rule.good else None, f"bad {rule.bad}" if rule.bad else None]
            reason = "watch (" + ", ".join(r for r in ranges if r) + ")"
        return f"{head} is {reason}"


def _aggregate(rule: Rule, values: np.ndarray) -> float:
    if rule.aggregation == "last":
        return float(values[-1])
    if rule.aggregation == "mean_last_N":
        return float(np.mean(values[-rule.last_n:]))
    return float(np.min(values) if rule.aggregation == "min" else np.max(values))


def _finite_median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def evaluate_rule(rule: Rule, steps: Sequence[float], values: Sequence[float], metric: str | None = None) -> RuleResult:
    """Judge `rule` on one series (post hoc); `metric` is the logged key (default: rule.metric)."""
    key = metric or rule.metric
    step_array, value_array = as_series_arrays(steps, values, key)
    if rule.start_step is not None:
        keep = step_array >= rule.start_step
        step_array, value_array = step_array[keep], value_array[keep]
    if value_array.size == 0:
        return RuleResult(rule, key, Health.NO_DATA, None, None, 0)
    value = _aggregate(rule, value_array)
    median = _finite_median(value_array) if rule.relative else None
    health = rule.judge(value, median)
    return RuleResult(rule, key, health, value, float(step_array[-1]), int(value_array.size), median)


def evaluate_rules(
    rules: Iterable[Rule], series: Mapping[str, tuple[Sequence[float], Sequence[float]]]
) -> list[RuleResult]:
    """Every rule on every logged key it matches, in rule order then key order.

    A rule that matches no key gives one NO_DATA result, so a table of rules shows every row.
    """
    results = []
    for rule in rules:
        keys = [key for key in series if rule.matches(key)]
        if not keys:
            results.append(RuleResult(rule, rule.metric, Health.NO_DATA, None, None, 0))
        for key in keys:
            steps, values = series[key]
            results.append(evaluate_rule(rule, steps, values, key))
    return results


def rule_alert(result: RuleResult) -> Alert | None:
    """The alert for a bad result (None otherwise)."""
    if result.health is not Health.BAD:
        return None
    note = f" — {result.rule.note}" if result.rule.note else ""
    at = f" at step {format_step(result.step)}" if result.step is not None else ""
    return Alert(AlertKind.RULE, result.metric, result.step, Severity.WARNING,
                 f"{result.message}{at}{note}", result.value)


class RuleTracker:
    """One rule on one logged key, updated batch by batch in O(batch) time and bounded memory."""

    def __init__(self, rule: Rule, key: str) -> None:
        self.rule = rule
        self.key = key
        self._count = 0
        self._last_step = math.nan
        self._last_value = math.nan
        self._min = math.inf
        self._max = -math.inf
        self._window = RingBuffer(rule.last_n)
        self._history = Reservoir() if rule.relative else None

    def update(self, steps: np.ndarray, values: np.ndarray) -> None:
        if self.rule.start_step is not None:
            keep = steps >= self.rule.start_step
            steps, values = steps[keep], values[keep]
        if values.size == 0:
            return
        self._count += values.size
        self._last_step = float(steps[-1])
        self._last_value = float(values[-1])
        # a NaN anywhere makes min/max NaN for good, which is what the aggregations promise
        if math.isnan(self._min) or np.isnan(values).any():
            self._min = self._max = math.nan
        else:
            self._min = min(self._min, float(values.min()))
            self._max = max(self._max, float(values.max()))
        self._window.extend(steps, values)
        if self._history is not None:
            self._history.extend(values)

    def result(self) -> RuleResult:
        rule = self.rule
        if self._count == 0:
            return RuleResult(rule, self.key, Health.NO_DATA, None, None, 0)
        if rule.aggregation == "last":
            value = self._last_value
        elif rule.aggregation == "mean_last_N":
            value = float(np.mean(self._window.values()))
        else:
            value = self._min if rule.aggregation == "min" else self._max
        median = self._history.median() if self._history is not None else None
        return RuleResult(rule, self.key, rule.judge(value, median), value, self._last_step,
                          self._count, median)


# The mHC study's "metrics to watch" table.
MHC_RULES: tuple[Rule, ...] = (
    Rule("stream_similarity", good="< 0.2", bad="> 0.4",
         note="streams becoming copies of each other: mHC collapsing to a residual"),
    Rule("gate_value", good="0.3-0.7", bad=">= 1.0", note="a gate saturating at 1.0 no longer gates"),
    Rule("sinkhorn_col_err_raw", good="< 1e-6", bad="> 0.01",
         note="H_res is no longer doubly stochastic: too few Sinkhorn iterations"),
    Rule("H_res_diag_mean", good="0.4-0.8", bad="1.0 or 0.25",
         note="1.0: streams never mix (identity); 0.25: uniform mixing at n=4"),
    Rule("val/bpb", good="< 1.0", bad="> 1.2", live=False, note="final validation bits per byte"),
)

# General training health; the detectors add the rest (divergence, collapse, schedule, ...).
GENERAL_RULES: tuple[Rule, ...] = (
    Rule("*loss", bad="NaN", aggregation="max", note="a NaN loss invalidates the run"),
    # The first steps' gradients are large at any initialisation (a transformer's step-0 norm is
    # often 10-20x its later median): judged from them, every run would "explode" at step 0.
    Rule("*grad_norm", bad="> 10x median", aggregation="max", start_step=100,
         note="gradient explosion relative to its own history (after the first 100 steps)"),
)

RULE_PACKS: dict[str, tuple[Rule, ...]] = {"general": GENERAL_RULES, "mhc": MHC_RULES}


def builtin_rules(packs: Iterable[str] = ("general", "mhc")) -> list[Rule]:
    """The rules of the named built-in packs, in pack order."""
    rules: list[Rule] = []
    for pack in packs:
        if pack not in RULE_PACKS:
            raise RulesFileError(f"unknown rule pack {pack!r}; built-in packs: {', '.join(RULE_PACKS)}")
        rules.extend(RULE_PACKS[pack])
    return merge_rules(rules, ())


def merge_rules(base: Iterable[Rule], overrides: Iterable[Rule]) -> list[Rule]:
    """`base` with each override replacing the rule of the same metric (new metrics appended)."""
    merged: dict[str, Rule] = {}
    for rule in (*base, *overrides):
        merged[rule.metric] = rule
    return list(merged.values())
