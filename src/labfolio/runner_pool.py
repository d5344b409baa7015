"""The runner's main loop: one pool of slots for the runs of one spec or of several.

``labfolio run a.yaml b.yaml`` runs every spec's unfinished variants × seeds from one pool: the
GPUs (or cores) are shared across experiments, so a lineage (003, then 004) or a study (the GPT
study beside the CIFAR-10 lineage) keeps every slot busy until the last run ends, where one runner
per spec would leave slots idle at each spec's tail, or oversubscribe the GPUs when started side
by side. Specs run in lineage order: one whose ``previous`` is another listed spec comes after
it, so its runs queue behind its predecessor's. Each spec keeps its own report, comparison table
and run logs; the notebook is refreshed once at the end.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass

from .errors import ConfigError
from .runner import (
    LocalExecutor,
    RunOptions,
    RunReport,
    Task,
    _finish_task,
    _log_dir,
    _Monitor,
    _record_experiment,
    _slots,
    child_argv,
    child_config,
    child_env,
    plan_tasks,
)
from .spec import Spec, previous_warnings, smoke_warnings

__all__ = ["run_specs", "lineage_order"]


@dataclass
class _Plan:
    """One spec's share of the pool."""

    spec: Spec
    report: RunReport
    display: object
    log_dir: object = None
    monitor: _Monitor | None = None


def lineage_order(specs: list[Spec]) -> list[Spec]:
    """`specs` with each one after the listed spec its ``previous`` names; otherwise as given."""
    names = [spec.experiment for spec in specs]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(f"experiment {duplicated[0]!r} is named by more than one spec: give each spec once")
    ordered: list[Spec] = []
    placed: set[str] = set()
    remaining = list(specs)
    while remaining:
        for spec in remaining:
            if spec.previous not in names or spec.previous in placed:
                break
        else:  # a cycle of previous links: keep the given order for the rest
            spec = remaining[0]
        ordered.append(spec)
        placed.add(spec.experiment)
        remaining.remove(spec)
    return ordered


def run_specs(specs: list[Spec], options: RunOptions | None = None, *, displays=None) -> list[RunReport]:
    """Run every unfinished variant × seed of each spec from one pool; one report per spec, in
    lineage order (see the module docstring)."""
    from .runner_display import make_display
    from .settings import resolve_store
    from .store import open_store

    options = options or RunOptions()
    if options.executor not in ("local", "ray"):
        raise ConfigError(f"executor {options.executor!r}: use local or ray")
    if not specs:
        raise ConfigError("no spec to run: give one or more spec files")
    given = dict(zip(map(id, specs), displays or []))
    specs = lineage_order(list(specs))
    displays = [given.get(id(spec)) or make_display(spec, options) for spec in specs]
    location = resolve_store(options.store)
    store = open_store(location)
    known = {e["name"] for e in store.experiments()}
    plans = []
    for spec, display in zip(specs, displays):
        report = RunReport(spec, [])
        report.warnings += previous_warnings(spec, known)
        known.add(spec.experiment)  # a later spec of this call may name it as its previous
        if options.smoke:
            report.warnings += smoke_warnings(spec)
        report.tasks = plan_tasks(spec, store, options, location)
        plans.append(_Plan(spec, report, display, _log_dir(options, location, spec.experiment)))
    to_run = [(plan, task) for plan in plans for task in plan.report.tasks if task.action == "run"]
    warnings: list[str] = []
    slots, threads = _slots(options, len(to_run), warnings) if options.executor == "local" else ([], None)
    plans[0].report.warnings += warnings
    many = len(plans) > 1
    for plan, task in to_run:
        task.config_json = json.dumps(child_config(plan.spec, task.planned), indent=2, default=str)
        task.argv = child_argv(plan.spec, task.planned, smoke=options.smoke)
        task.log_path = plan.log_dir / f"{task.planned.variant}_s{task.planned.seed}.log"
        if many:
            task.prefix = f"{plan.spec.experiment}/"
    for plan in plans:
        plan.display.plan(plan.report, slots)
    if options.dry_run:
        return [plan.report for plan in plans]
    for plan in plans:
        _record_experiment(store, plan.spec)
        plan.monitor = _Monitor(store, plan.spec, plan.display)
        for task in plan.report.tasks:
            task.key_metric = plan.monitor.key_metric
    if options.executor == "ray":
        from .runner_ray import RayExecutor

        executor = RayExecutor(options, plans[0].report.warnings)
    else:
        executor = LocalExecutor()
    plan_of = {id(task): plan for plan, task in to_run}
    every_task = [task for plan in plans for task in plan.report.tasks]
    live = plans[0].display  # one live view of every task; each spec's display prints its own plan and end
    if many:
        live.title = f"{len(plans)} experiments: " + ", ".join(plan.spec.experiment for plan in plans)
    pending = deque(task for _plan, task in to_run)
    free: list[str | None] = list(slots)
    slot_of: dict[int, str | None] = {}
    interrupted = False
    try:
        with live.live(every_task):
            try:
                last_poll = 0.0
                while pending or executor.running():
                    while pending and (free or options.executor == "ray"):
                        task = pending.popleft()
                        plan = plan_of[id(task)]
                        slot = free.pop(0) if options.executor == "local" else None
                        slot_of[id(task)] = slot
                        task.slot = slot if slot is not None else ("ray" if options.executor == "ray" else "cpu")
                        task.env = child_env(plan.spec, task.planned, gpu=slot, threads=threads,
                                             store=options.store)
                        if task.resume_run_id:
                            task.env["LABFOLIO_RESUME"] = task.resume_run_id
                        task.state, task.launched_at = "running", time.time()
                        executor.start(task, plan.log_dir / f"{task.planned.variant}_s{task.planned.seed}.json")
                        live.started(task)
                    for task, code in executor.poll():
                        plan = plan_of[id(task)]
                        if options.executor == "local":
                            free.append(slot_of.pop(id(task)))
                        plan.monitor.refresh([task])
                        _finish_task(store, location, plan.spec, task, code, plan.monitor, interrupted=False)
                        live.ended(task)
                    if time.monotonic() - last_poll >= options.poll_interval:
                        for plan in plans:
                            plan.monitor.refresh(plan.report.tasks)
                        last_poll = time.monotonic()
                    live.update(every_task)
                    time.sleep(0.1)
            except KeyboardInterrupt:
                interrupted = True
                live.stopping(executor.running(), options.kill_after)
                for task, code in executor.stop_all(options.kill_after):
                    plan = plan_of[id(task)]
                    plan.monitor.refresh([task])
                    _finish_task(store, location, plan.spec, task, code, plan.monitor, interrupted=True)
                    live.ended(task)
                for task in pending:
                    task.state, task.reason = "skipped", "not started (interrupted)"
            live.update(every_task)
    finally:
        executor.close()
    for plan in plans:
        plan.report.interrupted = interrupted
    _conclude_all(store, plans, options)
    return [plan.report for plan in plans]


SHARED_WINDOW_MIN_S = 10.0  # the shortest stretch of runs training together that is reported


def record_shared_speed(store, tasks) -> list[str]:
    """Per device that several runs shared: the steps/s they made in all while they ran at once.

    Measured from each task's progress points over the longest stretch in which the most of the
    device's runs trained together (``labfolio.analysis.shared_throughput``), written into those
    runs' summaries (``runner/runs_at_once``, ``runner/steps_per_s_in_all``) for the notebook, and
    returned as lines for the console.
    """
    from .analysis import shared_throughput
    from .notebook.mdtext import format_duration
    from .store import Batch

    by_slot: dict[str, list] = {}
    for task in tasks:
        if task.run_id and task.slot not in (None, "ray") and len(task.progress_points) >= 2:
            by_slot.setdefault(task.slot, []).append(task)
    lines = []
    for slot, group in by_slot.items():
        # the samples follow the children's flushes (about a second apart): a shorter stretch
        # would turn their timing into the measurement
        shared = shared_throughput({task.run_id: task.progress_points for task in group},
                                   min_window_s=SHARED_WINDOW_MIN_S)
        if shared is None:
            continue
        total = shared.total_steps_per_s
        rates = sorted(shared.steps_per_s.values())
        where = "the CPU" if slot == "cpu" else f"GPU {slot}"
        line = (f"{where}: {shared.runs} runs at once made {total:.4g} steps/s in all "
                f"({rates[0]:.3g}–{rates[-1]:.3g} each, over {format_duration(shared.duration_s)})")
        try:
            for run_id in shared.steps_per_s:
                store.write_batch(Batch(run_id=run_id, events=[{"type": "summary", "values": {
                    "runner/runs_at_once": shared.runs, "runner/steps_per_s_in_all": round(total, 2)}}]))
        except Exception as exc:  # the runs are done: a store that fails now must not lose the rest
            line += f"; not recorded in the store ({type(exc).__name__}: {exc})"
        lines.append(line)
    return lines


def _conclude_all(store, plans: list[_Plan], options: RunOptions) -> None:
    """The shared devices' speed, each spec's comparison table, then the notebook once, then each
    spec's summary."""
    from .notebook.mdtext import safe_name
    from .runner import comparison_table, finished_views, refresh_notebook

    plans[-1].report.shared_speed = record_shared_speed(store, [task for plan in plans for task in plan.report.tasks])
    any_views = False
    for plan in plans:
        views = finished_views(store, plan.report)
        any_views = any_views or bool(views)
        plan.report.comparison = comparison_table(plan.spec, views)
    if options.notebook and any_views:
        vault, warning = refresh_notebook(store, options)
        for plan in plans:
            if warning:
                plan.report.warnings.append(warning)
            if vault is not None:
                plan.report.vault = vault
                plan.report.note_path = vault.out_dir / "experiments" / safe_name(plan.spec.experiment) / "experiment.md"
    for plan in plans:
        plan.display.conclude(plan.report, notebook_summary=plan is plans[-1])
