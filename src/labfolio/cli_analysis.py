"""``labfolio compare``, ``labfolio diff`` and ``labfolio check``: thin commands over ``labfolio.analysis``.

The store is read here and turned into the plain data analysis takes (``RunView`` and
``{key: (steps, values)}``); the text itself comes from ``labfolio.analysis.report``, whose output
is stable so these commands can be tested on their exact output.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from .cli_common import StoreOption, friendly_errors
from .errors import ConfigError, RunNotFoundError

__all__ = ["register", "compare_command", "diff_command", "check_command"]


def _open(store: Optional[str]):
    from .store import open_store

    return open_store(store)


def _project_rules():
    from .analysis import load_project_rules
    from .settings import find_project_root

    return load_project_rules(find_project_root())


def _experiment_names(store) -> list[str]:
    return [row["name"] for row in store.experiments()]


def _baseline_of(store, experiment: str) -> str | None:
    """The experiment's marked baseline variant, else its first variant (the spec convention)."""
    for row in store.experiments():
        if row["name"] == experiment:
            return row["baseline"] or (row["variants"][0] if row["variants"] else None)
    return None


def _training_runs(store, experiment: str):
    runs = [run for run in store.list_runs(experiment=experiment) if not run.evaluates]
    if not runs:
        from difflib import get_close_matches

        names = _experiment_names(store)
        hint = get_close_matches(experiment, names, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else \
            (f"; experiments: {', '.join(names[:10])}" if names else "; the store has no experiments yet")
        raise ConfigError(f"no runs of experiment {experiment!r} in {store.location.describe()}{suggestion}")
    return sorted(runs, key=lambda run: (run.started_at or run.created_at, run.run_id))


def _proposals(store, runs):
    from .notebook.results import propose_run_status

    return {run.run_id: propose_run_status(run, store.alerts(run.run_id)) for run in runs}


def _views(store, runs, *, config: bool):
    from .notebook.results import run_views

    return run_views(runs, _proposals(store, runs), config=config)


@friendly_errors
def compare_command(
    experiment: str = typer.Argument(..., help="Experiment whose variants are compared."),
    metric: Optional[List[str]] = typer.Option(None, "--metric", "-m", help="Metric to compare (repeatable; default: the evaluation metrics, as in the notebook)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="Variant to compare against (default: the experiment's baseline, else its first variant)."),
    include_invalid: bool = typer.Option(False, "--include-invalid", help="Keep runs whose status is invalid, and crashed or failed runs."),
    store: Optional[str] = StoreOption,
):
    """Variant table: mean ± std (n), 95% CI, delta vs the baseline with its bootstrap CI, Welch p-value and verdict."""
    from .analysis import format_comparison_table, seed_statistics
    from .notebook.results import key_metrics

    opened = _open(store)
    runs = _training_runs(opened, experiment)
    logged = {key for run in runs for key in run.summary}
    unknown = [name for name in metric or () if name not in logged]
    if unknown:
        raise ConfigError(f"no run of {experiment} has {', '.join(map(repr, unknown))}; "
                          f"its metrics: {', '.join(sorted(logged)) or 'none'}")
    metric = list(metric or ()) or key_metrics(runs)
    views = _views(opened, runs, config=False)
    base = baseline or _baseline_of(opened, experiment)
    known_variants = list(dict.fromkeys(view.variant for view in views))
    if base is not None and base not in known_variants:
        raise ConfigError(f"baseline {base!r} has no runs in {experiment}; variants: {', '.join(known_variants)}")
    report = seed_statistics(views, metric or None, baselines={experiment: base} if base else None,
                             include_invalid=include_invalid)
    try:
        text = format_comparison_table(report, metric or None)
    except KeyError as error:
        raise ConfigError(str(error.args[0])) from None
    typer.echo(text, nl=False)


def _resolve_side(store, name: str):
    """('run', RunView) or ('experiment', [RunView]) for a diff operand.

    An exact run id wins, then an experiment name, then a run-id prefix: run ids usually start
    with their experiment's name, so the prefix must not shadow the experiment."""
    try:
        record = store.get_run(name)
    except RunNotFoundError:
        record = None
    if record is not None and record.run_id != name and name in _experiment_names(store):
        record = None
    if record is not None:
        return "run", _views(store, [record], config=True)[0]
    if name in _experiment_names(store):
        return "experiment", _views(store, _training_runs(store, name), config=True)
    raise ConfigError(f"{name!r} is neither a run nor an experiment in {store.location.describe()} "
                      "(list them with `labfolio runs`)")


@friendly_errors
def diff_command(
    old: str = typer.Argument(..., help="Run id (a unique prefix is enough) or experiment name: the 'before'."),
    new: str = typer.Argument(..., help="Run id or experiment name: the 'after'."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", "-i", help="Extra config key pattern to ignore (repeatable; seeds, output paths and the like are ignored already)."),
    store: Optional[str] = StoreOption,
):
    """Config differences between two runs or two experiments (added, removed, changed old → new)."""
    from .analysis import DEFAULT_IGNORE, diff_configs, diff_experiments, diff_runs, format_config_diff

    opened = _open(store)
    rules = (*DEFAULT_IGNORE, *(ignore or ()))
    (old_kind, old_side), (new_kind, new_side) = _resolve_side(opened, old), _resolve_side(opened, new)
    if old_kind == new_kind == "run":
        diff = diff_runs(old_side, new_side, ignore=rules)
        old_name, new_name = old_side.run_id, new_side.run_id
    elif old_kind == new_kind == "experiment":
        diff = diff_experiments(old_side, new_side, ignore=rules)
        old_name, new_name = old, new
    else:
        # A run against an experiment: compare the run with what the experiment's runs share.
        from .analysis.diff import shared_config

        def config_of(kind, side):
            return side.config if kind == "run" else shared_config([run.config for run in side])

        diff = diff_configs(config_of(old_kind, old_side), config_of(new_kind, new_side), ignore=rules)
        old_name = old_side.run_id if old_kind == "run" else old
        new_name = new_side.run_id if new_kind == "run" else new
    typer.echo(format_config_diff(diff, old_name, new_name), nl=False)


def _series(store, run_id: str) -> dict:
    return {key: (history.steps, history.values) for key, history in store.history(run_id).items()}


def _check_one(store, record, rules):
    """The post-hoc check of one run, plus the alerts stored with it that the checks cannot
    recompute (your own ``run.alert`` calls, alerts of imported runs)."""
    import dataclasses

    from .analysis import check_run, propose_status
    from .notebook.results import as_analysis_alerts

    label = f"run {record.run_id} ({record.experiment}/{record.variant}, seed {record.seed})"
    report = check_run(_series(store, record.run_id), record.config, run=label, state=record.state,
                       rules=rules, override=record.status, override_reason=record.status_reason)
    known = {alert.identity for alert in report.alerts}
    stored = [alert for alert in as_analysis_alerts(store.alerts(record.run_id)) if alert.identity not in known]
    if not stored:
        return report
    alerts = (*report.alerts, *stored)
    status = propose_status(record.state, alerts, override=record.status, override_reason=record.status_reason)
    return dataclasses.replace(report, alerts=alerts, status=status)


@friendly_errors
def check_command(
    target: str = typer.Argument(..., help="Run id (a unique prefix is enough) or experiment name."),
    store: Optional[str] = StoreOption,
):
    """Health rules (good / watch / bad), pathology alerts with their evidence, and the proposed status."""
    from .analysis import format_check
    from .notebook.results import experiment_status, status_label

    opened = _open(store)
    rules = _project_rules()
    try:
        records = [opened.get_run(target)]
        experiment = None
        if records[0].run_id != target and target in _experiment_names(opened):
            raise RunNotFoundError(target)  # a prefix of run ids that is also an experiment's name
    except RunNotFoundError:
        if target not in _experiment_names(opened):
            raise
        experiment = target
        records = _training_runs(opened, target) + [r for r in opened.list_runs(experiment=target) if r.evaluates]
    reports = [_check_one(opened, record, rules) for record in records]
    typer.echo("\n".join(format_check(report) for report in reports), nl=False)
    if experiment is not None:
        proposals = {record.run_id: report.status for record, report in zip(records, reports)}
        status, reason = experiment_status(records, proposals)
        typer.echo(f"\nexperiment {experiment}: {status_label(status, reason)}")


def register(app: typer.Typer) -> None:
    """Add the analysis commands to the main app."""
    app.command("compare")(compare_command)
    app.command("diff")(diff_command)
    app.command("check")(check_command)
