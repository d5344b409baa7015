"""Plain-text reports for the CLI: ``compare``'s variant table, ``diff``'s changes, ``check``'s health report.

The text is stable (fixed column order, fixed number formats, no colour, no widths taken from the
terminal) so commands can be tested on their exact output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labfolio.analysis.alerts import SEVERITY_ORDER, Alert, format_number, format_step
from labfolio.analysis.detectors import DetectorOptions
from labfolio.analysis.diff import ConfigDiff
from labfolio.analysis.monitor import detect_all
from labfolio.analysis.rules import Rule, RuleResult, builtin_rules, evaluate_rules
from labfolio.analysis.stats import Comparison, SeedReport, format_spread, format_value, metric_direction
from labfolio.analysis.status import StatusProposal, propose_status

__all__ = [
    "CheckReport",
    "check_run",
    "format_table",
    "format_p_value",
    "format_delta",
    "format_comparison_table",
    "format_config_diff",
    "format_check",
]


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns separated by two spaces; trailing spaces stripped."""
    rows = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(indent + line for line in lines)


def format_p_value(p: float) -> str:
    """'0.061', '<0.001', or '—' when there is none."""
    if p is None or math.isnan(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_delta(delta: float, decimals: int = 4, like: float | None = None) -> str:
    """A signed difference: '+0.0037', '-1.250e-06', '—' when there is none.

    With `like` (the baseline's mean), the difference takes the values' format, as a seed spread
    does (`format_spread`): -0.0009 between accuracies of 0.85, not -9.000e-04, so it reads on
    the same scale as the numbers it is the difference of.
    """
    if delta is None or math.isnan(delta):
        return "—"
    magnitude = abs(delta)
    if like is not None and math.isfinite(like):
        text = format_spread(magnitude, like, decimals)
    else:
        text = format_value(magnitude, decimals)
    return ("-" if delta < 0 else "+") + text


def _ci(low: float, high: float, signed: bool = False) -> str:
    if math.isnan(low) or math.isnan(high):
        return "—"
    show = format_delta if signed else format_value
    return f"[{show(low)}, {show(high)}]"


def _direction_label(metric: str, directions: Mapping[str, str] | None) -> str:
    direction = metric_direction(metric, directions)
    return {"lower": "lower is better", "higher": "higher is better"}.get(direction or "", "direction unknown")


def format_comparison_table(
    report: SeedReport,
    metrics: Sequence[str] | None = None,
    *,
    directions: Mapping[str, str] | None = None,
) -> str:
    """The ``labfolio compare`` output: per experiment and metric, one row per variant.

    Columns: variant, mean ± std (n), 95% CI of the mean, Δ vs baseline, bootstrap CI of Δ,
    Welch p-value, verdict. Lucky runs, exclusions and notes follow the tables.
    """
    metrics = list(metrics) if metrics is not None else list(report.metrics)
    unknown = [m for m in metrics if m not in report.metrics]
    if unknown:
        known = ", ".join(report.metrics) or "none"
        raise KeyError(f"no statistics for {', '.join(unknown)}; metrics: {known}")
    blocks: list[str] = []
    experiments = list(dict.fromkeys(group.experiment for group in report.groups))
    comparisons: dict[tuple[str, str, str], Comparison] = {
        (c.experiment, c.variant, c.metric): c for c in report.comparisons
    }
    for experiment in experiments:
        baseline = report.baselines.get(experiment)
        title = f"{experiment} (baseline: {baseline})" if baseline else f"{experiment} (no baseline)"
        blocks.append(title)
        # the baseline row first, the others in the order they came: the table reads top-down
        groups = sorted((g for g in report.groups if g.experiment == experiment),
                        key=lambda g: g.variant != baseline)
        for metric in metrics:
            rows = []
            for group in groups:
                summary = group.metrics[metric]
                if group.variant == baseline:
                    tail = ["baseline", "", "", ""]
                else:
                    comparison = comparisons.get((experiment, group.variant, metric))
                    tail = (["—", "—", "—", "—"] if comparison is None else [
                        format_delta(comparison.delta, like=comparison.baseline.mean),
                        _ci(comparison.delta_ci_low, comparison.delta_ci_high, True),
                        format_p_value(comparison.p_value), str(comparison.verdict)])
                rows.append([group.variant, summary.format(), _ci(summary.ci_low, summary.ci_high), *tail])
            header = ["variant", "mean ± std (n)", "95% CI", "Δ vs baseline", "95% CI of Δ", "p", "verdict"]
            blocks.append(f"\n{metric} ({_direction_label(metric, directions)})\n" + format_table(header, rows))
        blocks.append("")
    lucky = [run for run in report.lucky_runs if run.metric in metrics]
    if lucky:
        blocks.append("outlier seeds:")
        blocks.extend(f"  - {run.experiment}/{run.variant} {run.message}" for run in lucky)
    if report.excluded:
        blocks.append(report.excluded_summary + ".")
    blocks.extend(f"note: {note}" for note in report.notes)
    return "\n".join(blocks).rstrip() + "\n"


def format_config_diff(diff: ConfigDiff, old: str, new: str) -> str:
    """The ``labfolio diff`` output: one line per changed key, the confound warning, ignored keys."""
    lines = [f"{old} → {new}"]
    lines += diff.render_lines("  ") if diff else ["  no config differences"]
    if diff.confound_warning:
        lines.append(f"warning: {diff.confound_warning}")
    if diff.ignored:
        lines.append("ignored: " + ", ".join(change.key for change in diff.ignored))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CheckReport:
    """Everything ``labfolio check`` says about one run."""

    run: str  # how the run is named in the report, e.g. 'run abc123 (exp/mhc, seed 0)'
    state: str
    rule_results: tuple[RuleResult, ...]
    alerts: tuple[Alert, ...]
    status: StatusProposal


def check_run(
    series: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    config: Mapping[str, Any] | None = None,
    *,
    run: str = "run",
    state: str = "finished",
    rules: Iterable[Rule] | None = None,
    override: str | None = None,
    override_reason: str | None = None,
    options: DetectorOptions | None = None,
    total_steps: float | None = None,
    eff_rank_dim: float | None = None,
) -> CheckReport:
    """Rules, detectors and the proposed status for one finished (or stopped) run, post hoc.

    `rules` default to the built-in packs. Alerts come from ``detect_all`` (rules included), so
    they match what live vigilance reported.
    """
    rules = tuple(builtin_rules() if rules is None else rules)
    alerts = detect_all(series, config, rules=rules, options=options, total_steps=total_steps,
                        eff_rank_dim=eff_rank_dim, complete=state == "finished")
    results = evaluate_rules(rules, series)
    status = propose_status(state, alerts, override=override, override_reason=override_reason)
    return CheckReport(run, state, tuple(results), tuple(alerts), status)


def format_check(report: CheckReport) -> str:
    """The ``labfolio check`` output for one run: rule results, alerts, proposed status."""
    lines = [f"{report.run}: {report.state}", "", "rules"]
    if report.rule_results:
        rows = []
        for result in report.rule_results:
            value = "—" if result.value is None else format_number(result.value)
            rows.append([str(result.health), result.metric, value, result.rule.aggregation_label,
                         result.rule.good or "—", result.rule.bad or "—"])
        lines.append(format_table(["health", "metric", "value", "aggregate", "good", "bad"], rows, "  "))
    else:
        lines.append("  (no rules)")
    lines += ["", "alerts"]
    if report.alerts:
        ordered = sorted(report.alerts, key=lambda a: (-SEVERITY_ORDER[a.severity],
                                                       math.inf if a.step is None else a.step, a.kind))
        rows = [[a.severity, a.kind, a.metric, "—" if a.step is None else format_step(a.step), a.message]
                for a in ordered]
        lines.append(format_table(["severity", "kind", "metric", "step", "evidence"], rows, "  "))
    else:
        lines.append("  (none)")
    heading = "status (human override)" if report.status.overridden else "proposed status"
    lines += ["", f"{heading}: {report.status.summary}"]
    return "\n".join(lines) + "\n"
