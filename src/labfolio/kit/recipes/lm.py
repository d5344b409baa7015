"""Train the byte-level GPT on a text file and record it with labfolio.

    python -m labfolio.kit.recipes.lm --text=data/tinyshakespeare.txt --connection=mhc
    python -m labfolio.kit.recipes.lm --smoke            # tiny, CPU, seconds

Logged metrics (fixed names):

- every ``log_every`` steps: ``train/loss``, ``lr``, ``grad_norm`` (before clipping) and
  ``tokens_per_s`` (measured over the last interval);
- every ``diag_every`` steps: the model's connection diagnostics as ``diag/<name>``;
- every ``eval_every`` steps and at the end: ``val/loss`` and ``val/bpb`` (= loss / ln 2: the vocab
  is the 256 byte values) on a fixed set of validation windows, the same in every run;
- at the end, when enabled, ``avg/val/loss`` and ``avg/val/bpb`` for the averaged weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch

import labfolio
from labfolio.kit.averaging import EMA, LastKAverage
from labfolio.kit.data import ByteBatches, load_text_bytes
from labfolio.kit.models.gpt import GPT, GPTConfig
from labfolio.kit.recipes.checkpoint import (
    checkpoint_path,
    logged_before,
    random_states,
    restore_random_states,
    restore_training,
    resume_point,
    save_checkpoint,
    training_state,
)
from labfolio.kit.recipes import (
    ConnectionFields,
    RecipeResult,
    TrackingFields,
    autocast,
    compile_for_training,
    connection_config,
    make_optimizer,
    parse_config,
    resolve_device,
    schedule_for,
    seed_everything,
    start_run,
)
from labfolio.kit.recipes.profiling import log_step_profile, step_profiler
from labfolio.kit.recipes.train_step import check_graph_step, make_train_step

__all__ = ["LMConfig", "SMOKE", "train", "main", "smoke_text_path"]

_VAL_SEED = 1234  # validation windows depend on this, never on the training seed


@dataclass
class LMConfig(ConnectionFields, TrackingFields):
    # data
    text: str = ""  # path of any text file, read as raw bytes (e.g. tinyshakespeare.txt)
    val_fraction: float = 0.1  # last part of the file held out for val/loss
    # model
    block_size: int = 256  # context length in bytes
    depth: int = 6  # transformer blocks
    width: int = 384  # model dimension
    heads: int = 6  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden size = mlp_ratio * width
    dropout: float = 0.0  # attention and branch dropout
    # optimisation
    steps: int = 5000  # optimizer steps
    batch_size: int = 64  # sequences per step
    lr: float = 1e-3  # peak learning rate
    final_lr: float = 0.0  # learning rate the schedule decays to
    schedule: Literal["constant", "linear", "cosine", "cosine_warmup", "wsd"] = "wsd"  # LR shape
    warmup_steps: int | None = None  # linear warmup steps (None = warmup_fraction of the run)
    warmup_fraction: float = 0.02  # warmup length as a fraction of the run, if warmup_steps is None
    decay_fraction: float = 0.2  # wsd: cooldown length as a fraction of the run
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"  # wsd: cooldown shape
    weight_decay: float = 0.1  # AdamW decay on matrix weights only
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # max global grad norm (0 = no clipping)
    ema_decay: float = 0.0  # evaluate an EMA of the weights with this decay (0 = off)
    average_last: int = 0  # also evaluate the mean of the last K weight snapshots (0 = off)
    average_every: int = 100  # steps between those snapshots
    # evaluation and logging
    log_every: int = 10  # steps between train/loss, lr, grad_norm, tokens_per_s points
    diag_every: int = 100  # steps between connection diagnostics (0 = never)
    eval_every: int = 250  # steps between validations (the last step is always validated)
    eval_batches: int = 20  # fixed validation batches of batch_size windows each
    # runtime
    seed: int = 0  # seeds init and batch sampling
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (CPU always runs fp32)
    compile: bool = False  # torch.compile the model on CUDA
    compile_unit: Literal["block", "model"] = "block"  # compile each block (fast to compile) or the whole model
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"  # torch.compile mode
    cuda_graph_step: bool = False  # replay the whole step (forward, backward, clip, AdamW) as one CUDA graph
    threads: int = 0  # torch CPU threads (0 = torch's default)
    checkpoint_every: int = 0  # steps between resumable checkpoints in the store (0 = none)
    resume: str = ""  # run id to continue from its checkpoint ("" = $LABFOLIO_RESUME, else a new run)
    profile_steps: int = 0  # time this many steps, then profile as many more (labfolio.kit.recipes.profiling)
    profile_start: int = 100  # the first timed step: after compilation, away from an evaluation

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "block_size", "log_every", "eval_every", "eval_batches",
                     "average_every", "depth", "width", "heads"):
            if getattr(self, name) < 1:
                raise labfolio.ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("diag_every", "average_last", "threads", "grad_clip", "checkpoint_every", "profile_steps",
                     "profile_start"):
            if getattr(self, name) < 0:
                raise labfolio.ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise labfolio.ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check_graph_step(self.cuda_graph_step, self.compile_mode)


def _sequence_loss(step_model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    _, loss = step_model(inputs, targets)
    return loss


def smoke_text_path() -> Path:
    """A text file every installation has: the GPT model's own source."""
    return Path(__file__).resolve().parents[1] / "models" / "gpt.py"


SMOKE: dict[str, Any] = {
    "block_size": 32,
    "depth": 2,
    "width": 32,
    "heads": 2,
    "steps": 40,
    "batch_size": 16,
    "lr": 3e-3,
    "log_every": 1,
    "diag_every": 10,
    "eval_every": 20,
    "eval_batches": 2,
    "device": "cpu",
    "compile": False,
}


@torch.no_grad()
def _validate(model: GPT, batches: list[tuple[torch.Tensor, torch.Tensor]], cfg: LMConfig,
              device: torch.device) -> dict[str, float]:
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for inputs, targets in batches:
        with autocast(device, cfg.amp):
            _, loss = model(inputs, targets)
        total += loss.double()
    model.train(was_training)
    loss_value = total.item() / len(batches)
    return {"val/loss": loss_value, "val/bpb": loss_value / math.log(2)}


def train(cfg: LMConfig) -> RecipeResult:
    """Train and validate as `cfg` says, logging to a new labfolio run; returns its headline numbers."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if not cfg.text:
        raise labfolio.ConfigError(
            "no text file given: pass --text=PATH (any text file, e.g. tinyshakespeare.txt), "
            "or --smoke to train on a file that ships with labfolio"
        )
    splits = load_text_bytes(cfg.text, cfg.val_fraction)
    seed_everything(cfg.seed)
    model_config = GPTConfig(
        block_size=cfg.block_size,
        depth=cfg.depth,
        width=cfg.width,
        heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        dropout=cfg.dropout,
        connection=connection_config(cfg),
    )
    model = GPT(model_config).to(device)
    train_batches = ByteBatches(splits.train, cfg.block_size, cfg.batch_size, seed=cfg.seed, device=device)
    val_sampler = ByteBatches(splits.val, cfg.block_size, cfg.batch_size, seed=_VAL_SEED, device=device)
    val_batches = [val_sampler.next() for _ in range(cfg.eval_batches)]
    schedule = schedule_for(cfg, cfg.steps)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device,
                               capturable=cfg.cuda_graph_step)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    snapshots = LastKAverage(cfg.average_last, cfg.average_every) if cfg.average_last else None
    step_model = compile_for_training(model, cfg.compile, cfg.compile_unit, device, cfg.compile_mode)
    train_step = make_train_step(model, partial(_sequence_loss, step_model), optimizer, cfg.grad_clip, device,
                                 cfg.amp, graph=cfg.cuda_graph_step)
    tokens_per_step = cfg.batch_size * cfg.block_size
    profiler = step_profiler(cfg.profile_steps, cfg.profile_start, cfg.steps, device)

    resume_id, state = resume_point(cfg.resume)
    run = start_run(cfg, model_config, tokens_per_step=tokens_per_step,
                    **({"run_id": resume_id, "resume": "must"} if resume_id else {}))
    saved_at = checkpoint_path(run) if cfg.checkpoint_every or resume_id else None
    logged_losses: list[torch.Tensor] = []
    earlier_losses: list[float] = []  # logged before the last checkpoint (as numbers)
    final: dict[str, float] = {}
    start_step = 0
    if state is not None:
        restore_training(state, model, optimizer, ema, snapshots)
        restore_random_states(state["random"], train_batches.generator)
        start_step = int(state["step"])
        earlier_losses, final = list(state["logged_losses"]), dict(state["final"])
    with run:
        run.summary["model/parameters"] = model.num_parameters()
        print(f"lm: {splits.source} ({len(splits.train)} train / {len(splits.val)} val bytes) · GPT "
              f"{cfg.depth}x{cfg.width} · {cfg.connection} · {cfg.steps} steps on {device} · run {run.id}"
              + (f" · resumed at step {start_step}" if resume_id else ""), flush=True)
        started = interval_start = time.perf_counter()
        interval_steps = 0
        for step in range(start_step, cfg.steps):
            profiler.before_step(step)
            inputs, targets = train_batches.next()
            lr = schedule(step)
            loss, grad_norm = train_step(inputs, targets, lr)
            interval_steps += 1
            if ema is not None:
                ema.update(model)
            if snapshots is not None:
                snapshots.maybe_add(step + 1, model)
            profile = profiler.after_step(step)
            if profile is not None:
                log_step_profile(run, profile, step)
            # a resumed run replays from its checkpoint: skip what the killed attempt logged
            if step % cfg.log_every == 0 and not logged_before(run, "train/loss", step):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # once per interval, so the wall time is the GPU's
                now = time.perf_counter()
                tokens_per_s = interval_steps * tokens_per_step / max(now - interval_start, 1e-9)
                interval_start, interval_steps = now, 0
                loss_value = loss.detach()
                logged_losses.append(loss_value)
                run.log({"train/loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                         "tokens_per_s": tokens_per_s}, step=step)
            if cfg.diag_every and step % cfg.diag_every == 0 and step >= run.first_step:
                diagnostics = model.diagnostics()
                if diagnostics:
                    run.log({f"diag/{name}": value for name, value in diagnostics.items()}, step=step)
            if (step + 1) % cfg.eval_every == 0 or step == cfg.steps - 1:
                with ema.applied_to(model) if ema is not None else contextlib.nullcontext():
                    results = _validate(model, val_batches, cfg, device)
                if not math.isfinite(results["val/loss"]):
                    raise FloatingPointError(f"val/loss is {results['val/loss']} at step {step}: training diverged")
                if not logged_before(run, "val/loss", step):
                    run.log(results, step=step)
                final.update(results)
                print(f"  step {step + 1}/{cfg.steps} · val loss {results['val/loss']:.4f} · "
                      f"bpb {results['val/bpb']:.4f} · {time.perf_counter() - started:.1f}s", flush=True)
                interval_start = time.perf_counter()  # validation time is not training throughput
            if saved_at is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                    and step < cfg.steps - 1:
                earlier_losses += torch.stack(logged_losses).tolist() if logged_losses else []
                logged_losses.clear()
                save_checkpoint(saved_at, {
                    **training_state(model, optimizer, ema, snapshots),
                    "random": random_states(train_batches.generator),
                    "step": step + 1, "logged_losses": earlier_losses, "final": final,
                })
                interval_start = time.perf_counter()
        if snapshots is not None and len(snapshots):
            averaged_model = copy.deepcopy(model)
            averaged_model.load_state_dict(snapshots.average())
            averaged = {f"avg/{key}": value for key, value in
                        _validate(averaged_model, val_batches, cfg, device).items()}
            run.log(averaged, step=cfg.steps - 1)
            final.update(averaged)
        train_loss = earlier_losses + (torch.stack(logged_losses).tolist() if logged_losses else [])
        if train_loss:
            final["train/loss"] = train_loss[-1]
    if saved_at is not None:
        saved_at.unlink(missing_ok=True)  # the run finished: there is nothing left to resume
    return RecipeResult(run_id=run.id, final=final, train_loss=train_loss, artifacts=[])


def main(argv: Sequence[str] | None = None) -> int:
    def smoke(cfg: LMConfig) -> dict[str, Any]:
        # a text given in a config file survives --smoke; otherwise train on a file labfolio ships
        return {**SMOKE, "text": cfg.text or str(smoke_text_path())}

    try:
        cfg = parse_config(LMConfig, argv, smoke, prog="python -m labfolio.kit.recipes.lm",
                           description=(__doc__ or "").splitlines()[0])
        result = train(cfg)
    except labfolio.LabfolioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = ", ".join(f"{key}={value:.4f}" for key, value in sorted(result.final.items()))
    print(f"lm: run {result.run_id} finished: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
