"""``experiments/<name>/variants/<variant>.md``: one note per variant.

Written from the store: the full resolved config (defaults included, so a hidden default such as
``streams: 1`` is in plain sight), the diff against the baseline variant, results over seeds, and
every run (with links, provenance and status), every alert with its evidence, and every
evaluation. Anything else is the human's.
"""

from __future__ import annotations

from typing import Any

from .context import Context
from .experiment_note import config_block, json_text
from ..analysis.alerts import format_step
from .mdtext import format_date, format_datetime, format_number_text, render_table
from .results import experiment_metrics, key_metrics, status_label, values_as_written
from .sections import FRONTMATTER_FIELD, Layout, Slot, render_note, with_human_frontmatter
from .snapshot import ExperimentInfo, imported_cells, is_imported, machine_label, run_git, run_speed

__all__ = ["LAYOUT", "FRONTMATTER_KEYS", "render_variant_note", "variant_frontmatter", "key_scores"]

LAYOUT = Layout((
    Slot("note", None, block="header"),
    Slot("config_notes", "## Config", ("config", "configuration", "resolved config", "parameters",
                                        "hyperparameters", "settings"), "config"),
    Slot("diff_notes", "## Difference from baseline",
         ("difference from baseline", "difference from the baseline", "diff vs baseline", "diff from baseline",
          "difference", "diff", "changes"), "diff"),
    Slot("results_notes", "## Results", ("results", "result", "metrics"), "results"),
    Slot("runs_notes", "## Runs", ("runs", "run", "training runs"), "runs"),
    Slot("alerts_notes", "## Alerts", ("alerts", "alert", "warnings", "pathologies", "rule alerts"), "alerts"),
    Slot("evals_notes", "## Evaluations", ("evaluations", "evaluation runs", "evaluation only runs", "evals"),
         "evals"),
    Slot("notes", "## Notes", ("notes", "note", "comments", "remarks")),
))


FRONTMATTER_KEYS = ("type", "experiment", "variant", "baseline", "runs", "seeds", "status", "tags", "current", "started")


def variant_frontmatter(ctx: Context, exp: ExperimentInfo, variant: str) -> dict:
    runs = exp.runs_of(variant)
    statuses = sorted({ctx.proposals[r.run_id].status.value for r in runs})
    front: dict[str, Any] = {
        "type": "variant",
        "experiment": exp.name,
        "variant": variant,
        "baseline": variant == exp.baseline,
        "runs": len(runs),
        "seeds": sorted({r.seed for r in runs if r.seed is not None}),
        "status": statuses,
        "tags": sorted({t for r in runs for t in (r.tags or [])}),
    }
    if any("current" in (r.tags or []) for r in runs):
        front["current"] = True
    if runs and any(r.started_at for r in runs):
        front["started"] = format_date(min(r.started_at for r in runs if r.started_at is not None))
    return front


def key_scores(run, metrics) -> str:
    """'**test/acc:** 0.7121 <br> **test/loss:** 1.2034' for a run's key metrics."""
    written = values_as_written(run) if is_imported(run) else {}
    parts = []
    for metric in metrics:
        entry = run.summary.get(metric)
        if entry is None or entry.value is None:
            continue
        parts.append(f"**{metric}:** {written.get(metric) or format_number_text(entry.value)}")
    return " <br> ".join(parts) or "--"


def _config_lines(exp: ExperimentInfo, variant: str) -> list[str]:
    from ..analysis.diff import VARIES, VARYING_BY_DESIGN, flatten_config, is_ignored, shared_config

    runs = [r for r in exp.runs_of(variant) if r.config]
    if not runs:
        return ["No config recorded for this variant's runs."]
    shared = shared_config([r.config for r in runs])
    fixed = {k: v for k, v in shared.items() if v is not VARIES}
    lines = [f"Resolved config of {len(runs)} run{'s' if len(runs) != 1 else ''}, defaults included:", "",
             *config_block(fixed)]
    varying = [k for k, v in shared.items() if v is VARIES and not is_ignored(k, VARYING_BY_DESIGN)]
    if varying:
        lines += ["", "Differs between its runs:", ""]
        for key in varying:
            values = "; ".join(f"`{r.run_id}`: {json_text(flatten_config(r.config).get(key))}"
                               for r in runs)
            lines.append(f"- `{key}` — {values}")
    return lines


def _diff_lines(ctx: Context, exp: ExperimentInfo, variant: str) -> list[str]:
    if variant == exp.baseline:
        return ["This is the baseline variant: the others are compared against it."]
    diff = ctx.variant_diffs(exp).get(variant)
    if diff is None:
        return [f"No config to compare with the baseline ({exp.baseline or 'none set'})."]
    lines = [f"Against `{exp.baseline}`:", "", *(diff.render_lines() or ["- no config differences"])]
    if diff.confound_warning:
        lines += ["", f"> ⚠️ {diff.confound_warning}"]
    return lines


def _results_lines(ctx: Context, exp: ExperimentInfo, variant: str) -> list[str]:
    result = ctx.results(exp)
    info = result["variants"].get(variant)
    if info is None:
        return ["No runs yet."]
    metrics = result["metrics"]
    lines = render_table(["Runs", *metrics], [[str(info["n"]), *[info["cells"].get(m, "--") for m in metrics]]]) \
        if metrics else [f"{info['n']} runs, no metrics logged."]
    verdicts = [c for c in result["verdict_lines"] if c["variant"] == variant]
    if verdicts:
        lines += ["", *[f"- {c['text']}" for c in verdicts]]
    return lines


def _runs_lines(ctx: Context, exp: ExperimentInfo, variant: str) -> list[str]:
    runs = exp.runs_of(variant)
    if not runs:
        return ["No runs yet."]
    metrics = experiment_metrics(exp, runs)
    header = ["Run", "Seed", "State", "Status", "Started", "Steps", "Speed (steps/s)", "Git", "Machine", *metrics]
    if ctx.snapshot.base_url:
        header.insert(1, "Link")
    rows = []
    for run in runs:
        proposal = ctx.proposals[run.run_id]
        speed = run_speed(run)
        written = values_as_written(run) if is_imported(run) else {}
        cells = [f"`{run.run_id}`", "--" if run.seed is None else str(run.seed), run.state,
                 proposal.label, format_datetime(run.started_at),
                 "--" if run.last_step is None else str(run.last_step + 1),
                 "--" if speed is None else f"{speed:.4g}", run_git(run), machine_label(run)]
        for metric in metrics:
            entry = run.summary.get(metric)
            cells.append("--" if entry is None or entry.value is None
                         else written.get(metric) or format_number_text(entry.value))
        if ctx.snapshot.base_url:
            cells.insert(1, ctx.run_link(run, "open"))
        rows.append(cells)
    lines = render_table(header, rows)
    # older attempts of a seed and crashed or invalid runs stay in the table, marked here, so the
    # table and the results above it are not read as the same runs
    left_out = ctx.results(exp).get("excluded_runs", {})
    not_counted = [f"- `{run.run_id}`: {left_out[run.run_id]}" for run in runs if run.run_id in left_out]
    if not_counted:
        lines += ["", "Not counted in the results:", "", *not_counted]
    imported = [r for r in runs if is_imported(r)]
    for run in imported:
        source = (run.provenance or {}).get("imported_from")
        line = (run.provenance or {}).get("line")
        cells = imported_cells(run)
        where = f"{source}:{line}" if source else "an imported notebook"
        lines.append("")
        lines.append(f"- `{run.run_id}` imported from {where}"
                     + (" — " + "; ".join(f"{h}: {c}" for h, c in cells) if cells else ""))
    return lines


# A variant note lists every alert up to this many; the rest are counted, with where to see them.
MAX_ALERTS_SHOWN = 40
_SEVERITY_MARK = {"critical": "❌", "error": "❌", "warning": "⚠️", "info": "ℹ️"}


def _alerts_lines(ctx: Context, exp: ExperimentInfo, variant: str) -> list[str]:
    """Every rule or detector alert of the variant's runs, with its evidence (value, threshold, step)."""
    runs = exp.runs_of(variant)
    rows = []
    for run in runs:
        for alert in ctx.snapshot.alerts.get(run.run_id, ()):
            mark = _SEVERITY_MARK.get(alert.severity, "⚠️")
            check = f"{alert.kind} `{alert.metric}`" if alert.metric else alert.kind
            rows.append([f"`{run.run_id}`", "--" if alert.step is None else format_step(alert.step),
                         f"{mark} {alert.severity}", check, alert.message])
    if not rows:
        return [f"No alerts: no rule or detector fired in {'this run' if len(runs) == 1 else 'these runs'}."
                if runs else "No runs yet."]
    lines = render_table(["Run", "Step", "Severity", "Check", "Evidence"], rows[:MAX_ALERTS_SHOWN])
    if len(rows) > MAX_ALERTS_SHOWN:
        lines += ["", f"… and {len(rows) - MAX_ALERTS_SHOWN} more: `labfolio check <run>` lists a run's alerts."]
    return lines


def _evals_lines(ctx: Context, exp: ExperimentInfo, variant: str) -> list[str]:
    evals = ctx.evaluations_of(exp, variant)
    if not evals:
        return ["No evaluation-only runs."]
    metrics = key_metrics(evals)
    rows = [[f"`{r.run_id}`", ctx.run_ref(r.evaluates), format_date(r.started_at),
             ctx.proposals[r.run_id].label, key_scores(r, metrics)] for r in evals]
    return render_table(["Run", "Evaluates", "Date", "Status", "Key scores"], rows)


def _header_lines(ctx: Context, exp: ExperimentInfo, variant: str) -> list[str]:
    role = "baseline" if variant == exp.baseline else f"compared with the baseline `{exp.baseline}`" \
        if exp.baseline else "no baseline set"
    runs = exp.runs_of(variant)
    statuses: dict[str, int] = {}
    for run in runs:
        label = status_label(ctx.proposals[run.run_id].status.value)
        statuses[label] = statuses.get(label, 0) + 1
    status_text = ", ".join(f"{count} {label}" for label, count in statuses.items()) or "--"
    return [f"Experiment: [[{ctx.experiment_note(exp)}|{exp.name}]] · {role}",
            f"Runs: {len(runs)} · Status: {status_text}"]


def render_variant_note(ctx: Context, exp: ExperimentInfo, variant: str) -> str:
    blocks = {
        "header": _header_lines(ctx, exp, variant),
        "config": _config_lines(exp, variant),
        "diff": _diff_lines(ctx, exp, variant),
        "results": _results_lines(ctx, exp, variant),
        "runs": _runs_lines(ctx, exp, variant),
        "alerts": _alerts_lines(ctx, exp, variant),
        "evals": _evals_lines(ctx, exp, variant),
    }
    notes = exp.variant_notes.get(variant, {})
    front = with_human_frontmatter(variant_frontmatter(ctx, exp, variant), notes.get(FRONTMATTER_FIELD))
    return render_note(front, f"Variant: {variant} ({exp.name})", LAYOUT, notes, blocks)
