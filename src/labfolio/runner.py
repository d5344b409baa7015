"""Run an experiment spec: variants × seeds as subprocesses, on a local GPU/CPU pool or on Ray.

    report = run_spec(load_spec("examples/cifar10_001.yaml"), RunOptions(gpus=["0", "1"]))

Each run is a child process (a kit recipe, or the spec's ``command:``) that logs through
``labfolio.init()``; the runner never trains anything itself. It tells a child what to run through
the environment: ``LABFOLIO_EXPERIMENT``/``VARIANT``/``SEED``/``PROJECT``, ``LABFOLIO_CONFIG`` (a
JSON file of the spec's values) and, for commands, ``--key=value`` flags. Progress, key metric
and alerts on the display are read back from the store the children write to, so what the screen
shows is what was recorded.

- GPUs: one per run through ``CUDA_VISIBLE_DEVICES``, or ``runs_per_gpu`` runs sharing each; on
  CPU, ``parallel`` is bounded by the cores and each child gets an equal share of them as its
  thread count.
- Resume: a run whose variant, seed and config match a finished run in the store is skipped; a
  killed one (interrupted) is run again; a crashed or failed one only with ``retry_failed``.
- Ctrl-C: children get SIGINT (their run finishes as ``killed``), then SIGTERM, then SIGKILL
  after ``kill_after`` seconds each; whatever they logged is drained from their journals and
  every run they left unfinished is marked ``killed``.
- ``executor="ray"`` hands each run to Ray as a task (``num_gpus=1``) at ``$RAY_ADDRESS``; Ray does
  the scheduling (see ``runner_ray``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import CHECKPOINT_DIR_ENV
from .spec import PlannedRun, Spec

__all__ = [
    "RunOptions",
    "Task",
    "RunReport",
    "run_spec",
    "comparison_table",
    "finished_views",
    "refresh_notebook",
    "plan_tasks",
    "visible_gpus",
    "cpu_count",
    "child_argv",
    "child_env",
    "config_matches",
    "FINAL_STATES",
]

FINAL_STATES = ("finished", "failed", "crashed", "killed")
_PROGRESS_KEYS = ("total_steps", "max_steps", "steps")  # config keys that give a run's length in steps


@dataclass
class RunOptions:
    """How ``run_spec`` runs a spec (the ``labfolio run`` flags)."""

    gpus: list[str] | None = None  # GPU ids to spread runs over (None: the visible ones; []: CPU only)
    parallel: int | None = None  # concurrent runs (default: runs_per_gpu per GPU, else one per core)
    runs_per_gpu: int = 1  # runs sharing one GPU at once (small models leave most of a GPU idle)
    dry_run: bool = False  # print the plan, start nothing
    retry_failed: bool = False  # rerun crashed and failed runs instead of skipping them
    rerun: bool = False  # rerun even finished runs
    smoke: bool = False  # tiny runs (the recipe's --smoke preset, the spec's smoke: values, first seed)
    executor: str = "local"  # local | ray
    store: str | None = None  # store folder / URL (default: labfolio's usual resolution)
    notebook: bool = True  # refresh the notebook at the end
    notebook_dir: str | Path | None = None  # vault folder (default: notebook/ at the project root)
    kill_after: float = 10.0  # seconds between SIGINT, SIGTERM and SIGKILL when stopping children
    poll_interval: float = 0.5  # seconds between reads of the store for the display
    log_dir: str | Path | None = None  # child output (default: <store home>/runner/<experiment>/)


@dataclass
class Task:
    """One planned run and what happened to it."""

    planned: PlannedRun
    action: str = "run"  # run | skip
    reason: str = ""  # why it is skipped / rerun / how it ended
    state: str = "pending"  # pending | skipped | running | finished | failed | crashed | killed
    slot: str | None = None  # GPU id, or "cpu"
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # what the runner adds to the environment
    config_json: str = ""
    log_path: Path | None = None
    run_id: str | None = None
    launched_at: float | None = None
    ended_at: float | None = None
    returncode: int | None = None
    last_step: int | None = None
    resume_run_id: str | None = None  # a killed run this task continues from its checkpoint
    key_value: float | None = None
    steps_per_s: float | None = None  # the run's logged steps over their time span
    progress: float | None = None  # 0..1 when the run's length is known
    # (time, step) of the run's last logged point at each poll that saw it move: how fast it went
    # while other runs shared its device (labfolio.analysis.sharing)
    progress_points: list = field(default_factory=list)
    output_tail: str = ""
    key_metric: str | None = None  # the metric key_value holds: its spec's first headline metric
    prefix: str = ""  # "experiment/" when one pool runs several specs

    @property
    def label(self) -> str:
        return self.prefix + self.planned.label

    @property
    def eta_s(self) -> float | None:
        if self.state != "running" or not self.progress or self.launched_at is None:
            return None
        elapsed = time.time() - self.launched_at
        return max(0.0, elapsed * (1.0 - self.progress) / self.progress)


@dataclass
class RunReport:
    """What ``run_spec`` did."""

    spec: Spec
    tasks: list[Task]
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    comparison: str = ""  # the analysis comparison table ("" when nothing to compare)
    vault: Any = None  # the notebook's VaultReport, when it was refreshed
    note_path: Path | None = None  # the experiment's note in the vault
    shared_speed: list[str] = field(default_factory=list)  # per shared device: steps/s in all (the last spec's)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(t.state in ("finished", "skipped") for t in self.tasks)

    def count(self, state: str) -> int:
        return sum(1 for t in self.tasks if t.state == state)


# --------------------------------------------------------------------------- resources


def cpu_count() -> int:
    """Cores this process may use (affinity and cgroup-pinned sets included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


def visible_gpus() -> list[str]:
    """GPU ids this process may use: $CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


# --------------------------------------------------------------------------- what a child gets


def _flag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    flat = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat += _flatten(value, f"{prefix}{key}.")
        else:
            flat.append((f"{prefix}{key}", value))
    return flat


def child_argv(spec: Spec, planned: PlannedRun, *, smoke: bool, python: str | None = None) -> list[str]:
    """The child's command line.

    A recipe reads its config from $LABFOLIO_CONFIG and gets only ``--smoke``, plus the spec's
    ``smoke:`` values for keys the recipe's preset also sets, as flags: flags win over the preset,
    so all of the config as flags would undo it, and those values in the JSON alone would be
    undone by it. A command also gets every value as ``--key=value`` (nested keys dotted), since a
    plain script more often parses flags than JSON."""
    python = python or sys.executable
    if spec.recipe:
        if not smoke:
            return [python, "-m", spec.recipe_info.module]
        return [python, "-m", spec.recipe_info.module, "--smoke",
                *[f"--{key}={_flag_value(value)}" for key, value in _flatten(spec.smoke_over_preset())]]
    argv = list(spec.command)
    # "python" in a spec means the interpreter labfolio runs in (its venv), not whatever is on PATH
    if argv[0] in ("python", "python3"):
        argv[0] = python
    return argv + [f"--{key}={_flag_value(value)}" for key, value in _flatten(planned.overrides)]


def child_config(spec: Spec, planned: PlannedRun) -> dict[str, Any]:
    """The JSON given to the child through $LABFOLIO_CONFIG."""
    values = dict(planned.overrides)
    if spec.recipe and spec.project:
        values["project"] = spec.project  # the recipe's own field wins over $LABFOLIO_PROJECT
    return values


def spec_project(spec: Spec) -> str:
    """The project the spec's runs are recorded under (the recipes default to 'labfolio-kit')."""
    if spec.project:
        return spec.project
    if spec.recipe:
        from labfolio.kit.recipes import TrackingFields

        return spec.base.get("project") or TrackingFields().project
    return os.environ.get("LABFOLIO_PROJECT", "")


def rule_fields(rule) -> dict[str, Any]:
    """A rule as the table a rules file would hold (its init fields)."""
    import dataclasses

    return {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule) if f.init}


def child_env(spec: Spec, planned: PlannedRun, *, gpu: str | None, threads: int | None,
              store: str | None) -> dict[str, str]:
    """Environment variables the runner adds for one child (on top of its own environment)."""
    env = {
        "LABFOLIO_EXPERIMENT": spec.experiment,
        "LABFOLIO_VARIANT": planned.variant,
        "LABFOLIO_SEED": str(planned.seed),
        "LABFOLIO_PROJECT": spec_project(spec),
        "PYTHONUNBUFFERED": "1",  # the log file shows progress as it happens
    }
    if store:
        env["LABFOLIO_STORE"] = store
    if os.environ.get(CHECKPOINT_DIR_ENV):
        # a Ray worker on another node does not inherit the runner's environment: pass on the
        # shared folder, so that the runner and every node look for checkpoints in one place
        env[CHECKPOINT_DIR_ENV] = os.environ[CHECKPOINT_DIR_ENV]
    if spec.rules:
        # the child's live checks judge the spec's rules while it trains, next to the project's
        env["LABFOLIO_RULES"] = json.dumps([rule_fields(rule) for rule in spec.rules])
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if threads is not None:
        # N children each using every core would oversubscribe the CPU N times over
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            if name not in os.environ:
                env[name] = str(threads)
    return env


# --------------------------------------------------------------------------- resume


# How often a run saves a checkpoint, which run it resumes and which steps it profiles do not
# change what it computes: a spec that turns them on still matches the runs it already has.
_RUNTIME_ONLY_KEYS = frozenset({"checkpoint_every", "resume", "profile_steps", "profile_start"})


def config_matches(expected: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """Keys whose recorded value differs from what the spec asks for ([] = the run is this config).

    Only keys present on both sides are compared: a script may record more than the spec sets, and
    an empty string in a kit config means "let the program choose" (it records its choice)."""
    from .analysis.diff import flatten_config

    flat_expected, flat_recorded = flatten_config(expected), flatten_config(recorded)
    differing = []
    for key, value in flat_expected.items():
        if key not in flat_recorded or value == "" or key in _RUNTIME_ONLY_KEYS:
            continue
        other = flat_recorded[key]
        if isinstance(value, (int, float)) and isinstance(other, (int, float)) \
                and not isinstance(value, bool) and not isinstance(other, bool):
            if float(value) != float(other):
                differing.append(key)
        elif value != other and json.dumps(value, default=str) != json.dumps(other, default=str):
            differing.append(key)
    return differing


def _resumable(runs, location):
    """The newest killed or crashed run among `runs` that left a checkpoint (see
    ``labfolio.kit.recipes.checkpoint``), or None: a run that can go on need not start over."""
    candidates = [r for r in runs if r.state in ("killed", "crashed")
                  and (location.checkpoint_dir / f"{r.run_id}.pt").is_file()]
    return max(candidates, key=lambda r: r.started_at or 0.0, default=None)


def plan_tasks(spec: Spec, store, options: RunOptions, location=None) -> list[Task]:
    """Every variant × seed, each marked run, resume or skip by what the store already holds
    (`location`, the store's, is where resumable runs keep their checkpoints)."""
    existing = store.list_runs(experiment=spec.experiment, with_summary=False) if store is not None else []
    tasks = []
    for planned in spec.plan(smoke=options.smoke):
        task = Task(planned)
        expected = {**planned.config, **child_config(spec, planned)}
        same = [r for r in existing if r.variant == planned.variant and r.seed == planned.seed
                and not config_matches(expected, r.config)]
        changed = [r for r in existing if r.variant == planned.variant and r.seed == planned.seed and r not in same]
        states = {r.state for r in same}
        if "finished" in states and not options.rerun:
            run = next(r for r in same if r.state == "finished")
            task.action, task.state, task.run_id, task.reason = "skip", "skipped", run.run_id, "finished earlier"
        elif "running" in states and not options.rerun:
            run = next(r for r in same if r.state == "running")
            task.action, task.state, task.run_id = "skip", "skipped", run.run_id
            task.reason = "running elsewhere (its heartbeat is live)"
        elif states & {"crashed", "failed"} and "killed" not in states and not (options.retry_failed or options.rerun):
            run = next(r for r in same if r.state in ("crashed", "failed"))
            task.action, task.state, task.run_id = "skip", "skipped", run.run_id
            task.reason = f"{run.state} earlier; --retry-failed runs it again"
        elif same:
            resumable = _resumable(same, location) if location is not None and not options.rerun else None
            if resumable is not None:
                task.resume_run_id = task.run_id = resumable.run_id
                task.reason = f"resume {resumable.run_id} from its checkpoint ({resumable.state} at step {resumable.last_step})"
            else:
                task.reason = f"rerun ({'/'.join(sorted(states))} earlier)"
        elif changed:
            keys = config_matches(expected, changed[0].config)
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            task.reason = f"config changed since {changed[0].run_id} ({', '.join(keys[:3])}{more})"
        tasks.append(task)
    return tasks


# --------------------------------------------------------------------------- the local pool


class LocalExecutor:
    """Child processes on this machine, each in its own session so that Ctrl-C reaches only the runner."""

    def __init__(self) -> None:
        self.processes: dict[int, tuple[Task, subprocess.Popen, Any]] = {}

    def start(self, task: Task, config_path: Path) -> None:
        config_path.write_text(task.config_json)
        env = {**os.environ, **task.env, "LABFOLIO_CONFIG": str(config_path)}
        # appended, never truncated: a rerun of a killed or crashed run keeps the earlier output
        log = open(task.log_path, "ab")
        log.write(_attempt_header(task).encode())
        log.flush()
        process = subprocess.Popen(task.argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[id(task)] = (task, process, log)

    def poll(self) -> list[tuple[Task, int]]:
        done = []
        for key, (task, process, log) in list(self.processes.items()):
            code = process.poll()
            if code is not None:
                log.close()
                del self.processes[key]
                done.append((task, code))
        return done

    def stop_all(self, kill_after: float) -> list[tuple[Task, int]]:
        """SIGINT, then SIGTERM, then SIGKILL to every child's process group, `kill_after` apart."""
        done: list[tuple[Task, int]] = []
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            for _task, process, _log in self.processes.values():
                try:
                    os.killpg(process.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + (kill_after if sig != signal.SIGKILL else 30.0)
            while self.processes and time.monotonic() < deadline:
                done += self.poll()
                time.sleep(0.05)
            if not self.processes:
                break
        return done

    def running(self) -> int:
        return len(self.processes)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- the main loop


def _log_dir(options: RunOptions, location, experiment: str) -> Path:
    base = Path(options.log_dir) if options.log_dir else location.home / "runner"
    folder = base / experiment
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _attempt_header(task: Task) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"==== labfolio run: {task.planned.variant} seed {task.planned.seed}, started {started} ====\n"


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    data = path.read_bytes()[-16384:].decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])


def _record_experiment(store, spec: Spec) -> None:
    """The experiment, its lineage, variants and baseline; hypothesis and rules only where a human left them empty."""
    from .notebook.results import HEADLINE_METRICS_FIELD
    from .store import Batch

    events: list[dict] = [{"type": "experiment", "project": spec_project(spec), "name": spec.experiment,
                           "previous": spec.previous, "tags": spec.tags, "variants": list(spec.variants),
                           "baseline": spec.baseline}]
    notes = store.note_fields("experiment", spec.experiment)
    if spec.hypothesis and not (notes.get("hypothesis") or "").strip():
        events.append({"type": "note", "scope": "experiment", "owner": spec.experiment,
                       "field": "hypothesis", "value": spec.hypothesis.strip()})
    # the spec's headline metrics head the notes' results tables too (the spec is their source,
    # so it replaces what an earlier version of the spec recorded)
    declared = "\n".join(spec.metrics)
    if declared != (notes.get(HEADLINE_METRICS_FIELD) or ""):
        events.append({"type": "note", "scope": "experiment", "owner": spec.experiment,
                       "field": HEADLINE_METRICS_FIELD, "value": declared})
    if spec.rules and not (notes.get("rules") or "").strip():
        from .analysis import format_metrics_table

        events.append({"type": "note", "scope": "experiment", "owner": spec.experiment,
                       "field": "rules", "value": format_metrics_table(spec.rules)})
    store.write_batch(Batch(events=events))


class _Monitor:
    """Reads each running task's run back from the store: its id, step, key metric, progress, alerts."""

    def __init__(self, store, spec: Spec, display) -> None:
        self.store, self.spec, self.display = store, spec, display
        self.seen_alerts: dict[str, int] = {}
        self.key_metric = (spec.headline_metrics or [None])[0]
        # runs that belong to no task of this plan: those the store held before it started, and
        # those already matched, so a rerun seconds after the last one never takes over its run
        self.claimed = {r.run_id for r in store.list_runs(experiment=spec.experiment, with_summary=False)}

    def claim(self, task: Task, runs) -> None:
        """Match `task` to its run: the newest of its variant and seed that started after its launch."""
        for record in runs:
            if (record.variant == task.planned.variant and record.seed == task.planned.seed
                    and record.run_id not in self.claimed
                    and (record.started_at or 0) >= (task.launched_at or 0) - 2.0):
                task.run_id = record.run_id
                self.claimed.add(record.run_id)
                return

    def refresh(self, tasks: list[Task]) -> None:
        active = [t for t in tasks if t.state == "running" or (t.returncode is not None and t.run_id is None)]
        if not active:
            return
        runs = self.store.list_runs(experiment=self.spec.experiment, limit=max(50, 4 * len(tasks)))
        for task in active:
            if task.run_id is None:
                self.claim(task, runs)
            record = next((r for r in runs if r.run_id == task.run_id), None)
            if record is None:
                continue
            self._update(task, record)
            self.alerts(task)

    def _update(self, task: Task, record) -> None:
        task.last_step = record.last_step
        if not task.progress_points and record.first_time is not None and record.first_step is not None:
            task.progress_points.append((record.first_time, record.first_step))
        if record.last_step is not None and record.last_time is not None and (
                not task.progress_points or task.progress_points[-1][1] != record.last_step):
            task.progress_points.append((record.last_time, record.last_step))
        task.steps_per_s = record.throughput.get("steps_per_s")
        if self.key_metric and self.key_metric in record.summary:
            value = record.summary[self.key_metric].value
            task.key_value = value if isinstance(value, (int, float)) else None
        config = record.config or task.planned.config
        total_key = next((k for k in _PROGRESS_KEYS if isinstance(config.get(k), int) and config[k] > 0), None)
        if total_key and record.last_step is not None:
            task.progress = min(1.0, (record.last_step + 1) / config[total_key])
        elif isinstance(config.get("epochs"), (int, float)) and config["epochs"] > 0 and "epoch" in record.summary:
            epoch = record.summary["epoch"].value
            if isinstance(epoch, (int, float)):
                task.progress = min(1.0, float(epoch) / config["epochs"])

    def alerts(self, task: Task) -> None:
        alerts = self.store.alerts(task.run_id)
        for alert in alerts[self.seen_alerts.get(task.run_id, 0):]:
            self.display.alert(task, alert)
        self.seen_alerts[task.run_id] = len(alerts)


def _finish_task(store, location, spec: Spec, task: Task, code: int, monitor: _Monitor, *,
                 interrupted: bool) -> None:
    task.returncode, task.ended_at = code, time.time()
    record = None
    if task.run_id is None:
        monitor.claim(task, store.list_runs(experiment=spec.experiment, variant=task.planned.variant))
        record = None
    if task.run_id is not None:
        from .drain import sync_journals

        # a child killed hard leaves points in its journal: drain them before judging its state
        sync_journals(store, location, only_run=task.run_id, include_offline=False)
        record = store.get_run(task.run_id)
        if interrupted and record.state != "finished":
            from .store import Batch

            if record.state != "killed":
                store.write_batch(Batch(run_id=task.run_id, events=[{
                    "type": "finish", "state": "killed",
                    "exit_reason": f"stopped by labfolio run (Ctrl-C); the child exited with {code}"}]))
            task.state = "killed"
        else:
            task.state = record.state if record.state in FINAL_STATES else ("finished" if code == 0 else "crashed")
            if code != 0 and task.state == "finished":
                task.state = "failed"  # the run finished, then the script failed: not a clean result
        task.last_step = record.last_step
    else:
        task.state = "killed" if interrupted else "failed"
        task.reason = f"exited with {code} before labfolio.init() recorded a run"
    if task.state != "finished":
        task.output_tail = _tail(task.log_path)
    if record is not None:
        _record_runner_time(store, task, record)
    if task.run_id is not None:
        monitor.alerts(task)  # what was recorded after the last poll


def _record_runner_time(store, task: Task, record) -> None:
    """The child's wall time as the runner saw it, into the run's summary (``runner/wall_s``), and
    the part of it outside the run's own span, init to finish (``runner/outside_run_s``): process
    start, imports, data loading, model build, exit. That part is what a run pays for being a
    process of its own; the notebook reports both. A resumed run's span covers earlier attempts,
    so it gets the wall time only."""
    from .store import Batch

    if task.launched_at is None or task.ended_at is None:
        return
    wall = task.ended_at - task.launched_at
    values = {"runner/wall_s": round(wall, 2)}
    span = (record.ended_at - record.started_at) if record.ended_at and record.started_at else None
    if span is not None and task.resume_run_id is None and 0 <= span <= wall + 1.0:
        values["runner/outside_run_s"] = round(max(0.0, wall - span), 2)
    store.write_batch(Batch(run_id=task.run_id, events=[{"type": "summary", "values": values}]))


def _slots(options: RunOptions, n_runs: int, warnings: list[str]) -> tuple[list[str | None], int | None]:
    """One slot per concurrent run (a GPU id, or None for CPU) and the CPU threads per child."""
    gpus = visible_gpus() if options.gpus is None else list(options.gpus)
    if gpus:
        # small models leave a GPU mostly idle between kernel launches: several runs may share one
        per_gpu = max(1, options.runs_per_gpu)
        capacity = len(gpus) * per_gpu
        parallel = min(options.parallel or capacity, capacity)
        if options.parallel and options.parallel > capacity:
            warnings.append(f"--parallel {options.parallel} > {len(gpus)} GPU(s) × {per_gpu} run(s) each: "
                            f"running {capacity} at once (raise --runs-per-gpu to share GPUs)")
        # round-robin, so that 2 runs on 2 GPUs with --runs-per-gpu 2 still use both GPUs
        slots = [gpus[i % len(gpus)] for i in range(capacity)]
        return slots[:parallel], None
    cores = cpu_count()
    parallel = options.parallel or min(cores, max(1, n_runs))
    if parallel > cores:
        warnings.append(f"--parallel {parallel} > {cores} CPU core(s): running {cores} at once")
        parallel = cores
    parallel = max(1, min(parallel, max(1, n_runs)))
    return [None] * parallel, max(1, cores // parallel)


def run_spec(spec: Spec, options: RunOptions | None = None, *, display=None) -> RunReport:
    """Run every unfinished variant × seed of `spec` (see the module docstring)."""
    from .runner_display import make_display
    from .runner_pool import run_specs

    options = options or RunOptions()
    return run_specs([spec], options, displays=[display or make_display(spec, options)])[0]


def finished_views(store, report: RunReport) -> list:
    """``RunView``s of the plan's runs that are no longer running, for its comparison table."""
    from .analysis import RunView

    views = []
    for run_id in {t.run_id for t in report.tasks if t.run_id}:
        record = store.get_run(run_id)
        if record.state == "running":
            continue
        summary = {k: e.value for k, e in record.summary.items()
                   if isinstance(e.value, (int, float)) and not isinstance(e.value, bool)}
        views.append(RunView(run_id=record.run_id, experiment=record.experiment, variant=record.variant,
                             seed=record.seed, state=record.state, config=record.config, summary=summary,
                             status_override=record.status, status_reason=record.status_reason,
                             started_at=record.started_at))
    return views


def comparison_table(spec: Spec, views: list) -> str:
    """The analysis comparison of the spec's headline metrics over `views` ("" if nothing to compare)."""
    from .analysis import format_comparison_table, seed_statistics

    logged = {key for view in views for key in view.summary}
    metrics = [m for m in spec.headline_metrics if m in logged]
    if not (views and metrics):
        return ""
    return format_comparison_table(seed_statistics(views, metrics, baselines=spec.baseline, n_bootstrap=2000), metrics)


def refresh_notebook(store, options: RunOptions):
    """(the VaultReport, None), or (None, a warning) when the refresh failed or was interrupted."""
    from .notebook import write_vault

    try:
        return write_vault(store, options.notebook_dir), None
    except KeyboardInterrupt:  # a second Ctrl-C: the runs are stored, only the refresh is skipped
        return None, "the notebook refresh was interrupted; the runs are in the store, refresh it with: labfolio notes"
    except Exception as exc:  # the runs are safe in the store; a notebook bug must not hide that
        return None, (f"the notebook could not be refreshed ({type(exc).__name__}: {exc}); "
                      "the runs are in the store, retry with: labfolio notes")
