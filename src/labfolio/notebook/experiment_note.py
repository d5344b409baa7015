"""``experiments/<name>/experiment.md``: one note per experiment (NOTEBOOK_FORMAT.md §2).

Written from the store: the header (lineage, status, dates), parameters & setup (the config all
runs share and what varies between variants), variant wikilinks with their diff against the
baseline, results with plots, and the metrics-to-watch table judged per variant. The hypothesis,
observations & conclusions (Dataview ``key:: value`` fields) and the researcher's own
metrics-to-watch table are the human's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .context import EXPERIMENT_LOG, Context
from .mdtext import format_date, format_number_text, render_table
from .results import experiment_status, mislabelled_variants, status_label, variant_order
from .sections import FRONTMATTER_FIELD, Layout, Slot, render_note, with_human_frontmatter
from .snapshot import ExperimentInfo

__all__ = ["LAYOUT", "FRONTMATTER_KEYS", "render_experiment_note", "experiment_frontmatter", "experiment_rules", "rules_lines",
           "config_block"]

LAYOUT = Layout((
    Slot("note", None, block="header"),
    Slot("hypothesis", "## Hypothesis", ("hypothesis", "hypotheses")),
    Slot("setup", "## Parameters & Setup",
         ("parameters and setup", "parameters setup", "parameters", "setup", "params", "config",
          "configuration", "hyperparameters", "setup and parameters"), "setup"),
    Slot("variants_notes", "## Variants", ("variants", "variant", "varients", "varient"), "variants"),
    Slot("results_discussion", "## Results", ("results", "result"), "results"),
    Slot("findings", "## Observations & Conclusions",
         ("observations and conclusions", "observations conclusions", "observations", "conclusions",
          "conclusion", "findings", "key findings", "observations and conclusion")),
    Slot("rules", "## Metrics to watch",
         ("metrics to watch", "metrics to monitor", "health rules", "rules", "what to watch", "metrics"),
         "rules_table"),
))


FRONTMATTER_KEYS = ("type", "experiment", "project", "previous", "variants", "baseline", "status", "tags", "runs",
                    "started", "ended", "machines")


def experiment_frontmatter(ctx: Context, exp: ExperimentInfo) -> dict:
    runs = [*exp.runs, *exp.eval_runs]
    status, _ = experiment_status(runs, ctx.proposals)
    machines = sorted({r.machine or r.host for r in runs if r.machine or r.host})
    front: dict[str, Any] = {
        "type": "experiment",
        "experiment": exp.name,
        "project": exp.project or None,
        "previous": exp.previous,
        "variants": exp.variants,
        "baseline": exp.baseline,
        "status": status,
        "tags": exp.tags,
        "runs": len(runs),
        "started": format_date(exp.started_at) if exp.started_at is not None else None,
        "ended": format_date(exp.ended_at) if exp.ended_at is not None else None,
        "machines": machines,
    }
    return {k: v for k, v in front.items() if v is not None}


def json_text(value: Any) -> str:
    """``json.dumps(value, default=str)``; numbers, booleans and None, most config values, written
    as json writes them (int and float repr) without a trip through the encoder."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if value is None or kind is bool:
        return "null" if value is None else ("true" if value else "false")
    return json.dumps(value, default=str)


def config_block(flat: Mapping[str, Any]) -> list[str]:
    """A fenced YAML-ish block of flat `key: value` lines (values as JSON, so nothing is hidden)."""
    lines = ["```yaml"]
    for key, value in flat.items():
        text = value if isinstance(value, str) and value and value.strip() == value and "\n" not in value \
            and not value[0] in "[{\"'&*!|>%@`#" and ": " not in value else json_text(value)
        lines.append(f"{key}: {text}")
    lines.append("```")
    return lines


def _setup_lines(ctx: Context, exp: ExperimentInfo) -> list[str]:
    from ..analysis.diff import VARIES, VARYING_BY_DESIGN, flatten_config, is_ignored, shared_config

    recorded = [r for r in exp.runs if r.config]
    if not recorded:
        return ["No config recorded for this experiment's runs."]
    counted = {view.run_id for view in ctx.config_views(exp)}
    runs = [r for r in recorded if r.run_id in counted]
    # the runs the results count (or a variant's newest runs when none of it counts); the others,
    # killed runs and older same-seed runs, are listed in the variant notes
    left_out = len(recorded) - len(runs)
    shared = shared_config([r.config for r in runs])
    fixed = {k: v for k, v in shared.items() if v is not VARIES}
    # an empty string is a recipe's "not set" (no resume path, no data dir given): a line of names
    # says so without a dozen `key: ""` lines in the block; the variant notes keep every key
    empty = [k for k, v in fixed.items() if isinstance(v, str) and not v]
    for key in empty:
        del fixed[key]
    varying = [k for k, v in shared.items() if v is VARIES and not is_ignored(k, VARYING_BY_DESIGN)]
    lines = [f"Config shared by all {len(runs)} runs (defaults included):", "", *config_block(fixed)] if fixed \
        else [f"No config key has the same value in all {len(runs)} runs."]
    if empty:
        lines += ["", f"Empty (\"\") in all {len(runs)} runs: {', '.join(f'`{k}`' for k in empty)}."]
    if left_out:
        lines[0:0] = [f"Described: {len(runs)} runs, those the results count (or a variant's newest run of each "
                      f"seed where none of its runs counts); the other {left_out}, older same-seed runs and killed "
                      "or crashed runs, are listed in the variant notes.", ""]
    if varying:
        lines += ["", "Varies between runs:", ""]
        for key in varying:
            per_variant = []
            for variant in exp.variants:
                values = list(dict.fromkeys(json_text(flatten_config(r.config).get(key))
                                            for r in runs if r.variant == variant))
                if values:
                    per_variant.append(f"{variant}: {' / '.join(values)}")
            lines.append(f"- `{key}` — {'; '.join(per_variant)}")
    for variant, keys in sorted(mislabelled_variants(exp, views=ctx.config_views).items()):
        lines += ["", f"> ⚠️ runs labelled `{variant}` disagree on {', '.join(keys)}: a run may be mislabelled"]
    return lines


def _variants_lines(ctx: Context, exp: ExperimentInfo) -> list[str]:
    if not exp.variants:
        return ["No variants yet."]
    diffs = ctx.variant_diffs(exp)
    lines = []
    for variant in exp.variants:
        runs = exp.runs_of(variant)
        parts = [f"- [[{ctx.variant_note(exp, variant)}|{variant}]]"]
        if variant == exp.baseline:
            parts.append("(baseline)")
        if any("current" in (r.tags or []) for r in runs):
            parts.append("**CURRENT**")
        text = " ".join(parts) + f" — {len(runs)} run{'s' if len(runs) != 1 else ''}"
        if variant in diffs:
            text += f"; vs {exp.baseline}: {diffs[variant].render()}"
        lines.append(text)
    return lines


# From this many variants without a verdict for want of seeds (a pilot of single runs), the note
# says so once instead of once per variant; each variant note still lists all its deltas.
_GROUPED_INSUFFICIENT = 3


def verdict_bullets(verdict_lines: list[dict], order: list[str]) -> list[str]:
    """The results section's verdict bullets, in the table's variant order."""
    rank = {variant: index for index, variant in enumerate(order)}
    verdicts = sorted(verdict_lines, key=lambda c: rank.get(c["variant"], len(rank)))
    unjudged = [c for c in verdicts if c.get("insufficient")]
    if len(unjudged) < _GROUPED_INSUFFICIENT:
        return [f"- {c['variant']}: {c['text']}" for c in verdicts]
    lines = [f"- {c['variant']}: {c['text']}" for c in verdicts if not c.get("insufficient")]
    by_baseline: dict[tuple, list[dict]] = {}
    for verdict in unjudged:
        facts = verdict["insufficient"]
        by_baseline.setdefault((facts["baseline"], facts["baseline_n"]), []).append(verdict)
    for (baseline, baseline_n), group in by_baseline.items():
        metric = group[0]["insufficient"]["deltas"][0][0]
        deltas = ", ".join(
            f"{c['variant']} (n={c['insufficient']['n']}) {dict(c['insufficient']['deltas']).get(metric, '--')}"
            for c in group)
        lines.append(
            f"- vs {baseline}: **insufficient seeds** for {len(group)} variants (baseline n={baseline_n}; a verdict "
            f"needs at least 2 runs on each side). {metric} deltas: {deltas}. Each variant note lists all its deltas.")
    return lines


def _results_lines(ctx: Context, exp: ExperimentInfo) -> list[str]:
    result = ctx.results(exp)
    metrics = result["metrics"]
    lines: list[str] = []
    if result["variants"]:
        header = ["Variant", "Runs", *metrics]
        rows = []
        for variant in variant_order(result, exp):
            info = result["variants"][variant]
            label = f"{variant} (baseline)" if variant == result["baseline"] else variant
            rows.append([label, str(info["n"]), *[info["cells"].get(m, "--") for m in metrics]])
        lines += render_table(header, rows)
        if result["verdict_lines"]:
            lines += ["", *verdict_bullets(result["verdict_lines"], variant_order(result, exp))]
        for message in result["lucky"]:
            lines.append(f"- ⚠️ {message}")
        if result["excluded"]:
            lines.append(f"- {result['excluded']}")
    else:
        lines.append("No runs yet.")
    for caption, path in ctx.plots.get(exp.name, []):
        lines += ["", f"{caption}:", "", f"![[{path}]]"]
    return lines


def experiment_rules(ctx: Context, exp: ExperimentInfo) -> list:
    """Project rules merged with the rules of this experiment's own metrics-to-watch table."""
    from ..analysis import merge_rules, parse_metrics_table

    own = parse_metrics_table(exp.notes.get("rules") or "").rules
    return merge_rules(ctx.rules, own)


_HEALTH_ICON = {"good": "✅", "watch": "⚠️", "bad": "❌"}


def _needs_series(rule) -> bool:
    """Whether only a run's series can tell `rule`'s health (relative ranges, windows, start steps)."""
    return rule.relative or rule.start_step is not None or rule.aggregation == "mean_last_N"


def _judge(rule, entry, needs_series: bool) -> tuple[str, float, str] | str | None:
    """(health, value, which value: the rule's aggregation, or '' for a value as written) of a rule
    on a run's summary entry; the value as written when it is not a number; None when only the
    series can tell (`needs_series`: ``_needs_series(rule)``)."""
    if entry.count == 0:  # a value set or imported without a series
        value = entry.value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None if value is None else str(value)
        return str(rule.judge(float(value))), float(value), ""
    if needs_series:
        return None
    if rule.aggregation == "last":
        value = entry.value
    elif entry.nonfinite:
        value = math.nan
    else:
        value = entry.min if rule.aggregation == "min" else entry.max
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return str(rule.judge(float(value))), float(value), rule.aggregation


def rules_lines(ctx: Context, exp: ExperimentInfo) -> list[str]:
    """The metrics-to-watch table: each rule that applies, judged per variant (worst run first)."""
    rules = experiment_rules(ctx, exp)
    keys = sorted({key for r in exp.runs for key in r.summary})
    # one attempt per seed, as in the results and the curves (an older 40-epoch try is not judged)
    described = ctx.described_run_ids(exp)
    with_runs = [(v, runs) for v in exp.variants if (runs := [r for r in exp.runs_of(v) if r.run_id in described])]
    rows = []
    own = {rule.metric for rule in _own_rules(exp)}
    for rule in rules:
        matched = [key for key in keys if rule.matches(key)]
        if not matched and rule.metric not in own:
            continue
        needs_series = _needs_series(rule)
        for key in matched or [rule.metric]:
            cells = []
            for _, runs in with_runs:
                outcomes = [_judge(rule, r.summary[key], needs_series) for r in runs if key in r.summary]
                judged = [j for j in outcomes if isinstance(j, tuple)]
                written = [j for j in outcomes if isinstance(j, str)]
                if not judged and written:
                    cells.append("not a number: " + " / ".join(dict.fromkeys(written)))
                    continue
                if not judged:
                    needs_history = any(key in r.summary for r in runs)
                    cells.append("judged on the series (see alerts)" if needs_history else "no data")
                    continue
                worst = max(judged, key=lambda j: ("good", "watch", "bad").index(j[0]))[0]
                count = sum(1 for j in judged if j[0] == worst)
                finite = [v for _, v, _ in judged if math.isfinite(v)]
                mean = format_number_text(sum(finite) / len(finite)) if finite else "NaN"
                # say which number this is: a run's max of test/loss is its first evaluation, not its result
                which = " / ".join(dict.fromkeys(label for *_, label in judged if label))
                shown = f"{which} {mean}" if which else mean
                if len(finite) > 1:
                    shown += f" (mean of {len(finite)} runs)"
                cells.append(f"{_HEALTH_ICON[worst]} {worst} ({count}/{len(judged)}) · {shown}")
            metric = key if key == rule.metric else f"{key} (rule `{rule.metric}`)"
            if any(c in metric for c in "*?[") and "`" not in metric:
                metric = f"`{metric}`"
            rows.append([metric, rule.good or "--", rule.bad or "--", rule.note, *cells])
    if not rows:
        return ["No health rule applies to this experiment's metrics. Add a row to the table below "
                "(| Metric | Good Value | Bad Value | Notes |) or to .labfolio/rules.yaml."]
    return render_table(["Metric", "Good Value", "Bad Value", "Notes", *(v for v, _ in with_runs)], rows)


def _own_rules(exp: ExperimentInfo) -> Sequence:
    from ..analysis import parse_metrics_table

    return parse_metrics_table(exp.notes.get("rules") or "").rules


def _header_lines(ctx: Context, exp: ExperimentInfo) -> list[str]:
    runs = [*exp.runs, *exp.eval_runs]
    status, reason = experiment_status(runs, ctx.proposals)
    followers = ctx.followers(exp.name)
    lines = [f"Log: [[{EXPERIMENT_LOG[:-3]}]] · Previous: {ctx.experiment_link(exp.previous)}"
             + (f" · Next: {', '.join(ctx.experiment_link(n) for n in followers)}" if followers else "")]
    span = f"{format_date(exp.started_at)} → {format_date(exp.ended_at)}" if runs else "no runs yet"
    lines.append(f"Runs: {len(exp.runs)} training, {len(exp.eval_runs)} evaluation-only ({span}) · "
                 f"Status: {status_label(status, reason) if status else '--'}")
    return lines


def render_experiment_note(ctx: Context, exp: ExperimentInfo) -> str:
    blocks = {
        "header": _header_lines(ctx, exp),
        "setup": _setup_lines(ctx, exp),
        "variants": _variants_lines(ctx, exp),
        "results": _results_lines(ctx, exp),
        "rules_table": rules_lines(ctx, exp),
    }
    front = with_human_frontmatter(experiment_frontmatter(ctx, exp), exp.notes.get(FRONTMATTER_FIELD))
    return render_note(front, f"Experiment: {exp.name}", LAYOUT, exp.notes, blocks)
