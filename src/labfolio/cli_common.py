"""What every ``labfolio`` command module shares: the ``--store`` option, friendly errors, a console.

It lives apart from ``cli.py`` so that a command module can be imported on its own (as tests do)
without importing the main app, which mounts every command module in turn.
"""

from __future__ import annotations

import functools
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from .errors import LabfolioError

__all__ = ["StoreOption", "friendly_errors", "console"]

StoreOption = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE",
                           help="Store folder, .db file or database URL (default: .labfolio/ at the project root).")


def console() -> Console:
    width = int(os.environ.get("COLUMNS", "0") or 0) or None
    if width is None and not sys.stdout.isatty():
        width = 160  # piped output: wide enough that run ids and tables stay on one line
    return Console(width=width, soft_wrap=False, highlight=False)


def friendly_errors(command):
    """Show labfolio's own errors as one line and exit 1, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LabfolioError as exc:
            # soft_wrap: a long path in the message must not be broken across lines
            Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]Error:[/] {escape(str(exc))}")
            raise typer.Exit(1)

    return wrapper
