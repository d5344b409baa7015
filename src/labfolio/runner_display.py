"""What ``labfolio run`` shows: a Rich live table on a terminal, plain event lines otherwise.

Both show the same facts, read from the store by the runner: each run's state, step, key metric
and ETA, alerts the moment they are recorded, and at the end the comparison table and where the
notebook is. The plain form (pipes, CI logs, tests) prints one line per event so a log stays
readable and greppable.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .notebook.mdtext import format_duration

__all__ = ["PlainDisplay", "LiveDisplay", "make_display", "format_duration"]

_STATE_STYLE = {"pending": "dim", "running": "cyan", "finished": "green", "skipped": "dim",
                "failed": "red", "crashed": "red", "killed": "yellow"}
_STATE_MARK = {"finished": "✓", "failed": "✗", "crashed": "✗", "killed": "■", "skipped": "·"}


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _slot_text(slot: str | None) -> str:
    if slot in (None, "cpu"):
        return "CPU"
    return "Ray" if slot == "ray" else f"GPU {slot}"


class PlainDisplay:
    """One line per event."""

    def __init__(self, spec, options, console: Console | None = None) -> None:
        self.spec, self.options = spec, options
        width = int(os.environ.get("COLUMNS", "0") or 0) or 160
        self.console = console or Console(width=width, soft_wrap=True, highlight=False)
        self.key_metric = (spec.headline_metrics or [None])[0]
        self.title = spec.experiment  # the live table's; a pool of several specs names them all
        self._warnings_shown = 0

    # -- before
    def plan(self, report, slots) -> None:
        spec, tasks = self.spec, report.tasks
        what = f"recipe {spec.recipe}" if spec.recipe else f"command {shlex.join(spec.command)}"
        to_run = [t for t in tasks if t.action == "run"]
        where = self._where(slots)
        self.console.print(escape(
            f"labfolio run: {spec.experiment} ({what}{', smoke' if self.options.smoke else ''}) · "
            f"{len(spec.variants)} variant(s) × {len({t.planned.seed for t in tasks})} seed(s) = {len(tasks)} run(s): "
            f"{len(to_run)} to run, {len(tasks) - len(to_run)} skipped" + (f" · {where}" if to_run else "")))
        if spec.previous:
            self.console.print(escape(f"previous: {spec.previous}"))
        for warning in report.warnings:
            self.console.print(f"[yellow]warning:[/] {escape(warning)}")
        self._warnings_shown = len(report.warnings)
        for task in tasks:
            if task.action == "skip":
                self.console.print(escape(f"  · {task.label} skipped: {task.reason} ({task.run_id})"))
            elif task.reason:
                self.console.print(escape(f"  ▷ {task.label}: {task.reason}"))
        if self.options.dry_run:
            self._dry_run(tasks)

    def _where(self, slots) -> str:
        if self.options.executor == "ray":
            return "on Ray at " + (os.environ.get("RAY_ADDRESS") or "a new local Ray instance")
        gpus = [s for s in slots if s is not None]
        if gpus:
            return f"{len(gpus)} at once, one GPU each (GPUs {', '.join(gpus)})"
        return f"{len(slots)} at once on CPU"

    def _dry_run(self, tasks) -> None:
        table = Table(title="Plan (dry run: nothing started)", title_justify="left")
        for column in ("run", "action", "command", "config ($LABFOLIO_CONFIG)"):
            table.add_column(column, overflow="fold")
        for task in tasks:
            command = shlex.join(task.argv) if task.argv else "-"
            config = task.config_json and json.dumps(json.loads(task.config_json), sort_keys=False)
            table.add_row(task.label, task.action if task.action == "run" else f"skip ({task.reason})",
                          command, config or "-")
        self.console.print(table)

    # -- during
    @contextlib.contextmanager
    def live(self, tasks) -> Iterator[None]:
        yield

    def started(self, task) -> None:
        self.console.print(escape(f"  ▶ {task.label} started on {_slot_text(task.slot)} · log {task.log_path}"))

    def ended(self, task) -> None:
        took = format_duration((task.ended_at or time.time()) - (task.launched_at or time.time()))
        mark = _STATE_MARK.get(task.state, "?")
        line = f"  {mark} {task.label} {task.state} in {took}"
        key_metric = task.key_metric or self.key_metric
        if task.key_value is not None and key_metric:
            line += f" · {key_metric} {_value(task.key_value)}"
        if task.steps_per_s:  # the speed stays on the console even if the store is lost
            line += f" · {task.steps_per_s:.3g} steps/s"
        if task.run_id:
            line += f" · run {task.run_id}"
        if task.reason and task.state != "finished":
            line += f" · {task.reason}"
        style = _STATE_STYLE.get(task.state, "")
        self.console.print(f"[{style}]{escape(line)}[/]" if style else escape(line))
        if task.state in ("failed", "crashed") and task.output_tail:
            self.console.print(escape(f"    last lines of {task.log_path}:"))
            for text in task.output_tail.splitlines():
                self.console.print(escape(f"    | {text}"))

    def alert(self, task, alert) -> None:
        step = "" if alert.step is None else f" step {alert.step}"
        line = Text(f"  ⚠ {task.label}{step} [{alert.kind}] ", style="yellow")
        line.append(alert.message)
        self.console.print(line)

    def update(self, tasks) -> None:
        pass

    def stopping(self, running: int, kill_after: float) -> None:
        self.console.print(f"[yellow]Interrupted: stopping {running} run(s) (SIGINT, then SIGTERM and SIGKILL "
                           f"{kill_after:g} s apart); their runs are marked killed and their points kept.[/]")

    # -- after
    def conclude(self, report, notebook_summary: bool = True) -> None:
        counts = {state: report.count(state) for state in ("finished", "skipped", "failed", "crashed", "killed")}
        shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        self.console.print(escape(f"{self.spec.experiment}: {shown or 'nothing to do'}"))
        if self.options.dry_run:
            return
        if report.comparison:
            self.console.print()
            self.console.print(escape(report.comparison))
        for warning in report.warnings[self._warnings_shown:]:  # the ones raised while running
            self.console.print(f"[yellow]warning:[/] {escape(warning)}")
        for line in report.shared_speed:
            self.console.print(escape(f"shared: {line}"))
        if report.vault is not None:
            if notebook_summary:  # once per refresh: a pool of several specs refreshes it once
                self.console.print()
                self.console.print(escape(f"notebook: {report.vault.summary()}"))
            if report.note_path is not None:
                self.console.print(escape(f"experiment note: {report.note_path}"))


class LiveDisplay(PlainDisplay):
    """A table redrawn in place (state, device, step, key metric, elapsed, ETA); events print above it."""

    def __init__(self, spec, options, console: Console | None = None) -> None:
        super().__init__(spec, options, console or Console(highlight=False))
        self._live: Live | None = None
        self._tasks: list = []

    @contextlib.contextmanager
    def live(self, tasks) -> Iterator[None]:
        self._tasks = tasks
        with Live(self._render(), console=self.console, refresh_per_second=4, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                live.update(self._render())
                self._live = None

    def started(self, task) -> None:
        self.update(self._tasks)

    def update(self, tasks) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Any:
        table = Table(title=self.title, title_justify="left", expand=False)
        several = len({t.key_metric for t in self._tasks if t.key_metric}) > 1  # specs with other headline metrics
        metric = "key metric" if several else (self.key_metric or "metric")
        for column in ("run", "state", "on", "step", metric, "progress", "elapsed", "ETA"):
            table.add_column(column, no_wrap=True)
        now = time.time()
        for task in self._tasks:
            style = _STATE_STYLE.get(task.state, "")
            elapsed = None
            if task.launched_at is not None:
                elapsed = (task.ended_at or now) - task.launched_at
            progress = "-" if task.progress is None else f"{100 * task.progress:.0f}%"
            value = _value(task.key_value)
            if several and task.key_metric and task.key_value is not None:
                value = f"{task.key_metric} {value}"  # the column mixes metrics: each cell says which
            table.add_row(task.label, Text(task.state, style=style), _slot_text(task.slot) if task.slot else "-",
                          "-" if task.last_step is None else str(task.last_step), value,
                          progress, format_duration(elapsed), format_duration(task.eta_s))
        etas = [t.eta_s for t in self._tasks if t.eta_s is not None]
        waiting = sum(1 for t in self._tasks if t.state == "pending")
        footer = Text(f"{sum(1 for t in self._tasks if t.state == 'running')} running, {waiting} waiting"
                      + (f" · longest ETA {format_duration(max(etas))}" if etas else "")
                      + " · Ctrl-C stops all runs cleanly", style="dim")
        return Group(table, footer)


def make_display(spec, options, console: Console | None = None) -> PlainDisplay:
    """The live table on a terminal, plain lines otherwise (or when $LABFOLIO_PLAIN is set)."""
    console = console or Console(highlight=False)
    if console.is_terminal and not os.environ.get("LABFOLIO_PLAIN") and not options.dry_run:
        return LiveDisplay(spec, options, console)
    if not console.is_terminal:
        width = int(os.environ.get("COLUMNS", "0") or 0) or 160
        console = Console(width=width, soft_wrap=True, highlight=False, file=console.file or sys.stdout)
    return PlainDisplay(spec, options, console)
