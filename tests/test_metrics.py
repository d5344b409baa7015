import subprocess
import sys

import numpy as np
import pytest

from labfolio.metrics import (
    effective_rank,
    format_effective_rank,
    knn_acc,
    project_2d,
    projection_method,
    scatter_png,
    silhouette,
)


def clusters(n_classes=5, per_class=40, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    points = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return points, labels


def test_knn_acc_is_perfect_on_separable_clusters():
    train, train_labels = clusters(seed=0)
    test, test_labels = train + 0.01, train_labels
    assert knn_acc(train, train_labels, test, test_labels, k=5) == 1.0


def test_knn_acc_is_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(2000, 8)), rng.integers(0, 4, 2000)
    test, test_labels = rng.normal(size=(1000, 8)), rng.integers(0, 4, 1000)
    assert abs(knn_acc(train, labels, test, test_labels, k=10) - 0.25) < 0.06


def test_knn_acc_uses_cosine_so_scale_does_not_matter():
    train, labels = clusters(seed=1)
    scaled = train * np.random.default_rng(2).uniform(0.1, 100, size=(len(train), 1))
    assert knn_acc(train, labels, train, labels, k=3) == knn_acc(scaled, labels, scaled, labels, k=3)


def test_knn_acc_rejects_mismatched_shapes_clearly():
    train, labels = clusters()
    with pytest.raises(ValueError, match="dim"):
        knn_acc(train, labels, train[:, :3], labels)
    with pytest.raises(ValueError, match="train_labels must have shape"):
        knn_acc(train, labels[:-1], train, labels)
    with pytest.raises(ValueError, match="NaN"):
        knn_acc(np.full_like(train, np.nan), labels, train, labels)


def test_silhouette_is_in_range_and_near_one_for_tight_clusters():
    points, labels = clusters(spread=0.01)
    assert 0.9 < silhouette(points, labels) <= 1.0
    rng = np.random.default_rng(0)
    noise = silhouette(rng.normal(size=(300, 8)), rng.integers(0, 3, 300))
    assert -1.0 <= noise <= 1.0 and abs(noise) < 0.1


def test_silhouette_sampling_is_deterministic_for_a_seed():
    points, labels = clusters(n_classes=4, per_class=500, spread=1.0)
    first = silhouette(points, labels, sample_size=300, seed=0)
    assert first == silhouette(points, labels, sample_size=300, seed=0)
    assert first != silhouette(points, labels, sample_size=300, seed=1)
    assert -1.0 <= first <= 1.0


def test_silhouette_with_one_class_explains_what_it_needs():
    with pytest.raises(ValueError, match="2 <= classes"):
        silhouette(np.random.default_rng(0).normal(size=(10, 3)), np.zeros(10))


def test_effective_rank_of_rank_5_data_in_128_dims_is_about_5():
    rng = np.random.default_rng(0)
    low_rank = rng.normal(size=(2000, 5)) @ rng.normal(size=(5, 128))
    rank = effective_rank(low_rank)
    assert 4.5 < rank <= 5.0 + 1e-9


def test_effective_rank_is_full_for_an_orthonormal_basis_and_one_for_a_line():
    assert effective_rank(np.eye(64)) == pytest.approx(64.0)
    line = np.outer(np.arange(1, 50), np.ones(32))
    assert effective_rank(line) == pytest.approx(1.0)


def test_effective_rank_centering_removes_a_shared_offset():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(500, 32))
    shifted = spread + 1000.0  # one huge common direction dominates the raw spectrum
    assert effective_rank(shifted) < 2.0
    assert effective_rank(shifted, center=True) > 25.0


def test_format_effective_rank_shows_rank_width_and_percentage():
    assert format_effective_rank(5.0, 128) == "5.0 / 128 (3.9%)"
    assert format_effective_rank(96.25, 128) == "96.2 / 128 (75.2%)"


def test_project_2d_pca_fallback_gives_two_deterministic_columns():
    points, _ = clusters(dim=32)
    first = project_2d(points, method="pca")
    assert first.shape == (len(points), 2)
    assert np.array_equal(first, project_2d(points, method="pca"))
    assert projection_method("auto") in ("umap", "pacmap", "pca")


def test_project_2d_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="choose one of"):
        project_2d(np.zeros((10, 3)), method="tsnee")


def test_scatter_png_writes_a_png_for_few_classes(tmp_path):
    points, labels = clusters()
    out = scatter_png(project_2d(points, method="pca"), labels, tmp_path / "plot.png",
                      class_names=list("abcde"), title="embedding")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scatter_png_keeps_100_classes_readable_by_superclass_or_top_k(tmp_path):
    from labfolio.metrics import _colour_groups

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, 3000)
    coarse = labels // 5  # 20 superclasses
    groups, names, title = _colour_groups(labels, None, 20, coarse, [f"super{i}" for i in range(20)])
    assert title == "superclass" and len(names) == 20 and groups.max() == 19
    groups, names, title = _colour_groups(labels, None, 10, None, None)
    assert len(names) == 10 and "top 10 of 100" in title and (groups == -1).any()
    out = scatter_png(rng.normal(size=(3000, 2)), labels, tmp_path / "c100.png", max_classes=10)
    assert out.stat().st_size > 1000


def test_metrics_module_does_not_import_torch():
    code = "import sys, labfolio.metrics; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
