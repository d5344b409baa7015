"""Resumable training for the recipes: a checkpoint per run, and picking a killed run up again.

A 200-epoch run killed at epoch 175 (a device lease that ran out, a preempted node) used to be
lost whole: the recipes kept nothing but the store's metrics. With ``checkpoint_every`` set, a
recipe writes everything its loop needs to go on, at an epoch (or step) boundary:

- the model, the optimizer, the EMA and the weight snapshots;
- the step and epoch reached, and what the loop has accumulated (logged losses, final metrics);
- every random state the loop draws from (torch's CPU and CUDA generators, the data order,
  the augmentation and MixUp generators), so that a resumed run continues the same stream.

The file is ``<store home>/checkpoints/<run id>.pt`` (``StoreLocation.checkpoint_dir``), written
to a temporary name and renamed, so a kill during the write leaves the previous checkpoint. The
runner resumes a killed run that has one by setting ``LABFOLIO_RESUME`` to its run id; the
recipe then continues the same labfolio run, and does not log again the steps the killed
attempt had already logged.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import labfolio

__all__ = ["RESUME_ENV", "checkpoint_path", "checkpoint_to_resume", "resume_point", "resume_run_id", "save_checkpoint", "load_checkpoint",
           "random_states", "restore_random_states", "logged_before", "training_state", "restore_training"]

RESUME_ENV = "LABFOLIO_RESUME"  # the run id to resume, set by ``labfolio run`` for a killed run


def resume_run_id(requested: str) -> str:
    """The run to resume: the recipe's ``resume`` key, else $LABFOLIO_RESUME, else '' (a new run)."""
    return requested or os.environ.get(RESUME_ENV, "")


def logged_before(run: Any, key: str, step: int) -> bool:
    """Whether a resumed run's killed attempt already stored `key` at `step` (or later): the
    steps between the checkpoint and the kill are trained again but not logged twice."""
    return step <= run.logged_through.get(key, -1)


def checkpoint_path(run: Any) -> Path | None:
    """Where `run`'s checkpoint lives; None for a disabled run (it has no store)."""
    location = getattr(run, "location", None)
    if location is None:
        return None
    return location.checkpoint_dir / f"{run.id}.pt"


def checkpoint_to_resume(run_id: str) -> dict:
    """The checkpoint of `run_id` in the store ``labfolio.init()`` will open, read before the run
    is resumed: a run that cannot resume is refused before its record is touched."""
    from labfolio.settings import resolve_store

    return load_checkpoint(resolve_store(None).checkpoint_dir / f"{run_id}.pt", run_id)


def resume_point(requested: str) -> tuple[str, dict | None]:
    """(run id to resume, its checkpoint), or ("", None) for a new run.

    A resume the recipe's ``resume`` key asks for must succeed: a missing checkpoint is an error.
    One that ``labfolio run`` asks for ($LABFOLIO_RESUME) was decided from the checkpoints the
    runner's machine sees; a child on another machine (a Ray node) may not see the file, and then
    starts a new run, with a warning, rather than fail: the killed run stays in the store.
    """
    run_id = resume_run_id(requested)
    if not run_id:
        return "", None
    if requested:
        return run_id, checkpoint_to_resume(run_id)
    from labfolio.settings import CHECKPOINT_DIR_ENV, resolve_store

    path = resolve_store(None).checkpoint_dir / f"{run_id}.pt"
    if not path.is_file():
        warnings.warn(
            f"labfolio run asked to resume {run_id}, but its checkpoint is not at {path} on this machine: "
            f"starting a new run. For runs on several machines, set {CHECKPOINT_DIR_ENV} to a folder they all see.",
            RuntimeWarning, stacklevel=2)
        return "", None
    return run_id, load_checkpoint(path, run_id)


def random_states(*generators: torch.Generator, numpy_rng: np.random.Generator | None = None) -> dict:
    """Every random state a training loop draws from, as plain tensors and numbers."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generators": [generator.get_state() for generator in generators],
        "numpy": numpy_rng.bit_generator.state if numpy_rng is not None else None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict, *generators: torch.Generator,
                          numpy_rng: np.random.Generator | None = None) -> None:
    """Put back what ``random_states`` captured, into the same generators in the same order."""
    torch.set_rng_state(states["torch"])
    if len(states["generators"]) != len(generators):
        raise labfolio.ConfigError(
            f"the checkpoint holds {len(states['generators'])} generator states, the recipe has "
            f"{len(generators)}: it was written by another version of the recipe; rerun without resuming")
    for generator, state in zip(generators, states["generators"]):
        generator.set_state(state)
    if numpy_rng is not None and states.get("numpy") is not None:
        numpy_rng.bit_generator.state = states["numpy"]
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` to `path` atomically (a temporary file in the same folder, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        torch.save(state, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_checkpoint(path: Path | None, run_id: str) -> dict:
    """The checkpoint a resumed run continues from; a clear error when there is none."""
    if path is None or not path.is_file():
        raise labfolio.ConfigError(
            f"resume={run_id!r}: no checkpoint at {path}. Only runs trained with checkpoint_every > 0 "
            "can resume; rerun without resume (unset LABFOLIO_RESUME) to start over")
    # weights_only: a checkpoint is tensors, numbers and strings; nothing in it needs to run code
    return torch.load(path, map_location="cpu", weights_only=True)


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: Any, snapshots: Any) -> dict:
    """The weights and optimizer state a checkpoint holds (EMA and snapshots when the run keeps them)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "snapshots": snapshots.state_dict() if snapshots is not None else None}


def restore_training(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: Any,
                     snapshots: Any) -> None:
    """Load what ``training_state`` saved back into the run's model, optimizer, EMA and snapshots."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    if snapshots is not None:
        snapshots.load_state_dict(state["snapshots"])
