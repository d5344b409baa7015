"""The bridge to ``labfolio.analysis``: run views, proposed statuses, seed statistics, diffs.

Every number the notebook prints about a group of runs comes from the analysis functions
(``seed_statistics``, ``diff_experiments``, ``diff_variants``, ``propose_status``); this module
only picks which metrics to show and turns the results into plain, cacheable text.

Seed statistics cost milliseconds per experiment (t quantiles, Welch tests, a bootstrap), which
adds up to seconds on a thousand experiments. They are a pure function of the runs' summaries, so
the text they produce is cached under a hash of exactly those inputs (``ResultsCache``): an
experiment whose runs did not change is never recomputed.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..store.records import AlertRecord, RunRecord
from .mdtext import format_number_text
from .snapshot import ExperimentInfo, is_imported

__all__ = [
    "RESULTS_FORMAT_VERSION",
    "ResultsCache",
    "key_metrics",
    "experiment_metrics",
    "HEADLINE_METRICS_FIELD",
    "run_views",
    "propose_run_status",
    "as_analysis_alerts",
    "is_result_metric",
    "status_label",
    "experiment_status",
    "experiment_results",
    "results_key",
    "config_views",
    "variant_order",
    "described_run_ids",
    "previous_diff",
    "variant_diffs",
    "mislabelled_variants",
    "values_as_written",
]

RESULTS_FORMAT_VERSION = 3  # bump when the cached text's shape changes
_MAX_KEY_METRICS = 6
_MAX_IMPORTED_METRICS = 16
_PREFERRED_PREFIXES = ("test/", "val/", "valid/", "validation/", "eval/", "test_", "val_", "eval_")
_NOT_RESULTS = re.compile(
    r"(^|[/_.])(lr|learning_rate|step|steps|epoch|epochs|time|runtime|_runtime|timestamp)$"
    r"|_per_s$|^(sys|system|gpu|cpu|mem|memory|runner)[/_.]|grad_norm|^lr[/_]", re.I)


def values_as_written(run: RunRecord) -> dict[str, str]:
    """For an imported run: metric -> the cell text it was read from."""
    written = (run.provenance or {}).get("values_as_written") or {}
    return {str(k): str(v) for k, v in written.items()} if isinstance(written, Mapping) else {}


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_result_metric(key: str) -> bool:
    """Whether `key` is an evaluation result (test/, val/ ...) rather than training bookkeeping."""
    return key.lower().startswith(_PREFERRED_PREFIXES) and not _NOT_RESULTS.search(key)


@functools.lru_cache(maxsize=8192)  # a store has few distinct metric names and many runs
def _metric_kind(key: str) -> bool | None:
    """None for bookkeeping (lr, steps, timings), True for evaluation results, False otherwise."""
    if _NOT_RESULTS.search(key):
        return None
    return key.lower().startswith(_PREFERRED_PREFIXES)


def key_metrics(runs: Sequence[RunRecord]) -> list[str]:
    """The metrics a results table shows: what imported rows carried (in their order), then the
    evaluation metrics (test/, val/ ...), else the other logged metrics; never lr, steps, timings."""
    imported: dict[str, None] = {}
    for run in runs:
        if is_imported(run):
            for key in (run.provenance or {}).get("metric_order") or run.summary:
                imported.setdefault(str(key), None)
    preferred: set[str] = set()
    others: set[str] = set()
    for run in runs:
        if is_imported(run):
            continue
        for key, entry in run.summary.items():
            kind = _metric_kind(key)
            if kind is None or key in preferred or key in others:  # bookkeeping, or already chosen
                continue
            value = entry.override if entry.override is not None else entry.last  # entry.value
            if _numeric(value):
                (preferred if kind else others).add(key)
    tracked = sorted(preferred) or sorted(others)
    chosen = list(imported)[:_MAX_IMPORTED_METRICS]
    chosen += [key for key in tracked if key not in imported][:_MAX_KEY_METRICS]
    return chosen


# An experiment note field: the spec's `metrics:`, one per line (labfolio run records it).
HEADLINE_METRICS_FIELD = "headline_metrics"


def experiment_metrics(exp: ExperimentInfo, runs: Sequence[RunRecord] | None = None) -> list[str]:
    """The metrics an experiment's tables show for `runs` (default: all of its runs): the metrics
    its spec named (those the runs logged, in the spec's order), else ``key_metrics``."""
    runs = exp.runs if runs is None else runs
    declared = [line.strip() for line in (exp.notes.get(HEADLINE_METRICS_FIELD) or "").splitlines()]
    logged = {key for run in runs for key in run.summary}
    chosen = [key for key in dict.fromkeys(declared) if key and key in logged]
    return chosen or key_metrics(runs)


# -- statuses ----------------------------------------------------------------------------------

def as_analysis_alerts(records: Iterable[AlertRecord]):
    from ..analysis import Alert

    out = []
    for record in records:
        severity = record.severity if record.severity in ("info", "warning", "critical") else "warning"
        out.append(Alert(record.kind or "alert", record.metric or "", record.step, severity,
                         record.message or "", record.value))
    return out


def propose_run_status(run: RunRecord, alerts: Iterable[AlertRecord]):
    """The analysis ``StatusProposal`` for `run`: the human override if any, else from alerts."""
    from ..analysis import propose_status

    return propose_status(run.state, as_analysis_alerts(alerts), override=run.status,
                          override_reason=run.status_reason)


def status_label(status: str | None, reason: str | None = None) -> str:
    """'✅ Valid', '⚠️ Partially invalid (reason)', '❌ Invalid (discard for comparison)'."""
    from ..analysis import RunStatus

    if status is None:
        return "--"
    return RunStatus(status).label(reason)


def experiment_status(runs: Sequence[RunRecord], proposals: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(status, reason) of an experiment from its runs' statuses.

    All valid: valid. All invalid: invalid. Otherwise partially invalid. The reason names each
    distinct reason once, with the runs it applies to.
    """
    if not runs:
        return None, None
    statuses = [(run, proposals[run.run_id]) for run in runs]
    bad = [(run, p) for run, p in statuses if p.status.value != "valid"]
    if not bad:
        return "valid", None
    by_reason: dict[str, list[str]] = {}
    for run, proposal in bad:
        by_reason.setdefault(proposal.reason or proposal.status.value.replace("_", " "), []).append(run.run_id)
    parts = []
    for reason, run_ids in list(by_reason.items())[:3]:
        who = run_ids[0] if len(run_ids) == 1 else f"{len(run_ids)} runs"
        parts.append(reason if len(bad) == len(statuses) and len(by_reason) == 1 else f"{reason} ({who})")
    if len(by_reason) > 3:
        parts.append(f"and {len(by_reason) - 3} more reasons")
    reason_text = "; ".join(parts)
    if len(bad) == len(statuses) and all(p.status.value == "invalid" for _, p in bad):
        return "invalid", reason_text
    if len(bad) == len(statuses) and len(by_reason) == 1:
        return "partially_invalid", reason_text
    return "partially_invalid", f"{len(bad)} of {len(statuses)} runs: {reason_text}"


# -- seed statistics ---------------------------------------------------------------------------

def run_views(runs: Iterable[RunRecord], proposals: Mapping[str, Any], *, config: bool = False,
              summary: bool = True):
    """Analysis ``RunView``s of `runs` (proposed statuses attached); config diffs need no
    summaries (``summary=False``)."""
    from ..analysis import RunView

    views = []
    for run in runs:
        proposal = proposals.get(run.run_id)
        proposed = proposal.status.value if proposal is not None and not proposal.overridden else None
        values = {key: entry.value for key, entry in run.summary.items()} if summary else {}
        views.append(RunView(
            run_id=run.run_id, experiment=run.experiment, variant=run.variant, seed=run.seed,
            state=run.state, config=run.config if config else {}, summary=values,
            status_override=run.status, status_reason=run.status_reason, proposed_status=proposed,
            proposed_reason=proposal.reason if proposed else None, started_at=run.started_at))
    return views


class ResultsCache:
    """Cached results text per experiment, keyed by a hash of the runs it was computed from."""

    def __init__(self, path: Path | None):
        self.path = path
        self._entries: dict[str, Any] = {}
        self._used: set[str] = set()
        self._dirty = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict) and loaded.get("version") == RESULTS_FORMAT_VERSION:
                    self._entries = dict(loaded.get("entries") or {})
            except (OSError, ValueError):
                self._entries = {}

    def get(self, key: str):
        self._used.add(key)
        return self._entries.get(key)

    def is_empty(self) -> bool:
        return not self._entries

    def has(self, key: str) -> bool:
        """Whether `key` has an entry (without marking it as used, as ``get`` does)."""
        return key in self._entries

    def put(self, key: str, value) -> None:
        self._used.add(key)
        self._entries[key] = value
        self._dirty = True

    def save(self) -> bool:
        """Write the cache (only the entries used this time) if anything changed."""
        if self.path is None:
            return False
        stale = set(self._entries) - self._used
        if not self._dirty and not stale:
            return False
        for key in stale:
            del self._entries[key]
        text = json.dumps({"version": RESULTS_FORMAT_VERSION, "entries": self._entries},
                          sort_keys=True, separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.read_text(encoding="utf-8") == text:
            return False
        self.path.write_text(text, encoding="utf-8")
        return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _cell(values: list[tuple[Any, str | None]], summary) -> str:
    """One results cell: the number as written for a single imported row, else mean ± std (n)."""
    if not values:
        return "--"
    if len(values) == 1 and values[0][1] is not None:
        return values[0][1]
    if summary is not None and summary.n and all(_numeric(v) for v, _ in values):
        return summary.format()
    texts = [written if written is not None else format_number_text(v) for v, written in values]
    return " / ".join(dict.fromkeys(texts))


def results_key(exp: ExperimentInfo, proposals: Mapping[str, Any]) -> tuple[str, list[str], str | None]:
    """(cache key, metrics shown, baseline) of an experiment's results: the key hashes exactly what
    the results are computed from, and the code that computes them."""
    from .fingerprint import _digest, code_fingerprint

    runs = exp.runs
    metrics = experiment_metrics(exp)
    baseline = exp.baseline if exp.baseline in {r.variant for r in runs} else None
    inputs = [RESULTS_FORMAT_VERSION, code_fingerprint(), exp.name, baseline, metrics, exp.variants]
    for run in runs:
        proposal = proposals.get(run.run_id)
        inputs.append([run.run_id, run.variant, run.seed, run.state, run.status, run.status_reason,
                       proposal.status.value if proposal else None, proposal.reason if proposal else None,
                       [[m, _jsonable(run.summary[m].value) if m in run.summary else None] for m in metrics],
                       values_as_written(run) if is_imported(run) else None])
    return _digest(inputs), metrics, baseline


def variant_order(result: dict, exp: ExperimentInfo) -> list[str]:
    """The variants of `result` in the order notes show them: the baseline, then the store's order.

    Explicit, because a result read back from the cache (written with sorted keys) has its
    variants in alphabetical order, and a note must not change with the cache's state.
    """
    baseline = result["baseline"]
    position = {variant: index for index, variant in enumerate(exp.variants)}
    return sorted(result["variants"], key=lambda v: (v != baseline, position.get(v, len(position)), v))


def experiment_results(exp: ExperimentInfo, proposals: Mapping[str, Any],
                       cache: ResultsCache | None = None, *, keyed: tuple | None = None) -> dict:
    """Results of one experiment as text: cells per variant and metric, verdicts, lucky runs.

    ``{"metrics", "baseline", "variants": {v: {"n", "cells": {metric: text}}}, "comparisons":
    [{"variant", "metric", "text", "verdict"}], "lucky": [...], "excluded": str, "excluded_runs": {run id:
    why it is left out}, "notes": [...]}``

    `keyed` is ``results_key(exp, proposals)`` when the caller already has it.
    """
    key, metrics, baseline = keyed if keyed is not None else results_key(exp, proposals)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    result = _compute_results(exp, exp.runs, metrics, baseline, proposals)
    if cache is not None:
        cache.put(key, result)
    return result


def _compute_results(exp, runs, metrics, baseline, proposals) -> dict:
    from ..analysis import seed_statistics
    from ..analysis.report import format_delta

    variants = [v for v in exp.variants if any(r.variant == v for r in runs)]
    result: dict = {"metrics": metrics, "baseline": baseline, "variants": {}, "comparisons": [],
                    "verdict_lines": [], "lucky": [], "excluded": "", "excluded_runs": {}, "notes": []}
    if not runs:
        return result
    views = run_views(runs, proposals)
    report = seed_statistics(views, metrics, baselines={exp.name: baseline} if baseline else None)
    included = {rid for group in report.groups for rid in group.run_ids}
    for variant in variants:
        members = [r for r in runs if r.variant == variant and r.run_id in included]
        try:
            group = report.group(exp.name, variant)
        except KeyError:
            group = None
        cells = {}
        for metric in metrics:
            values = []
            for run in members:
                entry = run.summary.get(metric)
                if entry is None or entry.value is None:
                    continue
                written = values_as_written(run).get(metric) if is_imported(run) else None
                values.append((entry.value, written))
            summary = group.metrics.get(metric) if group is not None else None
            cells[metric] = _cell(values, summary)
        result["variants"][variant] = {"n": len(members), "cells": cells}
    by_variant: dict[str, list] = {}
    for comparison in report.comparisons:
        if comparison.candidate.n and comparison.baseline.n:
            by_variant.setdefault(comparison.variant, []).append(comparison)
    for variant, comparisons in by_variant.items():
        entries = [{"variant": variant, "metric": c.metric, "verdict": str(c.verdict), "delta": delta,
                    "text": f"{c.metric}: {delta} vs {c.baseline_variant} — **{c.verdict}** ({c.reason})"}
                   for c in comparisons for delta in (format_delta(c.delta, like=c.baseline.mean),)]
        result["comparisons"] += entries
        if all(str(c.verdict) == "insufficient seeds" for c in comparisons):
            first = comparisons[0]
            deltas = ", ".join(f"{e['metric']} {e['delta']}" for e in entries)
            result["verdict_lines"].append({"variant": variant, "text": (
                f"vs {first.baseline_variant}: **insufficient seeds** (n={first.candidate.n} vs baseline "
                f"n={first.baseline.n}; at least 2 on each side are needed for a verdict); deltas: {deltas}"),
                "insufficient": {"baseline": first.baseline_variant, "n": first.candidate.n,
                                 "baseline_n": first.baseline.n, "deltas": [[e["metric"], e["delta"]] for e in entries]}})
        else:
            result["verdict_lines"] += [{"variant": variant, "text": e["text"]} for e in entries]
    result["lucky"] = [lucky.message for lucky in report.lucky_runs]
    result["excluded"] = report.excluded_summary
    result["excluded_runs"] = {run.run_id: run.reason for run in report.excluded}
    result["notes"] = list(report.notes)
    return result


# -- config diffs ------------------------------------------------------------------------------

def config_views(exp: ExperimentInfo) -> list:
    """``RunView``s of the experiment's described runs that recorded a config, for config diffs
    (no summaries, no proposed statuses). The diff functions below take them through `views`, so
    a caller rendering many notes builds them once per experiment (see ``Context.config_views``).

    ``described_runs`` picks them: the runs the results count, and a seed's newest attempt where
    none of its runs counts. A rerun of every seed at a new length is then not a mislabelled
    run, and the diff from the previous experiment is about the runs that answer the question.
    """
    from ..analysis import described_runs

    return described_runs(run_views([r for r in exp.runs if r.config], {}, config=True, summary=False))


def described_run_ids(exp: ExperimentInfo) -> frozenset[str]:
    """Ids of ``described_runs`` among all of the experiment's runs: the runs its curves show."""
    from ..analysis import described_runs

    return frozenset(view.run_id for view in described_runs(run_views(exp.runs, {}, summary=False)))


def previous_diff(exp: ExperimentInfo, previous: ExperimentInfo | None,
                  views=config_views) -> tuple[list[str], str | None]:
    """Bullet lines of the config diff from the previous experiment, and the confound warning."""
    from ..analysis import diff_experiments
    from ..analysis.diff import VARYING_BY_DESIGN, is_ignored

    if previous is None:
        return (["- no previous experiment recorded"] if not exp.previous
                else [f"- previous experiment {exp.previous!r} is not in the store"]), None
    current_views, previous_views = views(exp), views(previous)
    if not current_views or not previous_views:
        missing = exp.name if not current_views else previous.name
        return [f"- no config recorded for the runs of {missing}, so no diff can be computed"], None
    diff = diff_experiments(previous_views, current_views)
    lines = diff.render_lines() or ["- no config differences"]
    # changes of how a run goes (compilation, CUDA graphs, log intervals) are no confound, but
    # are still shown; seeds, paths and names differ by design and are left out
    quiet = [change.render() for change in diff.ignored if not is_ignored(change.key, VARYING_BY_DESIGN)]
    if quiet:
        lines.append(f"- not counted as a change (how it runs, not what it computes): {'; '.join(quiet)}")
    return lines, diff.confound_warning


def variant_diffs(exp: ExperimentInfo, views=config_views) -> dict[str, Any]:
    """Each variant's ``ConfigDiff`` against the baseline variant ({} without a usable baseline)."""
    from ..analysis import diff_variants

    found = views(exp)
    if not exp.baseline or not any(view.variant == exp.baseline for view in found):
        return {}
    try:
        return diff_variants(found, exp.baseline)
    except KeyError:
        return {}


def mislabelled_variants(exp: ExperimentInfo, views=config_views) -> dict[str, tuple[str, ...]]:
    """Variants whose runs disagree on config keys other than seeds and paths."""
    from ..analysis import inconsistent_variant_keys

    found = views(exp)
    return inconsistent_variant_keys(found) if found else {}
