"""Plots next to the notes (matplotlib, Agg, PNG): learning curves, the LR schedule, embeddings.

- Learning curves: one figure per key metric, per variant a mean line over its seeds and a band
  of ± one standard deviation (runs are interpolated onto a shared step grid).
- The LR schedule as logged: every run's lr, coloured by variant, so a schedule that never
  decays is seen at a glance.
- Embedding projections: image artifacts whose name says embedding/projection/t-SNE/UMAP/PCA,
  one panel per run; ``.npy``/``.npz`` embedding arrays are projected to 2-D with PCA.

Drawing is the slow part of a notebook, so each plot has a fingerprint of what it was drawn
from (run ids, point counts, last steps, artifact hashes); a plot whose fingerprint did not
change is not drawn again. PNGs carry no timestamp, so the same data gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .mdtext import safe_name
from .snapshot import ExperimentInfo

__all__ = ["PlotSpec", "PLOT_VERSION", "plan_plots", "draw_plot", "LR_KEYS"]

PLOT_VERSION = 2  # bump when drawing changes, so cached plots are redrawn
LR_KEYS = re.compile(r"(^|/)(lr|learning_rate|lr_\w+)$", re.I)
_EMBEDDING_NAME = re.compile(r"embed|proj|tsne|t-sne|umap|pca", re.I)
_EMBEDDING_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".npz")
_LOSS_KEYS = ("train/loss", "loss", "train_loss", "training/loss")
_MAX_CURVES = 6
_GRID_POINTS = 200
_DPI = 100


@dataclass(frozen=True)
class PlotSpec:
    """One plot to draw: what, from which runs, and where it goes in the vault."""

    kind: str  # 'curve' | 'lr' | 'embedding'
    metric: str  # the metric key (curves, lr) or '' (embeddings)
    path: str  # vault-relative path of the PNG
    caption: str
    run_ids: tuple[str, ...]
    fingerprint: str


def _series_keys(exp: ExperimentInfo, metrics: Sequence[str]) -> list[str]:
    logged = {key for run in exp.runs for key, entry in run.summary.items() if entry.count > 1}
    chosen = [key for key in _LOSS_KEYS if key in logged][:1]
    chosen += [m for m in metrics if m in logged and m not in chosen]
    return chosen[:_MAX_CURVES]


def _fingerprint(kind: str, metric: str, runs, extra: object = None) -> str:
    payload = [PLOT_VERSION, kind, metric, extra,
               [[r.run_id, r.variant, r.point_count, r.last_step, r.last_time, r.state] for r in runs]]
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def plan_plots(exp: ExperimentInfo, metrics: Sequence[str], artifacts: dict | None = None,
               described: Collection[str] | None = None) -> list[PlotSpec]:
    """The plots an experiment gets (decided from the snapshot alone, without reading series).

    `described` (run ids; default: every run) keeps older attempts of a seed out of the curves:
    a 40-epoch first try averaged with its 200-epoch rerun would cut the band at step 40.
    """
    folder = f"experiments/{exp.folder}/plots"
    runs = [r for r in exp.runs if r.point_count and (described is None or r.run_id in described)]
    specs = []
    for key in _series_keys(exp, metrics):
        members = [r for r in runs if key in r.summary]
        specs.append(PlotSpec("curve", key, f"{folder}/curve_{safe_name(key).replace(' ', '_')}.png",
                              f"Learning curve of {key} (mean ± std over seeds)", tuple(r.run_id for r in members),
                              _fingerprint("curve", key, members)))
    lr_keys = sorted({key for r in runs for key, entry in r.summary.items() if entry.count > 1 and LR_KEYS.search(key)})
    if lr_keys:
        members = [r for r in runs if lr_keys[0] in r.summary]
        specs.append(PlotSpec("lr", lr_keys[0], f"{folder}/lr_schedule.png", f"LR schedule as logged ({lr_keys[0]})",
                              tuple(r.run_id for r in members), _fingerprint("lr", lr_keys[0], members)))
    if artifacts:
        images = [(r, a) for r in exp.runs if described is None or r.run_id in described
                  for a in artifacts.get(r.run_id, [])
                  if _EMBEDDING_NAME.search(a.name) and (a.kind in ("image", "embedding", "file", "array"))
                  and _artifact_suffix(a) in _EMBEDDING_SUFFIXES]
        if images:
            hashes = [[r.run_id, a.name, a.sha256] for r, a in images]
            specs.append(PlotSpec("embedding", "", f"{folder}/embeddings.png", "Embedding projections (run artifacts)",
                                  tuple(dict.fromkeys(r.run_id for r, _ in images)),
                                  _fingerprint("embedding", "", [r for r, _ in images], hashes)))
    return specs


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _variant_colors(variants: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {variant: cmap(i % 10) for i, variant in enumerate(variants)}


def _curves(spec: PlotSpec, exp: ExperimentInfo, history) -> bytes:
    figure = _figure()
    axes = figure.add_subplot(1, 1, 1)
    variants = [v for v in exp.variants if any(r.variant == v and r.run_id in spec.run_ids for r in exp.runs)]
    colors = _variant_colors(exp.variants)
    for variant in variants:
        series = []
        unfinished = 0
        for run in exp.runs:
            if run.variant != variant or run.run_id not in spec.run_ids:
                continue
            found = history(run.run_id, spec.metric)
            if found is not None and found.steps.size:
                finite = np.isfinite(found.values)
                if finite.any():
                    series.append((found.steps[finite].astype(float), found.values[finite]))
                    unfinished += run.state != "finished"
        if not series:
            continue
        # the curves show every run's data; the results table counts finished runs only, so the
        # legend says how many of these did not finish
        count = f"n={len(series)}" + (f", {unfinished} unfinished" if unfinished else "")
        low = max(s[0][0] for s in series) if len(series) > 1 else series[0][0][0]
        high = min(s[0][-1] for s in series) if len(series) > 1 else series[0][0][-1]
        if high <= low:  # runs that do not overlap: show each run instead of a meaningless mean
            for steps, values in series:
                axes.plot(steps, values, color=colors[variant], linewidth=1, alpha=0.8)
            axes.plot([], [], color=colors[variant], label=f"{variant} ({count}, no overlap)")
            continue
        grid = np.linspace(low, high, _GRID_POINTS)
        stacked = np.stack([np.interp(grid, steps, values) for steps, values in series])
        mean = stacked.mean(axis=0)
        axes.plot(grid, mean, color=colors[variant], linewidth=1.6, label=f"{variant} ({count})")
        if len(series) > 1:
            std = stacked.std(axis=0, ddof=1)
            axes.fill_between(grid, mean - std, mean + std, color=colors[variant], alpha=0.2, linewidth=0)
    axes.set_xlabel("step")
    axes.set_ylabel(spec.metric)
    axes.set_title(f"{exp.name}: {spec.metric}")
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _lr(spec: PlotSpec, exp: ExperimentInfo, history) -> bytes:
    figure = _figure()
    axes = figure.add_subplot(1, 1, 1)
    colors = _variant_colors(exp.variants)
    labelled: set[str] = set()
    for run in exp.runs:
        if run.run_id not in spec.run_ids:
            continue
        found = history(run.run_id, spec.metric)
        if found is None or not found.steps.size:
            continue
        label = run.variant if run.variant not in labelled else None
        labelled.add(run.variant)
        axes.plot(found.steps, found.values, color=colors.get(run.variant, "black"), linewidth=1, alpha=0.8,
                  label=label)
    axes.set_xlabel("step")
    axes.set_ylabel(spec.metric)
    axes.set_title(f"{exp.name}: {spec.metric} as logged")
    axes.grid(True, alpha=0.3)
    if labelled:
        axes.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _load_embedding(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if path.suffix.lower() == ".npz":
        with np.load(path) as data:
            names = list(data.keys())
            key = next((n for n in names if "emb" in n.lower() or n.lower() in ("x", "features")), names[0])
            labels_key = next((n for n in names if "label" in n.lower() or n.lower() == "y"), None)
            return np.asarray(data[key], dtype=float), (np.asarray(data[labels_key]) if labels_key else None)
    return np.asarray(np.load(path), dtype=float), None


def _project(points: np.ndarray) -> np.ndarray:
    points = points.reshape(points.shape[0], -1)
    centred = points - points.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:2].T
    return projected if projected.shape[1] == 2 else np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))


def _artifact_suffix(artifact) -> str:
    # a server store's copied artifact has a URL for its path; its name keeps the file's suffix
    return (Path(artifact.path).suffix or Path(artifact.name).suffix).lower()


def _local_file(store, artifact) -> Path:
    """Where the artifact's file can be read here: its path, or a copy fetched from a server store."""
    fetch = getattr(type(store), "artifact_file", None)  # only stores that keep files elsewhere have one
    return fetch(store, artifact) if fetch is not None else Path(artifact.path)


def _embeddings(spec: PlotSpec, exp: ExperimentInfo, artifacts, store=None) -> bytes:
    items = [(r, a) for r in exp.runs if r.run_id in spec.run_ids for a in artifacts.get(r.run_id, [])
             if _EMBEDDING_NAME.search(a.name) and _artifact_suffix(a) in _EMBEDDING_SUFFIXES]
    items = items[:6]
    columns = min(3, len(items))
    rows = (len(items) + columns - 1) // columns
    figure = _figure(3.2 * columns, 3.0 * rows)
    for index, (run, artifact) in enumerate(items):
        axes = figure.add_subplot(rows, columns, index + 1)
        try:
            path = _local_file(store, artifact)
            if path.suffix.lower() in (".npy", ".npz"):
                points, labels = _load_embedding(path)
                projected = _project(points)
                axes.scatter(projected[:, 0], projected[:, 1], s=4, c=labels if labels is not None else None,
                             cmap="tab10" if labels is not None else None)
            else:
                from matplotlib.image import imread

                axes.imshow(imread(str(path)))
                axes.set_xticks([])
                axes.set_yticks([])
        except Exception as error:  # an unreadable artifact must not stop the notebook
            axes.text(0.5, 0.5, f"cannot read {artifact.name}:\n{type(error).__name__}", ha="center", va="center",
                      fontsize=7, transform=axes.transAxes)
        axes.set_title(f"{run.variant} · {artifact.name}", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def draw_plot(spec: PlotSpec, exp: ExperimentInfo, store, artifacts: dict | None = None) -> bytes:
    """The PNG bytes of `spec`, reading series from `store`."""
    cache: dict[str, dict] = {}

    def history(run_id: str, key: str):
        if run_id not in cache:
            cache[run_id] = store.history(run_id, keys=[key])
        return cache[run_id].get(key)

    if spec.kind == "curve":
        return _curves(spec, exp, history)
    if spec.kind == "lr":
        return _lr(spec, exp, history)
    if spec.kind == "embedding":
        return _embeddings(spec, exp, artifacts or {}, store)
    raise ValueError(f"unknown plot kind {spec.kind!r}")
