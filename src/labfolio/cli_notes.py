"""``labfolio notes`` and ``labfolio import notes``: thin commands over ``labfolio.notebook``.

Mounted by the main CLI::

    from .cli_notes import notes_app, register_import_notes
    app.add_typer(notes_app, name="notes")
    register_import_notes(import_app)      # adds `labfolio import notes FILE_OR_DIR`
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_common import friendly_errors

__all__ = ["notes_app", "register_import_notes", "import_notes_command"]

notes_app = typer.Typer(
    name="notes",
    help="Write or refresh the Obsidian lab notebook from the store (and read your edits back).",
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STORE_HELP = "Store folder, .db file or database URL (default: .labfolio/ at the project root)."
_OUT_HELP = "Vault folder (default: notebook/ at the project root)."


def _echo_warnings(warnings, limit: int = 50) -> None:
    for warning in warnings[:limit]:
        typer.echo(f"warning: {warning}", err=True)
    if len(warnings) > limit:
        typer.echo(f"warning: ... and {len(warnings) - limit} more", err=True)


@notes_app.callback(invoke_without_command=True)
@friendly_errors
def notes_command(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=_OUT_HELP),
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE", help=_STORE_HELP),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw learning curves, the LR schedule and "
                               "embedding projections as PNGs next to the notes."),
    sync: bool = typer.Option(True, "--sync/--no-sync", help="Read human edits in the vault back into the store "
                              "before writing (default: on)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Dashboard URL that run links point at "
                                           "(default: tool.labfolio.ui.base_url in pyproject.toml, else links "
                                           "go to the variant notes)."),
):
    """Write or refresh the vault: master log, chronological log, one note per experiment and variant, plots.

    Human edits are read back into the store first; only notes whose content changed are rewritten.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .notebook import write_vault
    from .store import open_store

    report = write_vault(open_store(store), out, sync=sync, plots=plots, base_url=base_url)
    if report.sync is not None and report.sync.changed:
        typer.echo(report.sync.summary())
    for backup in report.backups:
        typer.echo(f"moved a hand-written note aside: {backup}")
    typer.echo(report.summary())
    _echo_warnings(report.warnings)


@notes_app.command("sync")
@friendly_errors
def notes_sync_command(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=_OUT_HELP),
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE", help=_STORE_HELP),
):
    """Read human edits in the vault (hypotheses, observations, statuses, conclusions...) into the store."""
    from .notebook import default_vault_dir, sync_vault
    from .store import open_store

    vault = out if out is not None else default_vault_dir()
    report = sync_vault(open_store(store), vault)
    typer.echo(f"{vault}: {report.summary()}")
    for scope, owner, name in report.fields_updated:
        typer.echo(f"  {scope} {owner or '(project)'}: {name}")
    for run_id, status in report.statuses:
        typer.echo(f"  run {run_id}: status {status or 'cleared'}")
    for name in report.experiments_created:
        typer.echo(f"  new experiment {name}")
    _echo_warnings(report.warnings)


@notes_app.command("check")
@friendly_errors
def notes_check_command(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=_OUT_HELP),
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE", help=_STORE_HELP),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="The dashboard URL the vault was written "
                                           "with, if any."),
):
    """Check that the vault is what `labfolio notes` would write now (exit 1 if not); changes nothing.

    Renders the store into a temporary folder and compares it with the vault file by file, plots
    included: for a published notebook, proof that every number in it comes from the store.
    """
    from .notebook import check_vault, default_vault_dir
    from .store import open_store

    vault = out if out is not None else default_vault_dir()
    report = check_vault(open_store(store), vault, base_url=base_url)
    typer.echo(report.format())
    if not report.ok:
        raise typer.Exit(1)


@friendly_errors
def import_notes_command(
    path: Path = typer.Argument(..., help="A Markdown file, or a folder whose .md files are all imported."),
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE", help=_STORE_HELP),
):
    """Import hand-written notebooks (experiment log, experiment notes, master log, hyperparameter study).

    Re-importing the same files updates what they created instead of duplicating it. Whatever cannot be
    read as data is kept verbatim and listed with its line number.
    """
    from .notebook import import_notes
    from .store import open_store

    report = import_notes(open_store(store), path)
    typer.echo(report.format())


def register_import_notes(import_app: typer.Typer) -> None:
    """Add ``notes FILE_OR_DIR`` to the ``labfolio import`` sub-app."""
    import_app.command("notes")(import_notes_command)
