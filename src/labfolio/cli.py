"""``labfolio``: thin commands over the library. Library errors become one-line messages here."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import StoreOption, console, friendly_errors
from .runner_display import format_duration

__all__ = ["app", "main"]

app = typer.Typer(
    name="labfolio",
    help="labfolio: experiments in, lab notebook out. A local-first ML experiment tracker.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_console = console  # the commands below print through it


def _open(store: Optional[str]):
    from .store import open_store

    return open_store(store)


def _fmt_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _fmt_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@app.command("runs")
@friendly_errors
def runs_command(
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="Only runs of this experiment."),
    variant: Optional[str] = typer.Option(None, "--variant", "-v", help="Only runs of this variant."),
    status: Optional[str] = typer.Option(None, "--status", help="Only runs in this state: running, finished, failed, crashed, killed."),
    tag: Optional[str] = typer.Option(None, "--tag", "-t", help="Only runs with this tag."),
    limit: int = typer.Option(50, "--limit", "-n", help="Show at most this many runs (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    store: Optional[str] = StoreOption,
):
    """List runs, newest first, filterable by experiment, variant, status and tag."""
    opened = _open(store)
    records = opened.list_runs(experiment=experiment, variant=variant, state=status, tag=tag, limit=limit)
    if as_json:
        typer.echo(json.dumps([{
            "run_id": r.run_id, "experiment": r.experiment, "variant": r.variant, "seed": r.seed,
            "state": r.state, "last_step": r.last_step, "started_at": r.started_at,
            "summary": r.summary_values(),
        } for r in records], indent=2, default=str))
        return
    if not records:
        typer.echo(f"No runs in {opened.location.describe()}.")
        return
    console = _console()
    console.print(escape(f"{len(records)} run(s) in {opened.location.describe()}"))
    table = Table()
    for column in ("Run", "Experiment", "Variant", "Seed", "State", "Steps", "Started", "Duration"):
        table.add_column(column, no_wrap=column == "Run")
    for r in records:
        table.add_row(r.run_id, r.experiment or "-", r.variant or "-", "-" if r.seed is None else str(r.seed),
                      r.state, "-" if r.last_step is None else str(r.last_step), _fmt_time(r.started_at),
                      format_duration(r.duration_s))
    console.print(table)


@app.command("show")
@friendly_errors
def show_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    store: Optional[str] = StoreOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
):
    """Show a run's config, provenance, summary and alerts."""
    opened = _open(store)
    record = opened.get_run(run)
    alerts = opened.alerts(record.run_id)
    artifacts = opened.artifacts(record.run_id)
    if as_json:
        typer.echo(json.dumps({
            "run_id": record.run_id, "experiment": record.experiment, "variant": record.variant,
            "seed": record.seed, "state": record.state, "config": record.config,
            "provenance": record.provenance,
            "summary": {k: v.as_dict() for k, v in record.summary.items()},
            "throughput": record.throughput,
            "alerts": [a.__dict__ for a in alerts], "artifacts": [a.__dict__ for a in artifacts],
        }, indent=2, default=str))
        return
    console = _console()
    console.print(escape(f"{record.run_id}  {record.experiment or '-'} / {record.variant or '-'}"
                         f"  seed {record.seed if record.seed is not None else '-'}  [{record.state}]"))
    if record.exit_reason:
        console.print(escape(f"exit: {record.exit_reason}"))
    if record.evaluates:
        console.print(f"evaluates: {record.evaluates}")
    config_table = Table(title="Config", title_justify="left")
    config_table.add_column("key")
    config_table.add_column("value")
    for key, value in _flatten(record.config):
        config_table.add_row(key, _fmt_value(value))
    console.print(config_table)
    prov = record.provenance or {}
    git = prov.get("git", {}) or {}
    prov_table = Table(title="Provenance", title_justify="left")
    prov_table.add_column("what")
    prov_table.add_column("value")
    rows = [
        ("git", f"{(git.get('sha') or '-')[:12]} {git.get('branch') or ''} "
                f"{'(dirty)' if git.get('dirty') else ''}".strip()),
        ("machine", f"{record.machine or '-'} ({record.host or '-'})"),
        ("python", str((prov.get("python") or {}).get("version", "-")).split()[0]),
        ("command", " ".join((prov.get("invocation") or {}).get("argv", []) or []) or "-"),
        ("started", _fmt_time(record.started_at)),
        ("duration", format_duration(record.duration_s)),
    ]
    for key, value in record.throughput.items():
        rows.append((key.replace("_per_s", "/s"), f"{value:,.1f}"))
    for what, value in rows:
        prov_table.add_row(what, value)
    console.print(prov_table)
    summary_table = Table(title="Summary", title_justify="left")
    for column in ("metric", "last", "min", "max", "best", "points"):
        summary_table.add_column(column)
    for key, entry in record.summary.items():
        summary_table.add_row(key, *(_fmt_value(v) if v is not None else "-"
                                     for v in (entry.value, entry.min, entry.max, entry.best)),
                              str(entry.count))
    console.print(summary_table)
    if alerts:
        alert_table = Table(title="Alerts", title_justify="left")
        for column in ("severity", "kind", "metric", "step", "message"):
            alert_table.add_column(column)
        for a in alerts:
            alert_table.add_row(a.severity, a.kind, a.metric or "-", "-" if a.step is None else str(a.step), a.message)
        console.print(alert_table)
    else:
        console.print("No alerts.")
    if artifacts:
        console.print("Artifacts: " + ", ".join(f"{a.name} ({a.kind})" for a in artifacts))


def _flatten(config: dict, prefix: str = ""):
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


@app.command("sync")
@friendly_errors
def sync_command(
    store: Optional[str] = StoreOption,
    run: Optional[str] = typer.Option(None, "--run", help="Only this run's journal."),
):
    """Push journals that are not yet in the store (offline runs, store outages, crashes)."""
    from .drain import sync_journals
    from .settings import resolve_store
    from .store import open_store

    location = resolve_store(store)
    opened = open_store(location, recover=False)
    console = _console()
    with console.status("Draining journals…") as status:
        report = sync_journals(opened, location, only_run=run,
                               progress=lambda rid, n: status.update(f"{rid}: +{n} points"))
    for run_id in report.drained_runs:
        console.print(f"synced {run_id}")
    for run_id in report.crashed:
        console.print(f"marked crashed: {run_id}")
    for run_id in report.skipped_live:
        console.print(f"skipped (still running): {run_id}")
    for run_id, error in report.failed.items():
        console.print(f"[red]failed[/] {run_id}: {error}")
    console.print(f"{len(report.drained_runs)} journal(s), {report.points} point(s) written to "
                  f"{location.describe()}.")
    if report.failed:
        raise typer.Exit(1)


# Sub-commands that live in their own modules; each module registers itself on `app` here.
def _mount_subcommands() -> None:
    from . import cli_analysis, cli_import, cli_notes, cli_web
    from . import cli_run, cli_snapshot

    cli_notes.register_import_notes(cli_import.import_app)
    app.add_typer(cli_import.import_app, name="import")
    app.add_typer(cli_notes.notes_app, name="notes")
    app.command("export")(cli_import.export_command)
    cli_analysis.register(app)
    cli_web.register(app)
    cli_run.register(app)
    cli_snapshot.register(app)


_mount_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
