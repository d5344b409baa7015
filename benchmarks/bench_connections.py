"""Side-by-side training throughput and peak memory: residual vs hc vs mhc (eager and fast).

Trains the byte-level GPT from ``labfolio.kit`` for a few steps per variant (forward, backward,
fused AdamW, bf16 autocast) in eager mode and under ``torch.compile``, and prints one table per
shape. Shapes: ``gpt2s`` is GPT-2 small (12 layers, width 768, 12 heads), ``wide`` is 8 layers of
width 2048 (16 heads), both at sequence 1024, batch 16. ``mhc`` is the eager reference
(``mhc_impl="eager"``), ``mhc-fast`` the fast path (``mhc_impl="fast"``), ``mhc-triton`` the fast
path with its Triton kernels (``mhc_impl="triton"``; on CPU, or without triton, it runs the torch
fast path, and its row's note says so).

    python benchmarks/bench_connections.py                          # GPU, both shapes
    python benchmarks/bench_connections.py --shapes gpt2s --modes compile
    python benchmarks/bench_connections.py --cpu-smoke              # tiny shape on CPU, seconds
    python benchmarks/bench_connections.py --shapes gpt2s --modes compile --compile-unit block \
        --connections residual,mhc,mhc-fast,mhc-triton            # the fast-mHC issue's target
    python benchmarks/bench_connections.py --modes compile,graph --compile-unit block \
        --connections residual,mhc-triton --no-peer                # and as one CUDA graph per step
    python benchmarks/bench_connections.py --kernel-sweep         # each mHC kernel alone, over tile shapes
    python benchmarks/bench_connections.py --kernel-sweep --tuned-table --shapes gpt2s --modes compile \
        --compile-unit block --connections residual,mhc-fast,mhc-triton   # the sweep, then the table with its tiles

The sweep prints, per shape, the fastest tiles as a ``LABFOLIO_MHC_TILES=...`` value; set it in
the environment of a full run to measure the model with them.

If the ``hyper_connections`` package is importable, its HC, mHC and mHC v2 modules are measured
as ``peer-hc`` / ``peer-mhc`` / ``peer-mhcv2`` rows in the same model, for reference.

Each row is printed as soon as it is measured (and appended to ``--json``), so a run stopped
part-way keeps what it measured. Every row also reports the activation bytes autograd saved for
backward in one eager step (``saved GiB``, measured with saved-tensor hooks: on CPU too), and
the first-steps time that includes compilation.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from labfolio.kit.connections import ConnectionConfig
from labfolio.kit.models.gpt import GPT, GPTConfig

__all__ = ["fastest_tiles", "kernel_sweep", "main", "measure", "parse_args"]

CPU_SMOKE_SHAPE = {"batch": 2, "seq": 16, "depth": 2, "width": 32, "heads": 2}
SHAPES = {  # name -> (depth, width, heads)
    "gpt2s": (12, 768, 12),  # GPT-2 small, the shape of the peer anchor in the fast-mHC issue
    "wide": (8, 2048, 16),  # how the overhead scales with width
}
CONNECTIONS = ("residual", "hc", "mhc", "mhc-fast", "mhc-triton")
MODES = ("eager", "compile", "graph")
_MHC_IMPLS = {"mhc": "eager", "mhc-fast": "fast", "mhc-triton": "triton"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (default 16)")
    parser.add_argument("--seq", type=int, default=1024, help="tokens per sequence (default 1024)")
    parser.add_argument("--shapes", default="gpt2s,wide", help=f"comma-separated subset of {list(SHAPES)}")
    parser.add_argument("--depth", type=int, default=None, help="blocks (overrides --shapes with one custom shape)")
    parser.add_argument("--width", type=int, default=None, help="model width (with --depth)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (with --depth)")
    parser.add_argument("--streams", type=int, default=4, help="hc/mhc streams n (default 4)")
    parser.add_argument("--static", action="store_true", help="static hc/mhc coefficients (default dynamic)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first, incl. compilation (default 5)")
    parser.add_argument("--connections", default=",".join(CONNECTIONS), help="comma-separated subset of the default")
    parser.add_argument(
        "--modes", default=None,
        help="eager,compile,graph (default eager,compile; eager on --cpu-smoke). graph: compiled as "
        "--compile-unit says, and the whole step (forward, backward, AdamW) replayed as one CUDA graph, "
        "as the recipes' cuda_graph_step does: what is left once the host's launch overhead is gone. "
        "On CPU it takes the recipes' eager step, and the row says so",
    )
    parser.add_argument(
        "--compile-unit", choices=("model", "block"), default="model",
        help="compile the whole model (default) or each block on its own: small graphs that inductor's "
        "cache shares between blocks, so hc/mhc compile in a fraction of the time, at the cost of "
        "fusion across blocks",
    )
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="autocast dtype (default bf16)")
    parser.add_argument("--no-peer", action="store_true", help="skip the hyper_connections peer rows")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shape on CPU: checks the script in seconds")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--kernel-sweep", action="store_true",
        help="time each mHC Triton kernel alone at each shape's width over a grid of tile shapes (CUDA)",
    )
    parser.add_argument(
        "--profile-steps", type=int, default=0,
        help="after the timed steps, time N more and profile N after them (torch.profiler), and print "
        "each row's top operators by device time: where an mhc step's extra time goes (default 0: off)",
    )
    parser.add_argument(
        "--tuned-table", action="store_true",
        help="with --kernel-sweep: then measure the table, each shape with its fastest tiles (one call for both)",
    )
    args = parser.parse_args(argv)
    if args.tuned_table and not args.kernel_sweep:
        parser.error("--tuned-table measures the table with the tiles of a sweep: add --kernel-sweep")
    if args.cpu_smoke:
        for name, value in CPU_SMOKE_SHAPE.items():
            setattr(args, name, value)
    if args.depth is not None or args.width is not None or args.heads is not None:
        if None in (args.depth, args.width, args.heads):
            parser.error("a custom shape needs all of --depth, --width and --heads")
        args.shapes = [("smoke" if args.cpu_smoke else "custom", (args.depth, args.width, args.heads))]
    else:
        names = [name.strip() for name in args.shapes.split(",") if name.strip()]
        unknown = [name for name in names if name not in SHAPES]
        if unknown:
            parser.error(f"unknown shape(s) {unknown}; use {list(SHAPES)}")
        args.shapes = [(name, SHAPES[name]) for name in names]
    if args.modes is None:
        args.modes = "eager" if args.cpu_smoke else "eager,compile"
    args.connections = [c.strip() for c in args.connections.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; use {', '.join(MODES)}")
    unknown = [c for c in args.connections if c not in CONNECTIONS]
    if unknown:
        parser.error(f"unknown connection(s) {unknown}; use {', '.join(CONNECTIONS)}")
    return args


def build_model(args: argparse.Namespace, connection: str, shape: tuple[int, int, int]) -> GPT:
    """Our GPT with ``connection``; ``peer-*`` rows swap in the peer package's modules."""
    torch.manual_seed(0)
    depth, width, heads = shape
    ours, impl = ("mhc", _MHC_IMPLS[connection]) if connection in _MHC_IMPLS else (connection, "eager")
    if connection.startswith("peer-"):
        ours = "residual"
    connection_config = ConnectionConfig(
        connection=ours, streams=args.streams, dynamic=not args.static, mhc_impl=impl
    )
    config = GPTConfig(block_size=args.seq, depth=depth, width=width, heads=heads, connection=connection_config)
    model = GPT(config)
    if connection.startswith("peer-"):
        _swap_in_peer(model, kind=connection.removeprefix("peer-"), streams=args.streams, width=width)
    return model


def peer_available() -> bool:
    try:
        import hyper_connections  # noqa: F401
    except ImportError:
        return False
    return True


class _PeerStreams(nn.Module):
    def __init__(self, expand: Callable, reduce: Callable) -> None:
        super().__init__()
        self.expand_fn, self.reduce_fn = expand, reduce

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand_fn(x)

    def reduce(self, state: torch.Tensor) -> torch.Tensor:
        return self.reduce_fn(state)


class _PeerConnection(nn.Module):
    """Adapts the peer's ``hyper_conn(residual) -> (branch_input, add_residual)`` to our interface."""

    def __init__(self, hyper_connection: nn.Module) -> None:
        super().__init__()
        self.hyper_connection = hyper_connection

    def forward(self, state: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        branch_input, add_residual = self.hyper_connection(state)
        return add_residual(branch(branch_input))


def _swap_in_peer(model: GPT, kind: str, streams: int, width: int) -> None:
    if kind == "mhc":
        from hyper_connections.manifold_constrained_hyper_connections import (
            get_init_and_expand_reduce_stream_functions,
        )
    elif kind == "mhcv2":
        from hyper_connections.mHCv2 import get_init_and_expand_reduce_stream_functions
    else:
        from hyper_connections import get_init_and_expand_reduce_stream_functions
    init_connection, expand, reduce = get_init_and_expand_reduce_stream_functions(streams, disable=False)
    model.streams = _PeerStreams(expand, reduce)
    for index, block in enumerate(model.blocks):
        assert block.wrap == "branch", "the peer rows wrap each branch"
        block.attn_connection = _PeerConnection(init_connection(dim=width, layer_index=2 * index))
        block.mlp_connection = _PeerConnection(init_connection(dim=width, layer_index=2 * index + 1))


def measure(
    args: argparse.Namespace, connection: str, mode: str, device: torch.device, shape_name: str,
    shape: tuple[int, int, int],
) -> dict:
    """Train ``args.warmup + args.steps`` steps; time the last ``args.steps``."""
    row = {"shape": shape_name, "connection": connection, "mode": mode,
           "streams": 1 if connection == "residual" else args.streams}
    model = build_model(args, connection, shape).to(device)
    row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    if connection == "mhc-triton":
        row["note"] = _kernel_note(model, device)
    fused = device.type == "cuda"
    graphed = mode == "graph" and device.type == "cuda"
    # a captured AdamW reads its learning rate and step count from device tensors
    lr = torch.tensor(3e-4, device=device) if graphed else 3e-4
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, fused=fused, capturable=graphed)
    step_model = model
    if mode != "eager" and args.compile_unit == "model":
        step_model = torch.compile(model)
    elif mode != "eager":
        _allow_a_graph_per_block(len(model.blocks))
        for block in model.blocks:
            block.compile()
    generator = torch.Generator(device="cpu").manual_seed(0)
    data = torch.randint(0, 256, (args.batch, args.seq + 1), generator=generator).to(device)
    idx, targets = data[:, :-1], data[:, 1:]
    autocast_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    def train_step() -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=args.dtype == "bf16"):
            _, loss = step_model(idx, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if mode == "graph":
        train_step, recipe_step = _recipe_step(step_model, model, optimizer, device, args, idx, targets)

    if mode == "eager":
        row["saved_gib"] = _saved_activation_bytes(train_step) / 2**30
    if mode == "graph" and device.type == "cuda":
        # replays allocate nothing: the graph's memory is taken at capture, so the peak must span it
        torch.cuda.reset_peak_memory_stats(device)
    warmup_start = time.perf_counter()
    for _ in range(args.warmup):
        train_step()
    _synchronize(device)
    row["warmup_s"] = time.perf_counter() - warmup_start  # includes compilation
    if device.type == "cuda" and mode != "graph":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step()
    _synchronize(device)
    elapsed = time.perf_counter() - start
    row["final_loss"] = float(loss.detach())
    row["ms_per_step"] = 1000 * elapsed / args.steps
    row["tokens_per_s"] = args.batch * args.seq * args.steps / elapsed
    row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    if mode == "graph":
        how = ("one CUDA graph" if recipe_step.graphed and not recipe_step.eager_fallback
               else "capture failed: eager step" if recipe_step.graphed else f"eager step on {device.type}")
        row["note"] = f"{row['note']}; {how}" if row.get("note") else how
    if args.profile_steps:
        row.update(_profile(train_step, args.profile_steps, device))
    return row


def _recipe_step(step_model: nn.Module, model: GPT, optimizer: torch.optim.Optimizer, device: torch.device,
                 args: argparse.Namespace, idx: torch.Tensor, targets: torch.Tensor) -> tuple[Callable, object]:
    """The recipes' training step over this row's model: captured as one CUDA graph at its first
    call on CUDA (three eager warm-up steps first), the eager step elsewhere. No clipping, as in
    the other modes; the step still measures the gradient norm, a few small kernels."""
    from labfolio.kit.recipes.train_step import make_train_step

    def loss_of(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return step_model(inputs, labels)[1]

    step = make_train_step(model, loss_of, optimizer, grad_clip=0.0, device=device,
                           amp=args.dtype == "bf16", graph=True)
    return (lambda: step(idx, targets, 3e-4)[0]), step


def _profile(train_step: Callable[[], torch.Tensor], steps: int, device: torch.device) -> dict:
    """The recipes' step profiler over `steps` timed and `steps` profiled steps of this row: its
    device time per step and the top operators by device time (the kernels an overhead is made of)."""
    from labfolio.kit.recipes.profiling import StepProfiler

    profiler = StepProfiler(steps, 0, device)
    profile = None
    for step in range(2 * steps):
        profiler.before_step(step)
        train_step()
        profile = profiler.after_step(step) or profile
    assert profile is not None, "the step profiler returns its profile at the last profiled step"
    return {"device_ms_per_step": profile.metrics["profile/device_ms_per_step"],
            "device_busy": profile.metrics["profile/device_busy"], "profile_table": profile.table}


def _allow_a_graph_per_block(num_blocks: int) -> None:
    # Dynamo can specialise each block's graph (and again for eval); past its recompile limit (8)
    # it runs the remaining blocks eagerly, which would time a 12-block model partly uncompiled.
    needed = 2 * num_blocks + 8
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    if getattr(config, name) < needed:
        setattr(config, name, needed)


def _kernel_note(model: GPT, device: torch.device) -> str:
    """Which path an ``mhc-triton`` row measured: the kernels, or the torch fast path and why."""
    from labfolio.kit.mhc import ManifoldHyperConnection

    layer = next(m for m in model.modules() if isinstance(m, ManifoldHyperConnection))
    if not layer.kernels_available:
        return "torch fast path: triton does not import"
    probe = torch.zeros(1, 1, layer.num_streams, model.config.width, device=device)
    return "triton kernels" if layer.uses_kernels(probe) else f"torch fast path: no kernels on {device.type}"


def _saved_activation_bytes(train_step: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for backward during one training step.

    Parameters count too (a linear layer saves its weight) but are the same for every variant
    at one shape, so differences between rows are activations. In eager mode this is what the
    step keeps alive between forward and backward; compiled graphs choose their own saved set.
    """
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        train_step()
    return sum(storages.values())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()  # compiled graphs of one variant must not linger into the next


_COLUMNS = (  # (title, width); numbers are right-aligned, names left-aligned
    ("shape", -6), ("connection", -10), ("mode", -8), ("n", 2), ("params M", 9), ("tokens/s", 11),
    ("ms/step", 9), ("overhead", 9), ("peak GiB", 9), ("mem x", 6), ("saved GiB", 10), ("warmup s", 9),
    ("note", -1),
)


def _format_row(cells: Sequence[str]) -> str:
    return " ".join(
        f"{cell:<{-width}}" if width < 0 else f"{cell:>{width}}" for cell, (_, width) in zip(cells, _COLUMNS)
    ).rstrip()


def format_header() -> str:
    header = _format_row([title for title, _ in _COLUMNS])
    return header + "\n" + "-" * len(header)


def format_row(r: dict, rows: list[dict]) -> str:
    """One table line; overhead and memory are relative to residual at the same shape and mode."""
    lead = [r["shape"], r["connection"], r["mode"], str(r["streams"])]
    if "error" in r:
        return _format_row(lead + [""] * 8 + [r["error"]])
    baseline = next(
        (b for b in rows if b["connection"] == "residual" and b["shape"] == r["shape"]
         and b["mode"] == r["mode"] and "error" not in b),
        None,
    )
    overhead = r["ms_per_step"] / baseline["ms_per_step"] - 1 if baseline else math.nan
    memory_ratio = r["peak_mem_gib"] / baseline["peak_mem_gib"] if baseline else math.nan
    return _format_row(lead + [
        f"{r['params_m']:.2f}", f"{r['tokens_per_s']:,.0f}", f"{r['ms_per_step']:.1f}",
        "n/a" if math.isnan(overhead) else f"{100 * overhead:+.0f}%", _format_memory(r["peak_mem_gib"]),
        "n/a" if math.isnan(memory_ratio) else f"{memory_ratio:.2f}",
        f"{r['saved_gib']:.3f}" if "saved_gib" in r else "", f"{r['warmup_s']:.1f}", r.get("note", ""),
    ])


def format_table(rows: list[dict]) -> str:
    return "\n".join([format_header()] + [format_row(r, rows) for r in rows])


def _format_memory(gib: float) -> str:
    return "n/a" if math.isnan(gib) else f"{gib:.2f}"  # no allocator statistics on CPU


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    tiles_by_shape: dict[str, dict] = {}
    if args.kernel_sweep:
        sweep = kernel_sweep(args)
        if args.json:  # with --tuned-table the table's rows go to --json, the sweep's beside them
            sweep_json = str(Path(args.json).with_suffix(".sweep.json")) if args.tuned_table else args.json
            _write_json(sweep_json, torch.cuda.get_device_name(), args, sweep)
        if not args.tuned_table:
            return sweep
        tiles_by_shape = fastest_tiles(sweep)
    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what a bf16 training run would use
        torch.backends.cudnn.allow_tf32 = True
    connections = list(args.connections)
    if not args.no_peer and peer_available():
        connections += [f"peer-{kind}" for kind in ("hc", "mhc") if kind in connections]
        if "mhc" in connections:
            connections.append("peer-mhcv2")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    optimizer_name = "fused AdamW" if device.type == "cuda" else "AdamW"
    print(
        f"labfolio bench_connections | {device_name} | torch {torch.__version__} | "
        f"shapes {', '.join(f'{n} {d}x{w}/{h}h' for n, (d, w, h) in args.shapes)} | batch {args.batch} seq {args.seq} | "
        f"{args.dtype} autocast | {'static' if args.static else 'dynamic'} hc/mhc | "
        f"{args.warmup} warmup + {args.steps} timed steps | fwd + bwd + {optimizer_name} | "
        f"compile unit {args.compile_unit}",
        flush=True,
    )
    rows: list[dict] = []
    print(format_header(), flush=True)
    for shape_name, shape in args.shapes:
        if tiles_by_shape:
            from labfolio.kit import mhc_kernels

            mhc_kernels.TILE_OVERRIDES.clear()
            mhc_kernels.TILE_OVERRIDES.update(tiles_by_shape.get(shape_name, {}))
            print(f"{shape_name}: the sweep's fastest tiles {dict(mhc_kernels.TILE_OVERRIDES)}", flush=True)
        for mode in args.modes:
            for connection in connections:
                try:
                    row = measure(args, connection, mode, device, shape_name, shape)
                except Exception as exc:  # one failing variant (OOM, compile error) must not lose the others
                    message = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
                    row = {"shape": shape_name, "connection": connection, "mode": mode,
                           "streams": args.streams, "error": message}
                rows.append(row)
                _release(device)
                print(format_row(row, rows), flush=True)  # as measured, so a stopped run keeps it
                if "profile_table" in row:
                    print(f"\n{shape_name} {connection} {mode}: {row['device_ms_per_step']:.2f} ms of device time "
                          f"per step ({row['device_busy']:.0%} busy)\n{row['profile_table']}\n", flush=True)
                if args.json:
                    _write_json(args.json, device_name, args, rows)
    print()
    print(format_table(rows))  # again, whole, with every row against its residual
    return rows


def _write_json(path: str, device_name: str, args: argparse.Namespace, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        record = {"device": device_name, "torch": torch.__version__, "args": vars(args), "rows": rows}
        json.dump(record, handle, indent=2, default=str)


# --------------------------------------------------------------------------- kernel tile sweep

_SWEEP_CANDIDATES = {  # kernel -> (tokens, channels, warps, splits) tried, every combination
    # the H200 sweep at n = 4 picked the largest token tiles tried (2 and 64): larger ones are in
    "post_mix": ((1, 2, 4), (64, 128, 256, 512), (4, 8), (1,)),
    "post_mix_backward": ((1, 2, 4), (64, 128, 256), (4, 8), (1, 2)),
    "pre": ((32, 64, 128), (32, 64, 128), (4, 8), (1,)),
    "pre_backward": ((32, 64, 128), (32, 64, 128), (4, 8), (1,)),
}
# State sizes S = n·C·2 bytes per token that one call reads and writes (mhc_kernels' table, n = 4
# branch tensors at S/4); the post-mix rows time one single mix plus one pair, as a block runs.
_SWEEP_STATE_BYTES = {"post_mix": 2.25 + 2.5, "post_mix_backward": 3.5 + 4.0, "pre": 2.25, "pre_backward": 3.5}


def fastest_tiles(sweep_rows: list[dict]) -> dict[str, dict]:
    """{shape: {kernel: Tiles}}: the fastest tiles of each kernel at each shape of a sweep."""
    from labfolio.kit.mhc_kernels import Tiles

    best: dict[tuple[str, str], dict] = {}
    for row in sweep_rows:
        key = (row["shape"], row["kernel"])
        if key not in best or row["ms"] < best[key]["ms"]:
            best[key] = row
    out: dict[str, dict] = {}
    for (shape, kernel), row in best.items():
        out.setdefault(shape, {})[kernel] = Tiles(**row["tiles"])
    return out


def kernel_sweep(args: argparse.Namespace) -> list[dict]:
    """Time each mHC kernel alone at each shape's width over a grid of tile shapes (CUDA only).

    Prints ms per call and the bandwidth its state traffic implies, and, per shape, the
    ``LABFOLIO_MHC_TILES`` value of the fastest tiles, to pass to a full benchmark run.
    """
    import itertools

    from triton.testing import do_bench

    from labfolio.kit import mhc_kernels, mhc_mix_kernels

    assert torch.cuda.is_available(), "--kernel-sweep times the Triton kernels on a CUDA device"
    device, n, tokens = torch.device("cuda"), args.streams, args.batch * args.seq
    rows = []
    for shape_name, (_, width, _) in args.shapes:
        generator = torch.Generator(device=device).manual_seed(0)

        def randn(*shape, dtype=torch.bfloat16):
            return torch.randn(*shape, generator=generator, device=device).to(dtype)

        x = randn(tokens, n, width)
        mix = (torch.rand(tokens, n, n, device=device), 2 * torch.rand(tokens, n, device=device), randn(tokens, width))
        columns = 2 * n + n * n
        phi = mhc_kernels.pad_phi(randn(n * width, columns, dtype=torch.float32) / (n * width) ** 0.5, n, torch.bfloat16)
        bias = mhc_kernels.pad_phi(torch.zeros(columns, device=device), n, torch.float32)
        gates = torch.full((3,), 0.01, device=device)
        pre_outputs = mhc_kernels.launch_pre(x, phi, bias, gates, 20, 1.0, 1e-6, torch.bfloat16)
        grads = (randn(tokens, width), torch.zeros(tokens, n, device=device), randn(tokens, n, dtype=torch.float32),
                 randn(tokens, n, n, dtype=torch.float32))
        calls = {
            "post_mix": lambda: (mhc_mix_kernels.launch_post_mix(x, (mix,), x.dtype),
                                 mhc_mix_kernels.launch_post_mix(x, (mix, mix), x.dtype)),
            "post_mix_backward": lambda: (mhc_mix_kernels.launch_post_mix_backward(x, x, (mix,)),
                                          mhc_mix_kernels.launch_post_mix_backward(x, x, (mix, mix))),
            "pre": lambda: mhc_kernels.launch_pre(x, phi, bias, gates, 20, 1.0, 1e-6, torch.bfloat16),
            "pre_backward": lambda: mhc_kernels.launch_pre_backward(
                *grads, x, phi, bias, gates, pre_outputs[4], pre_outputs[5], 20, 1.0),
        }
        for kernel, candidates in _SWEEP_CANDIDATES.items():
            default = mhc_kernels.default_tiles(kernel, width, n, tokens)
            for tiles in itertools.product(*candidates):
                tiles = mhc_kernels.Tiles(*tiles)
                mhc_kernels.TILE_OVERRIDES[kernel] = tiles
                try:
                    ms = do_bench(calls[kernel], warmup=5, rep=20)
                except Exception as exc:  # a shape the compiler rejects (registers, shared memory)
                    print(f"{shape_name} {kernel} {tiles} failed: {type(exc).__name__}", flush=True)
                    continue
                finally:
                    mhc_kernels.TILE_OVERRIDES.pop(kernel, None)
                gbps = _SWEEP_STATE_BYTES[kernel] * tokens * n * width * 2 / (ms * 1e-3) / 1e9
                row = {"shape": shape_name, "kernel": kernel, "tiles": tiles._asdict(), "ms": ms, "state_gbps": gbps,
                       "default": tiles == default}
                rows.append(row)
                print(f"{shape_name:6} {kernel:18} {'x'.join(map(str, tiles)):12} {ms:8.3f} ms {gbps:7.0f} GB/s"
                      f"{'  (default)' if row['default'] else ''}", flush=True)
        best = fastest_tiles(rows).get(shape_name, {})
        fastest = ";".join(f"{k}={'x'.join(map(str, t))}" for k, t in best.items())
        print(f"{shape_name}: fastest tiles  {mhc_kernels.TILES_ENV}=\"{fastest}\"", flush=True)
    return rows


if __name__ == "__main__":
    main()
