"""The data behind each dashboard page: plain dicts, rendered by the templates or sent as JSON.

Every number comes from the store through the same analysis and notebook code the Markdown vault
uses, so the page and the note never disagree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import RunNotFoundError
from ..store.records import RunRecord

__all__ = ["experiment_page", "experiments_page", "run_page", "compare_page", "run_json", "HUMAN_FIELDS",
           "RUN_FIELDS", "STATUSES", "ExperimentNotFound", "series_keys", "artifact_file"]

# The experiment fields a person edits on the page: the same note fields the notebook round trip
# reads and writes (Experiment Log entry slots), so `labfolio notes` shows what was typed here.
HUMAN_FIELDS = {"hypothesis": "Hypothesis", "conclusion": "Conclusion", "next_steps": "Next steps"}
RUN_FIELDS = {"conclusion": "Conclusion"}  # the master log's Conclusion cell of a run
STATUSES = ("valid", "partially_invalid", "invalid")


class ExperimentNotFound(LookupError):
    pass


def _num(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else repr(value)
    return value


def run_json(run: RunRecord, *, full: bool = False) -> dict:
    from .safety import redact_secrets

    out = {"run_id": run.run_id, "project": run.project, "experiment": run.experiment, "variant": run.variant,
           "seed": run.seed, "name": run.name, "state": run.state, "status": run.status,
           "status_reason": run.status_reason, "tags": run.tags, "machine": run.machine, "host": run.host,
           "evaluates": run.evaluates, "started_at": run.started_at, "ended_at": run.ended_at,
           "heartbeat_at": run.heartbeat_at, "exit_reason": run.exit_reason, "first_step": run.first_step,
           "last_step": run.last_step, "point_count": run.point_count, "duration_s": run.duration_s,
           "throughput": run.throughput,
           "summary": {k: {kk: _num(vv) for kk, vv in e.as_dict().items()} for k, e in run.summary.items()}}
    if full:
        out["config"] = run.config
        out["provenance"] = redact_secrets(run.provenance)
        out["config_history"] = run.config_history
        out["notes"] = run.notes
    return out


def series_keys(run: RunRecord) -> list[str]:
    """Metrics of a run that have a series (not only a summary value)."""
    return [k for k, e in run.summary.items() if e.count > 0]


# -- experiments -------------------------------------------------------------------------------

def experiments_page(store) -> dict:
    rows = store.experiments()
    counts: dict[str, dict[str, int]] = {}
    for run in store.list_runs(with_summary=False):
        counts.setdefault(run.experiment, {}).setdefault(run.state, 0)
        counts[run.experiment][run.state] += 1
    return {"experiments": [{**row, "runs": sum(counts.get(row["name"], {}).values()),
                             "states": counts.get(row["name"], {})} for row in rows]}


def _experiment_snapshot(store, name: str):
    from ..notebook.mdtext import safe_name
    from ..notebook.snapshot import ExperimentInfo, Snapshot

    rows = {row["name"]: row for row in store.experiments()}
    if name not in rows:
        raise ExperimentNotFound(f"no experiment {name!r} in the store; see /experiments")
    followers = [n for n, row in rows.items() if row.get("previous") == name]
    wanted = [n for n in dict.fromkeys([name, rows[name].get("previous"), *followers]) if n in rows]
    infos, runs, alerts = [], [], {}
    for n in wanted:
        row = rows[n]
        info = ExperimentInfo(name=n, project=row["project"], previous=row["previous"], tags=list(row["tags"]),
                              created_at=row["created_at"], variants=list(row["variants"]), baseline=row["baseline"],
                              folder=safe_name(n))
        exp_runs = sorted(store.list_runs(experiment=n),
                          key=lambda r: (r.started_at or r.created_at, r.created_at, r.run_id))
        for run in exp_runs:
            if run.variant not in info.variants:
                info.variants.append(run.variant)
            (info.eval_runs if run.is_evaluation else info.runs).append(run)
            if n == name:
                alerts[run.run_id] = store.alerts(run.run_id)
        info.notes = store.note_fields("experiment", n)
        info.variant_notes = {v: store.note_fields("variant", f"{n}/{v}") for v in info.variants}
        infos.append(info)
        runs += exp_runs
    snapshot = Snapshot(experiments=infos, runs=runs, alerts=alerts, run_notes={}, project_notes={})
    return snapshot, snapshot.by_name[name], followers


def _wikilink_target(snapshot, target: str) -> str | None:
    parts = target.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "experiments":
        for exp in snapshot.experiments:
            if exp.folder == parts[1] or exp.name == parts[1]:
                return f"/experiments/{quote(exp.name, safe='')}"
    return None


def experiment_page(store, name: str, root: Path | None = None) -> dict:
    from ..analysis import load_project_rules, seed_statistics
    from ..notebook.context import build_context
    from ..notebook.experiment_note import render_experiment_note, rules_lines
    from ..notebook.mdtext import split_frontmatter
    from ..notebook.results import ResultsCache, experiment_metrics, experiment_status, run_views, status_label
    from .safety import render_markdown

    snapshot, exp, followers = _experiment_snapshot(store, name)
    try:
        rules = load_project_rules(root or Path("."))
    except Exception:  # a broken rules file must not take the page down; the notebook reports it
        rules = []
    ctx = build_context(snapshot, ResultsCache(None), rules)
    _, note_body, _ = split_frontmatter(render_experiment_note(ctx, exp))
    link = lambda target, label: _wikilink_target(snapshot, target)  # noqa: E731
    metrics = experiment_metrics(exp)
    baseline = exp.baseline if exp.baseline in {r.variant for r in exp.runs} else None
    report = seed_statistics(run_views(exp.runs, ctx.proposals), metrics,
                             baselines={exp.name: baseline} if baseline else None) if exp.runs else None
    variants = []
    if report is not None:
        for group in report.groups:
            variants.append({"variant": group.variant, "baseline": group.variant == baseline,
                             "n_runs": len(group.run_ids),
                             "metrics": {m: {"mean": _num(s.mean), "std": _num(s.std), "n": s.n, "text": s.format()}
                                         for m, s in group.metrics.items()}})
    comparisons = [] if report is None else [
        {"variant": c.variant, "baseline": c.baseline_variant, "metric": c.metric, "delta": _num(c.delta),
         "p_value": _num(c.p_value), "verdict": str(c.verdict), "reason": c.reason,
         "candidate": c.candidate.format(), "baseline_text": c.baseline.format()}
        for c in report.comparisons]
    status, reason = experiment_status(exp.runs + exp.eval_runs, ctx.proposals)
    run_rows = [{"run_id": r.run_id, "variant": r.variant, "seed": r.seed, "state": r.state,
                 "machine": r.machine or r.host, "status": ctx.proposals[r.run_id].status.value,
                 "status_label": ctx.proposals[r.run_id].label, "overridden": ctx.proposals[r.run_id].overridden,
                 "last_step": r.last_step} for r in exp.runs + exp.eval_runs]
    alerts = [{"run_id": rid, "kind": a.kind, "metric": a.metric, "step": a.step, "severity": a.severity,
               "message": a.message} for rid, items in snapshot.alerts.items() for a in items]
    curve_keys = sorted({k for r in exp.runs for k in series_keys(r)})
    groups = {v: [r.run_id for r in exp.runs_of(v)] for v in exp.variants if exp.runs_of(v)}
    rules_md = "\n".join(rules_lines(ctx, exp))
    return {
        "name": exp.name, "project": exp.project, "previous": exp.previous if exp.previous in snapshot.by_name else None,
        "previous_name": exp.previous, "next": followers, "tags": exp.tags, "baseline": baseline,
        "variants_order": exp.variants, "status": status, "status_reason": reason,
        "status_label": status_label(status, reason) if status else "--",
        "fields": {f: exp.notes.get(f, "") for f in HUMAN_FIELDS},
        "fields_html": {f: render_markdown(exp.notes.get(f, ""), link) for f in HUMAN_FIELDS},
        "note_markdown": note_body, "note_html": render_markdown(note_body, link),
        "variants": variants, "comparisons": comparisons, "metrics": metrics,
        "excluded": report.excluded_summary if report is not None else "",
        "notes": list(report.notes) if report is not None else [],
        "runs": run_rows, "alerts": alerts, "curve_keys": curve_keys, "groups": groups,
        "rules_markdown": rules_md, "rules_html": render_markdown(rules_md, link),
    }


# -- one run -----------------------------------------------------------------------------------

def _overrides(run: RunRecord, siblings: list[RunRecord]) -> dict[str, Any]:
    """Config keys where this run differs from what every run of its experiment shares."""
    from ..analysis.diff import flatten_config, shared_config

    flat = flatten_config(run.config)
    others = [r.config for r in siblings if r.run_id != run.run_id and r.config]
    if not others:
        return {}
    shared = shared_config(others)
    return {k: v for k, v in flat.items() if k not in shared or shared[k] != v}


def run_page(store, run_id: str) -> dict:
    from ..analysis.diff import flatten_config
    from ..notebook.results import propose_run_status

    run = store.get_run(run_id)
    alerts = store.alerts(run.run_id)
    proposal = propose_run_status(run, alerts)
    siblings = store.list_runs(experiment=run.experiment, with_summary=False) if run.experiment else []
    artifact_root = store.location.artifact_dir
    artifacts = []
    for index, a in enumerate(store.artifacts(run.run_id)):
        served = _servable(artifact_root, a) is not None
        artifacts.append({"index": index, "name": a.name, "kind": a.kind, "size": a.size, "step": a.step,
                          "is_reference": a.is_reference, "sha256": a.sha256,
                          "path": a.path if a.is_reference else None,
                          "url": f"/runs/{quote(run.run_id, safe='')}/artifacts/{index}" if served else None})
    data = run_json(run, full=True)
    data.update({
        "config_flat": flatten_config(run.config), "overrides": _overrides(run, siblings),
        "alerts": [{"kind": a.kind, "metric": a.metric, "step": a.step, "severity": a.severity,
                    "message": a.message, "value": _num(a.value)} for a in alerts],
        "artifacts": artifacts, "series_keys": series_keys(run),
        "proposed_status": proposal.status.value, "status_label": proposal.label,
        "status_overridden": proposal.overridden, "fields": store.note_fields("run", run.run_id),
    })
    data["fields"] = {f: data["fields"].get(f, "") for f in RUN_FIELDS}
    return data


def _servable(root: Path, item) -> Path | None:
    """The artifact's file if it may be served: copied (not a reference), inside the artifact folder."""
    from .safety import contained_path

    if item.is_reference:
        return None  # a reference points anywhere on disk (a checkpoint): list it, never serve it
    path = Path(item.path)
    try:
        relative = str(path.relative_to(root)) if path.is_absolute() else item.path
    except ValueError:
        return None  # an absolute path outside the artifact folder
    return contained_path(root, relative)


def artifact_file(store, run_id: str, index: int) -> tuple[Path, str, str] | None:
    """(file, name, kind) of a run's artifact at ``index`` if it may be served, else None."""
    run = store.get_run(run_id)
    items = store.artifacts(run.run_id)
    if not 0 <= index < len(items):
        return None
    found = _servable(store.location.artifact_dir, items[index])
    return None if found is None else (found, items[index].name, items[index].kind)


# -- compare -----------------------------------------------------------------------------------

def compare_page(store, run_ids: list[str]) -> dict:
    from ..analysis.diff import flatten_config

    runs, missing = [], []
    for rid in dict.fromkeys(run_ids):
        try:
            runs.append(store.get_run(rid))
        except RunNotFoundError:
            missing.append(rid)
    flats = [flatten_config(r.config) for r in runs]
    keys = sorted({k for f in flats for k in f})
    marker = object()
    diff = []
    for key in keys:
        values = [f.get(key, marker) for f in flats]
        if len({repr(v) for v in values}) > 1:
            diff.append({"key": key, "values": [None if v is marker else v for v in values],
                         "missing": [v is marker for v in values]})
    keys_by_run = [set(series_keys(r)) for r in runs]
    common = sorted(set.intersection(*keys_by_run)) if keys_by_run else []
    every = sorted(set.union(*keys_by_run)) if keys_by_run else []
    return {"runs": [run_json(r) for r in runs], "missing": missing, "config_diff": diff,
            "common_keys": common, "all_keys": every}
