"""Where a training step's time goes: a few steps timed and profiled, summarised into the run.

A recipe run with ``profile_steps: N`` times N optimizer steps from ``profile_start`` (after
compilation and warm-up), then records N more under ``torch.profiler``, and logs at the last one:

- ``profile/wall_ms_per_step``: wall time per step of the plain window, the device synchronised
  at both ends (the profiler is off there, so its own cost is not counted);
- ``profile/device_ms_per_step``: the time the device spent in kernels and copies per step;
- ``profile/device_busy``: device time over wall time. Well below 1, the step waits on the host
  (Python, compiled-graph calls, kernel launches): CUDA graphs or fewer, larger operations help,
  a faster GPU does not. Near 1, the step is bound by the GPU;
- ``profile/device_ops_per_step``: kernels and copies launched per step;

and a text artifact with the top operators by device time and by host time. On CPU the device
figures are 0: there is no device to wait on. The two windows add three synchronisations to the
run and change nothing it computes, so the spec keys are runtime-only (like checkpoint_every).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import labfolio

__all__ = ["StepProfile", "StepProfiler", "device_time_and_ops", "log_step_profile", "step_profiler"]

_TOP_OPERATORS = 15


@dataclass(frozen=True)
class StepProfile:
    metrics: dict[str, float]  # the profile/* numbers above
    table: str  # the top operators, by device time and by host time

    def write(self, folder: Path, run_id: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_profile_{run_id}.txt"
        lines = [f"{name}: {value:.4g}" for name, value in self.metrics.items()]
        path.write_text("\n".join(lines) + "\n\n" + self.table + "\n", encoding="utf-8")
        return path


class StepProfiler:
    """Call ``before_step(step)`` at the top of each optimizer step and ``after_step(step)`` at its
    end; ``after_step`` returns the StepProfile once, at the last profiled step (else None)."""

    def __init__(self, steps: int, start: int, device: torch.device) -> None:
        if steps < 0 or start < 0:
            raise labfolio.ConfigError(f"profile_steps and profile_start must be >= 0, got {steps} and {start}")
        self.steps, self.start, self.device = steps, start, device
        self._timer: float | None = None
        self._wall_ms_per_step: float | None = None
        self._profiler: torch.profiler.profile | None = None

    @property
    def enabled(self) -> bool:
        return self.steps > 0

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def before_step(self, step: int) -> None:
        if not self.enabled:
            return
        if step == self.start:
            self._synchronize()
            self._timer = time.perf_counter()
        elif step == self.start + self.steps and self._timer is not None:
            self._synchronize()
            self._wall_ms_per_step = (time.perf_counter() - self._timer) * 1000 / self.steps
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.start()

    def after_step(self, step: int) -> StepProfile | None:
        if self._profiler is None or step != self.start + 2 * self.steps - 1:
            return None
        self._synchronize()
        profiler, self._profiler = self._profiler, None
        profiler.stop()
        return self._summary(profiler)

    def _summary(self, profiler: torch.profiler.profile) -> StepProfile:
        averages = profiler.key_averages()
        device_ms, device_ops = device_time_and_ops(averages)
        device_ms, device_ops = device_ms / self.steps, device_ops / self.steps
        wall_ms = self._wall_ms_per_step or 0.0
        metrics = {
            "profile/wall_ms_per_step": wall_ms,
            "profile/device_ms_per_step": device_ms,
            "profile/device_busy": device_ms / wall_ms if wall_ms > 0 else 0.0,
            "profile/device_ops_per_step": device_ops,
        }
        tables = []
        if device_ops:
            tables.append(f"Top operators by device time ({self.steps} steps):\n"
                          + averages.table(sort_by="self_device_time_total", row_limit=_TOP_OPERATORS))
        tables.append(f"Top operators by host time ({self.steps} steps):\n"
                      + averages.table(sort_by="self_cpu_time_total", row_limit=_TOP_OPERATORS))
        return StepProfile(metrics, "\n\n".join(tables))


def device_time_and_ops(averages) -> tuple[float, int]:
    """(ms, count) of the device's own events (kernels, copies) in torch.profiler's averages.

    Counted as torch's "Self CUDA time total" counts them: CPU operators carry the device time of
    the kernels they launched as well, so summing over every entry would count each kernel twice.
    """
    device = [e for e in averages if e.device_type != torch.autograd.DeviceType.CPU
              and not getattr(e, "is_user_annotation", False)]
    return sum(e.self_device_time_total for e in device) / 1000, sum(e.count for e in device)


def step_profiler(steps: int, start: int, total_steps: int, device: torch.device) -> StepProfiler:
    """The recipe's profiler; says so at once when its window would end after the run's last step."""
    profiler = StepProfiler(steps, start, device)
    if profiler.enabled and start + 2 * steps > total_steps:
        print(f"profile: steps {start}–{start + 2 * steps - 1} run past the last step ({total_steps - 1}), so "
              "nothing will be profiled; lower profile_start or profile_steps", file=sys.stderr, flush=True)
    return profiler


def log_step_profile(run, profile: StepProfile, step: int, folder: Path | None = None,
                     kept: list[str] | None = None) -> None:
    """The profile's numbers as metrics at `step`, its table as a text artifact (written in
    `folder`, else in a temporary one: the store keeps its own copy), and one console line.
    `kept` collects the file's path when the recipe keeps its files."""
    run.log(profile.metrics, step=step)
    scratch = tempfile.TemporaryDirectory(prefix="labfolio-profile-") if folder is None else contextlib.nullcontext()
    with scratch as scratch_folder:
        path = profile.write(folder or Path(scratch_folder), run.id)
        run.log_artifact(path, kind="text")
    if kept is not None:
        kept.append(str(path))
    numbers = profile.metrics
    print(f"  profile: {numbers['profile/wall_ms_per_step']:.2f} ms/step wall, "
          f"{numbers['profile/device_ms_per_step']:.2f} on the device "
          f"({numbers['profile/device_busy']:.0%} busy), "
          f"{numbers['profile/device_ops_per_step']:.0f} device ops per step · {path.name}", flush=True)
