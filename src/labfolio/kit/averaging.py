"""Weight averaging: an exponential moving average, and the average of the last K checkpoints.

Averaging the checkpoints taken during the constant-LR phase of a warmup-hold-decay run gets close to
the loss a cooldown would reach, without deciding the run's length in advance (Hägele et al. 2024,
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"). The EMA is the
streaming version of the same idea.

Only floating-point tensors are averaged. Integer buffers (step counters, index tables) are taken
from the newest state, because an average of them is meaningless.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["EMA", "LastKAverage", "average_state_dicts", "average_checkpoint_files"]

StateDict = Mapping[str, torch.Tensor]


def _state_of(source: nn.Module | StateDict) -> StateDict:
    return source.state_dict() if isinstance(source, nn.Module) else source


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps the module; its state_dict keys carry an "_orig_mod." prefix we do not want
    return getattr(model, "_orig_mod", model)


class EMA:
    """Exponential moving average of a model's weights, kept on `device` (default: the model's).

    ``shadow = decay * shadow + (1 - decay) * weights`` after each optimizer step. With
    ``warmup=True`` the decay ramps up as ``min(decay, (1 + n) / (10 + n))`` for the n-th update, so
    the early average is not dominated by the random initialisation.
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.999,
        warmup: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        state = _unwrap(model).state_dict()
        self.shadow: dict[str, torch.Tensor] = {
            key: value.detach().to(device or value.device, copy=True) for key, value in state.items()
        }

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after optimizer.step())."""
        decay = self.current_decay()
        state = _unwrap(model).state_dict()
        if state.keys() != self.shadow.keys():
            missing = sorted(set(self.shadow) - set(state))[:5]
            extra = sorted(set(state) - set(self.shadow))[:5]
            raise ValueError(
                f"model no longer matches the EMA's parameters (missing {missing}, new {extra}); "
                "create the EMA after the model is fully built"
            )
        for key, value in state.items():
            shadow = self.shadow[key]
            value = value.detach().to(shadow.device)
            if shadow.is_floating_point():
                shadow.lerp_(value.to(shadow.dtype), 1.0 - decay)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": dict(self.shadow)}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.decay = float(state["decay"])  # type: ignore[arg-type]
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])  # type: ignore[call-overload]
        shadow = state["shadow"]
        assert isinstance(shadow, Mapping), "EMA state needs a 'shadow' mapping of tensors"
        # a checkpoint is loaded onto the CPU: the average goes back where it lived (the model's device)
        device = next(iter(self.shadow.values())).device if self.shadow else None
        self.shadow = {key: value.detach().to(device or value.device, copy=True) for key, value in shadow.items()}

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the average."""
        _unwrap(model).load_state_dict(self.shadow)

    @contextlib.contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Evaluate with the averaged weights inside the block; the live weights come back after."""
        inner = _unwrap(model)
        backup = {key: value.detach().clone() for key, value in inner.state_dict().items()}
        inner.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            inner.load_state_dict(backup)


def average_state_dicts(
    states: Sequence[StateDict], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Weighted mean of state dicts with identical keys and shapes (uniform by default).

    Floating-point tensors are averaged in fp32 (then cast back) so that averaging many bf16
    checkpoints does not lose precision; other tensors come from the last state.
    """
    if not states:
        raise ValueError("average_state_dicts needs at least one state dict")
    if weights is None:
        weights = [1.0 / len(states)] * len(states)
    if len(weights) != len(states):
        raise ValueError(f"got {len(weights)} weights for {len(states)} state dicts")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {total}")
    reference = states[-1]
    for index, state in enumerate(states):
        if state.keys() != reference.keys():
            diff = sorted(set(state) ^ set(reference))[:5]
            raise ValueError(f"state dict {index} has different keys from the last one: {diff}")
        for key, value in state.items():
            if value.shape != reference[key].shape:
                raise ValueError(
                    f"state dict {index} has {key} of shape {tuple(value.shape)}, "
                    f"the last one has {tuple(reference[key].shape)}"
                )
    averaged: dict[str, torch.Tensor] = {}
    for key, last in reference.items():
        if not last.is_floating_point():
            averaged[key] = last.detach().clone()
            continue
        accumulator = torch.zeros(last.shape, dtype=torch.float32, device=last.device)
        for weight, state in zip(weights, states):
            accumulator.add_(state[key].detach().to(accumulator.device, torch.float32), alpha=weight / total)
        averaged[key] = accumulator.to(last.dtype)
    return averaged


class LastKAverage:
    """Keeps the last `k` snapshots of a model (on `device`, CPU by default) and averages them.

    Take a snapshot every `every` steps with ``maybe_add(step, model)`` during the constant-LR phase,
    then load ``average()`` instead of running a cooldown.
    """

    def __init__(self, k: int, every: int = 1, device: torch.device | str = "cpu") -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.k = k
        self.every = every
        self.device = torch.device(device)
        self.snapshots: collections.deque[dict[str, torch.Tensor]] = collections.deque(maxlen=k)
        self.steps: collections.deque[int] = collections.deque(maxlen=k)

    def add(self, source: nn.Module | StateDict, step: int = -1) -> None:
        """Snapshot a model or a state dict now; the oldest snapshot drops out beyond `k`."""
        state = _state_of(_unwrap(source) if isinstance(source, nn.Module) else source)
        self.snapshots.append(
            {key: value.detach().to(self.device, copy=True) for key, value in state.items()}
        )
        self.steps.append(step)

    def maybe_add(self, step: int, model: nn.Module) -> bool:
        """Snapshot when `step` is a multiple of `every`; returns whether it did."""
        if step % self.every != 0:
            return False
        self.add(model, step)
        return True

    def __len__(self) -> int:
        return len(self.snapshots)

    def state_dict(self) -> dict[str, object]:
        return {"k": self.k, "every": self.every, "snapshots": list(self.snapshots), "steps": list(self.steps)}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.k, self.every = int(state["k"]), int(state["every"])  # type: ignore[call-overload]
        self.snapshots = collections.deque(
            ({key: value.to(self.device, copy=True) for key, value in snapshot.items()}
             for snapshot in state["snapshots"]), maxlen=self.k)  # type: ignore[union-attr]
        self.steps = collections.deque((int(step) for step in state["steps"]), maxlen=self.k)  # type: ignore[union-attr]

    def average(self) -> dict[str, torch.Tensor]:
        """The uniform average of the snapshots held."""
        if not self.snapshots:
            raise ValueError("no snapshots yet: call add() or maybe_add() during training first")
        return average_state_dicts(list(self.snapshots))


def average_checkpoint_files(
    paths: Sequence[str | Path], key: str | None = None
) -> dict[str, torch.Tensor]:
    """Average state dicts saved with torch.save (optionally found under `key` in each file)."""
    states = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if key is not None:
            if key not in loaded:
                raise KeyError(f"checkpoint {path} has no entry {key!r}; it has {sorted(loaded)[:10]}")
            loaded = loaded[key]
        states.append(loaded)
    return average_state_dicts(states)
