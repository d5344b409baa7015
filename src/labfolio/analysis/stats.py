"""Seed statistics: mean ± std over seeds, confidence intervals, and verdicts against a baseline.

The notebook's results tables come from here. The rules, stated once:

- A metric's direction comes from its name (``metric_direction``): loss-like names are
  lower-is-better, accuracy-like names higher-is-better; a per-metric override wins.
- Per (experiment, variant) and metric: n, mean, std (ddof=1), a t-distribution CI of the mean,
  min and max.
- Each variant is compared with its experiment's baseline variant: ``delta = variant - baseline``
  (means), a Welch t-test p-value, and a percentile bootstrap CI of the delta (fixed seed, so the
  same runs always give the same numbers).
- Verdict: ``insufficient seeds`` when either side has n < 2; ``better``/``worse`` only when the
  difference clears the seed noise on both tests (Welch p < alpha AND the bootstrap CI of the
  delta excludes 0); otherwise ``marginal``. A significant difference on a metric whose direction
  is unknown is ``different``.
- Lucky runs: a run whose value sits beyond its siblings' prediction interval (leave-one-out
  z-score in units of the experiment's pooled seed noise, see ``find_lucky_runs``).
- Invalid runs are excluded by default, and the report says how many and why.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fnmatch import fnmatchcase

import numpy as np

from labfolio.analysis._bitexact import _bootstrap_delta_ci, _numpy_sum, _t_quantile, _welch_p_value
from labfolio.analysis.errors import AnalysisInputError
from labfolio.analysis.runs import DEFAULT_EXCLUDED_STATES, SUPERSEDED, RunView, exclusion_reasons

__all__ = [
    "Verdict",
    "MetricSummary",
    "Comparison",
    "LuckyRun",
    "ExcludedRun",
    "VariantStats",
    "SeedReport",
    "BASELINE_VARIANT_NAMES",
    "metric_direction",
    "metric_tokens",
    "summarize",
    "compare_samples",
    "find_lucky_runs",
    "seed_statistics",
    "format_value",
    "format_mean_std",
    "format_spread",
]


# Matched against the tokens of a metric name (split on /, _, -, ., spaces; digits dropped), the
# last matching token deciding, so "val/top1_err" is lower-is-better and "knn_acc" higher.
_LOWER_IS_BETTER = frozenset(
    "loss losses bpb bpc perplexity ppl error errors err nll mse mae rmse wer cer fid "
    "regret latency".split()
)
_HIGHER_IS_BETTER = frozenset(
    "acc accuracy top f1 auc auroc auprc precision recall bleu rouge map iou miou dice r2 "
    "silhouette reward throughput".split()
)
_DIRECTION_ALIASES = {
    "lower": "lower", "min": "lower", "minimize": "lower", "lower_is_better": "lower",
    "higher": "higher", "max": "higher", "maximize": "higher", "higher_is_better": "higher",
}
# Tried in order when the caller does not say which variant is an experiment's baseline.
BASELINE_VARIANT_NAMES = ("baseline", "base", "control", "reference")


def metric_tokens(metric: str) -> list[str]:
    """Lower-case name tokens; digits are dropped unless the token is known as is ('f1', 'top1')."""
    tokens = []
    for token in re.split(r"[^a-z0-9]+", metric.lower()):
        if token and token not in _LOWER_IS_BETTER and token not in _HIGHER_IS_BETTER:
            token = re.sub(r"\d+", "", token)
        if token:
            tokens.append(token)
    return tokens


def metric_direction(metric: str, overrides: Mapping[str, str] | None = None) -> str | None:
    """'lower' or 'higher' (is better) for `metric`, or None when the name does not say.

    `overrides` maps metric names or glob patterns (``"val/*_ppl"``) to 'lower'/'higher' (also
    'min'/'max'); an exact name beats a pattern.

    >>> metric_direction("val/bpb"), metric_direction("test/knn_acc"), metric_direction("lr")
    ('lower', 'higher', None)
    """
    if overrides:
        chosen = overrides.get(metric)
        if chosen is None:
            chosen = next((d for pattern, d in overrides.items() if fnmatchcase(metric, pattern)), None)
        if chosen is not None:
            direction = _DIRECTION_ALIASES.get(str(chosen).lower())
            if direction is None:
                raise AnalysisInputError(
                    f"direction override for {metric!r} must be 'lower' or 'higher', got {chosen!r}"
                )
            return direction
    return _direction_from_name(metric)


@functools.lru_cache(maxsize=4096)  # a few metric names, asked about for every variant of every experiment
def _direction_from_name(metric: str) -> str | None:
    for token in reversed(metric_tokens(metric)):
        if token in _LOWER_IS_BETTER:
            return "lower"
        if token in _HIGHER_IS_BETTER:
            return "higher"
    return None


def _uses_fixed_point(value: float, decimals: int) -> bool:
    return value == 0 or 10.0 ** (-decimals + 1) <= abs(value) < 1e6


def format_value(value: float | None, decimals: int = 4) -> str:
    """A summary number: fixed with `decimals` places, scientific when tiny or huge.

    >>> format_value(0.92134), format_value(2.5e-7), format_value(None)
    ('0.9213', '2.500e-07', 'n/a')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if _uses_fixed_point(value, decimals):
        return f"{value:.{decimals}f}"
    return f"{value:.3e}"


def format_mean_std(mean: float | None, std: float | None, n: int, decimals: int = 4) -> str:
    """'0.9213 ± 0.0021 (n=3)'; with one seed '0.9213 (n=1)'; with none 'n/a (n=0)'.

    The std takes the mean's format (same decimals when the mean is fixed-point), except that a
    real spread that would print as zero is written in scientific notation ('± 4.0e-06').
    """
    if n <= 0 or mean is None or math.isnan(mean):
        return f"n/a (n={max(n, 0)})"
    text = format_value(mean, decimals)
    if n >= 2 and std is not None and not math.isnan(std):
        text += f" ± {format_spread(std, mean, decimals)}"
    return f"{text} (n={n})"


def format_spread(spread: float, like: float, decimals: int = 4) -> str:
    """A std or noise level in the format of the value `like` it goes with (see format_mean_std)."""
    fixed = _uses_fixed_point(float(like), decimals)
    if spread != 0 and (abs(spread) < 0.5 * 10.0 ** (-decimals) or not fixed):
        return f"{spread:.1e}" if fixed else f"{spread:.3e}"
    return f"{spread:.{decimals}f}"


@dataclass(frozen=True)
class MetricSummary:
    """One metric over the seeds of one variant."""

    metric: str  # metric name
    n: int  # number of finite values
    mean: float  # NaN when n == 0
    std: float  # sample std (ddof=1); NaN when n < 2
    ci_low: float  # lower end of the CI of the mean (t-distribution); NaN when n < 2
    ci_high: float  # upper end of the CI of the mean; NaN when n < 2
    min: float  # smallest value; NaN when n == 0
    max: float  # largest value; NaN when n == 0
    values: tuple[float, ...] = ()  # the values, in run order
    run_ids: tuple[str, ...] = ()  # the run each value came from (same order), when known
    dropped: tuple[str, ...] = ()  # runs whose value was NaN/Inf and so left out

    def format(self, decimals: int = 4) -> str:
        """'mean ± std (n=k)'."""
        return format_mean_std(self.mean, self.std, self.n, decimals)


def summarize(
    values: Sequence[float],
    metric: str = "",
    run_ids: Sequence[str] = (),
    confidence: float = 0.95,
) -> MetricSummary:
    """n, mean, std (ddof=1), t-based CI of the mean, min and max of the finite `values`."""
    if not 0 < confidence < 1:
        raise AnalysisInputError(f"confidence must be in (0, 1), got {confidence}")
    if run_ids and len(run_ids) != len(values):
        raise AnalysisInputError(f"got {len(values)} values but {len(run_ids)} run ids for {metric!r}")
    raw = np.asarray(values, dtype=float).reshape(-1)
    ids = tuple(run_ids) if run_ids else ("",) * raw.size
    finite = np.isfinite(raw)
    kept = raw[finite]
    dropped = tuple(run_id for run_id, ok in zip(ids, finite) if not ok)
    kept_ids = tuple(run_id for run_id, ok in zip(ids, finite) if ok) if run_ids else ()
    n = int(kept.size)
    nan = math.nan
    if n == 0:
        return MetricSummary(metric, 0, nan, nan, nan, nan, nan, nan, (), kept_ids, dropped)
    plain = kept.tolist()
    # kept.mean() and kept.std(ddof=1), the same operations on plain floats (see _numpy_sum)
    mean = _numpy_sum(plain) / n
    if n >= 2:
        deviations = [value - mean for value in plain]
        std = math.sqrt(_numpy_sum([d * d for d in deviations]) / (n - 1))
        half = _t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
        ci_low, ci_high = mean - half, mean + half
    else:
        std = ci_low = ci_high = nan
    return MetricSummary(
        metric, n, mean, std, ci_low, ci_high, float(kept.min()), float(kept.max()),
        tuple(plain), kept_ids, dropped,
    )


class Verdict(str, Enum):
    """How a variant compares with the baseline on one metric."""

    BETTER = "better"
    WORSE = "worse"
    MARGINAL = "marginal"  # the difference sits inside the seed noise
    INSUFFICIENT = "insufficient seeds"  # fewer than 2 seeds on either side
    DIFFERENT = "different"  # significant, but the metric's direction is unknown

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Comparison:
    """One variant against its experiment's baseline on one metric."""

    experiment: str
    metric: str
    baseline_variant: str
    variant: str
    direction: str | None  # 'lower' | 'higher' (is better) | None when unknown
    baseline: MetricSummary
    candidate: MetricSummary
    delta: float  # candidate mean - baseline mean (NaN when either side is empty)
    p_value: float  # Welch t-test, two-sided; NaN when either side has n < 2
    delta_ci_low: float  # bootstrap percentile CI of the delta; NaN when either side has n < 2
    delta_ci_high: float
    verdict: Verdict
    reason: str  # one line saying why the verdict is what it is

    @property
    def relative_delta(self) -> float:
        """delta / |baseline mean| (NaN when the baseline mean is 0 or missing)."""
        base = self.baseline.mean
        if not math.isfinite(base) or base == 0:
            return math.nan
        return self.delta / abs(base)


def compare_samples(
    baseline: MetricSummary,
    candidate: MetricSummary,
    *,
    direction: str | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_bootstrap: int = 10_000,
    bootstrap_seed: int = 0,
    experiment: str = "",
    baseline_variant: str = "baseline",
    variant: str = "variant",
) -> Comparison:
    """Compare two summaries of the same metric and give a verdict (rules in the module doc)."""
    if direction not in (None, "lower", "higher"):
        raise AnalysisInputError(f"direction must be 'lower', 'higher' or None, got {direction!r}")
    if not 0 < alpha < 1:
        raise AnalysisInputError(f"alpha must be in (0, 1), got {alpha}")
    if n_bootstrap < 100:
        raise AnalysisInputError(f"n_bootstrap must be >= 100 for a usable CI, got {n_bootstrap}")
    metric = candidate.metric or baseline.metric
    nan = math.nan
    delta = candidate.mean - baseline.mean if baseline.n and candidate.n else nan
    common = dict(
        experiment=experiment, metric=metric, baseline_variant=baseline_variant, variant=variant,
        direction=direction, baseline=baseline, candidate=candidate, delta=delta,
    )
    if baseline.n < 2 or candidate.n < 2:
        reason = f"n={candidate.n} vs baseline n={baseline.n}; need at least 2 seeds on each side"
        return Comparison(**common, p_value=nan, delta_ci_low=nan, delta_ci_high=nan,
                          verdict=Verdict.INSUFFICIENT, reason=reason)
    a = np.asarray(baseline.values, dtype=float)
    b = np.asarray(candidate.values, dtype=float)
    p_value = _welch_p_value(a, b)
    low, high = _bootstrap_delta_ci(a, b, confidence, n_bootstrap, bootstrap_seed)
    level = f"{confidence:.0%}"
    ci_has_zero = low <= 0 <= high
    if p_value >= alpha or ci_has_zero:
        why = []
        if p_value >= alpha:
            why.append(f"Welch p={p_value:.3g} >= {alpha:g}")
        if ci_has_zero:
            why.append(f"the {level} bootstrap CI of the delta [{low:.4g}, {high:.4g}] contains 0")
        verdict, reason = Verdict.MARGINAL, "inside the seed noise: " + " and ".join(why)
    else:
        evidence = f"Welch p={p_value:.3g} < {alpha:g} and the {level} bootstrap CI [{low:.4g}, {high:.4g}] excludes 0"
        if direction is None:
            verdict = Verdict.DIFFERENT
            reason = f"{evidence}; set a direction for {metric!r} to call it better or worse"
        else:
            improved = delta < 0 if direction == "lower" else delta > 0
            verdict = Verdict.BETTER if improved else Verdict.WORSE
            reason = f"{evidence} ({direction} is better)"
    return Comparison(**common, p_value=p_value, delta_ci_low=low, delta_ci_high=high,
                      verdict=verdict, reason=reason)


@dataclass(frozen=True)
class LuckyRun:
    """A run far outside its siblings' spread on one metric."""

    experiment: str
    variant: str
    metric: str
    run_id: str
    label: str  # 'seed 0 (run abc)'
    value: float
    siblings_mean: float  # mean of the other seeds of the same variant
    noise: float  # seed noise σ the distance is measured in (pooled, see find_lucky_runs)
    n_siblings: int
    z: float  # (value - siblings_mean) / noise, signed
    threshold: float  # |z| needed to flag
    side: str  # 'lucky' (better side), 'unlucky' (worse side), 'outlier' (direction unknown)
    message: str


# Siblings that agree to within this relative amount are treated as identical, so float round-off
# between deterministic seeds never reads as a 1e12-sigma outlier.
_SIGMA_FLOOR = 1e-9


def find_lucky_runs(
    summary: MetricSummary,
    labels: Sequence[str] | None = None,
    *,
    direction: str | None = None,
    others: Sequence[Sequence[float]] = (),
    experiment: str = "",
    variant: str = "",
    min_z: float = 3.0,
    alpha: float = 0.05,
) -> list[LuckyRun]:
    """Runs whose value lies outside the prediction interval of their siblings.

    A run's siblings are the other seeds of its variant (at least 2). Its distance is
    ``z = (value - mean(siblings)) / σ``, where σ is the seed noise pooled over everything but the
    run itself: its siblings and the seeds of the experiment's `others` variants (each around its
    own mean), since seed noise is shared across variants and two siblings alone say little.
    Under normal noise ``z / sqrt(1 + 1/k)`` (k siblings) follows a t-distribution with the
    pooled degrees of freedom, and a run is flagged when |z| exceeds both `min_z` and the
    critical value at `alpha` split over all the runs tested (so honest noise flags an
    experiment with probability about `alpha`, however many seeds it has).
    """
    values = np.asarray(summary.values, dtype=float)
    if values.size < 3:
        return []
    labels = list(labels) if labels is not None else [f"run {rid}" for rid in summary.run_ids]
    if len(labels) != values.size:
        labels = [f"value #{i}" for i in range(values.size)]
    other_groups = [[float(value) for value in group] for group in others if len(group) >= 2]
    # float(((g - g.mean()) ** 2).sum()) for each group, on plain floats in numpy's order (see
    # _numpy_sum): a handful of seeds per group, where numpy's per-call cost is all there is
    other_squares = 0
    for group in other_groups:
        group_mean = _numpy_sum(group) / len(group)
        other_squares += _numpy_sum([(value - group_mean) * (value - group_mean) for value in group])
    other_df = sum(len(group) - 1 for group in other_groups)
    tested = values.size + sum(len(group) for group in other_groups if len(group) >= 3)
    found = []
    plain = values.tolist()
    for i, value in enumerate(plain):
        # the siblings' mean and squared deviations as numpy would sum them (see _numpy_sum)
        siblings = plain[:i] + plain[i + 1:]
        k = len(siblings)
        mean = _numpy_sum(siblings) / k
        df = (k - 1) + other_df
        noise = math.sqrt((_numpy_sum([(s - mean) * (s - mean) for s in siblings]) + other_squares) / df)
        sigma = max(noise, _SIGMA_FLOOR * max(1.0, abs(mean)))
        z = (float(value) - mean) / sigma
        critical = _t_quantile(1 - alpha / (2 * tested), df) * math.sqrt(1 + 1 / k)
        threshold = max(min_z, critical)
        if abs(z) <= threshold:
            continue
        if direction is None:
            side = "outlier"
        else:
            better = (z < 0) if direction == "lower" else (z > 0)
            side = "lucky" if better else "unlucky"
        advice = {
            "lucky": "likely a lucky seed; run more seeds before believing it",
            "unlucky": "an unlucky seed or a broken run; check it before averaging it in",
            "outlier": "an outlier; check it before averaging it in",
        }[side]
        pooled = f"{k + sum(len(group) for group in other_groups)} other runs"
        message = (
            f"{labels[i]}: {summary.metric} = {format_value(float(value))} is {abs(z):.1f}σ "
            f"{'above' if z > 0 else 'below'} the mean of its {k} siblings ({format_value(mean)}; seed "
            f"noise σ = {format_spread(noise, mean)} from {pooled}; flagged beyond {threshold:.1f}σ): {advice}"
        )
        run_id = summary.run_ids[i] if summary.run_ids else ""
        found.append(LuckyRun(experiment, variant, summary.metric, run_id, labels[i], float(value),
                              mean, noise, k, z, threshold, side, message))
    return found


@dataclass(frozen=True)
class ExcludedRun:
    """A run left out of the statistics, and why."""

    run_id: str
    experiment: str
    variant: str
    reason: str  # 'crashed', 'marked invalid: NaN at step 40', ...


@dataclass(frozen=True)
class VariantStats:
    """All metrics of one (experiment, variant) over its included runs."""

    experiment: str
    variant: str
    run_ids: tuple[str, ...]
    metrics: Mapping[str, MetricSummary]


@dataclass(frozen=True)
class SeedReport:
    """Everything ``seed_statistics`` found, ready to print or to fill a notebook table."""

    groups: tuple[VariantStats, ...]
    comparisons: tuple[Comparison, ...]
    lucky_runs: tuple[LuckyRun, ...]
    excluded: tuple[ExcludedRun, ...]
    baselines: Mapping[str, str | None]  # experiment -> its baseline variant (None if none)
    metrics: tuple[str, ...]  # metrics analysed, in display order
    notes: tuple[str, ...] = field(default=())  # e.g. 'experiment x: no baseline variant'

    def group(self, experiment: str, variant: str) -> VariantStats:
        """The stats of one variant (KeyError naming the known groups if absent)."""
        for group in self.groups:
            if group.experiment == experiment and group.variant == variant:
                return group
        known = ", ".join(f"{g.experiment}/{g.variant}" for g in self.groups) or "none"
        raise KeyError(f"no runs for {experiment}/{variant}; groups: {known}")

    def comparison(self, experiment: str, variant: str, metric: str) -> Comparison:
        """The comparison of `variant` with its baseline on `metric`."""
        for comparison in self.comparisons:
            if (comparison.experiment, comparison.variant, comparison.metric) == (experiment, variant, metric):
                return comparison
        raise KeyError(f"no comparison for {experiment}/{variant} on {metric!r}")

    @property
    def excluded_summary(self) -> str:
        """'3 runs excluded: 1 crashed, 1 marked invalid: NaN loss, 1 superseded by a newer run of the
        same seed' (empty when none were)."""
        if not self.excluded:
            return ""
        counts: dict[str, int] = {}
        for run in self.excluded:
            reason = SUPERSEDED if run.reason.startswith(SUPERSEDED) else run.reason
            counts[reason] = counts.get(reason, 0) + 1
        parts = ", ".join(f"{count} {reason}" for reason, count in counts.items())
        total = len(self.excluded)
        return f"{total} run{'s' if total != 1 else ''} excluded: {parts}"


def _pick_baseline(experiment: str, variants: Sequence[str], baselines: str | Mapping[str, str] | None) -> str | None:
    if isinstance(baselines, str):
        return baselines
    if baselines is not None and experiment in baselines:
        return baselines[experiment]
    lowered = {v.lower(): v for v in variants}
    return next((lowered[name] for name in BASELINE_VARIANT_NAMES if name in lowered), None)


def _numeric_metrics(runs: Iterable[RunView]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for name, value in run.summary.items():
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                seen.setdefault(name, None)
    return list(seen)


def seed_statistics(
    runs: Iterable[RunView],
    metrics: Sequence[str] | None = None,
    *,
    baselines: str | Mapping[str, str] | None = None,
    directions: Mapping[str, str] | None = None,
    include_invalid: bool = False,
    excluded_states: Iterable[str] = DEFAULT_EXCLUDED_STATES,
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_bootstrap: int = 10_000,
    bootstrap_seed: int = 0,
    lucky_min_z: float = 3.0,
    lucky_alpha: float = 0.05,
) -> SeedReport:
    """Group `runs` by (experiment, variant), summarise each metric, compare with the baseline.

    `metrics` defaults to every numeric summary key. `baselines` names each experiment's baseline
    variant (one name for all, or a mapping); without it a variant called baseline/base/control/
    reference is used, and an experiment without one gets stats but no comparisons (a note says
    so). Runs are excluded as ``exclusion_reasons`` says; `include_invalid=True` keeps them all.
    """
    runs = list(runs)
    kept: list[RunView] = []
    excluded: list[ExcludedRun] = []
    reasons = exclusion_reasons(runs, include_invalid=include_invalid, excluded_states=excluded_states)
    for run in runs:
        reason = reasons[run.run_id]
        if reason is None:
            kept.append(run)
        else:
            excluded.append(ExcludedRun(run.run_id, run.experiment, run.variant, reason))
    metric_names = list(metrics) if metrics is not None else _numeric_metrics(kept)

    # Every (experiment, variant) seen, excluded runs included, so an all-excluded variant still
    # shows up (with n=0) instead of silently vanishing from the table.
    order: dict[str, dict[str, list[RunView]]] = {}
    for run in runs:
        order.setdefault(run.experiment, {}).setdefault(run.variant, [])
    for run in kept:
        order[run.experiment][run.variant].append(run)

    groups: list[VariantStats] = []
    comparisons: list[Comparison] = []
    lucky: list[LuckyRun] = []
    chosen_baselines: dict[str, str | None] = {}
    notes: list[str] = []
    for experiment, variants in order.items():
        summaries: dict[str, dict[str, MetricSummary]] = {}
        for variant, members in variants.items():
            per_metric = {}
            for metric in metric_names:
                present = [(r, value) for r in members if (value := r.metric(metric)) is not None]
                per_metric[metric] = summarize(
                    [v for _, v in present], metric, [r.run_id for r, _ in present], confidence
                )
            summaries[variant] = per_metric
            groups.append(VariantStats(experiment, variant, tuple(r.run_id for r in members), per_metric))

        labels = {run.run_id: run.label for members in variants.values() for run in members}
        for metric in metric_names:
            for variant in variants:
                summary = summaries[variant][metric]
                others = [summaries[v][metric].values for v in variants if v != variant]
                lucky.extend(find_lucky_runs(
                    summary, [labels[rid] for rid in summary.run_ids],
                    direction=metric_direction(metric, directions), others=others,
                    experiment=experiment, variant=variant, min_z=lucky_min_z, alpha=lucky_alpha,
                ))

        baseline = _pick_baseline(experiment, list(variants), baselines)
        if baseline is not None and baseline not in variants:
            notes.append(f"{experiment}: baseline variant {baseline!r} has no runs; "
                         f"variants are {', '.join(variants)}")
            baseline = None
        elif baseline is None and len(variants) > 1:
            notes.append(f"{experiment}: no baseline variant (name one with baselines=...); "
                         "variants are not compared")
        chosen_baselines[experiment] = baseline
        if baseline is None:
            continue
        for variant in variants:
            if variant == baseline:
                continue
            for metric in metric_names:
                comparisons.append(compare_samples(
                    summaries[baseline][metric], summaries[variant][metric],
                    direction=metric_direction(metric, directions), alpha=alpha,
                    confidence=confidence, n_bootstrap=n_bootstrap, bootstrap_seed=bootstrap_seed,
                    experiment=experiment, baseline_variant=baseline, variant=variant,
                ))
    return SeedReport(tuple(groups), tuple(comparisons), tuple(lucky), tuple(excluded),
                      chosen_baselines, tuple(metric_names), tuple(notes))
