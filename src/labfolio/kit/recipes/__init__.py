"""Training recipes for the study, runnable as ``python -m labfolio.kit.recipes.<name>``.

- ``classify``: the ViT on digits or CIFAR-10/100;
- ``lm``: the byte-level GPT on any text file.

Both are configured by one dataclass. Values are layered, later ones winning: the dataclass
defaults, ``$LABFOLIO_SEED``, a JSON file (``--config FILE`` or ``$LABFOLIO_CONFIG``), the
``--smoke`` preset (tiny, CPU, seconds), then ``--key=value`` flags. Unknown keys are errors with a
did-you-mean. The connection is chosen by the flat fields ``connection``, ``streams``, ``wrap``,
``dynamic``… which mirror `labfolio.kit.connections.ConnectionConfig` one to one.

Recipes log only through labfolio's public SDK (``labfolio.init`` / ``run.log`` / ``log_artifact``).
This module holds what both share: config parsing and the small pieces of the training loop.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import inspect
import json
import os
import random
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import labfolio
from labfolio.kit.connections import ConnectionConfig
from labfolio.kit.schedules import Schedule, make_schedule, schedule_param_names

__all__ = [
    "ConnectionFields",
    "TrackingFields",
    "RecipeResult",
    "parse_config",
    "config_from_mapping",
    "connection_config",
    "seed_everything",
    "resolve_device",
    "autocast",
    "make_optimizer",
    "set_lr",
    "schedule_for",
    "grad_norm_and_clip",
    "start_run",
    "compile_for_training",
    "CudaGraphSteps",
]

_CONNECTION_DEFAULTS = ConnectionConfig()


@dataclass
class ConnectionFields:
    """The connection config, flattened so each field is one flag (``--connection=mhc``)."""

    connection: Literal["residual", "hc", "mhc"] = _CONNECTION_DEFAULTS.connection  # residual | hc | mhc
    streams: int = _CONNECTION_DEFAULTS.streams  # n residual streams for hc/mhc (ignored by residual)
    wrap: Literal["branch", "block"] = _CONNECTION_DEFAULTS.wrap  # one connection per sublayer or per block
    dynamic: bool = _CONNECTION_DEFAULTS.dynamic  # hc/mhc: input-dependent coefficients on top of static ones
    sinkhorn_iters: int = _CONNECTION_DEFAULTS.sinkhorn_iters  # mhc: Sinkhorn-Knopp iterations
    sinkhorn_tau: float = _CONNECTION_DEFAULTS.sinkhorn_tau  # mhc: Sinkhorn temperature
    hres_offdiag_init: float = _CONNECTION_DEFAULTS.hres_offdiag_init  # mhc: off-diagonal H_res logit init
    num_fracs: int = _CONNECTION_DEFAULTS.num_fracs  # hc only: frac-connections per stream
    reduce: Literal["mean", "sum", "learned"] = _CONNECTION_DEFAULTS.reduce  # streams -> one at the output
    mhc_impl: Literal["eager", "fast", "triton", "auto"] = _CONNECTION_DEFAULTS.mhc_impl  # mhc: reference, fast path, or its Triton kernels


@dataclass
class TrackingFields:
    """Where and how the run is recorded; empty strings defer to labfolio's env vars."""

    project: str = "labfolio-kit"  # labfolio project name
    experiment: str = ""  # experiment name ("" = $LABFOLIO_EXPERIMENT)
    variant: str = ""  # variant name ("" = $LABFOLIO_VARIANT, else the connection name)
    mode: str = ""  # online | offline | disabled ("" = $LABFOLIO_MODE, else online)


@dataclass(frozen=True)
class RecipeResult:
    run_id: str  # the labfolio run that recorded the training
    final: dict[str, float]  # the last value of every headline metric
    train_loss: list[float]  # train/loss at each logged step, in order
    artifacts: list[str]  # files written (kept only when out_dir is set)


def connection_config(cfg: ConnectionFields) -> ConnectionConfig:
    """The models' ConnectionConfig built from the recipe config's flat fields."""
    return ConnectionConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ConnectionConfig)})


# --------------------------------------------------------------------------- config parsing


def _field_help(cls: type) -> dict[str, str]:
    """The comment after each field's default, so the dataclass stays the one place to document."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for match in re.finditer(r"^\s+(\w+): [^=\n]+=[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE):
            helps[match.group(1)] = match.group(2).strip()
    return helps


def _is_optional(kind: Any) -> tuple[bool, Any]:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(inner) == 1 and len(typing.get_args(kind)) == 2:
            return True, inner[0]
    return False, kind


def _check_value(name: str, kind: Any, value: Any, source: str) -> Any:
    """`value` as the field's type, or a ConfigError naming the field, the source and the fix."""
    optional, kind = _is_optional(kind)
    if value is None:
        if optional:
            return None
        raise labfolio.ConfigError(f"{source}: {name} cannot be null")
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            raise labfolio.ConfigError(
                f"{source}: {name}={value!r} is not one of {', '.join(map(str, choices))}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a recipe config uses only the types above
        raise TypeError(f"config field {name} has unsupported type {kind}")
    raise labfolio.ConfigError(
        f"{source}: {name} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__} {value!r}"
    )


def _from_text(name: str, kind: Any, text: str) -> Any:
    """Convert a command-line string to the field's type (then checked like any other value)."""
    optional, inner = _is_optional(kind)
    if optional and text.lower() in ("none", "null"):
        return None
    if inner is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"--{name} takes true or false, got {text!r}")
    try:
        if inner is int:
            return int(text)
        if inner is float:
            return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--{name} takes {inner.__name__}, got {text!r}"
        ) from None
    return text


def config_from_mapping(cls: type, values: dict[str, Any], source: str, base: Any = None) -> Any:
    """`base` (default: the dataclass defaults) with `values` applied, every key and type checked."""
    if not isinstance(values, dict):
        raise labfolio.ConfigError(f"{source}: expected a JSON object of config keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    checked = {}
    for key, value in values.items():
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            raise labfolio.ConfigError(
                f"{source}: unknown config key {key!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + "; run with --help to list the keys"
            )
        checked[key] = _check_value(key, hints[key], value, source)
    return dataclasses.replace(base if base is not None else cls(), **checked)


def _build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", metavar="FILE.json", default=argparse.SUPPRESS,
                        help="JSON object of config values (default: $LABFOLIO_CONFIG)")
    parser.add_argument("--smoke", action="store_true", default=argparse.SUPPRESS,
                        help="tiny model and data on CPU: checks the whole pipeline in seconds")
    parser.add_argument("--print-config", action="store_true", default=argparse.SUPPRESS,
                        help="print the resolved config as JSON and exit")
    hints = typing.get_type_hints(cls)
    helps = _field_help(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kind = hints[f.name]
        text = f"{helps.get(f.name, '')} (default: {getattr(defaults, f.name)!r})"

        def convert(raw: str, name: str = f.name, field_kind: Any = kind) -> Any:
            return _from_text(name, field_kind, raw)

        _, inner = _is_optional(kind)
        if inner is bool:
            parser.add_argument(*flags, dest=f.name, nargs="?", const="true", type=convert,
                                default=argparse.SUPPRESS, metavar="BOOL", help=text)
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            choices = typing.get_args(inner) if typing.get_origin(inner) is Literal else None
            parser.add_argument(*flags, dest=f.name, type=convert, default=argparse.SUPPRESS,
                                choices=choices, metavar=f.name.upper() if not choices else None, help=text)
    return parser


def parse_config(
    cls: type,
    argv: Sequence[str] | None,
    smoke: dict[str, Any] | Callable[[Any], dict[str, Any]],
    prog: str,
    description: str = "",
) -> Any:
    """The recipe config from defaults, $LABFOLIO_SEED, JSON file, --smoke and flags (in that order).

    `smoke` is the preset's values, or a function of the config so far that returns them.
    """
    parser = _build_parser(cls, prog, description)
    args, unknown = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if unknown:
        known = [option for action in parser._actions for option in action.option_strings]
        flag = unknown[0].split("=", 1)[0]
        hint = difflib.get_close_matches(flag, known, n=1)
        parser.error(f"unknown option {unknown[0]!r}" + (f" (did you mean {hint[0]}?)" if hint else ""))
    given = vars(args)
    cfg = cls()
    seed_env = os.environ.get("LABFOLIO_SEED")
    if seed_env not in (None, "") and "seed" in {f.name for f in dataclasses.fields(cls)}:
        try:
            cfg = dataclasses.replace(cfg, seed=int(seed_env))
        except ValueError:
            raise labfolio.ConfigError(f"LABFOLIO_SEED={seed_env!r} is not an integer") from None
    config_path = given.pop("config", None) or os.environ.get("LABFOLIO_CONFIG")
    if config_path:
        path = Path(config_path).expanduser()
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise labfolio.ConfigError(f"config file {path} could not be read as JSON: {exc}") from None
        cfg = config_from_mapping(cls, values, str(path), base=cfg)
    if given.pop("smoke", False):
        preset = smoke(cfg) if callable(smoke) else smoke
        cfg = config_from_mapping(cls, preset, "--smoke preset", base=cfg)
    print_config = given.pop("print_config", False)
    cfg = config_from_mapping(cls, given, "command line", base=cfg)
    if print_config:
        print(json.dumps(dataclasses.asdict(cfg), indent=2))
        raise SystemExit(0)
    return cfg


# --------------------------------------------------------------------------- training-loop pieces


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when available, else CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise labfolio.ConfigError(f"device={name!r} but CUDA is not available here; use device=cpu or auto")
    return device


def autocast(device: torch.device, amp: bool, cache_enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when `amp` is on; a no-op otherwise (the CPU path runs in fp32).
    ``cache_enabled=False`` for a CUDA graph capture, whose replays must not reuse the casts of
    the weights as they were when it was captured."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def _decays(module: nn.Module) -> Iterator[nn.Parameter]:
    for submodule in module.modules():
        if isinstance(submodule, (nn.Linear, nn.Conv2d, nn.Embedding)):
            yield submodule.weight


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], device: torch.device,
    capturable: bool = False,
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrix weights only (Linear, Conv, Embedding).

    ``capturable`` (CUDA only) keeps the step count and the learning rate in device tensors, so
    that the update can be captured in a CUDA graph (`train_step.GraphedTrainStep`); `set_lr`
    then writes the rate into its tensor.

    Norm gains, biases, positions and every connection parameter (H_pre/H_post/H_res biases, gates,
    dynamic projections) are not decayed: decay would pull mHC's b_res towards uniform mixing and
    HC's identity H_res towards zero, changing the connection the experiment is about.
    """
    decayed = {id(p): p for p in _decays(model)}
    others = [p for p in model.parameters() if id(p) not in decayed and p.requires_grad]
    groups = [
        {"params": list(decayed.values()), "weight_decay": weight_decay},
        {"params": others, "weight_decay": 0.0},
    ]
    if capturable and device.type == "cuda":
        return torch.optim.AdamW(groups, lr=torch.tensor(lr, device=device), betas=betas, fused=True,
                                 capturable=True)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")


def schedule_for(cfg: Any, total_steps: int) -> Schedule:
    """The LR schedule a recipe config asks for, over `total_steps` optimizer steps.

    Uses the config fields schedule, lr, final_lr, warmup_steps (or warmup_fraction of the run),
    decay_fraction and decay_shape; each schedule takes the ones it understands.
    """
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_fraction * total_steps)
    if cfg.schedule == "cosine_warmup":
        warmup = max(warmup, 1)
    warmup = min(warmup, total_steps - 1)
    params = {
        "lr": cfg.lr,
        "total_steps": total_steps,
        "warmup_steps": warmup,
        "final_lr": cfg.final_lr,
        "decay_fraction": cfg.decay_fraction,
        "shape": cfg.decay_shape,
    }
    if cfg.schedule == "wsd":
        # a short run cannot hold both a warmup and a full-length cooldown
        params["decay_steps"] = max(1, min(round(cfg.decay_fraction * total_steps), total_steps - warmup))
    accepted = schedule_param_names(cfg.schedule)
    try:
        return make_schedule(cfg.schedule, **{k: v for k, v in params.items() if k in accepted})
    except ValueError as exc:
        raise labfolio.ConfigError(f"LR schedule: {exc}") from None


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):  # a graph-captured step reads its learning rate from this tensor
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def grad_norm_and_clip(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Total gradient L2 norm before clipping (a device tensor: logging it does not sync)."""
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: measure without touching grads
        return torch.nn.utils.get_total_norm(grads)
    return torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


def _allow_a_graph_per_block(blocks: nn.ModuleList) -> None:
    # Dynamo specialises a block's forward on its integer attributes (each connection's
    # layer_index), and again for evaluation (eval mode, no grad): two graphs per block. Past its
    # recompile limit (8) it silently runs the remaining blocks eagerly, which made a compiled
    # 6-block mhc ViT as slow as an eager one.
    needed = 2 * len(blocks) + 8
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    if getattr(config, name) < needed:
        setattr(config, name, needed)


def compile_for_training(
    model: nn.Module, enabled: bool, unit: str, device: torch.device, mode: str = "default"
) -> nn.Module:
    """The module a training step calls: `model` itself, or compiled on CUDA.

    ``unit="block"`` compiles each transformer block on its own (``model.blocks``): small graphs
    that compile in seconds instead of minutes, at the cost of fusion across blocks; the
    recompile limit is raised so that every block gets its graphs. ``unit="model"`` compiles the
    whole forward. ``mode`` is torch.compile's (``reduce-overhead`` replays CUDA graphs, which
    pays off for small models whose steps are bound by kernel launches; each call of the model
    then marks a new CUDA-graph step, as torch requires). On CPU nothing is
    compiled (the CPU path is the tested reference, and inductor would need a C compiler).
    """
    if mode not in COMPILE_MODES:
        raise labfolio.ConfigError(f"compile_mode={mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if not enabled or device.type != "cuda":
        return model
    options = {} if mode == "default" else {"mode": mode}
    # Graphs compiled for an earlier model in this process (a sweep calling train() in a loop)
    # count against the recompile limit of the same block code and would leave this model eager.
    torch._dynamo.reset()
    if unit == "model":
        compiled = torch.compile(model, **options)
        return CudaGraphSteps(compiled) if mode == "reduce-overhead" else compiled
    if unit != "block":
        raise labfolio.ConfigError(f"compile_unit={unit!r}: use block or model")
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise labfolio.ConfigError(f"compile_unit=block needs a model with .blocks; {type(model).__name__} has none")
    _allow_a_graph_per_block(blocks)
    for block in blocks:
        block.compile(**options)
    if mode == "reduce-overhead":
        # evaluation calls the model itself, whose compiled blocks replay CUDA graphs as well
        model.register_forward_pre_hook(_begin_cuda_graph_step)
    return model


def _begin_cuda_graph_step(*_: Any) -> None:
    # CUDA graphs reuse their output memory on the next replay, and torch cannot tell on its own
    # where one training step ends: without this mark, a block's output from the step before is
    # read after it was overwritten ("accessing tensor output of CUDAGraphs that has been
    # overwritten by a subsequent run"), which is how compile_mode=reduce-overhead first failed.
    torch.compiler.cudagraph_mark_step_begin()


class CudaGraphSteps(nn.Module):
    """A compiled whole model that replays CUDA graphs, marking a new step at every call."""

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        _begin_cuda_graph_step()
        return self.compiled(*args, **kwargs)


def start_run(cfg: Any, model_config: Any, **sdk_kwargs: Any) -> Any:
    """``labfolio.init`` with the recipe's resolved config and the model config it built."""
    variant = cfg.variant or os.environ.get("LABFOLIO_VARIANT") or cfg.connection
    config = {**dataclasses.asdict(cfg), "model": dataclasses.asdict(model_config)}
    return labfolio.init(
        project=cfg.project or None,
        experiment=cfg.experiment or None,
        variant=variant,
        seed=cfg.seed,
        config=config,
        mode=cfg.mode or None,
        **sdk_kwargs,
    )
