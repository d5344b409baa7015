"""``labfolio snapshot OUT``: a consistent copy of a store that may be in use, over ``labfolio.snapshot``.

Mounted by the main CLI with ``cli_snapshot.register(app)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from .cli_common import StoreOption, console, friendly_errors

__all__ = ["register", "snapshot_command"]


@friendly_errors
def snapshot_command(
    out: Path = typer.Argument(..., help="A new folder, or an archive ending in .tar.xz, .tar.gz or .tar "
                               "(its top folder is OUT's name without the suffix)."),
    store: Optional[str] = StoreOption,
    checkpoints: bool = typer.Option(True, "--checkpoints/--no-checkpoints",
                                     help="Copy killed runs' checkpoints (model and optimizer state, often "
                                          "most of the size); leave them out for a copy that is only read."),
    compact: bool = typer.Option(False, "--compact", help="Merge the copy's small metric chunks and shrink it: "
                                                          "the same points, often several times smaller."),
):
    """Copy a SQLite store safely while runs may still write to it: database, journals, artifacts, runner logs."""
    from .settings import resolve_store
    from .snapshot import format_bytes, snapshot_store

    location = resolve_store(store)
    shown = console()
    with shown.status("Taking a snapshot…") as status:
        report = snapshot_store(location, out, progress=status.update, checkpoints=checkpoints, compact=compact)
    lines = [escape(f"Snapshot of {report.source} written to {report.out}"),
             f"{report.runs} run(s), {report.journals} journal(s), {report.artifacts} artifact file(s): "
             f"{format_bytes(report.size_bytes)} in {report.seconds:.1f} s"]
    if report.running:
        lines.append(f"{len(report.running)} run(s) were still running: the copy holds them as they were, "
                     "and marks them crashed when it is first opened")
    if report.chunks_merged:
        lines.append(f"{report.chunks_merged:,} metric chunk row(s) merged away: the same points in fewer rows")
    if report.checkpoints_left_out:
        lines.append(f"{report.checkpoints_left_out} checkpoint(s) left out: a killed run resumed from this copy "
                     "starts over")
    lines.extend(f"[yellow]warning:[/] {escape(warning)}" for warning in report.warnings)
    for line in lines:
        shown.print(line, soft_wrap=True)  # a long path must not be broken across lines


def register(app: typer.Typer) -> None:
    app.command("snapshot")(snapshot_command)
