"""Representation metrics on plain numpy arrays (numpy + scikit-learn + matplotlib, no torch).

- `knn_acc`: cosine k-nearest-neighbour accuracy, fitted on train embeddings and scored on test;
- `silhouette`: cosine silhouette score, on a seeded sample when N is large;
- `effective_rank`: Roy & Vetterli (2007), exp of the entropy of the normalised singular values,
  and `format_effective_rank` for the "r / d (p%)" form that makes a collapse obvious;
- `project_2d` and `scatter_png`: a 2-D map of the embedding, coloured by class.

Embeddings are (N, D) float arrays and labels (N,) integer arrays throughout.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "knn_acc",
    "silhouette",
    "effective_rank",
    "format_effective_rank",
    "projection_method",
    "project_2d",
    "scatter_png",
]


def _as_embeddings(name: str, emb: object) -> np.ndarray:
    array = np.asarray(emb, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or Inf; the model's embeddings have diverged")
    return array


def _as_labels(name: str, labels: object, n: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the embeddings, got {array.shape}")
    return array


def _unit_rows(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    # a zero embedding has no direction; leave it at zero rather than dividing by zero
    return array / np.maximum(norms, 1e-12)


def knn_acc(
    train_emb: object,
    train_labels: object,
    test_emb: object,
    test_labels: object,
    k: int = 20,
) -> float:
    """Accuracy of a majority-vote k-NN classifier with cosine similarity.

    Ties between classes go to the smallest label, so the result is deterministic.
    """
    from sklearn.neighbors import KNeighborsClassifier

    train = _as_embeddings("train_emb", train_emb)
    test = _as_embeddings("test_emb", test_emb)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_emb has dim {train.shape[1]} but test_emb has dim {test.shape[1]}")
    y_train = _as_labels("train_labels", train_labels, train.shape[0])
    y_test = _as_labels("test_labels", test_labels, test.shape[0])
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    # on unit vectors, euclidean order == cosine order, and brute force avoids tree-build tie noise
    classifier = KNeighborsClassifier(n_neighbors=min(k, train.shape[0]), algorithm="brute")
    classifier.fit(_unit_rows(train), y_train)
    predicted = classifier.predict(_unit_rows(test))
    return float(np.mean(predicted == y_test))


def silhouette(
    emb: object, labels: object, sample_size: int | None = 2000, seed: int = 0
) -> float:
    """Mean cosine silhouette in [-1, 1]; above `sample_size` points, a seeded random subset is used.

    Needs at least 2 classes among the (sampled) points and fewer classes than points.
    """
    from sklearn.metrics import silhouette_score

    array = _as_embeddings("emb", emb)
    y = _as_labels("labels", labels, array.shape[0])
    if sample_size is not None and array.shape[0] > sample_size:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(array.shape[0], size=sample_size, replace=False))
        array, y = array[keep], y[keep]
    n_classes = len(np.unique(y))
    if not 2 <= n_classes < len(y):
        raise ValueError(
            f"silhouette needs 2 <= classes < points, got {n_classes} classes in {len(y)} points"
        )
    return float(silhouette_score(_unit_rows(array), y, metric="cosine"))


def effective_rank(emb: object, center: bool = False) -> float:
    """Roy & Vetterli effective rank: exp(H(p)) with p_i = s_i / sum(s) over singular values s_i.

    Between 1 (everything on one direction) and min(N, D) (a flat spectrum). The raw embedding is
    used by default, as in the definition; `center=True` removes the mean first, so that a large
    shared offset does not hide the spread around it.
    """
    array = _as_embeddings("emb", emb)
    if center:
        array = array - array.mean(axis=0, keepdims=True)
    singular = np.linalg.svd(array, compute_uv=False)
    total = singular.sum()
    if total <= 0:
        return 0.0  # an all-zero matrix has no directions at all
    p = singular / total
    p = p[p > 0]
    return float(math.exp(-(p * np.log(p)).sum()))


def format_effective_rank(rank: float, dim: int) -> str:
    """'r / d (p%)', e.g. '5.0 / 128 (3.9%)': the share of the width the representation uses."""
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    return f"{rank:.1f} / {dim} ({100.0 * rank / dim:.1f}%)"


_PROJECTIONS = ("auto", "umap", "pacmap", "pca")


def projection_method(method: str = "auto") -> str:
    """The projection `project_2d(method=...)` will use: auto picks UMAP, then PaCMAP, then PCA."""
    if method not in _PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(_PROJECTIONS)}")
    if method != "auto":
        return method
    for candidate, module in (("umap", "umap"), ("pacmap", "pacmap")):
        if importlib.util.find_spec(module) is not None:
            return candidate
    return "pca"


def project_2d(emb: object, method: str = "auto", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) for plotting. UMAP/PaCMAP are optional; PCA always works."""
    array = _as_embeddings("emb", emb)
    chosen = projection_method(method)
    n = array.shape[0]
    if n < 3 or array.shape[1] < 2:
        # too few points or dims to fit anything: pad to two columns so plotting still works
        out = np.zeros((n, 2))
        out[:, : min(2, array.shape[1])] = array[:, :2]
        return out
    if chosen == "umap":
        try:
            import umap
        except ImportError as exc:
            raise ImportError("project_2d(method='umap') needs umap: pip install umap-learn") from exc
        reducer = umap.UMAP(
            n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, n - 1)
        )
        return np.asarray(reducer.fit_transform(array), dtype=np.float64)
    if chosen == "pacmap":
        try:
            import pacmap
        except ImportError as exc:
            raise ImportError("project_2d(method='pacmap') needs pacmap: pip install pacmap") from exc
        reducer = pacmap.PaCMAP(n_components=2, random_state=seed, n_neighbors=min(10, n - 1))
        return np.asarray(reducer.fit_transform(array.astype(np.float32)), dtype=np.float64)
    from sklearn.decomposition import PCA

    # unit rows first, so the map shows directions (what cosine kNN and silhouette measure)
    return PCA(n_components=2, random_state=seed).fit_transform(_unit_rows(array))


def _colour_groups(
    labels: np.ndarray,
    class_names: Sequence[str] | None,
    max_classes: int,
    superclass: np.ndarray | None,
    superclass_names: Sequence[str] | None,
) -> tuple[np.ndarray, list[str], str]:
    """Map each point to a colour group; returns (group per point, group names, legend title).

    Group -1 means "other" (drawn in grey). Up to `max_classes` classes get their own colour;
    beyond that, points are coloured by superclass when one is given, else the `max_classes` most
    frequent classes keep their colour and the rest become "other".
    """
    classes, counts = np.unique(labels, return_counts=True)

    def name_of(value: object, names: Sequence[str] | None) -> str:
        index = int(value)  # type: ignore[call-overload]
        return str(names[index]) if names is not None and 0 <= index < len(names) else str(value)

    if len(classes) <= max_classes:
        groups = np.searchsorted(classes, labels)
        return groups, [name_of(c, class_names) for c in classes], "class"
    if superclass is not None:
        supers = np.unique(superclass)
        if len(supers) <= max_classes:
            groups = np.searchsorted(supers, superclass)
            return groups, [name_of(s, superclass_names) for s in supers], "superclass"
    # stable order: most frequent first, ties by label value
    order = np.lexsort((classes, -counts))
    kept = classes[order[:max_classes]]
    groups = np.full(labels.shape, -1)
    for group, value in enumerate(kept):
        groups[labels == value] = group
    names = [name_of(c, class_names) for c in kept]
    return groups, names, f"top {max_classes} of {len(classes)} classes"


def scatter_png(
    points2d: object,
    labels: object,
    path: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    max_classes: int = 20,
    superclass: object | None = None,
    superclass_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write a scatter plot of (N, 2) points coloured by class to a PNG and return its path.

    With more than `max_classes` classes (e.g. CIFAR-100), colour by `superclass` (an (N,) array of
    group ids, e.g. CIFAR-100's 20 coarse labels) if given, else by the `max_classes` most frequent
    classes with the rest in grey, so the legend stays readable.
    """
    # the object-oriented Agg API touches no global pyplot state, so it is safe in worker threads
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = np.asarray(points2d, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points2d must be (N, 2), got shape {points.shape}")
    y = _as_labels("labels", labels, points.shape[0])
    supers = None if superclass is None else _as_labels("superclass", superclass, points.shape[0])
    if max_classes < 1:
        raise ValueError(f"max_classes must be >= 1, got {max_classes}")
    groups, names, legend_title = _colour_groups(y, class_names, max_classes, supers, superclass_names)

    figure = Figure(figsize=(7.5, 6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colormap = _colormap(len(names))
    point_size = max(3.0, min(14.0, 6000.0 / max(len(points), 1)))
    other = groups == -1
    if other.any():
        axes.scatter(points[other, 0], points[other, 1], s=point_size, c="#c8c8c8", alpha=0.4,
                     linewidths=0, label="other", rasterized=True)
    for group, name in enumerate(names):
        mask = groups == group
        axes.scatter(points[mask, 0], points[mask, 1], s=point_size, color=colormap(group),
                     alpha=0.8, linewidths=0, label=name, rasterized=True)
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title)
    axes.legend(title=legend_title, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7,
                title_fontsize=8, markerscale=max(1.0, 6.0 / point_size), frameon=False,
                ncols=1 if len(names) <= 25 else 2)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    return out


def _colormap(n: int):  # type: ignore[no-untyped-def]
    from matplotlib import colormaps

    if n <= 10:
        return colormaps["tab10"]
    if n <= 20:
        return colormaps["tab20"]
    base = colormaps["turbo"]
    return lambda i: base(i / max(n - 1, 1))
