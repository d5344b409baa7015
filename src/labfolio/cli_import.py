"""``labfolio import ...`` and the multi-run ``labfolio export``: thin commands over the library.

``import_app`` is mounted on the main app as ``labfolio import``; ``export_command`` is the
``labfolio export`` command (one run, an experiment, or any filtered set of runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .cli_common import StoreOption, friendly_errors

__all__ = ["import_app", "import_tensorboard_command", "import_wandb_command", "export_command"]

import_app = typer.Typer(
    name="import",
    help="Bring existing runs into the store: hand-written notebooks, TensorBoard event files, W&B runs and exports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ProjectOption = typer.Option(None, "--project", "-p", help="Project of the imported runs (default: the source's own, if any).")
ExperimentOption = typer.Option(None, "--experiment", "-e", help="Experiment of the imported runs (default: see the command's help).")
VariantOption = typer.Option(None, "--variant", "-v", help="Variant of the imported runs (default: see the command's help).")
TagOption = typer.Option(None, "--tag", "-t", help="Tag to add to every imported run (repeatable).")


def _open(store: Optional[str]):
    from .store import open_store

    return open_store(store)


def _report(results) -> None:
    for result in results:
        typer.echo(result.describe())
    new = sum(1 for r in results if r.imported)
    typer.echo(f"{new} run(s) imported, {len(results) - new} already in the store.")


@import_app.command("tensorboard")
@friendly_errors
def import_tensorboard_command(
    logdir: Path = typer.Argument(..., help="Folder of TensorBoard event files (what --logdir pointed at)."),
    project: Optional[str] = ProjectOption,
    experiment: Optional[str] = ExperimentOption,
    variant: Optional[str] = VariantOption,
    tag: Optional[List[str]] = TagOption,
    store: Optional[str] = StoreOption,
):
    """Import TensorBoard event files, one run per event folder: scalars become metrics, hparams
    the config, text the run's notes. The experiment defaults to LOGDIR's name and the variant to
    the run folder's path below it. Runs imported before are skipped."""
    from .integrations.tensorboard import import_tensorboard

    _report(import_tensorboard(logdir, _open(store), project=project, experiment=experiment,
                               variant=variant, tags=tag or ()))


@import_app.command("wandb")
@friendly_errors
def import_wandb_command(
    path: Path = typer.Argument(..., help="A wandb/ folder, one offline-run-* folder or .wandb file, or a CSV/JSON history export."),
    project: Optional[str] = ProjectOption,
    experiment: Optional[str] = ExperimentOption,
    variant: Optional[str] = VariantOption,
    tag: Optional[List[str]] = TagOption,
    store: Optional[str] = StoreOption,
):
    """Import W&B runs with their config, summary and history, keeping the W&B run id as an
    external link. The experiment defaults to the W&B group and the variant to the job type.
    Runs imported before are skipped."""
    from .integrations.wandb_import import import_wandb

    _report(import_wandb(path, _open(store), project=project, experiment=experiment, variant=variant,
                         tags=tag or ()))


@friendly_errors
def export_command(
    runs: Optional[List[str]] = typer.Argument(None, help="Run ids (a unique prefix is enough); leave out to export every run the filters match."),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="Only runs of this experiment."),
    variant: Optional[str] = typer.Option(None, "--variant", "-v", help="Only runs of this variant."),
    status: Optional[str] = typer.Option(None, "--status", help="Only runs in this state: running, finished, failed, crashed, killed."),
    tag: Optional[str] = typer.Option(None, "--tag", "-t", help="Only runs with this tag."),
    all_runs: bool = typer.Option(False, "--all", help="Export every run in the store (when no run or filter is given)."),
    table: str = typer.Option("history", "--table", help="history: every point (run_id, key, step, value, time); runs: one row per run with config.* and summary.* columns."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="csv, parquet or json (default: from --out's suffix, else csv)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (default: RUN, EXPERIMENT or 'runs', with the format's suffix)."),
    store: Optional[str] = StoreOption,
):
    """Export runs' metric histories, or a one-row-per-run table, to CSV, Parquet or JSON."""
    from .errors import ConfigError
    from .export import export_runs

    if not runs and not any((experiment, variant, status, tag)) and not all_runs:
        raise ConfigError("nothing selected: name run ids, filter with --experiment/--variant/"
                          "--status/--tag, or pass --all for every run")
    fmt = (fmt or (out.suffix.lstrip(".") if out is not None and out.suffix else "csv")).lower()
    opened = _open(store)
    single = opened.get_run(runs[0]).run_id if runs and len(runs) == 1 else None
    if out is None:
        out = Path(f"{single or experiment or 'runs'}{'_runs' if table == 'runs' else ''}.{fmt}")
    result = export_runs(opened, out, fmt, run_ids=runs or None, table=table, experiment=experiment,
                         variant=variant, state=status, tag=tag)
    if table == "runs":
        typer.echo(f"Wrote {result.runs} run(s) to {result.path}")
    elif single:
        typer.echo(f"Wrote {result.points} points of {single} to {result.path}")
    else:
        typer.echo(f"Wrote {result.points} points of {result.runs} run(s) to {result.path}")
