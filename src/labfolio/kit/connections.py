"""Residual, HC and mHC connections behind one interface, swapped by one config field.

Every wrapped branch F (attention, MLP, or a whole block) is called through a connection module:

    streams = connection(streams, branch)

- ``residual``: streams is the usual (B, T, C) and the connection computes x + F(x).
- ``hc`` / ``mhc``: streams is (B, T, n, C); the connection computes
  X' = H_res·X + H_postᵀ·F(H_pre·X) (see ``labfolio.kit.hc`` and ``labfolio.kit.mhc``).

A model holds one ``StreamAdapter`` that expands the embedding into n copies before the first
block and reduces the streams (mean, sum or learned weights) before the final norm. Models never
look inside the state, so a comparison between connections differs in exactly one config field.

With n = 1, hc reduces to the residual exactly (bit for bit, static or dynamic, at init) and mhc
reduces to a residual with learned scalar branch gains (its H_res is exactly 1; see ``mhc``).

``connection_diagnostics(model)`` turns the coefficients recorded during the most recent forward
pass into the fixed metric names the recipes log (``DIAGNOSTIC_NAMES``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from labfolio.kit.hc import HyperConnection, hc_parameter_count
from labfolio.kit.mhc import ManifoldHyperConnection, mhc_parameter_count
from labfolio.kit.mhc_fused import PendingStreams, materialize
from labfolio.kit.sinkhorn import FLOAT32_SMALLEST_NORMAL_LOG

__all__ = [
    "DIAGNOSTIC_NAMES",
    "ConnectionConfig",
    "ConnectionWarning",
    "HyperConnection",
    "ManifoldHyperConnection",
    "ResidualConnection",
    "StreamAdapter",
    "connection_diagnostics",
    "connection_parameter_count",
    "make_connection",
    "stream_adapter_parameter_count",
]

CONNECTIONS = ("residual", "hc", "mhc")
WRAPS = ("branch", "block")
REDUCTIONS = ("mean", "sum", "learned")
MHC_IMPLS = ("eager", "fast", "triton", "auto")

# Names emitted by connection_diagnostics; per-layer gains add "/layer{i}" to the amax names,
# where i counts wrapped connections in forward order (two per block with wrap="branch").
DIAGNOSTIC_NAMES = (
    "H_res_diag_mean",
    "h_res_min",
    "sinkhorn_row_err",
    "sinkhorn_col_err_raw",
    "sinkhorn_col_err_mean",
    "gate_value",
    "H_pre_mean",
    "H_pre_min",
    "H_pre_max",
    "H_post_mean",
    "H_post_min",
    "H_post_max",
    "stream_similarity",
    "amax_gain_fwd",
    "amax_gain_bwd",
)

# Below this the gradient reaching H_res through exp() (∝ exp(−spread)) is under AdamW's default
# eps, so H_res barely moves even though it is not exactly frozen.
_NEGLIGIBLE_GRADIENT_SCALE = 1e-8
_SIMILARITY_SAMPLE_TOKENS = 256  # enough for a stable mean cosine, cheap on every forward


class ConnectionWarning(UserWarning):
    """A connection config that runs but is very likely not what the experiment intended."""


@dataclass
class ConnectionConfig:
    """How every branch of a model is connected to the residual path."""

    connection: Literal["residual", "hc", "mhc"] = "residual"  # the baseline; hc/mhc are the variants
    streams: int = 4  # n parallel residual streams (hc/mhc; ignored by residual); both papers use 4
    wrap: Literal["branch", "block"] = "branch"  # one connection per sublayer, or one per whole block
    dynamic: bool = True  # hc/mhc: input-dependent coefficients on top of the static per-layer ones
    sinkhorn_iters: int = 20  # mhc: Sinkhorn–Knopp iterations, as in the mHC paper
    sinkhorn_tau: float = 1.0  # mhc: H_res = Sinkhorn(logits / tau); the paper uses no temperature
    hres_offdiag_init: float = -3.0  # mhc: b_res = o·(J − 2I); −3 is the paper's 6I − 3 (diag +3, off −3)
    num_fracs: int = 1  # hc only: frac-connections split each stream into this many fractions
    reduce: Literal["mean", "sum", "learned"] = "mean"  # how n streams become one before the final norm
    # mhc: "eager" is the readable reference; "fast" (labfolio.kit.mhc_fused) computes the same
    # layer with bf16 streams under autocast and less saved state; "triton" is the fast path with
    # Triton kernels (labfolio.kit.mhc_triton) where they can run, the torch fast path elsewhere;
    # "auto" = triton on CUDA (the torch fast path there if triton is missing), eager on CPU and
    # with one stream (where the compiled reference was the faster path).
    # Eager stays the default until the fast paths' GPU comparison has been run and recorded.
    mhc_impl: Literal["eager", "fast", "triton", "auto"] = "eager"

    def __post_init__(self) -> None:
        if self.connection not in CONNECTIONS:
            raise ValueError(f"connection must be one of {CONNECTIONS}, got {self.connection!r}")
        if self.wrap not in WRAPS:
            raise ValueError(f"wrap must be one of {WRAPS}, got {self.wrap!r}")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        if self.mhc_impl not in MHC_IMPLS:
            raise ValueError(f"mhc_impl must be one of {MHC_IMPLS}, got {self.mhc_impl!r}")
        _require_int("streams", self.streams, minimum=1)
        _require_int("sinkhorn_iters", self.sinkhorn_iters, minimum=1)
        _require_int("num_fracs", self.num_fracs, minimum=1)
        if not isinstance(self.dynamic, bool):
            raise TypeError(f"dynamic must be True or False, got {self.dynamic!r}")
        if not (math.isfinite(self.sinkhorn_tau) and self.sinkhorn_tau > 0):
            raise ValueError(f"sinkhorn_tau must be a positive finite number, got {self.sinkhorn_tau}")
        if not math.isfinite(self.hres_offdiag_init):
            raise ValueError(f"hres_offdiag_init must be finite, got {self.hres_offdiag_init}")
        if self.num_fracs > 1 and self.connection != "hc":
            raise ValueError(
                f"num_fracs={self.num_fracs} (frac-connections) is only defined for connection='hc'; "
                f"{self.connection!r} mixes whole streams (mhc's Sinkhorn constraint acts on whole "
                "streams). Use connection='hc' or set num_fracs=1."
            )
        if self.connection in ("hc", "mhc") and self.streams == 1:
            warnings.warn(
                f"ConnectionConfig(connection={self.connection!r}, streams=1): a single stream makes "
                f"{self.connection} a plain residual connection"
                + (" with scalar branch gains" if self.connection == "mhc" else "")
                + ", not a hyper-connection. The study once ran with the stream count left at 1 "
                "by accident. Set streams=4 (the papers' default) unless n=1 is the point.",
                ConnectionWarning,
                stacklevel=3,
            )
        if self.connection == "mhc":
            _warn_if_hres_init_cannot_learn(self.hres_offdiag_init, self.sinkhorn_tau)


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _warn_if_hres_init_cannot_learn(offdiag: float, tau: float) -> None:
    """Warn when exp() of the initial H_res logits underflows, which freezes H_res."""
    diag = -offdiag
    # Sinkhorn sees logits/tau shifted by their max, so the smallest entry of exp() is
    # exp(−|diag − offdiag| / tau) and the gradient into H_res scales with it.
    spread = abs(diag - offdiag) / tau
    smallest = math.exp(-spread)
    numbers = (
        f"hres_offdiag_init={offdiag}, sinkhorn_tau={tau}: initial logits diag {diag:+g}, "
        f"off-diagonal {offdiag:+g}, so Sinkhorn computes exp(-|{diag:g} - ({offdiag:g})| / {tau:g}) "
        f"= exp(-{spread:.4g}) = {smallest:.3g}"
    )
    if -spread < FLOAT32_SMALLEST_NORMAL_LOG:
        warnings.warn(
            f"mhc H_res WILL NEVER LEARN: {numbers}, which underflows float32 (smallest normal "
            f"exp({FLOAT32_SMALLEST_NORMAL_LOG:.1f})). H_res starts as an exact permutation and gets "
            "exactly zero gradient. Use the paper's init (hres_offdiag_init=-3.0, sinkhorn_tau=1.0) "
            f"or keep |2·hres_offdiag_init| / sinkhorn_tau well below {-FLOAT32_SMALLEST_NORMAL_LOG:.0f}.",
            ConnectionWarning,
            stacklevel=4,
        )
    elif smallest < _NEGLIGIBLE_GRADIENT_SCALE:
        warnings.warn(
            f"mhc H_res will barely learn: {numbers}. The gradient reaching H_res is scaled by "
            f"about that factor, below AdamW's default eps ({_NEGLIGIBLE_GRADIENT_SCALE:g}). "
            "The paper's init is hres_offdiag_init=-3.0, sinkhorn_tau=1.0.",
            ConnectionWarning,
            stacklevel=4,
        )


class ResidualConnection(nn.Module):
    """The baseline: ``forward(x (B,T,C), branch) -> x + branch(x)``."""

    def forward(self, x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        assert x.dim() == 3, f"residual expects (B, T, C), got shape {tuple(x.shape)}"
        return x + branch(x)


def make_connection(config: ConnectionConfig, width: int, layer_index: int) -> nn.Module:
    """The connection module for one wrapped branch; ``layer_index`` picks hc/mhc's home stream."""
    if config.connection == "residual":
        return ResidualConnection()
    if config.connection == "hc":
        return HyperConnection(config, width, layer_index)
    return ManifoldHyperConnection(config, width, layer_index)


def connection_parameter_count(config: ConnectionConfig, width: int) -> int:
    """Closed-form parameter count of one connection module (excluding the StreamAdapter)."""
    if config.connection == "residual":
        return 0
    if config.connection == "hc":
        return hc_parameter_count(config.streams, width, config.num_fracs, config.dynamic)
    return mhc_parameter_count(config.streams, width, config.dynamic)


def stream_adapter_parameter_count(config: ConnectionConfig) -> int:
    """Parameters of the StreamAdapter: the learned reduction weights, if any."""
    if config.connection != "residual" and config.reduce == "learned":
        return config.streams
    return 0


class StreamAdapter(nn.Module):
    """Expands (B, T, C) into n identical streams at the input and reduces them at the output.

    For the residual connection both are the identity, so the residual model carries no extra
    dimension and no extra work.
    """

    def __init__(self, config: ConnectionConfig, width: int) -> None:
        super().__init__()
        self.multi_stream = config.connection != "residual"
        self.num_streams = config.streams if self.multi_stream else 1
        self.reduction = config.reduce
        self.width = width
        if self.multi_stream and config.reduce == "learned":
            # Starts as the mean, so "learned" and "mean" agree at init.
            self.reduce_weight = nn.Parameter(torch.full((self.num_streams,), 1.0 / self.num_streams))
        self.recorded_similarity: torch.Tensor | None = None

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) → (B, T, n, C) copies (a broadcast view; the first connection reads it)."""
        assert x.dim() == 3 and x.shape[-1] == self.width, (
            f"expected (B, T, {self.width}), got shape {tuple(x.shape)}"
        )
        if not self.multi_stream:
            return x
        return x.unsqueeze(-2).expand(*x.shape[:2], self.num_streams, self.width)

    def reduce(self, streams: torch.Tensor | PendingStreams) -> torch.Tensor:
        """(B, T, n, C) → (B, T, C); records the mean pairwise stream cosine similarity."""
        if not self.multi_stream:
            return streams
        streams = materialize(streams)  # the fast mhc path may hand over a state with pending mixes
        assert streams.dim() == 4 and streams.shape[2] == self.num_streams, (
            f"expected (B, T, {self.num_streams}, C), got shape {tuple(streams.shape)}"
        )
        self.recorded_similarity = _mean_pairwise_stream_cosine(streams.detach())
        if self.reduction == "mean":
            return streams.mean(dim=-2)
        if self.reduction == "sum":
            return streams.sum(dim=-2)
        weights = self.reduce_weight.float()[:, None]  # (n, 1)
        return (weights * streams).sum(dim=-2).to(streams.dtype)


def _mean_pairwise_stream_cosine(streams: torch.Tensor) -> torch.Tensor | None:
    """Mean cosine similarity over stream pairs, on an evenly strided sample of tokens."""
    num_streams = streams.shape[2]
    if num_streams < 2:
        return None
    with torch.autocast(device_type=streams.device.type, enabled=False):
        tokens = streams.flatten(0, 1)  # (B·T, n, C)
        stride = max(1, tokens.shape[0] // _SIMILARITY_SAMPLE_TOKENS)
        unit = F.normalize(tokens[::stride].float(), dim=-1)
        gram = unit @ unit.transpose(-1, -2)  # (S, n, n)
        off_diagonal = gram.sum(dim=(-2, -1)) - gram.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
        return (off_diagonal / (num_streams * (num_streams - 1))).mean()


def connection_diagnostics(model: nn.Module) -> dict[str, float]:
    """hc/mhc diagnostics of ``model``'s most recent forward pass, as floats under fixed names.

    Aggregated over all wrapped connections (and over tokens, for dynamic coefficients):

    - ``H_res_diag_mean`` (mean diagonal), ``h_res_min`` (smallest entry);
    - mhc only: ``sinkhorn_row_err`` (max |row sum − 1|, rows are normalised last, so this is
      rounding) and ``sinkhorn_col_err_raw`` (max |column sum − 1| of the H_res actually used:
      the convergence error left after the final row normalisation, for the worst matrix) and
      ``sinkhorn_col_err_mean`` (the same error averaged over tokens and connections);
    - ``gate_value``: mean |gate| (mhc's α, hc's s_α and s_β), dynamic mode only;
    - ``H_pre_*`` and ``H_post_*``: mean, min and max over all entries;
    - ``stream_similarity``: mean pairwise cosine between the final streams (n ≥ 2);
    - ``amax_gain_fwd``/``amax_gain_bwd``: max absolute row/column sum of the composite
      residual mapping H_res^(L−1)···H_res^(0), maximised over tokens, and per connection under
      ``amax_gain_fwd/layer{i}``/``amax_gain_bwd/layer{i}``. They stay ≈ 1 for mhc; growth in
      hc is the instability mHC was made to fix.

    mhc at one stream omits everything derived from H_res (the 1x1 matrix [1], constant).
    Returns {} for a residual model. One host sync per call; none inside forward.
    """
    connections = [m for m in model.modules() if isinstance(m, (HyperConnection, ManifoldHyperConnection))]
    if not connections:
        return {}
    records = [c.recorded for c in connections]
    if any(record is None for record in records):
        raise RuntimeError("diagnostics() reads the most recent forward pass: run the model once first")
    values: dict[str, torch.Tensor] = {}
    h_res = [r.h_res.reshape(-1, *r.h_res.shape[-2:]) for r in records]  # (S, K, K) each
    # mhc's H_res at one stream is the 1x1 doubly stochastic matrix [1] whatever the weights: its
    # diagonal, Sinkhorn errors and gains are constants, and a constant 1.0 would read as "streams
    # never mix" to the H_res_diag_mean rule. Only the H_pre/H_post gains and gates carry signal.
    all_mhc = all(r.kind == "mhc" for r in records)
    if all_mhc and all(h.shape[-1] == 1 for h in h_res):
        h_res = []  # nothing below is derived from it, the gains included
    if h_res:
        values["H_res_diag_mean"] = torch.stack([h.diagonal(dim1=-2, dim2=-1).mean() for h in h_res]).mean()
        values["h_res_min"] = torch.stack([h.amin() for h in h_res]).amin()
    if all_mhc and h_res:
        values["sinkhorn_row_err"] = torch.stack([(h.sum(-1) - 1).abs().amax() for h in h_res]).amax()
        col_err = [(h.sum(-2) - 1).abs().amax(-1) for h in h_res]  # per matrix: its worst column
        # the worst matrix says that some token's H_res is off; the mean says how many are
        values["sinkhorn_col_err_raw"] = torch.stack([e.amax() for e in col_err]).amax()
        values["sinkhorn_col_err_mean"] = torch.stack([e.mean() for e in col_err]).mean()
    gates = [r.gates for r in records if r.gates is not None]
    if gates:
        values["gate_value"] = torch.cat(gates).abs().mean()
    for name, tensors in (("H_pre", [r.h_pre for r in records]), ("H_post", [r.h_post for r in records])):
        values[f"{name}_mean"] = torch.stack([t.mean() for t in tensors]).mean()
        values[f"{name}_min"] = torch.stack([t.amin() for t in tensors]).amin()
        values[f"{name}_max"] = torch.stack([t.amax() for t in tensors]).amax()
    for adapter in (m for m in model.modules() if isinstance(m, StreamAdapter)):
        if adapter.recorded_similarity is not None:
            values["stream_similarity"] = adapter.recorded_similarity

    composite = None
    for index, matrix in enumerate(h_res):
        values[f"amax_gain_fwd/layer{index}"] = matrix.abs().sum(-1).amax()
        values[f"amax_gain_bwd/layer{index}"] = matrix.abs().sum(-2).amax()
        # float64 so the product over many layers measures the model, not accumulated rounding;
        # plain bmm is fine here since these are tiny K×K matrices outside the training graph.
        matrix = matrix.double()
        composite = matrix if composite is None else matrix @ composite
    if composite is not None:
        values["amax_gain_fwd"] = composite.abs().sum(-1).amax()
        values["amax_gain_bwd"] = composite.abs().sum(-2).amax()

    names = list(values)
    numbers = torch.stack([values[name].double().reshape(()) for name in names]).tolist()
    return dict(zip(names, numbers, strict=True))
