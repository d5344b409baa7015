"""``labfolio run --executor ray``: each run is one Ray task with ``num_gpus=1``.

Ray does all the scheduling (which node, which GPU, when); this module only turns a runner task
into a Ray task and back. The driver connects to ``$RAY_ADDRESS`` (``ray.init()`` reads it), or
starts a local Ray instance when it is unset. Ray sets ``CUDA_VISIBLE_DEVICES`` for each task
to the GPU it granted, and the child inherits it.

Children write to the store named by ``$LABFOLIO_STORE``/``--store``; on a cluster that must be a
store every node reaches (PostgreSQL, or the team server). The task runs on the worker: it writes
the child's config file there, runs the child, and on cancellation (Ctrl-C on the driver) stops it
the same way the local pool does — SIGINT, SIGTERM, SIGKILL — so the run is recorded as killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["RayExecutor", "run_child"]

_PYTHON = "{python}"  # placeholder in argv for the worker's own interpreter


def run_child(argv: list[str], env: dict[str, str], config_json: str, cwd: str, kill_after: float) -> dict:
    """Run one child on a Ray worker; returns its exit code and the tail of its output."""
    argv = [sys.executable if part == _PYTHON else part for part in argv]
    with tempfile.TemporaryDirectory(prefix="labfolio-ray-") as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_text(config_json)
        log_path = Path(scratch) / "output.log"
        child_env = {**os.environ, **env, "LABFOLIO_CONFIG": str(config_path)}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=cwd if os.path.isdir(cwd) else None,
                                       start_new_session=True)
            try:
                code = process.wait()
            except KeyboardInterrupt:  # ray.cancel() on the driver
                code = _stop(process, kill_after)
        tail = log_path.read_bytes()[-16384:].decode("utf-8", "replace")
        return {"returncode": code, "output": tail, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _stop(process: subprocess.Popen, kill_after: float) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return process.wait(timeout=kill_after if sig != signal.SIGKILL else 30.0)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


class RayExecutor:
    """The runner's executor interface (start / poll / stop_all / running) over Ray tasks."""

    def __init__(self, options, warnings: list[str]) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'labfolio[ray]' (or pip install ray)") from None
        self.ray = ray
        self.kill_after = options.kill_after
        address = os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            # a new local instance needs no dashboard; an existing cluster keeps its own settings
            local = {"include_dashboard": False} if address is None else {}
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **local)
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus:
            self.resources: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
        else:
            # a task asking for a GPU on a cluster without any would wait forever
            self.resources = {"num_gpus": 0, "num_cpus": 1}
            warnings.append("the Ray cluster has no GPUs: each run takes one CPU instead of one GPU")
        if address and (options.store is None or str(options.store).startswith(("sqlite", "/", "."))):
            warnings.append("runs on other Ray nodes must reach the store: pass --store postgresql+psycopg://... "
                            "(or the team server's URL) unless every node shares this folder")
        self.remote = ray.remote(max_retries=0, **self.resources)(run_child)
        self.refs: dict[Any, Any] = {}  # ObjectRef -> Task
        self.results: dict[int, dict] = {}

    def start(self, task, config_path: Path) -> None:
        config_path.write_text(task.config_json)  # a local copy, for the record
        argv = [_PYTHON if part == sys.executable else part for part in task.argv]
        ref = self.remote.remote(argv, task.env, task.config_json, os.getcwd(), self.kill_after)
        self.refs[ref] = task

    def _collect(self, ready) -> list:
        done = []
        for ref in ready:
            task = self.refs.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as exc:  # cancelled, or the worker died
                result = {"returncode": -signal.SIGINT if "Cancel" in type(exc).__name__ else 1,
                          "output": f"{type(exc).__name__}: {exc}"}
            self.results[id(task)] = result
            if task.log_path is not None:
                with open(task.log_path, "a", encoding="utf-8") as log:  # reruns keep earlier output
                    log.write(result.get("output", ""))
            done.append((task, int(result.get("returncode", 1))))
        return done

    def poll(self) -> list:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        return self._collect(ready)

    def stop_all(self, kill_after: float) -> list:
        for ref in list(self.refs):
            self.ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: it stops its child
        deadline = time.monotonic() + 3 * kill_after + 30.0
        done = []
        while self.refs and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0.5)
            done += self._collect(ready)
        for ref in list(self.refs):
            self.ray.cancel(ref, force=True)
        done += self._collect(list(self.refs))
        return done

    def running(self) -> int:
        return len(self.refs)

    def close(self) -> None:
        pass
